"""Local emulator of provider Batch APIs, for tests and benchmarks that use the official SDKs.

Start one with ``with Emulator(clock=ManualClock()) as emu:`` and point the SDK at
``emu.base_url("openai")``; see :mod:`batchery.emulator.server` for the knobs.
"""

from .clock import Clock, ManualClock
from .server import Emulator, serve

__all__ = ["Clock", "Emulator", "ManualClock", "serve"]
