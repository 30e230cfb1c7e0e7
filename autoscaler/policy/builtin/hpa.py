"""``hpa``: the Kubernetes HPA (autoscaling/v2) over any target-wide signal.

Exact upstream math through compat.kubernetes: per-metric replicas with tolerance, several metrics
combined by max with the missing-metric rules of A.3, then the behavior path of A.4 (stabilization
both ways, then Pods/Percent rate limits). ``minReplicas``/``maxReplicas`` here are the HPA's own;
the target's guards still bound the result.
"""

from __future__ import annotations

from typing import ClassVar

from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import Proposal
from autoscaler.policy.api import Params, Policy
from autoscaler.policy.builtin.hpa_common import (
    BehaviorRules,
    HpaMemory,
    MetricPlan,
    combine,
)
from autoscaler.policy.builtin.params import HpaParams as HpaParams


class HpaPolicy(Policy[HpaParams, HpaMemory]):
    name: ClassVar[str] = "hpa"
    params_model: ClassVar[type[Params]] = HpaParams

    def __init__(self, params: HpaParams) -> None:
        super().__init__(params)
        # Worked out once: decide() runs per target per tick.
        self._rules = BehaviorRules.of(params.behavior)
        self._min = params.min_replicas
        self._max = params.max_replicas
        self._plans = [MetricPlan(m, params.tolerance) for m in params.metrics]
        # One AverageValue metric (the common case) takes a shorter path: no combine().
        self._plan = self._plans[0]
        self._single = len(self._plans) == 1 and self._plan.average

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
        proposals: list[int | None] = []
        for plan in self._plans:
            value = plan.value(snap)
            proposals.append(None if value is None else plan.replicas(snap, cur, value))
        desired = combine(cur, proposals)
        if desired is None:
            return Proposal(None, reason="FailedGetExternalMetric"), state
        final, reason = state.normalize(
            snap.now, cur, desired, p.min_replicas, p.max_replicas, self._rules
        )
        inputs = {m.signal: v for m in p.metrics if (v := snap.last(m.signal)) is not None}
        return Proposal(final, reason=f"{reason} (metrics want {desired})", inputs=inputs), state

    def _decide_single(self, snap: Snapshot, state: HpaMemory) -> tuple[Proposal, HpaMemory]:
        """``decide`` for one AverageValue metric: ``combine`` of one proposal written out, with
        the params read once."""
        cur = snap.current
        if cur == 0:
            return Proposal(0, reason="ScalingDisabled: zero replicas"), state
        if cur > self._max:
            return Proposal(self._max, reason="TooManyReplicas"), state
        if cur < self._min:
            return Proposal(self._min, reason="TooFewReplicas"), state
        plan = self._plan
        value = plan.value(snap)
        if value is None:
            return Proposal(None, reason="FailedGetExternalMetric"), state
        desired = plan.replicas(snap, cur, value)
        if desired is None:  # not for AverageValue; kept for the type
            return Proposal(None, reason="FailedGetExternalMetric"), state
        final, reason = state.normalize(snap.now, cur, desired, self._min, self._max, self._rules)
        last = value if plan.window <= 0 else snap.last(plan.signal)  # the same read, no window
        inputs = {plan.signal: last} if last is not None else {}
        return Proposal(final, None, f"{reason} (metrics want {desired})", inputs), state
