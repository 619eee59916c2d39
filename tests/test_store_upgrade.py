"""A store written by an older batchery opens, upgrades in place and keeps every answer."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conftest import results, start_job

from batchery.store import DB_NAME, Store


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
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == 4
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
            store.record_outcomes([("failed", None, None, None, None, None, None, "x", "y", first[0])])
        assert store.db.execute("SELECT status FROM outcomes WHERE item = ?", (first[0],)).fetchall() == [(first[1],)]
    with Store(path, read_only=True) as store:  # a reader of the upgraded store needs no upgrade
        assert results(store, "done") == before
