"""HTTP routes of the OpenAI Files + Batches API, backed by a FileStore and a BatchBook.

Parametrised by URL prefix and provider name so the same routes can be mounted again for
OpenAI-compatible services (Groq lives under ``/openai/v1``) with their own files, batches and
stats. Heavy work (copying uploads, scanning input files, producing results) runs in the thread
pool so one big batch does not stall the event loop. A :class:`~.faults.FaultPlan` makes the
routes misbehave on purpose: http_* errors at the mount's gate, lost creates and cut downloads
here, everything that happens to a batch in its :class:`BatchBook`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route

from .batches import Batch, BatchBook, Timing
from .clock import Clock
from .fake_model import Behaviour
from .faults import CutConnection, FaultGate, FaultPlan, cut_file_response, truncated_file_response
from .responses import ApiError, JSONResponse
from .state import FileStore, StoredFile, Stats
from .validation import MAX_LINES, check_input_file

FILE_PURPOSES = frozenset(
    {"assistants", "assistants_output", "batch", "batch_output", "fine-tune", "fine-tune-results", "vision", "user_data", "evals"}
)
UPLOAD_PURPOSES = FILE_PURPOSES - {"assistants_output", "batch_output", "fine-tune-results"}
MAX_BATCH_INPUT_BYTES = 200 * 1024 * 1024
MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512


# The envelopes real OpenAI sends for these statuses (research §2.8).
_FAULT_ERRORS = {
    429: ("Rate limit reached for requests. Please try again later.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    503: ("The server is overloaded or not ready yet.", "server_error", None),
}


def _fault_response(status: int) -> Response:
    message, kind, code = _FAULT_ERRORS[status]
    return ApiError(status, message, type=kind, code=code).response()


class OpenAICompatible:
    """One mounted instance of the Files + Batches API (its own namespace of files and batches)."""

    accepts_faults = True  # the Emulator hands such services its FaultPlan

    def __init__(self, *, provider: str, prefix: str, data_dir: Path, clock: Clock, stats: Stats,
                 timing: Timing, endpoints: tuple[str, ...] = ("/v1/chat/completions",),
                 windows: tuple[str, ...] = ("24h",), max_lines: int = MAX_LINES,
                 faults: FaultPlan | None = None, behaviour: Behaviour | None = None) -> None:
        self.provider, self.prefix, self.clock, self.stats = provider, prefix, clock, stats
        self.behaviour = behaviour
        self.timing, self.endpoints, self.windows, self.max_lines = timing, endpoints, windows, max_lines
        data_dir.mkdir(parents=True, exist_ok=True)
        self.faults = (faults or FaultPlan()).injector(provider, stats)
        self.files = FileStore(data_dir, clock)
        self.batches = BatchBook(provider, self.files, clock, stats, self.faults if faults else None, behaviour)
        stats.register(provider)

    def mount(self) -> Mount:
        gate = [Middleware(FaultGate, faults=self.faults, render=_fault_response)] if self.faults.plan.http_active else None
        return Mount(self.prefix, middleware=gate, routes=[
            Route("/files", self.upload_file, methods=["POST"]),
            Route("/files", self.list_files, methods=["GET"]),
            Route("/files/{file_id}", self.retrieve_file, methods=["GET"]),
            Route("/files/{file_id}", self.delete_file, methods=["DELETE"]),
            Route("/files/{file_id}/content", self.file_content, methods=["GET"]),
            Route("/batches", self.create_batch, methods=["POST"]),
            Route("/batches", self.list_batches, methods=["GET"]),
            Route("/batches/{batch_id}", self.retrieve_batch, methods=["GET"]),
            Route("/batches/{batch_id}/cancel", self.cancel_batch, methods=["POST"]),
        ])

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
            size = await run_in_threadpool(_copy_to, upload, path)
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
        return JSONResponse(self._file(request).to_json())

    async def delete_file(self, request: Request) -> Response:
        stored = self._file(request)
        self.files.delete(stored.id)
        return JSONResponse({"id": stored.id, "object": "file", "deleted": True})

    async def file_content(self, request: Request) -> Response:
        stored = self._file(request)
        if self.faults.take("truncated_download"):
            return truncated_file_response(stored.path, stored.size)
        if self.faults.take("cut_download"):
            return cut_file_response(stored.path)
        return FileResponse(stored.path, media_type="application/octet-stream")

    def _file(self, request: Request) -> StoredFile:
        file_id = request.path_params["file_id"]
        stored = self.files.get(file_id)
        if stored is None:
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return stored

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
        batch = self.batches.create(endpoint, input_file_id, stored.path, window, metadata, self.timing, check)
        response = JSONResponse(batch.to_json(self.clock.now()))
        if self.faults.take("lost_create"):
            return CutConnection(response.body, media_type="application/json")
        return response

    async def retrieve_batch(self, request: Request) -> Response:
        batch = self._batch(request)
        self.stats.add(self.provider, "batch_gets")
        await run_in_threadpool(self.batches.advance, batch)
        return JSONResponse(batch.to_json(self.clock.now()))

    async def list_batches(self, request: Request) -> Response:
        self.stats.add(self.provider, "batch_lists")
        q = request.query_params
        limit = _int_param(q.get("limit"), default=20, low=1, high=100)
        page = self.batches.page(q.get("after") or None, limit)
        if page is None:
            raise ApiError(400, f"Invalid 'after': no batch {q.get('after')!r}.", param="after", code="invalid_value")
        batches, has_more = page
        docs = await run_in_threadpool(self._render_all, batches)
        return JSONResponse(_list_page(docs, has_more))

    async def cancel_batch(self, request: Request) -> Response:
        batch = self._batch(request)
        if not await run_in_threadpool(self.batches.cancel, batch):
            raise ApiError(409, f"Cannot cancel a batch with status '{batch.status}'.", retry=False)
        return JSONResponse(batch.to_json(self.clock.now()))

    def _render_all(self, batches: list[Batch]) -> list[dict]:
        for batch in batches:
            self.batches.advance(batch)
        now = self.clock.now()
        return [b.to_json(now) for b in batches]

    def _batch(self, request: Request) -> Batch:
        batch_id = request.path_params["batch_id"]
        batch = self.batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id")
        return batch


def _copy_to(upload: UploadFile, path: Path) -> int:
    upload.file.seek(0)
    with open(path, "wb") as out:
        shutil.copyfileobj(upload.file, out, 1024 * 1024)
        return out.tell()


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
