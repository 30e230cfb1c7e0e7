"""The analysis scripts of simulations/burst: the scenario loader they share and the per-hour
need of need_by_hour.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "simulations" / "burst"))

from need_by_hour import fewest_within  # noqa: E402
from scenario import load_scenario  # noqa: E402

from autoscaler.sim.tune import split_windows  # noqa: E402


def test_the_scenario_is_loaded_as_run_all_replays_it() -> None:
    s = load_scenario("azure-code")
    assert s.slo == 2.0
    assert s.cluster.signals.tick_seconds == 1.0  # no tickSeconds in this scenario
    (start, mid), _ = split_windows(s.full)
    assert (s.start, s.mid) == (start, mid)
    train = s.training()
    assert train.requests == int((s.full.arrival_s < mid).sum()) == 5353
    assert float(train.arrival_s.max()) < mid


def test_the_need_is_the_fewest_replicas_near_each_hours_ceiling() -> None:
    per_hour = {
        10: np.array([0.990, 0.500, 0.996]),
        12: np.array([0.9955, 0.990, 0.996]),
        16: np.array([0.996, 0.9952, 0.997]),
        24: np.array([0.996, 0.996, 0.997]),
    }
    # Hour 0: 12 is within 0.001 of 0.996; hour 1: 16 (0.9952); hour 2: 10.
    assert fewest_within(per_hour, 0.001).tolist() == [12, 16, 10]
    assert fewest_within(per_hour, 0.0).tolist() == [16, 24, 16]
