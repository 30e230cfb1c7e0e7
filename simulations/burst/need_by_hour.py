"""How many replicas does each hour of a held-out half need near the attainment ceiling, and does
its load say so?

    .venv/bin/python simulations/burst/need_by_hour.py [servegen-m-small-longhorizon] \
        [--replicas 10,12,14,16,18,20,24] [--tolerance 0.001]

Replays a fixed fleet of each size in ``--replicas`` over the scenario's held-out half (warm, as
run_all measures it: ``simulate(measure_from=mid)``, the policy being
policies/baselines/static-peak.yaml with its count set) and, for every hour of that half, prints
its requests, its prefill load (prompt tokens/s over the cluster's prefill rate: replicas kept
busy by prefill alone), the attainment at each size, and the fewest replicas whose attainment
is within ``--tolerance`` of the largest fleet's (the hour's ceiling: prompts whose prefill alone
exceeds the SLO miss at any size). Then two figures:

- the hour-by-hour oracle: each hour at its own fewest replicas (foresight of each hour, no cold
  starts), with its GPU-hours and attainment, a bound no online autoscaler reaches;
- the correlation between an hour's need and its prefill load: how much of the need load
  explains, hence how much an autoscaler tracking load can give back; and the same for the
  hour's count of long prompts (over 16k, 32k, 64k tokens), a signal a source could add.

simulations/README.md ("Where we lose") has what this gave on ServeGen.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from scenario import ROOT, Scenario, load_scenario

from autoscaler.config.loader import parse_policy
from autoscaler.sim.runner import simulate
from autoscaler.sim.traces import Trace
from autoscaler.sim.tune import parse_path, substitute

STATIC = ROOT / "policies" / "baselines" / "static-peak.yaml"
HOUR = 3600.0
LONG_PROMPTS = (16_000, 32_000, 64_000)


def fewest_within(per_hour: dict[int, np.ndarray], tolerance: float) -> np.ndarray:
    """Per hour, the fewest replicas (keys of ``per_hour``: fleet size -> attainment per hour)
    whose attainment is within ``tolerance`` of the largest fleet's that hour."""
    sizes = sorted(per_hour)
    ceiling = per_hour[sizes[-1]]
    return np.array(
        [
            next(n for n in sizes if per_hour[n][h] >= ceiling[h] - tolerance)
            for h in range(len(ceiling))
        ]
    )


def replay_fleets(
    trace: Trace,
    s: Scenario,
    sizes: list[int],
    block: np.ndarray,
    measure_from: float | None = None,
) -> dict[int, np.ndarray]:
    """Fleet size -> the attainment of each block of requests (``block``: a block index per
    measured request) with that many replicas fixed: policies/baselines/static-peak.yaml with its
    count set, replayed over ``trace`` and measured from ``measure_from``, printing each fleet's
    GPU-hours and attainment as it goes."""
    text = STATIC.read_text()
    path = [parse_path("spec.targets[0].policy.params.replicas")]
    blocks = int(block.max()) + 1
    requests = np.maximum(np.bincount(block, minlength=blocks), 1)
    out: dict[int, np.ndarray] = {}
    for n in sizes:
        doc = parse_policy(substitute(text, path, [n]), str(STATIC))
        r = simulate(trace, doc, s.cluster, seed=0, slo_ttft_s=s.slo, measure_from=measure_from)
        met = np.nan_to_num(r.ttft, nan=np.inf) <= s.slo
        out[n] = np.bincount(block, weights=met, minlength=blocks) / requests
        print(
            f"static {n:3d}: {r.metrics['gpu_hours']:8.1f} GPU-h, "
            f"attainment {r.metrics['slo_attainment']:.4f}",
            flush=True,
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario", nargs="?", default="servegen-m-small-longhorizon")
    ap.add_argument("--replicas", default="10,12,14,16,18,20,24")
    ap.add_argument("--tolerance", type=float, default=0.001)
    args = ap.parse_args()
    sizes = sorted(int(x) for x in args.replicas.split(","))
    s = load_scenario(args.scenario)
    held = s.full.arrival_s >= s.mid
    hour, _, load = s.blocks(s.full, s.mid, float(s.full.span_s), HOUR)
    hours = len(load)
    requests = np.bincount(hour, minlength=hours)
    per_hour = replay_fleets(s.full, s, sizes, hour, measure_from=s.mid)
    ceiling = per_hour[sizes[-1]]
    need = fewest_within(per_hour, args.tolerance)
    print("\nhour  requests  prefill load  " + "  ".join(f"{n:>5d}" for n in sizes) + "  need")
    for h in range(hours):
        cells = "  ".join(f"{per_hour[n][h]:.3f}" for n in sizes)
        print(f"{h:4d}  {requests[h]:8d}  {load[h]:12.1f}  {cells}  {need[h]:4d}")
    met_oracle = sum(per_hour[int(need[h])][h] * requests[h] for h in range(hours))
    print(
        f"\nhour-by-hour oracle (each hour at its need, tolerance {args.tolerance:g}): "
        f"{need.sum():.0f} GPU-h over {hours} h (mean {need.mean():.1f} replicas), attainment "
        f"{met_oracle / requests.sum():.4f}; the largest fleet's: {sizes[-1] * hours} GPU-h, "
        f"{float((ceiling * requests).sum() / requests.sum()):.4f}"
    )
    corr = float(np.corrcoef(load, need)[0, 1])
    print(
        f"need against prefill load: correlation {corr:.2f}; need {need.min()}-{need.max()} "
        f"replicas while the load runs {load.min():.1f}-{load.max():.1f}"
    )
    # A source could count long prompts too (vLLM's request_prompt_tokens histogram): do they
    # say more about the need than the load does?
    for tokens in LONG_PROMPTS:
        long = np.bincount(hour, weights=s.full.input_tokens[held] > tokens, minlength=hours)
        print(
            f"need against prompts over {tokens // 1000}k tokens an hour: correlation "
            f"{float(np.corrcoef(long, need)[0, 1]):.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
