"""Where results go (`--out`): a regular file is replaced atomically; a FIFO or a device is written
into, never replaced; `-` is standard output; a folder that does not exist stops the run before
anything is sent."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from conftest import start_job

from batchery.store import Store


def _batchery(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run([sys.executable, "-m", "batchery", *args], env={**env, "OPENAI_API_KEY": "test-key"},
                          cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def finished_store(tmp_path, emulator):
    with Store(tmp_path / "store") as st:
        start_job(st, emulator, [{"id": f"q{i}", "prompt": f"question {i}"} for i in range(3)]).run()
    return tmp_path / "store"


def test_out_into_a_fifo_writes_into_it_and_leaves_it_a_fifo(tmp_path, finished_store):
    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader is there; three lines fit in the pipe
    try:
        done = _batchery("results", "job", "--store", str(finished_store), "--out", str(fifo))
        assert done.returncode == 0, done.stderr
        received = os.read(reader, 1 << 20)
    finally:
        os.close(reader)
    assert [orjson.loads(line)["id"] for line in received.splitlines()] == ["q0", "q1", "q2"]
    assert stat.S_ISFIFO(fifo.stat().st_mode) and not (tmp_path / "results.fifo.tmp").exists()


def test_out_into_a_character_device_writes_into_it_and_never_replaces_it(tmp_path, finished_store):
    null = tmp_path / "null"  # a private /dev/null: the real one is never put at risk by this test
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device node needs root")
    done = _batchery("results", "job", "--store", str(finished_store), "--out", str(null))
    assert done.returncode == 0, done.stderr
    assert stat.S_ISCHR(null.stat().st_mode) and null.stat().st_rdev == os.makedev(1, 3)


def test_out_dash_writes_results_to_standard_output_for_run_and_results(tmp_path, emulator, finished_store):
    results = _batchery("results", "job", "--store", str(finished_store), "--out", "-")
    assert results.returncode == 0, results.stderr
    assert [orjson.loads(line)["id"] for line in results.stdout.splitlines()] == ["q0", "q1", "q2"]

    requests = tmp_path / "reqs.jsonl"
    requests.write_text('{"id": "a", "prompt": "one"}\n{"id": "b", "prompt": "two"}\n')
    run = _batchery("run", str(requests), "--model", "m", "--base-url", emulator.base_url("openai"),
                    "--store", str(finished_store), "--out", "-", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert [orjson.loads(line)["id"] for line in run.stdout.splitlines()] == ["a", "b"]
    assert not (tmp_path / "-").exists()  # not a file named "-"


def test_out_into_a_missing_folder_fails_before_anything_is_sent(tmp_path, emulator):
    requests = tmp_path / "reqs.jsonl"
    requests.write_text('{"prompt": "one"}\n')
    done = _batchery("run", str(requests), "--model", "m", "--base-url", emulator.base_url("openai"),
                     "--store", str(tmp_path / "store"), "--out", str(tmp_path / "missing" / "dir" / "x.jsonl"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"the folder {tmp_path / 'missing' / 'dir'} does not exist" in done.stderr
    assert emulator.stats()["files_uploaded"] == 0 and not (tmp_path / "store").exists()
