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
    out = tmp_path / "modules.txt"
    done = subprocess.run([sys.executable, "-c", _PROBE, str(out), *args], capture_output=True, text=True, check=False,
                          env={**os.environ, "BATCHERY_HOME": str(tmp_path / "store"), **(env or {})})
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
    # status on a store that holds a job still needs no SDK, and not the engine that runs jobs
    assert loaded(imported(tmp_path, "status"), (*HEAVY, "batchery.engine")) == []
