"""Where the store lives: one per user, the same from any working directory, so running the same
command from another folder resumes instead of sending (and billing) everything again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import batchery
from batchery.eval.config import load_config
from batchery.paths import resolve_store_dir


def _batchery(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}  # XDG_DATA_HOME: a tmp folder
    return subprocess.run([sys.executable, "-m", "batchery", *args], env={**env, "OPENAI_API_KEY": "test-key"},
                          cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_the_same_command_from_another_folder_resumes_from_the_per_user_store(tmp_path, emulator, user_data_dir):
    requests = tmp_path / "reqs.jsonl"
    requests.write_bytes(b"".join(orjson.dumps({"prompt": f"q{i}"}) + b"\n" for i in range(3)))
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    args = ("run", str(requests), "--model", "gpt-test", "--base-url", emulator.base_url("openai"))

    first = _batchery(*args, cwd=here)
    assert first.returncode == 0, first.stderr
    second = _batchery(*args, cwd=there)
    assert second.returncode == 0, second.stderr
    assert emulator.stats()["batches_created"]["openai"] == 1  # nothing was sent again
    assert f"store: {user_data_dir}\n" in first.stderr and f"store: {user_data_dir}\n" in second.stderr
    assert (there / "reqs.results.jsonl").read_bytes() == (here / "reqs.results.jsonl").read_bytes()
    assert not (here / ".batchery").exists() and not (there / ".batchery").exists()

    status = _batchery("status", cwd=tmp_path)
    assert status.stdout.startswith(f"store: {user_data_dir}\n") and "reqs: done" in status.stdout


def test_batchery_home_and_store_win_over_the_default(tmp_path, monkeypatch, user_data_dir):
    monkeypatch.chdir(tmp_path)
    assert resolve_store_dir(None) == user_data_dir
    monkeypatch.setenv("BATCHERY_HOME", str(tmp_path / "home"))
    assert resolve_store_dir(None) == tmp_path / "home"
    assert resolve_store_dir(tmp_path / "explicit") == tmp_path / "explicit"


def test_an_existing_dot_batchery_in_the_working_directory_keeps_working_with_a_notice(tmp_path, monkeypatch, capsys):
    (tmp_path / ".batchery").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_store_dir(None) == tmp_path / ".batchery"
    assert "using ./.batchery in this folder (an older default)" in capsys.readouterr().err


def test_the_python_api_uses_the_same_default_store(tmp_path, monkeypatch, user_data_dir):
    monkeypatch.chdir(tmp_path)
    results = batchery.run([{"prompt": "hello"}], model="gpt-test", emulate=True)
    assert [r.status for r in results] == ["succeeded"]
    assert (user_data_dir / "batchery.db").is_file() and not (tmp_path / ".batchery").exists()


def test_an_evaluations_report_folder_is_beside_its_config_from_any_working_directory(tmp_path, monkeypatch):
    folder = tmp_path / "evals"
    folder.mkdir()
    (folder / "spec.jsonl").write_text("")
    (folder / "inputs.jsonl").write_text("")
    (folder / "e.yaml").write_text("name: e\nspec: spec.jsonl\ninputs: inputs.jsonl\n"
                                   "candidates: [{provider: openai, model: m}]\njudges: [{provider: groq, model: j}]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("../evals/e.yaml"))
    assert config.out.resolve() == folder / "eval-out" / "e"
    assert config.store is None  # the default store, which does not depend on the working directory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the rule batchery applies itself is Linux's")
def test_the_default_folder_is_the_one_platformdirs_names_with_or_without_xdg_data_home(tmp_path, monkeypatch):
    import platformdirs

    from batchery.paths import default_store_dir

    for xdg, home in ((str(tmp_path / "xdg"), str(tmp_path)), ("", str(tmp_path)), ("relative/xdg", f"{tmp_path}/"),
                      (None, "/"), (None, None), (None, "relative-home"), (f"{tmp_path}/xdg/", None)):
        for name, value in (("XDG_DATA_HOME", xdg), ("HOME", home)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        assert default_store_dir() == Path(platformdirs.user_data_dir("batchery", appauthor=False)), (xdg, home)
