"""The emulator as a real HTTP server: app assembly, a background-thread runner and ``serve``.

Tests use :class:`Emulator` as a context manager; it binds a free port on 127.0.0.1 and runs
uvicorn in a daemon thread, so the official SDKs talk to it over genuine HTTP.
"""

from __future__ import annotations

import importlib
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import ClassVar
from urllib.parse import parse_qs

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ConfigError
from ..limits import LIMITS
from .clock import Clock
from .fake_model import Behaviour
from .faults import FaultPlan
from .lifecycle import Service, Timing
from .live import Live, check_limits
from .responses import ApiError, JSONResponse
from .state import Stats

STARTUP_TIMEOUT = 10.0


# Headers (or query parameters) that carry a key in some provider's SDK: Bearer (OpenAI, Groq,
# Mistral, Together, Anthropic >= 2.0), x-api-key (Anthropic <= 1.x), x-goog-api-key / ?key= (Gemini).
_KEY_HEADERS = (b"x-api-key", b"x-goog-api-key")


def _key(scope: Scope) -> str:
    """The API key a request carries, in whichever provider's style ("" when it has none)."""
    headers = dict(scope["headers"])
    auth = headers.get(b"authorization", b"")
    if auth[:7].lower() == b"bearer " and auth[7:].strip():
        return auth[7:].strip().decode(errors="replace")
    for name in _KEY_HEADERS:
        if headers.get(name, b"").strip():
            return headers[name].strip().decode(errors="replace")
    return (parse_qs(scope.get("query_string", b"").decode(errors="replace")).get("key") or [""])[0]


class AuthAndRequestId:
    """ASGI middleware: require an API key (any value, in any provider's style; with ``api_key``
    set, that value only) under the API prefixes and stamp every response with ``x-request-id``
    (the SDK exposes it as ``_request_id``). A wrong key gets the provider's own refusal
    (``refusals``: prefix -> response maker). The key's value is never logged."""

    def __init__(self, app: ASGIApp, protected: Iterable[str], open_paths: Iterable[str] = (),
                 api_key: str | None = None, refusals: dict[str, Callable[[], Response]] | None = None) -> None:
        self.app = app
        self.protected = tuple(protected)
        self.open_paths = tuple(open_paths)  # upload sessions, authorised by their own unguessable id
        self.api_key = api_key
        self.refusals = refusals or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ("req_" + secrets.token_hex(12)).encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id)]}
            await send(message)

        path: str = scope["path"]
        guarded = any(path == p or path.startswith(p + "/") for p in self.protected)
        if guarded and not (self.open_paths and path.startswith(self.open_paths)):
            key = _key(scope)
            if not key:
                error = ApiError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.", code="invalid_api_key")
                await error.response()(scope, receive, send_with_id)
                return
            if self.api_key is not None and key != self.api_key:
                refuse = next(r for p, r in self.refusals.items() if path == p or path.startswith(p + "/"))
                await refuse()(scope, receive, send_with_id)
                return
        await self.app(scope, receive, send_with_id)


def build_app(services: Iterable[Service], stats: Stats, live: Live | None = None, api_key: str | None = None) -> ASGIApp:
    services = list(services)

    async def stats_route(request: Request) -> Response:
        return JSONResponse(stats.snapshot())

    def shape(path: str) -> str | None:
        """The error body shape of the service that owns ``path`` (OpenAI's outside every service)."""
        return next((s.error_shape for s in services if path == s.prefix or path.startswith(s.prefix + "/")), None)

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return exc.response(shape(request.url.path))

    async def http_error(request: Request, exc: Exception) -> Response:
        """Unknown routes / wrong methods get the provider's envelope too, so SDK errors stay readable."""
        status = getattr(exc, "status_code", 500)
        unknown = status in (404, 405)
        message = f"Unknown request URL: {request.method} {request.url.path}." if unknown else str(
            getattr(exc, "detail", None) or "Error")
        return await api_error(request, ApiError(status, message, code="unknown_url" if unknown else None))

    app = Starlette(
        routes=[Route("/_emulator/stats", stats_route), *(s.mount() for s in services)],
        exception_handlers={ApiError: api_error, HTTPException: http_error},
    )
    refusals = {s.prefix: s.invalid_key_response for s in services}
    return AuthAndRequestId(live.wrap(app) if live else app, [s.prefix for s in services],
                            [p for s in services for p in s.open_paths], api_key, refusals)


