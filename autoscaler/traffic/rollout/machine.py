"""The pure rollout state machine: observed objects + analysis results + ``now`` -> one plan.

No I/O and no clock: the controller reads the objects, calls ``decide``, and when the plan asks
for analysis or webhooks (``plan.need``) it runs them and calls ``decide`` again with their
results. Every write the plan asks for is derived from what was read this round, so a 409 on a
write means: read again and decide again.

One transition per call (the controller calls again while the plan says ``again``):

    no state / other canary -> Progressing step 0, traffic 0 to the canary (it is ours now)
    Progressing, step not shifted:
        canary Ready=False                           -> RolledBack
        waiting longer than progressDeadlineSeconds  -> RolledBack
        canary min-scale < pre-scale                 -> write min-scale (wait)
        canary ready replicas < pre-scale            -> wait (nothing counted)
        webhooks not passed                          -> run them (need); a failure counts
        else                                         -> shift traffic to the step's weight
    Progressing, shifted:
        traffic differs from the step's weight       -> write it again (resume after a crash)
        check not due (analysis interval)            -> wait
        canary cold (scaling from zero, starting)    -> pause: no check counted
        no results yet                               -> need analysis
        a metric out of range                        -> failed + 1 (threshold: RolledBack)
        a metric missing                             -> inconclusive (neither pass nor fail)
        all in range                                 -> passed + 1; enough for the step: next
                                                        step, or Succeeded after the last
    Succeeded / RolledBack: converge traffic (and the canary's min-scale after a rollback)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from autoscaler.config.rollout import Rollout
from autoscaler.traffic.rollout.state import RolloutState

Need = Literal["", "analysis", "webhooks"]


@dataclass(frozen=True, slots=True)
class RevisionView:
    """What the controller read of one Revision. ``ready``: the Ready condition (None:
    Unknown/absent). Replica counts from ``status.actualReplicas``/``desiredReplicas``."""

    name: str
    ready: bool | None = None
    ready_message: str = ""
    actual: int | None = None
    desired: int | None = None
    min_scale: str | None = None


@dataclass(frozen=True, slots=True)
class Observed:
    """One read of a target: its stable and canary revisions (None: no canary in sight), the
    canary's traffic percent as the object's spec holds it now, and the stored state."""

    stable: RevisionView | None
    canary: RevisionView | None
    canary_percent: int
    state: RolloutState | None = None
    state_error: str = ""
    promoted: bool = False  # the final shape: the canary alone (Knative), no percent (KServe)


@dataclass(frozen=True, slots=True)
class Note:
    """An Event to record (and count): ``reason`` like ``RolloutStepShifted``."""

    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do now. ``state``: write it (None: leave the annotation); ``canary_percent``:
    shift traffic (None: leave); ``promote``: write the promoted shape; ``min_scale``: the
    canary's min-scale annotation to write (the string "" removes it); ``hold``: keep the
    target above zero; ``need``: call again with these results; ``again``: a transition was
    made, call again on fresh state; ``check``: the kind of analysis check done (metrics)."""

    state: RolloutState | None = None
    canary_percent: int | None = None
    promote: bool = False
    min_scale: str | None = None
    hold: bool = False
    need: Need = ""
    again: bool = False
    check: str = ""
    notes: tuple[Note, ...] = ()
    idle: str = field(default="", compare=False)

    @property
    def writes(self) -> bool:
        return (
            self.state is not None
            or self.canary_percent is not None
            or (self.min_scale is not None)
        )


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One analysis round: each metric's value, None when Prometheus had none (or garbage)."""

    values: Mapping[str, float | None]


@dataclass(frozen=True, slots=True)
class HookResult:
    ok: bool
    detail: str = ""


def serving_replicas(stable: RevisionView, canary: RevisionView, canary_percent: int) -> int:
    """Replicas the whole target needs now, estimated from the stable alone: its replicas over
    its share of the traffic (10 stable replicas at a 50% share: 10 for 100%). Counting the
    canary's replicas instead would feed the pre-scale back into itself."""
    stable_share = 100 - max(0, min(100, canary_percent))
    if stable_share <= 0:
        return canary.actual or 0
    return math.ceil((stable.actual or 0) * 100 / stable_share - 1e-9)


