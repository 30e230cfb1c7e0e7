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

import math
from collections import deque
from datetime import UTC, datetime, timedelta, tzinfo
from functools import cached_property
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import GuardAction, Proposal
from autoscaler.policy.api import Params
from autoscaler.policy.compat.kubernetes import (
    HpaPolicy,
    ScalingRules,
    scale_down_limit,
    scale_up_limit,
)

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


class GuardState:
    """Per-target memory of the guards. Timestamps only; nothing counts ticks."""

    __slots__ = (
        "down_events",
        "first_seen",
        "last_good",
        "last_token_rate",
        "last_token_ts",
        "rec_max",
        "rec_min",
        "up_events",
        "zero_since",
    )

    def __init__(self, now: float) -> None:
        self.first_seen = now
        self.last_good: int | None = None
        self.zero_since: float | None = None
        # Monotonic deques of (ts, replicas) for the stabilization windows: O(1) amortised.
        self.rec_max: deque[tuple[float, int]] = deque()
        self.rec_min: deque[tuple[float, int]] = deque()
        self.up_events: deque[tuple[float, int]] = deque()
        self.down_events: deque[tuple[float, int]] = deque()
        self.last_token_rate: float | None = None
        self.last_token_ts: float | None = None


def _record(dq: deque[tuple[float, int]], now: float, value: int, keep_max: bool) -> None:
    if keep_max:
        while dq and dq[-1][1] <= value:
            dq.pop()
    else:
        while dq and dq[-1][1] >= value:
            dq.pop()
    dq.append((now, value))


def _window_extreme(dq: deque[tuple[float, int]], now: float, span: float) -> int | None:
    # HPA counts a recommendation for a window W when its timestamp is after now - W.
    cutoff = now - span
    while dq and dq[0][0] <= cutoff:
        dq.popleft()
    return dq[0][1] if dq else None


def _expire(dq: deque[tuple[float, int]], now: float, keep: float) -> None:
    while dq and now - dq[0][0] >= keep:
        dq.popleft()


def _ages(dq: deque[tuple[float, int]], now: float) -> list[tuple[int, float]]:
    return [(change, now - ts) for ts, change in dq]


def apply_guards(
    g: Guards,
    st: GuardState,
    snap: Snapshot,
    proposal: Proposal,
    required: tuple[str, ...],
) -> tuple[int, bool, list[GuardAction]]:
    """Run the chain; returns (final replicas, signals fresh, guard actions)."""
    now = snap.now
    current = snap.current
    actions: list[GuardAction] = []

    # 1. fallback on missing or stale signals.
    max_age = g.fallback.max_signal_age_seconds
    stale = [s for s in required if snap.age(s) > max_age]
    signals_ok = not stale and proposal.replicas is not None
    if signals_ok:
        want = int(proposal.replicas)  # type: ignore[arg-type]
    else:
        if g.fallback.mode == "replicas" and g.fallback.replicas is not None:
            want = g.fallback.replicas
        elif st.last_good is not None:
            want = st.last_good
        else:
            want = current  # nothing known yet: stay where the target is
        if current > 0 and want == 0:
            want = current  # missing data never takes a running target to zero
        why = f"stale or missing signals: {', '.join(stale)}" if stale else "no valid proposal"
        actions.append(GuardAction("fallback", proposal.replicas, want, why))

    # Idle tracking for scale-to-zero uses the policy's own view: idle is a zero proposal on fresh
    # signals, so a spell without data restarts the clock (nobody saw it idle).
    if signals_ok and want == 0:
        if st.zero_since is None:
            st.zero_since = now
    else:
        st.zero_since = None

    # 2. restart hold: no scale-down while the windows refill after a (re)start.
    if want < current and now - st.first_seen < g.restart_hold_seconds:
        actions.append(
            GuardAction(
                "restart", want, current, f"no scale-down in the first {g.restart_hold_seconds:g}s"
            )
        )
        want = current

    # 3. hold while scaling.
    hws = g.hold_while_scaling
    if hws.enabled and snap.starting > 0 and want > current:
        bar = math.ceil(current * (1.0 + hws.growth_margin))
        if want <= bar and current > 0:
            actions.append(
                GuardAction(
                    "holdWhileScaling",
                    want,
                    current,
                    f"{snap.starting} replicas still starting; proposal within "
                    f"{hws.growth_margin:g} of {current}",
                )
            )
            want = current

    # 4. stabilization (recorded before clipping, as the HPA records the unstabilized value).
    stab = g.stabilization
    if signals_ok or not st.rec_max:
        _record(st.rec_max, now, want, keep_max=True)
        _record(st.rec_min, now, want, keep_max=False)
    if stab.down_seconds > 0 or stab.up_seconds > 0:
        down_rec = (
            _window_extreme(st.rec_max, now, stab.down_seconds) if stab.down_seconds else want
        )
        up_rec = _window_extreme(st.rec_min, now, stab.up_seconds) if stab.up_seconds else want
        stabilized = current
        if up_rec is not None and stabilized < min(up_rec, want):
            stabilized = min(up_rec, want)
        if down_rec is not None and stabilized > max(down_rec, want):
            stabilized = max(down_rec, want)
        if stabilized != want:
            span = stab.up_seconds if stabilized < want else stab.down_seconds
            actions.append(
                GuardAction(
                    "stabilization", want, stabilized, f"recommendations over the last {span:g}s"
                )
            )
            want = stabilized

    # 5. step limits. Events are kept for the longer period (each rule counts its own), and, as
    # in the HPA's limit_rate, a scale-up limit is never below current nor a scale-down limit
    # above it (current lags the events while the last decision is not applied yet).
    # The (change, age) lists are built only when a rule applies: they are the costly part.
    keep = g.step_keep_seconds
    if keep:
        _expire(st.up_events, now, keep)
        _expire(st.down_events, now, keep)
    if g.step_up is not None and want > current:
        ups, downs = _ages(st.up_events, now), _ages(st.down_events, now)
        limit = max(scale_up_limit(current, ups, downs, g.step_up.scaling_rules), current)
        if want > limit:
            actions.append(
                GuardAction(
                    "stepUp", want, limit, f"at most {limit} within {g.step_up.period_seconds:g}s"
                )
            )
            want = limit
    if g.step_down is not None and want < current:
        ups, downs = _ages(st.up_events, now), _ages(st.down_events, now)
        limit = min(scale_down_limit(current, ups, downs, g.step_down.scaling_rules), current)
        if want < limit:
            actions.append(
                GuardAction(
                    "stepDown",
                    want,
                    limit,
                    f"at least {limit} within {g.step_down.period_seconds:g}s",
                )
            )
            want = limit

    # 6. bounds.
    bounded = min(max(want, g.min_replicas), g.max_replicas)
    if bounded != want:
        side = "minReplicas" if bounded > want else "maxReplicas"
        actions.append(GuardAction("bounds", want, bounded, f"{side} {bounded}"))
        want = bounded

    # 7. scale-to-zero.
    if want == 0 and current > 0:
        why = _zero_blocker(g.scale_to_zero, st, snap, signals_ok)
        if why:
            actions.append(GuardAction("scaleToZero", 0, 1, why))
            want = 1

    if signals_ok:
        st.last_good = want
    if keep:  # without step rules nobody reads the events
        if want > current:
            st.up_events.append((now, want - current))
        elif want < current:
            st.down_events.append((now, current - want))  # upstream stores positive counts
    return want, signals_ok, actions


