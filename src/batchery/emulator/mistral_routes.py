"""Mistral's Files and batch jobs API (``/v1/files``, ``/v1/batch/jobs``), as the ``mistralai`` SDK
sees it, mounted under the service prefix (``/mistral``; the SDK's ``server_url`` is the emulator's
URL plus that prefix, and the SDK adds ``/v1``).

Fidelity notes (research §6 and §9):

* The SDK matches responses strictly: every JSON answer is 200 + ``application/json`` and downloads
  are 200 + ``application/octet-stream``. File objects carry the required ``sample_type`` and
  ``source``; jobs carry every required BatchJob field (``errors``, the four request counters…).
* Errors use Mistral's envelope ``{"object": "error", "message", "type", "param", "code"}``;
  malformed request bodies get FastAPI's 422 ``{"detail": [{type, loc, msg, input}]}``.
* Lifecycle: the shared one (:mod:`.lifecycle`, words in ``SHAPES``); the deadline is ``created +
  min(timeout_hours, completion_window_seconds)``. Cancelling an ended job is refused with a 400
  [UNVERIFIED: Mistral's answer there is not documented].
* Results: executed successes in ``output_file``, executed failures in ``error_file`` (each
  custom_id once, in a scrambled but deterministic order: Mistral promises no order). Requests that
  never ran (timeout, cancel) are in neither file [UNVERIFIED]; the counters say how many ran.
* An unknown model ("missing-*") is refused by the create call with 400 ``invalid_model``, which is
  what Mistral's chat endpoint answers for an unknown model; the model is a job-level parameter, so
  a batch never reaches the per-line stage with it [UNVERIFIED for the batch route itself].
* Whole-input problems (a line that is not a JSON object with a ``body`` object, a duplicate
  custom_id, too many lines, no lines) fail the job when it would start: FAILED, no result files,
  ``errors: [{message, count}]`` grouped by message.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from .fake_model import Behaviour, chat_reply, model_exists
from .lifecycle import FileBatch, FilesAndBatches, Scan, json_object, run_requests, scan_lines
from .live import Parsed, message_chars, token_cost
from .responses import ApiError, JSONResponse
from .state import FileStore, StoredFile, copy_upload

MAX_FILE_BYTES = 512 * 1024 * 1024
PURPOSES = ("fine-tune", "batch", "ocr", "agentic_safety")
ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/fim/completions", "/v1/moderations",
             "/v1/chat/moderations", "/v1/ocr", "/v1/classifications", "/v1/chat/classifications",
             "/v1/conversations", "/v1/audio/transcriptions")
ROLES = ("assistant", "system", "tool", "user")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
CHARS_PER_TOKEN = 4


def _error(status: int, message: str, type: str = "invalid_request_error", code: str | None = None) -> ApiError:
    return ApiError(status, message, type=type, code=code, shape="mistral")


def _invalid(loc: str, msg: str, value: Any = None, kind: str = "value_error") -> ApiError:
    """FastAPI's 422 for a request body that does not validate (``loc`` is a dotted path in it)."""
    return ApiError(422, msg, param=loc, type=kind, details=value, shape="mistral")


# -- input scan ----------------------------------------------------------------------------------


def _scan(paths: list[Path], max_lines: int) -> Scan:
    scan = Scan()
    seen: set[str] = set()
    for line in scan_lines(scan, paths, max_lines, f"Too many requests: a batch job takes at most {max_lines}."):
        if not isinstance(line, dict) or not isinstance(line.get("body"), dict):
            scan.problem("Each line must be a JSON object with a 'body' object.")
            scan.bad.append(1)
            continue
        custom_id = line.get("custom_id")
        if custom_id is not None:
            if str(custom_id) in seen:
                scan.problem("Duplicate custom_id in the batch input.")
            seen.add(str(custom_id))
        scan.bad.append(0 if _line_problem(line["body"]) is None else 1)
    if scan.total == 0:
        scan.problem("The batch input contains no requests.")
    return scan


