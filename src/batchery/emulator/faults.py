"""Fault injection for the emulator: what can go wrong with a Batch API, on demand and repeatable.

A :class:`FaultPlan` says which faults to inject and how often; it knows nothing about any one
provider. Each service that supports faults builds its own :class:`FaultInjector` from the plan
(``plan.injector(provider, stats)``), so budgets such as "the first 2 creates" and the random
streams are per provider: a lost create on OpenAI does not use up Groq's. Every decision comes
from a ``random.Random`` seeded with ``seed``, the provider and the fault's name (and, for result
lines, the batch's ordinal), so the same calls against the same plan meet the same faults, and
turning one fault on does not change when another one fires.

Every service (OpenAI, Groq, Anthropic, Gemini, Mistral, Together) honours the whole plan, in its
own terms: the ``http_*`` answers use the provider's error body (Gemini's 429 also carries a
RetryInfo ``retryDelay``); the batch faults bend the one timeline of :mod:`.lifecycle`, and a full
queue shows as each provider's validation failure, except on Anthropic, whose batches cannot fail
validation: there the create is refused with a 429. Line faults reshape whatever carries the
results: result files, or Gemini's inline responses, where a malformed line is an empty entry and a
truncated download is the batch read carrying half its responses.

Spec grammar (``FaultPlan.parse``; ``str(plan)`` gives it back)::

    spec   := "" | item ("," item)*          whitespace around items, names and values is ignored
    item   := name "=" value                 each name at most once
    value  := probability | count | seconds | rate | integer, depending on the name:

    name                 value         effect
    -------------------  ------------  ---------------------------------------------------------------
    http_429             probability   any API call answers 429 (with retry-after / retry-after-ms)
    http_500             probability   ... answers 500; the three http_* probabilities add up to <= 1
    http_503             probability   ... answers 503; all three happen before the call does anything
    lost_create          count         the first n successful batch creates happen, but the connection
                                       is cut before the response arrives (the SDK: APIConnectionError)
    slow_validation      seconds       every batch stays ``validating`` this much longer
    queue_full           count         the first n valid batches fail validation with token_limit_exceeded
                                       (create answers 200; the failure shows on retrieve); on services
                                       other than OpenAI and Groq the create is refused with a 429
    enqueued_tokens      count         the enqueued-token limit per model (0: none) on OpenAI and Groq: a
                                       valid batch whose prompt tokens, with those of the model's unfinished
                                       batches, pass it fails validation with token_limit_exceeded, stating
                                       the limit, as OpenAI does
    expire_after         seconds       batches expire this long after creation (if not done by then)
    drop_lines           rate          result lines that appear in neither the output nor error file
    duplicate_lines      rate          result lines written twice
    malformed_lines      rate          result lines cut in half (invalid JSON)
    reorder              rate          result *files* whose lines are fully, randomly shuffled
    truncated_download   count         the first n file-content downloads (of any file) end half-way,
                                       as a complete response: no error, just half the bytes
    cut_download         count         the first n result downloads are cut half-way: the connection
                                       closes before the promised bytes arrive (httpx raises
                                       RemoteProtocolError while the client streams them)
    provider_cancel      count         the first n valid batches are cancelled by the provider half-way
                                       through processing (cancelling, then cancelled, partial output)
    seed                 integer       the random seed (default 0)
    retry_after          seconds       the wait a 429 asks for (default 1)

    probability := a number from 0 to 1 ("0.1", "1", "1e-3") or a percentage ("10%")
    count       := a non-negative integer ("3")
    seconds     := a non-negative number with an optional unit ms, s, m, h or d ("90", "1.5m", "2h")
    rate        := a count or a probability: digits alone are a count, the total number of lines
                   (or files) to corrupt, taken from the first results written; anything else
                   ("0.05", "1.0", "5%") is a probability per line (or per file).
                   So ``drop_lines=1`` drops one line and ``drop_lines=1.0`` drops every line.

Example: ``"http_429=0.1,http_500=0.05,lost_create=1,seed=7"``.

"Valid" batches are those whose input passes validation; batches failing it anyway use up no
budget. A result line meets at most one line fault (drop, else malformed, else duplicate);
reordering happens after. Every injected fault is counted in ``GET /_emulator/stats`` under
``"faults": {name: n}`` (and per provider under ``by_provider``).

Timing faults follow the emulator's clock and its ``processing_seconds``: a batch that finishes
the moment it is created (the default, ``processing_seconds=0``) never expires, and a provider
cancel finds it already done (it ends ``cancelled`` with every line in the output), so partial
output needs ``processing_seconds`` greater than ``expire_after`` or than zero.
"""

