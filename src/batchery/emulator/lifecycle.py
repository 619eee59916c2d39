"""One batch lifecycle for every emulated provider, and the base of their services.

Nothing runs in the background: every read calls :meth:`Lifecycle.advance`, which works out where
a batch is at ``clock.now()``. With ``S = processing_seconds`` after the batch's start (its
creation, or later under the ``slow_validation`` fault) and a provider's :class:`Shape`:

* ``validating`` for the first ``queued`` share of S (an input that fails validation fails the batch
  at that moment, with no results);
* ``in_progress`` until ``finish`` of S (request i, in input order, has run once the elapsed running
  time covers (i+1)/n of it), then ``finalizing`` until S, then ``completed``;
* reaching ``expires`` (created + the batch's window) before the end gives ``expired`` with the
  requests run by then (Gemini: with none);
* cancel (by the client, or by the provider under ``provider_cancel``) freezes progress at that
  moment (``cancelling``) and becomes ``cancelled`` ``cancel_seconds`` later.

Each service names these phases in its own words and timestamp fields (:data:`SHAPES`) and writes
its results in one hook, on the terminal transition. The batch faults bend the timeline here, alike
for every provider (``queue_full``: a failed validation on OpenAI and Groq, a 429 at create elsewhere).
"""

from __future__ import annotations

import itertools
import threading
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from .clock import Clock
from .fake_model import Behaviour, _text_of, _tokens, request_seed
from .faults import FAULT_ERRORS, FaultGate, FaultInjector, FaultPlan
from .live import Parsed
from .responses import ApiError, JSONResponse
from .state import FILE_TTL_SECONDS, FileStore, Registry, Stats, StoredFile

ENDED = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True)
class Timing:
    """The emulator's time knobs, shared by every provider's service."""

    processing_seconds: float = 0.0
    completion_window_seconds: float = 86400.0
    cancel_seconds: float = 0.0


@dataclass(frozen=True)
class Shape:
    """How one provider's batches move through the timeline and what it calls each moment.

    ``words``: phase -> the provider's status word. ``times``: the provider's timestamp field ->
    the phase whose start it records (``"ended"``: whichever terminal phase was reached).
    ``queue_full``: the validation failure that fault gives, as OpenAI's enqueued-token limit does
    (None: a full queue refuses the create with a 429, as the other providers' limits do)."""

    words: Mapping[str, str]
    times: Mapping[str, str] = field(default_factory=dict)
    queued: float = 0.1
    finish: float = 1.0
    expired_results: bool = True
    queue_full: Callable[..., Any] | None = None


def _words(*words: str) -> dict[str, str]:
    phases = ("validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")
    return dict(zip(phases, words, strict=True))


def _openai_queue_full(batch: Batch, limit: int = 2_000_000) -> list[dict]:
    """The validation error OpenAI gives when the model's enqueued-token pool is full (research
    §2.6, openai/openai-python#2084): the batch is accepted, then fails on the next read."""
    model = getattr(batch, "model", None)
    return [{"code": "token_limit_exceeded",
             "message": f"Enqueued token limit reached for {model or 'this model'} in organization org-emulator. "
                        f"Limit: {limit:,} enqueued tokens. Please try again once some in_progress batches have been "
                        "completed.", "param": None, "line": None}]


# Every provider's words and timestamp fields, side by side.
SHAPES: dict[str, Shape] = {
    "openai": Shape(
        _words("validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled"),
        {f"{p}_at": p for p in ("in_progress", "finalizing", "completed", "failed", "expired", "cancelling",
                                "cancelled")},
        finish=0.9, queue_full=_openai_queue_full),
    "anthropic": Shape(
        _words("in_progress", "in_progress", "in_progress", "ended", "ended", "ended", "canceling", "ended"),
        {"ended_at": "ended", "cancel_initiated_at": "cancelling"}, queued=0.0),
    "gemini": Shape(
        _words(*(f"BATCH_STATE_{w}" for w in ("PENDING", "RUNNING", "RUNNING", "SUCCEEDED", "FAILED", "EXPIRED",
                                              "RUNNING", "CANCELLED"))),
        {"endTime": "ended"}, finish=0.9, expired_results=False),
    "mistral": Shape(
        _words("QUEUED", "RUNNING", "RUNNING", "SUCCESS", "FAILED", "TIMEOUT_EXCEEDED", "CANCELLATION_REQUESTED",
               "CANCELLED"),
        {"started_at": "in_progress", "completed_at": "ended"}),
    "together": Shape(  # Together has no "cancelling" word: a job being cancelled still says IN_PROGRESS
        _words("VALIDATING", "IN_PROGRESS", "IN_PROGRESS", "COMPLETED", "FAILED", "EXPIRED", "IN_PROGRESS",
               "CANCELLED"),
        {"completed_at": "ended"}),
}
SHAPES["groq"] = SHAPES["openai"]


