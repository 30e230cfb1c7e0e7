"""The keep-alive evaluation's own arithmetic (simulations/keepalive/evaluate.py): the spans with
a request in flight, idle GPU-hours and the fixed keep-alive frontier, on hand-computed cases."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "simulations" / "keepalive" / "evaluate.py"


@pytest.fixture(scope="module")
def ev() -> ModuleType:
    spec = importlib.util.spec_from_file_location("keepalive_evaluate", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_in_flight_union_merges_overlaps_and_counts_timeouts(ev: ModuleType) -> None:
    trace = SimpleNamespace(
        arrival_s=np.array([0.0, 5.0, 20.0]), service_s=np.array([10.0, 2.0, 7.0])
    )
    spec = SimpleNamespace(service=SimpleNamespace(speedup=1.0), max_queue_seconds=300.0)
    # Request 1 waits 1 s and ends at 8, inside request 0's [0, 10]; request 2 times out.
    result = SimpleNamespace(ttft=np.array([0.0, 1.0, np.nan]))
    union = ev.in_flight_union(result, trace, spec)
    assert union.tolist() == [[0.0, 10.0], [20.0, 320.0]]


def test_idle_gpu_hours_counts_replicas_only_while_nothing_is_in_flight(ev: ModuleType) -> None:
    union = np.array([[0.0, 10.0], [20.0, 30.0]])
    ts = np.array([0.0, 15.0, 25.0])
    replicas = np.array([2.0, 1.0, 0.0])
    # [0, 15): 2 replicas, idle 10..15 -> 10 GPU-s; [15, 25): 1 replica, idle 15..20 -> 5 GPU-s;
    # [25, 40): no replica. 15 GPU-s in all, twice that at 2 GPUs per replica.
    assert ev.idle_gpu_hours(union, ts, replicas, 40.0, 1.0) == pytest.approx(15 / 3600)
    assert ev.idle_gpu_hours(union, ts, replicas, 40.0, 2.0) == pytest.approx(30 / 3600)
    # Always busy: no idle time whatever the replicas.
    full = np.array([[0.0, 40.0]])
    assert ev.idle_gpu_hours(full, ts, replicas, 40.0, 1.0) == 0.0


def test_frontier_interpolates_between_fixed_baselines(ev: ModuleType) -> None:
    fixed = {
        "a": {"idle_gpu_hours": 100.0, "cold_start_requests": 800},
        "b": {"idle_gpu_hours": 120.0, "cold_start_requests": 400},
    }
    assert ev.frontier(fixed, 105.0) == pytest.approx(700.0)
    assert ev.frontier(fixed, 99.0) is None and ev.frontier(fixed, 121.0) is None
    c = ev.compare(fixed["a"], {"idle_gpu_hours": 110.0, "cold_start_requests": 300}, fixed)
    assert c["cold_start_requests_cut_pct"] == pytest.approx(62.5)
    assert c["meets_target"] is False  # more idle GPU-hours than baseline a
    assert c["fixed_frontier_cold_start_requests"] == pytest.approx(600.0)
    assert c["cut_vs_frontier_pct"] == pytest.approx(50.0)
