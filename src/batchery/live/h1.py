"""A small HTTP/1.1 client on asyncio for live calls: POST bytes, get (status, headers, body) back.

Why our own: live mode makes thousands of identical small POSTs a second to one host, and all it
needs back is the status, the headers and the body bytes. aiohttp costs 0.4 s to import (its
connector builds TLS contexts at import) and about twice this client's CPU per call; the SDKs'
httpx several times more. This is the part of HTTP those calls use, on asyncio's Protocol API
(no stream objects, one write per request, the response parsed where it lands):

* keep-alive connections per origin, reused last-in first-out, at most ``limit`` in all; a
  request that meets a kept connection the server had already closed (no byte of an answer came
  back) is sent once more on a new connection, as browsers and httpx's pool do;
* responses framed by Content-Length, chunked transfer coding (trailers skipped) or the end of
  the connection; 1xx interim responses skipped; ``Connection: close`` and HTTP/1.0 honoured;
* TLS with the SSL context the caller gives (live/http.py: certifi's bundle, as the SDKs);
* a timeout to connect (TCP, proxy CONNECT and TLS handshake together) and one per read: the
  most seconds to wait for the next bytes of an answer, as httpx counts them;
* an HTTP proxy for http:// URLs (absolute request targets) and for https:// ones through a
  CONNECT tunnel, with Basic credentials from the proxy URL; the caller resolves which proxy
  once per session (live/http.py), not per request.

Every failure to get a whole answer raises an ``HTTPFailure`` (or an OSError from the socket,
ssl.SSLError among them); the caller maps them into its one error boundary. Messages name the
host, never a header (a key).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

MAX_HEAD = 64 * 1024  # bytes of status line and headers before an answer is called malformed


class HTTPFailure(Exception):
    """No (whole) answer: the connection broke, timed out or spoke something other than HTTP/1.1."""


class ConnectError(HTTPFailure):
    """No connection: refused, unreachable, a name that does not resolve, TLS that fails."""


class ConnectTimeout(ConnectError):
    pass


class ReadTimeout(HTTPFailure):
    pass


class Disconnected(HTTPFailure):
    """The server closed the connection before the answer was complete."""


class ProtocolError(HTTPFailure):
    """The answer is not HTTP/1.x as this client reads it."""


class ProxyError(HTTPFailure):
    """The proxy refused the tunnel (CONNECT answered other than 2xx)."""


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]  # names lower-case; a repeated header keeps its last value
    body: bytes


class Target(NamedTuple):
    """One URL, parsed once: where to connect and the request's first lines up to its headers."""

    origin: tuple[str, str, int]  # (scheme, host, port): the pool's key
    host: str
    port: int
    tls: bool
    head: bytes  # b"POST <target> HTTP/1.1\r\nHost: ...\r\n<headers>"
    via: tuple[str, int] | None  # the proxy to connect to
    tunnel: bytes | None  # the CONNECT request, when the proxy tunnels (https://)


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query) of an http:// or https:// URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http:// or https:// URL: {url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port, path


def _authority(host: str, port: int, scheme: str | None = None) -> str:
    """host:port as a Host header (the port left out when it is the scheme's) or a CONNECT target."""
    name = f"[{host}]" if ":" in host else host
    return name if port == {"https": 443, "http": 80}.get(scheme or "") else f"{name}:{port}"


def _header_lines(headers: dict[str, str]) -> bytes:
    """Header lines as bytes. A value is never quoted in an error: it may be a key."""
    lines = []
    for name, value in headers.items():
        if any(c in name or c in value for c in "\r\n"):  # no header smuggling through a value
            raise ValueError(f"the {name} header holds a line break")
        try:
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        except UnicodeEncodeError:
            raise ValueError(f"the {name} header holds characters HTTP headers cannot carry") from None
    return b"".join(lines)


def target(url: str, headers: dict[str, str], proxy: str | None = None) -> Target:
    """The request head for POSTs to ``url`` with ``headers``, through ``proxy`` (an http:// URL) if given."""
    scheme, host, port, path = split_url(url)
    authority = _authority(host, port, scheme)
    headers = {"Host": authority, **headers}
    via = tunnel = None
    if proxy is not None:
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")  # "host:port" means http://
        if proxy_parts.scheme != "http" or not proxy_parts.hostname:
            raise ValueError(f"only http:// proxies are supported here, not {proxy_parts.scheme}://")
        via = (proxy_parts.hostname, proxy_parts.port or 80)
        auth = {}
        if proxy_parts.username is not None:
            import base64  # only for a proxy's credentials

            user_pass = f"{unquote(proxy_parts.username)}:{unquote(proxy_parts.password or '')}"
            auth = {"Proxy-Authorization": "Basic " + base64.b64encode(user_pass.encode()).decode()}
        if scheme == "https":
            to = _authority(host, port)
            tunnel = f"CONNECT {to} HTTP/1.1\r\n".encode("latin-1") + _header_lines({"Host": to, **auth}) + b"\r\n"
        else:  # a forward proxy: the whole URL as the request target
            path = f"{scheme}://{authority}{path}"
            headers.update(auth)
    head = f"POST {path} HTTP/1.1\r\n".encode("latin-1") + _header_lines(headers)
    return Target((scheme, host, port), host, port, scheme == "https", head, via, tunnel)


