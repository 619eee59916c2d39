"""The providers' live (synchronous) generation endpoints, behind per-provider rate limits.

Paths (under each provider's SDK base path, see ``Emulator.SERVICES``): OpenAI ``/v1/chat/completions``,
Groq ``/groq/openai/v1/chat/completions``, Together ``/together/v1/chat/completions``, Mistral
``/mistral/v1/chat/completions``, Anthropic ``/anthropic/v1/messages`` and Gemini
``/gemini/{v1,v1beta}/models/{model}:generateContent``. Answers come from the same builders as the
batch routes, so a request gets the same text live and in a batch; errors use each provider's envelope.

Rate limits (``rpm``, ``tpm``; ``None`` = unlimited): one token bucket per provider and kind, refilled
continuously at limit/60 per second and holding one second's worth (at least 1), the way OpenAI
enforces per-minute limits over short periods. A request costs 1 request and its estimated prompt
tokens (chars/4) plus its max output tokens (:data:`DEFAULT_MAX_TOKENS` when unset), as OpenAI counts
TPM. A request above the bucket's size is admitted when the bucket is full and leaves it in debt; one
above the whole per-minute limit is refused for good (429, ``x-should-retry: false``). A refused
request takes nothing. Buckets read the emulator's clock, so tests step time instead of sleeping.
Rate-limit headers go on every live answer when a limit is set: ``x-ratelimit-{limit,remaining,reset}-
{requests,tokens}`` (OpenAI style, also sent for Groq, Together and Mistral) or
``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``; Gemini sends none. Remaining counts
what the bucket holds now, reset is the time until it is full again.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import orjson
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .clock import Clock
from .fake_model import CHARS_PER_TOKEN, _text_of
from .responses import JSONResponse
from .state import Stats

if TYPE_CHECKING:
    from .lifecycle import Service

DEFAULT_MAX_TOKENS = 256
_EPS = 1e-9


# -- token buckets -----------------------------------------------------------------------------------


class Bucket:
    __slots__ = ("capacity", "level", "limit", "rate", "stamp")

    def __init__(self, limit: int, now: float) -> None:
        self.limit, self.rate = limit, limit / 60.0
        self.capacity = max(1.0, self.rate)
        self.level, self.stamp = self.capacity, now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait(self, amount: float) -> float:
        """Seconds until ``amount`` can be taken (0: now); more than the capacity needs a full bucket."""
        missing = min(amount, self.capacity) - self.level
        return missing / self.rate if missing > _EPS else 0.0

    def remaining(self) -> int:
        return max(0, int(self.level + _EPS))

    def reset(self) -> float:
        return max(0.0, (self.capacity - self.level) / self.rate)

    def used(self) -> int:
        """The per-minute usage the bucket's state stands for (what OpenAI's messages call "Used")."""
        return min(self.limit, max(0, round(self.limit * (1 - self.level / self.capacity))))


class Refusal(NamedTuple):
    kind: str  # "requests" | "tokens"
    bucket: Bucket
    amount: int
    wait: float | None  # None: larger than the per-minute limit, never admitted


class Limiter:
    __slots__ = ("requests", "tokens")

    def __init__(self, rpm: int | None, tpm: int | None, now: float) -> None:
        self.requests = Bucket(rpm, now) if rpm else None
        self.tokens = Bucket(tpm, now) if tpm else None

    def admit(self, cost: int, now: float) -> Refusal | None:
        """Charge one request of ``cost`` tokens, or say why not (charging nothing)."""
        worst = None
        for kind, bucket, amount in (("requests", self.requests, 1), ("tokens", self.tokens, cost)):
            if bucket is None:
                continue
            bucket.refill(now)
            if amount > bucket.limit:
                return Refusal(kind, bucket, amount, None)
            wait = bucket.wait(amount)
            if wait and (worst is None or worst.wait is None or wait > worst.wait):
                worst = Refusal(kind, bucket, amount, wait)
        if worst is not None:
            return worst
        if self.requests is not None:
            self.requests.level -= 1
        if self.tokens is not None:
            self.tokens.level -= cost
        return None

    def peek(self, now: float) -> None:
        for bucket in (self.requests, self.tokens):
            if bucket is not None:
                bucket.refill(now)


def go_duration(seconds: float) -> str:
    """A duration as OpenAI's headers and messages write it (Go style): ``20ms``, ``1.5s``, ``6m0s``."""
    ms = math.ceil(seconds * 1000 - 1e-6)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    minutes, ms = divmod(ms, 60_000)
    secs = f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms / 1000:.3f}".rstrip("0") + "s"
    return f"{minutes}m{secs}" if minutes else secs


