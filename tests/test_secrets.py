"""API keys never reach the store, logs, exception messages or exported files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from test_cli import batchery, write_jsonl

SECRET = "test-secret-key-7f3a9c51e2"  # recognisable, and not shaped like a real provider key


def files_under(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.is_file()]


def test_a_job_leaves_the_key_in_no_file_and_no_output(tmp_path, emulator):
    requests = write_jsonl(tmp_path / "reqs.jsonl", [{"id": i, "prompt": f"q{i}"} for i in range(30)])
    store, out = tmp_path / "store", tmp_path / "out"
    out.mkdir()
    runs = [
        batchery("run", str(requests), "--model", "m", "--base-url", emulator.base_url("openai"), "--batch-size", "7",
                 "--store", str(store), "--out", str(out / "results.jsonl"), env={"OPENAI_API_KEY": SECRET}),
        batchery("results", "reqs", "--format", "csv", "--out", str(out / "results.csv"), "--store", str(store)),
        batchery("status", "reqs", "--json", "--store", str(store)),
    ]
    assert runs[0].returncode == 0, runs[0].stderr
    # a provider that refuses the key: the error names the problem, not the key
    refused = batchery("run", str(requests), "--job", "refused", "--model", "other-model",
                       "--base-url", emulator.url + "/no-such-api/v1", "--store", str(store),
                       env={"OPENAI_API_KEY": SECRET})
    assert refused.returncode == 2 and "error: openai upload refused (404)" in refused.stderr, refused.stderr
    runs.append(refused)
    for run in runs:
        assert SECRET not in run.stdout + run.stderr
    written = files_under(store, out)
    assert any(p.name == "batchery.db" for p in written) and len(written) >= 3
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), f"the key leaked into {path}"


def test_store_files_are_private(tmp_path):
    done = batchery("run", str(write_jsonl(tmp_path / "r.jsonl", [{"prompt": "hi"}])), "--model", "m", "--emulate",
                    "--store", str(tmp_path / "store"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(os.stat(tmp_path / "store").st_mode) == 0o700
    for path in files_under(tmp_path / "store"):
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, f"{path} is readable by others"


def test_the_emulator_binds_loopback_by_default():
    from batchery.emulator import Emulator

    with Emulator() as emulator:
        assert emulator.url.startswith("http://127.0.0.1:")
