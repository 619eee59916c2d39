"""Gemini Developer API batch mode adapter on the official ``google-genai`` SDK.

Requests travel the two ways the API offers. A batch file up to ``INLINE_MAX_BYTES`` goes inline
in the create call (``metadata.key`` carries our key, results come back inside the batch); a
larger one is uploaded through the Files API as JSONL of ``{key, request}`` lines and its results
come back as a generated file, which is streamed to a temporary file and read line by line.
Results are matched by those keys, never by position. The batch's ``display_name`` is our tag,
so ``find`` recognises a batch whose create response was lost by listing batches.

The SDK reads batch state from ``metadata`` and does not surface ``batchStats`` or the
operation's ``error`` in Developer API mode. When a batch with a results file has ended, ``poll``
reads the batch once more as raw JSON for its ``batchStats`` (the provider's count of the lines it
answered), which the engine compares with the lines a download brought.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import orjson

from ..errors import ProviderError
from ..limits import MB, BatchLimits
from ..retry import ErrorCodes
from .base import (
    BatchProvider,
    CallFailure,
    LiveResponse,
    LiveRoute,
    Outcome,
    RemoteBatch,
    decode_stream,
    join_url,
    retry_after_of,
)

# Batch files up to this size are sent inline. The API takes inline requests under 20 MB, but
# inline results come back in one JSON body that the SDK parses whole, so only small batches
# go inline; everything larger is uploaded and its results streamed.
INLINE_MAX_BYTES = 2 * 1024 * 1024
# Gemini 2.x models take a thinking budget, not a level: the budgets Google documents for the
# OpenAI-compatible reasoning_effort. Later models take thinkingLevel.
_EFFORT_BUDGETS = {"low": 1024, "medium": 8192, "high": 24576}
_BUDGET_ONLY_MODELS = ("gemini-1", "gemini-2", "models/gemini-1", "models/gemini-2")
_MAX_STOP_SEQUENCES = 5
_ENDED = {"JOB_STATE_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
          "JOB_STATE_EXPIRED"}  # PARTIALLY_SUCCEEDED: Vertex's (providers/vertex.py)
_ANSWERED = {"STOP", "MAX_TOKENS"}  # finish reasons that leave an answer, even an empty one
# google.rpc.Code names, by number: per-request errors are google.rpc.Status objects.
_RPC_CODES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
              "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
              "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
# google.rpc codes, and ErrorInfo reasons (a bad key is a 400 INVALID_ARGUMENT with reason
# API_KEY_INVALID, so the reason is the code batchery keeps).
GEMINI_CODES = ErrorCodes(
    transient=frozenset({"RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED"}),
    account=frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED", "API_KEY_INVALID", "API_KEY_EXPIRED",
                       "API_KEY_SERVICE_BLOCKED"}),
)


class GeminiBatch(BatchProvider):
    name = "gemini"
    endpoint = "batchGenerateContent"
    limits = BatchLimits(max_requests=100_000, max_bytes=2048 * MB, discount=0.5, window="24h (expires at 48h)")
    key_variables: ClassVar[tuple[str, ...]] = ("GEMINI_API_KEY", "GOOGLE_API_KEY")  # the SDK takes GOOGLE_API_KEY too
    url_variable = "GOOGLE_GEMINI_BASE_URL"
    price_id = "google"
    emulator_service = "gemini"
    error_codes = GEMINI_CODES
    # Flex: serviceTier in the request, as the SDK sends GenerateContentConfig.service_tier; the
    # tier that served it comes back in usageMetadata.serviceTier.
    flex_tier, tier_field, tier_path = True, "serviceTier", ("usageMetadata", "serviceTier")
    batch_states: ClassVar[Mapping[str, str]] = {
        "JOB_STATE_PENDING": "submitted", "JOB_STATE_QUEUED": "submitted", "JOB_STATE_RUNNING": "running",
        "JOB_STATE_PAUSED": "running", "JOB_STATE_UPDATING": "running", "JOB_STATE_CANCELLING": "cancelling",
        "JOB_STATE_SUCCEEDED": "done", "JOB_STATE_PARTIALLY_SUCCEEDED": "done", "JOB_STATE_FAILED": "failed",
        "JOB_STATE_CANCELLED": "cancelled", "JOB_STATE_EXPIRED": "expired"}

    @functools.cached_property
    def _errors_module(self) -> Any:
        from google.genai import errors  # lazy: only the provider in use pays for its SDK import

        return errors

    @functools.cached_property
    def client(self) -> Any:
        from google import genai
        from google.genai import types

        http_options = types.HttpOptions(base_url=self.base_url) if self.base_url else None
        # vertexai=False: a GOOGLE_GENAI_USE_VERTEXAI in the environment must not reroute us.
        # The SDK retries nothing unless asked, so a create whose response is lost is not
        # duplicated: the engine looks the tag up instead.
        return genai.Client(api_key=self.api_key, vertexai=False, http_options=http_options)

    def live_route(self, model: str) -> LiveRoute | None:
        """generateContent where the SDK posts it: its API version (v1, or GOOGLE_GENAI_API_VERSION)
        and its key header."""
        version = os.environ.get("GOOGLE_GENAI_API_VERSION") or "v1"
        name = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
        url = join_url(self.base_url or "https://generativelanguage.googleapis.com",
                       f"/{'v1beta' if version == 'beta' else version}/{name}:generateContent")
        return LiveRoute(url, {"x-goog-api-key": self.api_key.strip()})

    # -- requests out --------------------------------------------------------------------------

    def check(self, request: dict) -> str | None:
        if request.get("system") == "" or any(m["content"] == "" for m in request["messages"]):
            return "gemini refuses empty text: give every message (and the system prompt) some content"
        started = False
        for i, message in enumerate(request["messages"]):
            if message["role"] in ("system", "developer"):
                if started:
                    return (f"gemini takes system instructions only before the conversation; messages[{i}] is a "
                            f"{message['role']} message after it")
            else:
                started = True
        if not started:
            return "gemini needs at least one user or assistant message"
        if len(request.get("stop", ())) > _MAX_STOP_SEQUENCES:
            return f"gemini accepts at most {_MAX_STOP_SEQUENCES} stop sequences"
        return None

    line_id_field, line_body_field, model_in_body = "key", "request", False

    @staticmethod
    def _read(job: Any) -> RemoteBatch:
        """A batch as the SDK's BatchJob describes it."""
        return _remote(job)

    def translate(self, request: dict) -> dict:
        return generate_request(request)

    def upload(self, path: Path) -> str:
        if path.stat().st_size <= INLINE_MAX_BYTES:
            return str(path.resolve())  # create sends it inline
        with self._errors("upload"):
            name = self.client.files.upload(file=path, config={"mime_type": "jsonl", "display_name": path.name}).name
        if not name:
            raise ProviderError("gemini: the Files API accepted the upload but named no file")
        return name

    def create(self, input_file: str, model: str, tag: str) -> RemoteBatch:
        src: Any = input_file if input_file.startswith("files/") else list(_inline_requests(Path(input_file)))
        with self._errors("create"):
            job = self.client.batches.create(model=model, src=src, config={"display_name": tag})
        return self._read(job)

    # -- watching ------------------------------------------------------------------------------

    def listed(self) -> Iterator[RemoteBatch]:
        """The API does not document the list's order (the emulator serves newest first)."""
        return map(self._read, self.client.batches.list(config={"page_size": 100}))

    def fetch(self, remote_id: str) -> RemoteBatch:
        return self._read(self.client.batches.get(name=remote_id))

    def poll(self, remote_ids: list[str]) -> dict[str, RemoteBatch]:
        found = super().poll(remote_ids)
        for remote in found.values():
            if remote.ended and remote.output_file:  # inline results come whole in one body: never short
                self._count(remote)
        return found

    def _count(self, remote: RemoteBatch) -> None:
        """Fill in the provider's line counts (``batchStats``), which the SDK's BatchJob leaves out,
        from the batch as raw JSON, through the SDK's own request method (the one its typed calls use)."""
        with self._errors("get batch"):
            body = self.client._api_client.request("get", remote.remote_id, {}).body
        stats = (orjson.loads(body or b"{}").get("metadata") or {}).get("batchStats") or {}
        remote.completed = int(stats.get("successfulRequestCount") or 0)
        remote.failed = int(stats.get("failedRequestCount") or 0)
        remote.total = int(stats.get("requestCount") or 0)

    def cancel(self, remote_id: str) -> None:
        with self._errors("cancel"):
            try:
                self.client.batches.cancel(name=remote_id)
            except self._errors_module.ClientError as exc:
                if exc.status != "FAILED_PRECONDITION":  # the batch already ended: collected as usual
                    raise

    # -- results in ----------------------------------------------------------------------------

    def outcomes(self, remote: RemoteBatch) -> Iterator[Outcome]:
        file_name, inlined = remote.output_file, None
        if file_name is None:  # list calls never carry inline results: read the batch itself
            with self._errors("get batch"):
                dest = self.client.batches.get(name=remote.remote_id).dest
            file_name = dest.file_name if dest else None
            inlined = dest.inlined_responses if dest else None
        if file_name:
            yield from self._file_outcomes(file_name)
        for item in inlined or ():
            outcome = _inline_outcome(item)
            if outcome is not None:
                yield outcome

    def _file_outcomes(self, file_name: str) -> Iterator[Outcome]:
        # The SDK streams a download only into a destination: a temporary file keeps memory flat.
        with tempfile.TemporaryFile() as spool:
            with self._errors("download"):
                self._download(file_name, spool)
            spool.seek(0)
            yield from decode_stream(iter(lambda: spool.read(1 << 20), b""), self.decode_result)

    def _download(self, file_name: str, spool: Any) -> None:
        self.client.files.download(file=file_name, destination=spool)

    @staticmethod
    def decode_result(line: bytes) -> Outcome | None:
        return decode_line(line)

    # -- live mode -----------------------------------------------------------------------------

    def open_live_client(self):
        return self.client.aio

    async def send(self, body: dict, model: str) -> LiveResponse:
        """generateContent through the SDK: the REST body's generationConfig, systemInstruction and
        the like become the SDK's config (its types take the REST camelCase names)."""
        config = dict(body.get("generationConfig") or {})
        config.update((k, v) for k, v in body.items() if k not in ("contents", "generationConfig"))
        if self.live_timeout is not None:
            config["httpOptions"] = {"timeout": int(self.live_timeout * 1000)}  # the SDK counts milliseconds
        with self._errors("live call"):  # no answer at all: TransientError
            try:
                response = await self.live_client.models.generate_content(
                    model=model, contents=body.get("contents"), config=config or None)
            except self._errors_module.APIError as exc:
                error = {"code": exc.code, "message": exc.message, "status": exc.status}
                if isinstance(exc.details, dict) and isinstance(exc.details.get("error"), dict):
                    error = exc.details["error"]
                return LiveResponse(exc.code, {}, orjson.dumps({"error": error}))
        http = response.sdk_http_response
        data = response.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"sdk_http_response"})
        return LiveResponse(200, (http.headers if http and http.headers else {}), orjson.dumps(data))

    def decode_live(self, custom_id: str, status: int, body) -> Outcome | None:
        if not isinstance(body, dict):
            return None
        return _outcome(custom_id, None if status != 200 else body, body.get("error") if status != 200 else None)

    async def aclose(self) -> None:
        client, self._live_client = self._live_client, None
        if client is not None:
            await client.aclose()

    def describe_error(self, exc: Exception) -> CallFailure | None:
        if isinstance(exc, self._errors_module.APIError):
            error = exc.details.get("error") if isinstance(exc.details, dict) else None
            error = error if isinstance(error, dict) else {"status": exc.status, "details": None}
            headers = exc.response.headers if exc.response is not None and hasattr(exc.response, "headers") else {}
            return CallFailure(exc.code, f"{exc.status}: {exc.message}", _error_code(error),
                               retry_after_of(headers, orjson.dumps({"error": error})))
        if isinstance(exc, ValueError):  # the SDK's own checks (pydantic validation included)
            return CallFailure(400, f"refused by the SDK: {exc}")
        return None


