"""Together Batch API adapter (Files + ``/v1/batches``, endpoint /v1/chat/completions) on the
official ``together`` SDK.

What this module relies on (research §7, read against ``together`` 3.1.1):

* Input lines are ``{custom_id, body}``, the model inside the body. The body is OpenAI's Chat
  Completions body with Together's differences: roles are system/user/assistant/tool (a neutral
  ``developer`` message goes out as ``system``), the cap is ``max_tokens``, a JSON schema is
  ``response_format`` json_schema, and reasoning is ``reasoning_effort`` (low/medium/high, typed in
  the SDK's chat parameters). A token budget has no Together equivalent (``reasoning.enabled`` only
  switches thinking on or off), so ``check`` refuses it.
* Upload is the SDK's ``files.upload`` with ``purpose="batch-api"``: POST, a 302 to a presigned URL,
  a PUT of the bytes, then ``/preprocess``. Its client-side check is off: batchery wrote the file
  from validated requests, the server validates it again while VALIDATING (the same errors, says
  Together), and the check would read up to 100 MB twice more. The PUT goes through the SDK's raw
  httpx client, so its network errors arrive as httpx exceptions, and the SDK re-raises any non-302
  answer to the first POST (a 500 too) as a plain ``APIStatusError``: errors are therefore
  classified by status code, not by exception class.
* Create answers ``{"job": …}``; list answers a bare array of every batch in one call, so ``poll`` is
  one call. Statuses are upper-case; COMPLETED, FAILED, EXPIRED and CANCELLED are final. Together
  cancels only VALIDATING or IN_PROGRESS jobs; a refused cancel of an ended job is not an error.
* Results are OpenAI-shaped lines (decoded by the OpenAI adapter's decoder), with successes in
  ``output_file_id`` and per-request failures in ``error_file_id``, in no particular order. Lines that
  never ran (EXPIRED, CANCELLED) are in neither file, and end expired or cancelled. A FAILED job
  without result files failed validation, and its ``error`` applies to every line. Usage has only
  ``prompt_tokens`` and ``completion_tokens``; Together reports no cached or reasoning counts.

Finding a batch whose create response was lost: Together's batch has no metadata, name or
description. The most reliable evidence is its input file. The engine writes each batch to
``<tag>.jsonl``, and the SDK uploads that file under its own name (``file_name``), which Together
keeps as the file's ``filename``. Every batch names its ``input_file_id``. ``find`` lists the files
and the batches (two calls) and follows batch → input file → name → tag. A tag is 64 random bits,
so a name match cannot be someone else's batch. Model, creation time or size would only be
circumstantial evidence.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import ClassVar

import orjson

from ..errors import ProviderError
from ..limits import MB, BatchLimits
from .base import (
    Outcome,
    RemoteBatch,
    StainlessBatch,
)
from .openai import OPENAI_CODES, decode_line, decode_response, file_outcomes
from .openai import chat_body as openai_chat_body

COMPLETION_WINDOW = "24h"  # Together's only window
_ENDED = frozenset({"COMPLETED", "FAILED", "EXPIRED", "CANCELLED"})
# Together's chat roles are system/user/assistant/tool: a developer message is a system instruction.
_ROLES = {"developer": "system"}


def input_file_name(tag: str) -> str:
    """The name the engine gives a batch's input file (``<tag>.jsonl``), which ``find`` looks for."""
    return f"{tag}.jsonl"


