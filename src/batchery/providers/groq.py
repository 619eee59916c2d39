"""Groq Batch API adapter on the official ``groq`` SDK.

Groq serves OpenAI's Files + Batches API under ``/openai/v1`` (research §8): the same input line
(``{custom_id, method, url, body}``), batch object, statuses, ``metadata``, per-line output and error
files, and the same Chat Completions body — ``developer`` messages, ``max_completion_tokens``,
``reasoning_effort`` (low/medium/high, on Groq's reasoning models) and ``response_format``
json_schema. So this adapter is :class:`~batchery.providers.openai.OpenAIBatch` on another client,
and ``check`` refuses a reasoning token budget for the same reason (there is no Groq equivalent).

What differs: ``batches.list()`` in groq 1.7 takes no paging parameters and returns one list, so
``find`` sees the batches that list shows (the newest; a batch whose create response was just lost
is among them) and ``poll`` fetches any batch it does not show one by one.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from ..limits import MB, BatchLimits
from .base import LiveRoute, bearer, join_url
from .openai import OpenAIBatch


class GroqBatch(OpenAIBatch):
    name = "groq"
    limits = BatchLimits(max_requests=50_000, max_bytes=100 * MB, discount=0.25, window="24h to 7d")
    key_variables = ("GROQ_API_KEY",)
    url_variable = "GROQ_BASE_URL"
    price_id = "groq"
    emulator_service = "groq"

    @functools.cached_property
    def _sdk(self) -> Any:
        import groq  # lazy: only the provider in use, on first use, pays for its SDK import

        return groq

    @functools.cached_property
    def client(self) -> Any:
        return self._sdk.Groq(api_key=self.api_key, base_url=self.base_url, max_retries=0)  # the engine retries

    live_path = "/openai/v1/chat/completions"
    default_base_url = "https://api.groq.com"

    def live_route(self, model: str) -> LiveRoute | None:
        return LiveRoute(join_url(self.base_url or self.default_base_url, self.live_path), bearer(self.api_key))

    def open_live_client(self):
        return self._sdk.AsyncGroq(api_key=self.client.api_key, base_url=self.client.base_url, max_retries=0)

    def _listed(self) -> Iterable:
        """One call: groq 1.7's ``batches.list()`` takes no paging parameters."""
        return self.client.batches.list().data
