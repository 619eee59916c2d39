"""One error boundary: one rule (retry.classify) says what a failure is, for a provider call, a live
answer and a stored line alike; each adapter only names its provider's codes and turns its SDK's
exceptions into batchery's. Real SDKs against the emulator, and a real HTTP server that answers
what the emulator does not."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from conftest import MODELS

from batchery.engine import prepare_job
from batchery.errors import AccountError, ProviderError, RateLimitedError, TransientError
from batchery.inputs import iter_objects
from batchery.live import LivePolicy, LiveRunner
from batchery.providers import PROVIDERS, get_provider
from batchery.retry import Failure, classify, classify_http, codes_for, recoverable_codes, transient_codes


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_a_call_and_a_stored_line_with_the_same_http_status_are_judged_alike(provider):
    """What the live executor stores as `http_<status>` is recoverable exactly when a call answered
    with that status is (the lists used to name 500-504 and 529 only, so a line failed 520 was final)."""
    codes = codes_for(provider)
    for status in range(100, 600):
        kind = classify(status, None, codes)
        assert (f"http_{status}" in recoverable_codes(provider)) == kind.recoverable, status
        assert (f"http_{status}" in transient_codes(provider)) == (kind in (Failure.TRANSIENT, Failure.RATE_LIMITED))


@pytest.mark.parametrize(("status", "code", "kind"), [
    (408, None, Failure.TRANSIENT), (529, "overloaded_error", Failure.TRANSIENT),
    (400, "overloaded_error", Failure.TRANSIENT),  # the provider's own code wins over the status
    (429, "rate_limit_error", Failure.RATE_LIMITED), (401, "authentication_error", Failure.ACCOUNT),
    (400, "invalid_request_error", Failure.FINAL), (None, None, Failure.TRANSIENT),
])
def test_anthropic_codes_are_anthropics_own_and_http_statuses_are_everyones(status, code, kind):
    assert classify(status, code, codes_for("anthropic")) is kind


def test_a_providers_codes_do_not_decide_for_another_provider():
    assert classify(400, "RESOURCE_EXHAUSTED", codes_for("gemini")) is Failure.TRANSIENT
    assert classify(400, "RESOURCE_EXHAUSTED", codes_for("openai")) is Failure.FINAL
    assert "RESOURCE_EXHAUSTED" not in recoverable_codes("anthropic")


def test_classify_http_reads_each_providers_raw_429_from_the_emulator(make_emulator):
    """For callers below the SDKs (a plain HTTP client): the raw answer is enough."""
    emulator = make_emulator(rpm=1)
    paths = {"openai": "/chat/completions", "mistral": "/v1/chat/completions", "anthropic": "/v1/messages",
             "gemini": f"/v1beta/models/{MODELS['gemini']}:generateContent"}
    headers = {"authorization": "Bearer k", "x-api-key": "k", "x-goog-api-key": "k", "anthropic-version": "2023-06-01"}
    for provider, path in paths.items():
        body = ({"contents": [{"parts": [{"text": "hi"}]}]} if provider == "gemini" else
                {"model": MODELS[provider], "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
        answers = [httpx.post(emulator.base_url(provider) + path, json=body, headers=headers) for _ in range(3)]
        refused = next(a for a in answers if a.status_code == 429)
        assert classify_http(refused.status_code, refused.content, refused.headers,
                             codes_for(provider)) is Failure.RATE_LIMITED, provider


def test_classify_http_finds_account_reasons_inside_googles_envelope_and_types_in_anthropics():
    google = (b'{"error": {"code": 400, "status": "INVALID_ARGUMENT", "details": [{"@type": '
              b'"type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}')
    assert classify_http(400, google, {}, codes_for("gemini")) is Failure.ACCOUNT
    anthropic = b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
    assert classify_http(529, anthropic) is Failure.TRANSIENT
    assert classify_http(400, b"not json") is Failure.FINAL


def test_an_adapters_http_error_is_the_exception_its_sdk_errors_become(emulator):
    adapter = get_provider("openai", base_url=emulator.base_url("openai"), api_key="k")
    limited = adapter.http_error("live call", 429, b'{"error": {"code": "rate_limit_exceeded"}}',
                                 {"retry-after": "7"})
    assert isinstance(limited, RateLimitedError) and limited.retry_after == 7.0
    assert isinstance(adapter.http_error("live call", 429, b'{"error": {"code": "insufficient_quota"}}'),
                      AccountError)
    assert type(adapter.http_error("live call", 503)) is TransientError
    assert type(adapter.http_error("live call", 400, b'{"error": {"code": "invalid_value"}}')) is ProviderError


def test_a_batch_call_answered_429_raises_rate_limited_with_the_wait_asked_for(make_emulator, tmp_path):
    emulator = make_emulator(faults="http_429=1,retry_after=4")
    adapter = get_provider("openai", base_url=emulator.base_url("openai"), api_key="k")
    path = tmp_path / "in.jsonl"
    path.write_text("{}\n")
    with pytest.raises(RateLimitedError) as caught:
        adapter.upload(path)
    assert caught.value.retry_after == 4.0 and "openai upload: HTTP 429" in str(caught.value)


class _Answers520(BaseHTTPRequestHandler):
    """A server in trouble behind a proxy: every call answers 520 with a page, not JSON."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b"<html>origin error</html>"
        self.send_response(520)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_a_live_line_failed_with_any_5xx_leaves_the_job_resumable_not_done(store):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers520)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        adapter = get_provider("openai-compatible", base_url=f"http://127.0.0.1:{server.server_port}/v1",
                               api_key="k")
        requests = [{"id": f"r{i}", "prompt": f"q{i}"} for i in range(3)]
        job, _ = prepare_job(store, "live520", adapter, "m", iter_objects(requests), "live520")

        async def no_wait(_: float) -> None:
            await asyncio.sleep(0)

        progress = LiveRunner(store, adapter, job, LivePolicy(max_attempts=2, concurrency=1, sleep=no_wait)).run()
    finally:
        server.shutdown()
    assert progress.items == {"failed": 3} and progress.live["sent"] == 6  # each retried once
    assert not progress.done and "a later run can fix (http_520" in (progress.stopped or "")
    assert store.get_job("live520").state == "running"
