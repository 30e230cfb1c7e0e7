"""Autoscaling-aware canary rollouts (docs/rollouts.md): a pure state machine (``machine``) and
its I/O controller (``controller``) shifting traffic through Knative ``spec.traffic`` and KServe
``canaryTrafficPercent``."""

from autoscaler.traffic.rollout.analysis import SourceAnalyzer, WebhookRunner
from autoscaler.traffic.rollout.controller import API_CALLS, RolloutController, StepResult
from autoscaler.traffic.rollout.machine import (
    CheckResult,
    HookResult,
    Observed,
    Plan,
    RevisionView,
    decide,
)
from autoscaler.traffic.rollout.metrics import RolloutMetrics
from autoscaler.traffic.rollout.state import STATE_ANNOTATION, RolloutState

__all__ = [
    "API_CALLS",
    "STATE_ANNOTATION",
    "CheckResult",
    "HookResult",
    "Observed",
    "Plan",
    "RevisionView",
    "RolloutController",
    "RolloutMetrics",
    "RolloutState",
    "SourceAnalyzer",
    "StepResult",
    "WebhookRunner",
    "decide",
]
