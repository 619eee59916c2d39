"""Job commands: run, status, results, cancel, list."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from ..paths import load_env
from .options import StoreOpt


def run(
    input: Path = typer.Argument(..., help="Requests: JSONL (one request per line) or CSV with a 'prompt' column."),
    provider: str = typer.Option("openai", help="Provider: openai, anthropic, gemini, mistral, together, groq, vertex, "
                                 "openai-compatible (any OpenAI-style server at --base-url; live only), "
                                 "or vllm (`vllm run-batch` on this machine, chunk by chunk)."),
    mode: str = typer.Option("batch", help="batch: the provider's Batch API (cheaper, hours); live: one call per "
                             "request, paced under --rpm/--tpm (answers in minutes); flex: live calls on the "
                             "provider's flex tier (openai, gemini: batch prices, slower, 429s waited out)."),
    rpm: float | None = typer.Option(None, min=1, help="Live mode: requests per minute to stay under "
                                        "(default: learnt from the provider's rate-limit headers)."),
    tpm: float | None = typer.Option(None, min=1, help="Live mode: tokens per minute to stay under "
                                        "(estimated before each call, corrected from the usage returned)."),
    concurrency: int = typer.Option(32, min=1, help="Live mode: calls in flight at most."),
    http: str = typer.Option("fast", "--http", help="Live mode: how calls travel. fast: batchery's own small "
                             "HTTP/1.1 client, the SDK's URLs and headers; sdk: the provider's official SDK."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Send requests even if the store already holds "
                                  "their answer from another job (batch or live)."),
    model: str | None = typer.Option(None, help="Model for requests that do not name one."),
    job: str | None = typer.Option(None, help="Job name (default: the input file's name). Same name = resume."),
    out: Path | None = typer.Option(None, help="Results file (default: <job>.results.jsonl; - for standard "
                                       "output; a .csv or .parquet name writes that format). A FIFO or device is written into; a regular file is replaced "
                                       "atomically."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Submit and return; collect later with the same command."),
    base_url: str | None = typer.Option(None, help="Provider API base URL, passed to the SDK unchanged (vllm: "
                                        "the run-batch command, default `vllm run-batch` or $BATCHERY_VLLM_COMMAND)."),
    emulate: bool = typer.Option(False, help="Run against an in-process emulator: no key, no cost."),
    bucket: str | None = typer.Option(None, "--bucket", help="vertex: the Cloud Storage bucket its batch files go "
                                      "through, gs://BUCKET[/FOLDER] (default: $BATCHERY_GCS_BUCKET)."),
    batch_size: int | None = typer.Option(None, min=1, help="At most this many requests per batch."),
    max_attempts: int = typer.Option(3, min=1, help="Sends per request: lines that expire, go missing or hit a "
                                     "transient provider error are retried in new batches up to this many, and "
                                     "answers that do not fit a response_format schema are asked again with the "
                                     "error (failures a later run can fix, like a refused key, are sent again by it)."),
    raw: bool = typer.Option(False, "--raw", help="Lines are already in the provider's own batch format; send their bodies as they are."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the estimate (requests, tokens, cost) and send nothing."),
    max_cost: float | None = typer.Option(None, "--max-cost", min=0, help="USD: stop submitting new batches "
                                             "before the projected batch spend would pass this (the job stays resumable)."),
    prices: Path | None = typer.Option(None, "--prices", help="Price override file (TOML; default: prices.toml "
                                          "in the store directory)."),
    max_enqueued_tokens: int | None = typer.Option(
        None, "--max-enqueued-tokens", min=1, help="Estimated prompt tokens a model may have in open batches at "
        "once; later batches wait for earlier ones to finish (default: the provider's documented cap, lowered to "
        "the limit it reports)."),
    as_json: bool = typer.Option(False, "--json", help="Print the final summary as JSON on standard output "
                                 "(job, state, requests by outcome, results file, failure reasons, exit code)."),
    store: Path | None = StoreOpt,
) -> None:
    """Run a job of requests through a Batch API, or resume it. Results come back in input order."""
    from ..api import Connection, live_policy, run_file
    from ..errors import ConfigError, OutputError

    # Options are checked first, so that --dry-run refuses what the real run would refuse.
    if emulate and no_wait:
        raise ConfigError("--emulate runs an emulator only while this command runs, so --no-wait would "
                          "leave nothing to collect from; start `batchery emulator` and pass --base-url instead")
    live = live_policy(mode, rpm, tpm, concurrency, http)
    if live is not None and no_wait:
        raise ConfigError("--no-wait needs batch mode: live calls are answered while the command runs")
    if dry_run:
        from ..api import _check_mode
        from .estimate import estimate_file, print_estimate

        print_estimate(estimate_file(input, provider, model, raw, prices, store,
                                     check=lambda adapter: _check_mode(adapter, live), base_url=base_url),
                       as_json=as_json)
        print("dry run: nothing was sent", file=sys.stderr)
        return
    from ..export import check_target, export
    from ..pricing import PriceBook
    from ..store import Store
    from .progress import make_progress

    name = job or input.stem
    target = out or Path(f"{name}.results.jsonl")
    check_target(target)  # a missing folder is found before anything is sent, not after the job ran
    load_env()
    if bucket:  # read where the vertex adapter uploads, like the project and location variables
        os.environ["BATCHERY_GCS_BUCKET"] = bucket
    # remembered (absolute) so that `batchery collect` writes it from any folder once the job ends
    remember = {"out": None if str(target) == "-" else str(target.absolute()), "max_enqueued_tokens": max_enqueued_tokens}
    progress = make_progress()
    with Store(store) as st:
        print(f"store: {st.where}", file=sys.stderr)
        try:
            name, final = run_file(input, Connection(provider, base_url, None, emulate), model, job=name,
                                   store=st, batch_size=batch_size, max_attempts=max_attempts,
                                   wait=not no_wait, on_progress=progress, raw=raw, max_cost=max_cost,
                                   prices=PriceBook(prices, store_dir=st.dir) if max_cost is not None else None,
                                   live=live, no_cache=no_cache, remember=remember,
                                   announce=lambda notice: print(notice, file=sys.stderr, flush=True))
        finally:
            progress.close()
        if final.stopped:
            print(f"stopped: {final.stopped}", file=sys.stderr)
        job_row = st.get_job(name)
        assert job_row is not None
        summary = _run_summary(st, job_row, final)
        if no_wait and not final.done:  # a --no-wait run that finds every line done finishes the job
            print(f"submitted job '{name}': `batchery status {name} --refresh` asks the provider how far it "
                  f"got; `batchery collect {name}` (or `--all`) downloads the results into {target}",
                  file=sys.stderr)
        else:
            try:
                n = export(st, job_row.id, job_row.provider, target)
            except OutputError as exc:
                raise OutputError(f"{exc}; the results are safe in the store: `batchery results {name} --out FILE` "
                                  "writes them") from None
            summary.update(results=str(target), result_lines=n)
            counts = ", ".join(f"{v:,} {k}" for k, v in sorted(final.items.items()))
            ended = " (cancelled by `batchery cancel`)" if job_row.state == "cancelled" else ""
            print(f"job '{name}'{ended}: {n:,} result lines ({final.total:,} distinct requests: {counts}) -> {target}",
                  file=sys.stderr)
            _print_failures(summary)
    if as_json:
        import orjson

        sys.stdout.buffer.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    if summary["exit_code"]:
        raise typer.Exit(summary["exit_code"])


# Outcomes that mean a line has no answer after every attempt: the run exits 1 when any remain.
_UNANSWERED = ("failed", "expired", "missing", "invalid")


def _run_summary(st, job_row, final) -> dict:
    """What a run ended with, for `--json` and the exit status (0 all answered, 1 some lines not,
    3 stopped by the cost cap, 4 stopped by the provider: a refused key, lines a later run can fix)."""
    not_answered = sum(final.items.get(s, 0) for s in _UNANSWERED) if final.done else 0
    return {"job": job_row.name, "state": job_row.state, "store": st.where, "lines": job_row.n_rows,
            "distinct_requests": final.total, "requests": dict(sorted(final.items.items())),
            "not_answered": not_answered, "results": None, "result_lines": None, "stopped": final.stopped,
            "failures": [{"status": status, "code": code, "example": example, "count": count}
                         for status, code, example, count in st.failure_reasons(job_row.id, limit=5)
                         if status in _UNANSWERED],
            "exit_code": 3 if final.capped else 4 if final.stopped else 1 if not_answered else 0}


def _print_failures(summary: dict) -> None:
    """The most common reasons lines did not succeed, each with an example message."""
    if not summary["not_answered"]:
        return
    print(f"{summary['not_answered']:,} requests did not succeed; most common reasons:", file=sys.stderr)
    for f in summary["failures"][:3]:
        example = (f["example"] or "").replace("\n", " ")
        print(f"  {f['count']:>7,} {f['status']} ({f['code'] or 'no code'}), e.g. "
              f"{example[:160] + ('…' if len(example) > 160 else '')}", file=sys.stderr)
    print(f"every reason: `batchery status {summary['job']}`", file=sys.stderr)


def status(
    job: str | None = typer.Argument(None, help="A job name; all jobs when omitted."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    watch: bool = typer.Option(False, "--watch", help="A live view of every job (or the one named), refreshed "
                               "until Ctrl-C: batches by state, lines done/failed, tokens, cost, oldest batch."),
    interval: float = typer.Option(2.0, min=0.1, help="Seconds between refreshes with --watch."),
    refresh: bool = typer.Option(False, "--refresh", help="Ask the providers where open batches stand (one call "
                                 "per provider) and record it before showing; nothing is downloaded (`batchery "
                                 "collect` does that). With --watch, asked every 10 s at most."),
    prices: Path | None = typer.Option(None, "--prices", help="Price override file (TOML; default: prices.toml "
                                          "in the store directory)."),
    store: Path | None = StoreOpt,
) -> None:
    """Where a job stands: requests by outcome, cost so far, batches by provider status, recent events."""
    from ..store import Store, resolve_store_dir, store_exists

    if watch:
        from .watch import watch_jobs

        watch_jobs(store, job, interval, prices, refresh=refresh)
        return

    if job is None and not refresh and not store_exists(store):
        where: Path | str = resolve_store_dir(store)  # no store yet, so no jobs: nothing to create
        reports: list = []
    else:  # --refresh records what the providers say, so it needs to write; reading alone does not
        from ..control import find_job, job_status  # only here: a store with no jobs prices nothing
        from ..pricing import PriceBook

        with Store(store) if refresh else _reader(store, job) as st:
            book = PriceBook(prices, store_dir=st.dir)
            jobs = [find_job(st, job)] if job else st.list_jobs()
            if refresh:
                from .collect import refresh_store

                jobs = refresh_store(st, jobs)
            reports = [job_status(st, j, book, detailed=job is not None).report() for j in jobs]
            where = st.where
    if as_json:
        import orjson

        sys.stdout.buffer.write(orjson.dumps(reports if job is None else reports[0], option=orjson.OPT_INDENT_2) + b"\n")
        return
    print(f"store: {where}")
    if not reports:
        print("no jobs yet")
        return
    from ..pricing import UNKNOWN, format_usd

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
        for b in r.get("batches", []):  # the detail view: batchery's word, then the provider's own
            print(f"  batch {b['id']:>4} {b['remote_id'] or '(not created)':<40} {b['status']:<10} "
                  f"{'(' + b['remote_status'] + ')' if b['remote_status'] else '':<22} {b['requests']:>7,} requests")
        for e in r.get("events", []):
            print(f"  {e['at']} {e['kind']} {_detail_text(e['detail'])}".rstrip())


def _detail_text(detail: dict | None) -> str:
    """An event's details as text: `batch=3 requests=40` (a value with spaces is quoted)."""
    import orjson

    parts = []
    for key, value in (detail or {}).items():
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        parts.append(f'{key}="{text}"' if " " in text else f"{key}={text}")
    return " ".join(parts)


