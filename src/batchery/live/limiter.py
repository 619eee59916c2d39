"""Client-side rate limiting for live mode: requests per minute, tokens per minute, a shared cooldown.

Providers enforce per-minute limits over short windows ("3,000 RPM" behaves like 50 requests a
second), so sending a minute's worth at once earns a burst of 429s. The limiter paces calls
evenly instead: each limit is a token bucket refilled continuously at limit/60 per second whose
capacity is a fraction of a second's worth, which keeps the provider's own bucket from ever
running dry while still using ≥97% of the limit.

Token use is estimated before a call and corrected once the response reports what was used
(`settle`). A 429 starts one cooldown that every worker respects (`cool_down`), rather than each
worker hammering the endpoint with its own retry. Limits learnt from response headers
(`observe`) replace unset ones, and a provider saying fewer remain than we think wins.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

BURST_SECONDS = 0.25  # bucket capacity, in seconds of the limit: small bursts, no more
_NEGLIGIBLE = 1e-6  # seconds


@dataclass
class _Bucket:
    per_minute: float
    level: float
    stamp: float

    @property
    def capacity(self) -> float:
        return max(1.0, self.per_minute / 60 * BURST_SECONDS)

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.per_minute / 60)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 when it is). Requests bigger than the bucket
        wait for a full bucket and then overdraw it, so they are paced rather than refused."""
        need = min(amount, self.capacity) - self.level
        return 0.0 if need <= 0 else need * 60 / self.per_minute


class RateLimiter:
    """Paces live calls under RPM and TPM limits (None: no limit, until headers teach one)."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.clock, self.sleep = clock, sleep
        now = clock()
        self.requests = _Bucket(rpm, max(1.0, rpm / 60 * BURST_SECONDS), now) if rpm else None
        self.tokens = _Bucket(tpm, max(1.0, tpm / 60 * BURST_SECONDS), now) if tpm else None
        self._configured = (rpm is not None, tpm is not None)
        self.cooldown_until = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self, tokens: int) -> None:
        """Wait until a call estimated at `tokens` may go, then take its share. Callers queue in
        arrival order (asyncio.Lock is fair), so no worker starves."""
        if self.requests is None and self.tokens is None and not self._lock.locked() \
                and self.cooldown_until <= self.clock():
            return  # no limit and no cooldown: nothing to wait for, nobody waiting ahead
        async with self._lock:
            while True:
                now = self.clock()
                wait = self.cooldown_until - now
                for bucket, amount in ((self.requests, 1), (self.tokens, tokens)):
                    if bucket is not None:
                        bucket.refill(now)
                        wait = max(wait, bucket.wait_for(amount))
                if wait <= _NEGLIGIBLE:  # a float remainder: a clock may not even move by that much
                    break
                await self.sleep(wait)
            if self.requests is not None:
                self.requests.level -= 1
            if self.tokens is not None:
                self.tokens.level -= tokens

    def settle(self, estimated: int, used: int | None) -> None:
        """Correct the token bucket once the response says what the call really used."""
        if self.tokens is not None and used is not None:
            self.tokens.level += estimated - used

    def cool_down(self, seconds: float) -> None:
        """Nobody sends for `seconds` (a 429 said so, or backoff decided). Overlapping cooldowns
        merge: the later end wins, so a burst of 429s costs one pause, not one each."""
        self.cooldown_until = max(self.cooldown_until, self.clock() + seconds)

    def observe(self, limit_requests: float | None, remaining_requests: float | None,
                limit_tokens: float | None, remaining_tokens: float | None) -> None:
        """Adapt to the provider's rate-limit headers: adopt limits the user did not set, and never
        believe more capacity remains than the provider says."""
        now = self.clock()
        if limit_requests and not self._configured[0]:
            self.requests = _adopt(self.requests, limit_requests, now)
        if limit_tokens and not self._configured[1]:
            self.tokens = _adopt(self.tokens, limit_tokens, now)
        for bucket, remaining in ((self.requests, remaining_requests), (self.tokens, remaining_tokens)):
            if bucket is not None and remaining is not None and remaining < bucket.level:
                bucket.refill(now)
                bucket.level = min(bucket.level, remaining)


def _adopt(bucket: _Bucket | None, per_minute: float, now: float) -> _Bucket:
    if bucket is None:
        return _Bucket(per_minute, max(1.0, per_minute / 60 * BURST_SECONDS), now)
    bucket.refill(now)
    bucket.per_minute = per_minute
    return bucket