from __future__ import annotations

import contextvars
import logging
import math
import random
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from starlette.responses import FileResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .state import Stats

HTTP_FAULTS = {"http_429": 429, "http_500": 500, "http_503": 503}
LINE_FAULTS = ("drop_lines", "malformed_lines", "duplicate_lines")  # at most one per line, in this order
# provider -> status -> (type, message) of the http_* faults, as the provider words them
FAULT_ERRORS = {
    "openai": {429: ("requests", "Rate limit reached for requests. Please try again later."),
               500: ("server_error", "The server had an error while processing your request. Sorry about that!"),
               503: ("server_error", "The server is overloaded or not ready yet.")},
    "anthropic": {429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
                  500: ("api_error", "Internal server error"),
                  503: ("overloaded_error", "Overloaded")},
    "gemini": {429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
               500: ("INTERNAL", "An internal error has occurred. Please retry or report in "
                                 "https://developers.generativeai.google/guide/troubleshooting"),
               503: ("UNAVAILABLE", "The model is overloaded. Please try again later.")},
    "mistral": {429: ("rate_limited", "Requests rate limit exceeded"),
                500: ("internal_server_error", "Internal server error"),
                503: ("service_tier_capacity_exceeded", "Service tier capacity exceeded for this model.")},
}
FAULT_ERRORS["groq"] = FAULT_ERRORS["together"] = FAULT_ERRORS["openai"]
FAULT_ERRORS["vertex"] = FAULT_ERRORS["gemini"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SECONDS = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)?")
_COUNT = re.compile(r"\d+")
_INTEGER = re.compile(r"[+-]?\d+")
_DESCRIBE = {
    "probability": "a probability (a number from 0 to 1, or a percentage like 10%)",
    "count": "a count (a non-negative integer)",
    "seconds": "a duration (a non-negative number of seconds, optionally with a unit: ms, s, m, h, d)",
    "rate": "a count (a non-negative integer) or a probability (like 0.05 or 5%)",
    "integer": "an integer",
}


def _fault(kind: str, default: Any = 0) -> Any:
    """A plan field whose value is of this kind (see the grammar)."""
    return field(default=default, metadata={"kind": kind})


@dataclass(frozen=True)
class FaultPlan:
    """Which faults to inject and how often. The default plan injects nothing.

    Rates (``drop_lines``, ``duplicate_lines``, ``malformed_lines``, ``reorder``) follow the spec:
    an ``int`` is a count, a ``float`` a probability, so ``drop_lines=1`` and ``drop_lines=1.0``
    differ. ``expire_after=None`` leaves expiry to the completion window.
    """

    http_429: float = _fault("probability", 0.0)
    http_500: float = _fault("probability", 0.0)
    http_503: float = _fault("probability", 0.0)
    lost_create: int = _fault("count")
    slow_validation: float = _fault("seconds", 0.0)
    queue_full: int = _fault("count")
    enqueued_tokens: int = _fault("count")
    expire_after: float | None = _fault("seconds", None)
    drop_lines: int | float = _fault("rate")
    duplicate_lines: int | float = _fault("rate")
    malformed_lines: int | float = _fault("rate")
    reorder: int | float = _fault("rate")
    truncated_download: int = _fault("count")
    provider_cancel: int = _fault("count")
    cut_download: int = _fault("count")
    seed: int = _fault("integer")
    retry_after: float = _fault("seconds", 1.0)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name == "expire_after":
                continue
            _check(f.name, value)
        total = sum(getattr(self, name) for name in HTTP_FAULTS)
        if total > 1 + 1e-9:
            parts = ",".join(f"{name}={getattr(self, name)}" for name in HTTP_FAULTS if getattr(self, name))
            raise ValueError(f"fault spec {parts!r}: the http_* probabilities add up to {total:g}, more than 1")

    # -- the spec string -------------------------------------------------------------------------

    @classmethod
    def parse(cls, spec: str) -> FaultPlan:
        """Read a spec such as ``"http_429=0.1,lost_create=1,seed=7"`` (grammar: module docstring).

        Raises ValueError naming the offending part."""
        values: dict[str, Any] = {}
        if not spec.strip():
            return cls()
        for raw in spec.split(","):
            part = raw.strip()
            if not part:
                raise ValueError(f"fault spec {spec!r}: empty item (a stray comma?)")
            name, eq, text = (s.strip() for s in part.partition("="))
            if name not in _KIND:
                known = ", ".join(_KIND)
                raise ValueError(f"fault spec item {part!r}: unknown fault {name!r}; known: {known}")
            if not eq or not text:
                raise ValueError(f"fault spec item {part!r}: expected {name}=<{_KIND[name]}>")
            if name in values:
                raise ValueError(f"fault spec item {part!r}: {name} is given twice")
            values[name] = _parse_value(name, text, part)
        return cls(**values)

    @classmethod
    def coerce(cls, faults: FaultPlan | str | None) -> FaultPlan:
        """Accept what users pass to ``Emulator(faults=...)``: a plan, a spec string or None."""
        if faults is None:
            return cls()
        if isinstance(faults, FaultPlan):
            return faults
        if isinstance(faults, str):
            return cls.parse(faults)
        raise TypeError(f"faults must be a FaultPlan or a spec string, not {type(faults).__name__}")

    def __str__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                parts.append(f"{f.name}={value!r}" if isinstance(value, float) else f"{f.name}={value}")
        return ",".join(parts)

    def __bool__(self) -> bool:
        """True when the plan injects anything at all (the seed and retry_after alone do not)."""
        return any(getattr(self, f.name) != f.default for f in fields(self) if f.name not in ("seed", "retry_after"))

    @property
    def http_active(self) -> bool:
        return any(getattr(self, name) for name in HTTP_FAULTS)

    def injector(self, provider: str, stats: Stats) -> FaultInjector:
        return FaultInjector(self, provider, stats)


