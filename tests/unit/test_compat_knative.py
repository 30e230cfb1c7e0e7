"""Tests for the exact port of Knative's KPA decider (``autoscaler/policy/compat/knative.py``).

Most cases are ports of upstream ``knative/serving`` ``pkg/autoscaler/scaling/autoscaler_test.go``
(test names kept in the docstrings). Upstream compares EBC with a +-1 tolerance because its
``expectedEBC`` helper computes in a different order; here every EBC is the exact integer that the
decider's own float64 formula gives (``floor(R0 * total - TBC - P)``), worked out by hand in the
comments.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.policy.compat.knative import (
    INVALID_RESULT,
    KpaDecider,
    KpaResult,
    KpaSpec,
    _to_ns,
    initial_excess_burst_capacity,
    parse_go_duration,
)

# A fixed, even epoch second: upstream's tests use time.Now(); any base works for the decider.
T0 = 1_700_000_000.0

# Upstream's test constants (autoscaler_test.go).
STABLE_WINDOW = 60.0
TARGET_UTILIZATION = 0.75
ACTIVATOR_CAPACITY = 150.0


def upstream_spec(
    target: float, tbc: float, metric: str = "concurrency", **changes: object
) -> KpaSpec:
    """``newTestAutoscalerWithScalingMetric``'s DeciderSpec: total = target / 0.75, panic 2,
    rates 10/10, activator capacity 150, stable window 60 s, reachable, no delay."""
    spec = KpaSpec(
        scaling_metric="rps" if metric == "rps" else "concurrency",
        target_value=target,
        total_value=target / TARGET_UTILIZATION,
        target_burst_capacity=tbc,
        panic_threshold=2.0,
        max_scale_up_rate=10.0,
        max_scale_down_rate=10.0,
        activator_capacity=ACTIVATOR_CAPACITY,
        stable_window=STABLE_WINDOW,
        scale_down_delay=0.0,
        reachable=True,
        activation_scale=1,
    )
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


def new_upstream_decider(target: float, tbc: float, metric: str = "concurrency") -> KpaDecider:
    """``newTestAutoscaler``: created with one ready pod, so not panicking, max_panic_pods 1."""
    return KpaDecider(upstream_spec(target, tbc, metric), T0, 1)


def ok(desired: int, ebc: int) -> KpaResult:
    return KpaResult(valid=True, desired=desired, excess_burst_capacity=ebc)


def delay_spec(reachable: bool = True, delay: float = 300.0) -> KpaSpec:
    """The spec of upstream's ``TestAutoscalerScaleDownDelay*``: target 10, rates 10, panic
    threshold 100 (never panics), 5 min delay; TBC and total unset (0) -> EBC 0."""
    return KpaSpec(
        target_value=10.0,
        total_value=0.0,
        target_burst_capacity=0.0,
        panic_threshold=100.0,
        max_scale_up_rate=10.0,
        max_scale_down_rate=10.0,
        stable_window=0.0,
        scale_down_delay=delay,
        reachable=reachable,
    )


# --------------------------------------------------------------------------------------------------
# Construction (newAutoscaler)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ready", [0, 1])
def test_start_not_in_panic_at_scale_zero_or_one(ready: int) -> None:
    """TestStartInPanicMode: 0 or 1 ready pods -> not panicking, max_panic_pods = ready."""
    d = KpaDecider(KpaSpec(), T0, ready)
    assert d.panicking is False
    assert d.panic_since is None
    assert d.max_panic_pods == ready


def test_start_in_panic_with_two_pods() -> None:
    """TestStartInPanicMode: > 1 ready pods -> panicking since creation, max_panic_pods = n0."""
    d = KpaDecider(KpaSpec(), T0, 2)
    assert d.panicking is True
    assert d.panic_since == T0
    assert d.max_panic_pods == 2


def test_new_with_unreadable_pod_count() -> None:
    """TestNewFail: a pod-count read error at creation counts as 0."""
    d = KpaDecider(KpaSpec(), T0, None)
    assert d.max_panic_pods == 0
    assert d.panicking is False


def test_restart_holds_current_scale_until_stable_window_passes() -> None:
    """C2 in knative-kpa.md: a decider created over 1 pod holds that scale on low load."""
    d = KpaDecider(KpaSpec(), T0, 10)
    # Load for 1 pod; down limit floor(10/2) = 5, but panic holds max_panic_pods = 10.
    assert d.step(T0 + 2, 10.0, 10.0, 10) == ok(10, 10 * 100 - 211 - 10)
    assert d.step(T0 + 60, 10.0, 10.0, 10) == ok(10, 779)
    # Just over 60 s after T0 the panic ends; the stable count (clamped to 5) takes over.
    assert d.step(T0 + 60.001, 10.0, 10.0, 10) == ok(5, 779)
    assert d.panicking is False
    assert d.max_panic_pods == 0


def test_delay_window_only_created_with_positive_delay() -> None:
    assert KpaDecider(KpaSpec(), T0, 0).delay_window_slots is None
    assert KpaDecider(KpaSpec(scale_down_delay=300.0), T0, 0).delay_window_slots == 150
    # ceil(5 s / 2 s) = 3 slots; ceil(0.5 s / 2 s) = 1 slot.
    assert KpaDecider(KpaSpec(scale_down_delay=5.0), T0, 0).delay_window_slots == 3
    assert KpaDecider(KpaSpec(scale_down_delay=0.5), T0, 0).delay_window_slots == 1


# --------------------------------------------------------------------------------------------------
# Invalid results
# --------------------------------------------------------------------------------------------------


def test_no_data_no_autoscale() -> None:
    """TestAutoscalerNoDataNoAutoscale: a metric error -> ScaleResult{0, 0, false}."""
    d = new_upstream_decider(10, 100)
    assert d.step(T0, None, None, 1) == INVALID_RESULT
    assert d.step(T0, None, None, 1) == KpaResult(valid=False, desired=0, excess_burst_capacity=0)


@pytest.mark.parametrize(("stable", "panic"), [(None, 5.0), (5.0, None)])
def test_either_metric_missing_is_invalid(stable: float | None, panic: float | None) -> None:
    d = new_upstream_decider(10, 100)
    assert d.step(T0, stable, panic, 1) == INVALID_RESULT


def test_cant_count_pods() -> None:
    """TestCantCountPods: a ready-count read error (other than not-found) -> invalid."""
    d = new_upstream_decider(10, 81)
    assert d.step(T0, 1000.0, 888.0, None) == INVALID_RESULT


def test_endpoints_not_found_uses_one_pod_as_minimum() -> None:
    """TestAutoscalerUseOnePodAsMinimumIfEndpointsNotFound: not-found is passed as 0 ready pods;
    rate limits use 1 pod (up limit 10), EBC uses 0 pods: floor(0 - 81 - 888) = -969."""
    d = new_upstream_decider(10, 81)
    assert d.step(T0, 1000.0, 888.0, 0) == ok(10, -969)


def test_invalid_tick_changes_no_state() -> None:
    """Upstream returns before touching panic state or the delay window."""
    spec = dataclasses.replace(delay_spec(), panic_threshold=2.0, stable_window=60.0)
    d = KpaDecider(spec, T0, 0)
    # Loads that would panic and fill the delay window, had the ticks been valid.
    assert d.step(T0 + 2, None, 1e6, 1) == INVALID_RESULT
    assert d.step(T0 + 2, 1e6, 1e6, None) == INVALID_RESULT
    assert (d.panic_since, d.max_panic_pods) == (None, 0)
    # The delay window saw nothing: the first valid tick is not held up by anything.
    assert d.step(T0 + 4, 0.0, 0.0, 1) == ok(0, 0)
    assert not d.panicking


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_metric_is_invalid(bad: float) -> None:
    d = new_upstream_decider(10, 100)
    assert d.step(T0, bad, 1.0, 1) == INVALID_RESULT
    assert d.step(T0, 1.0, bad, 1) == INVALID_RESULT


def test_negative_ready_pods_rejected() -> None:
    d = new_upstream_decider(10, 100)
    with pytest.raises(ValueError):
        d.step(T0, 1.0, 1.0, -1)
    with pytest.raises(ValueError):
        KpaDecider(KpaSpec(), T0, -1)


# --------------------------------------------------------------------------------------------------
# Stable mode
# --------------------------------------------------------------------------------------------------


def test_stable_mode_increase_with_concurrency_default() -> None:
    """TestAutoscalerStableModeIncreaseWithConcurrencyDefault.
    EBC = floor(1 * 13.333 - 101 - 10) = floor(-97.67) = -98."""
    d = new_upstream_decider(10, 101)
    assert d.step(T0, 50.0, 10.0, 1) == ok(5, -98)
    assert d.step(T0, 100.0, 10.0, 1) == ok(10, -98)


def test_stable_mode_increase_with_rps() -> None:
    """TestAutoscalerStableModeIncreaseWithRPS. EBC: floor(13.33-101-50) = -138,
    floor(13.33-101-99) = -187."""
    d = new_upstream_decider(10, 101, "rps")
    assert d.spec.scaling_metric == "rps"
    assert d.step(T0, 50.0, 50.0, 1) == ok(5, -138)
    assert d.step(T0, 100.0, 99.0, 1) == ok(10, -187)


def test_stable_mode_decrease() -> None:
    """TestAutoscalerStableModeDecrease: 8 pods. EBC floor(106.67-98-100) = -92, then -42."""
    d = new_upstream_decider(10, 98)
    assert d.step(T0, 100.0, 100.0, 8) == ok(10, -92)
    assert d.step(T0, 50.0, 50.0, 8) == ok(5, -42)


def test_stable_mode_no_traffic_scale_to_zero() -> None:
    """TestAutoscalerStableModeNoTrafficScaleToZero: EBC floor(13.33 - 75 - 0) = -62."""
    d = new_upstream_decider(10, 75)
    assert d.step(T0, 1.0, 0.0, 1) == ok(1, -62)
    assert d.step(T0, 0.0, 0.0, 1) == ok(0, -62)


def test_metrics_with_rps_at_61s() -> None:
    """TestAutoscalerMetricsWithRPS: ceil(100/10) = 10; EBC floor(13.33 - 100 - 99) = -186."""
    d = new_upstream_decider(10, 100, "rps")
    assert d.step(T0 + 61, 100.0, 99.0, 1) == ok(10, -186)


# TestAutoscalerScale's table. prep: optional (panic_since offset, max_panic_pods).
SCALE_TABLE = [
    # label, target, tbc, stable, panic, base_scale, spec changes, prep, want desired, want EBC
    ("NoDataAtZeroNoAutoscale", 10, 100, 0.0, 0.0, 1, {}, None, 0, -87),
    ("StableModeUnlimitedTBC", 181, -1, 21.0, 26.0, 1, {}, None, 1, -1),
    ("0TBC", 10, 0, 50.0, 49.0, 1, {}, None, 5, 0),
    ("StableModeNoChange", 10, 100, 50.0, 50.0, 1, {}, None, 5, -137),
    # Stable (50) beats panic (30) while panicking.
    ("PanicStableLargerThanPanic", 1, 100, 50.0, 30.0, 5, {}, (-5.0, 5), 50, -124),
    ("PanicStableLessThanPanic", 1, 100, 20.0, 30.0, 5, {}, (-5.0, 5), 30, -124),
    ("StableModeNoChangeAlreadyScaled", 10, 100, 50.0, 50.0, 5, {}, None, 5, -84),
    # up limit ceil(1.1 * 2) = 3 although ceil(3.1) = 4 would be wanted.
    (
        "StableModeIncreaseWithSmallScaleUpRate",
        1,
        1982,
        3.0,
        3.1,
        2,
        {"max_scale_up_rate": 1.1},
        None,
        3,
        -1983,
    ),
    # down limit floor(100 / 1.1) = 90.
    (
        "StableModeDecreaseWithSmallScaleDownRate",
        10,
        1982,
        1.0,
        1.0,
        100,
        {"max_scale_down_rate": 1.1},
        None,
        90,
        -650,
    ),
    # Unreachable: no down limit at all.
    (
        "StableModeDecreaseNonReachable",
        10,
        1982,
        1.0,
        1.0,
        100,
        {"max_scale_down_rate": 1.1, "reachable": False},
        None,
        1,
        -650,
    ),
    # 10 / 1 >= 2 -> panic; panic count wins.
    ("PanicModeDoublePodCount", 10, 84, 50.0, 100.0, 1, {}, None, 10, -171),
]


@pytest.mark.parametrize(
    ("target", "tbc", "stable", "panic", "base", "changes", "prep", "want", "want_ebc"),
    [row[1:] for row in SCALE_TABLE],
    ids=[row[0] for row in SCALE_TABLE],
)
def test_autoscaler_scale_table(
    target: float,
    tbc: float,
    stable: float,
    panic: float,
    base: int,
    changes: dict[str, object],
    prep: tuple[float, int] | None,
    want: int,
    want_ebc: int,
) -> None:
    """TestAutoscalerScale (every row of upstream's table)."""
    d = KpaDecider(upstream_spec(target, tbc, "concurrency", **changes), T0, 1)
    if prep is not None:
        d.panic_since = T0 + prep[0]
        d.max_panic_pods = prep[1]
    assert d.step(T0, stable, panic, base) == ok(want, want_ebc)


# --------------------------------------------------------------------------------------------------
# Rate limits
# --------------------------------------------------------------------------------------------------


def test_rate_limit_scale_up() -> None:
    """TestAutoscalerRateLimitScaleUp: needs 100 pods but only x10 per tick.
    EBC floor(13.33 - 61 - 1001) = -1049, floor(133.33 - 1062) = -929."""
    d = new_upstream_decider(10, 61)
    assert d.step(T0, 1000.0, 1001.0, 1) == ok(10, -1049)
    assert d.step(T0, 1000.0, 1001.0, 10) == ok(100, -929)


def test_rate_limit_scale_down() -> None:
    """TestAutoscalerRateLimitScaleDown: needs 1 pod but only /10 per tick.
    EBC floor(1333.33 - 62) = 1271, floor(133.33 - 62) = 71."""
    d = new_upstream_decider(10, 61)
    assert d.step(T0, 1.0, 1.0, 100) == ok(10, 1271)
    assert d.step(T0, 1.0, 1.0, 10) == ok(1, 71)


def test_default_rates_scale_down_by_half() -> None:
    """Default down rate 2: 9 pods may drop to floor(9/2) = 4 at most."""
    d = KpaDecider(KpaSpec(), T0, 1)
    assert d.step(T0, 0.0, 0.0, 9).desired == 4
    assert d.step(T0 + 2, 0.0, 0.0, 4).desired == 2
    assert d.step(T0 + 4, 0.0, 0.0, 1).desired == 0  # floor(1/2) = 0


# --------------------------------------------------------------------------------------------------
# Activation scale
# --------------------------------------------------------------------------------------------------


def test_activation_scale() -> None:
    """TestAutoscalerActivationScale: zero load stays 0; any load lifts to activation scale 2."""
    d = KpaDecider(upstream_spec(10, 75, activation_scale=2), T0, 1)
    assert d.step(T0, 0.0, 0.0, 1) == ok(0, -62)
    assert d.step(T0, 1.0, 0.0, 1) == ok(2, -62)


def test_activation_scale_applies_after_rate_clamp() -> None:
    """Up limit ceil(10 * 1) = 10, but activation scale 25 lifts past it."""
    d = KpaDecider(upstream_spec(10, 0, activation_scale=25), T0, 1)
    assert d.step(T0, 500.0, 1.0, 1) == ok(25, 0)


def test_activation_scale_not_applied_to_unclamped_zero_even_if_clamp_raised_it() -> None:
    """raw_stable = 0 but the down limit makes stable_pods 5: activation (7) is not applied."""
    d = KpaDecider(upstream_spec(10, 0, activation_scale=7), T0, 1)
    assert d.step(T0, 0.0, 0.0, 50) == ok(5, 0)


# --------------------------------------------------------------------------------------------------
# Panic mode
# --------------------------------------------------------------------------------------------------


def test_unpanic_after_slow_increase() -> None:
    """TestAutoscalerUnpanicAfterSlowIncrease. Target 1, total 1.333, TBC 98."""
    d = new_upstream_decider(1, 98)
    start = T0
    # 25 / 10 = 2.5 >= 2: panic. EBC floor(13.33 - 98 - 25) = -110.
    assert d.step(start, 11.0, 25.0, 10) == ok(25, -110)
    assert d.panic_since == start
    # Half a window later, 41 / 40 < 2: panic start does not move. EBC floor(53.33-98-41) = -86.
    tm = start + STABLE_WINDOW / 2
    assert d.step(tm, 30.0, 41.0, 40) == ok(41, -86)
    assert d.panic_since == start
    # Window + tick after the start: panic ends. EBC floor(73.33 - 98 - 56) = -81.
    tm = tm + STABLE_WINDOW / 2 + 2
    assert d.step(tm, 50.0, 56.0, 55) == ok(50, -81)
    assert d.panic_since is None
    assert d.panicking is False


def test_extend_panic_window() -> None:
    """TestAutoscalerExtendPanicWindow: 80 / 40 = 2 >= 2 re-arms panic_since."""
    d = new_upstream_decider(1, 98)
    assert d.step(T0, 11.0, 25.0, 10) == ok(25, -110)
    assert d.panic_since == T0
    tm = T0 + STABLE_WINDOW / 2
    assert d.step(tm, 30.0, 80.0, 40) == ok(80, -125)  # floor(53.33 - 98 - 80)
    assert d.panic_since == tm


def test_panic_mode_exponential_track_and_stabilize() -> None:
    """TestAutoscalerPanicModeExponentialTrackAndStabilize: load x6 each tick."""
    d = new_upstream_decider(1, 101)
    # 6/1 >= 2: panic. EBC floor(1.33 - 101 - 6) = -106.
    assert d.step(T0, 6.0, 6.0, 1) == ok(6, -106)
    tm = T0 + 1
    assert d.step(tm, 36.0, 36.0, 6) == ok(36, -129)  # 6 * (1/0.75) is exactly 8.0
    assert d.panic_since == tm
    tm += 1
    assert d.step(tm, 216.0, 216.0, 36) == ok(216, -269)  # floor(48 - 101 - 216)
    assert d.panic_since == tm
    assert d.step(tm, 1296.0, 1296.0, 216) == ok(1296, -1109)  # floor(288 - 101 - 1296)
    assert d.panic_since == tm
    tm += 1
    assert d.step(tm, 1296.0, 1296.0, 1296) == ok(1296, 331)  # floor(1728 - 101 - 1296)


def test_panic_then_unpanic_scale_down() -> None:
    """TestAutoscalerPanicThenUnPanicScaleDown: never scale down while panicking."""
    d = new_upstream_decider(10, 93)
    assert d.step(T0, 100.0, 100.0, 1) == ok(10, -180)  # floor(13.33 - 193)
    panic_time = T0 + 1
    assert d.step(panic_time, 100.0, 1000.0, 10) == ok(100, -960)  # floor(133.33 - 1093)
    # Traffic dropped, but still panicking: hold 100.
    assert d.step(panic_time + 30, 1.0, 1.0, 10) == ok(100, 39)  # floor(133.33 - 94)
    # After the stable window: scale down (limit floor(10 / 10) = 1).
    assert d.step(panic_time + 61, 1.0, 1.0, 10) == ok(1, 39)


def test_panic_exit_is_strict() -> None:
    """panic_since + stable_window must be strictly before now (Go's Time.Before)."""
    d = new_upstream_decider(10, 0)
    assert d.step(T0, 100.0, 100.0, 1) == ok(10, 0)  # panic
    assert d.step(T0 + 60, 10.0, 10.0, 10) == ok(10, 0)  # exactly 60 s: still panicking
    assert d.panicking
    assert d.step(T0 + 60.1, 10.0, 10.0, 10) == ok(1, 0)  # down limit floor(10/10) = 1
    assert not d.panicking


def test_panic_exit_boundary_in_nanoseconds() -> None:
    """0.1 + 60.0 vs 60.1 is decided on integer nanoseconds, as Go does: equal -> no exit."""
    spec = upstream_spec(10, 0)
    d = KpaDecider(spec, 0.0, 1)
    d.panic_since = 0.1
    d.max_panic_pods = 7
    assert d.step(60.1, 0.0, 0.0, 1) == ok(7, 0)
    assert d.panicking
    assert d.step(60.100000001, 0.0, 0.0, 1) == ok(0, 0)


def test_panic_threshold_is_inclusive_and_uses_unclamped_panic_count() -> None:
    """over = ceil(P / target) / max(1, R0) >= threshold; the clamp to the up limit is ignored."""
    spec = upstream_spec(10, 0, max_scale_up_rate=1.1, panic_threshold=2.2)
    # 11 / 5 = 2.2 exactly as a double, and 220 / 100 = 2.2 too: inclusive -> panic.
    d = KpaDecider(spec, T0, 1)
    assert d.step(T0, 0.0, 110.0, 5).desired == 6  # clamped: ceil(1.1 * 5) = 6
    assert d.panicking
    d2 = KpaDecider(spec, T0, 1)
    assert d2.step(T0, 100.0, 100.0, 5).desired == 6  # 10 / 5 = 2 < 2.2: stable 10, clamped
    assert not d2.panicking


def test_max_panic_pods_high_water_mark_is_settable() -> None:
    """Upstream tests set maxPanicPods directly; the held value is returned even if load drops."""
    d = new_upstream_decider(10, 0)
    d.panic_since = T0
    d.max_panic_pods = 42
    assert d.step(T0 + 2, 10.0, 10.0, 42) == ok(42, 0)
    assert d.max_panic_pods == 42


def test_worked_example_knative_kpa_md_section_4() -> None:
    """knative-kpa.md section 4, defaults: target 70, total 100, TBC 211, threshold 2."""
    d = KpaDecider(KpaSpec(), T0, 5)  # created over 1 pod: panicking, max_panic_pods 5
    d.panic_since = None  # start from a calm decider, as the worked example does
    d.max_panic_pods = 0
    # S = 300 -> ceil(300/70) = 5; P = 900 -> 13; 13/5 = 2.6 >= 2 -> panic, desired 13.
    # EBC = floor(5 * 100 - 211 - 900) = -611.
    assert d.step(T0, 300.0, 900.0, 5) == ok(13, -611)
    assert d.panicking
    assert d.max_panic_pods == 13
    # With 13 ready, staying over needs raw_panic >= 26, i.e. P > 25 * 70 = 1750.
    assert d.step(T0 + 2, 300.0, 1750.0, 13) == ok(25, 1300 - 211 - 1750)
    assert d.panic_since == T0  # 25 / 13 < 2: not re-armed
    assert d.step(T0 + 4, 300.0, 1751.0, 13) == ok(26, -662)  # floor(1300 - 211 - 1751)
    assert d.panic_since == T0 + 4
    # Load back to normal: output holds the high-water mark 26 ...
    assert d.step(T0 + 6, 300.0, 300.0, 26) == ok(26, 2600 - 211 - 300)
    assert d.step(T0 + 64, 300.0, 300.0, 26) == ok(26, 2089)  # exactly 60 s: still panicking
    # ... until 60 s have passed since the last over-threshold tick; then stable again,
    # no lower than floor(26 / 2) = 13 this tick.
    assert d.step(T0 + 66, 300.0, 300.0, 26) == ok(13, 2089)
    assert not d.panicking
    assert d.step(T0 + 68, 300.0, 300.0, 13) == ok(6, 1300 - 211 - 300)  # floor(13/2)=6 > 5
    assert d.step(T0 + 70, 300.0, 300.0, 6) == ok(5, 600 - 211 - 300)


# --------------------------------------------------------------------------------------------------
# Excess burst capacity
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tbc", "ready", "panic", "want"),
    [
        (0.0, 5, 100.0, 0),  # TBC 0 -> always 0
        (-1.0, 5, 100.0, -1),  # unlimited -> always -1
        (211.0, 0, 0.0, -211),  # 0 ready pods: no capacity (raw R0, not max(1, R0))
        (211.0, 3, 88.0, 1),  # 300 - 211 - 88
        (211.0, 3, 88.5, 0),  # floor(0.5)
        (211.0, 3, 89.5, -1),  # floor(-0.5) = -1, not truncation to 0
        (211.0, 2, 0.0, -11),
    ],
)
def test_excess_burst_capacity(tbc: float, ready: int, panic: float, want: int) -> None:
    d = KpaDecider(KpaSpec(target_burst_capacity=tbc), T0, 1)
    assert d.step(T0, 0.0, panic, ready).excess_burst_capacity == want


