"""Garbage collection in the agent: every collection timed, the start-up heap frozen.

Measured on the benchmark's load (docs/agent.md, "Garbage collection"): the request path frees
what it allocates by reference counting, so at 1,000 requests/s CPython's collector barely runs
(two young collections in 10,000 requests). What it would cost when it does run is set by the
start-up heap: the agent imports aiohttp, prometheus_client and the rest, about 54,000 tracked
objects, and a full collection walks all of them: 20-34 ms in the agent on the development
machine, 20 times the latency budget, at whatever request trips it (the admin port's
scrapes, a burst of tenants, a stream cut with a traceback).

So, once the agent is up (``take_over``): one full collection of what start-up left, then
``gc.freeze()``, which moves every object alive into the permanent generation the collector
never walks. A later collection of any generation walks only what the agent allocated since
(``bench_agent.py --python-path``: a full collection of the agent's heap, 11-14 ms before the
freeze, 0.01 ms after). The generation thresholds stay CPython's: at one young collection of 0.1 ms
per ~4,000 requests there is nothing to spread out, and a larger first threshold only makes
each young collection walk more. Automatic collection stays on: unlike the service's control
loop (``GcPacer`` in ``autoscaler/service/app.py``, which turns it off and collects between
ticks), the agent has no tick to collect between ("when idle" never comes at saturation, when
garbage piles up fastest), and with the start-up heap frozen no collection is long.

``GcPauses`` times each collection (``gc.callbacks``) into
``autoscaler_agent_gc_pause_seconds{generation}`` and logs those over ``slow`` seconds at
DEBUG, so a latency tail can be checked against the collector instead of guessed at.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import Histogram

__all__ = ["GcPauses", "GcPolicy"]

log = logging.getLogger("autoscaler.traffic.agent.gc")

SLOW_PAUSE = 0.005  # seconds; pauses longer than this are logged at DEBUG


class GcPauses:
    """A ``gc.callbacks`` hook: how long each collection held the interpreter, by generation.

    ``timer`` is the agent's clock (``Clock.now``): the pause is the difference of two readings
    taken in the callback's ``start`` and ``stop`` phases (collections do not nest)."""

    __slots__ = ("_children", "_started", "histogram", "last", "slow", "timer")

    def __init__(
        self, histogram: Histogram, timer: Callable[[], float], *, slow: float = SLOW_PAUSE
    ) -> None:
        self.histogram = histogram
        self.timer = timer
        self.slow = slow
        self.last: tuple[int, float] | None = None  # (generation, seconds) of the last one
        self._started = 0.0
        # one child per generation, looked up once (labels() costs more than observe())
        self._children = [histogram.labels(str(generation)) for generation in range(3)]

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self.timer()
            return
        pause = max(0.0, self.timer() - self._started)
        generation = int(info["generation"])
        self.last = (generation, pause)
        self._children[generation].observe(pause)
        if pause > self.slow:
            log.debug(
                "gc: generation %d collection held the agent %.1f ms (%d collected)",
                generation,
                pause * 1000,
                info.get("collected", 0),
            )

    @property
    def installed(self) -> bool:
        return self in gc.callbacks

    def install(self) -> None:
        if not self.installed:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        while self in gc.callbacks:
            gc.callbacks.remove(self)


class GcPolicy:
    """Freezes the start-up heap out of the collector's sight (``take_over``) and undoes it
    (``release``, for tests and embedding: frozen objects are never collected)."""

    def __init__(self, pauses: GcPauses) -> None:
        self.pauses = pauses
        self.frozen = 0  # objects frozen by take_over
        self._taken = False

    def take_over(self) -> None:
        """Call once the agent is up: every import done, the servers listening."""
        self.pauses.install()
        if self._taken:
            return
        self._taken = True
        gc.collect()  # start-up garbage (import-time cycles) is not worth keeping forever
        gc.freeze()
        self.frozen = gc.get_freeze_count()
        log.info("gc: %d start-up objects frozen out of the collector's sight", self.frozen)

    def release(self) -> None:
        self.pauses.uninstall()
        if self._taken:
            self._taken = False
            gc.unfreeze()