def prescale_replicas(serving: int | None, weight: int, cap: int | None) -> int:
    """The canary's floor before it takes ``weight`` percent: the target's serving replicas
    (``serving_replicas``) times the share, rounded up, at least one (a step never starts on a
    canary at zero), at most ``cap`` (``maxCanaryReplicas``)."""
    base = max(serving or 0, 1)
    need = max(1, math.ceil(base * weight / 100 - 1e-9))
    return min(need, cap) if cap is not None else need


def is_cold(rev: RevisionView) -> str:
    """Why the canary is not in a state to be judged ("" when it is): scaling from zero, or
    replicas still starting (desired above actual)."""
    if rev.actual is None or rev.actual <= 0:
        return "scaling from zero"
    if rev.desired is not None and rev.desired > rev.actual:
        return f"{rev.desired - rev.actual} of {rev.desired} replicas still starting"
    if rev.ready is not True:
        return "not ready"
    return ""


def _int(text: str | None) -> int:
    try:
        return int(text) if text is not None else 0
    except ValueError:
        return 0


def _rollback(st: RolloutState, now: float, why: str, check: str = "") -> Plan:
    new = st.but(phase="RolledBack", reason=why, started_at=now, paused_since=None)
    note = Note(
        "RolloutRolledBack",
        f"rolled back {st.canary} to 100% {st.stable} at step {st.step + 1}: {why}",
        warning=True,
    )
    return Plan(state=new, hold=False, again=True, check=check, notes=(note,))


def _promote(st: RolloutState, now: float) -> Plan:
    new = st.but(phase="Succeeded", reason="all steps passed", started_at=now, paused_since=None)
    note = Note("RolloutPromoted", f"promoted {st.canary} to 100% (was {st.stable})")
    return Plan(state=new, hold=False, again=True, notes=(note,))


def decide(
    rollout: Rollout,
    obs: Observed,
    now: float,
    *,
    checks: CheckResult | None = None,
    hooks: HookResult | None = None,
) -> Plan:
    canary, stable = obs.canary, obs.stable
    if obs.state_error:
        # Never act on a state we cannot read: traffic stays where it is, a human looks.
        note = Note("RolloutStateInvalid", f"cannot read the rollout state: {obs.state_error}")
        return Plan(hold=True, notes=(note,), idle="invalid state")
    if canary is None or stable is None or canary.name == stable.name:
        return Plan(idle="no canary")
    st = obs.state
    if st is None or st.canary != canary.name:
        new = RolloutState(
            canary=canary.name,
            stable=stable.name,
            started_at=now,
            original_min_scale=canary.min_scale,
        )
        weights = rollout.weights()
        note = Note(
            "RolloutStarted",
            f"canary {canary.name} against {stable.name}: steps {list(weights)}%",
        )
        return Plan(state=new, canary_percent=0, hold=True, again=True, notes=(note,))
    if st.phase == "Succeeded":
        if obs.canary_percent != 100 or not obs.promoted:
            return Plan(canary_percent=100, promote=True, again=True)
        return Plan(idle="succeeded")
    if st.phase == "RolledBack":
        if obs.canary_percent != 0:
            return Plan(canary_percent=0, again=True)
        restore = st.original_min_scale or ""
        if (canary.min_scale or "") != restore:
            return Plan(min_scale=restore, again=True)
        return Plan(idle="rolled back")
    return _progress(rollout, obs, canary, st, now, checks, hooks)


