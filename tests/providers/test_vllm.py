"""`--provider vllm`: jobs run through `vllm run-batch`, one chunk at a time, here through its
stand-in `batchery emulator run-batch` (the same file contract, the fake model's answers; its knobs
drop, fail or hold the lines holding a word, the first time a run sees them, and its journal lists
every run's custom_ids)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from conftest import cli, results

from batchery.engine import Engine, PollPolicy, prepare_job
from batchery.inputs import iter_objects
from batchery.providers import get_provider
from batchery.store import Store


def stand_in(*knobs: str | Path) -> str:
    """The run-batch command (what BATCHERY_VLLM_COMMAND or --base-url give) with the stand-in's knobs."""
    return shlex.join([sys.executable, "-m", "batchery", "emulator", "run-batch", *map(str, knobs)])


def runs(journal: Path) -> list[list[str]]:
    """The custom_ids of each run of the command, in the order they started."""
    return [orjson.loads(line)["ids"] for line in journal.read_bytes().splitlines()]


def prompts(*texts: str) -> list[dict]:
    return [{"id": f"r{i}", "prompt": text} for i, text in enumerate(texts)]


def run_job(store: Store, command: str, requests: list[dict], sleeps: list[float] | None = None, **options):
    adapter = get_provider("vllm", base_url=command)
    job, _ = prepare_job(store, "job", adapter, "llama-3.1-8b", iter_objects(requests), "job")
    poll = PollPolicy(sleep=(sleeps if sleeps is not None else []).append)
    return Engine(store, adapter, job, poll=poll, **options).run()


def test_chunks_run_one_at_a_time_in_order_and_lines_missing_from_an_output_are_sent_again(store, tmp_path):
    journal = tmp_path / "journal.jsonl"
    requests = [*prompts("one", "two DROPPED", "three", "four", "five"),
                {"id": "unknown", "prompt": "six", "model": "missing-model"}]
    sleeps: list[float] = []
    progress = run_job(store, stand_in("--journal", journal, "--drop", "DROPPED"), requests, sleeps, batch_size=2)

    rows = results(store)
    assert [r.id for r in rows] == [r["id"] for r in requests]
    assert [(r.status, r.text) for r in rows[:5]] == [
        ("succeeded", f"Emulated answer to: {r['prompt']}") for r in requests[:5]]
    assert all(r.usage["input_tokens"] and r.usage["output_tokens"] for r in rows[:5])
    # vLLM's error line for a model it does not serve: failed for good (a 404 is not sent again)
    assert rows[5].status == "failed" and rows[5].error["code"] == "http_404"
    assert "`missing-model` does not exist" in rows[5].error["message"]
    key = {r.custom_id: r.id for r in rows}
    assert [[key[c] for c in run] for run in runs(journal)] == [
        ["r0", "r1"], ["r2", "r3"], ["r4"], ["unknown"], ["r1"]]  # the missing line, in a chunk of its own
    assert rows[1].attempts == 2 and progress.done
    assert sleeps == []  # each chunk starts as soon as the one before is stored: no polling wait
    # once read, a chunk's input copy is gone; its output, log and exit status stay, so a batchery
    # that died before committing the answers reads them again instead of re-running the chunk
    chunks = sorted(p for p in (store.dir / "batches").iterdir() if p.is_dir())
    assert {p.name.split("-")[0] for c in chunks for p in c.iterdir()} == {"model", "run.log", "exit.json", "output"}
    adapter = get_provider("vllm", base_url=stand_in())
    first = adapter.poll([str(chunks[0])])[str(chunks[0])]
    again = [o.custom_id for o in adapter.outcomes(first)]
    assert again and again == [o.custom_id for o in adapter.outcomes(first)]
    code, _, err = cli("delete", "job", "--store", str(store.dir))  # and they go with the job
    assert code == 0, err
    assert not any((store.dir / "batches").iterdir())


