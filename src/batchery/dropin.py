"""A drop-in batching client: unchanged SDK code whose calls go through the Batch API.

    client = batchery.batching(AsyncOpenAI(), store="answers")
    replies = await asyncio.gather(*(client.chat.completions.create(model=m, messages=q) for q in questions))

`create` calls are collected into windows (`window` calls, or `window_seconds` after the first
call of a window, whichever comes first). Each window is a batchery job of `--raw` lines (the
keyword arguments are the provider's request body, sent as they are), run by the normal engine in
a worker thread; each call resolves with the SDK's own response type, or raises the SDK's own
exception. Keys are content, so a call answered before (by any job of the store at the same
provider endpoint) resolves at once, and a window that was in flight when the process died is
resumed, not sent again, when the same calls are made again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import importlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .engine import PollPolicy
from .errors import BatcheryError, ConfigError, InputError
from .export import Result
from .providers import endpoint_origin, provider_class
from .requests import canonical_bytes, parse_raw_request, request_key
from .retry import DEFAULT_MAX_ATTEMPTS

DEFAULT_WINDOW = 1000
DEFAULT_WINDOW_SECONDS = 10.0


@dataclass(frozen=True)
class _Kind:
    """What differs between the SDKs the client wraps."""

    provider: str
    path: tuple[str, ...]  # attributes from the client to the namespace whose `create` is batched
    response_type: str  # "module:Class" of the SDK's response object


_KINDS = {
    ("openai", "AsyncOpenAI"): _Kind("openai", ("chat", "completions"), "openai.types.chat:ChatCompletion"),
    ("anthropic", "AsyncAnthropic"): _Kind("anthropic", ("messages",), "anthropic.types:Message"),
}
# Arguments an SDK takes that a batch line cannot carry: refused rather than silently dropped.
_REFUSED = {
    "stream": "streaming is not possible in a batch",
    "stream_options": "streaming is not possible in a batch",
    "extra_headers": "a batch line carries no headers of its own",
    "extra_query": "a batch line carries no query of its own",
    "timeout": "a batched call has no per-call timeout (a batch has up to 24 h)",
}
# Ways into the batched namespace that would bypass the batch.
_UNBATCHED = ("parse", "stream", "with_raw_response", "with_streaming_response")


class _Closed(BatcheryError):
    """The batching client was closed while a window was in flight; its job resumes next time."""


def batching(client: Any, *, store: str | Path | None = None, window: int = DEFAULT_WINDOW,
             window_seconds: float = DEFAULT_WINDOW_SECONDS, job: str = "batching",
             max_attempts: int = DEFAULT_MAX_ATTEMPTS, poll: PollPolicy | None = None,
             sleep: Callable[[float], Awaitable[Any]] | None = None) -> BatchingClient:
    """Wrap an `AsyncOpenAI` or `AsyncAnthropic` client so that `chat.completions.create(...)` /
    `messages.create(...)` go through the provider's Batch API at half price.

    The client's base_url and api_key are used (answers are reused only from the same endpoint);
    everything else on it (`client.models`, ...) is the original client's, called directly.
    window / window_seconds: a window is sent when it holds `window` calls, or `window_seconds`
    after its first call. Jobs are named `<job>-<hash of the window>` in `store`.
    poll: the engine's polling cadence; sleep: the async sleep that times windows (tests inject both).
    """
    kind = _KINDS.get((type(client).__module__.partition(".")[0], type(client).__name__))
    if kind is None:
        raise ConfigError(f"batching() takes an AsyncOpenAI or AsyncAnthropic client, not {type(client).__name__}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ConfigError(f"window must be a positive number of calls, got {window!r}")
    if not window_seconds > 0:
        raise ConfigError(f"window_seconds must be positive, got {window_seconds!r}")
    batcher = _Batcher(client, kind, store=store, window=window, window_seconds=window_seconds, job=job,
                       max_attempts=max_attempts, poll=poll or PollPolicy(), sleep=sleep or asyncio.sleep)
    return BatchingClient(client, kind.path, batcher)


class _Namespace:
    """One attribute level of the wrapped client: the batched path leads to `create`, every other
    attribute is the original client's."""

    def __init__(self, original: Any, path: tuple[str, ...], batcher: _Batcher):
        self._original, self._path, self._batcher = original, path, batcher

    def __getattr__(self, name: str) -> Any:
        if self._path and name == self._path[0]:
            return _Namespace(getattr(self._original, name), self._path[1:], self._batcher)
        if not self._path:
            if name == "create":
                return self._batcher.create
            if name in _UNBATCHED:
                raise ConfigError(f"the batching client batches only create(); {name} is not available on it")
        return getattr(self._original, name)


