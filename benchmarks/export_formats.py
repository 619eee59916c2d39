"""Results out: time and peak memory of `batchery results` as JSONL, CSV and Parquet, and of
`batchery.to_pandas`, for a finished job of N lines.

    .venv/bin/python benchmarks/export_formats.py               # 1,000,000 lines
    .venv/bin/python benchmarks/export_formats.py -n 100000
    .venv/bin/python benchmarks/export_formats.py --store /tmp/bench-store --formats parquet   # reuse a job

The job is ingested by the real engine (prepare_job) and answered through the store's own API with
an OpenAI-shaped body per line (no network: this measures the export, not the run). Each export
runs in a fresh process so its peak RSS (VmHWM, Linux) is its own; Parquet streams row groups, so
its peak should stay near that of JSONL and CSV whatever N is. to_pandas holds the frame, so its
memory grows with N by nature.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from batchery.engine import prepare_job
from batchery.inputs import iter_objects
from batchery.providers import get_provider
from batchery.store import Store

_MEASURE = """
import sys, time
from pathlib import Path
started = time.perf_counter()
fmt, store, out = sys.argv[1:4]
if fmt == "pandas":
    import batchery
    n = len(batchery.to_pandas("bench", store=store))
else:
    from batchery.export import export
    from batchery.store import Store
    with Store(store, read_only=True) as st:
        job = st.get_job("bench")
        n = export(st, job.id, job.provider, Path(out), fmt)
elapsed = time.perf_counter() - started
# VmHWM: this program's own peak (ru_maxrss would count the parent's RSS at the fork)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(n, elapsed, peak / 1024)
"""


def build(store_path: Path, n: int) -> None:
    objects = ({"id": f"q{i}", "prompt": f"question {i}: what is {i} + {i % 13}?", "max_tokens": 64,
                "metadata": {"split": "test" if i % 5 else "dev", "n": i}} for i in range(n))
    with Store(store_path) as st:
        adapter = get_provider("openai", base_url="http://127.0.0.1:9/v1", api_key="bench")
        job, _ = prepare_job(st, "bench", adapter, "gpt-4o-mini", iter_objects(objects), fingerprint="bench")
        after = 0
        while rows := st.pending_after(job.id, after, 20_000):
            outcomes, sends = [], []
            for item, _key, _model, _line in rows:
                text = f"The answer to question {item} is {item * 2}."
                body = {"id": f"chatcmpl-{item}", "object": "chat.completion", "created": 1_760_000_000,
                        "model": "gpt-4o-mini", "choices": [{"index": 0, "message": {"role": "assistant",
                        "content": text}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32}}
                failed = item % 97 == 0
                outcomes.append(("failed", None, None, None, None, None, None, "server_error", "boom", None, item, "live")
                                if failed else
                                ("succeeded", text, orjson.dumps(body), 20, 12, 0, 0, None, None, None, item, "live"))
                sends.append((1, item))
            st.finish_live_items(outcomes, sends)
            after = rows[-1][0]
        st.set_job_state(job.id, "done")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="lines in the job")
    parser.add_argument("--store", type=Path, help="keep the job in this store and reuse it on the next run")
    parser.add_argument("--formats", default="jsonl,csv,parquet,pandas", help="comma-separated")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or Path(tmp) / "store"
        if not (store / "batchery.db").exists():
            started = time.perf_counter()
            build(store, args.n)
            print(f"{args.n:,} lines stored in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        print(f"{'format':<8} {'lines':>10} {'seconds':>8} {'peak RSS MB':>12} {'file MB':>8}")
        for fmt in args.formats.split(","):
            out = Path(tmp) / f"results.{fmt}"
            done = subprocess.run([sys.executable, "-c", _MEASURE, fmt, str(store), str(out)],
                                  capture_output=True, text=True, check=True)
            n, seconds, peak = done.stdout.split()
            size = f"{out.stat().st_size / 1e6:8.1f}" if out.exists() else f"{'-':>8}"
            print(f"{fmt:<8} {int(n):>10,} {float(seconds):>8.1f} {float(peak):>12.0f} {size}")


if __name__ == "__main__":
    main()
