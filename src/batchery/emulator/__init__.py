"""Local emulator of provider Batch APIs, for tests and benchmarks that use the official SDKs.

Start one with ``with Emulator(clock=ManualClock()) as emu:`` and point the SDK at
``emu.base_url("openai")``; see :mod:`batchery.emulator.server` for the knobs and
:mod:`batchery.emulator.faults` for ``Emulator(faults="http_429=0.1,lost_create=1,seed=7")``.
"""

from .clock import Clock, ManualClock
from .faults import FaultPlan
from .server import Emulator, serve

__all__ = ["Clock", "Emulator", "FaultPlan", "ManualClock", "serve"]
