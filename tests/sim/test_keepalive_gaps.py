"""The keep-alive gap analysis (simulations/keepalive/analyze_gaps.py) on hand-computed cases:
idle gaps from busy periods, a fixed keep-alive's cost, and the clairvoyant bound that
docs/keepalive.md's argument rests on (never worse than a fixed keep-alive at equal idle time)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "simulations" / "keepalive" / "analyze_gaps.py"


@pytest.fixture(scope="module")
def ag() -> ModuleType:
    spec = importlib.util.spec_from_file_location("keepalive_analyze_gaps", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclass looks its module up there
    spec.loader.exec_module(mod)
    return mod


def hand_case(ag: ModuleType) -> Any:
    # Busy periods: [0, 10] (requests at 0 and 5 overlap), [100, 101], [102, 103], [1000, 1005].
    arr = np.array([0.0, 5.0, 100.0, 102.0, 1000.0])
    svc = np.array([10.0, 2.0, 1.0, 1.0, 5.0])
    return ag.gaps_of(arr, svc, np.array(["a", "a", "b", "b", "a"]), 0.0)


def test_gaps_come_from_busy_periods(ag: ModuleType) -> None:
    g = hand_case(ag)
    assert ag.COLD_START_S == 60.0
    assert g.start.tolist() == [10.0, 101.0, 103.0]
    assert g.length.tolist() == [90.0, 1.0, 897.0]
    # arrivals within 60 s of each gap's end: 100 and 102 after the first; 102 after the second
    assert g.head.tolist() == [2, 1, 1]
    assert np.isnan(g.prev[0]) and g.prev[1:].tolist() == [90.0, 1.0]
    assert g.busy_n.tolist() == [2, 1, 1]
    assert g.model.tolist() == ["a", "b", "b"]


def test_fixed_keepalive_cost(ag: ModuleType) -> None:
    g = hand_case(ag)
    # K = 60 s: the 90 s and 897 s gaps outlast it (2 scale-ups from zero, 2 + 1 cold arrivals)
    cold, idle_h, starts = ag.fixed_cost(g, 60.0)
    assert (cold, starts) == (3, 2)
    assert idle_h == pytest.approx((60.0 + 1.0 + 60.0) / 3600.0)
    # K = 900 s covers every gap: no cold start, every idle second paid
    assert ag.fixed_cost(g, 900.0) == (0, pytest.approx(988.0 / 3600.0), 0)


def test_best_respects_the_idle_budget(ag: ModuleType) -> None:
    points = [(1.0, 50), (2.0, 20), (3.0, 5)]
    assert ag.best(points, 2.0) == 20
    assert ag.best(points, 0.5) is None


def test_the_clairvoyant_bound_never_loses_to_a_fixed_keepalive(ag: ModuleType) -> None:
    rng = np.random.default_rng(0)
    arr = np.cumsum(rng.pareto(1.2, 400) * 20.0)  # heavy-tailed gaps, like the trace's
    svc = np.full(arr.size, 3.0)
    g = ag.gaps_of(arr, svc, np.array(["m"] * arr.size), 0.0)
    _, clair = ag.frontiers(g)
    for k in (30.0, 90.0, 300.0, 600.0, 1200.0):
        cold, idle_h, _ = ag.fixed_cost(g, k)
        bound = ag.best(clair, idle_h)
        assert bound is not None and bound <= cold
