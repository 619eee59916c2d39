"""An evaluation's wall time against one batch job's, on the emulator with a real processing time.

Issue 09's target: a 3-candidate, 3-judge pairwise evaluation takes at most 4x the wall time of a
single-batch job, because its stages overlap (every generation at once; judges and comparisons as
soon as the answers are in; all open batches polled together) instead of running one after another.

    .venv/bin/python benchmarks/eval_graph.py              # 4 s batches, median of 3 runs
    .venv/bin/python benchmarks/eval_graph.py --runs 5 --processing 8
    .venv/bin/python benchmarks/eval_graph.py --quick      # 1 s batches, 2 statements, 1 run

Both are measured in the same session against the same in-process emulator (a real HTTP server
with the official SDKs; each batch takes `--processing` seconds from create to completed), each run
in a fresh store so nothing is reused, with the same polling cadence (`--poll` seconds).

- single: one job of 30 prompts to one model, created, polled, collected.
- evaluation: the demo spec (10 statements x 3 inputs), candidates on OpenAI, Mistral and
  Anthropic, a jury on Gemini, Groq and OpenAI, every pair of candidates compared in both orders
  by every judge: 9 stage jobs, report included (statistics, HTML).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "eval"
CANDIDATES = [("strong", "openai", "gpt-4o"), ("weak", "mistral", "mistral-small-latest"),
              ("mid", "anthropic", "claude-sonnet-4-5")]
JUDGES = [("j1", "gemini", "gemini-2.5-flash"), ("j2", "groq", "llama-3.3-70b-versatile"),
          ("j3", "openai", "gpt-4o-mini")]


def poll_policy(seconds: float):
    from batchery.engine import PollPolicy

    return PollPolicy(initial=seconds, maximum=seconds)


def single_job(emulator, folder: Path, poll: float) -> float:
    """One batch of 30 prompts: submit, wait, collect. Seconds."""
    from batchery.engine import Engine, prepare_job
    from batchery.inputs import iter_objects
    from batchery.providers import get_provider
    from batchery.store import Store

    requests = [{"id": i, "prompt": f"single {folder.name} {i}: what is {i} + 1?", "max_tokens": 32} for i in range(30)]
    with Store(folder / "store") as store:
        started = time.perf_counter()
        adapter = get_provider("openai", base_url=emulator.base_url("openai"), api_key="bench")
        job, _ = prepare_job(store, "single", adapter, "gpt-4o-mini", iter_objects(requests), folder.name)
        progress = Engine(store, adapter, job, poll=poll_policy(poll)).run()
        elapsed = time.perf_counter() - started
    assert progress.items == {"succeeded": 30}, progress.items
    return elapsed


def evaluation(emulator, folder: Path, poll: float, statements: int) -> tuple[float, int]:
    """The 3 x 3 pairwise evaluation, report included. (seconds, batch windows)."""
    from batchery.eval.config import load_config
    from batchery.eval.pipeline import run_evaluation
    from batchery.store import Store

    folder.mkdir(parents=True, exist_ok=True)
    spec = DEMO.joinpath("spec.jsonl").read_bytes().splitlines()[:statements]
    (folder / "spec.jsonl").write_bytes(b"\n".join(spec) + b"\n")
    ids = {orjson.loads(line)["id"] for line in spec}
    inputs = [line for line in DEMO.joinpath("inputs.jsonl").read_bytes().splitlines()
              if orjson.loads(line)["statement_id"] in ids]
    (folder / "inputs.jsonl").write_bytes(b"\n".join(inputs) + b"\n")

    def models(entries):
        return [{"name": n, "provider": p, "model": m, "base_url": emulator.base_url(p)} for n, p, m in entries]

    path = folder / "eval.yaml"
    path.write_text(yaml.safe_dump({
        "name": f"bench-{folder.name}", "spec": "spec.jsonl", "inputs": "inputs.jsonl",
        "candidates": models(CANDIDATES), "judges": models(JUDGES), "jury": "majority",
        "pairwise": {"reversed_share": 1.0}, "store": "store", "out": "out"}))
    config = load_config(path)
    with Store(config.store) as store:
        started = time.perf_counter()
        result = run_evaluation(config, store, poll=poll_policy(poll))
        elapsed = time.perf_counter() - started
    assert result is not None
    return elapsed, result[0]["batch_windows"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each (the median is reported)")
    parser.add_argument("--processing", type=float, default=4.0, help="seconds each emulated batch takes")
    parser.add_argument("--poll", type=float, default=0.25, help="seconds between polls, for both")
    parser.add_argument("--quick", action="store_true", help="1 s batches, 2 statements, 1 run")
    args = parser.parse_args()
    statements = 10
    if args.quick:
        args.runs, args.processing, statements = 1, 1.0, 2

    from batchery.emulator import Emulator

    for provider in {p for _, p, _ in CANDIDATES + JUDGES}:
        os.environ.setdefault(f"{provider.upper()}_API_KEY", "bench")  # the emulator takes any key
    singles, evals, windows = [], [], set()
    with Emulator(processing_seconds=args.processing) as emulator, tempfile.TemporaryDirectory() as tmp:
        # warm-up: every SDK imported and the statistics modules loaded, outside the timings
        evaluation(emulator, Path(tmp) / "warm", 0.05, 1)
        for run in range(args.runs):
            singles.append(single_job(emulator, Path(tmp) / f"single-{run}", args.poll))
            seconds, count = evaluation(emulator, Path(tmp) / f"eval-{run}", args.poll, statements)
            evals.append(seconds)
            windows.add(count)
            print(f"run {run + 1}: single batch job {singles[-1]:.2f} s, evaluation {seconds:.2f} s "
                  f"({count} batch windows), ratio {seconds / singles[-1]:.2f}", file=sys.stderr)
    single, whole = statistics.median(singles), statistics.median(evals)
    print(f"batch processing time {args.processing:g} s, poll every {args.poll:g} s, {args.runs} run(s), medians:")
    print(f"  single-batch job                          {single:7.2f} s")
    print(f"  3 candidates x 3 judges, pairwise (9 jobs) {whole:7.2f} s   batch windows: "
          f"{', '.join(map(str, sorted(windows)))}")
    print(f"  ratio                                     {whole / single:7.2f}x   (target <= 4x)")


if __name__ == "__main__":
    main()
