"""Batch records and their lifecycle, computed lazily from the injected clock.

Nothing runs in the background: every read calls :meth:`BatchBook.advance`, which works out where
the batch is at ``clock.now()``. With ``S = processing_seconds`` after ``created``:

* ``validating`` for the first 10 % of S (a bad input file fails the batch at that moment),
* ``in_progress`` until 90 % (request i is done once elapsed in-progress time covers (i+1)/n),
* ``finalizing`` until S, then ``completed``.

``expires_at = created + completion_window_seconds``; reaching it before the end gives ``expired``
with the requests done by then. Cancel freezes progress at that moment (``cancelling``) and becomes
``cancelled`` ``cancel_seconds`` later. Result files are written once, on the terminal transition.

Faults (:mod:`.faults`) bend this timeline: ``slow_validation`` shifts everything after
``created`` later, ``expire_after`` brings ``expires_at`` closer, ``queue_full`` fails validation
with ``token_limit_exceeded``, ``provider_cancel`` starts a cancel half-way through processing
with no client call, and the line faults reshape the result files as they are written.

``request_counts.total`` is 0 while validating (and for failed batches), ``completed`` counts
successes, ``failed`` counts executed requests that were rejected; requests that never ran
(expired / cancelled) are in neither, so ``total - completed - failed`` is what was skipped.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from .clock import Clock
from .fake_model import Behaviour
from .faults import FaultInjector
from .results import build_results
from .state import FileStore, Stats, new_id
from .validation import FileCheck

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_TIMESTAMPS = (
    "in_progress_at", "finalizing_at", "completed_at", "failed_at",
    "expired_at", "cancelling_at", "cancelled_at",
)


@dataclass(frozen=True)
class Timing:
    """The emulator's time knobs, shared by every provider's routes."""

    processing_seconds: float = 0.0
    completion_window_seconds: float = 86400.0
    cancel_seconds: float = 0.0

    def done_by(self, created: float, total: int, t: float, start: float = 0.1, end: float = 0.9) -> int:
        """How many requests (a prefix of the input) have run at time ``t``: none until ``start``
        of processing_seconds has passed (queued or validating), then at an even pace until
        ``end`` of it, when all have."""
        begin, finish = created + start * self.processing_seconds, created + end * self.processing_seconds
        if t >= finish:
            return total
        if t < begin:
            return 0
        return min(total, int(total * (t - begin) / (finish - begin)))


@dataclass
class Batch:
    id: str
    endpoint: str
    input_file_id: str
    input_path: Path
    completion_window: str
    metadata: dict | None
    created: float
    timing: Timing
    check: FileCheck
    status: str = "validating"
    stamps: dict[str, int] = field(default_factory=dict)
    cancel_at: float | None = None
    counts: tuple[int, int] | None = None  # frozen (completed, failed) once terminal
    output_file_id: str | None = None
    error_file_id: str | None = None
    usage: dict | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    ordinal: int = 0  # position in its book: names the batch to the fault injector
    validation_delay: float = 0.0  # slow_validation: the timeline starts this much after created
    expires_in: float | None = None  # expire_after: None means the completion window
    provider_cancel_at: float | None = None  # provider_cancel: when the provider starts cancelling

    @property
    def start(self) -> float:
        return self.created + self.validation_delay

    @property
    def v_end(self) -> float:
        return self.start + 0.1 * self.timing.processing_seconds

    @property
    def p_end(self) -> float:
        return self.start + 0.9 * self.timing.processing_seconds

    @property
    def end(self) -> float:
        return self.start + self.timing.processing_seconds

    @property
    def expires(self) -> float:
        window = self.timing.completion_window_seconds if self.expires_in is None else self.expires_in
        return self.created + window

    def done_by(self, t: float) -> int:
        """How many requests (a prefix of the file) have been executed at time ``t``."""
        return self.timing.done_by(self.start, self.check.total, t)

    def counts_at(self, done: int) -> tuple[int, int]:
        failed = self.check.bad[:done].count(1)
        return done - failed, failed

    def to_json(self, now: float) -> dict:
        if self.counts is not None:
            completed, failed = self.counts
        elif self.status in ("validating", "failed"):
            completed = failed = 0
        else:
            completed, failed = self.counts_at(self.done_by(self.cancel_at if self.cancel_at is not None else now))
        total = 0 if self.status in ("validating", "failed") else self.check.total
        errors = self.check.errors if self.status == "failed" else []
        doc = {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": errors} if errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created),
            "expires_at": int(self.expires),
            "request_counts": {"total": total, "completed": completed, "failed": failed},
            "metadata": self.metadata,
            "model": self.check.model,
            "usage": self.usage or _zero_usage(),
        }
        for name in _TIMESTAMPS:
            doc[name] = self.stamps.get(name)
        return doc


def _zero_usage() -> dict:
    return {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }


class BatchBook:
    """All batches of one provider namespace, newest last, plus their state transitions."""

    def __init__(self, provider: str, files: FileStore, clock: Clock, stats: Stats,
                 faults: FaultInjector | None = None, behaviour: Behaviour | None = None) -> None:
        self.provider = provider
        self.behaviour = behaviour
        self.files = files
        self.clock = clock
        self.stats = stats
        self.faults = faults
        self._lock = threading.Lock()
        self._batches: dict[str, Batch] = {}
        self._order: list[str] = []
        self._position: dict[str, int] = {}

    # -- registry --------------------------------------------------------------------------------

    def create(self, endpoint: str, input_file_id: str, input_path: Path, window: str,
               metadata: dict | None, timing: Timing, check: FileCheck) -> Batch:
        batch = Batch(
            id=new_id("batch_"), endpoint=endpoint, input_file_id=input_file_id, input_path=input_path,
            completion_window=window, metadata=metadata, created=self.clock.now(), timing=timing, check=check,
        )
        if self.faults is not None:
            self._plan_faults(batch)
        self.files.pin(input_path)
        with self._lock:
            batch.ordinal = len(self._order)
            self._position[batch.id] = len(self._order)
            self._order.append(batch.id)
            self._batches[batch.id] = batch
        self.stats.add(self.provider, "batches_created")
        return batch

    def _plan_faults(self, batch: Batch) -> None:
        """Decide, at creation, which batch-level faults this batch will meet."""
        faults = self.faults
        assert faults is not None
        if faults.validation_delay:
            batch.validation_delay = faults.validation_delay
            faults.record("slow_validation")
        window = batch.timing.completion_window_seconds
        if faults.expiry_window(window) < window:
            batch.expires_in = faults.expiry_window(window)  # counted if the batch does expire
        if batch.check.errors:
            return  # already failing validation: no budget spent on it
        if faults.take("queue_full"):
            batch.check = replace(batch.check, errors=[_token_limit_error(batch.check.model)])
        elif faults.take("provider_cancel", record=False):  # counted when it happens
            batch.provider_cancel_at = batch.start + 0.5 * batch.timing.processing_seconds

    def get(self, batch_id: str) -> Batch | None:
        with self._lock:
            return self._batches.get(batch_id)

    def page(self, after: str | None, limit: int) -> tuple[list[Batch], bool] | None:
        """Newest first, starting below ``after``; None when ``after`` is unknown."""
        with self._lock:
            if after:
                pos = self._position.get(after)
                if pos is None:
                    return None
                start = pos - 1
            else:
                start = len(self._order) - 1
            ids = [self._order[i] for i in range(start, max(start - limit, -1), -1)]
            return [self._batches[i] for i in ids], start + 1 > limit

    # -- lifecycle -------------------------------------------------------------------------------

    def advance(self, batch: Batch) -> None:
        """Bring ``batch`` up to ``clock.now()``; writes result files on the terminal transition."""
        now = self.clock.now()
        with batch.lock:
            if batch.status in TERMINAL:
                return
            cut = batch.provider_cancel_at
            if batch.cancel_at is None and cut is not None and now >= cut and cut < batch.expires:
                self._reach(batch, cut)
                batch.cancel_at = cut
                batch.status = "cancelling"
                batch.stamps["cancelling_at"] = int(cut)
                if self.faults is not None:
                    self.faults.record("provider_cancel")
            if batch.cancel_at is not None:
                end = batch.cancel_at + batch.timing.cancel_seconds
                if now >= end:
                    self._finish(batch, "cancelled", end, batch.done_by(batch.cancel_at))
                return
            failing = bool(batch.check.errors)
            end = batch.v_end if failing else batch.end
            if now >= batch.expires and batch.expires < end:
                self._reach(batch, batch.expires)
                self._finish(batch, "expired", batch.expires, batch.done_by(batch.expires))
            elif now >= end:
                if failing:
                    self._finish(batch, "failed", end, 0)
                else:
                    self._reach(batch, end)
                    self._finish(batch, "completed", end, batch.check.total)
            else:
                self._reach(batch, now)

    def cancel(self, batch: Batch) -> bool:
        """Start cancelling; False when the batch is already terminal (the caller answers 409)."""
        self.advance(batch)
        now = self.clock.now()
        with batch.lock:
            if batch.status in TERMINAL:
                return False
            if batch.cancel_at is None:
                batch.cancel_at = now
                batch.status = "cancelling"
                batch.stamps["cancelling_at"] = int(now)
            return True

    def _reach(self, batch: Batch, t: float) -> None:
        """Set the live status (and its timestamps) for time ``t`` on the normal timeline."""
        status = "validating"
        if t >= batch.v_end:
            status = "in_progress"
            batch.stamps.setdefault("in_progress_at", int(batch.v_end))
        if t >= batch.p_end:
            status = "finalizing"
            batch.stamps.setdefault("finalizing_at", int(batch.p_end))
        batch.status = status

    def _finish(self, batch: Batch, status: str, at: float, done: int) -> None:
        stamp = int(at)
        if status != "failed":
            unexecuted = {"expired": "batch_expired", "cancelled": "batch_cancelled"}.get(status)
            corrupt = None if self.faults is None else partial(self.faults.corrupt, batch.ordinal)
            results = build_results(batch.input_path, secrets.token_hex(8), done, unexecuted, stamp,
                                    batch.check.bad, corrupt, behaviour=self.behaviour, provider=self.provider)
            batch.output_file_id = self._store(batch, results.output, "output")
            batch.error_file_id = self._store(batch, results.errors, "error")
            batch.usage = results.usage
            self.stats.add(self.provider, "requests_processed", results.processed)
        if status == "expired" and batch.expires_in is not None and self.faults is not None:
            self.faults.record("expire_after")
        batch.counts = batch.counts_at(done) if status != "failed" else (0, 0)
        batch.status = status
        batch.stamps[f"{status}_at"] = stamp
        self.files.unpin(batch.input_path)

    def _store(self, batch: Batch, content: bytes, kind: str) -> str | None:
        if not content:
            return None  # like OpenAI: no file when there is nothing to put in it
        path = self.files.blob_path()
        path.write_bytes(content)
        return self.files.add(path, f"{batch.id}_{kind}.jsonl", "batch_output").id


def _token_limit_error(model: str | None) -> dict:
    """The validation error OpenAI gives when the model's enqueued-token pool is full (research
    §2.6, openai/openai-python#2084): the batch is accepted, then fails on the next read."""
    return {
        "code": "token_limit_exceeded",
        "message": f"Enqueued token limit reached for {model or 'this model'} in organization org-emulator. "
                   "Limit: 2,000,000 enqueued tokens. Please try again once some in_progress batches have been completed.",
        "param": None,
        "line": None,
    }
