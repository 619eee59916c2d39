"""Acting on jobs already in the store, without their input files: collect, refresh, cancel, retry.

`collect_jobs` drives the engine's own steps for many jobs at once. Each cycle every job submits
what it has to (reconciles, plans, submits retries), then the open batches of all jobs on one
provider connection (provider + base URL) are polled together, with one call to the adapter's
`poll` (one walk of the provider's batch list), and each job collects what ended. A job that has
nothing left to wait for is marked done and its results file is written.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, cast

from .errors import BatcheryError, ConfigError, JobBusyError, JobError, ProviderError, TransientError
from .pricing import PriceBook, actual_cost, total
from .providers import provider_class
from .providers.base import BatchProvider
from .retry import DEFAULT_MAX_ATTEMPTS, retryable_statuses, transient_codes
from .states import RequestCounts, tally_batches
from .store import Job, Store

if TYPE_CHECKING:  # the engine is imported where a job is run: `status` never needs it
    from .engine import Engine, PollPolicy, Progress

OPEN = ("running", "cancelling")  # job states with work left
FINISHED = ("done", "cancelled")
# Builds the adapter for a job's connection: (provider, base URL) -> adapter (the key from the environment).
Connect = Callable[[str, "str | None"], BatchProvider]


@dataclass
class JobStatus(RequestCounts):
    """Where a job stands, as data: what `batchery.status` returns and what `batchery status`,
    `status --watch`, `eval status` and `collect` show (`report()` is their JSON). `note` says why
    it was not collected or asked about, when it was not."""

    job: str
    state: str  # running | cancelling | done | cancelled
    provider: str
    model: str | None
    lines: int
    requests: dict[str, int]  # distinct requests: pending / queued while open, then by outcome
    batches: dict[str, int]  # batches by local state (planned, creating, submitted, collected)
    remote: dict[str, int]  # batches by the provider's own status word
    cost_usd: float | None  # returned usage at its prices; None when a model's price is unknown
    results_file: str | None = None  # where the results file is (or will be) written
    note: str | None = None
    batch_states: dict[str, int] = field(default_factory=dict)  # batches in batchery's words (BatchWord)
    oldest_open_batch_seconds: float | None = None
    input_tokens: int = 0  # returned usage
    output_tokens: int = 0
    costs: list[dict] = field(default_factory=list)  # per model and mode: tokens, prices, USD
    detail: dict | None = None  # with detailed=True: attempts, failure reasons, each batch, recent events

    @property
    def open(self) -> bool:
        return self.state in OPEN

    @property
    def counts(self) -> dict[str, int]:  # type: ignore[override]
        return self.requests

    def report(self) -> dict:
        """The status as `batchery status --json` prints it."""
        report = {"job": self.job, "state": self.state, "provider": self.provider, "model": self.model,
                  "rows": self.lines, "requests": self.requests, "batches_by_state": self.batches,
                  "batch_states": self.batch_states, "oldest_open_batch_seconds": self.oldest_open_batch_seconds,
                  "cost": {"usd": self.cost_usd, "input_tokens": self.input_tokens,
                           "output_tokens": self.output_tokens, "models": self.costs}}
        return {**report, **(self.detail or {})}


def find_job(store: Store, name: str) -> Job:
    """The stored job called `name`; JobError naming the jobs there when there is none."""
    row = store.get_job(name)
    if row is None:
        known = ", ".join(j.name for j in store.list_jobs()) or "none"
        raise JobError(f"no job named '{name}' in {store.where} (jobs: {known})")
    return row


def job_status(store: Store, job: Job, book: PriceBook | None = None, note: str | None = None,
               detailed: bool = False) -> JobStatus:
    """Where `job` stands; `detailed` adds attempts, failure reasons, each batch and recent events."""
    stored = store.batches(job.id)
    batches, remote = tally_batches(stored)
    book = book or PriceBook(store_dir=store.dir)
    costs = actual_cost(book, job.provider, store.usage_by_model(job.id))
    word = provider_class(job.provider).state_word  # batchery's words for the provider's statuses
    open_since = [b.created_at for b in stored if b.state in ("planned", "creating", "submitted")]
    status = JobStatus(job.name, job.state, job.provider, job.model, job.n_rows, store.counts(job.id), batches,
                       remote, total(costs, batch=None), job.options.get("out"), note,
                       batch_states=dict(Counter(word(b.state, b.remote_status) for b in stored)),
                       oldest_open_batch_seconds=round(time.time() - min(open_since), 1) if open_since else None,
                       input_tokens=sum(c.input_tokens for c in costs), output_tokens=sum(c.output_tokens for c in costs),
                       costs=[c.as_dict() for c in costs])
    if detailed:
        status.detail = {
            "attempts": {str(k): v for k, v in sorted(store.attempts(job.id).items())},
            "failures": [{"status": s, "code": c, "example": m, "count": n}
                         for s, c, m, n in store.failure_reasons(job.id)],
            "batches": [{"id": b.id, "remote_id": b.remote_id, "state": b.state,
                         "status": word(b.state, b.remote_status), "remote_status": b.remote_status,
                         "requests": b.n_requests, "bytes": b.n_bytes, "error": b.error} for b in stored],
            "events": [{"at": datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds"), "kind": kind,
                        "detail": detail} for at, kind, detail in store.events(job.id)],
        }
    return status


def connection(job: Job) -> tuple[str, str | None]:
    """Jobs on the same connection share one poll per cycle."""
    return job.provider, job.options.get("base_url")


def unreachable(job: Job) -> str | None:
    """Why this job's batches cannot be followed from another command, if they cannot."""
    if job.options.get("emulate"):
        return ("it ran on an in-process emulator (--emulate) that stopped with its command; "
                "run the same command again")
    if job.options.get("mode") in ("live", "flex"):
        return f"it is a {job.options['mode']} job: run the same command again to send the rest"
    return None


