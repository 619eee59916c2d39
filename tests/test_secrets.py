"""API keys never reach the store, logs, exception messages or exported files."""

from __future__ import annotations

import json
import os
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
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
    assert refused.returncode == 4 and "error: openai upload refused (404)" in refused.stderr, refused.stderr
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


class _EchoesTheKey(BaseHTTPRequestHandler):
    """A server that refuses every request and, as some do, quotes the key it was sent."""

    def _refuse(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        key = (self.headers.get("authorization") or "").removeprefix("Bearer ")
        body = json.dumps({"error": {"message": f"request refused for key {key}", "type": "invalid_request_error",
                                     "code": "refused", "param": None}}).encode()
        self.send_response(400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _refuse

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture
def echo_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoesTheKey)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_a_key_a_server_echoes_back_is_redacted_from_outcomes_status_results_and_errors(tmp_path, echo_server):
    requests = write_jsonl(tmp_path / "reqs.jsonl", [{"id": i, "prompt": f"q{i}"} for i in range(3)])
    store, out = tmp_path / "store", tmp_path / "out.jsonl"
    live = batchery("run", str(requests), "--provider", "openai-compatible", "--mode", "live", "--model", "m",
                    "--base-url", echo_server, "--store", str(store), "--out", str(out),
                    env={"OPENAI_COMPATIBLE_API_KEY": SECRET})
    assert live.returncode == 1, live.stderr  # a refusal of the request itself: final, the job is done, lines failed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["error"]["message"] for r in rows] == ["request refused for key [key redacted]"] * 3
    batch = batchery("run", str(requests), "--job", "batch", "--model", "m", "--base-url", echo_server,
                     "--store", str(store), env={"OPENAI_API_KEY": SECRET})
    assert batch.returncode == 4 and "refused for key [key redacted]" in batch.stderr, batch.stderr
    status = batchery("status", "reqs", "--store", str(store))
    assert "[key redacted]" in status.stdout
    for run in (live, batch, status):
        assert SECRET not in run.stdout + run.stderr
    for path in [*files_under(store), out]:
        assert SECRET.encode() not in path.read_bytes(), f"the key leaked into {path}"
