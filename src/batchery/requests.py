"""The provider-neutral request: validation, canonical form and the content-addressed key.

Validation is hand-written rather than a pydantic model because every input line passes
through it: at a million lines per job, a few microseconds per line is the budget.
"""

from __future__ import annotations

import hashlib
from functools import cache
from typing import Any

import orjson

from .errors import InputError

ROLES = frozenset({"system", "developer", "user", "assistant"})
KEY_PREFIX = "bq-"


def _fail(where: str, message: str) -> InputError:
    return InputError(f"{where}: {message}")


def _number(low: float, high: float):
    def check(value: Any, name: str, where: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(where, f"field '{name}' must be a number, got {type(value).__name__}")
        if not low <= value <= high:
            raise _fail(where, f"field '{name}' must be between {low:g} and {high:g}, got {value}")
        return value

    return check


# Token counts past this are no model's (providers take them as 32-bit integers); a larger one is
# a mistake, and one past 64 bits could not even be written down.
MAX_TOKENS = 2**31 - 1


def _max_tokens(value: Any, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKENS:
        raise _fail(where, f"field 'max_tokens' must be a positive integer (at most {MAX_TOKENS:,})")
    return value


def _system(value: Any, name: str, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, "field 'system' must be a string")
    return value


def _stop(value: Any, name: str, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise _fail(where, "field 'stop' must be a string or a list of strings")
    return value


def _schema(value: Any, name: str, where: str) -> dict:
    if not isinstance(value, dict):
        raise _fail(where, "field 'response_format' must be a JSON schema object")
    # Answers are checked against it, so it must be one.
    from .structured import schema_problem, schema_text

    try:
        problem = schema_problem(schema_text(value))
    except TypeError:  # not JSON at all (an integer past 64 bits): canonical_bytes says so, naming the line
        return value
    if problem:
        raise _fail(where, f"field 'response_format' is {problem}")
    return value


EFFORTS = ("low", "medium", "high")


def _reasoning(value: Any, name: str, where: str) -> dict:
    """{"effort": low|medium|high} (OpenAI-style) or {"budget_tokens": N} (Anthropic/Gemini-style)."""
    if not isinstance(value, dict) or len(value) != 1 or not value.keys() <= {"effort", "budget_tokens"}:
        raise _fail(where, "field 'reasoning' must be {\"effort\": \"low\"|\"medium\"|\"high\"} or {\"budget_tokens\": N}")
    if "effort" in value and value["effort"] not in EFFORTS:
        raise _fail(where, f"reasoning.effort must be one of {list(EFFORTS)}")
    budget = value.get("budget_tokens", 1)
    if isinstance(budget, bool) or not isinstance(budget, int) or not 0 <= budget <= MAX_TOKENS:
        raise _fail(where, f"reasoning.budget_tokens must be a non-negative integer (at most {MAX_TOKENS:,})")
    return dict(value)


# Optional fields that change the answer, each with its validator (returns the canonical value).
_PARAMS = {
    "system": _system,
    "max_tokens": _max_tokens,
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "stop": _stop,
    "response_format": _schema,
    "reasoning": _reasoning,
}
_ALLOWED = frozenset({"id", "messages", "prompt", "model", "metadata", *_PARAMS})


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


def parse_request(obj: Any, default_model: str | None, where: str) -> tuple[str | int | None, bytes | None, dict]:
    """Validate one input object and return (row id, user metadata as JSON, canonical request).

    The canonical request has the prompt folded into messages, the model resolved and only the
    fields that change the answer, so that two requests asking the same thing share one key.
    """
    if not isinstance(obj, dict):
        raise _fail(where, f"expected a JSON object, got {type(obj).__name__}")
    if not obj.keys() <= _ALLOWED:
        raise _fail(where, f"unknown field(s) {sorted(obj.keys() - _ALLOWED)}; allowed: {sorted(_ALLOWED)}")
    row_id = obj.get("id")
    if row_id is not None and (isinstance(row_id, bool) or not isinstance(row_id, (str, int))):
        raise _fail(where, f"field 'id' must be a string or an integer, got {type(row_id).__name__}")

    messages, prompt = obj.get("messages"), obj.get("prompt")
    if messages is not None:
        if prompt is not None:
            raise _fail(where, "give either 'messages' or 'prompt', not both")
        messages = _messages(messages, where)
    elif isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif prompt is not None:
        raise _fail(where, "field 'prompt' must be a string")
    else:
        raise _fail(where, "a request needs 'messages' or 'prompt'")

    model = obj.get("model")
    if model is None:
        model = default_model
    elif not isinstance(model, str) or not model.strip():  # [] or "" must not fall back to --model
        raise _fail(where, f"field 'model' must be a model name, got {model!r:.40}")
    if not isinstance(model, str) or not model:
        raise _fail(where, "no model: give --model or a 'model' field")
    canonical: dict[str, Any] = {"model": model, "messages": messages}
    for name in obj:  # a walk of the few fields given: cheaper per line than a set intersection
        check = _PARAMS.get(name)
        if check is not None and (value := obj[name]) is not None:
            canonical[name] = check(value, name, where)
    metadata = obj.get("metadata")
    return row_id, None if metadata is None else _json(metadata, "metadata", where), canonical


def parse_raw_request(obj: Any, id_field: str, body_field: str, model_in_body: bool,
                      default_model: str | None, where: str) -> tuple[str | int | None, None, dict]:
    """A line already in the provider's batch format (`--raw`): its request body is sent as it
    is, under our content key; the line's own id is kept as the row id."""
    if not isinstance(obj, dict) or not isinstance(obj.get(body_field), dict):
        raise _fail(where, f"a raw line must be an object with a '{body_field}' object (the provider's batch format)")
    body = obj[body_field]
    model = (body.get("model") if model_in_body else None) or default_model
    if not isinstance(model, str) or not model:
        raise _fail(where, f"no model: give --model or a 'model' in '{body_field}'" if model_in_body else
                    "no model: give --model (this provider sets the model per batch, not per line)")
    if model_in_body and "model" not in body:
        body = {**body, "model": model}
    row_id = obj.get(id_field)
    return None if row_id is None else str(row_id), None, {"model": model, "raw": body}


def _json(value: Any, name: str, where: str) -> bytes:
    """JSON for a value given from Python, which may hold what JSON (or the store) cannot."""
    try:
        return orjson.dumps(value)
    except TypeError as exc:  # an integer past 64 bits, a set, an object, ...
        raise _fail(where, f"field '{name}' cannot be written as JSON ({exc})") from None


def canonical_bytes(canonical: dict, where: str = "a request") -> bytes:
    """Stable serialisation: sorted keys, no whitespace."""
    try:
        return orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:  # from Python: an integer past 64 bits in a schema, a set, ...
        raise _fail(where, f"the request cannot be written as JSON ({exc})") from None


def request_key(provider: str, body: bytes) -> str:
    """custom_id valid for every provider (^[a-zA-Z0-9_-]{1,64}$): prefix + 128-bit content hash.

    The provider is part of the hash: the same prompt sent to two providers is two answers.
    """
    digest = _hasher(provider).copy()  # a copy of a ready hasher: half the cost of making one per line
    digest.update(body)
    return KEY_PREFIX + digest.hexdigest()


@cache
def _hasher(provider: str) -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=16, person=provider.encode()[:16])


def parse_for(provider: Any, obj: Any, model: str | None, raw: bool,
              where: str) -> tuple[str | int | None, bytes | None, dict, str]:
    """One input line as `provider` will be sent it: (row id, metadata as JSON, canonical request, key).
    A neutral line is checked against what the provider can honour; a `--raw` line is the
    provider's own format. The job's ingest and the cost estimate read lines alike through this."""
    if raw:
        row_id, metadata, canonical = parse_raw_request(
            obj, provider.line_id_field, provider.line_body_field, provider.model_in_body, model, where)
    else:
        row_id, metadata, canonical = parse_request(obj, model, where)
        problem = provider.check(canonical)
        if problem:
            raise InputError(f"{where}: {problem}")
    return row_id, metadata, canonical, request_key(provider.name, canonical_bytes(canonical, where))
