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

from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import EMPTY, Proposal
from autoscaler.policy.api import Params, Policy
from autoscaler.policy.builtin.hpa_common import (
    BehaviorRules,
    HpaMemory,
    MetricPlan,
)
from autoscaler.policy.builtin.params import KedaParams as KedaParams


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
        # The params as plain attributes: a pydantic field read costs several times a
        # (compiled) attribute read, and decide() reads about ten per target per tick.
        self._trigger = MetricPlan(params.trigger, params.tolerance)
        self._signal = params.trigger.signal
        self._min = params.min_replica_count
        self._max = params.max_replica_count
        self._idle = params.idle_replica_count
        self._polling = params.polling_interval_seconds
        self._activation = params.activation_threshold
        self._cooldown = params.cooldown_period_seconds
        self._initial_cooldown = params.initial_cooldown_period_seconds

    def required_signals(self) -> tuple[str, ...]:
        return (self.params.trigger.signal,)

    def retention_seconds(self) -> float:
        return max(60.0, self.params.trigger.window_seconds)

    def signals_read(self) -> frozenset[str]:
        return frozenset((self.params.trigger.signal,))

    def initial_state(self, snap: Snapshot) -> KedaState:
        return KedaState(created=snap.now)

    def decide(self, snap: Snapshot, state: KedaState) -> tuple[Proposal, KedaState]:
        cur = snap.current
        value = self._trigger.value(snap)
        if value is None:
            return Proposal(None, None, "scaler error: no metric", EMPTY), state
        inputs = {self._signal: value}
        lo = self._min
        idle = self._idle
        # KEDA's scale loop, every pollingInterval.
        if state.last_poll is None or snap.now - state.last_poll >= self._polling:
            state.last_poll = snap.now
            state.deactivate_to = None
            state.active = value > self._activation
            if state.active:
                if cur == 0 or (idle is not None and cur < lo):
                    state.last_active = snap.now
                    return Proposal(max(lo, 1), None, "KEDA activation", inputs), state
                state.last_active = snap.now
            elif (idle is not None and cur > idle) or (cur > 0 and lo == 0):
                if state.last_active is None:
                    expired = snap.now > state.created + self._initial_cooldown
                else:
                    expired = snap.now > state.last_active + self._cooldown
                if expired:
                    to = idle if idle is not None else lo
                    state.deactivate_to = to
                    return Proposal(to, None, "KEDA deactivation after cooldown", inputs), state
            elif idle is None and cur < lo:
                return Proposal(lo, None, "below minReplicaCount", inputs), state
        elif state.deactivate_to is not None and cur > state.deactivate_to:
            return Proposal(
                state.deactivate_to, None, "KEDA deactivation after cooldown", inputs
            ), state
        if cur == 0 or (idle is not None and cur <= idle):
            return Proposal(cur, None, "ScalingDisabled: HPA idle at zero", inputs), state
        # The HPA KEDA created: minReplicas = max(min, 1).
        hlo, hhi = max(lo, 1), self._max
        if cur > hhi:
            return Proposal(hhi, None, "TooManyReplicas", inputs), state
        if cur < hlo:
            return Proposal(hlo, None, "TooFewReplicas", inputs), state
        desired = self._trigger.replicas(snap, cur, value)
        if desired is None:
            return Proposal(None, None, "FailedGetExternalMetric", inputs), state
        final, reason = state.hpa.normalize(snap.now, cur, desired, hlo, hhi, self._rules)
        return Proposal(final, None, f"HPA {reason}", inputs), state
