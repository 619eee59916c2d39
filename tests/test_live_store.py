"""Live answers reach the store before anything else happens to them: a store kept busy by another
process makes the workers wait (with a message) and loses nothing; kill -9 loses at most the
calls in flight."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import orjson
import pytest
from conftest import counted, simulated
from test_live import live_job

from batchery.emulator import Emulator
from batchery.errors import StoreBusyError
from batchery.live import LiveRunner
from batchery.store import DB_NAME, Store


class LockHolder:
    """Another process's long write transaction: once the emulator has served `after` calls (the
    run is sending), it takes the store's write lock and holds it until `release()` says so."""

    def __init__(self, store: Store, emulator, after: int, release: Callable[[], bool]) -> None:
        self.db = sqlite3.connect(store.dir / DB_NAME, isolation_level=None, check_same_thread=False)
        self.emulator, self.after, self.release = emulator, after, release
        self.locked_at: float | None = None  # on the emulator's manual clock, which the runner's waits move
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def start(self) -> LockHolder:
        self.thread.start()
        return self

    def _hold(self) -> None:
        while self.emulator.stats()["live_requests"].get("openai", 0) < self.after:
            time.sleep(0.001)
        self.db.execute("BEGIN IMMEDIATE")
        self.locked_at = self.emulator.clock.now()
        while not self.release():  # watching the runner (its simulated waits), not the wall clock
            time.sleep(0.001)
        self.db.execute("COMMIT")
        self.db.close()


def test_answers_wait_for_a_store_another_process_keeps_locked_and_none_is_lost(store, make_emulator, capfd):
    emulator = make_emulator()
    adapter, job = live_job(store, emulator, 40)
    # The lock is held longer than this connection waits for it (30 s in real use; short here).
    store.db.execute("PRAGMA busy_timeout = 100")
    # held past the 1 s after which the runner says it is waiting, counted in the runner's own time
    holder = LockHolder(store, emulator, after=1, release=lambda: emulator.clock.now() - holder.locked_at >= 1.5)
    holder.start()

    progress = counted(LiveRunner(store, adapter, job, simulated(emulator, concurrency=4))).run()
    holder.thread.join()

    assert progress.done and progress.items == {"succeeded": 40}
    assert store.counts(job.id) == {"succeeded": 40} and emulator.stats()["live_requests"]["openai"] == 40
    assert "store busy (another batchery process is writing); waiting..." in capfd.readouterr().err


def test_a_store_locked_past_the_bound_stops_the_run_with_a_clear_error_and_the_job_resumes(store, make_emulator):
    emulator = make_emulator()
    adapter, job = live_job(store, emulator, 40)
    gave_up = threading.Event()
    holder = LockHolder(store, emulator, after=1, release=gave_up.is_set).start()

    with pytest.raises(StoreBusyError, match=r"could not be written for 0\.3 s .another batchery process is writing"):
        counted(LiveRunner(store, adapter, job, simulated(emulator, concurrency=4, store_wait=0.3))).run()
    gave_up.set()  # the lock was held until the run had given up waiting for it
    holder.thread.join()
    # workers stop at the first answer they cannot store: at most one answer each is lost
    assert emulator.stats()["live_requests"]["openai"] - store.counts(job.id).get("succeeded", 0) <= 4

    again = counted(LiveRunner(store, adapter, store.get_job("live"), simulated(emulator, concurrency=4))).run()
    assert again.done and again.items == {"succeeded": 40}


def test_kill_9_of_a_live_run_loses_at_most_the_calls_in_flight(tmp_path):
    n, concurrency = 600, 8
    requests = tmp_path / "live.jsonl"
    requests.write_bytes(b"".join(orjson.dumps({"id": i, "prompt": f"kill question {i}"}) + b"\n" for i in range(n)))
    store = tmp_path / "store"
    env = {**os.environ, "OPENAI_API_KEY": "test-key"}

    def command(emulator: Emulator) -> list[str]:
        return [sys.executable, "-m", "batchery", "run", str(requests), "--mode", "live", "--model", "gpt-4o-mini",
                "--concurrency", str(concurrency), "--base-url", emulator.base_url("openai"),
                "--store", str(store), "--out", str(tmp_path / "out.jsonl")]

    with Emulator() as first:
        proc = subprocess.Popen(command(first), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while first.stats()["live_requests"].get("openai", 0) < 300:  # well past a periodic flush
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    # Counted once the emulator has stopped, so requests the killed client had sent are in too.
    served = first.stats()["live_requests"]["openai"]
    with Store(store) as st:
        stored = st.counts(st.get_job("live").id).get("succeeded", 0)
    assert served - stored <= concurrency, (served, stored)  # on the old code: up to 256 answers lost

    with Emulator(port=first.port) as second:  # the same endpoint: the job's answers are valid there
        again = subprocess.run(command(second), check=False, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        assert second.stats()["live_requests"]["openai"] == n - stored  # the second run sends only the rest
    rows = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert [r["id"] for r in rows] == [str(i) for i in range(n)] and {r["status"] for r in rows} == {"succeeded"}
