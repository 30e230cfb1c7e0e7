"""The test that holds the design together: the live control loop, driven on virtual time by a
trace-fed source and an actuator on the cluster model, produces exactly the decision records the
simulator produces for the same trace and policy."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from autoscaler.config import load_policy
from autoscaler.core.clock import ManualClock
from autoscaler.core.types import Decision
from autoscaler.engine import Engine
from autoscaler.service.loop import ControlLoop
from autoscaler.service.metrics import ServiceMetrics
from autoscaler.sim.cluster_config import ClusterSpec
from autoscaler.sim.runner import SimWorld, simulate
from autoscaler.sim.synth import synth_trace
from autoscaler.testing.simlink import SimActuator, SimSource

ROOT = Path(__file__).resolve().parents[2]
POLICIES = [
    "policies/baselines/knative-kpa.yaml",
    "policies/baselines/hpa-concurrency.yaml",
    "policies/baselines/keda-queue.yaml",
    "policies/llm-chat.yaml",
    "policies/code-completion.yaml",
]


async def _live(policy_path: str, spec: ClusterSpec, seed: int) -> list[dict[str, object]]:
    doc = load_policy(ROOT / policy_path)
    trace = synth_trace(1800, 3.0, seed=seed, diurnal_period_s=1800, burst_rate_per_h=4)
    engine = Engine.from_policy(doc)
    key = sorted(engine.targets)[0]
    world = SimWorld(trace, key, spec, seed)
    stop = asyncio.Event()
    clock = ManualClock(world.base)
    engine_name = doc.spec.targets[0].actuation.engine
    loop = ControlLoop(
        engine,
        [SimSource(world, stop)],
        {engine_name: SimActuator(world)},
        clock,
        ServiceMetrics(CollectorRegistry()),
        history=10**6,
    )
    await loop.run(stop, interval=spec.signals.tick_seconds)
    return [{k: v for k, v in r.items() if k != "actuation"} for r in loop.records[key]]


def _sim(policy_path: str, spec: ClusterSpec, seed: int) -> list[dict[str, object]]:
    doc = load_policy(ROOT / policy_path)
    trace = synth_trace(1800, 3.0, seed=seed, diurnal_period_s=1800, burst_rate_per_h=4)
    out: list[Decision] = []
    simulate(trace, doc, spec, seed=seed, on_decision=out.append)
    return [d.to_dict() for d in out]


@pytest.mark.parametrize("policy", POLICIES)
async def test_live_loop_decides_exactly_as_the_simulator(policy: str) -> None:
    spec = ClusterSpec.model_validate({"coldStart": {"meanSeconds": 60, "cv": 0.3}})
    live = await _live(policy, spec, seed=4)
    sim = _sim(policy, spec, seed=4)
    assert len(live) == len(sim) > 1000
    assert live == sim
    assert any(d["replicas"] != d["current"] for d in sim)  # the run actually scaled


async def test_parity_holds_with_signal_lag_and_a_slow_scrape() -> None:
    spec = ClusterSpec.model_validate(
        {"signals": {"tickSeconds": 1, "scrapeSeconds": 5, "lagSeconds": 3}}
    )
    live = await _live("policies/llm-chat.yaml", spec, seed=9)
    assert live == _sim("policies/llm-chat.yaml", spec, seed=9)
