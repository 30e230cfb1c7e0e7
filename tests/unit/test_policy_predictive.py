"""The predictive policy: a forecast floor over its inner reactive policy, used when it pays."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from autoscaler.config import parse_policy
from autoscaler.config.loader import load_policy
from autoscaler.core import signals
from autoscaler.core.errors import PolicyConfigError
from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import Observation, Proposal
from autoscaler.core.windows import SignalWindow
from autoscaler.engine import Engine
from autoscaler.policy.builtin.predictive import PredictiveParams, PredictivePolicy, PredictiveState

BUCKET = 60.0
SEASON = 10  # buckets
TICK = 10.0


def policy(**over: Any) -> PredictivePolicy:
    params: dict[str, Any] = {
        "inner": {"name": "queue", "params": {"targetPerReplica": 4, "windowSeconds": 10}},
        "capacityPerReplica": 5,
        "targetUtilization": 0.8,  # 4 req/s per replica
        "bucketSeconds": BUCKET,
        "seasonSeconds": BUCKET * SEASON,
        "horizonSeconds": 120,  # two buckets
        "errorWindow": 20,
        "minScored": 5,
    }
    params.update(over)
    return PredictivePolicy(PredictiveParams.model_validate(params))


class Driver:
    """Feeds a request counter (rate given per bucket) and a queue depth, tick by tick."""

    def __init__(self, p: PredictivePolicy) -> None:
        self.p = p
        self.windows = {
            signals.REQUESTS_TOTAL: SignalWindow(3600),
            signals.WAITING: SignalWindow(3600),
        }
        self.now = 0.0
        self.count = 0.0
        self.state: PredictiveState | None = None
        self.log: list[tuple[float, Proposal]] = []

    def snap(self) -> Snapshot:
        return Snapshot("ns/m", self.now, 1, 1, 0, self.windows)

    def run(
        self,
        until: float,
        rate: Callable[[int], float],
        waiting: float = 4.0,
        counter: bool = True,
    ) -> Proposal:
        prop = Proposal(None)
        while self.now < until:
            self.now += TICK
            # The increase during (now - TICK, now] happens at the rate of that interval's bucket.
            self.count += rate(int((self.now - TICK) // BUCKET)) * TICK
            if counter:
                self.windows[signals.REQUESTS_TOTAL].add(self.now, self.count)
            self.windows[signals.WAITING].add(self.now, waiting)
            s = self.snap()
            state = self.p.initial_state(s) if self.state is None else self.state
            prop, self.state = self.p.decide(s, state)
            self.log.append((self.now, prop))
        return prop


def ramp(bucket: int) -> float:
    """10 req/s, then 50 req/s in the last 3 buckets of every 10-bucket season."""
    return 50.0 if bucket % SEASON >= 7 else 10.0


def test_forecast_raises_the_floor_ahead_of_a_seasonal_ramp() -> None:
    d = Driver(policy())
    # Six seasons to learn, then approach the seventh season's ramp (bucket 67, t=4020).
    prop = d.run(BUCKET * 65 - TICK, ramp)
    assert prop.replicas == 3  # t=3890: the horizon ends at 4010, before the ramp
    prop = d.run(BUCKET * 65, ramp)  # t=3900: the horizon reaches the ramp
    assert d.state is not None
    # The seasonal-naive forecast of the ramp (50 req/s) needs ceil(50 / 4) = 13 replicas,
    # while the queue policy still sees 4 waiting -> 1 replica: the floor is raised already.
    assert prop.replicas == 13
    assert "seasonal-naive" in prop.reason
    assert prop.inputs["forecast_demand"] == pytest.approx(50.0)
    assert prop.inputs["forecast_floor"] == 13.0
    assert prop.inputs["inner_replicas"] == 1.0
    assert prop.inputs["mae_seasonal_naive"] < prop.inputs["mae_last_value"]
    assert d.state.floors == (3, 3, 13)


def test_the_burst_reserve_adds_square_root_spare_to_the_floor() -> None:
    # The same ramp with burstReserve 1: floor = ceil(f / 4 + 1 x sqrt(f / 5)).
    d = Driver(policy(burstReserve=1))
    d.run(BUCKET * 65, ramp)
    assert d.state is not None
    # f = 10 -> 2.5 + sqrt(2) = 3.91 -> 4; f = 50 -> 12.5 + sqrt(10) = 15.66 -> 16.
    assert d.state.floors == (4, 4, 16)
    # Relative to the load, the quiet level gets more spare (4 vs 3, +33%) than the busy one
    # (16 vs 13, +23%): square-root staffing.
    assert d.run(BUCKET * 65 + TICK, ramp).replicas == 16


def test_reactive_only_while_far_from_the_ramp() -> None:
    d = Driver(policy())
    prop = d.run(BUCKET * 62 + TICK, ramp)  # in bucket 62: the horizon ends in bucket 64
    assert prop.replicas == 3  # the floor for the forecast 10 req/s is ceil(10 / 4) = 3
    assert prop.inputs["forecast_demand"] == pytest.approx(10.0)


def test_falls_back_to_reactive_when_the_predictor_is_worse_than_last_value() -> None:
    # A steady climb of 1 req/s per bucket: last value is 2 buckets behind (error 2), the
    # seasonal-naive forecast a whole season behind (error 10).
    d = Driver(policy(predictors=["seasonal-naive"]))
    prop = d.run(BUCKET * 40, lambda b: 10.0 + b)
    assert prop.replicas == 1  # the queue policy's proposal alone
    assert "no predictor beats last-value" in prop.reason
    assert prop.inputs["mae_seasonal_naive"] == pytest.approx(10.0)
    assert prop.inputs["mae_last_value"] == pytest.approx(2.0)
    assert "forecast_floor" not in prop.inputs
    assert d.state is not None and d.state.floors is None


def test_stops_using_a_predictor_once_its_error_grows() -> None:
    d = Driver(policy(predictors=["seasonal-naive"]))
    d.run(BUCKET * 60, ramp)
    assert d.state is not None and d.state.floors is not None
    # The seasonal pattern stops: a flat 30 req/s; the seasonal forecast keeps predicting the
    # old ramp and its error over the last 20 scored buckets overtakes last value (zero error).
    prop = d.run(BUCKET * 90, lambda b: 30.0)
    assert "no predictor beats last-value" in prop.reason
    assert prop.replicas == 1


def test_never_proposes_below_the_inner_policy() -> None:
    d = Driver(policy())
    d.run(BUCKET * 65, ramp)
    # 200 waiting -> the queue policy wants 50, above the forecast floor of 13.
    prop = d.run(BUCKET * 66, ramp, waiting=200.0)
    assert prop.replicas == 50
    for _, p in d.log:
        assert p.replicas is not None
        assert p.replicas >= p.inputs["inner_replicas"]


def test_missing_data_gives_no_proposal_not_zero() -> None:
    p = policy()
    empty = Snapshot("ns/m", 100.0, 3, 3, 0, {})
    prop, _ = p.decide(empty, p.initial_state(empty))
    assert prop.replicas is None
    # With a forecast floor in force, the queue signal going missing still gives no proposal.
    d = Driver(p)
    d.run(BUCKET * 65, ramp)
    assert d.state is not None and d.state.floors == (3, 3, 13)
    gone = Snapshot("ns/m", d.now + 60, 13, 13, 0, {signals.REQUESTS_TOTAL: SignalWindow(3600)})
    prop, _ = p.decide(gone, d.state)
    assert prop.replicas is None
    assert "no requests_waiting data" in prop.reason


def test_without_a_demand_signal_it_is_the_inner_policy() -> None:
    d = Driver(policy())
    prop = d.run(BUCKET * 30, ramp, counter=False)
    assert prop.replicas == 1
    assert "too few scored forecasts" in prop.reason
    assert "forecast_floor" not in prop.inputs


def test_state_is_frozen_and_carried_across_a_reload() -> None:
    d = Driver(policy())
    d.run(BUCKET * 65, ramp)
    old = d.state
    assert old is not None and old.bank is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        old.floors = ()  # type: ignore[misc]
    s = d.snap()
    # A reload with another capacity keeps the learnt forecasters; the floor follows at once.
    reloaded = policy(capacityPerReplica=10)
    carried = reloaded.carry_state(old, s)
    assert carried.bank is old.bank
    d.p, d.state = reloaded, carried
    prop = d.run(BUCKET * 65 + TICK, ramp)
    assert prop.replicas == 7  # ceil(50 / 8)
    # Other forecasting settings cannot reuse the history: the forecasters start afresh.
    fresh = policy(bucketSeconds=30, seasonSeconds=300).carry_state(old, s)
    assert fresh.bank is None and fresh.bucket == -1
    # The inner state follows the inner policy's name.
    other = policy(inner={"name": "static", "params": {"replicas": 2}})
    assert other.carry_state(old, s).inner_name == "static"


def test_a_gap_longer_than_a_season_restarts_the_forecasters() -> None:
    d = Driver(policy())
    d.run(BUCKET * 65, ramp)
    assert d.state is not None and d.state.bank is not None
    d.now += BUCKET * SEASON * 2  # the target was not decided on for two seasons
    prop = d.run(d.now + BUCKET, ramp)
    assert d.state.bank is not None
    assert d.state.bank.baseline.count <= 2
    assert prop.replicas == 1 and "too few scored" in prop.reason


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"seasonSeconds": 90}, "whole multiple"),
        ({"seasonSeconds": None}, "seasonal-naive needs seasonSeconds"),
        ({"minScored": 30}, "minScored"),
        ({"inner": {"name": "predictive"}}, "cannot wrap another predictive"),
        ({"inner": {"name": "nope"}}, "unknown policy 'nope'"),
        ({"capacityPerReplica": 0}, "greater than 0"),
        ({"burstReserve": -1}, "greater than or equal to 0"),
        ({"burstReserve": 11}, "less than or equal to 10"),
    ],
)
def test_bad_params_are_refused(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        policy(**over)


def test_policy_yaml_errors_name_the_file_line_and_field() -> None:
    text = """\
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {name: p}
spec:
  targets:
    - kind: InferenceService
      namespace: llm
      name: chat
      policy:
        name: predictive
        params:
          inner: {name: queue, params: {targetPerReplica: 4}}
          capacityPerReplica: 1
          bucketSecnds: 300
