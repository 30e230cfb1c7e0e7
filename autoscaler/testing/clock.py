"""A virtual clock for async tests: time moves only when the test says so, and ``sleep`` parks
the caller until then (unlike ``ManualClock.sleep``, which returns at once and so lets a retry
loop spin)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable


class VirtualClock:
    """``now()`` moves only by ``advance()``; ``await sleep(s)`` waits until the clock has
    advanced ``s`` past the moment it was called. ``sleeping(n)`` lets a test wait, without real
    sleeps, until ``n`` coroutines are parked (e.g. a source in its backoff)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.slept: list[float] = []  # every requested sleep, in order (backoff assertions)

    def now(self) -> float:
        return self._now

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if seconds <= 0:
            # Still yield once, as asyncio.sleep(0) does, so a loop cannot starve the others.
            asyncio.get_running_loop().call_soon(_resolve, fut)
            await fut
            return
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        self._wake_waiters()
        try:
            await fut
        finally:
            self._sleepers = [s for s in self._sleepers if s[2] is not fut]
            heapq.heapify(self._sleepers)

    def advance(self, seconds: float) -> float:
        """Move time forward and wake every sleeper whose deadline has come."""
        if seconds < 0:
            raise ValueError("a clock never goes backwards")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            _resolve(fut)
        return self._now

    async def sleeping(self, n: int = 1) -> None:
        """Return once at least ``n`` coroutines are parked in ``sleep``."""
        if self.sleepers >= n:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        await fut

    def _wake_waiters(self) -> None:
        count = self.sleepers
        for n, fut in list(self._waiters):
            if count >= n:
                _resolve(fut)
                self._waiters.remove((n, fut))


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def until(predicate: Callable[[], bool]) -> None:
    """Run the loop (sockets included) until ``predicate`` holds; no real sleep. Gives up after
    10 s of the loop's own time (a test that would otherwise hang)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(10):
        while not predicate():
            fut = loop.create_future()
            loop.call_soon(fut.set_result, None)
            await fut