def results(
    job: str = typer.Argument(..., help="Job name."),
    out: Path | None = typer.Option(None, help="Output file (default, or -: standard output). A FIFO or device "
                                       "is written into, a regular file replaced atomically."),
    format: str | None = typer.Option(None, help="jsonl, csv or parquet (needs the extra batchery[parquet]). "
                                      "Default: from --out's suffix (.csv, .parquet), else jsonl."),
    store: Path | None = StoreOpt,
) -> None:
    """Write a job's results: one line (or row) per input line, in input order."""
    from ..control import find_job
    from ..errors import ConfigError
    from ..export import check_target, export, format_for

    format = format or format_for(out)
    if format not in ("jsonl", "csv", "parquet"):
        raise ConfigError(f"unknown format '{format}'; use jsonl, csv or parquet")
    if format == "parquet" and (out is None or str(out) == "-") and sys.stdout.isatty():
        raise ConfigError("Parquet is binary: give --out FILE, or send standard output into a pipe or file")
    check_target(out)
    with _reader(store, job) as st:
        row = find_job(st, job)
        n = export(st, row.id, row.provider, out, format)
    if out and str(out) != "-":
        print(f"{n:,} lines -> {out}", file=sys.stderr)


def cancel(
    job: str = typer.Argument(..., help="Job name."),
    base_url: str | None = typer.Option(None, help="Provider API base URL (default: the one the job ran with)."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Ask for cancellation and return."),
    as_json: bool = typer.Option(False, "--json", help="Print the job's state and requests by outcome as JSON."),
    store: Path | None = StoreOpt,
) -> None:
    """Cancel a job: nothing new is sent, running batches are cancelled, finished lines are kept.

    Works from any terminal while another process runs the job: that process cancels and stops."""
    from ..control import FINISHED, cancel_job, find_job
    from ..providers import get_provider
    from ..store import Store
    from .progress import make_progress

    load_env()
    with Store(store) as st:
        row = find_job(st, job)
        if row.state in FINISHED:  # nothing to do, and no provider (or key) needed to say so
            print(f"job '{job}' has already ended ({row.state}): nothing to cancel, nothing changed", file=sys.stderr)
            return
        progress = make_progress()
        try:
            final = cancel_job(st, row, lambda name, url: get_provider(name, base_url=base_url or url),
                               wait=not no_wait, on_progress=progress)
        finally:
            progress.close()
        state = row.state if (now := st.get_job(job)) is None else now.state
    if final is None:
        print(f"job '{job}': cancel requested; the batchery process running it cancels its batches and stops, "
              "keeping finished lines", file=sys.stderr)
    else:
        counts = ", ".join(f"{v:,} {k}" for k, v in sorted(final.items.items()))
        print(f"job '{job}' cancelled: {counts}", file=sys.stderr)
    if as_json:
        import orjson

        data = {"job": job, "state": state, "requests": dict(sorted(final.items.items())) if final else None}
        sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")


def delete(
    job: str = typer.Argument(..., help="Job name."),
    force: bool = typer.Option(False, "--force", help="Delete even if the job has batches still open at the "
                               "provider (they keep running there, and are billed, until they end)."),
    store: Path | None = StoreOpt,
) -> None:
    """Remove a job and everything the store holds for it (requests, answers, batches, events).
    Answers other jobs reused from it stay with them. Needs no key: nothing is sent."""
    import shutil

    from ..control import find_job
    from ..errors import JobError
    from ..store import Store

    with Store(store) as st:
        row = find_job(st, job)
        with st.job_lock(row):  # refuses while another process runs the job
            open_batches = st.batches(row.id, ["creating", "submitted"])
            if open_batches and not force:
                raise JobError(
                    f"job '{job}' has {len(open_batches)} batch(es) still open at {row.provider} "
                    f"({', '.join(b.remote_id or b.tag for b in open_batches[:3])}); `batchery cancel {job}` "
                    "first, or add --force to delete it anyway (open batches keep running there, and are billed)")
            with st.transaction():
                tags = st.delete_job(row.id)
        for tag in tags:  # batch files never uploaded, and a local run's chunk folder (vllm: its output and log)
            (st.dir / "batches" / f"{tag}.jsonl").unlink(missing_ok=True)
            shutil.rmtree(st.dir / "batches" / tag, ignore_errors=True)
        (st.dir / "locks" / f"job-{row.id}.lock").unlink(missing_ok=True)
    print(f"deleted job '{job}' ({row.n_rows:,} lines)" + (
        f"; {len(open_batches)} batch(es) still open at {row.provider} were left running" if open_batches else ""),
        file=sys.stderr)


def list_jobs(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    store: Path | None = StoreOpt,
) -> None:
    """List the jobs in the store."""
    status(None, as_json=as_json, watch=False, interval=2.0, refresh=False, prices=None, store=store)


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(status)
    app.command()(results)
    app.command()(cancel)
    app.command("list")(list_jobs)
    app.command()(delete)


def _reader(store: Path | None, job: str | None):
    """The store opened read-only: commands that only read work on a store they cannot write (a
    read-only disk, another user's files). A job asked of a store that does not exist is unknown."""
    from ..errors import JobError
    from ..store import Store, resolve_store_dir, store_exists

    if job is not None and not store_exists(store):
        raise JobError(f"no job named '{job}' in {resolve_store_dir(store)} (no store there yet)")
    return Store(store, read_only=True)
