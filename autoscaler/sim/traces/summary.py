"""``trace_summary``: the numbers the traces README reports, computed the same way.

Per-minute bins start at the first arrival, bin k = [t0 + 60k, t0 + 60(k+1)), empty minutes
count, up to the minute holding the last arrival. CVs use the population standard deviation.
Percentiles use numpy's default (linear) interpolation. Undefined values are NaN.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from autoscaler.sim.traces.model import Trace


def trace_summary(trace: Trace) -> dict[str, float | int]:
    t = trace.arrival_s
    n = trace.requests
    out: dict[str, float | int] = {"requests": n, "span_s": trace.span_s}
    if n == 0:
        nan = float("nan")
        out.update(
            minutes=0,
            mean_per_min=nan,
            median_per_min=nan,
            peak_per_min=0,
            cv_per_min=nan,
            zero_minutes=0,
            peak_per_s=0,
            iat_mean_s=nan,
            iat_cv=nan,
        )
    else:
        per_min = _binned(t, 60.0)
        iat = np.diff(t)
        out.update(
            minutes=int(per_min.shape[0]),
            mean_per_min=float(per_min.mean()),
            median_per_min=float(np.median(per_min)),
            peak_per_min=int(per_min.max()),
            cv_per_min=_cv(per_min),
            zero_minutes=int(np.count_nonzero(per_min == 0)),
            peak_per_s=int(_binned(t, 1.0).max()),
            iat_mean_s=float(iat.mean()) if iat.size else float("nan"),
            iat_cv=_cv(iat),
        )
    out.update(_dist("input_tokens", trace.input_tokens))
    out.update(_dist("output_tokens", trace.output_tokens))
    if trace.service_s is not None:
        out.update(_dist("service_s", trace.service_s))
    return out


def _binned(t: npt.NDArray[np.float64], width: float) -> npt.NDArray[np.int64]:
    return np.bincount(np.floor((t - t[0]) / width).astype(np.int64))


def _cv(values: npt.NDArray[np.generic]) -> float:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0 or a.mean() == 0:
        return float("nan")
    return float(a.std() / a.mean())


def _dist(prefix: str, values: npt.NDArray[np.generic]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        nan = float("nan")
        return {f"{prefix}_{k}": nan for k in ("mean", "p50", "p90", "p99", "max")}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        f"{prefix}_mean": float(a.mean()),
        f"{prefix}_p50": float(p50),
        f"{prefix}_p90": float(p90),
        f"{prefix}_p99": float(p99),
        f"{prefix}_max": float(a.max()),
    }