class BatchingClient(_Namespace):
    """What `batching()` returns. `async with` it (or `await aclose()`) to stop cleanly."""

    async def flush(self) -> None:
        """Send the calls waiting in the current window now, without waiting for it to fill."""
        self._batcher.flush()

    async def aclose(self) -> None:
        """Stop: calls still waiting for a window are cancelled, windows in flight stop at their next
        poll (their jobs stay in the store and resume when the same calls are made again)."""
        await self._batcher.close()

    async def __aenter__(self) -> BatchingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@dataclass
class _Call:
    body: dict
    future: asyncio.Future


class _Batcher:
    def __init__(self, client: Any, kind: _Kind, *, store: str | Path | None, window: int, window_seconds: float,
                 job: str, max_attempts: int, poll: PollPolicy, sleep: Callable[[float], Awaitable[Any]]):
        self.client, self.kind = client, kind
        self.adapter_class = provider_class(kind.provider)
        url = str(client.base_url)
        # The provider's own URL is the "default" endpoint, as for a CLI job: answers are shared with those.
        same_as_default = endpoint_origin(url) == endpoint_origin(self.adapter_class.default_base_url)
        self.base_url = None if same_as_default else url
        self.origin = endpoint_origin(self.base_url)
        self.api_key = client.api_key
        self.store_location, self.window, self.window_seconds = store, window, window_seconds
        self.job, self.max_attempts, self.sleep = job, max_attempts, sleep
        self.poll = dataclasses.replace(poll, sleep=self._poll_sleep(poll.sleep))
        self._waiting: list[_Call] = []
        self._timer: asyncio.Task | None = None
        self._sending: set[asyncio.Task] = set()
        self._in_flight: dict[str, asyncio.Future] = {}  # key -> the answer of a call waiting or sent
        self._closing = threading.Event()
        self._store: Any = None  # the event loop's connection, for stored answers (a Store is per thread)
        self._reused = 0  # calls answered from the store: the first is announced

    def _poll_sleep(self, sleep: Callable[[float], None]) -> Callable[[float], None]:
        """The engine's sleep between polls, cut short when the client closes (or the loop ends)."""

        def wait(seconds: float) -> None:
            if sleep is time.sleep:  # the usual sleep: wait on the event instead, so a close ends it at once
                self._closing.wait(seconds)
            else:
                sleep(seconds)
            if self._closing.is_set():
                raise _Closed("the batching client was closed; its jobs resume when the same calls are made again")

        return wait

    # -- calls ---------------------------------------------------------------------------------------

    async def create(self, **kwargs: Any) -> Any:
        """The SDK's `create`, batched: the SDK's response object, or the SDK's exception."""
        body = self._body(kwargs)
        field = self.adapter_class.line_body_field
        where = f"{self.kind.provider} create()"
        _, _, canonical = parse_raw_request({field: body}, "custom_id", field, True, None, where)
        key = request_key(self.kind.provider, canonical_bytes(canonical, where))
        stored = self._stored(key)
        if stored is not None:  # answered before at this endpoint: no window, nothing sent
            return self._response(orjson.loads(stored))
        future = self._in_flight.get(key)
        if future is None:  # a call identical to one still on its way shares that one's answer
            future = self._in_flight[key] = asyncio.get_running_loop().create_future()
            future.add_done_callback(lambda _: self._in_flight.pop(key, None))
            self._waiting.append(_Call(body, future))
            if len(self._waiting) >= self.window:
                self.flush()
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().create_task(self._time_window())
        # Shielded: a caller that stops waiting does not cancel the answer others wait for.
        result, stopped = await asyncio.shield(future)
        return self._outcome(result, stopped)

    def _body(self, kwargs: dict) -> dict:
        """The request body the SDK would send for these arguments: its "not given" markers left
        out, extra_body merged in, pydantic objects (a previous reply's message) as JSON."""
        if "model" not in kwargs:
            raise InputError(f"{self.kind.provider} create(): model= is required")
        body: dict = {}
        for name, value in kwargs.items():
            if _not_given(value):
                continue
            if name in _REFUSED and (name != "stream" or value):
                raise ConfigError(f"the batching client cannot take {name}=: {_REFUSED[name]}")
            if name == "extra_body":
                body.update(_plain(value or {}))
            elif name != "stream":
                body[name] = _plain(value)
        return body

    def _stored(self, key: str) -> Any:
        if self._store is None:
            from .store import Store

            self._store = Store(self.store_location)
        answer = self._store.stored_answer(key, self.kind.provider, self.origin)
        if answer is not None:
            if not self._reused:  # reuse is never silent: say once where answers come from
                logging.getLogger("batchery").warning(
                    "answering calls made before at %s from the store %s: they are not sent again "
                    "(use another store to ask afresh)", self.origin, self.store_location or "(default)")
            self._reused += 1
        return answer

    async def _time_window(self) -> None:
        await self.sleep(self.window_seconds)
        self._timer = None
        self.flush()

    def flush(self) -> None:
        calls, self._waiting = self._waiting, []
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
        self._timer = None
        if calls:
            task = asyncio.get_running_loop().create_task(self._send(calls))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, calls: list[_Call]) -> None:
        try:
            stopped, results = await asyncio.to_thread(self._run_window, [call.body for call in calls])
        except asyncio.CancelledError:  # the event loop is ending: let the worker thread stop too
            self._closing.set()
            raise
        except Exception as exc:  # the run itself failed (store, key, provider unreachable): every call says so
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(exc)
            return
        for call, result in zip(calls, results):
            if not call.future.done():
                call.future.set_result((result, stopped))  # each caller makes its own SDK object of it

    async def close(self) -> None:
        self._closing.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for call in self._waiting:
            call.future.cancel()
        self._waiting = []
        await asyncio.gather(*self._sending, return_exceptions=True)
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- one window, in a worker thread ---------------------------------------------------------------

    def _run_window(self, bodies: list[dict]) -> tuple[str | None, list[Result]]:
        """Run the window's job to its end (or resume it: its name is its content) with the engine.
        Returns why the run stopped early (None: it did not) and one Result per call, in order."""
        from .api import Connection, drive, open_job
        from .export import iter_results
        from .inputs import iter_objects
        from .providers import get_provider
        from .store import Store

        provider, field = self.kind.provider, self.adapter_class.line_body_field
        items = [{field: body} for body in bodies]
        digest = hashlib.sha256(f"{provider}\0batching\0".encode())
        for body in bodies:
            digest.update(orjson.dumps(body, option=orjson.OPT_SORT_KEYS) + b"\n")
        fingerprint = digest.hexdigest()
        conn = Connection(provider, self.base_url, self.api_key)
        with Store(self.store_location) as st:
            adapter = get_provider(provider, base_url=self.base_url, api_key=self.api_key)
            job_row = open_job(st, f"{self.job}-{fingerprint[:12]}", adapter, conn, None, None, iter_objects(items),
                               fingerprint, raw=True, no_cache=False, max_attempts=self.max_attempts,
                               batch_size=None, max_cost=None)
            progress = drive(st, adapter, job_row, live=None, max_attempts=self.max_attempts, on_progress=None,
                             poll=self.poll)
            return progress.stopped, list(iter_results(st, job_row.id, job_row.provider))

    # -- answers as the SDK's objects ---------------------------------------------------------------

    def _response(self, body: dict) -> Any:
        module, _, name = self.kind.response_type.partition(":")
        return getattr(importlib.import_module(module), name).model_validate(body)

    def _outcome(self, result: Result, stopped: str | None) -> Any:
        if result.ok:
            return self._response(result.response or {})
        error = result.error or {}
        if result.status == "failed":  # the provider answered the line with an error: its status error
            body = result.response or {}
            status = _status_of(error.get("code", ""), body)
            # The SDK picks its exception class (BadRequestError, NotFoundError, ...) as for a live call.
            raise self.client._make_status_error(f"Error code: {status} - {body}", body=body,
                                                 response=self._http_response(status))
        # expired, cancelled or missing after every attempt, or never answered (the run stopped)
        reason = error.get("message") or stopped or "the run stopped before it was answered"
        sdk = importlib.import_module(self.kind.provider)
        raise sdk.APIError(f"batched request {result.status} after {result.attempts} attempt(s): {reason}",
                           self._http_response(0).request, body=None)

    def _http_response(self, status: int) -> Any:
        """An HTTP response of the SDK's own HTTP library (httpx or httpx2), as its exceptions carry."""
        http_client = self.client._client
        request = http_client.build_request("POST", str(self.client.base_url))
        http = importlib.import_module(type(request).__module__.partition(".")[0])
        return http.Response(status or 200, request=request)


