"""What a batch limit is (each adapter states its provider's), and the splitter that respects them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar


@dataclass(frozen=True)
class BatchLimits:
    max_requests: int  # requests per batch
    max_bytes: int  # bytes per batch input file
    discount: float  # share of the live price saved in batch mode (0.5 = half price)
    window: str  # completion window the provider promises
    # Estimated prompt tokens a model may have in open batches (per organisation); None: no such cap
    # documented. A batch past it fails validation (OpenAI: token_limit_exceeded).
    max_enqueued_tokens: int | None = None


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


_REPORTED = re.compile(r"Limit: ([\d,]+) enqueued tokens")


def reported_enqueued_limit(message: str | None) -> int | None:
    """The enqueued-token limit a provider states in its token_limit_exceeded error, if it does
    ("... Limit: 2,000,000 enqueued tokens. ...")."""
    found = _REPORTED.search(message or "")
    return int(found.group(1).replace(",", "")) if found else None


def tokens_text(n: int) -> str:
    """1.8 M, 2 M, 350,000: for "waiting: 1.8 M of 2 M enqueued tokens in use"."""
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}".removesuffix(".0") + " M"
    return f"{n:,}"
