"""Hash every decision record of fixed workloads: run before and after an engine change.

    .venv/bin/python benchmarks/record_hashes.py [--part demo|fleet|all] [--out FILE]

A speed-up of the engine, the windows, the guards or a policy must not change one decision record.
This prints one SHA-256 per (workload, policy) over the JSON of every record (floats written by
``repr``, so equal hashes mean bit-identical floats), and a combined hash. Compare the output of
two trees line by line (``diff``); to hash the committed tree, run the script with that tree first
on ``PYTHONPATH`` (docs/engine-performance.md shows how).

Workloads:

- ``demo``: the synthetic trace of ``make demo`` (built in memory with the same arguments),
  simulated under every policy file in ``policies/`` and ``policies/baselines/``.
- ``fleet``: 300 targets x 400 ticks of a load that covers what the guards react to: idle
  spells (scale to zero), bursts, missing and stale signals, NaN samples, samples out of order,
  counter resets, uneven tick steps, replica status lagging the decisions. It runs the benchmark's
  four policies with the benchmark's guards, and ``queue``, ``tokens``, ``kpa``, ``hpa`` and
  ``keda`` again with every guard switched on (step up and down, stabilization both ways,
  scale-to-zero, fallback replicas, token ceiling and both slews).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import POLICIES

from autoscaler.config import load_policy, parse_policy
from autoscaler.core import signals
from autoscaler.core.types import Decision, Observation, TargetRef
from autoscaler.engine import Engine

ROOT = Path(__file__).resolve().parent.parent

# The benchmark's policies (bench_engine.py), each run again with every guard on.
FLEET_POLICIES = {name: POLICIES[name] for name in ("queue", "tokens", "kpa", "hpa", "keda")}

BENCH_GUARDS = (
    "guards: {minReplicas: 1, maxReplicas: 50, stepDown: {percent: 50, periodSeconds: 60}}\n"
    "      tokenLimits: {floor: 100, maxIncreasePerSecond: 0.1}"
)

ALL_GUARDS = (
    "guards: {minReplicas: 0, maxReplicas: 40,\n"
    "        stepUp: {pods: 4, percent: 100, periodSeconds: 15},\n"
    "        stepDown: {pods: 2, percent: 20, periodSeconds: 30, select: Min},\n"
    "        stabilization: {upSeconds: 10, downSeconds: 45},\n"
    "        scaleToZero: {idleSeconds: 20, graceSeconds: 5, maxColdStartSeconds: 90,\n"
    '          protectedWindows: [{start: "22:15", end: "22:18"}]},\n'
    "        holdWhileScaling: {enabled: true, growthMargin: 0.5},\n"
    "        fallback: {maxSignalAgeSeconds: 20, mode: replicas, replicas: 2},\n"
    "        restartHoldSeconds: 30}\n"
    "      tokenLimits: {floor: 3000, ceiling: 90000, maxIncreasePerSecond: 0.2, "
    "maxDecreasePerSecond: 0.05}"
)

TEMPLATE = """
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {{name: hashes}}
spec:
  targets:
    - name: model
      policy: {policy}
      {guards}
