"""What a live response says about rate limits: the providers' headers and retry hints.

OpenAI, Groq, Together and Mistral send ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``;
Anthropic sends ``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``; a 429 carries
``retry-after`` (seconds), OpenAI's ``retry-after-ms``, or for Gemini a RetryInfo ``retryDelay``
("1.5s") in the error body.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import orjson

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def rate_limits(headers: Mapping[str, str]) -> tuple[float | None, float | None, float | None, float | None]:
    """(limit requests, remaining requests, limit tokens, remaining tokens) per minute, where sent."""
    get = headers.get
    if get("anthropic-ratelimit-requests-limit") is not None or get("anthropic-ratelimit-tokens-limit") is not None:
        prefix = "anthropic-ratelimit-{}-{}"
        names = [prefix.format(kind, what) for kind in ("requests", "tokens") for what in ("limit", "remaining")]
    else:
        names = [f"x-ratelimit-{what}-{kind}" for kind in ("requests", "tokens") for what in ("limit", "remaining")]
    values = [_number(get(name)) for name in names]
    return values[0], values[1], values[2], values[3]


def duration(text: str) -> float | None:
    """Seconds in a duration such as "20ms", "1.5s", "6m0s" (OpenAI's reset and Gemini's retryDelay)."""
    parts = _DURATION.findall(text or "")
    if not parts:
        return None
    return sum(float(n) * _UNIT[unit] for n, unit in parts)


def retry_after(headers: Mapping[str, str], body: bytes) -> float | None:
    """How long the provider asked us to wait before retrying, if it said."""
    if (ms := _number(headers.get("retry-after-ms"))) is not None:
        return ms / 1000
    if (seconds := _number(headers.get("retry-after"))) is not None:
        return seconds
    if b"retryDelay" in body:  # Gemini: google.rpc.RetryInfo in the error details
        try:
            details = orjson.loads(body)["error"]["details"]
            return next(duration(d["retryDelay"]) for d in details if "retryDelay" in d)
        except (orjson.JSONDecodeError, KeyError, TypeError, StopIteration):
            return None
    return None