def _error_code(error: dict) -> str:
    """The code batchery keeps for a google.rpc.Status: an account reason from its ErrorInfo when
    there is one (a bad key is a 400 INVALID_ARGUMENT whose reason is API_KEY_INVALID), else the
    status name."""
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("reason") in GEMINI_CODES.account:
            return str(detail["reason"])
    code = error.get("status") or error.get("code")
    return _RPC_CODES[code] if isinstance(code, int) and 0 <= code < len(_RPC_CODES) else str(code or "error")


def generate_request(request: dict) -> dict:
    """Neutral request -> GenerateContentRequest (REST JSON), without the model: a batch has one."""
    system = [request["system"]] if "system" in request else []
    contents = []
    for message in request["messages"]:
        if message["role"] in ("system", "developer"):
            system.append(message["content"])  # check() lets these through only before the conversation
        else:
            role = "model" if message["role"] == "assistant" else "user"
            contents.append({"role": role, "parts": [{"text": message["content"]}]})
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    config: dict[str, Any] = {}
    for ours, theirs in (("max_tokens", "maxOutputTokens"), ("temperature", "temperature"), ("top_p", "topP"),
                         ("stop", "stopSequences")):
        if ours in request:
            config[theirs] = request[ours]
    if "response_format" in request:
        config["responseMimeType"] = "application/json"
        config["responseJsonSchema"] = request["response_format"]
    if "reasoning" in request:
        config["thinkingConfig"] = _thinking(request["reasoning"], request["model"])
    if config:
        body["generationConfig"] = config
    return body


