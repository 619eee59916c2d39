"""Failures a later run can fix stay retryable; failing provider calls are retried alike for every
provider; downloads cut or cut short are fetched again. The real engine, store, SDKs and emulator
(with its fault plan and key checking); waits advance the emulator's clock."""

from __future__ import annotations

import pytest
from conftest import MODELS, counted, results, simulated, start_job
from test_cli import batchery, write_jsonl
from test_live import live_job

from batchery.engine import PollPolicy
from batchery.live import LiveRunner
from batchery.providers import gemini as gemini_module
from batchery.providers import get_provider
from batchery.retry import classify, codes_for

GOOD_KEY, BAD_KEY = "right-key-0123456789", "wrong-key-0123456789"


def prompts(n: int) -> list[dict]:
    return [{"id": f"r{i}", "prompt": f"failure question {i}"} for i in range(n)]


def batch_job(store, emulator, provider: str, n: int, *, key: str = GOOD_KEY, batch_size: int | None = None,
              waits: list[float] | None = None):
    adapter = get_provider(provider, base_url=emulator.base_url(provider), api_key=key)
    engine = start_job(store, emulator, prompts(n), provider=adapter, model=MODELS[provider], batch_size=batch_size)

    def sleep(seconds: float) -> None:
        if waits is not None:
            waits.append(seconds)
        emulator.clock.advance(seconds)

    engine.poll = PollPolicy(initial=1.0, maximum=30.0, sleep=sleep)
    return engine


@pytest.mark.parametrize(("provider", "status", "code", "kind"), [
    ("openai", None, None, "transient"), ("openai", 429, "rate_limit_exceeded", "rate_limited"),
    ("openai", 503, None, "transient"), ("openai", 401, "invalid_api_key", "account"), ("openai", 403, None, "account"),
    ("openai", 429, "insufficient_quota", "account"), ("gemini", 400, "API_KEY_INVALID", "account"),
    ("gemini", 400, "INVALID_ARGUMENT", "final"), ("anthropic", 404, "not_found_error", "final"),
])
def test_failed_calls_are_transient_account_or_final(provider, status, code, kind):
    assert classify(status, code, codes_for(provider)) == kind


def test_a_live_run_against_a_wrong_url_fails_retryably_and_the_right_url_sends_those_lines(tmp_path, emulator):
    requests = write_jsonl(tmp_path / "reqs.jsonl", prompts(6))
    store, out = tmp_path / "store", tmp_path / "out.jsonl"
    command = ["run", str(requests), "--mode", "live", "--model", "gpt-4o-mini", "--max-attempts", "1",
               "--store", str(store), "--out", str(out)]
    env = {"OPENAI_API_KEY": "test-key"}

    wrong = batchery(*command, "--base-url", "http://127.0.0.1:9/v1", env=env)  # nothing listens there
    assert wrong.returncode == 4, wrong.stderr  # the provider: the job is saved, run again later
    assert "could not be reached" in wrong.stderr and "run the same command again" in wrong.stderr
    status = batchery("status", "reqs", "--json", "--store", str(store))
    assert '"state": "running"' in status.stdout  # not done: nothing final happened

    right = batchery(*command, "--base-url", emulator.base_url("openai"), env=env)
    assert right.returncode == 0, right.stderr
    assert "6 succeeded" in right.stderr and emulator.stats()["live_requests"]["openai"] == 6


def test_a_batch_refused_for_a_bad_gemini_key_stays_resumable_and_the_right_key_finishes_it(store, make_emulator):
    emulator = make_emulator(api_key=GOOD_KEY)
    refused = batch_job(store, emulator, "gemini", 8, key=BAD_KEY).run()
    assert refused.stopped and "API key not valid" in refused.stopped and "GEMINI_API_KEY" in refused.stopped
    assert not refused.done and store.get_job("job").state == "running"
    assert "failed" not in refused.items and emulator.stats()["batches_created"]["gemini"] == 0

    fixed = batch_job(store, emulator, "gemini", 8, key=GOOD_KEY).run()
    assert fixed.done and fixed.items == {"succeeded": 8}
    assert emulator.stats()["batches_created"]["gemini"] == 1


@pytest.mark.parametrize("provider", ["gemini", "anthropic"])
def test_a_refused_key_stops_live_sending_at_once_and_the_next_run_sends_everything(provider, store, make_emulator):
    emulator = make_emulator(api_key=GOOD_KEY)
    adapter, job = live_job(store, emulator, 20, provider=provider)
    adapter = get_provider(provider, base_url=emulator.base_url(provider), api_key=BAD_KEY)
    stopped = counted(LiveRunner(store, adapter, job, simulated(emulator, concurrency=4))).run()
    assert stopped.stopped and "refused the key" in stopped.stopped and not stopped.done
    assert 1 <= stopped.live["sent"] <= 4  # the calls in flight, not the whole job
    assert stopped.items.get("pending", 0) >= 16 and store.get_job("live").state == "running"

    adapter = get_provider(provider, base_url=emulator.base_url(provider), api_key=GOOD_KEY)
    fixed = counted(LiveRunner(store, adapter, job, simulated(emulator, concurrency=4))).run()
    assert fixed.done and fixed.items == {"succeeded": 20}


def test_a_results_stream_cut_mid_way_is_fetched_again_and_each_line_answered_once(store, make_emulator):
    emulator = make_emulator(faults="cut_download=1")
    final = batch_job(store, emulator, "anthropic", 20).run()
    assert final.done and final.items == {"succeeded": 20}
    assert all(r.attempts == 1 for r in results(store))
    stats = emulator.stats()
    assert stats["faults"]["cut_download"] == 1 and stats["batches_created"]["anthropic"] == 1


def test_a_short_gemini_download_is_fetched_again_rather_than_sending_its_lines_twice(store, make_emulator,
                                                                                       monkeypatch):
    monkeypatch.setattr(gemini_module, "INLINE_MAX_BYTES", 0)  # every batch's results come as a file
    emulator = make_emulator(faults="truncated_download=1")
    final = batch_job(store, emulator, "gemini", 20).run()
    assert final.done and final.items == {"succeeded": 20}
    assert all(r.attempts == 1 for r in results(store))
    stats = emulator.stats()
    assert stats["faults"]["truncated_download"] == 1 and stats["batches_created"]["gemini"] == 1


@pytest.mark.parametrize("provider", ["gemini", "anthropic"])
def test_a_quarter_of_calls_failing_429_or_500_is_outlasted_with_retry_after_honoured(provider, store,
                                                                                       make_emulator):
    emulator = make_emulator(faults="http_429=0.15,http_500=0.1,retry_after=7,seed=5")
    waits: list[float] = []
    final = batch_job(store, emulator, provider, 30, batch_size=10, waits=waits).run()
    assert final.done and final.items == {"succeeded": 30}
    assert all(r.attempts == 1 for r in results(store))
    stats = emulator.stats()
    assert stats["batches_created"][provider] == 3  # no batch created twice
    limited = stats["faults"].get("http_429", 0)
    assert limited and sum(stats["faults"].values()) >= 3
    assert sum(w >= 7 for w in waits) >= limited  # every 429's Retry-After was waited out
