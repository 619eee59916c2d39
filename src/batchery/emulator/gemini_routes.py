"""The Gemini Developer API's batch mode (``batches/…`` operations; the Files API is in
:mod:`.gemini_files`) for the official ``google-genai`` SDK, whose ``base_url`` is the emulator's
URL plus this service's prefix.

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

Lifecycle: the shared one (:mod:`.lifecycle`, words in ``SHAPES``), but EXPIRED comes *without*
results, as documented ("the job will not have any results to retrieve"). An input file that is not
JSONL of ``{key, request}`` objects fails the batch (FAILED plus ``error``) when validation ends.
An unknown model is refused at create with 404 NOT_FOUND: the model is part of the URL.

Emulator choices where the real service is undocumented: list order is newest first; cancelling
an ended batch is 400 FAILED_PRECONDITION; per-request errors are ``google.rpc.Status`` objects
with RPC codes (3 = INVALID_ARGUMENT); thinking requests report a few ``thoughtsTokenCount``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from .fake_model import Behaviour, model_exists, reply
from .faults import CutConnection
from .gemini_files import (
    API_VERSIONS,
    GeminiFiles,
    GeminiFilesApi,
    _field,
    _json_body,
    _page,
    _rfc3339,
    _snake,
    _version,
    google_error,
)
from .lifecycle import FLEX_BUSY, Batch, Service, found, jsonl, route
from .live import Parsed, token_cost
from .responses import ApiError, JSONResponse

__all__ = ["API_VERSIONS", "GeminiService", "generate", "google_error", "request_problem"]

MAX_INLINE_BYTES = 20 * 1024 * 1024  # "inline requests must total under 20 MB"
MAX_STOP_SEQUENCES = 5
LIST_PAGE = (50, 1000)  # batches per page: default, maximum
_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main."
_RPC_INVALID_ARGUMENT = 3
# Thoughts a thinking request reports per level (the fake model does not really think).
_THOUGHTS = {"MINIMAL": 4, "LOW": 16, "MEDIUM": 32, "HIGH": 64}


# -- wire helpers ------------------------------------------------------------------------------


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


# -- batches -------------------------------------------------------------------------------------


@dataclass(kw_only=True, eq=False)
class GeminiJob(Batch):
    """One batch. ``source`` is JSONL in input order: ``{key, request}`` lines of an uploaded file,
    or the inline ``{request, metadata}`` items the emulator wrote down at create."""

    model: str  # "models/…"
    display_name: str | None
    source: Path
    input_file: str | None  # "files/…" when created from a file
    output_file: str | None = None
    inlined: list[dict] | None = None


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
    for index, raw in enumerate(jsonl(job.source)):
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


# -- HTTP ----------------------------------------------------------------------------------------


class GeminiService(GeminiFilesApi, Service[GeminiJob]):
    """The mounted Gemini API: batches, files and resumable uploads under ``prefix``."""

    error_shape = "google"

    def __init__(self, *, prefix: str, **config: Any) -> None:
        super().__init__(prefix=prefix, **config)
        self.open_paths = (f"{prefix}/upload/",)  # resumable upload chunks carry no key
        self.files = GeminiFiles(self.data_dir, self.clock)

    def routes(self) -> list[BaseRoute]:
        return [
            *self.file_routes(),
            route("/{version}/models/{ref}", POST=self.create_batch),
            route("/{version}/batches", GET=self.list_batches),
            route("/{version}/batches/{ref}", GET=self.get_batch, POST=self.batch_action, DELETE=self.delete_batch),
        ]

    def invalid_key_response(self) -> Response:
        """What the Gemini API answers a key it does not know: a 400 INVALID_ARGUMENT (not a 401) whose
        ErrorInfo reason is API_KEY_INVALID."""
        message = "API key not valid. Please pass a valid API key."
        return google_error(400, message, "INVALID_ARGUMENT", [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
             "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
            {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message},
        ]).response()

    def fault_response(self, status: int) -> Response:
        name, message = self.fault_errors[status]
        delay = f"{self.faults.plan.retry_after:g}s"
        details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}] if status == 429 else None
        return google_error(status, message, name, details).response()

    # -- live --------------------------------------------------------------------------------------

    live_path = "/{version}/models/{model}:generateContent"

    def live(self, path: str, body: Any) -> Parsed:
        version, models, model = (path[len(self.prefix) + 1:].removesuffix(":generateContent").split("/", 2)
                                  + ["", ""])[:3]
        if version not in API_VERSIONS or models != "models" or not model or "/" in model:
            return google_error(404, f"Unknown request URL: POST {path}.").response()
        if not model_exists(model):
            return google_error(404, f"models/{model} is not found for API version {version}, or is not supported for "
                                    "generateContent. Call ListModels to see the list of available models and their "
                                    "supported methods.", "NOT_FOUND").response()
        if not isinstance(body, dict):
            return google_error(400, "Invalid JSON payload received.").response()
        problem = request_problem(body)
        if problem is not None:
            return google_error(400, problem["message"]).response()
        system = _field(body, "systemInstruction")
        chars = sum(len(t) for c in [*_field(body, "contents"), *([system] if system else [])] for t in _texts(c))
        cost = token_cost(chars, _field(_field(body, "generationConfig") or {}, "maxOutputTokens"))
        flex = str(_field(body, "serviceTier") or "").lower() == "flex"
        if flex and self.flex_busy(model, body):
            return google_error(429, FLEX_BUSY, "RESOURCE_EXHAUSTED").response()

        def build() -> dict:
            answer = generate(body, f"models/{model}", secrets.token_urlsafe(16), behaviour=self.behaviour)
            answer["usageMetadata"].update({"serviceTier": "flex"} if flex else {})  # the tier that served it
            return answer

        return model, cost, build

    # -- batches -----------------------------------------------------------------------------------

    async def create_batch(self, request: Request) -> Response:
        version = _version(request)
        model, _, method = request.path_params["ref"].partition(":")
        if method != "batchGenerateContent":
            raise google_error(404, f"Unknown request URL: POST {request.url.path}.")
        if not model_exists(model):
            raise google_error(404, f"models/{model} is not found for API version {version}, or is not supported "
                                    "for batchGenerateContent. Call ListModels to see the list of available models "
                                    "and their supported methods.", "NOT_FOUND")
        if len(await request.body()) > MAX_INLINE_BYTES:
            raise google_error(400, f"Request payload size exceeds the limit: {MAX_INLINE_BYTES} bytes.")
        body = await _json_body(request)
        batch = _field(body, "batch")
        input_config = _field(batch, "inputConfig")
        if not isinstance(input_config, dict):
            raise google_error(400, "* BatchGenerateContentRequest.batch.input_config: input_config is required")
        file_name, inline = _field(input_config, "fileName"), _field(_field(input_config, "requests"), "requests")
        if (file_name is None) == (inline is None):
            raise google_error(400, "* BatchGenerateContentRequest.batch.input_config: set exactly one of "
                                    "file_name and requests")
        job_fields = {"id": secrets.token_hex(16), "model": f"models/{model}", "created": self.now(),
                      "display_name": _field(batch, "displayName"), "timing": self.timing,
                      "window": self.timing.completion_window_seconds}
        if file_name is not None:
            job = await self._file_job(file_name, job_fields)
            self.files.store.pin(job.source)  # its client may delete the input file while the batch reads it
        else:
            job = await run_in_threadpool(self._inline_job, inline, job_fields)
        self.batches.add(job)
        return self.faults.lost(JSONResponse(self._json(job, with_inline=True)))

    async def _file_job(self, file_name: Any, job_fields: dict) -> GeminiJob:
        gfile = self.files.get(str(file_name).removeprefix("files/"))
        if gfile is None:
            raise google_error(400, f"* BatchGenerateContentRequest.batch.input_config.file_name: "
                                    f"file {file_name} does not exist")
        total, bad, problem = await run_in_threadpool(_scan_file, gfile.stored.path, self.max_lines)
        return GeminiJob(source=gfile.stored.path, input_file=f"files/{gfile.id}", total=total, bad=bad,
                         failure=problem, **job_fields)

    def _inline_job(self, inline: Any, job_fields: dict) -> GeminiJob:
        """Inline requests are parsed with the create call, so their shape errors are a 400 now."""
        if not isinstance(inline, list) or not inline:
            raise google_error(400, "* BatchGenerateContentRequest.batch.input_config.requests: requests must not be empty")
        if len(inline) > self.max_lines:
            raise google_error(400, f"A batch may hold at most {self.max_lines} requests.")
        path = self.files.store.blob_path()
        bad = bytearray()
        with open(path, "wb") as out:
            for i, item in enumerate(inline):
                request = _field(item, "request")
                if not isinstance(request, dict):
                    path.unlink(missing_ok=True)
                    raise google_error(400, f"* BatchGenerateContentRequest.batch.input_config.requests.requests[{i}]"
                                            ".request: request is required")
                line = {"request": request}
                if _field(item, "metadata") is not None:
                    line["metadata"] = _field(item, "metadata")
                out.write(orjson.dumps(line) + b"\n")
                bad.append(0 if request_problem(request) is None else 1)
        return GeminiJob(source=path, input_file=None, total=len(inline), bad=bad, **job_fields)

    async def list_batches(self, request: Request) -> Response:
        _version(request)
        self.stats.add(self.provider, "batch_lists")
        page, token = _page(request, self.batches.newest_first(), LIST_PAGE)
        await run_in_threadpool(self.batches.advance, *page)
        body: dict[str, Any] = {"operations": [self._json(job, with_inline=False) for job in page]}
        if token:
            body["nextPageToken"] = token
        return JSONResponse(body)

    async def get_batch(self, request: Request) -> Response:
        _version(request)
        job = await self.read_batch(self._job(request.path_params["ref"]))
        inlined = job.inlined
        if inlined and self.faults.take("truncated_download"):  # the read that brings inline results
            inlined = inlined[:len(inlined) // 2]  # is their download: a complete answer with half of them
        elif inlined and self.faults.take("cut_download"):
            return CutConnection(JSONResponse(self._json(job, with_inline=True)).body, media_type="application/json")
        return JSONResponse(self._json(job, with_inline=True, inlined=inlined))

    async def batch_action(self, request: Request) -> Response:
        """``:cancel`` (the SDK) and ``:delete`` (the REST guide) are POSTs on the batch."""
        _version(request)
        job_id, _, action = request.path_params["ref"].partition(":")
        if action == "delete":
            return await self.delete_batch(request, job_id)
        if action != "cancel":
            raise google_error(404, f"Unknown request URL: POST {request.url.path}.")
        job = self._job(job_id)
        if not await run_in_threadpool(self.batches.cancel, job):
            raise google_error(400, f"Batch batches/{job.id} has already ended ({job.word(self.shape)}).",
                               "FAILED_PRECONDITION")
        return JSONResponse({})

    async def delete_batch(self, request: Request, job_id: str | None = None) -> Response:
        _version(request)
        job_id = job_id or request.path_params["ref"]
        found(self.batches.pop, job_id, self.no_batch)
        return JSONResponse({})

    def _job(self, job_id: str) -> GeminiJob:
        return found(self.batches.get, job_id, self.no_batch)

    def no_batch(self, batch_id: str) -> ApiError:
        return google_error(404, "Requested entity was not found.", "NOT_FOUND")

    def _json(self, job: GeminiJob, with_inline: bool, inlined: list[dict] | None = None) -> dict:
        now = self.now()
        done, failed = job.progress(now)
        last_change = job.ended_at if job.ended_at is not None else now
        meta: dict[str, Any] = {
            "@type": _TYPE + "GenerateContentBatch",
            "model": job.model,
            "name": f"batches/{job.id}",
            "createTime": _rfc3339(job.created),
            "updateTime": _rfc3339(last_change),
            "batchStats": _int64(requestCount=job.total, successfulRequestCount=done - failed,
                                 failedRequestCount=failed, pendingRequestCount=job.total - done),
            "state": job.word(self.shape),
        }
        if job.display_name:
            meta["displayName"] = job.display_name
        if job.input_file:
            meta["inputConfig"] = {"fileName": job.input_file}
        meta.update({name: _rfc3339(t) for name, t in job.times(self.shape).items() if t is not None})
        output: dict[str, Any] | None = None
        if job.output_file is not None:
            output = {"responsesFile": job.output_file}
        elif job.inlined is not None and with_inline:  # list calls never carry inline results
            output = {"inlinedResponses": {"inlinedResponses": job.inlined if inlined is None else inlined}}
        if output is not None:
            meta["output"] = output
        doc: dict[str, Any] = {"name": f"batches/{job.id}", "metadata": meta}
        if job.ended:
            doc["done"] = True
            if job.phase == "failed":
                doc["error"] = {"code": _RPC_INVALID_ARGUMENT, "message": job.failure or "The batch failed."}
            elif output is not None:
                doc["response"] = {"@type": _TYPE + "GenerateContentBatchOutput", **output}
        return doc

    def end(self, job: GeminiJob, phase: str) -> None:
        """The results hook: a generated file for a file batch, inline responses otherwise."""
        done = job.done or 0
        if done:
            [lines] = self.faults.corrupt(job.ordinal, [[orjson.dumps(r) for r in _execute(job, done, self.behaviour)]])
            if job.input_file:
                job.output_file = self.files.add_generated(f"batch-{job.id}", lines)
            else:  # a malformed inline response is an entry that says nothing
                job.inlined = [_loads_or_empty(line) for line in lines]
        if job.input_file:
            self.files.store.unpin(job.source)
        else:  # the inline requests were the emulator's own copy
            job.source.unlink(missing_ok=True)


def _loads_or_empty(line: bytes) -> dict:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return {}
