"""The fast path of live calls: one small HTTP/1.1 client per run (h1.py), JSON by orjson, no SDK in between.

An official SDK spends about 800 µs of CPU per call (building typed options, httpx's request
machinery, parsing into models the executor throws away); the executor only needs the status, the
headers and the body bytes. This client POSTs the body a provider adapter describes
(``BatchProvider.live_route``) and hands back a LiveResponse, so the executor's pacing, retries and
outcomes are the same on both paths (the SDK path stays: ``LivePolicy(http="sdk")``, ``--http sdk``).

Fidelity kept from the SDKs: the same URL and auth headers (OpenAI's organisation and project from
OPENAI_ORG_ID / OPENAI_PROJECT_ID), a User-Agent naming batchery, the SDKs' timeouts (5 s to
connect, 600 s per read), TLS verified against the same certificates as httpx (certifi, or
SSL_CERT_FILE / SSL_CERT_DIR), the proxy from HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY
(resolved once per session: all calls go to one host), and network failures as batchery's
TransientError through the one error boundary (BatchProvider.http_error, retry.classify).
"""

from __future__ import annotations

import os
import platform
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from ..errors import BatcheryError, ConfigError
from ..providers.base import LiveResponse, LiveRoute
from .h1 import Client, HTTPFailure, Target, target

if TYPE_CHECKING:
    from ..providers.base import BatchProvider

HTTP_MODES = ("fast", "sdk")
CONNECT_TIMEOUT = 5.0  # seconds, as the OpenAI and Anthropic SDKs
READ_TIMEOUT = 600.0  # seconds per read, as the OpenAI and Anthropic SDKs


def user_agent() -> str:
    return f"batchery/{_installed_version()} (Python {platform.python_version()})"


def _installed_version() -> str:
    """batchery's version from its distribution's folder on sys.path (batchery-<version>.dist-info),
    the first one found, as importlib.metadata finds it, without importing importlib.metadata: that
    import (email, zipfile, csv, ...) alone was a sixth of a live run's start-up."""
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith("batchery-") and name.endswith((".dist-info", ".egg-info")):
                return name.removeprefix("batchery-").rsplit(".", 1)[0].split("-")[0]
    return "0+unknown"


def transport_error(provider: BatchProvider, exc: BaseException) -> BatcheryError:
    """A live call that got no (complete) answer, as batchery's error. The one place the fast path
    classifies a failure: the adapter's error boundary (http_error, retry.classify), as for its SDK.
    Only the exception's type and text are kept: they name the host, never the headers (the key)."""
    return provider.http_error("live call", None, message=f"{type(exc).__name__}: {exc}".rstrip(": "))


def ssl_context() -> Any:
    """TLS verification against the certificates httpx (hence every SDK) uses: SSL_CERT_FILE or
    SSL_CERT_DIR when set, else certifi's bundle."""
    import ssl

    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if cafile and os.path.isfile(cafile):
        return ssl.create_default_context(cafile=cafile)
    if capath and os.path.isdir(capath):
        return ssl.create_default_context(capath=capath)
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for this URL (None: direct), as httpx's trust_env reads it
    (urllib.request's getproxies and proxy_bypass). On Linux those read only *_proxy variables, so
    with none set the import of urllib.request (http.client, email: 0.02 s) is skipped."""
    if sys.platform not in ("darwin", "win32") and not any(k.lower().endswith("_proxy") for k in os.environ):
        return None
    import urllib.request

    parts = urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


class FastHTTP:
    """Sends one adapter's live calls through one h1.Client, opened on the first call (inside the
    running loop) with as many connections as there are workers."""

    def __init__(self, provider: BatchProvider, *, connections: int = 32,
                 connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT) -> None:
        self.provider = provider
        self.connections = connections
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._targets: dict[str, Target | None] = {}
        self._client: Client | None = None

    def _target(self, model: str) -> Target | None:
        if model not in self._targets:
            route = self.provider.live_route(model)
            self._targets[model] = None if route is None else self._prepare(route)
        return self._targets[model]

    def _prepare(self, route: LiveRoute) -> Target:
        """The request head for a route, through the proxy the environment names (read once per
        session and route: all calls go to one host)."""
        proxy = proxy_for(route.url)
        headers = {"User-Agent": user_agent(), "Accept": "application/json",
                   "Content-Type": "application/json", **route.headers}
        try:
            return target(route.url, headers, proxy)
        except ValueError as exc:
            raise ConfigError(f"{exc}; the SDK path (--http sdk) may handle it") from None

    async def send(self, body: dict, model: str) -> LiveResponse:
        """One POST; an answer of any status is returned, no answer raises TransientError."""
        to = self._target(model)
        if to is None:  # an adapter without a fast path: its SDK sends
            return await self.provider.send(body, model)
        if self._client is None:
            self._client = Client(limit=self.connections, connect_timeout=self.connect_timeout,
                                  read_timeout=self.read_timeout, ssl_context=ssl_context() if to.tls else None)
        try:
            status, headers, data = await self._client.post(to, orjson.dumps(self.provider.live_payload(body, model)))
        except (HTTPFailure, OSError) as exc:  # refused, reset, timed out, a body cut short, TLS
            raise transport_error(self.provider, exc) from None
        return LiveResponse(status, headers, data)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
