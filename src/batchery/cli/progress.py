"""Progress for long jobs: a rich live bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ..engine import Progress


def _where(p: Progress) -> str:
    """Batches by provider status, or in live mode the calls made and answered 429."""
    if p.live is not None:
        return (f"live: {p.live['sent']:,} calls, {p.live['in_flight']} in flight, "
                f"{p.live['rate_limited']:,} answered 429, {p.live['retried']:,} retried")
    return "batches: " + (", ".join(f"{n} {state}" for state, n in sorted(p.remote.items())) or "none yet")


def _summary(p: Progress) -> str:
    return f"[{p.job}] requests {p.finished:,}/{p.total:,} done, {p.failed:,} failed | {_where(p)} | {p.elapsed:,.1f}s"


class PlainProgress:
    """One line per change, for logs and CI."""

    def __init__(self) -> None:
        self._last: dict[str, list[str]] = {}  # per job: `batchery collect` follows several

    def __call__(self, p: Progress) -> None:
        line = _summary(p)
        state = line.split(" | ")[:1]  # print when work moves, not when only the clock does
        if state != self._last.get(p.job):
            print(line, file=sys.stderr, flush=True)
        self._last[p.job] = state

    def close(self) -> None:
        pass


class RichProgress:
    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

        self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), transient=False)
        self._tasks: dict[str, Any] = {}  # one bar per job: `batchery collect` follows several in one view
        self._bar.start()

    def __call__(self, p: Progress) -> None:
        detail = f"failed {p.failed:,} | {_where(p)}"
        if p.job not in self._tasks:
            self._tasks[p.job] = self._bar.add_task(p.job, total=p.total, detail=detail)
        self._bar.update(self._tasks[p.job], completed=p.finished, total=p.total, detail=detail)

    def close(self) -> None:
        self._bar.stop()


def make_progress() -> Callable[[Progress], None]:
    return RichProgress() if sys.stderr.isatty() else PlainProgress()
