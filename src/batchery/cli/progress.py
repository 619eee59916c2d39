"""Progress for long jobs: a rich live bar on a terminal, plain log lines otherwise.

Each job gets its own line; an evaluation names each line after its stage (`stage(label)` before
the stage's job starts), so a terminal shows one line per stage."""

from __future__ import annotations

import sys
from typing import Any

from ..engine import Progress


def _where(p: Progress) -> str:
    """Batches in batchery's words (planned, submitted, running, done, ...), or in live mode the
    calls made and answered 429."""
    if p.live is not None:
        return (f"live: {p.live['sent']:,} calls, {p.live['in_flight']} in flight, "
                f"{p.live['rate_limited']:,} answered 429, {p.live['retried']:,} retried")
    where = "batches: " + (", ".join(f"{n} {state}" for state, n in sorted(p.states.items())) or "none yet")
    return f"{where} ({p.waiting})" if p.waiting else where


def _merged(p: Progress) -> str:
    """Says when identical input lines were merged into one request (each is sent once)."""
    return f" ({p.rows:,} requests, {p.total:,} distinct)" if p.rows > p.total else ""


def _counts(p: Progress) -> str:
    cancelled = p.items.get("cancelled", 0)
    return (f"{p.failed:,} failed" + (f" ({p.invalid:,} invalid)" if p.invalid else "")
            + (f", {cancelled:,} cancelled" if cancelled else ""))


def _summary(p: Progress, name: str) -> str:
    return (f"[{name}] requests {p.finished:,}/{p.total:,} done{_merged(p)}, {_counts(p)} | {_where(p)} | "
            f"{p.elapsed:,.1f}s")


class _Labels:
    """Display names for jobs: an evaluation announces each stage before its job reports."""

    def __init__(self) -> None:
        self._next: str | None = None
        self._names: dict[str, str] = {}

    def stage(self, label: str) -> None:
        self._next = label

    def name(self, job: str) -> str:
        if job not in self._names:
            self._names[job], self._next = self._next or job, None
        return self._names[job]


class PlainProgress(_Labels):
    """One line per change, for logs and CI."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, list[str]] = {}  # per job: `batchery collect` follows several

    def stage(self, label: str) -> None:
        print(f"stage {label}", file=sys.stderr, flush=True)  # a log also says when a stage is read back
        super().stage(label)

    def __call__(self, p: Progress) -> None:
        line = _summary(p, self.name(p.job))
        state = line.split(" | ")[:1]  # print when work moves, not when only the clock does
        if state != self._last.get(p.job):
            print(line, file=sys.stderr, flush=True)
        self._last[p.job] = state

    def close(self) -> None:
        pass


class RichProgress(_Labels):
    """A live bar per job (per stage, in an evaluation)."""

    def __init__(self, console: Any = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        super().__init__()
        if console is None:  # standard output is for results (--json, --out -): progress goes to stderr
            from rich.console import Console

            console = Console(stderr=True)
        self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), transient=False, console=console)
        self._tasks: dict[str, Any] = {}
        self._bar.start()

    def __call__(self, p: Progress) -> None:
        detail = f"{_counts(p)}{_merged(p)} | {_where(p)}"
        task = self._tasks.get(p.job)
        if task is None:
            self._tasks[p.job] = self._bar.add_task(self.name(p.job), total=p.total, completed=p.finished,
                                                    detail=detail)
        else:
            self._bar.update(task, completed=p.finished, total=p.total, detail=detail)

    def close(self) -> None:
        self._bar.stop()


def make_progress() -> PlainProgress | RichProgress:
    return RichProgress() if sys.stderr.isatty() else PlainProgress()
