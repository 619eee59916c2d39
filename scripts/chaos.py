"""Chaos: kill -9 `batchery run` at random moments, run it again, and check that every job still
ends exactly once: every result line present, in order, answered once; no remote batch created twice.

    .venv/bin/python scripts/chaos.py --kills 200 --seed 1     # the long run
    (tests/test_chaos.py runs a short one in `make test`)

The emulator runs in this process on a real clock with short processing times; the CLI runs as a
real child process, killed after a seeded random delay, so deaths land while reading input,
splitting, uploading, creating, polling, downloading and writing results. When a run finishes
before its kill, the next job starts, so every kill lands on a job with work left.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import openai
import orjson

from batchery.emulator import Emulator


def run_chaos(workdir: Path, *, kills: int, seed: int, n: int = 400, batch_size: int = 37,
              max_delay: float = 2.5, store: str | Path | None = None) -> dict:
    """`store`: a folder or a postgresql:// URL (default: a folder in workdir)."""
    rng = random.Random(seed)
    env = {**os.environ, "OPENAI_API_KEY": "chaos-key"}
    with Emulator(processing_seconds=0.3) as emulator:

        def command(job: int) -> list[str]:
            requests = workdir / f"chaos-{job}.jsonl"
            if not requests.exists():
                requests.write_bytes(b"".join(
                    orjson.dumps({"id": i, "prompt": f"chaos job {job} question {i}"}) + b"\n" for i in range(n)))
            return [sys.executable, "-m", "batchery", "run", str(requests), "--model", "m",
                    "--base-url", emulator.base_url("openai"), "--batch-size", str(batch_size),
                    "--store", str(store or workdir / "store"), "--out", str(workdir / f"chaos-{job}.results.jsonl")]

        job, killed = 0, 0
        for _ in range(kills):
            proc = subprocess.Popen(command(job), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.2, max_delay))  # the fault: death at a random moment
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed += 1
            elif proc.returncode == 0:
                job += 1  # finished before its kill: the next kills go to a new job
            proc.wait()
        final = subprocess.run(command(job), env=env, capture_output=True, text=True, timeout=300)
        assert final.returncode == 0, final.stderr
        stats = emulator.stats()
        client = openai.OpenAI(base_url=emulator.base_url("openai"), api_key="chaos-key")
        tags = Counter((b.metadata or {}).get("batchery_batch") for b in client.batches.list(limit=100))
    jobs = job + 1
    results = [[orjson.loads(line) for line in (workdir / f"chaos-{j}.results.jsonl").read_bytes().splitlines()]
               for j in range(jobs)]
    report = {
        "kills": killed,
        "jobs": jobs,
        "result_lines": sum(len(rows) for rows in results),
        "in_order": all([r["id"] for r in rows] == [str(i) for i in range(n)] for rows in results),
        "all_succeeded": all(r["status"] == "succeeded" for rows in results for r in rows),
        "requests_processed": stats["requests_processed"],
        "remote_batches": sum(tags.values()),
        "batches_created_twice": sum(1 for count in tags.values() if count > 1),
    }
    report["ok"] = (report["result_lines"] == n * jobs and report["in_order"] and report["all_succeeded"]
                    and report["batches_created_twice"] == 0 and report["requests_processed"] == n * jobs)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-n", type=int, default=400, help="requests per job")
    parser.add_argument("--store", help="a postgresql:// URL (default: a SQLite store in a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = run_chaos(Path(tmp), kills=args.kills, seed=args.seed, n=args.n, store=args.store)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
