"""Built-in policies: the exact proposals each one makes from a snapshot, and their state."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from autoscaler.config import parse_policy
from autoscaler.core import signals
from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import GuardAction, Observation, Proposal
from autoscaler.core.windows import SignalWindow
from autoscaler.engine import Engine
from autoscaler.policy.api import Policy
from autoscaler.policy.builtin.kpa import KpaParams
from autoscaler.policy.registry import get_policy_class, policy_names

Series = list[tuple[float, float]]


def build(name: str, params: dict[str, Any]) -> Policy[Any, Any]:
    cls = get_policy_class(name)
    return cls(cls.params_model.model_validate(params))


def snap(
    now: float,
    current: int,
    ready: int | None = None,
    starting: int = 0,
    **series: Series,
) -> Snapshot:
    windows: dict[str, SignalWindow] = {}
    for name, points in series.items():
        w = windows[name] = SignalWindow(3600)
        for ts, v in points:
            w.add(ts, v)
    return Snapshot("ns/t", now, current, current if ready is None else ready, starting, windows)


def at(now: float, value: float) -> Series:
    return [(now, value)]


def decide(policy: Policy[Any, Any], s: Snapshot, state: Any = None) -> tuple[Proposal, Any]:
    return policy.decide(s, policy.initial_state(s) if state is None else state)


def test_every_builtin_is_registered() -> None:
    assert set(policy_names()) >= {"kpa", "hpa", "keda", "queue", "tokens", "gpu", "static", "max"}
    for name in ("kpa", "hpa", "keda", "queue", "tokens", "gpu", "static", "max"):
        assert get_policy_class(name).name == name
    with pytest.raises(KeyError, match="unknown policy 'nope'"):
        get_policy_class("nope")


# -- queue ---------------------------------------------------------------------------------------


def test_queue_replicas_from_mean_waiting_per_replica() -> None:
    q = build("queue", {"targetPerReplica": 4, "windowSeconds": 30})
    assert q.required_signals() == (signals.WAITING,)
    assert q.retention_seconds() == 30
    # (0, 30]: 8 and 12 -> mean 10 -> ceil(2.5); the 100 at t=0 is outside the window.
    prop, _ = decide(q, snap(30, 2, requests_waiting=[(0, 100), (15, 8), (30, 12)]))
    assert prop.replicas == 3
    assert prop.inputs == {signals.WAITING: 10.0}
    assert prop.reason == "queue per replica"


@pytest.mark.parametrize(("aggregation", "expected"), [("mean", 4), ("max", 5), ("last", 2)])
def test_queue_aggregations(aggregation: str, expected: int) -> None:
    q = build("queue", {"targetPerReplica": 4, "aggregation": aggregation})
    prop, _ = decide(q, snap(30, 2, requests_waiting=[(15, 20), (30, 6)]))
    assert prop.replicas == expected  # mean 13, max 20, last 6


def test_queue_exact_multiple_does_not_round_up() -> None:
    q = build("queue", {"targetPerReplica": 4})
    assert decide(q, snap(0, 2, requests_waiting=at(0, 8)))[0].replicas == 2
    assert decide(q, snap(0, 2, requests_waiting=at(0, 8.01)))[0].replicas == 3
    assert decide(q, snap(0, 2, requests_waiting=at(0, 0)))[0].replicas == 0


def test_queue_activation_threshold_only_from_zero() -> None:
    q = build("queue", {"targetPerReplica": 4, "activationThreshold": 5})
    assert decide(q, snap(0, 0, requests_waiting=at(0, 5)))[0].replicas == 0
    assert decide(q, snap(0, 0, requests_waiting=at(0, 5.5)))[0].replicas == 2
    assert decide(q, snap(0, 1, requests_waiting=at(0, 3)))[0].replicas == 1


def test_queue_without_data_has_no_proposal() -> None:
    q = build("queue", {"targetPerReplica": 4, "windowSeconds": 30})
    prop, _ = decide(q, snap(100, 2))
    assert prop.replicas is None
    assert prop.reason == "no requests_waiting data in 30s"
    assert decide(q, snap(100, 2, requests_waiting=at(70, 9)))[0].replicas is None
    last = build("queue", {"targetPerReplica": 4, "windowSeconds": 30, "aggregation": "last"})
    assert decide(last, snap(100, 2, requests_waiting=at(69, 9)))[0].replicas is None
    assert decide(last, snap(100, 2, requests_waiting=at(70, 9)))[0].replicas == 3


# -- tokens --------------------------------------------------------------------------------------


def _token_series(now: float = 60) -> dict[str, Series]:
    ts = [float(t) for t in range(0, int(now) + 1, 15)]
    return {
        signals.PROMPT_TOKENS_TOTAL: [(t, 100.0 * t) for t in ts],
        signals.GENERATION_TOKENS_TOTAL: [(t, 50.0 * t) for t in ts],
        signals.THROTTLED_TOKENS_PER_SECOND: [(t, 30.0) for t in ts],
    }


def test_tokens_demand_counters_plus_throttled() -> None:
    p = build("tokens", {"tokensPerReplica": 100})
    assert p.required_signals() == (signals.PROMPT_TOKENS_TOTAL, signals.GENERATION_TOKENS_TOTAL)
    prop, _ = decide(p, snap(60, 2, **_token_series()))
    # (100 + 50 + 30) / (100 x 0.8) = 2.25
    assert prop.replicas == 3
    assert prop.inputs == {"tokens_per_second": 180.0}
    assert prop.token_rate == 200.0  # 2 ready x 100 x headroom 1.0
    assert prop.reason == "token demand per replica"


def test_tokens_burst_reserve_grows_as_the_square_root_of_the_load() -> None:
    """Square-root staffing: relatively more spare on a quiet fleet than on a busy one."""
    series = _token_series()
    quiet = build("tokens", {"tokensPerReplica": 100, "burstReserve": 1.0})
    # 180 tok/s: 180 / 80 = 2.25, plus 1.0 x sqrt(1.8) = 1.34 -> 3.59 -> 4 (3 without it)
    assert decide(quiet, snap(60, 2, **series))[0].replicas == 4
    busy = build("tokens", {"tokensPerReplica": 10, "burstReserve": 1.0})
    # 180 tok/s on 10 tok/s replicas: 18 / 0.8 = 22.5, plus sqrt(18) = 4.24 -> 26.7 -> 27
    assert decide(busy, snap(60, 2, **series))[0].replicas == 27
    assert (
        decide(build("tokens", {"tokensPerReplica": 10}), snap(60, 2, **series))[0].replicas == 23
    )
    idle = {k: [(t, 0.0) for t, _ in v] for k, v in series.items()}
    assert decide(quiet, snap(60, 2, **idle))[0].replicas == 0  # no load, no reserve


def test_tokens_without_throttled_and_with_headroom() -> None:
    p = build("tokens", {"tokensPerReplica": 100, "includeThrottled": False, "limitHeadroom": 1.5})
    prop, _ = decide(p, snap(60, 4, ready=3, **_token_series()))
    assert prop.replicas == 2  # 150 / 80
    assert prop.token_rate == 450.0


def test_tokens_gauge_instead_of_counters() -> None:
    p = build("tokens", {"tokensPerReplica": 100, "gauge": signals.TOKENS_PER_SECOND})
    assert p.required_signals() == (signals.TOKENS_PER_SECOND,)
    prop, _ = decide(p, snap(60, 1, tokens_per_second=[(30, 300), (60, 500)]))
    assert prop.replicas == 5  # 400 / 80 exactly


def test_tokens_missing_counter_gives_no_proposal_but_a_limit() -> None:
    p = build("tokens", {"tokensPerReplica": 100})
    series = _token_series()
    del series[signals.GENERATION_TOKENS_TOTAL]
    prop, _ = decide(p, snap(60, 0, ready=0, **series))
    assert prop.replicas is None
    assert prop.token_rate == 100.0  # at least one replica's worth
    assert prop.reason == "no token rate yet"


def test_tokens_counter_reset_is_not_negative_demand() -> None:
    p = build(
        "tokens",
        {
            "tokensPerReplica": 100,
            "includeThrottled": False,
            "counters": [signals.GENERATION_TOKENS_TOTAL],
        },
    )
    # 1000 -> 1600 (+600), a restart to 200 (+200), 200 -> 800 (+600): 1400 over 45 s.
    s = snap(60, 1, generation_tokens_total=[(15, 1000), (30, 1600), (45, 200), (60, 800)])
    prop, _ = decide(p, s)
    assert prop.inputs["tokens_per_second"] == pytest.approx(1400 / 45)
    assert prop.replicas == 1


# -- gpu -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("util", "ready", "expected"),
    [
        (0.9, 4, 6),  # 3.6 GPUs busy / 0.7 = 5.14 -> 6
        (0.75, 4, 4),  # ratio 1.07: within tolerance, keep
        (0.3, 4, 2),  # 1.2 / 0.7 = 1.71 -> 2
        (1.0, 1, 2),
    ],
)
def test_gpu_hpa_formula_over_mean_utilization(util: float, ready: int, expected: int) -> None:
    p = build("gpu", {})
    prop, _ = decide(p, snap(60, ready, gpu_utilization=at(60, util)))
    assert prop.replicas == expected
    assert prop.inputs == {signals.GPU_UTILIZATION: util}


def test_gpu_needs_data_and_a_ready_replica() -> None:
    p = build("gpu", {})
    assert decide(p, snap(60, 2))[0].replicas is None
    assert decide(p, snap(60, 2, ready=0, gpu_utilization=at(60, 0.9)))[0].replicas is None


# -- static --------------------------------------------------------------------------------------


def test_static() -> None:
    p = build("static", {"replicas": 3, "tokenRate": 100})
    assert p.required_signals() == ()
    assert decide(p, snap(0, 7))[0] == Proposal(3, token_rate=100.0, reason="static")
    with pytest.raises(ValidationError):
        build("static", {"replicas": -1})


# -- max -----------------------------------------------------------------------------------------

MAX = {
    "policies": [
        {"name": "queue", "params": {"targetPerReplica": 4}},
        {"name": "tokens", "params": {"tokensPerReplica": 100}},
    ]
}


def test_max_takes_the_largest_and_the_smallest_token_rate() -> None:
    p = build("max", MAX)
    assert p.required_signals() == ()  # members judge their own staleness
    assert p.retention_seconds() == 60
    prop, _ = decide(p, snap(60, 2, requests_waiting=at(60, 20), **_token_series()))
    assert prop.replicas == 5
    assert prop.reason == "max(queue=5, tokens=3)"
    assert prop.token_rate == 200.0
    assert prop.inputs == {signals.WAITING: 20.0, "tokens_per_second": 180.0}
    two = build(
        "max",
        {
            "policies": [
                {"name": "tokens", "params": {"tokensPerReplica": 100}},
                {"name": "tokens", "params": {"tokensPerReplica": 70}},
            ]
        },
    )
    assert decide(two, snap(60, 2, **_token_series()))[0].token_rate == 140.0


def test_max_missing_member_may_scale_up_but_never_down() -> None:
    p = build("max", MAX)
    prop, _ = decide(p, snap(60, 2, requests_waiting=at(60, 20)))
    assert prop.replicas == 5
    assert prop.reason == "max(queue=5, tokens=None)"
    prop, _ = decide(p, snap(60, 5, requests_waiting=at(60, 20)))
    assert prop.replicas == 5  # equal to current: not a scale-down
    prop, _ = decide(p, snap(60, 6, requests_waiting=at(60, 20)))
    assert prop.replicas is None
    assert prop.reason == "queue=5; tokens=None"
    assert prop.token_rate == 600.0  # tokens still proposes its limit
    assert decide(p, snap(60, 2))[0].replicas is None


def test_max_member_validation() -> None:
    with pytest.raises(ValidationError, match="a max policy cannot contain another max"):
        build("max", {"policies": [{"name": "max", "params": MAX}]})
    with pytest.raises(ValidationError, match="unknown policy 'bogus'"):
        build("max", {"policies": [{"name": "bogus"}]})
    with pytest.raises(ValidationError):
        build("max", {"policies": []})


# -- kpa -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "target", "total"),
    [
        ({}, 70.0, 100.0),  # concurrency default 100 x 70 %
        ({"containerConcurrency": 10}, 7.0, 10.0),  # containerConcurrency replaces the default
        ({"target": 50, "containerConcurrency": 10}, 7.0, 10.0),  # the smaller of the two
        ({"target": 5, "containerConcurrency": 10}, 3.5, 5.0),
        ({"target": 100, "targetUtilizationPercentage": 50}, 50.0, 100.0),
        ({"metric": "rps"}, 140.0, 200.0),  # rps default 200 x 70 %
        ({"metric": "rps", "containerConcurrency": 10}, 140.0, 200.0),  # cc is for concurrency
        ({"metric": "rps", "target": 50}, 35.0, 50.0),
        ({"target": 0.005}, 0.01, 0.005),  # never below 0.01
    ],
)
def test_kpa_target_resolution(params: dict[str, Any], target: float, total: float) -> None:
    spec = KpaParams.model_validate(params).spec()
    assert spec.target_value == pytest.approx(target)
    assert spec.total_value == total


@pytest.mark.parametrize(
    ("stable", "pct", "panic"), [(60, 10, 6.0), (6, 1, 1.0), (100, 15, 15.0), (7, 50, 4.0)]
)
def test_kpa_panic_window(stable: float, pct: float, panic: float) -> None:
    p = KpaParams.model_validate({"stableWindowSeconds": stable, "panicWindowPercentage": pct})
    assert p.panic_window_seconds == panic


def test_kpa_worked_example_panics_to_13() -> None:
    # knative-kpa.md §4: 5 ready, 60 s mean 300, 6 s mean 900 -> ceil(900/70) = 13, panic.
    p = build("kpa", {})
    assert p.required_signals() == (signals.CONCURRENCY,)
    low = 12600 / 54  # 54 samples at this and 6 at 900 average 300
    series = [(float(t), low if t <= 54 else 900.0) for t in range(1, 61)]
    s = snap(60, 5, concurrency=series)
    prop, state = decide(p, s)
    assert prop.replicas == 13
    assert state.decider.panicking
    assert prop.reason == "kpa panic"
    assert prop.inputs["concurrency_stable"] == pytest.approx(300.0)
    assert prop.inputs["concurrency_panic"] == 900.0
    assert prop.inputs["excess_burst_capacity"] == -611.0  # floor(5 x 100 - 211 - 900)


def test_kpa_stable_mode() -> None:
    p = build("kpa", {})
    state = p.initial_state(snap(0, 1))
    prop, state = p.decide(snap(60, 3, concurrency=[(float(t), 200.0) for t in range(61)]), state)
    assert prop.replicas == 3  # ceil(200 / 70)
    assert not state.decider.panicking
    assert prop.reason == "kpa stable"


def test_kpa_empty_panic_window_reads_zero_and_no_data_is_invalid() -> None:
    p = build("kpa", {})
    state = p.initial_state(snap(0, 1))
    prop, state = p.decide(snap(60, 1, concurrency=[(float(t), 140.0) for t in range(51)]), state)
    assert prop.replicas == 2
    assert prop.inputs["concurrency_panic"] == 0.0
    prop, _ = p.decide(snap(200, 1, concurrency=[(100.0, 140.0)]), state)
    assert prop.replicas is None
    assert prop.reason == "no data in the stable window"


def test_kpa_rps_metric_reads_rps() -> None:
    p = build("kpa", {"metric": "rps"})
    assert p.required_signals() == (signals.RPS,)
    state = p.initial_state(snap(0, 1))
    prop, _ = p.decide(snap(60, 3, rps=[(float(t), 400.0) for t in range(61)]), state)
    assert prop.replicas == 3  # ceil(400 / 140)
    assert prop.reason == "kpa stable"


# -- hpa -----------------------------------------------------------------------------------------

HPA = {"metrics": [{"signal": "concurrency", "target": 70}], "minReplicas": 1, "maxReplicas": 20}


def hpa(**over: Any) -> Policy[Any, Any]:
    return build("hpa", {**HPA, **over})


def test_hpa_scaling_disabled_at_zero() -> None:
    prop, _ = decide(hpa(), snap(0, 0, concurrency=at(0, 700)))
    assert prop.replicas == 0
    assert prop.reason == "ScalingDisabled: zero replicas"


def test_hpa_out_of_range_current_skips_the_math() -> None:
    p = hpa(minReplicas=2, maxReplicas=5)
    assert decide(p, snap(0, 7, concurrency=at(0, 70)))[0] == Proposal(5, reason="TooManyReplicas")
    assert decide(p, snap(0, 1, concurrency=at(0, 7000)))[0] == Proposal(2, reason="TooFewReplicas")


def test_hpa_average_value_formula_and_tolerance() -> None:
    p = hpa()
    prop, _ = decide(p, snap(0, 2, concurrency=at(0, 350)))
    assert prop.replicas == 5  # ceil(350 / 70)
    assert prop.reason == "DesiredWithinRange (metrics want 5)"
    assert prop.inputs == {"concurrency": 350.0}
    assert decide(p, snap(0, 4, concurrency=at(0, 300)))[0].replicas == 4  # 300/280 = 1.07


def test_hpa_default_scale_up_rate() -> None:
    prop, _ = decide(hpa(), snap(0, 2, concurrency=at(0, 1400)))
    assert prop.replicas == 6  # max(2 + 4 pods, 2 x 200 %) per 15 s
    assert prop.reason == "ScaleUpLimit (metrics want 20)"
    prop, _ = decide(hpa(), snap(0, 10, concurrency=at(0, 7000)))
    assert prop.replicas == 20  # +100 % beats +4 pods; capped by maxReplicas
    assert prop.reason == "TooManyReplicas (metrics want 100)"


def _hpa_run(p: Policy[Any, Any], current: int, loads: list[tuple[float, float]]) -> list[int]:
    state = None
    out = []
    for t, load in loads:
        prop, state = decide(p, snap(t, current, concurrency=at(t, load)), state)
        assert prop.replicas is not None
        current = prop.replicas
        out.append(current)
    return out


def test_hpa_default_scale_down_stabilization_is_300s() -> None:
    loads = [(0.0, 700.0)] + [(float(t), 70.0) for t in range(15, 316, 15)]
    out = _hpa_run(hpa(), 10, loads)
    assert out[0] == 10
    assert out[loads.index((285.0, 70.0))] == 10
    assert out[loads.index((300.0, 70.0))] == 1  # the t=0 recommendation is 300 s old


def test_hpa_behavior_overrides() -> None:
    loads = [(0.0, 700.0), (15.0, 70.0), (30.0, 70.0), (75.0, 70.0)]
    no_window = hpa(behavior={"scaleDown": {"stabilizationWindowSeconds": 0}})
    assert _hpa_run(no_window, 10, loads) == [10, 1, 1, 1]
    one_pod = hpa(
        behavior={
            "scaleDown": {
                "stabilizationWindowSeconds": 0,
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
            }
        }
    )
    assert _hpa_run(one_pod, 10, loads) == [10, 9, 9, 8]
    assert one_pod.retention_seconds() == 60.0
    assert hpa().retention_seconds() == 300.0


def test_hpa_missing_metric_blocks_scale_down_not_scale_up() -> None:
    p = hpa(metrics=[{"signal": "concurrency", "target": 70}, {"signal": "rps", "target": 100}])
    assert p.required_signals() == ("concurrency", "rps")
    assert decide(p, snap(0, 2, concurrency=at(0, 350)))[0].replicas == 5
    prop, _ = decide(p, snap(0, 4, concurrency=at(0, 70)))
    assert prop.replicas is None
    assert prop.reason == "FailedGetExternalMetric"
    prop, _ = decide(p, snap(0, 4, concurrency=at(0, 70), rps=at(0, 350)))
    assert prop.replicas == 4  # max(1, 4): rps is within tolerance at 4


def test_hpa_value_metric_scales_ready_pods() -> None:
    p = hpa(metrics=[{"signal": "rps", "type": "Value", "target": 100}])
    assert decide(p, snap(0, 3, ready=2, rps=at(0, 300)))[0].replicas == 6  # ceil(3 x 2)
    assert decide(p, snap(0, 3, ready=0, rps=at(0, 300)))[0].replicas is None


def test_hpa_windowed_metric() -> None:
    p = hpa(metrics=[{"signal": "concurrency", "target": 70, "windowSeconds": 30}])
    s = snap(30, 2, concurrency=[(0, 9999), (15, 140), (30, 420)])
    assert decide(p, s)[0].replicas == 4  # mean(140, 420) = 280 -> 4


def test_hpa_params_validation() -> None:
    with pytest.raises(ValidationError, match=r"maxReplicas \(1\) must be >= minReplicas \(3\)"):
        hpa(minReplicas=3, maxReplicas=1)
    with pytest.raises(ValidationError):
        hpa(minReplicas=0)
    with pytest.raises(ValidationError):
        hpa(metrics=[])


# -- keda ----------------------------------------------------------------------------------------

KEDA = {
    "trigger": {"signal": "requests_waiting", "target": 10},
    "activationThreshold": 5,
    "pollingIntervalSeconds": 30,
    "cooldownPeriodSeconds": 300,
}


class KedaDriver:
    """Calls decide at the given times with a chosen current and trigger value."""

    def __init__(self, **over: Any) -> None:
        self.policy = build("keda", {**KEDA, **over})
        self.state: Any = None

    def __call__(self, t: float, current: int, value: float | None) -> Proposal:
        series = {} if value is None else {"requests_waiting": at(t, value)}
        s = snap(t, current, **series)
        if self.state is None:
            self.state = self.policy.initial_state(s)
        prop, self.state = self.policy.decide(s, self.state)
        return prop


def test_keda_activation_is_strictly_above_the_threshold_and_waits_for_a_poll() -> None:
    k = KedaDriver()
    prop = k(0, 0, 5)
    assert prop == Proposal(
        0, reason="ScalingDisabled: HPA idle at zero", inputs={"requests_waiting": 5.0}
    )
    assert k(10, 0, 6).replicas == 0  # active, but the next poll is at 30
    assert k(29.9, 0, 6).replicas == 0
    prop = k(30, 0, 6)
    assert (prop.replicas, prop.reason) == (1, "KEDA activation")


def test_keda_hpa_owns_one_to_n() -> None:
    k = KedaDriver()
    k(0, 0, 20)
    prop = k(15, 1, 35)
    assert prop.replicas == 4  # ceil(35 / 10)
    assert prop.reason == "HPA DesiredWithinRange"
    # The +3 at t=15 counts in the 15 s period: it started at 1 -> max(1 + 4, 1 x 200 %) = 5.
    prop = k(20, 4, 95)
    assert (prop.replicas, prop.reason) == (5, "HPA ScaleUpLimit")
    k = KedaDriver()
    prop = k(0, 3, 95)
    assert prop.replicas == 7  # ceil(9.5) = 10, limited to max(3 + 4, 6)
    assert prop.reason == "HPA ScaleUpLimit"


def test_keda_cooldown_counts_from_the_last_active_poll() -> None:
    k = KedaDriver()
    assert k(0, 0, 20).replicas == 1
    assert k(30, 1, 20).replicas == 2  # active poll at 30
    assert k(45, 2, 20).replicas == 2
    # Inactive from here; the last active poll was at 30, so zero after 330 (strictly).
    for t in range(60, 331, 15):
        prop = k(float(t), 1, 0)
        assert prop.replicas != 0, t
        assert prop.reason.startswith("HPA"), (t, prop.reason)
    prop = k(345, 1, 0)
    assert prop.reason.startswith("HPA")  # not a poll
    prop = k(360, 1, 0)
    assert (prop.replicas, prop.reason) == (0, "KEDA deactivation after cooldown")


def test_keda_activity_between_polls_does_not_count() -> None:
    k = KedaDriver()
    k(0, 0, 20)
    k(30, 1, 0)  # inactive poll: last active stays 0
    k(45, 1, 50)  # busy between polls: not seen by KEDA's loop
    for t in range(60, 301, 30):
        assert k(float(t), 1, 0).replicas != 0
    assert k(330, 1, 0).replicas == 0  # 330 > 0 + 300


def test_keda_initial_cooldown() -> None:
    k = KedaDriver()
    assert k(0, 3, 0).replicas != 0  # 0 > created + 0 is false
    assert k(30, 3, 0).replicas == 0
    k = KedaDriver(initialCooldownPeriodSeconds=120)
    for t in range(0, 121, 30):
        assert k(float(t), 3, 0).replicas != 0, t
    assert k(150, 3, 0).replicas == 0


def test_keda_idle_replica_count() -> None:
    k = KedaDriver(minReplicaCount=2, idleReplicaCount=0)
    prop = k(0, 0, 20)
    assert (prop.replicas, prop.reason) == (2, "KEDA activation")
    assert k(30, 2, 0).replicas == 2
    prop = k(360, 2, 0)
    assert (prop.replicas, prop.reason) == (0, "KEDA deactivation after cooldown")
    assert k(375, 0, 0).replicas == 0
    with pytest.raises(ValidationError, match="idleReplicaCount must be below minReplicaCount"):
        KedaDriver(minReplicaCount=2, idleReplicaCount=2)


def test_keda_below_min_replica_count() -> None:
    k = KedaDriver(minReplicaCount=2)
    prop = k(0, 1, 0)
    assert (prop.replicas, prop.reason) == (2, "below minReplicaCount")
    k = KedaDriver(minReplicaCount=2)
    prop = k(0, 1, 20)  # active: the HPA's minReplicas is max(min, 1) = 2
    assert (prop.replicas, prop.reason) == (2, "TooFewReplicas")


def test_keda_without_metric_has_no_proposal() -> None:
    k = KedaDriver()
    prop = k(0, 1, None)
    assert prop == Proposal(None, reason="scaler error: no metric")
    assert k.state.last_poll is None  # a failed read is not a poll


def test_keda_hpa_default_scale_down_stabilization() -> None:
    k = KedaDriver(cooldownPeriodSeconds=3600)
    k(0, 0, 20)
    assert k(15, 1, 100).replicas == 5
    assert k(30, 5, 100).replicas == 10
    assert k(45, 10, 10).replicas == 10  # wants 1; the HPA holds the 300 s max
    assert k(329, 10, 10).replicas == 10  # 10 was last recommended at t=30 (age 299)
    assert k(330, 10, 10).replicas == 1  # age 300: out of the window


def test_keda_deactivation_holds_until_the_next_poll() -> None:
    k = KedaDriver()
    assert k(0, 0, 20).replicas == 1
    assert k(360, 1, 0).replicas == 0  # inactive poll after the cooldown
    # Between polls the deactivation stays in force (KEDA wrote it; its HPA is idle at zero).
    for t in (365, 375, 385):
        prop = k(float(t), 1, 0)
        assert (prop.replicas, prop.reason) == (0, "KEDA deactivation after cooldown"), t
    # The next poll sees load again: activation is decided afresh.
    assert k(390, 1, 20).reason.startswith("HPA")


def test_keda_reaches_zero_through_the_default_scale_to_zero_guard() -> None:
    # 1 s ticks, 30 s polls, idle 300 s + grace 30 s in the guard: KEDA's proposal must stay at
    # zero between polls, or the guard's idle clock restarts on every non-poll tick.
    doc = parse_policy(
        """
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {name: k}
spec:
  targets:
    - name: m
      policy:
        name: keda
        params: {trigger: {signal: requests_waiting, target: 10}, cooldownPeriodSeconds: 60}
      guards: {minReplicas: 0, maxReplicas: 5, stabilization: {downSeconds: 0}}
