"""Small number helpers shared by the statistics and the report (no numpy: the report imports cheaply)."""

from __future__ import annotations

import math
from typing import Any


def finite_number(x: Any) -> float | None:
    """A finite float, or None for None, NaN, infinities and anything that is not a number."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def clip01(x: float) -> float:
    """Clamp to [0, 1], snapping float dust (0.9999999999999999) to the bound."""
    return min(1.0, max(0.0, round(float(x), 12)))
