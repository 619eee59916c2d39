"""Anthropic Message Batches adapter (``POST /v1/messages/batches``) on the official SDK.

Requests travel inline: ``encode`` writes one ``{"custom_id", "params"}`` line per request, ``upload``
only says where that file is, and ``create`` streams the file as the ``requests`` array of the create
body, so a 256 MB batch never sits in memory as Python objects.

Finding a batch whose create response was lost
-----------------------------------------------
A Message Batch has no metadata, name or input file: nothing sent at create time can be read back
before the batch ends, and custom_ids are content keys, so they cannot carry a tag either. What the
API does show is the list of batches, newest first, each with its number of requests. Hence:

* ``upload`` records a high-water mark, the newest batch in the workspace at that moment, in the
  reference it returns. The engine stores that reference in the transaction that marks the batch
  ``creating``, so the mark is in the store before any create call can reach Anthropic.
* The first ``create`` of a reference this process issued is sent at once. Any other ``create`` (a new
  process after a crash, or the retry after a create whose answer was lost) first lists the batches
  above the mark and adopts the oldest one with the same number of requests (and, if it has already
  ended, whose results hold one of our custom_ids) instead of creating a second batch.
* ``find`` therefore recognises nothing by tag and returns ``{}``: the engine puts the batch back to
  ``planned``, and its next ``create`` call is where the lost batch is found.

The residual risk is another client of the same workspace creating a batch of exactly the same size
between our mark and our create. Adopting it can never store a wrong answer, because results are
joined on custom_id: our lines would come back ``missing``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import orjson

from ..errors import ProviderError
from ..limits import MB, BatchLimits
from ..retry import ErrorCodes
from .base import (
    Outcome,
    RemoteBatch,
    StainlessBatch,
    bearer,
    decode_stream,
    split_lines,
)

if TYPE_CHECKING:
    from anthropic.types.messages import MessageBatch

# The Messages API version the anthropic SDK batchery is tested with sends (ANTHROPIC_API_VERSION;
# a test checks they agree): the fast live path sends the same, so answers have the same shape.
API_VERSION = "2026-10-21"

# The Messages API requires max_tokens; requests that give none get this (plus any thinking budget,
# which counts toward max_tokens).
DEFAULT_MAX_TOKENS = 4096
MIN_THINKING_BUDGET = 1024  # the API's floor for thinking.budget_tokens
_INSTRUCTION_ROLES = frozenset({"system", "developer"})
_LIST_PAGE = 100


class AnthropicBatch(StainlessBatch):
    name = "anthropic"
    endpoint = "/v1/messages"
    limits = BatchLimits(max_requests=100_000, max_bytes=256 * MB, discount=0.5, window="24h")
    sdk_module, sdk_client = "anthropic", "Anthropic"
    live_path = "/v1/messages"
    default_base_url = "https://api.anthropic.com"
    # Anthropic's error types (529 overloaded_error is transient by its status as well).
    error_codes = ErrorCodes(
        transient=frozenset({"rate_limit_error", "overloaded_error", "api_error", "timeout_error"}),
        account=frozenset({"authentication_error", "permission_error", "billing_error"}),
    )
    batch_states: ClassVar[Mapping[str, str]] = {"in_progress": "running", "canceling": "cancelling", "ended": "done"}

    def __init__(self, api_key: str, base_url: str | None = None):
        super().__init__(api_key, base_url)
        self._fresh: set[str] = set()  # references issued by upload() whose create has not been tried

    # -- requests out --------------------------------------------------------------------------

    def check(self, request: dict) -> str | None:
        temperature = request.get("temperature")
        if temperature is not None and temperature > 1:
            return f"anthropic takes temperature between 0 and 1, got {temperature}"
        budget = request.get("reasoning", {}).get("budget_tokens")
        if budget:  # 0 means "no thinking"
            if budget < MIN_THINKING_BUDGET:
                return (f"anthropic needs reasoning.budget_tokens of at least {MIN_THINKING_BUDGET} "
                        f"(or 0 to turn thinking off), got {budget}")
            if request.get("max_tokens", budget + 1) <= budget:
                return "anthropic counts thinking toward max_tokens: max_tokens must exceed reasoning.budget_tokens"
        _, turns = _split_instructions(request["messages"])
        if not turns:
            return "anthropic needs at least one user or assistant message"
        misplaced = next((m["role"] for m in turns if m["role"] in _INSTRUCTION_ROLES), None)
        if misplaced:
            return (f"anthropic takes {misplaced} instructions only before the conversation starts "
                    "(they become its top-level system prompt)")
        return None

    line_body_field = "params"

    def translate(self, request: dict) -> dict:
        return message_params(request)

    def upload(self, path: Path) -> str:
        with self._errors("list batches"):
            newest = self.client.messages.batches.list(limit=1).data
        mark = newest[0] if newest else None
        reference = _Reference(path, mark.id if mark else None, mark.created_at if mark else None).dump()
        self._fresh.add(reference)
        return reference

    def create(self, input_file: str, model: str, tag: str) -> RemoteBatch:
        reference = _Reference.load(input_file)
        try:
            body = _RequestsBody(reference.path)
        except OSError as exc:
            raise ProviderError(f"anthropic create: cannot read the batch file {reference.path}: {exc}") from None
        if input_file in self._fresh:
            self._fresh.discard(input_file)
        else:  # an earlier create for this file may have reached Anthropic: look before sending again
            earlier = self._adopt(reference, body.count)
            if earlier is not None:
                return earlier
        # Posted as raw bytes rather than batches.create(requests=[...]) so the requests are never
        # parsed into Python objects; no SDK retries, as a retry after a lost response would make a
        # second batch (the next create call looks for it instead).
        with self._errors("create"):
            batch = self.client.post(
                "/v1/messages/batches",
                content=body,
                cast_to=self._sdk.types.messages.MessageBatch,
                options={"headers": {"content-type": "application/json", "content-length": str(body.length)}},
            )
        return _remote(batch)

    def _adopt(self, reference: _Reference, count: int) -> RemoteBatch | None:
        """The batch an earlier create call for this file made, if Anthropic has one."""
        above_mark = []
        with self._errors("list batches"):
            for batch in self.client.messages.batches.list(limit=_LIST_PAGE):
                if batch.id == reference.after or (reference.after_created and batch.created_at < reference.after_created):
                    break
                if _total(batch) == count:
                    above_mark.append(batch)
            for batch in reversed(above_mark):  # oldest first: ours was created right after the mark
                if batch.processing_status != "ended" or self._returned_one_of(batch.id, reference.path):
                    return _remote(batch)
        return None

    def _returned_one_of(self, remote_id: str, path: Path) -> bool:
        """Whether the first result line of this ended batch answers a request in our file."""
        with self.client.messages.batches.with_streaming_response.results(remote_id) as response:
            first = next(split_lines(response.iter_bytes(1 << 16)), b"")
        custom_id = orjson.loads(first).get("custom_id") if first else None
        with path.open("rb") as f:
            return any(orjson.loads(line)["custom_id"] == custom_id for line in f if line.strip())

    # -- watching ------------------------------------------------------------------------------

    def find(self, tags: set[str]) -> dict[str, RemoteBatch]:
        """Always empty: Message Batches carry no tag. A lost batch is found by ``create`` instead
        (see the module docstring), which the engine calls next for every batch not found here."""
        return {}

    def listed(self) -> Iterator[RemoteBatch]:
        return map(_remote, self.client.messages.batches.list(limit=_LIST_PAGE))

    def fetch(self, remote_id: str) -> RemoteBatch:
        return _remote(self.client.messages.batches.retrieve(remote_id))

    def cancel(self, remote_id: str) -> None:
        batches = self.client.messages.batches
        with self._errors("cancel"):
            try:
                batches.cancel(remote_id)
            except (self._sdk.BadRequestError, self._sdk.ConflictError):
                if batches.retrieve(remote_id).processing_status != "ended":
                    raise
                # it already ended: its results are collected as usual

    # -- live mode -----------------------------------------------------------------------------

    def live_headers(self) -> dict[str, str]:
        return {**bearer(self.api_key), "anthropic-version": API_VERSION}  # the SDK's key and API version

    def decode_live(self, custom_id: str, status: int, body) -> Outcome | None:
        if not isinstance(body, dict):
            return None
        if status == 200 and body.get("type") == "message":
            return _succeeded(custom_id, body)
        error = got if isinstance(got := body.get("error"), dict) else {}
        return Outcome.failed(custom_id, str(error.get("type") or f"http_{status}"),
                              str(error.get("message") or "the request failed"), orjson.dumps(body))

    # -- results in ----------------------------------------------------------------------------

    def outcomes(self, remote: RemoteBatch) -> Iterator[Outcome]:
        results = self.client.messages.batches.with_streaming_response.results
        with self._errors("download"), results(remote.remote_id) as response:
            yield from decode_stream(response.iter_bytes(1 << 20), decode_line)

    def error_message(self, exc: Exception) -> str:
        """The error envelope's type and message, rather than the SDK's dump of the whole body."""
        body = getattr(exc, "body", None)
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return f"{error.get('type', 'error')}: {error['message']}"
        return super().error_message(exc)


def _split_instructions(messages: list[dict]) -> tuple[list[str], list[dict]]:
    """Leading system/developer messages, and the conversation after them. The Messages API has no
    such roles: their text joins the top-level ``system`` prompt."""
    lead = 0
    while lead < len(messages) and messages[lead]["role"] in _INSTRUCTION_ROLES:
        lead += 1
    return [m["content"] for m in messages[:lead]], messages[lead:]


def message_params(request: dict) -> dict:
    """Neutral request (already accepted by ``check``) -> Messages API create params."""
    instructions, turns = _split_instructions(request["messages"])
    system = "\n\n".join([request["system"], *instructions] if "system" in request else instructions)
    reasoning = request.get("reasoning", {})
    budget = reasoning.get("budget_tokens")
    params: dict = {
        "model": request["model"],
        "max_tokens": request.get("max_tokens") or DEFAULT_MAX_TOKENS + (budget or 0),
        "messages": turns,
    }
    if system:
        params["system"] = system
    if "stop" in request:
        params["stop_sequences"] = request["stop"]
    # Gone from the SDK's typed params since anthropic 1.0 but still honoured by the models that
    # predate the change; the SDK forwards params as given. Newer models answer with errored lines.
    for name in ("temperature", "top_p"):
        if name in request:
            params[name] = request[name]
    if budget is not None:
        params["thinking"] = {"type": "enabled", "budget_tokens": budget} if budget else {"type": "disabled"}
    output_config = {}
    if "effort" in reasoning:
        output_config["effort"] = reasoning["effort"]
    if "response_format" in request:
        output_config["format"] = {"type": "json_schema", "schema": request["response_format"]}
    if output_config:
        params["output_config"] = output_config
    return params


def decode_line(line: bytes) -> Outcome | None:
    """One results line -> Outcome; None when the line is unreadable (it then counts as missing)."""
    try:
        obj = orjson.loads(line)
        custom_id, result = obj["custom_id"], obj["result"]
        kind = result["type"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if not isinstance(custom_id, str):
        return None
    if kind == "succeeded" and isinstance(result.get("message"), dict):
        return _succeeded(custom_id, result["message"])
    if kind == "errored":
        envelope = got if isinstance(got := result.get("error"), dict) else {}
        error = got if isinstance(got := envelope.get("error"), dict) else {}
        return Outcome.failed(custom_id, str(error.get("type") or "errored"),
                              str(error.get("message") or "the request failed"), orjson.dumps(envelope))
    if kind == "canceled":
        return Outcome.cancelled(custom_id, "batch_cancelled", "the batch was canceled before this request ran")
    if kind == "expired":
        return Outcome.expired(custom_id, "batch_expired", "the batch reached its 24 h limit before this request ran")
    return None


def _succeeded(custom_id: str, message: dict) -> Outcome:
    """Text is the concatenated text blocks (thinking blocks excluded). Anthropic's input_tokens
    leaves out cached tokens, so the normalised input adds cache reads and writes back in."""
    texts = [b["text"] for b in message.get("content") or () if isinstance(b, dict) and b.get("type") == "text"]
    usage = message.get("usage") or {}
    cache_read = usage.get("cache_read_input_tokens") or 0
    cache_write = usage.get("cache_creation_input_tokens") or 0
    uncached = usage.get("input_tokens")
    input_tokens = None if uncached is None else uncached + cache_read + cache_write
    thinking = (usage.get("output_tokens_details") or {}).get("thinking_tokens")
    return Outcome.succeeded(custom_id, "".join(texts) if texts else None, orjson.dumps(message),
                             input_tokens=input_tokens, output_tokens=usage.get("output_tokens"),
                             cached_tokens=cache_read, reasoning_tokens=thinking, cache_write_tokens=cache_write)


def _total(batch: MessageBatch) -> int:
    c = batch.request_counts
    return c.processing + c.succeeded + c.errored + c.canceled + c.expired


def _remote(batch: MessageBatch) -> RemoteBatch:
    counts = batch.request_counts
    archived = batch.archived_at
    return RemoteBatch(
        remote_id=batch.id,
        status=batch.processing_status,
        ended=batch.processing_status == "ended",
        output_file=batch.results_url,
        error=f"Anthropic archived this batch's results on {archived:%Y-%m-%d}; they can no longer be downloaded"
        if archived else None,
        error_code="results_archived" if archived else None,
        total=_total(batch),
        completed=counts.succeeded,
        failed=counts.errored,
    )


@dataclass(frozen=True)
class _Reference:
    """What ``upload`` gives the engine to store: the request file, and the newest batch that existed
    before any create for it (every batch this file makes is listed above that mark)."""

    path: Path
    after: str | None
    after_created: datetime | None

    def dump(self) -> str:
        created = self.after_created.isoformat() if self.after_created else None
        return orjson.dumps({"path": str(self.path), "after": self.after, "after_created": created}).decode()

    @classmethod
    def load(cls, text: str) -> _Reference:
        obj = orjson.loads(text)
        created = datetime.fromisoformat(obj["after_created"]) if obj["after_created"] else None
        return cls(Path(obj["path"]), obj["after"], created)


_OPEN, _CLOSE = b'{"requests":[', b"]}"
_CHUNK = 1 << 20


class _RequestsBody:
    """The create body ``{"requests":[line,line,…]}`` streamed from the JSONL file ``encode`` wrote.
    Its length is measured first so the request carries Content-Length instead of chunked encoding."""

    def __init__(self, path: Path):
        self.path = path
        count = size = 0
        with path.open("rb") as f:
            for line in f:
                line = line.strip()
                if line:
                    count += 1
                    size += len(line)
        self.count = count
        self.length = len(_OPEN) + size + max(count - 1, 0) + len(_CLOSE)

    def __iter__(self) -> Iterator[bytes]:
        chunk = bytearray(_OPEN)
        separator = b""
        with self.path.open("rb") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                chunk += separator + line
                separator = b","
                if len(chunk) >= _CHUNK:
                    yield bytes(chunk)
                    chunk.clear()
        chunk += _CLOSE
        yield bytes(chunk)
