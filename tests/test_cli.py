"""The `batchery` command as users run it: a real process, the real SDK, the emulator on loopback."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from conftest import cli


def batchery(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "batchery", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=120)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


@pytest.fixture
def requests_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "reqs.jsonl", [{"id": f"q{i}", "prompt": f"question {i}"} for i in range(25)])


def test_run_status_results_and_list(tmp_path, emulator, requests_file):
    store, out = tmp_path / "store", tmp_path / "out.jsonl"
    done = batchery("run", str(requests_file), "--model", "gpt-test", "--base-url", emulator.base_url("openai"),
                    "--batch-size", "10", "--store", str(store), "--out", str(out),
                    env={"OPENAI_API_KEY": "test-key"})
    assert done.returncode == 0, done.stderr
    assert "25 result lines" in done.stderr
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(25)]
    assert {r["status"] for r in rows} == {"succeeded"} and rows[0]["provider"] == "openai"

    status = orjson.loads(batchery("status", "reqs", "--json", "--store", str(store)).stdout)
    assert status["state"] == "done" and status["requests"] == {"succeeded": 25}
    assert [b["remote_status"] for b in status["batches"]] == ["completed"] * 3

    exported = batchery("results", "reqs", "--format", "csv", "--store", str(store)).stdout
    table = list(csv.DictReader(io.StringIO(exported)))
    assert [r["id"] for r in table] == [f"q{i}" for i in range(25)] and table[3]["status"] == "succeeded"

    listing = orjson.loads(batchery("list", "--json", "--store", str(store)).stdout)
    assert [j["job"] for j in listing] == ["reqs"]

    again = batchery("run", str(requests_file), "--model", "gpt-test", "--base-url", emulator.base_url("openai"),
                     "--store", str(store), "--out", str(out), env={"OPENAI_API_KEY": "test-key"})
    assert again.returncode == 0, again.stderr
    assert emulator.stats()["batches_created"]["openai"] == 3  # the second run resumed a finished job


def test_emulate_needs_no_key(tmp_path, requests_file):
    done = batchery("run", str(requests_file), "--model", "gpt-test", "--emulate", "--store", str(tmp_path / "s"),
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "reqs.results.jsonl").read_bytes().splitlines()) == 25


def test_missing_key_names_the_variable_and_sends_nothing(tmp_path, emulator, requests_file):
    done = batchery("run", str(requests_file), "--model", "m", "--base-url", emulator.base_url("openai"),
                    "--store", str(tmp_path / "s"))
    assert done.returncode == 2
    assert "OPENAI_API_KEY is not set" in done.stderr and "Traceback" not in done.stderr
    assert emulator.stats()["files_uploaded"] == 0


def test_unknown_provider_is_a_clear_error(tmp_path, requests_file):
    done = batchery("run", str(requests_file), "--provider", "nope", "--model", "m", "--store", str(tmp_path / "s"))
    assert done.returncode == 2
    assert "unknown provider 'nope'" in done.stderr and "openai" in done.stderr


def test_malformed_line_names_file_and_line_and_sends_nothing(tmp_path, emulator):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": "fine too"}\n{"prompt": oops}\n')
    done = batchery("run", str(bad), "--model", "m", "--base-url", emulator.base_url("openai"),
                    "--store", str(tmp_path / "s"), env={"OPENAI_API_KEY": "test-key"})
    assert done.returncode == 2
    assert f"{bad}:3: not valid JSON" in done.stderr and "Traceback" not in done.stderr
    assert emulator.stats()["files_uploaded"] == 0


def test_a_changed_input_under_an_existing_job_name_is_refused(tmp_path, requests_file):
    store = str(tmp_path / "s")
    assert batchery("run", str(requests_file), "--model", "m", "--emulate", "--store", store, cwd=tmp_path).returncode == 0
    write_jsonl(requests_file, [{"prompt": "something else"}])
    done = batchery("run", str(requests_file), "--model", "m", "--emulate", "--store", store, cwd=tmp_path)
    assert done.returncode == 2 and "already exists with different requests" in done.stderr


def test_emulated_answers_are_never_reused_for_a_real_endpoint(tmp_path, emulator, requests_file, monkeypatch):
    """--emulate, then the same file at a real endpoint (here a separate emulator given as --base-url)."""
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    store = str(tmp_path / "s")
    code, _, err = cli("run", str(requests_file), "--model", "m", "--emulate", "--store", store,
                       "--out", str(tmp_path / "emulated.jsonl"))
    assert code == 0, err
    real = ["run", str(requests_file), "--model", "m", "--base-url", emulator.base_url("openai"), "--store", store,
            "--out", str(tmp_path / "real.jsonl")]
    code, _, err = cli(*real)  # the job holds emulated answers: refused, not passed off as real ones
    assert code == 2 and "error: job 'reqs' holds answers from the emulator" in err and "--job" in err
    assert emulator.stats()["files_uploaded"] == 0
    code, _, err = cli(*real, "--job", "real")  # a new job: everything is sent
    assert code == 0, err
    assert "reused" not in err and emulator.stats()["requests_processed"] == 25
    code, _, err = cli("run", str(requests_file), "--model", "m", "--emulate", "--job", "again", "--store", store,
                       "--out", str(tmp_path / "again.jsonl"))  # emulated runs (each on its own port) share answers
    assert code == 0 and "25 answers reused from job 'reqs' (same store)" in err


def test_unknown_job_lists_the_known_ones(tmp_path):
    done = batchery("status", "ghost", "--store", str(tmp_path / "s"))
    assert done.returncode == 2 and "no job named 'ghost'" in done.stderr


def test_help_is_fast_and_does_not_import_provider_sdks():
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from batchery.cli import app; "
         "print(sorted(m for m in ('openai', 'httpx2', 'starlette', 'sqlite3') if m in sys.modules))"],
        capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "[]"


def test_a_second_process_on_the_same_job_stops_with_a_clear_message(tmp_path, make_emulator, requests_file):
    emulator = make_emulator(processing_seconds=3600)  # the first run keeps polling; its clock never moves
    args = ["run", str(requests_file), "--model", "m", "--base-url", emulator.base_url("openai"),
            "--store", str(tmp_path / "s")]
    env = {**{k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}, "OPENAI_API_KEY": "test-key"}
    first = subprocess.Popen([sys.executable, "-m", "batchery", *args], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        # wait (by watching the provider, not the clock) until the first run has submitted its batch
        deadline = time.monotonic() + 60
        while emulator.stats()["batches_created"]["openai"] == 0:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = batchery(*args, env={"OPENAI_API_KEY": "test-key"})
        assert second.returncode == 2
        assert "is being run by another batchery process (pid" in second.stderr
        assert emulator.stats()["batches_created"]["openai"] == 1
    finally:
        first.kill()
        first.wait()
    # the lock dies with its process: a new run takes the job over and sends nothing again
    again = batchery(*args, "--no-wait", env={"OPENAI_API_KEY": "test-key"})
    assert again.returncode == 0, again.stderr
    assert emulator.stats()["batches_created"]["openai"] == 1


def test_live_mode_from_the_command_line_then_the_watch_view(tmp_path, make_emulator, requests_file):
    emulator = make_emulator(rpm=6000)
    store, out = tmp_path / "store", tmp_path / "out.jsonl"
    done = batchery("run", str(requests_file), "--mode", "live", "--rpm", "6000", "--model", "gpt-test",
                    "--base-url", emulator.base_url("openai"), "--store", str(store), "--out", str(out),
                    env={"OPENAI_API_KEY": "test-key"})
    assert done.returncode == 0, done.stderr
    assert "live: 25 calls" in done.stderr and "25 result lines" in done.stderr
    assert emulator.stats()["live_requests"]["openai"] == 25
    status = orjson.loads(batchery("status", "reqs", "--json", "--store", str(store)).stdout)
    assert status["state"] == "done" and status["cost"]["models"][0]["mode"] == "live"

    # the same requests in batch mode come from the cache: nothing is sent
    again = batchery("run", str(requests_file), "--job", "as-batch", "--model", "gpt-test", "--base-url",
                     emulator.base_url("openai"), "--store", str(store), "--out", str(tmp_path / "b.jsonl"),
                     env={"OPENAI_API_KEY": "test-key"})
    assert again.returncode == 0 and sum(emulator.stats()["batches_created"].values()) == 0

    from rich.console import Console

    from batchery.cli.watch import job_table
    from batchery.control import job_status
    from batchery.pricing import PriceBook
    from batchery.store import Store

    with Store(store) as st:
        reports = [job_status(st, j, PriceBook()).report() for j in st.list_jobs()]
    console = Console(record=True, width=200)
    console.print(job_table(reports))
    text = console.export_text()
    assert "reqs" in text and "as-batch" in text and "25" in text


def test_rate_limits_without_live_mode_are_refused(tmp_path, requests_file):
    done = batchery("run", str(requests_file), "--rpm", "100", "--emulate", "--store", str(tmp_path / "s"))
    assert done.returncode == 2 and "--mode live" in done.stderr


def test_openai_compatible_needs_a_base_url_and_live_mode(tmp_path, emulator, requests_file):
    no_url = batchery("run", str(requests_file), "--provider", "openai-compatible", "--mode", "live",
                      "--model", "llama3", "--store", str(tmp_path / "s"))
    assert no_url.returncode == 2 and "--base-url" in no_url.stderr
    batch = batchery("run", str(requests_file), "--provider", "openai-compatible", "--model", "llama3",
                     "--base-url", emulator.base_url("openai"), "--store", str(tmp_path / "s"))
    assert batch.returncode == 2 and "no Batch API" in batch.stderr
    live = batchery("run", str(requests_file), "--provider", "openai-compatible", "--mode", "live",
                    "--model", "llama3", "--base-url", emulator.base_url("openai"), "--store", str(tmp_path / "s"),
                    "--out", str(tmp_path / "o.jsonl"))
    assert live.returncode == 0, live.stderr  # no key needed: local servers take none
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 25


@pytest.mark.parametrize("options, message", [
    (["--mode", "stream"], "mode must be 'batch', 'live' or 'flex', not 'stream'"),
    (["--mode", "flex", "--provider", "anthropic"], "anthropic has no flex tier"),
    (["--rpm", "100"], "--rpm/--tpm pace live calls"),
    (["--mode", "live", "--no-wait"], "--no-wait needs batch mode"),
    (["--emulate", "--no-wait"], "--emulate runs an emulator only while this command runs"),
    (["--provider", "openai-compatible", "--base-url", "http://127.0.0.1:9/v1"], "openai-compatible has no Batch API"),
])
def test_a_dry_run_refuses_the_options_a_real_run_refuses(tmp_path, requests_file, options, message):
    code, out, err = cli("run", str(requests_file), "--model", "m", "--store", str(tmp_path / "s"), "--dry-run",
                         *options)
    assert code == 2 and f"error: {message}" in err and out == ""


@pytest.mark.parametrize("command", [["run"], ["run", "--emulate"], ["run", "--dry-run"], ["estimate"]])
def test_a_missing_or_folder_input_is_a_clear_error(tmp_path, command):
    (tmp_path / "folder.jsonl").mkdir()
    for path, message in ((tmp_path / "nope.jsonl", "no such file"), (tmp_path / "folder.jsonl", "is a folder")):
        code, _, err = cli(command[0], str(path), *command[1:], "--model", "m", "--store", str(tmp_path / "s"))
        assert code == 2 and f"error: {path}: {message}" in err


def test_the_emulator_refuses_a_bad_port_or_host_or_a_port_in_use(tmp_path):
    import socket

    code, _, err = cli("emulator", "--port", "-1")
    assert code == 2 and "Invalid value for '--port'" in err
    code, _, err = cli("emulator", "--host", "256.1.1.1", "--port", "0")
    assert code == 2 and "error: the emulator cannot listen on 256.1.1.1:0" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = cli("emulator", "--port", str(port))
    assert code == 2 and f"error: the emulator cannot listen on 127.0.0.1:{port}: Address already in use" in err
