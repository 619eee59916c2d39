"""Start-up: how long a command takes before it does anything, as medians of several runs.

    .venv/bin/python benchmarks/startup.py             # 5 runs of each command, interleaved
    .venv/bin/python benchmarks/startup.py --runs 9

Commands, each a fresh `python -m batchery` process (as the installed `batchery` script runs it),
in turn so that a noisy machine slows them alike:

* `python -c pass`: the interpreter alone, the floor every command pays;
* `batchery --help` and `batchery status` (a store holding one finished job): targets <= 0.2 s;
* `batchery run` of one request in live mode against an emulator in its own process, on the fast
  path (the default) and on the SDK path (`--http sdk`): the fixed cost of a run, target <= 0.3 s;
* `batchery run` of one request in batch mode (upload, create, poll, download through the SDK).

Bytecode is compiled first and PYTHONDONTWRITEBYTECODE is dropped for the children, so sources are
not compiled on every run (an installed package has its .pyc files). The machine is shared: compare
each command with the floor measured in the same run.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from overhead import start_emulator


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    import batchery

    compileall.compile_dir(str(Path(batchery.__file__).parent), quiet=1)
    proc, url = start_emulator()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env.update(BATCHERY_HOME=str(Path(tmp) / "store"), OPENAI_API_KEY="bench-key")
            one = Path(tmp) / "one.jsonl"
            one.write_text('{"prompt": "What is 2 + 2?", "max_tokens": 8}\n')
            cli = [sys.executable, "-m", "batchery"]

            def run(mode: str, *extra: str):
                def argv(r: int) -> list[str]:
                    return [*cli, "run", str(one), "--model", "gpt-4o-mini", "--base-url", f"{url}/v1",
                            "--mode", mode, "--job", f"{mode}{'-'.join(extra)}-{r}", "--no-cache",
                            "--out", str(Path(tmp) / "out.jsonl"), *extra]
                return argv

            timed(run("live")(-1), env)  # a finished job for status to show
            commands = {
                "python -c pass": lambda r: [sys.executable, "-c", "pass"],
                "batchery --help": lambda r: [*cli, "--help"],
                "batchery status": lambda r: [*cli, "status"],
                "run, live (fast path)": run("live"),
                "run, live (--http sdk)": run("live", "--http", "sdk"),
                "run, batch": run("batch"),
            }
            times: dict[str, list[float]] = {name: [] for name in commands}
            for r in range(args.runs):
                for name, argv in commands.items():
                    times[name].append(timed(argv(r), env))
    finally:
        proc.terminate()
        proc.wait()
    floor = statistics.median(times["python -c pass"])
    print(f"start-up, median of {args.runs} runs (s), and over the bare interpreter's {floor:.3f} s:")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<24} {median:6.3f}  (+{median - floor:.3f})   runs: {', '.join(f'{v:.3f}' for v in values)}")
    fast, sdk = statistics.median(times["run, live (fast path)"]), statistics.median(times["run, live (--http sdk)"])
    print(f"live run, fast path / SDK path: {fast / sdk:.2f}")


if __name__ == "__main__":
    main()
