"""Simulator speed and memory.

    .venv/bin/python benchmarks/bench_sim.py [--hours 2] [--rps 600] [--week-rps 0.5]

Two figures, under the Knative KPA baseline:
1. a high-rate request-level replay (default two hours at 600 requests/s): simulated requests per
   second of wall time (the simulation loop only; trace generation is not counted);
2. one week of 1-second ticks at a low rate: wall time (target: under 60 s).
Also the process's peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import time

from autoscaler.config import load_policy
from autoscaler.sim.cluster_config import ClusterSpec
from autoscaler.sim.runner import simulate
from autoscaler.sim.synth import synth_trace


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--rps", type=float, default=600.0)
    ap.add_argument("--week-days", type=float, default=7.0)
    ap.add_argument("--week-rps", type=float, default=0.5)
    ap.add_argument("--policy", default="policies/baselines/knative-kpa.yaml")
    args = ap.parse_args()
    policy = load_policy(args.policy)
    spec = ClusterSpec()

    t0 = time.perf_counter()
    trace = synth_trace(args.hours * 3600, args.rps, seed=1, diurnal_period_s=args.hours * 3600)
    gen = time.perf_counter() - t0
    r = simulate(trace, policy, spec, timer=time.perf_counter)
    m = r.metrics
    print(f"high rate: {trace.requests:,} requests over {args.hours:g} h at {args.rps:g}/s "
          f"(generated in {gen:.1f}s)")
    print(f"  simulated in {m['wall_seconds']:.1f}s = {m['sim_requests_per_s']:,.0f} requests/s; "
          f"mean replicas {m['mean_replicas']:.1f}, SLO {m['slo_attainment']:.3f}")
    del r, trace

    trace = synth_trace(args.week_days * 86400, args.week_rps, seed=2, idle_gap_fraction=0.3)
    r = simulate(trace, policy, spec, timer=time.perf_counter)
    m = r.metrics
    ticks = int(args.week_days * 86400 / spec.signals.tick_seconds)
    print(f"long horizon: {args.week_days:g} days of {spec.signals.tick_seconds:g}s ticks "
          f"({ticks:,} ticks, {trace.requests:,} requests) in {m['wall_seconds']:.1f}s "
          f"({m['wall_seconds'] / ticks * 1e6:.0f} us per tick)")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
