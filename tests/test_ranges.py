"""Per-batch item ranges (docs/ranges-design.md): a batch covers a run of fresh items, which planning
and collecting leave untouched; only an item that leaves its batch's course is written out, and
every reader tells the same story as when each item carried its own state."""

from __future__ import annotations

from conftest import both_backends, counted, results, simulated, start_job

from batchery.store import Store


def _item_rows(store: Store, job_id: int) -> list[tuple]:
    return store.db.execute("SELECT state, batch, attempts FROM items WHERE job_id = ? ORDER BY id", (job_id,)).fetchall()


@both_backends
def test_batches_cover_their_fresh_items_as_ranges_per_model_and_write_no_per_item_state(store, emulator):
    # two models interleaved, two lines a batch: model a's 3 lines take two batches, model b's 2 one
    lines = [{"id": f"r{i}", "prompt": f"question {i}", "model": "gpt-a" if i % 2 == 0 else "gpt-b"} for i in range(5)]
    engine = start_job(store, emulator, lines, batch_size=2)
    job = store.get_job("job")
    engine._plan()
    assert store.counts(job.id) == {"queued": 5} and store.attempts(job.id) == {1: 5}
    assert _item_rows(store, job.id) == [("new", None, 0)] * 5  # planning wrote no item
    ranges = store.db.execute("SELECT model, first_item, last_item, n_requests FROM batches WHERE job_id = ?"
                              " ORDER BY id", (job.id,)).fetchall()
    first = store.db.execute("SELECT MIN(id) FROM items WHERE job_id = ?", (job.id,)).fetchone()[0]
    assert [(m, a - first, z - first, n) for m, a, z, n in ranges] == [
        ("gpt-a", 0, 2, 2), ("gpt-a", 4, 4, 1), ("gpt-b", 1, 3, 2)]
    assert not store.has_pending(job.id) and store.pending_models(job.id) == []

    assert engine.run().items == {"succeeded": 5}
    assert _item_rows(store, job.id) == [("new", None, 0)] * 5  # nor did collecting
    assert store.attempts(job.id) == {1: 5}
    remote = {b.id: (b.model, b.remote_id) for b in store.batches(job.id)}
    rows = results(store)
    assert [(r.id, r.status, r.attempts) for r in rows] == [(f"r{i}", "succeeded", 1) for i in range(5)]
    assert all(r.text.endswith(f"question {i}") for i, r in enumerate(rows))
    assert [(r.model, r.batch_id) for r in rows] == [remote[b] for b in (1, 3, 1, 3, 2)]
    assert sum(emulator.stats()["batches_created"].values()) == 3
    # another job asking the same takes these answers, with the batch and attempts they came from
    start_job(store, emulator, lines, name="again")
    assert [(r.status, r.attempts, r.batch_id) for r in results(store, "again")] == [
        (r.status, r.attempts, r.batch_id) for r in rows]


@both_backends
def test_a_retried_line_is_written_out_and_sent_again_while_the_rest_stay_a_range(store_location, make_emulator):
    # Each batch needs 100 s but expires at 60 s: every attempt finishes part of what it is sent,
    # and the rest is sent again in a new batch (spelled out, as before ranges).
    emulator = make_emulator(processing_seconds=100, completion_window_seconds=60)
    with Store(store_location) as store:
        final = start_job(store, emulator, [{"prompt": f"q {i}"} for i in range(40)], max_attempts=3).run()
        job = store.get_job("job")
        rows = results(store)
        items = _item_rows(store, job.id)
        batches = {b.id: b for b in store.batches(job.id)}
        assert final.items == store.counts(job.id) and sum(final.items.values()) == 40
        assert {r.attempts for r in rows} == {1, 2, 3}
        # never billed twice: the lines sent are exactly the attempts the rows report
        assert sum(b.n_requests for b in batches.values()) == sum(r.attempts for r in rows)
        assert store.attempts(job.id) == {a: sum(r.attempts == a for r in rows) for a in (1, 2, 3)}
        for row, (state, batch, attempts) in zip(rows, items, strict=True):
            if row.attempts == 1:  # answered by its first batch: still a fresh item of its range
                assert (state, batch, attempts) == ("new", None, 0)
                assert row.batch_id == batches[1].remote_id
            else:  # written out when it was sent again, then done in its last batch
                assert (state, attempts) == ("done", row.attempts) and row.batch_id == batches[batch].remote_id


