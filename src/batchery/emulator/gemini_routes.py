"""The Gemini Developer API's batch mode (``batches/…`` operations and the Files API) for the
official ``google-genai`` SDK, whose ``base_url`` is the emulator's URL plus this service's prefix.

Wire facts (research §4 and §9):

* every success is exactly HTTP 200 (the SDK raises on anything else); errors are
  ``{"error": {"code", "message", "status"}}``; ``/v1/…`` (SDK 3.x) and ``/v1beta/…`` (1.x, 2.x)
  are both served;
* a batch is a long-running Operation whose ``metadata`` holds all the SDK reads (``state`` as
  ``BATCH_STATE_*``, ``displayName``, ``model``, ``output``); ``done``, ``response`` and
  ``error`` are filled for REST clients; int64 stats are strings and zero stats are omitted, as
  proto3 JSON does; timestamps are RFC 3339 with nanoseconds;
* requests come inline (``inputConfig.requests.requests[{request, metadata}]``, under 20 MB) or
  as an uploaded JSONL file of ``{key, request}`` lines; results keep input order, inline in the
  batch (``get`` only, never ``list``) or in a generated file ``files/batch-…`` served at both
  ``/{v}/files/{id}:download`` and ``/download/{v}/files/{id}:download``;
* request fields are read in camelCase or snake_case (the SDK sends ``thinking_budget`` and
  ``display_name`` unconverted).

Lifecycle, computed lazily from the injected clock (S = ``processing_seconds``): PENDING for the
first 10 % of S, then RUNNING (request i is done once 10 %..90 % of S has elapsed in proportion),
SUCCEEDED at S. Reaching ``completion_window_seconds`` first gives EXPIRED *without* results, as
documented ("the job will not have any results to retrieve"). Cancel freezes progress; the batch
turns CANCELLED ``cancel_seconds`` later with the responses finished by then. An input file that
is not JSONL of ``{key, request}`` objects fails the batch (FAILED plus ``error``) at 10 % of S.
An unknown model is refused at create with 404 NOT_FOUND: the model is part of the URL.

Emulator choices where the real service is undocumented: list order is newest first; cancelling
an ended batch is 400 FAILED_PRECONDITION; per-request errors are ``google.rpc.Status`` objects
with RPC codes (3 = INVALID_ARGUMENT); thinking requests report a few ``thoughtsTokenCount``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.middleware import Middleware
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route

from .batches import Timing
from .clock import Clock
from .fake_model import Behaviour, model_exists, reply
from .faults import FaultGate, FaultPlan, cut_file_response, truncated_file_response
from .responses import JSONResponse
from .state import FileStore, Stats, StoredFile
from .validation import MAX_LINES

API_VERSIONS = frozenset({"v1", "v1beta"})
MAX_INLINE_BYTES = 20 * 1024 * 1024  # "inline requests must total under 20 MB"
MAX_FILE_BYTES = 2 * 1024 ** 3  # input files up to 2 GB
FILE_TTL_SECONDS = 48 * 3600
UPLOAD_GRANULARITY = 8 * 1024 * 1024
MAX_STOP_SEQUENCES = 5
LIST_PAGE = (50, 1000)  # batches per page: default, maximum
FILE_LIST_PAGE = (10, 100)
_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main."

PENDING, RUNNING, SUCCEEDED = "BATCH_STATE_PENDING", "BATCH_STATE_RUNNING", "BATCH_STATE_SUCCEEDED"
FAILED, CANCELLED, EXPIRED = "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"
ENDED = frozenset({SUCCEEDED, FAILED, CANCELLED, EXPIRED})

_HTTP_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND"}
_RPC_INVALID_ARGUMENT = 3
# Thoughts a thinking request reports per level (the fake model does not really think).
_THOUGHTS = {"MINIMAL": 4, "LOW": 16, "MEDIUM": 32, "HIGH": 64}


class GoogleError(Exception):
    """An HTTP error in Google's envelope, which the SDK reads into ``code``, ``status``, ``message``."""

    def __init__(self, code: int, message: str, status: str | None = None, details: list | None = None) -> None:
        super().__init__(message)
        self.code, self.message = code, message
        self.status = status or _HTTP_STATUS.get(code, "INVALID_ARGUMENT")
        self.details = details

    def response(self) -> Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = self.details
        return JSONResponse({"error": error}, status_code=self.code)


