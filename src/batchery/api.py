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
from .errors import ConfigError, InputError, JobError
from .export import Result, export, iter_results
from .inputs import check_file, iter_objects, read_requests
from .live import LivePolicy, LiveRunner
from .paths import load_env
from .pricing import PriceBook
from .providers import EMULATOR_ORIGIN, get_provider, provider_class
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
        adapter = get_provider(conn.provider, base_url=provider_class(conn.provider).emulated_url(emulator),
                               api_key="emulator")
        adapter.origin = EMULATOR_ORIGIN
        yield adapter, EMULATOR_POLL


def run_file(path: Path, conn: Connection, model: str | None, *, job: str | None = None,
             store: Store, batch_size: int | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
             wait: bool = True,
             poll: PollPolicy | None = None, on_progress: Callable[[Progress], None] | None = None,
             raw: bool = False, max_cost: float | None = None, prices: PriceBook | None = None,
             live: LivePolicy | None = None, no_cache: bool = False,
             remember: dict | None = None,
             announce: Callable[[str], None] | None = None) -> tuple[str, Progress]:
    """Run (or resume) the job for a request file; live (a LivePolicy given) or through the Batch
    API. Returns (job name, final progress). `remember`: settings kept in the job's options for
    commands that continue it without the input file (collect, retry), such as its results file.
    `announce` is told of answers reused from other jobs."""
    name = job or path.stem
    check_file(path)  # before a key is asked for or an emulator started
    with provider_session(conn) as (adapter, emulator_poll):
        _check_mode(adapter, live)
        fingerprint = file_fingerprint(path, conn.provider, model, raw)
        job_row = open_job(store, name, adapter, conn, live, model, read_requests(path), fingerprint, raw=raw,
                           no_cache=no_cache, max_attempts=max_attempts, batch_size=batch_size, max_cost=max_cost,
                           source_name=str(path), announce=announce, **(remember or {}))
        return name, drive(store, adapter, job_row, live=live, batch_size=batch_size, max_attempts=max_attempts,
                            wait=wait, poll=poll or emulator_poll, on_progress=on_progress, max_cost=max_cost,
                            prices=prices)


# Options a run records about how it ran (replaced as a whole when the job is run again).
_RUN_OPTIONS = ("base_url", "emulate", "out", "mode", "rpm", "tpm", "concurrency", "max_attempts", "batch_size",
                "max_cost", "max_enqueued_tokens")


def job_options(conn: Connection, live: LivePolicy | None, **settings: Any) -> dict:
    """What `collect`, `status --refresh`, `cancel` and `retry` need to continue a job without its
    input file: where its provider is, how it ran, where its results go. Never the key."""
    options = {"base_url": conn.base_url, "emulate": conn.emulate or None, **settings}
    if live is not None:
        options.update(mode=live.mode, rpm=live.rpm, tpm=live.tpm, concurrency=live.concurrency)
    return {k: v for k, v in options.items() if v is not None}


def open_job(store: Store, name: str, adapter: Any, conn: Connection, live: LivePolicy | None, model: str | None,
             source: Iterable[tuple[str, Any]], fingerprint: str, *, raw: bool, no_cache: bool, max_attempts: int,
             batch_size: int | None, max_cost: float | None, source_name: str = "the input",
             announce: Callable[[str], None] | None = None, **remember: Any) -> Any:
    """Create the job, or resume it recording this run's settings (see job_options)."""
    options = job_options(conn, live, max_attempts=max_attempts, batch_size=batch_size, max_cost=max_cost,
                          **remember)
    job_row, resumed = prepare_job(store, name, adapter, model, source, fingerprint, options, raw,
                                   source_name=source_name, reuse=not no_cache, announce=announce)
    return _resume_settings(store, job_row, options, max_attempts) if resumed else job_row


def _resume_settings(store: Store, job_row: Any, options: dict, max_attempts: int) -> Any:
    """A resumed job records this run's settings, and a finished one reopens the lines a higher
    --max-attempts allows to be sent again."""
    from .control import higher_attempts_lines, reopen_job

    kept = {k: v for k, v in job_row.options.items() if k not in _RUN_OPTIONS}
    with store.job_lock(job_row):  # another process running the job stops this run here, changing nothing
        with store.transaction():
            store.set_job_options(job_row.id, {**kept, **options})
        reopen_job(store, job_row, lambda st, j: higher_attempts_lines(st, j, max_attempts),
                   f"--max-attempts {max_attempts}")
    return store.get_job(job_row.name)