class Emulator:
    """Local Batch API emulator (OpenAI Files + Batches under ``/v1``) on a real socket.

    ``processing_seconds``: time from create to ``completed`` (0: done at the first read).
    ``completion_window_seconds``: ``expires_at - created_at``; set it below processing time to
    force expiry. ``cancel_seconds``: time spent in ``cancelling``. ``clock``: e.g. ManualClock.
    ``faults``: a :class:`~.faults.FaultPlan` or its spec string (``"http_429=0.1,lost_create=1"``)
    to misbehave on purpose, deterministically from its seed; honoured by every service, each with
    its own budgets and random streams.
    ``rpm``/``tpm``: rate limits of the live endpoints, per provider (see :mod:`.live`); ``latency``:
    real seconds each live answer waits before it is sent.
    ``behaviour``: the fake models' knobs (answer quality per candidate, noise and position bias
    per judge; see :class:`~.fake_model.Behaviour`), shared by every service.
    ``api_key``: accept only this key (default: any non-empty one); any other gets the provider's
    own refusal (Gemini: 400 INVALID_ARGUMENT, reason API_KEY_INVALID; Anthropic: 401
    authentication_error; the OpenAI-shaped services: 401 invalid_api_key).
    """

    # provider -> (module, class, SDK base path). Each provider's routes live under their own path
    # (several providers use /v1/files); the SDK's base_url is the server URL plus that path.
    SERVICES: ClassVar[dict[str, tuple[str, str, str]]] = {
        "openai": ("batchery.emulator.openai_routes", "OpenAICompatible", "/v1"),
        "anthropic": ("batchery.emulator.anthropic_routes", "AnthropicMessageBatches", "/anthropic"),
        "mistral": ("batchery.emulator.mistral_routes", "MistralService", "/mistral"),
        "gemini": ("batchery.emulator.gemini_routes", "GeminiService", "/gemini"),
        "together": ("batchery.emulator.together_routes", "TogetherService", "/together"),
        "groq": ("batchery.emulator.openai_routes", "GroqService", "/groq"),
        "vertex": ("batchery.emulator.vertex_routes", "VertexService", "/vertex"),  # and its Cloud Storage
    }

    def __init__(self, host: str = "127.0.0.1", port: int = 0, processing_seconds: float = 0.0,
                 completion_window_seconds: float = 86400, cancel_seconds: float = 0.0,
                 clock: Clock | None = None, data_dir: str | Path | None = None,
                 max_batch_lines: int | None = None, faults: FaultPlan | str | None = None,
                 rpm: int | None = None, tpm: int | None = None, latency: float = 0.0,
                 behaviour: Behaviour | None = None, api_key: str | None = None) -> None:
        self.host, self.port = host, port
        self.faults = FaultPlan.coerce(faults)  # parse first: a bad spec fails before any side effect
        check_limits(rpm, tpm, latency)
        self.clock = clock or Clock()
        self._own_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="batchery-emulator-")) if data_dir is None else Path(data_dir)
        self._stats = Stats()
        timing = Timing(float(processing_seconds), float(completion_window_seconds), float(cancel_seconds))
        self.behaviour = behaviour if behaviour is not None else Behaviour()
        self.services = {}
        for name, (module, cls, base) in self.SERVICES.items():
            service_class = getattr(importlib.import_module(module), cls)
            self.services[name] = service_class(
                provider=name, prefix=base, data_dir=self.data_dir / name, clock=self.clock,
                stats=self._stats, timing=timing, max_lines=max_batch_lines or LIMITS[name].max_requests,
                behaviour=self.behaviour, faults=self.faults)
        self.live = Live(services=self.services, clock=self.clock, stats=self._stats, rpm=rpm, tpm=tpm,
                         latency=latency)
        self.app = build_app(self.services.values(), self._stats, self.live, api_key)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- addresses and introspection -------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def base_url(self, provider: str = "openai") -> str:
        """What to pass as the SDK's ``base_url`` for ``provider``."""
        return self.url + self.SERVICES[provider][2]

    def stats(self) -> dict:
        return self._stats.snapshot()

    # -- running ---------------------------------------------------------------------------------

    def _bind(self) -> socket.socket:
        # proto must say TCP: asyncio only sets TCP_NODELAY on such sockets, and without it every
        # keep-alive response stalls ~40 ms on Nagle + delayed ACK.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except (OSError, OverflowError, ValueError) as exc:  # in use, not an address of this machine, ...
            sock.close()
            if self._own_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"the emulator cannot listen on {self.host}:{self.port}: {reason}") from None
        sock.listen(2048)
        self.port = sock.getsockname()[1]
        return sock

    def _make_server(self, quiet: bool) -> uvicorn.Server:
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off",
            log_config=None if quiet else uvicorn.config.LOGGING_CONFIG, timeout_graceful_shutdown=2,
        )
        return uvicorn.Server(config)

    def start(self) -> Emulator:
        """Serve from a daemon thread; returns once the socket accepts connections."""
        if self._thread is not None:
            return self
        sock = self._bind()
        self._server = server = self._make_server(quiet=True)
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="batchery-emulator", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the emulator server failed to start")
            time.sleep(0.002)  # polling for readiness, not waiting a fixed time
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def run_forever(self, announce: bool = True) -> None:
        """Serve in the calling thread until interrupted (Ctrl-C), printing the URLs first."""
        sock = self._bind()
        if announce:
            print(f"batchery emulator listening on {self.url}", flush=True)
            for name in self.SERVICES:
                print(f"  {name}: base_url={self.base_url(name)}", flush=True)
            if rpm_tpm := {k: v for k, v in (("rpm", self.live.rpm), ("tpm", self.live.tpm)) if v}:
                print(f"  live rate limits per provider: {rpm_tpm}", flush=True)
            if self.faults:
                print(f"  faults: {self.faults} (stats: {self.url}/_emulator/stats)", flush=True)
        self._server = self._make_server(quiet=False)
        try:
            self._server.run(sockets=[sock])
        finally:
            self._server = None
            if self._own_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def serve(host: str = "127.0.0.1", port: int = 8765, processing_seconds: float = 0.0,
          completion_window_seconds: float = 86400, cancel_seconds: float = 0.0,
          faults: FaultPlan | str | None = None, rpm: int | None = None, tpm: int | None = None,
          latency: float = 0.0, behaviour: Behaviour | None = None) -> None:
    """Run the emulator in the foreground (for ``batchery emulator``), printing where it listens.

    ``faults`` is a spec string such as ``"http_429=0.1,lost_create=1,seed=7"`` (grammar in
    :mod:`batchery.emulator.faults`); a bad spec raises ValueError before the socket is bound."""
    emulator = Emulator(host=host, port=port, processing_seconds=processing_seconds,
                        completion_window_seconds=completion_window_seconds, cancel_seconds=cancel_seconds,
                        faults=faults, rpm=rpm, tpm=tpm, latency=latency, behaviour=behaviour)
    emulator.run_forever()
