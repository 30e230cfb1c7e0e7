"""A scenario of simulations/scenarios.yaml as run_all replays it: its cluster model at the
scenario's tick, the whole trace, its training/held-out split and the SLO (for the scripts in
this directory, which replay one scenario outside the harness)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "simulations"))

from run_all import with_tick  # noqa: E402

from autoscaler.sim.cluster_config import ClusterSpec, load_cluster  # noqa: E402
from autoscaler.sim.traces import Trace, load_trace  # noqa: E402
from autoscaler.sim.tune import split_windows  # noqa: E402


@dataclass(frozen=True)
class Scenario:
    spec: dict[str, Any]  # its entry in scenarios.yaml
    cluster: ClusterSpec
    full: Trace
    start: float
    mid: float  # the training half is [start, mid), the held-out half [mid, end]
    slo: float

    def training(self) -> Trace:
        return load_trace(
            ROOT / self.spec["trace"], "auto", start_s=self.start, end_s=self.mid, seed=0
        )

    def blocks(
        self, trace: Trace, t0: float, end: float, block_s: float
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Block index of each request of ``trace`` arriving in [t0, end], and per block its
        length (s) and prefill load (prompt tokens/s over the cluster's prefill rate: replicas
        kept busy by prefill alone)."""
        sel = trace.arrival_s >= t0
        block = ((trace.arrival_s[sel] - t0) // block_s).astype(np.int64)
        count = int(block.max()) + 1
        seconds = np.minimum(block_s, end - (t0 + block_s * np.arange(count)))
        prompt = np.bincount(block, weights=trace.input_tokens[sel], minlength=count)
        llm = self.cluster.llm
        return block, seconds, prompt / seconds / (llm.prefill_tokens_per_second if llm else np.nan)


def load_scenario(name: str) -> Scenario:
    """The scenario called ``name`` (its trace must exist: run_all builds the long-horizon ones)."""
    scenarios = yaml.safe_load((ROOT / "simulations" / "scenarios.yaml").read_text())
    sc = next(s for s in scenarios["scenarios"] if s["name"] == name)
    cluster = with_tick(load_cluster(ROOT / sc["cluster"]).spec, sc.get("tickSeconds"))
    full = load_trace(ROOT / sc["trace"], "auto", seed=0)
    (start, mid), _ = split_windows(full)
    return Scenario(sc, cluster, full, start, mid, float(sc["sloTtftSeconds"]))
