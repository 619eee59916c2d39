"""The Gemini Developer API's Files API (uploads, file resources, downloads of generated files) and
the wire helpers the Gemini batch routes share with it (:mod:`.gemini_routes`).

Uploads are resumable sessions (``X-Goog-Upload-*`` headers): ``start`` hands out an upload URL
whose unguessable ``upload_id`` authorises the chunks (the SDK sends them without its key), and
``finalize`` turns the bytes into a ``files/…`` resource. Generated result files are served at both
``/{v}/files/{id}:download`` and ``/download/{v}/files/{id}:download``. Files expire 48 hours after
creation; int64 sizes are strings and timestamps RFC 3339 with nanoseconds, as proto3 JSON writes them.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from .clock import Clock
from .faults import FaultInjector
from .lifecycle import L, after, route
from .responses import ApiError, JSONResponse
from .state import FileStore, Registry, Stats, StoredFile

API_VERSIONS = frozenset({"v1", "v1beta"})
MAX_FILE_BYTES = 2 * 1024 ** 3  # input files up to 2 GB
FILE_TTL_SECONDS = 48 * 3600
UPLOAD_GRANULARITY = 8 * 1024 * 1024
FILE_LIST_PAGE = (10, 100)


def google_error(code: int, message: str, status: str | None = None, details: list | None = None) -> ApiError:
    """An HTTP error in Google's envelope, which the SDK reads into ``code``, ``status``, ``message``."""
    return ApiError(code, message, type=status, details=details, shape="google")


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


def _version(request: Request) -> str:
    version = request.path_params["version"]
    if version not in API_VERSIONS:
        raise google_error(404, f"Unknown request URL: {request.method} {request.url.path}.")
    return version


async def _json_body(request: Request, allow_empty: bool = False) -> dict:
    raw = await request.body()
    if not raw.strip() and allow_empty:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise google_error(400, "Invalid JSON payload received.") from None
    if not isinstance(body, dict):
        raise google_error(400, "Invalid JSON payload received: expected an object.")
    return body


def _page(request: Request, items: list[L], sizes: tuple[int, int]) -> tuple[list[L], str | None]:
    """One page of ``items`` (newest first) from ``pageSize``/``pageToken``, and the next token.
    The token is the id of the last item shown, so pages stay stable as new items arrive."""
    q = request.query_params
    raw_size = q.get("pageSize") or q.get("page_size") or ""
    size = min(int(raw_size), sizes[1]) if raw_size.isdigit() and int(raw_size) > 0 else sizes[0]
    rest = after(items, q.get("pageToken") or q.get("page_token"), lambda _: google_error(400, "Invalid page token."))
    page = rest[:size]
    return page, page[-1].id if len(rest) > size and page else None


# -- the files -----------------------------------------------------------------------------------


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


class GeminiFiles(Registry[GeminiFile]):
    """File resources by id and upload sessions (``uploads``), over a FileStore for the bytes."""

    def __init__(self, root: Path, clock: Clock) -> None:
        super().__init__()
        self.store = FileStore(root, clock)
        self.clock = clock
        self.uploads: Registry[_Upload] = Registry()

    def delete(self, file_id: str) -> bool:
        gfile = self.pop(file_id)
        return gfile is not None and self.store.delete(gfile.stored.id)

    def start_upload(self, size: int, mime_type: str, display_name: str | None) -> str:
        upload_id = secrets.token_urlsafe(24)
        path = self.store.blob_path()
        path.touch()
        self.uploads.put(upload_id, _Upload(size, mime_type, display_name, path))
        return upload_id

    def append(self, upload: _Upload, chunk: bytes) -> None:
        with open(upload.path, "ab") as out:
            out.write(chunk)
        upload.digest.update(chunk)
        upload.received += len(chunk)

    def finish_upload(self, upload_id: str, upload: _Upload) -> GeminiFile:
        self.uploads.pop(upload_id)
        sha = base64.b64encode(upload.digest.digest()).decode()
        return self._add(secrets.token_hex(6), upload.path, upload.display_name, upload.mime_type, "UPLOADED", sha)

    def add_generated(self, file_id: str, lines: list[bytes]) -> str:
        """A generated file of these JSON lines (a batch's results); returns its ``files/…`` name."""
        path = self.store.blob_path()
        content = b"".join(line + b"\n" for line in lines)
        path.write_bytes(content)
        sha = base64.b64encode(hashlib.sha256(content).digest()).decode()
        return "files/" + self._add(file_id, path, None, "application/jsonl", "GENERATED", sha).id

    def _add(self, file_id: str, path: Path, display_name: str | None, mime_type: str, source: str,
             sha: str) -> GeminiFile:
        stored = self.store.add(path, display_name or file_id, source.lower(), ttl=FILE_TTL_SECONDS)
        gfile = GeminiFile(file_id, display_name, mime_type, self.clock.now(), source, sha, stored)
        self.put(file_id, gfile)
        return gfile


