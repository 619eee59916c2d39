"""Results out: one row per input line, in input order, as Result objects, JSONL or CSV."""

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
from .store import Store

PENDING = "pending"  # a line whose request has not come back yet (only seen before a job ends)
CSV_COLUMNS = ("id", "custom_id", "status", "text", "input_tokens", "output_tokens", "cached_tokens",
               "reasoning_tokens", "error_code",
               "error_message", "attempts", "provider", "model", "batch_id")


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


def iter_results(store: Store, job_id: int, provider: str) -> Iterator[Result]:
    for row in store.export_rows(job_id):
        yield Result(**_fields(row, provider, raw=False))


def write_jsonl(store: Store, job_id: int, provider: str, out: BinaryIO) -> int:
    """Stream the job's results as JSONL; the stored provider body is embedded without re-parsing."""
    n = 0
    buffer: list[bytes] = []
    for row in store.export_rows(job_id):
        buffer.append(orjson.dumps(_fields(row, provider, raw=True)))
        n += 1
        if len(buffer) >= 10_000:
            out.write(b"\n".join(buffer) + b"\n")
            buffer = []
    if buffer:
        out.write(b"\n".join(buffer) + b"\n")
    return n


def write_csv(store: Store, job_id: int, provider: str, out: BinaryIO) -> int:
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(text)
    writer.writerow(CSV_COLUMNS)
    n = 0
    for row in store.export_rows(job_id):
        f = _fields(row, provider, raw=True)
        err = f["error"] or {}
        usage = f["usage"]
        writer.writerow([f["id"], f["custom_id"], f["status"], f["text"], usage["input_tokens"],
                         usage["output_tokens"], usage["cached_tokens"], usage["reasoning_tokens"], err.get("code"), err.get("message"), f["attempts"],
                         provider, f["model"], f["batch_id"]])
        n += 1
    text.detach()
    return n


def check_target(path: str | Path | None) -> None:
    """Refuse an output path that cannot be written, before a job runs rather than after."""
    if path is None or str(path) == "-":
        return
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"--out {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise OutputError(f"--out {path}: the folder {path.parent} does not exist; create it first "
                          "(nothing was sent)")


def export(store: Store, job_id: int, provider: str, path: str | Path | None, fmt: str = "jsonl") -> int:
    """Write results to `path`, or standard output when None or "-".

    A regular file is replaced atomically (written beside it, then renamed over it), so a crash, a
    signal or a full disk never leaves half a file. Anything else that exists there - a FIFO, a
    device, /dev/stdout, a symlink - is written into, as a shell redirection would: renaming over it
    would replace it (as root, `--out /dev/null` would replace the system's /dev/null)."""
    writer = write_csv if fmt == "csv" else write_jsonl
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
