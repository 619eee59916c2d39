"""The SQLite job store: schema, migrations and every query. The only module with SQL.

The store is the truth: each state change is one transaction, so a process can die at any line
and the next run resumes from what is written here. Tables:

- jobs     one row per named job (provider, default model, input fingerprint, state)
- rows     one row per input line: ordinal -> request key (the input order for exports)
- payloads the canonical request for each key, shared by every job that asks it
- items    one row per distinct key in a job: where it is (pending, queued in a batch, done)
           and, once done, its outcome
- batches  local batch records, written before any remote side effect (write-ahead)
- events   an append-only log of what happened, for `status` and debugging
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .errors import StoreError

DB_NAME = "batchery.db"

_MIGRATIONS: list[str] = [
    # 1: initial schema
    """
    CREATE TABLE jobs (
        name TEXT PRIMARY KEY, provider TEXT NOT NULL, model TEXT, endpoint TEXT NOT NULL,
        fingerprint TEXT NOT NULL, state TEXT NOT NULL, n_rows INTEGER NOT NULL DEFAULT 0,
        options TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL, updated_at REAL NOT NULL
    );
    CREATE TABLE rows (
        job TEXT NOT NULL, ordinal INTEGER NOT NULL, key TEXT NOT NULL, row_id TEXT, metadata BLOB,
        PRIMARY KEY (job, ordinal)
    ) WITHOUT ROWID;
    CREATE TABLE payloads (key TEXT PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID;
    CREATE TABLE items (
        job TEXT NOT NULL, key TEXT NOT NULL, model TEXT NOT NULL,
        state TEXT NOT NULL,             -- pending | queued | done
        batch INTEGER, attempts INTEGER NOT NULL DEFAULT 0,
        status TEXT,                     -- succeeded | failed | expired | cancelled | missing
        text TEXT, response BLOB, input_tokens INTEGER, output_tokens INTEGER,
        error_code TEXT, error_message TEXT,
        PRIMARY KEY (job, key)
    ) WITHOUT ROWID;
    CREATE INDEX items_by_key ON items (key) WHERE status = 'succeeded';
    CREATE INDEX items_by_batch ON items (batch) WHERE state = 'queued';
    CREATE INDEX items_pending ON items (job, model) WHERE state = 'pending';
    CREATE TABLE batches (
        id INTEGER PRIMARY KEY, job TEXT NOT NULL, tag TEXT NOT NULL UNIQUE, model TEXT NOT NULL,
        state TEXT NOT NULL,             -- planned | creating | submitted | ended | collected
        n_requests INTEGER NOT NULL, n_bytes INTEGER NOT NULL,
        input_file TEXT, remote_id TEXT, remote_status TEXT, output_file TEXT, error_file TEXT,
        error TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL
    );
    CREATE INDEX batches_by_job ON batches (job, state);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY, job TEXT NOT NULL, at REAL NOT NULL, kind TEXT NOT NULL, detail TEXT
    );
    """,
]


@dataclass
class Job:
    name: str
    provider: str
    model: str | None
    endpoint: str
    fingerprint: str
    state: str
    n_rows: int
    options: dict
    created_at: float
    updated_at: float


@dataclass
class Batch:
    id: int
    job: str
    tag: str
    model: str
    state: str
    n_requests: int
    n_bytes: int
    input_file: str | None
    remote_id: str | None
    remote_status: str | None
    output_file: str | None
    error_file: str | None
    error: str | None
    created_at: float
    updated_at: float


# Columns of one outcome, in the order `record_outcomes` takes them.
OUTCOME_COLUMNS = ("status", "text", "response", "input_tokens", "output_tokens", "error_code", "error_message")


def resolve_store_dir(explicit: str | os.PathLike | None) -> Path:
    """--store PATH, else $BATCHERY_HOME, else ./.batchery/."""
    if explicit:
        return Path(explicit)
    if os.environ.get("BATCHERY_HOME"):
        return Path(os.environ["BATCHERY_HOME"])
    return Path.cwd() / ".batchery"


class Store:
    """One connection to a store directory. Not shared between threads."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.dir = resolve_store_dir(directory)
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store directory {self.dir}: {exc.strerror}") from None
        path = self.dir / DB_NAME
        if not path.exists():
            path.touch(mode=0o600)
        try:
            self.db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
            self.db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path} is not a batchery store ({exc})") from None
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------------

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(_MIGRATIONS):
            raise StoreError(
                f"the store at {self.dir} has schema version {version}, newer than this batchery "
                f"understands ({len(_MIGRATIONS)}); upgrade batchery"
            )
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            with self.transaction():
                for statement in script.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic state change. BEGIN IMMEDIATE so concurrent writers queue rather than fail late."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- jobs ----------------------------------------------------------------------------------

    def get_job(self, name: str) -> Job | None:
        row = self.db.execute(f"SELECT {_JOB_COLS} FROM jobs WHERE name = ?", (name,)).fetchone()
        return _job(row) if row else None

    def list_jobs(self) -> list[Job]:
        return [_job(r) for r in self.db.execute(f"SELECT {_JOB_COLS} FROM jobs ORDER BY created_at")]

    def insert_job(self, name: str, provider: str, model: str | None, endpoint: str, fingerprint: str,
                   options: dict) -> None:
        now = time.time()
        self.db.execute(
            "INSERT INTO jobs (name, provider, model, endpoint, fingerprint, state, options, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?)",
            (name, provider, model, endpoint, fingerprint, orjson.dumps(options).decode(), now, now),
        )

    def set_job_state(self, name: str, state: str) -> None:
        self.db.execute("UPDATE jobs SET state = ?, updated_at = ? WHERE name = ?", (state, time.time(), name))

    def set_job_rows(self, name: str, n_rows: int) -> None:
        self.db.execute("UPDATE jobs SET n_rows = ? WHERE name = ?", (n_rows, name))

    # -- ingest --------------------------------------------------------------------------------

    def add_requests(self, job: str, rows: list[tuple[int, str, Any, Any]], payloads: list[tuple[str, str, bytes]]) -> None:
        """rows: (ordinal, key, row id, metadata bytes); payloads: (key, model, canonical body)."""
        self.db.executemany("INSERT OR IGNORE INTO payloads (key, body) VALUES (?, ?)",
                            [(k, body) for k, _, body in payloads])
        self.db.executemany(
            "INSERT OR IGNORE INTO items (job, key, model, state) VALUES (?, ?, ?, 'pending')",
            [(job, k, model) for k, model, _ in payloads],
        )
        self.db.executemany(
            "INSERT INTO rows (job, ordinal, key, row_id, metadata) VALUES (?, ?, ?, ?, ?)",
            [(job, *row) for row in rows],
        )

    def reuse_cached_results(self, job: str) -> int:
        """Pending items already answered successfully in another job take that answer (no new spend)."""
        cur = self.db.execute(
            "UPDATE items AS i SET state = 'done', status = o.status, text = o.text, response = o.response,"
            " input_tokens = o.input_tokens, output_tokens = o.output_tokens, error_code = NULL,"
            " error_message = NULL, attempts = o.attempts, batch = o.batch"
            " FROM items AS o WHERE i.job = ? AND i.state = 'pending' AND o.key = i.key AND o.job <> i.job"
            " AND o.status = 'succeeded'",
            (job,),
        )
        return cur.rowcount

    # -- planning and batches ------------------------------------------------------------------

    def pending_models(self, job: str) -> list[str]:
        rows = self.db.execute("SELECT DISTINCT model FROM items WHERE job = ? AND state = 'pending'", (job,))
        return [r[0] for r in rows]

    def pending_requests(self, job: str, model: str, limit: int) -> list[tuple[str, bytes]]:
        """(key, canonical body) of up to `limit` pending items for one model."""
        return self.db.execute(
            "SELECT i.key, p.body FROM items i JOIN payloads p ON p.key = i.key"
            " WHERE i.job = ? AND i.model = ? AND i.state = 'pending' LIMIT ?",
            (job, model, limit),
        ).fetchall()

    def batch_requests(self, batch_id: int) -> Iterator[tuple[str, bytes]]:
        cur = self.db.execute(
            "SELECT i.key, p.body FROM items i JOIN payloads p ON p.key = i.key"
            " WHERE i.batch = ? AND i.state = 'queued'",
            (batch_id,),
        )
        while chunk := cur.fetchmany(10_000):
            yield from chunk

    def insert_batch(self, job: str, tag: str, model: str, keys: list[str], n_bytes: int) -> int:
        """Write-ahead: the batch and its members exist locally before anything is sent."""
        now = time.time()
        cur = self.db.execute(
            "INSERT INTO batches (job, tag, model, state, n_requests, n_bytes, created_at, updated_at)"
            " VALUES (?, ?, ?, 'planned', ?, ?, ?, ?)",
            (job, tag, model, len(keys), n_bytes, now, now),
        )
        batch_id = cur.lastrowid
        self.db.executemany(
            "UPDATE items SET state = 'queued', batch = ?, attempts = attempts + 1 WHERE job = ? AND key = ?",
            [(batch_id, job, k) for k in keys],
        )
        return batch_id

    def batches(self, job: str, states: Iterable[str] | None = None) -> list[Batch]:
        if states is None:
            rows = self.db.execute(f"SELECT {_BATCH_COLS} FROM batches WHERE job = ? ORDER BY id", (job,))
        else:
            states = list(states)
            marks = ",".join("?" * len(states))
            rows = self.db.execute(
                f"SELECT {_BATCH_COLS} FROM batches WHERE job = ? AND state IN ({marks}) ORDER BY id",
                (job, *states),
            )
        return [Batch(*r) for r in rows]

    def update_batch(self, batch_id: int, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self.db.execute(f"UPDATE batches SET {assignments} WHERE id = ?", (*fields.values(), batch_id))

    # -- outcomes ------------------------------------------------------------------------------

    def record_outcomes(self, job: str, batch_id: int, outcomes: list[tuple]) -> None:
        """Store outcomes (custom_id first, then OUTCOME_COLUMNS) for lines still queued in this batch.

        Only queued items of this batch change, so a duplicated output line or a collect repeated
        after a crash changes nothing.
        """
        self.db.executemany(
            "UPDATE items SET state = 'done', status = ?, text = ?, response = ?, input_tokens = ?,"
            " output_tokens = ?, error_code = ?, error_message = ?"
            " WHERE job = ? AND key = ? AND batch = ? AND state = 'queued'",
            [(*o[1:], job, o[0], batch_id) for o in outcomes],
        )

    def close_batch_items(self, batch_id: int, status: str, code: str, message: str) -> int:
        """Every line of the batch that has no outcome yet gets `status` (e.g. missing)."""
        cur = self.db.execute(
            "UPDATE items SET state = 'done', status = ?, error_code = ?, error_message = ?"
            " WHERE batch = ? AND state = 'queued'",
            (status, code, message, batch_id),
        )
        return cur.rowcount

    def close_pending_items(self, job: str, status: str, code: str, message: str) -> int:
        cur = self.db.execute(
            "UPDATE items SET state = 'done', status = ?, error_code = ?, error_message = ?"
            " WHERE job = ? AND state = 'pending'",
            (status, code, message, job),
        )
        return cur.rowcount

    def counts(self, job: str) -> dict[str, int]:
        """Distinct requests by state/outcome: pending, queued, succeeded, failed, ..."""
        out: dict[str, int] = {}
        for state, status, n in self.db.execute(
            "SELECT state, status, COUNT(*) FROM items WHERE job = ? GROUP BY state, status", (job,)
        ):
            label = status if state == "done" else state
            out[label] = out.get(label, 0) + n
        return out

    def export_rows(self, job: str) -> Iterator[tuple]:
        """One row per input line in input order, joined with its outcome and remote batch id."""
        cur = self.db.execute(
            "SELECT r.row_id, r.metadata, r.key, i.model, i.state, i.status, i.text, i.response,"
            " i.input_tokens, i.output_tokens, i.error_code, i.error_message, i.attempts, b.remote_id"
            " FROM rows r JOIN items i ON i.job = r.job AND i.key = r.key"
            " LEFT JOIN batches b ON b.id = i.batch WHERE r.job = ? ORDER BY r.ordinal",
            (job,),
        )
        while chunk := cur.fetchmany(10_000):
            yield from chunk

    # -- events --------------------------------------------------------------------------------

    def log(self, job: str, kind: str, **detail: Any) -> None:
        self.db.execute(
            "INSERT INTO events (job, at, kind, detail) VALUES (?, ?, ?, ?)",
            (job, time.time(), kind, orjson.dumps(detail).decode() if detail else None),
        )

    def events(self, job: str, limit: int = 20) -> list[tuple[float, str, dict]]:
        rows = self.db.execute(
            "SELECT at, kind, detail FROM events WHERE job = ? ORDER BY id DESC LIMIT ?", (job, limit)
        ).fetchall()
        return [(at, kind, orjson.loads(d) if d else {}) for at, kind, d in reversed(rows)]


_JOB_COLS = "name, provider, model, endpoint, fingerprint, state, n_rows, options, created_at, updated_at"
_BATCH_COLS = ("id, job, tag, model, state, n_requests, n_bytes, input_file, remote_id, remote_status,"
               " output_file, error_file, error, created_at, updated_at")


def _job(row: tuple) -> Job:
    job = Job(*row)
    job.options = orjson.loads(job.options)
    return job
