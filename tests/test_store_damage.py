"""Unusable stores and full disks: a clear one-line error, no traceback, nothing finished lost, no
half-written file; a store nobody may write to can still be read by `status` and `results`."""

from __future__ import annotations

import ctypes
import os
import resource
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from conftest import start_job

from batchery.store import Store

PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2


def _batchery(*args: str, preexec_fn: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run([sys.executable, "-m", "batchery", *args], env={**env, "OPENAI_API_KEY": "test-key", "PYTHONDONTWRITEBYTECODE": "1"},
                          preexec_fn=preexec_fn, capture_output=True, text=True, timeout=120, check=False)


def _obeying_file_modes() -> None:
    """Root ignores file modes (CAP_DAC_OVERRIDE): drop that power from the child's capability
    bounding set before exec, so a read-only file is read-only for it as for any other user."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                os._exit(97)


def _file_size_limit(limit: int) -> Callable[[], None]:
    """A disk that fills up: writes past `limit` bytes in any file fail (EFBIG; Python ignores SIGXFSZ)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _make_store(path: Path, emulator, prompts: list[str], name: str = "job") -> None:
    with Store(path) as st:
        start_job(st, emulator, [{"id": f"q{i}", "prompt": p} for i, p in enumerate(prompts)], name=name).run()


def _set_writable(folder: Path, writable: bool) -> None:
    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def test_a_read_only_store_is_read_by_status_and_results_and_run_says_it_cannot_write(tmp_path, emulator):
    store = tmp_path / "store"
    _make_store(store, emulator, ["a", "b", "c"])
    _set_writable(store, False)
    try:
        probe = subprocess.run([sys.executable, "-c", f"open({str(store / 'probe')!r}, 'w')"],
                               preexec_fn=_obeying_file_modes, capture_output=True, check=False)
        if probe.returncode == 0:
            pytest.skip("cannot take write access away from this process (root without CAP_SETPCAP)")

        status = _batchery("status", "job", "--store", str(store), preexec_fn=_obeying_file_modes)
        assert status.returncode == 0, status.stderr
        assert "job: done" in status.stdout and "3 succeeded" in status.stdout
        results = _batchery("results", "job", "--out", "-", "--store", str(store), preexec_fn=_obeying_file_modes)
        assert results.returncode == 0, results.stderr
        assert [orjson.loads(line)["status"] for line in results.stdout.splitlines()] == ["succeeded"] * 3

        requests = tmp_path / "more.jsonl"
        requests.write_text('{"prompt": "d"}\n')
        run = _batchery("run", str(requests), "--model", "m", "--emulate", "--store", str(store),
                        preexec_fn=_obeying_file_modes)
        assert run.returncode == 2 and "Traceback" not in run.stderr
        assert "cannot be written" in run.stderr and "`batchery status` and `batchery results` can still read it" \
            in run.stderr and "not a batchery store" not in run.stderr
    finally:
        _set_writable(store, True)


def test_a_full_disk_while_storing_a_job_is_a_clear_error_and_the_same_command_then_runs_it(tmp_path, emulator):
    requests = tmp_path / "reqs.jsonl"
    requests.write_bytes(b"".join(orjson.dumps({"prompt": f"{i} " + "y" * 2000}) + b"\n" for i in range(40)))
    args = ("run", str(requests), "--model", "m", "--base-url", emulator.base_url("openai"),
            "--store", str(tmp_path / "store"), "--out", str(tmp_path / "out.jsonl"))
    full = _batchery(*args, preexec_fn=_file_size_limit(150_000))
    assert full.returncode == 2 and "Traceback" not in full.stderr
    assert "could not be written" in full.stderr and "nothing already stored is lost" in full.stderr
    assert "move it aside" not in full.stderr  # a full disk is not a damaged store
    assert emulator.stats()["files_uploaded"] == 0

    again = _batchery(*args)
    assert again.returncode == 0, again.stderr
    assert len((tmp_path / "out.jsonl").read_bytes().splitlines()) == 40


def test_a_full_disk_while_writing_results_leaves_no_temporary_file_and_loses_nothing(tmp_path, emulator):
    store = tmp_path / "store"
    _make_store(store, emulator, [f"{i} " + "y" * 1000 for i in range(40)])
    out = tmp_path / "out.jsonl"
    full = _batchery("results", "job", "--store", str(store), "--out", str(out), preexec_fn=_file_size_limit(20_000))
    assert full.returncode == 2 and "Traceback" not in full.stderr
    assert f"cannot write {out}: File too large" in full.stderr
    assert not out.exists() and not (tmp_path / "out.jsonl.tmp").exists()

    again = _batchery("results", "job", "--store", str(store), "--out", str(out))
    assert again.returncode == 0 and len(out.read_bytes().splitlines()) == 40


def test_run_into_a_full_device_says_so_and_the_results_stay_in_the_store(tmp_path, emulator):
    full = tmp_path / "full"
    try:
        os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))  # a private /dev/full: writes fail with ENOSPC
    except PermissionError:
        pytest.skip("creating a device node needs root")
    requests = tmp_path / "reqs.jsonl"
    requests.write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
    run = _batchery("run", str(requests), "--model", "m", "--base-url", emulator.base_url("openai"),
                    "--store", str(tmp_path / "store"), "--out", str(full))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "No space left on device" in run.stderr and "`batchery results reqs --out FILE`" in run.stderr
    assert stat.S_ISCHR(full.stat().st_mode)  # written into, never replaced
    with Store(tmp_path / "store", read_only=True) as st:
        assert st.counts(st.get_job("reqs").id) == {"succeeded": 2}


def test_a_read_only_store_whose_last_changes_are_only_in_its_wal_is_refused_not_read_stale(tmp_path, emulator):
    import shutil

    with Store(tmp_path / "live") as st:
        start_job(st, emulator, [{"prompt": "a"}]).run()
        (tmp_path / "copy").mkdir()  # a copy taken while the store is open: its last changes are in the -wal
        shutil.copy(tmp_path / "live" / "batchery.db", tmp_path / "copy")
        shutil.copy(tmp_path / "live" / "batchery.db-wal", tmp_path / "copy")
    assert (tmp_path / "copy" / "batchery.db-wal").stat().st_size > 0
    _set_writable(tmp_path / "copy", False)
    try:
        status = _batchery("status", "job", "--store", str(tmp_path / "copy"), preexec_fn=_obeying_file_modes)
    finally:
        _set_writable(tmp_path / "copy", True)
    if os.geteuid() == 0 and "job: done" in status.stdout:
        pytest.skip("cannot take write access away from this process (root without CAP_SETPCAP)")
    assert status.returncode == 2 and "Traceback" not in status.stderr
    assert "its last changes are still in batchery.db-wal" in status.stderr
