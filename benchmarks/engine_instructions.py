"""Machine instructions per target per tick of ``Engine.tick``, counted by valgrind (callgrind).

    .venv/bin/python benchmarks/engine_instructions.py [--policy queue] [--targets 100]
        [--warmup 5] [--ticks 10]

Unlike a time, the count does not depend on what else the machine is doing, so it compares two
versions of the engine on a shared machine (docs/engine-performance.md). The script re-runs
itself under ``valgrind --tool=callgrind`` with collection switched on only inside
``operator.call`` (the C function ``_operator_call``), through which it calls ``Engine.tick`` for
the measured ticks: building the observations and the warm-up ticks are not counted. The
workload is ``bench_engine.py``'s. Needs valgrind; takes about a minute per policy.
"""

from __future__ import annotations

import argparse
import operator
import os
import re
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import POLICIES, build, observations


def workload(policy: str, targets: int, warmup: int, ticks: int) -> None:
    engine, keys = build(policy, targets)
    replicas = dict.fromkeys(keys, 3.0)
    tokens = 0.0
    for tick in range(warmup + ticks):
        now = 1_700_000_000.0 + tick
        tokens += 3000.0
        obs = observations(keys, tick, now, tokens, replicas)
        # operator.call switches the count on: only the measured ticks' Engine.tick counts.
        tick_fn = engine.tick if tick < warmup else partial(operator.call, engine.tick)
        decisions = tick_fn(now, obs)
        for d in decisions:
            replicas[d.target] = float(d.replicas)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", choices=sorted(POLICIES), default="queue")
    ap.add_argument("--targets", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--ticks", type=int, default=10)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        workload(args.policy, args.targets, args.warmup, args.ticks)
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        cmd = [
            "valgrind",
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=_operator_call",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--inner",
            f"--policy={args.policy}",
            f"--targets={args.targets}",
            f"--warmup={args.warmup}",
            f"--ticks={args.ticks}",
        ]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        text = Path(out).read_text()
    m = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.MULTILINE)
    if m is None:
        raise SystemExit("no instruction total in the callgrind output")
    total = int(m.group(1))
    per = total / (args.targets * args.ticks)
    print(
        f"policy={args.policy} targets={args.targets} ticks={args.ticks} "
        f"instructions per target per tick {per:,.0f}"
    )


if __name__ == "__main__":
    main()