def _zero_blocker(z: ScaleToZero, st: GuardState, snap: Snapshot, signals_ok: bool) -> str:
    if not signals_ok:
        return "signals missing or stale"
    if snap.hold_nonzero:
        return "a rollout is in progress"
    idle_for = snap.now - st.zero_since if st.zero_since is not None else 0.0
    need = z.idle_seconds + z.grace_seconds
    if idle_for < need:
        return f"idle {idle_for:g}s of the {need:g}s required"
    if (
        z.max_cold_start_seconds is not None
        and snap.cold_start_s is not None
        and snap.cold_start_s > z.max_cold_start_seconds
    ):
        return f"measured cold start {snap.cold_start_s:g}s exceeds {z.max_cold_start_seconds:g}s"
    for w in z.protected_windows:
        if w.contains(snap.now):
            return f"protected window {w.start}-{w.end} {w.timezone}"
    return ""


def apply_token_guards(
    t: TokenLimits | None, st: GuardState, now: float, proposed: float | None, signals_ok: bool
) -> tuple[float | None, list[GuardAction]]:
    """Floor, ceiling and slew for the token-rate limit; holds the last limit on stale signals."""
    if t is None:
        return proposed, []
    actions: list[GuardAction] = []
    last = st.last_token_rate
    rate = proposed
    if not signals_ok and last is not None:
        rate = last
    if rate is None:
        return None, actions
    if rate < t.floor:
        actions.append(GuardAction("tokenFloor", rate, t.floor, f"floor {t.floor:g} tokens/s"))
        rate = t.floor
    if t.ceiling is not None and rate > t.ceiling:
        actions.append(
            GuardAction("tokenCeiling", rate, t.ceiling, f"ceiling {t.ceiling:g} tokens/s")
        )
        rate = t.ceiling
    if last is not None and st.last_token_ts is not None and last > 0:
        dt = max(0.0, now - st.last_token_ts)
        if t.max_increase_per_second is not None and rate > last:
            top = last * (1.0 + t.max_increase_per_second * dt)
            if rate > top:
                actions.append(GuardAction("tokenSlew", rate, top, "increase rate limit"))
                rate = top
        if t.max_decrease_per_second is not None and rate < last:
            bottom = last * max(0.0, 1.0 - t.max_decrease_per_second * dt)
            if rate < bottom:
                actions.append(GuardAction("tokenSlew", rate, bottom, "decrease rate limit"))
                rate = bottom
    st.last_token_rate = rate
    st.last_token_ts = now
    return rate, actions
