"""Ctrl-C and SIGTERM: a real `batchery` process against an emulator in another process. The run
stores what has arrived, says how to resume, exits 130 / 143, and the same command finishes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from conftest import start_job
from openai import OpenAI

from batchery.store import Store

INTERRUPTED = "interrupted: the job is saved; run the same command again to resume"


def _env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return {**env, "OPENAI_API_KEY": "test-key", "GROQ_API_KEY": "test-key", "TMPDIR": str(tmp_path), **extra}


def _wait_for(condition: Callable[[], bool], proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    """Wait for something to happen (watching it, not the clock); fail if `proc` ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc is None or proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class EmulatorProcess:
    """`batchery emulator` in its own process, so the run under test has a real server to wait on."""

    def __init__(self, tmp_path: Path, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "batchery", "emulator", "--port", "0", *args],
                                     env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = self.proc.stdout.readline()  # "batchery emulator listening on http://127.0.0.1:PORT"
        assert "listening on" in first, first + self.proc.stderr.read()
        self.url = first.split()[-1]

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/_emulator/stats").json()

    def batches(self) -> list[dict]:
        reply = httpx.get(f"{self.url}/v1/batches", headers={"Authorization": "Bearer test-key"})
        return reply.json()["data"]

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err


@pytest.fixture
def emulator_process(tmp_path) -> Iterator[Callable[..., EmulatorProcess]]:
    started: list[EmulatorProcess] = []

    def start(*args: str) -> EmulatorProcess:
        started.append(EmulatorProcess(tmp_path, *args))
        return started[-1]

    yield start
    for emu in started:
        if emu.proc.poll() is None:
            emu.proc.kill()
            emu.proc.communicate()


def _requests(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "reqs.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"id": f"q{i}", "prompt": f"question {i}"}) + b"\n" for i in range(n)))
    return path


def _batchery(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "batchery", *args], env=_env(tmp_path), capture_output=True,
                          text=True, timeout=120, check=False)


def _start(tmp_path: Path, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "batchery", *args], env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _batch_states(store: Path) -> list[str]:
    if not (store / "batchery.db").exists():
        return []
    with Store(store, read_only=True) as st:
        job = st.get_job("reqs")
        return [b.state for b in st.batches(job.id)] if job else []


def test_ctrl_c_while_a_batch_runs_saves_the_job_says_so_and_the_same_command_finishes_it(tmp_path, emulator_process):
    emu = emulator_process("--processing-seconds", "2")
    out = tmp_path / "out.jsonl"
    args = ["run", str(_requests(tmp_path, 8)), "--model", "gpt-test", "--base-url", f"{emu.url}/v1",
            "--store", str(tmp_path / "store"), "--out", str(out)]
    run = _start(tmp_path, args)
    # wait until the batch is created and recorded: from then on, the run only waits for it
    _wait_for(lambda: emu.stats()["batches_created"]["openai"] == 1 and _batch_states(tmp_path / "store")
              == ["submitted"], run)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=30)

    assert run.returncode == 130, err
    assert INTERRUPTED in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))
    with Store(tmp_path / "store", read_only=True) as st:
        job = st.get_job("reqs")
        assert job.state == "running" and st.counts(job.id) == {"queued": 8}
        assert [b.state for b in st.batches(job.id)] == ["submitted"]  # the batch it is waiting for is kept

    _wait_for(lambda: emu.batches()[0]["status"] == "completed")
    again = _batchery(tmp_path, *args)
    assert again.returncode == 0, again.stderr
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(8)] and {r["status"] for r in rows} == {"succeeded"}
    assert emu.stats()["batches_created"]["openai"] == 1  # resumed: the batch was not created again


