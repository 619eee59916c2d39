"""Results out: one row per input line, in input order, as Result objects, JSONL, CSV or Parquet.

CSV and Parquet (and `to_pandas`) are flat: usage is four columns, the error two, and `metadata`
one column of JSON text as it was given (any JSON value, so the columns stay the same whatever
the lines hold, and a file can be written while the rows stream). Parquet also keeps `response`,
the provider's body, as JSON text."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from .errors import OutputError
from .gcpause import gc_paused
from .store import Store

PENDING = "pending"  # a line whose request has not come back yet (only seen before a job ends)
CSV_COLUMNS = ("id", "custom_id", "status", "text", "input_tokens", "output_tokens", "cached_tokens",
               "reasoning_tokens", "error_code",
               "error_message", "attempts", "provider", "model", "batch_id", "metadata")
TABLE_COLUMNS = (*CSV_COLUMNS, "response")  # Parquet and to_pandas
INT_COLUMNS = frozenset({"input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "attempts"})
ROW_GROUP_ROWS = 50_000  # a Parquet row group ends at this many rows or ROW_GROUP_BYTES of Arrow
ROW_GROUP_BYTES = 64 << 20  # data, whichever comes first: memory stays flat however long the job
JSONL_ROWS = 1_000  # lines written at once (about 1 MB)


@dataclass(slots=True)
class Result:
    """The outcome of one input line. `response` is the provider's own body, untouched."""

    id: str | None
    custom_id: str
    status: str
    text: str | None
    response: dict | None
    usage: dict[str, int | None]
    error: dict[str, str] | None
    attempts: int
    provider: str
    model: str
    batch_id: str | None
    metadata: Any = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


def _fields(row: tuple, provider: str, raw: bool) -> dict[str, Any]:
    """One export row. raw=True embeds stored JSON as-is (fast export); False decodes it."""
    (row_id, metadata, key, model, state, status, text, response, in_tok, out_tok, cached, reasoning,
     code, message, attempts, remote_batch) = row
    decode = orjson.Fragment if raw else orjson.loads
    out: dict[str, Any] = {
        "id": row_id,
        "custom_id": key,
        "status": status if state == "done" else PENDING,
        "text": text,
        "response": decode(response) if response else None,
        "usage": {"input_tokens": in_tok, "output_tokens": out_tok, "cached_tokens": cached,
                  "reasoning_tokens": reasoning},
        "error": {"code": code, "message": message} if code else None,
        "attempts": attempts,
        "provider": provider,
        "model": model,
        "batch_id": remote_batch,
    }
    if metadata is not None:
        out["metadata"] = decode(metadata)
    return out


def _json_text(blob: Any) -> str | None:
    return None if blob is None else blob if isinstance(blob, str) else bytes(blob).decode()


def flat_rows(store: Store, job_id: int, provider: str, response: bool = True) -> Iterator[tuple]:
    """The job's results as tuples of TABLE_COLUMNS, in input order; JSON stays text, unparsed.
    With response=False the last column is None (CSV has none: the body is not decoded for nothing)."""
    for (row_id, metadata, key, model, state, status, text, body, in_tok, out_tok, cached, reasoning,
         code, message, attempts, remote_batch) in store.export_rows(job_id):
        yield (row_id, key, status if state == "done" else PENDING, text, in_tok, out_tok, cached, reasoning,
               code or None, message if code else None, attempts, provider, model, remote_batch,
               _json_text(metadata), _json_text(body) if response else None)


def iter_results(store: Store, job_id: int, provider: str) -> Iterator[Result]:
    for row in store.export_rows(job_id):
        yield Result(**_fields(row, provider, raw=False))


def write_jsonl(store: Store, job_id: int, provider: str, out: BinaryIO) -> int:
    """Stream the job's results as JSONL; the stored provider body is embedded without re-parsing.
    Lines are written JSONL_ROWS at a time: a buffer of many megabytes costs fresh pages each time."""
    n = 0
    for chunk in _chunks(store.export_rows(job_id), JSONL_ROWS):
        out.write(b"".join([orjson.dumps(_fields(row, provider, raw=True), option=orjson.OPT_APPEND_NEWLINE)
                            for row in chunk]))
        n += len(chunk)
    return n


