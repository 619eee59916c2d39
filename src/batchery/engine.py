"""The job state machine: ingest → plan → submit → poll → collect. Provider-independent.

Every step is written to the store before (write-ahead) or right after its side effect, in one
transaction, so that running the same job again after a crash continues where it stopped and
never creates a remote batch twice.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .errors import AccountError, ConfigError, InputError, JobError, ProviderError, TransientError, UnreachableError
from .gcpause import gc_paused
from .inputs import open_file
from .limits import reported_enqueued_limit, split, tokens_text
from .pricing import PRICES_FILE, UNKNOWN, PriceBook, actual_cost, batch_line_cost, total
from .providers.base import FAILED, MISSING, SUCCEEDED, BatchProvider, RemoteBatch, redact, scrub
from .requests import canonical_bytes, parse_for
from .retry import DEFAULT_MAX_ATTEMPTS, recoverable_codes, retryable_statuses, transient_codes
from .states import JobState, RequestCounts, tally_batches
from .store import Job, Store
from .structured import INVALID, batch_schemas, checked, reask_batch, reask_job, schema_text

T = TypeVar("T")

_CHUNK = 10_000  # answers stored a transaction
# Input lines stored a transaction: the request-key index takes random keys, so each commit rewrites
# about a page of it per line until the chunk outgrows the index's pages. At 1,000,000 requests the
# ingest stage cost 27.1 us a request against 30.6-33.0 with 10,000; 50,000 cost as little but took
# peak RSS to 377 MB (dirty pages in the store's 64 MB cache, and the lines held).
_INGEST_CHUNK = 25_000
_OPEN_BATCH = ("planned", "creating", "submitted")
_DOWNLOADS = 3  # tries at a batch's results when the download brings fewer lines than the provider counted


@dataclass
class Progress(RequestCounts):
    """A snapshot for progress displays: distinct requests by state and batches by local state."""

    job: str
    items: dict[str, int]
    batches: dict[str, int]
    remote: dict[str, int]  # remote batches by provider status
    elapsed: float
    done: bool = False
    stopped: str | None = None  # why submitting stopped early (e.g. the --max-cost cap), if it did
    live: dict | None = None  # live mode: calls sent, answered 429, retried, in flight
    rows: int = 0  # input lines (identical lines are one distinct request)
    states: dict[str, int] = field(default_factory=dict)  # batches in batchery's words (BATCH_STATES)
    waiting: str | None = None  # why planned batches are held back (the enqueued-token budget), if they are

    @property
    def counts(self) -> dict[str, int]:  # type: ignore[override]
        return self.items

    @property
    def capped(self) -> bool:
        """Stopped by the cost cap rather than by the provider (both runners word it so)."""
        return bool(self.stopped) and self.stopped.startswith("--max-cost")  # type: ignore[union-attr]


@dataclass
class PollPolicy:
    """Polling cadence: start fast, back off while nothing changes, reset when something does."""

    initial: float = 5.0
    maximum: float = 60.0
    factor: float = 1.5
    sleep: Callable[[float], None] = field(default=time.sleep)
    # A provider call that fails transiently (network, 429, 5xx) is tried again after a jittered
    # exponential backoff from retry_initial up to retry_maximum seconds, or after the wait the
    # provider asked for (Retry-After) if that is longer; after give_up_after failures of the same
    # call in a row (about a minute and a half of trying) the run stops and says so: a 25 % error
    # rate passes, a wrong URL or a long outage does not spin forever.
    give_up_after: int = 8
    retry_initial: float = 1.0
    retry_maximum: float = 30.0
    rng: random.Random = field(default_factory=random.Random)

    def backoff(self, failures: int, asked: float | None = None) -> float:
        """Full jitter: a random wait up to an exponentially growing cap, so retries spread out;
        never shorter than what the provider asked for."""
        cap = min(self.retry_maximum, self.retry_initial * 2 ** (failures - 1))
        return max(cap * (0.5 + 0.5 * self.rng.random()), asked or 0.0)


def file_fingerprint(path: Path, provider: str, model: str | None, raw: bool = False) -> str:
    digest = hashlib.sha256(f"{provider}\0{model}\0{raw}\0".encode())
    with open_file(path) as f:  # a missing file or a folder is a clear error, not a traceback
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def prepare_job(store: Store, name: str, provider: BatchProvider, model: str | None,
                source: Iterable[tuple[str, Any]], fingerprint: str,
                options: dict | None = None, raw: bool = False, source_name: str = "the input",
                reuse: bool = True, announce: Callable[[str], None] | None = None) -> tuple[Job, bool]:
    """Create the job from its requests, or return the existing one. Returns (job, resumed).

    The input is stored in transactions of _INGEST_CHUNK lines, so a large ingest never holds the store's
    write lock for long, under the job's lock and in state `ingesting` until the last line is in:
    a bad line anywhere removes the job (nothing is left behind and nothing is sent), and a job
    left `ingesting` by a crash is discarded and read again by the next run. With reuse, requests
    already answered in another job of the store (batch or live: the key is the same) from the
    same provider endpoint take that answer instead of being sent; each reuse is logged and
    announced (`announce`, else the "batchery" logger at warning level).
    """
    if provider.origin is not None:  # which stored answers this job may reuse (and give)
        options = {**(options or {}), "origin": provider.origin}
    while True:
        existing = store.get_job(name)
        if existing is None:
            with ExitStack() as locked, store.transaction():
                job_id = store.insert_job(name, provider.name, model, provider.endpoint, fingerprint, options or {},
                                          state="ingesting")
                if job_id is not None:
                    # Locked before the row is visible to others, so none takes it for a crashed ingest.
                    locked.enter_context(store.job_lock(store.get_job(name)))  # type: ignore[arg-type]
                    lock = locked.pop_all()
            if job_id is None:
                continue  # another process created it since we looked: read it again
            with lock:
                return _ingest(store, job_id, name, provider, model, source, raw, source_name, reuse, announce), False
        if existing.state != "ingesting":
            if existing.fingerprint != fingerprint:
                raise JobError(
                    f"job '{name}' already exists with different requests, provider or model; "
                    f"give this run another --job name, or delete the old job with `batchery delete {name}`"
                )
            return check_endpoint(store, existing, provider.origin, options), True
        with store.job_lock(existing):  # JobBusyError when another process is ingesting it right now
            current = store.get_job(name)
            if current is not None and current.id == existing.id and current.state == "ingesting":
                # still half-read and nobody is reading it: a crash left it; read it again from the start
                with store.transaction():
                    store.delete_job(existing.id)


def _ingest(store: Store, job_id: int, name: str, provider: BatchProvider, model: str | None,
            source: Iterable[tuple[str, Any]], raw: bool, source_name: str, reuse: bool,
            announce: Callable[[str], None] | None) -> Job:
    try:
        n = _add_lines(store, job_id, provider, model, source, raw, source_name)
        with store.transaction():
            store.set_job_rows(job_id, n)
            reused = store.reuse_cached_results(job_id) if reuse else []
            store.log(job_id, "created", rows=n, reused=sum(count for _, count in reused))
            notices = []
            for source_job, count in reused:
                notices.append(f"{count:,} answer{'s' if count != 1 else ''} reused from job '{source_job}' (same store)")
                store.log(job_id, "reused", source_job=source_job, answers=count)
            store.set_job_state(job_id, "running")
    except Exception:
        with store.transaction():
            store.delete_job(job_id)
        raise
    for notice in notices:
        if announce is None:
            import logging  # only for a notice with nobody to tell: `status` does not load it

            announce = logging.getLogger("batchery").warning
        announce(notice)
    job = store.get_job(name)
    assert job is not None
    return job


@gc_paused()
def _add_lines(store: Store, job_id: int, provider: BatchProvider, model: str | None,
               source: Iterable[tuple[str, Any]], raw: bool, source_name: str) -> int:
    """Validate, key and store every input line; one transaction per _INGEST_CHUNK lines. Returns the count."""
    max_bytes = provider.limits.max_bytes
    n = 0
    lines: list[tuple] = []
    structured: list[tuple] = []  # lines with a response_format: their answers are checked (structured.py)
    for where, obj in source:
        row_id, metadata, canonical, key = parse_for(provider, obj, model, raw, where)
        # Stored as the provider's batch line: encoded once here, copied into batch files as is.
        line = provider.encode(key, canonical)
        if len(line) >= max_bytes:
            raise InputError(f"{where}: request is {len(line):,} bytes, over {provider.name}'s "
                             f"batch file limit of {max_bytes:,} bytes")
        lines.append((n, None if row_id is None else str(row_id), metadata, key, canonical["model"], line))
        if "response_format" in canonical:
            structured.append((key, schema_text(canonical["response_format"]), canonical_bytes(canonical)))
        n += 1
        if len(lines) >= _INGEST_CHUNK:
            _store_lines(store, job_id, lines, structured)
            lines, structured = [], []
    if n == 0:
        raise InputError(f"{source_name}: no requests to run (empty input)")
    if lines:
        _store_lines(store, job_id, lines, structured)
    return n


def _store_lines(store: Store, job_id: int, lines: list[tuple], structured: list[tuple]) -> None:
    with store.transaction():
        store.add_requests(job_id, lines)
        if structured:
            store.add_structured(job_id, structured)


def reopen_recoverable(store: Store, job: Job) -> int:
    """At the start of a run: lines that failed for a reason a later run can fix (retry.py's
    recoverable codes: connection, key, quota, rate, server) go back to pending, whatever attempts
    they used, and a job marked done with such lines (by an older batchery) runs again."""
    if job.state not in ("running", "done"):
        return 0
    with store.transaction():
        n = store.reopen_retryable(job.id, recoverable_codes(job.provider))
        if n:
            store.log(job.id, "reopened", requests=n)
            if job.state == "done":
                store.set_job_state(job.id, "running")
                job.state = JobState.RUNNING
    return n


def unfinished_reason(store: Store, job: Job) -> str | None:
    """Why a job whose lines have all ended is not done: lines failed for reasons a later run can
    fix (None when there are none). The message says what happened and what to do."""
    failures = store.failed_with(job.id, recoverable_codes(job.provider))
    if not failures:
        return None
    n = sum(count for _, _, count in failures)
    code, example, _ = failures[0]
    return (f"{n:,} request{'s' if n != 1 else ''} failed for a reason a later run can fix ({code}: {example}). "
            "The job is saved and not finished: fix the cause (the API key, --base-url, quota or network) "
            "and run the same command again to send them")


def check_endpoint(store: Store, job: Job, origin: str | None, options: dict | None = None) -> Job:
    """A job resumed at another endpoint than the one it ran at: its answers must not pass for this
    endpoint's, so a job holding answers is refused; one with none (say, every call failed at a
    wrong URL) moves to the new endpoint. A job of unknown origin (older batchery) resumes as is."""
    before = job.options.get("origin")
    if before is None or origin is None or before == origin:
        return job
    if store.counts(job.id).get("succeeded"):
        raise JobError(f"job '{job.name}' holds answers from {_describe(before, job.provider)}, and this run goes "
                       f"to {_describe(origin, job.provider)}; answers never cross endpoints, so run it under "
                       "another job name (--job NAME; for an evaluation, another name) or at the same endpoint")
    job.options = {**{k: v for k, v in job.options.items() if k != "base_url"}, **(options or {}), "origin": origin}
    with store.transaction():
        store.set_job_options(job.id, job.options)
        store.log(job.id, "endpoint_changed", before=before, after=origin)
    return job


def _describe(origin: str, provider: str) -> str:
    return {"emulator": "the emulator", "default": f"{provider}'s default URL"}.get(origin, origin)


def poll_together(engines: list[Engine], before_submit: Callable[[Engine], None] | None = None) -> bool:
    """One non-blocking cycle for several jobs on one provider connection: each job submits what it
    has to (reconcile, plan, submit), then ONE poll (one walk of the provider's batch list) covers
    the open batches of them all, and each job collects what ended. True if anything changed. The
    caller decides whether to sleep before the next cycle, so jobs driven together (`collect`, an
    evaluation's stages) wait once per cycle, not once per job. `before_submit` sees each engine
    just before it submits (an evaluation sets its share of a common budget there)."""
    for engine in engines:
        if before_submit is not None:
            before_submit(engine)
        engine.submit_work()
    in_flight = {engine: engine.store.batches(engine.job.id, ["submitted"]) for engine in engines}
    remote_ids = [b.remote_id for batches in in_flight.values() for b in batches if b.remote_id]
    if not remote_ids:
        return False
    states = engines[0].call("poll", lambda: engines[0].provider.poll(remote_ids))
    changed = False
    for engine, batches in in_flight.items():
        if batches:
            changed |= engine.apply_poll(batches, states)
    return changed


class Engine:
    """Drives one job to the end (or to submission, with wait=False)."""

    def __init__(self, store: Store, provider: BatchProvider, job: Job, *, batch_size: int | None = None,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, poll: PollPolicy | None = None,
                 on_progress: Callable[[Progress], None] | None = None, max_cost: float | None = None,
                 prices: PriceBook | None = None, max_enqueued_tokens: int | None = None):
        self.store = store
        self.provider = provider
        self.job = job
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.poll = poll or PollPolicy()
        self.on_progress = on_progress
        self.files = store.dir / "batches"
        self._started = time.monotonic()
        # --max-cost: no new batch is submitted once spent + committed + its projected cost would pass it
        self.max_cost = max_cost
        self.prices = (prices or PriceBook(store_dir=store.dir)) if max_cost is not None else prices
        self.stopped: str | None = None
        self._cancel_sent = False  # this process has acted on the job's cancel request
        self._structured = store.has_structured(job.id)  # answers to check against a schema (structured.py)
        # --max-enqueued-tokens (else the job's recorded setting, else the provider's default limits)
        self.max_enqueued_tokens = max_enqueued_tokens or job.options.get("max_enqueued_tokens")
        self.waiting: str | None = None
        self._batch_tokens: dict[int, int] = {}  # estimated prompt tokens per batch, counted once

    # -- the loop ------------------------------------------------------------------------------

    def run(self, wait: bool = True) -> Progress:
        """Cycle until every batch is collected: reconcile, plan, submit, poll, collect.

        With wait=False one cycle runs (submitting what is new, collecting what has ended); if
        that leaves nothing to wait for, the job ends here too.
        Another process working on the same job makes this raise JobError at once.
        """
        with self.store.job_lock(self.job):
            reopen_recoverable(self.store, self.job)
            reask_job(self.store, self.provider, self.job, self.max_attempts)
            return self._run(wait)

    def _run(self, wait: bool) -> Progress:
        delay = self.poll.initial
        while True:
            try:
                changed = self._cycle()
            except AccountError as exc:  # every call would fail the same way: stop now, lose nothing
                self.stopped = (f"{exc}. Nothing more was sent; the job is saved: fix it and run the same "
                                "command again")
                with self.store.transaction():
                    self.store.log(self.job.id, "account_error", message=str(exc))
                break
            self._report()
            if not wait or not self._has_work():
                break
            if changed:
                delay = self.poll.initial
            else:
                self.poll.sleep(delay)
                delay = min(delay * self.poll.factor, self.poll.maximum)
        ended = (wait or not self._has_work()) and self.stopped is None
        if ended:
            self._finish()
        progress = self.progress(done=ended)
        progress.stopped = self.stopped
        if self.on_progress:
            self.on_progress(progress)
        return progress

    def call(self, action: str, call: Callable[[], T]) -> T:
        """One provider call, tried again while it fails transiently (network, 429, 5xx) with the
        policy's backoff, which honours Retry-After. The same for every provider: their SDKs'
        own retries are off. The store is consistent before every call, so giving up (after
        give_up_after failures in a row) loses nothing: the job resumes with the same command."""
        failures = 0
        while True:
            try:
                return call()
            except TransientError as exc:
                failures += 1
                with self.store.transaction():
                    self.store.log(self.job.id, "transient_error", call=action, failures=failures, message=str(exc))
                if failures >= self.poll.give_up_after:
                    raise UnreachableError(f"{exc} (failed {failures} times in a row; the job is saved: run the "
                                           "same command again to resume)") from None
                self.poll.sleep(self.poll.backoff(failures, exc.retry_after))

    def _has_work(self) -> bool:
        """Batches still open, or requests waiting to be sent (new, or back for another attempt)."""
        if self.stopped is not None:  # capped: only what is already sent is still awaited
            return bool(self.store.batches(self.job.id, ["creating", "submitted"]))
        return bool(self.store.batches(self.job.id, _OPEN_BATCH)) or (
            self._accepting_work() and self.store.has_pending(self.job.id))

    def _cycle(self) -> bool:
        self.submit_work()
        in_flight = self.store.batches(self.job.id, ["submitted"])
        return self._poll_and_collect(in_flight) if in_flight else False

    def submit_work(self) -> None:
        """A cycle up to polling: act on a cancel asked from another process, settle creates in
        doubt, plan and submit. (collect_jobs runs this for several jobs, then polls them together.)"""
        self._check_cancel()
        self._reconcile()
        if self._accepting_work():
            self._plan()
        self.waiting = None
        for batch in self.store.batches(self.job.id, ["planned"]):
            if self.stopped is not None or self._queue_full(batch) or self._over_budget(batch):
                break
            self._submit(batch)

    def _finish(self) -> None:
        if self.job.state not in ("running", "cancelling"):
            return
        if self.job.state == "running" and (reason := unfinished_reason(self.store, self.job)):
            self.stopped = reason  # not done: the next run sends those lines again
            with self.store.transaction():
                self.store.log(self.job.id, "unfinished", reason=reason)
            return
        final = "cancelled" if self.job.state == "cancelling" else "done"
        with self.store.transaction():
            self.store.set_job_state(self.job.id, final)
            self.store.log(self.job.id, final)
        self.job.state = JobState(final)

    def cancel(self, wait: bool = True) -> Progress:
        """Stop the job: unsent work is cancelled locally, remote batches are asked to cancel and
        their partial results are kept."""
        with self.store.job_lock(self.job):
            return self._cancel(wait)

    def _cancel(self, wait: bool) -> Progress:
        self._cancel_now()
        return self._run(wait)

    def _check_cancel(self) -> None:
        """`batchery cancel` from another process writes its request into the store (the job turns
        'cancelling') without the job lock: the process running the job acts on it here, once."""
        if not self._cancel_sent and (self.job.state == "cancelling"
                                      or self.store.job_state(self.job.id) == "cancelling"):
            self._cancel_now()

    def _cancel_now(self) -> None:
        """Unsent work is closed as cancelled and running remote batches are asked to cancel (each
        step repeats harmlessly, so a run that died half-way through a cancel finishes it)."""
        self._reconcile()  # a create in doubt is settled first, so it is either cancelled below or never sent
        with self.store.transaction():
            self.store.set_job_state(self.job.id, "cancelling")
            self.job.state = JobState.CANCELLING
            n = self.store.close_pending_items(self.job.id, "cancelled", "cancelled_by_user",
                                               "the job was cancelled before this request was sent")
            for batch in self.store.batches(self.job.id, ["planned"]):
                self.store.close_batch_items(batch.id, "cancelled", "cancelled_by_user",
                                             "the job was cancelled before this batch was sent")
                self.store.update_batch(batch.id, state="collected", remote_status="not_sent")
            self.store.log(self.job.id, "cancel_requested", unsent=n)
        for batch in self.store.batches(self.job.id, ["submitted"]):
            remote_id = batch.remote_id
            if remote_id is not None:  # a submitted batch has one
                self.call("cancel", lambda: self.provider.cancel(remote_id))  # noqa: B023 - called at once
        self._cancel_sent = True

    def progress(self, done: bool = False) -> Progress:
        all_batches = self.store.batches(self.job.id)
        batches, remote = tally_batches(all_batches)
        states = dict(Counter(self.provider.state_word(b.state, b.remote_status) for b in all_batches))
        return Progress(self.job.name, self.store.counts(self.job.id), batches, remote,
                        time.monotonic() - self._started, done, rows=self.job.n_rows, states=states,
                        waiting=self.waiting)

    def _report(self) -> None:
        if self.on_progress:
            self.on_progress(self.progress())

    def _accepting_work(self) -> bool:
        return self.job.state == "running"

    # -- steps ---------------------------------------------------------------------------------

    def _reconcile(self) -> None:
        """Batches whose create call may have been sent but whose answer was never recorded:
        find them by tag at the provider rather than create them again."""
        creating = self.store.batches(self.job.id, ["creating"])
        if not creating:
            return
        found = self.call("list batches", lambda: self.provider.find({b.tag for b in creating}))
        with self.store.transaction():
            for batch in creating:
                remote = found.get(batch.tag)
                if remote is not None:
                    self.store.update_batch(batch.id, state="submitted", remote_id=remote.remote_id,
                                            remote_status=remote.status)
                    self.store.log(self.job.id, "batch_recovered", batch=batch.id, remote=remote.remote_id)
                else:  # never reached the provider: it is safe to create it
                    self.store.update_batch(batch.id, state="planned")

    @gc_paused()
    def _plan(self) -> None:
        """Split pending requests into batch files within the provider's limits, one model per batch.

        Each batch is recorded, with its members, in one transaction after its file is written.
        """
        limits = self.provider.limits
        max_requests = min(limits.max_requests, self.batch_size or limits.max_requests)
        self.files.mkdir(mode=0o700, exist_ok=True)
        for model in self.store.pending_models(self.job.id):
            rows: list[tuple[int, str, bytes]] = []
            while True:
                # Lines a batch left out (cut by the token budget) start the next one: they are
                # read from the store once, however many batches the budget makes of them.
                if len(rows) < max_requests:
                    rows += self.store.pending_requests(self.job.id, model, max_requests - len(rows),
                                                        after=rows[-1][0] if rows else 0)
                if not rows:
                    break
                sizes = ((i, len(line) + 1) for i, (_, _, line) in enumerate(rows))  # + 1: the newline
                count = len(next(split(sizes, max_requests, limits.max_bytes)))
                budget = self._enqueued_budget(model)
                tokens = None  # counted here only when the bytes alone do not show the batch fits
                if budget is not None and sum(len(line) + 1 for _, _, line in rows[:count]) > budget:
                    from .tokens import fit_budget

                    count, tokens = fit_budget(self.provider, model, [line for _, _, line in rows[:count]], budget)
                tag = f"bb-{secrets.token_hex(8)}"
                path = self.files / f"{tag}.jsonl"
                with path.open("wb") as f:
                    for _, _, line in rows[:count]:
                        f.write(line)
                        f.write(b"\n")
                n_bytes = path.stat().st_size
                with self.store.transaction():
                    batch_id = self.store.insert_batch(self.job.id, tag, model, rows[count - 1][0], count, n_bytes)
                    self.store.log(self.job.id, "batch_planned", batch=batch_id, requests=count, bytes=n_bytes)
                if tokens is not None:  # _queue_full need not count them again
                    self._batch_tokens[batch_id] = tokens
                del rows[:count]

    # -- the enqueued-token budget -----------------------------------------------------------------

    def _enqueued_budget(self, model: str) -> int | None:
        """Estimated prompt tokens this model may have in open batches: --max-enqueued-tokens or the
        provider's default, lowered to the limit the provider reported in a token_limit_exceeded."""
        reported = (self.job.options.get("enqueued_limit") or {}).get(model)
        caps = [c for c in (self.max_enqueued_tokens or self.provider.limits.max_enqueued_tokens, reported) if c]
        return min(caps) if caps else None

    def _tokens_of(self, batch) -> int:
        if batch.id not in self._batch_tokens:
            self._batch_tokens[batch.id] = self._count(batch.model, self.store.batch_lines(batch.id))
        return self._batch_tokens[batch.id]

    def _count(self, model: str, lines: Iterable[bytes]) -> int:
        from .tokens import line_tokens

        return sum(line_tokens(self.provider, model, lines))

    def _queue_full(self, batch) -> bool:
        """Would this batch take the model's open batches past the enqueued-token budget? Then it
        waits (planned) until earlier ones finish; alone it is always sent."""
        budget = self._enqueued_budget(batch.model)
        if budget is None:
            return False
        open_batches = [b for b in self.store.batches(self.job.id, ["creating", "submitted"]) if b.model == batch.model]
        if not open_batches or sum(b.n_bytes for b in open_batches) + batch.n_bytes <= budget:
            return False  # a token is at least a byte of the line: no need to count
        in_use = sum(self._tokens_of(b) for b in open_batches)
        if in_use + self._tokens_of(batch) <= budget:
            return False
        self.waiting = f"waiting: {tokens_text(in_use)} of {tokens_text(budget)} enqueued tokens in use"
        return True

    def _lower_enqueued_budget(self, model: str, message: str | None) -> None:
        """The provider said the model's enqueued-token pool is full and gave its limit: keep to it."""
        limit = reported_enqueued_limit(message)
        known = (self.job.options.get("enqueued_limit") or {}).get(model)
        if limit is None or (known is not None and known <= limit):
            return
        self.job.options = {**self.job.options, "enqueued_limit": {
            **(self.job.options.get("enqueued_limit") or {}), model: limit}}
        self.store.set_job_options(self.job.id, self.job.options)
        self.store.log(self.job.id, "enqueued_limit", model=model, limit=limit)

    def _over_budget(self, batch) -> bool:
        """With --max-cost: would submitting this batch take the projected spend past the cap?
        If so, stop submitting (the batch stays planned, the job resumable) and say why."""
        if self.max_cost is None:
            return False
        assert self.prices is not None  # loaded whenever max_cost is set
        projected = batch_line_cost(self.prices, self.provider, batch.model, self.store.batch_lines(batch.id))
        next_cost = projected.batch  # None: the price is not known
        if next_cost is None:
            raise ConfigError(f"--max-cost cannot be enforced: {UNKNOWN} for {self.provider.name} model "
                              f"'{batch.model}'; add it to {PRICES_FILE} (or --prices FILE), or drop --max-cost")
        spent = total(actual_cost(self.prices, self.provider.name, self.store.usage_by_model(self.job.id)), batch=None)
        so_far = (spent or 0.0) + self.committed()
        if so_far + next_cost <= self.max_cost:
            return False
        self.stopped = (f"--max-cost ${self.max_cost:,.2f} reached: spent and committed ${so_far:,.4f}; the next "
                        f"batch ({batch.n_requests:,} requests, projected ${next_cost:,.4f}) would pass the cap, "
                        "so nothing more was submitted. The job is saved: run again with a higher --max-cost "
                        "(or none) to continue")
        with self.store.transaction():
            self.store.log(self.job.id, "max_cost_reached", max_cost=self.max_cost, spent=round(so_far, 6),
                           next_batch=batch.id, projected=round(next_cost, 6))
        return True

    def committed(self) -> float:
        """The projected cost of this job's batches sent and not yet collected (needs prices)."""
        assert self.prices is not None
        return sum(batch_line_cost(self.prices, self.provider, b.model, self.store.batch_lines(b.id)).batch
                   or 0.0 for b in self.store.batches(self.job.id, ["creating", "submitted"]))

    def _submit(self, batch) -> None:
        path = self.files / f"{batch.tag}.jsonl"
        if not path.exists():  # lost (or removed after an earlier create): rebuild it from the store
            self._write_batch_file(batch.id, path)
        input_file = batch.input_file or self.call("upload", lambda: self.provider.upload(path))
        with self.store.transaction():  # write-ahead: from here on a create may exist remotely
            self.store.update_batch(batch.id, input_file=input_file, state="creating")
        try:
            remote = self._create(batch, input_file)
        except UnreachableError:  # not an answer about this batch: it stays `creating`, reconciled next run
            raise
        except ProviderError as exc:  # refused outright (e.g. unknown model): its lines fail, the job goes on
            with self.store.transaction():
                self.store.close_batch_items(batch.id, FAILED, "batch_rejected", str(exc))
                self.store.update_batch(batch.id, state="collected", remote_status="rejected", error=str(exc))
                self.store.log(self.job.id, "batch_rejected", batch=batch.id, error=str(exc))
            return
        with self.store.transaction():
            self.store.update_batch(batch.id, state="submitted", remote_id=remote.remote_id,
                                    remote_status=remote.status)
            self.store.log(self.job.id, "batch_submitted", batch=batch.id, remote=remote.remote_id)
        path.unlink(missing_ok=True)

    def _create(self, batch, input_file: str) -> RemoteBatch:
        """Create the batch; a try that failed transiently may still have made it (its answer lost),
        so every later try first looks for it by tag. An AccountError leaves it `creating`: the next
        run reconciles it the same way."""
        tries = 0

        def attempt() -> RemoteBatch:
            nonlocal tries
            tries += 1
            if tries > 1:
                found = self.provider.find({batch.tag}).get(batch.tag)
                if found is not None:
                    with self.store.transaction():
                        self.store.log(self.job.id, "batch_recovered", batch=batch.id, remote=found.remote_id)
                    return found
            return self.provider.create(input_file, batch.model, batch.tag)

        return self.call("create", attempt)

    def _write_batch_file(self, batch_id: int, path: Path) -> None:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        with path.open("wb") as f:
            for line in self.store.batch_lines(batch_id):
                f.write(line + b"\n")

    def _poll_and_collect(self, in_flight: list) -> bool:
        return self.apply_poll(in_flight, self.call("poll", lambda: self.provider.poll([b.remote_id for b in in_flight])))

    def apply_poll(self, in_flight: list, states: dict[str, RemoteBatch]) -> bool:
        """Record what a poll said about these batches and collect those that ended. True if anything changed."""
        changed = False
        for batch in in_flight:
            remote = states[batch.remote_id]
            if remote.status != batch.remote_status:
                changed = True
                with self.store.transaction():
                    self.store.update_batch(batch.id, remote_status=remote.status)
            if remote.ended:
                # A download cut mid-way is fetched again whole: outcomes already stored are kept once.
                self.call("download", lambda: self._collect(batch, remote))  # noqa: B023 - called at once
                changed = True
        return changed

    @gc_paused()
    def _collect(self, batch, remote: RemoteBatch) -> None:
        """Store one outcome per returned line, then name what never came back."""
        members = self.store.batch_members(batch.id)
        size = len(members)
        # Answers to lines with a response_format are checked as they are read: one that does not
        # fit its schema is stored as `invalid` (reask_batch below asks it again).
        schemas = batch_schemas(self.store, batch.id) if self._structured else None
        invalid = 0
        chunk: list[tuple] = []
        strays = 0  # lines for requests this batch does not hold (or a second copy of one)
        all_succeeded = True  # every line stored here is an answer: nothing to retry
        # The provider's own counts say how many lines it returned: a download that brought fewer
        # (cut short on the way) is fetched again before the rest are called missing and re-sent.
        returned = remote.completed + remote.failed
        for _ in range(_DOWNLOADS if remote.error is None else 0):
            for outcome in self.provider.outcomes(remote):
                outcome = scrub(outcome)  # a provider's message may echo the key: never stored
                item = members.pop(outcome.custom_id, None)
                if item is None:
                    strays += 1
                    continue
                if schemas:
                    outcome = checked(outcome, schemas.get(item))
                    invalid += outcome.status == INVALID
                chunk.append((*outcome[1:], item))
                if outcome.status != SUCCEEDED:
                    all_succeeded = False
                if len(chunk) >= _CHUNK:
                    self._record(chunk)
                    chunk = []
            if not members or size - len(members) >= returned:
                break
            with self.store.transaction():
                self.store.log(self.job.id, "short_download", batch=batch.id, expected=returned,
                               received=size - len(members))
        if remote.error is not None:
            leftover, code, message = remote.leftover, remote.error_code or "batch_failed", redact(remote.error)
        elif remote.leftover == MISSING:
            leftover, code, message = MISSING, "missing", "the provider returned no line for this request"
        else:
            leftover, code = remote.leftover, f"batch_{remote.leftover}"
            message = f"the batch ended {remote.status} before this request ran"
        with self.store.transaction():
            if code == "token_limit_exceeded":
                self._lower_enqueued_budget(batch.model, remote.error)
            self._record(chunk, commit=False)
            # The answers are stored; those that did not fit (read now, or before a crash) are asked
            # again, each as a new request for the same line, while sends are left.
            reasked = (reask_batch(self.store, self.provider, self.job.id, batch.id, self.max_attempts)
                       if self._structured and self.job.state == "running" else 0)
            # The common case, every line back and answered, skips two passes over the batch's items.
            unanswered = self.store.add_leftover_outcomes(batch.id, leftover, code, message) if members else 0
            retried = 0 if all_succeeded and not members else self.store.requeue_retryable(
                batch.id, self.max_attempts, retryable_statuses(user_cancelled=self.job.state == "cancelling"),
                transient_codes(self.job.provider))
            self.store.finish_batch_items(batch.id)
            self.store.update_batch(batch.id, state="collected", remote_status=remote.status,
                                    output_file=remote.output_file, error_file=remote.error_file,
                                    error=redact(remote.error) if remote.error else None)
            self.store.log(self.job.id, "batch_collected", batch=batch.id, remote=remote.remote_id,
                           status=remote.status, unanswered=unanswered, leftover=leftover, strays=strays,
                           retried=retried, **({"invalid": invalid, "reasked": reasked} if invalid or reasked else {}))

    def _record(self, chunk: list[tuple], commit: bool = True) -> None:
        chunk.sort(key=lambda row: row[-1])  # item id order: the table is walked, not jumped
        if commit:
            with self.store.transaction():
                self.store.record_outcomes(chunk)
        else:
            self.store.record_outcomes(chunk)
