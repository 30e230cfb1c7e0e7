"""Forecasters of the predictive policy: hand-computed values and a from-scratch reference."""

from __future__ import annotations

import math
import random

import pytest

from autoscaler.policy.forecast import (
    HoltWinters,
    LastValue,
    RollingMae,
    Scored,
    SeasonalNaive,
)


def test_last_value_repeats_the_last_value_at_every_horizon() -> None:
    f = LastValue()
    assert f.forecast(1) is None
    for y in (3.0, 7.5, 2.0):
        f.update(y)
    assert f.forecast(1) == 2.0
    assert f.forecast(50) == 2.0


def test_seasonal_naive_reads_one_season_back_at_the_same_phase() -> None:
    f = SeasonalNaive(3)
    for y in (1.0, 2.0):
        f.update(y)
    assert f.forecast(1) is None  # not a full season yet
    for y in (3.0, 4.0):
        f.update(y)
    # values y0..y3 = 1, 2, 3, 4; the next (index 4) is one season after y1.
    assert [f.forecast(h) for h in (1, 2, 3)] == [2.0, 3.0, 4.0]
    # index 7: one season back is index 4 (unseen), two seasons back is index 1.
    assert f.forecast(4) == 2.0
    assert f.forecast(6) == 4.0


def test_seasonal_naive_memory_is_one_season() -> None:
    f = SeasonalNaive(4)
    for i in range(1000):
        f.update(float(i))
    assert len(f._ring) == 4
    assert f.forecast(1) == 996.0  # index 1000 - 4


def test_holt_winters_hand_computed() -> None:
    f = HoltWinters(2, alpha=0.5, beta=0.5, gamma=0.5, phi=1.0)
    f.update(10.0)
    assert f.forecast(1) is None
    f.update(20.0)
    # Initial level = mean(10, 20) = 15, trend 0, seasonal indices (-5, +5).
    assert (f.level, f.trend) == (15.0, 0.0)
    assert f.forecast(1) == 10.0  # 15 + 0 - 5
    f.update(12.0)
    # level = .5 (12 + 5) + .5 (15 + 0) = 16; trend = .5 (16 - 15) = .5; s0 = .5 (12 - 16) - 2.5
    assert f.level == 16.0
    assert f.trend == 0.5
    assert f._seasonal == [-4.5, 5.0]
    assert f.forecast(1) == 21.5  # 16 + .5 + 5
    assert f.forecast(2) == 12.5  # 16 + 1 - 4.5


def test_holt_linear_trend_without_season() -> None:
    f = HoltWinters(None, alpha=1.0, beta=1.0)
    f.update(1.0)
    assert f.forecast(3) == 1.0
    f.update(3.0)
    assert (f.level, f.trend) == (3.0, 2.0)
    assert f.forecast(2) == 7.0


def test_holt_winters_damped_trend_and_floor() -> None:
    f = HoltWinters(None, alpha=1.0, beta=1.0, phi=0.5)
    f.update(10.0)
    f.update(14.0)  # level 14, trend = 14 - 10 = 4
    assert f.forecast(1) == pytest.approx(14 + 0.5 * 4)
    assert f.forecast(3) == pytest.approx(14 + (0.5 + 0.25 + 0.125) * 4)
    g = HoltWinters(None, alpha=1.0, beta=1.0)
    g.update(10.0)
    g.update(2.0)  # trend -8: the forecast would go negative; demand never does
    assert g.forecast(2) == 0.0


