"""Client-side overhead of a batch job: CPU per request by stage, peak memory, and the floor.

N requests go through the real engine, store and OpenAI SDK to an emulator running in a separate
process with instant processing, so what is measured is batchery's own cost on the client. Each
run is a fresh child process (so its peak RSS is its own) that first measures the *floor* any
durable tool pays for the same N requests — parse each input line, one SQLite row with the line,
parse each response line (the emulator's own bytes), one SQLite row with it, then one output line
per input line, in order — and then batchery: ingest, submit (plan + upload + create), collect
(download + decode + store), export (and closing the store: its last checkpoint); each run's line
also gives the planning part of submit (of_submit_plan: batches cut, tokens counted). CPU is the
process's user + system time (getrusage), not wall time; "x floor" is the median of the runs' own
ratios. The machine may be shared and its speed drifts, so each run measures the floor again after
batchery, only to show the drift (floor_after). That one is not used: at 1,000,000 requests it came
out about 15 % dearer than the first in 6 runs of 7 (even after a sync), so it would flatter the ratio.

    python benchmarks/overhead.py                          # 10,000 and 100,000 requests, 3 runs each
    python benchmarks/overhead.py --sizes 1000000 --runs 1
    python benchmarks/overhead.py --compare /work/main/src  # the same runs, alternating, with another tree
    python benchmarks/overhead.py --sizes 100000 --max-enqueued-tokens 20000000  # a budget met by bytes

These prompts come to 2.1 M tokens per 100,000, over OpenAI's default enqueued-token budget (2 M, a
tier-1 figure), so by default each batch's prompts are counted when it is planned, as a real run must;
with a budget their bytes fit, nothing is counted and the tokenizer is never loaded.

With --compare, each run is made once with this tree's batchery and once with the other source
tree's (e.g. the code before a change), alternately, against the same emulator; the table shows both.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

STAGES = ("ingest", "submit", "poll", "collect", "export")
HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def write_requests(path: Path, n: int) -> None:
    with path.open("wb") as f:
        for i in range(n):
            f.write(orjson.dumps({"id": i, "prompt": f"Question {i}: what is {i} + {i * 7 % 13}?",
                                  "max_tokens": 64}) + b"\n")


def write_floor_responses(requests: Path, path: Path) -> None:
    """The emulator's own output lines for these requests (custom_id = the line's ordinal), in
    its scrambled order, for the floor to read."""
    from batchery.emulator.openai_routes import answer_lines

    chunk = 100_000
    with requests.open("rb") as f, path.open("wb") as out, tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / "part.jsonl"
        ordinal = 0
        while lines := [line for _, line in zip(range(chunk), f)]:
            with part.open("wb") as p:
                for line in lines:
                    obj = orjson.loads(line)
                    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": obj["prompt"]}],
                            "max_completion_tokens": obj["max_tokens"]}
                    p.write(orjson.dumps({"custom_id": str(ordinal), "method": "POST",
                                          "url": "/v1/chat/completions", "body": body}) + b"\n")
                    ordinal += 1
            output, _, _ = answer_lines([part], len(lines), "completed", 0, bytearray(len(lines)))
            out.write(b"".join(line + b"\n" for line in output))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_emulator(*options: str) -> tuple[subprocess.Popen, str]:
    """`batchery emulator [options]` in its own process; returns it and the server's URL."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-m", "batchery.cli", "emulator", "--port", str(port), *options],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the emulator did not start")


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def floor(requests: Path, responses: Path, workdir: Path) -> float:
    """CPU seconds of the floor: each input line parsed and stored as one row, each response line
    parsed and stored as one row (in the order they arrive, 10,000 rows a transaction, WAL), then
    one output line per input line, in input order."""
    start = cpu()
    db = sqlite3.connect(workdir / "floor.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE requests (ordinal INTEGER PRIMARY KEY, line BLOB NOT NULL)")
    db.execute("CREATE TABLE responses (ordinal INTEGER NOT NULL, body BLOB NOT NULL)")

    def insert(sql: str, rows: list) -> None:
        db.execute("BEGIN")
        db.executemany(sql, rows)
        db.execute("COMMIT")

    rows: list[tuple[int, bytes]] = []
    with requests.open("rb") as f:
        for ordinal, line in enumerate(f):
            orjson.loads(line)
            rows.append((ordinal, line))
            if len(rows) == 10_000:
                insert("INSERT INTO requests VALUES (?, ?)", rows)
                rows = []
    insert("INSERT INTO requests VALUES (?, ?)", rows)
    rows = []
    with responses.open("rb") as f:
        for line in f:
            rows.append((int(orjson.loads(line)["custom_id"]), line))
            if len(rows) == 10_000:
                insert("INSERT INTO responses (ordinal, body) VALUES (?, ?)", rows)
                rows = []
    insert("INSERT INTO responses (ordinal, body) VALUES (?, ?)", rows)
    with (workdir / "floor.out.jsonl").open("wb") as out:
        cur = db.execute("SELECT q.line, r.body FROM responses r JOIN requests q ON q.ordinal = r.ordinal ORDER BY r.ordinal")
        while chunk := cur.fetchmany(10_000):
            out.write(b"".join(orjson.dumps({"input": orjson.Fragment(q), "output": orjson.Fragment(r)}) + b"\n"
                               for q, r in chunk))
    db.close()
    return cpu() - start


