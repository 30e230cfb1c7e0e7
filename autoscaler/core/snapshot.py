"""The frozen view of one target that a policy decides on."""

from __future__ import annotations

import math
from collections.abc import Mapping

from autoscaler.core.windows import SignalWindow, first_after


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
        # A dict, whatever mapping was given: compiled, a dict's get is a direct C call where a
        # Mapping's is a method lookup and call (policies query the windows per target per tick).
        self._windows: dict[str, SignalWindow] = windows if type(windows) is dict else dict(windows)

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
        if w is None:
            return None
        # SignalWindow.mean, inlined: policies ask it for every target on every tick, and a
        # Python call is a large part of its cost. Keep the two in step
        # (tests/unit/test_engine_fast_paths.py checks that they answer the same).
        tss = w._ts
        i = first_after(tss, self.now - span, w._start)
        n = len(tss)
        if i >= n:
            return None
        csum = w._csum
        j = len(csum)
        if j != n:
            if j == n - 1 and j:
                csum.append(csum[-1] + w._vals[-1])
            else:
                w._sync_sums()
        total = csum[-1] - (csum[i - 1] if i > 0 else 0.0)
        return total / (n - i)

    def max(self, signal: str, span: float) -> float | None:
        w = self._windows.get(signal)
        return w.max(self.now, span) if w is not None else None

    def rate(self, signal: str, span: float) -> float | None:
        w = self._windows.get(signal)
        if w is None:
            return None
        # SignalWindow.rate, inlined as mean above.
        tss = w._ts
        i = first_after(tss, self.now - span, w._start)
        n = len(tss)
        if n - i < 2:
            return None
        dt = tss[-1] - tss[i]
        if dt <= 0:
            return None
        cinc = w._cinc
        j = len(cinc)
        if j != n:
            if j == n - 1 and j:
                v = w._vals[-1]
                prev = w._vals[-2]
                cinc.append(cinc[-1] + (v - prev if v >= prev else v))
            else:
                w._sync_increases()
        return (cinc[-1] - cinc[i]) / dt

    def percentile(self, signal: str, span: float, q: float) -> float | None:
        w = self._windows.get(signal)
        return w.percentile(self.now, span, q) if w is not None else None


def aggregate(snap: Snapshot, signal: str, span: float, how: str) -> float | None:
    """The signal over the trailing span by ``how`` ("mean", "max" or "last"), or None when the
    span holds no sample. (Here, compiled with the snapshot, rather than beside the policies'
    params: policies call it per target per tick.)"""
    if how == "mean":
        return snap.mean(signal, span)
    if how == "max":
        return snap.max(signal, span)
    return snap.last(signal) if snap.age(signal) <= span else None
