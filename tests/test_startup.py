"""Start-up stays fast because each command imports only what it needs: the import graph of real
`batchery` processes, read from their sys.modules at exit (timings live in benchmarks/startup.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SDKS = ("openai", "anthropic", "google.genai", "mistralai", "groq", "together")
HEAVY = (*SDKS, "numpy", "scipy", "pandas", "statsmodels")

# Runs the CLI as the `batchery` script does, and writes the modules it loaded to a file at exit.
_PROBE = ("import atexit, sys\n"
          "out = sys.argv.pop(1)\n"
          "atexit.register(lambda: open(out, 'w').write('\\n'.join(sorted(sys.modules))))\n"
          "sys.argv[0] = 'batchery'\n"
          "from batchery.cli import main\n"
          "main()\n")


def imported(tmp_path: Path, *args: str, env: dict | None = None) -> set[str]:
    """The modules `batchery *args` loaded; a variable set to None in `env` is unset."""
    out = tmp_path / "modules.txt"
    variables = {**os.environ, "BATCHERY_HOME": str(tmp_path / "store"), **(env or {})}
    done = subprocess.run([sys.executable, "-c", _PROBE, str(out), *args], capture_output=True, text=True, check=False,
                          env={k: v for k, v in variables.items() if v is not None})
    assert done.returncode == 0, done.stderr
    return set(out.read_text().split())


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if n in modules)


def test_help_and_status_import_no_sdk_no_numerics_no_pydantic_no_rich_no_toml_no_logging(tmp_path):
    for args in (("--help",), ("status",), ("run", "--help")):
        modules = imported(tmp_path, *args)
        assert loaded(modules, (*HEAVY, "pydantic", "rich", "aiohttp", "httpx", "tomllib", "logging")) == [], args


def test_a_live_run_on_the_fast_path_imports_no_sdk_and_no_http_library(tmp_path, emulator):
    requests = tmp_path / "one.jsonl"
    requests.write_text('{"prompt": "Hello"}\n')
    args = ("run", str(requests), "--model", "gpt-4o-mini", "--base-url", emulator.base_url("openai"),
            "--mode", "live", "--out", str(tmp_path / "out.jsonl"))
    modules = imported(tmp_path, *args, env={"OPENAI_API_KEY": "test-key"})
    assert "batchery.live.h1" in modules and loaded(modules, (*HEAVY, "aiohttp", "httpx", "pydantic", "rich")) == []
    # nor what only a proxy (urllib.request, with http.client and email) or importlib.metadata would need
    assert loaded(modules, ("urllib.request", "http.client", "email", "importlib.metadata")) == []
    assert '"status":"succeeded"' in (tmp_path / "out.jsonl").read_text()
    # status on a store that holds a job still needs no SDK, and not the engine that runs jobs nor
    # the results writer; once its prices are cached (genai-prices not imported), not csv nor hashlib
    # either (only a PostgreSQL store's folder name needs it)
    assert loaded(imported(tmp_path, "status"), (*HEAVY, "batchery.engine", "batchery.export")) == []
    assert loaded(imported(tmp_path, "status"), ("genai_prices", "batchery.export", "csv", "hashlib")) == []


def test_status_with_no_store_yet_loads_no_job_code_no_prices_and_no_platformdirs(tmp_path):
    # the default store (XDG_DATA_HOME's, a temporary folder): found by platformdirs' rule, not its import
    modules = imported(tmp_path, "status", env={"BATCHERY_HOME": None})
    assert loaded(modules, ("batchery.control", "batchery.pricing", "batchery.providers", "platformdirs",
                            "hashlib")) == []


def test_only_the_command_invoked_is_built_and_help_still_lists_every_one(monkeypatch, capsys):
    """typer builds a click command (reading its signature) for every registered command before it
    parses the command line, unless main() registers only the one invoked."""
    import signal

    import pytest
    import typer.main

    from batchery import cli

    built: list[str] = []
    parameters: dict[str, int] = {}  # of each command built
    build = typer.main.get_command_from_info

    def counted(*args, **kwargs):
        command = build(*args, **kwargs)
        built.append(command.name)
        parameters[command.name] = len(command.params)
        return command

    monkeypatch.setattr(typer.main, "get_command_from_info", counted)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # main()'s SIGTERM handler stays out of pytest

    def batchery(*args: str) -> tuple[list[str], str]:
        built.clear()
        monkeypatch.setattr(sys, "argv", ["batchery", *args])
        with pytest.raises(SystemExit):
            cli.main()
        return sorted(built), capsys.readouterr().out

    names, out = batchery("status", "--help")
    assert names == ["status"] and "batchery status [OPTIONS] [job]" in out and "--refresh" in out
    names = batchery("eval", "status", "--help")[0]  # eval's commands, and no other
    assert {"run", "status", "report"} <= set(names) and not {"results", "collect", "info", "run-batch"} & set(names)
    everything, out = batchery("--help")  # the commands listed by name and help, no parameter read
    assert parameters["results"] == parameters["collect"] == 0
    with monkeypatch.context() as full:
        full.setattr(cli, "_listed", lambda command: command)  # each one built in full, as typer would
        assert batchery("--help") == (everything, out)
    commands = {"run", "status", "results", "cancel", "list", "delete", "collect", "retry", "estimate", "info",
                "eval", "emulator"}
    assert commands <= {line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()}
    assert len(everything) > len(commands)  # every command, eval's and the emulator's included
    assert batchery("stauts")[0] == everything  # an unknown name: all of them, for click's "did you mean"
    assert batchery("status", "--help")[0] == ["status"] and sorted(built) == ["status"]
    assert len(cli.app.registered_commands) + len(cli.app.registered_groups) == len(commands)  # put back
