"""What the emulator rejects, and with which codes.

Two levels, as on the real service:

* **Whole-file problems** (found while the batch is ``validating``) fail the entire batch. Real OpenAI
  answers ``POST /v1/batches`` with 200 anyway and only shows ``status: "failed"`` plus
  ``errors.data[{code, message, param, line}]`` on later reads; the emulator does the same. Codes:

  ============================  ===================================================  =========
  code                          cause                                                line
  ============================  ===================================================  =========
  ``invalid_json_line``         line is not JSON, or not a JSON object               1-based
  ``missing_required_parameter``  ``custom_id`` / ``body`` missing or wrong type       1-based
  ``duplicate_custom_id``       a ``custom_id`` seen on an earlier line              1-based
  ``invalid_method``            ``method`` is not ``"POST"``                         1-based
  ``mismatched_endpoint``       ``url`` differs from the batch's ``endpoint``        1-based
  ``mismatched_model``          a second distinct ``body.model`` in one file         1-based
  ``too_many_requests``         more than 50,000 request lines                       null
  ``empty_file``                no request lines at all                              null
  ============================  ===================================================  =========

  Blank lines are skipped (line numbers still count them). At most 100 errors are reported.

* **Per-request problems** only fail that line: it goes to the error file with
  ``response.status_code: 400`` and the usual error envelope in ``response.body``. Codes follow
  the synchronous API: ``missing_required_parameter`` (model, messages), ``empty_array``
  (messages), ``invalid_value`` (message role, ``stream: true``), ``invalid_type``,
  ``decimal_below_min_value`` / ``decimal_above_max_value`` (temperature in [0, 2], top_p in
  [0, 1]) and ``integer_below_min_value`` (max_tokens / max_completion_tokens < 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from .fake_model import model_exists

MAX_REPORTED_ERRORS = 100
ROLES = ("system", "developer", "user", "assistant", "tool", "function")


@dataclass
class FileCheck:
    """Result of scanning an input file: batch-level errors, per-line validity and the model."""

    errors: list[dict] = field(default_factory=list)
    total: int = 0
    bad: bytearray = field(default_factory=bytearray)  # bad[i] == 1: request i fails check_chat_body
    model: str | None = None


def _file_error(code: str, message: str, line: int | None, param: str | None = None) -> dict:
    return {"code": code, "message": message, "param": param, "line": line}


def check_input_file(path: Path, endpoint: str, max_lines: int) -> FileCheck:
    """Scan a batch input JSONL file once, streaming (inputs can be 200 MB)."""
    result = FileCheck()
    errors = result.errors
    seen: set[str] = set()
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
            if not raw.strip():
                continue
            result.total += 1
            if result.total > max_lines:
                errors.append(_file_error("too_many_requests", f"Batch input files may contain at most {max_lines} requests.", None))
                break
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                errors.append(_file_error("invalid_json_line", f"Line {line_no} is not valid JSON.", line_no))
                continue
            if not isinstance(line, dict):
                errors.append(_file_error("invalid_json_line", f"Line {line_no} is not a JSON object.", line_no))
                continue
            custom_id = line.get("custom_id")
            if not isinstance(custom_id, str) or not custom_id:
                errors.append(_file_error("missing_required_parameter", "Missing required parameter: 'custom_id'.", line_no, "custom_id"))
            elif custom_id in seen:
                errors.append(_file_error("duplicate_custom_id", f"The custom_id '{custom_id}' is used more than once in this batch.", line_no, "custom_id"))
            else:
                seen.add(custom_id)
            if line.get("method") != "POST":
                errors.append(_file_error("invalid_method", "Only the POST method is supported for batch requests.", line_no, "method"))
            if line.get("url") != endpoint:
                errors.append(_file_error("mismatched_endpoint", f"The url of this request does not match the batch endpoint '{endpoint}'.", line_no, "url"))
            body = line.get("body")
            if not isinstance(body, dict):
                errors.append(_file_error("missing_required_parameter", "Missing required parameter: 'body'.", line_no, "body"))
                result.bad.append(1)
                continue
            model = body.get("model")
            if isinstance(model, str) and model:
                if result.model is None:
                    result.model = model
                elif model != result.model:
                    errors.append(_file_error("mismatched_model", f"Each batch may only use one model; found '{result.model}' and '{model}'.", line_no, "body.model"))
            result.bad.append(0 if check_chat_body(body) is None else 1)
    if result.total == 0 and not errors:
        errors.append(_file_error("empty_file", "The input file contains no requests.", None))
    return result


def _error(message: str, param: str | None, code: str | None) -> dict:
    return {"message": message, "type": "invalid_request_error", "param": param, "code": code}


def _check_range(body: dict, name: str, low: float, high: float) -> dict | None:
    if name not in body or body[name] is None:
        return None
    value = body[name]
    if type(value) not in (int, float):
        return _error(f"Invalid type for '{name}': expected a decimal, but got {type(value).__name__} instead.", name, "invalid_type")
    if value < low:
        return _error(f"Invalid '{name}': decimal below minimum value. Expected a value >= {low}, but got {value} instead.", name, "decimal_below_min_value")
    if value > high:
        return _error(f"Invalid '{name}': decimal above maximum value. Expected a value <= {high}, but got {value} instead.", name, "decimal_above_max_value")
    return None


def check_chat_body(body: dict) -> dict | None:
    """Return the OpenAI error object a Chat Completions call with this body would get, or None."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _error("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    if not model_exists(model):
        return _error(f"The model `{model}` does not exist or you do not have access to it.", None, "model_not_found")
    messages = body.get("messages")
    if messages is None:
        return _error("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(messages, list):
        return _error("Invalid type for 'messages': expected an array.", "messages", "invalid_type")
    if not messages:
        return _error("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.", "messages", "empty_array")
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            return _error(f"Invalid value: '{role}'. Supported values are: {', '.join(repr(r) for r in ROLES)}.", f"messages[{i}].role", "invalid_value")
    for name, low, high in (("temperature", 0, 2), ("top_p", 0, 1)):
        problem = _check_range(body, name, low, high)
        if problem:
            return problem
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if type(value) is not int:
            return _error(f"Invalid type for '{name}': expected an integer.", name, "invalid_type")
        if value < 1:
            return _error(f"Invalid '{name}': integer below minimum value. Expected a value >= 1, but got {value} instead.", name, "integer_below_min_value")
    if body.get("stream"):
        return _error("Streaming is not supported for batch requests.", "stream", "invalid_value")
    return None