"""


def _record(d: Decision) -> bytes:
    return json.dumps(d.to_dict(), sort_keys=True, allow_nan=True).encode() + b"\n"


def _fleet_observations(
    keys: list[str], tick: int, now: float, replicas: dict[str, float], counters: list[float]
) -> Iterator[Observation]:
    """One tick of the fleet load; deterministic in (target index, tick)."""
    for i, k in enumerate(keys):
        phase = (tick + 13 * i) % 240
        if phase < 110:
            load = 0.0  # idle spell, past stabilization and idle time: scale-to-zero territory
        else:
            load = 5.0 + (i % 40) + (tick % 7) * 1.5
            if 180 <= phase < 195:
                load *= 10.0  # burst, up to maxReplicas
        r = replicas[k]
        # Status lags: ready catches up one tick later, and some targets report starting pods.
        yield Observation(k, signals.REPLICAS, r, now)
        yield Observation(k, signals.REPLICAS_READY, r - 1.0 if tick % 5 == 0 and r > 0 else r, now)
        if i % 3 == 0:
            yield Observation(k, signals.REPLICAS_STARTING, float(tick % 4 == 0), now)
        if i % 11 == 0:
            yield Observation(k, signals.COLD_START_SECONDS, 60.0 + (tick % 3) * 30.0, now)
        # Missing signals: a long gap (stale past the fallback age) for every 17th target, and
        # single missing samples elsewhere.
        gap = i % 17 == 0 and 200 <= tick < 240
        if not gap and (tick * 7 + i) % 23 != 0:
            value = float("nan") if (tick + i) % 89 == 0 else load
            yield Observation(k, signals.CONCURRENCY, value, now)
            yield Observation(k, signals.WAITING, load / 3.0, now)
            if (tick + i) % 71 == 0:  # a straggler from before the last sample: dropped
                yield Observation(k, signals.WAITING, load, now - 5.0)
        if not gap:
            counters[i] += load * 120.0
            if (tick + 3 * i) % 131 == 0:
                counters[i] = load * 10.0  # pod restart: counter reset
            yield Observation(k, signals.PROMPT_TOKENS_TOTAL, counters[i], now)
            yield Observation(k, signals.GENERATION_TOKENS_TOTAL, counters[i] / 4.0, now)


def fleet_hashes(targets: int = 300, ticks: int = 400) -> dict[str, str]:
    out = {}
    for guards_name, guards in (("bench-guards", BENCH_GUARDS), ("all-guards", ALL_GUARDS)):
        for name, policy in FLEET_POLICIES.items():
            if guards_name == "bench-guards" and name == "keda":
                continue  # the benchmark has four policies
            text = TEMPLATE.format(policy=policy, guards=guards)
            cfg = parse_policy(text).spec.targets[0]
            refs = [TargetRef("InferenceService", "ns", f"model-{i:05d}") for i in range(targets)]
            engine = Engine((r, cfg) for r in refs)
            keys = [r.key for r in refs]
            replicas = dict.fromkeys(keys, 3.0)
            counters = [0.0] * targets
            h = hashlib.sha256()
            now = 1_700_000_000.0
            for tick in range(ticks):
                # Uneven steps: 1 s, with a 15 s step every 50 ticks (a slow simulator step).
                now += 15.0 if tick % 50 == 49 else 1.0
                obs = list(_fleet_observations(keys, tick, now, replicas, counters))
                for d in engine.tick(now, obs):
                    h.update(_record(d))
                    replicas[d.target] = float(d.replicas)
            out[f"fleet/{guards_name}/{name}"] = h.hexdigest()
    return out


def demo_hashes() -> dict[str, str]:
    from autoscaler.sim.cluster_config import load_cluster
    from autoscaler.sim.runner import simulate
    from autoscaler.sim.synth import synth_trace

    # make demo: trace synth --duration 7200 --mean-rps 4 --seed 7 --tokens azure-conv
    # --diurnal-period 7200 --bursts-per-hour 2 (other arguments at their CLI defaults).
    trace = synth_trace(
        7200.0,
        4.0,
        seed=7,
        diurnal_period_s=7200.0,
        burst_rate_per_h=2.0,
        token_profile="azure-conv",
    )
    cluster = load_cluster(None).spec
    out = {}
    files = sorted((ROOT / "policies").glob("*.yaml")) + sorted(
        (ROOT / "policies" / "baselines").glob("*.yaml")
    )
    for path in files:
        doc = load_policy(path)
        h = hashlib.sha256()
        try:
            simulate(trace, doc, cluster, seed=0, on_decision=lambda d, h=h: h.update(_record(d)))
        except ValueError as e:  # a selector-only policy: nothing to simulate
            out[f"demo/{path.relative_to(ROOT)}"] = f"skipped: {e}"
            continue
        out[f"demo/{path.relative_to(ROOT)}"] = h.hexdigest()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["demo", "fleet", "all"], default="all")
    ap.add_argument("--targets", type=int, default=300)
    ap.add_argument("--ticks", type=int, default=400)
    ap.add_argument("--out", help="also write the lines to this file")
    args = ap.parse_args()
    hashes: dict[str, str] = {}
    if args.part in ("fleet", "all"):
        hashes |= fleet_hashes(args.targets, args.ticks)
    if args.part in ("demo", "all"):
        hashes |= demo_hashes()
    combined = hashlib.sha256("".join(f"{k} {v}\n" for k, v in hashes.items()).encode())
    lines = [f"{k} {v}" for k, v in hashes.items()] + [f"combined {combined.hexdigest()}"]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
