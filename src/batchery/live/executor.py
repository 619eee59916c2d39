"""Live mode: send a job's pending requests one call each, under exact rate limits.

The store, keys, outcomes and exports are the batch engine's; only the way requests travel
differs. Pending items are read in input order; a fixed pool of workers sends them through the
adapter's async SDK client, paced by one RateLimiter. An answer is stored before anything else
happens to it: its worker commits it at once (one small transaction, no buffer, no timer) and
takes its next request only after that. So a crash loses at most the calls in flight (a second
run sends only what has no outcome), and a store that another process keeps busy makes the
workers wait, with a message, but loses nothing.

Per call, by the rule every batch call follows too (retry.classify, with the adapter's own codes):
a rate-limited answer (429) starts a shared cooldown for as long as the provider asked
(Retry-After or its equivalent; else jittered exponential backoff) and the request waits its turn
again; no answer, 408, 5xx and overload are retried with jittered backoff up to max_attempts
sends; any other answer (success or a refusal) is the request's outcome. A refused key (or no
permission, no quota) or a provider that stays unreachable stops sending at once: such lines are
failed with a recoverable code, the rest stay pending, the job is not done, and the next run sends
them all.

Flex (`--mode flex`, LivePolicy.tier): each call asks for the provider's flex tier (adapter.with_tier),
waits up to 15 minutes for its answer, and a 429 ("resource unavailable" is normal there) is backed
off, never final. Each answer is stored with the tier it says served it as its source (flex, or live
for a call the standard tier took), so `status` prices it at that tier's rates.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..engine import Progress, reopen_recoverable, unfinished_reason
from ..errors import ConfigError, JobError, StoreBusyError, TransientError
from ..pricing import PRICES_FILE, UNKNOWN, PriceBook, actual_cost, total
from ..providers.base import FAILED, BatchProvider, LiveResponse, Outcome
from ..retry import DEFAULT_MAX_ATTEMPTS, Failure, classify, codes_for
from ..states import JobState
from ..store import Job, Store
from ..structured import INVALID, checked, reask, reask_job
from ..tokens import CHARS_PER_TOKEN, DEFAULT_OUTPUT_TOKENS
from .http import HTTP_MODES, READ_TIMEOUT, FastHTTP
from .limiter import RateLimiter
from .signals import rate_limits, retry_after

_OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "maxOutputTokens")
_READ_AHEAD = 1_000  # pending items read from the store per query
_WRITE_WAIT = 0.02  # seconds one write attempt waits for another process's write lock ...
_WRITE_RETRY = 0.05  # ... and the pause between attempts, during which calls in flight go on
FLEX_TIMEOUT = 900.0  # seconds a flex call waits for its answer: OpenAI's flex guide raises the SDK's to 15 min
FLEX_MAX_BACKOFF = 300.0  # longest pause after a flex 429 that names no wait
_CANCEL_CHECK = 0.05  # seconds between two reads of the job's state for a cancel from another process


@dataclass
class LivePolicy:
    """How live calls are paced and retried. Clock and sleep are injectable so tests run in
    simulated time."""

    rpm: float | None = None
    tpm: float | None = None
    concurrency: int = 32
    max_attempts: int = DEFAULT_MAX_ATTEMPTS  # sends per request when the network or a 5xx fails it
    max_rate_limited: int | None = 50  # 429s one request may meet before it is recorded as failed (None: no end)
    backoff: float = 1.0  # first backoff in seconds, doubled per failure ...
    max_backoff: float = 60.0  # ... up to this
    progress_seconds: float = 0.5  # how often progress is reported
    store_wait: float = 300.0  # seconds answers wait for a busy store before the run stops with an error
    max_cost: float | None = None  # USD: no call starts once spent + in flight + its projection would pass it
    prices: PriceBook | None = None
    http: str = "fast"  # "fast": one small HTTP/1.1 client (live/http.py, h1.py); "sdk": the provider's official async SDK
    read_timeout: float = READ_TIMEOUT  # seconds a call waits for the next bytes of its answer
    tier: str | None = None  # a service tier every call asks for ("flex"), priced at its rates
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.http not in HTTP_MODES:
            raise ConfigError(f"--http must be one of: {', '.join(HTTP_MODES)} (got '{self.http}')")

    @property
    def mode(self) -> str:
        return self.tier or "live"

    @classmethod
    def flex(cls, **settings) -> LivePolicy:
        """Calls on the flex tier: answers may take minutes, and a 429 means flex capacity is busy for
        now, so it is waited out (backing off up to FLEX_MAX_BACKOFF), never made a request's outcome."""
        return cls(tier="flex", read_timeout=FLEX_TIMEOUT, max_rate_limited=None, max_backoff=FLEX_MAX_BACKOFF,
                   **settings)