@both_backends
def test_cancel_closes_a_planned_range_and_uncovered_items_and_a_reopened_line_is_sent_once_more(store, emulator):
    engine = start_job(store, emulator, [{"id": f"r{i}", "prompt": f"q {i}"} for i in range(5)])
    job = store.get_job("job")
    rows = store.pending_requests(job.id, "gpt-test", 2)
    with store.transaction():  # a batch planned over the first two lines, never sent; three uncovered
        store.insert_batch(job.id, "t-1", "gpt-test", rows[-1][0], 2, 10)
    assert store.counts(job.id) == {"queued": 2, "pending": 3}
    assert engine.cancel().items == {"cancelled": 5} == store.counts(job.id)
    assert emulator.stats()["files_uploaded"] == 0
    assert [(r.status, r.attempts) for r in results(store)] == [("cancelled", 1)] * 2 + [("cancelled", 0)] * 3
    # the planned batch's lines stay its range (closed with it); the uncovered ones were written out
    assert _item_rows(store, job.id) == [("new", None, 0)] * 2 + [("done", None, 0)] * 3
    assert not store.has_pending(job.id)

    first = rows[0][0]
    with store.transaction():  # one line of the closed range, and one written-out line, go back
        store.reopen([first, first + 3])
        store.set_job_state(job.id, "running")
    assert store.counts(job.id) == {"pending": 2, "cancelled": 3}
    assert store.pending_models(job.id) == ["gpt-test"] and store.has_pending(job.id)
    job = store.get_job("job")
    assert start_job(store, emulator, [{"id": f"r{i}", "prompt": f"q {i}"} for i in range(5)]).run().items == {
        "succeeded": 2, "cancelled": 3}
    out = results(store)
    assert [(r.id, r.status, r.attempts) for r in out] == [
        ("r0", "succeeded", 2), ("r1", "cancelled", 1), ("r2", "cancelled", 0), ("r3", "succeeded", 1),
        ("r4", "cancelled", 0)]
    assert out[0].batch_id == out[3].batch_id == store.batches(job.id)[-1].remote_id
    assert emulator.stats()["batches_created"]["openai"] == 1


class _Killed(BaseException):
    """A process death in the middle of a collect: nothing after it runs (not an Exception)."""


def test_a_collect_killed_between_its_outcome_chunks_resumes_with_the_range_intact(store, emulator, monkeypatch):
    import batchery.engine
    from batchery.providers.openai import OpenAIBatch

    class DiesMidDownload(OpenAIBatch):
        deaths = 1

        def outcomes(self, remote):
            for n, outcome in enumerate(super().outcomes(remote)):
                if n == 3 and self.deaths:
                    self.deaths -= 1
                    raise _Killed
                yield outcome

    monkeypatch.setattr(batchery.engine, "_CHUNK", 2)  # outcomes commit two at a time
    provider = DiesMidDownload(api_key="k", base_url=emulator.base_url("openai"))
    lines = [{"id": f"r{i}", "prompt": f"q {i}"} for i in range(5)]
    engine = start_job(store, emulator, lines, provider=provider)
    job = store.get_job("job")
    try:
        engine.run()
    except _Killed:
        pass
    # two answers were committed, the batch is still submitted: every line still counts as queued
    assert store.db.execute("SELECT COUNT(*) FROM outcomes").fetchone() == (2,)
    assert [b.state for b in store.batches(job.id)] == ["submitted"] and store.counts(job.id) == {"queued": 5}
    assert start_job(store, emulator, lines, provider=provider).run().items == {"succeeded": 5}
    assert [(r.status, r.attempts) for r in results(store)] == [("succeeded", 1)] * 5
    assert _item_rows(store, job.id) == [("new", None, 0)] * 5
    assert emulator.stats()["batches_created"]["openai"] == 1


def test_a_reasked_line_is_written_out_with_its_history_while_a_plain_line_stays_in_its_range(store, make_emulator):
    from test_structured import bad, requests

    emulator = make_emulator(behaviour=bad(1))  # each structured line's first answer does not fit
    engine = start_job(store, emulator, [*requests(2), {"id": "plain", "prompt": "no schema here"}], max_attempts=3)
    assert engine.run().items == {"succeeded": 3}
    job = store.get_job("job")
    rows = store.db.execute("SELECT row_id, state, batch, attempts FROM items WHERE job_id = ? ORDER BY id",
                            (job.id,)).fetchall()
    first, second = (b.id for b in store.batches(job.id))
    assert rows == [("r0", "done", second, 2), ("r1", "done", second, 2), ("plain", "new", None, 0),
                    ("r0", "reasked", first, 1), ("r1", "reasked", first, 1)]
    assert [(r.id, r.attempts) for r in results(store)] == [("r0", 2), ("r1", 2), ("plain", 1)]
    assert sum(b.n_requests for b in store.batches(job.id)) == 5 and store.attempts(job.id) == {2: 2, 1: 1}


def test_live_mode_sends_only_the_lines_no_range_covers(store, emulator):
    from test_live import live_job

    from batchery.live import LiveRunner

    adapter, job = live_job(store, emulator, 6)
    rows = store.pending_requests(job.id, "gpt-4o-mini", 3)
    with store.transaction():  # a batch over the first three lines, refused; one line goes back (explicit)
        batch = store.insert_batch(job.id, "t-1", "gpt-4o-mini", rows[-1][0], 3, 10)
        store.close_batch_items(batch, "failed", "batch_rejected", "refused")
        store.update_batch(batch, state="collected")
        store.reopen([rows[1][0]])
    assert store.counts(job.id) == {"failed": 2, "pending": 4}
    policy = simulated(emulator, rpm=6000, concurrency=4)
    progress = counted(LiveRunner(store, adapter, job, policy)).run()
    assert progress.items == store.counts(job.id) == {"failed": 2, "succeeded": 4}
    assert sum(emulator.stats()["live_requests"].values()) == 4
    assert [(r.id, r.status, r.attempts) for r in results(store, "live")] == [
        ("r0", "failed", 1), ("r1", "succeeded", 2), ("r2", "failed", 1), ("r3", "succeeded", 1),
        ("r4", "succeeded", 1), ("r5", "succeeded", 1)]
    assert _item_rows(store, job.id)[0] == ("new", None, 0)  # the refused batch's line stays in its range
