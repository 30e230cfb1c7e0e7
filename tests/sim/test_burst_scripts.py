"""The analysis scripts of simulations/burst: the scenario loader they share, the per-hour
need of need_by_hour.py and the load-tracking fit of load_bound.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "simulations" / "burst"))

from load_bound import Half, evaluate, fit, fleets, parse_sizes  # noqa: E402
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


def test_blocks_give_each_request_its_block_and_each_block_its_prefill_load() -> None:
    s = load_scenario("azure-code")
    train = s.training()
    end = float(train.arrival_s.max())
    block, seconds, load = s.blocks(train, 0.0, end, 600.0)
    assert len(block) == train.requests and block.max() == len(seconds) - 1
    assert seconds[:-1].tolist() == [600.0] * (len(seconds) - 1)
    assert seconds[-1] == pytest.approx(end - 600.0 * (len(seconds) - 1))
    prefill = s.cluster.llm.prefill_tokens_per_second if s.cluster.llm else 0.0
    first = train.input_tokens[train.arrival_s < 600.0].sum() / 600.0 / prefill
    assert load[0] == pytest.approx(first)
    # From t0 on only: requests before it are not counted.
    later, _, _ = s.blocks(train, 600.0, end, 600.0)
    assert len(later) == int((train.arrival_s >= 600.0).sum())


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


def half(load: list[float], sizes: list[int], attainment: list[list[float]]) -> Half:
    blocks = len(load)
    return Half(
        sizes=np.array(sizes),
        attainment=np.array(attainment),
        requests=np.full(blocks, 100),
        seconds=np.full(blocks, 3600.0),
        load=np.array(load),
    )


def test_the_fleet_is_the_affine_load_rounded_up_to_a_replayed_size() -> None:
    h = half([0.0, 2.5, 10.0], [10, 11, 12, 14], [[1.0] * 3] * 4)
    # ceil(10 + 0) = 10; ceil(12.5) = 13 -> 14; ceil(20) is above every size -> the largest.
    assert fleets(h, 10.0, 1.0).tolist() == [0, 3, 3]
    assert fleets(h, 10.5, 0.0).tolist() == [1, 1, 1]


def test_a_choice_costs_its_replica_hours_and_scores_its_blocks_requests() -> None:
    h = Half(
        sizes=np.array([10, 12]),
        attainment=np.array([[0.9, 0.5], [1.0, 0.99]]),
        requests=np.array([100, 300]),
        seconds=np.array([3600.0, 1800.0]),
        load=np.zeros(2),
    )
    gpu_hours, attainment = evaluate(h, np.array([0, 1]))
    assert gpu_hours == 10 + 12 * 0.5
    assert attainment == (0.9 * 100 + 0.99 * 300) / 400


def test_the_fit_is_the_cheapest_pair_meeting_the_target() -> None:
    # Block 0 (load 1) is served by 10 replicas, block 1 (load 3) needs 12.
    h = half([1.0, 3.0], [10, 12], [[0.999, 0.9], [1.0, 0.999]])
    a_grid, b_grid = np.array([9.0, 10.0, 11.0]), np.array([0.0, 1.0])
    best = fit(h, 0.99, a_grid, b_grid)
    assert best is not None
    # 9 + load gives 10 then 12: 22 GPU-h; a constant fleet that meets 0.99 needs 12 in both.
    assert (best.a, best.b, best.gpu_hours) == (9.0, 1.0, 22.0)
    assert best.attainment == pytest.approx(0.999)
    assert fit(h, 0.9999, a_grid, b_grid) is None


def test_fleet_sizes_are_a_range_or_a_list() -> None:
    assert parse_sizes("8-11") == [8, 9, 10, 11]
    assert parse_sizes("16,10,12") == [10, 12, 16]
