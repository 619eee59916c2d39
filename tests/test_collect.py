"""Jobs left running and finished later: collect, refresh, cancel from anywhere, retry; real engine,
store, official SDKs and the emulator on a manual clock."""

from __future__ import annotations

import orjson
import pytest
from conftest import MODELS, clock_poll, results, start_job

import batchery
from batchery.control import cancel_job, collect_jobs, job_status, refresh_jobs, reopen_job, retry_lines
from batchery.engine import Engine, PollPolicy, prepare_job
from batchery.errors import ConfigError
from batchery.inputs import iter_objects
from batchery.providers import get_provider
from batchery.providers.base import LIST_SCAN, RemoteBatch, poll_listed
from batchery.store import Store


def prompts(n: int, tag: str = "q") -> list[dict]:
    return [{"id": f"{tag}{i}", "prompt": f"{tag} question {i}"} for i in range(n)]


def connector(emulator):
    def connect(provider: str, base_url: str | None):
        return get_provider(provider, base_url=base_url or emulator.base_url(provider), api_key="test-key")
    return connect


def submit(store: Store, emulator, name: str, provider: str, n: int = 6, batch_size: int | None = None,
           max_attempts: int = 3):
    """A job submitted and left running (as `run --no-wait` leaves it), its base URL in its options."""
    adapter = get_provider(provider, base_url=emulator.base_url(provider), api_key="test-key")
    options = {"base_url": emulator.base_url(provider), "max_attempts": max_attempts}
    job, _ = prepare_job(store, name, adapter, MODELS[provider], iter_objects(prompts(n, name)), name, options)
    Engine(store, adapter, job, batch_size=batch_size, max_attempts=max_attempts).run(wait=False)
    return store.get_job(name)


def polls(emulator, before: dict) -> dict:
    """Batch-state reads per provider since `before`: (list calls, get-by-id calls)."""
    now = emulator.stats()
    return {p: (now["batch_lists"][p] - before["batch_lists"].get(p, 0),
                now["batch_gets"][p] - before["batch_gets"].get(p, 0))
            for p in now["batch_lists"] if now["batch_lists"][p] != before["batch_lists"].get(p, 0)
            or now["batch_gets"][p] != before["batch_gets"].get(p, 0)}


def test_collect_polls_every_open_batch_of_every_job_with_one_list_call_per_provider_per_cycle(
        store, make_emulator, tmp_path):
    emulator = make_emulator(processing_seconds=60)
    jobs = [submit(store, emulator, "oa1", "openai", batch_size=2), submit(store, emulator, "oa2", "openai"),
            submit(store, emulator, "an1", "anthropic", batch_size=3), submit(store, emulator, "an2", "anthropic")]
    assert sum(len(store.batches(j.id, ["submitted"])) for j in jobs) == 7

    before = emulator.stats()
    statuses = collect_jobs(store, jobs, connector(emulator), poll=clock_poll(emulator))  # nothing ended yet
    assert [s.state for s in statuses] == ["running"] * 4
    assert polls(emulator, before) == {"openai": (1, 0), "anthropic": (1, 0)}  # not one call per batch

    emulator.clock.advance(61)
    before = emulator.stats()
    paths = {j.name: tmp_path / f"{j.name}.out.jsonl" for j in jobs}
    statuses = collect_jobs(store, jobs, connector(emulator), wait=True, poll=clock_poll(emulator),
                            results_path=lambda job: paths[job.name])
    # one list call each; Anthropic's SDK reads each ended batch once more for its results URL
    assert polls(emulator, before) == {"openai": (1, 0), "anthropic": (1, 3)}
    assert [(s.state, s.requests) for s in statuses] == [("done", {"succeeded": 6})] * 4
    for job in jobs:
        rows = [orjson.loads(line) for line in paths[job.name].read_bytes().splitlines()]
        assert [r["id"] for r in rows] == [f"{job.name}{i}" for i in range(6)]
        assert all(r["status"] == "succeeded" and r["text"] for r in rows)
        assert statuses[jobs.index(job)].results_file == str(paths[job.name])


