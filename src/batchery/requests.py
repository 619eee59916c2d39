"""The provider-neutral request: validation, canonical form and the content-addressed key.

Validation is hand-written rather than a pydantic model because every input line passes
through it: at a million lines per job, a few microseconds per line is the budget.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from .errors import InputError

ROLES = frozenset({"system", "developer", "user", "assistant"})
KEY_PREFIX = "bq-"
_ALLOWED = frozenset(
    {"id", "messages", "prompt", "system", "model", "max_tokens", "temperature", "top_p", "stop",
     "response_format", "reasoning", "metadata"}
)


def _fail(where: str, message: str) -> InputError:
    return InputError(f"{where}: {message}")


def _number(obj: dict, name: str, where: str, low: float, high: float) -> None:
    value = obj.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(where, f"field '{name}' must be a number, got {type(value).__name__}")
    if not low <= value <= high:
        raise _fail(where, f"field '{name}' must be between {low:g} and {high:g}, got {value}")


def _messages(value: Any, where: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise _fail(where, "field 'messages' must be a non-empty list of {role, content}")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise _fail(where, f"messages[{i}] must be an object with 'role' and 'content'")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise _fail(where, f"messages[{i}].role must be one of {sorted(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise _fail(where, f"messages[{i}].content must be a string")
        out.append({"role": role, "content": content})
    return out


def parse_request(obj: Any, default_model: str | None, where: str) -> tuple[str | None, Any, dict]:
    """Validate one input object and return (row id, user metadata, canonical request).

    The canonical request has the prompt folded into messages, the model resolved and only the
    fields that change the answer, so that two requests asking the same thing share one key.
    """
    if not isinstance(obj, dict):
        raise _fail(where, f"expected a JSON object, got {type(obj).__name__}")
    unknown = obj.keys() - _ALLOWED
    if unknown:
        raise _fail(where, f"unknown field(s) {sorted(unknown)}; allowed: {sorted(_ALLOWED)}")
    row_id = obj.get("id")
    if row_id is not None and not isinstance(row_id, (str, int)):
        raise _fail(where, "field 'id' must be a string or an integer")

    if "messages" in obj and obj["messages"] is not None:
        if obj.get("prompt") is not None:
            raise _fail(where, "give either 'messages' or 'prompt', not both")
        messages = _messages(obj["messages"], where)
    elif isinstance(obj.get("prompt"), str):
        messages = [{"role": "user", "content": obj["prompt"]}]
    elif "prompt" in obj:
        raise _fail(where, "field 'prompt' must be a string")
    else:
        raise _fail(where, "a request needs 'messages' or 'prompt'")

    model = obj.get("model") or default_model
    if not isinstance(model, str) or not model:
        raise _fail(where, "no model: give --model or a 'model' field")
    canonical: dict[str, Any] = {"model": model, "messages": messages}

    system = obj.get("system")
    if system is not None:
        if not isinstance(system, str):
            raise _fail(where, "field 'system' must be a string")
        canonical["system"] = system
    max_tokens = obj.get("max_tokens")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise _fail(where, "field 'max_tokens' must be a positive integer")
        canonical["max_tokens"] = max_tokens
    _number(obj, "temperature", where, 0, 2)
    _number(obj, "top_p", where, 0, 1)
    for name in ("temperature", "top_p"):
        if obj.get(name) is not None:
            canonical[name] = obj[name]
    stop = obj.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _fail(where, "field 'stop' must be a string or a list of strings")
        canonical["stop"] = stop
    schema = obj.get("response_format")
    if schema is not None:
        if not isinstance(schema, dict):
            raise _fail(where, "field 'response_format' must be a JSON schema object")
        canonical["response_format"] = schema
    reasoning = obj.get("reasoning")
    if reasoning is not None:
        canonical["reasoning"] = _reasoning(reasoning, where)
    return row_id, obj.get("metadata"), canonical


EFFORTS = ("low", "medium", "high")


def _reasoning(value: Any, where: str) -> dict:
    """{"effort": low|medium|high} (OpenAI-style) or {"budget_tokens": N} (Anthropic/Gemini-style)."""
    if not isinstance(value, dict) or len(value) != 1 or not value.keys() <= {"effort", "budget_tokens"}:
        raise _fail(where, "field 'reasoning' must be {\"effort\": \"low\"|\"medium\"|\"high\"} or {\"budget_tokens\": N}")
    if "effort" in value and value["effort"] not in EFFORTS:
        raise _fail(where, f"reasoning.effort must be one of {list(EFFORTS)}")
    budget = value.get("budget_tokens", 1)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise _fail(where, "reasoning.budget_tokens must be a non-negative integer")
    return dict(value)


def canonical_bytes(canonical: dict) -> bytes:
    """Stable serialisation: sorted keys, no whitespace."""
    return orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)


def request_key(provider: str, body: bytes) -> str:
    """custom_id valid for every provider (^[a-zA-Z0-9_-]{1,64}$): prefix + 128-bit content hash.

    The provider is part of the hash: the same prompt sent to two providers is two answers.
    """
    digest = hashlib.blake2b(body, digest_size=16, person=provider.encode()[:16])
    return KEY_PREFIX + digest.hexdigest()
