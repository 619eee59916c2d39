"""Leave and collect from the command line: `run --no-wait`, `status --refresh`, `collect`, `cancel`
from another terminal and `retry`, as real processes against the emulator on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import orjson
from conftest import MODELS
from test_cli import batchery as cli
from test_cli import write_jsonl

import batchery
from batchery.store import Store

KEYS = {"OPENAI_API_KEY": "test-key", "MISTRAL_API_KEY": "test-key", "GROQ_API_KEY": "test-key"}
GRID_PROVIDERS = ("openai", "mistral", "groq")  # the SDKs quickest to import: each run is a process


def env() -> dict:
    return {**{k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}, **KEYS}


def pairs(direction: str) -> list[dict]:
    """pairwiseLLM's unit of work: which of two writing samples is better on a trait, in one order."""
    samples = ["The cat sat.", "A storm rolled in over the hills.", "We left at dawn."]
    rows = []
    for i in range(len(samples)):
        for j in range(i + 1, len(samples)):
            a, b = (i, j) if direction == "fwd" else (j, i)
            rows.append({"id": f"s{a}-s{b}", "prompt": f"Trait: clarity. SAMPLE 1: {samples[a]} SAMPLE 2: {samples[b]}",
                         "max_tokens": 20})
    return rows


def test_a_grid_of_no_wait_jobs_is_followed_with_status_refresh_and_finished_by_one_collect_all(
        tmp_path, make_emulator):
    emulator = make_emulator(processing_seconds=60)
    store = tmp_path / "store"
    here, elsewhere = tmp_path / "submitted-here", tmp_path / "collected-elsewhere"
    here.mkdir(), elsewhere.mkdir()
    Store(store).close()  # made once: processes racing to create a fresh store are issue 10's matter
    grid = [(provider, direction) for provider in GRID_PROVIDERS for direction in ("fwd", "rev")]
    runs = []
    for provider, direction in grid:  # providers x models x directions, all submitted at once
        name = f"{provider}-{direction}"
        path = write_jsonl(here / f"{name}.jsonl", pairs(direction))
        out = ["--out", str(tmp_path / f"{name}.out.jsonl")] if direction == "fwd" else []  # else the default name
        runs.append(subprocess.Popen(
            [sys.executable, "-m", "batchery", "run", str(path), "--provider", provider, "--model", MODELS[provider],
             "--base-url", emulator.base_url(provider), "--no-wait", "--store", str(store), *out],
            cwd=here, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        assert "submitted job" in err and "batchery collect" in err
    for provider, direction in grid:
        (here / f"{provider}-{direction}.jsonl").unlink()  # collect needs no input file

    emulator.clock.advance(61)  # the provider finished; the store does not know yet
    with Store(store) as st:
        assert {b.remote_status for j in st.list_jobs() for b in st.batches(j.id)} <= {
            "validating", "in_progress", "QUEUED", "RUNNING"}
    before = emulator.stats()["batch_lists"]
    fresh = cli("status", "--refresh", "--json", "--store", str(store), env=KEYS)
    assert fresh.returncode == 0, fresh.stderr
    with Store(store) as st:
        remote = {j.name: {b.remote_status for b in st.batches(j.id)} for j in st.list_jobs()}
        assert {j.state for j in st.list_jobs()} == {"running"}  # refresh asks; it does not collect
    assert remote == {"openai-fwd": {"completed"}, "openai-rev": {"completed"}, "mistral-fwd": {"SUCCESS"},
                      "mistral-rev": {"SUCCESS"}, "groq-fwd": {"completed"}, "groq-rev": {"completed"}}
    lists = emulator.stats()["batch_lists"]
    assert {p: lists[p] - before[p] for p in GRID_PROVIDERS} == dict.fromkeys(GRID_PROVIDERS, 1)  # for six jobs

    before = emulator.stats()["batch_lists"]
    done = cli("collect", "--all", "--store", str(store), env=KEYS, cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    lists = emulator.stats()["batch_lists"]
    assert {p: lists[p] - before[p] for p in GRID_PROVIDERS} == dict.fromkeys(GRID_PROVIDERS, 1)
    assert done.stderr.count(": done (3 succeeded) ->") == 6
    for provider, direction in grid:
        name = f"{provider}-{direction}"
        target = tmp_path / f"{name}.out.jsonl" if direction == "fwd" else here / f"{name}.results.jsonl"
        rows = [orjson.loads(line) for line in target.read_bytes().splitlines()]
        assert [r["id"] for r in rows] == [p["id"] for p in pairs(direction)]
        assert {r["status"] for r in rows} == {"succeeded"} and rows[0]["provider"] == provider
    assert list(elsewhere.iterdir()) == []
    assert {s.state for s in batchery.status(store=store)} == {"done"}
    again = cli("collect", "--all", "--store", str(store), env=KEYS)
    assert again.returncode == 0 and "no open jobs to collect" in again.stderr


def test_collect_needs_job_names_or_all(tmp_path):
    done = cli("collect", "--store", str(tmp_path / "s"))
    assert done.returncode == 2 and "--all" in done.stderr


def test_a_no_wait_run_that_finds_every_line_done_writes_the_results_and_ends_the_job(tmp_path, emulator):
    path, out = write_jsonl(tmp_path / "quick.jsonl", pairs("fwd")), tmp_path / "quick.out.jsonl"
    done = cli("run", str(path), "--model", "gpt-test", "--base-url", emulator.base_url(), "--no-wait",
               "--store", str(tmp_path / "s"), "--out", str(out), env=KEYS)
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == 3 and "3 result lines" in done.stderr
    assert batchery.status("quick", store=tmp_path / "s").state == "done"


def test_cancel_from_another_terminal_stops_the_running_process_and_keeps_answered_lines(tmp_path, make_emulator):
    emulator = make_emulator(latency=0.1)  # live answers take a tenth of a second each, one at a time
    store = tmp_path / "s"
    path = write_jsonl(tmp_path / "slow.jsonl", [{"id": i, "prompt": f"slow {i}"} for i in range(200)])
    runner = subprocess.Popen(
        [sys.executable, "-m", "batchery", "run", str(path), "--mode", "live", "--concurrency", "1", "--model", "m",
         "--base-url", emulator.base_url(), "--store", str(store), "--out", str(tmp_path / "slow.out.jsonl")],
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while emulator.stats()["live_requests"]["openai"] < 3:  # watching the provider, not the clock
            assert runner.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        cancel = cli("cancel", "slow", "--store", str(store))  # no key: the runner does the work
        assert cancel.returncode == 0, cancel.stderr
        assert "cancel requested" in cancel.stderr
        _, err = runner.communicate(timeout=60)
    finally:
        runner.kill()
    assert runner.returncode == 0, err
    status = batchery.status("slow", store=store)
    assert status.state == "cancelled" and set(status.requests) == {"succeeded", "cancelled"}
    assert 3 <= status.requests["succeeded"] < 50
    assert emulator.stats()["live_requests"]["openai"] == status.requests["succeeded"]  # nothing sent after it


def test_cancelling_a_finished_job_changes_nothing_says_so_and_needs_no_key(tmp_path, emulator):
    batchery.run(pairs("fwd"), job="finished", model="gpt-test", store=tmp_path / "s", base_url=emulator.base_url(),
                 api_key="test-key", poll_interval=0.01)
    done = cli("cancel", "finished", "--store", str(tmp_path / "s"))  # no key in the environment
    assert done.returncode == 0, done.stderr
    assert "already ended (done): nothing to cancel" in done.stderr
    assert batchery.status("finished", store=tmp_path / "s").state == "done"


def test_retry_sends_the_missing_lines_of_a_finished_job_again_without_its_input_file(tmp_path, make_emulator):
    emulator = make_emulator(faults="drop_lines=2,seed=5")
    store, out = tmp_path / "s", tmp_path / "r.out.jsonl"
    path = write_jsonl(tmp_path / "r.jsonl", [{"id": i, "prompt": f"retry me {i}"} for i in range(12)])
    first = cli("run", str(path), "--model", "gpt-test", "--base-url", emulator.base_url(), "--max-attempts", "1",
                "--store", str(store), "--out", str(out), env=KEYS)
    assert first.returncode == 1, first.stderr  # lines ended missing: results written, exit 1
    assert [orjson.loads(line)["status"] for line in out.read_bytes().splitlines()].count("missing") == 2
    path.unlink()
    retried = cli("retry", "r", "--store", str(store), env=KEYS, cwd=tmp_path)
    assert retried.returncode == 0, retried.stderr
    assert "2 lines to send again" in retried.stderr
    assert {orjson.loads(line)["status"] for line in out.read_bytes().splitlines()} == {"succeeded"}
    assert emulator.stats()["requests_processed"] == 14
    nothing = cli("retry", "r", "--store", str(store))
    assert nothing.returncode == 0 and "nothing to retry" in nothing.stderr