def _line_problem(body: dict) -> tuple[str, str] | None:
    """(param, message) the chat endpoint would refuse this body with (422), or None."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages", "Field required: a non-empty list of messages."
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            return (f"messages.{i}", f"Input tag {role!r} found using 'role' does not match any of the "
                                     f"expected tags: {', '.join(repr(r) for r in ROLES)}")
    last = messages[-1]
    if last["role"] not in ("user", "tool") and not (last["role"] == "assistant" and last.get("prefix") is True):
        return "messages", ("Expected last role User or Tool (or Assistant with prefix True) for serving "
                            f"but got {last['role']}")
    checks = (("temperature", lambda v: type(v) in (int, float) and v >= 0, "a number >= 0"),
              ("top_p", lambda v: type(v) in (int, float) and 0 <= v <= 1, "a number between 0 and 1"),
              ("max_tokens", lambda v: type(v) is int and v >= 0, "an integer >= 0"),
              ("reasoning_effort", lambda v: v in EFFORTS, f"one of {', '.join(EFFORTS)}"))
    for name, ok, expected in checks:
        if body.get(name) is not None and not ok(body[name]):
            return name, f"Input should be {expected}, got {body[name]!r}."
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type", "text") if isinstance(fmt, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            return "response_format.type", "Input should be 'text', 'json_object' or 'json_schema'."
        spec = fmt.get("json_schema")
        if kind == "json_schema" and not (isinstance(spec, dict) and isinstance(spec.get("schema"), dict)):
            return "response_format.json_schema", "json_schema mode needs a json_schema with a 'schema' object."
    if body.get("stream"):
        return "stream", "Streaming is not supported in batch jobs."
    return None


# -- the fake model, in Mistral's response shape ---------------------------------------------------


def _complete(body: dict, model: str, created: int, completion_id: str, *,
              behaviour: Behaviour | None = None) -> dict:
    """A chat.completion for a valid body: the neutral fake answer to the last user message, with a
    thinking chunk first when reasoning was asked for (as Mistral's adjustable-reasoning models do)."""
    text, input_tokens, output_tokens, truncated = chat_reply(body, model or body.get("model"), behaviour, joiner="")
    content: str | list = text
    effort = body.get("reasoning_effort")
    if effort not in (None, "none"):
        thought = f"Thinking ({effort}) about the request before answering."
        content = [{"type": "thinking", "thinking": [{"type": "text", "text": thought}]}, {"type": "text", "text": text}]
        output_tokens += -(-len(thought) // CHARS_PER_TOKEN)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "model": model,
        "created": created,
        "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
                  "total_tokens": input_tokens + output_tokens},
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "tool_calls": None, "prefix": False},
                     "finish_reason": "length" if truncated else "stop"}],
    }


# -- jobs ----------------------------------------------------------------------------------------


@dataclass(kw_only=True, eq=False)
class MistralJob(FileBatch):
    endpoint: str
    model: str
    input_files: list[str]
    metadata: dict[str, str] | None


