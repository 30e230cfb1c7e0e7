"""The frozen view of one target that a policy decides on."""

from __future__ import annotations

import math
from collections.abc import Mapping

from autoscaler.core.windows import SignalWindow


class Snapshot:
    """What one target looks like at ``now``: replica status and windowed signals.

    A snapshot is read-only for policies. Signal queries return None when there is no data in the
    asked span: policies must treat that as "unknown", never as zero load.
    """

    __slots__ = (
        "_windows",
        "cold_start_s",
        "current",
        "hold_nonzero",
        "max_age",
        "now",
        "ready",
        "starting",
        "target",
    )

    def __init__(
        self,
        target: str,
        now: float,
        current: int,
        ready: int,
        starting: int,
        windows: Mapping[str, SignalWindow],
        cold_start_s: float | None = None,
        hold_nonzero: bool = False,
        max_age: float = math.inf,
    ) -> None:
        self.target = target
        self.now = now
        self.current = current  # replicas asked for now (spec.replicas / last decision in force)
        self.ready = ready
        self.starting = starting
        self.cold_start_s = cold_start_s
        self.hold_nonzero = hold_nonzero  # e.g. a canary rollout in progress
        self.max_age = max_age  # signals older than this count as missing (fallback guard)
        self._windows = windows

    def fresh(self, signal: str) -> bool:
        """The signal has a sample no older than ``max_age``."""
        return self.age(signal) <= self.max_age

    def has(self, signal: str) -> bool:
        return signal in self._windows and len(self._windows[signal]) > 0

    def age(self, signal: str) -> float:
        w = self._windows.get(signal)
        return w.age(self.now) if w is not None else math.inf

    def last(self, signal: str) -> float | None:
        w = self._windows.get(signal)
        return w.last if w is not None else None

    def mean(self, signal: str, span: float) -> float | None:
        w = self._windows.get(signal)
        return w.mean(self.now, span) if w is not None else None

    def max(self, signal: str, span: float) -> float | None:
        w = self._windows.get(signal)
        return w.max(self.now, span) if w is not None else None

    def rate(self, signal: str, span: float) -> float | None:
        w = self._windows.get(signal)
        return w.rate(self.now, span) if w is not None else None

    def percentile(self, signal: str, span: float, q: float) -> float | None:
        w = self._windows.get(signal)
        return w.percentile(self.now, span, q) if w is not None else None
