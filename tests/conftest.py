"""Shared fixtures: a real emulator on 127.0.0.1 with a manual clock, and helpers to run jobs
through the real engine and the official SDK against it."""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from batchery.emulator import Emulator, ManualClock
from batchery.engine import Engine, PollPolicy, prepare_job
from batchery.export import iter_results
from batchery.inputs import iter_objects
from batchery.live import LivePolicy, LiveRunner
from batchery.providers import get_provider
from batchery.store import Store

# One real model name per provider, for tests that run every provider.
MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-haiku-4-5",
    "gemini": "gemini-2.5-flash",
    "mistral": "mistral-small-latest",
    "together": "meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "groq": "llama-3.1-8b-instant",
    "vertex": "gemini-2.5-flash",
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


REPO = Path(__file__).resolve().parents[1]
# Tests of store behaviour run on both backends: @both_backends, with the `store` or
# `store_location` fixture.
both_backends = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(scope="session")
def pg_server():
    """The admin URL of a PostgreSQL server: $BATCHERY_TEST_PG, else one scripts/pg-test-server
    starts for this session where a server is installed. Without one the PostgreSQL tests skip,
    saying why; with BATCHERY_REQUIRE_PG=1 (CI) they fail instead."""
    url, started = os.environ.get("BATCHERY_TEST_PG"), None
    if not url:
        run = subprocess.run([str(REPO / "scripts" / "pg-test-server"), "start"], capture_output=True, text=True,
                             check=False)
        if run.returncode == 0:
            started = dict(part.split("=", 1) for part in run.stdout.split()[1:])
            url = started["BATCHERY_TEST_PG"]
        else:
            reason = f"no PostgreSQL server for the tests (set BATCHERY_TEST_PG): {run.stderr.strip()[-300:]}"
            if os.environ.get("BATCHERY_REQUIRE_PG"):
                pytest.fail(reason)
            pytest.skip(reason)
    yield url
    if started:
        subprocess.run([str(REPO / "scripts" / "pg-test-server"), "stop", started["PG_TEST_DIR"]], check=False)


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh, empty database on the test server for this test alone."""
    import psycopg

    name = f"batchery_{secrets.token_hex(6)}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield pg_server.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def backend(request) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture
def store_location(backend, tmp_path, request) -> str | Path:
    """Where a test's store is: a folder (SQLite) or a fresh database's URL (PostgreSQL)."""
    return request.getfixturevalue("pg_url") if backend == "postgresql" else tmp_path / "store"


@pytest.fixture
def store(store_location) -> Store:
    with Store(store_location) as st:
        yield st


def clock_poll(emulator: Emulator) -> PollPolicy:
    """Polling whose waits advance the emulator's clock instead of sleeping."""
    return PollPolicy(initial=1.0, maximum=30.0, sleep=emulator.clock.advance)


class CallsInFlight:
    """Live calls a counted() runner has sent and not yet had back."""

    def __init__(self) -> None:
        self.n = 0
        self.counted = False


def simulated(emulator: Emulator, **policy) -> LivePolicy:
    """A live policy in the emulator's simulated time: a client's wait moves the emulator's manual
    clock instead of sleeping. The emulator answers at once, so, as in real time, every call already
    sent is answered before the clock moves on: a wait first lets the runner's calls in flight come
    back (in real time, however long a loaded machine takes), which counted() keeps count of. A wait
    that only settled for a millisecond let a call reach a loaded emulator after the clock had moved,
    in a later rate-limit window than the client had counted it in (a 429 a paced client never gets)."""
    clock, calls = emulator.clock, CallsInFlight()

    async def sleep(seconds: float) -> None:
        assert calls.counted, "the LiveRunner of a simulated() policy must be wrapped in counted()"
        await asyncio.sleep(0)  # a worker that has just been let through sends now, at this time
        while calls.n:  # noqa: ASYNC110 - polled: several waits may be pending, each run has its own loop
            await asyncio.sleep(0.001)  # real time only: the simulated clock stands still
        clock.advance(max(seconds, 0.0))
        await asyncio.sleep(0)

    sleep.calls = calls  # type: ignore[attr-defined]  # found by counted()
    return LivePolicy(clock=clock.now, sleep=sleep, **policy)


def counted(runner: LiveRunner) -> LiveRunner:
    """The runner of a simulated() policy, its calls in flight counted for the policy's waits."""
    calls: CallsInFlight = runner.policy.sleep.calls  # type: ignore[attr-defined]
    calls.counted = True
    send = runner.send

    async def counting(body: dict, model: str):
        calls.n += 1
        try:
            return await send(body, model)
        finally:
            calls.n -= 1

    runner.send = counting
    return runner


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
