"""batchery: durable, exactly-once LLM batch jobs over the providers' Batch APIs.

    import batchery
    results = batchery.run([{"prompt": "Hello"}], provider="openai", model="gpt-4o-mini")
"""

from .errors import BatcheryError, ConfigError, InputError, JobError, ProviderError, StoreError

__all__ = [
    "BatcheryError",
    "ConfigError",
    "InputError",
    "JobError",
    "JobStatus",
    "ProviderError",
    "Result",
    "StoreError",
    "__version__",
    "arun",
    "batching",
    "collect",
    "results",
    "run",
    "status",
    "submit",
    "to_pandas",
]


def __dir__() -> list[str]:
    # The public names load lazily (below): list them too, for dir(), completion and help().
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str):
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("batchery")
        except PackageNotFoundError:  # running from a source tree that was never installed
            return "0+unknown"
    # The API pulls in the engine and store; importing `batchery` alone (the CLI's --help) stays fast.
    if name in ("run", "arun", "submit", "collect", "status", "results", "to_pandas"):
        from . import api

        return getattr(api, name)
    if name == "batching":  # the drop-in client (in dropin.py: a submodule named batching would shadow it)
        from .dropin import batching

        return batching
    if name == "Result":
        from .export import Result

        return Result
    if name == "JobStatus":
        from .control import JobStatus

        return JobStatus
    raise AttributeError(name)
