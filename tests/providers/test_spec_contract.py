"""Every answer the emulator gives, and every request the adapters send, validates against the
provider's own description of its API.

The OpenAPI documents that OpenAI, Mistral, Together, Groq and Anthropic publish are in
``tests/providers/specs/`` (sources in its README). Each provider's scenario drives the real adapter
(official SDK) against a real emulator whose ASGI app is wrapped by a recorder: a batch job through
the engine (uploads, creates, polls, downloads, a rejected line), a cancelled batch, an expired
batch, a search of the provider's batch list, live calls (answers, a rejected model, an invalid
request, rate-limit refusals) and the errors for an unknown batch and a wrong key. Then every
recorded exchange is checked with jsonschema: the request body against the operation's request
schema, the answer against the schema of its status (or the provider's error schema where the
document describes no error), and every line of the uploaded inputs and downloaded results
against the line and body schemas. Gemini has no OpenAPI document: its answers are checked with
the google-genai SDK's own pydantic types, which forbid unknown fields.

OpenAPI 3.0 is not quite JSON Schema: :func:`to_json_schema` turns ``nullable: true`` into a
``null`` type and boolean ``exclusiveMinimum``/``exclusiveMaximum`` into numbers; ``$ref``s are
resolved by ``referencing`` against the whole document. Formats (``uuid``) are checked.

Where a real provider sends ``null`` in a field its document types without null, the test allows
it: :data:`NULLS_REAL_PROVIDERS_SEND` lists each such field with the reason. Nothing else is allowed.
"""

from __future__ import annotations

import email.parser
import hashlib
import lzma
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from conftest import MODELS, counted, simulated, start_job
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from batchery.emulator import Emulator, ManualClock
from batchery.engine import prepare_job
from batchery.errors import BatcheryError
from batchery.inputs import iter_objects
from batchery.live import LiveRunner
from batchery.providers import get_provider

SPECS = Path(__file__).parent / "specs"
KEY = "test-key"

# (provider, field) -> why a null there is what the real API sends although the document types the
# field without null. A field is its JSON path in the answer, any index written [] and a list page's
# "data[]." left off, so one entry covers a batch alone and in a list.
_BATCH_EXAMPLE = "the document's own example batch shows null here until the batch gets that far"
NULLS_REAL_PROVIDERS_SEND: dict[tuple[str, str], str] = {
    **{(provider, f"$.{name}"): _BATCH_EXAMPLE for provider in ("openai", "groq") for name in (
        "errors", "output_file_id", "error_file_id", "in_progress_at", "finalizing_at", "completed_at",
        "failed_at", "expired_at", "cancelling_at", "cancelled_at")},
    ("openai", "$.status_details"): "deprecated; the API still sends it as null (openai-python types it Optional)",
    ("together", "$.choices[].logprobs"): "null unless logprobs were asked for (the together SDK types it Optional)",
}

# Defects of the documents themselves (their README), mended after loading: (provider, pointer, key
# to drop from the list there, why).
DOCUMENT_DEFECTS = [
    ("mistral", "/components/schemas/ChatCompletionResponse/allOf/1/required", "data",
     "required but never defined: no answer could have it"),
]


# -- the documents -----------------------------------------------------------------------------------


