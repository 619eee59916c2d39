"""Client-side overhead of a batch job: CPU per request, wall time per stage, peak memory.

N requests go through the real engine and OpenAI SDK to an emulator running in a *separate*
process with instant processing, so what is measured is batchery's own cost.

    .venv/bin/python benchmarks/overhead.py                 # 100,000 requests, 3 runs
    .venv/bin/python benchmarks/overhead.py -n 1000000 -r 1

Each run uses a fresh store. The baseline, run in the same process, is the floor any tool pays:
parse each input line and write one JSON line out (orjson). Targets (issue 01): at most 50 µs of
client CPU per request and 300 MB peak RSS at 1,000,000 requests.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from batchery.engine import Engine, PollPolicy, file_fingerprint, prepare_job
from batchery.inputs import read_requests
from batchery.providers import get_provider
from batchery.export import export
from batchery.store import Store


def write_requests(path: Path, n: int) -> None:
    with path.open("wb") as f:
        for i in range(n):
            f.write(orjson.dumps({"id": i, "prompt": f"Question {i}: what is {i} + {i * 7 % 13}?",
                                  "max_tokens": 64}) + b"\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_emulator(*options: str) -> tuple[subprocess.Popen, str]:
    """`batchery emulator` in its own process; returns it and the server's URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "batchery.cli", "emulator", "--port", str(port), *options],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    t = os.times()
    return t.user + t.system


def baseline(path: Path, out: Path) -> float:
    """CPU seconds to parse every line and write one JSON line per input: the floor."""
    start = cpu()
    with path.open("rb") as f, out.open("wb") as o:
        for line in f:
            o.write(orjson.dumps({"input": orjson.loads(line), "status": "succeeded"}) + b"\n")
    return cpu() - start


class Stage:
    """Wall and CPU time of one stage."""

    def __init__(self, stages: dict, cpus: dict, name: str):
        self.stages, self.cpus, self.name = stages, cpus, name

    def __enter__(self):
        self.t, self.c = time.perf_counter(), cpu()

    def __exit__(self, *exc):
        self.stages[self.name] = time.perf_counter() - self.t
        self.cpus[self.name] = cpu() - self.c


def one_run(path: Path, n: int, base_url: str, workdir: Path) -> dict:
    stages: dict[str, float] = {}
    cpus: dict[str, float] = {}
    store = Store(workdir / "store")
    provider = get_provider("openai", base_url=base_url, api_key="bench")
    cpu0 = cpu()

    with Stage(stages, cpus, "prepare"):
        job, _ = prepare_job(store, "bench", provider, "gpt-4o-mini", read_requests(path),
                             file_fingerprint(path, "openai", "gpt-4o-mini"))
        engine = Engine(store, provider, job, poll=PollPolicy(initial=0.05, maximum=0.5))
        engine._plan()

    with Stage(stages, cpus, "submit"):
        for batch in store.batches(job.id, ["planned"]):
            engine._submit(batch)

    with Stage(stages, cpus, "poll"):
        in_flight = store.batches(job.id, ["submitted"])
        while True:
            states = provider.poll([b.remote_id for b in in_flight])
            if all(s.ended for s in states.values()):
                break
            time.sleep(0.05)

    with Stage(stages, cpus, "collect"):
        for batch in in_flight:
            engine._collect(batch, states[batch.remote_id])

    with Stage(stages, cpus, "export"):
        lines = export(store, job.id, "openai", workdir / "results.jsonl")
    used = cpu() - cpu0
    counts = store.counts(job.id)
    store.close()
    assert lines == n and counts.get("succeeded") == n, (lines, counts)
    return {"cpu_us_per_request": used / n * 1e6, **stages,
            **{f"cpu_us_{k}": v / n * 1e6 for k, v in cpus.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=100_000, help="requests per run")
    parser.add_argument("-r", "--runs", type=int, default=3, help="runs (medians are reported)")
    args = parser.parse_args()

    proc, url = start_emulator()
    base_url = url + "/v1"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmpdir = Path(tmp)
            path = tmpdir / "requests.jsonl"
            write_requests(path, args.n)
            base = statistics.median(baseline(path, tmpdir / "base.jsonl") for _ in range(3)) / args.n * 1e6
            runs = []
            for i in range(args.runs):
                runs.append(one_run(path, args.n, base_url, tmpdir / f"run{i}"))
                print(f"run {i + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[-1].items()), file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait()
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"requests: {args.n:,} x {args.runs} runs (medians)")
    print(f"client CPU per request: {med['cpu_us_per_request']:.1f} µs "
          f"(baseline parse+write: {base:.1f} µs, ratio {med['cpu_us_per_request'] / base:.1f}x)")
    print("wall seconds by stage: " + ", ".join(f"{k} {med[k]:.2f}" for k in
                                                 ("prepare", "submit", "poll", "collect", "export")))
    print("client CPU µs per request by stage: " + ", ".join(
        f"{k} {med['cpu_us_' + k]:.1f}" for k in ("prepare", "submit", "poll", "collect", "export")))
    print(f"peak RSS (client process): {rss_mb:.0f} MB")


if __name__ == "__main__":
    main()
