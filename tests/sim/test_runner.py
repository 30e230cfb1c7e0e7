"""The simulator runner and cluster model: determinism, KPA parity and hand-computed behaviour.

Tiny scenarios use explicit service times in the trace (service mode) and a deterministic cold
start, so every TTFT, drop and billed second below is computed by hand in the comments.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoscaler.config import parse_policy
from autoscaler.config.models import PolicyFile
from autoscaler.core.types import Decision
from autoscaler.policy.compat.knative import KpaDecider, KpaSpec
from autoscaler.sim.cluster import Cluster
from autoscaler.sim.cluster_config import ClusterSpec
from autoscaler.sim.runner import RunResult, simulate
from autoscaler.sim.synth import synth_trace
from autoscaler.sim.traces import Trace

ROOT = Path(__file__).resolve().parents[2]
WALL_FIELDS = ("wall_seconds", "sim_requests_per_s")


# -- helpers ---------------------------------------------------------------------------------


def policy_file(rel: str) -> PolicyFile:
    path = ROOT / rel
    return parse_policy(path.read_text(encoding="utf-8"), str(path))


def _policy(name: str, policy: str, guards: str) -> PolicyFile:
    return parse_policy(
        f"""
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {{name: {name}}}
spec:
  targets:
    - kind: InferenceService
      namespace: default
      name: model
      policy: {policy}
      guards: {guards}
      actuation: {{engine: kserve, mode: pin}}