def test_initial_excess_burst_capacity() -> None:
    """multiscaler.go createScaler: status EBC before the first valid tick."""
    assert initial_excess_burst_capacity(KpaSpec()) == -111  # 1 * 100 - 211
    assert initial_excess_burst_capacity(KpaSpec(initial_scale=3)) == 89
    assert initial_excess_burst_capacity(KpaSpec(target_burst_capacity=0)) == 0
    assert initial_excess_burst_capacity(KpaSpec(target_burst_capacity=-1)) == -1
    # int32() truncates toward zero: 1 * 100.5 - 211 = -110.5 -> -110.
    assert initial_excess_burst_capacity(KpaSpec(total_value=100.5)) == -110


# --------------------------------------------------------------------------------------------------
# Scale-down delay
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", [0.0, T0])
def test_scale_down_delay_simple(base: float) -> None:
    """TestAutoscalerScaleDownDelay/simple: 0 ready pods, delay 5 min (150 slots)."""
    d = KpaDecider(delay_spec(), base, 0)
    assert d.step(base + 2, 40.0, 40.0, 0) == ok(4, 0)
    # Five minutes at zero load: less than the delay -> hold 4.
    assert d.step(base + 300, 0.0, 0.0, 0) == ok(4, 0)
    # Five minutes and 2 s: the 4 slides out.
    assert d.step(base + 302, 0.0, 0.0, 0) == ok(0, 0)


