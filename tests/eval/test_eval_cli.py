"""`batchery eval` as users run it: one progress line per stage, named after the stage, and
`eval status --json`."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import orjson
import yaml

from batchery.eval.config import load_config
from batchery.eval.pipeline import EvalRunner
from batchery.store import Store

DEMO = Path(__file__).parents[2] / "examples" / "eval"


def small_eval(tmp_path: Path) -> Path:
    """Two statements of the demo spec, one input each, one candidate and one judge, on the emulator."""
    spec = tmp_path / "spec.jsonl"
    spec.write_bytes(b"\n".join(DEMO.joinpath("spec.jsonl").read_bytes().splitlines()[:2]) + b"\n")
    ids = [orjson.loads(line)["id"] for line in spec.read_bytes().splitlines()]
    inputs = [line for line in DEMO.joinpath("inputs.jsonl").read_bytes().splitlines()
              if orjson.loads(line)["statement_id"] in ids]
    (tmp_path / "inputs.jsonl").write_bytes(b"\n".join([inputs[0], inputs[-1]]) + b"\n")
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump({
        "name": "small", "spec": "spec.jsonl", "inputs": "inputs.jsonl", "emulate": True,
        "candidates": [{"name": "mini", "provider": "openai", "model": "gpt-4o-mini"}],
        "judges": [{"name": "judge-4o", "provider": "openai", "model": "gpt-4o"}],  # an SDK the suite has loaded
        "store": "store", "out": "out"}))
    return path


def run_stages(path: Path, progress) -> None:
    """The evaluation's stages (no statistics or report: they are not what these tests check)."""
    config = load_config(path)
    with Store(config.store) as store:
        EvalRunner(config, store, on_stage=progress.stage, on_progress=progress).run()
    progress.close()


def test_an_evaluation_in_a_terminal_shows_one_progress_line_per_stage_named_after_it(tmp_path):
    from rich.console import Console

    from batchery.cli.progress import RichProgress

    console = Console(file=io.StringIO(), record=True, width=160)  # the final render of the live bars
    run_stages(small_eval(tmp_path), RichProgress(console=console))
    lines = [line for line in console.export_text().splitlines() if line.strip()]
    assert [line.split("(")[0].strip() for line in lines] == ["generate: mini", "judge: judge-4o"]
    assert all("2/2" in line and "batches: 1 done" in line for line in lines), lines


def test_eval_logs_name_each_stage_and_eval_status_takes_json(tmp_path, capsys):
    from batchery.cli.progress import PlainProgress

    path = small_eval(tmp_path)
    run_stages(path, PlainProgress())
    log = capsys.readouterr().err
    # a stage's line starts under its name as it opens (stages overlap: no line waits for another)
    assert "stage generate: mini (2 requests)\n[generate: mini (2 requests)] requests 0/2 done" in log
    assert "[generate: mini (2 requests)] requests 2/2 done, 0 failed | batches: 1 done" in log
    assert "[judge: judge-4o (2 requests)] requests 2/2 done, 0 failed | batches: 1 done" in log
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    status = subprocess.run([sys.executable, "-m", "batchery", "eval", "status", str(path), "--json"],
                            check=False, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    data = orjson.loads(status.stdout)
    assert data["evaluation"] == "small" and [j["stage"] for j in data["jobs"]] == ["generate", "judge"]
    assert all(j["state"] == "done" and j["requests"] == {"succeeded": 2} for j in data["jobs"])
