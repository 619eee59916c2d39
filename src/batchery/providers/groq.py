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

from collections.abc import Iterable

from ..limits import MB, BatchLimits
from .base import BatchProvider
from .openai import OpenAIBatch


class GroqBatch(OpenAIBatch):
    name = "groq"
    limits = BatchLimits(max_requests=50_000, max_bytes=100 * MB, discount=0.25, window="24h to 7d")
    sdk_module, sdk_client = "groq", "Groq"
    live_path = "/openai/v1/chat/completions"
    default_base_url = "https://api.groq.com"
    live_headers = BatchProvider.live_headers  # the key alone: the Groq SDK sends no OpenAI organisation or project

    def _pages(self) -> Iterable:
        """One call: groq 1.7's ``batches.list()`` takes no paging parameters."""
        return self.client.batches.list().data
