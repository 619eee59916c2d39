"""OpenAI Batch API adapter (Files + Batches, endpoint /v1/chat/completions) on the official SDK."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import orjson

from ..errors import ConfigError
from ..limits import MB, BatchLimits
from ..retry import ErrorCodes
from .base import (
    CANCELLED,
    EXPIRED,
    FAILED,
    Outcome,
    RemoteBatch,
    StainlessBatch,
    bearer,
    decode_stream,
)

# The error codes of OpenAI's API, and of those that copy its error envelope (Groq, Together, Mistral).
OPENAI_CODES = ErrorCodes(
    transient=frozenset({"rate_limit_exceeded", "server_error", "token_limit_exceeded", "timeout"}),
    account=frozenset({"invalid_api_key", "insufficient_quota", "billing_hard_limit_reached",
                       "account_deactivated", "unauthorized", "permission_denied"}),
)

TAG_KEY = "batchery_batch"
_ENDED = {"completed", "failed", "expired", "cancelled"}
_LINE_STATUS = {"batch_expired": EXPIRED, "batch_cancelled": CANCELLED}


class ChatCompletionLines:
    """Requests out as OpenAI's batch lines: a Chat Completions body in `{"custom_id", "method",
    "url", "body"}` (OpenAI, Groq, and vLLM's run-batch)."""

    name: str
    endpoint: str

    def check(self, request: dict) -> str | None:
        if "reasoning" in request and "effort" not in request["reasoning"]:
            return f"{self.name} takes reasoning as {{\"effort\": \"low\"|\"medium\"|\"high\"}}, not a token budget"
        return None

    def translate(self, request: dict) -> dict:
        return chat_body(request)

    def wrap(self, custom_id: str, body: dict) -> dict:
        return {"custom_id": custom_id, "method": "POST", "url": self.endpoint, "body": body}


class OpenAIBatch(ChatCompletionLines, StainlessBatch):
    name = "openai"
    endpoint = "/v1/chat/completions"
    # Enqueued tokens: per model and usage tier; 2,000,000 is the tier-1 figure seen for gpt-4o-mini
    # (research §2.6-2.7), lowered to the limit OpenAI states when it refuses a batch anyway.
    limits = BatchLimits(max_requests=50_000, max_bytes=200 * MB, discount=0.5, window="24h",
                         max_enqueued_tokens=2_000_000)
    sdk_module, sdk_client = "openai", "OpenAI"
    error_codes = OPENAI_CODES
    batch_states: ClassVar[Mapping[str, str]] = {
        "validating": "submitted", "in_progress": "running", "finalizing": "running",
        "cancelling": "cancelling", "completed": "done", "failed": "failed", "expired": "expired",
        "cancelled": "cancelled"}

    live_path = "/chat/completions"
    default_base_url = "https://api.openai.com/v1"  # the SDK's, when no base URL is given
    flex_tier = True  # service_tier="flex" on Chat Completions, named back in the answer's service_tier

    def live_headers(self) -> dict[str, str]:
        """The key, and the organisation and project the SDK reads from OPENAI_ORG_ID and
        OPENAI_PROJECT_ID."""
        headers = bearer(self.api_key)
        for header, variable in (("OpenAI-Organization", "OPENAI_ORG_ID"), ("OpenAI-Project", "OPENAI_PROJECT_ID")):
            if value := os.environ.get(variable):
                headers[header] = value
        return headers

    def upload(self, path: Path) -> str:
        with self._errors("upload"), path.open("rb") as f:
            return self.client.files.create(file=f, purpose="batch").id

    def create(self, input_file: str, model: str, tag: str) -> RemoteBatch:
        # Never retried blindly: a retried create whose first response was lost makes a second
        # batch. The engine instead looks the tag up and only then creates again.
        with self._errors("create"):
            batch = self.client.batches.create(
                input_file_id=input_file,
                endpoint=self.endpoint,
                completion_window="24h",
                metadata={TAG_KEY: tag},
            )
        return _remote(batch)

    # -- watching ------------------------------------------------------------------------------

    def listed(self) -> Iterator[RemoteBatch]:
        return map(_remote, self._pages())

    def fetch(self, remote_id: str) -> RemoteBatch:
        return _remote(self.client.batches.retrieve(remote_id))

    def cancel(self, remote_id: str) -> None:
        with self._errors("cancel"):
            try:
                self.client.batches.cancel(remote_id)
            except self._sdk.ConflictError:
                pass  # the batch already ended; its results are collected as usual

    def _pages(self) -> Iterable:
        """The account's batches, newest first, as the list endpoint serves them (page after page)."""
        return self.client.batches.list(limit=100)

    # -- results in ----------------------------------------------------------------------------

    def outcomes(self, remote: RemoteBatch) -> Iterator[Outcome]:
        return file_outcomes(self, remote, decode_line)

    # -- live mode -----------------------------------------------------------------------------

    def decode_live(self, custom_id: str, status: int, body) -> Outcome | None:
        return decode_response(custom_id, status, body)


class OpenAICompatible(OpenAIBatch):
    """Any server that speaks OpenAI's Chat Completions — vLLM, Ollama, llama.cpp's server,
    Together's live endpoint — at --base-url. Live mode only: such servers have no Batch API."""

    name = "openai-compatible"
    has_batch_api = False
    emulator_service = "openai"  # the emulator's OpenAI service stands in for such a server
    key_optional = "not-needed"  # local servers (Ollama, vLLM) often take no key; the SDK needs a value
    price_id = ""  # whatever model a server runs, it is not priced as OpenAI's
    flex_tier = False
    # No batch file limits apply; a request line is capped only to keep one line sane.
    limits = BatchLimits(max_requests=1, max_bytes=64 * 1024 * 1024, discount=0.0, window="live only")

    def __init__(self, api_key: str, base_url: str | None = None):
        if not base_url:
            raise ConfigError("--provider openai-compatible needs --base-url, the server's OpenAI-style URL "
                              "(e.g. http://localhost:8000/v1 for vLLM, http://localhost:11434/v1 for Ollama)")
        super().__init__(api_key, base_url)


def file_outcomes(adapter: StainlessBatch, remote: RemoteBatch,
                  decode: Callable[[bytes], Outcome | None]) -> Iterator[Outcome]:
    """The lines of a batch's output file, then of its error file (either may be absent), read from
    a Files API of OpenAI's shape."""
    for file_id in (remote.output_file, remote.error_file):
        if not file_id:
            continue
        with adapter._errors("download"), adapter.client.files.with_streaming_response.content(file_id) as response:
            yield from decode_stream(response.iter_bytes(1 << 20), decode)


def chat_body(request: dict) -> dict:
    """Neutral request -> Chat Completions body."""
    messages = request["messages"]
    if "system" in request:
        messages = [{"role": "system", "content": request["system"]}, *messages]
    body: dict = {"model": request["model"], "messages": messages}
    if "max_tokens" in request:
        body["max_completion_tokens"] = request["max_tokens"]
    return chat_options(request, body, ("temperature", "top_p", "stop"))


def chat_options(request: dict, body: dict, names: tuple[str, ...], *, strict: bool = False) -> dict:
    """`body` with the request's options of these names, its reasoning effort and its JSON schema
    (`strict` where the provider must be told to hold to it), in the Chat Completions words."""
    for name in names:
        if name in request:
            body[name] = request[name]
    if "reasoning" in request:
        body["reasoning_effort"] = request["reasoning"]["effort"]
    if "response_format" in request:
        schema = {"name": "response", "schema": request["response_format"]}
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {**schema, "strict": True} if strict else schema}
    return body


def read_line(line: bytes) -> tuple[str, Any] | None:
    """A result line's custom_id and object; None when it is not JSON or names no custom_id."""
    try:
        obj = orjson.loads(line)
        custom_id = obj["custom_id"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return (custom_id, obj) if isinstance(custom_id, str) else None


def decode_line(line: bytes) -> Outcome | None:
    """One output/error-file line -> Outcome; None when the line is unreadable (it then counts as missing)."""
    if (read := read_line(line)) is None:
        return None
    custom_id, obj = read
    response = obj.get("response")
    if isinstance(response, dict) and isinstance(body := response.get("body"), dict):
        return decode_response(custom_id, response.get("status_code"), body)
    if isinstance(error := obj.get("error"), dict):
        code = str(error.get("code") or "error")
        return Outcome.ended(custom_id, _LINE_STATUS.get(code, FAILED), code, str(error.get("message") or ""))
    return None


def decode_response(custom_id: str, status, body) -> Outcome | None:
    """A Chat Completions response (a batch line's, or a live call's) -> Outcome."""
    if isinstance(body, dict):
        if status == 200:
            try:
                text = body["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                text = None
            return Outcome.succeeded(custom_id, text, orjson.dumps(body), *chat_usage(body))
        err = got if isinstance(got := body.get("error"), dict) else {}
        code = err.get("code") or err.get("type") or f"http_{status}"
        return Outcome.failed(custom_id, str(code), str(err.get("message") or "request failed"), orjson.dumps(body))
    return None


def chat_usage(body: dict) -> tuple[int | None, int | None, int | None, int | None]:
    """A Chat Completions body's usage as Outcome's token fields in their order: input, output, cached
    and reasoning tokens (OpenAI, Groq, Together, Mistral). A tuple, not keywords: it is read for
    every answer collected."""
    usage = body.get("usage") or {}
    return (usage.get("prompt_tokens"), usage.get("completion_tokens"),
            (usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
            (usage.get("completion_tokens_details") or {}).get("reasoning_tokens"))


def _remote(batch) -> RemoteBatch:
    counts = batch.request_counts
    errors = batch.errors.data if batch.errors and batch.errors.data else []
    return RemoteBatch(
        remote_id=batch.id,
        status=batch.status,
        ended=batch.status in _ENDED,
        tag=(batch.metadata or {}).get(TAG_KEY),
        output_file=batch.output_file_id,
        error_file=batch.error_file_id,
        error="; ".join(f"{e.message}" + (f" (line {e.line})" if e.line else "") for e in errors) or None,
        error_code=errors[0].code if errors else None,
        leftover=OpenAIBatch.leftover_of(batch.status),
        total=counts.total if counts else 0,
        completed=counts.completed if counts else 0,
        failed=counts.failed if counts else 0,
    )