def test_a_run_that_exits_non_zero_fails_its_lines_with_the_logs_tail_and_they_stay_retryable(store, tmp_path):
    journal = tmp_path / "journal.jsonl"
    command = stand_in("--journal", journal, "--fail", "BOOM")
    requests = prompts("fine", "BOOM goes the GPU")
    progress = run_job(store, command, requests, max_attempts=1)

    assert "later run can fix" in progress.stopped and store.get_job("job").state == "running"  # not done
    rows = results(store)
    assert [(r.status, r.error["code"]) for r in rows] == [("failed", "run_batch_failed")] * 2
    message = rows[0].error["message"]
    assert "exited with status 1" in message and "CUDA error: out of memory" in message and "\n" not in message

    progress = run_job(store, command, requests, max_attempts=1)  # the same command again
    assert progress.stopped is None and store.get_job("job").state == "done"
    assert [r.status for r in results(store)] == ["succeeded"] * 2
    assert len(runs(journal)) == 2  # the whole chunk once more, partial answers of the failed run unused


def test_emulate_runs_the_stand_in_and_live_mode_points_to_openai_compatible(tmp_path):
    requests = tmp_path / "in.jsonl"
    requests.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in prompts("one", "two")))
    out, store = tmp_path / "out.jsonl", tmp_path / "store"
    code, _, err = cli("run", str(requests), "--provider", "vllm", "--emulate", "--model", "m", "--out", str(out),
                       "--store", str(store))
    assert code == 0, err
    assert [orjson.loads(line)["text"] for line in out.read_bytes().splitlines()] == [
        "Emulated answer to: one", "Emulated answer to: two"]
    code, _, err = cli("run", str(requests), "--provider", "vllm", "--emulate", "--model", "m", "--mode", "live",
                       "--job", "live", "--no-cache", "--store", str(store))
    assert code == 2 and "--provider openai-compatible" in err and "Traceback" not in err


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # a zombie waiting for init to reap it is dead too


def _wait_for(condition, what: str) -> None:
    """Watch for something to happen (the file system, not the clock); fail after a minute."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_kill_9_while_a_chunk_runs_kills_it_and_the_next_run_starts_at_that_chunk(tmp_path):
    journal, store = tmp_path / "journal.jsonl", tmp_path / "store"
    requests = tmp_path / "in.jsonl"
    requests.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in prompts("a", "b", "c", "d HOLD", "e", "f")))
    args = ["run", str(requests), "--provider", "vllm", "--base-url", stand_in("--journal", journal, "--hold", "HOLD"),
            "--model", "llama", "--batch-size", "2", "--store", str(store), "--out", str(tmp_path / "out.jsonl")]
    batchery = subprocess.Popen([sys.executable, "-m", "batchery", *args], stderr=subprocess.PIPE,
                                env={**os.environ, "TMPDIR": str(tmp_path)})
    _wait_for(lambda: journal.exists() and len(runs(journal)) == 2, "the second chunk to start")
    held = orjson.loads(journal.read_bytes().splitlines()[1])["pid"]
    batchery.send_signal(signal.SIGKILL)
    batchery.communicate()
    _wait_for(lambda: _gone(held), "the chunk's run to die with batchery")

    with Store(store) as st:  # the first chunk was stored before the second started
        job = st.get_job("in")
        assert job is not None and st.counts(job.id) == {"succeeded": 2, "queued": 4}
    code, out, err = cli("status", "in", "--refresh", "--store", str(store))  # asks nothing: would run a chunk
    assert code == 0 and "run in the process running the job" in out + err and len(runs(journal)) == 2

    code, _, err = cli(*args)
    assert code == 0, err
    lines = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert [(r["id"], r["status"]) for r in lines] == [(f"r{i}", "succeeded") for i in range(6)]
    key = {r["custom_id"]: r["id"] for r in lines}
    assert [[key[c] for c in run] for run in runs(journal)] == [
        ["r0", "r1"], ["r2", "r3"],  # killed in the second chunk
        ["r2", "r3"], ["r4", "r5"]]  # resumed at it; the first chunk never ran again
