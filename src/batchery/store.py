"""The SQLite job store: schema, migrations and every query. The only module with SQL.

The store is the truth: each state change is one transaction, so a process can die at any line
and the next run resumes from what is written here. Tables:

- jobs     one row per named job (provider, default model, input fingerprint, state)
- items      one row per distinct request (key) in a job, in input order: the first input line
             that asks it, its line of the provider's batch file, and where it is (pending, queued in
             a batch, done)
- outcomes   the outcome of each done item
- duplicates input lines that ask exactly what an earlier line asked: they share its outcome
- batches  local batch records, written before any remote side effect (write-ahead)
- events   an append-only log of what happened, for `status` and debugging
"""

from __future__ import annotations

import fcntl
import heapq
import itertools
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .errors import JobBusyError, StoreBusyError, StoreError
from .paths import resolve_store_dir, store_url
from .states import BatchState, JobState, OutcomeStatus

DB_NAME = "batchery.db"
BUSY_WAIT = 30.0  # seconds a writer waits for another connection's write lock before StoreBusyError
# sqlite3 binds an int, float, str or bytearray as is, but looks any other value (None, bytes, a str
# subclass such as the StrEnum states) up in its adapter registry and protocols first, about 0.5 us
# each. The states are registered to bind as str; the per-request inserts (add_requests,
# record_outcomes) bind bytearrays and write literals where they can.
for _state in (OutcomeStatus, BatchState, JobState):
    sqlite3.register_adapter(_state, str)

