"""Which failures deserve another attempt. The engine applies this; adapters only name codes.

Three kinds of failure, told apart here and nowhere else:

* **Transient** (rate limits, overload, server errors, a full queue, a lost connection): the
  provider did not really answer. A line failing so is sent again in the same run, up to
  `max_attempts` sends; a provider *call* failing so is retried with backoff.
* **Account** (a wrong or revoked key, no permission, no quota or credit, an unreachable base
  URL): every call fails until the user fixes something outside batchery. Retrying now is
  pointless, so the run stops at once, but nothing becomes final.
* **Final**: the provider rejected the request itself (invalid request, content policy, unknown
  model): sending it again would get the same answer.

Transient and account failures are *recoverable*: a run that ends with such lines does not mark
the job done, and the next run of the same command sends them again, whatever attempts they used.
Expired, missing and provider-cancelled lines are retried up to `max_attempts` sends; past that
they end the job like final failures (a later `--max-attempts` may still resend them).
"""

from __future__ import annotations

DEFAULT_MAX_ATTEMPTS = 3

# Statuses that are always worth another attempt, and the one that is unless the user asked for it.
RETRYABLE_STATUSES = ("expired", "missing")
SYSTEM_CANCELLED = "cancelled"

# Error codes of failed lines (or failed batches) that pass with time, as each provider names them.
TRANSIENT_CODES = (
    # OpenAI, Groq, Together (OpenAI-shaped)
    "rate_limit_exceeded", "server_error", "token_limit_exceeded", "timeout",
    # Anthropic error types
    "rate_limit_error", "overloaded_error", "api_error", "timeout_error",
    # Gemini (google.rpc codes)
    "RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED",
    # HTTP statuses, where a provider gives nothing more specific
    "http_408", "http_429", "http_500", "http_502", "http_503", "http_504", "http_529",
    # batchery's own, for live calls: no answer came, or 429 after 429
    "connection_error", "rate_limited",
)

# Error codes that say the key, account or endpoint is wrong, not the request: a later run fixes them.
ACCOUNT_CODES = (
    # OpenAI, Groq, Together, Mistral
    "invalid_api_key", "insufficient_quota", "billing_hard_limit_reached", "account_deactivated",
    "unauthorized", "permission_denied",
    # Anthropic error types
    "authentication_error", "permission_error", "billing_error",
    # Gemini: google.rpc codes, and ErrorInfo reasons (a bad key is a 400 INVALID_ARGUMENT with
    # reason API_KEY_INVALID, so the reason is the code batchery keeps)
    "UNAUTHENTICATED", "PERMISSION_DENIED", "API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED",
    # HTTP statuses
    "http_401", "http_402", "http_403",
    # batchery's own: a batch create refused for one of the reasons above
    "account_error",
)

# Never final: a run ending with lines failed so leaves the job resumable, and the next run resends them.
RECOVERABLE_CODES = TRANSIENT_CODES + ACCOUNT_CODES

_ACCOUNT_STATUSES = (401, 402, 403)
_TRANSIENT_STATUSES = (408, 429)


def retryable_statuses(user_cancelled: bool) -> tuple[str, ...]:
    return RETRYABLE_STATUSES if user_cancelled else (*RETRYABLE_STATUSES, SYSTEM_CANCELLED)


def call_failure_kind(status: int | None, code: str | None = None) -> str:
    """How a failed provider call is treated: "transient", "account" or "final".

    `status` is the HTTP status (None when no answer came: a network failure); `code` the
    provider's error code, type or reason where it gave one, which wins over the status (OpenAI's
    insufficient_quota comes as a 429, Gemini's bad key as a 400)."""
    if code in ACCOUNT_CODES:
        return "account"
    if status is None or code in TRANSIENT_CODES:
        return "transient"
    if status in _ACCOUNT_STATUSES:
        return "account"
    if status in _TRANSIENT_STATUSES or status >= 500:
        return "transient"
    return "final"
