"""Local emulator of provider Batch APIs, for tests and benchmarks that use the official SDKs.

Start one with ``with Emulator(clock=ManualClock()) as emu:`` and point the SDK at
``emu.base_url("openai")``; see :mod:`batchery.emulator.server` for the knobs and
:mod:`batchery.emulator.faults` for ``Emulator(faults="http_429=0.1,lost_create=1,seed=7")``.
"""

from typing import TYPE_CHECKING, Any

from .clock import Clock, ManualClock

if TYPE_CHECKING:
    from .faults import FaultPlan
    from .server import Emulator, serve

__all__ = ["Clock", "Emulator", "FaultPlan", "ManualClock", "serve"]


def __getattr__(name: str) -> Any:
    """The server and fault plan load on first use: the run-batch stand-in, started once per chunk,
    needs only the fake model."""
    if name in ("Emulator", "serve"):
        from . import server

        return getattr(server, name)
    if name == "FaultPlan":
        from .faults import FaultPlan

        return FaultPlan
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
