"""JSON responses and the emulator's one error type, in each provider's own error body.

Handlers raise :class:`ApiError`; the app renders it in the shape of the service whose path it
came from (``ApiError.shape`` overrides that, for errors built outside a route). The SDKs read
these bodies into their exceptions' ``message``/``type``/``code``/``status`` fields:

* ``openai`` (OpenAI, Groq, Together): ``{"error": {"message", "type", "param", "code"}}``;
* ``together_batch`` (Together's batch routes): ``{"error": "<message>"}``;
* ``anthropic``: ``{"type": "error", "error": {"type", "message"}, "request_id"}``;
* ``google`` (Gemini): ``{"error": {"code": <HTTP status>, "message", "status", "details"?}}``;
* ``mistral``: ``{"object": "error", "message", "type", "param", "code"}``, and for a 422 FastAPI's
  ``{"detail": [{"type", "loc", "msg", "input"}]}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from starlette.responses import Response

from .state import new_id


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ApiError(Exception):
    """An HTTP error answer. ``type`` is the provider's error kind (OpenAI/Anthropic/Mistral ``type``,
    Google's ``status`` word such as ``NOT_FOUND``); ``details`` carries what only one shape has
    (Google's ``details`` list, the ``input`` of Mistral's 422)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, retry: bool | None = None, details: Any = None,
                 shape: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.retry = retry  # None: let the SDK decide; False/True: send x-should-retry
        self.details, self.shape = details, shape

    def response(self, shape: str | None = None) -> JSONResponse:
        headers = {} if self.retry is None else {"x-should-retry": "true" if self.retry else "false"}
        body = SHAPES[self.shape or shape or "openai"](self)
        return JSONResponse(body, status_code=self.status, headers=headers)


def _openai(e: ApiError) -> dict:
    return {"error": {"message": e.message, "type": e.type or "invalid_request_error", "param": e.param,
                      "code": e.code}}


def _anthropic(e: ApiError) -> dict:
    return {"type": "error", "error": {"type": e.type or "invalid_request_error", "message": e.message},
            "request_id": new_id("req_")}


_GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
                  500: "INTERNAL", 503: "UNAVAILABLE"}


def _google(e: ApiError) -> dict:
    error: dict[str, Any] = {"code": e.status, "message": e.message,
                             "status": e.type or _GOOGLE_STATUS.get(e.status, "INVALID_ARGUMENT")}
    if e.details:
        error["details"] = e.details
    return {"error": error}


def _mistral(e: ApiError) -> dict:
    if e.status == 422:
        where = ["body", *filter(None, (e.param or "").split("."))]
        return {"detail": [{"type": e.type or "value_error", "loc": where, "msg": e.message, "input": e.details}]}
    return {"object": "error", "message": e.message, "type": e.type or "invalid_request_error", "param": e.param,
            "code": e.code}


SHAPES: dict[str, Callable[[ApiError], dict]] = {
    "openai": _openai, "anthropic": _anthropic, "google": _google, "mistral": _mistral,
    "together_batch": lambda e: {"error": e.message},
}
