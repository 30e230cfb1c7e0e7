"""The ``keepalive`` policy: idle-time histogram, windows, pre-warm, keep-alive, missing data."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

import pytest

from autoscaler.config import parse_policy
from autoscaler.core import signals
from autoscaler.core.errors import PolicyConfigError
from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import Observation
from autoscaler.core.windows import SignalWindow
from autoscaler.engine import Engine
from autoscaler.policy.builtin.keepalive import (
    KeepaliveParams,
    KeepalivePolicy,
    KeepaliveState,
    Windows,
    bin_cv,
    cost_windows,
    histogram_percentile_bin,
    record_idle,
    windows,
)
from autoscaler.policy.registry import get_policy_class

KPA = {"name": "kpa", "params": {"containerConcurrency": 1, "targetUtilizationPercentage": 100}}
# Ten 1-minute bins: small enough to compute every figure by hand.
SMALL = {"inner": KPA, "binSeconds": 60, "rangeSeconds": 600, "minSamples": 10}


def params(**over: Any) -> KeepaliveParams:
    return KeepaliveParams.model_validate({**SMALL, **over})


def empty_state(p: KeepaliveParams) -> KeepaliveState:
    return KeepaliveState(bins=(0,) * p.n_bins, bin_seconds=p.bin_seconds)


def learned(p: KeepaliveParams, idles: list[float]) -> KeepaliveState:
    st = empty_state(p)
    for idle in idles:
        st = record_idle(st, idle, p)
    return st


# 18 idle times in the 4-5 minute bin and 2 in the 7-8 minute bin.
PATTERN = [250.0] * 18 + [430.0] * 2


# -- histogram arithmetic ------------------------------------------------------------------------


def test_percentile_bin_is_the_first_bin_reaching_the_share() -> None:
    bins = (3, 0, 5, 2)  # cumulative 3, 3, 8, 10
    assert histogram_percentile_bin(bins, 5) == 0  # 0.5 of 10
    assert histogram_percentile_bin(bins, 30) == 0  # exactly 3 of 10
    assert histogram_percentile_bin(bins, 31) == 2
    assert histogram_percentile_bin(bins, 80) == 2  # 8 of 10
    assert histogram_percentile_bin(bins, 99) == 3
    assert histogram_percentile_bin((0, 0), 50) is None


def test_bin_cv_hand_computed() -> None:
    # mean 1, deviations 3, -1, -1, -1: variance 12 / 4 = 3.
    assert bin_cv((4, 0, 0, 0)) == pytest.approx(math.sqrt(3))
    assert bin_cv((2, 2, 2, 2)) == 0.0
    assert bin_cv((0, 0, 0)) == 0.0


def test_record_idle_bins_by_minute_and_counts_out_of_range() -> None:
    p = params()
    st = learned(p, [0.0, 59.9, 60.0, 300.0, 599.0, 600.0, 7200.0])
    assert st.bins == (2, 1, 0, 0, 0, 1, 0, 0, 0, 1)
    assert st.oob == 2
    assert st.oob_recent == (600.0, 7200.0)


def test_histogram_windows_head_and_tail_with_margins() -> None:
    p = params()
    st = learned(p, PATTERN)
    # mean 2 per bin; deviations 16 (bin 4), 0 (bin 7), -2 in eight bins: var 288 / 10.
    assert bin_cv(st.bins) == pytest.approx(math.sqrt(28.8) / 2)
    w = windows(st, p)
    # head p5 -> bin 4, its lower edge 240 s less 10%; tail p99 -> bin 7, upper edge 480 s + 10%.
    assert w == Windows("histogram", pytest.approx(216.0), pytest.approx(528.0))
    assert st.windows == w  # cached in the state when the counts change


def test_too_few_samples_fall_back_to_the_fixed_keep_alive() -> None:
    p = params(fallbackKeepAliveSeconds=900)
    st = learned(p, PATTERN[:9])  # 9 < minSamples
    assert windows(st, p) == Windows("fixed", 0.0, 900.0)


def test_flat_histogram_is_not_representative() -> None:
    p = params(fallbackKeepAliveSeconds=900)
    st = learned(p, [60.0 * i + 1 for i in range(10)] * 2)  # two in every bin: CV 0
    assert bin_cv(st.bins) == 0.0
    assert windows(st, p).mode == "fixed"
    # The same counts become representative once the threshold allows a flat histogram.
    assert windows(st, params(cvThreshold=0)).mode == "histogram"


def test_mostly_out_of_range_idle_times_use_the_forecast() -> None:
    p = params(oobHistory=3)
    st = learned(p, [100.0] * 4 + [7200.0, 3600.0, 9000.0, 10800.0, 20000.0, 1000.0] * 1)
    # 6 of 10 out of range (> 0.5); the last 3 are 10800, 20000, 1000 -> median 10800.
    assert st.oob == 6 and st.oob_recent == (10800.0, 20000.0, 1000.0)
    w = windows(st, p)
    assert w == Windows("forecast", pytest.approx(9720.0), pytest.approx(11880.0))


# -- the cost rule -------------------------------------------------------------------------------


def cost(price: float, **over: Any) -> KeepaliveParams:
    return params(rule="cost", coldStartCostSeconds=price, **over)


def test_the_default_rule_is_the_papers_percentile_windows() -> None:
    assert params().rule == "percentile"
    assert windows(learned(params(), PATTERN), params()).mode == "histogram"


def test_cost_rule_keeps_alive_only_while_the_return_is_worth_the_idle_time() -> None:
    # 10 idle times of 30 s (bin 0, counted at 30 s) and 10 beyond the range. Keep-alive 0:
    # 20 scale-ups from zero. Keep-alive 60 s: 10 scale-ups and 10 x 30 + 10 x 60 = 900 idle
    # seconds. Longer keep-alives only add idle time. So 60 s iff 10 x price > 900.
    idles = [30.0] * 10 + [5000.0] * 10
    assert windows(learned(cost(100), idles), cost(100)) == Windows("cost", 0.0, 60.0)
    assert windows(learned(cost(80), idles), cost(80)) == Windows("cost", 0.0, 0.0)


def test_raising_the_cold_start_price_moves_along_the_frontier() -> None:
    # 10 x 30 s, 10 x 270 s (bin 4), 5 beyond the range. Costs (scale-ups x price + idle s):
    # K=0: 25p; K=60: 15p + 1200; K=300: 5p + 300 + 2700 + 5 x 300 = 5p + 4500.
    # K=60 beats K=0 above p=120; K=300 beats K=60 above p=330. No price buys a longer one:
    # the idle times beyond the range outlast any keep-alive, which would only add idle time.
    idles = [30.0] * 10 + [270.0] * 10 + [5000.0] * 5
    keep = {
        price: windows(learned(cost(price), idles), cost(price)).keep_until
        for price in (100, 200, 400, 10_000)
    }
    assert keep == {100: 0.0, 200: 60.0, 400: 300.0, 10_000: 300.0}


def test_cost_rule_prewarms_when_the_head_makes_it_cheaper() -> None:
    # A timer: every idle time is 270 s. Held from 0 to 300 s: 20 x 270 = 5400 idle s. At zero,
    # back at the head bin's edge 240 s (started 60 s before): 20 x (30 + 60) = 1800 s.
    p = cost(1000)
    st = learned(p, [270.0] * 20)
    assert cost_windows(st.bins, st.oob, 60.0, p) == Windows("cost", 240.0, 300.0)
    assert windows(st, p) == Windows("cost", 240.0, 300.0)
    # So cheap a cold start (20 x 50 = 1000 < 1800) that going to zero for good wins.
    assert windows(learned(cost(50), [270.0] * 20), cost(50)) == Windows("cost", 0.0, 0.0)
    pol = KeepalivePolicy(p)
    run = Replay(pol, replace(st, inner=pol.inner.initial_state(snap(0, 1, {}))))
    run.tick(0.0, 1, 5)
    out = {t: run.tick(float(t), 0, 5) for t in range(10, 400, 10)}
    # Spell from t=10: zero at once, back from idle 180 s (t=190), zero again at idle 300 s.
    assert out[10] == 0 and out[180] == 0
    assert all(out[t] == 1 for t in range(190, 310, 10))
    assert out[310] == 0


def test_cost_rule_needs_samples_but_not_a_peaked_histogram() -> None:
    p = cost(1000, fallbackKeepAliveSeconds=900)
    assert windows(learned(p, PATTERN[:9]), p) == Windows("fixed", 0.0, 900.0)
    flat = learned(p, [60.0 * i + 1 for i in range(10)] * 2)  # CV 0: percentile says fixed
    assert bin_cv(flat.bins) == 0.0
    assert windows(flat, p).mode == "cost"


# -- deciding ------------------------------------------------------------------------------------


def snap(
    now: float,
    current: int,
    series: dict[str, list[tuple[float, float]]],
    cold_start_s: float | None = None,
    max_age: float = math.inf,
) -> Snapshot:
    ws: dict[str, SignalWindow] = {}
    for name, points in series.items():
        w = ws[name] = SignalWindow(3600)
        for ts, v in points:
            w.add(ts, v)
    return Snapshot("ns/t", now, current, current, 0, ws, cold_start_s, max_age=max_age)


class Replay:
    """Feeds one policy tick by tick: concurrency and the arrivals counter at each tick."""

    def __init__(self, policy: KeepalivePolicy, state: KeepaliveState | None = None) -> None:
        self.policy = policy
        self.series: dict[str, list[tuple[float, float]]] = {
            signals.CONCURRENCY: [],
            signals.REQUESTS_TOTAL: [],
        }
        self.state = state
        self.current = 1

    def tick(
        self, now: float, in_flight: float, arrivals: float, cold: float | None = None
    ) -> int | None:
        self.series[signals.CONCURRENCY].append((now, in_flight))
        self.series[signals.REQUESTS_TOTAL].append((now, arrivals))
        s = snap(now, self.current, self.series, cold)
        st = self.policy.initial_state(s) if self.state is None else self.state
        prop, self.state = self.policy.decide(s, st)
        if prop.replicas is not None:
            self.current = prop.replicas
        return prop.replicas


def test_prewarm_fires_before_the_predicted_arrival_and_keepalive_holds_the_tail() -> None:
    p = params()
    pol = KeepalivePolicy(p)
    run = Replay(pol, replace(learned(p, PATTERN), inner=pol.inner.initial_state(snap(0, 1, {}))))
    assert run.tick(0.0, 1, 5) == 1  # a request in flight
    out = {t: run.tick(float(t), 0, 5) for t in range(10, 700, 10)}
    # The spell starts at t=10. Head: 216 s; lead 60 s -> pre-warm from idle 156 s (t=166).
    assert out[10] == 0  # unloaded at once: the next request is not expected for minutes
    assert out[160] == 0  # idle 150 s
    assert out[170] == 1  # idle 160 s >= 156: pre-warmed before the 240 s head bin
    assert all(out[t] == 1 for t in range(170, 530, 10))  # held through the tail (528 s)
    assert out[530] == 1 and out[540] == 0  # idle 520 s kept, idle 530 s > 528: unloaded
    assert all(out[t] == 0 for t in range(540, 700, 10))


def test_measured_cold_start_moves_the_prewarm_earlier() -> None:
    p = params()
    pol = KeepalivePolicy(p)
    st = replace(learned(p, PATTERN), inner=pol.inner.initial_state(snap(0, 1, {})))
    run = Replay(pol, st)
    run.tick(0.0, 1, 5, cold=100.0)
    out = {t: run.tick(float(t), 0, 5, cold=100.0) for t in range(10, 200, 10)}
    # lead = max(60, measured 100) -> pre-warm from idle 116 s (t=126).
    assert out[120] == 0 and out[130] == 1


def test_a_near_head_keeps_the_target_loaded() -> None:
    # Most idle times are short (bin 0): pre-warm would fire before the spell at zero is worth
    # it, so the target stays up until the tail, as the paper's "no unload" case.
    p = params()
    pol = KeepalivePolicy(p)
    st = replace(learned(p, [20.0] * 19 + [200.0]), inner=pol.inner.initial_state(snap(0, 1, {})))
    assert windows(st, p) == Windows("histogram", 0.0, pytest.approx(264.0))
    run = Replay(pol, st)
    run.tick(0.0, 1, 5)
    out = {t: run.tick(float(t), 0, 5) for t in range(10, 400, 10)}
    assert all(out[t] == 1 for t in range(10, 280, 10))  # idle 0..260 s < 264 s
    assert out[280] == 0


def test_idle_times_are_learned_from_what_the_signals_show() -> None:
    p = params()
    pol = KeepalivePolicy(p)
    run = Replay(pol)
    run.tick(0.0, 1, 1)
    for t in range(10, 300, 10):
        run.tick(float(t), 0, 1)  # idle from t=10
    # A request arrived and finished between scrapes: only the counter shows it.
    assert run.tick(310.0, 0, 2) == 1
    assert run.state is not None
    assert run.state.bins[5] == 1 and sum(run.state.bins) == 1  # 300 s idle -> bin 5
    assert run.state.idle_since is None


def test_traffic_defers_to_the_inner_policy_floored_at_one() -> None:
    pol = KeepalivePolicy(params(fallbackKeepAliveSeconds=0))
    run = Replay(pol)
    for t in range(0, 70, 10):
        got = run.tick(float(t), 3, 10 + t)
    assert got == 3  # the KPA at one request per replica
    for t in range(70, 200, 10):
        got = run.tick(float(t), 0, 70)
    assert got == 0  # idle past the (zero) keep-alive: unloaded
    # A request came and went between scrapes: the KPA's window is all zeros and it says 0, but
    # traffic is flowing, so the target gets one replica.
    assert run.tick(200.0, 0, 71) == 1


@pytest.mark.parametrize("rule", ["percentile", "cost"])
def test_never_proposes_on_missing_or_stale_activity(rule: str) -> None:
    p = params(fallbackKeepAliveSeconds=60, rule=rule)
    pol = KeepalivePolicy(p)
    s0 = snap(0.0, 1, {signals.CONCURRENCY: [(0.0, 0)], signals.REQUESTS_TOTAL: [(0.0, 5)]})
    prop, st = pol.decide(s0, pol.initial_state(s0))
    assert prop.replicas == 1
    # 10 minutes later, the last samples are 600 s old: stale at max_age 60.
    stale = snap(
        600.0, 1, {signals.CONCURRENCY: [(0.0, 0)], signals.REQUESTS_TOTAL: [(0.0, 5)]}, max_age=60
    )
    prop, st = pol.decide(stale, st)
    assert prop.replicas is None
    assert st.idle_since is None and st.last_total is None  # the unseen spell is forgotten
    missing = snap(700.0, 1, {signals.CONCURRENCY: [(690.0, 0)]})  # no counter at all
    prop, _ = pol.decide(missing, st)
    assert prop.replicas is None


POLICY_YAML = """\
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {name: t}
spec:
  targets:
    - name: m
      policy:
        name: keepalive
        params:
          inner: {name: kpa, params: {containerConcurrency: 1, targetUtilizationPercentage: 100}}
          fallbackKeepAliveSeconds: 120
      guards:
        minReplicas: 0
        stabilization: {upSeconds: 0, downSeconds: 0}
        scaleToZero: {idleSeconds: 0, graceSeconds: 0}
        restartHoldSeconds: 0
        fallback: {maxSignalAgeSeconds: 30}
