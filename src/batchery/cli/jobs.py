"""Job commands: run, status, results, cancel, list."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

StoreOpt = typer.Option(None, "--store", help="Store directory (default: $BATCHERY_HOME, else ./.batchery).")


def _load_env() -> None:
    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env")


def run(
    input: Path = typer.Argument(..., help="Requests: JSONL (one request per line) or CSV with a 'prompt' column."),
    provider: str = typer.Option("openai", help="Provider: openai, anthropic, gemini, mistral, together, groq, "
                                 "or openai-compatible (any OpenAI-style server at --base-url; live only)."),
    mode: str = typer.Option("batch", help="batch: the provider's Batch API (cheaper, hours); live: one call per "
                             "request, paced under --rpm/--tpm (answers in minutes)."),
    rpm: Optional[float] = typer.Option(None, min=1, help="Live mode: requests per minute to stay under "
                                        "(default: learnt from the provider's rate-limit headers)."),
    tpm: Optional[float] = typer.Option(None, min=1, help="Live mode: tokens per minute to stay under "
                                        "(estimated before each call, corrected from the usage returned)."),
    concurrency: int = typer.Option(32, min=1, help="Live mode: calls in flight at most."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Send requests even if the store already holds "
                                  "their answer from another job (batch or live)."),
    model: Optional[str] = typer.Option(None, help="Model for requests that do not name one."),
    job: Optional[str] = typer.Option(None, help="Job name (default: the input file's name). Same name = resume."),
    out: Optional[Path] = typer.Option(None, help="Results file (default: <job>.results.jsonl)."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Submit and return; collect later with the same command."),
    base_url: Optional[str] = typer.Option(None, help="Provider API base URL, passed to the SDK unchanged."),
    emulate: bool = typer.Option(False, help="Run against an in-process emulator: no key, no cost."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="At most this many requests per batch."),
    max_attempts: int = typer.Option(3, min=1, help="Sends per request: lines that expire, go missing or hit a "
                                     "transient provider error are retried in new batches up to this many "
                                     "(failures a later run can fix, like a refused key, are sent again by it)."),
    raw: bool = typer.Option(False, "--raw", help="Lines are already in the provider's own batch format; send their bodies as they are."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the estimate (requests, tokens, cost) and send nothing."),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", min=0, help="USD: stop submitting new batches "
                                             "before the projected batch spend would pass this (the job stays resumable)."),
    prices: Optional[Path] = typer.Option(None, "--prices", help="Price override file (TOML; default: prices.toml "
                                          "in the store directory)."),
    store: Optional[Path] = StoreOpt,
) -> None:
    """Run a job of requests through a Batch API, or resume it. Results come back in input order."""
    if dry_run:
        from .estimate import estimate_file, print_estimate

        print_estimate(estimate_file(input, provider, model, raw, prices, store), as_json=False)
        print("dry run: nothing was sent", file=sys.stderr)
        return
    from ..api import Connection, live_policy, run_file
    from ..errors import ConfigError
    from ..export import export
    from ..pricing import PriceBook
    from ..store import Store
    from .progress import make_progress

    if emulate and no_wait:
        raise ConfigError("--emulate runs an emulator only while this command runs, so --no-wait would "
                          "leave nothing to collect from; start `batchery emulator` and pass --base-url instead")
    live = live_policy(mode, rpm, tpm, concurrency)
    if live is not None and no_wait:
        raise ConfigError("--no-wait needs batch mode: live calls are answered while the command runs")
    _load_env()
    name = job or input.stem
    target = out or Path(f"{name}.results.jsonl")
    # remembered (absolute) so that `batchery collect` writes it from any folder once the job ends
    remember = {"out": None if str(target) == "-" else str(target.absolute())}
    progress = make_progress()
    with Store(store) as st:
        try:
            name, final = run_file(input, Connection(provider, base_url, None, emulate), model, job=name,
                                   store=st, batch_size=batch_size, max_attempts=max_attempts,
                                   wait=not no_wait, on_progress=progress, raw=raw, max_cost=max_cost,
                                   prices=PriceBook(prices, store_dir=st.dir) if max_cost is not None else None,
                                   live=live, no_cache=no_cache, remember=remember)
        finally:
            progress.close()
        if final.stopped:
            print(f"stopped: {final.stopped}", file=sys.stderr)
        if no_wait and not final.done:  # a --no-wait run that finds every line done finishes the job
            print(f"submitted job '{name}': `batchery status {name} --refresh` asks the provider how far it "
                  f"got; `batchery collect {name}` (or `--all`) downloads the results into {target}",
                  file=sys.stderr)
            if final.stopped:  # stopped early (a cap, a refused key): saved, and says so in its exit status
                raise typer.Exit(3)
            return
        job_row = st.get_job(name)
        n = export(st, job_row.id, job_row.provider, target)
        counts = ", ".join(f"{v:,} {k}" for k, v in sorted(final.items.items()))
        ended = " (cancelled by `batchery cancel`)" if job_row.state == "cancelled" else ""
        print(f"job '{name}'{ended}: {n:,} result lines ({final.total:,} distinct requests: {counts}) -> {target}",
              file=sys.stderr)
        if final.stopped:
            raise typer.Exit(3)


def status(
    job: Optional[str] = typer.Argument(None, help="A job name; all jobs when omitted."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    watch: bool = typer.Option(False, "--watch", help="A live view of every job (or the one named), refreshed "
                               "until Ctrl-C: batches by state, lines done/failed, tokens, cost, oldest batch."),
    interval: float = typer.Option(2.0, min=0.1, help="Seconds between refreshes with --watch."),
    refresh: bool = typer.Option(False, "--refresh", help="Ask the providers where open batches stand (one call "
                                 "per provider) and record it before showing; nothing is downloaded (`batchery "
                                 "collect` does that). With --watch, asked every 10 s at most."),
    prices: Optional[Path] = typer.Option(None, "--prices", help="Price override file (TOML; default: prices.toml "
                                          "in the store directory)."),
    store: Optional[Path] = StoreOpt,
) -> None:
    """Where a job stands: requests by outcome, cost so far, batches by provider status, recent events."""
    import orjson

    from ..pricing import PriceBook
    from ..store import Store

    if watch:
        from .watch import watch_jobs

        watch_jobs(store, job, interval, prices, refresh=refresh)
        return

    with Store(store) as st:
        book = PriceBook(prices, store_dir=st.dir)
        jobs = [_job_or_exit(st, job)] if job else st.list_jobs()
        if refresh:
            from .collect import refresh_store

            jobs = refresh_store(st, jobs)
        reports = [_report(st, j, detailed=job is not None, book=book) for j in jobs]
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(reports if job is None else reports[0], option=orjson.OPT_INDENT_2) + b"\n")
        return
    from ..pricing import UNKNOWN, format_usd

    if not reports:
        print("no jobs yet")
    for r in reports:
        counts = ", ".join(f"{v:,} {k}" for k, v in sorted(r["requests"].items()))
        print(f"{r['job']}: {r['state']} | {r['provider']} {r['model'] or ''} | {r['rows']:,} lines | {counts}")
        cost = r["cost"]
        modes = " and ".join(sorted({m["mode"] for m in cost["models"]})) or "batch"
        print(f"  cost: {format_usd(cost['usd'])} at {modes} prices for {cost['input_tokens']:,} input + "
              f"{cost['output_tokens']:,} output tokens returned"
              + "".join(f"; {m['model']}: {UNKNOWN}" for m in cost["models"] if m["usd"] is None))
        if r.get("attempts"):
            print("  attempts: " + ", ".join(f"{n:,} sent {k}x" for k, n in r["attempts"].items()))
        for f in r.get("failures", []):
            print(f"  {f['count']:>7,} {f['status']:<9} {f['code'] or '':<24} {(f['example'] or '')[:80]}")
        for b in r.get("batches", []):
            print(f"  batch {b['id']:>4} {b['remote_id'] or '(not created)':<40} {b['remote_status'] or b['state']:<12}"
                  f" {b['requests']:>7,} requests")
        for e in r.get("events", []):
            print(f"  {e['at']} {e['kind']} {e['detail'] or ''}")


def results(
    job: str = typer.Argument(..., help="Job name."),
    out: Optional[Path] = typer.Option(None, help="Output file (default: standard output)."),
    format: str = typer.Option("jsonl", help="jsonl or csv."),
    store: Optional[Path] = StoreOpt,
) -> None:
    """Write a job's results: one line per input line, in input order."""
    from ..errors import ConfigError
    from ..export import export
    from ..store import Store

    if format not in ("jsonl", "csv"):
        raise ConfigError(f"unknown format '{format}'; use jsonl or csv")
    with Store(store) as st:
        row = _job_or_exit(st, job)
        n = export(st, row.id, row.provider, out, format)
    if out:
        print(f"{n:,} lines -> {out}", file=sys.stderr)


