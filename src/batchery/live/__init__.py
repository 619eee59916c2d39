"""Live mode: the rate-limited async executor that replaces batches when answers are needed now."""

from .executor import LivePolicy, LiveRunner
from .limiter import RateLimiter

__all__ = ["LivePolicy", "LiveRunner", "RateLimiter"]
