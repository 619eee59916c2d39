"""One exception tree: every error batchery raises on purpose is a BatcheryError with a message
that tells the user what to do next.

A failed provider call becomes one of four, at each adapter's error boundary
(`BatchProvider._errors`, by the rule in retry.py): `TransientError` (no answer, 408, 5xx,
overload) and its `RateLimitedError` (429), both carrying the wait the provider asked for;
`AccountError` (key, permission, quota, billing); `ProviderError` (the request itself refused).
Nothing above the adapters catches an SDK's own exceptions."""


class BatcheryError(Exception):
    """Base class of every error batchery raises deliberately."""

    exit_code = 2  # the command's exit status when this stops it (the table: `batchery --help`)


class InputError(BatcheryError):
    """A request file or request object is malformed; the message names file, line and field."""


class ConfigError(BatcheryError):
    """A setting is missing or wrong: unknown provider, missing API key, conflicting options."""


class JobError(BatcheryError):
    """A job cannot be run as asked: unknown job, input changed under an existing job name."""


class JobBusyError(JobError):
    """Another batchery process holds the job's lock (it is running the job)."""


class StoreError(BatcheryError):
    """The job store cannot be opened or is newer than this version of batchery."""


class StoreBusyError(StoreError):
    """Another batchery process held the store's write lock for longer than a writer waits."""


class ProviderError(BatcheryError):
    """The provider refused a batch-level call (upload, create, cancel) in a way retrying won't fix."""

    exit_code = 4


class UnreachableError(ProviderError):
    """A provider call kept failing in a way that usually passes (network, 429, 5xx) until the
    engine gave up on it: the run stops, the job is saved and resumes with the same command."""


class AccountError(BatcheryError):
    """The provider refused the key or account (wrong or revoked key, no permission, no quota):
    every call would fail the same way until the user fixes it, so the run stops at once and the
    job stays resumable."""

    exit_code = 4


class TransientError(BatcheryError):
    """A provider call failed in a way that may pass (network, 429, 5xx). For a create call the
    outcome is unknown: the batch may exist remotely, so the engine looks for it before retrying.
    `retry_after` is the wait in seconds the provider asked for, when it said."""

    exit_code = 4

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class RateLimitedError(TransientError):
    """A provider call answered 429 (too many calls, not a quota that is used up): retried after the
    wait in `retry_after` when the provider said, else with backoff."""


class OutputError(BatcheryError):
    """A results or report file cannot be written: a missing folder, a full disk, no permission."""