def to_json_schema(node: Any) -> Any:
    """An OpenAPI 3.0 schema tree as JSON Schema 2020-12 (3.1 documents pass through unchanged,
    except for the ``nullable`` some of them still carry)."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: to_json_schema(value) for key, value in node.items()}
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), bool):  # 3.0: a flag on minimum/maximum; 2020-12: the number
            flag = out.pop(bound)
            if flag and limit in out:
                out[bound] = out.pop(limit)
    if out.pop("nullable", False) is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
            if isinstance(out.get("enum"), list) and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        elif isinstance(kind, list):
            out["type"] = [*kind, "null"] if "null" not in kind else kind
        else:  # a $ref or a composition: null or that
            out = {"anyOf": [out, {"type": "null"}]}
    return out


@cache
def document(provider: str, cache_dir: Path) -> dict:
    """The provider's OpenAPI document converted to JSON Schema, parsed once and then pickled:
    parsing the YAML takes seconds, the pickle milliseconds."""
    raw = lzma.decompress((SPECS / f"{provider}-openapi.yaml.xz").read_bytes())
    cached = cache_dir / f"{provider}-{hashlib.sha256(raw).hexdigest()[:16]}.pickle"
    if cached.exists():
        return _mended(provider, pickle.loads(cached.read_bytes()))
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    doc = to_json_schema(yaml.load(raw, Loader=loader))
    tmp = cached.with_suffix(f".{id(doc)}.tmp")
    tmp.write_bytes(pickle.dumps(doc, protocol=pickle.HIGHEST_PROTOCOL))
    tmp.replace(cached)  # atomic: two workers may write it at once
    return _mended(provider, doc)


def _mended(provider: str, doc: dict) -> dict:
    for name, pointer, key, _why in DOCUMENT_DEFECTS:
        if name == provider:
            node: Any = doc
            for part in pointer.strip("/").split("/"):
                node = node[int(part)] if isinstance(node, list) else node[part]
            if key in node:
                node.remove(key)
    return doc


class Spec:
    """One provider's document: its paths, and validators for JSON pointers into it."""

    def __init__(self, provider: str, doc: dict) -> None:
        self.provider, self.doc = provider, doc
        self.base = f"urn:batchery-spec:{provider}"
        self.registry = Registry().with_resource(self.base, DRAFT202012.create_resource(doc))
        self._validators: dict[str, Draft202012Validator] = {}
        templates = [p for p in doc["paths"] if "?" not in p]  # Anthropic's ?beta=true twins: not used
        # Literal paths before templated ones: /batches/{id} must not swallow /files/upload-like paths.
        self.paths = sorted(((t, re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(t)) + "$"))
                             for t in templates), key=lambda pair: pair[0].count("{"))

    def match(self, path: str) -> str | None:
        return next((t for t, pattern in self.paths if pattern.match(path)), None)

    def errors(self, pointer: str, instance: Any) -> list[ValidationError]:
        validator = self._validators.get(pointer)
        if validator is None:
            validator = Draft202012Validator({"$ref": f"{self.base}#{pointer}"}, registry=self.registry,
                                             format_checker=Draft202012Validator.FORMAT_CHECKER)
            self._validators[pointer] = validator
        return list(validator.iter_errors(instance))

    def node(self, pointer: str) -> Any:
        node: Any = self.doc
        for part in pointer.strip("/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node


def op(path: str, method: str, *rest: str) -> str:
    """A JSON pointer into an operation: ``op("/batches", "post", "requestBody")``."""
    return "/".join(["/paths", path.replace("~", "~0").replace("/", "~1"), method,
                     *(r.replace("~", "~0").replace("/", "~1") for r in rest)])


def request_schema(path: str, method: str) -> str:
    return op(path, method, "requestBody", "content", "application/json", "schema")


def response_schema(path: str, method: str, status: int | str = "200") -> str:
    return op(path, method, "responses", str(status), "content", "application/json", "schema")


def schema(name: str) -> str:
    return f"/components/schemas/{name}"


# -- the providers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """Where one provider's emulator answers, and which schemas describe what has none of its own."""

    provider: str
    strip: str  # the emulator's prefix before the document's paths
    chat: str  # the document's path of the live generation endpoint
    error: str | None  # the error answer, where an operation describes none (None: not described)
    input_line: str | None  # one line of a batch input file (None: the document has none)
    output_line: str | None  # one line of a results file
    line_request: str  # the request inside an input line
    line_response: str  # the answer inside a results line (status 200)
    line_error: str | None  # the error body inside a results line
    model_per_batch: bool = False  # the job names the model, the lines do not (Mistral)
    undescribed: frozenset[str] = frozenset()  # "METHOD path" the document leaves out, with reason in CASES


def _openai_like(provider: str, strip: str, chat: str, lines: str | None) -> Case:
    return Case(provider, strip, chat, schema("ErrorResponse"), lines and schema(lines + "Input"),
                lines and schema(lines + "Output"), request_schema(chat, "post"), response_schema(chat, "post"),
                schema("ErrorResponse"))


CASES = {
    "openai": _openai_like("openai", "/v1", "/chat/completions", None),  # OpenAI describes no batch line
    "groq": _openai_like("groq", "/groq", "/openai/v1/chat/completions", "BatchRequest"),
    "mistral": Case("mistral", "/mistral", "/v1/chat/completions", None, schema("BatchRequest"),
                    None, request_schema("/v1/chat/completions", "post"),
                    response_schema("/v1/chat/completions", "post"), None, model_per_batch=True),
    "together": Case("together", "/together/v1", "/chat/completions", schema("ErrorData"), None, None,
                     request_schema("/chat/completions", "post"), response_schema("/chat/completions", "post"),
                     schema("ErrorData"),
                     # the SDK's three-step upload: create (POST /files), PUT the bytes, preprocess
                     undescribed=frozenset({"POST /files"})),
    "anthropic": Case("anthropic", "/anthropic", "/v1/messages", schema("ErrorResponse"), None,
                      schema("MessageBatchIndividualResponse"), request_schema("/v1/messages", "post"),
                      response_schema("/v1/messages", "post"), schema("ErrorResponse")),
}


# -- recording what crosses the wire -----------------------------------------------------------------


@dataclass
class Exchange:
    method: str
    path: str
    query: str
    request_type: str
    request: bytes
    status: int = 0
    response_type: str = ""
    response: bytes = b""

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.status}"


