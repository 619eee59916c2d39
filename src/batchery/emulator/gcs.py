"""The Cloud Storage JSON API calls of ``google-cloud-storage`` for Vertex batch files (its ``api_endpoint``
is the Vertex service's URL): resumable uploads (``PUT`` chunks with ``Content-Range``, 308 until the
last, whose answer has the ``crc32c`` the client checks), listing by prefix, media downloads."""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .faults import FaultInjector
from .gemini_files import _json_body, _rfc3339, google_error
from .responses import JSONResponse
from .state import Registry, Stats

_RANGE = re.compile(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)")


def _crc32c(path: Path) -> str:
    import google_crc32c  # comes with google-cloud-storage, the one client of these routes, which checks it

    crc = google_crc32c.Checksum()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            crc.update(block)
    return base64.b64encode(crc.digest()).decode()


class GcsApi:
    """The routes, mixed into the Vertex service. Objects are kept by ``bucket/name``; a new upload
    replaces one (the bytes a job reads stay). Buckets exist once named."""

    objects: Registry[dict]
    uploads: Registry[tuple[str, str, Path]]
    data_dir: Path
    faults: FaultInjector
    stats: Stats
    provider: str
    now: Callable[[], float]

    def put(self, bucket: str, name: str, path: Path) -> dict:
        meta = {"kind": "storage#object", "bucket": bucket, "name": name, "size": str(path.stat().st_size),
                "generation": str(secrets.randbits(52)), "timeCreated": _rfc3339(self.now()), "crc32c": _crc32c(path)}
        self.objects.put(f"{bucket}/{name}", {**meta, "_path": path})
        return meta

    def object_path(self, uri: str) -> Path | None:
        meta = self.objects.get(uri.removeprefix("gs://"))
        return meta["_path"] if meta else None

    def gcs_routes(self) -> list[BaseRoute]:
        return [Route("/upload/storage/v1/b/{bucket}/o", self.start_upload, methods=["POST"]),
                Route("/upload/storage/v1/b/{bucket}/o", self.upload_chunk, methods=["PUT"]),
                Route("/storage/v1/b/{bucket}/o", self.list_objects, methods=["GET"]),
                Route("/download/storage/v1/b/{bucket}/o/{name:path}", self.download, methods=["GET"])]

    async def start_upload(self, request: Request) -> Response:
        name, bucket = (await _json_body(request, allow_empty=True)).get("name"), request.path_params["bucket"]
        if request.query_params.get("uploadType") != "resumable" or not name:
            raise google_error(400, "The emulator takes resumable uploads (uploadType=resumable) of a named object.")
        upload_id = secrets.token_urlsafe(16)
        self.uploads.put(upload_id, (bucket, name, self.data_dir / secrets.token_hex(16)))
        return Response(headers={"location": f"{request.url}&upload_id={upload_id}"})

    async def upload_chunk(self, request: Request) -> Response:
        upload_id = request.query_params.get("upload_id", "")
        session, match = self.uploads.get(upload_id), _RANGE.fullmatch(request.headers.get("content-range", ""))
        if session is None or match is None:
            raise google_error(400, "No such upload session, or no Content-Range.")
        with session[2].open("ab") as out:
            if match[1] is not None and int(match[1]) != out.tell():
                raise google_error(400, f"The chunk should start at byte {out.tell()}.")
            received = out.tell() + out.write(await request.body())
        if match[2] == "*" or int(match[2]) > received:
            return Response(status_code=308, headers={"range": f"bytes=0-{received - 1}"} if received else {})
        self.uploads.pop(upload_id)
        self.stats.add(self.provider, "files_uploaded")
        return JSONResponse(self.put(*session))

    async def list_objects(self, request: Request) -> Response:
        bucket, prefix = request.path_params["bucket"], request.query_params.get("prefix", "")
        listed = [{k: v for k, v in m.items() if k != "_path"} for m in self.objects.all()
                  if m["bucket"] == bucket and m["name"].startswith(prefix)]
        return JSONResponse({"kind": "storage#objects", "items": sorted(listed, key=lambda m: m["name"])})

    async def download(self, request: Request) -> Response:
        path = self.object_path(f"{request.path_params['bucket']}/{request.path_params['name']}")
        if path is None or request.query_params.get("alt") != "media":
            raise google_error(404, f"No such object: {request.path_params['name']}", "NOT_FOUND")
        self.stats.add(self.provider, "files_downloaded")
        return self.faults.download(path)
