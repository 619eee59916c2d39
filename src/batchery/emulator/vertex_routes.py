"""Gemini batch prediction on Vertex AI for ``google-genai`` with ``vertexai=True``, and its Cloud
Storage (:mod:`.gcs`), under one prefix: the SDK's ``base_url`` and the storage client's ``api_endpoint``.

Jobs (research c.1) live at ``/{v1,v1beta1}/projects/{p}/locations/{l}/batchPredictionJobs``. A job reads
``{"request": …}`` lines from one ``gs://`` object and writes rows ``{"status": "", "processed_time",
"request", "response"}`` with each line's other fields (batchery's ``key``), in no set order, to
``predictions.jsonl`` in ``outputInfo.gcsOutputDirectory``; a failed row has a ``status``, no ``response``.
Expiry and cancel keep the rows done by then (Vertex exports and bills them); a job with failed rows
ends PARTIALLY_SUCCEEDED (an emulator choice). Live generateContent is served too.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .fake_model import model_exists
from .gcs import GcsApi
from .gemini_files import _field, _json_body, _page, _rfc3339, google_error
from .gemini_routes import GeminiService, _int64, _scan_file, generate, request_problem
from .lifecycle import SHAPES, Batch, Service, Shape, _words, jsonl, scrambled
from .responses import JSONResponse
from .state import Registry

SHAPES["vertex"] = Shape(_words(*(f"JOB_STATE_{w}" for w in (
    "PENDING", "RUNNING", "RUNNING", "SUCCEEDED", "FAILED", "EXPIRED", "CANCELLING", "CANCELLED"))),
    {"startTime": "in_progress", "endTime": "ended"}, finish=0.9)
_PARENT = "/{version}/projects/{project}/locations/{location}"
_JOBS = _PARENT + "/batchPredictionJobs"


@dataclass(kw_only=True, eq=False)
class VertexJob(Batch):
    model: str  # the model id ("gemini-2.5-flash")
    parent: str  # "projects/{p}/locations/{l}"
    display_name: str | None
    configs: dict  # its inputConfig and outputConfig, as created
    output_dir: str
    source: Any  # the input object's file (a new upload of that object does not change it)


class VertexService(GcsApi, Service[VertexJob]):
    error_shape = "google"
    fault_response = GeminiService.fault_response

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.objects, self.uploads = Registry(), Registry()

    def routes(self) -> list[BaseRoute]:
        return [*self.gcs_routes(), Route(_JOBS, self.create_job, methods=["POST"]),
                Route(_JOBS, self.list_jobs, methods=["GET"]), Route(_JOBS + "/{ref}", self.job, methods=["GET", "POST"]),
                Route(_PARENT + "/publishers/google/models/{ref}", self.generate_content, methods=["POST"])]

    def _parent(self, request: Request) -> str:
        if request.path_params["version"] not in ("v1", "v1beta1"):
            raise google_error(404, f"Unknown request URL: {request.method} {request.url.path}.")
        return f"projects/{request.path_params['project']}/locations/{request.path_params['location']}"

    async def create_job(self, request: Request) -> Response:
        parent, body = self._parent(request), await _json_body(request)
        model = str(_field(body, "model") or "")
        if not model_exists(model.rsplit("/", 1)[-1]):
            raise google_error(404, f"Publisher Model `{parent}/{model}` not found.", "NOT_FOUND")
        uris = _field(_field(_field(body, "inputConfig"), "gcsSource"), "uris") or [""]
        prefix = str(_field(_field(_field(body, "outputConfig"), "gcsDestination"), "outputUriPrefix") or "")
        source = self.object_path(uris[0]) if len(uris) == 1 and str(uris[0]).startswith("gs://") else None
        if source is None or not prefix.startswith("gs://"):
            raise google_error(400, f"Give one existing gs:// input ({uris[0]} is not) and a gs:// outputUriPrefix.")
        (total, bad, problem), now = await run_in_threadpool(_scan_file, source, self.max_lines), self.now()
        job = VertexJob(id=str(10 ** 18 + secrets.randbelow(8 * 10 ** 18)), created=now, timing=self.timing,
                        window=self.timing.completion_window_seconds, total=total, bad=bad, failure=problem,
                        model=model.rsplit("/", 1)[-1], parent=parent, display_name=_field(body, "displayName"),
                        configs={k: _field(body, k) for k in ("inputConfig", "outputConfig")}, source=source,
                        output_dir=f"{prefix.rstrip('/')}/prediction-model-{_rfc3339(now)[:19].replace(':', '')}")
        self.batches.add(job)
        return self.faults.lost(JSONResponse(self._json(job)))

    async def list_jobs(self, request: Request) -> Response:
        parent = self._parent(request)
        self.stats.add(self.provider, "batch_lists")
        page, token = _page(request, [j for j in self.batches.newest_first() if j.parent == parent], (100, 1000))
        await run_in_threadpool(self.batches.advance, *page)
        return JSONResponse({"batchPredictionJobs": [self._json(j) for j in page],
                             **({"nextPageToken": token} if token else {})})

    async def job(self, request: Request) -> Response:
        """GET a job, or POST its ``:cancel``."""
        parent, (ref, _, action) = self._parent(request), request.path_params["ref"].partition(":")
        job = self.batches.get(ref)
        if job is None or job.parent != parent or action != ("cancel" if request.method == "POST" else ""):
            raise google_error(404, f"The BatchPredictionJob {ref} does not exist.", "NOT_FOUND")
        if request.method == "GET":
            return JSONResponse(self._json(await self.read_batch(job)))
        if not await run_in_threadpool(self.batches.cancel, job):
            raise google_error(400, f"The job has already ended ({job.word(self.shape)}).", "FAILED_PRECONDITION")
        return JSONResponse({})

    def _json(self, job: VertexJob) -> dict:
        done, failed = job.progress(self.now())
        doc: dict[str, Any] = {
            "name": f"{job.parent}/batchPredictionJobs/{job.id}", "model": f"publishers/google/models/{job.model}",
            **job.configs, "state": "JOB_STATE_PARTIALLY_SUCCEEDED" if job.phase == "completed" and any(job.bad)
            else job.word(self.shape), "createTime": _rfc3339(job.created),
            "completionStats": _int64(successfulCount=done - failed, failedCount=failed, incompleteCount=job.total - done),
            **{name: _rfc3339(t) for name, t in job.times(self.shape).items() if t is not None},
            **({"displayName": job.display_name} if job.display_name else {}),
        }
        if job.phase != "validating" and job.failure is None:
            doc["outputInfo"] = {"gcsOutputDirectory": job.output_dir}
        if job.phase == "failed":
            doc["error"] = {"code": 3, "message": job.failure}
        return doc

    def end(self, job: VertexJob, phase: str) -> None:
        """The results hook: the rows run by now, as ``predictions.jsonl`` in the output folder."""
        rows = []
        for index, raw in zip(range(job.done or 0), jsonl(job.source)):
            line = orjson.loads(raw)
            row = {**line, "status": "", "processed_time": _rfc3339(job.stamps[phase])}
            if job.bad[index]:
                error = {**(request_problem(line["request"]) or {}), "code": 400, "status": "INVALID_ARGUMENT"}
                row["status"] = "Bad Request: " + orjson.dumps({"error": error}).decode()
            else:
                row["response"] = generate(line["request"], job.model, f"{job.id}-{index}", behaviour=self.behaviour)
            rows.append((str(line.get("key")), orjson.dumps(row)))
        if rows:
            [lines] = self.faults.corrupt(job.ordinal, [scrambled(rows)])
            path = self.data_dir / f"{job.id}.jsonl"
            path.write_bytes(b"".join(line + b"\n" for line in lines))
            bucket, _, folder = job.output_dir.removeprefix("gs://").partition("/")
            self.put(bucket, f"{folder}/predictions.jsonl", path)

    async def generate_content(self, request: Request) -> Response:
        model, _, method = (self._parent(request) and request.path_params["ref"]).partition(":")
        if method != "generateContent" or not model_exists(model):
            raise google_error(404, f"Publisher Model `publishers/google/models/{model}` not found.", "NOT_FOUND")
        body = await _json_body(request)
        if (problem := request_problem(body)) is not None:
            raise google_error(400, problem["message"])
        self.stats.add(self.provider, "live_requests")
        return JSONResponse(generate(body, model, secrets.token_urlsafe(16), behaviour=self.behaviour))
