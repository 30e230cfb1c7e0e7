"""Memory of the engine's rolling windows, measured with tracemalloc.

    .venv/bin/python benchmarks/window_memory.py [--targets 1000] [--ticks 300] [--policy queue]

Prints two figures (docs/engine-performance.md):

- bytes per retained sample of one ``SignalWindow`` (timestamps shared between windows, as the
  sources share one float per scrape; prefix sums brought up to date, as a policy's queries do);
- the engine's traced memory per target after ``--ticks`` 1 s ticks of ``bench_engine.py``'s
  workload (six signals a target, of which the policy reads one or two), against the same engine
  made to keep every signal (``reads = None``, as before windows were kept per signal read).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import POLICIES, build, observations

from autoscaler.core.windows import SignalWindow


def bytes_per_sample(windows: int = 1000, samples: int = 120) -> float:
    stamps = [1_700_000_000.0 + t for t in range(samples)]
    rng = random.Random(1)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = []
    for _ in range(windows):
        w = SignalWindow(1e9)
        for t in stamps:
            w.add(t, rng.random() * 100.0)
        w.mean(stamps[-1], 30.0)
        w.rate(stamps[-1], 30.0)
        kept.append(w)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used / (windows * samples)


def engine_bytes_per_target(policy: str, targets: int, ticks: int, every_signal: bool) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine, keys = build(policy, targets)
    if every_signal:
        for rt in engine.targets.values():
            rt.reads = None
    replicas = dict.fromkeys(keys, 3.0)
    tokens = 0.0
    for tick in range(ticks):
        now = 1_700_000_000.0 + tick
        tokens += 3000.0
        for d in engine.tick(now, observations(keys, tick, now, tokens, replicas)):
            replicas[d.target] = float(d.replicas)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before  # the engine is still alive here
    tracemalloc.stop()
    return used / targets


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--ticks", type=int, default=300)
    ap.add_argument("--policy", choices=sorted(POLICIES), default="queue")
    args = ap.parse_args()
    print(f"SignalWindow: {bytes_per_sample():.1f} bytes per retained sample")
    for every in (False, True):
        per = engine_bytes_per_target(args.policy, args.targets, args.ticks, every)
        kept = "every signal" if every else "signals the policy reads"
        print(
            f"engine, policy={args.policy} targets={args.targets} ticks={args.ticks}, "
            f"windows for {kept}: {per / 1024:.1f} KiB per target"
        )


if __name__ == "__main__":
    main()