"""
    with pytest.raises(PolicyConfigError) as err:
        parse_policy(text, "p.yaml")
    message = str(err.value)
    assert "p.yaml:" in message
    assert "bucketSecnds" in message


def test_through_the_engine_the_decision_record_names_the_predictor() -> None:
    """The shipped policy file, run by the engine with its guards over a seasonal ramp."""
    root = Path(__file__).resolve().parents[2]
    doc = load_policy(root / "policies" / "predictive-llm.yaml")
    engine = Engine.from_policy(doc)
    key = sorted(engine.targets)[0]
    tokens = 0.0
    replicas = 2
    decisions = []
    for t in range(15, 3 * 86400 + 18 * 3600, 15):
        # tokens/s: a daily cycle and an evening peak from 18:00 to 21:00.
        hour = (t // 3600) % 24
        rate = 30000.0 + 10000.0 * math.sin(2 * math.pi * t / 86400)
        rate += 60000.0 if 18 <= hour < 21 else 0.0
        tokens += rate * 15
        obs = [
            Observation(key, signals.REPLICAS, float(replicas), float(t)),
            Observation(key, signals.REPLICAS_READY, float(replicas), float(t)),
            Observation(key, signals.PROMPT_TOKENS_TOTAL, tokens, float(t)),
            Observation(key, signals.GENERATION_TOKENS_TOTAL, 0.0, float(t)),
            Observation(key, signals.WAITING, 0.0, float(t)),
        ]
        (d,) = engine.tick(float(t), obs)
        replicas = d.replicas
        decisions.append(d)
    # Day 4, 17:57: the peak starts at 18:00, within the 180 s horizon. The reactive policy
    # sees ~20k tokens/s (ceil(20k / 9k) = 3 replicas); the seasonal forecast of the 18:00
    # bucket (~80k tokens/s) asks for ceil(80k / 9k) = 9, and the guards let it through.
    (before,) = [d for d in decisions if d.ts == 3 * 86400 + 17 * 3600 + 57 * 60]
    assert before.inputs["inner_replicas"] == 3.0
    assert before.inputs["forecast_demand"] == pytest.approx(80000.0, rel=0.002)
    assert before.proposal == 9
    assert before.replicas == 9
    # Both predictors fit an exactly periodic load (MAE ~0); either may win by float noise.
    assert re.match(
        r"predictive: (seasonal-naive|holt-winters) \(MAE \S+ < last-value", before.reason
    )
    assert before.reason.endswith("floor 9 > max 3")
    assert before.inputs["mae_seasonal_naive"] < 1e-6 < before.inputs["mae_last_value"]
    # Five minutes earlier the horizon ends before the peak: no floor above the inner policy.
    (earlier,) = [d for d in decisions if d.ts == 3 * 86400 + 17 * 3600 + 52 * 60]
    assert earlier.proposal == earlier.inputs["inner_replicas"] == 3.0
