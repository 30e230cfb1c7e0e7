"""Engine throughput: one tick over many targets (target: 10,000 targets in under 100 ms).

    .venv/bin/python benchmarks/bench_engine.py [--targets 10000] [--ticks 20] [--policy NAME]

Each target gets the observations a live tick brings (status and load signals), and the engine
runs policy and the full guard chain for each. Prints per-tick time and microseconds per target,
as wall time and as this process's CPU time: on a shared machine the CPU time leaves out the time
the process waited for a core (it still pays for a busy sibling hyperthread), so compare runs by
it and repeat them (the median of several runs; docs/engine-performance.md).
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import time

from autoscaler.config import parse_policy
from autoscaler.core import signals
from autoscaler.core.types import Observation, TargetRef
from autoscaler.engine import Engine

POLICIES = {
    "queue": "{name: queue, params: {targetPerReplica: 4, windowSeconds: 30}}",
    "tokens": "{name: tokens, params: {tokensPerReplica: 2500}}",
    "kpa": "{name: kpa, params: {metric: concurrency}}",
    "hpa": "{name: hpa, params: {metrics: [{signal: concurrency, target: 70}]}}",
    "keda": (
        "{name: keda, params: {trigger: {signal: requests_waiting, target: 4}, "
        "pollingIntervalSeconds: 5, cooldownPeriodSeconds: 60}}"
    ),
    # policies/llm-chat.yaml's llm policy: the default for LLM targets
    "llm": (
        "{name: llm, params: {sloTtftSeconds: 2, prefillTokensPerSecond: 12000, "
        "decodeTokensPerSecond: 3200, phases: separate, targetUtilization: 0.8, "
        "waitingPerReplica: 2, queueWindowSeconds: 30, queueMaxGrowth: 2, "
        "queueWhileStarting: false, unservedDemand: true, kvTarget: 0.8, "
        "queueTimeFraction: 0.75, scaleDownDelaySeconds: 600}}"
    ),
}

TEMPLATE = """
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {{name: bench}}
spec:
  targets:
    - name: model
      policy: {policy}
      guards: {{minReplicas: 1, maxReplicas: 50, stepDown: {{percent: 50, periodSeconds: 60}}}}
      tokenLimits: {{floor: 100, maxIncreasePerSecond: 0.1}}
"""


def build(policy: str, targets: int) -> tuple[Engine, list[str]]:
    """The benchmark's engine over ``targets`` copies of one target config, and their keys."""
    target = parse_policy(TEMPLATE.format(policy=POLICIES[policy])).spec.targets[0]
    refs = [TargetRef("InferenceService", "ns", f"model-{i:05d}") for i in range(targets)]
    return Engine((r, target) for r in refs), [r.key for r in refs]


def observations(
    keys: list[str], tick: int, now: float, tokens: float, replicas: dict[str, float]
) -> list[Observation]:
    """One tick's observations: replica status following the decisions, and the load signals."""
    obs = []
    for i, k in enumerate(keys):
        load = 10.0 + (i % 50) + (tick % 7)
        obs += [
            Observation(k, signals.REPLICAS, replicas[k], now),
            Observation(k, signals.REPLICAS_READY, replicas[k], now),
            Observation(k, signals.CONCURRENCY, load, now),
            Observation(k, signals.WAITING, load / 3, now),
            Observation(k, signals.PROMPT_TOKENS_TOTAL, tokens, now),
            Observation(k, signals.GENERATION_TOKENS_TOTAL, tokens / 4, now),
        ]
    return obs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=10_000)
    ap.add_argument("--ticks", type=int, default=20)
    ap.add_argument("--policy", choices=sorted(POLICIES), default="queue")
    ap.add_argument(
        "--gc",
        choices=["default", "frozen", "paced"],
        default="paced",
        help="paced (what the service does, service/app.py GcPacer): after warm-up gc.freeze() "
        "and automatic collection off, and a young collection (gc.collect(1)) after every tick, "
        "timed apart and printed beside the tick; frozen: gc.freeze() after warm-up with "
        "automatic collection left on, so collections land inside ticks; default: neither",
    )
    args = ap.parse_args()

    engine, keys = build(args.policy, args.targets)
    times = []
    cpu_times = []
    gc_times: list[float] = []
    tokens = 0.0
    # Replica status follows the decisions, as it does when an actuator applies them.
    replicas = dict.fromkeys(keys, 3.0)
    for tick in range(args.ticks + 5):
        now = 1_700_000_000.0 + tick
        tokens += 3000.0
        obs = observations(keys, tick, now, tokens, replicas)
        c0 = time.process_time()
        t0 = time.perf_counter()
        decisions = engine.tick(now, obs)
        dt = time.perf_counter() - t0
        cpu = time.process_time() - c0
        assert len(decisions) == args.targets
        for d in decisions:
            replicas[d.target] = float(d.replicas)
        if args.gc == "paced" and tick >= 5:
            g0 = time.perf_counter()
            gc.collect(1)  # the pacer's young collection, between ticks
            gc_times.append(time.perf_counter() - g0)
        if tick >= 5:  # after the windows fill
            times.append(dt)
            cpu_times.append(cpu)
        elif tick == 4 and args.gc in ("frozen", "paced"):
            gc.collect()
            gc.freeze()
            if args.gc == "paced":
                gc.disable()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    p50 = statistics.median(times)
    print(f"policy={args.policy} targets={args.targets} ticks={args.ticks} gc={args.gc}")
    print(
        f"tick p50 {p50 * 1e3:.1f} ms  max {max(times) * 1e3:.1f} ms  "
        f"per target {p50 / args.targets * 1e6:.2f} us (6 observations each, incl. ingest)"
    )
    cpu50 = statistics.median(cpu_times)
    print(f"tick CPU p50 {cpu50 * 1e3:.1f} ms  per target {cpu50 / args.targets * 1e6:.2f} us")
    if gc_times:
        g50 = statistics.median(gc_times)
        print(
            f"between ticks: young collection p50 {g50 * 1e3:.1f} ms  max {max(gc_times) * 1e3:.1f}"
            f" ms (tick + collection p50 {(p50 + g50) * 1e3:.1f} ms)"
        )
    print(f"process RSS peak {peak / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