def _progress(
    rollout: Rollout,
    obs: Observed,
    canary: RevisionView,
    st: RolloutState,
    now: float,
    checks: CheckResult | None,
    hooks: HookResult | None,
) -> Plan:
    weights = rollout.weights()
    step = min(st.step, len(weights) - 1)
    weight = weights[step]
    if canary.ready is False:
        return _rollback(st, now, f"canary revision failed: {canary.ready_message}")
    if not st.shifted:
        return _prepare(rollout, obs, canary, st, weight, now, hooks)
    if obs.canary_percent != weight:
        return Plan(canary_percent=weight, hold=True, again=True)
    if st.last_check_at is not None and now - st.last_check_at < rollout.analysis.interval_seconds:
        return Plan(hold=True, idle="next check not due")
    cold = is_cold(canary)
    if cold:
        since = st.paused_since if st.paused_since is not None else now
        if now - since >= rollout.progress_deadline_seconds:
            why = f"canary cold for {now - since:.0f}s ({cold})"
            return _rollback(st, now, why)
        notes: tuple[Note, ...] = ()
        if st.paused_since is None:
            notes = (Note("RolloutAnalysisPaused", f"{canary.name} {cold}: checks paused"),)
        new = st.but(last_check_at=now, paused_since=since)
        return Plan(state=new, hold=True, check="paused", notes=notes)
    if checks is None:
        return Plan(hold=True, need="analysis")
    failed = []
    missing = []
    for m in rollout.analysis.metrics:
        value = checks.values.get(m.name)
        if value is None or not math.isfinite(value):
            missing.append(m.name)
        elif not m.passes(value):
            lo = "-inf" if m.min is None else f"{m.min:g}"
            hi = "inf" if m.max is None else f"{m.max:g}"
            failed.append(f"{m.name} {value:g} outside [{lo}, {hi}]")
    base = st.but(last_check_at=now, paused_since=None)
    if failed:
        count = st.failed + 1
        threshold = rollout.analysis.failed_checks
        why = "; ".join(failed)
        if count >= threshold:
            why = f"{count} failed checks: {why}"
            return _rollback(base.but(failed=count), now, why, "failed")
        note = Note(
            "RolloutCheckFailed",
            f"step {step + 1} ({weight}%): {why} ({count}/{threshold} failed checks)",
            warning=True,
        )
        return Plan(state=base.but(failed=count), hold=True, check="failed", notes=(note,))
    if missing:
        note = Note(
            "RolloutCheckInconclusive",
            f"step {step + 1} ({weight}%): no value for {', '.join(missing)}; not counted",
        )
        return Plan(state=base, hold=True, check="inconclusive", notes=(note,))
    passed = st.passed + 1
    if passed < rollout.checks_per_step():
        return Plan(state=base.but(passed=passed), hold=True, check="passed")
    if step + 1 >= len(weights):
        plan = _promote(base.but(passed=passed), now)
        return Plan(state=plan.state, hold=False, again=True, check="passed", notes=plan.notes)
    nxt = base.but(
        step=step + 1, shifted=False, passed=0, hooks_done=False, started_at=now, last_check_at=None
    )
    note = Note("RolloutStepPassed", f"step {step + 1} ({weight}%) passed {passed} checks")
    return Plan(state=nxt, hold=True, again=True, check="passed", notes=(note,))


def _prepare(
    rollout: Rollout,
    obs: Observed,
    canary: RevisionView,
    st: RolloutState,
    weight: int,
    now: float,
    hooks: HookResult | None,
) -> Plan:
    stable = obs.stable
    assert stable is not None
    if now - st.started_at >= rollout.progress_deadline_seconds:
        deadline = rollout.progress_deadline_seconds
        why = f"canary capacity for {weight}% not ready within {deadline:g}s"
        return _rollback(st, now, why)
    serving = serving_replicas(stable, canary, obs.canary_percent)
    need = prescale_replicas(serving, weight, rollout.max_canary_replicas)
    if _int(canary.min_scale) < need:
        note = Note(
            "RolloutPreScaling",
            f"{canary.name} min-scale {canary.min_scale or 'unset'} -> {need} before {weight}% "
            f"({serving} replicas serving now)",
        )
        return Plan(min_scale=str(need), hold=True, again=True, notes=(note,))
    ready = canary.actual or 0
    if ready < need or is_cold(canary):
        return Plan(hold=True, idle=f"waiting for {need} canary replicas ({ready} ready)")
    if rollout.webhooks and not st.hooks_done:
        if st.last_check_at is not None and (
            now - st.last_check_at < rollout.analysis.interval_seconds
        ):
            return Plan(hold=True, idle="webhooks retried at the next check")
        if hooks is None:
            return Plan(hold=True, need="webhooks")
        if not hooks.ok:
            count = st.failed + 1
            threshold = rollout.analysis.failed_checks
            new = st.but(failed=count, last_check_at=now)
            if count >= threshold:
                why = f"{count} failed checks: {hooks.detail}"
                return _rollback(new, now, why, "failed")
            note = Note(
                "RolloutWebhookFailed",
                f"before {weight}%: {hooks.detail} ({count}/{threshold} failed checks)",
                warning=True,
            )
            return Plan(state=new, hold=True, check="failed", notes=(note,))
        st = st.but(hooks_done=True)
    new = st.but(shifted=True, started_at=now, passed=0, last_check_at=now, paused_since=None)
    note = Note(
        "RolloutStepShifted",
        f"step {st.step + 1}/{len(rollout.weights())}: {weight}% to {canary.name}, "
        f"{100 - weight}% to {st.stable}",
    )
    return Plan(state=new, canary_percent=weight, hold=True, again=True, notes=(note,))
