"""The fast path's own HTTP/1.1 client (live/h1.py) on the wire, against the real emulator: answers
in chunks, an answer cut half-way (retried), a kept connection the server dropped (sent again at
once), a forward proxy and a CONNECT tunnel with credentials, TLS verified against a CA the test
makes (and refused against certifi's bundle, which the client uses by default). The proxy and the
TLS front are tiny relays on 127.0.0.1 in this file; everything they relay comes from the emulator."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import ssl
import threading
from collections.abc import Callable

import certifi
import pytest
from conftest import MODELS, results

from batchery.emulator import Emulator, ManualClock
from batchery.engine import prepare_job
from batchery.inputs import iter_objects
from batchery.live import LivePolicy, LiveRunner
from batchery.live.http import ssl_context
from batchery.providers import get_provider

SECRET = "sk-h1-secret-0123456789"


async def _no_wait(seconds: float) -> None:
    return None


def _run(store, base_url: str, name: str, n: int = 3, provider: str = "openai", **policy):
    adapter = get_provider(provider, base_url=base_url, api_key=SECRET)
    requests = [{"id": f"r{i}", "prompt": f"Wire question {i}", "max_tokens": 20} for i in range(n)]
    job, _ = prepare_job(store, name, adapter, MODELS[provider], iter_objects(requests), name, reuse=False)
    return LiveRunner(store, adapter, job, LivePolicy(sleep=_no_wait, **policy)).run()


def _texts(store, name: str) -> list[str]:
    return [r.text for r in results(store, name)]


# -- the emulator, its live answers reshaped on their way out (ASGI middleware: uvicorn frames them) ---


class _Reshape:
    """Live answers sent in three chunks with no Content-Length (uvicorn then uses chunked transfer
    coding), and the first `cut` answers stopped half-way (uvicorn then closes the connection)."""

    def __init__(self, app, cut: int = 0) -> None:
        self.app, self.cut = app, cut

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        messages: list[dict] = []

        async def keep(message):
            messages.append(message)

        await self.app(scope, receive, keep)
        start, body = messages[0], b"".join(m.get("body", b"") for m in messages[1:])
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        await send({**start, "headers": headers})
        if self.cut > 0:
            self.cut -= 1
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            return  # mid-answer: uvicorn drops the connection
        third = len(body) // 3 + 1
        for i in range(0, len(body), third):
            await send({"type": "http.response.body", "body": body[i:i + third], "more_body": True})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def reshaped():
    emulator = Emulator(clock=ManualClock())
    emulator.app = reshape = _Reshape(emulator.app)
    emulator.start()
    yield emulator, reshape
    emulator.stop()


def test_chunked_answers_and_an_answer_cut_half_way_are_read_and_retried(store, reshaped):
    emulator, reshape = reshaped
    reshape.cut = 1
    progress = _run(store, emulator.base_url("openai"), "chunks", n=3, concurrency=1)

    assert progress.done and progress.items == {"succeeded": 3}
    assert progress.live["retried"] == 1 and progress.live["sent"] == 4  # the cut answer was asked again
    assert all(t and t.startswith("Emulated answer") for t in _texts(store, "chunks"))
    assert emulator.stats()["live_requests"]["openai"] == 4


# -- relays on 127.0.0.1: a proxy (forward and CONNECT) and a TLS front ----------------------------


class _Relays:
    """asyncio servers in one background thread. Each connection is piped to an upstream; the proxy
    records the request lines and Proxy-Authorization it sees."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[asyncio.Server] = []
        self.seen: list[tuple[str, str | None]] = []
        self.one_answer_per_connection = False  # the proxy drops a kept connection without a word

    def serve(self, handler: Callable, tls: ssl.SSLContext | None = None) -> int:
        async def start():
            server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
            self.servers.append(server)
            return server.sockets[0].getsockname()[1]

        return asyncio.run_coroutine_threadsafe(start(), self.loop).result(5)

    def stop(self) -> None:
        async def shutdown():  # every relay ends (its sockets closed) before the loop stops
            for server in self.servers:
                server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    @staticmethod
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def front(self, upstream_port: int) -> Callable:
        """Pass every connection through to upstream_port (after TLS, when the server has it)."""

        async def handle(reader, writer):
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
            await asyncio.gather(self.pipe(reader, up_writer), self.pipe(up_reader, writer))

        return handle

    async def proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        auth = next((line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("proxy-authorization:")),
                    None)
        self.seen.append((lines[0], auth))
        method, where, _ = lines[0].split(" ")
        host, port = (where.split("/")[2] if method != "CONNECT" else where).rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        elif self.one_answer_per_connection:
            # This request is answered; when the client sends another on the same connection, it is closed.
            length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
            up_writer.write(head + await reader.readexactly(length))
            answer = asyncio.ensure_future(self.pipe(up_reader, writer))
            await reader.read(1)
            for closing in (writer, up_writer):
                closing.close()
            answer.cancel()
            return
        else:  # a forward request: sent on as it came (uvicorn takes the absolute target)
            up_writer.write(head)
        await asyncio.gather(self.pipe(reader, up_writer), self.pipe(up_reader, writer))