@dataclass(kw_only=True, eq=False)
class Batch:
    """One batch's place on the timeline. Services subclass it with their own fields."""

    id: str
    created: float
    timing: Timing
    window: float  # seconds from creation to expiry
    total: int  # requests in the input
    bad: bytearray  # bad[i] == 1: request i fails on its own (an error line, not a batch failure)
    failure: Any = None  # a whole-input problem, in the provider's terms: the batch fails validation
    phase: str = "validating"
    stamps: dict[str, float] = field(default_factory=dict)  # phase -> when it began
    cancel_at: float | None = None
    done: int | None = None  # requests run, frozen when the batch ends
    ordinal: int = 0  # position in its lifecycle: names the batch to the fault injector
    queued: float = 0.1
    finish: float = 1.0
    delay: float = 0.0  # slow_validation: the timeline starts this much after created
    early: bool = False  # expire_after brought the expiry closer than the window
    provider_cancel_at: float | None = None
    prompt_tokens: int = 0  # enqueued_tokens: what this batch holds of its model's enqueued-token pool
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def start(self) -> float:
        return self.created + self.delay

    @property
    def expires(self) -> float:
        return self.created + self.window

    @property
    def ended(self) -> bool:
        return self.phase in ENDED

    @property
    def ended_at(self) -> float | None:
        return self.stamps.get(self.phase) if self.ended else None

    def at(self, share: float) -> float:
        return self.start + share * self.timing.processing_seconds

    def done_by(self, t: float) -> int:
        """How many requests (a prefix of the input) have run at time ``t``: none while validating,
        then at an even pace until ``finish`` of the processing time, when all have."""
        begin, end = self.at(self.queued), self.at(self.finish)
        if t >= end:
            return self.total
        if t < begin:
            return 0
        return min(self.total, int(self.total * (t - begin) / (end - begin)))

    def progress(self, now: float) -> tuple[int, int]:
        """(requests run, of which failed) as a read at ``now`` shows them."""
        if self.done is not None:
            done = self.done
        elif self.failure is not None:
            done = 0
        else:
            done = self.done_by(self.cancel_at if self.cancel_at is not None else now)
        return done, self.bad[:done].count(1)

    def word(self, shape: Shape) -> str:
        return shape.words[self.phase]

    def times(self, shape: Shape) -> dict[str, float | None]:
        """The provider's timestamp fields (None where that moment has not come)."""
        return {name: self.ended_at if phase == "ended" else self.stamps.get(phase)
                for name, phase in shape.times.items()}


@dataclass(kw_only=True, eq=False)
class FileBatch(Batch):
    """A batch whose requests are in files, with the ids of its result files once it ended."""

    paths: list[Path]
    output_file: str | None = None
    error_file: str | None = None


B = TypeVar("B", bound=Batch)


