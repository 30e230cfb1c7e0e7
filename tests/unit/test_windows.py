"""SignalWindow: span queries on timestamps, counter rates with resets, staleness, retention."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from autoscaler.core.windows import SignalWindow


def filled(points: list[tuple[float, float]], retention: float = 3600.0) -> SignalWindow:
    w = SignalWindow(retention)
    for ts, v in points:
        assert w.add(ts, v)
    return w


@pytest.mark.parametrize("retention", [0.0, -1.0])
def test_retention_must_be_positive(retention: float) -> None:
    with pytest.raises(ValueError, match="retention must be positive"):
        SignalWindow(retention)


def test_empty_window_answers_none_and_infinite_age() -> None:
    w = SignalWindow(60)
    assert len(w) == 0
    assert w.last is None
    assert w.last_ts is None
    assert w.age(100.0) == math.inf
    assert w.count(100.0, 60) == 0
    assert w.mean(100.0, 60) is None
    assert w.max(100.0, 60) is None
    assert w.min(100.0, 60) is None
    assert w.percentile(100.0, 60, 50) is None
    assert w.rate(100.0, 60) is None


def test_span_is_left_open_right_closed() -> None:
    # Samples 0..10 with value == ts. A 5 s span at now=10 is (5, 10]: 6, 7, 8, 9, 10.
    w = filled([(float(t), float(t)) for t in range(11)])
    assert w.count(10.0, 5) == 5
    assert w.mean(10.0, 5) == 8.0
    assert w.min(10.0, 5) == 6.0
    assert w.max(10.0, 5) == 10.0
    # A span just over 5 s takes in the sample at exactly 5.
    assert w.count(10.0, 5.5) == 6
    assert w.mean(10.0, 5.5) == 7.5


def test_same_span_means_the_same_at_1s_and_15s_ticks() -> None:
    # A 60 s mean of a constant-per-minute signal covers one minute whatever the sample period.
    def value(t: float) -> float:
        return 10.0 if t <= 60 else 40.0

    # Queries look back from the newest sample, as the engine asks them.
    for end, mean in ((60, 10.0), (90, 25.0), (120, 40.0)):
        fine = filled([(float(t), value(t)) for t in range(0, end + 1)])
        coarse = filled([(float(t), value(t)) for t in range(0, end + 1, 15)])
        assert fine.mean(float(end), 60) == coarse.mean(float(end), 60) == mean
    assert fine.max(120.0, 60) == coarse.max(120.0, 60) == 40.0
    assert fine.min(120.0, 60) == coarse.min(120.0, 60) == 40.0
    assert fine.min(120.0, 61) == coarse.min(120.0, 61) == 10.0


def test_mean_max_min_over_span_excludes_older_samples() -> None:
    w = filled([(0.0, 100.0), (10.0, 1.0), (20.0, 2.0), (30.0, 6.0)])
    assert w.mean(30.0, 25) == 3.0
    assert w.max(30.0, 25) == 6.0
    assert w.min(30.0, 25) == 1.0
    assert w.mean(30.0, 100) == pytest.approx(109.0 / 4)
    assert w.max(30.0, 100) == 100.0
    # Nothing in the last 5 s before now=40: unknown, not zero.
    assert w.mean(40.0, 5) is None
    assert w.max(40.0, 5) is None
    assert w.min(40.0, 5) is None


@pytest.mark.parametrize("q", [0, 5, 25, 50, 62.5, 90, 95, 99, 100])
def test_percentile_matches_numpy_linear(q: float) -> None:
    rng = random.Random(7)
    vals = [rng.uniform(-50, 50) for _ in range(37)]
    w = filled([(float(i), v) for i, v in enumerate(vals)])
    assert w.percentile(36.0, 1000, q) == pytest.approx(float(np.percentile(vals, q)), abs=1e-12)
    # Only the span's samples: (20, 36] is indexes 21..36.
    assert w.percentile(36.0, 16, q) == pytest.approx(float(np.percentile(vals[21:], q)), abs=1e-12)


def test_percentile_interpolates_and_clamps_q() -> None:
    w = filled([(1.0, 4.0), (2.0, 1.0), (3.0, 3.0), (4.0, 2.0)])
    assert w.percentile(4.0, 10, 50) == 2.5
    assert w.percentile(4.0, 10, 0) == 1.0
    assert w.percentile(4.0, 10, 100) == 4.0
    assert w.percentile(4.0, 10, -20) == 1.0
    assert w.percentile(4.0, 10, 250) == 4.0
    assert w.percentile(4.0, 10, 75) == 3.25


def test_rate_of_a_steady_counter() -> None:
    w = filled([(float(t), 10.0 * t) for t in range(0, 61, 15)])
    assert w.rate(60.0, 60) == 10.0
    assert w.rate(60.0, 300) == 10.0


def test_rate_counts_a_drop_as_a_reset() -> None:
    # 100 -> 110 (+10), reset to 5 (+5: all of the new value), 5 -> 15 (+10): 25 over 3 s.
    w = filled([(0.0, 100.0), (1.0, 110.0), (2.0, 5.0), (3.0, 15.0)])
    assert w.rate(3.0, 10) == pytest.approx(25.0 / 3.0)


def test_rate_does_not_look_before_the_span() -> None:
    # Span (5, 20] holds t=10 and t=20 only; the jump 0 -> 100 before t=10 is outside.
    w = filled([(0.0, 0.0), (10.0, 100.0), (20.0, 110.0)])
    assert w.rate(20.0, 15) == 1.0
    # A reset at the first in-span sample belongs before the span: (25 - 5) / 10.
    w = filled([(0.0, 50.0), (10.0, 5.0), (20.0, 25.0)])
    assert w.rate(20.0, 15) == 2.0


def test_rate_needs_two_samples_and_elapsed_time() -> None:
    w = filled([(0.0, 0.0), (10.0, 100.0)])
    assert w.rate(10.0, 5) is None  # one sample in (5, 10]
    w = filled([(10.0, 1.0), (10.0, 5.0)])
    assert w.rate(10.0, 60) is None  # two samples, zero elapsed time


def test_age_measures_staleness_from_sample_timestamps() -> None:
    w = filled([(100.0, 7.0)], retention=10)
    assert w.age(100.0) == 0.0
    assert w.age(175.5) == 75.5
    # Stale data stays readable as "last" and for its age, but no span query sees it.
    assert w.last == 7.0
    assert w.last_ts == 100.0
    assert w.mean(175.5, 60) is None
    assert w.rate(175.5, 60) is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_and_timestamps_are_rejected(bad: float) -> None:
    w = filled([(1.0, 2.0)])
    assert w.add(2.0, bad) is False
    assert w.add(bad, 3.0) is False
    assert w.dropped == 2
    assert len(w) == 1
    assert w.last == 2.0
    assert w.last_ts == 1.0
    assert w.mean(5.0, 10) == 2.0


def test_a_nan_gap_does_not_break_a_counter_rate() -> None:
    w = SignalWindow(600)
    for t, v in [(0.0, 0.0), (15.0, 150.0), (30.0, math.nan), (45.0, 450.0), (60.0, 600.0)]:
        w.add(t, v)
    assert w.dropped == 1
    assert w.rate(60.0, 120) == 10.0


def test_out_of_order_samples_are_rejected_equal_timestamps_accepted() -> None:
    w = filled([(10.0, 1.0)])
    assert w.add(5.0, 2.0) is False
    assert w.dropped == 1
    assert w.last == 1.0
    assert w.add(10.0, 3.0) is True
    assert len(w) == 2
    assert w.last == 3.0
    assert w.mean(10.0, 1) == 2.0


def test_retention_trims_old_samples() -> None:
    w = SignalWindow(10)
    for t in range(101):
        w.add(float(t), float(t))
    # Cutoff 100 - 10 = 90 is kept (trimming is generous by one sample).
    assert len(w) == 11
    assert w.count(100.0, 1000) == 11
    assert w.mean(100.0, 1000) == 95.0
    assert w.min(100.0, 1000) == 90.0
    assert w.rate(100.0, 1000) == 1.0


def test_long_run_compacts_storage_and_stays_exact() -> None:
    # 100k samples at 1 s into a 60 s window: memory stays bounded and every answer equals a
    # brute-force computation over the same span (integer-valued floats sum exactly).
    w = SignalWindow(60)
    gauge_vals: list[float] = []
    counter = SignalWindow(60)
    counter_vals: list[float] = []
    total = 0.0
    rng = random.Random(11)
    peak_storage = 0
    for t in range(100_000):
        v = float(rng.randint(0, 1000))
        gauge_vals.append(v)
        assert w.add(float(t), v)
        if t % 10_007 == 5_000:
            total = float(rng.randint(0, 50))  # a pod restart: the counter resets
        else:
            total += float(rng.randint(0, 100))
        counter_vals.append(total)
        counter.add(float(t), total)
        peak_storage = max(peak_storage, len(w._ts), len(w._csum), len(counter._cinc))
        if t % 997 == 0 and t >= 60:
            now = float(t)
            span_vals = gauge_vals[t - 29 : t + 1]  # (now - 30, now]
            assert w.mean(now, 30) == sum(span_vals) / 30
            assert w.max(now, 30) == max(span_vals)
            assert w.min(now, 30) == min(span_vals)
            assert w.percentile(now, 30, 90) == pytest.approx(
                float(np.percentile(span_vals, 90)), abs=1e-9
            )
            cv = counter_vals[t - 29 : t + 1]
            inc = sum(b - a if b >= a else b for a, b in itertools.pairwise(cv))
            assert counter.rate(now, 30) == inc / 29
    assert len(w) == 61
    assert peak_storage <= 2 * 61 + 66
    # The full retained span still answers exactly after all the compactions.
    assert w.mean(99_999.0, 60) == sum(gauge_vals[-60:]) / 60


def test_long_run_of_large_fractional_values_keeps_precision() -> None:
    # Prefix sums are re-based on compaction, so a big offset does not eat the precision.
    w = SignalWindow(30)
    vals: list[float] = []
    rng = random.Random(3)
    for t in range(100_000):
        v = 1e9 + rng.random()
        vals.append(v)
        w.add(float(t), v)
    expected = math.fsum(vals[-20:]) / 20
    assert w.mean(99_999.0, 20) == pytest.approx(expected, rel=0, abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lazy_prefix_sums_are_bit_identical_to_eager_ones(seed: int) -> None:
    # The prefix sums are brought up to date at the first mean/rate after new samples (and before
    # a compaction). A window asked after every sample (so always up to date, as the sums were
    # when every add extended them) and one asked now and then must give the very same floats,
    # through single-sample, small-batch and large-batch catch-ups and across compactions.
    rng = random.Random(seed)
    eager = SignalWindow(40)
    lazy = SignalWindow(40)
    t = 0.0
    for step in range(3000):
        t += rng.choice([0.5, 1.0, 1.0, 3.0])
        v = rng.choice([0.0, 1e9 + rng.random(), rng.random() * 100, -rng.random()])
        if step % 211 == 0:
            v = 0.0  # a counter reset
        assert eager.add(t, v) == lazy.add(t, v)
        answers = (eager.mean(t, 30), eager.rate(t, 30), eager.mean(t, 7), eager.rate(t, 40))
        if rng.random() < 0.1 or step % 97 < 12:
            assert (lazy.mean(t, 30), lazy.rate(t, 30), lazy.mean(t, 7), lazy.rate(t, 40)) == (
                answers
            )
    assert lazy.mean(t, 30) == eager.mean(t, 30)  # brings the lazy value sums up to date
    assert lazy.rate(t, 30) == eager.rate(t, 30)  # and the counter-increase sums
    assert len(eager) == len(lazy)
    assert eager._start == lazy._start
    assert eager._csum == lazy._csum and eager._cinc == lazy._cinc
