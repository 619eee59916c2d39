"""Gemini batch prediction on Vertex AI ("Gemini Enterprise Agent Platform") through the official
``google-genai`` SDK with ``vertexai=True``, its files in Cloud Storage through ``google-cloud-storage``
(the ``batchery[vertex]`` extra; both imported on first use).

Requests and answers are Gemini's (:mod:`.gemini`): the same GenerateContentRequest under
``request``, with batchery's key in a top-level ``key`` field, which Vertex echoes into each
prediction row (research c.1). A batch file is uploaded to ``gs://BUCKET[/FOLDER]/batchery/<tag>.jsonl``
and the job writes ``predictions*.jsonl`` files below ``gs://…/batchery/<tag>/``; ``outputInfo``
names the folder, and every such file in it is read. A failed row has a non-empty ``status``. The
job's ``displayName`` is our tag, so ``find`` recognises a job whose create answer was lost.

Configuration: the project and location from ``GOOGLE_CLOUD_PROJECT`` and ``GOOGLE_CLOUD_LOCATION``
(default ``us-central1``), credentials the Google way (Application Default Credentials:
``GOOGLE_APPLICATION_CREDENTIALS`` or ``gcloud auth application-default login``), the bucket from
``--bucket`` or ``BATCHERY_GCS_BUCKET``. With a base URL (the emulator) both clients talk to it, the
key is sent as the access token, and project and bucket have stand-in defaults.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from ..errors import ConfigError
from ..limits import MB, BatchLimits
from .base import CallFailure, LiveRoute, Outcome, RemoteBatch
from .gemini import GeminiBatch, _remote, decode_line

BUCKET_VARIABLE = "BATCHERY_GCS_BUCKET"
DEFAULT_LOCATION = "us-central1"  # batch prediction runs in a region; keep the bucket in the same one
_STAND_IN = "batchery-emulator"  # project and bucket on a base URL (the emulator) when none is set
_FOLDER = "batchery"


class VertexBatch(GeminiBatch):
    name = "vertex"
    endpoint = "batchPredictionJobs"
    limits = BatchLimits(max_requests=200_000, max_bytes=1024 * MB, discount=0.5,
                         window="24h once running (queued up to 72h)")
    key_variables = ("GOOGLE_APPLICATION_CREDENTIALS",)  # read by Google's own auth, never by batchery
    key_optional = "application-default-credentials"  # ADC also comes from `gcloud auth application-default login`
    url_variable = "VERTEX_BASE_URL"
    price_id = "google"

    @property
    def project(self) -> str | None:
        return os.environ.get("GOOGLE_CLOUD_PROJECT") or (_STAND_IN if self.base_url else None)  # None: ADC's

    @functools.cached_property
    def _credentials(self) -> Any:
        """None on Google's endpoints (ADC, read by the SDKs); on a base URL the key as an access token."""
        if not self.base_url:
            return None
        from google.oauth2.credentials import Credentials

        return Credentials(token=self.api_key)

    @functools.cached_property
    def client(self) -> Any:
        from google import genai
        from google.genai import types

        http_options = types.HttpOptions(base_url=self.base_url) if self.base_url else None
        location = os.environ.get("GOOGLE_CLOUD_LOCATION") or DEFAULT_LOCATION
        return genai.Client(vertexai=True, project=self.project, location=location, credentials=self._credentials,
                            http_options=http_options)

    @functools.cached_property
    def storage(self) -> Any:
        try:
            from google.cloud import storage  # type: ignore[import-untyped]
        except ImportError:
            raise ConfigError("vertex needs google-cloud-storage for its files: pip install 'batchery[vertex]'") from None
        options = {"api_endpoint": self.base_url} if self.base_url else None
        return storage.Client(project=self.project, credentials=self._credentials, client_options=options)

    def live_route(self, model: str) -> LiveRoute | None:
        return None  # live calls go through the SDK, which refreshes the access token

    # -- batches -------------------------------------------------------------------------------

    def upload(self, path: Path) -> str:
        given = os.environ.get(BUCKET_VARIABLE) or (_STAND_IN if self.base_url else "")
        bucket, _, folder = given.removeprefix("gs://").strip("/").partition("/")
        if not bucket:
            raise ConfigError(f"vertex needs a Cloud Storage bucket for its batch files: pass --bucket "
                              f"gs://BUCKET[/FOLDER] or set {BUCKET_VARIABLE}")
        name = "/".join(filter(None, (folder, _FOLDER, path.name)))
        # No size given: always a resumable upload (a 1 GB file is never held in memory), and no
        # retries inside the client: the engine retries every provider's calls alike.
        with self._errors("upload"), path.open("rb") as f:
            self.storage.bucket(bucket).blob(name).upload_from_file(f, content_type="application/jsonl", retry=None)
        return f"gs://{bucket}/{name}"

    def create(self, input_file: str, model: str, tag: str) -> RemoteBatch:
        dest = input_file.removesuffix(".jsonl")
        with self._errors("create"):
            job = self.client.batches.create(model=model, src=input_file, config={"display_name": tag, "dest": dest})
        return self._read(job)

    @staticmethod
    def _read(job: Any) -> RemoteBatch:
        """A BatchPredictionJob (for Gemini's find and poll too): Gemini's reading, with Vertex's
        output folder and line counts."""
        remote = _remote(job)
        remote.output_file = job.output_info.gcs_output_directory if job.output_info else None
        stats = job.completion_stats
        if stats is not None:
            remote.completed, remote.failed = stats.successful_count or 0, stats.failed_count or 0
            remote.total = remote.completed + remote.failed + (stats.incomplete_count or 0)
        return remote

    def _count(self, remote: RemoteBatch) -> None:
        """Nothing to fetch: a Vertex job carries its line counts (``completionStats``)."""

    def outcomes(self, remote: RemoteBatch) -> Iterator[Outcome]:
        folder = remote.output_file
        if folder is None:
            with self._errors("get batch"):
                folder = self._read(self.client.batches.get(name=remote.remote_id)).output_file
        if not folder:
            return
        bucket, _, prefix = folder.removeprefix("gs://").partition("/")
        with self._errors("list results"):
            names = [b.name for b in self.storage.list_blobs(bucket, prefix=prefix.rstrip("/") + "/", retry=None)]
        for name in sorted(n for n in names if PurePosixPath(n).name.startswith("predictions") and n.endswith(".jsonl")):
            yield from self._file_outcomes(f"gs://{bucket}/{name}")

    def _download(self, file_name: str, spool: Any) -> None:
        bucket, _, name = file_name.removeprefix("gs://").partition("/")
        self.storage.bucket(bucket).blob(name).download_to_file(spool, retry=None)

    @staticmethod
    def decode_result(line: bytes) -> Outcome | None:
        return decode_line(line, _status_error)

    # -- errors: google-genai's (GeminiBatch), Cloud Storage's and Google auth's ---------------------

    def describe_error(self, exc: Exception) -> CallFailure | None:
        import requests  # the HTTP library of google-auth and google-cloud-storage
        from google.auth import exceptions as auth

        # No answer (a network failure, a download cut or corrupted on the way): transient.
        if isinstance(exc, requests.RequestException | auth.TransportError) or type(exc).__name__ == "DataCorruption":
            return CallFailure(None, f"{type(exc).__name__}: {exc}")
        if isinstance(exc, auth.GoogleAuthError):
            return CallFailure(401, f"Google credentials: {exc}", "UNAUTHENTICATED")
        failure = super().describe_error(exc)
        if failure is not None or not type(exc).__module__.startswith("google.api_core"):
            return failure
        code = getattr(exc, "code", None)  # google.api_core's GoogleAPICallError: the storage client's errors
        return CallFailure(code if isinstance(code, int) else None, str(exc), getattr(exc, "reason", None))


def _status_error(row: dict) -> dict | None:
    """A prediction row's failure: its non-empty ``status`` (``Bad Request: {"error": {...}}``, whose
    google.rpc status names the code where it has one)."""
    status = str(row.get("status") or "")
    start, error = status.find("{"), None
    try:
        error = orjson.loads(status[start:]).get("error") if start >= 0 else None
    except (orjson.JSONDecodeError, AttributeError):
        pass  # a status in words only: it is the message
    if not status or isinstance(error, dict):
        return error
    return {"status": "request_failed", "message": status}
