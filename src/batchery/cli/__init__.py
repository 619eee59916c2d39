"""The `batchery` command. Heavy modules load inside commands so `batchery --help` stays fast."""

from __future__ import annotations

import sys
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from ..errors import BatcheryError
from . import collect, estimate, evaluate, jobs

# Every exit status a command can end with (README "Exit codes" says the same).
EXIT_CODES = {
    0: "done: every line succeeded (with --no-wait: submitted)",
    1: "the job ended but some lines did not succeed (failed, expired, missing or invalid after every attempt); "
       "the results are written and the most common reasons printed",
    2: "a usage, configuration, input or store error: the message says what to fix",
    3: "stopped by --max-cost (or an evaluation's budget_usd); the job is saved: run again with a higher cap",
    4: "the provider refused a call or the key, stayed unreachable, or left lines a later run can fix; "
       "the job is saved: run the same command again once fixed",
    130: "interrupted (Ctrl-C); the job is saved: run the same command again to resume",
    143: "terminated (SIGTERM); the job is saved: run the same command again to resume",
}

# Pretty tracebacks print local variables, which can hold API keys: never show them. Help is
# click's plain text: Rich's help formatting alone costs more start-up time than the rest of --help.
app = typer.Typer(
    help="Durable, exactly-once LLM batch jobs over the providers' Batch APIs.",
    epilog="Exit codes:\n\n\b\n" + "\n".join(f"{code:>3}  {text}" for code, text in EXIT_CODES.items()),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _plain_coercion() -> None:
    """typer (0.29) checks every parameter of the command being run with a pydantic TypeAdapter it
    builds on the spot, unset ones included: importing pydantic and building them is about half of
    `batchery status`'s start-up. batchery's parameters are plain str, int, float, bool and Path (with
    min/max at most), which need no pydantic: those are converted here, the same way, and anything
    else is left to typer. Should typer's internals move, typer simply keeps doing it all."""
    try:
        from dataclasses import dataclass

        from typer import core
        from typer._click.exceptions import BadParameter
        from typer._coercion import RuntimeParam
    except ImportError:
        return
    build = getattr(core, "build_runtime_param", None)
    if build is None:
        return
    names = {str: "text", int: "integer", float: "number", Path: "path", bool: "boolean"}
    words = {"1": True, "true": True, "t": True, "yes": True, "y": True, "on": True,
             "0": False, "false": False, "f": False, "no": False, "n": False, "off": False}

    @dataclass(frozen=True)
    class Plain(RuntimeParam):
        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            kind, info = self.annotation, self.parameter_info
            try:
                if type(value) is kind:
                    converted = value
                elif kind is bool:  # a flag's value from an environment variable, say
                    converted = words[str(value).strip().lower()]
                else:
                    converted = kind(value)
            except (TypeError, ValueError, KeyError):
                raise BadParameter(f"{value!r} is not a valid {names[kind]}.", ctx=ctx, param=param) from None
            low, high = info.min, info.max
            if (low is not None and converted < low) or (high is not None and converted > high):
                bounds = " and ".join(f"{sign}{bound}" for sign, bound in (("x>=", low), ("x<=", high))
                                      if bound is not None)
                raise BadParameter(f"{converted} is not in the range {bounds}.", ctx=ctx, param=param)
            return converted

    def plain_or_typer(descriptor: Any) -> Any:
        info, kind = descriptor.parameter_info, descriptor.annotation
        plain = (kind in names and descriptor.file_annotation is None and info.parser is None
                 and not info.clamp and (kind is not Path or not (info.allow_dash or info.path_type
                                                                   or info.resolve_path or info.exists)))
        return Plain(parameter_info=info, annotation=kind) if plain else build(descriptor)

    core.build_runtime_param = plain_or_typer


_plain_coercion()
jobs.register(app)
collect.register(app)
estimate.register(app)
evaluate.register(app)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"batchery {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print batchery's version and exit.")) -> None:
    """Durable, exactly-once LLM batch jobs over the providers' Batch APIs."""