_MIGRATIONS: list[str] = [
    # 1: initial schema. Items get sequential integer ids in input order so that ingesting,
    # planning, collecting and exporting walk the table in order; the one random-access index
    # is items_key.
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, provider TEXT NOT NULL, model TEXT,
        endpoint TEXT NOT NULL, fingerprint TEXT NOT NULL, state TEXT NOT NULL,
        n_rows INTEGER NOT NULL DEFAULT 0, options TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL, updated_at REAL NOT NULL
    );
    CREATE TABLE items (
        id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL,
        ordinal INTEGER NOT NULL, row_id TEXT, metadata BLOB,   -- the first input line asking it
        key TEXT NOT NULL, model TEXT NOT NULL,
        line BLOB NOT NULL,              -- the request as one line of the provider's batch file
        state TEXT NOT NULL,             -- pending | queued | done
        batch INTEGER, attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE outcomes (               -- written once per item: appending is cheaper than growing items
        item INTEGER PRIMARY KEY,
        status TEXT NOT NULL,            -- succeeded | failed | expired | cancelled | missing (| invalid, v4)
        text TEXT, response BLOB, input_tokens INTEGER, output_tokens INTEGER,
        cached_tokens INTEGER, reasoning_tokens INTEGER, error_code TEXT, error_message TEXT
    );
    CREATE UNIQUE INDEX items_key ON items (key, job_id);
    CREATE INDEX items_job ON items (job_id);
    CREATE INDEX items_pending ON items (job_id, model, id) WHERE state = 'pending';
    CREATE INDEX items_queued ON items (batch, id) WHERE state = 'queued';
    CREATE TABLE batches (
        id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL, tag TEXT NOT NULL UNIQUE, model TEXT NOT NULL,
        state TEXT NOT NULL,             -- planned | creating | submitted | collected
        n_requests INTEGER NOT NULL, n_bytes INTEGER NOT NULL,
        input_file TEXT, remote_id TEXT, remote_status TEXT, output_file TEXT, error_file TEXT,
        error TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL
    );
    CREATE TABLE duplicates (
        job_id INTEGER NOT NULL, ordinal INTEGER NOT NULL, key TEXT NOT NULL, row_id TEXT, metadata BLOB,
        PRIMARY KEY (job_id, ordinal)
    ) WITHOUT ROWID;
    CREATE INDEX batches_by_job ON batches (job_id, state);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL, at REAL NOT NULL, kind TEXT NOT NULL, detail TEXT
    );
    """,
    # 2: where each outcome came from, so cost uses the right price (a live answer costs the live
    # price, a batch answer the batch price, an answer reused from another job nothing).
    """
    ALTER TABLE outcomes ADD COLUMN source TEXT NOT NULL DEFAULT 'batch';
    UPDATE outcomes SET source = 'cache' WHERE item IN (
        SELECT i.id FROM items i JOIN batches b ON b.id = i.batch WHERE b.job_id <> i.job_id)
    """,
    # 3: answers come back shuffled; keyed by item, each commit of them rewrote pages all over the
    # table (about 6 KB written per answer). They are now appended in the order they arrive and
    # found through a small unique index on item, which also keeps an item's first outcome.
    """
    CREATE TABLE outcomes_3 (
        id INTEGER PRIMARY KEY,          -- arrival order
        item INTEGER NOT NULL,
        status TEXT NOT NULL,            -- succeeded | failed | expired | cancelled | missing
        text TEXT, response BLOB, input_tokens INTEGER, output_tokens INTEGER,
        cached_tokens INTEGER, reasoning_tokens INTEGER, error_code TEXT, error_message TEXT,
        source TEXT NOT NULL DEFAULT 'batch'
    );
    INSERT INTO outcomes_3 (item, status, text, response, input_tokens, output_tokens, cached_tokens,
                            reasoning_tokens, error_code, error_message, source)
        SELECT item, status, text, response, input_tokens, output_tokens, cached_tokens, reasoning_tokens,
               error_code, error_message, source FROM outcomes ORDER BY item;
    DROP TABLE outcomes;
    ALTER TABLE outcomes_3 RENAME TO outcomes;
    CREATE UNIQUE INDEX outcomes_item ON outcomes (item)
    """,
    # 4: structured output (structured.py). Lines with a response_format keep their schema and
    # their neutral request, to check answers and to build re-asks. A re-asked line keeps its item
    # (its place in the input) with the re-ask as its request; each attempt that did not fit stays
    # as an item in state 'reasked' under its own key, with its outcome (and tokens).
    """
    CREATE TABLE structured (
        item INTEGER PRIMARY KEY, job_id INTEGER NOT NULL, schema TEXT NOT NULL, request BLOB NOT NULL
    );
    CREATE INDEX structured_job ON structured (job_id)
    """,
    # 5: input tokens written to the provider's prompt cache (Anthropic's cache_creation_input_tokens),
    # priced above plain input, as cache reads (cached_tokens) are priced below it.
    """
    ALTER TABLE outcomes ADD COLUMN cache_write_tokens INTEGER
    """,
    # 6: per-batch item ranges (docs/ranges-design.md). Planning and collecting rewrote every item
    # twice (queued, then done). Items are now stored 'new' and a batch records the run of them it
    # covers (of its job and model); an item is written out in full only when it leaves its batch's
    # course (a retry, a re-ask, a cancel, a live call). Existing items are explicit and existing
    # batches cover nothing, so nothing is rewritten here.
    """
    ALTER TABLE batches ADD COLUMN first_item INTEGER;
    ALTER TABLE batches ADD COLUMN last_item INTEGER;
    CREATE INDEX batches_range ON batches (job_id, model, first_item);
    CREATE INDEX items_new ON items (job_id, model, id) WHERE state = 'new'
    """,
]

SOURCES = ("batch", "live", "cache", "flex")  # how an outcome was obtained (flex: a live call on the flex tier)


@dataclass
class Job:
    id: int
    name: str
    provider: str
    model: str | None
    endpoint: str
    fingerprint: str
    state: JobState
    n_rows: int
    options: dict
    created_at: float
    updated_at: float

    def __post_init__(self) -> None:
        self.state = JobState(self.state)


@dataclass
class Batch:
    id: int
    job_id: int
    tag: str
    model: str
    state: BatchState
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

    def __post_init__(self) -> None:
        self.state = BatchState(self.state)


class Store:
    """One connection to a store directory. Not shared between threads."""

    db: sqlite3.Connection  # or a store_pg.PgConnection (a PostgreSQL store), which has the same calls

    def __init__(self, directory: str | os.PathLike | None = None, *, read_only: bool = False):
        """read_only=True: for commands that only read (status, results). They then work on a store
        they cannot write (a read-only disk, another user's files) and never take a write lock.

        `directory` may be a postgresql:// URL: the same store on PostgreSQL (store_pg.py); `dir`
        is then this machine's folder for working files, `where` the URL without its password."""
        self.dir = resolve_store_dir(directory)
        url = store_url(directory)
        self.location: str | Path = url or self.dir  # what opens this store again
        self.where = str(self.dir)  # the store as messages name it
        if url:
            from .store_pg import connect, redact

            self.where = redact(url)
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.db = connect(url, self.where, BUSY_WAIT)  # type: ignore[assignment]
            self._migrate()
            return
        if read_only:
            self.db = _connect_read_only(self.dir / DB_NAME)
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version == len(_MIGRATIONS):
                return
            self.db.close()
            if version == 0:  # no schema yet: another process is creating the store; a reader never writes
                raise StoreError(f"no batchery store at {self.dir} yet (it is being created); try again")
            # an older schema is upgraded by the read-write open below, and a newer one refused there
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store directory {self.dir}: {exc.strerror}") from None
        path = self.dir / DB_NAME
        if not path.exists():
            path.touch(mode=0o600)
        try:
            self.db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_WAIT)
            self._set_wal()
        except sqlite3.DatabaseError as exc:
            if is_busy(exc):
                raise self._busy() from None
            raise StoreError(unusable_store_message(self.dir, exc)) from None
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA cache_size=-65536")  # 64 MB: big jobs touch many index pages
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA temp_store=MEMORY")  # statement journals of multi-row changes: no temp files
        self._migrate()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------------

    def _set_wal(self) -> None:
        """Switching a fresh file to WAL takes an exclusive lock that SQLite does not wait for, so
        processes opening a new store at once retry here instead of failing."""
        deadline = time.monotonic() + BUSY_WAIT
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _migrate(self) -> None:
        if self._schema_version() == len(_MIGRATIONS):
            return  # the common case: no write lock needed
        # Another process may be migrating the same fresh store: under the write lock, the version
        # read again is the one to build on, so each migration is applied once.
        with self.transaction():
            version = self._schema_version()
            for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {number}")

    def _schema_version(self) -> int:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(_MIGRATIONS):
            raise StoreError(
                f"the store at {self.where} has schema version {version}, newer than this batchery "
                f"understands ({len(_MIGRATIONS)}); upgrade batchery"
            )
        return version

    def _busy(self) -> StoreBusyError:
        return StoreBusyError(f"the store {self.where} is busy: another batchery process has been writing to it "
                              f"for over {BUSY_WAIT:.0f} s; let it finish, then run the same command again")

    @contextmanager
    def transaction(self, wait: float | None = None) -> Iterator[sqlite3.Connection]:
        """One atomic state change. BEGIN IMMEDIATE so concurrent writers queue rather than fail late.

        A writer waits up to `wait` seconds (default BUSY_WAIT) for another connection's write
        lock, then gets StoreBusyError; nothing is written then, so the caller can try again.
        """
        if wait is not None:
            self.db.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                raise self._busy() from None
            raise
        finally:
            if wait is not None:
                self.db.execute(f"PRAGMA busy_timeout = {int(BUSY_WAIT * 1000)}")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextmanager
    def job_lock(self, job: Job) -> Iterator[None]:
        """One writer per job: an exclusive lock that the OS drops when its process dies, so a
        crash never leaves a job locked."""
        if not isinstance(self.db, sqlite3.Connection):  # PostgreSQL: an advisory lock of the session
            with self.db.job_lock(job.id, job.name):
                yield
            return
        path = self.dir / "locks" / f"job-{job.id}.lock"
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise JobBusyError(f"job '{job.name}' is being run by another batchery process (pid {holder}); "
                           "let it finish or stop it, then run the same command again") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        try:
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -- jobs ----------------------------------------------------------------------------------

    def get_job(self, name: str) -> Job | None:
        row = self.db.execute(f"SELECT {_JOB_COLS} FROM jobs WHERE name = ?", (name,)).fetchone()
        return _job(row) if row else None

    def list_jobs(self) -> list[Job]:
        return [_job(r) for r in self.db.execute(f"SELECT {_JOB_COLS} FROM jobs ORDER BY id")]

    def insert_job(self, name: str, provider: str, model: str | None, endpoint: str, fingerprint: str,
                   options: dict, state: str = "running") -> int | None:
        """The new job's id; None when a job of that name exists (another process may have just
        created it: the caller reads it again rather than failing on the name)."""
        now = time.time()
        cur = self.db.execute(
            "INSERT INTO jobs (name, provider, model, endpoint, fingerprint, state, options, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
            (name, provider, model, endpoint, fingerprint, state, orjson.dumps(options).decode(), now, now),
        )
        return cur.lastrowid if cur.rowcount == 1 else None

    def set_job_state(self, job_id: int, state: str) -> None:
        self.db.execute("UPDATE jobs SET state = ?, updated_at = ? WHERE id = ?", (state, time.time(), job_id))

    def set_job_options(self, job_id: int, options: dict) -> None:
        self.db.execute("UPDATE jobs SET options = ? WHERE id = ?", (orjson.dumps(options).decode(), job_id))

    def set_job_rows(self, job_id: int, n_rows: int) -> None:
        self.db.execute("UPDATE jobs SET n_rows = ? WHERE id = ?", (n_rows, job_id))

    def job_state(self, job_id: int) -> str:
        return self.db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]

    def request_cancel(self, job_id: int) -> bool:
        """Ask for the job to be cancelled, without its lock: a running job becomes 'cancelling',
        which the process running it acts on at its next cycle. False if the job has already ended."""
        self.db.execute("UPDATE jobs SET state = 'cancelling', updated_at = ? WHERE id = ? AND state = 'running'",
                        (time.time(), job_id))
        return self.job_state(job_id) == "cancelling"

    def reopenable(self, job_id: int, statuses: tuple[str, ...], failed_codes: tuple[str, ...] | None,
                   max_attempts: int | None = None) -> list[int]:
        """Done items whose outcome is one of `statuses`, or failed (with one of `failed_codes`; any
        code when None), sent fewer than `max_attempts` times if given: what a retry would send again.
        Answers reused from another job are never picked."""
        marks = ",".join("?" * len(statuses))
        failed = "o.status = 'failed'" + (
            "" if failed_codes is None else f" AND o.error_code IN ({','.join('?' * len(failed_codes))})")
        return [row[0] for row in self.db.execute(
            f"SELECT i.id FROM items i JOIN outcomes o ON o.item = i.id {_BATCH_OF} WHERE i.job_id = ? AND {_STATE} = 'done'"
            f" AND o.source <> 'cache' AND (o.status IN ({marks}) OR ({failed})) AND {_ATTEMPTS} < ?",
            (job_id, *statuses, *(failed_codes or ()), max_attempts if max_attempts is not None else 1 << 62))]

    def reopen(self, item_ids: list[int]) -> None:
        """These items lose their outcome and wait to be sent again (their attempts are kept)."""
        self.spell_out(item_ids)
        self.db.executemany("DELETE FROM outcomes WHERE item = ?", ((i,) for i in item_ids))
        self.db.executemany("UPDATE items SET state = 'pending', batch = NULL WHERE id = ?", ((i,) for i in item_ids))

    def spell_out(self, item_ids: list[int]) -> None:
        """Fresh items covered by a batch get their state, batch and attempts written in full, as
        their batch says (readers see no change), before a change of their own: a retry, a re-ask."""
        self.db.executemany(
            "UPDATE items AS i SET state = CASE b.state WHEN 'collected' THEN 'done' ELSE 'queued' END,"
            f" batch = b.id, attempts = i.attempts + 1 FROM batches AS b WHERE i.id = ? AND {_IN_RANGE}",
            ((i,) for i in item_ids))

    def delete_job(self, job_id: int) -> list[str]:
        """Remove a job and every row of it; returns the tags of its batches (for their files).
        Answers other jobs reused from it are their own rows and stay; their batch reference
        is cleared, since a later job may be given the same batch ids."""
        tags = [r[0] for r in self.db.execute("SELECT tag FROM batches WHERE job_id = ?", (job_id,))]
        self.db.execute("UPDATE items SET batch = NULL WHERE job_id <> ? AND batch IN"
                        " (SELECT id FROM batches WHERE job_id = ?)", (job_id, job_id))
        self.db.execute("DELETE FROM outcomes WHERE item IN (SELECT id FROM items WHERE job_id = ?)", (job_id,))
        for table in ("items", "duplicates", "batches", "events", "structured"):
            self.db.execute(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))
        self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return tags

    # -- ingest --------------------------------------------------------------------------------

    def add_requests(self, job_id: int, lines: list[tuple]) -> None:
        """Store input lines given as (ordinal, row id, metadata bytes, key, model, provider line).

        A line asking what an earlier line asked becomes a duplicate of it: sent once, answered for both.
        """
        before = self.db.total_changes
        insert = "INSERT OR IGNORE INTO items (job_id, ordinal, row_id, metadata, key, model, line, state)"
        # Blobs bind as bytearrays and a run of lines without metadata writes it as a literal NULL:
        # no adapter look-up (see the top). Runs, not groups: the first line asking a key stays first.
        for no_metadata, run in itertools.groupby(lines, key=_without_metadata):
            if no_metadata:
                self.db.executemany(insert + " VALUES (?, ?, ?, NULL, ?, ?, ?, 'new')",
                                    [(job_id, ordinal, row_id, key, model, bytearray(line))
                                     for ordinal, row_id, _, key, model, line in run])
            else:
                self.db.executemany(insert + " VALUES (?, ?, ?, ?, ?, ?, ?, 'new')",
                                    [(job_id, ordinal, row_id, bytearray(metadata), key, model, bytearray(line))
                                     for ordinal, row_id, metadata, key, model, line in run])
        if self.db.total_changes - before == len(lines):
            return  # the common case: every line is new
        first: dict[str, int] = {}
        for start in range(0, len(lines), 500):
            keys = [line[3] for line in lines[start:start + 500]]
            first.update(self.db.execute(
                f"SELECT key, ordinal FROM items WHERE job_id = ? AND key IN ({','.join('?' * len(keys))})",
                (job_id, *keys),
            ))
        self.db.executemany(
            "INSERT INTO duplicates (job_id, ordinal, key, row_id, metadata) VALUES (?, ?, ?, ?, ?)",
            [(job_id, ordinal, key, row_id, meta) for ordinal, row_id, meta, key, _, _ in lines
             if first[key] != ordinal],
        )

    def reuse_cached_results(self, job_id: int) -> list[tuple[str, int]]:
        """Pending items already answered successfully in another job of the same provider and
        origin (jobs.options "origin": the emulator, the default URL or one base URL) take that
        answer (no new spend). Returns (source job name, answers taken) per source job, to announce.

        A job of unknown origin (made before origins were stored) neither gives nor takes answers:
        an emulated answer must never pass for a real one.
        """
        origin_of = "json_extract(options, '$.origin')"
        provider, origin = self.db.execute(f"SELECT provider, {origin_of} FROM jobs WHERE id = ?",
                                           (job_id,)).fetchone()
        donors = f"SELECT id FROM jobs WHERE id <> ? AND provider = ? AND {origin_of} = ?"
        if origin is None or self.db.execute(donors + " LIMIT 1", (job_id, provider, origin)).fetchone() is None:
            return []  # nothing to reuse, and no need to look up every key
        # One source item per pending item (the earliest answered), so outcomes, items and the
        # announcement agree on where each answer came from.
        self.db.execute("DROP TABLE IF EXISTS temp.reused")
        self.db.execute(
            "CREATE TEMP TABLE reused AS SELECT i.id AS item, MIN(p.id) AS source"
            " FROM items AS i JOIN items AS p ON p.key = i.key AND p.job_id <> i.job_id"
            " JOIN outcomes AS o ON o.item = p.id AND o.status = 'succeeded'"
            f" WHERE i.job_id = ? AND {_PENDING} AND p.job_id IN ({donors})"
            " GROUP BY i.id", (job_id, job_id, provider, origin))
        self.db.execute(f"INSERT OR IGNORE INTO outcomes (item, {_OUTCOME_COLS}, source)"
                        f" SELECT r.item, {_OUTCOME_COLS}, 'cache' FROM temp.reused AS r"
                        " JOIN outcomes AS o ON o.item = r.source")
        self.db.execute("UPDATE items AS t SET state = 'done', batch = p.batch, attempts = p.attempts FROM"
                        f" (SELECT r.item, b.id AS batch, {_ATTEMPTS} AS attempts FROM temp.reused AS r"
                        f" JOIN items AS i ON i.id = r.source {_BATCH_OF}) AS p WHERE t.id = p.item")
        counts = self.db.execute(
            "SELECT j.name, COUNT(*) FROM temp.reused AS r JOIN items AS p ON p.id = r.source"
            " JOIN jobs AS j ON j.id = p.job_id GROUP BY j.id ORDER BY j.id").fetchall()
        self.db.execute("DROP TABLE temp.reused")
        return counts

    def stored_answer(self, key: str, provider: str, origin: str) -> Any:
        """The provider body of a succeeded answer to `key` in any job of this provider and origin,
        or None: the drop-in client (dropin.py) answers such a call at once, sending nothing."""
        row = self.db.execute(
            "SELECT o.response FROM items AS i JOIN jobs AS j ON j.id = i.job_id"
            " JOIN outcomes AS o ON o.item = i.id AND o.status = 'succeeded'"
            " WHERE i.key = ? AND j.provider = ? AND json_extract(options, '$.origin') = ? LIMIT 1",
            (key, provider, origin)).fetchone()
        return None if row is None else row[0]

    # -- planning and batches ------------------------------------------------------------------

    def pending_models(self, job_id: int) -> list[str]:
        rows = self.db.execute("SELECT DISTINCT model FROM items WHERE job_id = ? AND state = 'pending'", (job_id,))
        explicit = {r[0] for r in rows}
        return sorted(explicit | {m for m in self._fresh_models(job_id) if m not in explicit
                                  and self._fresh_pending(job_id, m)})

    def _fresh_models(self, job_id: int) -> list[str]:
        """Models of the job's fresh items: one index seek per model, not a scan of the items."""
        return [r[0] for r in self.db.execute(
            "WITH RECURSIVE m (model) AS (SELECT MIN(model) FROM items WHERE job_id = ? AND state = 'new'"
            " UNION ALL SELECT (SELECT MIN(model) FROM items WHERE job_id = ? AND state = 'new' AND model > m.model)"
            " FROM m WHERE m.model IS NOT NULL) SELECT model FROM m WHERE model IS NOT NULL", (job_id, job_id))]

    def _frontier(self, job_id: int, model: str) -> int:
        """The last fresh item of this model that a batch covers (0: none): those above it are pending."""
        return self.db.execute("SELECT COALESCE(MAX(last_item), 0) FROM batches WHERE job_id = ? AND model = ?",
                               (job_id, model)).fetchone()[0]

    def _fresh_pending(self, job_id: int, model: str) -> bool:
        return self.db.execute("SELECT 1 FROM items WHERE job_id = ? AND model = ? AND state = 'new' AND id > ? LIMIT 1",
                               (job_id, model, self._frontier(job_id, model))).fetchone() is not None

    def pending_requests(self, job_id: int, model: str, limit: int, after: int = 0) -> list[tuple[int, str, bytes]]:
        """(item id, key, provider line) of the first `limit` pending items for one model (past item `after`)."""
        return self.db.execute(
            "SELECT id, key, line FROM items WHERE job_id = ? AND model = ? AND state = 'pending' AND id > ?"
            " UNION ALL SELECT id, key, line FROM items WHERE job_id = ? AND model = ? AND state = 'new' AND id > ?"
            " ORDER BY 1 LIMIT ?",
            (job_id, model, after, job_id, model, max(after, self._frontier(job_id, model)), limit),
        ).fetchall()

    def insert_batch(self, job_id: int, tag: str, model: str, last_item: int, n_requests: int, n_bytes: int) -> int:
        """Write-ahead: the batch and its members (the pending items of `model` up to `last_item`)
        exist locally before anything is sent. Fresh members are covered by the batch's range, written
        with it; explicit ones (sent before) get their state, batch and attempts as before."""
        now = time.time()
        fresh, first, last = self.db.execute(
            "SELECT COUNT(*), MIN(id), MAX(id) FROM items WHERE job_id = ? AND model = ? AND state = 'new'"
            " AND id > ? AND id <= ?", (job_id, model, self._frontier(job_id, model), last_item)).fetchone()
        cur = self.db.execute(
            "INSERT INTO batches (job_id, tag, model, state, n_requests, n_bytes, created_at, updated_at,"
            " first_item, last_item) VALUES (?, ?, ?, 'planned', ?, ?, ?, ?, ?, ?)",
            (job_id, tag, model, n_requests, n_bytes, now, now, first, last),
        )
        batch_id = cur.lastrowid
        cur = self.db.execute(
            "UPDATE items SET state = 'queued', batch = ?, attempts = attempts + 1"
            " WHERE job_id = ? AND model = ? AND state = 'pending' AND id <= ?",
            (batch_id, job_id, model, last_item),
        )
        if cur.rowcount + fresh != n_requests:
            raise StoreError(f"batch {batch_id}: expected {n_requests} members, found {cur.rowcount + fresh}")
        assert batch_id is not None  # an INSERT sets lastrowid
        return batch_id

    def batch_members(self, batch_id: int) -> dict[str, int]:
        """custom_id -> item id for the lines of a batch still waiting for an outcome."""
        return dict(self.db.execute(_queued_in("i.key, i.id"), (batch_id, batch_id)))

    def batch_lines(self, batch_id: int) -> Iterator[bytes]:
        cur = self.db.execute(_queued_in("i.id, i.line") + " ORDER BY 1", (batch_id, batch_id))
        while chunk := cur.fetchmany(10_000):
            for _, line in chunk:
                yield line

    def batches(self, job_id: int, states: Iterable[str] | None = None) -> list[Batch]:
        if states is None:
            rows = self.db.execute(f"SELECT {_BATCH_COLS} FROM batches WHERE job_id = ? ORDER BY id", (job_id,))
        else:
            states = list(states)
            marks = ",".join("?" * len(states))
            rows = self.db.execute(
                f"SELECT {_BATCH_COLS} FROM batches WHERE job_id = ? AND state IN ({marks}) ORDER BY id",
                (job_id, *states),
            )
        return [Batch(*r) for r in rows]

    def update_batch(self, batch_id: int, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self.db.execute(f"UPDATE batches SET {assignments} WHERE id = ?", (*fields.values(), batch_id))

    # -- outcomes ------------------------------------------------------------------------------

    def record_outcomes(self, outcomes: list[tuple], source: str | None = "batch") -> None:
        """Store outcomes given as (status, text, response, input_tokens, output_tokens, cached_tokens,
        reasoning_tokens, error_code, error_message, cache_write_tokens, item id), sorted by item id so the table is
        appended to in order. With source None each row ends with its own source (after the item id).

        An item keeps its first outcome, so a collect repeated after a crash changes nothing.
        """
        assert source is None or source in SOURCES
        last = "?" if source is None else repr(source)
        # A run of plain batch answers (no error, no cache writes) writes its status and empty fields
        # as literals and its body as a bytearray (see the top: a third of an answer's insert). Live
        # rows, fewer a commit, bind as they are. Runs, not groups: an item's first outcome stays first.
        runs = itertools.groupby(outcomes, key=_plain_answer) if source else [(False, outcomes)]
        for plain, run in runs:
            if plain:
                self.db.executemany(
                    f"INSERT OR IGNORE INTO outcomes ({_OUTCOME_COLS}, item, source)"
                    f" VALUES ('succeeded', ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, ?, {last})",
                    [(text, None if body is None else bytearray(body), i, o, cached, reasoning, item)
                     for _, text, body, i, o, cached, reasoning, _, _, _, item in run])
            else:
                self.db.executemany(
                    f"INSERT OR IGNORE INTO outcomes ({_OUTCOME_COLS}, item, source)"
                    f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {last})", list(run))

    def finish_live_items(self, outcomes: list[tuple], sends: list[tuple[int, int]]) -> None:
        """Record answers from live calls (rows as in record_outcomes, each ending with its source:
        live, or flex for an answer the flex tier served) and the calls each took as (sends, item
        id): each item is done at once."""
        self.record_outcomes(outcomes, source=None)
        self.db.executemany("UPDATE items SET state = 'done', attempts = attempts + ? WHERE id = ?", sends)

    def pending_after(self, job_id: int, after: int, limit: int) -> list[tuple[int, str, str, bytes]]:
        """(item id, key, model, provider line) of pending items past item `after`, in input order:
        live mode walks the job once with this, whatever the model."""
        return self.db.execute(
            f"SELECT i.id, i.key, i.model, i.line FROM items i WHERE i.job_id = ? AND {_PENDING} AND i.id > ?"
            " ORDER BY i.id LIMIT ?", (job_id, after, limit)).fetchall()

    def add_leftover_outcomes(self, batch_id: int, status: str, code: str, message: str) -> int:
        """Items of the batch with no outcome yet get `status` (e.g. missing). Returns how many."""
        return self.db.execute(
            "INSERT OR IGNORE INTO outcomes (item, status, error_code, error_message)"
            f" SELECT m.id, ?, ?, ? FROM ({_queued_in('i.id')}) AS m",
            (status, code, message, batch_id, batch_id),
        ).rowcount

    def finish_batch_items(self, batch_id: int) -> None:
        """The batch's explicit members are done; its fresh ones are done once the batch is
        collected, which every caller writes in the same transaction."""
        self.db.execute("UPDATE items SET state = 'done' WHERE batch = ? AND state = 'queued'", (batch_id,))

    def close_batch_items(self, batch_id: int, status: str, code: str, message: str) -> int:
        """The batch's items are done; those with no outcome yet get `status`."""
        n = self.add_leftover_outcomes(batch_id, status, code, message)
        self.finish_batch_items(batch_id)
        return n

    def close_pending_items(self, job_id: int, status: str, code: str, message: str) -> int:
        cur = self.db.execute(
            "INSERT OR IGNORE INTO outcomes (item, status, error_code, error_message)"
            f" SELECT i.id, ?, ?, ? FROM items i WHERE i.job_id = ? AND {_PENDING}",
            (status, code, message, job_id),
        )
        self.db.execute(f"UPDATE items AS i SET state = 'done' WHERE i.job_id = ? AND {_PENDING}", (job_id,))
        return cur.rowcount

    def requeue_retryable(self, batch_id: int, max_attempts: int, statuses: tuple[str, ...],
                          failed_codes: tuple[str, ...]) -> int:
        """Items of the batch (still queued) whose outcome may pass on another attempt, while attempts
        remain, go back to pending and lose that outcome. Returns how many."""
        ids = [row[0] for row in self.db.execute(
            f"SELECT m.id FROM ({_queued_in('i.id, ' + _FRESH_ATTEMPTS + ' AS attempts')}) AS m"
            " JOIN outcomes o ON o.item = m.id WHERE m.attempts < ?"
            f" AND (o.status IN ({','.join('?' * len(statuses))})"
            f" OR (o.status = 'failed' AND o.error_code IN ({','.join('?' * len(failed_codes))})))",
            (batch_id, batch_id, max_attempts, *statuses, *failed_codes),
        )]
        self.reopen(ids)
        return len(ids)

    def reopen_retryable(self, job_id: int, failed_codes: Iterable[str], statuses: Iterable[str] = (),
                         max_attempts: int | None = None) -> int:
        """Finished items of the job that failed with one of `failed_codes` (or ended with one of
        `statuses`, e.g. expired) go back to pending and lose that outcome, whatever attempts they
        used (or, given max_attempts, while they used fewer). Returns how many."""
        ids = self.reopenable(job_id, tuple(statuses), tuple(failed_codes), max_attempts)
        self.reopen(ids)
        return len(ids)

    def failed_with(self, job_id: int, failed_codes: Iterable[str]) -> list[tuple[str, str, int]]:
        """(error code, example message, count) of the job's lines failed with one of these codes,
        most common first."""
        codes = tuple(failed_codes)
        return self.db.execute(
            "SELECT o.error_code, MIN(o.error_message), COUNT(*) FROM items i JOIN outcomes o ON o.item = i.id"
            f" WHERE i.job_id = ? AND o.status = 'failed' AND o.error_code IN ({','.join('?' * len(codes))})"
            " GROUP BY o.error_code ORDER BY COUNT(*) DESC", (job_id, *codes)).fetchall()

    def has_pending(self, job_id: int) -> bool:
        return self.db.execute(
            "SELECT 1 FROM items WHERE job_id = ? AND state = 'pending' LIMIT 1", (job_id,)).fetchone() is not None or any(
            self._fresh_pending(job_id, m) for m in self._fresh_models(job_id))

    def attempts(self, job_id: int) -> dict[int, int]:
        """How many distinct requests took 1, 2, ... sends."""
        out: dict[int, int] = {}
        for attempts, n in self.db.execute(
            "SELECT attempts, COUNT(*) FROM items WHERE job_id = ? AND attempts > 0 AND state NOT IN ('reasked', 'new')"
            f" GROUP BY attempts UNION ALL SELECT 1, COUNT(*) FROM batches b JOIN items i ON {_IN_RANGE}"
            " WHERE b.job_id = ?", (job_id, job_id)):
            if n:  # a fresh item covered by a batch was sent once
                out[attempts] = out.get(attempts, 0) + n
        return out

    def failure_reasons(self, job_id: int, limit: int = 10) -> list[tuple[str, str, str, int]]:
        """The most common (status, error code, example message, count) among lines that did not succeed."""
        return self.db.execute(
            "SELECT o.status, o.error_code, MIN(o.error_message), COUNT(*) FROM items i"
            " JOIN outcomes o ON o.item = i.id WHERE i.job_id = ? AND o.status <> 'succeeded'"
            " AND i.state <> 'reasked' GROUP BY o.status, o.error_code ORDER BY COUNT(*) DESC LIMIT ?", (job_id, limit)).fetchall()

    def usage_by_model(self, job_id: int, tier_floor: int | None = None) -> list[tuple[str, str, int, int, int, int, int, int]]:
        """(model, source, prompt, requests, input, output, cache-read and cache-write tokens) returned
        for this job's own batch and live calls: answers reused from another job's cache cost this
        job nothing and are left out. Prices can rise with a request's prompt length (tiers), so
        requests with more than `tier_floor` input tokens are summed apart, per prompt length
        (`prompt`); the others are summed together (prompt 0). Default: pricing.TIER_FLOOR."""
        if tier_floor is None:
            from .pricing import TIER_FLOOR as tier_floor
        return self.db.execute(
            "SELECT i.model, o.source, CASE WHEN o.input_tokens > ? THEN o.input_tokens ELSE 0 END AS prompt,"
            " COUNT(*), COALESCE(SUM(o.input_tokens), 0), COALESCE(SUM(o.output_tokens), 0),"
            " COALESCE(SUM(o.cached_tokens), 0), COALESCE(SUM(o.cache_write_tokens), 0)"
            " FROM items i JOIN outcomes o ON o.item = i.id"
            " WHERE i.job_id = ? AND o.source <> 'cache' GROUP BY i.model, o.source, prompt"
            " ORDER BY i.model, o.source, prompt", (tier_floor, job_id)).fetchall()

    def counts(self, job_id: int) -> dict[str, int]:
        """Distinct requests by state/outcome: pending, queued, succeeded, failed, ..."""
        out: dict[str, int] = {}
        # One statement (one snapshot): explicit items, fresh ones by the batch covering them (part
        # 1), and the count of all fresh ones (part 2), of which those no batch covers are pending.
        rows = self.db.execute(
            "SELECT 0, i.state, o.status, COUNT(*) FROM items i LEFT JOIN outcomes o ON o.item = i.id"
            " WHERE i.job_id = ? AND i.state NOT IN ('reasked', 'new') GROUP BY i.state, o.status"
            " UNION ALL SELECT 1, CASE b.state WHEN 'collected' THEN 'done' ELSE 'queued' END, o.status, COUNT(*)"
            f" FROM batches b JOIN items i ON {_IN_RANGE} LEFT JOIN outcomes o ON o.item = i.id WHERE b.job_id = ?"
            " GROUP BY 2, 3 UNION ALL SELECT 2, 'pending', NULL, COUNT(*) FROM items WHERE job_id = ? AND state = 'new'",
            (job_id, job_id, job_id)).fetchall()
        covered = sum(n for part, _, _, n in rows if part == 1)
        for part, state, status, n in rows:
            n -= covered if part == 2 else 0
            if n:
                label = status if state == "done" else state
                out[label] = out.get(label, 0) + n
        return out

    def export_rows(self, job_id: int) -> Iterator[tuple]:
        """One row per input line in input order: (row id, metadata, key, model, state, status, text,
        response, input_tokens, output_tokens, cached_tokens, reasoning_tokens, error_code,
        error_message, attempts, remote batch id).

        Items are already in input order; duplicate lines are merged in by ordinal.
        """
        outcome = (f"i.key, i.model, {_STATE}, o.status, o.text, o.response, o.input_tokens, o.output_tokens,"
                   f" o.cached_tokens, o.reasoning_tokens, o.error_code, o.error_message, {_ATTEMPTS}, b.remote_id"
                   " FROM {} LEFT JOIN outcomes o ON o.item = i.id " + _BATCH_OF)
        if self.db.execute("SELECT 1 FROM duplicates WHERE job_id = ? LIMIT 1", (job_id,)).fetchone() is None:
            # no line repeats another: the items are the rows, already in input order
            yield from _chunks(self.db.execute(
                f"SELECT i.row_id, i.metadata, {outcome.format('items i')} WHERE i.job_id = ?"
                " AND i.state <> 'reasked' ORDER BY i.id",
                (job_id,)))
            return
        firsts = self.db.execute(
            f"SELECT i.ordinal, i.row_id, i.metadata, {outcome.format('items i')} WHERE i.job_id = ?"
            " AND i.state <> 'reasked' ORDER BY i.id",
            (job_id,))
        repeats = self.db.cursor().execute(
            f"SELECT d.ordinal, d.row_id, d.metadata,"
            f" {outcome.format('duplicates d JOIN items i ON i.key = d.key AND i.job_id = d.job_id')}"
            " WHERE d.job_id = ? ORDER BY d.ordinal", (job_id,))
        for row in heapq.merge(_chunks(firsts), _chunks(repeats)):
            yield row[1:]

    # -- structured output (structured.py decides; these read and write) --------------------------

    def add_structured(self, job_id: int, rows: list[tuple[str, str, bytes]]) -> None:
        """Keep (key, schema, neutral request) for the job's lines that ask for structured output."""
        self.db.executemany(
            "INSERT OR IGNORE INTO structured (item, job_id, schema, request)"
            " SELECT id, job_id, ?, ? FROM items WHERE job_id = ? AND key = ?",
            [(schema, request, job_id, key) for key, schema, request in rows])

    def has_structured(self, job_id: int) -> bool:
        return self.db.execute("SELECT 1 FROM structured WHERE job_id = ? LIMIT 1", (job_id,)).fetchone() is not None

    def structured_schema(self, item: int) -> str | None:
        row = self.db.execute("SELECT schema FROM structured WHERE item = ?", (item,)).fetchone()
        return row[0] if row else None

    def structured_schemas(self, batch_id: int) -> list[tuple[int, str]]:
        """(item, schema) of the batch's structured lines still waiting for an outcome."""
        return self.db.execute(
            f"SELECT m.id, s.schema FROM ({_queued_in('i.id')}) AS m JOIN structured s ON s.item = m.id",
            (batch_id, batch_id)).fetchall()

    def reaskable(self, job_id: int, max_attempts: int, *, batch_id: int | None = None,
                  item: int | None = None) -> list[tuple[int, bytes, str | None, str]]:
        """(item, request, answer, error) of invalid lines sent fewer than max_attempts times: of one
        batch being collected, of one item just answered live, or every finished one of the job."""
        params: tuple[int, ...]
        if batch_id is not None:
            rows, params = _queued_in("i.id, " + _FRESH_ATTEMPTS + " AS attempts"), (batch_id, batch_id)
        else:
            rows = (f"SELECT i.id, {_ATTEMPTS} AS attempts FROM items i {_BATCH_OF}"
                    f" WHERE i.{'id' if item is not None else 'job_id'} = ? AND {_STATE} = 'done'")
            params = (item if item is not None else job_id,)
        return self.db.execute(
            f"SELECT m.id, s.request, o.text, o.error_message FROM ({rows}) AS m JOIN structured s ON s.item = m.id"
            " JOIN outcomes o ON o.item = m.id WHERE o.status = 'invalid' AND m.attempts < ? ORDER BY m.id",
            (*params, max_attempts)).fetchall()

    def reask(self, job_id: int, item: int, key: str, line: bytes, request: bytes) -> None:
        """The line's request becomes its re-ask (new key and provider line), pending; the attempt
        that did not fit moves to a new item in state 'reasked', keeping its key, outcome and tokens
        (counted in the job's cost, never exported nor reused). Repeated lines follow the re-ask."""
        self.spell_out([item])
        old = self.db.execute("SELECT ordinal, row_id, metadata, key, model, line, batch, attempts FROM items"
                              " WHERE id = ?", (item,)).fetchone()
        self.db.execute("UPDATE items SET key = ?, line = ?, state = 'pending', batch = NULL WHERE id = ?",
                        (key, line, item))
        history = self.db.execute(
            "INSERT INTO items (job_id, ordinal, row_id, metadata, key, model, line, batch, attempts, state)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'reasked')", (job_id, *old)).lastrowid
        self.db.execute("UPDATE outcomes SET item = ? WHERE item = ?", (history, item))
        self.db.execute("UPDATE structured SET request = ? WHERE item = ?", (request, item))
        self.db.execute("UPDATE duplicates SET key = ? WHERE job_id = ? AND key = ?", (key, job_id, old[3]))

    # -- events --------------------------------------------------------------------------------

    def log(self, job_id: int, kind: str, **detail: Any) -> None:
        self.db.execute(
            "INSERT INTO events (job_id, at, kind, detail) VALUES (?, ?, ?, ?)",
            (job_id, time.time(), kind, orjson.dumps(detail).decode() if detail else None),
        )

    def events(self, job_id: int, limit: int = 20) -> list[tuple[float, str, dict]]:
        rows = self.db.execute(
            "SELECT at, kind, detail FROM events WHERE job_id = ? ORDER BY id DESC LIMIT ?", (job_id, limit)
        ).fetchall()
        return [(at, kind, orjson.loads(d) if d else {}) for at, kind, d in reversed(rows)]


# Fresh items (state 'new', migration 6) are what the batch whose range covers them says
# (docs/ranges-design.md). b below: an item's batch, its own for an explicit item and, for a fresh
# one, the latest range of its job and model starting at or before it (one index seek) if it reaches it.
_BATCH_OF = ("LEFT JOIN batches b ON b.id = CASE WHEN i.state = 'new' THEN (SELECT c.id FROM batches c"
             " WHERE c.job_id = i.job_id AND c.model = i.model AND c.first_item <= i.id ORDER BY c.first_item DESC"
             " LIMIT 1) ELSE i.batch END AND (i.state <> 'new' OR b.last_item >= i.id)")
_STATE = ("CASE WHEN i.state <> 'new' THEN i.state WHEN b.id IS NULL THEN 'pending'"
          " WHEN b.state = 'collected' THEN 'done' ELSE 'queued' END")
_ATTEMPTS = "i.attempts + CASE WHEN i.state = 'new' AND b.id IS NOT NULL THEN 1 ELSE 0 END"
# Ranges of a job and model never overlap and each batch's lies above the ones before it, so a fresh
# item above the last range is pending.
_FRONTIER = "(SELECT COALESCE(MAX(f.last_item), 0) FROM batches f WHERE f.job_id = i.job_id AND f.model = i.model)"
_PENDING = f"(i.state = 'pending' OR (i.state = 'new' AND i.id > {_FRONTIER}))"
_FRESH_ATTEMPTS = "i.attempts + CASE WHEN i.state = 'new' THEN 1 ELSE 0 END"  # of a batch's queued members
_IN_RANGE = "i.job_id = b.job_id AND i.model = b.model AND i.state = 'new' AND i.id BETWEEN b.first_item AND b.last_item"


def _queued_in(cols: str) -> str:
    """The items of batch ? still waiting for an outcome (parameters: the batch id twice): its
    explicit members, then the fresh items of its range while it is not collected."""
    return (f"SELECT {cols} FROM items i WHERE i.batch = ? AND i.state = 'queued' UNION ALL SELECT {cols}"
            f" FROM batches b JOIN items i ON {_IN_RANGE} WHERE b.id = ? AND b.state <> 'collected'")


def _without_metadata(line: tuple) -> bool:
    return line[2] is None


def _plain_answer(row: tuple) -> bool:
    """An outcome row that is an answer with no error fields and no cache writes."""
    return row[0] == "succeeded" and row[7] is None and row[8] is None and row[9] is None


_OUTCOME_COLS = ("status, text, response, input_tokens, output_tokens, cached_tokens, reasoning_tokens,"
                 " error_code, error_message, cache_write_tokens")
_JOB_COLS = "id, name, provider, model, endpoint, fingerprint, state, n_rows, options, created_at, updated_at"
_BATCH_COLS = ("id, job_id, tag, model, state, n_requests, n_bytes, input_file, remote_id, remote_status,"
               " output_file, error_file, error, created_at, updated_at")


def store_exists(location: str | os.PathLike | None) -> bool:
    """Whether there is a store to read at --store/$BATCHERY_HOME/the default (a database server is
    asked when opened: a URL counts as one)."""
    return store_url(location) is not None or (resolve_store_dir(location) / DB_NAME).exists()


def unusable_store_message(directory: Path | None, exc: sqlite3.Error) -> str:
    """Why a store cannot be used, from SQLite's error code: a full disk, a read-only disk and a
    damaged file need different actions, and only the last one is "not a batchery store"."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF  # the primary result code
    store = "the job store" if directory is None else f"the job store {directory}"
    if code == sqlite3.SQLITE_FULL:
        return (f"the disk holding {store} is full ({exc}); free some space and run the same command "
                "again: nothing already stored is lost")
    if code == sqlite3.SQLITE_IOERR:
        return (f"{store} could not be written ({exc}: the disk may be full or failing); free some space "
                "and run the same command again: nothing already stored is lost")
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
        return (f"{store} cannot be written ({exc}); `batchery status` and `batchery results` can still "
                "read it; to run jobs, make it writable or point --store at another folder")
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):  # healthy, only locked past the wait
        return (f"{store} is busy ({exc}): another batchery process is writing to it; let it finish, "
                "then run the same command again")
    if code == sqlite3.SQLITE_NOTADB:
        return f"{store} is not a batchery store ({exc}); point --store elsewhere or move it aside"
    return f"{store} cannot be used ({exc}); point --store elsewhere or move it aside"


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that never writes. mode=ro still needs the WAL's shared-memory file (-shm),
    which it creates if the folder is writable; in a folder nobody may write to, a store closed
    cleanly (no -wal content) is read as immutable. One whose last changes are still in its -wal
    cannot be read without write access, and the message says so rather than show stale data."""
    if not path.is_file():
        raise StoreError(f"no batchery store at {path.parent} (no job has run with it); "
                         "point --store or $BATCHERY_HOME at the store")
    uri = path.absolute().as_uri()
    try:
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, timeout=BUSY_WAIT)
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError as exc:
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise StoreError(f"the job store {path.parent} cannot be read without write access: its last "
                             f"changes are still in {wal.name} ({exc}); copy the folder somewhere writable and "
                             "point --store at the copy") from None
    except sqlite3.DatabaseError as exc:
        raise StoreError(unusable_store_message(path.parent, exc)) from None
    try:
        db = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.DatabaseError as exc:
        raise StoreError(unusable_store_message(path.parent, exc)) from None


def is_busy(exc: BaseException) -> bool:
    """Another connection holds the lock this one waited for (SQLITE_BUSY / SQLITE_LOCKED)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in str(exc)


def _chunks(cursor: sqlite3.Cursor) -> Iterator[tuple]:
    while chunk := cursor.fetchmany(10_000):
        yield from chunk


def _job(row: tuple) -> Job:
    id_, name, provider, model, endpoint, fingerprint, state, n_rows, options, created_at, updated_at = row
    return Job(id_, name, provider, model, endpoint, fingerprint, state, n_rows, orjson.loads(options),  # JSON text
               created_at, updated_at)
