"""The emulator's live endpoints: each official SDK gets its provider's answer, errors and rate limits.

Rate limits read the emulator's ManualClock, so the tests step time instead of sleeping."""

from __future__ import annotations

import time

import anthropic
import groq
import httpx
import openai
import orjson
import pytest
import together
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from mistralai.client import Mistral
from mistralai.client import errors as mistral_errors

from batchery.emulator.fake_model import IGNORES_GUIDELINE, Behaviour
from batchery.emulator.live import Bucket, Limiter, go_duration

PROMPT = "What is the capital of France?"  # 30 characters: 8 prompt tokens
ANSWER = "Emulated answer to: " + PROMPT  # 50 characters: 13 output tokens
MESSAGES = [{"role": "user", "content": PROMPT}]
KEY = "test-key"


# -- clients, built the way src/batchery/providers/*.py builds them (without retries) -------------


def openai_client(emulator) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEY, base_url=emulator.base_url("openai"), max_retries=0)


def anthropic_client(emulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=KEY, base_url=emulator.base_url("anthropic"), max_retries=0)


def gemini_client(emulator) -> genai.Client:
    options = genai_types.HttpOptions(base_url=emulator.base_url("gemini"))
    return genai.Client(api_key=KEY, vertexai=False, http_options=options)


def call(provider: str, emulator, model: str = "model-x", max_tokens: int = 64, **params) -> tuple[str, int, int]:
    """One live call through ``provider``'s SDK: (text, input tokens, output tokens)."""
    url = emulator.base_url(provider)
    if provider in ("openai", "groq", "together"):
        sdk = {"openai": openai.OpenAI, "groq": groq.Groq, "together": together.Together}[provider]
        client = sdk(api_key=KEY, base_url=url, max_retries=0)
        out = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=max_tokens, **params)
        return out.choices[0].message.content, out.usage.prompt_tokens, out.usage.completion_tokens
    if provider == "mistral":
        out = Mistral(api_key=KEY, server_url=url).chat.complete(model=model, messages=MESSAGES, max_tokens=max_tokens,
                                                                   **params)
        return out.choices[0].message.content, out.usage.prompt_tokens, out.usage.completion_tokens
    if provider == "anthropic":
        msg = anthropic_client(emulator).messages.create(model=model, max_tokens=max_tokens, messages=MESSAGES, **params)
        assert msg.type == "message" and msg.stop_reason == "end_turn"
        return msg.content[0].text, msg.usage.input_tokens, msg.usage.output_tokens
    config = genai_types.GenerateContentConfig(max_output_tokens=max_tokens, **params)
    client = gemini_client(emulator)  # keep a reference: the SDK closes its transport when the client goes
    out = client.models.generate_content(model=model, contents=PROMPT, config=config)
    return out.text, out.usage_metadata.prompt_token_count, out.usage_metadata.candidates_token_count


