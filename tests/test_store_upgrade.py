"""A store written by an older batchery opens, upgrades in place and keeps every answer."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict
from pathlib import Path

import orjson
import pytest
from conftest import cli, results, start_job

from batchery.store import _MIGRATIONS, DB_NAME, Store


def _as_version_2(path: Path) -> None:
    """Turn the store back into what batchery wrote before migration 3: outcomes keyed by item."""
    db = sqlite3.connect(path / DB_NAME, isolation_level=None)
    cols = ("status, text, response, input_tokens, output_tokens, cached_tokens, reasoning_tokens, error_code,"
            " error_message, source")
    db.executescript(f"""
        BEGIN;
        CREATE TABLE outcomes_2 (
            item INTEGER PRIMARY KEY, status TEXT NOT NULL, text TEXT, response BLOB, input_tokens INTEGER,
            output_tokens INTEGER, cached_tokens INTEGER, reasoning_tokens INTEGER, error_code TEXT,
            error_message TEXT, source TEXT NOT NULL DEFAULT 'batch');
        INSERT INTO outcomes_2 (item, {cols}) SELECT item, {cols} FROM outcomes;
        DROP TABLE outcomes;
        ALTER TABLE outcomes_2 RENAME TO outcomes;
        DROP TABLE IF EXISTS structured;  -- migration 4's
        -- migration 6's: fresh items written out as their batches say, then the ranges dropped
        UPDATE items AS i SET state = CASE b.state WHEN 'collected' THEN 'done' ELSE 'queued' END, batch = b.id,
            attempts = i.attempts + 1 FROM batches AS b WHERE i.state = 'new' AND b.job_id = i.job_id
            AND b.model = i.model AND i.id BETWEEN b.first_item AND b.last_item;
        UPDATE items SET state = 'pending' WHERE state = 'new';
        DROP INDEX items_new;
        DROP INDEX batches_range;
        ALTER TABLE batches DROP COLUMN first_item;
        ALTER TABLE batches DROP COLUMN last_item;
        PRAGMA user_version = 2;
        COMMIT;
    """)
    db.close()


def test_a_store_of_the_previous_version_upgrades_keeping_answers_and_resumes_its_jobs(tmp_path, emulator):
    path = tmp_path / "store"
    with Store(path) as store:
        start_job(store, emulator, [{"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"},
                                    {"id": "c", "prompt": "one"}], name="done").run()
        before = results(store, "done")
        start_job(store, emulator, [{"id": "x", "prompt": "one"}, {"id": "y", "prompt": "three"}], name="waiting")
    _as_version_2(path)

    with Store(path) as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(_MIGRATIONS)
        assert results(store, "done") == before  # answers, usage and the repeated line's, unchanged
        engine = start_job(store, emulator, [{"id": "x", "prompt": "one"}, {"id": "y", "prompt": "three"}],
                           name="waiting")
        assert engine.run().done
        after = results(store, "waiting")
        assert [r.status for r in after] == ["succeeded", "succeeded"]
        assert after[0].text == before[0].text
        # an outcome stored again (a repeated collect) still keeps the first one
        first = store.db.execute("SELECT item, status FROM outcomes ORDER BY item LIMIT 1").fetchone()
        with store.transaction():
            store.record_outcomes([("failed", None, None, None, None, None, None, "x", "y", None, first[0])])
        assert store.db.execute("SELECT status FROM outcomes WHERE item = ?", (first[0],)).fetchall() == [(first[1],)]
    with Store(path, read_only=True) as store:  # a reader of the upgraded store needs no upgrade
        assert results(store, "done") == before


FIXTURES = Path(__file__).parent / "fixtures" / "stores"
DONE_INPUT = [{"id": "a", "prompt": "Name a colour.", "max_tokens": 20},
              {"id": "b", "prompt": "Name a fruit.", "max_tokens": 20},
              {"id": "c", "prompt": "Name a colour.", "max_tokens": 20},
              {"id": "d", "prompt": "Name a planet.", "max_tokens": 20, "metadata": {"topic": "space"}}]


def _old_store(path: Path, version: int) -> Path:
    """The store that batchery of schema `version` wrote (tests/fixtures/stores/make.sh ran it)."""
    path.mkdir()
    db = sqlite3.connect(path / DB_NAME, isolation_level=None)
    db.executescript((FIXTURES / f"v{version}.sql").read_text())
    assert db.execute("PRAGMA user_version").fetchone()[0] == version
    db.close()
    return path


@pytest.mark.parametrize("version", range(1, len(_MIGRATIONS)))
def test_a_store_of_every_earlier_schema_version_upgrades_with_its_jobs_and_results_intact(tmp_path, version):
    path = _old_store(tmp_path / "store", version)
    expected = [orjson.loads(line) for line in (FIXTURES / f"v{version}.expected.jsonl").read_bytes().splitlines()]

    with Store(path) as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(_MIGRATIONS)
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        got = []
        for name in ("done", "second"):
            job = store.get_job(name)
            assert job is not None and job.state == "done"
            for r in results(store, name):
                assert r.response is not None and r.text in orjson.dumps(r.response).decode()
                row = {"job": name, **{k: v for k, v in asdict(r).items() if k != "response"}}
                if row["metadata"] is None:
                    del row["metadata"]
                got.append(row)
        assert got == expected  # every line, its answer, usage, attempts, batch and metadata as that version exported
        # each answer's source (migration 2): the second job reused one answer of the first (cache)
        # and sent the other in a batch (v1) or live (v2 stored live answers as such)
        sources = store.db.execute(
            "SELECT o.source FROM outcomes o JOIN items i ON i.id = o.item JOIN jobs j ON j.id = i.job_id"
            " WHERE j.name = 'second' ORDER BY i.id").fetchall()
        assert sources == [("cache",), ("batch" if version == 1 else "live",)]

    # the finished job is found as finished by today's CLI: nothing is sent again (the same bytes
    # make.sh wrote, as the input's fingerprint is over its bytes)
    (tmp_path / "done.jsonl").write_text("".join(json.dumps(r) + "\n" for r in DONE_INPUT))
    code, _, err = cli("run", str(tmp_path / "done.jsonl"), "--emulate", "--job", "done", "--model", "gpt-4o-mini",
                         "--store", str(path), "--out", str(tmp_path / "again.jsonl"))
    assert code == 0, err
    assert [orjson.loads(line)["text"] for line in (tmp_path / "again.jsonl").read_bytes().splitlines()] == \
        [r["text"] for r in expected if r["job"] == "done"]
    with Store(path, read_only=True) as store:
        assert store.db.execute("SELECT count(*) FROM batches WHERE job_id = ?", (store.get_job("done").id,)).fetchone() \
            == (2,)  # the two batches that version sent, and no new one