def test_sigterm_in_live_mode_keeps_the_answers_that_arrived_and_the_same_command_sends_only_the_rest(
        tmp_path, emulator_process):
    emu = emulator_process()
    # 10 calls a second: the signal lands mid-run even on a busy machine (the fast path starts in a
    # fraction of a second, and at 20 a second all 12 were once answered before it arrived)
    n, concurrency = 16, 2
    store = tmp_path / "store"
    args = ["run", str(_requests(tmp_path, n)), "--mode", "live", "--rpm", "600", "--concurrency",
            str(concurrency), "--model", "gpt-test", "--base-url", f"{emu.url}/v1", "--store", str(store),
            "--out", str(tmp_path / "out.jsonl")]
    run = _start(tmp_path, args)
    _wait_for(lambda: emu.stats()["live_requests"].get("openai", 0) >= 3, run)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=30)

    assert run.returncode == 143, err
    assert INTERRUPTED in err and "Traceback" not in err
    answered = emu.stats()["live_requests"]["openai"]
    with Store(store, read_only=True) as st:
        stored = st.counts(st.get_job("reqs").id).get("succeeded", 0)
    assert answered - concurrency <= stored < n  # everything that arrived is stored; at most calls in flight lost

    again = _batchery(tmp_path, *args)
    assert again.returncode == 0, again.stderr
    rows = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert len(rows) == n and {r["status"] for r in rows} == {"succeeded"}
    assert emu.stats()["live_requests"]["openai"] == answered + (n - stored)  # the rest only, each once


def test_a_signal_while_results_are_written_leaves_no_half_written_file(tmp_path, store, emulator):
    start_job(store, emulator, [{"prompt": f"question {i} " + "x" * 300} for i in range(200)], name="big").run()
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"the previous results\n")
    # Stall the export half-way: its temporary file is a FIFO here, and the test reads only the
    # first bytes of more than a pipe's worth (64 KiB), so the export is blocked mid-write.
    os.mkfifo(tmp_path / "out.jsonl.tmp")
    export = _start(tmp_path, ["results", "big", "--store", str(store.dir), "--out", str(out)])
    with open(tmp_path / "out.jsonl.tmp", "rb") as reader:
        assert reader.read(1) == b"{"
        export.send_signal(signal.SIGTERM)
        _, err = export.communicate(timeout=30)
    assert export.returncode == 143, err
    assert INTERRUPTED in err and "Traceback" not in err
    assert not (tmp_path / "out.jsonl.tmp").exists()
    assert out.read_bytes() == b"the previous results\n"  # untouched: never half a file


def test_the_emulator_stopped_by_sigterm_removes_its_temporary_folder(tmp_path, emulator_process):
    emu = emulator_process()
    folders = list(tmp_path.glob("batchery-emulator-*"))
    assert len(folders) == 1  # where it keeps uploaded prompts and results
    OpenAI(base_url=f"{emu.url}/v1", api_key="test-key").files.create(file=("prompts.jsonl", b"{}\n"),
                                                                        purpose="batch")
    assert any(p.is_file() for p in folders[0].rglob("*"))  # the uploaded prompts

    code, err = emu.stop(signal.SIGTERM)
    assert code == 143 and "Traceback" not in err
    assert not folders[0].exists()


def test_sigterm_during_an_evaluation_saves_its_stage_jobs_and_says_how_to_resume(tmp_path, make_emulator):
    emulator = make_emulator(processing_seconds=3600)  # a manual clock that never moves: the batch waits
    demo = Path(__file__).parent.parent / "examples" / "eval"
    config = tmp_path / "eval.yaml"
    config.write_bytes(orjson.dumps({  # JSON is YAML
        "name": "sig", "spec": str(demo / "spec.jsonl"), "inputs": str(demo / "inputs.jsonl"),
        "candidates": [{"name": "c", "provider": "openai", "model": "gpt-4o", "base_url": emulator.base_url("openai")}],
        "judges": [{"name": "j", "provider": "groq", "model": "llama", "base_url": emulator.base_url("groq")}],
        "store": str(tmp_path / "store")}))
    evaluation = _start(tmp_path, ["eval", "run", str(config)])
    _wait_for(lambda: emulator.stats()["batches_created"]["openai"] == 1, evaluation)
    evaluation.send_signal(signal.SIGTERM)
    _, err = evaluation.communicate(timeout=30)

    assert evaluation.returncode == 143, err
    assert INTERRUPTED in err and "Traceback" not in err
    with Store(tmp_path / "store", read_only=True) as st:
        [job] = st.list_jobs()
        assert job.name.startswith("sig.generate") and job.state == "running"
        assert st.counts(job.id) == {"queued": job.n_rows}  # its requests wait in the batch, nothing lost
