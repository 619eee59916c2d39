"""Several writers on one store: ingest in chunks that leave the write lock free between them, and
processes (or threads) racing on a fresh store or on the same job get a run or the job-lock
message, never "the store cannot be read"."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from conftest import both_backends

import batchery
from batchery.engine import prepare_job
from batchery.errors import InputError, JobError
from batchery.providers import get_provider
from batchery.store import Store

N = 30_000  # three ingest chunks


def lines(n: int, tag: str = "q") -> Iterator[tuple[str, dict]]:
    for i in range(n):
        yield f"in.jsonl:{i + 1}", {"id": i, "prompt": f"{tag} {i}", "max_tokens": 8}


def adapter():
    return get_provider("openai", base_url="http://127.0.0.1:9/v1", api_key="test-key")  # never called


def other_writer(store: Store) -> sqlite3.Connection:
    """A second connection that will not wait for the write lock: it either has it at once or fails."""
    db = Store(store.location).db
    db.execute("PRAGMA busy_timeout = 0")
    return db


@both_backends
def test_a_large_ingest_commits_in_chunks_and_a_bad_last_line_still_leaves_nothing_behind(store, monkeypatch):
    monkeypatch.setattr(batchery.engine, "_INGEST_CHUNK", 10_000)  # the test's input stays small
    seen = {}

    def source():
        for where, obj in lines(N - 1):
            if obj["id"] == 15_000:  # mid-ingest: the first chunk is in, the second is being read
                other = other_writer(store)
                other.execute("BEGIN IMMEDIATE")  # on the old code: "database is locked" (one long transaction)
                seen["state"], seen["items"] = other.execute(
                    "SELECT state, (SELECT COUNT(*) FROM items WHERE job_id = jobs.id) FROM jobs").fetchone()
                other.execute("ROLLBACK")
                other.close()
            yield where, obj
        yield f"in.jsonl:{N}", {"id": N, "temperature": 1}  # neither prompt nor messages

    with pytest.raises(InputError, match=f"in.jsonl:{N}"):
        prepare_job(store, "big", adapter(), "gpt-4o-mini", source(), "fp")

    assert seen == {"state": "ingesting", "items": 10_000}  # committed, but not a job anyone runs
    assert store.get_job("big") is None and store.list_jobs() == []
    assert store.db.execute("SELECT (SELECT COUNT(*) FROM items) + (SELECT COUNT(*) FROM duplicates)"
                            " + (SELECT COUNT(*) FROM events)").fetchone() == (0,)


@both_backends
def test_an_ingest_cut_short_is_read_again_by_the_next_run_and_never_taken_over_while_it_runs(store, tmp_path,
                                                                                              monkeypatch):
    monkeypatch.setattr(batchery.engine, "_INGEST_CHUNK", 10_000)
    def dying():
        for where, obj in lines(N):
            if obj["id"] == 15_000:
                # another process on the same job meanwhile: the ingest is being run, not crashed
                with Store(store.location) as other, pytest.raises(JobError, match="being run by another batchery process"):
                    prepare_job(other, "big", adapter(), "gpt-4o-mini", lines(N), "fp")
                raise KeyboardInterrupt  # the process dies here (no clean-up runs for a kill either)
            yield where, obj

    with pytest.raises(KeyboardInterrupt):
        prepare_job(store, "big", adapter(), "gpt-4o-mini", dying(), "fp")
    assert store.get_job("big").state == "ingesting"  # half read: never handed to an engine

    job, resumed = prepare_job(store, "big", adapter(), "gpt-4o-mini", lines(N), "fp")
    assert not resumed and job.state == "running" and job.n_rows == N
    assert store.counts(job.id) == {"pending": N} and len(store.list_jobs()) == 1


def _racer(tmp_path: Path, args: list[str]) -> list[str]:
    """`batchery` as a process whose imports are done and which then waits for the others, so that
    all of them open the fresh store at the same moment."""
    ready, go = tmp_path / f"ready-{os.urandom(4).hex()}", tmp_path / "go"
    code = (
        "import sys, time; from pathlib import Path\n"
        "import batchery.api, batchery.emulator, batchery.store, openai\n"
        "from batchery.cli import main\n"
        f"Path({str(ready)!r}).touch()\n"
        f"while not Path({str(go)!r}).exists(): time.sleep(0.001)\n"
        f"sys.argv = ['batchery', *{args!r}]\n"
        "main()\n"
    )
    return [sys.executable, "-c", code]


@both_backends
def test_eight_processes_on_a_fresh_store_all_run_or_get_the_job_lock_message(tmp_path, store_location):
    store = store_location
    names = ["a", "b", "c", "d", "e", "a", "a", "b"]  # five jobs, three started twice at once
    for name in set(names):
        (tmp_path / f"{name}.jsonl").write_bytes(
            b"".join(orjson.dumps({"id": i, "prompt": f"{name} {i}"}) + b"\n" for i in range(5)))
    procs = [subprocess.Popen(
        _racer(tmp_path, ["run", str(tmp_path / f"{name}.jsonl"), "--emulate", "--model", "gpt-4o-mini",
                          "--store", str(store), "--out", str(tmp_path / f"{name}-{k}.out.jsonl")]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k, name in enumerate(names)]
    try:
        while len(list(tmp_path.glob("ready-*"))) < len(procs):
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
            time.sleep(0.02)  # waiting for the others to be ready, not for time to pass
        (tmp_path / "go").touch()
        outcomes = [(name, p.wait(timeout=120), p.communicate()[1]) for name, p in zip(names, procs)]
    finally:
        for p in procs:
            p.kill()

    for name, code, stderr in outcomes:
        assert "cannot be read" not in stderr and "Traceback" not in stderr, stderr
        assert code == 0 or (names.count(name) > 1 and code == 2
                             and "is being run by another batchery process" in stderr), (name, stderr)
    assert sum(code == 0 for name, code, _ in outcomes if name == "a") >= 1
    with Store(store) as st:
        assert {j.name: (j.state, st.counts(j.id)) for j in st.list_jobs()} == {
            name: ("done", {"succeeded": 5}) for name in "abcde"}


def test_twelve_concurrent_arun_calls_on_a_fresh_store_all_succeed(tmp_path):
    async def main():
        return await asyncio.gather(*(
            batchery.arun([{"id": i, "prompt": f"caller {k} question {i}"} for i in range(3)],
                          model="gpt-4o-mini", emulate=True, store=tmp_path / "store")
            for k in range(12)))

    answers = asyncio.run(main())
    assert [[r.text for r in results] for results in answers] == [
        [f"Emulated answer to: caller {k} question {i}" for i in range(3)] for k in range(12)]
