"""The `batchery` command. Heavy modules load inside commands so `batchery --help` stays fast."""

from __future__ import annotations

import sys

import typer

from ..errors import BatcheryError
from . import collect, estimate, evaluate, jobs

# Pretty tracebacks print local variables, which can hold API keys: never show them.
app = typer.Typer(
    help="Durable, exactly-once LLM batch jobs over the providers' Batch APIs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
jobs.register(app)
collect.register(app)
estimate.register(app)
evaluate.register(app)


@app.command()
def emulator(
    host: str = typer.Option("127.0.0.1", help="Address to bind; keep the default unless you know why."),
    port: int = typer.Option(8787, help="Port to listen on."),
    processing_seconds: float = typer.Option(0.0, help="How long each batch takes to complete."),
    faults: str = typer.Option("", help="Faults to inject, e.g. 'http_429=0.1,lost_create=1,seed=7' "
                               "(grammar: batchery.emulator.faults)."),
    rpm: int | None = typer.Option(None, min=1, help="Requests per minute each provider's live endpoint admits "
                                   "(token bucket, one second's worth of burst); unlimited if unset."),
    tpm: int | None = typer.Option(None, min=1, help="Tokens per minute (prompt estimate + max output tokens) "
                                   "each provider's live endpoint admits; unlimited if unset."),
    latency: float = typer.Option(0.0, min=0.0, help="Seconds each live answer waits before it is sent."),
) -> None:
    """Serve a local emulator of the providers' Batch APIs and live endpoints (for tests, demos and dry runs)."""
    from ..emulator import serve
    from ..errors import ConfigError

    try:
        serve(host=host, port=port, processing_seconds=processing_seconds, faults=faults or None,
              rpm=rpm, tpm=tpm, latency=latency)
    except ValueError as exc:  # a bad --faults spec, found before the socket is bound
        raise ConfigError(f"--faults: {exc}") from None


def main() -> None:
    try:
        app()
    except BatcheryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        import sqlite3  # not at the top: `batchery --help` does not load the store

        if not isinstance(exc, sqlite3.Error):
            raise
        # a damaged store, or one written by an incompatible build
        print(f"error: the job store cannot be read ({exc}); point --store elsewhere or move it aside",
              file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: the job is saved; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