def test_scale_down_delay_gradual() -> None:
    """TestAutoscalerScaleDownDelay/gradual (run after /simple on the same decider)."""
    d = KpaDecider(delay_spec(), T0, 0)
    assert d.step(T0 + 2, 40.0, 40.0, 0) == ok(4, 0)
    assert d.step(T0 + 300, 0.0, 0.0, 0) == ok(4, 0)
    assert d.step(T0 + 302, 0.0, 0.0, 0) == ok(0, 0)
    assert d.step(T0 + 540, 40.0, 40.0, 0) == ok(4, 0)
    assert d.step(T0 + 600, 30.0, 30.0, 0) == ok(4, 0)  # 4 still dominates
    assert d.step(T0 + 660, 0.0, 0.0, 0) == ok(4, 0)  # still at 4
    assert d.step(T0 + 840, 0.0, 0.0, 0) == ok(3, 0)  # 4 scrolls out, drop to 3
    assert d.step(T0 + 900, 0.0, 0.0, 0) == ok(0, 0)  # everything scrolled out


def test_scale_down_delay_not_reachable() -> None:
    """TestAutoscalerScaleDownDelayNotReachable: after Update to unreachable, the delay window
    is ignored (knative/serving#15831), even in the slot where the 4 was recorded."""
    d = KpaDecider(delay_spec(), T0, 0)
    assert d.step(T0 + 2, 40.0, 40.0, 0) == ok(4, 0)
    assert d.step(T0 + 60, 0.0, 0.0, 0) == ok(4, 0)
    d.update(delay_spec(reachable=False))
    assert d.step(T0 + 2, 0.0, 0.0, 0) == ok(0, 0)


