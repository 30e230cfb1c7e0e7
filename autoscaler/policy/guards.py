"""The guard chain shared by every policy.

Guards run after the policy, in this order, each recording a GuardAction when it changes the count:

1. ``fallback``       missing or stale signals (or no valid proposal): hold the last good count or
                      use a configured fallback count; a target never goes to zero on missing data.
2. ``restart``        for ``restartHoldSeconds`` after the engine first sees a target (a restart
                      lost the windows), never scale down, as Knative's decider starts in panic.
3. ``holdWhileScaling`` while replicas are still starting, do not stack more scale-ups unless the
                      proposal grows past what is coming by ``growthMargin``.
4. ``stabilization``  HPA-style: scale up to the lowest, down to the highest recommendation seen in
                      the up/down window (seconds, from timestamps).
5. ``stepUp``/``stepDown`` HPA behavior policies: pods and percent per period, selected by Max/Min.
6. ``bounds``         [minReplicas, maxReplicas].
7. ``scaleToZero``    zero only when minReplicas is 0, after the proposal has been zero for
                      ``idleSeconds + graceSeconds``, with fresh signals, a measured cold start
                      within bound, outside protected windows and with no rollout in progress.

The token-rate limit has its own guards: floor, ceiling and slew (relative change per second).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from functools import cached_property
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import GuardAction, Proposal
from autoscaler.policy.api import Params
from autoscaler.policy.compat.kubernetes import HpaPolicy, ScalingRules

# The chain itself lives in guard_chain (no pydantic there: it is compiled with mypyc); its names
# are re-exported here, where callers have always found them.
from autoscaler.policy.guard_chain import GuardPlan, GuardState, TokenPlan

__all__ = [
    "DAYS",
    "Fallback",
    "GuardPlan",
    "GuardState",
    "Guards",
    "HoldWhileScaling",
    "ScaleToZero",
    "Stabilization",
    "StepRule",
    "TimeWindow",
    "TokenLimits",
    "TokenPlan",
    "apply_guards",
    "apply_token_guards",
]

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class TimeWindow(Params):
    """A protected span of the week, e.g. business hours in which a target never goes to zero."""

    days: tuple[Day, ...] = DAYS
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM, inclusive")
    end: str = Field(pattern=r"^([01]\d|2[0-4]):[0-5]\d$", description="HH:MM, exclusive")
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        if v.upper() == "UTC":
            return "UTC"
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {v!r}") from e
        return v

    @cached_property
    def _tz(self) -> tzinfo:
        return UTC if self.timezone == "UTC" else ZoneInfo(self.timezone)

    def contains(self, now: float) -> bool:
        local = datetime.fromtimestamp(now, self._tz)
        minute = local.hour * 60 + local.minute
        h0, m0 = (int(x) for x in self.start.split(":"))
        h1, m1 = (int(x) for x in self.end.split(":"))
        lo, hi = h0 * 60 + m0, h1 * 60 + m1
        day = DAYS[local.weekday()]
        if lo <= hi:
            return day in self.days and lo <= minute < hi
        # Spans midnight: the evening part belongs to the listed day, the morning to the next.
        if minute >= lo:
            return day in self.days
        yesterday = DAYS[(local - timedelta(days=1)).weekday()]
        return minute < hi and yesterday in self.days


class ScaleToZero(Params):
    idle_seconds: float = Field(300.0, ge=0, description="proposal must be zero this long")
    grace_seconds: float = Field(30.0, ge=0, description="then this much more (activator takeover)")
    max_cold_start_seconds: float | None = Field(
        None, gt=0, description="never to zero while the measured cold start exceeds this"
    )
    protected_windows: tuple[TimeWindow, ...] = ()


class Stabilization(Params):
    up_seconds: float = Field(0.0, ge=0)
    down_seconds: float = Field(300.0, ge=0)


class StepRule(Params):
    """At most ``pods`` and/or ``percent`` change per ``periodSeconds`` (HPA behavior policies)."""

    # Whole numbers within the HPA's own API limits: its rate math takes integer values and
    # periods of 1..1800 s, and a fraction would be truncated (0.5 % or 0.5 s would become 0).
    pods: int | None = Field(None, ge=1)
    percent: int | None = Field(None, ge=1)
    period_seconds: int = Field(60, ge=1, le=1800)
    select: Literal["Max", "Min", "Disabled"] = "Max"

    @model_validator(mode="after")
    def _one_limit(self) -> StepRule:
        if self.select != "Disabled" and self.pods is None and self.percent is None:
            raise ValueError("set pods or percent (or select: Disabled)")
        return self

    @cached_property
    def scaling_rules(self) -> ScalingRules:
        """The HPA rules, built once per config rather than per target per tick."""
        return self.rules()

    def rules(self) -> ScalingRules:
        policies = []
        if self.pods is not None:
            policies.append(HpaPolicy("Pods", self.pods, self.period_seconds))
        if self.percent is not None:
            policies.append(HpaPolicy("Percent", self.percent, self.period_seconds))
        # "Disabled" may come without limits; the HPA math rejects an empty list, not None.
        return ScalingRules(select_policy=self.select, policies=policies or None)


class HoldWhileScaling(Params):
    enabled: bool = True
    growth_margin: float = Field(0.25, ge=0)


class Fallback(Params):
    max_signal_age_seconds: float = Field(60.0, gt=0)
    mode: Literal["hold", "replicas"] = "hold"
    replicas: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _replicas_for_mode(self) -> Fallback:
        if self.mode == "replicas" and self.replicas is None:
            raise ValueError("mode 'replicas' needs fallback.replicas")
        return self


class Guards(Params):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(10, ge=1)
    scale_to_zero: ScaleToZero = Field(default_factory=ScaleToZero)
    stabilization: Stabilization = Field(default_factory=Stabilization)
    step_up: StepRule | None = None
    step_down: StepRule | None = None
    hold_while_scaling: HoldWhileScaling = Field(default_factory=HoldWhileScaling)
    fallback: Fallback = Field(default_factory=Fallback)
    restart_hold_seconds: float = Field(60.0, ge=0)

    @cached_property
    def step_keep_seconds(self) -> int:
        """How long scale events matter: the longest step-rule period (0 without rules)."""
        return max((r.period_seconds for r in (self.step_up, self.step_down) if r), default=0)

    @model_validator(mode="after")
    def _ordered_bounds(self) -> Guards:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"maxReplicas ({self.max_replicas}) must be >= minReplicas ({self.min_replicas})"
            )
        if self.fallback.replicas is not None and not (
            self.min_replicas <= self.fallback.replicas <= self.max_replicas
        ):
            raise ValueError(
                f"fallback.replicas ({self.fallback.replicas}) must be within minReplicas "
                f"({self.min_replicas}) and maxReplicas ({self.max_replicas})"
            )
        return self


class TokenLimits(Params):
    """Guards on the per-target token-rate limit (tokens/s) a policy proposes."""

    floor: float = Field(0.0, ge=0)
    ceiling: float | None = Field(None, gt=0)
    max_increase_per_second: float | None = Field(
        None, gt=0, description="relative: 0.1 lets the limit grow 10% per second"
    )
    max_decrease_per_second: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> TokenLimits:
        if self.ceiling is not None and self.ceiling < self.floor:
            raise ValueError(f"ceiling ({self.ceiling}) must be >= floor ({self.floor})")
        return self


def apply_guards(
    g: Guards,
    st: GuardState,
    snap: Snapshot,
    proposal: Proposal,
    required: tuple[str, ...],
) -> tuple[int, bool, list[GuardAction]]:
    """Run the chain; returns (final replicas, signals fresh, guard actions).

    Builds the ``GuardPlan`` on every call; the engine keeps one per target instead.
    """
    plan = GuardPlan(g)
    return plan.apply(st, snap, proposal.replicas, plan.stale(snap, required))


def apply_token_guards(
    t: TokenLimits | None, st: GuardState, now: float, proposed: float | None, signals_ok: bool
) -> tuple[float | None, list[GuardAction]]:
    """Floor, ceiling and slew for the token-rate limit; holds the last limit on stale signals."""
    if t is None:
        return proposed, []
    actions: list[GuardAction] = []
    return TokenPlan(t).apply(st, now, proposed, signals_ok, actions), actions