def _limit_headers(limiter: Limiter, name: str, reset: Callable[[Bucket], str]) -> dict[str, str]:
    """The limit, remaining and reset headers of each bucket; ``name`` words them from kind and field."""
    headers = {}
    for kind, bucket in (("requests", limiter.requests), ("tokens", limiter.tokens)):
        if bucket is not None:
            for what, value in (("limit", str(bucket.limit)), ("remaining", str(bucket.remaining())),
                                ("reset", reset(bucket))):
                headers[name.format(kind=kind, what=what)] = value
    return headers


def _retry_headers(wait: float | None, ms: bool) -> dict[str, str]:
    if wait is None:
        return {"x-should-retry": "false"}
    headers = {"retry-after": str(max(1, math.ceil(wait - 1e-6)))}
    if ms:
        headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000 - 1e-6)))
    return headers


# -- the providers' rate-limit dialects ------------------------------------------------------------


class OpenAIStyle:
    """Headers and 429 body of OpenAI; Groq and Together answer the same here (their envelopes are OpenAI's)."""

    UNITS: ClassVar[dict[str, str]] = {"requests": "requests per min (RPM)", "tokens": "tokens per min (TPM)"}

    @staticmethod
    def headers(limiter: Limiter, now: float) -> dict[str, str]:
        return _limit_headers(limiter, "x-ratelimit-{what}-{kind}", lambda bucket: go_duration(bucket.reset()))

    @classmethod
    def refuse(cls, model: str, r: Refusal, headers: dict[str, str]) -> Response:
        where = f"Rate limit reached for {model} in organization org-emulator on {cls.UNITS[r.kind]}"
        if r.wait is None:
            message = (f"Request too large for {model} in organization org-emulator on {cls.UNITS[r.kind]}: "
                       f"Limit {r.bucket.limit}, Requested {r.amount}. The input or output tokens must be "
                       "reduced in order to run successfully.")
        else:
            message = (f"{where}: Limit {r.bucket.limit}, Used {r.bucket.used()}, Requested {r.amount}. "
                       f"Please try again in {go_duration(r.wait)}.")
        message += " Visit https://platform.openai.com/account/rate-limits to learn more."
        body = {"error": {"message": message, "type": r.kind, "param": None, "code": "rate_limit_exceeded"}}
        return JSONResponse(body, status_code=429, headers={**headers, **_retry_headers(r.wait, ms=True)})


class MistralStyle(OpenAIStyle):
    """OpenAI-style headers; Mistral's own 429 envelope (as its API sends it, code 1300)."""

    @staticmethod
    def refuse(model: str, r: Refusal, headers: dict[str, str]) -> Response:
        body = {"object": "error", "message": "Rate limit exceeded", "type": "rate_limited", "param": None,
                "code": "1300"}
        return JSONResponse(body, status_code=429, headers={**headers, **_retry_headers(r.wait, ms=False)})


class AnthropicStyle:
    @staticmethod
    def headers(limiter: Limiter, now: float) -> dict[str, str]:
        def reset(bucket: Bucket) -> str:  # the moment it is full again, RFC 3339
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(now + bucket.reset())))

        return _limit_headers(limiter, "anthropic-ratelimit-{kind}-{what}", reset)

    @staticmethod
    def refuse(model: str, r: Refusal, headers: dict[str, str]) -> Response:
        message = (f"This request would exceed the rate limit for your organization (emulator) of {r.bucket.limit} "
                   f"{r.kind} per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. "
                   "You can see the response headers for current usage. Please reduce the prompt length or the "
                   "maximum tokens requested, or try again later.")
        body = {"type": "error", "error": {"type": "rate_limit_error", "message": message},
                "request_id": "req_" + secrets.token_hex(12)}
        return JSONResponse(body, status_code=429, headers={**headers, **_retry_headers(r.wait, ms=False)})


class GeminiStyle:
    QUOTAS: ClassVar[dict[str, tuple[str, str]]] = {
        "requests": ("generate_content_requests", "GenerateRequestsPerMinutePerProjectPerModel"),
        "tokens": ("generate_content_input_token_count", "GenerateContentInputTokensPerModelPerMinute")}

    @staticmethod
    def headers(limiter: Limiter, now: float) -> None:
        return None

    @classmethod
    def refuse(cls, model: str, r: Refusal, headers: None) -> Response:
        metric, quota_id = cls.QUOTAS[r.kind]
        metric = "generativelanguage.googleapis.com/" + metric
        message = ("You exceeded your current quota, please check your plan and billing details. For more "
                   "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n"
                   f"* Quota exceeded for metric: {metric}, limit: {r.bucket.limit}, model: {model}")
        details: list[dict] = [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
            {"quotaMetric": metric, "quotaId": quota_id, "quotaDimensions": {"model": model},
             "quotaValue": str(r.bucket.limit)}]}]
        if r.wait is not None:
            ms = max(1, math.ceil(r.wait * 1000 - 1e-6))
            delay = f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms / 1000:.3f}s"
            message += f"\nPlease retry in {delay}."
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
        body = {"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED", "details": details}}
        return JSONResponse(body, status_code=429, headers=None if r.wait is not None else {"x-should-retry": "false"})