"""


def engine_run(load_until: float, end: float) -> list[int]:
    """Through the engine and guards: load signals stop at ``load_until``, status continues."""
    eng = Engine.from_policy(parse_policy(POLICY_YAML))
    replicas = 1
    out = []
    for i in range(int(end // 10)):
        now = 1000.0 + 10 * i
        obs = [
            Observation("default/m", signals.REPLICAS, float(replicas), now),
            Observation("default/m", signals.REPLICAS_READY, float(replicas), now),
        ]
        if now - 1000.0 < load_until:
            busy = 1.0 if i < 3 else 0.0
            obs += [
                Observation("default/m", signals.CONCURRENCY, busy, now),
                Observation("default/m", signals.REQUESTS_TOTAL, 3.0, now),
            ]
        (d,) = eng.tick(now, obs)
        replicas = d.replicas
        out.append(replicas)
    return out


def test_engine_goes_to_zero_after_the_keep_alive_on_fresh_idle_signals() -> None:
    out = engine_run(load_until=math.inf, end=400)
    # Idle from t=30; fixed keep-alive 120 s (no histogram yet): zero from idle 120 s on.
    assert out[:15] == [1] * 15
    assert out[15:] == [0] * (len(out) - 15)


def test_engine_never_goes_to_zero_when_signals_stop() -> None:
    out = engine_run(load_until=60, end=2000)  # signals stop before the keep-alive ends
    assert min(out) == 1


# -- state and config ----------------------------------------------------------------------------


def test_state_is_bounded_and_old_idle_times_fade() -> None:
    p = params(maxSamples=100, oobHistory=4)
    st = empty_state(p)
    for i in range(5000):
        st = record_idle(st, float((i * 37) % 900), p)
    assert len(st.bins) == p.n_bins == 10
    assert sum(st.bins) + st.oob <= 100
    assert len(st.oob_recent) == 4
    with pytest.raises(AttributeError):
        st.oob = 0  # type: ignore[misc]  # frozen


def test_reload_keeps_learned_idle_times_rebinned() -> None:
    p = params()
    pol = KeepalivePolicy(p)
    s = snap(0.0, 1, {})
    old = replace(learned(p, PATTERN), inner=pol.inner.initial_state(s), inner_name="kpa")
    wider = KeepalivePolicy(params(binSeconds=120, rangeSeconds=480))
    new = wider.carry_state(old, s)
    # 250 s (bin 4, midpoint 270) -> 120 s bin 2; 430 s (midpoint 450) -> bin 3.
    assert new.bins == (0, 0, 18, 2) and new.bin_seconds == 120
    assert new.inner is old.inner
    assert new.windows == windows(new, wider.params)
    swapped = KeepalivePolicy(params(inner={"name": "queue", "params": {"targetPerReplica": 1}}))
    assert swapped.carry_state(old, s).inner is not old.inner


def test_registered_and_required_signals() -> None:
    assert get_policy_class("keepalive") is KeepalivePolicy
    pol = KeepalivePolicy(params())
    assert pol.required_signals() == (signals.CONCURRENCY, signals.REQUESTS_TOTAL)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"headPercentile": 50, "tailPercentile": 40}, "tailPercentile (40) must be > head"),
        ({"inner": {"name": "nope"}}, "unknown policy 'nope'"),
        ({"rule": "median"}, "rule\n  Input should be 'percentile' or 'cost'"),
        ({"coldStartCostSeconds": 0}, "coldStartCostSeconds\n  Input should be greater than 0"),
        ({"inner": {"name": "keepalive"}}, "cannot contain another keepalive"),
        (
            {"inner": {"name": "kpa", "params": {"targetUtilizationPercentage": 0}}},
            "inner policy 'kpa': params.targetUtilizationPercentage",
        ),
    ],
)
def test_bad_params_are_named(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        params(**over)


def test_bad_inner_params_in_yaml_name_file_and_line() -> None:
    text = POLICY_YAML.replace("containerConcurrency: 1", "containerConcurency: 1")
    with pytest.raises(PolicyConfigError) as e:
        parse_policy(text, "p.yaml")
    msg = str(e.value)
    assert "p.yaml:10:" in msg and "containerConcurency" in msg