_HEAD, _LENGTH, _CHUNKED, _TO_CLOSE = range(4)  # what a connection is reading


class _Connection(asyncio.Protocol):
    """One kept-alive connection; reads one answer at a time into ``waiter``. Bytes are parsed where
    they land: an answer that arrives in one piece (the common case) is sliced, not copied around."""

    def __init__(self, loop: asyncio.AbstractEventLoop, busy: set[_Connection]) -> None:
        self.loop, self.busy = loop, busy
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False  # it has carried a request before (it may meet a keep-alive race)
        self.waiter: asyncio.Future | None = None
        self.got_bytes = False  # some of the answer came
        self.last = 0.0  # when it last sent or received (loop time), for the read timeout
        self._no_body = False
        self._reading = _HEAD
        self._buffer = bytearray()  # head or chunked bytes not parsed yet
        self._answer: tuple[int, dict[str, str], bool] = (0, {}, False)  # (status, headers, keep alive)
        self._parts: list[bytes] = []  # body so far
        self._left = 0  # body bytes still to come (_LENGTH)

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # bytes nobody asked for: the connection is no longer usable
            self.close()
            return
        self.last = self.loop.time()
        self.got_bytes = True
        try:
            if self._reading == _HEAD:
                if self._buffer:
                    self._buffer += data
                    data, self._buffer = bytes(self._buffer), bytearray()
                self._head(data)
            elif self._reading == _LENGTH:
                self._body(data)
            elif self._reading == _CHUNKED:
                self._buffer += data
                self._chunks()
            else:
                self._parts.append(data)
        except ProtocolError as exc:
            self.fail(exc)

    def eof_received(self) -> bool:
        if self.waiter is not None and self._reading == _TO_CLOSE:
            self._finish(b"".join(self._parts), reusable=False)  # the body ran to the end of the connection
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is None:
            return
        if self._reading == _TO_CLOSE:
            self._finish(b"".join(self._parts), reusable=False)
        else:
            where = "in the middle of the answer" if self.got_bytes else "before answering"
            self.fail(Disconnected(f"the server closed the connection {where}" + (f" ({exc})" if exc else "")))

    # -- one exchange ----------------------------------------------------------------------------

    def send(self, data: bytes, no_body: bool = False) -> asyncio.Future:
        self.waiter = waiter = self.loop.create_future()
        self.got_bytes, self._no_body, self._reading = False, no_body, _HEAD
        self.last = self.loop.time()
        self.busy.add(self)
        self.transport.write(data)  # type: ignore[union-attr]
        return waiter

    def _head(self, data: bytes) -> None:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > MAX_HEAD:
                raise ProtocolError(f"an answer whose headers pass {MAX_HEAD:,} bytes")
            self._buffer += data
            return
        lines = data[:end].decode("latin-1").split("\r\n")
        status_line = lines[0]
        code = status_line[9:12]
        if not status_line.startswith("HTTP/1.") or not code.isdigit():
            raise ProtocolError(f"not an HTTP/1.x answer: {status_line[:80]!r}")
        status = int(code)
        rest = data[end + 4:]
        if status < 200:  # interim (100 Continue, 103 Early Hints): the answer follows
            if rest:
                self._head(rest)
            return
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"a malformed header line: {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        keep = "close" not in connection and (status_line[5:8] != "1.0" or "keep-alive" in connection)
        self._answer = (status, headers, keep)
        if self._no_body or status in (204, 304):
            self._finish(b"", reusable=not rest)
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._reading = _CHUNKED
            self._buffer += rest
            self._chunks()
        elif (length := headers.get("content-length")) is not None:
            if not length.isdigit():
                raise ProtocolError(f"a bad Content-Length: {length[:40]!r}")
            self._reading, self._left = _LENGTH, int(length)
            self._body(rest)
        else:
            self._reading, self._answer = _TO_CLOSE, (status, headers, False)
            self._parts.append(rest)

    def _body(self, data: bytes) -> None:
        left = self._left - len(data)
        if left > 0:
            self._parts.append(data)
            self._left = left
            return
        if left == 0 and not self._parts:  # the whole body in one piece
            self._finish(data)
            return
        self._parts.append(data[:self._left] if left < 0 else data)
        self._finish(b"".join(self._parts), reusable=left == 0)

    def _chunks(self) -> None:
        buffer = self._buffer
        while True:
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                if len(buffer) > MAX_HEAD:
                    raise ProtocolError("a chunk size line without end")
                return
            size_text = bytes(buffer[:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"a bad chunk size: {size_text[:40]!r}") from None
            if size == 0:  # the last chunk; then trailers, if any, up to an empty line
                end = line_end + 4 if buffer[line_end:line_end + 4] == b"\r\n\r\n" else buffer.find(b"\r\n\r\n", line_end + 2) + 4
                if end >= 4:
                    self._finish(b"".join(self._parts), reusable=len(buffer) == end)
                return
            start = line_end + 2
            if len(buffer) < start + size + 2:
                return
            if buffer[start + size:start + size + 2] != b"\r\n":
                raise ProtocolError("a chunk longer than its size says")
            self._parts.append(bytes(buffer[start:start + size]))
            del buffer[:start + size + 2]

    def _finish(self, body: bytes, reusable: bool = True) -> None:
        status, headers, keep = self._answer
        if not (keep and reusable):
            self.close()
        waiter = self._settle()
        if not waiter.done():  # (done: cancelled meanwhile, the answer is no one's)
            waiter.set_result(Answer(status, headers, body))

    def fail(self, exc: BaseException) -> None:
        """End the exchange in progress with ``exc`` and drop the connection."""
        self.close()
        if self.waiter is not None and not (waiter := self._settle()).done():
            waiter.set_exception(exc)

    def _settle(self) -> asyncio.Future:
        waiter, self.waiter = self.waiter, None
        self.busy.discard(self)
        self._parts = []
        self._buffer.clear()
        assert waiter is not None
        return waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Client:
    """Keep-alive connections per origin; ``post`` sends one request and returns its whole answer."""

    def __init__(self, *, limit: int = 32, connect_timeout: float = 5.0, read_timeout: float = 600.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.ssl_context = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._busy: set[_Connection] = set()  # waiting for an answer
        self._slots = asyncio.Semaphore(limit)
        self._watchdog: asyncio.TimerHandle | None = None

    async def post(self, to: Target, body: bytes) -> Answer:
        data = b"".join((to.head, b"Content-Length: ", str(len(body)).encode(), b"\r\n\r\n", body))
        async with self._slots:
            while True:
                connection = self._take(to.origin) or await self._connect(to)
                kept, connection.reused = connection.reused, True
                try:
                    answer = await connection.send(data)
                except Disconnected:
                    if kept and not connection.got_bytes:
                        continue  # a kept connection the server had closed meanwhile: a new one
                    raise
                except BaseException:
                    connection.close()  # cancelled or timed out: its answer, if any, is no one's
                    raise
                finally:
                    if connection.closed:
                        self._open.discard(connection)
                if not connection.closed:
                    self._idle.setdefault(to.origin, []).append(connection)
                return answer

    def _take(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
            self._open.discard(connection)
        return None

    def _watch(self) -> None:
        """The read timeout of every connection, checked by one timer (a timer per request would cost
        more than the rest of a call): an exchange quiet for read_timeout fails with ReadTimeout."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for connection in [c for c in self._busy if now - c.last >= self.read_timeout]:
            connection.fail(ReadTimeout(f"no answer for {self.read_timeout:g} s"))
        self._watchdog = loop.call_at(now + min(1.0, self.read_timeout / 4), self._watch)

    async def _connect(self, to: Target) -> _Connection:
        loop = asyncio.get_running_loop()
        if self._watchdog is None:
            self._watch()
        connection = _Connection(loop, self._busy)
        host, port = to.via or (to.host, to.port)
        where = f"{host}:{port}" + (" (the proxy)" if to.via else "")
        try:
            async with asyncio.timeout(self.connect_timeout):
                if to.tls and to.via is None:
                    await loop.create_connection(lambda: connection, host, port, ssl=self._tls(),
                                                 server_hostname=to.host)
                else:
                    await loop.create_connection(lambda: connection, host, port)
                if to.tunnel is not None:
                    await self._open_tunnel(loop, connection, to)
        except TimeoutError:
            connection.close()
            raise ConnectTimeout(f"cannot connect to {where} within {self.connect_timeout:g} s") from None
        except OSError as exc:
            connection.close()
            if isinstance(exc, ssl.SSLError):
                raise ConnectError(f"TLS with {to.host}:{to.port} failed: {exc}") from None
            # "Connection refused" rather than asyncio's wording; a name that does not resolve says so
            errno = exc.errno or 0
            reason = os.strerror(errno) if errno > 0 else (exc.strerror or str(exc))
            raise ConnectError(f"cannot connect to {where}: {reason}") from None
        except BaseException:
            connection.close()
            raise
        self._open.add(connection)
        return connection

    async def _open_tunnel(self, loop: asyncio.AbstractEventLoop, connection: _Connection, to: Target) -> None:
        assert to.tunnel is not None and to.via is not None and connection.transport is not None
        answer = await connection.send(to.tunnel, no_body=True)
        if not 200 <= answer.status < 300:
            raise ProxyError(f"the proxy {to.via[0]}:{to.via[1]} refused a tunnel to {to.host}:{to.port} "
                             f"({answer.status})")
        transport = await loop.start_tls(connection.transport, connection, self._tls(), server_hostname=to.host)
        if transport is None:  # (asyncio's signature allows it; a closed connection fails before)
            raise Disconnected(f"the tunnel to {to.host}:{to.port} closed during the TLS handshake")
        connection.transport = transport

    def _tls(self) -> ssl.SSLContext:
        if self.ssl_context is None:
            self.ssl_context = ssl.create_default_context()
        return self.ssl_context

    async def aclose(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for connection in self._open:
            connection.close()
        self._open.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports close
