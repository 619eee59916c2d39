"""The Python API and the plumbing the CLI shares with it: open the store, build the provider
(or start an in-process emulator), create or resume the job, drive the engine."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .engine import Engine, PollPolicy, Progress, file_fingerprint, prepare_job
from .errors import ConfigError, JobError
from .inputs import iter_objects, read_requests
from .live import LivePolicy, LiveRunner
from .pricing import PriceBook
from .providers import get_provider
from .export import Result, iter_results
from .retry import DEFAULT_MAX_ATTEMPTS
from .store import Store

# The emulator answers at once, so polling it every 50 ms costs nothing and keeps demos snappy.
EMULATOR_POLL = PollPolicy(initial=0.05, maximum=0.5)


@dataclass
class Connection:
    """Where a job's provider calls go. Never stored: the key stays in memory only."""

    provider: str
    base_url: str | None = None
    api_key: str | None = None
    emulate: bool = False


@contextmanager
def provider_session(conn: Connection) -> Iterator[tuple[Any, PollPolicy | None]]:
    """Yield (adapter, poll policy override); with emulate=True an emulator runs for the duration."""
    if not conn.emulate:
        yield get_provider(conn.provider, base_url=conn.base_url, api_key=conn.api_key), None
        return
    from .emulator import Emulator

    with Emulator() as emulator:
        service = conn.provider if conn.provider in emulator.SERVICES else "openai"  # openai-compatible
        adapter = get_provider(conn.provider, base_url=emulator.base_url(service), api_key="emulator")
        yield adapter, EMULATOR_POLL


def run_file(path: Path, conn: Connection, model: str | None, *, job: str | None = None,
             store: Store, batch_size: int | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
             wait: bool = True,
             poll: PollPolicy | None = None, on_progress: Callable[[Progress], None] | None = None,
             raw: bool = False, max_cost: float | None = None, prices: PriceBook | None = None,
             live: LivePolicy | None = None, no_cache: bool = False) -> tuple[str, Progress]:
    """Run (or resume) the job for a request file; live (a LivePolicy given) or through the Batch
    API. Returns (job name, final progress)."""
    name = job or path.stem
    with provider_session(conn) as (adapter, emulator_poll):
        _check_mode(adapter, live)
        fingerprint = file_fingerprint(path, conn.provider, model, raw)
        options = {"base_url": conn.base_url} if conn.base_url else {}
        job_row, _ = prepare_job(store, name, adapter, model, read_requests(path), fingerprint, options, raw,
                                 source_name=str(path), reuse=not no_cache)
        return name, drive(store, adapter, job_row, live=live, batch_size=batch_size, max_attempts=max_attempts,
                            wait=wait, poll=poll or emulator_poll, on_progress=on_progress, max_cost=max_cost,
                            prices=prices)


def _check_mode(adapter: Any, live: LivePolicy | None) -> None:
    if live is None and not adapter.has_batch_api:
        raise ConfigError(f"{adapter.name} has no Batch API: run it with --mode live")


def drive(store: Store, adapter: Any, job_row: Any, *, live: LivePolicy | None, max_attempts: int,
           on_progress: Callable[[Progress], None] | None, wait: bool = True, **batch: Any) -> Progress:
    """Send the job's pending requests live or as batches; the store and outcomes are the same."""
    if live is not None:
        live.max_attempts = max_attempts
        live.max_cost, live.prices = batch.get("max_cost"), batch.get("prices")
        return LiveRunner(store, adapter, job_row, live, on_progress=on_progress).run()
    return Engine(store, adapter, job_row, max_attempts=max_attempts, on_progress=on_progress, **batch).run(wait=wait)


def run(requests: Iterable[dict], *, provider: str = "openai", model: str | None = None,
        job: str | None = None, store: str | Path | None = None, base_url: str | None = None,
        api_key: str | None = None, emulate: bool = False, batch_size: int | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS, poll_interval: float | None = None, raw: bool = False,
        on_progress: Callable[[Progress], None] | None = None, mode: str = "batch",
        rpm: float | None = None, tpm: float | None = None, concurrency: int = 32,
        max_cost: float | None = None, no_cache: bool = False) -> list[Result]:
    """Run requests through a provider's Batch API (mode="batch") or live calls paced under
    rpm/tpm (mode="live"), and return one Result per request, in order.

    Calling it again with the same requests (or the same `job` name) resumes instead of resending;
    answers already in the store from either mode are reused unless no_cache=True.
    With raw=True each request is a line in the provider's own batch format, sent as it is.
    It blocks until the job ends; from async code (a notebook), use `arun`.
    """
    live = live_policy(mode, rpm, tpm, concurrency)
    items = list(requests)
    digest = hashlib.sha256(f"{provider}\0{model}\0{raw}\0".encode())
    for obj in items:
        digest.update(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS, default=str))
    fingerprint = digest.hexdigest()
    name = job or f"api-{fingerprint[:12]}"
    poll = PollPolicy(initial=poll_interval) if poll_interval is not None else None
    conn = Connection(provider, base_url, api_key, emulate)
    with Store(store) as st, provider_session(conn) as (adapter, emulator_poll):
        _check_mode(adapter, live)
        job_row, _ = prepare_job(st, name, adapter, model, iter_objects(items), fingerprint, raw=raw,
                                 reuse=not no_cache)
        drive(st, adapter, job_row, live=live, batch_size=batch_size, max_attempts=max_attempts,
               poll=poll or emulator_poll, on_progress=on_progress, max_cost=max_cost,
               prices=PriceBook(store_dir=st.dir) if max_cost is not None else None)
        return list(iter_results(st, job_row.id, job_row.provider))


def live_policy(mode: str, rpm: float | None, tpm: float | None, concurrency: int) -> LivePolicy | None:
    """The live policy for mode "live", None for "batch"; anything else is a clear error."""
    if mode not in ("batch", "live"):
        raise ConfigError(f"mode must be 'batch' or 'live', not '{mode}'")
    if mode == "batch":
        if rpm is not None or tpm is not None:
            raise ConfigError("--rpm/--tpm pace live calls: add --mode live (batch jobs are not rate limited)")
        return None
    return LivePolicy(rpm=rpm, tpm=tpm, concurrency=concurrency)


async def arun(requests: Iterable[dict], **kwargs: Any) -> list[Result]:
    """`run` for async code: the blocking work happens in a worker thread, so a running event
    loop (Jupyter's, for one) keeps running."""
    return await asyncio.to_thread(run, list(requests), **kwargs)


def results(job: str, *, store: str | Path | None = None) -> list[Result]:
    """The results of a job already in the store, in input order (pending lines say so)."""
    with Store(store) as st:
        job_row = st.get_job(job)
        if job_row is None:
            raise JobError(f"no job named '{job}' in {st.dir}")
        return list(iter_results(st, job_row.id, job_row.provider))
