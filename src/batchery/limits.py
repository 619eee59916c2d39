"""What a batch limit is (each adapter states its provider's), and the splitter that respects them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar


@dataclass(frozen=True)
class BatchLimits:
    max_requests: int  # requests per batch
    max_bytes: int  # bytes per batch input file
    discount: float  # share of the live price saved in batch mode (0.5 = half price)
    window: str  # completion window the provider promises


MB = 1024 * 1024


def __getattr__(name: str) -> dict[str, BatchLimits]:
    """`LIMITS`: each batch provider's limits, read from its adapter (where they are kept, with the
    provider's other facts), by provider name."""
    if name != "LIMITS":
        raise AttributeError(name)
    from .providers import (  # lazy: adapters import this module
        PROVIDERS,
        provider_class,
    )

    return {p: provider_class(p).limits for p in PROVIDERS if provider_class(p).has_batch_api}

K = TypeVar("K")  # what split groups: keys, or indexes of lines


def split(lines: Iterable[tuple[K, int]], max_requests: int, max_bytes: int) -> Iterator[list[K]]:
    """Group (key, encoded size) pairs into batches under both caps, keeping their order."""
    batch: list[K] = []
    size = 0
    for key, nbytes in lines:
        if batch and (len(batch) >= max_requests or size + nbytes > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(key)
        size += nbytes
    if batch:
        yield batch