def test_collect_wait_keeps_polling_and_resends_what_expired_until_every_job_ends(store, make_emulator):
    emulator = make_emulator(processing_seconds=100, completion_window_seconds=60)
    jobs = [submit(store, emulator, "a", "openai", max_attempts=2), submit(store, emulator, "b", "openai",
                                                                           max_attempts=2)]
    statuses = collect_jobs(store, jobs, connector(emulator), wait=True, poll=clock_poll(emulator))
    assert [s.state for s in statuses] == ["done", "done"]
    # each job's batch expired part-done; collect sent the rest again (attempt 2) and waited for it
    assert emulator.stats()["batches_created"]["openai"] == 4
    assert all(set(s.requests) <= {"succeeded", "expired"} and s.total == 6 for s in statuses)
    assert {r.attempts for r in results(store, "a") if r.status == "expired"} <= {2}


def test_collect_leaves_a_job_another_process_runs_to_it_and_goes_on_with_the_others(store, make_emulator):
    emulator = make_emulator(processing_seconds=10)
    busy, free = submit(store, emulator, "busy", "openai"), submit(store, emulator, "free", "openai")
    emulator.clock.advance(11)
    with Store(store.dir) as other, other.job_lock(busy):  # another process holds "busy"
        statuses = collect_jobs(store, [busy, free], connector(emulator))
    assert statuses[0].state == "running" and "being run by another batchery process" in statuses[0].note
    assert statuses[1].state == "done" and statuses[1].note is None


def test_collect_names_a_job_whose_key_is_missing_and_collects_the_rest(store, make_emulator, monkeypatch):
    emulator = make_emulator(processing_seconds=10)
    jobs = [submit(store, emulator, "oa", "openai"), submit(store, emulator, "ge", "gemini")]
    emulator.clock.advance(11)
    for var in ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    statuses = collect_jobs(store, jobs, lambda provider, url: get_provider(provider, base_url=url))
    assert (statuses[0].state, statuses[0].note) == ("done", None)
    assert statuses[1].state == "running" and "GEMINI_API_KEY" in statuses[1].note


def test_a_no_wait_run_that_finds_every_line_done_ends_the_job(store, emulator):
    final = start_job(store, emulator, prompts(5)).run(wait=False)  # instant processing: all back in one cycle
    assert final.done and final.items == {"succeeded": 5}
    assert store.get_job("job").state == "done"


def test_refresh_records_what_the_provider_says_without_collecting(store, make_emulator):
    emulator = make_emulator(processing_seconds=60)
    jobs = [submit(store, emulator, "oa", "openai"), submit(store, emulator, "mi", "mistral")]
    emulator.clock.advance(61)
    before = emulator.stats()
    assert refresh_jobs(store, jobs, connector(emulator)) == {}
    assert polls(emulator, before) == {"openai": (1, 0), "mistral": (1, 0)}
    statuses = batchery.status(store=store.dir)
    assert [(s.job, s.state, s.remote) for s in statuses] == [("oa", "running", {"completed": 1}),
                                                              ("mi", "running", {"SUCCESS": 1})]
    assert statuses[0].requests == {"queued": 6} and statuses[0].batches == {"submitted": 1}


def test_a_cancel_written_by_another_process_stops_the_running_engine_keeping_finished_lines(store, make_emulator):
    emulator = make_emulator(processing_seconds=100)
    engine = start_job(store, emulator, prompts(200))

    def meanwhile(seconds: float) -> None:  # the engine waits between polls: another process cancels
        emulator.clock.advance(50)
        with Store(store.dir) as other:
            job = other.get_job("job")
            assert cancel_job(other, job, connector(emulator)) is None  # busy: the request goes into the store
            assert other.get_job("job").state == "cancelling"

    engine.poll = PollPolicy(initial=1.0, sleep=meanwhile)
    final = engine.run()
    assert store.get_job("job").state == "cancelled"
    assert set(final.items) == {"succeeded", "cancelled"} and 50 <= final.items["succeeded"] <= 150
    assert [b.remote_status for b in store.batches(store.get_job("job").id)] == ["cancelled"]
    assert all(r.text for r in results(store) if r.status == "succeeded")