# -- collect ---------------------------------------------------------------------------------------


def collect_jobs(store: Store, jobs: Iterable[Job], connect: Connect, *, wait: bool = False,
                 poll: PollPolicy | None = None, on_progress: Callable[[Progress], None] | None = None,
                 results_path: Callable[[Job], Path | None] = lambda job: None) -> list[JobStatus]:
    """Poll, download and finish these jobs: one cycle, or with wait=True until none is open.

    A job another process is running is left to it (and noted); so is one whose connection cannot
    be made (a missing key) or whose provider keeps failing. Each job this call finishes gets its
    results written to `results_path(job)`, if that names a file.
    """
    from .engine import PollPolicy, poll_together
    from .export import export  # not at the top: `status` writes no results

    poll = poll or PollPolicy()
    jobs = list(jobs)
    notes: dict[str, str] = {}
    written: dict[str, str] = {}
    with ExitStack() as stack:
        groups = _engines(store, jobs, connect, poll, on_progress, stack, notes)
        delay, failures = poll.initial, dict.fromkeys(groups, 0)
        while groups:
            changed = False
            for key, engines in list(groups.items()):
                try:
                    changed |= poll_together(engines)
                    failures[key] = 0
                except TransientError as exc:  # the store is consistent: try again next cycle
                    failures[key] += 1
                    with store.transaction():
                        for engine in engines:
                            store.log(engine.job.id, "transient_error", message=str(exc))
                    if failures[key] >= poll.give_up_after:
                        _drop(groups, key, notes, f"{exc} (failed {failures[key]} times in a row; the job is "
                                                  "saved: collect it again later)")
                        continue
                except (ProviderError, ConfigError) as exc:  # this connection is refused; others go on
                    _drop(groups, key, notes, str(exc))
                    continue
                for engine in list(engines):
                    engine._report()
                    if engine._has_work():
                        continue
                    engines.remove(engine)
                    if engine.stopped is not None:  # --max-cost: what was sent is in; the rest waits
                        notes[engine.job.name] = f"stopped: {engine.stopped}"
                        continue
                    engine._finish()
                    path = results_path(engine.job)
                    if path is not None:
                        export(store, engine.job.id, engine.job.provider, path)
                        written[engine.job.name] = str(path)
                if not engines:
                    del groups[key]
            if not wait:
                break
            if changed:
                delay = poll.initial
            elif groups:
                poll.sleep(delay)
                delay = min(delay * poll.factor, poll.maximum)
    book = PriceBook(store_dir=store.dir)
    statuses = []
    for job in jobs:
        status = job_status(store, cast(Job, store.get_job(job.name)), book, notes.get(job.name))
        status.results_file = written.get(job.name, status.results_file)
        statuses.append(status)
    return statuses


def _engines(store: Store, jobs: list[Job], connect: Connect, poll: PollPolicy,
             on_progress: Callable[[Progress], None] | None, stack: ExitStack,
             notes: dict[str, str]) -> dict[tuple[str, str | None], list[Engine]]:
    """One engine per open job we can take, grouped by connection; the job locks are held on `stack`."""
    from .engine import Engine

    groups: dict[tuple[str, str | None], list[Engine]] = {}
    adapters: dict[tuple[str, str | None], BatchProvider | str] = {}
    for job in jobs:
        if job.state not in OPEN:
            continue
        if (why := unreachable(job)) is not None:
            notes[job.name] = why
            continue
        try:
            stack.enter_context(store.job_lock(job))
        except JobBusyError as exc:
            notes[job.name] = f"{exc.args[0].split(';')[0]}; that process collects it"
            continue
        job = cast(Job, store.get_job(job.name))  # as it is now that we hold it
        if job.state not in OPEN:
            continue
        key = connection(job)
        if key not in adapters:
            try:
                adapters[key] = connect(*key)
            except BatcheryError as exc:  # e.g. the provider's key is not set
                adapters[key] = str(exc)
        adapter = adapters[key]
        if isinstance(adapter, str):
            notes[job.name] = adapter
            continue
        options = job.options
        groups.setdefault(key, []).append(Engine(
            store, adapter, job, batch_size=options.get("batch_size"),
            max_attempts=options.get("max_attempts", DEFAULT_MAX_ATTEMPTS), poll=poll, on_progress=on_progress,
            max_cost=options.get("max_cost")))
    return groups


