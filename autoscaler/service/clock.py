"""The one module that reads real time or sleeps (ruff's banned-api rule exempts only this file).

Everything else receives ``now`` as data or a Clock by injection.
"""

from __future__ import annotations

import asyncio
import time


class SystemClock:
    """Wall time in UNIX seconds, never decreasing (monotonic steps added to a wall-time origin,
    so an NTP step backwards cannot make windows see time go backwards)."""

    def __init__(self) -> None:
        self._origin_wall = time.time()
        self._origin_mono = time.monotonic()

    def now(self) -> float:
        return self._origin_wall + (time.monotonic() - self._origin_mono)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


def perf_timer() -> float:
    """A high-resolution timer for measuring wall time of runs (benchmarks, progress)."""
    return time.perf_counter()
