"""Together's Files and Batch API (``/v1/files``, ``/v1/batches``) as the ``together`` SDK sees it,
mounted under the service prefix (``/together``; the SDK's base_url is the emulator's URL plus that
prefix, and the SDK adds ``/v1``).

Fidelity notes (research §7 and §9):

* Upload takes three calls [SDK ``lib/resources/files.py``]. ``POST /v1/files`` (multipart fields
  purpose, file_name, file_type, checksum) answers **302** with ``Location`` (a presigned PUT URL)
  and ``X-Together-File-Id``. The SDK PUTs the raw bytes there (200 expected), then calls
  ``POST /v1/files/{id}/preprocess``, which answers the file object (``FileType`` key). The
  presigned URL lives beside the API, under ``<prefix>/storage/``, outside the key-checked path:
  the SDK sends it no API key, as it would to a storage bucket, so its one-time signature guards
  it instead. A file is visible, and counted as uploaded, once preprocessed; its sha256 must match
  the announced checksum by then.
* ``POST /v1/batches`` answers 201 with ``{"job": BatchJob}`` [DOC reference; OBS oumi]; retrieve
  and cancel answer the bare BatchJob; list answers a bare JSON array, newest first [order
  UNVERIFIED]. Timestamps are ISO-8601 strings, statuses upper-case, ``progress`` 0–100. There is
  no metadata. ``completion_window`` is ``24h`` or absent ("cannot be changed" [DOC]).
* Lifecycle: the shared one (:mod:`.lifecycle`, words in ``SHAPES``; no "cancelling" word);
  ``job_deadline`` is when it expires. Cancel is accepted while VALIDATING or IN_PROGRESS [DOC
  manage]; cancelling an ended job is refused with a 400 [UNVERIFIED].
* Results: executed successes in the output file, executed failures in the error file, as
  OpenAI-shaped lines ``{id, custom_id, response: {status_code, body}}`` [UNVERIFIED exact keys],
  in a scrambled but deterministic order (Together keeps no order). Requests that never ran
  (expiry, cancel) are in neither file [UNVERIFIED].
* An unknown model ("missing-*") fails its own lines with 404 ``model_not_available``, Together's
  chat answer, because Together reports per-request failures in the error file. The other
  per-request checks are the OpenAI-compatible ones (``check_chat_body``).
* Whole-input problems fail the job when validation ends: FAILED, an ``error`` message, no result
  files. They are a line that is not a JSON object with a ``custom_id`` (1–64 characters) and a
  ``body`` object, a repeated custom_id, more lines than the cap, or no lines at all.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from .fake_model import CHARS_PER_TOKEN, Behaviour, chat_reply, model_exists
from .lifecycle import FileBatch, FilesAndBatches, Scan, json_object, run_requests, scan_lines
from .live import Parsed, message_chars, token_cost
from .responses import ApiError, JSONResponse
from .state import FileStore, StoredFile
from .validation import check_chat_body

MAX_INPUT_BYTES = 100 * 1024 * 1024  # per batch input file [DOC overview]
MAX_CUSTOM_ID = 64
PURPOSES = ("fine-tune", "calibration", "eval", "batch-api")
FILE_TYPES = ("jsonl", "parquet", "csv")
ENDPOINTS = ("/v1/chat/completions", "/v1/audio/transcriptions", "/v1/audio/translations")
EFFORTS = ("low", "medium", "high")
WINDOW = "24h"
USER_ID = "user_emulator"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


# -- requests --------------------------------------------------------------------------------------


def _request_problem(body: dict) -> tuple[int, dict] | None:
    """(HTTP status, error object) Together's chat endpoint would refuse this body with, or None."""
    model = body.get("model")
    if isinstance(model, str) and not model_exists(model):
        return 404, {"message": f"Unable to access model {model}. Please visit https://api.together.ai/models "
                                "to view the list of supported models.",
                     "type": "invalid_request_error", "param": "model", "code": "model_not_available"}
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in EFFORTS:
        return 400, {"message": f"reasoning_effort must be one of {', '.join(EFFORTS)}, got {effort!r}.",
                     "type": "invalid_request_error", "param": "reasoning_effort", "code": "invalid_value"}
    problem = check_chat_body(body)
    return None if problem is None else (400, problem)