@pytest.fixture
def relays():
    relays = _Relays()
    yield relays
    relays.stop()


@pytest.fixture
def no_proxy_env(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def test_calls_go_through_the_environments_proxy_with_its_credentials(store, emulator, relays, no_proxy_env):
    proxy_port = relays.serve(relays.proxy)
    no_proxy_env.setenv("HTTP_PROXY", f"http://batchery:p%40ss@127.0.0.1:{proxy_port}")
    progress = _run(store, emulator.base_url("anthropic"), "proxied", n=2, provider="anthropic", concurrency=1)

    assert progress.done and progress.items == {"succeeded": 2}
    target = f"POST {emulator.url}/anthropic/v1/messages HTTP/1.1"
    assert relays.seen == [(target, "Basic " + base64.b64encode(b"batchery:p@ss").decode())]  # one kept connection

    # A proxy that drops a kept connection when the next request comes: sent again on a new one, not a failure.
    relays.seen.clear()
    relays.one_answer_per_connection = True
    progress = _run(store, emulator.base_url("anthropic"), "dropped", n=3, provider="anthropic", concurrency=1)
    assert progress.done and progress.live["sent"] == 3 and progress.live["retried"] == 0
    assert len(relays.seen) == 3


def _certificates(tmp_path):
    """A CA and a certificate for localhost and 127.0.0.1 signed by it (EC keys: quick to make)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, key, issuer: str, issuer_key, ca: bool):
        builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        else:
            builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                            critical=True)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("batchery test CA", ca_key, "batchery test CA", ca_key, True)
    leaf = build("localhost", key, "batchery test CA", ca_key, False)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(pem) + key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "leaf.pem")
    return tmp_path / "ca.pem", server


def test_tls_is_verified_against_certifi_or_ssl_cert_file_also_through_a_connect_tunnel(
        store, emulator, relays, no_proxy_env, tmp_path):
    ca, server_tls = _certificates(tmp_path)
    tls_port = relays.serve(relays.front(emulator.port), tls=server_tls)
    base_url = f"https://localhost:{tls_port}/v1"

    # By default the SDKs' certificates (certifi's bundle), which do not know the test's CA: refused.
    assert len(ssl_context().get_ca_certs()) == len(ssl.create_default_context(cafile=certifi.where()).get_ca_certs())
    progress = _run(store, base_url, "untrusted", n=1, concurrency=1, max_attempts=1)
    assert progress.stopped and "ConnectError: TLS with localhost" in progress.stopped
    assert "CERTIFICATE_VERIFY_FAILED" in progress.stopped and SECRET not in progress.stopped

    # SSL_CERT_FILE naming the CA (as httpx reads it): verified, directly and through the proxy's tunnel.
    no_proxy_env.setenv("SSL_CERT_FILE", str(ca))
    assert _run(store, base_url, "direct", n=2, concurrency=1).items == {"succeeded": 2}
    no_proxy_env.setenv("HTTPS_PROXY", f"http://127.0.0.1:{relays.serve(relays.proxy)}")
    progress = _run(store, base_url, "tunnel", n=2, concurrency=2)
    assert progress.done and progress.items == {"succeeded": 2}
    assert {line for line, _ in relays.seen} == {f"CONNECT localhost:{tls_port} HTTP/1.1"}
    assert _texts(store, "tunnel") == _texts(store, "direct")


def test_a_key_headers_cannot_carry_or_an_unsupported_proxy_is_a_clear_error_without_the_key(
        store, emulator, no_proxy_env):
    from batchery.errors import ConfigError

    bad_key = "sk-clé\u2028secret"  # pasted with an accent and a Unicode line separator
    adapter = get_provider("openai", base_url=emulator.base_url("openai"), api_key=bad_key)
    job, _ = prepare_job(store, "badkey", adapter, MODELS["openai"], iter_objects([{"prompt": "hi"}]), "badkey")
    with pytest.raises(ConfigError, match="the Authorization header holds characters HTTP headers cannot carry") as err:
        LiveRunner(store, adapter, job, LivePolicy(sleep=_no_wait)).run()
    assert bad_key not in str(err.value) and "secret" not in str(err.value)

    no_proxy_env.setenv("HTTP_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises(ConfigError, match=r"only http:// proxies .* not socks5://; the SDK path \(--http sdk\)"):
        _run(store, emulator.base_url("openai"), "socks", n=1)
