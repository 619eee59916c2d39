"""Start-up: how long a command takes before it does anything, as medians of several runs.

    .venv/bin/python benchmarks/startup.py             # 5 runs of each command, interleaved
    .venv/bin/python benchmarks/startup.py --runs 9
    .venv/bin/python benchmarks/startup.py --compare /path/to/other/src   # alternate with another tree

Commands, each a fresh `python -m batchery` process (as the installed `batchery` script runs it),
in turn so that a noisy machine slows them alike:

* `python -c pass`: the interpreter alone, the floor every command pays; `import typer`, the
  command-line framework every command loads (a floor of its own, not batchery's to shrink);
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
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from overhead import start_emulator


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one command; CPU time suffers less from a busy machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--compare", type=Path, metavar="SRC",
                        help="also run the batchery commands from another source tree (its src/), alternating")
    args = parser.parse_args()

    import batchery

    compileall.compile_dir(str(Path(batchery.__file__).parent), quiet=1)
    if args.compare:
        compileall.compile_dir(str(args.compare / "batchery"), quiet=1)
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

            timed(run("live")(-1), env)  # a finished job for status to show ...
            timed([*cli, "status"], env)  # ... and its prices in the store's cache, as every status but the first finds them
            commands = {
                "python -c pass": lambda r: [sys.executable, "-c", "pass"],
                "python -c 'import typer'": lambda r: [sys.executable, "-c", "import typer"],
                "batchery --help": lambda r: [*cli, "--help"],
                "batchery status": lambda r: [*cli, "status"],
                "run, live (fast path)": run("live"),
                "run, live (--http sdk)": run("live", "--http", "sdk"),
                "run, batch": run("batch"),
            }
            if args.compare:  # the same commands on the other tree (its own store), in turn with these
                other_env = {**env, "PYTHONPATH": str(args.compare), "BATCHERY_HOME": str(Path(tmp) / "other")}
                timed(run("live")(-1), other_env)
                timed([*cli, "status"], other_env)
            times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
            for name in [n for n in commands if args.compare and n.startswith(("batchery", "run"))]:
                times[f"{name}, --compare"] = []
            for r in range(args.runs):
                for name, argv in commands.items():
                    times[name].append(timed(argv(r), env))
                    if f"{name}, --compare" in times:
                        times[f"{name}, --compare"].append(timed(argv(r), other_env))
    finally:
        proc.terminate()
        proc.wait()
    def median(name: str, which: int) -> float:
        return statistics.median(t[which] for t in times[name])

    print(f"start-up, median of {args.runs} runs: wall seconds (runs), CPU seconds")
    for name, values in times.items():
        print(f"  {name:<38} {median(name, 0):6.3f} ({', '.join(f'{w:.3f}' for w, _ in values)})"
              f"   CPU {median(name, 1):.3f}")
    for which, label in ((0, "wall"), (1, "CPU")):
        ratios = [median(name, which) / median("run, live (--http sdk)", which)
                  for name in ("run, live (fast path)", "batchery status", "batchery --help")]
        print(f"{label}, over a live run on the SDK path: fast-path run {ratios[0]:.2f}, status {ratios[1]:.2f}, "
              f"--help {ratios[2]:.2f}")


if __name__ == "__main__":
    main()
