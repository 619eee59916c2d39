"""The PostgreSQL dialect of the job store: a connection with sqlite3's calls (execute, executemany,
cursor, fetch*, rowcount, lastrowid, total_changes) that runs store.py's one set of SQL statements
on PostgreSQL through psycopg 3. store.py keeps every query; this module only rewrites SQLite's
idioms into PostgreSQL's, so the two backends cannot drift apart:

- placeholders `?` become `%s`; `INSERT OR IGNORE` becomes `ON CONFLICT DO NOTHING`; a single-row
  INSERT into a table with an id returns it (`RETURNING id`, read as `lastrowid`);
  `json_extract(col, '$.k')` becomes `col::jsonb ->> 'k'`; `temp.` tables live in `pg_temp`;
- in DDL, `id INTEGER PRIMARY KEY` becomes an identity column, BLOB is BYTEA, REAL is DOUBLE
  PRECISION, WITHOUT ROWID goes;
- `BEGIN IMMEDIATE` (SQLite's one writer at a time) is BEGIN plus a transaction-level advisory
  lock on the store, waited for up to `lock_timeout` (PRAGMA busy_timeout); a wait that runs out
  is raised as sqlite3's "database is locked", so every caller's store-busy handling applies as is;
- `PRAGMA user_version` is the one row of the table `batchery_schema`; other PRAGMAs tune SQLite
  only and do nothing here;
- the one-writer-per-job rule is a session-level `pg_try_advisory_lock`, which the server drops
  when its holder's connection dies, as the OS drops a file lock when its process dies.

A password in the URL never reaches a message: `redact` masks it in the URL shown, and every error
this module raises has it scrubbed (the server may echo it, e.g. as an unknown database name).
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import JobBusyError, StoreError

# Advisory lock keys (two int4s): the store's write lock, and one lock per job.
_WRITE_LOCK = (0x62617463, 0)  # 'batc'
_JOB_LOCK = 0x6A6F6273  # 'jobs'
_TABLES_WITH_ID = ("jobs", "items", "batches", "events")
_SCHEMA = "batchery_schema"


def secrets_of(url: str) -> list[str]:
    """The password(s) a URL carries (as written and decoded), to scrub from any message."""
    found: list[str] = []
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        found.append(password)
    found += re.findall(r"[?&]password=([^&]*)", url)
    return sorted({s for p in found for s in (p, unquote(p)) if s}, key=len, reverse=True)


def redact(url: str) -> str:
    """The URL as it may be shown: the password (in the authority or the query) is ***."""
    masked = re.sub(r"^(\w+://[^:/@]*:)[^@]*@", r"\1***@", url)
    masked = re.sub(r"([?&]password=)[^&]*", r"\1***", masked)
    return _scrub(masked, secrets_of(url))  # the password again elsewhere (a database named like it)


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return " ".join(text.split())  # one line: the server's messages have DETAIL/HINT lines


class PgCursor:
    """A psycopg cursor seen through sqlite3's cursor interface."""

    def __init__(self, conn: PgConnection):
        self._conn = conn
        self._cur = conn.pg.cursor()
        self.lastrowid: int | None = None
        self.rowcount = -1

    def execute(self, sql: str, params: Iterable[Any] = ()) -> PgCursor:
        special = self._conn.special(sql)
        if special is not None:
            sql, params = special, ()
            if not sql:
                return self
        query, returning = _translate(sql)
        with self._conn.errors():
            self._cur.execute(query, tuple(params))
        self.rowcount = self._cur.rowcount
        if returning:
            row = self._cur.fetchone()
            self.lastrowid = row[0] if row else None
        if self.rowcount > 0 and not query.startswith("SELECT"):
            self._conn.total_changes += self.rowcount
        return self

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> PgCursor:
        query, _ = _translate(sql, many=True)
        with self._conn.errors():
            self._cur.executemany(query, [tuple(r) for r in rows])
        self.rowcount = self._cur.rowcount
        if self.rowcount > 0:
            self._conn.total_changes += self.rowcount
        return self

    def fetchone(self) -> Any:  # as sqlite3's: a row or None, which callers that know there is a row index
        if self._cur.description is None:
            return None
        with self._conn.errors():
            return self._cur.fetchone()

    def fetchall(self) -> list[tuple]:
        if self._cur.description is None:
            return []
        with self._conn.errors():
            return self._cur.fetchall()

    def fetchmany(self, size: int) -> list[tuple]:
        if self._cur.description is None:
            return []
        with self._conn.errors():
            return self._cur.fetchmany(size)

    def __iter__(self) -> Iterator[tuple]:
        while chunk := self.fetchmany(10_000):
            yield from chunk


