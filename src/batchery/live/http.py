"""The fast path of live calls: one aiohttp session per run, JSON by orjson, no SDK in between.

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

import asyncio
import os
import platform
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from ..errors import BatcheryError
from ..providers.base import LiveResponse, LiveRoute

if TYPE_CHECKING:
    from ..providers.base import BatchProvider

HTTP_MODES = ("fast", "sdk")
CONNECT_TIMEOUT = 5.0  # seconds, as the OpenAI and Anthropic SDKs
READ_TIMEOUT = 600.0  # seconds per read, as the OpenAI and Anthropic SDKs


def user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("batchery")
    except PackageNotFoundError:
        ours = "0+unknown"
    return f"batchery/{ours} (Python {platform.python_version()}; aiohttp)"


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
    """The proxy the environment names for this URL (None: direct), as httpx's trust_env reads it."""
    import urllib.request

    parts = urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


class FastHTTP:
    """Sends one adapter's live calls. The session is opened on the first call (inside the running
    loop) with as many connections as there are workers."""

    def __init__(self, provider: BatchProvider, *, connections: int = 32,
                 connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT) -> None:
        self.provider = provider
        self.connections = connections
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._routes: dict[str, LiveRoute | None] = {}
        self._session: Any = None
        self._proxy: str | None = None
        self._errors: tuple[type[BaseException], ...] = ()

    def _route(self, model: str) -> LiveRoute | None:
        if model not in self._routes:
            self._routes[model] = self.provider.live_route(model)
        return self._routes[model]

    def _open(self, url: str) -> Any:
        import aiohttp

        self._errors = (aiohttp.ClientError, asyncio.TimeoutError)
        self._proxy = proxy_for(url)
        https = urlsplit(url).scheme == "https"
        connector = aiohttp.TCPConnector(limit=self.connections, ssl=ssl_context() if https else False)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout, sock_read=self.read_timeout)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, trust_env=False,  # the proxy is resolved once, above
            headers={"User-Agent": user_agent(), "Accept": "application/json", "Content-Type": "application/json"})
        return self._session

    async def send(self, body: dict, model: str) -> LiveResponse:
        """One POST; an answer of any status is returned, no answer raises TransientError."""
        route = self._route(model)
        if route is None:  # an adapter without a fast path: its SDK sends
            return await self.provider.send(body, model)
        session = self._session or self._open(route.url)
        data = orjson.dumps(self.provider.live_payload(body, model))
        try:
            async with session.post(route.url, data=data, headers=route.headers, proxy=self._proxy) as response:
                return LiveResponse(response.status, response.headers, await response.read())
        except self._errors as exc:  # refused, reset, timed out, a body cut short
            raise transport_error(self.provider, exc) from None

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