"""
    )
    engine = Engine.from_policy(doc)
    replicas = 1
    reached = None
    for t in range(0, 1200):
        obs = [
            Observation("default/m", signals.REPLICAS, float(replicas), float(t)),
            Observation("default/m", signals.WAITING, 0.0, float(t)),
        ]
        (d,) = engine.tick(float(t), obs)
        replicas = d.replicas
        if replicas == 0 and reached is None:
            reached = t
    assert reached is not None
    # KEDA deactivates at the first poll after its (strict) initial cooldown, t=30; the guard
    # then needs its 300 s idle + 30 s grace of zero proposals, every tick: zero at 360.
    assert reached == 360


def test_max_scales_up_on_a_fresh_member_while_another_is_stale() -> None:
    p = build("max", MAX)
    # Token counters last seen 120 s ago (stale at the default 60 s), queue fresh and high.
    s = snap(200, 2, requests_waiting=at(200, 40), **_token_series())
    s.max_age = 60.0
    prop, _ = decide(p, s)
    assert prop.replicas == 10  # ceil(40 / 4): the HPA rule lets the valid metric scale up
    s = snap(200, 12, requests_waiting=at(200, 4), **_token_series())
    s.max_age = 60.0
    prop, _ = decide(p, s)
    assert prop.replicas is None  # but a scale-down needs every member fresh


def test_hpa_memory_with_precomputed_rules_matches_behavior() -> None:
    # The hpa and keda policies hand normalize() rules worked out once; a Behavior given as such
    # (worked out on every call) must give the same replicas, reasons and memory.
    from autoscaler.policy.builtin.hpa_common import Behavior, BehaviorRules, HpaMemory

    behavior = Behavior.model_validate(
        {
            "scaleUp": {"policies": [{"type": "Pods", "value": 2, "periodSeconds": 30}]},
            "scaleDown": {
                "policies": [{"type": "Percent", "value": 50, "periodSeconds": 20}],
                "stabilizationWindowSeconds": 40,
            },
        }
    )
    rules = BehaviorRules.of(behavior)
    assert (rules.up_window, rules.down_window, rules.period) == (0, 40, 30)
    a, b = HpaMemory(), HpaMemory()
    current = 4
    results = []
    for i in range(120):
        now = 1000.0 + i * 5.0
        desired = [1, 9, 3, 12, 4, 2][i % 6] + (i // 20)
        ra = a.normalize(now, current, desired, 1, 20, behavior)
        assert ra == b.normalize(now, current, desired, 1, 20, rules)
        results.append(ra)
        current = ra[0]
    assert a == b
    assert {reason for _, reason in results} >= {"ScaleUpLimit", "ScaleDownLimit"}


def test_proposal_keeps_the_namedtuple_interface() -> None:
    # Proposal became a compiled record; policies written against the NamedTuple still work.
    p = Proposal(3, reason="r")
    assert (p.replicas, p.token_rate, p.reason, dict(p.inputs)) == (3, None, "r", {})
    replicas, rate, reason, inputs = Proposal(2, 10.0, "why", {"x": 1.0})
    assert (replicas, rate, reason, dict(inputs)) == (2, 10.0, "why", {"x": 1.0})
    assert p._replace(replicas=None) == Proposal(None, reason="r")
    assert p == Proposal(3, None, "r") and p != Proposal(4, None, "r")
    assert repr(p) == "Proposal(replicas=3, token_rate=None, reason='r', inputs=mappingproxy({}))"
    assert Proposal._fields == ("replicas", "token_rate", "reason", "inputs")
    assert (p[0], p[2], p[-1], len(p)) == (3, "r", p.inputs, 4)
    assert list(GuardAction("bounds", 5, 4, "maxReplicas 4")) == ["bounds", 5, 4, "maxReplicas 4"]
    with pytest.raises(ValueError, match="no fields"):
        p._replace(replica=1)