def _complete(body: dict, created: int, completion_id: str, *, behaviour: Behaviour | None = None) -> dict:
    """Together's chat.completion for a valid body: the neutral fake answer to the last user message,
    with a ``reasoning`` text when reasoning_effort asked for thinking (as Together's reasoning
    models return it)."""
    text, prompt_tokens, completion_tokens, truncated = chat_reply(body, body["model"], behaviour)
    message: dict[str, Any] = {"role": "assistant", "content": text, "tool_calls": []}
    if body.get("reasoning_effort"):
        message["reasoning"] = f"Thinking ({body['reasoning_effort']} effort) before answering."
        completion_tokens += -(-len(message["reasoning"]) // CHARS_PER_TOKEN)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": body["model"],
        "prompt": [],
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": "length" if truncated else "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


# -- input scan ------------------------------------------------------------------------------------


def _scan(path: Path, max_lines: int) -> Scan:
    """Check an input file once, streaming; stop at the first problem, which fails the whole job."""
    scan = Scan()
    seen: set[str] = set()
    for line in scan_lines(scan, [path], max_lines, f"Too many requests: a batch holds at most {max_lines}."):
        custom_id = line.get("custom_id") if isinstance(line, dict) else None
        well_formed = isinstance(custom_id, str) and 0 < len(custom_id) <= MAX_CUSTOM_ID
        if not (well_formed and isinstance(line.get("body"), dict)):
            scan.problem(f"Request {scan.total}: each line must be a JSON object with a custom_id "
                         f"(1-{MAX_CUSTOM_ID} characters) and a body object.")
            break
        if custom_id in seen:
            scan.problem(f"Request {scan.total}: custom_id {custom_id!r} is used more than once.")
            break
        seen.add(str(custom_id))  # a str: well_formed said so
        scan.bad.append(0 if _request_problem(line["body"]) is None else 1)
    if scan.total == 0:
        scan.problem("The input file contains no requests.")
    return scan


# -- jobs ------------------------------------------------------------------------------------------


@dataclass
class _Upload:
    """A file between ``POST /v1/files`` (its id handed out) and its preprocess call."""

    path: Path
    file_name: str
    purpose: str
    file_type: str
    checksum: str
    signature: str
    digest: str | None = None  # sha256 of the bytes PUT, once they were


def _batch_error(status: int, message: str, **fields: Any) -> ApiError:
    """An error of the batch routes, in the envelope Together's document gives them (``BatchErrorResponse``:
    the message as a plain string), not the chat routes' ``{"error": {"message", ...}}``."""
    return ApiError(status, message, shape="together_batch", **fields)


@dataclass(kw_only=True, eq=False)
class TogetherJob(FileBatch):
    input_file_id: str
    size: int
    model_id: str | None
    endpoint: str


class TogetherService(FilesAndBatches[TogetherJob]):
    """One mounted instance of Together's Files + Batch API, with its own files and jobs.

    ``prefix`` (what the auth middleware guards) is the API under ``<base>/v1``; the presigned
    upload URLs sit beside it under ``<base>/storage``.
    """

    cancel_settles = True
    result_kinds, result_purpose, result_ttl = ("output", "errors"), "batch-api", None

    def __init__(self, *, prefix: str, **config: Any) -> None:
        super().__init__(prefix=prefix + "/v1", **config)
        self.base = prefix
        self.files = FileStore(self.data_dir, self.clock)
        self._uploads: dict[str, _Upload] = {}  # file id -> its upload, until preprocessed into self.files
        self._types: dict[str, str] = {}  # file id -> FileType of an uploaded file (a result file's: jsonl)
        self._lock = threading.Lock()

    def routes(self) -> list[BaseRoute]:
        return [*super().routes(), Route("/files/{file_id}/preprocess", self.preprocess, methods=["POST"])]

    def mount(self) -> Mount:
        """The API (with its fault gate) under ``<base>/v1``, and the storage bucket beside it."""
        return Mount(self.base, routes=[
            Mount("/v1", middleware=self.gate(), routes=self.routes()),
            Route("/storage/{file_id}", self.receive_upload, methods=["PUT"]),
        ])

    # -- files -----------------------------------------------------------------------------------

    async def upload_file(self, request: Request) -> Response:
        """Step 1: register the file and answer 302 to a presigned PUT URL."""
        async with request.form(max_files=1, max_fields=20) as form:
            fields = {name: form.get(name) for name in ("purpose", "file_name", "file_type", "checksum")}
        purpose, file_name, file_type, checksum = fields.values()
        if purpose not in PURPOSES:
            raise ApiError(400, f"Invalid purpose {purpose!r}; expected one of {', '.join(PURPOSES)}.", param="purpose")
        if file_type not in FILE_TYPES:
            raise ApiError(400, f"Invalid file_type {file_type!r}; expected one of {', '.join(FILE_TYPES)}.",
                           param="file_type")
        for name in ("file_name", "checksum"):
            if not isinstance(fields[name], str) or not fields[name]:
                raise ApiError(400, f"Missing required field '{name}'.", param=name)
        file_id, signature = self.files.new_file_id(), secrets.token_urlsafe(18)
        upload = _Upload(self.files.blob_path(), str(file_name), str(purpose), str(file_type), str(checksum), signature)
        upload.path.touch()
        with self._lock:
            self._uploads[file_id] = upload
        location = request.url.replace(path=f"{self.base}/storage/{file_id}", query=f"signature={signature}")
        return Response(status_code=302, headers={"Location": str(location), "X-Together-File-Id": file_id})

    async def receive_upload(self, request: Request) -> Response:
        """Step 2, the storage side: take the bytes of a pending upload whose signature matches."""
        with self._lock:
            upload = self._uploads.get(request.path_params["file_id"])
        signature = request.query_params.get("signature", "")
        if upload is None or not secrets.compare_digest(signature, upload.signature):
            return Response("SignatureDoesNotMatch", status_code=403, media_type="text/plain")
        digest = hashlib.sha256()
        with open(upload.path, "wb") as out:  # noqa: ASYNC230 -- a test server writing a local temp file
            async for chunk in request.stream():
                out.write(chunk)
                digest.update(chunk)
        upload.digest = digest.hexdigest()
        return Response(status_code=200, headers={"ETag": f'"{upload.digest[:32]}"'})

    async def preprocess(self, request: Request) -> Response:
        """Step 3: the uploaded bytes become a file."""
        file_id = request.path_params["file_id"]
        with self._lock:
            upload = self._uploads.get(file_id)
            if upload is None:  # preprocessing twice is harmless
                return JSONResponse(self.file_json(self.file(request)))
            if upload.digest is None:
                raise ApiError(400, f"File {file_id} has no content yet: PUT it to the upload URL first.")
            if upload.digest != upload.checksum:
                raise ApiError(400, f"Checksum mismatch for file {file_id}: the uploaded bytes are not the "
                                    "announced file.", param="checksum")
            del self._uploads[file_id]
            self._types[file_id] = upload.file_type
            stored = self.files.add(upload.path, upload.file_name, upload.purpose, ttl=None, file_id=file_id)
        self.stats.add(self.provider, "files_uploaded")
        return JSONResponse(self.file_json(stored))

    async def list_files(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self.file_json(f) for f in self.files.newest_first()]})

    async def delete_file(self, request: Request) -> Response:
        stored = self.file(request)
        self.files.delete(stored.id)
        return JSONResponse({"id": stored.id, "deleted": True})

    def no_file(self, file_id: str) -> ApiError:
        return ApiError(404, f"File {file_id} not found.", code="not_found")

    def file_json(self, stored: StoredFile) -> dict:
        return {"id": stored.id, "object": "file", "bytes": stored.size, "created_at": stored.created_at,
                "filename": stored.filename, "FileType": self._types.get(stored.id, "jsonl"),
                "purpose": stored.purpose, "Processed": True}

    # -- live ------------------------------------------------------------------------------------

    live_path = "/chat/completions"

    def live(self, path: str, body: Any) -> Parsed:
        if not isinstance(body, dict):
            return ApiError(400, "The request body must be a JSON object.").response()
        problem = _request_problem(body)
        if problem is not None:
            return JSONResponse({"error": problem[1]}, status_code=problem[0])
        cost = token_cost(message_chars(body["messages"]), body.get("max_tokens"))
        return body["model"], cost, lambda: _complete(body, int(self.now()), secrets.token_hex(8),
                                                      behaviour=self.behaviour)

    # -- batches ---------------------------------------------------------------------------------

    async def new_batch(self, request: Request) -> TogetherJob:
        body = await json_object(request)
        if body is None:
            raise _batch_error(400, "The request body must be a JSON object.")
        endpoint = body.get("endpoint")
        if endpoint not in ENDPOINTS:
            raise _batch_error(400, f"Invalid endpoint {endpoint!r}; expected one of {', '.join(ENDPOINTS)}.",
                           param="endpoint")
        if endpoint != "/v1/chat/completions":
            raise _batch_error(400, f"The emulator runs only /v1/chat/completions batches, not {endpoint}.",
                           param="endpoint")
        if body.get("completion_window", WINDOW) != WINDOW:
            raise _batch_error(400, f"completion_window is fixed at {WINDOW}.", param="completion_window")
        model_id = body.get("model_id")
        if model_id is not None and not isinstance(model_id, str):
            raise _batch_error(400, "model_id must be a string.", param="model_id")
        file_id = body.get("input_file_id")
        stored = self.files.get(file_id) if isinstance(file_id, str) else None
        if stored is None:
            raise _batch_error(400, f"Input file {file_id!r} not found.", param="input_file_id")
        if stored.purpose != "batch-api":
            raise _batch_error(400, f"Input file {file_id} has purpose {stored.purpose!r}; batches need 'batch-api'.",
                           param="input_file_id")
        size = stored.size
        if size > MAX_INPUT_BYTES:
            raise _batch_error(400, f"Input file is {size} bytes; a batch input holds at most {MAX_INPUT_BYTES}.",
                           param="input_file_id")
        scan = await run_in_threadpool(_scan, stored.path, self.max_lines)
        return TogetherJob(
            id=str(uuid.uuid4()), created=self.now(), timing=self.timing, total=scan.total, bad=scan.bad,
            window=self.timing.completion_window_seconds, failure=next(iter(scan.errors), None),
            input_file_id=stored.id, paths=[stored.path], size=size, model_id=model_id, endpoint=endpoint)

    def created(self, job: TogetherJob) -> Response:
        return JSONResponse({"job": self.batch_json(job)}, status_code=201)

    async def list_batches(self, request: Request) -> Response:
        self.stats.add(self.provider, "batch_lists")
        jobs = self.batches.newest_first()
        await run_in_threadpool(self.batches.advance, *jobs)
        return JSONResponse([self.batch_json(job) for job in jobs])

    def cannot_cancel(self, job: TogetherJob) -> ApiError:
        return _batch_error(400, f"Batch job {job.id} is {job.word(self.shape)}; only VALIDATING or "
                                 "IN_PROGRESS jobs can be cancelled.")

    def no_batch(self, batch_id: str) -> ApiError:
        return _batch_error(404, f"Batch job {batch_id} not found.")

    def batch_json(self, job: TogetherJob) -> dict:
        done, _ = job.progress(self.now())
        doc = {
            "id": job.id,
            "user_id": USER_ID,
            "input_file_id": job.input_file_id,
            "file_size_bytes": job.size,
            "status": job.word(self.shape),
            "job_deadline": _iso(job.expires),
            "created_at": _iso(job.created),
            "endpoint": job.endpoint,
            "progress": round(100.0 * done / job.total, 2) if job.total and job.failure is None else 0.0,
            "model_id": job.model_id,
            "output_file_id": job.output_file,
            "error_file_id": job.error_file,
            "error": job.failure if job.phase == "failed" else None,
            **{name: None if t is None else _iso(t) for name, t in job.times(self.shape).items()},
        }
        # Together's document types these as strings, never null: a field with no value is left out.
        return {name: value for name, value in doc.items() if value is not None}

    # -- results ---------------------------------------------------------------------------------

    def results(self, job: TogetherJob, phase: str) -> tuple[list[bytes], list[bytes]]:
        """The first ``done`` requests, run."""
        created, salt = int(job.stamps[phase]), secrets.token_hex(6)

        def answer(index: int, line: dict) -> tuple[bool, bytes]:
            line_id = f"req-{salt}{index:08x}"
            problem = _request_problem(line["body"]) if job.bad[index] else None
            if problem is None:
                body = _complete(line["body"], created, line_id, behaviour=self.behaviour)
                response = {"status_code": 200, "request_id": line_id, "body": body}
            else:
                response = {"status_code": problem[0], "request_id": line_id, "body": {"error": problem[1]}}
            return problem is None, orjson.dumps({"id": line_id, "custom_id": line["custom_id"],
                                                  "response": response})

        return run_requests(job.paths, answer, job.done or 0)
