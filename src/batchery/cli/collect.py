"""Commands that continue jobs from the store, without their input files: collect and retry
(and the provider refresh behind `status --refresh`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from ..paths import load_env
from .options import StoreOpt


def _connect(provider: str, base_url: str | None) -> Any:
    from ..providers import get_provider

    return get_provider(provider, base_url=base_url)


def results_path(job: Any) -> Path:
    """Where a job's results go: its run's --out (or default name, remembered as an absolute path),
    else <job>.results.jsonl here."""
    return Path(job.options.get("out") or f"{job.name}.results.jsonl")


def refresh_store(st: Any, jobs: list) -> list:
    """`status --refresh`: ask the providers about the open batches of these jobs and record it.
    Returns the jobs as stored now; a job that could not be asked is named on stderr."""
    from ..control import refresh_jobs

    load_env()
    for name, note in refresh_jobs(st, jobs, _connect).items():
        print(f"{name}: not refreshed: {note}", file=sys.stderr)
    return [st.get_job(j.name) for j in jobs]


def collect(
    jobs: list[str] | None = typer.Argument(None, help="Jobs to collect."),
    all_jobs: bool = typer.Option(False, "--all", help="Every open job in the store."),
    wait: bool = typer.Option(False, "--wait", help="Keep polling until every job has ended (one progress view)."),
    as_json: bool = typer.Option(False, "--json", help="Print each job's status as JSON."),
    store: Path | None = StoreOpt,
) -> None:
    """Finish jobs left running (--no-wait): poll, download, mark done, write their results files.

    Works from any folder and without the input files. One list call per provider and cycle,
    whatever the number of batches; retries are sent as `run` would. Each finished job's results go
    to its run's --out, else <job>.results.jsonl. Exit status 2 if a job could not be followed
    (the reason is printed)."""
    import dataclasses

    import orjson

    from ..control import OPEN, collect_jobs, find_job
    from ..errors import ConfigError
    from ..export import export
    from ..store import Store
    from .progress import make_progress

    if not jobs and not all_jobs:
        raise ConfigError("name the jobs to collect, or pass --all for every open job")
    load_env()
    with Store(store) as st:
        named = [find_job(st, name) for name in jobs or []]
        rows = named + [j for j in st.list_jobs() if all_jobs and j.state in OPEN and j.name not in (jobs or [])]
        for row in named:
            if row.state not in OPEN and not results_path(row).exists():  # ended elsewhere: its file is due
                export(st, row.id, row.provider, results_path(row))
        progress = make_progress()
        try:
            statuses = collect_jobs(st, rows, _connect, wait=wait, on_progress=progress, results_path=results_path)
        finally:
            progress.close()
    if as_json:
        sys.stdout.buffer.write(orjson.dumps([dataclasses.asdict(s) for s in statuses], option=orjson.OPT_INDENT_2)
                                + b"\n")
    elif not statuses:
        print("no open jobs to collect", file=sys.stderr)
    for s in statuses:
        if as_json:
            break
        counts = ", ".join(f"{v:,} {k}" for k, v in sorted(s.requests.items()))
        if s.note:
            print(f"job '{s.job}': not collected: {s.note}", file=sys.stderr)
        elif s.open:
            remote = ", ".join(f"{n} {state}" for state, n in sorted(s.remote.items())) or "none"
            print(f"job '{s.job}': {s.state}, {s.finished:,}/{s.total:,} requests done ({counts}); batches: {remote}",
                  file=sys.stderr)
        else:
            print(f"job '{s.job}': {s.state} ({counts}) -> {s.results_file or f'{s.job}.results.jsonl'}", file=sys.stderr)
    if any(s.note for s in statuses):
        raise typer.Exit(2)


def retry(
    job: str = typer.Argument(..., help="Job name."),
    max_attempts: int | None = typer.Option(None, "--max-attempts", min=1, help="Sends per line in all, as in "
                                               "run (default: the job's own setting); each line retried is sent "
                                               "at least once more."),
    include_cancelled: bool = typer.Option(False, "--include-cancelled", help="In a job you cancelled, send its "
                                           "cancelled lines too (lines the provider cancelled are always sent)."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Submit and return; `batchery collect` finishes it."),
    out: Path | None = typer.Option(None, help="Results file (default: the job's own)."),
    store: Path | None = StoreOpt,
) -> None:
    """Send a finished job's failed, expired and missing lines again; succeeded lines are kept.

    Lines the provider cancelled are sent too, and invalid lines (answers that never fit their
    response_format schema) are asked again with the error. The job's provider, base URL and settings come
    from the store and the key from the environment; the input file is not needed."""
    from ..api import Connection, drive, live_policy, provider_session
    from ..control import OPEN, find_job, reopen_job, retry_lines
    from ..errors import ConfigError
    from ..export import export
    from ..pricing import PriceBook
    from ..store import Store
    from ..structured import INVALID, reask_job
    from .progress import make_progress

    load_env()
    with Store(store) as st:
        row = find_job(st, job)

        def select(store: Any, j: Any) -> list[int]:
            return retry_lines(store, j, include_cancelled=include_cancelled)

        if not select(st, row) and not st.counts(row.id).get(INVALID) and row.state not in OPEN:
            print(f"job '{job}': nothing to retry (no line ended failed, expired, missing or invalid"
                  + ("" if include_cancelled or row.state != "cancelled" else
                     "; add --include-cancelled to send the lines you cancelled") + ")", file=sys.stderr)
            return
        options = row.options
        if options.get("emulate") and no_wait:
            raise ConfigError("the job runs on an in-process emulator (--emulate), which lives only while this "
                              "command runs: retry it without --no-wait")
        live = live_policy(options["mode"], options.get("rpm"), options.get("tpm"), options.get("concurrency", 32)) \
            if options.get("mode") in ("live", "flex") else None
        if live is not None and no_wait:
            raise ConfigError("--no-wait needs batch mode: live calls are answered while the command runs")
        attempts = max_attempts or options.get("max_attempts", 3)
        max_cost = options.get("max_cost")
        conn = Connection(row.provider, options.get("base_url"), None, bool(options.get("emulate")))
        # the adapter first: a missing key stops the retry before anything changes
        with provider_session(conn) as (adapter, emulator_poll):
            with st.job_lock(row):
                n = reopen_job(st, row, select, "batchery retry")
                n += reask_job(st, adapter, find_job(st, job), None)
                with st.transaction():  # collect continues the job with these settings
                    st.set_job_options(row.id, {**options, "max_attempts": attempts,
                                                **({"out": str(out.absolute())} if out else {})})
            row = find_job(st, job)
            print(f"job '{job}': {n:,} lines to send again", file=sys.stderr)
            progress = make_progress()
            try:
                final = drive(st, adapter, row, live=live, max_attempts=attempts, on_progress=progress,
                              wait=not no_wait, batch_size=options.get("batch_size"), poll=emulator_poll,
                              max_cost=max_cost,
                              prices=PriceBook(store_dir=st.dir) if max_cost is not None else None)
            finally:
                progress.close()
        row = find_job(st, job)
        if final.stopped:
            print(f"stopped: {final.stopped}", file=sys.stderr)
        counts = ", ".join(f"{v:,} {k}" for k, v in sorted(final.items.items()))
        if not final.done:
            print(f"job '{job}': {counts}; `batchery collect {job}` finishes it", file=sys.stderr)
            if final.stopped:
                raise typer.Exit(3)
            return
        target = results_path(row)
        n_lines = export(st, row.id, row.provider, target)
    print(f"job '{job}': {n_lines:,} result lines ({counts}) -> {target}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.command()(collect)
    app.command()(retry)