class MistralService(FilesAndBatches[MistralJob]):
    """One mounted instance of Mistral's Files + batch jobs API, with its own files and jobs."""

    error_shape = "mistral"
    files_path, batches_path = "/v1/files", "/v1/batch/jobs"
    cancel_settles = True

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.files = FileStore(self.data_dir, self.clock, new_file_id=lambda: str(uuid.uuid4()))  # Mistral's ids are uuids
        self._kinds: dict[str, tuple[str, str, int | None]] = {}  # file id -> (sample_type, source, num_lines)

    # -- files -----------------------------------------------------------------------------------

    async def upload_file(self, request: Request) -> Response:
        async with request.form(max_files=1, max_fields=20) as form:
            upload, purpose = form.get("file"), form.get("purpose") or "fine-tune"
            if not isinstance(upload, UploadFile):
                raise _invalid("file", "Field required", kind="missing")
            if purpose not in PURPOSES:
                raise _invalid("purpose", f"Input should be {', '.join(repr(p) for p in PURPOSES)}", purpose, "enum")
            path = self.files.blob_path()
            size, lines = await run_in_threadpool(copy_upload, upload, path)
        if size > MAX_FILE_BYTES:
            path.unlink(missing_ok=True)
            raise _error(400, f"File too large: {size} bytes (limit {MAX_FILE_BYTES}).")
        stored = self.files.add(path, upload.filename or "upload.jsonl", purpose, ttl=None)
        self._kinds[stored.id] = ("batch_request" if purpose == "batch" else "instruct", "upload", lines)
        self.stats.add(self.provider, "files_uploaded")
        return JSONResponse(self.file_json(stored))

    async def list_files(self, request: Request) -> Response:
        q = request.query_params
        page, page_size = _int(q, "page", 0, 0), _int(q, "page_size", 100, 1)
        files = [f for f in self.files.all() if all(
            not q.get(name) or value == q[name]
            for name, value in (("purpose", f.purpose), ("sample_type", self._kinds[f.id][0]),
                                ("source", self._kinds[f.id][1])))]
        files.reverse()  # newest first
        chosen = files[page * page_size:(page + 1) * page_size]
        return JSONResponse({"data": [self.file_json(f) for f in chosen], "object": "list", "total": len(files)})

    async def retrieve_file(self, request: Request) -> Response:
        return JSONResponse({**self.file_json(self.file(request)), "deleted": False})

    def no_file(self, file_id: str) -> ApiError:
        return _error(404, f"File {file_id} not found.", code="not_found")

    def file_json(self, stored: StoredFile) -> dict:
        sample_type, source, lines = self._kinds[stored.id]
        return {"id": stored.id, "object": "file", "bytes": stored.size, "created_at": stored.created_at,
                "filename": stored.filename, "purpose": stored.purpose, "sample_type": sample_type,
                "source": source, "num_lines": lines, "mimetype": "application/jsonl", "signature": None,
                "expires_at": stored.expires_at, "visibility": "workspace"}

    # -- live ------------------------------------------------------------------------------------

    live_path = "/v1/chat/completions"

    def live(self, path: str, body: Any) -> Parsed:
        if not isinstance(body, dict):
            return _invalid("", "Input should be a valid JSON object", kind="model_attributes_type").response()
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _invalid("model", "Field required", kind="missing").response()
        if not model_exists(model):  # Mistral answers an unknown model with 400 invalid_model, not 404
            return _error(400, f"Invalid model: {model}", type="invalid_model", code="1500").response()
        problem = _line_problem(body)
        if problem is not None:
            return _invalid(problem[0], problem[1], body.get(problem[0].split(".")[0])).response()
        cost = token_cost(message_chars(body["messages"]), body.get("max_tokens"))
        return model, cost, lambda: _complete(body, model, int(self.now()), secrets.token_hex(16),
                                              behaviour=self.behaviour)

    # -- jobs ------------------------------------------------------------------------------------

    async def new_batch(self, request: Request) -> MistralJob:
        body = await json_object(request)
        if body is None:
            raise _invalid("", "Input should be a valid JSON object", kind="model_attributes_type")
        endpoint = body.get("endpoint")
        if endpoint not in ENDPOINTS:
            raise _invalid("endpoint", f"Input should be {', '.join(repr(e) for e in ENDPOINTS)}", endpoint, "enum")
        if endpoint != "/v1/chat/completions":
            raise _error(400, f"The emulator only runs /v1/chat/completions batch jobs, not {endpoint}.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _error(400, "A model is required for /v1/chat/completions batch jobs.")
        if not model_exists(model):
            raise _error(400, f"Invalid model: {model}", type="invalid_model", code="1500")
        metadata = body.get("metadata")
        if metadata is not None and not (isinstance(metadata, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
            raise _invalid("metadata", "Input should be a dictionary of strings", metadata, "dict_type")
        hours = body.get("timeout_hours", 24)
        if type(hours) is not int or hours < 1:
            raise _invalid("timeout_hours", "Input should be an integer >= 1", hours, "greater_than_equal")
        input_files, paths = self._inputs(body)
        scan = await run_in_threadpool(_scan, paths, self.max_lines)
        return MistralJob(
            id=str(uuid.uuid4()), created=self.now(), timing=self.timing, total=scan.total, bad=scan.bad,
            window=min(hours * 3600, self.timing.completion_window_seconds), failure=scan.errors or None,
            endpoint=endpoint, model=model, input_files=input_files, paths=paths, metadata=metadata)

    def _inputs(self, body: dict) -> tuple[list[str], list[Path]]:
        """The job's input: uploaded batch files, or inline ``requests`` written to a private blob."""
        input_files, requests = body.get("input_files"), body.get("requests")
        if input_files:
            if not isinstance(input_files, list) or not all(isinstance(f, str) for f in input_files):
                raise _invalid("input_files", "Input should be a list of file ids", input_files, "list_type")
            stored = [self.files.get(file_id) for file_id in input_files]
            for file_id, found in zip(input_files, stored):
                if found is None or found.purpose != "batch":
                    raise _error(404, f"Batch input file {file_id} not found.", code="not_found")
            return input_files, [s.path for s in stored if s is not None]
        if isinstance(requests, list) and requests:
            path = self.files.blob_path()
            path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in requests))
            return [], [path]
        raise _error(400, "Either input_files or requests must be provided.")

    async def list_batches(self, request: Request) -> Response:
        self.stats.add(self.provider, "batch_lists")
        q = request.query_params
        page, page_size = _int(q, "page", 0, 0), _int(q, "page_size", 100, 1)
        words = set(self.shape.words.values())
        statuses = set(q.getlist("status"))
        if statuses - words:
            raise _invalid("status", f"Input should be {', '.join(sorted(words))}", sorted(statuses - words), "enum")
        after = _timestamp(q.get("created_after"))
        jobs = [j for j in self.batches.newest_first() if (not q.get("model") or j.model == q["model"])
                and (after is None or j.created > after)]
        if q.get("order_by", "-created") != "-created":
            jobs.reverse()
        if statuses:  # the filter needs every candidate's current status
            await run_in_threadpool(self.batches.advance, *jobs)
            jobs = [j for j in jobs if j.word(self.shape) in statuses]
        chosen = jobs[page * page_size:(page + 1) * page_size]
        await run_in_threadpool(self.batches.advance, *chosen)
        return JSONResponse({"object": "list", "data": [self.batch_json(j) for j in chosen], "total": len(jobs)})

    def cannot_cancel(self, job: MistralJob) -> ApiError:
        word = job.word(self.shape)
        return _error(400, f"Batch job {job.id} has already ended with status {word}; it cannot be cancelled.")

    def no_batch(self, batch_id: str) -> ApiError:
        return _error(404, f"Batch job {batch_id} not found.", code="not_found")

    def batch_json(self, job: MistralJob) -> dict:
        done, failed = job.progress(self.now())
        times = job.times(self.shape)
        if job.phase == "failed":  # it failed where it would have started
            times["started_at"] = job.ended_at
        return {
            "id": job.id,
            "object": "batch",
            "input_files": job.input_files,
            "metadata": job.metadata,
            "endpoint": job.endpoint,
            "model": job.model,
            "agent_id": None,
            "output_file": job.output_file,
            "error_file": job.error_file,
            "errors": [{"message": m, "count": c} for m, c in job.failure.items()] if job.phase == "failed" else [],
            "outputs": None,
            "status": job.word(self.shape),
            "created_at": int(job.created),
            "total_requests": job.total,
            "completed_requests": done,
            "succeeded_requests": done - failed,
            "failed_requests": failed,
            **{name: None if t is None else int(t) for name, t in times.items()},
        }

    # -- results ---------------------------------------------------------------------------------

    def results(self, job: MistralJob, phase: str) -> tuple[list[bytes], list[bytes]]:
        """The first ``done`` requests, run."""
        created, salt = int(job.stamps[phase]), secrets.token_hex(6)

        def answer(index: int, line: dict) -> tuple[bool, bytes]:
            record: dict[str, Any] = {"id": f"{salt}{index:08x}", "custom_id": line.get("custom_id")}
            problem = _line_problem(line["body"]) if job.bad[index] else None
            if problem is None:
                body = _complete(line["body"], job.model, created, record["id"], behaviour=self.behaviour)
                return True, orjson.dumps(record | {"response": {"status_code": 200, "body": body}, "error": None})
            envelope = {"object": "error", "message": problem[1], "type": "invalid_request_error",
                        "param": problem[0], "code": None}
            return False, orjson.dumps(record | {"response": {"status_code": 422, "body": envelope},
                                                 "error": problem[1]})

        return run_requests(job.paths, answer, job.done or 0)

    def results_file(self, job: MistralJob, lines: list[bytes], kind: str) -> str | None:
        stored = self.files.add_lines(lines, f"{job.id}_{kind}.jsonl", "batch", ttl=None)
        if stored is None:
            return None
        self._kinds[stored.id] = (f"batch_{'result' if kind == 'output' else kind}", "mistral", len(lines))
        return stored.id


def _int(query: Any, name: str, default: int, low: int) -> int:
    raw = query.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _invalid(name, "Input should be a valid integer", raw, "int_parsing") from None
    if value < low:
        raise _invalid(name, f"Input should be greater than or equal to {low}", raw, "greater_than_equal")
    return value


def _timestamp(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw).timestamp()
    except ValueError:
        raise _invalid("created_after", "Input should be a valid datetime", raw, "datetime_parsing") from None