@dataclass
class LiveStats:
    sent: int = 0  # calls made, retries included
    rate_limited: int = 0  # calls answered 429
    retried: int = 0  # calls repeated after a network error or 5xx
    in_flight: int = 0


class LiveRunner:
    """Runs one job's pending requests live, to the end."""

    def __init__(self, store: Store, provider: BatchProvider, job: Job, policy: LivePolicy | None = None,
                 on_progress: Callable[[Progress], None] | None = None) -> None:
        self.store, self.provider, self.job = store, provider, job
        self.policy = policy or LivePolicy()
        self.on_progress = on_progress
        self.stats = LiveStats()
        # Answers waiting for the store: ((status, ..., error_message, item id), (sends, item id),
        # the future their worker awaits until they are committed).
        self._unsaved: list[tuple[tuple, tuple[int, int], asyncio.Future]] = []
        self._writing = False  # a worker is writing (or waiting to write) the answers in _unsaved
        self._write_error: BaseException | None = None  # why writing stopped for good, if it did
        self._started = time.monotonic()
        self.stopped: str | None = None  # why calls stopped early (the --max-cost cap), if they did
        self.cancelled = False  # `batchery cancel` asked (from any process): no new call starts
        self._cancel_checked = -_CANCEL_CHECK  # when the store was last asked (time.monotonic)
        self._codes = codes_for(provider.name)
        self._spent = self._committed = 0.0
        self._structured = store.has_structured(job.id)  # answers to check against a schema (structured.py)
        if self.policy.read_timeout != READ_TIMEOUT:  # the SDK path waits as long as the fast path
            provider.live_timeout = self.policy.read_timeout
        # How each call travels: the fast client (adapters without a route fall back to their SDK) or the SDK.
        self._http = (FastHTTP(provider, connections=self.policy.concurrency, read_timeout=self.policy.read_timeout)
                      if self.policy.http == "fast" else None)
        self.send: Callable[[dict, str], Awaitable[LiveResponse]] = (
            self._http.send if self._http is not None else provider.send)

    def run(self) -> Progress:
        with self.store.job_lock(self.job):
            if self.store.batches(self.job.id, ["planned", "creating", "submitted"]):
                raise JobError(f"job '{self.job.name}' has batches in flight: finish it in batch mode (run "
                               "without --mode live), or cancel it, before sending the rest live")
            reopen_recoverable(self.store, self.job)
            reask_job(self.store, self.provider, self.job, self.policy.max_attempts)
            asyncio.run(self._run())
            if self.cancelled:  # answers that arrived are kept; what was never sent is cancelled
                with self.store.transaction():
                    self.store.close_pending_items(self.job.id, "cancelled", "cancelled_by_user",
                                                   "the job was cancelled before this request was sent")
                    self.store.set_job_state(self.job.id, "cancelled")
                    self.store.log(self.job.id, "cancelled", **self.stats.__dict__)
                self.job.state = JobState.CANCELLED
            if not self.store.has_pending(self.job.id) and self.job.state == "running":
                reason = unfinished_reason(self.store, self.job)  # lines a later run can fix: not done
                if reason is None:
                    with self.store.transaction():
                        self.store.set_job_state(self.job.id, "done")
                        self.store.log(self.job.id, "done", **self.stats.__dict__)
                    self.job.state = JobState.DONE
                elif self.stopped is None:
                    self.stopped = reason
            progress = self.progress(done=self.job.state == "done")
            progress.stopped = self.stopped
        if self.on_progress:
            self.on_progress(progress)
        return progress

    def _cancel_requested(self) -> bool:
        """A cancel written into the store by `batchery cancel` (any process): one indexed read every
        _CANCEL_CHECK seconds at most (a read per call would cost a tenth of a fast call)."""
        if not self.cancelled and (now := time.monotonic()) >= self._cancel_checked + _CANCEL_CHECK:
            self._cancel_checked = now
            self.cancelled = self.job.state == "cancelling" or self.store.job_state(self.job.id) == "cancelling"
        return self.cancelled

    def progress(self, done: bool = False) -> Progress:
        return Progress(self.job.name, self.store.counts(self.job.id), {}, {},
                        time.monotonic() - self._started, done, live=dict(self.stats.__dict__),
                        rows=self.job.n_rows)

    async def _run(self) -> None:
        policy = self.policy
        self.limiter = RateLimiter(policy.rpm, policy.tpm, clock=policy.clock, sleep=policy.sleep)
        if policy.max_cost is not None:
            policy.prices = policy.prices or PriceBook(store_dir=self.store.dir)
            self._spent = total(actual_cost(policy.prices, self.provider.name,
                                            self.store.usage_by_model(self.job.id)), batch=None) or 0.0
        queue: asyncio.Queue = asyncio.Queue(maxsize=policy.concurrency * 4)
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(policy.concurrency)]
        reporter = asyncio.create_task(self._report_periodically())
        feeder = asyncio.create_task(self._feed(queue, len(workers)))
        try:
            await asyncio.gather(feeder, *workers)  # a worker's error ends the run at once, feeder or not
        finally:
            reporter.cancel()
            for task in (feeder, *workers):
                task.cancel()
            if self._unsaved:  # interrupted between an answer and its commit: keep it all the same
                self._write(self._unsaved)
            if self._http is not None:
                await self._http.aclose()
            await self.provider.aclose()

    async def _feed(self, queue: asyncio.Queue, workers: int) -> None:
        after = 0
        while (self.stopped is None and not self._cancel_requested()
               and (rows := self.store.pending_after(self.job.id, after, _READ_AHEAD))):
            for row in rows:
                await queue.put(row)
            after = rows[-1][0]
        for _ in range(workers):
            await queue.put(None)

    async def _report_periodically(self) -> None:
        while self.on_progress:
            await asyncio.sleep(self.policy.progress_seconds)
            self.on_progress(self.progress())

    async def _keep(self, outcome: Outcome, sends: int, item: int) -> None:
        """Store the answer before this worker does anything else. In the common case that is one
        small transaction at once, with no await. While another process holds the store's write
        lock, one worker retries for everyone and the others wait with their answers in memory."""
        if self._write_error is not None:
            raise self._write_error
        stored = asyncio.get_running_loop().create_future()
        self._unsaved.append(((*outcome[1:], item, self._source(outcome)), (sends, item), stored))
        if not self._writing:
            self._writing = True
            try:
                # One turn of the loop first: answers that arrived in the same turn join this one's
                # transaction (a commit each costs more than a fast call), and their workers, like
                # this one, take nothing new before it commits.
                await asyncio.sleep(0)
                await self._write_unsaved()
            finally:
                self._writing = False
        await stored

    async def _write_unsaved(self) -> None:
        """Write every waiting answer, retrying a busy or failing store until policy.store_wait
        passes; then every waiting worker gets the error, so the run stops with it instead of
        losing answers silently."""
        clock = self.policy.clock
        busy_since: float | None = None
        told = False
        while self._unsaved:
            group = list(self._unsaved)
            try:
                self._write(group, wait=_WRITE_WAIT)
            except (StoreBusyError, sqlite3.OperationalError) as exc:
                busy_since = busy_since if busy_since is not None else clock()
                waited = clock() - busy_since
                if waited > self.policy.store_wait:
                    self._fail_waiting(self._gave_up(exc))
                    return
                if not told and waited >= 1.0:
                    told = True
                    why = "another batchery process is writing" if isinstance(exc, StoreBusyError) else exc
                    print(f"store busy ({why}); waiting... the answers received are kept until "
                          f"{self.store.where} can be written", file=sys.stderr, flush=True)
                await self.policy.sleep(_WRITE_RETRY)  # calls in flight go on meanwhile
                continue
            except Exception as exc:
                self._fail_waiting(exc)
                return
            del self._unsaved[:len(group)]
            for _, _, stored in group:
                if not stored.done():
                    stored.set_result(None)
        if told:
            print("store free again: the answers are written", file=sys.stderr, flush=True)

    def _write(self, group: list[tuple[tuple, tuple[int, int], asyncio.Future]], wait: float | None = None) -> None:
        rows = sorted((row for row, _, _ in group), key=lambda row: row[-2])  # by item
        with self.store.transaction(wait=wait):
            self.store.finish_live_items(rows, [sends for _, sends, _ in group])

    def _gave_up(self, exc: BaseException) -> StoreBusyError:
        return StoreBusyError(
            f"the store {self.store.where} could not be written for {self.policy.store_wait:g} s "
            f"({'another batchery process is writing' if isinstance(exc, StoreBusyError) else exc}); "
            f"{len(self._unsaved):,} answers received since could not be stored. The rest of the job is "
            "saved: run the same command again when the store is free")

    def _fail_waiting(self, exc: BaseException) -> None:
        """The writer stops: every waiting worker, and any that hands in an answer later, raises exc."""
        self._write_error = exc
        for _, _, stored in self._unsaved:
            if not stored.done():
                stored.set_exception(exc)
        self._unsaved.clear()

    async def _worker(self, queue: asyncio.Queue) -> None:
        while (row := await queue.get()) is not None:
            item, key, model, line = row
            while self.stopped is None and not self._cancel_requested():
                # (else over budget: the rest stay pending, for a run with a higher cap; or cancelled)
                self.stats.in_flight += 1
                try:
                    answer = await self._call(key, model, line)
                finally:
                    self.stats.in_flight -= 1
                if answer is None:
                    break
                outcome, sends = answer
                if self._structured:
                    outcome = checked(outcome, self.store.structured_schema(item))
                await self._keep(outcome, sends, item)
                # Stored: an answer that does not fit its schema is asked again at once, as a new request.
                if outcome.status != INVALID or (again := self._reask(item)) is None:
                    break
                key, line = again

    def _reask(self, item: int) -> tuple[str, bytes] | None:
        """The re-ask of an invalid answer just stored (key, provider line), if the line has sends left."""
        if self.stopped is not None or self._cancel_requested():
            return None  # the next run re-asks it (structured.reask_job)
        with self.store.transaction():
            made = reask(self.store, self.provider, self.job.id,
                         self.store.reaskable(self.job.id, self.policy.max_attempts, item=item))
        return (made[0][1], made[0][2]) if made else None

    async def _call(self, key: str, model: str, line: bytes) -> tuple[Outcome, int] | None:
        """One request to its outcome: (outcome, calls made); None when the budget stops it unsent."""
        policy = self.policy
        body = self.provider.live_body(line)
        if policy.tier is not None:
            body = self.provider.with_tier(body, policy.tier)
        prompt, output_cap = _estimate_tokens(line, body)
        estimate = prompt + output_cap
        projected = self._projected(model, prompt, output_cap)
        if projected is None:
            return None
        try:
            answer = await self._send(key, model, body, estimate, output_cap)
        finally:
            self._committed -= projected
        if policy.max_cost is not None:
            outcome = answer[0]
            self._spent += self._price(model).cost(outcome.input_tokens or 0, outcome.output_tokens or 0, False,
                                                   outcome.cached_tokens or 0, outcome.cache_write_tokens or 0,
                                                   tier=self._source(outcome))
        return answer

    def _source(self, outcome: Outcome) -> str:
        """How an answer was bought, stored as its source: live, or flex when a flex call's answer says
        the flex tier served it (or names no tier at all: it was asked for)."""
        if self.policy.tier is None:
            return "live"
        return "flex" if (self.provider.served_tier(outcome) or self.policy.tier) == "flex" else "live"

    def _price(self, model: str):
        price = self.policy.prices.price(self.provider.name, model)  # type: ignore[union-attr]
        if price is None:
            raise ConfigError(f"--max-cost cannot be enforced: {UNKNOWN} for {self.provider.name} model '{model}'; "
                              f"add it to {PRICES_FILE} (or --prices FILE), or drop --max-cost")
        return price

    def _projected(self, model: str, prompt: int, output_cap: int) -> float | None:
        """Reserve this call's projected live cost under --max-cost; None (and stop) if it would pass."""
        cap = self.policy.max_cost
        if cap is None:
            return 0.0
        if self.stopped is not None:
            return None
        projected = self._price(model).cost(prompt, output_cap, False, tier=self.policy.mode)
        so_far = self._spent + self._committed
        if so_far + projected > cap:
            self.stopped = (f"--max-cost ${cap:,.2f} reached: spent and in flight ${so_far:,.4f}; the next call "
                            f"(projected ${projected:,.6f}) would pass the cap, so nothing more was sent. The job is "
                            "saved: run again with a higher --max-cost (or none) to continue")
            return None
        self._committed += projected
        return projected

    async def _send(self, key: str, model: str, body: dict, estimate: int, output_cap: int) -> tuple[Outcome, int]:
        policy, limiter = self.policy, self.limiter
        codes = self._codes
        sends = failures = limited = 0
        while True:
            await limiter.acquire(estimate)
            sends += 1
            self.stats.sent += 1
            try:
                response = await self.send(body, model)
            except TransientError as exc:
                failures += 1
                if failures >= policy.max_attempts:
                    self._stop(f"{self.provider.name} could not be reached: {exc} (after {failures} tries)")
                    return _failed(key, "connection_error", f"{exc} (after {failures} tries)"), sends
                self.stats.retried += 1
                limiter.settle(estimate, 0)
                await policy.sleep(self._backoff(failures))
                continue
            limiter.observe(*rate_limits(response.headers))
            outcome = self.provider.live_outcome(key, response)
            kind = classify(response.status, outcome.error_code, codes) if outcome.status == FAILED else None
            if kind is Failure.ACCOUNT:
                # A refused key (or no permission, no quota): every call would fail alike.
                limiter.settle(estimate, 0)
                self._stop(f"{self.provider.name} refused the key or account ({response.status} "
                           f"{outcome.error_code}: {outcome.error_message})")
                code = outcome.error_code if outcome.error_code in codes.account else f"http_{response.status}"
                return outcome._replace(error_code=code), sends
            if kind is Failure.RATE_LIMITED:
                limited += 1
                self.stats.rate_limited += 1
                limiter.settle(estimate, 0)
                wait = retry_after(response.headers, response.body)
                limiter.cool_down((wait if wait is not None else self._backoff(limited))
                                  * (1 + 0.1 * policy.rng.random()))
                if policy.max_rate_limited is not None and limited >= policy.max_rate_limited:
                    return _failed(key, "rate_limited", f"answered 429 {limited} times in a row"), sends
                continue
            if kind is Failure.TRANSIENT:
                failures += 1
                if failures < policy.max_attempts:
                    self.stats.retried += 1
                    limiter.settle(estimate, 0)
                    await policy.sleep(self._backoff(failures))
                    continue
            # The provider counts the output cap when the call starts (OpenAI documents it), so only
            # the prompt estimate is corrected by what the response reports.
            limiter.settle(estimate, None if outcome.input_tokens is None else outcome.input_tokens + output_cap)
            return outcome, sends

    def _stop(self, why: str) -> None:
        """Stop sending: calls in flight finish, what is unsent stays pending for the next run."""
        if self.stopped is None:
            self.stopped = (f"{why}. Nothing more was sent; the job is saved: fix the cause (the API key, "
                            "--base-url, quota or network) and run the same command again")

    def _backoff(self, failures: int) -> float:
        """Full jitter: a random wait up to an exponentially growing cap, so retries spread out."""
        cap = min(self.policy.max_backoff, self.policy.backoff * 2 ** (failures - 1))
        return cap * (0.5 + 0.5 * self.policy.rng.random())


def _estimate_tokens(line: bytes, body: dict) -> tuple[int, int]:
    """What the provider will count against TPM before answering: (prompt, output cap). The line's
    size overestimates the prompt a little, which is the safe side, and costs nothing to compute."""
    config = got if isinstance(got := body.get("generationConfig"), dict) else body
    output = next((config[f] for f in _OUTPUT_FIELDS if isinstance(config.get(f), int)), DEFAULT_OUTPUT_TOKENS)
    return len(line) // CHARS_PER_TOKEN, output


def _failed(key: str, code: str, message: str) -> Outcome:
    return Outcome.failed(key, code, message)
