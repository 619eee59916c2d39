"""Readers for request files: JSONL (one request object per line) and CSV (a `prompt` column).

Both stream: a file of a million lines is never held in memory.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from .errors import InputError

# CSV columns that become request fields; numbers arrive as text and are converted here.
_CSV_NUMBERS = {"max_tokens": int, "temperature": float, "top_p": float}
_CSV_TEXT = ("id", "prompt", "system", "model")


def read_requests(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield (where, object) for each request in the file; `where` is "file:line" for errors."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _read_csv(path)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        yield from read_jsonl(path)
    else:
        raise InputError(f"{path}: unknown input format '{suffix}'; use .jsonl or .csv")


def read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield ("file:line", object) for each non-blank line of a JSONL file."""
    with path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not valid JSON ({exc})") from None
            yield f"{path}:{lineno}", obj


def _read_csv(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        text = io.TextIOWrapper(path.open("rb"), encoding="utf-8-sig", newline="")
        reader = csv.DictReader(text)
        if reader.fieldnames is None or "prompt" not in reader.fieldnames:
            raise InputError(f"{path}:1: a CSV request file needs a 'prompt' column")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            obj: dict[str, Any] = {k: row[k] for k in _CSV_TEXT if row.get(k)}
            for name, convert in _CSV_NUMBERS.items():
                if row.get(name):
                    try:
                        obj[name] = convert(row[name])
                    except ValueError:
                        raise InputError(f"{where}: column '{name}' must be a number") from None
            yield where, obj
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise InputError(f"{path}: malformed CSV ({exc})") from None


def iter_objects(requests: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """Requests given in Python (the API): `where` is the position in the list."""
    for i, obj in enumerate(requests):
        yield f"request[{i}]", obj
