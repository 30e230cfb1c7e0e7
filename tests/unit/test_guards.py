"""The shared guard chain: every guard, its exact effect and the GuardAction it records."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import GuardAction, Proposal
from autoscaler.core.windows import SignalWindow
from autoscaler.policy.guards import (
    Guards,
    GuardState,
    TimeWindow,
    TokenLimits,
    apply_guards,
    apply_token_guards,
)

SIG = "load"
REQ = (SIG,)

# Guards with every delaying guard off, so one test can switch on exactly the guard it checks.
QUIET: dict[str, Any] = {
    "minReplicas": 0,
    "maxReplicas": 100,
    "stabilization": {"upSeconds": 0, "downSeconds": 0},
    "holdWhileScaling": {"enabled": False},
    "restartHoldSeconds": 0,
    "scaleToZero": {"idleSeconds": 0, "graceSeconds": 0},
}


def guards(**over: Any) -> Guards:
    return Guards.model_validate({**QUIET, **over})


def window(*samples: tuple[float, float]) -> SignalWindow:
    w = SignalWindow(3600)
    for ts, v in samples:
        w.add(ts, v)
    return w


def snap(
    now: float,
    current: int,
    *,
    signal_ts: float | None = None,
    ready: int | None = None,
    starting: int = 0,
    cold_start_s: float | None = None,
    hold_nonzero: bool = False,
) -> Snapshot:
    """A snapshot whose one required signal was last seen at ``signal_ts`` (default: now)."""
    ts = now if signal_ts is None else signal_ts
    windows = {SIG: window((ts, 1.0))} if ts != -1 else {}
    return Snapshot(
        "ns/t",
        now,
        current,
        current if ready is None else ready,
        starting,
        windows,
        cold_start_s,
        hold_nonzero,
    )


def run(
    g: Guards,
    st: GuardState,
    now: float,
    current: int,
    replicas: int | None,
    **kw: Any,
) -> tuple[int, bool, list[GuardAction]]:
    return apply_guards(g, st, snap(now, current, **kw), Proposal(replicas), REQ)


def named(actions: Iterable[GuardAction]) -> list[str]:
    return [a.guard for a in actions]


def follow(
    g: Guards,
    start: int,
    times: Iterable[float],
    proposal: Callable[[float], int | None],
    **kw: Any,
) -> dict[float, int]:
    """Drive the chain with current following each decision; returns {time: replicas}."""
    current = start
    out: dict[float, int] = {}
    st: GuardState | None = None
    for t in times:
        st = st or GuardState(t)
        current, _, _ = run(g, st, t, current, proposal(t), **kw)
        out[t] = current
    return out


# -- 0. the plain path ----------------------------------------------------------------------------


def test_no_guard_changes_an_in_bounds_proposal() -> None:
    final, ok, actions = run(guards(), GuardState(0), 0, 3, 5)
    assert (final, ok, actions) == (5, True, [])


def test_guard_order_and_every_clip_recorded() -> None:
    g = guards(maxReplicas=6, stepUp={"pods": 4, "periodSeconds": 60})
    final, ok, actions = run(g, GuardState(0), 0, 1, 50)
    assert final == 5
    assert ok is True
    assert actions == [
        GuardAction("stepUp", 50, 5, "at most 5 within 60s"),
    ]
    final, _, actions = run(
        guards(maxReplicas=6, stepUp={"pods": 10, "periodSeconds": 60}), GuardState(0), 0, 1, 50
    )
    assert final == 6
    assert actions == [
        GuardAction("stepUp", 50, 11, "at most 11 within 60s"),
        GuardAction("bounds", 11, 6, "maxReplicas 6"),
    ]


# -- 1. fallback ---------------------------------------------------------------------------------


def test_stale_signal_holds_current_when_nothing_good_is_known() -> None:
    final, ok, actions = run(guards(), GuardState(0), 100, 3, 0, signal_ts=30)
    assert (final, ok) == (3, False)
    assert actions == [GuardAction("fallback", 0, 3, "stale or missing signals: load")]


def test_staleness_boundary_is_max_signal_age_inclusive() -> None:
    g = guards(fallback={"maxSignalAgeSeconds": 60})
    assert run(g, GuardState(0), 100, 3, 7, signal_ts=40) == (7, True, [])
    final, ok, _ = run(g, GuardState(0), 100, 3, 7, signal_ts=39.5)
    assert (final, ok) == (3, False)


def test_missing_signal_is_stale() -> None:
    final, ok, actions = run(guards(), GuardState(0), 0, 2, 9, signal_ts=-1)
    assert (final, ok) == (2, False)
    assert actions == [GuardAction("fallback", 9, 2, "stale or missing signals: load")]


def test_no_proposal_holds_the_last_good_count() -> None:
    g = guards()
    st = GuardState(0)
    assert run(g, st, 0, 3, 5)[0] == 5
    final, ok, actions = run(g, st, 15, 4, None)
    assert (final, ok) == (5, False)
    assert actions == [GuardAction("fallback", None, 5, "no valid proposal")]


def test_fallback_replicas_mode_uses_the_configured_count() -> None:
    g = guards(minReplicas=1, fallback={"mode": "replicas", "replicas": 4})
    st = GuardState(0)
    assert run(g, st, 0, 2, 8)[0] == 8
    final, ok, actions = run(g, st, 100, 8, 8, signal_ts=0)
    assert (final, ok) == (4, False)
    assert actions[0] == GuardAction("fallback", 8, 4, "stale or missing signals: load")
    # Judgment call kept: the configured count applies from zero too (as KEDA's fallback does).
    assert run(g, GuardState(0), 0, 0, None)[0] == 4


def test_missing_data_never_takes_a_running_target_to_zero() -> None:
    g = guards()
    st = GuardState(0)
    assert run(g, st, 0, 0, 0)[0] == 0  # last good is 0
    # Something else started 2 replicas; then the signal goes missing: hold 2, not 0.
    final, ok, actions = run(g, st, 200, 2, 0, signal_ts=0)
    assert (final, ok) == (2, False)
    assert actions == [GuardAction("fallback", 0, 2, "stale or missing signals: load")]
    final, _, _ = run(g, st, 215, 2, None)
    assert final == 2


def test_missing_data_at_zero_stays_at_zero_or_min() -> None:
    assert run(guards(), GuardState(0), 0, 0, None) == (
        0,
        False,
        [GuardAction("fallback", None, 0, "no valid proposal")],
    )
    final, _, actions = run(guards(minReplicas=1), GuardState(0), 0, 0, None)
    assert final == 1
    assert named(actions) == ["fallback", "bounds"]


def test_fallback_hold_is_never_recorded_as_a_good_count() -> None:
    g = guards()
    st = GuardState(0)
    run(g, st, 0, 1, 6)
    run(g, st, 100, 6, 2, signal_ts=0)  # stale: holds 6
    assert st.last_good == 6
    run(g, st, 101, 6, 3)
    assert st.last_good == 3


# -- 2. restart hold -----------------------------------------------------------------------------


def test_restart_hold_blocks_scale_down_only_in_the_first_seconds() -> None:
    g = guards(restartHoldSeconds=60)
    st = GuardState(1000)
    assert run(g, st, 1000, 5, 2) == (
        5,
        True,
        [GuardAction("restart", 2, 5, "no scale-down in the first 60s")],
    )
    assert run(g, st, 1059.5, 5, 2)[0] == 5
    assert run(g, st, 1030, 5, 9) == (9, True, [])  # scale-up passes
    assert run(g, st, 1060, 9, 2) == (2, True, [])


# -- 3. hold while scaling -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "starting", "proposal", "expected", "held"),
    [
        (4, 2, 5, 4, True),  # ceil(4 x 1.25) = 5: within the margin
        (4, 2, 6, 6, False),  # past the margin
        (4, 0, 5, 5, False),  # nothing starting
        (0, 2, 1, 1, False),  # from zero always
        (4, 2, 3, 3, False),  # not a scale-up
        (10, 1, 13, 10, True),  # ceil(12.5) = 13
        (10, 1, 14, 14, False),
    ],
)
def test_hold_while_scaling(
    current: int, starting: int, proposal: int, expected: int, held: bool
) -> None:
    g = guards(holdWhileScaling={"enabled": True, "growthMargin": 0.25})
    final, _, actions = run(g, GuardState(0), 0, current, proposal, starting=starting)
    assert final == expected
    assert named(actions) == (["holdWhileScaling"] if held else [])
    if held:
        assert actions[0].before == proposal
        assert actions[0].after == current
        assert actions[0].reason == (
            f"{starting} replicas still starting; proposal within 0.25 of {current}"
        )


def test_hold_while_scaling_disabled() -> None:
    g = guards(holdWhileScaling={"enabled": False})
    assert run(g, GuardState(0), 0, 4, 5, starting=3) == (5, True, [])


# -- 4. stabilization ----------------------------------------------------------------------------


def test_stabilization_down_holds_the_window_max() -> None:
    g = guards(stabilization={"upSeconds": 0, "downSeconds": 300})
    st = GuardState(0)
    assert run(g, st, 0, 10, 10)[0] == 10
    final, _, actions = run(g, st, 100, 10, 2)
    assert final == 10
    assert actions == [GuardAction("stabilization", 2, 10, "recommendations over the last 300s")]
    assert run(g, st, 200, 10, 6)[0] == 10
    # The 10 recorded at t=0 leaves the window at t=300 (age 300 is out, as the HPA counts).
    assert run(g, st, 299, 10, 2)[0] == 10
    assert run(g, st, 300, 10, 2)[0] == 6
    assert run(g, st, 500, 6, 2)[0] == 2


def test_stabilization_up_holds_the_window_min() -> None:
    g = guards(stabilization={"upSeconds": 60, "downSeconds": 0})
    st = GuardState(0)
    assert run(g, st, 0, 2, 2)[0] == 2
    final, _, actions = run(g, st, 30, 2, 8)
    assert final == 2
    assert actions == [GuardAction("stabilization", 8, 2, "recommendations over the last 60s")]
    assert run(g, st, 45, 2, 5)[0] == 2
    assert run(g, st, 60, 2, 8)[0] == 5  # min over (0, 60]: 8, 5, 8
    assert run(g, st, 105, 5, 8)[0] == 8


def _stabilized_run(step: float) -> dict[float, int]:
    g = guards(stabilization={"upSeconds": 120, "downSeconds": 300})
    # Up to 10 at t > 60, back to 2 at t > 600.
    return follow(
        g,
        2,
        [i * step for i in range(int(1200 / step) + 1)],
        lambda t: 2 if t <= 60 else (10 if t <= 600 else 2),
    )


def test_stabilization_is_measured_in_seconds_not_ticks() -> None:
    fine = _stabilized_run(1.0)
    coarse = _stabilized_run(15.0)
    # Up: the last 2 (t=60) leaves the 120 s up window at t=180. Down: the last 10 (t=600)
    # leaves the 300 s down window at t=900. Both tick rates agree at every shared time.
    assert fine[179.0] == 2 and fine[180.0] == 10
    assert fine[899.0] == 10 and fine[900.0] == 2
    assert coarse[165.0] == 2 and coarse[180.0] == 10
    assert coarse[885.0] == 10 and coarse[900.0] == 2
    assert {t: v for t, v in fine.items() if t in coarse} == coarse


def test_stabilization_ignores_fallback_values() -> None:
    g = guards(stabilization={"upSeconds": 0, "downSeconds": 300})
    st = GuardState(0)
    run(g, st, 0, 1, 2)
    # A fallback to a configured 9 is not a recommendation: it must not hold a later drop.
    g9 = guards(
        stabilization={"upSeconds": 0, "downSeconds": 300},
        fallback={"mode": "replicas", "replicas": 9},
    )
    assert run(g9, st, 100, 2, 2, signal_ts=0)[0] == 9
    assert run(g9, st, 101, 9, 3)[0] == 3


# -- 5. step limits -------------------------------------------------------------------------------


def test_step_up_pods_per_period() -> None:
    g = guards(stepUp={"pods": 2, "periodSeconds": 60})
    st = GuardState(0)
    final, _, actions = run(g, st, 0, 2, 10)
    assert final == 4
    assert actions == [GuardAction("stepUp", 10, 4, "at most 4 within 60s")]
    assert run(g, st, 30, 4, 10)[0] == 4  # +2 already used in (−30, 30]
    assert run(g, st, 59.9, 4, 10)[0] == 4
    assert run(g, st, 60, 4, 10)[0] == 6  # the t=0 event is 60 s old: out of the period
    assert run(g, st, 120, 6, 10)[0] == 8


def test_step_up_percent_and_select() -> None:
    g = guards(stepUp={"percent": 100, "periodSeconds": 15})
    assert run(g, GuardState(0), 0, 3, 50)[0] == 6
    g = guards(stepUp={"percent": 50, "pods": 4, "periodSeconds": 15})
    assert run(g, GuardState(0), 0, 3, 50)[0] == 7  # Max(3+4, ceil(4.5))
    assert run(g, GuardState(0), 0, 20, 50)[0] == 30  # Max(24, 30)
    g = guards(stepUp={"percent": 50, "pods": 4, "periodSeconds": 15, "select": "Min"})
    assert run(g, GuardState(0), 0, 20, 50)[0] == 24
    g = guards(stepUp={"select": "Disabled"})
    final, _, actions = run(g, GuardState(0), 0, 3, 50)
    assert final == 3
    assert actions == [GuardAction("stepUp", 50, 3, "at most 3 within 60s")]


def test_step_down_pods_and_percent() -> None:
    g = guards(stepDown={"pods": 1, "periodSeconds": 120})
    st = GuardState(0)
    final, _, actions = run(g, st, 0, 10, 2)
    assert final == 9
    assert actions == [GuardAction("stepDown", 2, 9, "at least 9 within 120s")]
    assert run(g, st, 60, 9, 2)[0] == 9
    assert run(g, st, 120, 9, 2)[0] == 8
    g = guards(stepDown={"percent": 25, "periodSeconds": 60})
    st = GuardState(0)
    assert run(g, st, 0, 8, 1)[0] == 6  # trunc(8 x 0.75)
    assert run(g, st, 30, 6, 1)[0] == 6  # start of period is 8 again
    assert run(g, st, 60, 6, 1)[0] == 4  # trunc(6 x 0.75)


def test_step_up_never_scales_down_when_current_lags_decisions() -> None:
    # The actuator has not applied the last scale-up yet: current still reads 10 while the +10
    # event is in the period. The limit nets to 0, but a scale-up guard must not go below current.
    g = guards(minReplicas=1, stepUp={"percent": 100, "periodSeconds": 15})
    st = GuardState(0)
    assert run(g, st, 0, 10, 20)[0] == 20
    final, _, actions = run(g, st, 5, 10, 20)
    assert final == 10
    assert actions == [GuardAction("stepUp", 20, 10, "at most 10 within 15s")]


def test_step_down_never_scales_up_when_current_lags_decisions() -> None:
    g = guards(minReplicas=1, stepDown={"percent": 10, "periodSeconds": 60})
    st = GuardState(0)
    assert run(g, st, 0, 30, 1)[0] == 27
    # Someone scaled to 12 meanwhile; start of period nets to 15, trunc(15 x 0.9) = 13 > 12.
    final, _, _ = run(g, st, 10, 12, 1)
    assert final == 12


def test_step_periods_do_not_shorten_each_other() -> None:
    # A short stepDown period must not drop the scale-up events the longer stepUp period counts.
    g = guards(stepUp={"pods": 2, "periodSeconds": 60}, stepDown={"pods": 1, "periodSeconds": 5})
    st = GuardState(0)
    assert run(g, st, 0, 2, 10)[0] == 4
    assert run(g, st, 10, 4, 3)[0] == 3
    # In (−40, 20]: +2 and −1, so the period started at 2 and allows at most 4.
    assert run(g, st, 20, 3, 10)[0] == 4


def test_scale_events_do_not_accumulate_without_step_rules() -> None:
    g = guards()
    st = GuardState(0)
    current = 1
    for i in range(1000):
        current, _, _ = run(g, st, float(i), current, 1 + i % 2 * 5)
    assert len(st.up_events) + len(st.down_events) <= 2


@pytest.mark.parametrize(
    "rule",
    [
        {"pods": 1, "periodSeconds": 0.5},
        {"pods": 1, "periodSeconds": 1801},
        {"percent": 0.5},
        {"percent": 12.5},
        {},
    ],
)
def test_step_rules_that_the_hpa_math_cannot_take_are_config_errors(rule: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        guards(stepUp=rule)


# -- 6. bounds -----------------------------------------------------------------------------------


def test_bounds() -> None:
    assert run(guards(maxReplicas=10), GuardState(0), 0, 5, 50) == (
        10,
        True,
        [GuardAction("bounds", 50, 10, "maxReplicas 10")],
    )
    assert run(guards(minReplicas=2), GuardState(0), 0, 5, 0) == (
        2,
        True,
        [GuardAction("bounds", 0, 2, "minReplicas 2")],
    )


def test_bounds_are_validated() -> None:
    with pytest.raises(ValidationError, match=r"maxReplicas \(2\) must be >= minReplicas \(4\)"):
        guards(minReplicas=4, maxReplicas=2)
    with pytest.raises(ValidationError, match=r"fallback\.replicas \(9\) must be within"):
        guards(maxReplicas=5, fallback={"mode": "replicas", "replicas": 9})
    with pytest.raises(ValidationError, match=r"needs fallback\.replicas"):
        guards(fallback={"mode": "replicas"})


# -- 7. scale to zero ----------------------------------------------------------------------------


def _zero_run(step: float) -> dict[float, int]:
    g = guards(scaleToZero={"idleSeconds": 300, "graceSeconds": 30})
    return follow(
        g, 3, [i * step for i in range(int(600 / step) + 1)], lambda t: 0 if t >= 60 else 3
    )


def test_scale_to_zero_after_idle_plus_grace() -> None:
    g = guards(scaleToZero={"idleSeconds": 300, "graceSeconds": 30})
    st = GuardState(0)
    final, _, actions = run(g, st, 0, 3, 0)
    assert final == 1
    assert actions == [GuardAction("scaleToZero", 0, 1, "idle 0s of the 330s required")]
    final, _, actions = run(g, st, 329, 1, 0)
    assert final == 1
    assert actions[0].reason == "idle 329s of the 330s required"
    assert run(g, st, 330, 1, 0) == (0, True, [])
    assert run(g, st, 400, 0, 0) == (0, True, [])


@pytest.mark.parametrize("step", [1.0, 15.0])
def test_scale_to_zero_is_timed_in_seconds(step: float) -> None:
    out = _zero_run(step)
    assert out[60.0] == 1
    assert out[375.0] == 1
    assert out[390.0] == 0
    first_zero = min(t for t, v in out.items() if v == 0)
    assert first_zero == 390.0


def test_a_non_zero_proposal_restarts_the_idle_clock() -> None:
    g = guards(scaleToZero={"idleSeconds": 100, "graceSeconds": 0})
    st = GuardState(0)
    run(g, st, 0, 1, 0)
    run(g, st, 50, 1, 1)
    assert run(g, st, 100, 1, 0)[0] == 1
    assert run(g, st, 199, 1, 0)[0] == 1
    assert run(g, st, 200, 1, 0)[0] == 0


def test_a_stale_gap_restarts_the_idle_clock() -> None:
    # Idle is what was seen: a period without fresh data is not idle time.
    g = guards(
        scaleToZero={"idleSeconds": 100, "graceSeconds": 0}, fallback={"maxSignalAgeSeconds": 30}
    )
    st = GuardState(0)
    assert run(g, st, 0, 1, 0)[0] == 1
    assert run(g, st, 60, 1, 0, signal_ts=0)[0] == 1  # stale
    assert run(g, st, 120, 1, 0)[0] == 1  # fresh again: idle from 120
    assert run(g, st, 219, 1, 0)[0] == 1
    assert run(g, st, 220, 1, 0)[0] == 0


def test_no_proposal_restarts_the_idle_clock() -> None:
    g = guards(scaleToZero={"idleSeconds": 100, "graceSeconds": 0})
    st = GuardState(0)
    run(g, st, 0, 1, 0)
    assert run(g, st, 50, 1, None)[0] == 1
    assert run(g, st, 100, 1, 0)[0] == 1
    assert run(g, st, 200, 1, 0)[0] == 0


def test_zero_needs_min_replicas_zero() -> None:
    g = guards(minReplicas=1, scaleToZero={"idleSeconds": 0, "graceSeconds": 0})
    final, _, actions = run(g, GuardState(0), 0, 3, 0)
    assert final == 1
    assert named(actions) == ["bounds"]


def test_cold_start_bound_blocks_zero() -> None:
    g = guards(scaleToZero={"idleSeconds": 0, "graceSeconds": 0, "maxColdStartSeconds": 30})
    final, _, actions = run(g, GuardState(0), 0, 2, 0, cold_start_s=45)
    assert final == 1
    assert actions == [GuardAction("scaleToZero", 0, 1, "measured cold start 45s exceeds 30s")]
    assert run(g, GuardState(0), 0, 2, 0, cold_start_s=30)[0] == 0
    # Judgment call kept: a cold start never measured does not block.
    assert run(g, GuardState(0), 0, 2, 0, cold_start_s=None)[0] == 0


def test_rollout_in_progress_blocks_zero() -> None:
    g = guards()
    final, _, actions = run(g, GuardState(0), 0, 2, 0, hold_nonzero=True)
    assert final == 1
    assert actions == [GuardAction("scaleToZero", 0, 1, "a rollout is in progress")]
    # Already at zero: hold_nonzero does not start anything.
    assert run(g, GuardState(0), 0, 0, 0, hold_nonzero=True)[0] == 0


def test_at_zero_a_zero_proposal_needs_no_checks() -> None:
    g = guards(scaleToZero={"idleSeconds": 300, "graceSeconds": 30, "maxColdStartSeconds": 1})
    assert run(g, GuardState(0), 0, 0, 0, cold_start_s=100) == (0, True, [])


def _utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_protected_window_in_a_time_zone_blocks_zero() -> None:
    berlin = {
        "days": ["mon", "tue", "wed", "thu", "fri"],
        "start": "08:00",
        "end": "18:00",
        "timezone": "Europe/Berlin",
    }
    g = guards(scaleToZero={"idleSeconds": 0, "graceSeconds": 0, "protectedWindows": [berlin]})
    # Monday 2024-01-08, CET (UTC+1): 07:30 UTC is 08:30 local.
    final, _, actions = run(g, GuardState(0), _utc(2024, 1, 8, 7, 30), 2, 0)
    assert final == 1
    assert actions == [
        GuardAction("scaleToZero", 0, 1, "protected window 08:00-18:00 Europe/Berlin")
    ]
    assert run(g, GuardState(0), _utc(2024, 1, 8, 6, 59), 2, 0)[0] == 0  # 07:59 local
    assert run(g, GuardState(0), _utc(2024, 1, 8, 17, 0), 2, 0)[0] == 0  # 18:00 local, exclusive
    assert run(g, GuardState(0), _utc(2024, 1, 8, 16, 59), 2, 0)[0] == 1
    assert run(g, GuardState(0), _utc(2024, 1, 6, 10, 0), 2, 0)[0] == 0  # Saturday
    # Summer time (CEST, UTC+2): 06:30 UTC is 08:30 local.
    assert run(g, GuardState(0), _utc(2024, 7, 1, 6, 30), 2, 0)[0] == 1
    assert run(g, GuardState(0), _utc(2024, 7, 1, 5, 30), 2, 0)[0] == 0


@pytest.mark.parametrize(
    ("when", "inside"),
    [
        ((2024, 1, 12, 21, 59), False),  # Fri 21:59
        ((2024, 1, 12, 22, 0), True),  # Fri 22:00, start inclusive
        ((2024, 1, 12, 23, 59), True),
        ((2024, 1, 13, 0, 0), True),  # Sat 00:00: the morning part of Friday's span
        ((2024, 1, 13, 5, 59), True),
        ((2024, 1, 13, 6, 0), False),  # end exclusive
        ((2024, 1, 12, 3, 0), False),  # Fri morning belongs to Thursday's span (not listed)
        ((2024, 1, 13, 22, 30), False),  # Sat evening: Saturday not listed
        ((2024, 1, 14, 1, 0), False),  # Sun morning: Saturday not listed
    ],
)
def test_protected_window_over_midnight(when: tuple[int, ...], inside: bool) -> None:
    w = TimeWindow.model_validate({"days": ["fri"], "start": "22:00", "end": "06:00"})
    assert w.contains(_utc(*when)) is inside


def test_protected_window_over_midnight_in_a_zone() -> None:
    # 22:00-06:00 New York on Sundays; 2024-03-10 is the day clocks go forward (EST -> EDT).
    w = TimeWindow.model_validate(
        {"days": ["sun"], "start": "22:00", "end": "06:00", "timezone": "America/New_York"}
    )
    assert w.contains(_utc(2024, 3, 11, 2, 0)) is True  # Sun 22:00 EDT
    assert w.contains(_utc(2024, 3, 11, 1, 59)) is False  # Sun 21:59 EDT
    assert w.contains(_utc(2024, 3, 11, 9, 59)) is True  # Mon 05:59 EDT
    assert w.contains(_utc(2024, 3, 11, 10, 0)) is False  # Mon 06:00 EDT
    assert w.contains(_utc(2024, 3, 4, 3, 0)) is True  # Sun 22:00 EST, a week earlier


def test_protected_window_whole_day_and_validation() -> None:
    w = TimeWindow.model_validate({"days": ["wed"], "start": "00:00", "end": "24:00"})
    assert w.contains(_utc(2024, 1, 10, 0, 0)) is True
    assert w.contains(_utc(2024, 1, 10, 23, 59)) is True
    assert w.contains(_utc(2024, 1, 11, 0, 0)) is False
    assert (
        TimeWindow.model_validate({"start": "00:00", "end": "01:00", "timezone": "utc"}).timezone
        == "UTC"
    )
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        TimeWindow.model_validate({"start": "00:00", "end": "01:00", "timezone": "Mars/Olympus"})
    with pytest.raises(ValidationError):
        TimeWindow.model_validate({"start": "24:00", "end": "01:00"})
    with pytest.raises(ValidationError):
        TimeWindow.model_validate({"start": "9:00", "end": "17:00"})
    with pytest.raises(ValidationError):
        TimeWindow.model_validate({"days": ["monday"], "start": "09:00", "end": "17:00"})


def test_blockers_are_checked_in_order() -> None:
    g = guards(scaleToZero={"idleSeconds": 10, "graceSeconds": 0, "maxColdStartSeconds": 1})
    _, _, actions = run(g, GuardState(0), 0, 2, 0, hold_nonzero=True, cold_start_s=5)
    assert actions[-1].reason == "a rollout is in progress"
    _, _, actions = run(g, GuardState(0), 0, 2, 0, cold_start_s=5)
    assert actions[-1].reason == "idle 0s of the 10s required"


# -- token-rate guards ---------------------------------------------------------------------------


def limits(**kw: Any) -> TokenLimits:
    return TokenLimits.model_validate(kw)


def test_no_token_limits_pass_the_proposal_through() -> None:
    st = GuardState(0)
    assert apply_token_guards(None, st, 0, 1234.0, True) == (1234.0, [])
    assert apply_token_guards(None, st, 0, None, False) == (None, [])
    assert st.last_token_rate is None


def test_token_floor_and_ceiling() -> None:
    t = limits(floor=500, ceiling=8000)
    assert apply_token_guards(t, GuardState(0), 0, 100.0, True) == (
        500.0,
        [GuardAction("tokenFloor", 100.0, 500.0, "floor 500 tokens/s")],
    )
    assert apply_token_guards(t, GuardState(0), 0, 9000.0, True) == (
        8000.0,
        [GuardAction("tokenCeiling", 9000.0, 8000.0, "ceiling 8000 tokens/s")],
    )
    assert apply_token_guards(t, GuardState(0), 0, 4000.0, True) == (4000.0, [])
    with pytest.raises(ValidationError, match=r"ceiling \(10.0\) must be >= floor \(20.0\)"):
        limits(floor=20, ceiling=10)


def test_token_slew_is_relative_per_second() -> None:
    t = limits(maxIncreasePerSecond=0.1, maxDecreasePerSecond=0.25)
    st = GuardState(0)
    assert apply_token_guards(t, st, 0, 1000.0, True) == (1000.0, [])
    rate, actions = apply_token_guards(t, st, 2, 2000.0, True)
    assert rate == pytest.approx(1200.0)
    assert [a.guard for a in actions] == ["tokenSlew"]
    assert actions[0].reason == "increase rate limit"
    rate, actions = apply_token_guards(t, st, 4, 100.0, True)
    assert rate == pytest.approx(600.0)  # 1200 x (1 - 0.25 x 2)
    assert actions[0].reason == "decrease rate limit"
    # Long enough for the bottom to reach 0: the proposal passes.
    assert apply_token_guards(t, st, 10, 100.0, True) == (100.0, [])


def test_token_limit_holds_on_stale_signals() -> None:
    t = limits()
    st = GuardState(0)
    apply_token_guards(t, st, 0, 3000.0, True)
    assert apply_token_guards(t, st, 15, 500.0, False) == (3000.0, [])
    assert apply_token_guards(t, st, 30, 500.0, True) == (500.0, [])
    # Nothing known at all: no limit.
    assert apply_token_guards(t, GuardState(0), 0, None, False) == (None, [])


def test_token_slew_skipped_from_zero() -> None:
    t = limits(maxIncreasePerSecond=0.1)
    st = GuardState(0)
    apply_token_guards(t, st, 0, 0.0, True)
    assert apply_token_guards(t, st, 1, 5000.0, True) == (5000.0, [])