def test_scale_down_delay_zero() -> None:
    """TestAutoscalerScaleDownDelayZero: no window -> immediate scale down within one slot."""
    d = KpaDecider(delay_spec(delay=0.0), T0, 0)
    assert d.delay_window_slots is None
    assert d.step(T0, 40.0, 40.0, 0) == ok(4, 0)
    assert d.step(T0 + 0.5, 20.0, 20.0, 0) == ok(2, 0)


def test_one_slot_window_keeps_larger_value_within_a_slot() -> None:
    """Why upstream uses no window for delay 0: a 1-slot window keeps the max of a slot."""
    d = KpaDecider(delay_spec(delay=1.0), T0, 0)
    assert d.delay_window_slots == 1
    assert d.step(T0, 40.0, 40.0, 0) == ok(4, 0)
    assert d.step(T0 + 0.5, 20.0, 20.0, 0) == ok(4, 0)  # same 2 s slot: larger kept
    assert d.step(T0 + 1.999, 20.0, 20.0, 0) == ok(4, 0)  # slot floor(now / 2) still the same
    assert d.step(T0 + 2, 20.0, 20.0, 0) == ok(2, 0)  # next slot


def test_odd_delay_rounds_slots_up() -> None:
    """Delay 5 s -> ceil(5/2) = 3 slots: a value holds for its own slot plus the next two."""
    d = KpaDecider(delay_spec(delay=5.0), T0, 0)
    assert d.delay_window_slots == 3
    assert d.step(T0, 90.0, 0.0, 0).desired == 9  # slot k
    assert d.step(T0 + 2, 0.0, 0.0, 0).desired == 9  # slot k+1
    assert d.step(T0 + 5.9, 0.0, 0.0, 0).desired == 9  # slot k+2
    assert d.step(T0 + 6, 0.0, 0.0, 0).desired == 0  # slot k+3: 9 is 3 slots old


