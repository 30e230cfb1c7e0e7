"""Per-target runtime state the engine keeps between ticks."""

from __future__ import annotations

import math
from typing import Any, Final

from autoscaler.config.models import Target
from autoscaler.core import signals
from autoscaler.core.types import Decision, TargetRef
from autoscaler.core.windows import SignalWindow
from autoscaler.policy.api import Policy
from autoscaler.policy.guards import GuardPlan, Guards, GuardState, TokenLimits, TokenPlan

# The slots of TargetRuntime.status and .status_ts.
REPLICAS_SLOT: Final = 0
READY_SLOT: Final = 1
STARTING_SLOT: Final = 2
COLD_START_SLOT: Final = 3
STATUS_SLOTS: Final = {
    signals.REPLICAS: REPLICAS_SLOT,
    signals.REPLICAS_READY: READY_SLOT,
    signals.REPLICAS_STARTING: STARTING_SLOT,
    signals.COLD_START_SECONDS: COLD_START_SLOT,
}
#: The route of a signal no policy reads (its samples are counted and dropped).
UNREAD: Final = -1


class PlanCache:
    """Guard and token-limit plans shared by the targets of one configuration load.

    Targets built from one config object (a selector's matches, a fleet in a benchmark) share
    one immutable plan instead of 10,000 copies the tick has to bring into cache one by one.
    Keyed by identity, holding the config object so the id cannot be reused while cached.
    """

    def __init__(self) -> None:
        self._guards: dict[int, tuple[Guards, GuardPlan]] = {}
        self._tokens: dict[int, tuple[TokenLimits, TokenPlan]] = {}

    def guards(self, g: Guards) -> GuardPlan:
        hit = self._guards.get(id(g))
        if hit is None or hit[0] is not g:
            hit = self._guards[id(g)] = (g, GuardPlan(g))
        return hit[1]

    def tokens(self, t: TokenLimits) -> TokenPlan:
        hit = self._tokens.get(id(t))
        if hit is None or hit[0] is not t:
            hit = self._tokens[id(t)] = (t, TokenPlan(t))
        return hit[1]


class TargetRuntime:
    """Windows, policy state and guard state of one target. Owned by one Engine."""

    __slots__ = (
        "carry",
        "config",
        "guard_plan",
        "guard_state",
        "hold_nonzero",
        "key",
        "last",
        "max_age",
        "policy",
        "policy_name",
        "policy_state",
        "reads",
        "ref",
        "required",
        "retention",
        "routes",
        "status",
        "status_ts",
        "token_plan",
        "windows",
    )

    def __init__(self, ref: TargetRef, config: Target, plans: PlanCache | None = None) -> None:
        self.ref = ref
        self.key = ref.key
        self.windows: dict[str, SignalWindow] = {}
        # Where each signal's samples go: its window, a status slot, or UNREAD. One dict lookup
        # per observation in Engine.observe, filled by route() on a signal's first sample and
        # emptied by configure() (which may change what is read).
        self.routes: dict[str, SignalWindow | int] = {}
        # Replica status (spec, ready, starting, measured cold start, at the *_SLOT indexes):
        # latest value (NaN until one is seen; only finite values are stored) and its time.
        self.status: list[float] = [math.nan, math.nan, math.nan, math.nan]
        self.status_ts: list[float] = [-math.inf, -math.inf, -math.inf, -math.inf]
        self.policy_state: Any = None
        self.guard_state: GuardState | None = None
        self.last: Decision | None = None
        self.hold_nonzero = False
        self.carry = False  # policy_state came from before a reload; adopt it via carry_state
        self.configure(config, plans)

    def configure(self, config: Target, plans: PlanCache | None = None) -> None:
        self.config = config
        self.policy_name = config.policy.name
        self.policy: Policy[Any, Any] = config.build_policy()
        self.required = self.policy.required_signals()
        # The signals the policy reads (None: any), and the required ones the fallback guard
        # watches. Samples of the others are not kept, and a window no longer read is dropped.
        reads = self.policy.signals_read()
        self.reads = None if reads is None else frozenset(reads).union(self.required)
        self.routes = {}
        if self.reads is not None:
            for name in [n for n in self.windows if n not in self.reads]:
                del self.windows[name]
        # The guard and token-limit config as plain attributes, read on every tick.
        if plans is None:
            plans = PlanCache()
        self.guard_plan = plans.guards(config.guards)
        self.token_plan = (
            plans.tokens(config.token_limits) if config.token_limits is not None else None
        )
        self.max_age = config.guards.fallback.max_signal_age_seconds
        self.retention = max(
            self.policy.retention_seconds(), config.guards.fallback.max_signal_age_seconds, 1.0
        )
        for w in self.windows.values():
            w.retention = self.retention

    def route(self, signal: str) -> SignalWindow | int:
        """Where ``signal``'s samples go (see ``routes``), remembered for the next ones."""
        r: SignalWindow | int | None = self.windows.get(signal)
        if r is None:
            r = STATUS_SLOTS.get(signal)
            if r is None:
                if self.reads is not None and signal not in self.reads:
                    r = UNREAD  # no policy reads it: keeping it could not change a decision
                else:
                    r = self.window(signal)
        self.routes[signal] = r
        return r

    def window(self, name: str) -> SignalWindow:
        w = self.windows.get(name)
        if w is None:
            w = self.windows[name] = SignalWindow(self.retention)
        return w