_KIND = {f.name: f.metadata["kind"] for f in fields(FaultPlan)}


def _check(name: str, value: Any) -> None:
    kind = _KIND[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        ok = False
    elif kind == "probability":
        ok = 0 <= value <= 1
    elif kind == "rate":
        ok = 0 <= value <= 1 if isinstance(value, float) else value >= 0
    elif kind == "count":
        ok = isinstance(value, int) and value >= 0
    elif kind == "integer":
        ok = isinstance(value, int)
    else:  # seconds
        ok = math.isfinite(value) and value >= 0
    if not ok:
        raise ValueError(f"fault {name}={value!r}: {name} takes {_DESCRIBE[kind]}")


def _parse_value(name: str, text: str, part: str) -> int | float:
    kind = _KIND[name]
    problem = f"fault spec item {part!r}: {text!r} is not {_DESCRIBE[kind]}"
    if kind in ("count", "integer") or (kind == "rate" and _COUNT.fullmatch(text)):
        if not (_COUNT if kind != "integer" else _INTEGER).fullmatch(text):
            raise ValueError(problem)
        return int(text)
    if kind == "seconds":
        match = _SECONDS.fullmatch(text)
        if not match:
            raise ValueError(problem)
        return float(match[1]) * _UNITS[match[2] or "s"]
    # a probability, or a rate written as one
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(problem) from None
    if not 0 <= value <= 1:  # also rejects nan
        raise ValueError(problem)
    return value


class FaultInjector:
    """One provider's view of a plan: its random streams, the budgets used so far, and the stats.

    Thread-safe: the routes call it from the event loop and from the thread pool."""

    def __init__(self, plan: FaultPlan, provider: str, stats: Stats) -> None:
        self.plan, self.provider, self.stats = plan, provider, stats
        self._lock = threading.Lock()
        self._used: Counter[str] = Counter()
        self._http = self._rng("http")

    def _rng(self, *parts: object) -> random.Random:
        return random.Random("/".join(map(str, (self.plan.seed, self.provider, *parts))))

    def record(self, name: str, n: int = 1) -> None:
        """Count ``n`` injected faults of kind ``name`` in the stats."""
        if n:
            self.stats.add_fault(self.provider, name, n)

    def take(self, name: str, *, record: bool = True) -> bool:
        """Use one unit of the count fault ``name``; False once its budget is spent."""
        return self._take_up_to(name, 1, record=record) == 1

    def _take_up_to(self, name: str, wanted: int, *, record: bool = True) -> int:
        budget = getattr(self.plan, name)
        with self._lock:
            granted = max(0, min(wanted, budget - self._used[name]))
            self._used[name] += granted
        if record:
            self.record(name, granted)
        return granted

    # -- per call --------------------------------------------------------------------------------

    def http_status(self) -> int | None:
        """The status this API call should fail with, or None to let it through."""
        if not self.plan.http_active:
            return None
        with self._lock:
            draw = self._http.random()
        for name, status in HTTP_FAULTS.items():
            p = getattr(self.plan, name)
            if draw < p:
                self.record(name)
                return status
            draw -= p
        return None

    def lost(self, response: Response) -> Response:
        """A create's answer, or (under ``lost_create``) that answer cut in transit."""
        if self.take("lost_create"):
            return CutConnection(response.body, media_type=response.media_type)
        return response

    def download(self, path: Path, media_type: str = "application/octet-stream") -> Response:
        """A file download, or (under ``truncated_download`` / ``cut_download``) half of it."""
        if self.take("truncated_download"):  # a complete response (its Content-Length is the half sent):
            # like a proxy that cut a download short, it gives the client no error, only fewer bytes
            # than the file object's ``bytes`` says (usually ending mid-line)
            body = path.read_bytes()
            return Response(body[: len(body) // 2], media_type=media_type)
        if self.take("cut_download"):  # headers promising the whole file, half of it, a closed socket
            return CutConnection(path.read_bytes(), media_type=media_type)
        return FileResponse(path, media_type=media_type)

    # -- per batch -------------------------------------------------------------------------------

    def expiry_window(self, window: float) -> float:
        """Seconds from creation to expiry: the completion window, or sooner under expire_after."""
        after = self.plan.expire_after
        return window if after is None else min(window, after)

    def corrupt(self, key: object, files: list[list[bytes]]) -> list[list[bytes]]:
        """Apply the line faults to one batch's result files (lists of JSONL lines, no newlines).

        ``key`` names the batch (its ordinal) so its per-line draws do not depend on when other
        batches finished; only count budgets are shared, used in the order files are written."""
        plan = self.plan
        if not any(getattr(plan, name) for name in (*LINE_FAULTS, "reorder")):
            return files
        rng = self._rng("lines", key)
        fate: dict[tuple[int, int], str] = {}
        for name in LINE_FAULTS:
            rate = getattr(plan, name)
            if not rate:
                continue
            free = [(f, i) for f, lines in enumerate(files) for i in range(len(lines)) if (f, i) not in fate]
            if isinstance(rate, int):
                chosen = rng.sample(free, self._take_up_to(name, len(free), record=False))
            else:
                chosen = [spot for spot in free if rng.random() < rate]
            fate.update((spot, name) for spot in chosen)
            self.record(name, len(chosen))
        out: list[list[bytes]] = []
        for f, lines in enumerate(files):
            kept: list[bytes] = []
            for i, line in enumerate(lines):
                fault = fate.get((f, i))
                if fault == "drop_lines":
                    continue
                if fault == "malformed_lines":
                    line = line[: len(line) // 2]  # a strict prefix of a JSON object never parses
                kept.append(line)
                if fault == "duplicate_lines":
                    kept.append(line)
            rate = plan.reorder  # a count of files, or a probability per file
            if len(kept) > 1 and rate and (self.take("reorder", record=False) if isinstance(rate, int)
                                           else rng.random() < rate):
                self.record("reorder")
                rng.shuffle(kept)
            out.append(kept)
        return out


# -- ASGI pieces the services mount ----------------------------------------------------------------


class FaultGate:
    """ASGI middleware for a service's mount: fails API calls with ``http_*`` faults before they
    reach a route. ``render(status)`` builds the provider's own error envelope; the gate adds
    ``retry-after`` (whole seconds) and ``retry-after-ms`` to 429s, which the SDKs honour."""

    def __init__(self, app: ASGIApp, faults: FaultInjector, render: Callable[[int], Response]) -> None:
        self.app, self.faults, self.render = app, faults, render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = self.faults.http_status() if scope["type"] == "http" else None
        if status is None:
            await self.app(scope, receive, send)
            return
        await _drain(receive)  # read the request first, so the connection stays usable
        response = self.render(status)
        if status == 429:
            wait = self.faults.plan.retry_after
            response.headers["retry-after"] = str(math.ceil(wait))
            response.headers["retry-after-ms"] = str(round(wait * 1000))
        await response(scope, receive, send)


async def _drain(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


# Set in the task that cuts a connection on purpose, so uvicorn's "returned without completing
# response" error for that task is not logged (anything else it logs still is).
_CUTTING = contextvars.ContextVar("batchery_emulator_cutting", default=False)
_quiet_installed = False


class _QuietCuts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _CUTTING.get()


def _install_quiet_filter() -> None:
    global _quiet_installed
    if not _quiet_installed:
        logging.getLogger("uvicorn.error").addFilter(_QuietCuts())
        _quiet_installed = True


class CutConnection(Response):
    """A response lost in transit: the status line, headers promising the whole body and half of
    it go out, then the server closes the socket (uvicorn does when an app returns mid-response).
    httpx raises ``RemoteProtocolError``, which the OpenAI SDK retries or surfaces as
    ``APIConnectionError``; whatever the request did on the server stays done."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        _install_quiet_filter()
        _CUTTING.set(True)
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True})

