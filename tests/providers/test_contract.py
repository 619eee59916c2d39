"""Contract tests, written once and run for every provider (the case list: tests/providers/conftest.py):
the same job file through each official SDK against the emulator ends with the same normalised
results, and every provider goes through the same lifecycle (crash after create, expiry, cancel,
unknown model, reasoning budget). Every fault class on every provider is the grid in
tests/emulator/test_faults.py. What is truly one provider's own has its own test file."""

from __future__ import annotations

import orjson
import pytest
from conftest import MODELS, results, start_job

from batchery.errors import InputError
from batchery.providers import PROVIDERS, get_provider, provider_class
from batchery.store import Store

SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["pass", "fail"]},
                   "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
    "required": ["verdict", "confidence"],
}


def mixed_job() -> list[dict]:
    special = [
        {"id": "plain", "prompt": "Name a colour."},
        {"id": "system", "system": "You are terse.", "messages": [
            {"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "Again, please."}]},
        {"id": "schema", "prompt": "Judge this answer.", "response_format": SCHEMA},
        {"id": "params", "prompt": "Count to three.", "max_tokens": 50, "temperature": 0.5, "top_p": 0.9,
         "stop": ["END"]},
        {"id": "duplicate", "prompt": "Name a colour."},
        {"id": "rejected", "prompt": "Hello?", "model": "missing-model"},
    ]
    return special + [{"id": f"filler-{i}", "prompt": f"Filler question {i}"} for i in range(14)]


def normalised(rows) -> list[tuple]:
    return [(r.id, r.status, r.text) for r in rows]


# openai-compatible is live only; vllm runs a command, not an HTTP API (tests/providers/test_vllm.py)
BATCH_PROVIDERS = sorted(p for p in PROVIDERS if p not in ("openai-compatible", "vllm"))


@pytest.fixture(params=BATCH_PROVIDERS)
def provider_name(request) -> str:
    return request.param


def test_mixed_job_gives_identical_normalised_results_on_every_provider(provider_name, store, emulator):
    adapter = get_provider(provider_name, base_url=emulator.base_url(provider_name), api_key="test-key")
    engine = start_job(store, emulator, mixed_job(), model=MODELS[provider_name], batch_size=6, provider=adapter)
    engine.run()
    rows = results(store)
    by_id = {r.id: r for r in rows}

    assert [r.id for r in rows] == [r["id"] for r in mixed_job()]
    assert emulator.stats()["batches_created"][provider_name] >= 3
    assert by_id["rejected"].status == "failed"
    assert by_id["rejected"].error["code"] and by_id["rejected"].error["message"]
    assert by_id["rejected"].text is None
    ok = [r for r in rows if r.id != "rejected"]
    assert all(r.status == "succeeded" and r.usage["input_tokens"] and r.usage["output_tokens"] for r in ok)
    assert by_id["duplicate"].text == by_id["plain"].text == "Emulated answer to: Name a colour."
    assert by_id["system"].text == "Emulated answer to: Again, please."
    verdict = orjson.loads(by_id["schema"].text)
    assert verdict["verdict"] in ("pass", "fail") and 0 <= verdict["confidence"] <= 1
    assert all(r.provider == provider_name and r.response for r in ok)

    # The same scenario on OpenAI is the reference: normalised outputs are identical.
    if provider_name != "openai":
        reference = get_provider("openai", base_url=emulator.base_url("openai"), api_key="test-key")
        start_job(store, emulator, mixed_job(), name="reference", model=MODELS["openai"], batch_size=6,
                  provider=reference).run()
        expected = normalised(results(store, "reference"))
        assert [row[:3] for row in normalised(rows)] == [row[:3] for row in expected]


def native_line(provider: str, user_id: str, prompt: str) -> dict:
    """A line in the provider's own batch format, with a parameter batchery's neutral model lacks."""
    model = MODELS[provider]
    chat = [{"role": "user", "content": prompt}]
    return {
        "openai": {"custom_id": user_id, "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": model, "messages": chat, "seed": 7}},
        "groq": {"custom_id": user_id, "method": "POST", "url": "/v1/chat/completions",
                 "body": {"model": model, "messages": chat, "seed": 7}},
        "anthropic": {"custom_id": user_id, "params": {"model": model, "max_tokens": 200, "messages": chat, "top_k": 5}},
        "gemini": {"key": user_id, "request": {"contents": [{"role": "user", "parts": [{"text": prompt}]}],
                                               "generationConfig": {"topK": 5}}},
        "vertex": {"key": user_id, "request": {"contents": [{"role": "user", "parts": [{"text": prompt}]}],
                                               "generationConfig": {"topK": 5}}},
        "mistral": {"custom_id": user_id, "body": {"messages": chat, "random_seed": 7}},
        "together": {"custom_id": user_id, "body": {"model": model, "messages": chat, "top_k": 5}},
    }[provider]


def test_raw_lines_in_the_providers_own_format_are_sent_as_they_are(provider_name, store, emulator):
    from conftest import clock_poll

    from batchery.engine import Engine, prepare_job
    from batchery.inputs import iter_objects

    adapter = get_provider(provider_name, base_url=emulator.base_url(provider_name), api_key="test-key")
    lines = [native_line(provider_name, f"user-{i}", f"Raw question {i}") for i in range(5)]
    job, _ = prepare_job(store, "raw", adapter, MODELS[provider_name], iter_objects(lines), "raw", raw=True)
    Engine(store, adapter, job, poll=clock_poll(emulator)).run()
    rows = results(store, "raw")
    assert [(r.id, r.status, r.text) for r in rows] == [
        (f"user-{i}", "succeeded", f"Emulated answer to: Raw question {i}") for i in range(5)]
    assert all(r.custom_id.startswith("bq-") for r in rows)  # our content key, not the user's id


@pytest.fixture(params=sorted(p for p in PROVIDERS if p != "vllm"))  # vllm has no live mode
def live_provider(request) -> str:
    return request.param


def test_the_same_job_live_gives_the_batch_results_on_every_provider(live_provider, store, emulator):
    """Live mode: every provider's official async SDK against the emulator's live endpoints; the
    results are the batch path's, line for line (openai-compatible is checked against OpenAI)."""
    from batchery.engine import prepare_job
    from batchery.inputs import iter_objects
    from batchery.live import LivePolicy, LiveRunner

    service = live_provider if live_provider in emulator.SERVICES else "openai"
    model = MODELS[service]
    batch_adapter = get_provider(service, base_url=emulator.base_url(service), api_key="test-key")
    start_job(store, emulator, mixed_job(), name="batch", model=model, batch_size=6, provider=batch_adapter).run()

    adapter = get_provider(live_provider, base_url=emulator.base_url(service), api_key="test-key")
    job, _ = prepare_job(store, "live", adapter, model, iter_objects(mixed_job()), "live", reuse=False)
    progress = LiveRunner(store, adapter, job, LivePolicy(concurrency=4)).run()
    assert progress.done and progress.live["sent"] == len(mixed_job()) - 1  # the duplicate is sent once

    live_rows = results(store, "live")
    assert normalised(live_rows) == normalised(results(store, "batch"))
    by_id = {r.id: r for r in live_rows}
    assert by_id["rejected"].status == "failed" and by_id["rejected"].error["message"]
    assert all(r.usage["input_tokens"] and r.usage["output_tokens"] for r in live_rows if r.status == "succeeded")


# -- the lifecycle every provider goes through, written once over the case list (conftest.CASES) --


def prompts(n: int, word: str = "question") -> list[dict]:
    return [{"id": f"r{i}", "prompt": f"{word} number {i}"} for i in range(n)]


def adapter_for(case, emulator, cls=None):
    cls = cls or provider_class(case.provider)
    return cls(api_key="test-key", base_url=emulator.base_url(case.provider))


def run_case(store, emulator, case, requests, **options):
    return start_job(store, emulator, requests, model=case.model, provider=adapter_for(case, emulator), **options)


def test_crash_after_create_before_persist_finds_the_batch_instead_of_creating_it_again(case, tmp_path, emulator):
    class DiesAfterCreate(provider_class(case.provider)):  # type: ignore[misc, valid-type]
        def create(self, input_file, model, tag):
            super().create(input_file, model, tag)
            raise KeyboardInterrupt("process killed after the provider created the batch")

    with Store(tmp_path / "s") as store:
        dying = adapter_for(case, emulator, DiesAfterCreate)
        with pytest.raises(KeyboardInterrupt):
            start_job(store, emulator, prompts(50), model=case.model, batch_size=20, provider=dying).run()
    assert emulator.stats()["batches_created"][case.provider] == 1

    with Store(tmp_path / "s") as store:  # the next run: a fresh process, same store
        final = run_case(store, emulator, case, prompts(50), batch_size=20).run()
        assert final.items == {"succeeded": 50}
        assert [r.id for r in results(store)] == [f"r{i}" for i in range(50)]
    assert emulator.stats()["batches_created"][case.provider] == 3  # 20 + 20 + 10: the first found, not re-made


def test_an_expired_batch_keeps_what_finished_and_marks_the_rest_expired(case, store, make_emulator):
    emulator = make_emulator(processing_seconds=100, completion_window_seconds=60)
    final = run_case(store, emulator, case, prompts(40), max_attempts=1).run()
    assert final.remote == {case.expired_status: 1}
    rows = results(store)
    assert [r.id for r in rows] == [f"r{i}" for i in range(40)]
    finished = [r for r in rows if r.status == "succeeded"]
    assert (len(finished) > 0) == case.partial_on_expiry
    assert all(r.text.endswith(f"number {r.id[1:]}") for r in finished)
    assert {r.error["code"] for r in rows if r.status != "succeeded"} == {"batch_expired"}


def test_cancelling_a_job_keeps_finished_lines_and_marks_the_rest_cancelled(case, store, make_emulator):
    emulator = make_emulator(processing_seconds=100)
    engine = run_case(store, emulator, case, prompts(40))
    engine.run(wait=False)
    emulator.clock.advance(50)  # about half the lines are done
    final = engine.cancel()
    assert set(final.items) == {"succeeded", "cancelled"} and 10 <= final.items["succeeded"] <= 30
    rows = results(store)
    assert all(r.text for r in rows if r.status == "succeeded")
    assert {r.error["code"] for r in rows if r.status == "cancelled"} == {"batch_cancelled"}
    assert store.get_job("job").state == "cancelled"
    engine.provider.cancel(store.batches(store.get_job("job").id)[0].remote_id)  # ended: not an error


def test_an_unknown_model_fails_only_its_own_lines_with_the_providers_message(case, store, emulator):
    requests = [*prompts(3), {"id": "odd", "prompt": "Hello?", "model": "missing-model"}]
    final = run_case(store, emulator, case, requests).run()
    assert final.items == {"succeeded": 3, "failed": 1}
    odd = {r.id: r for r in results(store)}["odd"]
    assert odd.error["code"] == case.unknown_model_code and "missing-model" in odd.error["message"]
    assert odd.attempts == 1  # a final refusal: not sent again


def test_a_reasoning_budget_is_sent_where_the_provider_takes_one_and_refused_before_sending_where_not(
        case, store, emulator):
    requests = [{"id": "thinks", "prompt": "Think first.", "max_tokens": 4000, "reasoning": {"budget_tokens": 1024}}]
    if not case.reasoning_budget:
        with pytest.raises(InputError, match="budget"):
            run_case(store, emulator, case, requests)
        assert emulator.stats()["batches_created"].get(case.provider, 0) == 0
        return
    final = run_case(store, emulator, case, requests).run()
    assert final.items == {"succeeded": 1}
    thinks = results(store)[0]
    assert 0 < thinks.usage["reasoning_tokens"] <= thinks.usage["output_tokens"]
