"""Which line outcomes deserve another attempt. The engine applies this; adapters only name codes.

A line is retried (in a new batch, up to `max_attempts` sends in all) when its outcome says the
provider did not really answer: the batch expired or the provider cancelled it before the line
ran, the line never came back, or the provider failed for a reason that passes (rate limits,
overload, server errors, a full queue). Everything else is final: an invalid request, a content
policy refusal, a cancel the user asked for.
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
)


def retryable_statuses(user_cancelled: bool) -> tuple[str, ...]:
    return RETRYABLE_STATUSES if user_cancelled else (*RETRYABLE_STATUSES, SYSTEM_CANCELLED)
