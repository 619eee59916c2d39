"""HTTP routes of Anthropic's Message Batches API (``/v1/messages/batches…``) for the official SDK.

Requests arrive inline in the create body and are kept on disk, one JSONL line per request. The
lifecycle is the shared one (:mod:`.lifecycle`, words in ``SHAPES``) with no validating phase; the
requests an expiry or a cancel leaves unrun end ``expired`` or ``canceled``. 29 days after creation
the results are archived (``archived_at``; downloading them is a 404).

As on the real service, ``request_counts`` shows every request as ``processing`` until the batch ends,
and ``results_url`` appears only then. It is absolute and points back at this server, because the
SDK fetches it as given. Results are written once, at the end, ordered by a hash of custom_id: never
input order. Timestamps are RFC 3339 strings.

Batch-level problems (no requests, too many, a bad or duplicate custom_id, missing params, a body
over 256 MB) fail the create call with 400/413; per-request problems (an unknown model, i.e. one
named ``missing-*``, or bad params) come back as ``errored`` lines, in Anthropic's error envelope.
Cancelling an ended batch and fetching results early answer 400 [unverified against the real API].
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from .fake_model import Behaviour, model_exists, reply
from .fake_model import _text_of as _text
from .lifecycle import Batch, Service, after, jsonl, route, scrambled
from .live import Parsed, message_chars, token_cost
from .responses import ApiError, JSONResponse
from .state import new_id

PATH = "/v1/messages/batches"
MAX_BODY_BYTES = 256 * 1024 * 1024
ARCHIVE_SECONDS = 29 * 86400
THINKING_TOKENS = 32  # what the fake model "thinks" when thinking is enabled
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
EFFORTS = ("low", "medium", "high", "xhigh", "max")
# Top-level Messages API params the emulator accepts; any other key errors the line, as the API does.
PARAMS = frozenset({
    "model", "max_tokens", "messages", "system", "temperature", "top_p", "top_k", "stop_sequences", "thinking",
    "output_config", "metadata", "tools", "tool_choice", "service_tier", "stream", "cache_control", "container",
    "inference_geo", "speed", "diagnostics",
})


def anthropic_error(status: int, error_type: str, message: str) -> ApiError:
    """An error in Anthropic's envelope: ``{"type": "error", "error": {"type", "message"}, "request_id"}``."""
    return ApiError(status, message, type=error_type, shape="anthropic")


def _invalid(message: str) -> ApiError:
    return anthropic_error(400, "invalid_request_error", message)


def _rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(kw_only=True, eq=False)
class MessageBatch(Batch):
    requests_path: Path
    results_url: str  # absolute, on the server the create came to: the SDK fetches it as given
    counts: dict[str, int] | None = None  # frozen when the batch ends
    results_path: Path | None = None