PROVIDERS = ["openai", "groq", "together", "mistral", "anthropic", "gemini"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_sdk_gets_the_answer_and_usage_live(make_emulator, provider):
    emulator = make_emulator()
    assert call(provider, emulator) == (ANSWER, 8, 13)
    stats = emulator.stats()
    assert stats["live_requests"][provider] == 1 == sum(stats["live_requests"].values())
    assert stats["by_provider"][provider]["live_requests"] == 1
    assert sum(stats["live_rate_limited"].values()) == 0 and stats["batches_created"][provider] == 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unknown_model_is_the_providers_not_found(make_emulator, provider):
    emulator = make_emulator()
    expected = {"openai": openai.NotFoundError, "groq": groq.NotFoundError, "together": together.NotFoundError,
                "anthropic": anthropic.NotFoundError, "gemini": genai_errors.ClientError,
                "mistral": mistral_errors.SDKError}[provider]
    with pytest.raises(expected) as info:
        call(provider, emulator, model="missing-model")
    if provider == "gemini":
        assert (info.value.code, info.value.status) == (404, "NOT_FOUND")
    elif provider == "mistral":  # Mistral answers an unknown model with 400 invalid_model, not a 404
        assert info.value.status_code == 400 and '"type":"invalid_model"' in info.value.body
    elif provider == "anthropic":
        assert info.value.body["error"] == {"type": "not_found_error", "message": "model: missing-model"}
    else:
        assert info.value.status_code == 404


def test_openai_live_answer_equals_the_batch_answer(make_emulator, tmp_path):
    emulator = make_emulator()
    client = openai_client(emulator)
    body = {"model": "gpt-test", "messages": MESSAGES, "max_tokens": 64, "response_format": {"type": "json_object"}}
    live = client.chat.completions.create(**body)
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}
    path = tmp_path / "in.jsonl"
    path.write_bytes(orjson.dumps(line) + b"\n")
    upload = client.files.create(file=path.open("rb"), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed"
    answer = orjson.loads(client.files.content(batch.output_file_id).read())["response"]["body"]
    assert live.choices[0].message.content == answer["choices"][0]["message"]["content"]
    assert live.usage.model_dump(exclude_none=True) == answer["usage"]
    assert live.id == answer["id"]


def test_anthropic_live_answer_equals_the_batch_answer(make_emulator):
    emulator = make_emulator()
    client = anthropic_client(emulator)
    params = {"model": "claude-test", "max_tokens": 64, "messages": MESSAGES, "system": "Be brief."}
    live = client.messages.create(**params)
    batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": params}])
    assert client.messages.batches.retrieve(batch.id).processing_status == "ended"
    [result] = list(client.messages.batches.results(batch.id))
    batched = result.result.message
    assert live.content == batched.content and live.usage.input_tokens == batched.usage.input_tokens
    assert (live.usage.service_tier, batched.usage.service_tier) == ("standard", "batch")


def test_live_answers_follow_the_emulators_behaviour(make_emulator):
    emulator = make_emulator(behaviour=Behaviour(quality={"weak": 0.0}))
    assert call("openai", emulator, model="weak")[0] == ANSWER + IGNORES_GUIDELINE
    assert call("gemini", emulator, model="weak")[0] == ANSWER + IGNORES_GUIDELINE
    assert call("anthropic", emulator, model="strong")[0] == ANSWER


def test_invalid_parameters_are_400_in_the_providers_envelope(make_emulator):
    emulator = make_emulator()
    with pytest.raises(openai.BadRequestError) as info:
        call("openai", emulator, temperature=5)
    assert info.value.code == "decimal_above_max_value" and info.value.param == "temperature"
    with pytest.raises(anthropic.BadRequestError) as info:
        call("anthropic", emulator, extra_body={"temperature": 5})  # this SDK has no temperature argument
    assert info.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(genai_errors.ClientError) as info:
        call("gemini", emulator, temperature=5)
    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT")
    with pytest.raises(mistral_errors.HTTPValidationError):  # Mistral's validation errors are FastAPI's 422
        call("mistral", emulator, temperature=-1)
    assert emulator.stats()["live_requests"]["openai"] == 1  # answered, if with an error
    assert sum(emulator.stats()["live_requests"].values()) == 4


PATHS = {
    "openai": "/v1/chat/completions",
    "groq": "/groq/openai/v1/chat/completions",
    "together": "/together/v1/chat/completions",
    "mistral": "/mistral/v1/chat/completions",
    "anthropic": "/anthropic/v1/messages",
    "gemini": "/gemini/v1beta/models/gemini-test:generateContent",
}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_body_that_is_not_json_is_refused_in_the_providers_envelope(make_emulator, provider):
    emulator = make_emulator()
    response = httpx.post(emulator.url + PATHS[provider], content=b"{not json", headers={"authorization": "Bearer k"})
    body = response.json()
    if provider == "mistral":
        assert response.status_code == 422 and body["detail"][0]["type"] == "model_attributes_type"
    elif provider == "anthropic":
        assert response.status_code == 400 and body["error"]["type"] == "invalid_request_error"
    elif provider == "gemini":
        assert response.status_code == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    else:
        assert response.status_code == 400 and body["error"]["type"] == "invalid_request_error"


def test_the_live_paths_need_an_api_key(make_emulator):
    emulator = make_emulator()
    assert httpx.post(emulator.url + PATHS["openai"], json={"model": "m", "messages": MESSAGES}).status_code == 401


# -- rate limits ---------------------------------------------------------------------------------------


def ratelimit(headers, kind: str = "requests") -> tuple[str, str, str]:
    return tuple(headers.get(f"x-ratelimit-{name}-{kind}") for name in ("limit", "remaining", "reset"))


def test_openai_rpm_two_pass_the_third_is_429_until_the_clock_moves(make_emulator):
    emulator = make_emulator(rpm=120)  # 2 per second, a bucket of 2
    client = openai_client(emulator)

    def create():
        return client.chat.completions.with_raw_response.create(model="gpt-test", messages=MESSAGES)

    first, second = create(), create()
    assert first.parse().choices[0].message.content == ANSWER
    assert ratelimit(first.headers) == ("120", "1", "500ms")
    assert ratelimit(second.headers) == ("120", "0", "1s")
    assert "x-ratelimit-limit-tokens" not in first.headers  # no TPM configured
    with pytest.raises(openai.RateLimitError) as info:
        create()
    error = info.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded" and error.type == "requests"
    assert error.param is None
    assert error.body["message"].startswith("Rate limit reached for gpt-test in organization org-emulator on "
                                            "requests per min (RPM): Limit 120, Used 120, Requested 1. "
                                            "Please try again in 500ms.")
    assert error.response.headers["retry-after"] == "1" and error.response.headers["retry-after-ms"] == "500"
    assert ratelimit(error.response.headers) == ("120", "0", "1s")

    emulator.clock.advance(0.5)  # one request's worth: the refused call took nothing
    assert ratelimit(create().headers)[1] == "0"
    with pytest.raises(openai.RateLimitError):
        create()
    emulator.clock.advance(1.0)
    assert [ratelimit(create().headers)[1] for _ in range(2)] == ["1", "0"]
    counts = emulator.stats()["by_provider"]["openai"]
    assert (counts["live_requests"], counts["live_rate_limited"]) == (5, 2)
    assert emulator.stats()["live_rate_limited"]["openai"] == 2


def test_openai_tpm_counts_prompt_and_max_tokens(make_emulator):
    emulator = make_emulator(tpm=6000)  # 100 tokens per second, a bucket of 100
    client = openai_client(emulator)

    def create(max_tokens: int = 40):  # 8 prompt tokens + 40 = 48 tokens
        return client.chat.completions.with_raw_response.create(model="gpt-test", messages=MESSAGES,
                                                                 max_tokens=max_tokens)

    assert ratelimit(create().headers, "tokens") == ("6000", "52", "480ms")
    second = create()
    assert ratelimit(second.headers, "tokens") == ("6000", "4", "960ms")
    assert "x-ratelimit-limit-requests" not in second.headers  # no RPM configured
    with pytest.raises(openai.RateLimitError) as info:
        create()
    error = info.value
    assert error.type == "tokens" and error.code == "rate_limit_exceeded"
    assert "on tokens per min (TPM): Limit 6000, Used 5760, Requested 48. Please try again in 440ms." in error.message
    assert error.response.headers["retry-after-ms"] == "440"
    emulator.clock.advance(0.44)
    assert ratelimit(create().headers, "tokens")[1] == "0"  # the 429 took nothing: 48 tokens were there
    emulator.clock.advance(1)
    assert ratelimit(create(max_tokens=10).headers, "tokens")[1] == "82"  # max_tokens is what counts
    assert emulator.stats()["by_provider"]["openai"]["live_rate_limited"] == 1


def test_a_request_over_the_burst_runs_on_a_full_bucket_and_leaves_a_debt(make_emulator):
    emulator = make_emulator(tpm=60)  # 1 token per second: every request is bigger than the bucket
    client = openai_client(emulator)
    client.chat.completions.create(model="gpt-test", messages=MESSAGES, max_tokens=40)  # 48 tokens
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-test", messages=MESSAGES, max_tokens=40)
    assert info.value.response.headers["retry-after"] == "48"  # until the bucket is full again
    emulator.clock.advance(48)
    client.chat.completions.create(model="gpt-test", messages=MESSAGES, max_tokens=40)
    with pytest.raises(openai.RateLimitError) as info:  # more than a minute's worth: never
        client.chat.completions.create(model="gpt-test", messages=MESSAGES, max_tokens=100)
    assert "Request too large for gpt-test" in info.value.message and "Requested 108" in info.value.message
    assert info.value.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in info.value.response.headers


def test_anthropic_rate_limit_headers_and_429(make_emulator):
    emulator = make_emulator(rpm=120, tpm=60_000)
    client = anthropic_client(emulator)
    now = emulator.clock.now()

    def create():
        return client.messages.with_raw_response.create(model="claude-test", max_tokens=100, messages=MESSAGES)

    def stamp(t: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

    first = create()
    assert first.parse().content[0].text == ANSWER
    h = first.headers
    assert (h["anthropic-ratelimit-requests-limit"], h["anthropic-ratelimit-requests-remaining"]) == ("120", "1")
    assert h["anthropic-ratelimit-requests-reset"] == stamp(now + 1)  # full again in 0.5 s, whole seconds
    assert (h["anthropic-ratelimit-tokens-limit"], h["anthropic-ratelimit-tokens-remaining"]) == ("60000", "892")
    assert not any(name.startswith("x-ratelimit") for name in h)
    assert create().headers["anthropic-ratelimit-requests-remaining"] == "0"
    with pytest.raises(anthropic.RateLimitError) as info:
        create()
    error = info.value
    assert error.body["type"] == "error" and error.body["error"]["type"] == "rate_limit_error"
    assert "of 120 requests per minute" in error.body["error"]["message"]
    assert error.response.headers["retry-after"] == "1"
    assert error.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    emulator.clock.advance(1)
    assert create().headers["anthropic-ratelimit-requests-remaining"] == "1"
    counts = emulator.stats()["by_provider"]["anthropic"]
    assert (counts["live_requests"], counts["live_rate_limited"]) == (3, 1)


def test_gemini_429_is_resource_exhausted_with_retry_info_and_no_headers(make_emulator):
    emulator = make_emulator(rpm=120)
    client = gemini_client(emulator)

    def generate():
        return client.models.generate_content(model="gemini-test", contents=PROMPT)

    first = generate()
    assert first.text == ANSWER
    assert not any("ratelimit" in name for name in first.sdk_http_response.headers)
    generate()
    with pytest.raises(genai_errors.ClientError) as info:
        generate()
    error = info.value
    assert (error.code, error.status) == (429, "RESOURCE_EXHAUSTED")
    details = error.details["error"]["details"]
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.500s"} in details
    assert details[0]["violations"][0]["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel"
    emulator.clock.advance(1)
    assert generate().text == ANSWER
    counts = emulator.stats()["by_provider"]["gemini"]
    assert (counts["live_requests"], counts["live_rate_limited"]) == (3, 1)


BODIES = {
    "anthropic": {"model": "claude-test", "max_tokens": 10, "messages": MESSAGES},
    "gemini": {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]},
}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_provider_limits_on_its_own_bucket(make_emulator, provider):
    emulator = make_emulator(rpm=60)  # a bucket of one request per provider
    body = BODIES.get(provider, {"model": "model-x", "messages": MESSAGES})
    url, auth = emulator.url + PATHS[provider], {"authorization": "Bearer k"}
    assert httpx.post(url, json=body, headers=auth).status_code == 200
    refused = httpx.post(url, json=body, headers=auth)
    assert refused.status_code == 429
    error = refused.json()
    if provider == "anthropic":
        assert error["error"]["type"] == "rate_limit_error" and refused.headers["retry-after"] == "1"
        assert refused.headers["anthropic-ratelimit-requests-remaining"] == "0"
    elif provider == "gemini":
        assert error["error"]["status"] == "RESOURCE_EXHAUSTED" and "retry-after" not in refused.headers
    elif provider == "mistral":
        assert error == {"object": "error", "message": "Rate limit exceeded", "type": "rate_limited", "param": None,
                         "code": "1300"}
        assert ratelimit(refused.headers) == ("60", "0", "1s")
    else:
        assert error["error"]["code"] == "rate_limit_exceeded" and refused.headers["retry-after-ms"] == "1000"
        assert ratelimit(refused.headers) == ("60", "0", "1s")
    others = [p for p in PROVIDERS if p != provider]
    assert all(emulator.stats()["by_provider"][p]["live_rate_limited"] == 0 for p in others)


def test_no_limits_no_headers(make_emulator):
    emulator = make_emulator()
    response = openai_client(emulator).chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert not any("ratelimit" in name for name in response.headers)


def test_errors_do_not_take_capacity(make_emulator):
    emulator = make_emulator(rpm=60)
    client = openai_client(emulator)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="missing-x", messages=MESSAGES)
    assert ratelimit(info.value.response.headers) == ("60", "1", "0s")
    client.chat.completions.create(model="gpt-test", messages=MESSAGES)


# -- the pieces ------------------------------------------------------------------------------------------


def test_go_durations():
    assert [go_duration(s) for s in (0, 0.0001, 0.02, 0.5, 1, 1.5, 17.28, 60, 86.4, 360)] == [
        "0s", "1ms", "20ms", "500ms", "1s", "1.5s", "17.28s", "1m0s", "1m26.4s", "6m0s"]


def test_bucket_refills_continuously_up_to_one_seconds_worth():
    bucket = Bucket(30, now=0.0)  # half a request per second, but a bucket holds at least one
    assert (bucket.capacity, bucket.level) == (1.0, 1.0)
    bucket.level = 0
    bucket.refill(1.0)
    assert bucket.level == 0.5 and bucket.wait(1) == 1.0
    bucket.refill(100.0)
    assert bucket.level == 1.0


def test_limiter_refuses_without_charging_and_reports_the_longer_wait():
    limiter = Limiter(rpm=600, tpm=600, now=0.0)  # buckets of 10 requests and 10 tokens
    assert limiter.admit(6, 0.0) is None
    refusal = limiter.admit(6, 0.0)
    assert refusal.kind == "tokens" and refusal.wait == pytest.approx(0.2)
    assert (limiter.requests.level, limiter.tokens.level) == (9, 4)
    assert limiter.admit(601, 0.0).wait is None  # over the per-minute limit


def test_bad_limits_are_refused_before_anything_starts(make_emulator):
    from batchery.emulator import Emulator

    for config in ({"rpm": 0}, {"tpm": -5}, {"latency": -1.0}):
        with pytest.raises(ValueError):
            Emulator(**config)


def test_the_cli_passes_the_live_options_to_serve(monkeypatch):
    from typer.testing import CliRunner

    import batchery.emulator
    from batchery.cli import app

    seen = {}
    monkeypatch.setattr(batchery.emulator, "serve", lambda **kwargs: seen.update(kwargs))
    result = CliRunner().invoke(app, ["emulator", "--port", "9", "--rpm", "3000", "--tpm", "90000", "--latency", "0.25"])
    assert result.exit_code == 0, result.output
    assert (seen["rpm"], seen["tpm"], seen["latency"], seen["port"]) == (3000, 90000, 0.25, 9)
    assert CliRunner().invoke(app, ["emulator", "--rpm", "0"]).exit_code != 0