class Recorder:
    """ASGI middleware keeping every request and answer, unchanged, for the checks afterwards."""

    def __init__(self, app: Any) -> None:
        self.app, self.exchanges = app, []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        ex = Exchange(scope["method"], scope["path"], scope.get("query_string", b"").decode(),
                      headers.get(b"content-type", b"").decode(), b"")
        chunks: list[bytes] = []
        answer: list[bytes] = []

        async def recv() -> dict:
            message = await receive()
            chunks.append(message.get("body", b""))
            return message

        async def snd(message: dict) -> None:
            if message["type"] == "http.response.start":
                ex.status = message["status"]
                ex.response_type = dict(message.get("headers", [])).get(b"content-type", b"").decode()
            elif message["type"] == "http.response.body":
                answer.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, recv, snd)
        finally:
            ex.request, ex.response = b"".join(chunks), b"".join(answer)
            self.exchanges.append(ex)


def recorded(recorder_list: list[Recorder], **config: Any) -> Emulator:
    emulator = Emulator(clock=ManualClock(), api_key=KEY, **config)
    recorder = Recorder(emulator.app)
    emulator.app = recorder
    recorder_list.append(recorder)
    return emulator.start()


# -- the scenario -----------------------------------------------------------------------------------


SCHEMA = {"type": "object", "properties": {"verdict": {"type": "string", "enum": ["pass", "fail"]}},
          "required": ["verdict"], "additionalProperties": False}


