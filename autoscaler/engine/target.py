"""Per-target runtime state the engine keeps between ticks."""

from __future__ import annotations

from typing import Any

from autoscaler.config.models import Target
from autoscaler.core.types import Decision, TargetRef
from autoscaler.core.windows import SignalWindow
from autoscaler.policy.api import Policy
from autoscaler.policy.guards import GuardState


class TargetRuntime:
    """Windows, policy state and guard state of one target. Owned by one Engine."""

    __slots__ = (
        "carry",
        "config",
        "guard_state",
        "hold_nonzero",
        "key",
        "last",
        "max_age",
        "policy",
        "policy_name",
        "policy_state",
        "ref",
        "required",
        "retention",
        "status",
        "status_ts",
        "windows",
    )

    def __init__(self, ref: TargetRef, config: Target) -> None:
        self.ref = ref
        self.key = ref.key
        self.windows: dict[str, SignalWindow] = {}
        # Replica status (spec, ready, starting, measured cold start): latest value and its time.
        self.status: dict[str, float] = {}
        self.status_ts: dict[str, float] = {}
        self.policy_state: Any = None
        self.guard_state: GuardState | None = None
        self.last: Decision | None = None
        self.hold_nonzero = False
        self.carry = False  # policy_state came from before a reload; adopt it via carry_state
        self.configure(config)

    def configure(self, config: Target) -> None:
        self.config = config
        self.policy_name = config.policy.name
        self.policy: Policy[Any, Any] = config.build_policy()
        self.required = self.policy.required_signals()
        self.max_age = config.guards.fallback.max_signal_age_seconds
        self.retention = max(
            self.policy.retention_seconds(), config.guards.fallback.max_signal_age_seconds, 1.0
        )
        for w in self.windows.values():
            w.retention = self.retention

    def window(self, name: str) -> SignalWindow:
        w = self.windows.get(name)
        if w is None:
            w = self.windows[name] = SignalWindow(self.retention)
        return w
