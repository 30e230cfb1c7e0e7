"""A bundled signal sequence for demos and tests: quiet, a ramp, a burst, then idle."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from autoscaler.core import signals
from autoscaler.core.types import Observation


def demo_load(t: float, seconds: float) -> float:
    """In-flight requests at time t: quiet, ramp, burst, ramp down, idle (last quarter)."""
    x = t / seconds
    if x < 0.1:
        return 2.0
    if x < 0.4:
        return 2.0 + 60.0 * (x - 0.1) / 0.3
    if x < 0.5:
        return 62.0 + 40.0 * math.sin(math.pi * (x - 0.4) / 0.1)
    if x < 0.75:
        return max(0.0, 62.0 * (0.75 - x) / 0.25)
    return 0.0


def demo_sequence(
    targets: Sequence[str], seconds: float = 900.0, step: float = 15.0, start: float = 0.0
) -> Iterator[tuple[float, list[Observation]]]:
    """(now, observations) per tick for each target: the same load shape expressed as every
    well-known load signal, so any built-in policy has something to read. Token counters grow
    at 400 tokens/s per in-flight request."""
    tokens = 0.0
    t = 0.0
    while t <= seconds:
        now = start + t
        load = demo_load(t, seconds)
        tokens += load * 400.0 * step
        obs: list[Observation] = []
        for key in targets:
            obs += [
                Observation(key, signals.CONCURRENCY, load, now),
                Observation(key, signals.RPS, load * 2.0, now),
                Observation(key, signals.WAITING, max(0.0, load - 8.0), now),
                Observation(key, signals.PROMPT_TOKENS_TOTAL, tokens * 0.8, now),
                Observation(key, signals.GENERATION_TOKENS_TOTAL, tokens * 0.2, now),
                Observation(key, signals.GPU_UTILIZATION, min(1.0, load / 20.0), now),
            ]
        yield now, obs
        t += step
