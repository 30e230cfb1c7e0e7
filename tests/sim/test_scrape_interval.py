"""Load signals reach the policy at the scrape interval, not every tick."""

from __future__ import annotations

import numpy as np
import pytest

from autoscaler.config import parse_policy
from autoscaler.core.types import Decision
from autoscaler.sim.cluster_config import ClusterSpec, Signals
from autoscaler.sim.runner import simulate
from autoscaler.sim.traces import Trace

POLICY = """
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {name: q}
spec:
  targets:
    - name: m
      policy: {name: queue, params: {targetPerReplica: 1, windowSeconds: 60, aggregation: last}}
      guards:
        minReplicas: 1
        maxReplicas: 50
        stabilization: {upSeconds: 0, downSeconds: 0}
        restartHoldSeconds: 0
        holdWhileScaling: {enabled: false}
"""


def _trace() -> Trace:
    # A steady stream of 1 s jobs at 3/s on one replica: the queue grows every second.
    arrival = np.arange(0.0, 120.0, 1 / 3)
    n = arrival.shape[0]
    return Trace(
        "steady", "csv", 0.0, arrival, np.zeros(n, np.int64), np.zeros(n, np.int64), np.ones(n)
    )


def _decisions(scrape: float | None) -> list[Decision]:
    spec = ClusterSpec.model_validate(
        {
            "coldStart": {"meanSeconds": 1000},
            "maxQueueSeconds": 1000,
            "signals": {"tickSeconds": 1, "scrapeSeconds": scrape},
        }
    )
    out: list[Decision] = []
    simulate(_trace(), parse_policy(POLICY), spec, on_decision=out.append)
    return out[1:]  # without the priming tick


def test_every_tick_scrape_sees_new_queue_depth_each_second() -> None:
    inputs = [d.inputs.get("requests_waiting") for d in _decisions(None)[:30]]
    assert len(set(inputs)) > 20


def test_fifteen_second_scrape_holds_the_value_between_scrapes() -> None:
    decisions = _decisions(15.0)[:60]
    seen = [d.inputs["requests_waiting"] for d in decisions]
    # Scrapes land on ticks 0, 15, 30, 45 (t = 1, 16, 31, 46 s): the value changes only there.
    changes = [i for i in range(1, len(seen)) if seen[i] != seen[i - 1]]
    assert changes and all(i % 15 == 0 for i in changes)
    assert decisions[14].ts - decisions[0].ts == 14.0


def test_scrape_interval_must_be_whole_ticks() -> None:
    with pytest.raises(ValueError, match="whole multiple"):
        Signals.model_validate({"tickSeconds": 2, "scrapeSeconds": 5})
    assert Signals.model_validate({"tickSeconds": 5, "scrapeSeconds": 15}).scrape_every == 3
