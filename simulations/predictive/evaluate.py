"""Predictive vs its own inner reactive policy on the long-horizon ServeGen and Alibaba shapes.

    .venv/bin/python simulations/predictive/evaluate.py --trace servegen --span eval
    .venv/bin/python simulations/predictive/evaluate.py --trace servegen --span train \
        --policy policies/predictive-llm.yaml --set bucketSeconds=300 --out out/sweep.json

Protocol (docs/predictive.md): the ServeGen m-small trace (14 days) is split by time: days 1-7
train (parameters are chosen there), days 8-14 evaluate. Each run starts one day before its
span so the forecasters have a season of history (a live service would have it from
Prometheus); that warm-up day is simulated by every policy alike and left out of every figure.
The Alibaba QPS trace (22 h) splits at 11 h with a 1-hour warm-up. Figures per policy:
SLO attainment, GPU-hours, p99 TTFT over the span, and SLO misses among requests that arrive in
"ramp" windows (10-minute windows with >= 25% more arrivals than the mean of the 30 minutes
before), where a forecast can help and a reactive policy is late.

Run from the repository root. Writes JSON (``--out``) and prints a table and the wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from autoscaler.config.loader import parse_policy
from autoscaler.engine import Engine
from autoscaler.service.clock import perf_timer
from autoscaler.sim.cluster_config import load_cluster
from autoscaler.sim.runner import SimWorld
from autoscaler.sim.synth import write_csv
from autoscaler.sim.traces.longhorizon import DAY_S, build_alibaba_qps, build_servegen
from autoscaler.sim.traces.model import Trace

ROOT = Path(__file__).resolve().parents[2]
TRACES = ROOT.parent / "shared" / "traces"
SERVEGEN = TRACES / "servegen_language_m-small_trace_csvs.tar.gz"
ALIBABA = TRACES / "alibaba_genai2026_qps.tar.gz"
CLUSTER = ROOT / "simulations" / "clusters" / "llm-8b-h100.yaml"
DEFAULT_POLICIES = ("policies/predictive-llm-reactive.yaml", "policies/predictive-llm.yaml")
SLO_TTFT_S = 5.0  # long-context prompts: ~1 s of prefill on average, p90 ~2.3 s
RAMP_WINDOW_S = 600.0
RAMP_RISE = 1.25

# (start, end, warm-up) seconds on each trace's own axis.
SPANS = {
    "servegen": {"train": (1 * DAY_S, 7 * DAY_S, DAY_S), "eval": (7 * DAY_S, 14 * DAY_S, DAY_S)},
    "alibaba": {"train": (3600.0, 11 * 3600.0, 3600.0), "eval": (11 * 3600.0, 22 * 3600.0, 3600.0)},
}


def build(trace: str, span: str, seed: int, days: float | None) -> tuple[Trace, float]:
    start, end, warm = SPANS[trace][span]
    if days is not None:
        end = start + days * DAY_S
    if trace == "servegen":
        return build_servegen(SERVEGEN, start_s=start - warm, end_s=end, seed=seed), warm
    return build_alibaba_qps(ALIBABA, start_s=start - warm, end_s=end, seed=seed), warm


def export(trace: str, seed: int, path: Path) -> Trace:
    """The full trace (all 14 days of ServeGen, all 22 h of Alibaba) as a CSV, for
    ``autoscaler simulate``. ``run_all.py`` builds its own long-horizon traces from the recipe
    in scenarios.yaml (``build:``), with the same builders."""
    built = (
        build_servegen(SERVEGEN, seed=seed)
        if trace == "servegen"
        else build_alibaba_qps(ALIBABA, seed=seed)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(built, path)
    return built


def with_overrides(path: str, overrides: list[str]) -> Any:
    """The policy file, with ``key=value`` params of its predictive policy replaced."""
    text = (ROOT / path).read_text()
    if not overrides:
        return parse_policy(text, path)
    data = yaml.safe_load(text)
    params = data["spec"]["targets"][0]["policy"]["params"]
    for item in overrides:
        key, _, value = item.partition("=")
        node = params
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = yaml.safe_load(value)
    data["metadata"]["name"] += "[" + ",".join(overrides) + "]"
    return parse_policy(yaml.safe_dump(data, sort_keys=False), path)


def ramp_mask(arrival: np.ndarray, warm: float) -> np.ndarray:
    """Requests that arrive in a ramp window (after the warm-up)."""
    edges = np.arange(0.0, float(arrival[-1]) + RAMP_WINDOW_S, RAMP_WINDOW_S)
    counts, _ = np.histogram(arrival, edges)
    before = np.convolve(counts, np.ones(3) / 3.0, mode="full")[: counts.shape[0]]
    prior = np.concatenate([[np.inf], before[:-1]])  # mean of the 3 windows before each one
    prior[:3] = np.inf
    ramp = counts >= RAMP_RISE * prior
    idx = np.minimum((arrival // RAMP_WINDOW_S).astype(np.int64), counts.shape[0] - 1)
    return ramp[idx] & (arrival >= warm)


def run(trace: Trace, policy: Any, warm: float, seed: int) -> dict[str, Any]:
    spec = load_cluster(CLUSTER).spec
    engine = Engine.from_policy(policy)
    key = sorted(engine.targets)[0]
    engine = Engine([(engine.targets[key].ref, engine.targets[key].config)])
    world = SimWorld(trace, key, spec, seed)
    (first,) = engine.tick(world.base, world.priming())
    world.apply(first.replicas)
    started = perf_timer()
    warm_replica_s: float | None = None
    floor_ticks = ticks = 0
    replicas: list[int] = []
    while not world.done:
        observations = world.advance()
        (decision,) = engine.tick(world.base + world.t, observations)
        world.apply(decision.replicas)
        if world.t <= warm:
            continue
        if warm_replica_s is None:
            warm_replica_s = world.cluster.replica_seconds(world.t - world.tick)
        ticks += 1
        replicas.append(decision.replicas)
        floor = decision.inputs.get("forecast_floor")
        if floor is not None and floor > decision.inputs.get("inner_replicas", floor):
            floor_ticks += 1
    wall = perf_timer() - started
    cluster = world.cluster
    replica_s = cluster.replica_seconds(world.end) - (warm_replica_s or 0.0)
    ttft = cluster.ttft
    arrival = trace.arrival_s
    span = arrival >= warm
    ok = ~np.isnan(ttft) & (ttft <= SLO_TTFT_S + 1e-12)
    ramp = ramp_mask(arrival, warm)
    served = ttft[span & ~np.isnan(ttft)]
    reps = np.asarray(replicas)
    return {
        "policy": policy.metadata.name,
        "requests": int(span.sum()),
        "slo_attainment": round(float(ok[span].mean()), 6),
        "slo_misses": int((~ok[span]).sum()),
        "ramp_requests": int(ramp.sum()),
        "ramp_slo_misses": int((~ok[ramp]).sum()),
        "ramp_slo_attainment": round(float(ok[ramp].mean()), 6) if ramp.any() else None,
        "ttft_p99_s": round(float(np.percentile(served, 99)), 3) if served.size else None,
        "dropped": int(np.isnan(ttft[span]).sum()),
        "gpu_hours": round(replica_s * spec.gpus_per_replica / 3600.0, 3),
        "replicas_p5_p50_p95_max": [int(np.percentile(reps, q)) for q in (5, 50, 95)]
        + [int(reps.max())],
        "floor_binding_fraction": round(floor_ticks / max(ticks, 1), 4),
        "wall_seconds": round(wall, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", choices=sorted(SPANS), required=True)
    ap.add_argument("--span", choices=("train", "eval"), help="required unless --export")
    ap.add_argument("--policy", action="append", help="policy YAML (repeatable)")
    ap.add_argument("--set", action="append", default=[], help="predictive param override k=v")
    ap.add_argument("--days", type=float, help="shorten the span (runtime measurements)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument(
        "--export",
        metavar="CSV",
        help="write the whole trace (both halves, tokens included) as a generic CSV and exit",
    )
    args = ap.parse_args()
    if args.export:
        trace = export(args.trace, args.seed, Path(args.export))
        print(f"{args.export}: {trace.requests:,} requests")
        return 0
    if args.span is None:
        ap.error("--span is required (unless --export)")
    t0 = perf_timer()
    trace, warm = build(args.trace, args.span, args.seed, args.days)
    build_s = perf_timer() - t0
    print(f"{trace.name}: {trace.requests:,} requests, built in {build_s:.1f}s", flush=True)
    rows = []
    for path in args.policy or DEFAULT_POLICIES:
        overrides = args.set if "reactive" not in path else []
        row = run(trace, with_overrides(path, overrides), warm, args.seed)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "trace": args.trace,
        "span": args.span,
        "span_s": SPANS[args.trace][args.span][:2],
        "warmup_s": warm,
        "seed": args.seed,
        "slo_ttft_s": SLO_TTFT_S,
        "requests_built": trace.requests,
        "build_seconds": round(build_s, 1),
        "policies": rows,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