def child(requests: Path, responses: Path, n: int, base_url: str, workdir: Path, budget: int | None) -> dict:
    """One measured run (in its own process): the floor, then batchery (budget: its enqueued-token budget,
    None for OpenAI's default)."""
    os.sync()  # not while the kernel writes back the last run's files
    before = floor(requests, responses, workdir)
    # imported after the floor, as a command would import them
    from batchery.engine import Engine, PollPolicy, file_fingerprint, prepare_job
    from batchery.export import export
    from batchery.inputs import read_requests
    from batchery.providers import get_provider
    from batchery.store import Store

    cpus: dict[str, float] = {}
    store = Store(workdir / "store")
    provider = get_provider("openai", base_url=base_url, api_key="bench")

    def stage(name: str, start: float) -> float:
        now = cpu()
        cpus[name] = now - start
        return now

    t = cpu()
    job, _ = prepare_job(store, "bench", provider, "gpt-4o-mini", read_requests(requests),
                         file_fingerprint(requests, "openai", "gpt-4o-mini"))
    engine = Engine(store, provider, job, poll=PollPolicy(initial=0.05, maximum=0.5), max_enqueued_tokens=budget)
    t = stage("ingest", t)
    engine._plan()
    plan = cpu() - t  # of submit: splitting into batches, with the enqueued-token count
    for batch in store.batches(job.id, ["planned"]):
        engine._submit(batch)
    t = stage("submit", t)
    in_flight = store.batches(job.id, ["submitted"])
    while True:
        states = provider.poll([b.remote_id for b in in_flight])
        if all(s.ended for s in states.values()):
            break
        time.sleep(0.05)
    t = stage("poll", t)
    for batch in in_flight:
        engine._collect(batch, states[batch.remote_id])
    t = stage("collect", t)
    lines = export(store, job.id, "openai", workdir / "results.jsonl")
    checked = cpu()
    counts = store.counts(job.id)  # the benchmark's own check, left out of the stage
    t += cpu() - checked
    store.close()  # its last checkpoint is work the run did, as the floor's close is
    stage("export", t)
    assert lines == n and counts.get("succeeded") == n, (lines, counts)
    db_bytes = sum(p.stat().st_size for p in (workdir / "store").rglob("*") if p.is_file())
    (workdir / "after").mkdir()
    os.sync()
    after = floor(requests, responses, workdir / "after")
    total = sum(cpus.values())
    return {"floor": before / n * 1e6, "floor_after": after / n * 1e6,
            **{k: v / n * 1e6 for k, v in cpus.items()}, "of_submit_plan": plan / n * 1e6, "total": total / n * 1e6, "ratio": total / before,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "store_mb": db_bytes / 1e6}


def run_child(src: Path, requests: Path, responses: Path, n: int, base_url: str, workdir: Path,
              budget: int | None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, __file__, "--child", str(requests), str(responses), str(n), base_url,
                          str(workdir), str(budget or 0)], env=env, check=True, capture_output=True)
    return orjson.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated request counts (default 10k,100k)")
    parser.add_argument("-r", "--runs", type=int, default=3, help="runs per size (medians are reported)")
    parser.add_argument("--compare", type=Path, help="another source tree (its src/ folder) run alternately")
    parser.add_argument("--max-enqueued-tokens", type=int, metavar="N",
                        help="batchery's enqueued-token budget (default: OpenAI's, 2,000,000, which these prompts"
                             " pass, so every one is counted)")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--data", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.data:
        n, requests, responses = args.data
        write_requests(Path(requests), int(n))
        write_floor_responses(Path(requests), Path(responses))
        return
    if args.child:
        requests, responses, n, url, workdir, budget = args.child
        print(orjson.dumps(child(Path(requests), Path(responses), int(n), url, Path(workdir), int(budget) or None)).decode())
        return

    trees = {"batchery": SRC, **({"compare": args.compare.resolve()} if args.compare else {})}
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",")]
    proc, url = start_emulator()
    results: dict[tuple[int, str], list[dict]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in sizes:
                requests, responses = Path(tmp) / f"requests-{n}.jsonl", Path(tmp) / f"responses-{n}.jsonl"
                # made in another process: a child's peak RSS counts its parent's at the fork
                subprocess.run([sys.executable, __file__, "--data", str(n), str(requests), str(responses)],
                               env={**os.environ, "PYTHONPATH": str(SRC)}, check=True)
                for i in range(args.runs):
                    for name, src in trees.items():
                        workdir = Path(tmp) / f"{name}-{n}-{i}"
                        workdir.mkdir()
                        r = run_child(src, requests, responses, n, url + "/v1", workdir, args.max_enqueued_tokens)
                        results.setdefault((n, name), []).append(r)
                        print(f"{n:>9,} {name:<8} run {i + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in r.items()),
                              file=sys.stderr)
                        subprocess.run(["rm", "-rf", str(workdir)], check=True)
    finally:
        proc.terminate()
        proc.wait()

    print(f"client CPU µs per request, medians of {args.runs} run(s) (user + system time; floor measured first in"
          " each run; x floor: the median of the runs' ratios)")
    print(f"{'requests':>10} {'tree':<9} {'total':>7} {'ingest':>7} {'submit':>7} {'collect':>8} {'export':>7}"
          f" {'floor':>6} {'x floor':>8} {'peak RSS':>9} {'store':>8}")
    for (n, name), runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"{n:>10,} {name:<9} {med['total']:>7.1f} {med['ingest']:>7.1f} {med['submit']:>7.1f}"
              f" {med['collect']:>8.1f} {med['export']:>7.1f} {med['floor']:>6.1f} {med['ratio']:>7.2f}x"
              f" {med['rss_mb']:>6.0f} MB {med['store_mb']:>5.0f} MB")


if __name__ == "__main__":
    main()
