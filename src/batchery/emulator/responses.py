"""JSON responses and the OpenAI-style error envelope.

Handlers raise :class:`ApiError`; the app turns it into
``{"error": {"message", "type", "param", "code"}}``, which the SDK unwraps into
``APIError.message/type/param/code`` and maps to its exception classes by status.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", retry: bool | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.retry = retry  # None: let the SDK decide; False/True: send x-should-retry

    def response(self) -> JSONResponse:
        headers = {} if self.retry is None else {"x-should-retry": "true" if self.retry else "false"}
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=headers)


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Unknown routes / wrong methods get the envelope too, so SDK errors stay readable."""
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", None) or "Error"
    message = f"Unknown request URL: {request.method} {request.url.path}." if status in (404, 405) else str(detail)
    return ApiError(status, message, code="unknown_url" if status in (404, 405) else None).response()