@app.command()
def info(as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
         store: Path | None = typer.Option(None, "--store", help="Store directory (default: $BATCHERY_HOME, "
                                              "else the per-user data folder).")) -> None:
    """Version, store path, and each provider with the key variables that are set (never their values)."""
    import os
    import platform

    from .. import __version__
    from ..paths import load_env, store_url
    from ..providers import PROVIDERS, provider_class
    from ..store import resolve_store_dir, store_exists
    from ..store_pg import redact

    load_env()
    directory = resolve_store_dir(store)
    url = store_url(store)
    adapters = [provider_class(name) for name in PROVIDERS]
    providers: list[dict] = [{"provider": a.name, "key_variables": list(a.key_variables),
                  "key_set": [v for v in a.key_variables if os.environ.get(v)],
                  "base_url_variable": a.url_variable, "base_url_set": bool(os.environ.get(a.url_variable))}
                 for a in adapters]
    data = {"version": __version__, "python": platform.python_version(),
            "store": redact(url) if url else str(directory.absolute()), "store_exists": store_exists(store),
            "providers": providers}
    if as_json:
        import orjson

        sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
        return
    print(f"batchery {data['version']} (Python {data['python']})")
    print(f"store: {data['store']}" + ("" if data["store_exists"] else " (not created yet)"))
    print("providers:")
    for p in providers:
        key = f"{', '.join(p['key_set'])} set" if p["key_set"] else f"{' or '.join(p['key_variables'])} not set"
        url = f"; {p['base_url_variable']} set" if p["base_url_set"] else ""
        print(f"  {p['provider']:<18} {key}{url}")


emulator_app = typer.Typer(add_completion=False, rich_markup_mode=None)
app.add_typer(emulator_app, name="emulator")


@emulator_app.callback(invoke_without_command=True)
def emulator(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Address to bind; keep the default unless you know why."),
    port: int = typer.Option(8787, min=0, max=65535, help="Port to listen on (0: any free port)."),
    processing_seconds: float = typer.Option(0.0, min=0.0, help="How long each batch takes to complete."),
    faults: str = typer.Option("", help="Faults to inject, e.g. 'http_429=0.1,lost_create=1,seed=7' "
                               "(grammar: batchery.emulator.faults)."),
    rpm: int | None = typer.Option(None, min=1, help="Requests per minute each provider's live endpoint admits "
                                   "(token bucket, one second's worth of burst); unlimited if unset."),
    tpm: int | None = typer.Option(None, min=1, help="Tokens per minute (prompt estimate + max output tokens) "
                                   "each provider's live endpoint admits; unlimited if unset."),
    latency: float = typer.Option(0.0, min=0.0, help="Seconds each live answer waits before it is sent."),
    behaviour: str = typer.Option("", help="The fake models' knobs as JSON, e.g. '{\"invalid_structured\": 0.2, "
                                  "\"invalid_attempts\": 1}' (knobs: batchery.emulator.fake_model)."),
) -> None:
    """Serve a local emulator of the providers' Batch APIs and live endpoints (for tests, demos and dry runs)."""
    if ctx.invoked_subcommand is not None:
        return
    import orjson

    from ..emulator import serve
    from ..emulator.fake_model import Behaviour
    from ..errors import ConfigError

    try:
        knobs = Behaviour.from_dict(orjson.loads(behaviour)) if behaviour else None
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise ConfigError(f"--behaviour: {exc}") from None
    try:
        serve(host=host, port=port, processing_seconds=processing_seconds, faults=faults or None,
              rpm=rpm, tpm=tpm, latency=latency, behaviour=knobs)
    except ValueError as exc:  # a bad --faults spec, found before the socket is bound
        raise ConfigError(f"--faults: {exc}") from None
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: serve() has removed its temporary folder
        print("emulator stopped", file=sys.stderr)
        raise typer.Exit(128 + (_signals[0] if _signals else 2)) from None


