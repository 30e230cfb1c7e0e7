"""Per-target runtime state the engine keeps between ticks."""

from __future__ import annotations

from typing import Any

from autoscaler.config.models import Target
from autoscaler.core import signals
from autoscaler.core.types import Decision, TargetRef
from autoscaler.core.windows import SignalWindow
from autoscaler.policy.api import Policy
from autoscaler.policy.guards import GuardState

# Status signals only need their latest value (and its age).
_STATUS_RETENTION = 1.0


class TargetRuntime:
    """Windows, policy state and guard state of one target. Owned by one Engine."""

    __slots__ = (
        "carry",
        "config",
        "guard_state",
        "hold_nonzero",
        "last",
        "policy",
        "policy_state",
        "ref",
        "required",
        "retention",
        "windows",
    )

    def __init__(self, ref: TargetRef, config: Target) -> None:
        self.ref = ref
        self.windows: dict[str, SignalWindow] = {}
        self.policy_state: Any = None
        self.guard_state: GuardState | None = None
        self.last: Decision | None = None
        self.hold_nonzero = False
        self.carry = False  # policy_state came from before a reload; adopt it via carry_state
        self.configure(config)

    def configure(self, config: Target) -> None:
        self.config = config
        self.policy: Policy[Any, Any] = config.build_policy()
        self.required = self.policy.required_signals()
        self.retention = max(
            self.policy.retention_seconds(), config.guards.fallback.max_signal_age_seconds, 1.0
        )
        for name, w in self.windows.items():
            w.retention = self._retention_for(name)

    def _retention_for(self, name: str) -> float:
        return _STATUS_RETENTION if name in signals.STATUS_SIGNALS else self.retention

    def window(self, name: str) -> SignalWindow:
        w = self.windows.get(name)
        if w is None:
            w = self.windows[name] = SignalWindow(self._retention_for(name))
        return w
