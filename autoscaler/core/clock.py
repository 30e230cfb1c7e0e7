"""The Clock protocol and a manual clock for tests and the simulator.

Time is data in this project: the engine, policies and guards receive ``now`` as an argument and
never read a clock. Composition roots own a Clock: the live service uses
``autoscaler.service.clock.SystemClock`` (the only module allowed to read real time or sleep), the
simulator and the tests use ``ManualClock``.

``now`` is seconds since the UNIX epoch (wall time, as a float) everywhere. Wall time rather than
a monotonic reading because guards such as protected hours need the time of day, and traces carry
absolute timestamps; the live clock keeps it monotone so that windows never see time go backwards.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the UNIX epoch; never decreases."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class ManualClock:
    """A clock that only moves when told to. ``sleep`` advances it instantly (virtual time)."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a clock never goes backwards")
        self._now += seconds
        return self._now

    def set(self, when: float) -> None:
        if when < self._now:
            raise ValueError(f"a clock never goes backwards ({when} < {self._now})")
        self._now = float(when)

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