class PgConnection:
    """One autocommit session (explicit BEGIN/COMMIT, like the SQLite connection store.py opens)."""

    def __init__(self, url: str, where: str, busy_wait: float):
        self.where = where
        self._secrets = secrets_of(url)
        self.total_changes = 0
        try:
            import psycopg
        except ImportError:
            raise StoreError("a PostgreSQL store needs psycopg: pip install 'batchery[postgres]'") from None
        self._psycopg = psycopg
        name = f"batchery pid {os.getpid()} on {socket.gethostname()}"[:63]
        try:
            self.pg = psycopg.connect(url, autocommit=True, application_name=name, connect_timeout=15)
        except (psycopg.Error, ValueError) as exc:  # refused, unreachable, or a malformed URL
            raise StoreError(f"cannot open the job store {where}: {self.scrub(exc)}") from None
        self.execute(f"PRAGMA busy_timeout = {int(busy_wait * 1000)}")
        self._ensure_schema_table()

    def scrub(self, exc: BaseException | str) -> str:
        return _scrub(str(exc), self._secrets)

    @contextmanager
    def errors(self) -> Iterator[None]:
        """psycopg's errors as the store's: a lock wait that ran out is SQLite's "database is
        locked" (the store turns it into StoreBusyError), anything else a StoreError, scrubbed."""
        errors = self._psycopg.errors
        try:
            yield
        except (errors.LockNotAvailable, errors.DeadlockDetected) as exc:
            raise sqlite3.OperationalError(f"database is locked ({self.scrub(exc)})") from None
        except self._psycopg.OperationalError as exc:
            raise StoreError(f"the job store {self.where} cannot be used: {self.scrub(exc)}") from None
        except self._psycopg.Error as exc:
            raise StoreError(f"the job store {self.where} refused a statement: {self.scrub(exc)}") from None

    def _ensure_schema_table(self) -> None:
        if self.execute(f"SELECT to_regclass('{_SCHEMA}')").fetchone()[0] is not None:
            return
        # Processes opening a fresh database at once: the write lock makes one of them create it.
        self.execute("BEGIN IMMEDIATE")
        try:
            self.execute(f"CREATE TABLE IF NOT EXISTS {_SCHEMA} (version INTEGER NOT NULL)")
            self.execute(f"INSERT INTO {_SCHEMA} SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM {_SCHEMA})")
        except BaseException:
            self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    def special(self, sql: str) -> str | None:
        """SQLite statements with no SQL equivalent: what to run instead ('' for nothing)."""
        head = sql.lstrip()[:16].upper()
        if not head.startswith(("PRAGMA", "BEGIN IMMEDIATE")):
            return None
        if head.startswith("BEGIN"):
            with self.errors():
                self.pg.execute("BEGIN")
                try:
                    self.pg.execute("SELECT pg_advisory_xact_lock(%s, %s)", _WRITE_LOCK)
                except BaseException:
                    self.pg.execute("ROLLBACK")
                    raise
            return ""
        name, _, value = sql.strip()[len("PRAGMA"):].partition("=")
        name, value = name.strip().lower(), value.strip()
        if name == "user_version":
            return f"UPDATE {_SCHEMA} SET version = {int(value)}" if value else f"SELECT version FROM {_SCHEMA}"
        if name == "busy_timeout" and value:  # 0 is "do not wait" in SQLite, "wait forever" in PostgreSQL
            return f"SET lock_timeout = {max(1, int(value))}"
        return ""  # journal_mode, synchronous, cache_size, foreign_keys, temp_store: SQLite's own tuning

    # -- sqlite3.Connection's calls ---------------------------------------------------------------

    def cursor(self) -> PgCursor:
        return PgCursor(self)

    def execute(self, sql: str, params: Iterable[Any] = ()) -> PgCursor:
        return PgCursor(self).execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> PgCursor:
        return PgCursor(self).executemany(sql, rows)

    def close(self) -> None:
        self.pg.close()

    # -- the job lock -----------------------------------------------------------------------------

    @contextmanager
    def job_lock(self, job_id: int, job_name: str) -> Iterator[None]:
        """One writer per job: a session-level advisory lock, dropped by the server when the
        holder's connection ends (a crash, a kill -9, a machine that went away)."""
        if not self.execute("SELECT pg_try_advisory_lock(?, ?)", (_JOB_LOCK, job_id)).fetchone()[0]:
            row = self.execute(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.classid = ? AND l.objid = ? AND l.objsubid = 2 AND l.granted",
                (_JOB_LOCK, job_id)).fetchone()
            holder = row[0].removeprefix("batchery ") if row and row[0] else "unknown"
            raise JobBusyError(f"job '{job_name}' is being run by another batchery process ({holder}); "
                               "let it finish or stop it, then run the same command again")
        try:
            yield
        finally:
            if not self.pg.closed:
                self.execute("SELECT pg_advisory_unlock(?, ?)", (_JOB_LOCK, job_id))


_cache: dict[tuple[str, bool], tuple[str, bool]] = {}


def _translate(sql: str, many: bool = False) -> tuple[str, bool]:
    """store.py's SQLite statement in PostgreSQL's words, and whether it returns the new row's id."""
    key = (sql, many)
    if key in _cache:
        return _cache[key]
    s = sql.strip()
    s = re.sub(r"json_extract\((\w+), '\$\.(\w+)'\)", r"(\1::jsonb ->> '\2')", s)
    s = re.sub(r"\btemp\.", "pg_temp.", s)
    s = s.replace(" IN ()", " IN (NULL)")  # SQLite takes an empty list (false); NULL is false in a WHERE too
    if s.upper().startswith(("CREATE", "ALTER")):
        s = re.sub(r"\bid INTEGER PRIMARY KEY\b", "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", s)
        s = re.sub(r"\bINTEGER PRIMARY KEY\b", "BIGINT PRIMARY KEY", s)
        s = re.sub(r"\bBLOB\b", "BYTEA", s)
        s = re.sub(r"\bREAL\b", "DOUBLE PRECISION", s)
        s = re.sub(r"\)\s*WITHOUT ROWID", ")", s)
    if s.upper().startswith("INSERT OR IGNORE"):
        s = "INSERT" + s[len("INSERT OR IGNORE"):] + " ON CONFLICT DO NOTHING"
    returning = (not many and re.match(rf"INSERT INTO ({'|'.join(_TABLES_WITH_ID)}) \(", s) is not None
                 and " VALUES " in s)
    if returning:
        s += " RETURNING id"
    s = s.replace("%", "%%").replace("?", "%s")
    _cache[key] = (s, returning)
    return s, returning


def connect(url: str, where: str, busy_wait: float) -> PgConnection:
    return PgConnection(url, where, busy_wait)
