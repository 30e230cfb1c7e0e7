"""The simulator's latency signals (for the llm policy): TTFT p95 and queue-time p95 per scrape,
over the requests whose first token came since the previous scrape, as vLLM's histograms give them;
no sample (never zero) in a scrape without a first token."""

from __future__ import annotations

import numpy as np
import pytest

from autoscaler.core import signals
from autoscaler.policy.builtin.llm import QUEUE_TIME_P95_SECONDS
from autoscaler.sim.cluster_config import ClusterSpec
from autoscaler.sim.runner import SimWorld
from autoscaler.sim.traces import Trace


def _latency_by_tick(world: SimWorld, ticks: int) -> dict[float, dict[str, float]]:
    world.priming()
    world.apply(1)
    out: dict[float, dict[str, float]] = {}
    for _ in range(ticks):
        obs = world.advance()
        seen = {o.signal: o.value for o in obs if o.signal in LATENCY}
        if seen:
            out[world.t] = seen
    return out


LATENCY = {signals.TTFT_P95_SECONDS, QUEUE_TIME_P95_SECONDS}


def test_ttft_and_queue_time_per_scrape() -> None:
    # One replica with one sequence slot; prefill at 12000 tokens/s. r0 (1200 tokens) arrives at
    # 0.0 and prefills 0.1 s; r1 (1200) arrives at 0.05 and waits for r0's slot: r0 decodes 100
    # tokens at 7 ms = 0.7 s, so r1 starts at 0.8: TTFT 0.85, queue time 0.75. r2 (600 tokens)
    # arrives at 5.0 on an idle replica: TTFT 0.05, queue time 0.
    spec = ClusterSpec.model_validate(
        {
            "coldStart": {"meanSeconds": 0},
            "llm": {"tpotSlopePerSeq": 0, "maxNumSeqs": 1},
        }
    )
    trace = Trace(
        "t",
        "csv",
        0.0,
        np.array([0.0, 0.05, 5.0]),
        np.array([1200, 1200, 600]),
        np.array([100, 100, 10]),
        None,
    )
    got = _latency_by_tick(SimWorld(trace, "ns/m", spec, seed=0), 8)
    # Both first tokens of r0 (0.1 s) and r1 (0.85 s) come within the first second.
    assert sorted(got) == [1.0, 6.0]
    assert got[1.0][signals.TTFT_P95_SECONDS] == pytest.approx(np.percentile([0.1, 0.85], 95))
    assert got[1.0][QUEUE_TIME_P95_SECONDS] == pytest.approx(np.percentile([0.0, 0.75], 95))
    assert got[6.0][signals.TTFT_P95_SECONDS] == pytest.approx(0.05)
    assert got[6.0][QUEUE_TIME_P95_SECONDS] == pytest.approx(0.0)


def test_a_first_token_after_the_scrape_is_reported_at_the_next() -> None:
    # r0: 60000 prompt tokens prefill for 5 s: its first token comes at 5.0, so the scrapes at
    # 1..4 s have no latency sample and the one at 5 s reports it, once.
    spec = ClusterSpec.model_validate({"coldStart": {"meanSeconds": 0}})
    trace = Trace("t", "csv", 0.0, np.array([0.0]), np.array([60000]), np.array([1]), None)
    got = _latency_by_tick(SimWorld(trace, "ns/m", spec, seed=0), 8)
    assert list(got) == [5.0]
    assert got[5.0][signals.TTFT_P95_SECONDS] == pytest.approx(5.0)
    assert got[5.0][QUEUE_TIME_P95_SECONDS] == pytest.approx(0.0)