class GeminiFilesApi:
    """The Files API routes, mixed into the Gemini service (which provides these attributes)."""

    provider: str
    prefix: str
    stats: Stats
    faults: FaultInjector
    files: GeminiFiles

    def file_routes(self) -> list[BaseRoute]:
        return [
            route("/upload/{version}/files", POST=self.upload),
            route("/{version}/files", GET=self.list_files),
            route("/{version}/files/{ref}", GET=self.get_file, DELETE=self.delete_file),
            route("/download/{version}/files/{ref}", GET=self.get_file),
        ]

    def _root(self, request: Request) -> str:
        """This service's absolute base URL, for the URLs it hands out (upload sessions, files)."""
        return f"{request.base_url}{self.prefix.strip('/')}/"

    async def upload(self, request: Request) -> Response:
        version = _version(request)
        upload_id = request.query_params.get("upload_id")
        if upload_id is None:
            return await self._start_upload(request, version)
        upload = self.files.uploads.get(upload_id)
        if upload is None:
            raise google_error(404, "Upload session not found or already finalized.")
        command = {c.strip() for c in request.headers.get("x-goog-upload-command", "").split(",")}
        if request.headers.get("x-goog-upload-offset") != str(upload.received):
            raise google_error(400, f"Upload offset must be {upload.received}.")
        chunk = await request.body()
        await run_in_threadpool(self.files.append, upload, chunk)
        if upload.received > upload.size:
            raise google_error(400, f"Upload exceeds the declared size of {upload.size} bytes.")
        if "finalize" not in command:
            return Response(status_code=200, headers={"x-goog-upload-status": "active"})
        if upload.received != upload.size:
            raise google_error(400, f"Upload finalized at {upload.received} of {upload.size} declared bytes.")
        gfile = self.files.finish_upload(upload_id, upload)
        self.stats.add(self.provider, "files_uploaded")
        return JSONResponse({"file": gfile.to_json(self._root(request), version)},
                            headers={"x-goog-upload-status": "final"})

    async def _start_upload(self, request: Request, version: str) -> Response:
        headers = request.headers
        if headers.get("x-goog-upload-protocol") != "resumable" or headers.get("x-goog-upload-command") != "start":
            raise google_error(400, "Only resumable uploads are supported: send X-Goog-Upload-Protocol: resumable.")
        size_header = headers.get("x-goog-upload-header-content-length", "")
        if not size_header.isdigit():
            raise google_error(400, "Missing X-Goog-Upload-Header-Content-Length.")
        size = int(size_header)
        if size > MAX_FILE_BYTES:
            raise google_error(400, f"File of {size} bytes exceeds the {MAX_FILE_BYTES} byte limit.")
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
        page, token = _page(request, self.files.newest_first(), FILE_LIST_PAGE)
        root = self._root(request)
        body: dict[str, Any] = {"files": [f.to_json(root, version) for f in page]}
        if token:
            body["nextPageToken"] = token
        return JSONResponse(body)

    async def get_file(self, request: Request) -> Response:
        version = _version(request)
        ref: str = request.path_params["ref"]
        downloading = request.url.path.startswith(f"{self.prefix}/download/")
        if downloading and not ref.endswith(":download"):
            raise google_error(404, f"Unknown request URL: GET {request.url.path}.")
        file_id = ref.removesuffix(":download")
        gfile = self.files.get(file_id)
        if gfile is None:
            raise google_error(404, f"File files/{file_id} not found.", "NOT_FOUND")
        if not ref.endswith(":download"):
            return JSONResponse(gfile.to_json(self._root(request), version))
        if request.query_params.get("alt") != "media":
            raise google_error(400, "Downloads need alt=media.")
        if gfile.source != "GENERATED":
            raise google_error(400, "Only generated files can be downloaded; uploaded files cannot.")
        return self.faults.download(gfile.stored.path)

    async def delete_file(self, request: Request) -> Response:
        _version(request)
        file_id = request.path_params["ref"]
        if not self.files.delete(file_id):
            raise google_error(404, f"File files/{file_id} not found.", "NOT_FOUND")
        return JSONResponse({})