def test_scale_up_passes_through_delay_window() -> None:
    d = KpaDecider(delay_spec(), T0, 0)
    assert d.step(T0, 20.0, 20.0, 0).desired == 2
    assert d.step(T0 + 2, 90.0, 90.0, 0).desired == 9
    assert d.step(T0 + 4, 50.0, 50.0, 0).desired == 9


def test_update_does_not_create_delay_window() -> None:
    """Update only swaps the spec: a decider created with no delay never gets a window."""
    d = KpaDecider(delay_spec(delay=0.0), T0, 0)
    d.update(delay_spec(delay=300.0))
    assert d.spec.scale_down_delay == 300.0
    assert d.delay_window_slots is None
    assert d.step(T0, 40.0, 40.0, 0).desired == 4
    assert d.step(T0 + 2, 0.0, 0.0, 0).desired == 0


def test_update_keeps_original_delay_window() -> None:
    """...and a decider created with a delay keeps applying its original window, even when the
    new spec says 0 (upstream checks ``delayWindow != nil``, not the current spec's delay)."""
    d = KpaDecider(delay_spec(delay=10.0), T0, 0)
    d.update(delay_spec(delay=0.0))
    assert d.delay_window_slots == 5
    assert d.step(T0, 40.0, 40.0, 0).desired == 4
    assert d.step(T0 + 8, 0.0, 0.0, 0).desired == 4
    assert d.step(T0 + 10, 0.0, 0.0, 0).desired == 0


