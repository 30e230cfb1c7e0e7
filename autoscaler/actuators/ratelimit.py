"""A client-side token bucket on API calls, shared by every actuator of a process.

Like client-go's ``QPS``/``Burst``: up to ``burst`` calls go out at once, then ``rate`` per
second. A whole tick's writes for many targets then arrive at the API server spread out, and a
runaway loop cannot flood it. Waiting goes through the injected Clock; waiters are served in
arrival order.
"""

from __future__ import annotations

import asyncio

from autoscaler.core.clock import Clock


class TokenBucket:
    def __init__(self, clock: Clock, *, rate: float = 10.0, burst: int = 20) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._clock = clock
        self.rate = float(rate)
        self.burst = int(burst)
        self._tokens = float(burst)
        self._last = clock.now()
        self._lock = asyncio.Lock()
        self.waited = 0.0  # total seconds callers spent waiting (a metric)

    def _refill(self) -> None:
        now = self._clock.now()
        if now > self._last:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = max(self._last, now)

    async def acquire(self) -> float:
        """Take one token, waiting for it if need be; returns the seconds waited."""
        waited = 0.0
        async with self._lock:  # FIFO: a later caller cannot take the token a waiter is owed
            while True:
                self._refill()
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    self.waited += waited
                    return waited
                wait = (1.0 - self._tokens) / self.rate
                await self._clock.sleep(wait)
                waited += wait