class AnthropicMessageBatches(Service[MessageBatch]):
    """The Message Batches API of one emulated Anthropic workspace."""

    error_shape = "anthropic"

    def routes(self) -> list[BaseRoute]:
        return [
            route(PATH, POST=self.create_batch, GET=self.list_batches),
            route(PATH + "/{batch_id}", GET=self.retrieve_batch, DELETE=self.delete_batch),
            route(PATH + "/{batch_id}/cancel", POST=self.cancel_batch),
            route(PATH + "/{batch_id}/results", GET=self.batch_results),
        ]

    def invalid_key_response(self) -> Response:
        return anthropic_error(401, "authentication_error", "invalid x-api-key").response()

    # -- routes ----------------------------------------------------------------------------------

    async def create_batch(self, request: Request) -> Response:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise anthropic_error(413, "request_too_large", f"Request exceeds the maximum size of {MAX_BODY_BYTES} bytes.")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _invalid("The request body is not valid JSON.") from None
        requests = _check_requests(body, self.max_lines)
        batch_id = new_id("msgbatch_")
        path = self.data_dir / f"{batch_id}.requests.jsonl"
        await run_in_threadpool(_write_lines, path, requests)
        url = f"{request.url.scheme}://{request.url.netloc}{self.prefix}{PATH}/{batch_id}/results"
        try:
            batch = self.batches.add(MessageBatch(
                id=batch_id, created=self.now(), timing=self.timing, window=self.timing.completion_window_seconds,
                total=len(requests), bad=bytearray(len(requests)), requests_path=path, results_url=url))
        except ApiError:  # the queue is full (a fault): nothing was created
            path.unlink(missing_ok=True)
            raise
        return self.faults.lost(JSONResponse(self.batch_json(batch)))

    async def list_batches(self, request: Request) -> Response:
        self.stats.add(self.provider, "batch_lists")
        q = request.query_params
        limit = _limit(q.get("limit"))
        page, has_more = self._page(q.get("after_id") or None, q.get("before_id") or None, limit)
        await run_in_threadpool(self.batches.advance, *page)
        data = [self.batch_json(b) for b in page]
        return JSONResponse({
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        })

    def cannot_cancel(self, batch: MessageBatch) -> ApiError:
        return _invalid(f"Batch {batch.id} has already ended and can no longer be canceled.")

    async def delete_batch(self, request: Request) -> Response:
        batch = self.batch(request)
        await run_in_threadpool(self.batches.advance, batch)
        if not batch.ended:
            raise _invalid(f"Batch {batch.id} is still processing; cancel it and wait for it to end before deleting it.")
        self.batches.pop(batch.id)
        for path in (batch.requests_path, batch.results_path):
            if path is not None:
                path.unlink(missing_ok=True)
        return JSONResponse({"id": batch.id, "type": "message_batch_deleted"})

    async def batch_results(self, request: Request) -> Response:
        batch = self.batch(request)
        await run_in_threadpool(self.batches.advance, batch)
        if not batch.ended or batch.results_path is None:
            raise _invalid(f"Batch {batch.id} has not finished processing; its results are not available yet.")
        if self.now() >= batch.created + ARCHIVE_SECONDS:
            raise anthropic_error(404, "not_found_error", f"The results of batch {batch.id} have been archived.")
        return self.faults.download(batch.results_path, "application/binary")

    # -- live ------------------------------------------------------------------------------------

    live_path = "/v1/messages"

    def live(self, path: str, params: Any) -> Parsed:
        if not isinstance(params, dict):
            return anthropic_error(400, "invalid_request_error", "The request body is not valid JSON.").response()
        problem = _problem(params)
        if problem is not None:
            kind, message = problem
            return anthropic_error(404 if kind == "not_found_error" else 400, kind, message).response()
        chars = message_chars(params["messages"]) + len(_text(params.get("system")))

        def build() -> dict:
            message = _execute(params, secrets.token_hex(12), behaviour=self.behaviour)["message"]
            message["usage"]["service_tier"] = "standard"
            return message

        return params["model"], token_cost(chars, params["max_tokens"]), build

    # -- bookkeeping -----------------------------------------------------------------------------

    def batch_json(self, batch: MessageBatch) -> dict:
        counts = batch.counts or {"processing": batch.total, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        archived = batch.created + ARCHIVE_SECONDS
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": batch.word(self.shape),
            "request_counts": counts,
            "created_at": _rfc3339(batch.created),
            "expires_at": _rfc3339(batch.expires),
            **{name: _rfc3339(t) for name, t in batch.times(self.shape).items()},
            "archived_at": _rfc3339(archived) if self.now() >= archived else None,
            "results_url": batch.results_url if batch.ended else None,
        }

    def no_batch(self, batch_id: str) -> ApiError:
        return anthropic_error(404, "not_found_error", f"No message batch found with id '{batch_id}'.")

    def _page(self, after_id: str | None, before_id: str | None, limit: int) -> tuple[list[MessageBatch], bool]:
        """Newest first. ``after_id``: the page of older batches below it; ``before_id``: the page of
        newer batches just above it."""
        newest_first = self.batches.newest_first()

        def unknown(cursor: str) -> ApiError:
            return _invalid(f"Invalid pagination cursor: no message batch '{cursor}'.")

        if after_id is None and before_id is not None:
            above = after(newest_first[::-1], before_id, unknown)[::-1]
            return above[-limit:], len(above) > limit
        rest = after(newest_first, after_id, unknown)
        return rest[:limit], len(rest) > limit

    def end(self, batch: MessageBatch, phase: str) -> None:
        """The results hook: run the first ``done`` requests through the fake model; the rest end
        ``canceled`` or ``expired``."""
        done = batch.done or 0
        unrun = {"cancelled": "canceled", "expired": "expired"}.get(phase, "")
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        lines: list[tuple[str, bytes]] = []
        for index, raw in enumerate(jsonl(batch.requests_path)):
            request = orjson.loads(raw)
            custom_id = request["custom_id"]
            result = (_execute(request["params"], f"{batch.id[-8:]}{index:06x}", behaviour=self.behaviour)
                      if index < done else {"type": unrun})
            counts[result["type"]] += 1
            lines.append((custom_id, orjson.dumps({"custom_id": custom_id, "result": result})))
        [kept] = self.faults.corrupt(batch.ordinal, [scrambled(lines)])
        batch.results_path = batch.requests_path.with_name(f"{batch.id}.results.jsonl")
        batch.results_path.write_bytes(b"".join(line + b"\n" for line in kept))
        batch.counts = counts


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return 20
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise _invalid(f"limit: Input should be an integer between 1 and 1000, got {raw!r}.")
    return int(raw)