def write_csv(store: Store, job_id: int, provider: str, out: BinaryIO) -> int:
    text = io.TextIOWrapper(out, encoding="utf-8", newline="")  # buffered: detach() flushes it
    writer = csv.writer(text)
    writer.writerow(CSV_COLUMNS)
    n = 0
    width = len(CSV_COLUMNS)
    for row in flat_rows(store, job_id, provider, response=False):
        writer.writerow(row[:width])
        n += 1
    text.detach()
    return n


def _chunks(rows: Iterator[tuple], size: int) -> Iterator[list[tuple]]:
    chunk: list[tuple] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_parquet(store: Store, job_id: int, provider: str, out: BinaryIO) -> int:
    """Stream the job's results as Parquet (needs pyarrow). Rows become Arrow batches 10,000 at a
    time (Python objects are the larger form, so few are held), and batches are written out as one
    row group each ROW_GROUP_ROWS rows or ROW_GROUP_BYTES: memory stays flat whatever the job's size."""
    from .columnar import pyarrow

    pa = pyarrow()
    schema = pa.schema([(c, pa.int64() if c in INT_COLUMNS else pa.string()) for c in TABLE_COLUMNS])
    n = 0
    with pa.parquet.ParquetWriter(out, schema, compression="zstd") as writer:
        group: list = []

        def flush() -> None:
            writer.write_table(pa.Table.from_batches(group, schema=schema), row_group_size=ROW_GROUP_ROWS)
            group.clear()

        for chunk in _chunks(flat_rows(store, job_id, provider), min(10_000, ROW_GROUP_ROWS)):
            columns = [pa.array(values, type=field.type) for values, field in zip(zip(*chunk), schema)]
            group.append(pa.record_batch(columns, schema=schema))
            n += len(chunk)
            if sum(b.num_rows for b in group) >= ROW_GROUP_ROWS or sum(b.nbytes for b in group) >= ROW_GROUP_BYTES:
                flush()
        if group:
            flush()
    return n


def format_for(path: str | Path | None) -> str:
    """The format a results file's name asks for: .csv and .parquet by their suffix, else JSONL, so
    `--out r.parquet` never writes JSON lines into a file named .parquet."""
    if path is None or str(path) == "-":
        return "jsonl"
    return {".csv": "csv", ".parquet": "parquet"}.get(Path(path).suffix.lower(), "jsonl")


def check_target(path: str | Path | None) -> None:
    """Refuse an output path that cannot be written, before a job runs rather than after."""
    if path is None or str(path) == "-":
        return
    if format_for(path) == "parquet":  # pyarrow missing: say so before anything is sent
        from .columnar import pyarrow

        pyarrow()
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"--out {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise OutputError(f"--out {path}: the folder {path.parent} does not exist; create it first "
                          "(nothing was sent)")


@gc_paused()
def export(store: Store, job_id: int, provider: str, path: str | Path | None, fmt: str | None = None) -> int:
    """Write results to `path`, or standard output when None or "-", as `fmt` (default: as the
    file's suffix asks, see format_for).

    A regular file is replaced atomically (written beside it, then renamed over it), so a crash, a
    signal or a full disk never leaves half a file. Anything else that exists there - a FIFO, a
    device, /dev/stdout, a symlink - is written into, as a shell redirection would: renaming over it
    would replace it (as root, `--out /dev/null` would replace the system's /dev/null)."""
    fmt = fmt or format_for(path)
    writer = {"csv": write_csv, "parquet": write_parquet}.get(fmt, write_jsonl)
    if fmt == "parquet":  # pyarrow missing: say so before a file is touched
        from .columnar import pyarrow

        pyarrow()
    if path is None or str(path) == "-":
        n = writer(store, job_id, provider, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return n
    path = Path(path)
    try:
        if path.is_symlink() or (path.exists() and not path.is_file()):
            with path.open("wb") as f:
                return writer(store, job_id, provider, f)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with tmp.open("wb") as f:
                n = writer(store, job_id, provider, f)
            tmp.replace(path)
        except BaseException:  # an error, Ctrl-C or SIGTERM: leave no half-written file behind
            tmp.unlink(missing_ok=True)
            raise
        return n
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
