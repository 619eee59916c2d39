"""In-memory bookkeeping shared by the routes: stored files (contents on disk) and stats counters.

File contents live in a private temporary directory instead of RAM because batch inputs can be
200 MB and a benchmark produces hundreds of MB of output; only metadata stays in memory.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from starlette.datastructures import UploadFile

from .clock import Clock

T = TypeVar("T")


class Registry(Generic[T]):
    """Things by id in the order they were added, behind a lock: the emulator answers requests on
    many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, T] = {}

    def put(self, key: str, item: T) -> int:
        """Keep ``item`` under ``key``; returns how many were added before it."""
        with self._lock:
            ordinal = len(self._items)
            self._items[key] = item
        return ordinal

    def get(self, key: str) -> T | None:
        with self._lock:
            return self._items.get(key)

    def pop(self, key: str) -> T | None:
        with self._lock:
            return self._items.pop(key, None)

    def all(self) -> list[T]:
        """Every item, oldest first."""
        with self._lock:
            return list(self._items.values())

    def newest_first(self) -> list[T]:
        return self.all()[::-1]

FILE_TTL_SECONDS = 30 * 24 * 3600  # purpose=batch / batch_output files expire after 30 days


def new_id(prefix: str) -> str:
    """Random ids shaped like the real ones (``file-…``, ``batch_…``)."""
    return prefix + secrets.token_hex(12)


def _openai_file_id() -> str:
    return new_id("file-")


@dataclass(frozen=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    size: int
    created_at: int
    expires_at: int | None
    path: Path

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.size,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": self.expires_at,
            "status_details": None,
        }


class Stats:
    """Counters per provider, read by ``GET /_emulator/stats`` and ``Emulator.stats()``."""

    KEYS = ("batches_created", "files_uploaded", "requests_processed", "live_requests", "live_rate_limited",
            "batch_lists", "batch_gets", "files_downloaded")
    # Counts the top level sums over providers; it shows the others per provider. live_requests are
    # answered live, errors included; live_rate_limited refused with a 429; batch_lists and batch_gets
    # read batch states (a list page, or one batch by id: what polls cost); files_downloaded are
    # file contents fetched.
    SUMMED = frozenset({"files_uploaded", "files_downloaded", "requests_processed"})

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(self.KEYS, 0))
        self._faults: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def register(self, provider: str) -> None:
        """Make a provider show up (with zeros) before anything happened on it."""
        with self._lock:
            self._counts[provider]

    def add(self, provider: str, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[provider][key] += n

    def add_fault(self, provider: str, name: str, n: int = 1) -> None:
        """Count ``n`` injected faults of kind ``name`` (see :mod:`.faults`)."""
        with self._lock:
            self._faults[provider][name] += n

    def snapshot(self) -> dict:
        """Each of the ``KEYS`` as ``n`` (``SUMMED``) or ``{provider: n}``, ``"faults": {name: n}`` and
        ``"by_provider": {provider: {..., "faults": {name: n}}}``: totals at the top, the breakdown
        underneath. Only faults that were injected appear."""
        with self._lock:
            per: dict[str, dict] = {p: dict(c) for p, c in self._counts.items()}
            faults = {p: dict(f) for p, f in self._faults.items()}
        totals = sum(map(Counter, faults.values()), Counter())
        snapshot: dict = {key: sum(c[key] for c in per.values()) if key in self.SUMMED
                          else {p: c[key] for p, c in per.items()} for key in self.KEYS}
        for p, entry in per.items():
            entry["faults"] = faults.get(p, {})
        return {**snapshot, "faults": dict(totals), "by_provider": per}


class FileStore(Registry[StoredFile]):
    """The files of one provider namespace, oldest first. Thread-safe; contents are files under ``root``.

    A deleted file's bytes stay on disk while a running batch still needs them (``pin``), so a
    client may delete its input right after creating the batch, as real clients sometimes do.
    """

    def __init__(self, root: Path, clock: Clock, new_file_id: Callable[[], str] = _openai_file_id) -> None:
        self.root = root
        self.clock = clock
        self.new_file_id = new_file_id  # the provider's id shape: ``file-…`` (OpenAI), a uuid (Mistral)
        super().__init__()
        self._pins: dict[Path, int] = {}
        self._orphans: set[Path] = set()

    def blob_path(self) -> Path:
        """A fresh path to write contents to before calling :meth:`add`."""
        return self.root / secrets.token_hex(16)

    def add(self, path: Path, filename: str, purpose: str, ttl: int | None = FILE_TTL_SECONDS,
            file_id: str | None = None) -> StoredFile:
        """A new file of the bytes at ``path``, under ``file_id`` when the id was handed out before."""
        now = int(self.clock.now())
        stored = StoredFile(
            id=file_id or self.new_file_id(),
            filename=filename,
            purpose=purpose,
            size=path.stat().st_size,
            created_at=now,
            expires_at=None if ttl is None else now + ttl,
            path=path,
        )
        self.put(stored.id, stored)
        return stored

    def add_lines(self, lines: list[bytes], filename: str, purpose: str, ttl: int | None = FILE_TTL_SECONDS
                  ) -> StoredFile | None:
        """A new file of these JSONL lines (a batch's results); None when there are none."""
        if not lines:
            return None
        path = self.blob_path()
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        return self.add(path, filename, purpose, ttl)

    def delete(self, file_id: str) -> bool:
        with self._lock:
            stored = self._items.pop(file_id, None)
            if stored is None:
                return False
            if self._pins.get(stored.path):
                self._orphans.add(stored.path)
                return True
        stored.path.unlink(missing_ok=True)
        return True

    def pin(self, path: Path) -> None:
        with self._lock:
            self._pins[path] = self._pins.get(path, 0) + 1

    def unpin(self, path: Path) -> None:
        with self._lock:
            left = self._pins.get(path, 0) - 1
            if left > 0:
                self._pins[path] = left
                return
            self._pins.pop(path, None)
            if path not in self._orphans:
                return
            self._orphans.discard(path)
        path.unlink(missing_ok=True)


def copy_upload(upload: UploadFile, path: Path) -> tuple[int, int]:
    """Copy an upload to disk in blocks; return (bytes, lines), a last line without newline included."""
    upload.file.seek(0)
    lines, last = 0, b"\n"
    with open(path, "wb") as out:
        while block := upload.file.read(1 << 20):
            out.write(block)
            lines += block.count(b"\n")
            last = block[-1:]
        return out.tell(), lines + (last != b"\n")
