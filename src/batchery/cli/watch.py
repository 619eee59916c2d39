"""`batchery status --watch`: one live table of every job in the store, read from the store alone,
so it follows jobs that other processes (batch or live) are running."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


def _count(n: int) -> str:
    """Token counts in a few characters: 950, 12.3k, 4.1M."""
    if n < 1000:
        return str(n)
    return f"{n / 1000:.1f}k" if n < 1_000_000 else f"{n / 1_000_000:.1f}M"


def job_table(reports: list[dict], width: int = 120):
    """The table for a set of status reports (running jobs first), for a terminal `width` wide."""
    from rich import box
    from rich.table import Table

    from ..pricing import format_usd

    table = Table(title=f"batchery jobs  {time.strftime('%H:%M:%S')}", box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0),
                  pad_edge=False)
    # Job names (an evaluation's stage jobs run to 60 characters) are what a user looks for: the
    # column takes the longest name, up to what the other columns (about 84 characters) leave; a
    # longer name folds onto further lines, whole, rather than being cut.
    longest = max((len(r["job"]) for r in reports), default=3)
    table.add_column("job", overflow="fold", min_width=max(16, min(longest, width - 84)))
    for name, justify in [("state", "left"), ("model", "left"), ("done", "right"), ("failed", "right"),
                          ("pending", "right"), ("batches", "left"), ("tokens", "right"), ("cost", "right"),
                          ("age", "right")]:
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for r in sorted(reports, key=lambda r: (r["state"] != "running", r["job"])):
        requests = r["requests"]
        waiting = requests.get("pending", 0) + requests.get("queued", 0)
        done = sum(requests.values()) - waiting
        failed = done - requests.get("succeeded", 0) - requests.get("cancelled", 0)
        batches = ", ".join(f"{n} {s}" for s, n in sorted(r["batch_states"].items())) or "live/none"
        cost = r["cost"]
        table.add_row(r["job"], r["state"], f"{r['model'] or '-'}\n[dim]{r['provider']}[/dim]", f"{done:,}",
                      f"[red]{failed:,}[/red]" if failed else "0", f"{waiting:,}", batches,
                      f"{_count(cost['input_tokens'])}/{_count(cost['output_tokens'])}", format_usd(cost["usd"]),
                      _age(r["oldest_open_batch_seconds"]))
    return table


REFRESH_EVERY = 10.0  # seconds between provider polls with --refresh: one list call per provider each time


def watch_jobs(store_dir: Path | None, job: str | None, interval: float, prices: Path | None,
               refresh: bool = False) -> None:
    from rich.console import Console
    from rich.live import Live

    from ..control import find_job, job_status
    from ..pricing import PriceBook
    from ..store import Store

    asked = [-REFRESH_EVERY]

    def snapshot():
        with Store(store_dir, read_only=not refresh) as st:
            book = PriceBook(prices, store_dir=st.dir)
            jobs = [find_job(st, job)] if job else st.list_jobs()
            if refresh and time.monotonic() - asked[0] >= REFRESH_EVERY:
                from .collect import refresh_store

                jobs, asked[0] = refresh_store(st, jobs), time.monotonic()
            return job_table([job_status(st, j, book).report() for j in jobs], console.width)

    console = Console(stderr=False)
    try:
        if not sys.stdout.isatty():  # a log: one table per refresh
            while True:
                console.print(snapshot())
                time.sleep(interval)
        with Live(snapshot(), console=console, refresh_per_second=4) as view:
            while True:
                time.sleep(interval)
                view.update(snapshot())
    except KeyboardInterrupt:
        pass
