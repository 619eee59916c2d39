"""HTTP routes of the OpenAI Files + Batches API, over a FileStore and the shared lifecycle.

Parametrised by URL prefix and provider name so the same routes can be mounted again for
OpenAI-compatible services (Groq lives under ``/openai/v1``) with their own files, batches and
stats. Heavy work (copying uploads, scanning input files, producing results) runs in the thread
pool so one big batch does not stall the event loop. Where a batch stands is the lifecycle's
business (:mod:`.lifecycle`); this module translates it to OpenAI's wire: ``request_counts.total``
is 0 while validating (and for failed batches), ``completed`` counts successes, ``failed`` counts
executed requests that were rejected; requests that never ran (expired / cancelled) are in
neither, and appear in the error file with ``batch_expired`` / ``batch_cancelled``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from .lifecycle import Batch, FilesAndBatches
from .responses import ApiError, JSONResponse
from .results import build_results
from .state import FileStore, copy_upload, new_id
from .validation import MAX_LINES, check_input_file

FILE_PURPOSES = frozenset(
    {"assistants", "assistants_output", "batch", "batch_output", "fine-tune", "fine-tune-results", "vision", "user_data", "evals"}
)
UPLOAD_PURPOSES = FILE_PURPOSES - {"assistants_output", "batch_output", "fine-tune-results"}
MAX_BATCH_INPUT_BYTES = 200 * 1024 * 1024
MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512


@dataclass(kw_only=True, eq=False)
class OpenAIBatch(Batch):
    endpoint: str
    input_file_id: str
    input_path: Path
    completion_window: str
    metadata: dict | None
    model: str | None
    output_file_id: str | None = None
    error_file_id: str | None = None
    usage: dict | None = None


class OpenAICompatible(FilesAndBatches[OpenAIBatch]):
    """One mounted instance of the Files + Batches API (its own namespace of files and batches)."""

    def __init__(self, *, endpoints: tuple[str, ...] = ("/v1/chat/completions",),
                 windows: tuple[str, ...] = ("24h",), max_lines: int = MAX_LINES, **config: Any) -> None:
        super().__init__(max_lines=max_lines, **config)
        self.endpoints, self.windows = endpoints, windows
        self.files = FileStore(self.data_dir, self.clock)

    # -- files -----------------------------------------------------------------------------------

    async def upload_file(self, request: Request) -> Response:
        async with request.form(max_files=1, max_fields=50) as form:
            upload, purpose = form.get("file"), form.get("purpose")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
            if not isinstance(purpose, str) or purpose not in UPLOAD_PURPOSES:
                raise ApiError(400, f"Invalid value for 'purpose': {purpose!r}.", param="purpose", code="invalid_value")
            ttl_field = form.get("expires_after[seconds]")
            ttl = int(ttl_field) if isinstance(ttl_field, str) and ttl_field.isdigit() else 30 * 24 * 3600
            path = self.files.blob_path()
            size, _ = await run_in_threadpool(copy_upload, upload, path)
        limit = MAX_BATCH_INPUT_BYTES if purpose == "batch" else MAX_FILE_BYTES
        if size > limit:
            path.unlink(missing_ok=True)
            raise ApiError(400, f"File is too large: {size} bytes (limit {limit}).", param="file", code="file_too_large")
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
        if q.get("after"):
            ids = [f.id for f in files]
            files = files[ids.index(q["after"]) + 1:] if q["after"] in ids else []
        limit = _int_param(q.get("limit"), default=10000, low=1, high=10000)
        page = files[:limit]
        return JSONResponse(_list_page([f.to_json() for f in page], len(files) > limit))

    async def retrieve_file(self, request: Request) -> Response:
        return JSONResponse(self.file(request).to_json())

    async def file_content(self, request: Request) -> Response:
        stored = self.file(request)
        self.stats.add(self.provider, "files_downloaded")
        return self.faults.download(stored.path)

    def no_file(self, file_id: str) -> ApiError:
        return ApiError(404, f"No such File object: {file_id}", param="id")

    # -- batches ---------------------------------------------------------------------------------

    async def create_batch(self, request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise ApiError(400, "We could not parse the JSON body of your request.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        input_file_id = _required_str(body, "input_file_id")
        endpoint = _required_str(body, "endpoint")
        window = _required_str(body, "completion_window")
        if endpoint not in self.endpoints:
            raise ApiError(400, f"Invalid value for 'endpoint': {endpoint!r}. Supported: {', '.join(self.endpoints)}.", param="endpoint", code="invalid_value")
        if window not in self.windows:
            raise ApiError(400, f"Invalid value for 'completion_window': {window!r}. Supported: {', '.join(self.windows)}.", param="completion_window", code="invalid_value")
        metadata = _check_metadata(body.get("metadata"))
        stored = self.files.get(input_file_id)
        if stored is None:
            raise ApiError(400, f"Input file {input_file_id} does not exist.", param="input_file_id", code="invalid_value")
        if stored.purpose != "batch":
            raise ApiError(400, f"Input file {input_file_id} has purpose {stored.purpose!r}; batches need purpose 'batch'.", param="input_file_id", code="invalid_value")
        check = await run_in_threadpool(check_input_file, stored.path, endpoint, self.max_lines)
        batch = self.batches.add(OpenAIBatch(
            id=new_id("batch_"), created=self.now(), timing=self.timing,
            window=self.timing.completion_window_seconds, total=check.total, bad=check.bad,
            failure=check.errors or None, endpoint=endpoint, input_file_id=input_file_id, input_path=stored.path,
            completion_window=window, metadata=metadata, model=check.model))
        self.files.pin(stored.path)  # a client may delete its input while the batch still reads it
        return self.faults.lost(JSONResponse(self.batch_json(batch)))

    async def list_batches(self, request: Request) -> Response:
        self.stats.add(self.provider, "batch_lists")
        q = request.query_params
        limit = _int_param(q.get("limit"), default=20, low=1, high=100)
        batches = self.batches.newest_first()
        if q.get("after"):
            ids = [b.id for b in batches]
            if q["after"] not in ids:
                raise ApiError(400, f"Invalid 'after': no batch {q['after']!r}.", param="after", code="invalid_value")
            batches = batches[ids.index(q["after"]) + 1:]
        page = batches[:limit]
        await run_in_threadpool(self.batches.advance, *page)
        return JSONResponse(_list_page([self.batch_json(b) for b in page], len(batches) > limit))

    async def cancel_batch(self, request: Request) -> Response:
        batch = self.batch(request)
        if not await run_in_threadpool(self.batches.cancel, batch):
            raise ApiError(409, f"Cannot cancel a batch with status '{batch.word(self.shape)}'.", retry=False)
        return JSONResponse(self.batch_json(batch))

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
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": int(batch.created),
            "expires_at": int(batch.expires),
            "request_counts": {"total": batch.total if validated else 0, "completed": done - failed if validated else 0,
                               "failed": failed if validated else 0},
            "metadata": batch.metadata,
            "model": batch.model,
            "usage": batch.usage or _zero_usage(),
        }
        doc.update({name: None if t is None else int(t) for name, t in batch.times(self.shape).items()})
        return doc

    def end(self, batch: OpenAIBatch, phase: str) -> None:
        """The results hook: both result files, written once (see :mod:`.results`)."""
        if phase != "failed":
            unexecuted = {"expired": "batch_expired", "cancelled": "batch_cancelled"}.get(phase)
            results = build_results(batch.input_path, secrets.token_hex(8), batch.done or 0, unexecuted,
                                    int(batch.stamps[phase]), batch.bad,
                                    lambda files: self.batches.corrupt(batch, *files), behaviour=self.behaviour,
                                    provider=self.provider)
            for kind, content in (("output", results.output), ("error", results.errors)):
                # like OpenAI: no file when there is nothing to put in it
                stored = self.files.add_lines(content.splitlines(), f"{batch.id}_{kind}.jsonl", "batch_output")
                setattr(batch, f"{kind}_file_id", stored and stored.id)
            batch.usage = results.usage
        self.files.unpin(batch.input_path)


def _zero_usage() -> dict:
    return {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
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