def _check_mode(adapter: Any, live: LivePolicy | None) -> None:
    if live is None and not adapter.has_batch_api:
        raise ConfigError(f"{adapter.name} has no Batch API: run it with --mode live")
    if live is not None and live.tier is not None and not adapter.flex_tier:
        raise ConfigError(f"{adapter.name} has no flex tier: --mode flex is for openai and gemini")


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
    rpm/tpm (mode="live"; mode="flex": on the provider's flex tier), and return one Result per
    request, in order.

    Calling it again with the same requests (or the same `job` name) resumes instead of resending;
    answers already in the store from either mode are reused unless no_cache=True.
    With raw=True each request is a line in the provider's own batch format, sent as it is.
    It blocks until the job ends; called where an event loop is running (a notebook cell), it runs
    in a worker thread, since live mode needs a loop of its own; from async code, `arun` does not block.
    Keys come from the arguments, the environment or a .env file in the working directory, as for the CLI.
    """
    kwargs = {k: v for k, v in locals().items() if k != "requests"}  # the parameters, passed on as they are
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop here: the usual case
        return _run(requests, **kwargs)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batchery-run") as pool:
        return pool.submit(_run, list(requests), **kwargs).result()


def _run(requests: Iterable[dict], *, provider: str, model: str | None, job: str | None, store: str | Path | None,
         base_url: str | None, api_key: str | None, emulate: bool, batch_size: int | None, max_attempts: int,
         poll_interval: float | None, raw: bool, on_progress: Callable[[Progress], None] | None, mode: str,
         rpm: float | None, tpm: float | None, concurrency: int, max_cost: float | None,
         no_cache: bool) -> list[Result]:
    load_env()
    live = live_policy(mode, rpm, tpm, concurrency)
    items = list(requests)
    fingerprint = _fingerprint(items, provider, model, raw)
    name = job or f"api-{fingerprint[:12]}"
    poll = PollPolicy(initial=poll_interval) if poll_interval is not None else None
    conn = Connection(provider, base_url, api_key, emulate)
    with Store(store) as st, provider_session(conn) as (adapter, emulator_poll):
        _check_mode(adapter, live)
        job_row = open_job(st, name, adapter, conn, live, model, iter_objects(items), fingerprint, raw=raw,
                           no_cache=no_cache, max_attempts=max_attempts, batch_size=batch_size, max_cost=max_cost)
        drive(st, adapter, job_row, live=live, batch_size=batch_size, max_attempts=max_attempts,
               poll=poll or emulator_poll, on_progress=on_progress, max_cost=max_cost,
               prices=PriceBook(store_dir=st.dir) if max_cost is not None else None)
        return list(iter_results(st, job_row.id, job_row.provider))


def _fingerprint(items: list[dict], provider: str, model: str | None, raw: bool) -> str:
    digest = hashlib.sha256(f"{provider}\0{model}\0{raw}\0".encode())
    for i, obj in enumerate(items):
        try:
            digest.update(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS, default=str))
        except TypeError as exc:  # an integer past 64 bits, a non-string key, ...
            raise InputError(f"request[{i}]: cannot be written as JSON ({exc})") from None
    return digest.hexdigest()


def submit(requests: Iterable[dict], *, provider: str = "openai", model: str | None = None,
           job: str | None = None, store: str | Path | None = None, base_url: str | None = None,
           api_key: str | None = None, batch_size: int | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
           raw: bool = False, max_cost: float | None = None, no_cache: bool = False,
           out: str | Path | None = None) -> str:
    """Submit requests through the provider's Batch API and return the job's name without waiting.

    Follow it with `status(name, refresh=True)` and finish it with `collect(name)` (or `batchery
    collect`), from this process or any other, later. With `out`, the results file is written when
    the job finishes, whoever finishes it. Submitting the same requests again resumes the job.
    """
    load_env()
    items = list(requests)
    fingerprint = _fingerprint(items, provider, model, raw)
    name = job or f"api-{fingerprint[:12]}"
    conn = Connection(provider, base_url, api_key)
    with Store(store) as st:
        adapter = get_provider(provider, base_url=base_url, api_key=api_key)
        _check_mode(adapter, None)
        job_row = open_job(st, name, adapter, conn, None, model, iter_objects(items), fingerprint, raw=raw,
                           no_cache=no_cache, max_attempts=max_attempts, batch_size=batch_size, max_cost=max_cost,
                           out=str(Path(out).absolute()) if out is not None else None)
        final = drive(st, adapter, job_row, live=None, max_attempts=max_attempts, on_progress=None, wait=False,
                      batch_size=batch_size, max_cost=max_cost,
                      prices=PriceBook(store_dir=st.dir) if max_cost is not None else None)
        if final.done and out is not None:  # every answer was already in the store
            export(st, job_row.id, job_row.provider, out)
    return name


def collect(job: str | None = None, *, store: str | Path | None = None, wait: bool = False,
            poll_interval: float | None = None, api_keys: dict[str, str] | None = None) -> Any:
    """Poll the providers for one job (or every open job), download what has finished and mark
    finished jobs done, writing their results file if they have one (`submit(out=...)`, or `run`'s
    --out or default name). wait=True keeps going until none is open. Returns the JobStatus of the
    job, or a list of them. Keys come from the environment (or `.env`), or `api_keys` by provider."""
    from .control import collect_jobs

    load_env()

    def connect(provider: str, base_url: str | None) -> Any:
        return get_provider(provider, base_url=base_url, api_key=(api_keys or {}).get(provider))

    with Store(store) as st:
        jobs = [_stored_job(st, job)] if job is not None else st.list_jobs()
        poll = PollPolicy(initial=poll_interval) if poll_interval is not None else None
        statuses = collect_jobs(st, jobs, connect, wait=wait, poll=poll,
                                results_path=lambda j: Path(j.options["out"]) if j.options.get("out") else None)
    return statuses[0] if job is not None else statuses


def status(job: str | None = None, *, store: str | Path | None = None, refresh: bool = False,
           api_keys: dict[str, str] | None = None) -> Any:
    """Where one job (or every job) stands, as JobStatus data. refresh=True asks the providers about
    open batches first (one call per provider) and records their answer; nothing is downloaded."""
    from .control import job_status, refresh_jobs

    with Store(store) as st:
        jobs = [_stored_job(st, job)] if job is not None else st.list_jobs()
        notes: dict[str, str] = {}
        if refresh:
            load_env()
            notes = refresh_jobs(st, jobs, lambda provider, base_url: get_provider(
                provider, base_url=base_url, api_key=(api_keys or {}).get(provider)))
        book = PriceBook(store_dir=st.dir)
        statuses = [job_status(st, _stored_job(st, j.name), book, notes.get(j.name)) for j in jobs]
    return statuses[0] if job is not None else statuses


def _stored_job(st: Store, name: str) -> Any:
    row = st.get_job(name)
    if row is None:
        raise JobError(f"no job named '{name}' in {st.where}")
    return row


def live_policy(mode: str, rpm: float | None, tpm: float | None, concurrency: int,
                http: str = "fast") -> LivePolicy | None:
    """The live policy for mode "live" or "flex", None for "batch"; anything else is a clear error."""
    if mode not in ("batch", "live", "flex"):
        raise ConfigError(f"mode must be 'batch', 'live' or 'flex', not '{mode}'")
    if mode == "batch":
        if rpm is not None or tpm is not None:
            raise ConfigError("--rpm/--tpm pace live calls: add --mode live (batch jobs are not rate limited)")
        if http != "fast":
            raise ConfigError("--http chooses how live calls travel: add --mode live")
        return None
    if mode == "flex":
        return LivePolicy.flex(rpm=rpm, tpm=tpm, concurrency=concurrency, http=http)
    return LivePolicy(rpm=rpm, tpm=tpm, concurrency=concurrency, http=http)


async def arun(requests: Iterable[dict], **kwargs: Any) -> list[Result]:
    """`run` for async code: the blocking work happens in a worker thread, so a running event
    loop (Jupyter's, for one) keeps running."""
    return await asyncio.to_thread(run, list(requests), **kwargs)


def results(job: str, *, store: str | Path | None = None) -> list[Result]:
    """The results of a job already in the store, in input order (pending lines say so)."""
    with Store(store) as st:
        job_row = st.get_job(job)
        if job_row is None:
            raise JobError(f"no job named '{job}' in {st.where}")
        return list(iter_results(st, job_row.id, job_row.provider))


def to_pandas(job: str, *, store: str | Path | None = None) -> Any:
    """A stored job's results as a pandas DataFrame: one row per input line, in input order.

    The columns are those of `batchery results JOB --format parquet`: id, custom_id, status, text,
    the usage counts (input_tokens, output_tokens, cached_tokens, reasoning_tokens; nullable Int64),
    error_code, error_message, attempts, provider, model, batch_id, and `metadata` and `response`
    as JSON text (`pd.json_normalize(df.metadata.map(json.loads, na_action="ignore").tolist())` spreads
    dict metadata into columns). Strings are pandas' nullable "string" dtype, so a missing value is
    <NA> in every column: the frame `pd.read_parquet(path, dtype_backend="numpy_nullable")` reads
    from the Parquet file."""
    from .columnar import pandas
    from .export import INT_COLUMNS, TABLE_COLUMNS, flat_rows

    pd = pandas()
    columns: list[list] = [[] for _ in TABLE_COLUMNS]
    with Store(store) as st:
        job_row = _stored_job(st, job)
        for row in flat_rows(st, job_row.id, job_row.provider):
            for column, value in zip(columns, row):
                column.append(value)
    return pd.DataFrame({name: pd.array(values, dtype="Int64" if name in INT_COLUMNS else "string")
                         for name, values in zip(TABLE_COLUMNS, columns)})