def _drop(groups: dict, key: tuple, notes: dict[str, str], why: str) -> None:
    for engine in groups.pop(key):
        notes[engine.job.name] = why


# -- refresh ---------------------------------------------------------------------------------------


def refresh_jobs(store: Store, jobs: Iterable[Job], connect: Connect) -> dict[str, str]:
    """Ask the providers where the open batches of these jobs stand and record what they say,
    with one poll per connection. Nothing is downloaded and no lock is taken, so it works beside
    the process running a job (both record what the provider said). Returns a note per job that
    could not be asked."""
    notes: dict[str, str] = {}
    groups: dict[tuple[str, str | None], list] = {}
    for job in jobs:
        if job.state not in OPEN:
            continue
        batches = store.batches(job.id, ["submitted"])
        if not batches:
            continue
        if (why := unreachable(job)) is not None:
            notes[job.name] = why
            continue
        if provider_class(job.provider).polls_run_batches:  # asking would run a chunk: the store knows
            notes[job.name] = "its chunks run in the process running the job, which records each as it ends"
            continue
        groups.setdefault(connection(job), []).extend((job, b) for b in batches)
    for key, members in groups.items():
        try:
            states = connect(*key).poll([b.remote_id for _, b in members])
        except BatcheryError as exc:
            for job, _ in members:
                notes[job.name] = f"could not ask {key[0]}: {exc}"
            continue
        with store.transaction():
            for job, batch in members:
                remote = states[batch.remote_id]
                if remote.status != batch.remote_status:
                    store.update_batch(batch.id, remote_status=remote.status)
                    store.log(job.id, "remote_status", batch=batch.id, status=remote.status, by="refresh")
    return notes


# -- cancel ----------------------------------------------------------------------------------------


def cancel_job(store: Store, job: Job, connect: Connect, *, wait: bool = True, poll: PollPolicy | None = None,
               on_progress: Callable[[Progress], None] | None = None) -> Progress | None:
    """Cancel a job from any process. If another process is running it, the request is written
    into the store (the job turns 'cancelling'), that process cancels its remote batches at its
    next cycle and stops, and None is returned. Otherwise the cancel is carried out here; the
    provider is only reached (and its key only needed) when remote batches are open."""
    if job.state in FINISHED:
        raise JobError(f"job '{job.name}' has already ended ({job.state}): nothing to cancel")
    if job.state == "ingesting":  # half read: nothing was sent, and the next run reads it again
        raise JobError(f"job '{job.name}' was never fully read in, so nothing of it was sent: run the same "
                       "command again to read it, or use another --job name")
    with ExitStack() as stack:
        try:
            stack.enter_context(store.job_lock(job))
        except JobBusyError:
            with store.transaction():
                asked = store.request_cancel(job.id)
                if asked:
                    store.log(job.id, "cancel_requested", by="another process")
            if not asked:
                raise JobError(f"job '{job.name}' ended before the cancel arrived: nothing to cancel") from None
            return None
        job = cast(Job, store.get_job(job.name))
        if job.state in FINISHED:
            raise JobError(f"job '{job.name}' has already ended ({job.state}): nothing to cancel")
        remote = store.batches(job.id, ["creating", "submitted"])
        if remote and (why := unreachable(job)) is not None:
            raise JobError(f"job '{job.name}' cannot be cancelled from here: {why}")
        # Nothing remote: the engine never calls the provider, so none is built (no key needed).
        provider = connect(*connection(job)) if remote else cast(BatchProvider, None)
        from .engine import Engine

        return Engine(store, provider, job, poll=poll, on_progress=on_progress)._cancel(wait)


# -- retry -----------------------------------------------------------------------------------------


def retry_lines(store: Store, job: Job, *, include_cancelled: bool = False) -> list[int]:
    """What `batchery retry` sends again: every line that ended failed, expired or missing, and
    lines cancelled by the provider. In a job the user cancelled, its cancelled lines only with
    include_cancelled."""
    statuses: tuple[str, ...] = ("expired", "missing")
    if job.state != "cancelled" or include_cancelled:
        statuses += ("cancelled",)
    return store.reopenable(job.id, statuses, None)


def higher_attempts_lines(store: Store, job: Job, max_attempts: int) -> list[int]:
    """What `run` with a higher --max-attempts sends again in a finished job: lines the automatic
    retry policy would have retried had the limit been this high."""
    if job.state != "done":
        return []
    return store.reopenable(job.id, retryable_statuses(user_cancelled=False), transient_codes(job.provider), max_attempts)


def reopen_job(store: Store, job: Job, select: Callable[[Store, Job], list[int]], reason: str) -> int:
    """Give the finished lines `select` picks back to the job, to be sent again (their attempts are
    kept), and let the job run again. The caller holds the job's lock. Returns how many."""
    with store.transaction():
        job = cast(Job, store.get_job(job.name))
        if job.state == "cancelling":
            raise JobError(f"job '{job.name}' is being cancelled; retry it once it has ended")
        items = select(store, job)
        if items:
            store.reopen(items)
            store.set_job_state(job.id, "running")
            store.log(job.id, "reopened", lines=len(items), reason=reason)
    return len(items)
