"""Idle-gap analysis of the Alibaba diffusion trace, first half only (the tuning half).

    .venv/bin/python simulations/keepalive/analyze_gaps.py

Prints: the idle-gap distribution; how a gap relates to the previous gaps and to the recent
request rate (burstiness); time-of-day and day-of-week structure; per-base-model gaps; how
cold-start requests arise under a fixed keep-alive (one scale-up from zero serving a whole
burst head, or 1->N growth); and an offline, causal bound on what a keep-alive conditioned on
each of those features can gain over a fixed keep-alive at the same idle time (tuned on the
first half, scored on the second). Read by docs/keepalive.md.

The model here is the simulator's, simplified: a request holds one replica from arrival for its
``exec_time_seconds`` (no queueing), a target is busy while any request is in flight, an idle
gap runs from the end of a busy period to the next arrival, and a keep-alive of K seconds turns
every gap longer than K into one scale-up from zero whose cold start (60 s) every arrival in
its first 60 s waits for. Idle cost is one replica for min(gap, K).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
TRACE = ROOT.parent / "shared" / "traces" / "alibaba_genai2026_lora_request_trace.csv"
COLD_START_S = 60.0
FIXED = {"knative-90s": 90.0, "keda-300s": 300.0, "fixed-10m": 600.0, "fixed-20m": 1200.0}


@dataclass(frozen=True)
class Gaps:
    """One row per idle gap: it starts at ``start`` (end of a busy period) and lasts ``length``;
    ``head`` arrivals fall in the first COLD_START_S after it ends."""

    start: np.ndarray
    length: np.ndarray
    head: np.ndarray
    prev: np.ndarray  # the gap before (nan for the first)
    rate1h: np.ndarray  # arrivals in the hour before the gap starts
    busy_n: np.ndarray  # arrivals in the busy period that just ended
    model: np.ndarray  # base model of the last request before the gap
    epoch0: float


def load(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    ts, svc, model = [], [], []
    with path.open() as f:
        for row in csv.DictReader(f):
            t = datetime.strptime(row["gmt_create"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            ts.append(t.timestamp())
            svc.append(float(row["exec_time_seconds"] or 0.0))
            model.append(row["checkpoint_model_version_id"])
    t = np.asarray(ts)
    order = np.argsort(t, kind="stable")
    t0 = float(t[order][0])
    return t[order] - t0, np.asarray(svc)[order], np.asarray(model)[order], t0


def gaps_of(arr: np.ndarray, svc: np.ndarray, model: np.ndarray, epoch0: float) -> Gaps:
    finish = np.maximum.accumulate(arr + svc)
    new = np.ones(arr.size, dtype=bool)
    new[1:] = arr[1:] > finish[:-1]
    first = np.nonzero(new)[0]  # first request of each busy period
    ends = finish[first[1:] - 1]
    starts_next = arr[first[1:]]
    length = starts_next - ends
    head = np.searchsorted(arr, starts_next + COLD_START_S, side="left") - first[1:]
    prev = np.concatenate([[np.nan], length[:-1]])
    rate1h = np.searchsorted(arr, ends, side="right") - np.searchsorted(arr, ends - 3600.0)
    busy_n = np.diff(first)
    return Gaps(ends, length, head, prev, rate1h, busy_n, model[first[1:] - 1], epoch0)


def pct(x: np.ndarray, qs: tuple[float, ...] = (5, 25, 50, 75, 90, 95, 99)) -> str:
    if not x.size:
        return "(none)"
    return ", ".join(f"p{q:g} {np.percentile(x, q):.0f}" for q in qs)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = ~(np.isnan(a) | np.isnan(b))
    ra = np.argsort(np.argsort(a[ok])).astype(float)
    rb = np.argsort(np.argsort(b[ok])).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def fixed_cost(g: Gaps, k: float) -> tuple[int, float, int]:
    """Cold-start requests, idle replica-hours and scale-ups from zero of a fixed keep-alive."""
    miss = g.length > k
    return int(g.head[miss].sum()), float(np.minimum(g.length, k).sum()) / 3600.0, int(miss.sum())


KS = np.array([0, 30, 60, 90, 120, 180, 240, 300, 420, 600, 900, 1200, 1800, 2700, 3600, 7200])


def bucket_policy(train: Gaps, key: Callable[[Gaps], np.ndarray], lam: float) -> dict[int, float]:
    """Per bucket, the K minimising cold-start requests + lam x idle replica-hours on train."""
    keys = key(train)
    out: dict[int, float] = {}
    for b in np.unique(keys):
        sel = keys == b
        L, H = train.length[sel], train.head[sel]
        cost = [H[k < L].sum() + lam * np.minimum(L, k).sum() / 3600.0 for k in KS]
        out[int(b)] = float(KS[int(np.argmin(cost))])
    return out


def apply_policy(g: Gaps, key: Callable[[Gaps], np.ndarray], ks: dict[int, float], dflt: float):
    k = np.array([ks.get(int(b), dflt) for b in key(g)])
    miss = g.length > k
    return int(g.head[miss].sum()), float(np.minimum(g.length, k).sum()) / 3600.0


def frontier_at(fixed_pts: list[tuple[float, int]], idle: float) -> float:
    xs = [x for x, _ in fixed_pts]
    ys = [y for _, y in fixed_pts]
    return float(np.interp(idle, xs, ys))


def split(path: Path) -> tuple[Gaps, Gaps]:
    """The idle gaps of the first and the second half of the trace, split by time at half its
    span (as simulations/keepalive/evaluate.py splits it)."""
    arr, svc, model, epoch0 = load(path)
    cut = float(np.floor(arr[-1] / 2))
    tr, te = arr < cut, arr >= cut
    return (
        gaps_of(arr[tr], svc[tr], model[tr], epoch0),
        gaps_of(arr[te] - cut, svc[te], model[te], epoch0 + cut),
    )


def combined_key(x: Gaps) -> np.ndarray:
    """Previous gap x arrivals in the last hour x quarter of the day: up to 100 buckets."""
    prev = np.digitize(np.nan_to_num(x.prev), [10, 60, 300, 1800])
    rate = np.digitize(x.rate1h, [2, 5, 20, 60])
    quarter = ((x.epoch0 + x.start) // 3600 % 24).astype(int) // 6
    return np.asarray(prev * 100 + rate * 10 + quarter)


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a positive scores above a negative (ties count half)."""
    ok = ~np.isnan(score)
    s, y = score[ok], positive[ok]
    order = np.argsort(s, kind="stable")
    ranks = np.empty(s.size)
    ranks[order] = np.arange(1, s.size + 1)
    for v in np.unique(s):  # average ranks over ties
        tie = s == v
        ranks[tie] = ranks[tie].mean()
    npos, nneg = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def bounds(path: Path) -> dict[str, object]:
    """What keep-alive could reach on the second half at each fixed keep-alive's idle cost:
    a clairvoyant keep-alive (knows at the start of each gap whether it will outlast K), the
    best keep-alive conditioned on the previous gap, the last hour's arrivals and the quarter
    of the day, tuned on the second half itself (optimistic: in-sample) and on the first half
    (honest), and a perfect oracle that pre-warms just in time."""
    train, test = split(path)
    insample, clair = frontiers(test)
    trained = []
    for lam in LAMBDAS:
        ks = bucket_policy(train, combined_key, float(lam))
        dflt = float(np.median(list(ks.values())))
        c_tr, i_tr = apply_policy(train, combined_key, ks, dflt)
        c_te, i_te = apply_policy(test, combined_key, ks, dflt)
        trained.append((i_tr, c_tr, i_te, c_te))

    at_budget: dict[str, dict[str, object]] = {}
    for name, k in FIXED.items():
        cold, idle, _ = fixed_cost(test, k)
        _, idle_tr, _ = fixed_cost(train, k)
        fit = [t for t in trained if t[0] <= idle_tr + 1e-9]
        pick = min(fit, key=lambda t: (t[1], t[0])) if fit else None
        at_budget[name] = {
            "fixed_cold": cold,
            "idle_h": round(idle, 1),
            "target_cold": cold // 2,
            "clairvoyant_cold": best(clair, idle),
            "conditioned_in_sample_cold": best(insample, idle),
            "conditioned_first_half_tuned": None
            if pick is None
            else {"cold": int(pick[3]), "idle_h": round(pick[2], 1)},
        }
    long = train.length > 90
    over = train.length[long] > 600
    rate_auc = auc(-train.rate1h[long].astype(float), over)
    hours = ((train.epoch0 + train.start) // 3600 % 24)[long]
    night = np.isin(hours, [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]).astype(float)
    oracle_idle = float(np.minimum(test.length, COLD_START_S).sum()) / 3600.0
    return {
        "at_budget": at_budget,
        "auc_gap_over_600s": {
            "previous_gap": round(auc(train.prev[long], over), 3),
            "arrivals_last_hour": round(rate_auc, 3),
            "quiet_hours_04_16": round(auc(night, over), 3),
        },
        "oracle": {"cold": 0, "idle_h": round(oracle_idle, 1)},
    }


LAMBDAS = np.geomspace(0.5, 400.0, 48)


def frontiers(test: Gaps) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
    """(idle replica-hours, cold-start requests) points of the conditioned keep-alive tuned on
    ``test`` itself (optimistic), swept over lambda, and of the clairvoyant keep-alive, swept
    over K."""
    insample = []
    for lam in LAMBDAS:
        ks = bucket_policy(test, combined_key, float(lam))
        c, i = apply_policy(test, combined_key, ks, 600.0)
        insample.append((i, c))
    clair = [
        (
            float(np.where(test.length > k, 0.0, test.length).sum()) / 3600.0,
            int(test.head[test.length > k].sum()),
        )
        for k in np.arange(0.0, 7201.0, 10.0)
    ]
    return insample, clair


def best(points: list[tuple[float, int]], budget: float) -> int | None:
    """The fewest cold-start requests among points within ``budget`` idle hours."""
    ok = [c for i, c in points if i <= budget + 1e-9]
    return min(ok) if ok else None


def model_bounds(
    arr: np.ndarray, svc: np.ndarray, model: np.ndarray, epoch0: float, cut: float, name: str
) -> dict[str, dict[str, object]]:
    """The bounds of ``bounds`` for one base model as its own target, second half."""
    sel = (model == name) & (arr >= cut)
    test = gaps_of(arr[sel] - cut, svc[sel], model[sel], epoch0 + cut)
    insample, clair = frontiers(test)
    out: dict[str, dict[str, object]] = {}
    for fixed_name in ("keda-300s", "fixed-10m"):
        cold, idle, _ = fixed_cost(test, FIXED[fixed_name])
        out[fixed_name] = {
            "fixed_cold": cold,
            "idle_h": round(idle, 1),
            "conditioned_in_sample_cold": best(insample, idle),
            "clairvoyant_cold": best(clair, idle),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--trace", default=str(TRACE))
    args = ap.parse_args(argv)
    arr, svc, model, epoch0 = load(Path(args.trace))
    cut = float(np.floor(arr[-1] / 2))
    tr, te = arr < cut, arr >= cut
    train = gaps_of(arr[tr], svc[tr], model[tr], epoch0)
    test = gaps_of(arr[te] - cut, svc[te], model[te], epoch0 + cut)
    g = train
    print(f"first half [0, {cut:.0f}) s: {tr.sum()} requests, {g.length.size} idle gaps")
    print(f"  gaps (s): {pct(g.length)}")
    for lim in (10, 30, 60, 90, 300, 600, 1200, 3600):
        print(f"  share of gaps <= {lim:>5} s: {np.mean(g.length <= lim):.3f}")
    long = g.length > 90
    print(f"  gaps > 90 s: {long.sum()}, (s): {pct(g.length[long])}")

    print("\nBurstiness (first half)")
    print(f"  Spearman(log gap, log previous gap): {spearman(g.length, g.prev):.3f}")
    print(f"  Spearman(gap, arrivals in the previous hour): {spearman(g.length, g.rate1h):.3f}")
    print(f"  Spearman(gap, arrivals in the busy period): {spearman(g.length, g.busy_n):.3f}")
    for name, x, edges in (
        ("previous gap (s)", g.prev, [0, 10, 60, 300, 1800, np.inf]),
        ("arrivals in the previous hour", g.rate1h.astype(float), [0, 2, 5, 20, 60, np.inf]),
    ):
        print(f"  next gap by {name}:")
        for lo, hi in itertools.pairwise(edges):
            sel = (x >= lo) & (x < hi)
            if sel.sum():
                L = g.length[sel]
                print(
                    f"    [{lo:g}, {hi:g}): n={sel.sum():5d}  P(>90s)={np.mean(L > 90):.3f} "
                    f"P(>300s)={np.mean(L > 300):.3f} P(>1200s)={np.mean(L > 1200):.3f}  "
                    f"{pct(L, (50, 90, 99))}"
                )
    # Hazard after an idle time t: P(arrival within the next 60 s | idle >= t).
    print("  P(next arrival within 60 s | idle so far >= t) (first half):")
    for t in (0, 60, 120, 300, 600, 1200, 1800, 3600):
        alive = g.length >= t
        if alive.sum():
            print(f"    t={t:>5}: n={alive.sum():5d}  {np.mean(g.length[alive] < t + 60):.3f}")

    print("\nTime of day / day of week (UTC of the anonymized clock), first half")
    hours = ((g.epoch0 + g.start) // 3600 % 24).astype(int)
    arr_hours = ((epoch0 + arr[tr]) // 3600 % 24).astype(int)
    per_hour = np.bincount(arr_hours, minlength=24)
    print("  arrivals per hour of day: " + " ".join(f"{h}:{c}" for h, c in enumerate(per_hour)))
    for h0 in range(0, 24, 4):
        sel = (hours >= h0) & (hours < h0 + 4)
        L = g.length[sel]
        if L.size:
            print(
                f"  gaps starting {h0:02d}-{h0 + 4:02d}h: n={L.size:5d} "
                f"P(>300s)={np.mean(L > 300):.3f} P(>1200s)={np.mean(L > 1200):.3f}  "
                f"{pct(L, (50, 90, 99))}"
            )
    days = ((epoch0 + arr[tr]) // 86400).astype(int)
    dows = [datetime.fromtimestamp(d * 86400, UTC).strftime("%a") for d in np.unique(days)]
    print(
        "  arrivals per day: "
        + " ".join(f"{w}:{c}" for w, c in zip(dows, np.bincount(days - days[0]), strict=False))
    )
    # Do returns after long gaps happen at a predictable time of day?
    ret = (g.epoch0 + g.start + g.length)[g.length > 1200]
    rh = np.bincount(((ret // 3600) % 24).astype(int), minlength=24)
    by_hour = " ".join(f"{h}:{c}" for h, c in enumerate(rh))
    print(f"  returns after a gap > 20 min, by hour: {by_hour}")

    print("\nPer base model (first half): requests and gaps if each model were its own target")
    names, counts = np.unique(model[tr], return_counts=True)
    for m in names[np.argsort(-counts)][:5]:
        sel = model[tr] == m
        gm = gaps_of(arr[tr][sel], svc[tr][sel], model[tr][sel], epoch0)
        gp = pct(gm.length, (5, 50, 90, 99))
        print(f"  {m}: {sel.sum()} requests, {gm.length.size} gaps, (s): {gp}")
    print(f"  {names.size} base models in the first half; the simulated target is the whole trace")

    print("\nHow cold-start requests arise under a fixed keep-alive (first half, offline model)")
    for name, k in FIXED.items():
        cold, idle, ups = fixed_cost(g, k)
        heads = g.head[g.length > k]
        print(
            f"  {name:12s}: {ups:4d} scale-ups from zero, {cold:4d} cold-start requests "
            f"({cold / max(ups, 1):.2f} per scale-up; {np.mean(heads == 1):.2f} of scale-ups have "
            f"one arrival, {np.mean(heads >= 5):.2f} have >= 5), idle {idle:.1f} replica-h"
        )

    print("\nOffline causal bound: keep-alive conditioned on one feature, tuned on the first half")
    print(f"(cost = cold-start requests + lam x idle replica-hours, per-bucket K in {KS.tolist()})")
    fixed_test = sorted((fixed_cost(test, k)[1], fixed_cost(test, k)[0]) for k in KS)
    keys: dict[str, Callable[[Gaps], np.ndarray]] = {
        "previous gap": lambda x: np.digitize(np.nan_to_num(x.prev), [10, 60, 300, 1800]),
        "arrivals last hour": lambda x: np.digitize(x.rate1h, [2, 5, 20, 60]),
        "busy-period size": lambda x: np.digitize(x.busy_n, [2, 3, 5, 10]),
        "hour of day": lambda x: ((x.epoch0 + x.start) // 3600 % 24).astype(int) // 3,
        "hour x rate": lambda x: (
            (((x.epoch0 + x.start) // 3600 % 24).astype(int) // 6) * 10
            + np.digitize(x.rate1h, [2, 5, 20, 60])
        ),
    }
    for lam in (2.0, 5.0, 10.0, 20.0):
        print(f"  lam={lam:g}:")
        for kname, key in keys.items():
            ks = bucket_policy(train, key, lam)
            dflt = float(np.median(list(ks.values())))
            cold, idle = apply_policy(test, key, ks, dflt)
            front = frontier_at(fixed_test, idle)
            print(
                f"    {kname:20s} second half: {cold:4d} cold-start requests at {idle:6.1f} "
                f"idle replica-h; fixed keep-alive there {front:6.0f} -> "
                f"{100 * (1 - cold / front):5.1f}% fewer"
            )
    print("\nSecond half, fixed keep-alives (offline model):")
    for name, k in FIXED.items():
        cold, idle, ups = fixed_cost(test, k)
        print(f"  {name:12s}: {cold:4d} cold-start requests, {ups} scale-ups, idle {idle:.1f} h")
    print("\nPer-model targets (the three busiest base models, second half, offline model):")
    for m in ("M0002", "M0001", "M0004"):
        for name, row in model_bounds(arr, svc, model, epoch0, cut, m).items():
            print(f"  {m} at {name}'s keep-alive: {row}")
    b = bounds(Path(args.trace))
    print("\nBounds, second half, at each fixed keep-alive's idle replica-hours (offline model)")
    for name, row in b["at_budget"].items():
        print(f"  {name}: {row}")
    print(f"  predictability (AUC, gaps > 90 s, is the gap > 600 s?): {b['auc_gap_over_600s']}")
    print(f"  perfect oracle (pre-warm just in time): {b['oracle']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
