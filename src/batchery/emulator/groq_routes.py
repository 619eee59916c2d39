"""Groq's Files + Batches API: the OpenAI-compatible routes again, under ``/openai/v1``.

Groq's SDK joins ``/openai/v1/...`` to its base URL, so the service is given the SDK base path
(``/groq``) and mounts the OpenAI routes beneath it, with its own files, batches and stats.
Differences from OpenAI that the routes honour: ``completion_window`` may be any duration from
``24h`` to ``7d`` (research §8). Lines, statuses, expiry and cancel are OpenAI's.
"""

from __future__ import annotations

from typing import Any

from .openai_routes import OpenAICompatible

API_PATH = "/openai/v1"
# "Durations from `24h` to `7d` are supported" [SDK docstring], in hours or in days.
WINDOWS = tuple(f"{h}h" for h in range(24, 7 * 24 + 1)) + tuple(f"{d}d" for d in range(1, 8))


class GroqService(OpenAICompatible):
    """The OpenAI-compatible service mounted at ``prefix + /openai/v1`` with Groq's windows."""

    def __init__(self, *, prefix: str, **config: Any) -> None:
        super().__init__(prefix=prefix + API_PATH, windows=WINDOWS, **config)
