"""Live mode's fast path (live/http.py and h1.py: our own HTTP/1.1 client, no SDK) against the real emulator:
the same stored answers as the SDK path for every provider, the SDK's headers, Retry-After, and
network failures that become batchery's errors without the key."""

from __future__ import annotations

import socket

import orjson
import pytest
from conftest import MODELS, counted, results, simulated

from batchery.emulator import Emulator, ManualClock
from batchery.engine import prepare_job
from batchery.errors import ConfigError
from batchery.inputs import iter_objects
from batchery.live import LivePolicy, LiveRunner
from batchery.providers import get_provider

SECRET = "sk-fastpath-secret-0123456789"


def _job(store, provider: str, base_url: str, name: str, n: int = 3, api_key: str = "test-key"):
    adapter = get_provider(provider, base_url=base_url, api_key=api_key)
    requests = [{"id": f"r{i}", "system": "Be brief.", "prompt": f"Fast question {i}", "max_tokens": 20,
                 "temperature": 0} for i in range(n)]
    job, _ = prepare_job(store, name, adapter, MODELS[provider], iter_objects(requests), name, reuse=False)
    return adapter, job


def _answers(store, name: str) -> list[tuple]:
    return [(r.status, r.text, r.usage, r.error) for r in results(store, name)]


@pytest.mark.parametrize("provider", ["openai", "groq", "together", "mistral", "anthropic", "gemini"])
def test_the_fast_path_stores_what_the_sdk_path_stores(provider, store, emulator):
    for http in ("fast", "sdk"):
        adapter, job = _job(store, provider, emulator.base_url(provider), http)
        progress = LiveRunner(store, adapter, job, LivePolicy(concurrency=2, http=http)).run()
        assert progress.done and progress.items == {"succeeded": 3}, (http, progress.items)
    assert _answers(store, "fast") == _answers(store, "sdk")
    assert all(a[1] for a in _answers(store, "fast"))
    if provider not in ("gemini", "mistral"):  # those SDKs re-serialise their parsed models
        fast = [orjson.loads(r.response) if isinstance(r.response, bytes) else r.response
                for r in results(store, "fast")]
        sdk = [orjson.loads(r.response) if isinstance(r.response, bytes) else r.response
               for r in results(store, "sdk")]
        for f, s in zip(fast, sdk):  # identical bodies but for the ids and times the emulator stamps
            assert sorted(f) == sorted(s)
    assert emulator.stats()["live_requests"][provider] == 6


class _Recorder:
    """ASGI middleware keeping every request's headers (lower-case names)."""

    def __init__(self, app):
        self.app, self.seen = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.seen.append((scope["path"], {k.decode(): v.decode() for k, v in scope["headers"]}))
        await self.app(scope, receive, send)


@pytest.fixture
def recording():
    emulator = Emulator(clock=ManualClock())
    emulator.app = recorder = _Recorder(emulator.app)
    emulator.start()
    yield emulator, recorder.seen
    emulator.stop()


def test_the_fast_path_sends_the_sdks_headers(store, recording, monkeypatch):
    emulator, seen = recording
    monkeypatch.setenv("OPENAI_ORG_ID", "org-batchery-test")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_batchery_test")
    for provider in ("openai", "anthropic", "gemini", "groq"):
        adapter, job = _job(store, provider, emulator.base_url(provider), provider, n=1, api_key=SECRET)
        assert LiveRunner(store, adapter, job, LivePolicy()).run().done
    paths = {path: headers for path, headers in seen}
    openai = paths["/v1/chat/completions"]
    assert openai["authorization"] == f"Bearer {SECRET}"
    assert openai["openai-organization"] == "org-batchery-test" and openai["openai-project"] == "proj_batchery_test"
    assert openai["user-agent"].startswith("batchery/") and openai["content-type"] == "application/json"
    groq = paths["/groq/openai/v1/chat/completions"]
    assert groq["authorization"] == f"Bearer {SECRET}" and "openai-organization" not in groq  # not the Groq SDK's

    from anthropic._constants import ANTHROPIC_API_VERSION

    anthropic = paths["/anthropic/v1/messages"]
    assert anthropic["anthropic-version"] == ANTHROPIC_API_VERSION and anthropic["authorization"] == f"Bearer {SECRET}"
    gemini = next(h for p, h in seen if p.startswith("/gemini/v1/models/gemini-2.5-flash:generateContent"))
    assert gemini["x-goog-api-key"] == SECRET


def test_a_429_is_honoured_for_as_long_as_its_retry_after_says(store, make_emulator):
    emulator = make_emulator(rpm=60)  # one call a second; the client is not told
    adapter, job = _job(store, "openai", emulator.base_url("openai"), "limited", n=4)
    start = emulator.clock.now()
    progress = counted(LiveRunner(store, adapter, job, simulated(emulator, concurrency=4))).run()

    assert progress.done and progress.items == {"succeeded": 4}
    limited = progress.live["rate_limited"]
    assert limited == emulator.stats()["live_rate_limited"]["openai"] > 0
    assert progress.live["sent"] == 4 + limited
    assert emulator.clock.now() - start >= 3.0  # four calls at one a second: the waits were the server's


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _no_wait(seconds: float) -> None:
    return None


def test_a_refused_connection_stops_the_run_with_a_clear_message_and_never_the_key(store):
    adapter, job = _job(store, "openai", f"http://127.0.0.1:{_closed_port()}/v1", "refused", n=3, api_key=SECRET)
    progress = LiveRunner(store, adapter, job, LivePolicy(concurrency=1, max_attempts=2, sleep=_no_wait)).run()

    assert not progress.done and progress.stopped and "could not be reached" in progress.stopped
    assert "ConnectError: cannot connect to 127.0.0.1:" in progress.stopped and "Connection refused" in progress.stopped
    stored = results(store, "refused")
    assert stored[0].status == "failed" and stored[0].error["code"] == "connection_error"
    assert SECRET not in progress.stopped and all(SECRET not in str(r.error) for r in stored)


def test_an_answer_that_never_comes_times_out_as_a_network_failure(store):
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        adapter, job = _job(store, "anthropic", url, "silent", n=1, api_key=SECRET)
        policy = LivePolicy(concurrency=1, max_attempts=1, read_timeout=0.2, sleep=_no_wait)
        progress = LiveRunner(store, adapter, job, policy).run()
    assert progress.stopped and "could not be reached" in progress.stopped and "Timeout" in progress.stopped
    assert results(store, "silent")[0].error["code"] == "connection_error" and SECRET not in progress.stopped


def test_an_unknown_http_mode_is_a_clear_error():
    with pytest.raises(ConfigError, match="--http must be one of: fast, sdk"):
        LivePolicy(http="curl")
