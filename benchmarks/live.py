"""Live mode throughput: how close to a rate limit batchery runs, and how fast it goes without one.

The emulator runs in a *separate* process (`batchery emulator --rpm ... --latency ...`); the
client is the real LiveRunner with the SQLite store, on its default fast path (one aiohttp
session, live/http.py) and on the official OpenAI SDK (`--http sdk`), alternating in one session.

    .venv/bin/python benchmarks/live.py                  # both scenarios, 3 runs each
    .venv/bin/python benchmarks/live.py --runs 5 --limited-requests 3000

1. Against a limit: the emulator admits 3,000 RPM and answers after 200 ms; the client is told
   --rpm 3000. Achieved RPM = requests / wall time; target >= 97% of the limit with < 0.5% of
   calls answered 429.
2. Raw: no limit, no latency. Target >= 5,000 requests/s on the fast path. Measured in the same
   session against the same emulator: the SDK path, and a bare httpx.AsyncClient posting the same
   bodies with the same concurrency (no SDK, no store). The machine is shared and noisy: compare
   the ratios, which one run measures side by side.
"""

from __future__ import annotations

import argparse
import asyncio
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


def run_live(url: str, n: int, tag: str, rpm: float | None, concurrency: int, http: str = "fast") -> dict:
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "store") as store:
        adapter = get_provider("openai", base_url=url + "/v1", api_key="bench")
        job, _ = prepare_job(store, tag, adapter, "gpt-4o-mini", iter_objects(requests(n, tag)), tag)
        started, cpu = time.perf_counter(), time.process_time()
        progress = LiveRunner(store, adapter, job, LivePolicy(rpm=rpm, concurrency=concurrency, http=http)).run()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert progress.items.get("succeeded") == n, progress.items
    return {"elapsed": elapsed, "rpm": n / elapsed * 60, "per_s": n / elapsed, "cpu_us": cpu / n * 1e6,
            "429_share": progress.live["rate_limited"] / progress.live["sent"]}


async def _bare(url: str, n: int, concurrency: int) -> float:
    import httpx

    bodies = [orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": r["prompt"]}],
                            "max_completion_tokens": 32}) for r in requests(n, "bare")]
    queue: asyncio.Queue = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    headers = {"authorization": "Bearer bench", "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=url, headers=headers,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker() -> None:
            while not queue.empty():
                response = await client.post("/v1/chat/completions", content=queue.get_nowait())
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--limited-requests", type=int, default=2_000)
    parser.add_argument("--raw-requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    proc, url = start_emulator("--rpm", str(LIMIT_RPM), "--latency", str(LATENCY))
    try:
        limited = [run_live(url, args.limited_requests, f"limited{r}", LIMIT_RPM, args.concurrency)
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

    proc, url = start_emulator()
    try:
        raw: dict[str, list[float]] = {"fast": [], "sdk": [], "bare httpx": []}
        for r in range(args.runs):
            raw["fast"].append(run_live(url, args.raw_requests, f"raw{r}", None, args.concurrency)["per_s"])
            raw["sdk"].append(run_live(url, args.raw_requests, f"sdk{r}", None, args.concurrency, "sdk")["per_s"])
            raw["bare httpx"].append(asyncio.run(_bare(url, args.raw_requests, args.concurrency)))
    finally:
        proc.terminate()
        proc.wait()
    fast, sdk, bare = (statistics.median(v) for v in raw.values())
    print(f"no limit, no latency, {args.raw_requests:,} requests, median of {args.runs}: "
          f"{fast:,.0f} requests/s through batchery (fast path + store), {sdk:,.0f} on the SDK path "
          f"(fast/SDK {fast / sdk:.2f}); bare httpx client {bare:,.0f} (fast/bare {fast / bare:.2f}) (runs: "
          + "; ".join(f"{name} {', '.join(f'{x:,.0f}' for x in runs)}" for name, runs in raw.items()) + ")")


if __name__ == "__main__":
    main()