class Lifecycle(Registry[B]):
    """All batches of one service by id, oldest first, and their transitions. ``end(batch)`` is the
    service's results hook: called once, when the batch reaches a terminal phase (``batch.phase``
    is still the one before; ``batch.done`` and the terminal stamp are set), it writes the results
    and lets go of the inputs."""

    def __init__(self, provider: str, clock: Clock, stats: Stats, faults: FaultInjector,
                 end: Callable[[B, str], None], full: Callable[[], ApiError]) -> None:
        self.provider, self.clock, self.stats, self.faults = provider, clock, stats, faults
        self._end_hook, self._full = end, full
        self.shape = SHAPES[provider]
        super().__init__()

    # -- registry --------------------------------------------------------------------------------

    def add(self, batch: B) -> B:
        """Register a new batch, deciding which batch-level faults it will meet."""
        shape, faults = self.shape, self.faults
        batch.queued, batch.finish = shape.queued, shape.finish
        if faults.plan.slow_validation:
            batch.delay = faults.plan.slow_validation
            faults.record("slow_validation")
        window = faults.expiry_window(batch.window)
        if window < batch.window:
            batch.window, batch.early = window, True  # counted if the batch does expire
        cap = faults.plan.enqueued_tokens
        if batch.failure is None and cap and shape.queue_full is not None and isinstance(batch, FileBatch):
            batch.prompt_tokens = _prompt_tokens(batch.paths)
            if self._enqueued(getattr(batch, "model", None)) + batch.prompt_tokens > cap:
                batch.failure, batch.prompt_tokens = shape.queue_full(batch, cap), 0
                faults.record("enqueued_tokens")
        if batch.failure is None and faults.plan.queue_full and faults.take("queue_full"):
            if shape.queue_full is None:
                raise self._full()
            batch.failure = shape.queue_full(batch)
        elif batch.failure is None and faults.plan.provider_cancel and faults.take("provider_cancel", record=False):
            batch.provider_cancel_at = batch.at(0.5)  # counted when it happens
        batch.ordinal = self.put(batch.id, batch)
        self.stats.add(self.provider, "batches_created")
        return batch

    def _enqueued(self, model: str | None) -> int:
        """Prompt tokens of this model's batches that have not ended (validating or running)."""
        batches = [b for b in self.all() if b.prompt_tokens and getattr(b, "model", None) == model]
        self.advance(*batches)
        return sum(b.prompt_tokens for b in batches if not b.ended)

    # -- the timeline ----------------------------------------------------------------------------

    def advance(self, *batches: B) -> None:
        """Bring each batch up to ``clock.now()``, writing results on a terminal transition."""
        for batch in batches:
            self._advance(batch, self.clock.now())

    def _advance(self, batch: B, now: float) -> None:
        with batch.lock:
            if batch.ended:
                return
            cut = batch.provider_cancel_at
            if batch.cancel_at is None and cut is not None and now >= cut and cut < batch.expires:
                self._run_to(batch, cut)
                self._start_cancel(batch, cut)
                self.faults.record("provider_cancel")
            if batch.cancel_at is not None:
                end = batch.cancel_at + batch.timing.cancel_seconds
                if now >= end:
                    self._end(batch, "cancelled", end, batch.done_by(batch.cancel_at))
                return
            failing = batch.failure is not None
            end = batch.at(batch.queued) if failing else batch.at(1.0)
            if now >= batch.expires and batch.expires < end:
                self._run_to(batch, batch.expires)
                done = batch.done_by(batch.expires) if self.shape.expired_results else 0
                self._end(batch, "expired", batch.expires, done)
            elif now >= end:
                if not failing:
                    self._run_to(batch, end)
                self._end(batch, "failed" if failing else "completed", end, 0 if failing else batch.total)
            else:
                self._run_to(batch, now)

    def cancel(self, batch: B) -> bool:
        """The client's cancel; False when the batch has already ended (the service refuses it)."""
        self.advance(batch)
        with batch.lock:
            if batch.ended:
                return False
            if batch.cancel_at is None:
                self._start_cancel(batch, self.clock.now())
        return True

    @staticmethod
    def _start_cancel(batch: Batch, t: float) -> None:
        batch.cancel_at, batch.phase = t, "cancelling"
        batch.stamps["cancelling"] = t

    @staticmethod
    def _run_to(batch: Batch, t: float) -> None:
        """Set the running phase (and when each began) for time ``t`` on the normal timeline."""
        phase = "validating"
        for name, share in (("in_progress", batch.queued), ("finalizing", batch.finish)):
            if t >= batch.at(share):
                phase = name
                batch.stamps.setdefault(name, batch.at(share))
        batch.phase = phase

    def _end(self, batch: B, phase: str, at: float, done: int) -> None:
        batch.done = done
        batch.stamps[phase] = at
        self._end_hook(batch, phase)
        if done:
            self.stats.add(self.provider, "requests_processed", done)
        if phase == "expired" and batch.early:
            self.faults.record("expire_after")
        batch.phase = phase  # last: a reader never sees an ended batch without its results


