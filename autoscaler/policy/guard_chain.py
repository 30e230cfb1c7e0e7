"""The guard chain at run time: ``GuardPlan.apply`` and ``TokenPlan.apply`` over ``GuardState``.

The guards' configuration (the pydantic models SREs write as YAML) and the chain's order and
semantics are documented in ``autoscaler.policy.guards``; this module is the part the engine runs
for every target on every tick. It imports no pydantic so it can be compiled with mypyc
(``docs/engine-performance.md``, "The compiled core"); it is also correct as plain Python.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

from autoscaler.core.snapshot import Snapshot
from autoscaler.core.stamps import StampQueue
from autoscaler.core.types import GuardAction, rebuild
from autoscaler.policy.compat.kubernetes import (
    generate_scale_down_rules,
    generate_scale_up_rules,
    scale_down_limit_resolved,
    scale_down_limit_totals,
    scale_up_limit_resolved,
    scale_up_limit_totals,
)

if TYPE_CHECKING:
    from autoscaler.policy.guards import Guards, ScaleToZero, TokenLimits


_GUARD_STATE_FIELDS: Final = (
    "down_events",
    "down_total",
    "event_ts",
    "events_in_order",
    "first_seen",
    "last_good",
    "last_token_rate",
    "last_token_ts",
    "rec_max",
    "rec_min",
    "up_events",
    "up_total",
    "zero_since",
)


class GuardState:
    """Per-target memory of the guards. Timestamps only; nothing counts ticks."""

    __slots__ = _GUARD_STATE_FIELDS

    def __init__(self, now: float) -> None:
        self.first_seen = now
        self.last_good: int | None = None
        self.zero_since: float | None = None
        # Monotonic queues of (ts, replicas) for the stabilization windows: O(1) amortised.
        self.rec_max = StampQueue()
        self.rec_min = StampQueue()
        self.up_events = StampQueue()
        self.down_events = StampQueue()
        # The sums of the changes in up_events and down_events, and whether both were appended
        # in time order (then every event kept is within the step period: see GuardPlan.apply).
        self.up_total = 0
        self.down_total = 0
        self.event_ts = -math.inf
        self.events_in_order = True
        self.last_token_rate: float | None = None
        self.last_token_ts: float | None = None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        state = {name: getattr(self, name) for name in _GUARD_STATE_FIELDS}
        return rebuild, (GuardState, (self.first_seen,), state)


def _ages(q: StampQueue, now: float) -> list[tuple[int, float]]:
    return [(change, now - ts) for ts, change in q.entries()]


class GuardPlan:
    """One target's ``Guards`` as plain attributes, with the constant reasons pre-formatted.

    The engine builds it when a target is configured and runs the chain through it: reading a
    field of a pydantic model costs several times a slot read, and the chain reads about twenty
    per target per tick. The chain itself is ``apply``; ``apply_guards`` is the same over a
    ``Guards``.
    """

    __slots__ = (
        "fallback_replicas",
        "growth",
        "growth_margin",
        "hws",
        "keep",
        "max_age",
        "max_replicas",
        "min_replicas",
        "restart_hold",
        "restart_reason",
        "single_period",
        "stab",
        "stab_down",
        "stab_down_reason",
        "stab_up",
        "stab_up_reason",
        "step_down",
        "step_down_period",
        "step_up",
        "step_up_period",
        "zero",
    )

    def __init__(self, g: Guards) -> None:
        fb = g.fallback
        self.max_age = fb.max_signal_age_seconds
        self.fallback_replicas = fb.replicas if fb.mode == "replicas" else None
        self.restart_hold = g.restart_hold_seconds
        self.restart_reason = f"no scale-down in the first {g.restart_hold_seconds:g}s"
        hws = g.hold_while_scaling
        self.hws = hws.enabled
        self.growth_margin = hws.growth_margin
        self.growth = 1.0 + hws.growth_margin
        stab = g.stabilization
        self.stab = stab.down_seconds > 0 or stab.up_seconds > 0
        self.stab_up = stab.up_seconds
        self.stab_down = stab.down_seconds
        self.stab_up_reason = f"recommendations over the last {stab.up_seconds:g}s"
        self.stab_down_reason = f"recommendations over the last {stab.down_seconds:g}s"
        # Computed here rather than read from the cached properties, which a model_copy of the
        # Guards would carry over unchanged.
        self.keep = max((r.period_seconds for r in (g.step_up, g.step_down) if r), default=0)
        # One period for every step rule: each rule then counts every event kept (see apply).
        self.single_period = all(
            r.period_seconds == self.keep for r in (g.step_up, g.step_down) if r
        )
        # The HPA rules filled in once (generate_*_rules), not by every limit computation.
        self.step_up = generate_scale_up_rules(g.step_up.rules()) if g.step_up is not None else None
        self.step_up_period = f"{g.step_up.period_seconds:g}" if g.step_up is not None else ""
        self.step_down = (
            generate_scale_down_rules(g.step_down.rules()) if g.step_down is not None else None
        )
        self.step_down_period = f"{g.step_down.period_seconds:g}" if g.step_down is not None else ""
        self.min_replicas = g.min_replicas
        self.max_replicas = g.max_replicas
        self.zero = g.scale_to_zero

    def stale(self, snap: Snapshot, required: tuple[str, ...]) -> list[str] | None:
        """The required signals older than ``fallback.maxSignalAgeSeconds`` (None: all fresh)."""
        max_age = self.max_age
        stale: list[str] | None = None
        for name in required:
            if snap.age(name) > max_age:
                if stale is None:
                    stale = [name]
                else:
                    stale.append(name)
        return stale

    def apply(
        self, st: GuardState, snap: Snapshot, replicas: int | None, stale: list[str] | None
    ) -> tuple[int, bool, list[GuardAction]]:
        """Run the chain on the policy's proposed ``replicas``; see ``apply_guards``.

        ``stale`` is ``self.stale(snap, required)``, which the engine works out from its windows
        directly.
        """
        now = snap.now
        current = snap.current
        actions: list[GuardAction] = []

        # 1. fallback on missing or stale signals.
        if stale is None and replicas is not None:
            signals_ok = True
            want = replicas if type(replicas) is int else int(replicas)
        else:
            signals_ok = False
            if self.fallback_replicas is not None:
                want = self.fallback_replicas
            elif st.last_good is not None:
                want = st.last_good
            else:
                want = current  # nothing known yet: stay where the target is
            if current > 0 and want == 0:
                want = current  # missing data never takes a running target to zero
            why = f"stale or missing signals: {', '.join(stale)}" if stale else "no valid proposal"
            actions.append(GuardAction("fallback", replicas, want, why))

        # Idle tracking for scale-to-zero uses the policy's own view: idle is a zero proposal on
        # fresh signals, so a spell without data restarts the clock (nobody saw it idle).
        if signals_ok and want == 0:
            if st.zero_since is None:
                st.zero_since = now
        else:
            st.zero_since = None

        # 2. restart hold: no scale-down while the windows refill after a (re)start.
        if want < current and now - st.first_seen < self.restart_hold:
            actions.append(GuardAction("restart", want, current, self.restart_reason))
            want = current

        # 3. hold while scaling.
        if self.hws and snap.starting > 0 and want > current:
            bar = math.ceil(current * self.growth)
            if want <= bar and current > 0:
                actions.append(
                    GuardAction(
                        "holdWhileScaling",
                        want,
                        current,
                        f"{snap.starting} replicas still starting; proposal within "
                        f"{self.growth_margin:g} of {current}",
                    )
                )
                want = current

        # 4. stabilization (recorded before clipping, as the HPA records the unstabilized value).
        # Monotonic queues: the window's max (min) is at the left end.
        rec_max = st.rec_max
        if signals_ok or not rec_max:
            while rec_max and rec_max.last_n() <= want:
                rec_max.pop()
            rec_max.append(now, want)
            rec_min = st.rec_min
            while rec_min and rec_min.last_n() >= want:
                rec_min.pop()
            rec_min.append(now, want)
        if self.stab:
            # HPA counts a recommendation for a window W when its timestamp is after now - W.
            down_rec: int | None = want
            if self.stab_down:
                cutoff = now - self.stab_down
                while rec_max and rec_max.first_t() <= cutoff:
                    rec_max.popleft()
                down_rec = rec_max.first_n() if rec_max else None
            up_rec: int | None = want
            if self.stab_up:
                rec_min = st.rec_min
                cutoff = now - self.stab_up
                while rec_min and rec_min.first_t() <= cutoff:
                    rec_min.popleft()
                up_rec = rec_min.first_n() if rec_min else None
            # min()/max() written out: the builtins parse keyword arguments on every call.
            stabilized = current
            if up_rec is not None:
                low = want if want < up_rec else up_rec  # min(up_rec, want)
                if stabilized < low:
                    stabilized = low
            if down_rec is not None:
                high = want if want > down_rec else down_rec  # max(down_rec, want)
                if stabilized > high:
                    stabilized = high
            if stabilized != want:
                why = self.stab_up_reason if stabilized < want else self.stab_down_reason
                actions.append(GuardAction("stabilization", want, stabilized, why))
                want = stabilized

        # 5. step limits. Events are kept for the longer period (each rule counts its own), and,
        # as in the HPA's limit_rate, a scale-up limit is never below current nor a scale-down
        # limit above it (current lags the events while the last decision is not applied yet).
        # The (change, age) lists are built only when a rule applies: they are the costly part.
        # With one period for every rule and the events appended in time order, every event
        # kept is younger than the period (the older ones are a prefix, dropped here), so each
        # rule's sums are the running totals: O(1) instead of O(events in the period). At a NaN
        # time no event counts, and the sums are taken the long way.
        keep = self.keep
        if keep:
            dq = st.up_events
            while dq and now - dq.first_t() >= keep:
                st.up_total -= dq.popleft()
            dq = st.down_events
            while dq and now - dq.first_t() >= keep:
                st.down_total -= dq.popleft()
            if not st.events_in_order and not st.up_events and not dq:
                st.events_in_order = True
                st.event_ts = -math.inf
        if self.step_up is not None and want > current:
            if self.single_period and st.events_in_order and now == now:  # now: not NaN
                limit = scale_up_limit_totals(current, st.up_total, st.down_total, self.step_up)
            else:
                ups, downs = _ages(st.up_events, now), _ages(st.down_events, now)
                limit = scale_up_limit_resolved(current, ups, downs, self.step_up)
            limit = max(limit, current)
            if want > limit:
                actions.append(
                    GuardAction(
                        "stepUp", want, limit, f"at most {limit} within {self.step_up_period}s"
                    )
                )
                want = limit
        if self.step_down is not None and want < current:
            if self.single_period and st.events_in_order and now == now:
                limit = scale_down_limit_totals(current, st.up_total, st.down_total, self.step_down)
            else:
                ups, downs = _ages(st.up_events, now), _ages(st.down_events, now)
                limit = scale_down_limit_resolved(current, ups, downs, self.step_down)
            limit = min(limit, current)
            if want < limit:
                actions.append(
                    GuardAction(
                        "stepDown", want, limit, f"at least {limit} within {self.step_down_period}s"
                    )
                )
                want = limit

        # 6. bounds.
        if want < self.min_replicas or want > self.max_replicas:
            bounded = min(max(want, self.min_replicas), self.max_replicas)
            if bounded != want:
                side = "minReplicas" if bounded > want else "maxReplicas"
                actions.append(GuardAction("bounds", want, bounded, f"{side} {bounded}"))
                want = bounded

        # 7. scale-to-zero.
        if want == 0 and current > 0:
            why = _zero_blocker(self.zero, st, snap, signals_ok)
            if why:
                actions.append(GuardAction("scaleToZero", 0, 1, why))
                want = 1

        if signals_ok:
            st.last_good = want
        if keep and want != current:  # without step rules nobody reads the events
            if not st.event_ts <= now:  # earlier than the last event, or NaN
                st.events_in_order = False
            st.event_ts = now
            if want > current:
                st.up_events.append(now, want - current)
                st.up_total += want - current
            else:
                st.down_events.append(now, current - want)  # upstream stores positive counts
                st.down_total += current - want
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


class TokenPlan:
    """``TokenLimits`` as plain attributes (see ``GuardPlan``); ``apply`` is the token chain."""

    __slots__ = ("ceiling", "ceiling_reason", "decrease", "floor", "floor_reason", "increase")

    def __init__(self, t: TokenLimits) -> None:
        self.floor = t.floor
        self.ceiling = t.ceiling
        self.increase = t.max_increase_per_second
        self.decrease = t.max_decrease_per_second
        self.floor_reason = f"floor {t.floor:g} tokens/s"
        self.ceiling_reason = f"ceiling {t.ceiling:g} tokens/s" if t.ceiling is not None else ""

    def apply(
        self,
        st: GuardState,
        now: float,
        proposed: float | None,
        signals_ok: bool,
        actions: list[GuardAction],
    ) -> float | None:
        """Floor, ceiling and slew; appends what it changed to ``actions``."""
        last = st.last_token_rate
        rate = proposed
        if not signals_ok and last is not None:
            rate = last
        if rate is None:
            return None
        if rate < self.floor:
            actions.append(GuardAction("tokenFloor", rate, self.floor, self.floor_reason))
            rate = self.floor
        ceiling = self.ceiling
        if ceiling is not None and rate > ceiling:
            actions.append(GuardAction("tokenCeiling", rate, ceiling, self.ceiling_reason))
            rate = ceiling
        if last is not None and st.last_token_ts is not None and last > 0:
            dt = now - st.last_token_ts
            if not dt > 0.0:  # max(0.0, dt), NaN included
                dt = 0.0
            if self.increase is not None and rate > last:
                top = last * (1.0 + self.increase * dt)
                if rate > top:
                    actions.append(GuardAction("tokenSlew", rate, top, "increase rate limit"))
                    rate = top
            if self.decrease is not None and rate < last:
                bottom = last * max(0.0, 1.0 - self.decrease * dt)
                if rate < bottom:
                    actions.append(GuardAction("tokenSlew", rate, bottom, "decrease rate limit"))
                    rate = bottom
        st.last_token_rate = rate
        st.last_token_ts = now
        return rate
