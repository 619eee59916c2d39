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


_MB = 1024 * 1024

# From ../shared/research/provider_batch_apis.md; each adapter reads its own line.
LIMITS: dict[str, BatchLimits] = {
    "openai": BatchLimits(max_requests=50_000, max_bytes=200 * _MB, discount=0.5, window="24h"),
    "anthropic": BatchLimits(max_requests=100_000, max_bytes=256 * _MB, discount=0.5, window="24h"),
    "gemini": BatchLimits(max_requests=100_000, max_bytes=2048 * _MB, discount=0.5, window="24h (expires at 48h)"),
    "mistral": BatchLimits(max_requests=1_000_000, max_bytes=512 * _MB, discount=0.5, window="24h (timeout_hours)"),
    "together": BatchLimits(max_requests=50_000, max_bytes=100 * _MB, discount=0.5, window="24h best effort"),
    "groq": BatchLimits(max_requests=50_000, max_bytes=100 * _MB, discount=0.25, window="24h to 7d"),
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