def _prompt_tokens(paths: list[Path]) -> int:
    """The emulated prompt tokens of a batch's input files, as its fake model counts them."""
    total = 0
    for line in jsonl(*paths):
        body = orjson.loads(line).get("body") or {}
        text = " ".join(_text_of(m.get("content")) for m in body.get("messages") or () if isinstance(m, dict))
        total += _tokens(len(text))
    return total


def scrambled(lines: Iterable[tuple[str, bytes]]) -> list[bytes]:
    """Result lines in a deterministic but scrambled order (by a hash of each custom_id): real
    services keep no input order, and clients must join on the id."""
    return [line for _, line in sorted(lines, key=lambda pair: zlib.crc32(pair[0].encode()))]


@dataclass
class Scan:
    """What one pass over a batch input found: whole-input problems (message -> how often), which
    fail the batch, and which requests fail on their own (``bad[i] == 1``)."""

    total: int = 0
    bad: bytearray = field(default_factory=bytearray)
    errors: dict[str, int] = field(default_factory=dict)

    def problem(self, message: str) -> None:
        self.errors[message] = self.errors.get(message, 0) + 1


def run_requests(paths: Iterable[Path], answer: Callable[[int, dict], tuple[bool, bytes]],
                 done: int | None = None) -> tuple[list[bytes], list[bytes]]:
    """The first ``done`` input lines (None: all) through ``answer(index, line) -> (succeeded, result
    line)``: the lines of the output and of the error file, each scrambled."""
    ok: list[tuple[str, bytes]] = []
    bad: list[tuple[str, bytes]] = []
    for index, raw in zip(range(done) if done is not None else itertools.count(), jsonl(*paths)):
        line = orjson.loads(raw)
        succeeded, result = answer(index, line)
        (ok if succeeded else bad).append((f"{line.get('custom_id')}", result))
    return scrambled(ok), scrambled(bad)


def scan_lines(scan: Scan, paths: Iterable[Path], max_lines: int, too_many: str) -> Iterator[Any]:
    """Each line of a batch input parsed (None where it is not JSON), counted in ``scan``; past
    ``max_lines`` the walk stops with ``too_many`` as a whole-input problem."""
    for raw in jsonl(*paths):
        scan.total += 1
        if scan.total > max_lines:
            scan.problem(too_many)
            return
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            line = None
        yield line


FLEX_BUSY = "Resource unavailable: no flex capacity for this model now; retry later (emulator: flex_busy)."


def jsonl(*paths: Path) -> Iterator[bytes]:
    """The non-blank lines of these files, in order."""
    for path in paths:
        with open(path, "rb") as f:
            for raw in f:
                if raw.strip():
                    yield raw