def cancel(
    job: str = typer.Argument(..., help="Job name."),
    base_url: Optional[str] = typer.Option(None, help="Provider API base URL (default: the one the job ran with)."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Ask for cancellation and return."),
    store: Optional[Path] = StoreOpt,
) -> None:
    """Cancel a job: nothing new is sent, running batches are cancelled, finished lines are kept.

    Works from any terminal while another process runs the job: that process cancels and stops."""
    from ..control import FINISHED, cancel_job
    from ..providers import get_provider
    from ..store import Store
    from .progress import make_progress

    _load_env()
    with Store(store) as st:
        row = _job_or_exit(st, job)
        if row.state in FINISHED:  # nothing to do, and no provider (or key) needed to say so
            print(f"job '{job}' has already ended ({row.state}): nothing to cancel, nothing changed", file=sys.stderr)
            return
        progress = make_progress()
        try:
            final = cancel_job(st, row, lambda name, url: get_provider(name, base_url=base_url or url),
                               wait=not no_wait, on_progress=progress)
        finally:
            progress.close()
    if final is None:
        print(f"job '{job}': cancel requested; the batchery process running it cancels its batches and stops, "
              "keeping finished lines", file=sys.stderr)
        return
    counts = ", ".join(f"{v:,} {k}" for k, v in sorted(final.items.items()))
    print(f"job '{job}' cancelled: {counts}", file=sys.stderr)


def list_jobs(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    store: Optional[Path] = StoreOpt,
) -> None:
    """List the jobs in the store."""
    status(None, as_json=as_json, watch=False, interval=2.0, refresh=False, prices=None, store=store)


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(status)
    app.command()(results)
    app.command()(cancel)
    app.command("list")(list_jobs)


def _job_or_exit(st, name: str):
    from ..errors import JobError

    row = st.get_job(name)
    if row is None:
        known = ", ".join(j.name for j in st.list_jobs()) or "none"
        raise JobError(f"no job named '{name}' in {st.dir} (jobs: {known})")
    return row


def _report(st, job, detailed: bool, book) -> dict:
    from datetime import datetime, timezone

    from ..pricing import actual_cost, total

    costs = actual_cost(book, job.provider, st.usage_by_model(job.id))
    batches = st.batches(job.id)
    by_state: dict[str, int] = {}
    for b in batches:
        by_state[b.state] = by_state.get(b.state, 0) + 1
    open_since = [b.created_at for b in batches if b.state in ("planned", "creating", "submitted")]
    report = {"job": job.name, "state": job.state, "provider": job.provider, "model": job.model,
              "rows": job.n_rows, "requests": st.counts(job.id), "batches_by_state": by_state,
              "oldest_open_batch_seconds": round(time.time() - min(open_since), 1) if open_since else None,
              "cost": {"usd": total(costs, batch=None), "input_tokens": sum(c.input_tokens for c in costs),
                       "output_tokens": sum(c.output_tokens for c in costs),
                       "models": [c.as_dict() for c in costs]}}
    if detailed:
        report["attempts"] = {str(k): v for k, v in sorted(st.attempts(job.id).items())}
        report["failures"] = [{"status": s, "code": c, "example": m, "count": n}
                              for s, c, m, n in st.failure_reasons(job.id)]
        report["batches"] = [
            {"id": b.id, "remote_id": b.remote_id, "state": b.state, "remote_status": b.remote_status,
             "requests": b.n_requests, "bytes": b.n_bytes, "error": b.error}
            for b in st.batches(job.id)
        ]
        report["events"] = [
            {"at": datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds"), "kind": kind,
             "detail": detail}
            for at, kind, detail in st.events(job.id)
        ]
    return report
