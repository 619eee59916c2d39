"""Readers for request files: JSONL (one request object per line) and CSV (a `prompt` column).

Both stream: a file of a million lines is never held in memory.
"""

from __future__ import annotations

import csv
import io
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from .errors import BatcheryError, InputError

# CSV columns that become request fields; numbers arrive as text and are converted here.
_CSV_NUMBERS = {"max_tokens": int, "temperature": float, "top_p": float}
_CSV_TEXT = ("id", "prompt", "system", "model")


def read_requests(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield (where, object) for each request in the file; `where` is "file:line" for errors.

    Request ids, where given, must be unique in the file (checked once the whole file is read).
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _read_csv(path)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        ids = UniqueIds()
        name = str(path)  # once, not per line
        for lineno, obj in _jsonl(path):
            ids.add(obj, lineno)
            yield f"{name}:{lineno}", obj
        ids.check(lambda line: f"{name}:{line}")
    else:
        check_file(path)
        raise InputError(f"{path}: unknown input format '{suffix}'; use .jsonl or .csv")


def check_file(path: Path) -> None:
    """A clear error, before anything else, for a path that cannot be read as a file."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a file")


def read_file(path: Path, what: str = "file", error: type[BatcheryError] = InputError) -> bytes:
    """A whole (small) file, or one clear `error` naming the path and what it should have been
    (`what`: "config file", "price file"...): missing, a folder, or unreadable."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, not a {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror})") from None


def open_file(path: Path) -> BinaryIO:
    check_file(path)
    try:
        return path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None


def read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield ("file:line", object) for each non-blank line of a JSONL file."""
    name = str(path)
    for lineno, obj in _jsonl(path):
        yield f"{name}:{lineno}", obj


def _jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    with open_file(path) as f:
        for lineno, line in enumerate(f, 1):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                if not line.strip():
                    continue  # a blank line (tested only here: it is rare, and strip copies the line)
                raise InputError(f"{path}:{lineno}: not valid JSON ({exc})") from None
            yield lineno, obj


def _read_csv(path: Path) -> Iterator[tuple[str, Any]]:
    # strict: a quote opened and never closed is an error, not the rest of the file read as one field
    text = io.TextIOWrapper(open_file(path), encoding="utf-8-sig", newline="")
    reader = csv.reader(text, strict=True)
    ids = UniqueIds()
    end = 0  # the last physical line read: a record may span several (quoted newlines)
    with text:
        while True:
            start = end + 1
            try:
                row = next(reader, None)
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
            except csv.Error as exc:
                hint = "; a quoted field opened here is never closed" if "end of data" in str(exc) else ""
                raise InputError(f"{path}:{start}: malformed CSV ({exc}){hint}") from None
            if row is None:
                if start == 1:  # not even a header
                    raise InputError(f"{path}:1: a CSV request file needs a 'prompt' column")
                break
            end = reader.line_num
            if start == 1:
                header = row
                if "prompt" not in header:
                    raise InputError(f"{path}:1: a CSV request file needs a 'prompt' column")
                repeated = sorted({name for name in header if header.count(name) > 1})
                if repeated:
                    raise InputError(f"{path}:1: column(s) {repeated} appear more than once")
                continue
            if not row:
                continue  # a blank line
            if len(row) > len(header):
                raise InputError(f"{path}:{start}: {len(row)} fields but the header has {len(header)} columns "
                                 "(a comma in a value needs the value in double quotes)")
            values = dict(zip(header, row))
            where = f"{path}:{start}"
            obj: dict[str, Any] = {k: values[k] for k in _CSV_TEXT if values.get(k)}
            for name, convert in _CSV_NUMBERS.items():
                if values.get(name):
                    try:
                        obj[name] = convert(values[name])
                    except ValueError:
                        raise InputError(f"{where}: column '{name}' must be a number") from None
            ids.add(obj, start)
            yield where, obj
    ids.check(lambda line: f"{path}:{line}")


def iter_objects(requests: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """Requests given in Python (the API): `where` is the position in the list."""
    ids = UniqueIds()
    for i, obj in enumerate(requests):
        ids.add(obj, i)
        yield f"request[{i}]", obj
    ids.check(lambda i: f"request[{i}]")


# Up to this many ids, a set of their hashes says "no repeat" sooner than numpy loads (0.02 s for
# 100,000 against 0.23 s), holding at most about 20 MB; numpy's sort finds where a repeat is.
_SET_CHECK = 250_000


class UniqueIds:
    """Request ids, where given, must be unique within a job: results are matched back by them.

    Kept as an 8-byte hash and a position per id (16 bytes a line: a million-line file costs
    16 MB, not the hundreds a set of strings would), sorted once at the end to find a repeat.
    Two different ids share a hash with odds of about n² / 2⁶⁵ (3 in 10⁸ for a million ids).
    """

    def __init__(self) -> None:
        self._digests = array("q")
        self._places = array("q")

    def add(self, obj: Any, place: int) -> None:
        row_id = obj.get("id") if type(obj) is dict else None
        if type(row_id) is int:  # 7 and "7" are the same id in the results
            row_id = str(row_id)
        if type(row_id) is str:  # other types are refused when the request is read
            # Python's own string hash: 64 bits, keyed per process, cached on the string
            self._digests.append(hash(row_id))
            self._places.append(place)

    def check(self, name: Callable[[int], str]) -> None:
        if len(self._digests) < 2:
            return
        if len(self._digests) <= _SET_CHECK and len(set(self._digests)) == len(self._digests):
            return  # no repeat: said without importing numpy
        import numpy as np

        digests = np.frombuffer(self._digests, dtype=np.int64)
        order = np.argsort(digests, kind="stable")  # stable: the earlier of two equal ids comes first
        ordered = digests[order]
        repeats = np.flatnonzero(ordered[1:] == ordered[:-1])
        if len(repeats):
            places = np.frombuffer(self._places, dtype=np.int64)
            # the repeat that comes first in the input, and the use of its id just before it
            k = int(np.argmin(places[order[repeats + 1]]))
            first, second = int(places[order[repeats[k]]]), int(places[order[repeats[k] + 1]])
            raise InputError(f"{name(second)}: id already given on {name(first)}; ids must be unique "
                             "within a job (results are matched back by them)")
