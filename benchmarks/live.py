"""Live mode throughput: how close to a rate limit batchery runs, and how fast it goes without one.

The emulator runs in a *separate* process (`batchery emulator --rpm ... --latency ...`); the
client is the real LiveRunner with the SQLite store, on its default fast path (batchery's own
HTTP/1.1 client, live/http.py and h1.py) and on the official OpenAI SDK (`--http sdk`), alternating
in one session.

    .venv/bin/python benchmarks/live.py                  # both scenarios, 3 runs each
    .venv/bin/python benchmarks/live.py --runs 5 --limited-requests 3000
    .venv/bin/python benchmarks/live.py --only raw       # the raw scenario alone

1. Against a limit: the emulator admits 3,000 RPM and answers after 200 ms; the client is told
   --rpm 3000. Achieved RPM = requests / wall time; target >= 97% of the limit with < 0.5% of
   calls answered 429.
2. Raw: no limit, no latency. Target >= 5,000 requests/s on the fast path. Measured in the same
   session against the same emulator: the SDK path (on fewer requests: it is slow), and a bare
   client, h1.Client alone posting the same bodies with the same concurrency (no executor, no
   store), which shows what the emulator can serve. Besides requests/s, CPU per call of the client
   process and of the emulator's (from /proc on Linux): on 2 cores the two processes share the
   machine, so the rate is bounded by both. The machine is shared and noisy: compare the ratios,
   which one run measures side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from overhead import start_emulator

from batchery.engine import prepare_job
from batchery.inputs import iter_objects
from batchery.live import LivePolicy, LiveRunner
from batchery.providers import get_provider
from batchery.store import Store

LIMIT_RPM = 3_000
LATENCY = 0.2


def requests(n: int, tag: str) -> list[dict]:
    return [{"id": i, "prompt": f"{tag} question {i}: what is {i} + {i % 13}?", "max_tokens": 32} for i in range(n)]


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used, from /proc (None where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(emulator_pid: int, n: int, work) -> dict:
    """Run work(); its result with the wall time, requests/s and CPU µs per call of this process and
    of the emulator's."""
    emulator, started, cpu = process_cpu(emulator_pid), time.perf_counter(), time.process_time()
    result = work() or {}
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    used = process_cpu(emulator_pid)
    return {**result, "elapsed": elapsed, "rpm": n / elapsed * 60, "per_s": n / elapsed, "cpu_us": cpu / n * 1e6,
            "emulator_us": None if used is None or emulator is None else (used - emulator) / n * 1e6}


def run_live(url: str, emulator_pid: int, n: int, tag: str, rpm: float | None, concurrency: int,
             http: str = "fast") -> dict:
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "store") as store:
        adapter = get_provider("openai", base_url=url + "/v1", api_key="bench")
        job, _ = prepare_job(store, tag, adapter, "gpt-4o-mini", iter_objects(requests(n, tag)), tag)

        def work() -> dict:
            progress = LiveRunner(store, adapter, job, LivePolicy(rpm=rpm, concurrency=concurrency, http=http)).run()
            assert progress.items.get("succeeded") == n, progress.items
            return {"429_share": progress.live["rate_limited"] / progress.live["sent"]}

        return measured(emulator_pid, n, work)


async def _bare(url: str, n: int, concurrency: int) -> None:
    """The HTTP layer alone: h1.Client posting the bodies the fast path posts, nothing stored."""
    from batchery.live.h1 import Client, target

    bodies = [orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": r["prompt"]}],
                            "max_completion_tokens": 32}) for r in requests(n, "bare")]
    bodies.reverse()
    to = target(url + "/v1/chat/completions", {"Authorization": "Bearer bench", "Content-Type": "application/json"})
    client = Client(limit=concurrency)

    async def worker() -> None:
        while bodies:
            answer = await client.post(to, bodies.pop())
            assert answer.status == 200, answer

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await client.aclose()


def bare(url: str, emulator_pid: int, n: int, concurrency: int) -> dict:
    return measured(emulator_pid, n, lambda: asyncio.run(_bare(url, n, concurrency)))


def _cpu(runs: list[dict], key: str) -> str:
    values = [r[key] for r in runs if r[key] is not None]
    return f"{statistics.median(values):,.0f}" if values else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--limited-requests", type=int, default=2_000)
    parser.add_argument("--raw-requests", type=int, default=10_000)
    parser.add_argument("--sdk-requests", type=int, default=2_000, help="raw requests on the SDK path")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--only", choices=("limited", "raw"), help="one scenario only")
    args = parser.parse_args()

    if args.only != "raw":
        proc, url = start_emulator("--rpm", str(LIMIT_RPM), "--latency", str(LATENCY))
        try:
            limited = [run_live(url, proc.pid, args.limited_requests, f"limited{r}", LIMIT_RPM, args.concurrency)
                       for r in range(args.runs)]
        finally:
            proc.terminate()
            proc.wait()
        rpm = statistics.median(r["rpm"] for r in limited)
        share = statistics.median(r["429_share"] for r in limited)
        print(f"against {LIMIT_RPM:,} RPM at {LATENCY * 1000:.0f} ms latency, {args.limited_requests:,} requests, "
              f"median of {args.runs}: {rpm:,.0f} RPM = {rpm / LIMIT_RPM:.1%} of the limit, "
              f"{share:.2%} of calls answered 429 (runs: "
              + ", ".join(f"{r['rpm']:,.0f} RPM/{r['429_share']:.2%}" for r in limited) + ")")
    if args.only == "limited":
        return

    proc, url = start_emulator()
    try:
        raw: dict[str, list[dict]] = {"fast": [], "sdk": [], "bare": []}
        for r in range(args.runs):
            raw["fast"].append(run_live(url, proc.pid, args.raw_requests, f"raw{r}", None, args.concurrency))
            raw["sdk"].append(run_live(url, proc.pid, args.sdk_requests, f"sdk{r}", None, args.concurrency, "sdk"))
            raw["bare"].append(bare(url, proc.pid, args.raw_requests, args.concurrency))
    finally:
        proc.terminate()
        proc.wait()
    fast, sdk, bare_rate = (statistics.median(run["per_s"] for run in runs) for runs in raw.values())
    print(f"no limit, no latency, concurrency {args.concurrency}, median of {args.runs}: fast path "
          f"{fast:,.0f} requests/s ({args.raw_requests:,} requests, real LiveRunner and store); SDK path "
          f"{sdk:,.0f}/s ({args.sdk_requests:,} requests; fast/SDK {fast / sdk:.2f}); bare h1 client, no store, "
          f"{bare_rate:,.0f}/s (fast/bare {fast / bare_rate:.2f})")
    for name, runs in raw.items():
        rates = ", ".join(f"{run['per_s']:,.0f}" for run in runs)
        print(f"  {name:<5} runs {rates} requests/s; CPU per call: "
              f"client {_cpu(runs, 'cpu_us')} µs, emulator {_cpu(runs, 'emulator_us')} µs")


if __name__ == "__main__":
    main()