class Service(Generic[B]):
    """What every emulated provider service shares: its files area, stats, fault injector and
    lifecycle, and a mount whose gate answers ``http_*`` faults in the provider's own words.
    Subclasses set ``error_shape`` (see :mod:`.responses`), list ``routes()``
    and write results in ``end()``."""

    error_shape = "openai"
    open_paths: tuple[str, ...] = ()  # paths under the prefix that need no API key (see AuthAndRequestId)

    def __init__(self, *, provider: str, prefix: str, data_dir: Path, clock: Clock, stats: Stats, timing: Timing,
                 max_lines: int, behaviour: Behaviour | None = None, faults: FaultPlan | None = None) -> None:
        self.provider, self.prefix, self.data_dir, self.clock, self.stats = provider, prefix, data_dir, clock, stats
        self.timing, self.max_lines, self.behaviour = timing, max_lines, behaviour
        data_dir.mkdir(parents=True, exist_ok=True)
        self.faults = (faults or FaultPlan()).injector(provider, stats)
        self.fault_errors = FAULT_ERRORS[provider]
        self.batches: Lifecycle[B] = Lifecycle(provider, clock, stats, self.faults, self.end, self.queue_full)
        self.shape = self.batches.shape
        self._flex_refused: dict[int, int] = {}  # 429s each flex request met (the flex_busy knob)
        stats.register(provider)

    def routes(self) -> list[BaseRoute]:
        raise NotImplementedError

    # The live (synchronous) endpoint under the prefix, answered by live() in front of the routes (see
    # :mod:`.live`); None: no such endpoint (Vertex serves generateContent among its routes).
    live_path: str | None = None

    def live(self, path: str, body: Any) -> Parsed:
        """A live request (its body parsed: None when it is not JSON), checked as the batch routes check one."""
        raise NotImplementedError

    def flex_busy(self, model: str, body: dict) -> bool:
        """Whether a live call on the flex tier is refused (a 429) now: while its request has met fewer
        refusals than the behaviour's ``flex_busy`` (flex capacity is best effort)."""
        seed = request_seed(body)
        refused = self._flex_refused.get(seed, 0)
        if refused >= (self.behaviour.value("flex_busy", model) if self.behaviour else 0):
            return False
        self._flex_refused[seed] = refused + 1
        self.stats.add_fault(self.provider, "flex_busy")
        return True

    def end(self, batch: B, phase: str) -> None:
        """The results hook (see :class:`Lifecycle`)."""
        raise NotImplementedError

    def mount(self) -> Mount:
        return Mount(self.prefix, middleware=self.gate(), routes=self.routes())

    def gate(self) -> list[Middleware] | None:
        """The ``http_*`` faults' gate in front of the routes (none when the plan has no such fault)."""
        if not self.faults.plan.http_active:
            return None
        return [Middleware(FaultGate, faults=self.faults, render=self.fault_response)]

    def fault_response(self, status: int) -> Response:
        kind, message = self.fault_errors[status]
        code = "rate_limit_exceeded" if status == 429 and self.error_shape == "openai" else None
        return ApiError(status, message, type=kind, code=code).response(self.error_shape)

    def queue_full(self) -> ApiError:
        """The refusal of a create when the provider's queue of batch work is full (a fault)."""
        return ApiError(429, "Too many requests are enqueued for batch processing; try again once some batches "
                             "have completed.", type=self.fault_errors[429][0], shape=self.error_shape)

    def invalid_key_response(self) -> Response:
        """A key the emulator was not told to accept (OpenAI's 401 unless the provider differs)."""
        return ApiError(401, "Incorrect API key provided. You can find your API key in your account settings.",
                        code="invalid_api_key").response(self.error_shape)

    def now(self) -> float:
        return self.clock.now()

    async def read_batch(self, batch: B) -> B:
        """One batch read by id: counted (a poll's cost), and brought up to now."""
        self.stats.add(self.provider, "batch_gets")
        await run_in_threadpool(self.batches.advance, batch)
        return batch

    # -- one batch by id, in the provider's words --------------------------------------------------

    cancel_settles = False  # read the batch again after a cancel: CANCELLED at once when cancel_seconds = 0

    def batch(self, request: Request) -> B:
        """The batch the path names, or the provider's 404."""
        return found(self.batches.get, request.path_params["batch_id"], self.no_batch)

    def no_batch(self, batch_id: str) -> ApiError:
        raise NotImplementedError

    def cannot_cancel(self, batch: B) -> ApiError:
        """The refusal of a cancel of a batch that has already ended."""
        raise NotImplementedError

    def batch_json(self, batch: B) -> dict:
        raise NotImplementedError

    async def retrieve_batch(self, request: Request) -> Response:
        return JSONResponse(self.batch_json(await self.read_batch(self.batch(request))))

    async def cancel_batch(self, request: Request) -> Response:
        batch = self.batch(request)
        if not await run_in_threadpool(self.batches.cancel, batch):
            raise self.cannot_cancel(batch)
        if self.cancel_settles:
            await run_in_threadpool(self.batches.advance, batch)
        return JSONResponse(self.batch_json(batch))


Handler = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")


def route(path: str, **handlers: Handler) -> Route:
    """One path and its handler per HTTP method (``GET=...``, ``POST=...``); other methods get a 405.
    Starlette answers HEAD where there is a GET, so a HEAD takes the GET handler."""

    async def endpoint(request: Request) -> Response:
        return await (handlers.get(request.method) or handlers["GET"])(request)

    return Route(path, endpoint, methods=list(handlers))


def found(get: Callable[[str], T | None], key: str, missing: Callable[[str], ApiError]) -> T:
    """What ``get`` finds under ``key``, or the provider's 404 for it."""
    value = get(key)
    if value is None:
        raise missing(key)
    return value


class _Listed(Protocol):
    @property
    def id(self) -> str: ...


L = TypeVar("L", bound=_Listed)


