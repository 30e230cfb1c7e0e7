"""Shared by ``hpa`` and ``keda``: HPA metric specs, behavior rules and the HPA's own memory."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from autoscaler.core.rounding import to_milli
from autoscaler.core.snapshot import Snapshot
from autoscaler.core.stamps import StampQueue
from autoscaler.policy.builtin.params import Behavior as Behavior
from autoscaler.policy.builtin.params import HpaMetric as HpaMetric
from autoscaler.policy.builtin.params import RuleModel as RuleModel
from autoscaler.policy.builtin.params import ScalingRulesModel as ScalingRulesModel
from autoscaler.policy.compat.kubernetes import (
    MAX_INT32,
    MAX_INT64,
    ScalingRules,
    Tolerance,
    limit_down,
    limit_rate,
    limit_up,
    replicas_for_external_average,
    replicas_for_external_metric,
    scale_down_limit_resolved,
    scale_down_limit_totals,
    scale_up_limit_resolved,
    scale_up_limit_totals,
    stabilize,
)


@dataclass(frozen=True, slots=True)
class BehaviorRules:
    """A ``Behavior``'s effective HPA rules and windows, worked out once per policy rather than
    on every tick (upstream's defaulting builds and validates new rule objects each time)."""

    up: ScalingRules
    down: ScalingRules
    up_window: int
    down_window: int
    period: int  # the longest rate-policy period: how long scale events matter
    # Every rate policy has that period (upstream's defaults do): each then counts every event
    # kept, so HpaMemory keeps running totals instead of summing the events on every call.
    single_period: bool = False

    @classmethod
    def of(cls, behavior: Behavior) -> BehaviorRules:
        up, down = behavior.up(), behavior.down()
        up_w, down_w = behavior.windows()
        periods = [p.period_seconds for p in (*(up.policies or ()), *(down.policies or ()))]
        period = max(periods or [0])
        return cls(up, down, up_w, down_w, period, all(p == period for p in periods))


class MetricPlan:
    """An ``HpaMetric`` read once into plain attributes, with its value and the replicas it asks
    for computed over them: the hpa and keda policies run these per target per tick, and a
    pydantic field read costs several times a compiled attribute read.

    ``replicas`` takes the value already read. For an AverageValue target (KEDA's default) it is
    upstream's ``replicas_for_external_average`` on one value written out: the same floats, the
    same saturation; a value outside int64 (or a zero current or target, which upstream's
    function rejects) goes through that function itself.
    """

    __slots__ = (
        "average",
        "signal",
        "target_milli",
        "tolerance",
        "window",
        "within_high",
        "within_low",
    )

    def __init__(self, m: HpaMetric, tolerance: float) -> None:
        self.signal = m.signal
        self.window = m.window_seconds
        self.average = m.type == "AverageValue"
        self.target_milli = to_milli(m.target)
        self.tolerance = Tolerance(tolerance, tolerance)
        # Tolerance.is_within's bounds, the same floats.
        self.within_low = 1.0 - tolerance
        self.within_high = 1.0 + tolerance

    def value(self, snap: Snapshot) -> float | None:
        """The window's mean, or the last sample without a window."""
        if self.window > 0:
            return snap.mean(self.signal, self.window)
        return snap.last(self.signal)

    def replicas(self, snap: Snapshot, current: int, value: float) -> int | None:
        """The replicas this metric's reading ``value`` asks for (upstream's external-metric
        calculation for its target type)."""
        usage = to_milli(value)
        target = self.target_milli
        if not self.average:
            if snap.ready == 0:
                return None  # upstream: no ready pods is an invalid metric for Value targets
            return replicas_for_external_metric(
                current, [usage], target, snap.ready, self.tolerance
            )
        if 0 <= usage <= MAX_INT64 and target > 0 and current > 0:
            ratio = float(usage) / (float(target) * float(current))
            if self.within_low <= ratio <= self.within_high:
                return current
            count = math.ceil(float(usage) / float(target))
            return MAX_INT32 if count > MAX_INT32 else count
        return replicas_for_external_average(current, [usage], target, self.tolerance)


def combine(current: int, proposals: list[int | None]) -> int | None:
    """A.3: max of the valid proposals; no scaling when all fail or a failure blocks scale-down."""
    valid = [p for p in proposals if p is not None]
    if not valid:
        return None
    best = max(valid)
    if len(valid) < len(proposals) and best < current:
        return None
    return best


Stamped = tuple[float, int]  # (time, replicas or replica change)


def _in_order(*queues: StampQueue) -> bool:
    """Every queue's timestamps are non-decreasing (False on NaN)."""
    for q in queues:
        prev = -math.inf
        for t, _ in q.entries():
            if not prev <= t:
                return False
            prev = t
    return True


@dataclass(slots=True)
class HpaMemory:
    """The HPA controller's per-object memory: timestamped recommendations and scale events.

    ``normalize`` is upstream's arithmetic on the entries younger than the longest window, in
    O(1) amortised time per call: while the calls come in time order, the expired entries are
    a prefix of each queue (dropped from the left) and the extremes over each stabilization
    window come from monotonic queues (``rec_min``, ``rec_max``). A call earlier than the last one
    (or at NaN) is computed the plain way, over every entry, until the entries are in order again.
    Both ways give the same replicas, reasons and entries.
    """

    recommendations: StampQueue = field(default_factory=StampQueue)
    up_events: StampQueue = field(default_factory=StampQueue)
    down_events: StampQueue = field(default_factory=StampQueue)
    # Recommendations in the up (down) window that no younger one undercuts (exceeds): the
    # window's minimum (maximum) is the leftmost. Valid while ``in_order``, for ``windows``.
    rec_min: StampQueue = field(default_factory=StampQueue, compare=False, repr=False)
    rec_max: StampQueue = field(default_factory=StampQueue, compare=False, repr=False)
    windows: tuple[int, int] = field(default=(-1, -1), compare=False, repr=False)
    in_order: bool = field(default=True, compare=False, repr=False)
    # The sums of the changes in up_events and down_events.
    up_total: int = field(default=0, compare=False, repr=False)
    down_total: int = field(default=0, compare=False, repr=False)

    def normalize(
        self,
        now: float,
        current: int,
        desired: int,
        lo: int,
        hi: int,
        behavior: Behavior | BehaviorRules,
    ) -> tuple[int, str]:
        """A.4 steps 7-8: stabilize both ways, then the behavior rate limits; store the event."""
        rules = behavior if isinstance(behavior, BehaviorRules) else BehaviorRules.of(behavior)
        recs = self.recommendations
        if not (self.in_order and (not recs or recs.last_t() <= now)):
            return self._normalize_plain(now, current, desired, lo, hi, rules)
        up_w, down_w = rules.up_window, rules.down_window
        if self.windows[0] != up_w or self.windows[1] != down_w:
            self._rebuild(up_w, down_w)
        keep = up_w if up_w > down_w else down_w
        # Entries in time order: the ones upstream drops (now - t >= keep, NaN included) are a
        # prefix, as are those outside each window.
        while recs and not now - recs.first_t() < keep:
            recs.popleft()
        rec_min = self.rec_min
        while rec_min and not now - rec_min.first_t() < up_w:
            rec_min.popleft()
        rec_max = self.rec_max
        while rec_max and not now - rec_max.first_t() < down_w:
            rec_max.popleft()
        # stabilize(): up = min(desired, window), down = max(desired, window); from current,
        # raise to up, then lower to down.
        up = desired
        if rec_min and rec_min.first_n() < up:
            up = rec_min.first_n()
        down = desired
        if rec_max and rec_max.first_n() > down:
            down = rec_max.first_n()
        stabilized = current
        if stabilized < up:
            stabilized = up
        if stabilized > down:
            stabilized = down
        # A recommendation equal to the newest one makes that one redundant: any window (a
        # trailing span, also from an earlier time after time goes backwards) that holds the
        # older entry holds this one. Dropping it keeps the answers and bounds the queue by the
        # changes in a window, not its length (300 entries a target at the default 300 s).
        if recs and recs.last_n() == desired:
            recs.pop()
        recs.append(now, desired)
        while rec_min and rec_min.last_n() >= desired:
            rec_min.pop()
        rec_min.append(now, desired)
        while rec_max and rec_max.last_n() <= desired:
            rec_max.pop()
        rec_max.append(now, desired)
        period = rules.period
        ups = self.up_events
        while ups and not now - ups.first_t() < period:
            self.up_total -= ups.popleft()
        downs = self.down_events
        while downs and not now - downs.first_t() < period:
            self.down_total -= downs.popleft()
        # limit_rate(), with the rules filled in once (BehaviorRules). With one period for every
        # policy, each policy's sums are the totals of the events kept.
        if stabilized > current:
            if rules.single_period:
                limit = scale_up_limit_totals(current, self.up_total, self.down_total, rules.up)
            else:
                limit = scale_up_limit_resolved(
                    current, _ages(ups, now), _ages(downs, now), rules.up
                )
            final, reason = limit_up(current, stabilized, hi, limit)
        elif stabilized < current:
            if rules.single_period:
                limit = scale_down_limit_totals(current, self.up_total, self.down_total, rules.down)
            else:
                limit = scale_down_limit_resolved(
                    current, _ages(ups, now), _ages(downs, now), rules.down
                )
            final, reason = limit_down(current, stabilized, lo, limit)
        else:
            final, reason = stabilized, "DesiredWithinRange"
        if final > current:
            ups.append(now, final - current)
            self.up_total += final - current
        elif final < current:
            downs.append(now, current - final)
            self.down_total += current - final
        return final, reason

    def _normalize_plain(
        self, now: float, current: int, desired: int, lo: int, hi: int, rules: BehaviorRules
    ) -> tuple[int, str]:
        """``normalize`` over every entry: for calls out of time order."""
        up_w, down_w = rules.up_window, rules.down_window
        keep = max(up_w, down_w)
        kept = [(t, r) for t, r in self.recommendations.entries() if now - t < keep]
        recs = [(r, now - t) for t, r in kept]
        stabilized = stabilize(current, desired, recs, up_w, down_w)
        kept.append((now, desired))
        self.recommendations = StampQueue(kept)
        period = rules.period
        up_events = [(t, c) for t, c in self.up_events.entries() if now - t < period]
        down_events = [(t, c) for t, c in self.down_events.entries() if now - t < period]
        ups = [(c, now - t) for t, c in up_events]
        downs = [(c, now - t) for t, c in down_events]
        final, reason = limit_rate(current, stabilized, lo, hi, rules.up, rules.down, ups, downs)
        if final > current:
            up_events.append((now, final - current))
        elif final < current:
            down_events.append((now, current - final))
        self.up_events = StampQueue(up_events)
        self.down_events = StampQueue(down_events)
        self.up_total = sum(c for _, c in up_events)
        self.down_total = sum(c for _, c in down_events)
        self.in_order = _in_order(self.recommendations, self.up_events, self.down_events)
        self.windows = (-1, -1)  # rebuilt from the entries when back in order
        return final, reason

    def _rebuild(self, up_w: int, down_w: int) -> None:
        """The monotonic queues from the (in order) recommendations; pruned at the next call."""
        self.rec_min.clear()
        self.rec_max.clear()
        rec_min, rec_max = self.rec_min, self.rec_max
        for t, r in self.recommendations.entries():
            while rec_min and rec_min.last_n() >= r:
                rec_min.pop()
            rec_min.append(t, r)
            while rec_max and rec_max.last_n() <= r:
                rec_max.pop()
            rec_max.append(t, r)
        self.windows = (up_w, down_w)


def _ages(q: StampQueue, now: float) -> list[tuple[int, float]]:
    """Upstream's (change, age) events, for the limits with several periods."""
    return [(c, now - t) for t, c in q.entries()]
