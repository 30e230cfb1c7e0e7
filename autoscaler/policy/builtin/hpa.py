"""``hpa``: the Kubernetes HPA (autoscaling/v2) over any target-wide signal.

Exact upstream math through compat.kubernetes: per-metric replicas with tolerance, several metrics
combined by max with the missing-metric rules of A.3, then the behavior path of A.4 (stabilization
both ways, then Pods/Percent rate limits). ``minReplicas``/``maxReplicas`` here are the HPA's own;
the target's guards still bound the result.
"""

from __future__ import annotations

import math
from typing import ClassVar

from autoscaler.core.rounding import to_milli
from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import Proposal
from autoscaler.policy.api import Params, Policy
from autoscaler.policy.builtin.hpa_common import (
    BehaviorRules,
    HpaMemory,
    combine,
    metric_replicas,
)
from autoscaler.policy.builtin.params import HpaParams as HpaParams
from autoscaler.policy.compat.kubernetes import (
    MAX_INT32,
    MAX_INT64,
    Tolerance,
    replicas_for_external_average,
)


class HpaPolicy(Policy[HpaParams, HpaMemory]):
    name: ClassVar[str] = "hpa"
    params_model: ClassVar[type[Params]] = HpaParams

    def __init__(self, params: HpaParams) -> None:
        super().__init__(params)
        # Worked out once: decide() runs per target per tick.
        self._rules = BehaviorRules.of(params.behavior)
        self._tolerance = Tolerance(params.tolerance, params.tolerance)
        self._min = params.min_replicas
        self._max = params.max_replicas
        # One AverageValue metric (the common case) takes a shorter path through the same math.
        m = params.metrics[0]
        self._signal = m.signal
        self._window = m.window_seconds
        self._target_milli = to_milli(m.target)
        self._single = (
            len(params.metrics) == 1 and m.type == "AverageValue" and self._target_milli > 0
        )
        # Tolerance.is_within's bounds, the same floats.
        self._within_low = 1.0 - params.tolerance
        self._within_high = 1.0 + params.tolerance

    def required_signals(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.signal for m in self.params.metrics))

    def retention_seconds(self) -> float:
        windows = [float(w) for w in self.params.behavior.windows()]
        windows += [m.window_seconds for m in self.params.metrics]
        return max([*windows, 60.0])

    def signals_read(self) -> frozenset[str]:
        return frozenset(m.signal for m in self.params.metrics)

    def initial_state(self, snap: Snapshot) -> HpaMemory:
        return HpaMemory()

    def decide(self, snap: Snapshot, state: HpaMemory) -> tuple[Proposal, HpaMemory]:
        if self._single:
            return self._decide_single(snap, state)
        p = self.params
        cur = snap.current
        if cur == 0:
            return Proposal(0, reason="ScalingDisabled: zero replicas"), state
        if cur > p.max_replicas:
            return Proposal(p.max_replicas, reason="TooManyReplicas"), state
        if cur < p.min_replicas:
            return Proposal(p.min_replicas, reason="TooFewReplicas"), state
        tol = self._tolerance
        desired = combine(cur, [metric_replicas(snap, cur, m, tol) for m in p.metrics])
        if desired is None:
            return Proposal(None, reason="FailedGetExternalMetric"), state
        final, reason = state.normalize(
            snap.now, cur, desired, p.min_replicas, p.max_replicas, self._rules
        )
        inputs = {m.signal: v for m in p.metrics if (v := snap.last(m.signal)) is not None}
        return Proposal(final, reason=f"{reason} (metrics want {desired})", inputs=inputs), state

    def _decide_single(self, snap: Snapshot, state: HpaMemory) -> tuple[Proposal, HpaMemory]:
        """``decide`` for one AverageValue metric: ``metric_replicas`` (upstream's
        ``replicas_for_external_average`` on one value) and ``combine`` of one proposal written
        out, with the params read once. Values outside int64 take upstream's function."""
        cur = snap.current
        if cur == 0:
            return Proposal(0, reason="ScalingDisabled: zero replicas"), state
        if cur > self._max:
            return Proposal(self._max, reason="TooManyReplicas"), state
        if cur < self._min:
            return Proposal(self._min, reason="TooFewReplicas"), state
        signal = self._signal
        window = self._window
        value = snap.mean(signal, window) if window > 0 else snap.last(signal)
        if value is None:
            return Proposal(None, reason="FailedGetExternalMetric"), state
        usage = to_milli(value)
        target = self._target_milli
        desired: int
        if 0 <= usage <= MAX_INT64:
            ratio = float(usage) / (float(target) * float(cur))
            if self._within_low <= ratio <= self._within_high:
                desired = cur
            else:
                count = math.ceil(float(usage) / float(target))
                desired = MAX_INT32 if count > MAX_INT32 else count
        else:
            desired = replicas_for_external_average(cur, [usage], target, self._tolerance)
        final, reason = state.normalize(snap.now, cur, desired, self._min, self._max, self._rules)
        last = value if window <= 0 else snap.last(signal)  # the same read when no window
        inputs = {signal: last} if last is not None else {}
        return Proposal(final, None, f"{reason} (metrics want {desired})", inputs), state