def reference_holt_winters(
    ys: list[float], m: int, alpha: float, beta: float, gamma: float, phi: float, h: int
) -> float:
    """Additive Holt-Winters recomputed from scratch with full arrays (the textbook recursion)."""
    level = [sum(ys[:m]) / m]
    trend = [0.0]
    season = [y - level[0] for y in ys[:m]]
    for t in range(m, len(ys)):
        s_old = season[t - m]
        lv = alpha * (ys[t] - s_old) + (1 - alpha) * (level[-1] + phi * trend[-1])
        tr = beta * (lv - level[-1]) + (1 - beta) * phi * trend[-1]
        season.append(gamma * (ys[t] - lv) + (1 - gamma) * s_old)
        level.append(lv)
        trend.append(tr)
    n = len(ys)
    damp = sum(phi**i for i in range(1, h + 1))
    # The seasonal index of the target n - 1 + h is the newest one at that phase.
    idx = n - 1 + h - m * ((h - 1) // m + 1)
    return max(0.0, level[-1] + damp * trend[-1] + season[idx])


@pytest.mark.parametrize("phi", [1.0, 0.9])
def test_holt_winters_matches_the_reference_recursion(phi: float) -> None:
    rng = random.Random(7)
    m = 24
    ys = [
        100 + 0.3 * t + 40 * math.sin(2 * math.pi * t / m) + rng.gauss(0, 5) for t in range(24 * 9)
    ]
    f = HoltWinters(m, alpha=0.3, beta=0.1, gamma=0.25, phi=phi)
    for i, y in enumerate(ys):
        f.update(y)
        if i + 1 >= m and i % 17 == 0:
            for h in (1, 5, 24, 30):
                expected = reference_holt_winters(ys[: i + 1], m, 0.3, 0.1, 0.25, phi, h)
                assert f.forecast(h) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert len(f._seasonal) == m  # bounded history


def test_holt_winters_tracks_a_seasonal_series_better_than_last_value() -> None:
    m = 12
    ys = [50 + 30 * math.sin(2 * math.pi * t / m) for t in range(m * 8)]
    hw, lv = Scored(HoltWinters(m), 3, 24), Scored(LastValue(), 3, 24)
    for y in ys:
        hw.observe(y)
        lv.observe(y)
    assert hw.mae.value is not None and lv.mae.value is not None
    assert hw.mae.value < 0.1 * lv.mae.value


def test_rolling_mae_over_the_last_k() -> None:
    mae = RollingMae(3)
    assert mae.value is None
    for e in (1.0, -2.0, 3.0):
        mae.add(e)
    assert mae.value == 2.0
    mae.add(4.0)  # drops the 1
    assert mae.value == 3.0
    assert mae.n == 3


def test_rolling_mae_stays_exact_over_a_long_run() -> None:
    rng = random.Random(3)
    mae = RollingMae(7)
    errors = [rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-6, 0) for _ in range(10_003)]
    for e in errors:
        mae.add(e)
    assert mae.value == pytest.approx(sum(abs(e) for e in errors[-7:]) / 7, rel=1e-12)


def test_scored_scores_each_forecast_when_its_target_arrives() -> None:
    s = Scored(LastValue(), horizon=2, k=10)
    s.observe(1.0)
    s.observe(2.0)
    assert s.mae.n == 0  # the first forecast targets the third value
    s.observe(3.0)  # forecast 1 (issued after y=1) vs 3
    s.observe(7.0)  # forecast 2 (issued after y=2) vs 7
    assert s.mae.n == 2
    assert s.mae.value == pytest.approx((2 + 5) / 2)
    assert s.model.forecast(1) == 7.0


def test_copies_are_independent() -> None:
    f = HoltWinters(3)
    for y in (1.0, 2.0, 3.0, 4.0):
        f.update(y)
    c = f.copy()
    f.update(100.0)
    assert c.count == 4
    assert c.forecast(1) != f.forecast(1)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SeasonalNaive(0), "season must be >= 1"),
        (lambda: HoltWinters(1), "season must be >= 2"),
        (lambda: HoltWinters(4, alpha=1.5), "alpha must be in"),
        (lambda: HoltWinters(4, phi=0.0), "phi must be in"),
        (lambda: RollingMae(0), "k must be >= 1"),
    ],
)
def test_bad_settings_are_refused(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_non_finite_values_and_zero_horizon_are_refused() -> None:
    f = HoltWinters(None)
    with pytest.raises(ValueError, match="finite"):
        f.update(float("nan"))
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        f.forecast(0)
