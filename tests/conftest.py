"""Shared fixtures: a real emulator on 127.0.0.1 with a manual clock, and helpers to run jobs
through the real engine and the official SDK against it."""

from __future__ import annotations

from pathlib import Path
import io
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest

from batchery.emulator import Emulator, ManualClock
from batchery.engine import Engine, PollPolicy, prepare_job
from batchery.inputs import iter_objects
from batchery.providers import get_provider
from batchery.export import iter_results
from batchery.store import Store


# One real model name per provider, for tests that run every provider.
MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-haiku-4-5",
    "gemini": "gemini-2.5-flash",
    "mistral": "mistral-small-latest",
    "together": "meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "groq": "llama-3.1-8b-instant",
}


@pytest.fixture(autouse=True)
def user_data_dir(tmp_path_factory, monkeypatch) -> Path:
    """The per-user data folder (where the default store lives) is a temporary one in every test,
    CLI subprocesses included: no test reads or writes the real user's store."""
    data = tmp_path_factory.mktemp("xdg-data")
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    monkeypatch.delenv("BATCHERY_HOME", raising=False)
    return data / "batchery"


@pytest.fixture
def make_emulator():
    started: list[Emulator] = []

    def make(**config) -> Emulator:
        emulator = Emulator(clock=ManualClock(), **config).start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emulator(make_emulator) -> Emulator:
    return make_emulator()


@pytest.fixture
def store(tmp_path) -> Store:
    with Store(tmp_path / "store") as st:
        yield st


def clock_poll(emulator: Emulator) -> PollPolicy:
    """Polling whose waits advance the emulator's clock instead of sleeping."""
    return PollPolicy(initial=1.0, maximum=30.0, sleep=emulator.clock.advance)


def start_job(store: Store, emulator: Emulator, requests: list[dict], *, name: str = "job",
              model: str = "gpt-test", batch_size: int | None = None, provider=None,
              max_attempts: int = 3) -> Engine:
    provider = provider or get_provider("openai", base_url=emulator.base_url("openai"), api_key="test-key")
    job, _ = prepare_job(store, name, provider, model, iter_objects(requests), fingerprint=name)
    return Engine(store, provider, job, batch_size=batch_size, max_attempts=max_attempts, poll=clock_poll(emulator))


def results(store: Store, name: str = "job") -> list:
    job = store.get_job(name)
    return list(iter_results(store, job.id, job.provider))


def cli(*args: str) -> tuple[int, str, str]:
    """Run `batchery ARGS` in this process as the console script does; (exit status, stdout, stderr).
    An exception main() lets escape is a traceback to the user: it fails the test as it is."""
    from batchery.cli import main

    out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8"), io.StringIO()
    argv, sys.argv = sys.argv, ["batchery", *args]
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    finally:
        sys.argv = argv
    out.flush()
    return code, out.buffer.getvalue().decode(errors="replace"), err.getvalue()  # type: ignore[attr-defined]
