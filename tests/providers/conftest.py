"""The one list of provider cases every contract test runs over (dlt's destination cases): a
provider's name, a model, and what it can do, as flags the tests read instead of naming providers.
A new provider adds one case here (see docs/adding-a-provider.md)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class ProviderCase:
    provider: str
    model: str
    reasoning_budget: bool  # takes reasoning.budget_tokens (else only an effort level)
    expired_status: str  # the provider's status word for a batch whose window closed
    partial_on_expiry: bool  # an expired batch still returns the lines it finished
    unknown_model_code: str  # the code of lines sent with a model the provider does not know
    live: bool = True  # has a live (one call per request) path

    def __str__(self) -> str:
        return self.provider


CASES = (
    ProviderCase("openai", "gpt-4o-mini", reasoning_budget=False, expired_status="expired", partial_on_expiry=True,
                 unknown_model_code="model_not_found"),
    ProviderCase("groq", "llama-3.1-8b-instant", reasoning_budget=False, expired_status="expired",
                 partial_on_expiry=True, unknown_model_code="model_not_found"),
    ProviderCase("anthropic", "claude-haiku-4-5", reasoning_budget=True, expired_status="ended",
                 partial_on_expiry=True, unknown_model_code="not_found_error"),
    ProviderCase("gemini", "gemini-2.5-flash", reasoning_budget=True, expired_status="JOB_STATE_EXPIRED",
                 partial_on_expiry=False, unknown_model_code="batch_rejected"),
    ProviderCase("mistral", "mistral-small-latest", reasoning_budget=False, expired_status="TIMEOUT_EXCEEDED",
                 partial_on_expiry=True, unknown_model_code="batch_rejected"),
    ProviderCase("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo", reasoning_budget=False,
                 expired_status="EXPIRED", partial_on_expiry=True, unknown_model_code="model_not_available"),
    ProviderCase("vertex", "gemini-2.5-flash", reasoning_budget=True, expired_status="JOB_STATE_EXPIRED",
                 partial_on_expiry=True, unknown_model_code="batch_rejected"),
)


@pytest.fixture(params=CASES, ids=str)
def case(request) -> ProviderCase:
    return request.param
