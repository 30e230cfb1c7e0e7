"""A scenario of simulations/scenarios.yaml as run_all replays it: its cluster model at the
scenario's tick, the whole trace, its training/held-out split and the SLO (for the scripts in
this directory, which replay one scenario outside the harness)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def load_scenario(name: str) -> Scenario:
    """The scenario called ``name`` (its trace must exist: run_all builds the long-horizon ones)."""
    scenarios = yaml.safe_load((ROOT / "simulations" / "scenarios.yaml").read_text())
    sc = next(s for s in scenarios["scenarios"] if s["name"] == name)
    cluster = with_tick(load_cluster(ROOT / sc["cluster"]).spec, sc.get("tickSeconds"))
    full = load_trace(ROOT / sc["trace"], "auto", seed=0)
    (start, mid), _ = split_windows(full)
    return Scenario(sc, cluster, full, start, mid, float(sc["sloTtftSeconds"]))