# -- requests ----------------------------------------------------------------------------------------


def message_chars(messages: list) -> int:
    return sum(len(_text_of(m.get("content"))) for m in messages if isinstance(m, dict))


def token_cost(chars: int, max_tokens: Any) -> int:
    """What a request costs in the TPM bucket: its prompt estimate plus the output it may produce."""
    output = max_tokens if type(max_tokens) is int and max_tokens > 0 else DEFAULT_MAX_TOKENS
    return -(-chars // CHARS_PER_TOKEN) + output


def check_limits(rpm: int | None, tpm: int | None, latency: float) -> None:
    """Raise ValueError for limits the emulator cannot serve (before anything is set up)."""
    for name, value in (("rpm", rpm), ("tpm", tpm)):
        if value is not None and (type(value) is not int or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not latency >= 0:
        raise ValueError(f"latency must be >= 0 seconds, got {latency!r}")


# A parsed live request, by the service's ``live(path, body)``: (model, token cost, build the answer), or
# the error response to send instead. Services validate as their batch routes do and answer with the
# same builders.
Parsed = tuple[str, int, Callable[[], dict]] | Response
_JSON = (b"content-type", b"application/json")


async def _json_body(receive: Receive) -> Any:
    """The request's body parsed; None when it is not JSON (each service answers that in its words)."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        return None


# Each provider's rate-limit dialect (headers and 429 body).
STYLES: dict[str, Any] = {"openai": OpenAIStyle, "groq": OpenAIStyle, "together": OpenAIStyle, "mistral": MistralStyle,
          "anthropic": AnthropicStyle, "gemini": GeminiStyle}


class Live:
    """The live endpoints of every service (``service.prefix + service.live_path``, answered by
    ``service.live``), with one :class:`Limiter` per provider when limits are set.

    They sit in front of the Starlette app as plain ASGI (:meth:`wrap`): one dict lookup by path,
    no Request object, no routing table, because a benchmark pushes thousands of calls a second here.
    """

    def __init__(self, *, services: Mapping[str, Service], clock: Clock, stats: Stats, rpm: int | None = None,
                 tpm: int | None = None, latency: float = 0.0) -> None:
        self.clock, self.stats, self.latency = clock, stats, float(latency)
        self.rpm, self.tpm = rpm, tpm
        now = clock.now()
        self.limiters = {p: Limiter(rpm, tpm, now) for p in services} if rpm or tpm else {}
        self._exact: dict[str, ASGIApp] = {}
        self._templates: list[tuple[str, str, ASGIApp]] = []  # (start, end, endpoint)
        for name, service in services.items():
            if service.live_path is None:
                continue
            path, endpoint = service.prefix + service.live_path, self._endpoint(name, service.live)
            if "{" in path:  # a template (Gemini's holds the API version and the model): matched by its ends
                self._templates.append((path[:path.index("{")], path[path.rindex("}") + 1:], endpoint))
            else:
                self._exact[path] = endpoint

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` with the live endpoints in front of it; everything else goes through to it."""
        exact, templates = self._exact, self._templates

        async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["method"] == "POST":
                path = scope["path"]
                endpoint = exact.get(path) or next(
                    (e for start, end, e in templates if path.startswith(start) and path.endswith(end)), None)
                if endpoint is not None:
                    await endpoint(scope, receive, send)
                    return
            await app(scope, receive, send)

        return dispatch

    def _endpoint(self, provider: str, parse: Callable[[str, Any], Parsed]) -> ASGIApp:
        stats, clock, limiter, style = self.stats, self.clock, self.limiters.get(provider), STYLES[provider]

        async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
            parsed = parse(scope["path"], await _json_body(receive))
            headers = None
            if limiter is not None:
                now = clock.now()
                if isinstance(parsed, Response):
                    limiter.peek(now)
                    parsed.headers.update(style.headers(limiter, now) or {})
                else:
                    refusal = limiter.admit(parsed[1], now)
                    headers = style.headers(limiter, now)
                    if refusal is not None:
                        stats.add(provider, "live_rate_limited")
                        await style.refuse(parsed[0], refusal, headers)(scope, receive, send)
                        return
            stats.add(provider, "live_requests")
            if isinstance(parsed, Response):
                await parsed(scope, receive, send)
                return
            if self.latency:
                await asyncio.sleep(self.latency)
            body = orjson.dumps(parsed[2]())
            raw_headers = [_JSON, (b"content-length", str(len(body)).encode())]
            if headers:
                raw_headers += [(k.encode(), v.encode()) for k, v in headers.items()]
            await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
            await send({"type": "http.response.body", "body": body})

        return endpoint
