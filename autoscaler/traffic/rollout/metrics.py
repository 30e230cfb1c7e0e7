"""The rollout controller's Prometheus metrics, on an injected registry (no import-time globals).

autoscaler_rollout_canary_weight_percent{target}          traffic to the canary now
autoscaler_rollout_step{target}                           1-based step (0: no rollout)
autoscaler_rollout_failed_checks{target}                  failed checks so far
autoscaler_rollout_phase{target, phase}                   1 for the current phase
autoscaler_rollout_transitions_total{target, reason}      every Event reason (RolloutStarted,
                                                          RolloutStepShifted, ...)
autoscaler_rollout_checks_total{target, result}           passed, failed, inconclusive, paused
autoscaler_rollout_conflicts_total{target}                409s re-read
autoscaler_rollout_errors_total{target, kind}             rounds stopped by an API error
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from autoscaler.config.rollout import Rollout
from autoscaler.traffic.rollout.state import PHASES, RolloutState


class RolloutMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        t = ["target"]
        self.weight = Gauge(
            "autoscaler_rollout_canary_weight_percent",
            "Traffic percent the rollout last wrote for the canary",
            t,
            registry=registry,
        )
        self.step = Gauge(
            "autoscaler_rollout_step",
            "Current rollout step (1-based; 0: none)",
            t,
            registry=registry,
        )
        self.failed = Gauge(
            "autoscaler_rollout_failed_checks",
            "Failed analysis checks in the current rollout",
            t,
            registry=registry,
        )
        self.phase = Gauge(
            "autoscaler_rollout_phase",
            "1 for the phase of the target's last rollout",
            ["target", "phase"],
            registry=registry,
        )
        self.transitions = Counter(
            "autoscaler_rollout_transitions_total",
            "Rollout transitions by Event reason",
            ["target", "reason"],
            registry=registry,
        )
        self.checks = Counter(
            "autoscaler_rollout_checks_total",
            "Analysis checks by result (passed, failed, inconclusive, paused)",
            ["target", "result"],
            registry=registry,
        )
        self.conflicts = Counter(
            "autoscaler_rollout_conflicts_total",
            "Writes refused with 409 and retried on fresh state",
            t,
            registry=registry,
        )
        self.errors = Counter(
            "autoscaler_rollout_errors_total",
            "Rollout rounds stopped by an API error, by kind",
            ["target", "kind"],
            registry=registry,
        )

    def observe_state(self, target: str, rollout: Rollout, state: RolloutState | None) -> None:
        if state is None:
            self.step.labels(target).set(0)
            return
        self.step.labels(target).set(min(state.step, len(rollout.weights()) - 1) + 1)
        self.failed.labels(target).set(state.failed)
        for phase in PHASES:
            self.phase.labels(target, phase).set(1 if phase == state.phase else 0)
