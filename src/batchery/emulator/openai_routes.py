"""HTTP routes of the OpenAI Files + Batches API, over a FileStore and the shared lifecycle.

Parametrised by URL prefix and provider name so the same routes are mounted again for Groq
(:class:`GroqService`, under ``/groq/openai/v1``) with its own files, batches and stats. Heavy work
(copying uploads, scanning input files, producing results) runs in the thread pool so one big batch
does not stall the event loop. Where a batch stands is the lifecycle's business (:mod:`.lifecycle`);
this module translates it to OpenAI's wire: ``request_counts.total``
is 0 while validating (and for failed batches), ``completed`` counts successes, ``failed`` counts
executed requests that were rejected; requests that never ran (expired / cancelled) are in
neither, and appear in the error file with ``batch_expired`` / ``batch_cancelled``. Result lines
are written once, in a deterministic but scrambled order (:func:`.lifecycle.scrambled`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from .fake_model import Behaviour, complete_chat
from .lifecycle import FLEX_BUSY, FileBatch, FilesAndBatches, after, run_requests
from .live import Parsed, message_chars, token_cost
from .responses import ApiError, JSONResponse
from .state import FILE_TTL_SECONDS, FileStore, copy_upload, new_id
from .validation import check_chat_body, check_input_file

FILE_PURPOSES = frozenset(
    {"assistants", "assistants_output", "batch", "batch_output", "fine-tune", "fine-tune-results", "vision", "user_data", "evals"}
)
UPLOAD_PURPOSES = FILE_PURPOSES - {"assistants_output", "batch_output", "fine-tune-results"}
MAX_BATCH_INPUT_BYTES = 200 * 1024 * 1024
MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512
# "Durations from `24h` to `7d` are supported" [Groq's SDK docstring], in hours or in days.
GROQ_WINDOWS = tuple(f"{h}h" for h in range(24, 7 * 24 + 1)) + tuple(f"{d}d" for d in range(1, 8))
UNEXECUTED = {  # phase -> the error line of a request that never ran
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
    "cancelled": ("batch_cancelled", "This request was not executed because the batch was cancelled."),
}


@dataclass(kw_only=True, eq=False)
class OpenAIBatch(FileBatch):
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict | None
    model: str | None
    usage: dict | None = None


class OpenAICompatible(FilesAndBatches[OpenAIBatch]):
    """One mounted instance of the Files + Batches API (its own namespace of files and batches)."""

    def __init__(self, *, endpoints: tuple[str, ...] = ("/v1/chat/completions",),
                 windows: tuple[str, ...] = ("24h",), **config: Any) -> None:
        super().__init__(**config)
        self.endpoints, self.windows = endpoints, windows
        self.files = FileStore(self.data_dir, self.clock)

    # -- files -----------------------------------------------------------------------------------

    async def upload_file(self, request: Request) -> Response:
        async with request.form(max_files=1, max_fields=50) as form:
            upload, purpose = form.get("file"), form.get("purpose")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "Missing required parameter: 'file'.", param="file",
                               code="missing_required_parameter")
            if not isinstance(purpose, str) or purpose not in UPLOAD_PURPOSES:
                raise ApiError(400, f"Invalid value for 'purpose': {purpose!r}.", param="purpose", code="invalid_value")
            ttl_field = form.get("expires_after[seconds]")
            ttl = int(ttl_field) if isinstance(ttl_field, str) and ttl_field.isdigit() else FILE_TTL_SECONDS
            path = self.files.blob_path()
            size, _ = await run_in_threadpool(copy_upload, upload, path)
        limit = MAX_BATCH_INPUT_BYTES if purpose == "batch" else MAX_FILE_BYTES
        if size > limit:
            path.unlink(missing_ok=True)
            raise ApiError(400, f"File is too large: {size} bytes (limit {limit}).", param="file",
                           code="file_too_large")
        stored = self.files.add(path, upload.filename or "upload.jsonl", purpose, ttl)
        self.stats.add(self.provider, "files_uploaded")
        return JSONResponse(stored.to_json())

    async def list_files(self, request: Request) -> Response:
        q = request.query_params
        files = self.files.all()
        if q.get("purpose"):
            files = [f for f in files if f.purpose == q["purpose"]]
        if q.get("order", "desc") == "desc":
            files.reverse()
        files = after(files, q.get("after"))
        limit = _int_param(q.get("limit"), default=10000, low=1, high=10000)
        page = files[:limit]
        return JSONResponse(_list_page([f.to_json() for f in page], len(files) > limit))

    def no_file(self, file_id: str) -> ApiError:
        return ApiError(404, f"No such File object: {file_id}", param="id")

    # -- live ------------------------------------------------------------------------------------

    live_path = "/chat/completions"

    def live(self, path: str, body: Any) -> Parsed:
        if not isinstance(body, dict):
            return ApiError(400, "We could not parse the JSON body of your request. "
                                 "The API expects a JSON object.").response()
        if body.get("stream"):
            return ApiError(400, "The emulator does not stream; send stream=false.", param="stream",
                            code="invalid_value").response()
        problem = check_chat_body(body)
        if problem is not None:
            return JSONResponse({"error": problem}, status_code=404 if problem["code"] == "model_not_found" else 400)
        cost = token_cost(message_chars(body["messages"]), body.get("max_completion_tokens") or body.get("max_tokens"))
        flex = self.provider == "openai" and body.get("service_tier") == "flex"
        if flex and self.flex_busy(body["model"], body):
            return ApiError(429, FLEX_BUSY, type="resource_unavailable", code="resource_unavailable").response()
        answer = partial(complete_chat, body, created=int(self.now()), behaviour=self.behaviour, provider=self.provider)
        return body["model"], cost, (lambda: {**answer(), "service_tier": "flex"}) if flex else answer

    # -- batches ---------------------------------------------------------------------------------

    async def new_batch(self, request: Request) -> OpenAIBatch:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise ApiError(400, "We could not parse the JSON body of your request.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        input_file_id = _required_str(body, "input_file_id")
        endpoint = _required_str(body, "endpoint")
        window = _required_str(body, "completion_window")
        for name, value, allowed in (("endpoint", endpoint, self.endpoints), ("completion_window", window, self.windows)):
            if value not in allowed:
                raise ApiError(400, f"Invalid value for '{name}': {value!r}. Supported: {', '.join(allowed)}.",
                               param=name, code="invalid_value")
        metadata = _check_metadata(body.get("metadata"))
        stored = self.files.get(input_file_id)
        if stored is None:
            raise ApiError(400, f"Input file {input_file_id} does not exist.", param="input_file_id",
                           code="invalid_value")
        if stored.purpose != "batch":
            raise ApiError(400, f"Input file {input_file_id} has purpose {stored.purpose!r}; batches need purpose "
                                "'batch'.", param="input_file_id", code="invalid_value")
        check = await run_in_threadpool(check_input_file, stored.path, endpoint, self.max_lines)
        return OpenAIBatch(
            id=new_id("batch_"), created=self.now(), timing=self.timing,
            window=self.timing.completion_window_seconds, total=check.total, bad=check.bad,
            failure=check.errors or None, endpoint=endpoint, input_file_id=input_file_id, paths=[stored.path],
            completion_window=window, metadata=metadata, model=check.model)

    async def list_batches(self, request: Request) -> Response:
        self.stats.add(self.provider, "batch_lists")
        q = request.query_params
        limit = _int_param(q.get("limit"), default=20, low=1, high=100)
        batches = after(self.batches.newest_first(), q.get("after"), lambda cursor: ApiError(
            400, f"Invalid 'after': no batch {cursor!r}.", param="after", code="invalid_value"))
        page = batches[:limit]
        await run_in_threadpool(self.batches.advance, *page)
        return JSONResponse(_list_page([self.batch_json(b) for b in page], len(batches) > limit))

    def cannot_cancel(self, batch: OpenAIBatch) -> ApiError:
        return ApiError(409, f"Cannot cancel a batch with status '{batch.word(self.shape)}'.", retry=False)

    def no_batch(self, batch_id: str) -> ApiError:
        return ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id")

    def batch_json(self, batch: OpenAIBatch) -> dict:
        validated = batch.phase not in ("validating", "failed")
        done, failed = batch.progress(self.now())
        errors = batch.failure if batch.phase == "failed" else None
        doc = {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "errors": {"object": "list", "data": errors} if errors else None,
            "input_file_id": batch.input_file_id,
            "completion_window": batch.completion_window,
            "status": batch.word(self.shape),
            "output_file_id": batch.output_file,
            "error_file_id": batch.error_file,
            "created_at": int(batch.created),
            "expires_at": int(batch.expires),
            "request_counts": {"total": batch.total if validated else 0, "completed": done - failed if validated else 0,
                               "failed": failed if validated else 0},
            "metadata": batch.metadata,
            "model": batch.model,
            "usage": batch.usage or _usage(0, 0),
        }
        doc.update({name: None if t is None else int(t) for name, t in batch.times(self.shape).items()})
        return doc

    # -- results ---------------------------------------------------------------------------------

    def results(self, batch: OpenAIBatch, phase: str) -> tuple[list[bytes], list[bytes]]:
        ok, errors, batch.usage = answer_lines(batch.paths, batch.done or 0, phase, int(batch.stamps[phase]),
                                               batch.bad, behaviour=self.behaviour, provider=self.provider)
        return ok, errors


class GroqService(OpenAICompatible):
    """Groq's Files + Batches API: the OpenAI routes again, with its own files, batches and stats.
    Groq's SDK joins ``/openai/v1/...`` to its base URL, so the service is given the SDK base path
    (``/groq``) and mounts the routes beneath it. ``completion_window`` may be any duration from
    ``24h`` to ``7d`` (research §8); lines, statuses, expiry and cancel are OpenAI's."""

    def __init__(self, *, prefix: str, **config: Any) -> None:
        super().__init__(prefix=prefix + "/openai/v1", windows=GROQ_WINDOWS, **config)


