"""Mistral batch jobs adapter (Files + ``/v1/batch/jobs``, endpoint /v1/chat/completions) on the
official ``mistralai`` SDK.

What this module relies on (research §6, read against ``mistralai`` 3.7.0):

* The model is a job-level parameter (one model per job; the engine already plans one model per
  batch), so input lines are ``{custom_id, body}`` with no model in the body.
* Chat roles are system/user/assistant/tool: a neutral ``developer`` message is sent as ``system``,
  and a trailing assistant message (a prefill) gets ``prefix: true``, without which Mistral refuses
  it. Reasoning is ``reasoning_effort`` (low/medium/high); a token budget has no Mistral equivalent,
  so ``check`` refuses it. A JSON schema goes out as ``response_format`` json_schema, strict.
* Usage: ``prompt_tokens``, ``completion_tokens``, ``prompt_tokens_details.cached_tokens``; Mistral
  reports no separate reasoning count (thinking is part of completion tokens), so that stays None
  unless a ``completion_tokens_details.reasoning_tokens`` shows up.
* Jobs carry ``metadata`` ({str: str}); the batch tag goes there and ``find`` reads it back from the
  job list. The list's own ``metadata`` filter is not used: the SDK explodes it into bare query
  parameters (``?batchery_batch=…``), whose meaning on the server is undocumented.
* QUEUED, RUNNING and CANCELLATION_REQUESTED are in flight; anything else has ended (the SDK's own
  ``extra.batch`` helper treats unknown statuses as terminal too). TIMEOUT_EXCEEDED (``timeout_hours``
  elapsed) is Mistral's expiry: its finished lines are collected and the rest end ``expired``.
* Results are two JSONL files (successes, per-line failures), each custom_id once, in no particular
  order. A failed line has a non-null ``error`` (an object, or sometimes a bare string) and/or a
  ``response.status_code`` >= 400 whose body carries Mistral's ``{"object": "error", …}`` envelope.
* An unknown model is refused by the create call (400, ``type: invalid_model``), as the chat
  endpoint refuses it; the engine then fails that batch's lines with the provider's message.
* The SDK retries nothing unless told: idempotent calls get a backoff here, create gets none (a
  retried create whose first response was lost would make a second job; the engine reconciles by
  tag instead).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import orjson

from ..errors import ProviderError
from ..limits import MB, BatchLimits
from .base import (
    BatchProvider,
    CallFailure,
    LiveResponse,
    Outcome,
    RemoteBatch,
    decode_stream,
    retry_after_of,
)
from .openai import OPENAI_CODES, chat_options, chat_usage, read_line

TAG_KEY = "batchery_batch"
TIMEOUT_HOURS = 24  # Mistral's default window; TIMEOUT_EXCEEDED after it
_IN_FLIGHT = frozenset({"QUEUED", "RUNNING", "CANCELLATION_REQUESTED"})
# Mistral's chat roles are system/user/assistant/tool: a developer message is a system instruction.
_ROLES = {"developer": "system"}
_PAGE_SIZE = 100


class MistralBatch(BatchProvider):
    name = "mistral"
    endpoint = "/v1/chat/completions"
    limits = BatchLimits(max_requests=1_000_000, max_bytes=512 * MB, discount=0.5, window="24h (timeout_hours)")
    error_codes = OPENAI_CODES  # its error envelope follows OpenAI's (its 429 type is batchery's rate_limited)
    batch_states: ClassVar[Mapping[str, str]] = {
        "QUEUED": "submitted", "RUNNING": "running", "CANCELLATION_REQUESTED": "cancelling",
        "SUCCESS": "done", "FAILED": "failed", "TIMEOUT_EXCEEDED": "expired", "CANCELLED": "cancelled"}

    @functools.cached_property
    def _sdk_errors(self) -> Any:
        from mistralai.client import errors  # lazy: only the provider in use pays

        return errors

    @functools.cached_property
    def _no_retries(self) -> Any:
        # SDK retries off: the engine retries every provider's failed calls alike (Retry-After honoured).
        from mistralai.client import utils

        return utils.RetryConfig("none", None, False)  # type: ignore[arg-type]  # "none" reads no backoff

    @functools.cached_property
    def client(self) -> Any:
        # The SDK's client finalizer closes its async client with asyncio.run, whose httpcore
        # imports anyio's asyncio backend. A finalizer that runs during another import (a garbage
        # collection in the middle of `import anthropic`) and imports makes CPython 3.11's module
        # lock raise KeyError: imported with the client, the backend is loaded whenever that happens.
        import anyio._backends._asyncio  # noqa: F401
        from mistralai.client import Mistral  # lazy: only the provider in use pays

        return Mistral(api_key=self.api_key, server_url=self.base_url, retry_config=self._no_retries)

    live_path = "/v1/chat/completions"
    default_base_url = "https://api.mistral.ai"

    def live_payload(self, body: dict, model: str) -> dict:
        return {**body, "model": model}  # batch lines leave the model to the job

    # -- live mode -----------------------------------------------------------------------------

    def open_live_client(self):
        return self.client  # the same client has the async methods

    async def send(self, body: dict, model: str) -> LiveResponse:
        """chat.complete through the SDK (it has no raw call): the parsed answer is dumped back to
        JSON, and a refusal arrives as the SDK's error with the HTTP response attached."""
        with self._errors("live call"):  # no answer at all: TransientError
            try:
                answer = await self.client.chat.complete_async(**{**body, "model": model}, retries=self._no_retries)
            except self._sdk_errors.MistralError as exc:
                response = exc.raw_response
                return LiveResponse(response.status_code, response.headers, response.content)
        return LiveResponse(200, {}, orjson.dumps(answer.model_dump(mode="json", by_alias=True)))

    def decode_live(self, custom_id: str, status: int, body) -> Outcome | None:
        return decode_line(orjson.dumps({"custom_id": custom_id, "response": {"status_code": status, "body": body}}))

    async def aclose(self) -> None:
        self._live_client = None  # shared with batch calls: closed with them

    # -- requests out --------------------------------------------------------------------------

    def check(self, request: dict) -> str | None:
        if "reasoning" in request and "effort" not in request["reasoning"]:
            return ("mistral takes reasoning as {\"effort\": \"low\"|\"medium\"|\"high\"} (reasoning_effort), "
                    "not a token budget")
        return None

    model_in_body = False

    def translate(self, request: dict) -> dict:
        return chat_body(request)

    def upload(self, path: Path) -> str:
        with self._errors("upload"), path.open("rb") as f:
            return self.client.files.upload(file={"file_name": path.name, "content": f}, purpose="batch").id

    def create(self, input_file: str, model: str, tag: str) -> RemoteBatch:
        with self._errors("create"):
            job = self.client.batch.jobs.create(
                endpoint=self.endpoint,
                input_files=[input_file], model=model,
                metadata={TAG_KEY: tag}, timeout_hours=TIMEOUT_HOURS, retries=None,
            )
        return _remote(job)

    # -- watching ------------------------------------------------------------------------------

    def fetch(self, remote_id: str) -> RemoteBatch:
        return _remote(self.client.batch.jobs.get(job_id=remote_id))

    def cancel(self, remote_id: str) -> None:
        try:
            with self._errors("cancel"):
                self.client.batch.jobs.cancel(job_id=remote_id)
        except ProviderError:
            # A job that has already ended cannot be cancelled; its results are collected as usual.
            if not self.poll([remote_id])[remote_id].ended:
                raise

    def listed(self) -> Iterator[RemoteBatch]:
        """Mistral pages by number and reports the total."""
        page = 0
        while True:
            listing = self.client.batch.jobs.list(page=page, page_size=_PAGE_SIZE, order_by="-created")
            jobs = listing.data or []
            yield from map(_remote, jobs)
            page += 1
            if not jobs or page * _PAGE_SIZE >= listing.total:
                return

    # -- results in ----------------------------------------------------------------------------

    def outcomes(self, remote: RemoteBatch) -> Iterator[Outcome]:
        for file_id in (remote.output_file, remote.error_file):
            if not file_id:
                continue
            with self._errors("download"):
                response = self.client.files.download(file_id=file_id)
                try:
                    yield from decode_stream(response.iter_bytes(1 << 20), decode_line)
                finally:
                    response.close()

    def describe_error(self, exc: Exception) -> CallFailure | None:
        errors = self._sdk_errors
        if isinstance(exc, errors.NoResponseError):
            return CallFailure(None, f"{type(exc).__name__}: {exc}")
        if isinstance(exc, errors.MistralError):
            return CallFailure(exc.status_code, _message(exc), None, retry_after_of(exc.raw_response.headers))
        return None


