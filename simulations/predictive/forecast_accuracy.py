"""How well each forecaster predicts the next bucket of ServeGen m-small demand, vs last value.

    .venv/bin/python simulations/predictive/forecast_accuracy.py [--span train] [--bucket 300]

This is how the forecaster settings of policies/predictive-llm.yaml were chosen, on the training
half only (days 1-7): the predictive policy uses a predictor only while its error beats the last
value's, so a setting that does not beat it on average is rarely used. Demand per bucket is
counted from the built trace (requests/s and prompt + generation tokens/s), the same arrivals
the simulator replays. Errors are scored from the third day on (the first season initialises
Holt-Winters and seasonal-naive). Prints the MAE of last value and seasonal-naive and the best
Holt-Winters settings as a ratio to last value's MAE (< 1 beats it).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from autoscaler.policy.forecast import HoltWinters, LastValue, Scored, SeasonalNaive
from autoscaler.sim.traces.longhorizon import DAY_S, build_servegen

SERVEGEN = (
    Path(__file__).resolve().parents[3]
    / "shared/traces/servegen_language_m-small_trace_csvs.tar.gz"
)
SPANS = {"train": (0.0, 7 * DAY_S), "eval": (7 * DAY_S, 14 * DAY_S)}
Model = LastValue | SeasonalNaive | HoltWinters


def mean_error(ys: np.ndarray, make: Callable[[], Model], skip: int, horizon: int) -> float:
    s = Scored(make(), horizon, 1)
    errors = []
    for i, y in enumerate(ys):
        before = s.mae.count
        s.observe(float(y))
        if s.mae.count > before and i >= skip:
            errors.append(s.mae._errors[0])
    return float(np.mean(errors))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--span", choices=sorted(SPANS), default="train")
    ap.add_argument("--bucket", type=float, default=300.0)
    ap.add_argument("--horizon", type=int, default=1, help="buckets ahead")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    start, end = SPANS[args.span]
    trace = build_servegen(SERVEGEN, start_s=start, end_s=end, seed=args.seed)
    idx = (trace.arrival_s // args.bucket).astype(np.int64)
    series = {
        "requests/s": np.bincount(idx) / args.bucket,
        "tokens/s": np.bincount(idx, weights=trace.input_tokens + trace.output_tokens)
        / args.bucket,
    }
    m = round(DAY_S / args.bucket)
    candidates: list[tuple[str, Callable[[], Model]]] = [
        ("last-value", LastValue),
        ("seasonal-naive", lambda: SeasonalNaive(m)),
    ]
    for a, b, g in itertools.product((0.1, 0.3, 0.5, 0.7, 0.9), (0.0, 0.05), (0.05, 0.2, 0.4)):
        candidates.append(
            (f"holt-winters a={a} b={b} g={g}", lambda a=a, b=b, g=g: HoltWinters(m, a, b, g, 0.9))
        )
    print(f"{trace.name} {args.span}, {args.bucket:g} s buckets, {args.horizon} ahead")
    for label, ys in series.items():
        errs = {name: mean_error(ys, make, 2 * m, args.horizon) for name, make in candidates}
        base = errs["last-value"]
        ranked = sorted(errs.items(), key=lambda kv: kv[1])
        sn = errs["seasonal-naive"] / base
        print(f"  {label}: last-value MAE {base:.4g}, seasonal-naive x{sn:.3f}")
        for name, e in ranked[:5]:
            print(f"    {e / base:.3f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
