"""Does square-root spare (``burstReserve``) buy attainment more cheaply than a lower target?

    .venv/bin/python simulations/burst/frontier.py servegen-m-small-longhorizon \
        simulations/results/servegen-m-small-longhorizon/tune/llm-chat/llm-chat.tuned.yaml \
        --utilization 0.5,0.65,0.8 --reserve 0,0.5,1,2 [--test]

Replays one policy file on a scenario's training half (simulations/scenarios.yaml, the cluster
and tick run_all uses) for every pair of ``targetUtilization`` (the first one in the file: the
llm policy's, or the tokens policy's inside a composite) and ``burstReserve``, all else as
written, and prints GPU-hours, attainment and hourly attainment (autoscaler.sim.tune's score),
with ``--test`` the held-out half's too. docs/llm-policy.md ("Spare that grows as the square
root of the load") has the figures this gave.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from pathlib import Path

from scenario import load_scenario

from autoscaler.config.loader import parse_policy
from autoscaler.sim.runner import simulate
from autoscaler.sim.tune import hourly_attainment

TARGET = re.compile(r"^( *)targetUtilization: .*$", re.M)


def variant(text: str, utilization: float, reserve: float) -> str:
    """``text`` with its first targetUtilization set and a burstReserve beside it (any other
    burstReserve in the file is dropped first)."""
    text = re.sub(r"^ *burstReserve: .*\n", "", text, flags=re.M)
    return TARGET.sub(
        lambda m: (
            f"{m.group(1)}targetUtilization: {utilization}\n{m.group(1)}burstReserve: {reserve}"
        ),
        text,
        count=1,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario")
    ap.add_argument("policy")
    ap.add_argument("--utilization", default="0.5,0.65,0.8")
    ap.add_argument("--reserve", default="0,0.5,1,2")
    ap.add_argument("--test", action="store_true", help="also replay the held-out half")
    args = ap.parse_args()
    scenario = load_scenario(args.scenario)
    cluster, full, mid, slo = scenario.cluster, scenario.full, scenario.mid, scenario.slo
    train = scenario.training()
    base = Path(args.policy).read_text()
    utilizations = [float(x) for x in args.utilization.split(",")]
    reserves = [float(x) for x in args.reserve.split(",")]
    for u, b in itertools.product(utilizations, reserves):
        doc = parse_policy(variant(base, u, b), args.policy)
        r = simulate(train, doc, cluster, seed=0, slo_ttft_s=slo)
        hourly = hourly_attainment(train.arrival_s, r.ttft, slo)
        line = (
            f"targetUtilization {u:5.3f} burstReserve {b:4.2f}: train "
            f"{r.metrics['gpu_hours']:8.1f} GPU-h, attainment {r.metrics['slo_attainment']:.4f}, "
            f"hourly {'-' if hourly is None else f'{hourly:.4f}'}"
        )
        if args.test:
            t = simulate(full, doc, cluster, seed=0, slo_ttft_s=slo, measure_from=mid)
            line += (
                f" | test {t.metrics['gpu_hours']:8.1f} GPU-h, "
                f"attainment {t.metrics['slo_attainment']:.4f}"
            )
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
