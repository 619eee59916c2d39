"""`batchery estimate`, `run --dry-run`, `run --max-cost` and the cost in `status`, as users run them."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from test_cli import batchery, write_jsonl


@pytest.fixture
def requests_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "reqs.jsonl",
                       [{"id": f"q{i}", "prompt": f"question {i}", "max_tokens": 100} for i in range(30)])


@pytest.fixture
def prices(tmp_path) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text('[openai."gpt-test"]\ninput = 1000\noutput = 1000\n')
    return path


def test_estimate_prints_requests_tokens_method_and_costs(tmp_path, requests_file):
    done = batchery("estimate", str(requests_file), "--provider", "openai", "--model", "gpt-4o-mini",
                    "--store", str(tmp_path / "s"), env={"TIKTOKEN_CACHE_DIR": str(tmp_path / "no-cache")})
    assert done.returncode == 0, done.stderr
    assert "30 (30 distinct" in done.stdout
    assert "input tokens:" in done.stdout and "tiktoken o200k_base" in done.stdout  # exact offline: bundled
    assert "output tokens:      3,000 (estimated from: max_tokens)" in done.stdout
    assert "estimated cost:     batch $" in done.stdout and "| live $" in done.stdout

    unknown = batchery("estimate", str(requests_file), "--model", "gpt-test", "--json", "--store", str(tmp_path / "s"))
    report = orjson.loads(unknown.stdout)
    assert report["batch_usd"] is None and report["models"][0]["price"] == "unknown price"


def test_dry_run_prints_the_estimate_and_sends_nothing(tmp_path, emulator, requests_file, prices):
    done = batchery("run", str(requests_file), "--model", "gpt-test", "--base-url", emulator.base_url("openai"),
                    "--dry-run", "--prices", str(prices), "--store", str(tmp_path / "s"),
                    env={"OPENAI_API_KEY": "test-key"})
    assert done.returncode == 0, done.stderr
    assert "estimated cost:     batch $" in done.stdout and "nothing was sent" in done.stderr
    assert emulator.stats()["files_uploaded"] == 0
    assert emulator.stats()["batches_created"]["openai"] == 0


def test_max_cost_stops_with_a_message_and_status_shows_the_cost(tmp_path, emulator, requests_file, prices):
    store = str(tmp_path / "s")
    args = ("run", str(requests_file), "--model", "gpt-test", "--base-url", emulator.base_url("openai"),
            "--batch-size", "10", "--prices", str(prices), "--store", store, "--out", str(tmp_path / "out.jsonl"))
    capped = batchery(*args, "--max-cost", "1.2", env={"OPENAI_API_KEY": "test-key"})
    assert capped.returncode == 3, capped.stderr
    assert "stopped: --max-cost $1.20 reached" in capped.stderr and "run again" in capped.stderr
    assert emulator.stats()["batches_created"]["openai"] == 2

    status = batchery("status", "reqs", "--prices", str(prices), "--store", store)
    assert "cost: $" in status.stdout and "at batch prices" in status.stdout
    report = orjson.loads(batchery("status", "reqs", "--json", "--prices", str(prices), "--store", store).stdout)
    assert report["state"] == "running" and report["cost"]["usd"] > 0
    assert report["cost"]["output_tokens"] > 0

    finished = batchery(*args, env={"OPENAI_API_KEY": "test-key"})  # no cap: resumes and finishes
    assert finished.returncode == 0, finished.stderr
    after = orjson.loads(batchery("status", "reqs", "--json", "--prices", str(prices), "--store", store).stdout)
    assert after["state"] == "done" and after["cost"]["usd"] > report["cost"]["usd"]

    unpriced = orjson.loads(batchery("status", "reqs", "--json", "--store", store).stdout)
    assert unpriced["cost"]["usd"] is None  # unknown price, never a silent zero