"""
    )


def static_policy(replicas: int) -> PolicyFile:
    return _policy(
        "static",
        f"{{name: static, params: {{replicas: {replicas}}}}}",
        "{minReplicas: 0, maxReplicas: 100, restartHoldSeconds: 0}",
    )


def queue_policy(target: float, min_replicas: int = 0, window: float = 1) -> PolicyFile:
    """desired = ceil(waiting / target) from the latest sample in the window (samples keep their
    scrape time, so under signal lag the window must reach back past the lag); every guard out
    of the way."""
    return _policy(
        "queue",
        "{name: queue, params: "
        f"{{targetPerReplica: {target}, windowSeconds: {window}, aggregation: last}}}}",
        f"{{minReplicas: {min_replicas}, maxReplicas: 100, restartHoldSeconds: 0, "
        "stabilization: {upSeconds: 0, downSeconds: 0}, holdWhileScaling: {enabled: false}, "
        "scaleToZero: {idleSeconds: 0, graceSeconds: 0}}",
    )


def spec(**kw: Any) -> ClusterSpec:
    data: dict[str, Any] = {
        "initialReplicas": 1,
        "coldStart": {"meanSeconds": 0, "cv": 0},
        "service": {"concurrency": 1},
        "maxQueueSeconds": 60,
    }
    data.update(kw)
    return ClusterSpec.model_validate(data)


def service_trace(arrival: list[float], service: list[float]) -> Trace:
    n = len(arrival)
    zeros = np.zeros(n, np.int64)
    return Trace("t", "csv", 0.0, np.array(arrival), zeros, zeros, np.array(service))


def run(
    trace: Trace, policy: PolicyFile, cluster: ClusterSpec, **kw: Any
) -> tuple[RunResult, list[Decision]]:
    decisions: list[Decision] = []
    result = simulate(trace, policy, cluster, on_decision=decisions.append, **kw)
    return result, decisions


def sim_metrics(result: RunResult) -> dict[str, Any]:
    return {k: v for k, v in result.metrics.items() if k not in WALL_FIELDS}


def fake_timer(*values: float) -> Callable[[], float]:
    return iter(values).__next__


# -- determinism -----------------------------------------------------------------------------


def llm_trace() -> Trace:
    # 15 minutes of chat traffic, one diurnal cycle and a few 4x bursts: enough to scale up and
    # down with 90 s cold starts.
    return synth_trace(
        900.0,
        12.0,
        seed=11,
        diurnal_period_s=900.0,
        diurnal_amplitude=0.8,
        burst_rate_per_h=12.0,
        burst_duration_s=60.0,
        token_profile="azure-conv",
    )


LLM_POLICIES = ["policies/baselines/knative-kpa.yaml", "policies/llm-chat.yaml"]


@pytest.mark.parametrize("rel", LLM_POLICIES)
def test_same_seed_gives_identical_runs(rel: str) -> None:
    trace = llm_trace()
    assert trace.requests > 5000 and trace.input_tokens.all()
    policy = policy_file(rel)
    cluster = ClusterSpec()  # the calibrated defaults: llm mode, 90 s cold start with cv 0.25
    a, da = run(trace, policy, cluster, seed=3, timer=fake_timer(0.0, 1.5))
    b, db = run(trace, policy, cluster, seed=3, timer=fake_timer(10.0, 12.5))
    assert a.metrics["wall_seconds"] != b.metrics["wall_seconds"]
    assert sim_metrics(a) == sim_metrics(b)
    np.testing.assert_array_equal(a.ttft, b.ttft)  # NaN (dropped) compares equal
    assert [d.to_dict() for d in da] == [d.to_dict() for d in db]
    assert a.timeline == b.timeline
    # Not a trivial run: the policy scaled, cold starts happened, requests were served.
    assert a.metrics["scale_events"] >= 2
    assert a.metrics["cold_starts"] >= 1
    assert a.metrics["max_replicas"] >= 2
    assert a.metrics["completed"] > 0.9 * trace.requests


@pytest.mark.parametrize("rel", LLM_POLICIES)
def test_seed_changes_cold_starts_only_when_they_vary(rel: str) -> None:
    trace = llm_trace()
    policy = policy_file(rel)
    varied = ClusterSpec.model_validate({"coldStart": {"meanSeconds": 90, "cv": 0.5}})
    a, _ = run(trace, policy, varied, seed=1)
    b, _ = run(trace, policy, varied, seed=2)
    assert a.metrics["cold_starts"] >= 1
    assert sim_metrics(a) != sim_metrics(b) or not np.array_equal(a.ttft, b.ttft, equal_nan=True)
    # With cv 0 the cold start is a constant and llm mode draws nothing else: the seed is moot.
    fixed = ClusterSpec.model_validate({"coldStart": {"meanSeconds": 90, "cv": 0}})
    c, _ = run(trace, policy, fixed, seed=1)
    d, _ = run(trace, policy, fixed, seed=2)
    assert sim_metrics(c) == sim_metrics(d)
    np.testing.assert_array_equal(c.ttft, d.ttft)


def test_seed_drives_the_service_model_draws() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    arrival = np.cumsum(rng.exponential(1 / 50.0, n))
    zeros = np.zeros(n, np.int64)
    trace = Trace("t", "csv", 0.0, arrival, zeros, zeros, None)
    cluster = spec(
        service={"concurrency": 1, "meanSeconds": 0.015, "distribution": "lognormal", "cv": 2.0}
    )
    a, _ = run(trace, static_policy(1), cluster, seed=1)
    b, _ = run(trace, static_policy(1), cluster, seed=1)
    c, _ = run(trace, static_policy(1), cluster, seed=2)
    np.testing.assert_array_equal(a.ttft, b.ttft)
    assert not np.array_equal(a.ttft, c.ttft)


# -- KPA parity ------------------------------------------------------------------------------


def bursty_service_trace() -> Trace:
    """Rates (rps) by phase: steady, a 10x burst (panic), medium, idle (scale to zero), wake."""
    rng = np.random.default_rng(42)
    phases = [
        (0, 120, 40.0),
        (120, 150, 400.0),
        (150, 400, 90.0),
        (400, 600, 0.0),
        (600, 700, 30.0),
    ]
    parts = []
    for lo, hi, rate in phases:
        count = rng.poisson(rate * (hi - lo))
        parts.append(np.sort(rng.uniform(lo, hi, count)))
    arrival = np.concatenate(parts)
    zeros = np.zeros(arrival.shape[0], np.int64)
    return Trace("bursty", "csv", 0.0, arrival, zeros, zeros, None)


def test_kpa_in_the_simulator_decides_as_the_compat_port() -> None:
    trace = bursty_service_trace()
    cluster = spec(
        initialReplicas=1,
        service={"concurrency": 100, "meanSeconds": 1.0, "distribution": "exponential"},
        coldStart={"meanSeconds": 8, "cv": 0.3},
        maxQueueSeconds=30,
    )
    result, decisions = run(
        trace,
        policy_file("policies/baselines/knative-kpa.yaml"),
        cluster,
        seed=9,
        timeline_points=10**6,
    )
    tick = cluster.signals.tick_seconds
    demand = np.array(result.timeline.demand)
    assert len(decisions) == len(demand) + 1  # the priming decision, then one per tick

    first = decisions[0]
    assert first.proposal is None  # no concurrency sample yet
    decider = KpaDecider(KpaSpec(), first.ts, first.ready)  # Knative's defaults, as the baseline
    compared = 0
    panicked = False
    for i, d in enumerate(decisions[1:]):
        if "concurrency_stable" not in d.inputs:
            assert d.proposal is None
            continue
        stable = d.inputs["concurrency_stable"]
        panic = d.inputs["concurrency_panic"]
        # The windowed inputs are the means of the concurrency the cluster reported: the samples
        # in (now - 60 s, now] and (now - 6 s, now].
        assert stable == pytest.approx(
            demand[max(0, i + 1 - int(60 / tick)) : i + 1].mean(), rel=1e-9, abs=1e-9
        )
        assert panic == pytest.approx(
            demand[max(0, i + 1 - int(6 / tick)) : i + 1].mean(), rel=1e-9, abs=1e-9
        )
        res = decider.step(d.ts, stable, panic, d.ready)
        assert res.valid
        assert res.desired == d.proposal, f"tick {d.ts}: port {res.desired} != sim {d.proposal}"
        panicked |= decider.panicking
        compared += 1
    assert compared == len(decisions) - 1
    # The scenario exercised what matters: panic mode, several sizes, scale to zero and back.
    proposals = [d.proposal for d in decisions[1:] if d.proposal is not None]
    assert panicked
    assert max(proposals) >= 5
    assert 0 in {d.replicas for d in decisions}
    assert result.metrics["cold_starts"] >= 2
    assert result.metrics["cold_start_requests"] > 0


# -- behaviour -------------------------------------------------------------------------------


def test_scale_down_drains_in_flight_requests_and_bills_until_done() -> None:
    # Two ready replicas (the queue policy holds the starting count without data). r0 at 0 s and
    # r1 at 0.1 s start at once on separate replicas (10 s each). At the end of the first tick
    # nothing waits, so the policy asks for minReplicas 1: the less busy replica (busy to 10 s)
    # is retired but finishes r0 and is billed 0-10 s. r2 at 5 s must not go to the retired
    # replica (free at 10 s): it waits for the other (free at 10.1 s), TTFT 5.1 s.
    trace = service_trace([0.0, 0.1, 5.0], [10.0, 10.0, 1.0])
    cluster = spec(initialReplicas=2, maxQueueSeconds=20, gpusPerReplica=2)
    result, decisions = run(trace, queue_policy(1, min_replicas=1), cluster)
    assert decisions[0].replicas == 2
    assert decisions[1].ts == 1.0 and decisions[1].replicas == 1
    m = result.metrics
    assert m["completed"] == 3 and m["dropped"] == 0
    np.testing.assert_allclose(result.ttft, [0.0, 0.0, 5.1], atol=1e-9)
    # The run ends maxQueueSeconds after the tick of the last arrival: 6 + 20 = 26 s.
    # Billed: retired replica 0-10 s, survivor 0-26 s.
    end = 26.0
    billed = 10.0 + 26.0
    assert m["replica_hours"] == pytest.approx(billed / 3600, abs=1e-6)
    assert m["gpu_hours"] == pytest.approx(2 * billed / 3600, abs=1e-6)
    assert m["mean_replicas"] == pytest.approx(billed / end, abs=1e-6)
    assert m["scale_events"] == 1
    assert m["max_replicas"] == 2


def test_gpu_hours_are_replica_hours_times_gpus_per_replica() -> None:
    trace = service_trace([0.0, 3.0], [1.0, 1.0])
    for gpus in (0.5, 1.0, 4.0):
        result, _ = run(trace, static_policy(3), spec(gpusPerReplica=gpus, maxQueueSeconds=10))
        m = result.metrics
        # 3 replicas for the whole run: 4 s of ticks (last arrival in the tick ending at 4 s)
        # plus 10 s of maxQueueSeconds.
        assert m["replica_hours"] == pytest.approx(3 * 14.0 / 3600, abs=1e-6)
        assert m["gpu_hours"] == pytest.approx(gpus * 3 * 14.0 / 3600, abs=1e-6)


def test_waiting_longer_than_max_queue_seconds_drops() -> None:
    # One replica, concurrency 1, r0 holds it 0-10 s. r1 (0.5 s) would wait 9.5 s > 2 s: dropped.
    # r2 (8 s) starts at 10 s, a wait of exactly maxQueueSeconds: served, TTFT 2 s.
    # r3 (8.5 s) would start at 11 s after a 2.5 s wait: dropped.
    trace = service_trace([0.0, 0.5, 8.0, 8.5], [10.0, 1.0, 1.0, 1.0])
    result, _ = run(trace, static_policy(1), spec(maxQueueSeconds=2), slo_ttft_s=0.5)
    m = result.metrics
    assert m["requests"] == 4 and m["completed"] == 2 and m["dropped"] == 2
    assert np.isnan(result.ttft[1]) and np.isnan(result.ttft[3])
    np.testing.assert_allclose(result.ttft[[0, 2]], [0.0, 2.0], atol=1e-9)
    # Percentiles are over served requests; SLO attainment is over all requests.
    assert m["ttft_p50_s"] == pytest.approx(1.0)
    assert m["slo_attainment"] == pytest.approx(1 / 4)


def test_slo_attainment_counts_every_request() -> None:
    # TTFTs 0, 1, 2, 3 s (one replica, 1 s requests all arriving at 0) and one dropped (it
    # would wait 4 s > maxQueueSeconds 3.5).
    trace = service_trace([0.0] * 5, [1.0] * 5)
    cluster = spec(maxQueueSeconds=3.5)
    for slo, ok in [(0.0, 1), (0.5, 1), (1.0, 2), (2.5, 3), (3.0, 4), (100.0, 4)]:
        result, _ = run(trace, static_policy(1), cluster, slo_ttft_s=slo)
        assert result.metrics["dropped"] == 1
        assert result.metrics["slo_attainment"] == pytest.approx(ok / 5), slo
    # Without an explicit SLO the cluster model's sloTtftSeconds applies.
    result, _ = run(trace, static_policy(1), spec(maxQueueSeconds=3.5, sloTtftSeconds=2.0))
    assert result.metrics["slo_attainment"] == pytest.approx(3 / 5)


def test_zero_replicas_buffer_requests_until_the_cold_start_ends() -> None:
    # No replica at first. r0 (0.5 s) and r1 (0.7 s) wait in the activator; at the end of the
    # first tick the queue policy asks for one replica, created at 1 s and ready at 6 s
    # (deterministic 5 s cold start). r2 (3 s) also arrives before it is ready: three cold-start
    # requests, all starting at 6 s (4 slots). r3 (6.5 s) finds it ready: TTFT 0, not counted.
    # Then nothing waits, and the policy scales to zero at 7 s; the replica drains r3 (to 7.5 s)
    # and is billed 1-7.5 s.
    trace = service_trace([0.5, 0.7, 3.0, 6.5], [1.0, 1.0, 1.0, 1.0])
    cluster = spec(
        initialReplicas=0,
        coldStart={"meanSeconds": 5, "cv": 0},
        service={"concurrency": 4},
    )
    result, decisions = run(trace, queue_policy(10), cluster)
    m = result.metrics
    assert decisions[0].replicas == 0
    ups = [d for d in decisions if d.replicas > d.current]
    assert [(d.ts, d.replicas) for d in ups] == [(1.0, 1)]
    assert m["cold_starts"] == 1
    assert m["cold_start_requests"] == 3
    assert m["completed"] == 4 and m["dropped"] == 0
    np.testing.assert_allclose(result.ttft, [5.5, 5.3, 3.0, 0.0], atol=1e-9)
    # The replica reports ready at the tick ending at 6 s, and the measured cold start is 5 s.
    ready = [(d.ts, d.ready) for d in decisions if d.ready]
    assert ready[0] == (6.0, 1)
    downs = [d for d in decisions if d.replicas < d.current]
    assert [(d.ts, d.replicas) for d in downs] == [(7.0, 0)]
    assert m["replica_hours"] == pytest.approx(6.5 / 3600, abs=1e-6)


def test_zero_replicas_and_no_scale_up_drops_after_max_queue_seconds() -> None:
    # A static 0: the activator holds the request, nothing ever serves it, it times out.
    trace = service_trace([0.5], [1.0])
    result, _ = run(trace, static_policy(0), spec(initialReplicas=0, maxQueueSeconds=5))
    m = result.metrics
    assert m["dropped"] == 1 and m["completed"] == 0
    assert m["cold_start_requests"] == 1
    assert m["replica_hours"] == 0 and m["gpu_hours"] == 0
    assert m["slo_attainment"] == 0 and m["ttft_p50_s"] is None


@pytest.mark.parametrize(("tick", "lag"), [(1.0, 3.0), (2.0, 4.0)])
def test_signal_lag_delays_the_first_scale_up(tick: float, lag: float) -> None:
    # One replica, concurrency 1, 100 s requests: a burst of 5 at 10.2 s leaves 4 waiting at the
    # end of the tick holding 10.2 s. Without lag the queue policy scales to ceil(4 / 1) = 4 at
    # that tick's end; with lagSeconds the sample reaches it lag seconds later, and so does the
    # scale-up.
    trace = service_trace([10.2] * 5, [100.0] * 5)

    def first_up(lag_s: float) -> tuple[Decision, RunResult]:
        cluster = spec(
            signals={"tickSeconds": tick, "lagSeconds": lag_s},
            coldStart={"meanSeconds": 2, "cv": 0},
            maxQueueSeconds=200,
        )
        result, decisions = run(trace, queue_policy(1, min_replicas=1, window=10), cluster)
        ups = [d for d in decisions if d.replicas > d.current]
        assert ups, "no scale-up"
        assert result.metrics["dropped"] == 0
        return ups[0], result

    up_now, r_now = first_up(0.0)
    up_lag, r_lag = first_up(lag)
    tick_end = (10.2 // tick + 1) * tick
    assert up_now.ts == pytest.approx(tick_end)
    assert up_lag.ts == pytest.approx(tick_end + lag)
    assert up_now.replicas == up_lag.replicas == 4
    assert up_now.inputs == up_lag.inputs == {"requests_waiting": 4.0}
    # r0 starts at once; the three new replicas take three of the others 2 s (the cold start)
    # after the decision, so the lag costs each of them exactly the lag.
    waits_now = np.sort(r_now.ttft)[:4]
    waits_lag = np.sort(r_lag.ttft)[:4]
    np.testing.assert_allclose(waits_now, [0.0] + [tick_end + 2.0 - 10.2] * 3, atol=1e-9)
    np.testing.assert_allclose(waits_lag - waits_now, [0.0] + [lag] * 3, atol=1e-9)


def test_lag_is_rounded_up_to_whole_ticks() -> None:
    trace = service_trace([10.2] * 5, [100.0] * 5)
    ts = []
    for lag in (0.0, 2.5, 3.0):
        cluster = spec(signals={"tickSeconds": 1.0, "lagSeconds": lag})
        _, decisions = run(trace, queue_policy(1, min_replicas=1, window=10), cluster)
        ts.append(next(d.ts for d in decisions if d.replicas > d.current))
    assert ts == [11.0, 14.0, 14.0]


def test_status_signals_are_not_lagged() -> None:
    """Replica status comes from the Kubernetes status source at once; only scraped load signals
    lag. Every decision must see the replica count the previous one left, or guards work from a
    stale count and the runner applies their stale-based targets (cancelling starting replicas)."""
    trace = llm_trace()
    policy = policy_file("policies/llm-chat.yaml")
    fixed = {"coldStart": {"meanSeconds": 90, "cv": 0}}
    base, _ = run(trace, policy, ClusterSpec.model_validate(fixed), seed=1)
    lagged = ClusterSpec.model_validate({**fixed, "signals": {"lagSeconds": 5}})
    result, decisions = run(trace, policy, lagged, seed=1)
    for prev, d in itertools.pairwise(decisions):
        assert d.current == prev.replicas, d.ts
    # The lag shifts decisions by a few seconds; it does not make the policy flap.
    assert result.metrics["scale_events"] <= base.metrics["scale_events"] + 2
    assert result.metrics["cold_starts"] <= base.metrics["cold_starts"] + 2


def test_token_counters_count_started_requests_only() -> None:
    # LLM mode, one replica with one sequence slot: r0 (100 prompt tokens, 1000 output tokens at
    # 7 ms) holds it for ~7 s; r1 arrives at 0.5 s and times out after 2 s, never prefilled;
    # r2 arrives at 20 s and is served. The counters (vLLM's prompt/generation token totals)
    # include r0 and r2 only.
    cluster_spec = ClusterSpec.model_validate(
        {"maxQueueSeconds": 2, "llm": {"tpotSlopePerSeq": 0}, "coldStart": {"meanSeconds": 0}}
    )
    arrival = np.array([0.0, 0.5, 20.0])
    tin = np.array([100, 50, 30], np.int64)
    tout = np.array([1000, 10, 5], np.int64)
    prefill = tin / cluster_spec.llm.prefill_tokens_per_second
    cluster = Cluster(
        cluster_spec,
        arrival,
        prefill,
        tout.astype(np.float64),
        tin,
        tout,
        1,
        True,
        np.random.default_rng(0),
    )
    cluster.add_ready(1, 0.0)
    for t in range(30):
        cluster.admit(t + 1.0)
        cluster.serve(float(t), t + 1.0)
    assert cluster.dropped == 1 and np.isnan(cluster.ttft[1])
    assert cluster.prompt_tokens == 130
    assert cluster.generation_tokens == 1005
    np.testing.assert_allclose(cluster.ttft[[0, 2]], prefill[[0, 2]], atol=1e-12)
