"""One scenario, every provider: the same job file through each official SDK against the emulator
ends with the same normalised results. Provider-specific behaviour has its own test files."""

from __future__ import annotations

import orjson
import pytest

from batchery.providers import PROVIDERS, get_provider

from conftest import MODELS, results, start_job

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


BATCH_PROVIDERS = sorted(p for p in PROVIDERS if p != "openai-compatible")  # that one is live only


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
        "mistral": {"custom_id": user_id, "body": {"messages": chat, "random_seed": 7}},
        "together": {"custom_id": user_id, "body": {"model": model, "messages": chat, "top_k": 5}},
    }[provider]


def test_raw_lines_in_the_providers_own_format_are_sent_as_they_are(provider_name, store, emulator):
    from batchery.engine import Engine, prepare_job
    from batchery.inputs import iter_objects

    from conftest import clock_poll

    adapter = get_provider(provider_name, base_url=emulator.base_url(provider_name), api_key="test-key")
    lines = [native_line(provider_name, f"user-{i}", f"Raw question {i}") for i in range(5)]
    job, _ = prepare_job(store, "raw", adapter, MODELS[provider_name], iter_objects(lines), "raw", raw=True)
    Engine(store, adapter, job, poll=clock_poll(emulator)).run()
    rows = results(store, "raw")
    assert [(r.id, r.status, r.text) for r in rows] == [
        (f"user-{i}", "succeeded", f"Emulated answer to: Raw question {i}") for i in range(5)]
    assert all(r.custom_id.startswith("bq-") for r in rows)  # our content key, not the user's id


@pytest.fixture(params=[*sorted(PROVIDERS)])
def live_provider(request) -> str:
    return request.param


def test_the_same_job_live_gives_the_batch_results_on_every_provider(live_provider, store, emulator):
    """Live mode: every provider's official async SDK against the emulator's live endpoints; the
    results are the batch path's, line for line (openai-compatible is checked against OpenAI)."""
    from batchery.live import LivePolicy, LiveRunner

    from batchery.engine import prepare_job
    from batchery.inputs import iter_objects

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