def after(items: list[L], cursor: str | None, missing: Callable[[str], ApiError] | None = None) -> list[L]:
    """The items after the one whose id is ``cursor`` (a list page's cursor; all of them without one).
    An unknown cursor is the provider's error (``missing``), or leaves none."""
    if not cursor:
        return items
    ids = [item.id for item in items]
    if cursor in ids:
        return items[ids.index(cursor) + 1:]
    if missing is None:
        return []
    raise missing(cursor)


async def json_object(request: Request) -> dict | None:
    """The request's JSON body when it is an object; None when it is not JSON or not an object."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


F = TypeVar("F", bound="FileBatch")


class FilesAndBatches(Service[F]):
    """A Files + Batches API of OpenAI's shape (OpenAI, Groq, Mistral, Together): the same routes
    under the service's files and batches paths, the same batch lookup, read, create and results
    hook. Subclasses check a create (``new_batch``), answer each request (``results``) and write the
    handlers where the providers answer differently."""

    files_path, batches_path = "/files", "/batches"
    result_kinds = ("output", "error")  # the result files are named <batch id>_<kind>.jsonl
    result_purpose = "batch_output"  # ... stored with this purpose, expiring after result_ttl seconds (None: never)
    result_ttl: int | None = FILE_TTL_SECONDS
    files: FileStore

    def routes(self) -> list[BaseRoute]:
        files, batches = self.files_path, self.batches_path
        return [
            route(files, POST=self.upload_file, GET=self.list_files),
            route(files + "/{file_id}", GET=self.retrieve_file, DELETE=self.delete_file),
            route(files + "/{file_id}/content", GET=self.file_content),
            route(batches, POST=self.create_batch, GET=self.list_batches),
            route(batches + "/{batch_id}", GET=self.retrieve_batch),
            route(batches + "/{batch_id}/cancel", POST=self.cancel_batch),
        ]

    # The handlers each subclass writes in its provider's words.
    upload_file: Handler
    list_files: Handler
    list_batches: Handler

    def file(self, request: Request) -> StoredFile:
        """The file the path names, or the provider's 404."""
        return found(self.files.get, request.path_params["file_id"], self.no_file)

    def no_file(self, file_id: str) -> ApiError:
        raise NotImplementedError

    def file_json(self, stored: StoredFile) -> dict:
        return stored.to_json()

    async def retrieve_file(self, request: Request) -> Response:
        return JSONResponse(self.file_json(self.file(request)))

    async def delete_file(self, request: Request) -> Response:
        stored = self.file(request)
        self.files.delete(stored.id)
        return JSONResponse({"id": stored.id, "object": "file", "deleted": True})

    async def file_content(self, request: Request) -> Response:
        stored = self.file(request)
        self.stats.add(self.provider, "files_downloaded")
        return self.faults.download(stored.path)

    async def create_batch(self, request: Request) -> Response:
        batch = self.batches.add(await self.new_batch(request))
        for path in batch.paths:
            self.files.pin(path)  # a client may delete its input while the batch still reads it
        return self.faults.lost(self.created(batch))

    async def new_batch(self, request: Request) -> F:
        """The batch a create asks for, once the provider's checks passed (not yet added)."""
        raise NotImplementedError

    def created(self, batch: F) -> Response:
        """The answer to a create."""
        return JSONResponse(self.batch_json(batch))

    def end(self, batch: F, phase: str) -> None:
        """The results hook: the requests run (see ``results``) go into the output and the error
        file, written once; then the inputs are let go."""
        if phase != "failed":
            files = self.faults.corrupt(batch.ordinal, list(self.results(batch, phase)))
            batch.output_file, batch.error_file = (
                self.results_file(batch, lines, kind) for lines, kind in zip(files, self.result_kinds))
        for path in batch.paths:
            self.files.unpin(path)

    def results(self, batch: F, phase: str) -> tuple[list[bytes], list[bytes]]:
        """The lines of the output and of the error file (see :func:`run_requests`)."""
        raise NotImplementedError

    def results_file(self, batch: F, lines: list[bytes], kind: str) -> str | None:
        """Store one result file; its id (None: no file, as there is nothing to put in it)."""
        stored = self.files.add_lines(lines, f"{batch.id}_{kind}.jsonl", self.result_purpose, self.result_ttl)
        return None if stored is None else stored.id