def _message(exc) -> str:
    """The human part of a Mistral error body: ``message``, or FastAPI's ``detail`` (a string or a
    list of ``{loc, msg}``); the SDK's whole message when the body is not JSON."""
    try:
        body = orjson.loads(exc.body)
    except (orjson.JSONDecodeError, TypeError):
        return str(exc.message)[:500]
    if isinstance(body, dict):
        if isinstance(body.get("message"), str):
            return body["message"]
        detail = body.get("detail")
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list):
            return "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}"
                             for d in detail if isinstance(d, dict))
    return str(exc.message)[:500]


def chat_body(request: dict) -> dict:
    """Neutral request -> Mistral chat completion body (the model is set on the job, not here)."""
    messages = [{"role": _ROLES.get(m["role"], m["role"]), "content": m["content"]} for m in request["messages"]]
    if "system" in request:
        messages.insert(0, {"role": "system", "content": request["system"]})
    if messages[-1]["role"] == "assistant":  # a prefill: Mistral continues it only when told so
        messages[-1]["prefix"] = True
    return chat_options(request, {"messages": messages}, ("max_tokens", "temperature", "top_p", "stop"), strict=True)


def decode_line(line: bytes) -> Outcome | None:
    """One output/error-file line -> Outcome; None when the line is unreadable (it then counts as missing)."""
    if (read := read_line(line)) is None:
        return None
    custom_id, obj = read
    response = got if isinstance(got := obj.get("response"), dict) else {}
    status, body, error = response.get("status_code"), response.get("body"), obj.get("error")
    raw = orjson.dumps(body) if body is not None else None
    ok = error is None and (status is None or status < 400) and isinstance(body, dict)
    if ok and isinstance(body, dict) and body.get("choices"):  # (ok implies a dict; said again for mypy)
        return Outcome.succeeded(custom_id, _text(body), raw, *chat_usage(body))
    code, message = _failure(status, body, error)
    return Outcome.failed(custom_id, code, message, raw)


