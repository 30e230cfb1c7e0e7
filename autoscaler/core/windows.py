"""Rolling windows keyed by timestamps.

A window keeps the samples of one signal for ``retention`` seconds and answers questions about any
trailing span up to that: mean, max, last, percentile, the rate of a counter (with reset handling),
and staleness. Spans are seconds measured on the samples' own timestamps, never counts of ticks, so
a 60 s window means the same at a 1 s live tick and a 15 s simulator step.

Cost: ``add`` is amortised O(1) and only appends (timestamp, value); ``mean`` and ``rate`` are
O(log n) through prefix sums and a binary search; ``max`` and ``percentile`` are O(k) over the k
samples in the span (C-speed slices). The prefix sums are brought up to date lazily, the sums of
values at the first ``mean`` and those of counter increases at the first ``rate`` after new
samples (both before a compaction), with the very same additions in the same order as an eager
update, so results are bit-identical while a gauge never pays for counter sums, a counter never for
value sums, and neither pays on the ingest path (the engine ingests every sample of every target
every tick).

Storage is lists of floats, not ``array('d')``: an array holds 8 bytes a sample instead of a
pointer and a float object, but CPython 3.11 converts every stored double through
``PyArg_Parse``, which made an engine tick 14% more machine instructions
(docs/engine-performance.md).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from itertools import accumulate
from typing import Final


def first_after(tss: list[float], x: float, lo: int) -> int:
    """``bisect_right(tss, x, lo)``: the index of the first timestamp after ``x``.

    Compiled (autoscaler/native.py), calling the C ``bisect_right`` is a generic call with
    argument parsing, ~700 machine instructions, and every windowed query makes one; the same
    loop compiled is ~100. From source, the C function is faster than a Python loop, so it is
    used there. Both are the same algorithm (``x < a[mid]`` moves ``hi``), so the same index for
    every input, NaN included.
    """
    if not _COMPILED:
        return bisect_right(tss, x, lo)
    hi = len(tss)
    while lo < hi:
        mid = (lo + hi) // 2
        if x < tss[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _probe() -> None:
    """Only its type matters: a plain Python function from source, a builtin when compiled."""


_COMPILED: Final = type(_probe).__name__ != "function"


class SignalWindow:
    """Samples of one signal. Non-finite values are dropped (they are missing data, not zero)."""

    __slots__ = ("_cinc", "_csum", "_start", "_ts", "_vals", "dropped", "retention")

    def __init__(self, retention: float) -> None:
        if retention <= 0:
            raise ValueError("retention must be positive")
        self.retention = float(retention)
        self._ts: list[float] = []
        self._vals: list[float] = []
        # Prefix sums (inclusive) of values and of counter increases, for O(1) span sums. Each
        # may lag behind _ts/_vals: mean extends _csum, rate extends _cinc, before reading them.
        self._csum: list[float] = []
        self._cinc: list[float] = []
        self._start = 0  # index of the oldest retained sample
        self.dropped = 0  # samples rejected as non-finite or out of order

    def __len__(self) -> int:
        return len(self._ts) - self._start

    def add(self, ts: float, value: float) -> bool:
        """Record a sample; returns False when it was rejected (NaN/inf, or older than the last)."""
        # value - value is 0.0 for finite numbers and NaN for NaN/inf: one cheap finiteness test.
        if value - value != 0.0 or ts - ts != 0.0:
            self.dropped += 1
            return False
        tss = self._ts
        if tss and ts < tss[-1]:
            self.dropped += 1
            return False
        tss.append(ts)
        self._vals.append(value)
        if tss[self._start] < ts - self.retention:
            self._trim(ts)
        return True

    def _sync_sums(self) -> None:
        """Extend the prefix sums of values over the samples added since they were last read.

        The same float operations, in the same order, as updating them at every ``add``:
        csum[k] = csum[k-1] + v[k].
        """
        vals = self._vals
        csum = self._csum
        j = len(csum)
        n = len(vals)
        if j == n:
            return
        if j == 0:
            csum.append(vals[0])
            j = 1
        if n - j == 1:  # one sample since the last query, as at a steady tick
            csum.append(csum[-1] + vals[j])
            return
        if n - j <= 8:  # a few samples since the last query: no iterator setup
            total = csum[-1]
            for k in range(j, n):
                total = total + vals[k]
                csum.append(total)
            return
        sums = accumulate(vals[j:], initial=csum[-1])
        next(sums)  # the initial value is already in the list
        csum.extend(sums)

    def _sync_increases(self) -> None:
        """Extend the prefix sums of counter increases, as ``_sync_sums`` does for values:
        cinc[k] = cinc[k-1] + (v[k] - v[k-1] if v[k] >= v[k-1] else v[k]) (a counter that went
        down was reset by a restarted pod: the new value is all increase)."""
        vals = self._vals
        cinc = self._cinc
        j = len(cinc)
        n = len(vals)
        if j == n:
            return
        if j == 0:
            cinc.append(0.0)
            j = 1
        if n - j == 1:
            v = vals[j]
            prev = vals[j - 1]
            cinc.append(cinc[-1] + (v - prev if v >= prev else v))
            return
        if n - j <= 8:
            inc = cinc[-1]
            prev = vals[j - 1]
            for k in range(j, n):
                v = vals[k]
                inc = inc + (v - prev if v >= prev else v)
                cinc.append(inc)
                prev = v
            return
        incs = accumulate(
            [v - p if v >= p else v for p, v in zip(vals[j - 1 : -1], vals[j:], strict=True)],
            initial=cinc[-1],
        )
        next(incs)
        cinc.extend(incs)

    def _sync(self) -> None:
        """Bring both prefix sums up to date."""
        self._sync_sums()
        self._sync_increases()

    def _trim(self, now: float) -> None:
        cutoff = now - self.retention
        tss = self._ts
        start = self._start
        # Keep the newest sample even when it is older than the retention: it still tells staleness.
        start = min(bisect_left(tss, cutoff, start), len(tss) - 1)
        self._start = start
        if start > 64 and start * 2 > len(tss):
            self._compact()

    def _compact(self) -> None:
        self._sync()  # re-basing must see the sums an eager update would have
        s = self._start
        base_sum = self._csum[s - 1]
        base_inc = self._cinc[s - 1]
        self._ts = self._ts[s:]
        self._vals = self._vals[s:]
        # Re-base the prefix sums so float error does not grow over a long run.
        self._csum = [c - base_sum for c in self._csum[s:]]
        self._cinc = [c - base_inc for c in self._cinc[s:]]
        self._start = 0

    # -- queries ---------------------------------------------------------------------------------

    @property
    def last(self) -> float | None:
        return self._vals[-1] if self._ts else None

    @property
    def last_ts(self) -> float | None:
        return self._ts[-1] if self._ts else None

    def age(self, now: float) -> float:
        """Seconds since the newest sample; infinity when there has never been one."""
        return now - self._ts[-1] if self._ts else math.inf

    def _first_in(self, now: float, span: float) -> int:
        # Spans are (now - span, now]: a sample exactly ``span`` old is out, so a 60 s span holds
        # 60 samples at a 1 s period and 4 at 15 s, as the stabilization windows count.
        return first_after(self._ts, now - span, self._start)

    def count(self, now: float, span: float) -> int:
        return len(self._ts) - self._first_in(now, span)

    def mean(self, now: float, span: float) -> float | None:
        """Mean of the samples in (now - span, now]; None when the span holds no sample."""
        tss = self._ts
        i = first_after(tss, now - span, self._start)  # _first_in, inlined: the hot query
        n = len(tss)
        if i >= n:
            return None
        csum = self._csum
        j = len(csum)
        if j != n:
            if j == n - 1 and j:  # _sync_sums for one new sample, inlined: the steady tick
                csum.append(csum[-1] + self._vals[-1])
            else:
                self._sync_sums()
        total = csum[-1] - (csum[i - 1] if i > 0 else 0.0)
        return total / (n - i)

    def max(self, now: float, span: float) -> float | None:
        i = self._first_in(now, span)
        return max(self._vals[i:]) if i < len(self._ts) else None

    def min(self, now: float, span: float) -> float | None:
        i = self._first_in(now, span)
        return min(self._vals[i:]) if i < len(self._ts) else None

    def percentile(self, now: float, span: float, q: float) -> float | None:
        """The q-th percentile (0..100) with linear interpolation, as numpy's default."""
        i = self._first_in(now, span)
        if i >= len(self._ts):
            return None
        vals = sorted(self._vals[i:])
        pos = (len(vals) - 1) * min(max(q, 0.0), 100.0) / 100.0
        lo = int(pos)
        hi = min(lo + 1, len(vals) - 1)
        return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)

    def rate(self, now: float, span: float) -> float | None:
        """Per-second increase of a counter over the span, counting a drop as a reset.

        Needs two samples in the span; like Prometheus' ``rate`` it does not look before the span.
        """
        i = self._first_in(now, span)
        n = len(self._ts)
        if n - i < 2:
            return None
        dt = self._ts[-1] - self._ts[i]
        if dt <= 0:
            return None
        cinc = self._cinc
        j = len(cinc)
        if j != n:
            if j == n - 1 and j:  # _sync_increases for one new sample, inlined
                v = self._vals[-1]
                prev = self._vals[-2]
                cinc.append(cinc[-1] + (v - prev if v >= prev else v))
            else:
                self._sync_increases()
        return (cinc[-1] - cinc[i]) / dt
