"""Shared by ``hpa`` and ``keda``: HPA metric specs, behavior rules and the HPA's own memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from autoscaler.core.snapshot import Snapshot
from autoscaler.policy.api import Params
from autoscaler.policy.builtin.common import to_milli
from autoscaler.policy.compat.kubernetes import (
    HpaPolicy,
    ScalingRules,
    Tolerance,
    generate_scale_down_rules,
    generate_scale_up_rules,
    limit_rate,
    replicas_for_external_average,
    replicas_for_external_metric,
    stabilization_windows,
    stabilize,
)


class HpaMetric(Params):
    """One External-style metric: the target-wide signal against a target."""

    signal: str
    type: Literal["AverageValue", "Value"] = "AverageValue"
    target: float = Field(gt=0, description="per replica for AverageValue, total for Value")
    window_seconds: float = Field(0.0, ge=0, description="0: the latest sample, as the HPA reads")


class RuleModel(Params):
    type: Literal["Pods", "Percent"]
    value: int = Field(gt=0)
    period_seconds: int = Field(gt=0, le=1800)


class ScalingRulesModel(Params):
    select_policy: Literal["Max", "Min", "Disabled"] = "Max"
    policies: tuple[RuleModel, ...] = ()
    stabilization_window_seconds: int | None = Field(None, ge=0, le=3600)

    def rules(self) -> ScalingRules:
        """Unset fields stay None so upstream's defaulting fills them."""
        return ScalingRules(
            select_policy=self.select_policy,
            policies=tuple(HpaPolicy(r.type, r.value, r.period_seconds) for r in self.policies)
            or None,
            stabilization_window_seconds=self.stabilization_window_seconds,
        )


class Behavior(Params):
    scale_up: ScalingRulesModel | None = None
    scale_down: ScalingRulesModel | None = None

    def up(self) -> ScalingRules:
        return generate_scale_up_rules(self.scale_up.rules() if self.scale_up else None)

    def down(self) -> ScalingRules:
        return generate_scale_down_rules(self.scale_down.rules() if self.scale_down else None)

    def windows(self) -> tuple[int, int]:
        """(up, down) stabilization seconds, the scale-down default being the 300 s flag."""
        return stabilization_windows(self.up(), self.down())


@dataclass(frozen=True, slots=True)
class BehaviorRules:
    """A ``Behavior``'s effective HPA rules and windows, worked out once per policy rather than
    on every tick (upstream's defaulting builds and validates new rule objects each time)."""

    up: ScalingRules
    down: ScalingRules
    up_window: int
    down_window: int
    period: int  # the longest rate-policy period: how long scale events matter

    @classmethod
    def of(cls, behavior: Behavior) -> BehaviorRules:
        up, down = behavior.up(), behavior.down()
        up_w, down_w = behavior.windows()
        period = max(
            [p.period_seconds for p in (*(up.policies or ()), *(down.policies or ()))] or [0]
        )
        return cls(up, down, up_w, down_w, period)


def metric_value(snap: Snapshot, m: HpaMetric) -> float | None:
    if m.window_seconds > 0:
        return snap.mean(m.signal, m.window_seconds)
    return snap.last(m.signal)


def metric_replicas(snap: Snapshot, current: int, m: HpaMetric, tol: Tolerance) -> int | None:
    value = metric_value(snap, m)
    if value is None:
        return None
    if m.type == "AverageValue":
        return replicas_for_external_average(current, [to_milli(value)], to_milli(m.target), tol)
    if snap.ready == 0:
        return None  # upstream: no ready pods is an invalid metric for Value targets
    return replicas_for_external_metric(
        current, [to_milli(value)], to_milli(m.target), snap.ready, tol
    )


def combine(current: int, proposals: list[int | None]) -> int | None:
    """A.3: max of the valid proposals; no scaling when all fail or a failure blocks scale-down."""
    valid = [p for p in proposals if p is not None]
    if not valid:
        return None
    best = max(valid)
    if len(valid) < len(proposals) and best < current:
        return None
    return best


@dataclass(slots=True)
class HpaMemory:
    """The HPA controller's per-object memory: timestamped recommendations and scale events."""

    recommendations: list[tuple[float, int]] = field(default_factory=list)
    up_events: list[tuple[float, int]] = field(default_factory=list)
    down_events: list[tuple[float, int]] = field(default_factory=list)

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
        up_w, down_w = rules.up_window, rules.down_window
        keep = max(up_w, down_w)
        self.recommendations = [(t, r) for t, r in self.recommendations if now - t < keep]
        recs = [(r, now - t) for t, r in self.recommendations]
        stabilized = stabilize(current, desired, recs, up_w, down_w)
        self.recommendations.append((now, desired))
        period = rules.period
        self.up_events = [(t, c) for t, c in self.up_events if now - t < period]
        self.down_events = [(t, c) for t, c in self.down_events if now - t < period]
        ups = [(c, now - t) for t, c in self.up_events]
        downs = [(c, now - t) for t, c in self.down_events]
        final, reason = limit_rate(current, stabilized, lo, hi, rules.up, rules.down, ups, downs)
        if final > current:
            self.up_events.append((now, final - current))
        elif final < current:
            self.down_events.append((now, current - final))
        return final, reason