def _text(body: dict) -> str | None:
    """The answer's text. Content is a string, or (reasoning models) a list of chunks where thinking
    chunks precede the text chunks; only the text is the answer."""
    message = body["choices"][0].get("message") or {}
    content = message.get("content")
    if isinstance(content, list):
        return "".join(c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "text")
    return content if isinstance(content, str) else None


def _failure(status: Any, body: Any, error: Any) -> tuple[str, str]:
    """(code, message) of a failed line, from whichever of ``error`` / the response body says most."""
    envelope = body if isinstance(body, dict) else {}
    detail = error if isinstance(error, dict) else {}
    code = (detail.get("code") or detail.get("type") or envelope.get("type") or envelope.get("code")
            or (f"http_{status}" if status else "error"))
    if isinstance(error, str) and error:
        message = error
    else:
        message = detail.get("message") or envelope.get("message") or envelope.get("detail") or (
            f"request failed with status {status}" if isinstance(status, int) and status >= 400
            else "no completion in the response")
    return str(code), str(message)


def _remote(job) -> RemoteBatch:
    metadata = job.metadata if isinstance(job.metadata, dict) else {}
    output_file = job.output_file if isinstance(job.output_file, str) else None
    error_file = job.error_file if isinstance(job.error_file, str) else None
    # A FAILED job without result files failed as a whole (e.g. a malformed input file): its
    # errors apply to every line. With files, its lines are collected like any other.
    failed_whole = job.status == "FAILED" and not (output_file or error_file)
    error = None
    if failed_whole:
        error = "; ".join(f"{e.message} (x{e.count})" if (e.count or 1) > 1 else e.message
                          for e in job.errors) or "the batch job failed"
    return RemoteBatch(
        remote_id=job.id,
        status=job.status,
        ended=job.status not in _IN_FLIGHT,
        tag=metadata.get(TAG_KEY),
        output_file=output_file,
        error_file=error_file,
        error=error,
        leftover=MistralBatch.leftover_of(job.status),
        total=job.total_requests,
        completed=job.succeeded_requests,
        failed=job.failed_requests,
    )
