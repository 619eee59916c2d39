"""Provider batch limits as data, and the splitter that respects them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchLimits:
    max_requests: int  # requests per batch
    max_bytes: int  # bytes per batch input file
    discount: float  # share of the live price saved in batch mode (0.5 = half price)
    window: str  # completion window the provider promises


LIMITS: dict[str, BatchLimits] = {
    "openai": BatchLimits(max_requests=50_000, max_bytes=200 * 1024 * 1024, discount=0.5, window="24h"),
}


def split(lines: Iterable[tuple[str, int]], max_requests: int, max_bytes: int) -> Iterator[list[str]]:
    """Group (key, encoded size) pairs into batches under both caps, keeping their order."""
    batch: list[str] = []
    size = 0
    for key, nbytes in lines:
        if batch and (len(batch) >= max_requests or size + nbytes > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(key)
        size += nbytes
    if batch:
        yield batch