def invalid_key_response() -> Response:
    """What the Gemini API answers a key it does not know: a 400 INVALID_ARGUMENT (not a 401) whose
    ErrorInfo reason is API_KEY_INVALID."""
    message = "API key not valid. Please pass a valid API key."
    return GoogleError(400, message, "INVALID_ARGUMENT", [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
         "metadata": {"service": "generativelanguage.googleapis.com"}},
        {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message},
    ]).response()


# What the fault plan's http_* faults answer, as Google words them.
_FAULT_ERRORS = {
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
}


def _google_errors(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """The app's own handlers render OpenAI's envelope; Gemini routes answer in Google's."""

    @functools.wraps(endpoint)
    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except GoogleError as exc:
            return exc.response()

    return wrapped


# -- wire helpers ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _field(obj: Any, name: str) -> Any:
    """A request field by its camelCase name or its snake_case twin (proto JSON accepts both)."""
    if not isinstance(obj, dict):
        return None
    return obj[name] if name in obj else obj.get(_snake(name))


def _rfc3339(t: float) -> str:
    secs, nanos = divmod(round(t * 1e9), 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{nanos:09d}Z"


def _int64(**counts: int) -> dict[str, str]:
    """int64 fields as proto3 JSON writes them: strings, zero values left out."""
    return {name: str(n) for name, n in counts.items() if n}


def _rpc_error(message: str) -> dict:
    return {"code": _RPC_INVALID_ARGUMENT, "message": message}


def _texts(content: Any) -> list[str]:
    parts = _field(content, "parts")
    return [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)] if isinstance(parts, list) else []


# -- one request: validation and the fake model ------------------------------------------------


def request_problem(request: Any) -> dict | None:
    """The ``google.rpc.Status`` a GenerateContentRequest would fail with, or None."""
    if not isinstance(request, dict):
        return _rpc_error("Invalid request: expected a GenerateContentRequest object.")
    contents = _field(request, "contents")
    if not isinstance(contents, list) or not contents:
        return _rpc_error("* GenerateContentRequest.contents: contents is not specified")
    for i, content in enumerate(contents):
        role = _field(content, "role")
        if role not in (None, "user", "model"):
            return _rpc_error(f"Please use a valid role: user, model. Got {role!r} in contents[{i}].")
        texts = _texts(content)
        if not texts:
            return _rpc_error(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.")
        if not all(texts):
            return _rpc_error("Unable to submit request because it has an empty text parameter. "
                              "Add a value to the parameter and try again.")
    config = _field(request, "generationConfig") or {}
    for name, low, high in (("temperature", 0, 2), ("topP", 0, 1)):
        value = _field(config, name)
        if value is not None and (type(value) not in (int, float) or not low <= value <= high):
            return _rpc_error(f"* GenerateContentRequest.generation_config.{_snake(name)}: must be in [{low}, {high}]")
    max_tokens = _field(config, "maxOutputTokens")
    if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
        return _rpc_error("* GenerateContentRequest.generation_config.max_output_tokens: must be positive")
    stops = _field(config, "stopSequences")
    if isinstance(stops, list) and len(stops) > MAX_STOP_SEQUENCES:
        return _rpc_error(f"* GenerateContentRequest.generation_config.stop_sequences: at most {MAX_STOP_SEQUENCES} allowed")
    thinking = _field(config, "thinkingConfig") or {}
    if _field(thinking, "thinkingBudget") is not None and _field(thinking, "thinkingLevel") is not None:
        return _rpc_error("You can only set one of thinking budget and thinking level.")
    schema = _field(config, "responseJsonSchema") or _field(config, "responseSchema")
    if schema is not None and _field(config, "responseMimeType") != "application/json":
        return _rpc_error("* GenerateContentRequest.generation_config.response_mime_type: "
                          "must be application/json when a response schema is set")
    return None


def _lower_types(schema: Any) -> Any:
    """``responseSchema`` (OpenAPI subset) spells types in capitals; JSON Schema does not."""
    if isinstance(schema, dict):
        return {k: (v.lower() if k == "type" and isinstance(v, str) else _lower_types(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_lower_types(v) for v in schema]
    return schema


def generate(request: dict, model: str, response_id: str, *, behaviour: Behaviour | None = None) -> dict:
    """A GenerateContentResponse for a valid request: the neutral fake model's answer to the last
    user turn, so every emulated provider returns the same text for the same request."""
    contents = _field(request, "contents")
    users = [" ".join(_texts(c)) for c in contents if _field(c, "role") in (None, "user")]
    prompt = users[-1] if users else ""
    system = _field(request, "systemInstruction")
    input_chars = sum(len(t) for c in [*contents, *([system] if system else [])] for t in _texts(c))
    config = _field(request, "generationConfig") or {}
    schema = _field(config, "responseJsonSchema")
    if schema is None and _field(config, "responseSchema") is not None:
        schema = _lower_types(_field(config, "responseSchema"))
    text, prompt_tokens, output_tokens, truncated = reply(prompt, schema, _field(config, "maxOutputTokens"), input_chars,
                                                          model=model.removeprefix("models/"), behaviour=behaviour,
                                                          history=users[:-1])
    thinking = _field(config, "thinkingConfig") or {}
    budget, level = _field(thinking, "thinkingBudget"), _field(thinking, "thinkingLevel")
    thoughts = min(budget, 64) if isinstance(budget, int) and budget > 0 else _THOUGHTS.get(str(level).upper(), 0)
    usage = {"promptTokenCount": prompt_tokens, "candidatesTokenCount": output_tokens,
             "totalTokenCount": prompt_tokens + output_tokens + thoughts,
             "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}]}
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return {
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                        "finishReason": "MAX_TOKENS" if truncated else "STOP", "index": 0}],
        "usageMetadata": usage,
        "modelVersion": model.removeprefix("models/"),
        "responseId": response_id,
    }


# -- files ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeminiFile:
    """A File resource; its bytes live in the shared FileStore (so running batches can pin them)."""

    id: str  # the part after "files/"
    display_name: str | None
    mime_type: str
    created: float
    source: str  # UPLOADED | GENERATED
    sha256: str
    stored: StoredFile

    def to_json(self, root: str, version: str) -> dict:
        doc = {
            "name": f"files/{self.id}",
            "mimeType": self.mime_type,
            "sizeBytes": str(self.stored.size),
            "createTime": _rfc3339(self.created),
            "updateTime": _rfc3339(self.created),
            "expirationTime": _rfc3339(self.created + FILE_TTL_SECONDS),
            "sha256Hash": self.sha256,
            "uri": f"{root}{version}/files/{self.id}",
            "state": "ACTIVE",
            "source": self.source,
        }
        if self.display_name:
            doc["displayName"] = self.display_name
        if self.source == "GENERATED":
            doc["downloadUri"] = f"{root}download/{version}/files/{self.id}:download?alt=media"
        return doc


@dataclass
class _Upload:
    """A resumable upload session between ``start`` and ``finalize``."""

    size: int
    mime_type: str
    display_name: str | None
    path: Path
    received: int = 0
    digest: Any = field(default_factory=hashlib.sha256)


class GeminiFiles:
    """File resources and upload sessions, over a FileStore for the bytes."""

    def __init__(self, root: Path, clock: Clock) -> None:
        self.store = FileStore(root, clock)
        self.clock = clock
        self._lock = threading.Lock()
        self._files: dict[str, GeminiFile] = {}
        self._uploads: dict[str, _Upload] = {}

    def get(self, file_id: str) -> GeminiFile | None:
        with self._lock:
            return self._files.get(file_id)

    def newest_first(self) -> list[GeminiFile]:
        with self._lock:
            return list(reversed(self._files.values()))

    def delete(self, file_id: str) -> bool:
        with self._lock:
            gfile = self._files.pop(file_id, None)
        if gfile is None:
            return False
        return self.store.delete(gfile.stored.id)

    def start_upload(self, size: int, mime_type: str, display_name: str | None) -> str:
        upload_id = secrets.token_urlsafe(24)
        path = self.store.blob_path()
        path.touch()
        with self._lock:
            self._uploads[upload_id] = _Upload(size, mime_type, display_name, path)
        return upload_id

    def upload(self, upload_id: str) -> _Upload | None:
        with self._lock:
            return self._uploads.get(upload_id)

    def append(self, upload: _Upload, chunk: bytes) -> None:
        with open(upload.path, "ab") as out:
            out.write(chunk)
        upload.digest.update(chunk)
        upload.received += len(chunk)

    def finish_upload(self, upload_id: str) -> GeminiFile:
        with self._lock:
            upload = self._uploads.pop(upload_id)
        sha = base64.b64encode(upload.digest.digest()).decode()
        return self._add(secrets.token_hex(6), upload.path, upload.display_name, upload.mime_type, "UPLOADED", sha)

    def add_generated(self, file_id: str, records: Iterator[dict]) -> str:
        path = self.store.blob_path()
        digest = hashlib.sha256()
        with open(path, "wb") as out:
            for record in records:
                line = orjson.dumps(record) + b"\n"
                digest.update(line)
                out.write(line)
        sha = base64.b64encode(digest.digest()).decode()
        return "files/" + self._add(file_id, path, None, "application/jsonl", "GENERATED", sha).id

    def _add(self, file_id: str, path: Path, display_name: str | None, mime_type: str, source: str,
             sha: str) -> GeminiFile:
        stored = self.store.add(path, display_name or file_id, source.lower(), ttl=FILE_TTL_SECONDS)
        gfile = GeminiFile(file_id, display_name, mime_type, self.clock.now(), source, sha, stored)
        with self._lock:
            self._files[file_id] = gfile
        return gfile


# -- batches -------------------------------------------------------------------------------------


@dataclass
class GeminiJob:
    """One batch. ``source`` is JSONL in input order: ``{key, request}`` lines of an uploaded file,
    or the inline ``{request, metadata}`` items the emulator wrote down at create."""

    id: str
    model: str  # "models/…"
    display_name: str | None
    created: float
    timing: Timing
    source: Path
    input_file: str | None  # "files/…" when created from a file
    total: int
    bad: bytearray  # bad[i] == 1: request i fails validation
    problem: str | None  # a whole-file problem: the batch fails
    state: str = PENDING
    cancel_at: float | None = None
    ended_at: float | None = None
    done: int = 0  # requests executed, frozen once ended
    output_file: str | None = None
    inlined: list[dict] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def starts(self) -> float:
        """When PENDING turns RUNNING (and when a bad input file fails the batch)."""
        return self.created + 0.1 * self.timing.processing_seconds

    def done_by(self, t: float) -> int:
        """Requests (a prefix of the input) executed by time ``t``."""
        return self.timing.done_by(self.created, self.total, t)

    def to_json(self, now: float, with_inline: bool) -> dict:
        ended = self.state in ENDED
        done = self.done if ended else self.done_by(self.cancel_at if self.cancel_at is not None else now)
        failed = self.bad[:done].count(1)
        last_change = self.ended_at if self.ended_at is not None else now
        meta: dict[str, Any] = {
            "@type": _TYPE + "GenerateContentBatch",
            "model": self.model,
            "name": f"batches/{self.id}",
            "createTime": _rfc3339(self.created),
            "updateTime": _rfc3339(last_change),
            "batchStats": _int64(requestCount=self.total, successfulRequestCount=done - failed,
                                 failedRequestCount=failed, pendingRequestCount=self.total - done),
            "state": self.state,
        }
        if self.display_name:
            meta["displayName"] = self.display_name
        if self.input_file:
            meta["inputConfig"] = {"fileName": self.input_file}
        if ended:
            meta["endTime"] = _rfc3339(last_change)
        output = self._output(with_inline)
        if output is not None:
            meta["output"] = output
        doc: dict[str, Any] = {"name": f"batches/{self.id}", "metadata": meta}
        if ended:
            doc["done"] = True
            if self.state == FAILED:
                doc["error"] = {"code": _RPC_INVALID_ARGUMENT, "message": self.problem or "The batch failed."}
            elif output is not None:
                doc["response"] = {"@type": _TYPE + "GenerateContentBatchOutput", **output}
        return doc

    def _output(self, with_inline: bool) -> dict | None:
        if self.output_file is not None:
            return {"responsesFile": self.output_file}
        if self.inlined is not None and with_inline:  # list calls never carry inline results
            return {"inlinedResponses": {"inlinedResponses": self.inlined}}
        return None


def _scan_file(path: Path, max_lines: int) -> tuple[int, bytearray, str | None]:
    """Count and check an uploaded input file once, streaming: (requests, bad flags, problem)."""
    bad = bytearray()
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            if len(bad) >= max_lines:
                return len(bad), bad, f"A batch may hold at most {max_lines} requests."
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return len(bad), bad, f"Line {line_no} of the input file is not valid JSON."
            if not isinstance(line, dict) or not isinstance(line.get("key"), str) or "request" not in line:
                return len(bad), bad, f"Line {line_no} of the input file must be an object with 'key' and 'request'."
            bad.append(0 if request_problem(line["request"]) is None else 1)
    if not bad:
        return 0, bad, "The input file contains no requests."
    return len(bad), bad, None


def _execute(job: GeminiJob, done: int, behaviour: Behaviour | None = None) -> Iterator[dict]:
    """Result records of the first ``done`` requests, in input order."""
    with open(job.source, "rb") as f:
        for index, raw in enumerate(line for line in f if line.strip()):
            if index >= done:
                return
            item = orjson.loads(raw)
            request = item["request"]
            result: dict[str, Any] = {"key": item["key"]} if job.input_file else {}
            if job.bad[index]:
                result["error"] = request_problem(request)
            else:
                result["response"] = generate(request, job.model, f"{job.id}-{index:06x}", behaviour=behaviour)
            if not job.input_file and "metadata" in item:
                result["metadata"] = item["metadata"]
            yield result


class GeminiBatches:
    """All batches of the service, newest last, and their state transitions."""

    def __init__(self, provider: str, files: GeminiFiles, clock: Clock, stats: Stats,
                 behaviour: Behaviour | None = None) -> None:
        self.provider, self.files, self.clock, self.stats = provider, files, clock, stats
        self.behaviour = behaviour
        self._lock = threading.Lock()
        self._jobs: dict[str, GeminiJob] = {}

    def add(self, job: GeminiJob) -> None:
        if job.input_file:  # its client may delete the input file while the batch still reads it
            self.files.store.pin(job.source)
        with self._lock:
            self._jobs[job.id] = job
        self.stats.add(self.provider, "batches_created")

    def get(self, job_id: str) -> GeminiJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def delete(self, job_id: str) -> bool:
        with self._lock:
            return self._jobs.pop(job_id, None) is not None

    def newest_first(self) -> list[GeminiJob]:
        with self._lock:
            return list(reversed(self._jobs.values()))

    def advance(self, job: GeminiJob) -> None:
        """Bring ``job`` up to ``clock.now()``; results are produced once, on the terminal transition."""
        now = self.clock.now()
        with job.lock:
            if job.state in ENDED:
                return
            if job.cancel_at is not None:
                end = job.cancel_at + job.timing.cancel_seconds
                if now >= end:
                    self._finish(job, CANCELLED, end, job.done_by(job.cancel_at))
                return
            start = job.starts
            end = start if job.problem else job.created + job.timing.processing_seconds
            expires = job.created + job.timing.completion_window_seconds
            if now >= expires and expires < end:
                self._finish(job, EXPIRED, expires, 0)
            elif now >= end:
                self._finish(job, FAILED if job.problem else SUCCEEDED, end, 0 if job.problem else job.total)
            else:
                job.state = RUNNING if now >= start else PENDING

    def cancel(self, job: GeminiJob) -> bool:
        """Start cancelling; False when the batch has already ended."""
        self.advance(job)
        with job.lock:
            if job.state in ENDED:
                return False
            if job.cancel_at is None:
                job.cancel_at = self.clock.now()
            return True

    def _finish(self, job: GeminiJob, state: str, at: float, done: int) -> None:
        if done:
            results = _execute(job, done, self.behaviour)
            if job.input_file:
                job.output_file = self.files.add_generated(f"batch-{job.id}", results)
            else:
                job.inlined = list(results)
            self.stats.add(self.provider, "requests_processed", done)
        job.state, job.ended_at, job.done = state, at, done
        if job.input_file:
            self.files.store.unpin(job.source)
        else:  # the inline requests were the emulator's own copy
            job.source.unlink(missing_ok=True)


# -- HTTP ----------------------------------------------------------------------------------------


class GeminiService:
    """The mounted Gemini API: batches, files and resumable uploads under ``prefix``."""

    accepts_faults = True  # http_* faults (a 429 with RetryInfo), truncated_download and cut_download

    def __init__(self, *, provider: str, prefix: str, data_dir: Path, clock: Clock, stats: Stats,
                 timing: Timing, max_lines: int = MAX_LINES, behaviour: Behaviour | None = None,
                 faults: FaultPlan | None = None) -> None:
        self.faults = (faults or FaultPlan()).injector(provider, stats)
        self.provider, self.prefix, self.clock, self.stats = provider, prefix, clock, stats
        self.behaviour = behaviour
        self.open_paths = (f"{prefix}/upload/",)  # resumable upload chunks carry no key
        self.timing, self.max_lines = timing, max_lines
        data_dir.mkdir(parents=True, exist_ok=True)
        self.files = GeminiFiles(data_dir, clock)
        self.batches = GeminiBatches(provider, self.files, clock, stats, behaviour)
        stats.register(provider)

    def mount(self) -> Mount:
        def route(path: str, endpoint: Callable[[Request], Awaitable[Response]], method: str) -> Route:
            return Route(path, _google_errors(endpoint), methods=[method])

        gate = [Middleware(FaultGate, faults=self.faults, render=self._fault_response)] \
            if self.faults.plan.http_active else None
        return Mount(self.prefix, middleware=gate, routes=[
            route("/upload/{version}/files", self.upload, "POST"),
            route("/{version}/files", self.list_files, "GET"),
            route("/{version}/files/{ref}", self.get_file, "GET"),
            route("/{version}/files/{ref}", self.delete_file, "DELETE"),
            route("/download/{version}/files/{ref}", self.get_file, "GET"),
            route("/{version}/models/{ref}", self.create_batch, "POST"),
            route("/{version}/batches", self.list_batches, "GET"),
            route("/{version}/batches/{ref}", self.get_batch, "GET"),
            route("/{version}/batches/{ref}", self.batch_action, "POST"),
            route("/{version}/batches/{ref}", self.delete_batch, "DELETE"),
            Route("/{rest:path}", _google_errors(self.unknown), methods=["GET", "POST", "DELETE", "PATCH", "PUT"]),
        ])

    def _root(self, request: Request) -> str:
        """This service's absolute base URL, for the URLs it hands out (upload sessions, files)."""
        return f"{request.base_url}{self.prefix.strip('/')}/"

    async def unknown(self, request: Request) -> Response:
        raise GoogleError(404, f"Unknown request URL: {request.method} {request.url.path}.")

    # -- files and uploads -------------------------------------------------------------------------

    async def upload(self, request: Request) -> Response:
        version = _version(request)
        upload_id = request.query_params.get("upload_id")
        if upload_id is None:
            return await self._start_upload(request, version)
        upload = self.files.upload(upload_id)
        if upload is None:
            raise GoogleError(404, "Upload session not found or already finalized.")
        command = {c.strip() for c in request.headers.get("x-goog-upload-command", "").split(",")}
        if request.headers.get("x-goog-upload-offset") != str(upload.received):
            raise GoogleError(400, f"Upload offset must be {upload.received}.")
        chunk = await request.body()
        await run_in_threadpool(self.files.append, upload, chunk)
        if upload.received > upload.size:
            raise GoogleError(400, f"Upload exceeds the declared size of {upload.size} bytes.")
        if "finalize" not in command:
            return Response(status_code=200, headers={"x-goog-upload-status": "active"})
        if upload.received != upload.size:
            raise GoogleError(400, f"Upload finalized at {upload.received} of {upload.size} declared bytes.")
        gfile = self.files.finish_upload(upload_id)
        self.stats.add(self.provider, "files_uploaded")
        return JSONResponse({"file": gfile.to_json(self._root(request), version)},
                            headers={"x-goog-upload-status": "final"})

    async def _start_upload(self, request: Request, version: str) -> Response:
        headers = request.headers
        if headers.get("x-goog-upload-protocol") != "resumable" or headers.get("x-goog-upload-command") != "start":
            raise GoogleError(400, "Only resumable uploads are supported: send X-Goog-Upload-Protocol: resumable.")
        size_header = headers.get("x-goog-upload-header-content-length", "")
        if not size_header.isdigit():
            raise GoogleError(400, "Missing X-Goog-Upload-Header-Content-Length.")
        size = int(size_header)
        if size > MAX_FILE_BYTES:
            raise GoogleError(400, f"File of {size} bytes exceeds the {MAX_FILE_BYTES} byte limit.")
        meta = _field(await _json_body(request, allow_empty=True), "file") or {}
        mime = headers.get("x-goog-upload-header-content-type") or _field(meta, "mimeType") or "application/octet-stream"
        upload_id = self.files.start_upload(size, mime, _field(meta, "displayName"))
        # Google authorises chunk requests by the unguessable upload_id (the SDK sends them without
        # its key), so the session URL carries no key: see `open_paths`.
        query = {"upload_id": upload_id, "upload_protocol": "resumable"}
        return Response(status_code=200, headers={
            "x-goog-upload-url": f"{self._root(request)}upload/{version}/files?{urlencode(query)}",
            "x-goog-upload-status": "active",
            "x-goog-upload-chunk-granularity": str(UPLOAD_GRANULARITY),
        })

    async def list_files(self, request: Request) -> Response:
        version = _version(request)
        page, token = _page(request, self.files.newest_first(), lambda f: f.id, FILE_LIST_PAGE)
        root = self._root(request)
        body: dict[str, Any] = {"files": [f.to_json(root, version) for f in page]}
        if token:
            body["nextPageToken"] = token
        return JSONResponse(body)

    def invalid_key_response(self) -> Response:
        return invalid_key_response()

    def _fault_response(self, status: int) -> Response:
        name, message = _FAULT_ERRORS[status]
        delay = f"{self.faults.plan.retry_after:g}s"
        details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}] if status == 429 else None
        return GoogleError(status, message, name, details).response()

    async def get_file(self, request: Request) -> Response:
        version = _version(request)
        ref: str = request.path_params["ref"]
        downloading = request.url.path.startswith(f"{self.prefix}/download/")
        if downloading and not ref.endswith(":download"):
            raise GoogleError(404, f"Unknown request URL: GET {request.url.path}.")
        file_id = ref.removesuffix(":download")
        gfile = self.files.get(file_id)
        if gfile is None:
            raise GoogleError(404, f"File files/{file_id} not found.", "NOT_FOUND")
        if not ref.endswith(":download"):
            return JSONResponse(gfile.to_json(self._root(request), version))
        if request.query_params.get("alt") != "media":
            raise GoogleError(400, "Downloads need alt=media.")
        if gfile.source != "GENERATED":
            raise GoogleError(400, "Only generated files can be downloaded; uploaded files cannot.")
        if self.faults.take("truncated_download"):
            return truncated_file_response(gfile.stored.path, gfile.stored.path.stat().st_size)
        if self.faults.take("cut_download"):
            return cut_file_response(gfile.stored.path)
        return FileResponse(gfile.stored.path, media_type="application/octet-stream")

    async def delete_file(self, request: Request) -> Response:
        _version(request)
        file_id = request.path_params["ref"]
        if not self.files.delete(file_id):
            raise GoogleError(404, f"File files/{file_id} not found.", "NOT_FOUND")
        return JSONResponse({})

    # -- batches -----------------------------------------------------------------------------------

    async def create_batch(self, request: Request) -> Response:
        version = _version(request)
        model, _, method = request.path_params["ref"].partition(":")
        if method != "batchGenerateContent":
            raise GoogleError(404, f"Unknown request URL: POST {request.url.path}.")
        if not model_exists(model):
            raise GoogleError(404, f"models/{model} is not found for API version {version}, or is not supported "
                                   "for batchGenerateContent. Call ListModels to see the list of available models "
                                   "and their supported methods.", "NOT_FOUND")
        if len(await request.body()) > MAX_INLINE_BYTES:
            raise GoogleError(400, f"Request payload size exceeds the limit: {MAX_INLINE_BYTES} bytes.")
        body = await _json_body(request)
        batch = _field(body, "batch")
        input_config = _field(batch, "inputConfig")
        if not isinstance(input_config, dict):
            raise GoogleError(400, "* BatchGenerateContentRequest.batch.input_config: input_config is required")
        file_name, inline = _field(input_config, "fileName"), _field(_field(input_config, "requests"), "requests")
        if (file_name is None) == (inline is None):
            raise GoogleError(400, "* BatchGenerateContentRequest.batch.input_config: set exactly one of "
                                   "file_name and requests")
        job_fields = dict(model=f"models/{model}", display_name=_field(batch, "displayName"),
                          created=self.clock.now(), timing=self.timing)
        if file_name is not None:
            job = await self._file_job(file_name, job_fields)
        else:
            job = await run_in_threadpool(self._inline_job, inline, job_fields)
        self.batches.add(job)
        return JSONResponse(job.to_json(self.clock.now(), with_inline=True))

    async def _file_job(self, file_name: Any, job_fields: dict) -> GeminiJob:
        gfile = self.files.get(str(file_name).removeprefix("files/"))
        if gfile is None:
            raise GoogleError(400, f"* BatchGenerateContentRequest.batch.input_config.file_name: "
                                   f"file {file_name} does not exist")
        total, bad, problem = await run_in_threadpool(_scan_file, gfile.stored.path, self.max_lines)
        return GeminiJob(id=secrets.token_hex(16), source=gfile.stored.path, input_file=f"files/{gfile.id}",
                         total=total, bad=bad, problem=problem, **job_fields)

    def _inline_job(self, inline: Any, job_fields: dict) -> GeminiJob:
        """Inline requests are parsed with the create call, so their shape errors are a 400 now."""
        if not isinstance(inline, list) or not inline:
            raise GoogleError(400, "* BatchGenerateContentRequest.batch.input_config.requests: requests must not be empty")
        if len(inline) > self.max_lines:
            raise GoogleError(400, f"A batch may hold at most {self.max_lines} requests.")
        path = self.files.store.blob_path()
        bad = bytearray()
        with open(path, "wb") as out:
            for i, item in enumerate(inline):
                request = _field(item, "request")
                if not isinstance(request, dict):
                    path.unlink(missing_ok=True)
                    raise GoogleError(400, f"* BatchGenerateContentRequest.batch.input_config.requests.requests[{i}]"
                                           ".request: request is required")
                line = {"request": request}
                if _field(item, "metadata") is not None:
                    line["metadata"] = _field(item, "metadata")
                out.write(orjson.dumps(line) + b"\n")
                bad.append(0 if request_problem(request) is None else 1)
        return GeminiJob(id=secrets.token_hex(16), source=path, input_file=None, total=len(inline), bad=bad,
                         problem=None, **job_fields)

    async def list_batches(self, request: Request) -> Response:
        _version(request)
        self.stats.add(self.provider, "batch_lists")
        page, token = _page(request, self.batches.newest_first(), lambda j: j.id, LIST_PAGE)
        docs = await run_in_threadpool(self._render, page)
        body: dict[str, Any] = {"operations": docs}
        if token:
            body["nextPageToken"] = token
        return JSONResponse(body)

    def _render(self, jobs: list[GeminiJob]) -> list[dict]:
        for job in jobs:
            self.batches.advance(job)
        now = self.clock.now()
        return [job.to_json(now, with_inline=False) for job in jobs]

    async def get_batch(self, request: Request) -> Response:
        _version(request)
        job = self._job(request.path_params["ref"])
        self.stats.add(self.provider, "batch_gets")
        await run_in_threadpool(self.batches.advance, job)
        return JSONResponse(job.to_json(self.clock.now(), with_inline=True))

    async def batch_action(self, request: Request) -> Response:
        """``:cancel`` (the SDK) and ``:delete`` (the REST guide) are POSTs on the batch."""
        _version(request)
        job_id, _, action = request.path_params["ref"].partition(":")
        if action == "delete":
            return await self.delete_batch(request, job_id)
        if action != "cancel":
            raise GoogleError(404, f"Unknown request URL: POST {request.url.path}.")
        job = self._job(job_id)
        if not await run_in_threadpool(self.batches.cancel, job):
            raise GoogleError(400, f"Batch batches/{job.id} has already ended ({job.state}).", "FAILED_PRECONDITION")
        return JSONResponse({})

    async def delete_batch(self, request: Request, job_id: str | None = None) -> Response:
        _version(request)
        job_id = job_id or request.path_params["ref"]
        if not self.batches.delete(job_id):
            raise GoogleError(404, "Requested entity was not found.", "NOT_FOUND")
        return JSONResponse({})

    def _job(self, job_id: str) -> GeminiJob:
        job = self.batches.get(job_id)
        if job is None:
            raise GoogleError(404, "Requested entity was not found.", "NOT_FOUND")
        return job


def _version(request: Request) -> str:
    version = request.path_params["version"]
    if version not in API_VERSIONS:
        raise GoogleError(404, f"Unknown request URL: {request.method} {request.url.path}.")
    return version


async def _json_body(request: Request, allow_empty: bool = False) -> dict:
    raw = await request.body()
    if not raw.strip() and allow_empty:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise GoogleError(400, "Invalid JSON payload received.") from None
    if not isinstance(body, dict):
        raise GoogleError(400, "Invalid JSON payload received: expected an object.")
    return body


def _page(request: Request, items: list, key: Callable[[Any], str], sizes: tuple[int, int]) -> tuple[list, str | None]:
    """One page of ``items`` (newest first) from ``pageSize``/``pageToken``, and the next token.
    The token is the id of the last item shown, so pages stay stable as new items arrive."""
    q = request.query_params
    raw_size = q.get("pageSize") or q.get("page_size") or ""
    size = min(int(raw_size), sizes[1]) if raw_size.isdigit() and int(raw_size) > 0 else sizes[0]
    token = q.get("pageToken") or q.get("page_token")
    start = 0
    if token:
        ids = [key(item) for item in items]
        if token not in ids:
            raise GoogleError(400, "Invalid page token.")
        start = ids.index(token) + 1
    page = items[start:start + size]
    more = start + size < len(items)
    return page, key(page[-1]) if more and page else None
