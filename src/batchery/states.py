"""The names of where things stand: a line's outcome, a job, a batch. StrEnums, so each member is
the very text the store holds and the JSON output shows (`OutcomeStatus.FAILED == "failed"`), and a
new kind is one more member here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from enum import StrEnum
from typing import Any


class OutcomeStatus(StrEnum):
    """How a line ended (outcomes.status)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the provider's error code and message say why; retry.py says whether it is final
    EXPIRED = "expired"  # the batch's window closed before the line ran
    CANCELLED = "cancelled"  # by the user (final) or by the provider (retried)
    MISSING = "missing"  # the provider returned no line for it
    INVALID = "invalid"  # an answer that never fit the request's JSON schema (structured.py)


class JobState(StrEnum):
    """A job's life (jobs.state): ingesting → running → done, or cancelling → cancelled."""

    INGESTING = "ingesting"  # its requests are being read in; a crash here removes it
    RUNNING = "running"
    CANCELLING = "cancelling"  # `batchery cancel` asked; the process running it carries it out
    DONE = "done"
    CANCELLED = "cancelled"


class BatchState(StrEnum):
    """A local batch's life (batches.state), written ahead of each provider call."""

    PLANNED = "planned"  # its lines are chosen; nothing sent
    CREATING = "creating"  # a create call may have reached the provider
    SUBMITTED = "submitted"  # the provider has it
    COLLECTED = "collected"  # every line has its outcome


class BatchWord(StrEnum):
    """batchery's word for where a batch stands, the only one human output uses; the provider's own
    word (`in_progress`, `ended`, `JOB_STATE_SUCCEEDED`) stays in --json and detail views."""

    PLANNED = "planned"
    SUBMITTED = "submitted"
    RUNNING = "running"
    CANCELLING = "cancelling"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class RequestCounts:
    """Totals over distinct requests by state/outcome (`counts`), for Progress and JobStatus alike."""

    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        return sum(n for k, n in self.counts.items() if k not in ("pending", "queued"))

    @property
    def failed(self) -> int:
        """Lines that ended without an answer: failed, expired, missing, invalid (a cancel is the
        user's choice, not a failure)."""
        return self.finished - self.counts.get("succeeded", 0) - self.counts.get("cancelled", 0)

    @property
    def invalid(self) -> int:
        """Lines whose answer never fit their response_format schema (part of `failed`)."""
        return self.counts.get("invalid", 0)


def tally_batches(batches: Iterable[Any]) -> tuple[dict[str, int], dict[str, int]]:
    """Batches by local state, and by the provider's own status word."""
    batches = list(batches)
    return (dict(Counter(str(b.state) for b in batches)),  # plain text keys: they are dumped as JSON
            dict(Counter(b.remote_status for b in batches if b.remote_status)))