def test_cancelling_with_nothing_remote_needs_no_provider(store, emulator):
    job, _ = prepare_job(store, "idle", get_provider("openai", base_url=emulator.base_url(), api_key="k"), "m",
                         iter_objects(prompts(4)), "idle")

    def no_key(provider: str, base_url: str | None):
        raise ConfigError("OPENAI_API_KEY is not set")

    final = cancel_job(store, job, no_key)
    assert final.items == {"cancelled": 4} and store.get_job("idle").state == "cancelled"
    assert emulator.stats()["files_uploaded"] == 0


def test_retry_resends_missing_lines_of_a_finished_job_and_keeps_the_rest(store, make_emulator):
    emulator = make_emulator(faults="drop_lines=3,seed=1")
    engine = start_job(store, emulator, prompts(20), max_attempts=1)
    assert engine.run().items == {"succeeded": 17, "missing": 3}
    job = store.get_job("job")
    first = {r.id: r.text for r in results(store) if r.ok}
    with store.job_lock(job):
        assert reopen_job(store, job, retry_lines, "test") == 3
    assert store.get_job("job").state == "running"
    final = start_job(store, emulator, prompts(20), max_attempts=1).run()
    assert final.items == {"succeeded": 20}
    assert {r.id: r.text for r in results(store) if r.id in first} == first
    assert emulator.stats()["requests_processed"] == 23  # the 17 that succeeded were not sent again


def test_lines_the_user_cancelled_are_retried_only_when_asked(store, emulator):
    engine = start_job(store, emulator, prompts(4))
    engine.cancel()
    job = store.get_job("job")
    assert retry_lines(store, job) == []
    assert len(retry_lines(store, job, include_cancelled=True)) == 4
    # a cancel is the user's choice: the status counts it apart from failures, as progress does
    cancelled = job_status(store, job)
    assert cancelled.requests == {"cancelled": 4} and cancelled.failed == 0


def test_running_again_with_a_higher_max_attempts_resends_what_ran_out_of_attempts(tmp_path, make_emulator):
    emulator = make_emulator(faults="drop_lines=2,seed=3")
    kwargs = {"provider": "openai", "model": "gpt-test", "store": tmp_path / "s", "base_url": emulator.base_url(),
              "api_key": "test-key", "poll_interval": 0.01}
    first = batchery.run(prompts(10), max_attempts=1, **kwargs)
    assert sorted(r.status for r in first).count("missing") == 2
    assert [r.status for r in batchery.run(prompts(10), max_attempts=1, **kwargs)] == [r.status for r in first]
    again = batchery.run(prompts(10), max_attempts=2, **kwargs)
    assert all(r.ok for r in again) and emulator.stats()["requests_processed"] == 12


def test_python_submit_returns_at_once_and_collect_finishes_the_job_later(tmp_path, make_emulator):
    emulator = make_emulator(processing_seconds=60)
    common = {"store": tmp_path / "s"}
    name = batchery.submit(prompts(5), provider="anthropic", model=MODELS["anthropic"], job="later",
                           base_url=emulator.base_url("anthropic"), api_key="test-key",
                           out=tmp_path / "later.jsonl", **common)
    assert name == "later"
    status = batchery.status("later", **common)
    assert isinstance(status, batchery.JobStatus) and status.open and status.requests == {"queued": 5}
    assert batchery.collect("later", api_keys={"anthropic": "test-key"}, **common).state == "running"
    emulator.clock.advance(61)
    assert batchery.status(refresh=True, api_keys={"anthropic": "test-key"}, **common)[0].remote == {"ended": 1}
    done = batchery.collect(api_keys={"anthropic": "test-key"}, **common)
    assert [(s.job, s.state, s.requests) for s in done] == [("later", "done", {"succeeded": 5})]
    assert len((tmp_path / "later.jsonl").read_text().splitlines()) == 5
    assert [r.status for r in batchery.results("later", **common)] == ["succeeded"] * 5