def test_delay_window_negative_time_uses_go_truncating_division() -> None:
    """Go computes the slot as int(now.Unix()) / 2, truncating toward zero: for negative times
    seconds -3 and -2 share a slot (-1), and -1, 0 and 1 share slot 0."""
    d = KpaDecider(delay_spec(delay=1.0), -3.0, 0)
    assert d.step(-3.0, 40.0, 40.0, 0).desired == 4
    assert d.step(-2.0, 20.0, 20.0, 0).desired == 4  # same slot -1
    assert d.step(-1.0, 20.0, 20.0, 0).desired == 2  # slot 0
    assert d.step(1.0, 10.0, 10.0, 0).desired == 2  # still slot 0: larger kept


# --------------------------------------------------------------------------------------------------
# Update
# --------------------------------------------------------------------------------------------------


def test_update_target() -> None:
    """TestAutoscalerUpdateTarget. The new spec leaves Reachable unset (false) upstream."""
    d = new_upstream_decider(10, 77)
    assert d.step(T0, 100.0, 101.0, 1) == ok(10, -165)  # floor(13.33 - 77 - 101)
    d.update(
        KpaSpec(
            target_value=1.0,
            total_value=1 / TARGET_UTILIZATION,
            activator_capacity=21.0,
            target_burst_capacity=71.0,
            panic_threshold=2.0,
            max_scale_down_rate=10.0,
            max_scale_up_rate=10.0,
            stable_window=STABLE_WINDOW,
            reachable=False,
        )
    )
    assert d.step(T0, 100.0, 101.0, 10) == ok(100, -159)  # floor(13.33 - 71 - 101)


