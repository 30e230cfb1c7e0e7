"""``simulate(..., measure_from=T)``: the whole trace is replayed, only ``[T, end]`` is reported.

Tiny service-mode scenarios with deterministic cold starts, as in test_runner.py, so every figure
below is computed by hand in the comments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoscaler.cli import main
from autoscaler.config import parse_policy
from autoscaler.config.models import PolicyFile
from autoscaler.core.types import Decision
from autoscaler.sim.cluster_config import ClusterSpec
from autoscaler.sim.runner import RunResult, simulate
from autoscaler.sim.synth import synth_trace
from autoscaler.sim.traces import Trace

ROOT = Path(__file__).resolve().parents[2]
WALL = ("wall_seconds", "sim_requests_per_s")


def _policy(policy: str, guards: str) -> PolicyFile:
    return parse_policy(
        f"""
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {{name: p}}
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
        f"{{name: static, params: {{replicas: {replicas}}}}}",
        "{minReplicas: 0, maxReplicas: 100, restartHoldSeconds: 0}",
    )


def queue_policy(target: float) -> PolicyFile:
    return _policy(
        "{name: queue, params: "
        f"{{targetPerReplica: {target}, windowSeconds: 1, aggregation: last}}}}",
        "{minReplicas: 0, maxReplicas: 100, restartHoldSeconds: 0, "
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
    zeros = np.zeros(len(arrival), np.int64)
    return Trace("t", "csv", 0.0, np.array(arrival), zeros, zeros, np.array(service))


def run(
    trace: Trace, policy: PolicyFile, cluster: ClusterSpec, **kw: Any
) -> tuple[RunResult, list[Decision]]:
    decisions: list[Decision] = []
    result = simulate(trace, policy, cluster, on_decision=decisions.append, **kw)
    return result, decisions


def test_static_gpu_hours_cover_the_window_only() -> None:
    # Last arrival at 20 s: the run ends at the tick boundary after it (21 s) plus 10 s of
    # maxQueueSeconds = 31 s. 3 replicas all along, 2 GPUs each.
    trace = service_trace([0.0, 3.0, 20.0], [1.0, 1.0, 1.0])
    cluster = spec(maxQueueSeconds=10, gpusPerReplica=2)
    for cut in (0.0, 12.5, 20.0, 30.0):
        m = run(trace, static_policy(3), cluster, measure_from=cut)[0].metrics
        assert m["replica_hours"] == pytest.approx(3 * (31.0 - cut) / 3600, abs=1e-6), cut
        assert m["gpu_hours"] == pytest.approx(2 * 3 * (31.0 - cut) / 3600, abs=1e-6), cut
        assert m["mean_replicas"] == pytest.approx(3.0), cut
        assert m["max_replicas"] == 3
        assert m["scale_events"] == 0
    # Requests at or after the cut: 12.5 -> one (20 s); 20.0 -> the same one; 30.0 -> none.
    assert run(trace, static_policy(3), cluster, measure_from=12.5)[0].metrics["requests"] == 1
    assert run(trace, static_policy(3), cluster, measure_from=20.0)[0].metrics["requests"] == 1
    empty = run(trace, static_policy(3), cluster, measure_from=30.0)[0]
    assert empty.metrics["requests"] == 0 and empty.ttft.shape == (0,)
    assert empty.metrics["ttft_p99_s"] is None


def test_requests_before_the_cut_are_excluded_from_attainment_and_percentiles() -> None:
    # One replica, 1 s requests. Five arrive at 0 s: TTFTs 0, 1, 2, 3 and one dropped (it would
    # wait 4 s > 3.5). Two arrive at 20 and 20.5 s to an idle replica: TTFT 0 and 0.5.
    trace = service_trace([0.0] * 5 + [20.0, 20.5], [1.0] * 7)
    cluster = spec(maxQueueSeconds=3.5)
    whole = run(trace, static_policy(1), cluster, slo_ttft_s=0.25)[0]
    assert whole.metrics["requests"] == 7 and whole.metrics["dropped"] == 1
    assert whole.metrics["slo_attainment"] == pytest.approx(2 / 7)
    late = run(trace, static_policy(1), cluster, slo_ttft_s=0.25, measure_from=10.0)[0]
    m = late.metrics
    assert m["requests"] == 2 and m["completed"] == 2 and m["dropped"] == 0
    assert m["slo_attainment"] == pytest.approx(1 / 2)  # 0 s within 0.25 s, 0.5 s not
    assert m["ttft_p50_s"] == pytest.approx(0.25)
    assert m["ttft_p99_s"] == pytest.approx(0.495)
    np.testing.assert_allclose(late.ttft, [0.0, 0.5], atol=1e-9)
    # The early requests were still served: the replica's history is the same run's.
    np.testing.assert_allclose(whole.ttft[5:], late.ttft, atol=1e-9)


def cold_scenario() -> tuple[Trace, ClusterSpec]:
    # From test_runner: no replica at first; r0 (0.5 s), r1 (0.7 s) and r2 (3 s) arrive before the
    # one replica asked for at 1 s is ready (6 s): three cold-start requests. r3 (6.5 s) finds it
    # ready. The policy scales to zero at 7 s; the replica drains r3 and is billed 1-7.5 s.
    # The run ends at 7 + 60 = 67 s.
    trace = service_trace([0.5, 0.7, 3.0, 6.5], [1.0, 1.0, 1.0, 1.0])
    cluster = spec(
        initialReplicas=0, coldStart={"meanSeconds": 5, "cv": 0}, service={"concurrency": 4}
    )
    return trace, cluster


@pytest.mark.parametrize(
    ("cut", "cold_requests", "cold_starts", "events", "max_replicas", "billed"),
    [
        # Whole run: scale up at 1 s and down at 7 s.
        (0.0, 3, 1, 2, 1, 6.5),
        # Cut inside the first tick [0, 1): r0 is before it, r1 and r2 after; the scale-up at 1 s
        # is inside the window.
        (0.6, 2, 1, 2, 1, 6.5),
        # Cut at 1.5 s: only r2 is a cold-start request in the window; the scale-up (1 s) is
        # before it, the scale-down (7 s) inside; the replica (starting) exists at the cut and
        # is billed 1.5-7.5 s.
        (1.5, 1, 0, 1, 1, 6.0),
        # Cut at 7.2 s: the replica was retired at 7 s and drains until 7.5 s: billed 0.3 s,
        # but no replica is asked for inside the window.
        (7.2, 0, 0, 0, 0, 0.3),
    ],
)
def test_cold_starts_and_scale_events_count_inside_the_window(
    cut: float, cold_requests: int, cold_starts: int, events: int, max_replicas: int, billed: float
) -> None:
    trace, cluster = cold_scenario()
    result, decisions = run(trace, queue_policy(10), cluster, measure_from=cut)
    m = result.metrics
    assert m["cold_start_requests"] == cold_requests
    assert m["cold_starts"] == cold_starts
    assert m["scale_events"] == events
    assert m["max_replicas"] == max_replicas
    assert m["replica_hours"] == pytest.approx(billed / 3600, abs=1e-6)
    assert m["mean_replicas"] == pytest.approx(billed / (67.0 - cut), abs=1e-6)
    # The decisions are those of the whole run, whatever the window.
    assert [(d.ts, d.replicas) for d in decisions if d.replicas != d.current] == [
        (1.0, 1),
        (7.0, 0),
    ]


def llm_trace() -> Trace:
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


@pytest.mark.parametrize("rel", ["policies/baselines/knative-kpa.yaml", "policies/llm-chat.yaml"])
def test_measuring_from_the_start_is_the_whole_run_byte_for_byte(rel: str) -> None:
    trace = llm_trace()
    path = ROOT / rel
    policy = parse_policy(path.read_text(encoding="utf-8"), str(path))
    cluster = ClusterSpec()
    a, da = run(trace, policy, cluster, seed=3)
    b, db = run(trace, policy, cluster, seed=3, measure_from=0.0)
    assert json.dumps(a.metrics, sort_keys=True) == json.dumps(b.metrics, sort_keys=True)
    assert a.ttft.tobytes() == b.ttft.tobytes()
    assert a.timeline == b.timeline
    assert [d.to_dict() for d in da] == [d.to_dict() for d in db]
    assert a.metrics["scale_events"] >= 2 and a.metrics["cold_start_requests"] >= 0


def test_the_window_adds_up_with_what_came_before() -> None:
    # Counts over [0, end] split at any cut into [cut, end] plus what the window excludes:
    # requests by arrival, replica time by clock, scale events by decision time.
    trace = llm_trace()
    path = ROOT / "policies/baselines/knative-kpa.yaml"
    policy = parse_policy(path.read_text(encoding="utf-8"), str(path))
    cluster = ClusterSpec()
    whole, decisions = run(trace, policy, cluster, seed=3)
    cut = 450.0
    late, _ = run(trace, policy, cluster, seed=3, measure_from=cut)
    w, m = whole.metrics, late.metrics
    assert m["requests"] == int((trace.arrival_s >= cut).sum()) < w["requests"]
    assert m["scale_events"] == sum(
        1 for d in decisions[1:] if d.replicas != d.current and d.ts - trace.start_epoch >= cut
    )
    assert 0 < m["replica_hours"] < w["replica_hours"]
    assert late.timeline.t and min(late.timeline.t) >= cut
    np.testing.assert_array_equal(late.ttft, whole.ttft[trace.arrival_s >= cut])


@pytest.mark.parametrize("cut", [-1.0, float("nan"), 1e9])
def test_a_cut_outside_the_run_is_an_error(cut: float) -> None:
    trace = service_trace([0.0, 3.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="measure_from"):
        simulate(trace, static_policy(1), spec(maxQueueSeconds=10), measure_from=cut)


def test_cli_measure_from_is_on_the_trace_axis_as_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text(
        "timestamp_s,input_tokens,output_tokens\n"
        + "".join(f"{0.5 * i},{200},{50}\n" for i in range(400))
    )
    policy = str(ROOT / "policies/baselines/static-peak.yaml")
    base = ["simulate", "--trace", str(csv), "--quiet", "--policy", policy]
    assert main([*base, "--json", str(tmp_path / "a.json"), "--measure-from", "100"]) == 0
    data = json.loads((tmp_path / "a.json").read_text())
    (p,) = data["policies"]
    assert data["trace"]["measure_from_s"] == 100
    assert p["requests"] == 200  # arrivals at 100.0, 100.5, ... 199.5
    # The same window of a slice starting at 50 s: 100 on the trace's axis is 50 s into it.
    sliced = [*base, "--start", "50", "--json", str(tmp_path / "b.json"), "--measure-from", "100"]
    assert main(sliced) == 0
    assert json.loads((tmp_path / "b.json").read_text())["policies"][0]["requests"] == 200
    assert main([*base, "--start", "50", "--measure-from", "10"]) == 2
    assert "--measure-from (10) is before --start (50)" in capsys.readouterr().err