@emulator_app.command("run-batch", add_help_option=False,
                      context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def emulator_run_batch(ctx: typer.Context) -> None:
    """A stand-in for `vllm run-batch -i IN -o OUT --model M`, answered by the fake model (what
    `--provider vllm --emulate` runs; knobs: batchery.emulator.run_batch)."""
    from ..emulator.run_batch import main as run_batch

    raise typer.Exit(run_batch(ctx.args))


INTERRUPTED = "interrupted: the job is saved; run the same command again to resume"
_signals: list[int] = []  # the signals that stopped this process, for its exit status


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (a `kill`, a container or service stopping) ends the run as Ctrl-C does: through
    SIGINT's handler, which raises KeyboardInterrupt (or, inside asyncio.run, cancels the live
    runner), so the engine's and live runner's `finally` blocks store what has arrived."""
    import signal

    _signals.append(signum)
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
        return
    raise KeyboardInterrupt  # SIGINT ignored (a background job): stop all the same


def _interrupted(exc: BaseException | None) -> bool:
    """Whether an exit comes from Ctrl-C/SIGTERM: Typer turns KeyboardInterrupt into a silent
    Exit(130), raised `from` it. Follows the chain a traceback would show, so an exit raised
    `from None` (the emulator's) is not taken for an interrupted job."""
    while exc is not None:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return False


def _invoked(argv: list[str]) -> tuple[list, list]:
    """The commands and groups to build: only the one `argv` names first, when it names one. Typer
    builds a click command for every registered one (reading each signature and parameter) before
    it parses the command line: 13 ms for all, 1 ms for `status` alone. batchery's own help (no
    arguments, or --help) lists each command by name and help only: commands without parameters.
    Another option first (--version) or an unknown name (click suggests the nearest) build all."""
    from typer.main import get_command_name

    commands, groups = app.registered_commands, app.registered_groups
    if argv in ([], ["--help"]):
        return [_listed(c) for c in commands], groups
    command = [c for c in commands if (c.name or get_command_name(c.callback.__name__)) == argv[0]]  # type: ignore[union-attr]
    group = [g for g in groups if g.name == argv[0]]
    return (command, group) if command or group else (commands, groups)


def _listed(info: Any) -> Any:
    """A command as `batchery --help` lists it: its name and docstring, on a callback without
    parameters, so that typer reads no signature for it."""
    import copy

    from typer.main import get_command_name

    def listed() -> None:
        """Never called: `batchery --help` only lists the command."""

    listed.__doc__ = info.callback.__doc__
    stub = copy.copy(info)
    stub.name, stub.callback = info.name or get_command_name(info.callback.__name__), listed
    return stub


def main() -> None:
    import gc
    import signal

    # What is loaded by now (typer, the commands) lives as long as the process: the garbage collector
    # need not walk it again in every collection nor at exit (3% of `batchery --help`'s instructions).
    gc.freeze()
    signal.signal(signal.SIGTERM, _on_sigterm)
    built = app.registered_commands, app.registered_groups
    app.registered_commands, app.registered_groups = _invoked(sys.argv[1:])
    try:
        app()
    except (SystemExit, KeyboardInterrupt) as exc:
        if not _interrupted(exc):
            raise
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(128 + (_signals[0] if _signals else signal.SIGINT))  # 130 for Ctrl-C, 143 for SIGTERM
    except BatcheryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except OSError as exc:  # a file batchery was told to use: missing, unreadable, a full disk
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        import sqlite3  # not at the top: `batchery --help` does not load the store

        if not isinstance(exc, sqlite3.Error):
            raise
        from ..store import unusable_store_message

        # a full or read-only disk, a damaged store, or one written by an incompatible build
        print(f"error: {unusable_store_message(None, exc)}", file=sys.stderr)
        sys.exit(2)
    finally:  # as registered, for a caller that runs main() again in this process
        app.registered_commands, app.registered_groups = built