def test_submit_refuses_a_provider_without_a_batch_api(tmp_path, emulator):
    with pytest.raises(ConfigError, match="no Batch API"):
        batchery.submit(prompts(1), provider="openai-compatible", model="m", base_url=emulator.base_url(),
                        store=tmp_path / "s")


def test_a_poll_reads_exactly_list_scan_listed_batches_then_fetches_the_rest_one_by_one():
    """Reading one entry past LIST_SCAN would cost a whole extra page of the list (pages of 100)."""
    read = []

    def listing():  # an account with more batches than a poll looks through, none of them wanted
        for i in range(3 * LIST_SCAN):
            read.append(i)
            yield RemoteBatch(f"old{i}", "completed", True)

    found = poll_listed(listing(), ["mine"], lambda remote_id: RemoteBatch(remote_id, "in_progress", False))
    assert len(read) == LIST_SCAN and found == {"mine": RemoteBatch("mine", "in_progress", False)}


def test_lines_and_answers_are_stored_as_blobs_with_null_error_fields_and_each_item_keeps_its_first_outcome(
        tmp_path, emulator):
    """The store binds bodies as bytearrays and writes a plain answer's empty fields as literals (to
    skip sqlite3's adapter look-ups): what is stored must be what binding bytes and None stored."""
    with Store(tmp_path / "store") as store:
        # runs of lines with and without metadata, the last two repeating the first two
        engine = start_job(store, emulator, [{"id": "a", "prompt": "one", "metadata": {"k": 1}}, {"id": "b", "prompt": "two"},
                                             {"id": "c", "prompt": "one"}, {"id": "d", "prompt": "two", "metadata": {"k": 4}}])
        assert engine.run().done
        assert store.db.execute("SELECT row_id, typeof(line), typeof(metadata) FROM items ORDER BY id").fetchall() == [
            ("a", "blob", "blob"), ("b", "blob", "null")]
        assert [(row[0], row[1]) for row in store.export_rows(engine.job.id)] == [
            ("a", b'{"k":1}'), ("b", None), ("c", None), ("d", b'{"k":4}')]
        assert store.db.execute(
            "SELECT status, typeof(text), typeof(response), typeof(input_tokens), error_code, error_message,"
            " cache_write_tokens, source FROM outcomes").fetchall() == [
            ("succeeded", "text", "blob", "integer", None, None, None, "batch")] * 2
        assert [r.text for r in results(store)] == ["Emulated answer to: one", "Emulated answer to: two"] * 2

        # an answer and a failure for one item, in either order and among other runs: the first stays
        with store.transaction():
            store.db.execute("DELETE FROM outcomes")
            answer = ("succeeded", "yes", b'{"ok":1}', 3, 4, None, None, None, None, None)
            failure = ("failed", None, b'{"error":1}', None, None, None, None, "server_error", "boom", None)
            store.record_outcomes([(*answer, 1), (*failure, 1), (*failure, 2), (*answer, 2),
                                   (*answer[:9], 5, 2), ("succeeded", None, None, 1, 2, 0, 0, None, None, None, 2)])
        assert store.db.execute("SELECT item, status, text, response, error_code FROM outcomes ORDER BY item").fetchall() == [
            (1, "succeeded", "yes", b'{"ok":1}', None), (2, "failed", None, b'{"error":1}', "server_error")]