def _thinking(reasoning: dict, model: str) -> dict:
    if "budget_tokens" in reasoning:
        return {"thinkingBudget": reasoning["budget_tokens"]}
    effort = reasoning["effort"]
    if model.startswith(_BUDGET_ONLY_MODELS):
        return {"thinkingBudget": _EFFORT_BUDGETS[effort]}
    return {"thinkingLevel": effort.upper()}


def _inline_requests(path: Path) -> Iterator[dict]:
    """The batch file's ``{key, request}`` lines as the SDK's InlinedRequest (``metadata.key``)."""
    with path.open("rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            line = orjson.loads(raw)
            request = line["request"]
            config = dict(request.get("generationConfig") or {})
            if "systemInstruction" in request:
                config["systemInstruction"] = request["systemInstruction"]
            yield {"contents": request["contents"], "metadata": {"key": line["key"]}, "config": config or None}


# -- decoding ----------------------------------------------------------------------------------


def decode_line(line: bytes, error_of: Callable[[dict], Any] = lambda obj: obj.get("error")) -> Outcome | None:
    """One result-file line (``{key, response}`` or ``{key, error}``; ``error_of`` finds the error
    where another service puts it) -> Outcome; None when it is unreadable or has no key (the
    request then counts as missing)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("key"), str):
        return None
    return _outcome(obj["key"], obj.get("response"), error_of(obj))


def _inline_outcome(item: Any) -> Outcome | None:
    """One InlinedResponse -> Outcome, by its ``metadata.key``."""
    key = (item.metadata or {}).get("key")
    if not isinstance(key, str):
        return None
    response = item.response.model_dump(mode="json", by_alias=True, exclude_none=True) if item.response else None
    error = item.error.model_dump(mode="json", exclude_none=True) if item.error else None
    return _outcome(key, response, error)


def _outcome(key: str, response: Any, error: Any) -> Outcome | None:
    if isinstance(error, dict):
        return Outcome.failed(key, _error_code(error), str(error.get("message") or ""))
    if not isinstance(response, dict):
        return None
    body = orjson.dumps(response)
    usage = response.get("usageMetadata") or {}
    prompt, answer, thoughts = (usage.get(k) for k in ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount"))
    output = None if answer is None and thoughts is None else (answer or 0) + (thoughts or 0)
    cached = usage.get("cachedContentTokenCount")
    blocked = (response.get("promptFeedback") or {}).get("blockReason")
    candidates = response.get("candidates") or []
    usage_fields = {"input_tokens": prompt, "output_tokens": output, "cached_tokens": cached,
                    "reasoning_tokens": thoughts}
    if blocked or not candidates:
        return Outcome.failed(key, str(blocked or "NO_CANDIDATES"),
                              "the prompt was blocked" if blocked else "the response has no candidates", body,
                              **usage_fields)
    candidate = candidates[0]
    parts = (candidate.get("content") or {}).get("parts") or []
    texts = [p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought")]
    finish = candidate.get("finishReason")
    if not texts and finish not in _ANSWERED:
        return Outcome.failed(key, str(finish), f"the model stopped without an answer ({finish})", body,
                              **usage_fields)
    return Outcome.succeeded(key, "".join(texts), body, **usage_fields)


def _remote(job: Any) -> RemoteBatch:
    state = str(getattr(job.state, "value", job.state))
    failed = state == "JOB_STATE_FAILED"
    return RemoteBatch(
        remote_id=job.name,
        status=state,
        ended=state in _ENDED,
        tag=job.display_name,
        output_file=job.dest.file_name if job.dest else None,
        error=(job.error.message if job.error and job.error.message else "the Gemini batch failed") if failed else None,
        error_code="batch_failed" if failed else None,
        leftover=GeminiBatch.leftover_of(state),
    )