def job_lines() -> list[dict]:
    return [
        {"id": "plain", "prompt": "Name a colour."},
        {"id": "system", "system": "You are terse.", "messages": [
            {"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "Again, please."}]},
        {"id": "schema", "prompt": "Judge this answer.", "response_format": SCHEMA},
        {"id": "params", "prompt": "Count to three.", "max_tokens": 5, "temperature": 0.5, "top_p": 0.9,
         "stop": ["END"]},
        {"id": "rejected", "prompt": "Hello?", "model": "missing-model"},
    ]


UNKNOWN_BATCH = {"openai": "batch_0123456789abcdef01234567", "groq": "batch_0123456789abcdef01234567",
                 "anthropic": "msgbatch_0123456789abcdef01234567",
                 "mistral": "00000000-0000-4000-8000-000000000000",
                 "together": "00000000-0000-4000-8000-000000000000", "gemini": "batches/unknown0123"}


def small_batch(adapter: Any, tmp: Path, name: str, model: str) -> Any:
    """Upload and create a three-line batch through the adapter; the RemoteBatch it made."""
    path = tmp / f"{name}.jsonl"
    lines = [adapter.encode(f"bq-{name}-{i}", {"messages": [{"role": "user", "content": f"Q{i} {name}"}],
                                               "model": model, "max_tokens": 20}) for i in range(3)]
    path.write_bytes(b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines))
    return adapter.create(adapter.upload(path), model, f"tag-{name}")


def drive(provider: str, store: Any, tmp: Path) -> list[Exchange]:
    recorders: list[Recorder] = []
    model = MODELS[provider]
    main = recorded(recorders, processing_seconds=10, rpm=120)
    expiring = recorded(recorders, processing_seconds=10, completion_window_seconds=5)
    try:
        adapter = get_provider(provider, base_url=main.base_url(provider), api_key=KEY)
        # A batch job through the engine: uploads, creates, polls, downloads, one rejected line.
        start_job(store, main, job_lines(), name="batch", model=model, batch_size=3, provider=adapter).run()
        # A cancelled batch, and the lines it did not run.
        remote = small_batch(adapter, tmp, "cancelled", model)
        main.clock.advance(3)
        adapter.cancel(remote.remote_id)
        main.clock.advance(30)
        ended = adapter.poll([remote.remote_id])[remote.remote_id]
        list(adapter.outcomes(ended))
        adapter.find({"tag-nobody-made"})  # the provider's batch list
        # Live: answers, the rejected model, 429s (the client does not know the limit).
        live_lines = job_lines() + [{"id": f"more-{i}", "prompt": f"Live question {i}"} for i in range(4)]
        job, _ = prepare_job(store, "live", adapter, model, iter_objects(live_lines), "live", reuse=False)
        counted(LiveRunner(store, adapter, job, simulated(main, concurrency=4))).run()
        # An unknown batch, and a key the provider does not know.
        stranger = get_provider(provider, base_url=main.base_url(provider), api_key="wrong-key")
        for call in (lambda: adapter.poll([UNKNOWN_BATCH[provider]]), lambda: stranger.find({"tag-nobody-made"})):
            try:
                call()
            except BatcheryError:
                pass  # the answer on the wire is what is checked
        # An expired batch, and the lines it did not run.
        late = get_provider(provider, base_url=expiring.base_url(provider), api_key=KEY)
        remote = small_batch(late, tmp, "expired", model)
        expiring.clock.advance(30)
        ended = late.poll([remote.remote_id])[remote.remote_id]
        list(late.outcomes(ended))
    finally:
        main.stop()
        expiring.stop()
    return [ex for r in recorders for ex in r.exchanges]


# -- the checks ------------------------------------------------------------------------------------


def _where(error: ValidationError) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)


def _pattern(where: str) -> str:
    return re.sub(r"^\$\.data\[\]\.", "$.", re.sub(r"\[\d+\]", "[]", where))


def _allowed(provider: str, error: ValidationError) -> bool:
    """A null where the real API sends null (see NULLS_REAL_PROVIDERS_SEND)."""
    return error.instance is None and (provider, _pattern(_where(error))) in NULLS_REAL_PROVIDERS_SEND


def _leaves(error: ValidationError) -> Iterator[ValidationError]:
    """The most specific failures under an anyOf/oneOf, so an allowed null is recognised inside one."""
    if error.context:
        for sub in error.context:
            yield from _leaves(sub)
    else:
        yield error


def check(spec: Spec, pointer: str | None, instance: Any, what: str) -> list[str]:
    if pointer is None:
        return []  # the document describes no schema for it (Mistral's error envelope)
    problems = []
    for error in spec.errors(pointer, instance):
        leaves = list(_leaves(error))
        if error.validator in ("anyOf", "oneOf") and any(_allowed(spec.provider, leaf) for leaf in leaves):
            continue  # one branch fails only on an allowed null
        if _allowed(spec.provider, error):
            continue
        problems.append(f"{what}: {_where(error)}: {error.message[:300]}")
    return problems


def jsonl(raw: bytes) -> list[Any]:
    return [orjson.loads(line) for line in raw.splitlines() if line.strip()]


def uploaded_files(ex: Exchange) -> list[bytes]:
    """The file contents a request carries: multipart parts with a filename, or a raw upload."""
    if ex.request_type.startswith("multipart/"):
        message = email.parser.BytesParser().parsebytes(
            b"Content-Type: " + ex.request_type.encode() + b"\r\n\r\n" + ex.request)
        return [part.get_payload(decode=True) for part in message.walk()
                if part.get_filename() is not None]
    if ex.method in ("PUT", "POST") and ex.request and not ex.request_type.startswith("application/json"):
        try:
            jsonl(ex.request)
        except orjson.JSONDecodeError:
            return []
        return [ex.request]
    return []


def check_lines(spec: Spec, case: Case, lines: list[Any], what: str) -> list[str]:
    """Batch input lines (they carry a request) or results lines (they carry an answer or an error)."""
    problems = []
    for i, line in enumerate(lines):
        where = f"{what} line {i}"
        if case.provider == "anthropic":  # results only: requests travel inside the create call
            problems += check(spec, case.output_line or "", line, where)
            result = line.get("result") or {}
            if result.get("type") == "errored":
                problems += check(spec, case.error, result.get("error"), where + " error")
            continue
        if "body" in line and "response" not in line:  # an input line
            if case.input_line:
                problems += check(spec, case.input_line, line, where)
            body = line["body"]
            if case.model_per_batch:
                body = {"model": "set-by-the-batch", **body}
            problems += check(spec, case.line_request, body, where + " body")
            continue
        if case.output_line:
            problems += check(spec, case.output_line, line, where)
        response = line.get("response")
        if isinstance(response, dict):
            body = response.get("body")
            ok = response.get("status_code") == 200
            problems += check(spec, case.line_response if ok else case.line_error, body, where + " body")
    return problems


def is_download(path: str) -> bool:
    return path.endswith(("/content", "/results"))


def check_exchange(spec: Spec, case: Case, ex: Exchange) -> tuple[str | None, list[str]]:
    """(the operation it was, problems) for one recorded exchange of ``case``'s provider."""
    path = ex.path.removeprefix(case.strip)
    template = spec.match(path)
    if template is None:
        return None, []  # not a path the document describes (Together's upload steps)
    method = ex.method.lower()
    operation = spec.doc["paths"][template].get(method)
    if operation is None:
        if f"{ex.method} {template}" in case.undescribed:
            return None, []
        return None, [f"{ex}: the document has no {method.upper()} {template}"]
    name = f"{method.upper()} {template} {ex.status}"
    problems: list[str] = []
    for content in uploaded_files(ex):
        problems += check_lines(spec, case, jsonl(content), f"{ex} upload")
    if ex.request_type.startswith("application/json") and ex.request:
        body = orjson.loads(ex.request)
        pointer = request_schema(template, method)
        try:
            spec.node(pointer)
        except KeyError:
            problems.append(f"{ex}: sent a JSON body the document does not describe")
        else:
            problems += check(spec, pointer, body, f"{ex} request")
    if ex.status == 200 and is_download(path):
        return name, problems + check_lines(spec, case, jsonl(ex.response), f"{ex} download")
    if not ex.response:
        return name, problems
    answer = orjson.loads(ex.response)
    pointer = response_schema(template, method, ex.status)
    try:
        spec.node(pointer)
    except KeyError:
        if ex.status < 400:
            return name, [*problems, f"{ex}: a status the document does not describe"]
        pointer = case.error
    return name, problems + check(spec, pointer, answer, f"{ex} answer")


# -- the tests -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def spec_cache(request) -> Path:
    return Path(request.config.cache.mkdir("spec-contract"))


# What each scenario must have exercised, so a check cannot pass by seeing nothing.
MUST_SEE = {
    "openai": {"POST /files 200", "POST /batches 200", "GET /batches 200", "POST /batches/{batch_id}/cancel 200",
               "GET /files/{file_id}/content 200", "GET /batches/{batch_id} 404", "GET /batches 401",
               "POST /chat/completions 200", "POST /chat/completions 404", "POST /chat/completions 429"},
    "groq": {"POST /openai/v1/files 200", "POST /openai/v1/batches 200", "GET /openai/v1/batches 200",
             "POST /openai/v1/batches/{batch_id}/cancel 200", "GET /openai/v1/files/{file_id}/content 200",
             "GET /openai/v1/batches/{batch_id} 404", "GET /openai/v1/batches 401",
             "POST /openai/v1/chat/completions 200", "POST /openai/v1/chat/completions 404",
             "POST /openai/v1/chat/completions 429"},
    "mistral": {"POST /v1/files 200", "POST /v1/batch/jobs 200", "GET /v1/batch/jobs 200",
                "POST /v1/batch/jobs/{job_id}/cancel 200", "GET /v1/files/{file_id}/content 200",
                "GET /v1/batch/jobs/{job_id} 404", "GET /v1/batch/jobs 401", "POST /v1/chat/completions 200",
                "POST /v1/chat/completions 400", "POST /v1/chat/completions 429"},
    "together": {"POST /batches 201", "GET /batches 200", "POST /batches/{id}/cancel 200",
                 "GET /files/{id}/content 200", "GET /batches/{id} 404", "GET /files 401",
                 "POST /chat/completions 200", "POST /chat/completions 404", "POST /chat/completions 429"},
    "anthropic": {"POST /v1/messages/batches 200", "GET /v1/messages/batches 200",
                  "GET /v1/messages/batches/{message_batch_id} 200",
                  "POST /v1/messages/batches/{message_batch_id}/cancel 200",
                  "GET /v1/messages/batches/{message_batch_id}/results 200",
                  "GET /v1/messages/batches/{message_batch_id} 404", "POST /v1/messages 200",
                  "POST /v1/messages 404", "POST /v1/messages 429"},
}


@pytest.mark.parametrize("provider", sorted(CASES))
def test_every_answer_and_request_matches_the_providers_own_description(provider, store, tmp_path, spec_cache):
    spec = Spec(provider, document(provider, spec_cache))
    case = CASES[provider]
    seen: set[str] = set()
    problems: list[str] = []
    for ex in drive(provider, store, tmp_path):
        if ex.path.startswith(case.strip + "/"):
            name, found = check_exchange(spec, case, ex)
            problems += found
            if name:
                seen.add(name)
    assert problems == []
    assert MUST_SEE[provider] <= seen, sorted(MUST_SEE[provider] - seen)


# -- Gemini: the google-genai SDK's own types (they forbid unknown fields) --------------------------

# google.rpc.Status, the error envelope of every Google API (https://google.aip.dev/193).
GOOGLE_ERROR = {"type": "object", "required": ["error"], "additionalProperties": False, "properties": {"error": {
    "type": "object", "required": ["code", "message", "status"], "additionalProperties": False,
    "properties": {"code": {"type": "integer"}, "message": {"type": "string"}, "status": {"type": "string"},
                   "details": {"type": "array", "items": {"type": "object", "required": ["@type"]}}}}}}


def gemini_problems(ex: Exchange) -> list[str]:
    from google.genai import batches, types
    from pydantic import ValidationError as Invalid

    def model(kind: Any, value: Any, what: str) -> list[str]:
        try:
            kind.model_validate(value)
        except Invalid as exc:
            return [f"{ex} {what}: {exc}"[:600]]
        return []

    if not ex.response or ex.status == 0:
        return []
    if ex.status >= 400:
        errors = Draft202012Validator(GOOGLE_ERROR).iter_errors(orjson.loads(ex.response))
        return [f"{ex} error: {e.message}"[:300] for e in errors]
    if ex.path.endswith(":download"):
        lines = jsonl(ex.response)
        return [p for line in lines if "response" in line
                for p in model(types.GenerateContentResponse, line["response"], "result line")]
    answer = orjson.loads(ex.response)
    if ex.path.endswith(":generateContent"):
        return model(types.GenerateContentResponse, answer, "answer")
    if "file" in answer and isinstance(answer["file"], dict):
        return model(types.File, answer["file"], "file")
    if ex.path.endswith(":batchGenerateContent") or re.search(r"/batches/[^/:]+$", ex.path):
        inline = ((answer.get("metadata") or {}).get("output") or {}).get("inlinedResponses") or {}
        found = model(types.BatchJob, batches._BatchJob_from_mldev(answer), "batch")
        for item in inline.get("inlinedResponses") or []:
            if "response" in item:
                found += model(types.GenerateContentResponse, item["response"], "inline result")
        return found
    return []


def test_every_gemini_answer_matches_the_sdk_types(store, tmp_path):
    problems: list[str] = []
    paths = set()
    for ex in drive("gemini", store, tmp_path):
        if ex.path.startswith("/gemini/"):
            problems += gemini_problems(ex)
            paths.add((ex.method, re.sub(r"/(files|batches|models)/[^/:]+", r"/\1/ID", ex.path), ex.status))
    assert problems == []
    assert {("POST", "/gemini/v1/models/ID:generateContent", 200),
            ("POST", "/gemini/v1/models/ID:generateContent", 404),
            ("POST", "/gemini/v1/models/ID:generateContent", 429),
            ("POST", "/gemini/v1/models/ID:batchGenerateContent", 200), ("GET", "/gemini/v1/batches", 200),
            ("GET", "/gemini/v1/batches/ID", 200), ("GET", "/gemini/v1/batches/ID", 404),
            ("POST", "/gemini/v1/batches/ID:cancel", 200)} <= paths, sorted(paths)