class TogetherBatch(StainlessBatch):
    name = "together"
    endpoint = "/v1/chat/completions"
    limits = BatchLimits(max_requests=50_000, max_bytes=100 * MB, discount=0.5, window="24h best effort",
                         max_enqueued_tokens=30_000_000_000)  # "30B tokens enqueued per model"
    # The upload's PUT raises httpx's transport errors as they are: base._errors catches those.
    # The SDK words every 401 on upload as "exceed your free trial credits", a wrong key included:
    # the status decides (an account failure, whose message names TOGETHER_API_KEY).
    sdk_module, sdk_client = "together", "Together"
    live_path = "/v1/chat/completions"
    default_base_url = "https://api.together.ai"
    error_codes = OPENAI_CODES  # its error envelope is OpenAI's
    batch_states: ClassVar[Mapping[str, str]] = {
        "VALIDATING": "submitted", "IN_PROGRESS": "running", "COMPLETED": "done", "FAILED": "failed",
        "EXPIRED": "expired", "CANCELLED": "cancelled"}

    def decode_live(self, custom_id: str, status: int, body) -> Outcome | None:
        return decode_response(custom_id, status, body)

    # -- requests out --------------------------------------------------------------------------

    def check(self, request: dict) -> str | None:
        if "reasoning" in request and "effort" not in request["reasoning"]:
            return ("together takes reasoning as {\"effort\": \"low\"|\"medium\"|\"high\"} (reasoning_effort), "
                    "not a token budget")
        return None

    def translate(self, request: dict) -> dict:
        return chat_body(request)

    def upload(self, path: Path) -> str:
        with self._errors("upload"):
            return self.client.files.upload(file=path, purpose="batch-api", check=False).id

    def create(self, input_file: str, model: str, tag: str) -> RemoteBatch:
        # The tag travels as the input file's name (see the module docstring). No SDK retries: a
        # retried create whose first response was lost makes a second batch; the engine finds it.
        with self._errors("create"):
            created = self.client.batches.create(
                endpoint=self.endpoint,
                input_file_id=input_file, completion_window=COMPLETION_WINDOW,
                model_id=model,
            )
        if created.job is None:
            raise ProviderError(f"together create answered without a job: {created.warning or 'no reason given'}")
        return _remote(created.job, tag)

    # -- watching ------------------------------------------------------------------------------

    def find(self, tags: set[str]) -> dict[str, RemoteBatch]:
        names = {input_file_name(tag): tag for tag in tags}
        found: dict[str, RemoteBatch] = {}
        with self._errors("find batches"):
            file_tags = {f.id: names[f.filename] for f in self.client.files.list().data if f.filename in names}
            if not file_tags:  # none of their input files exists, so none of the batches can
                return found
            for job in self.client.batches.list():
                tag = file_tags.get(job.input_file_id or "")
                if tag is not None and tag not in found:
                    found[tag] = _remote(job, tag)
        return found

    def poll(self, remote_ids: list[str]) -> dict[str, RemoteBatch]:
        wanted = set(remote_ids)
        with self._errors("poll"):
            seen = {job.id: _remote(job) for job in self.client.batches.list() if job.id in wanted}
            for remote_id in wanted - seen.keys():  # not listed (yet): ask for it by id
                seen[remote_id] = _remote(self.client.batches.retrieve(remote_id))
        return seen

    def cancel(self, remote_id: str) -> None:
        try:
            with self._errors("cancel"):
                self.client.batches.cancel(remote_id)
        except ProviderError:
            # Only VALIDATING or IN_PROGRESS jobs can be cancelled; an ended one keeps its results.
            if not self.poll([remote_id])[remote_id].ended:
                raise

    # -- results in ----------------------------------------------------------------------------

    def outcomes(self, remote: RemoteBatch) -> Iterator[Outcome]:
        return file_outcomes(self, remote, decode_result)


def chat_body(request: dict) -> dict:
    """Neutral request -> Together chat completion body: OpenAI's, with Together's roles and cap."""
    body = openai_chat_body(request)
    body["messages"] = [{**m, "role": _ROLES.get(m["role"], m["role"])} for m in body["messages"]]
    if "max_completion_tokens" in body:
        body["max_tokens"] = body.pop("max_completion_tokens")
    return body


def decode_result(line: bytes) -> Outcome | None:
    """One output/error-file line -> Outcome. OpenAI's line shapes, plus the one Together's docs
    describe loosely ("pairs a custom_id with the failure reason"): a bare error string."""
    outcome = decode_line(line)
    if outcome is not None:
        return outcome
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("custom_id"), str) and isinstance(obj.get("error"), str):
        return Outcome.failed(obj["custom_id"], "error", obj["error"])
    return None


def _remote(job, tag: str | None = None) -> RemoteBatch:
    status = job.status or "UNKNOWN"
    # A FAILED job with result files stopped part-way: its lines are collected and the rest failed.
    # Without files it failed validation, and its error is every line's.
    rejected = status == "FAILED" and not (job.output_file_id or job.error_file_id)
    return RemoteBatch(
        remote_id=job.id,
        status=status,
        ended=status in _ENDED,
        tag=tag,
        output_file=job.output_file_id,
        error_file=job.error_file_id,
        error=(job.error or "the batch failed validation") if rejected else None,
        error_code="batch_failed" if rejected else None,
        leftover=TogetherBatch.leftover_of(status),
    )