# An error's type or code -> the HTTP status the provider answers it with (OpenAI's and Anthropic's words).
_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "invalid_api_key": 401,
           "permission_error": 403, "permission_denied": 403, "not_found_error": 404, "model_not_found": 404,
           "request_too_large": 413, "rate_limit_error": 429, "rate_limit_exceeded": 429,
           "insufficient_quota": 429, "api_error": 500, "server_error": 500, "overloaded_error": 529}


def _status_of(code: str, body: dict) -> int:
    """The status a failed line was answered with: batch results keep the body, not the status."""
    if code.startswith("http_") and code[5:].isdigit():
        return int(code[5:])
    error = got if isinstance(got := body.get("error"), dict) else {}
    for word in (code, error.get("code"), error.get("type")):
        if word in _STATUS:
            return _STATUS[word]
    return 400  # a line the provider refused without saying more


def _not_given(value: Any) -> bool:
    """The SDKs' markers for an argument not given (NOT_GIVEN, Omit), which they leave out."""
    return type(value).__name__ in ("NotGiven", "Omit")


def _plain(value: Any) -> Any:
    """A value as the JSON the SDK would send: pydantic objects dumped, tuples and iterables listed."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not _not_given(v)}
    if isinstance(value, (str, bytes, int, float, bool)) or value is None:
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_unset=True)
    if hasattr(value, "__iter__"):
        return [_plain(v) for v in value]
    return value
