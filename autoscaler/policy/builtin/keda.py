"""``keda``: a KEDA ScaledObject with one trigger, as KEDA and its HPA behave together (B.2).

KEDA owns 0<->1: active means value > activationThreshold (strict); at zero, active scales to
max(minReplicaCount, 1); inactive for ``cooldownPeriod`` since the last active poll scales to
idleReplicaCount or minReplicaCount. Its HPA owns 1<->N with minReplicas = max(min, 1), the HPA
formula on the trigger's metric and the HPA behavior (cooldown does not slow N->1).
Polls happen at the engine's tick; ``pollingIntervalSeconds`` sets how often KEDA's loop runs
(a poll between ticks is taken at the next tick).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from pydantic import Field, model_validator

from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import Proposal
from autoscaler.policy.api import Params, Policy
from autoscaler.policy.builtin.hpa_common import (
    BehaviorRules,
    HpaMemory,
    metric_replicas,
    metric_value,
)
from autoscaler.policy.builtin.params import Behavior, HpaMetric
from autoscaler.policy.compat.kubernetes import Tolerance


class KedaParams(Params):
    trigger: HpaMetric
    activation_threshold: float = Field(0.0, ge=0)
    polling_interval_seconds: float = Field(30.0, gt=0)
    cooldown_period_seconds: float = Field(300.0, ge=0)
    initial_cooldown_period_seconds: float = Field(0.0, ge=0)
    min_replica_count: int = Field(0, ge=0)
    max_replica_count: int = Field(100, ge=1)
    idle_replica_count: int | None = Field(None, ge=0)
    tolerance: float = Field(0.1, ge=0, lt=1)
    behavior: Behavior = Field(default_factory=Behavior)

    @model_validator(mode="after")
    def _bounds(self) -> KedaParams:
        if self.max_replica_count < self.min_replica_count:
            raise ValueError(
                f"maxReplicaCount ({self.max_replica_count}) must be >= "
                f"minReplicaCount ({self.min_replica_count})"
            )
        if self.idle_replica_count is not None and self.idle_replica_count >= max(
            self.min_replica_count, 1
        ):
            raise ValueError("idleReplicaCount must be below minReplicaCount")
        return self


@dataclass(slots=True)
class KedaState:
    created: float
    hpa: HpaMemory = field(default_factory=HpaMemory)
    last_active: float | None = None
    last_poll: float | None = None
    active: bool = False
    # KEDA's deactivation (set on a poll) stays in force until the next poll: KEDA writes the
    # replica count once and the HPA is idle at zero, so between polls nothing scales it back up.
    # Without this a tick between polls would propose the HPA's count and restart the
    # scale-to-zero guard's idle clock, so a target with idle seconds would never reach zero.
    deactivate_to: int | None = None


class KedaPolicy(Policy[KedaParams, KedaState]):
    name: ClassVar[str] = "keda"
    params_model: ClassVar[type[Params]] = KedaParams

    def __init__(self, params: KedaParams) -> None:
        super().__init__(params)
        # Worked out once: decide() runs per target per tick.
        self._rules = BehaviorRules.of(params.behavior)
        self._tolerance = Tolerance(params.tolerance, params.tolerance)

    def required_signals(self) -> tuple[str, ...]:
        return (self.params.trigger.signal,)

    def retention_seconds(self) -> float:
        return max(60.0, self.params.trigger.window_seconds)

    def signals_read(self) -> frozenset[str]:
        return frozenset((self.params.trigger.signal,))

    def initial_state(self, snap: Snapshot) -> KedaState:
        return KedaState(created=snap.now)

    def decide(self, snap: Snapshot, state: KedaState) -> tuple[Proposal, KedaState]:
        p = self.params
        cur = snap.current
        value = metric_value(snap, p.trigger)
        if value is None:
            return Proposal(None, reason="scaler error: no metric"), state
        inputs = {p.trigger.signal: value}
        lo = p.min_replica_count
        idle = p.idle_replica_count
        # KEDA's scale loop, every pollingInterval.
        if state.last_poll is None or snap.now - state.last_poll >= p.polling_interval_seconds:
            state.last_poll = snap.now
            state.deactivate_to = None
            state.active = value > p.activation_threshold
            if state.active:
                if cur == 0 or (idle is not None and cur < lo):
                    state.last_active = snap.now
                    return Proposal(max(lo, 1), reason="KEDA activation", inputs=inputs), state
                state.last_active = snap.now
            elif (idle is not None and cur > idle) or (cur > 0 and lo == 0):
                if state.last_active is None:
                    expired = snap.now > state.created + p.initial_cooldown_period_seconds
                else:
                    expired = snap.now > state.last_active + p.cooldown_period_seconds
                if expired:
                    to = idle if idle is not None else lo
                    state.deactivate_to = to
                    return Proposal(
                        to, reason="KEDA deactivation after cooldown", inputs=inputs
                    ), state
            elif idle is None and cur < lo:
                return Proposal(lo, reason="below minReplicaCount", inputs=inputs), state
        elif state.deactivate_to is not None and cur > state.deactivate_to:
            return Proposal(
                state.deactivate_to, reason="KEDA deactivation after cooldown", inputs=inputs
            ), state
        if cur == 0 or (idle is not None and cur <= idle):
            return Proposal(cur, reason="ScalingDisabled: HPA idle at zero", inputs=inputs), state
        # The HPA KEDA created: minReplicas = max(min, 1).
        hlo, hhi = max(lo, 1), p.max_replica_count
        if cur > hhi:
            return Proposal(hhi, reason="TooManyReplicas", inputs=inputs), state
        if cur < hlo:
            return Proposal(hlo, reason="TooFewReplicas", inputs=inputs), state
        desired = metric_replicas(snap, cur, p.trigger, self._tolerance)
        if desired is None:
            return Proposal(None, reason="FailedGetExternalMetric", inputs=inputs), state
        final, reason = state.hpa.normalize(snap.now, cur, desired, hlo, hhi, self._rules)
        return Proposal(final, reason=f"HPA {reason}", inputs=inputs), state