def test_update_keeps_panic_state_and_uses_new_stable_window() -> None:
    d = new_upstream_decider(10, 0)
    assert d.step(T0, 0.0, 100.0, 1) == ok(10, 0)
    assert d.panicking
    d.update(upstream_spec(10, 0, stable_window=10.0))
    assert d.panicking
    assert d.step(T0 + 10, 0.0, 0.0, 10) == ok(10, 0)  # not strictly after
    assert d.step(T0 + 12, 0.0, 0.0, 10) == ok(1, 0)


# --------------------------------------------------------------------------------------------------
# Spec validation, annotation helper, duration parser
# --------------------------------------------------------------------------------------------------


def test_spec_defaults_are_knative_defaults() -> None:
    s = KpaSpec()
    assert (s.scaling_metric, s.target_value, s.total_value, s.target_burst_capacity) == (
        "concurrency",
        70.0,
        100.0,
        211.0,
    )
    assert (s.panic_threshold, s.max_scale_up_rate, s.max_scale_down_rate) == (2.0, 1000.0, 2.0)
    assert (s.activator_capacity, s.stable_window, s.scale_down_delay) == (100.0, 60.0, 0.0)
    assert (s.reachable, s.activation_scale, s.initial_scale) == (True, 1, 1)


@pytest.mark.parametrize(
    "changes",
    [
        {"target_value": 0.0},
        {"max_scale_down_rate": 0.0},
        {"max_scale_up_rate": -1.0},
        {"target_burst_capacity": -2.0},
        {"stable_window": -1.0},
        {"scale_down_delay": math.inf},
        {"panic_threshold": math.nan},
        {"scaling_metric": "cpu"},
        {"activation_scale": -1},
    ],
)
def test_spec_rejects_unusable_values(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        KpaSpec(**changes)  # type: ignore[arg-type]


def test_from_annotations_defaults() -> None:
    assert KpaSpec.from_annotations({}) == KpaSpec()


def test_from_annotations_overrides() -> None:
    ann = {
        "autoscaling.knative.dev/metric": "rps",
        "autoscaling.knative.dev/target": "50",
        "autoscaling.knative.dev/target-utilization-percentage": "80",
        "autoscaling.knative.dev/targetUtilizationPercentage": "10",  # kebab wins
        "autoscaling.knative.dev/targetBurstCapacity": "-1",  # alias used when kebab absent
        "autoscaling.knative.dev/window": "1m30s",
        "autoscaling.knative.dev/panic-threshold-percentage": "150",
        "autoscaling.knative.dev/scale-down-delay": "15m",
        "autoscaling.knative.dev/activation-scale": "3",
        "autoscaling.knative.dev/initial-scale": "0",
    }
    s = KpaSpec.from_annotations(ann, reachable=False)
    assert s.scaling_metric == "rps"
    assert s.total_value == 50.0
    assert s.target_value == 40.0
    assert s.target_burst_capacity == -1.0
    assert s.stable_window == 90.0
    assert s.panic_threshold == 1.5
    assert s.scale_down_delay == 900.0
    assert s.activation_scale == 3
    assert s.initial_scale == 1  # 0 needs allow_zero_initial_scale
    assert s.reachable is False
    s0 = KpaSpec.from_annotations(ann, allow_zero_initial_scale=True)
    assert s0.initial_scale == 0


def test_from_annotations_concurrency_target_resolution() -> None:
    # containerConcurrency 10 is the total; target 10 * 0.7 = 7.
    s = KpaSpec.from_annotations({}, container_concurrency=10)
    assert (s.total_value, s.target_value) == (10.0, 7.0)
    # target annotation above containerConcurrency: the smaller (10) wins.
    s = KpaSpec.from_annotations({"autoscaling.knative.dev/target": "25"}, container_concurrency=10)
    assert s.total_value == 10.0
    # RPS default: 200 * 0.7 = 140 (the fixed utilisation, not the concurrency percentage).
    s = KpaSpec.from_annotations(
        {"autoscaling.knative.dev/metric": "rps"}, container_concurrency_target_percentage=50
    )
    assert (s.total_value, s.target_value) == (200.0, 140.0)
    # A percentage <= 1.0 in the config is a fraction; the target never drops below 0.01.
    s = KpaSpec.from_annotations({}, container_concurrency_target_percentage=0.5)
    assert s.target_value == 50.0
    s = KpaSpec.from_annotations({"autoscaling.knative.dev/target": "0.001"})
    assert s.target_value == 0.01
    # Unparsable values count as absent.
    s = KpaSpec.from_annotations({"autoscaling.knative.dev/window": "soon"})
    assert s.stable_window == 60.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("60s", 60.0), ("1m30s", 90.0), ("1.5h", 5400.0), ("500ms", 0.5), ("-2s", -2.0)],
)
def test_parse_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "60", "s", "1x", "1m 30s"])
def test_parse_go_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------