def answer_lines(paths: list[Path], done: int, phase: str, created: int, bad: bytearray, *,
                 behaviour: Behaviour | None = None, provider: str = "openai"
                 ) -> tuple[list[bytes], list[bytes], dict]:
    """A batch's result lines, scrambled: (output, errors, usage). The first ``done`` requests ran
    (through the fake model; ``bad[i]`` marks those that fail ``check_chat_body``, which saves
    re-checking every good one); the rest, expired or cancelled, are error lines with ``batch_expired``
    / ``batch_cancelled``. ``provider`` (openai or groq) words the answers' service tier."""
    salt, tokens = secrets.token_hex(8), [0, 0]

    def answer(index: int, line: dict) -> tuple[bool, bytes]:
        suffix = f"{salt}{index:06x}"
        record: dict[str, Any] = {"id": "batch_req_" + suffix, "custom_id": line["custom_id"]}
        if index >= done:
            code, message = UNEXECUTED[phase]
            return False, orjson.dumps(record | {"response": None, "error": {"code": code, "message": message}})
        problem = check_chat_body(line["body"]) if bad[index] else None
        if problem is not None:
            status = 404 if problem["code"] == "model_not_found" else 400
            response = {"status_code": status, "request_id": "req_" + suffix, "body": {"error": problem}}
            return False, orjson.dumps(record | {"response": response, "error": None})
        completion = complete_chat(line["body"], created=created, behaviour=behaviour, provider=provider)
        tokens[0] += completion["usage"]["prompt_tokens"]
        tokens[1] += completion["usage"]["completion_tokens"]
        response = {"status_code": 200, "request_id": "req_" + suffix, "body": completion}
        return True, orjson.dumps(record | {"response": response, "error": None})

    ok, errors = run_requests(paths, answer)
    return ok, errors, _usage(*tokens)


def _usage(input_tokens: int, output_tokens: int) -> dict:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def _list_page(data: list[dict], has_more: bool) -> dict:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def _int_param(raw: str | None, *, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"Invalid integer: {raw!r}.", param="limit", code="invalid_type") from None
    if value < low:
        raise ApiError(400, f"Invalid 'limit': must be >= {low}.", param="limit", code="integer_below_min_value")
    return min(value, high)


def _required_str(body: dict, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
    return value


def _check_metadata(metadata: Any) -> dict | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise ApiError(400, "Invalid type for 'metadata': expected an object.", param="metadata", code="invalid_type")
    if len(metadata) > MAX_METADATA_PAIRS:
        raise ApiError(400, f"Invalid 'metadata': at most {MAX_METADATA_PAIRS} key-value pairs.", param="metadata", code="invalid_value")
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY:
            raise ApiError(400, f"Invalid 'metadata': keys are at most {MAX_METADATA_KEY} characters.", param="metadata", code="invalid_value")
        if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE:
            raise ApiError(400, f"Invalid 'metadata': values are strings of at most {MAX_METADATA_VALUE} characters.", param="metadata", code="invalid_value")
    return metadata
