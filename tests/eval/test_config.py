"""An evaluation config is checked whole before any stage runs: every problem named with the
config file and field, in one message, and nothing sent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from batchery.errors import ConfigError
from batchery.eval.config import RankingConfig, load_config
from batchery.eval.pipeline import run_evaluation
from batchery.store import Store

DEMO = Path(__file__).parents[2] / "examples" / "eval"


def write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "support.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_every_problem_of_a_config_is_named_with_file_and_field_before_anything_runs(tmp_path):
    path = write(tmp_path, {
        "name": "support", "spec": str(DEMO / "spec.jsonl"), "inputs": "nothere.jsonl", "emulate": True,
        "store": str(tmp_path / "store"),
        "candidates": [{"name": "a", "provider": "openai", "model": "gpt-4o-mini", "params": {"temperature": 0.7}},
                       {"name": "b", "provider": "openai", "model": "gpt-4o-mini", "params": {"temperatur": 0.7}},
                       {"name": "c", "provider": "anthropic", "model": "claude-haiku-4-5",
                        "params": {"temperature": 1.5}}],
        "judges": [{"provider": "gemnii", "model": "gemini-2.5-flash"},
                   {"provider": "groq", "model": "llama-3.3-70b-versatile", "paramz": {}}],
        "jurry": "majority",
    })
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    done = subprocess.run([sys.executable, "-m", "batchery", "eval", "run", str(path)], check=False, capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.removeprefix("error: ").splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    problems = {line.removeprefix(f"{path}: ") for line in lines}
    assert "candidates[1].params.temperatur: unknown parameter (did you mean 'temperature'?)" in "\n".join(problems)
    assert "candidates[2].params: anthropic takes temperature between 0 and 1, got 1.5" in problems
    assert any(p.startswith("judges[0].provider: unknown provider 'gemnii' (did you mean 'gemini'?)") for p in problems)
    assert "judges[1].paramz: unknown key (did you mean 'params'?)" in problems
    assert "jurry: unknown key (did you mean 'jury'?)" in problems
    assert f"inputs: no such file {tmp_path / 'nothere.jsonl'}" in problems
    assert len(problems) == 6
    assert not (tmp_path / "store").exists()  # no stage ran: the store was never even opened


def test_parameters_the_prompts_own_and_out_of_range_values_are_named(tmp_path):
    path = write(tmp_path, {
        "name": "x", "spec": str(DEMO / "spec.jsonl"), "inputs": str(DEMO / "inputs.jsonl"),
        "candidates": [{"provider": "openai", "model": "m", "params": {"system": "be nice", "max_tokens": 0}}],
        "judges": [{"provider": "mistral", "model": "m", "params": {"temperature": 5}}],
    })
    with pytest.raises(ConfigError) as problem:
        load_config(path)
    text = str(problem.value)
    assert "candidates[0].params.system: set by batchery's prompts, not a parameter (use the model's own " in text
    assert "judges[0].params: field 'temperature' must be between 0 and 2, got 5" in text


def test_a_ranking_whose_items_file_is_missing_is_refused(tmp_path):
    path = write(tmp_path, {"name": "r", "items": "items.jsonl", "trait": "clarity",
                            "judges": [{"provider": "openai", "model": "m"}]})
    with pytest.raises(ConfigError, match=r"support\.yaml: items: no such file .*items\.jsonl"):
        load_config(path, RankingConfig)


def test_a_judge_without_a_key_stops_the_evaluation_before_the_first_stage(tmp_path, emulator, monkeypatch):
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    path = write(tmp_path, {
        "name": "keys", "spec": str(DEMO / "spec.jsonl"), "inputs": str(DEMO / "inputs.jsonl"),
        "store": str(tmp_path / "store"), "out": str(tmp_path / "out"),
        "candidates": [{"provider": "openai", "model": "gpt-4o-mini", "base_url": emulator.base_url("openai")}],
        "judges": [{"provider": "anthropic", "model": "claude-haiku-4-5"}],
    })
    config = load_config(path)
    with Store(config.store) as store, pytest.raises(ConfigError, match="ANTHROPIC_API_KEY is not set"):
        run_evaluation(config, store)
    assert emulator.stats()["files_uploaded"] == 0  # the candidates' stage never started