_values = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
_rates = st.floats(min_value=1.01, max_value=20.0, allow_nan=False)
_ready = st.integers(min_value=1, max_value=500)


@settings(max_examples=200, deadline=None)
@given(
    down_rate=_rates,
    up_rate=_rates,
    delay=st.sampled_from([0.0, 4.0, 30.0]),
    ticks=st.lists(st.tuples(_values, _values, _ready), min_size=1, max_size=20),
)
def test_property_never_below_down_limit_when_reachable(
    down_rate: float, up_rate: float, delay: float, ticks: list[tuple[float, float, int]]
) -> None:
    """Reachable and not from zero: desired >= floor(R0 / down_rate) on every tick, whatever
    panic, activation or delay do (each of them only raises the count)."""
    spec = KpaSpec(
        target_value=10.0,
        max_scale_down_rate=down_rate,
        max_scale_up_rate=up_rate,
        scale_down_delay=delay,
        activation_scale=3,
    )
    d = KpaDecider(spec, T0, ticks[0][2])
    for i, (stable, panic, ready) in enumerate(ticks):
        r = d.step(T0 + 2 * i, stable, panic, ready)
        assert r.valid
        assert r.desired >= math.floor(ready / down_rate)


@settings(max_examples=200, deadline=None)
@given(stable=_values, panic=_values, ready=_ready, up_rate=_rates, tbc=st.floats(0.0, 1000.0))
def test_property_calm_stable_mode_bounds_and_ebc(
    stable: float, panic: float, ready: int, up_rate: float, tbc: float
) -> None:
    """Not panicking, no activation, no delay: desired is ceil(S/target) clamped to the rate
    limits, and EBC is floor(R0 * total - TBC - P)."""
    spec = KpaSpec(target_value=10.0, max_scale_up_rate=up_rate, target_burst_capacity=tbc)
    d = KpaDecider(spec, T0, 1)
    r = d.step(T0, stable, panic, ready)
    if not d.panicking:
        want = min(
            max(math.ceil(stable / 10.0), math.floor(ready / 2.0)), math.ceil(up_rate * ready)
        )
        assert r.desired == want
    if tbc > 0:
        assert r.excess_burst_capacity == math.floor(ready * 100.0 - tbc - panic)
    else:
        assert r.excess_burst_capacity == 0


def test_to_ns_rounds_as_the_builtin_round() -> None:
    # _to_ns writes round() out (core/rounding.py, tested there) for the compiled core.
    for x in (0.5e-9, 1.5e-9, 2.5e-9, -0.5e-9, 1.7e9, 1.7e9 + 0.1, 123.456789012, 60.1):
        assert _to_ns(x) == round(x * 1e9), x
    with pytest.raises(ValueError):
        _to_ns(math.nan)


def test_kpa_result_is_a_value() -> None:
    a = KpaResult(True, 3, -1)
    assert a == KpaResult(valid=True, desired=3, excess_burst_capacity=-1)
    assert a != KpaResult(True, 3, 0) and a != (True, 3, -1)
    assert hash(a) == hash(KpaResult(True, 3, -1))
    assert repr(a) == "KpaResult(valid=True, desired=3, excess_burst_capacity=-1)"
    assert KpaResult(False, 0, 0) == INVALID_RESULT