def _check_requests(body: Any, cap: int) -> list[dict]:
    """Batch-level validation: these fail the whole create call, as on the real API."""
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
        raise _invalid("requests: Field required (a list of {custom_id, params}).")
    extra = sorted(body.keys() - {"requests"})
    if extra:
        raise _invalid(f"{extra[0]}: Extra inputs are not permitted")
    requests = body["requests"]
    if not requests:
        raise _invalid("requests: List should have at least 1 item after validation, not 0")
    if len(requests) > cap:
        raise _invalid(f"requests: List should have at most {cap} items after validation, not {len(requests)}")
    seen: set[str] = set()
    for i, item in enumerate(requests):
        if not isinstance(item, dict) or not isinstance(item.get("params"), dict):
            raise _invalid(f"requests.{i}.params: Field required")
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
            raise _invalid(f"requests.{i}.custom_id: String should match pattern '{CUSTOM_ID.pattern}'")
        if custom_id in seen:
            raise _invalid(f"Duplicate custom_id '{custom_id}' in requests.{i}: custom_id must be unique within a batch.")
        seen.add(custom_id)
    return requests


def _write_lines(path: Path, requests: list[dict]) -> None:
    with open(path, "wb") as f:
        for item in requests:
            f.write(orjson.dumps({"custom_id": item["custom_id"], "params": item["params"]}) + b"\n")


# -- one request --------------------------------------------------------------------------------


def _problem(params: dict) -> tuple[str, str] | None:
    """(error type, message) the Messages API would answer these params with, or None."""
    extra = sorted(params.keys() - PARAMS)
    if extra:
        return "invalid_request_error", f"{extra[0]}: Extra inputs are not permitted"
    model = params.get("model")
    if not isinstance(model, str) or not model:
        return "invalid_request_error", "model: Field required"
    if not model_exists(model):
        return "not_found_error", f"model: {model}"
    max_tokens = params.get("max_tokens")
    if type(max_tokens) is not int or max_tokens < 0:
        return "invalid_request_error", "max_tokens: Field required (a non-negative integer)"
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages:
        return "invalid_request_error", "messages: List should have at least 1 item"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            return "invalid_request_error", f"messages.{i}.role: Input should be 'user' or 'assistant'"
    for name in ("temperature", "top_p"):
        value = params.get(name)
        if value is not None and (type(value) not in (int, float) or not 0 <= value <= 1):
            return "invalid_request_error", f"{name}: Input should be a number between 0 and 1"
    if params.get("stream"):
        return "invalid_request_error", "stream: streaming is not supported in the Message Batches API"
    thinking = params.get("thinking")
    if thinking is not None:
        kind = thinking.get("type") if isinstance(thinking, dict) else None
        if kind not in ("enabled", "disabled", "adaptive"):
            return "invalid_request_error", "thinking.type: Input should be 'enabled', 'disabled' or 'adaptive'"
        budget = thinking.get("budget_tokens")
        if kind == "enabled" and (type(budget) is not int or budget < 1024):
            return "invalid_request_error", "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        if kind == "enabled" and max_tokens <= budget:
            return "invalid_request_error", "`max_tokens` must be greater than `thinking.budget_tokens`"
    output = params.get("output_config") or {}
    if not isinstance(output, dict) or output.get("effort") not in (None, *EFFORTS):
        return "invalid_request_error", f"output_config.effort: Input should be one of {', '.join(EFFORTS)}"
    fmt = output.get("format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "json_schema"
                            or not isinstance(fmt.get("schema"), dict)):
        return "invalid_request_error", "output_config.format: expected {\"type\": \"json_schema\", \"schema\": {...}}"
    return None


def _execute(params: dict, suffix: str, *, behaviour: Behaviour | None = None) -> dict:
    """One request's ``result``: a succeeded Message from the fake model, or an errored envelope."""
    problem = _problem(params)
    if problem is not None:
        error_type, message = problem
        return {"type": "errored", "error": {"type": "error", "error": {"type": error_type, "message": message},
                                             "request_id": "req_" + suffix}}
    messages = params["messages"]
    users = [_text(m.get("content")) for m in messages if m["role"] == "user"]
    prompt = users[-1] if users else ""
    input_chars = len(_text(params.get("system"))) + sum(len(_text(m.get("content"))) for m in messages)
    thinking = (params.get("thinking") or {}).get("type") == "enabled"
    thought = THINKING_TOKENS if thinking else 0
    fmt = (params.get("output_config") or {}).get("format")
    text, input_tokens, output_tokens, truncated = reply(
        prompt, fmt["schema"] if fmt else None, params["max_tokens"] - thought, input_chars,
        model=params["model"], behaviour=behaviour, history=users[:-1])
    content: list[dict[str, Any]] = [{"type": "thinking", "thinking": "Emulated reasoning.", "signature": "sig_" + suffix}] if thinking else []
    content.append({"type": "text", "text": text, "citations": None})  # required, null without documents
    return {"type": "succeeded", "message": {
        "id": "msg_" + suffix,
        "type": "message",
        "role": "assistant",
        "model": params["model"],
        "content": content,
        "stop_reason": "max_tokens" if truncated else "end_turn",
        "stop_sequence": None,
        "stop_details": None,  # required; only a refusal has details
        "container": None,  # required; only container tools (code execution) fill it
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens + thought,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "server_tool_use": None,
            "service_tier": "batch",
            "inference_geo": None,  # required; null: the emulator runs nowhere in particular
            "output_tokens_details": {"thinking_tokens": thought},
        },
    }}
