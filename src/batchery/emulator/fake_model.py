"""A deterministic stand-in for a chat model.

It answers a Chat Completions request body with a complete ``chat.completion`` object whose text is
derived from the request, so tests can predict and compare answers without any network. The same
body always gives the same answer; ``max_tokens`` / ``max_completion_tokens`` truncate it (with
``finish_reason: "length"``); ``response_format`` json_schema / json_object yields JSON content.
It is on the hot path of the 1M-line benchmark, so it avoids anything heavier than one hash.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from .schema_values import generate

PREVIEW_CHARS = 200
CHARS_PER_TOKEN = 4


def request_seed(body: dict) -> int:
    """A stable 64-bit fingerprint of the request (key order does not matter)."""
    raw = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    # two fast checksums instead of a cryptographic hash: this runs once per line (hot path)
    return (zlib.crc32(raw) << 32) | zlib.adler32(raw)


def _text_of(content: Any) -> str:
    """Text of a message's content, which is either a string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _tokens(chars: int) -> int:
    return max(1, (chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN)


MISSING_MODEL_PREFIX = "missing-"


def model_exists(model: str) -> bool:
    """The emulator's catalogue: every model exists except names starting with "missing-", which
    each provider's routes reject the way that provider rejects an unknown model."""
    return not model.startswith(MISSING_MODEL_PREFIX)


def reply(prompt: str, schema: dict | None = None, max_tokens: int | None = None,
          input_chars: int = 0) -> tuple[str, int, int, bool]:
    """The provider-neutral answer: (text, input tokens, output tokens, truncated).

    Every provider's routes call this with the last user message's text, so the same request
    gets the same answer from all six emulated providers. With a JSON schema the text is JSON
    valid against it, seeded by the prompt (not by the provider's wire format).
    """
    if schema is not None:
        seed = zlib.crc32(prompt.encode()) << 32 | zlib.adler32(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
        text = orjson.dumps(generate(schema, seed)).decode()
    else:
        text = "Emulated answer to: " + prompt[:PREVIEW_CHARS]
    output_tokens = _tokens(len(text))
    truncated = isinstance(max_tokens, int) and output_tokens > max_tokens
    if truncated:
        text, output_tokens = text[: max_tokens * CHARS_PER_TOKEN], max_tokens
    return text, _tokens(input_chars or len(prompt)), output_tokens, truncated


def _answer(body: dict, seed: int) -> str:
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    messages = body.get("messages") or []
    last_user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), None)
    prompt = _text_of(last_user.get("content")) if last_user else ""
    if kind == "json_schema":
        spec = fmt.get("json_schema") or {}
        return reply(prompt, spec.get("schema") or {"type": "object"})[0]
    text = "Emulated answer to: " + prompt[:PREVIEW_CHARS]
    if kind == "json_object":
        return orjson.dumps({"answer": text, "score": seed % 11}).decode()
    return text


def complete_chat(body: dict, created: int = 0, seed: int | None = None) -> dict:
    """Answer a (valid) Chat Completions request body with a full ``chat.completion`` object.

    ``seed`` may be passed when the caller already hashed the request; ``created`` is the
    timestamp to report (the emulator passes its clock's time).
    """
    if seed is None:
        seed = request_seed(body)
    content = _answer(body, seed)
    completion_tokens = _tokens(len(content))
    finish = "stop"
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and completion_tokens > limit:
        content = content[: limit * CHARS_PER_TOKEN]
        completion_tokens, finish = limit, "length"
    prompt_chars = sum(len(_text_of(m.get("content"))) for m in body.get("messages") or () if isinstance(m, dict))
    prompt_tokens = _tokens(prompt_chars)
    n = body.get("n") if isinstance(body.get("n"), int) and body.get("n", 1) > 1 else 1
    choice = {
        "message": {"role": "assistant", "content": content, "refusal": None, "annotations": []},
        "logprobs": None,
        "finish_reason": finish,
    }
    return {
        "id": f"chatcmpl-{seed:016x}",
        "object": "chat.completion",
        "created": created,
        "model": body.get("model", ""),
        "choices": [{"index": i, **choice} for i in range(n)],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens * n,
            "total_tokens": prompt_tokens + completion_tokens * n,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_batchery_emulator",
    }
