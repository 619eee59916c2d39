"""Which failures deserve another attempt: the one rule, which the engine, the live executor and
every adapter's error boundary apply. Adapters only name their provider's codes (`ErrorCodes` on
the adapter class) and turn their SDK's exceptions into batchery's (providers/base.py).

Four kinds of failure (`Failure`), told apart here and nowhere else:

* **Transient** (no answer at all, HTTP 408 and 5xx, overload such as Anthropic's 529
  ``overloaded_error``, a full queue): the provider did not really answer. A line failing so is sent
  again in the same run, up to `max_attempts` sends; a provider *call* failing so is retried with
  backoff.
* **Rate limited** (HTTP 429 that is not about quota): transient too, but the answer says how long
  to wait; the live executor cools every worker down for that long.
* **Account** (a wrong or revoked key, no permission, no quota or credit): every call fails until
  the user fixes something outside batchery. Retrying now is pointless, so the run stops at once,
  but nothing becomes final.
* **Final**: the provider rejected the request itself (invalid request, content policy, unknown
  model): sending it again would get the same answer.

A provider's own code wins over the HTTP status (OpenAI's insufficient_quota comes as a 429,
Gemini's bad key as a 400). Transient, rate-limited and account failures are *recoverable*: a run
that ends with such lines does not mark the job done, and the next run of the same command sends
them again, whatever attempts they used. Expired, missing and provider-cancelled lines are retried
up to `max_attempts` sends; past that they end the job like final failures (a later
`--max-attempts` may still resend them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import orjson

from .states import OutcomeStatus

DEFAULT_MAX_ATTEMPTS = 3

# Statuses that are always worth another attempt, and the one that is unless the user asked for it.
RETRYABLE_STATUSES = (OutcomeStatus.EXPIRED, OutcomeStatus.MISSING)
SYSTEM_CANCELLED = OutcomeStatus.CANCELLED


class Failure(StrEnum):
    """What a failed provider call or line is, for deciding what to do about it."""

    TRANSIENT = "transient"  # try again after a backoff
    RATE_LIMITED = "rate_limited"  # try again after the wait the provider asked for (429)
    ACCOUNT = "account"  # stop: the key, permission, quota or billing needs fixing first
    FINAL = "final"  # the request itself was refused: the same answer would come again

    @property
    def recoverable(self) -> bool:
        return self is not Failure.FINAL


@dataclass(frozen=True)
class ErrorCodes:
    """A provider's own error codes (or types, or reasons) that are transient or about the account.
    Each adapter declares its own (`BatchProvider.error_codes`); `GENERIC` holds batchery's own."""

    transient: frozenset[str] = frozenset()
    account: frozenset[str] = frozenset()

    def __or__(self, other: ErrorCodes) -> ErrorCodes:
        return ErrorCodes(self.transient | other.transient, self.account | other.account)

    @property
    def recoverable(self) -> frozenset[str]:
        return self.transient | self.account


# HTTP statuses: no answer (None), a timeout, a rate limit or a server error pass with time (529 is
# Anthropic's overload); 401/402/403 are about the key or account.
_TRANSIENT_STATUSES = frozenset({408, 429, *range(500, 600)})
_ACCOUNT_STATUSES = frozenset({401, 402, 403})

# batchery's own codes, whatever the provider: `http_<status>` where a provider gave nothing more
# specific (stored by the live executor), and what the live executor and engine name themselves.
GENERIC = ErrorCodes(
    transient=frozenset({"connection_error", "rate_limited", *(f"http_{s}" for s in _TRANSIENT_STATUSES)}),
    account=frozenset({"account_error", *(f"http_{s}" for s in _ACCOUNT_STATUSES)}),
)


def classify(status: int | None, code: str | None = None, codes: ErrorCodes = GENERIC) -> Failure:
    """The one rule: what a failure is, from the HTTP status (None when no answer came: a network
    failure) and the provider's error code, type or reason where it gave one (`codes`: the
    provider's, see `codes_for`). A code about the account wins over everything (OpenAI's
    insufficient_quota comes as a 429, Gemini's bad key as a 400)."""
    codes = GENERIC | codes
    if code in codes.account:
        return Failure.ACCOUNT
    if status is None:
        return Failure.TRANSIENT
    if status == 429:
        return Failure.RATE_LIMITED
    if code in codes.transient:
        return Failure.TRANSIENT
    if status in _ACCOUNT_STATUSES:
        return Failure.ACCOUNT
    if status in _TRANSIENT_STATUSES:
        return Failure.TRANSIENT
    return Failure.FINAL


def classify_http(status: int | None, body: bytes = b"", headers: Mapping[str, str] | None = None,
                  codes: ErrorCodes = GENERIC) -> Failure:
    """`classify` for a raw HTTP answer, for callers below the SDKs (a plain HTTP client): the code
    is read from the error envelopes providers send (`error_code_of`). `headers` are not needed to
    classify; the wait a rate-limited answer asks for is `live.signals.retry_after(headers, body)`,
    and `BatchProvider.http_error` builds the exception to raise."""
    return classify(status, error_code_of(body), codes)


def error_code_of(body: bytes) -> str | None:
    """The error code in a provider's error body: OpenAI-style ``{"error": {"code"|"type"}}``,
    Anthropic's ``{"error": {"type"}}``, Google's ``{"error": {"status", "details": [{"reason"}]}}``
    (an ErrorInfo reason first: a bad key is INVALID_ARGUMENT with reason API_KEY_INVALID), or a
    top-level ``type``/``code`` (Mistral)."""
    try:
        obj = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    error = got if isinstance(got := obj.get("error"), dict) else obj
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and isinstance(detail.get("reason"), str):
            return detail["reason"]
    for field in ("code", "type", "status"):
        value = error.get(field)
        if isinstance(value, str) and value and not value.isdigit() and value != "error":
            return value
    return None


def codes_for(provider: str) -> ErrorCodes:
    """Batchery's own codes and those of the adapter registered as `provider` (generic only for a
    name the registry does not know)."""
    from .providers import (  # lazy: adapters import this module
        PROVIDERS,
        provider_class,
    )

    return GENERIC | provider_class(provider).error_codes if provider in PROVIDERS else GENERIC


def transient_codes(provider: str) -> tuple[str, ...]:
    """Codes of failed lines of this provider that are sent again within the same run."""
    return tuple(sorted(codes_for(provider).transient))


def recoverable_codes(provider: str) -> tuple[str, ...]:
    """Codes of failed lines that are never final: a run ending with some leaves the job resumable."""
    return tuple(sorted(codes_for(provider).recoverable))


def retryable_statuses(user_cancelled: bool) -> tuple[str, ...]:
    return RETRYABLE_STATUSES if user_cancelled else (*RETRYABLE_STATUSES, SYSTEM_CANCELLED)
