"""Synthetic request traces: a seeded, vectorized non-homogeneous Poisson generator.

``synth_trace`` builds a rate profile on a 1-s grid (diurnal sinusoid x bursts x idle gaps),
scales it so the time-average is exactly ``mean_rps``, draws a Poisson count per bin and places
the arrivals uniformly inside it. Token lengths are drawn from lognormal distributions fitted to
the published statistics of the real traces (see ``TOKEN_PROFILES``). The same arguments and seed
always give identical arrays, and ``write_csv`` then writes identical bytes.

``write_csv`` writes the generic trace CSV (``timestamp_s,input_tokens,output_tokens`` plus
``service_s`` when present) that ``autoscaler.sim.traces.load_trace`` reads back bit-identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from autoscaler.sim.traces import Trace, trace_summary
from autoscaler.sim.traces.generic import HEADER, HEADER_WITH_SERVICE

__all__ = [
    "TOKEN_PROFILES",
    "LognormalFit",
    "TokenStats",
    "fit_lognormal",
    "sample_tokens",
    "synth_trace",
    "trace_summary",
    "write_csv",
]

_Z90 = 1.2815515655446004  # standard normal 90th percentile


@dataclass(frozen=True, slots=True)
class TokenStats:
    """Published statistics of one token-length distribution."""

    mean: float
    p50: float
    p90: float
    max: int


@dataclass(frozen=True, slots=True)
class LognormalFit:
    """exp(N(mu, sigma)), rounded to integers and clipped to [1, max]."""

    mu: float
    sigma: float
    max: int


#: (input, output) statistics from the traces README (Azure LLM 2023 code/conv, Mooncake).
TOKEN_PROFILES: dict[str, tuple[TokenStats, TokenStats]] = {
    "azure-conv": (TokenStats(1155, 1020, 2734, 14050), TokenStats(211.1, 129, 424, 1000)),
    "azure-code": (TokenStats(2048, 1469, 5188, 7437), TokenStats(27.9, 13, 55, 1899)),
    "mooncake": (TokenStats(12035, 6909, 27367, 126195), TokenStats(342.6, 350, 597, 2000)),
}
TOKEN_PROFILE_NAMES = (*TOKEN_PROFILES, "none")


def fit_lognormal(stats: TokenStats) -> LognormalFit:
    """Fit a lognormal clipped at ``stats.max`` to the published mean, p50 and p90.

    mu = ln(p50) matches the median exactly (clipping does not move it). sigma minimizes
    10*(relative error of the clipped mean)**2 + (relative error of p90)**2 on a fine grid: two
    parameters cannot match three numbers when a distribution is not lognormal (Mooncake output
    has mean < median), and the mean matters most for load, so it gets the larger weight.
    """
    return _fit(stats.mean, stats.p50, stats.p90, stats.max)


@cache
def _fit(mean: float, p50: float, p90: float, cap: int) -> LognormalFit:
    mu = math.log(p50)
    log_cap = math.log(cap)

    def loss(sigma: float) -> float:
        # E[min(X, cap)] for X ~ lognormal(mu, sigma).
        a = (log_cap - mu - sigma * sigma) / sigma
        b = (log_cap - mu) / sigma
        clipped_mean = math.exp(mu + sigma * sigma / 2) * _phi(a) + cap * (1.0 - _phi(b))
        q90 = min(math.exp(mu + _Z90 * sigma), cap)
        return 10.0 * (clipped_mean / mean - 1.0) ** 2 + (q90 / p90 - 1.0) ** 2

    best = min((k / 1000.0 for k in range(10, 3001)), key=loss)
    return LognormalFit(mu=mu, sigma=best, max=cap)


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def sample_tokens(
    n: int, profile: str, rng: np.random.Generator
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(input, output) token counts for ``n`` requests; independent draws; zeros for "none"."""
    if profile == "none":
        return np.zeros(n, np.int64), np.zeros(n, np.int64)
    if profile not in TOKEN_PROFILES:
        raise ValueError(f"token_profile must be one of {TOKEN_PROFILE_NAMES}, got {profile!r}")
    out = []
    for stats in TOKEN_PROFILES[profile]:
        fit = fit_lognormal(stats)
        x = rng.lognormal(fit.mu, fit.sigma, n)
        out.append(np.clip(np.rint(x), 1, fit.max).astype(np.int64))
    return out[0], out[1]


def synth_trace(
    duration_s: float,
    mean_rps: float,
    *,
    seed: int,
    diurnal_amplitude: float = 0.5,
    diurnal_period_s: float = 86400.0,
    burst_rate_per_h: float = 1.0,
    burst_multiplier: float = 4.0,
    burst_duration_s: float = 60.0,
    idle_gap_fraction: float = 0.0,
    idle_gap_mean_s: float = 120.0,
    token_profile: str = "azure-conv",
    name: str | None = None,
) -> Trace:
    """A synthetic trace over ``[0, duration_s)`` whose expected mean rate is ``mean_rps``.

    Rate shape, evaluated per 1-s bin and then normalized to average ``mean_rps``:

    - diurnal: ``1 - diurnal_amplitude * cos(2*pi*t / diurnal_period_s)`` (t=0 is the trough);
    - bursts: start times are a Poisson process of ``burst_rate_per_h``; for
      ``burst_duration_s`` after each start the rate is multiplied by ``burst_multiplier``
      (overlapping bursts do not stack);
    - idle gaps: exactly ``idle_gap_fraction`` of the time (to 1-s resolution) has zero rate,
      split into about ``fraction * duration / idle_gap_mean_s`` gaps at random positions.

    Arrival times are floored to whole microseconds, so they print exactly in the CSV.
    """
    _check(duration_s > 0 and math.isfinite(duration_s), "duration_s must be > 0")
    _check(mean_rps >= 0 and math.isfinite(mean_rps), "mean_rps must be >= 0")
    _check(0.0 <= diurnal_amplitude <= 1.0, "diurnal_amplitude must be in [0, 1]")
    _check(diurnal_period_s > 0, "diurnal_period_s must be > 0")
    _check(burst_rate_per_h >= 0, "burst_rate_per_h must be >= 0")
    _check(burst_multiplier > 0, "burst_multiplier must be > 0")
    _check(burst_duration_s >= 0, "burst_duration_s must be >= 0")
    _check(0.0 <= idle_gap_fraction < 1.0, "idle_gap_fraction must be in [0, 1)")
    _check(idle_gap_mean_s > 0, "idle_gap_mean_s must be > 0")
    if token_profile not in TOKEN_PROFILE_NAMES:
        raise ValueError(
            f"token_profile must be one of {TOKEN_PROFILE_NAMES}, got {token_profile!r}"
        )
    rng = np.random.default_rng(seed)

    nbins = math.ceil(duration_s)
    left = np.arange(nbins, dtype=np.float64)
    width = np.minimum(left + 1.0, duration_s) - left
    center = left + width / 2.0
    weight = 1.0 - diurnal_amplitude * np.cos(2.0 * np.pi * center / diurnal_period_s)

    n_bursts = int(rng.poisson(burst_rate_per_h * duration_s / 3600.0))
    burst_start = np.sort(rng.uniform(0.0, duration_s, n_bursts))
    if n_bursts and burst_duration_s > 0:
        marks = np.zeros(nbins + 1, np.int64)
        np.add.at(marks, np.floor(burst_start).astype(np.int64), 1)
        stop = np.minimum(np.ceil(burst_start + burst_duration_s), nbins).astype(np.int64)
        np.add.at(marks, stop, -1)
        in_burst = np.cumsum(marks)[:nbins] > 0
        weight = np.where(in_burst, weight * burst_multiplier, weight)

    if idle_gap_fraction > 0:
        weight = np.where(
            _idle_mask(center, duration_s, idle_gap_fraction, idle_gap_mean_s, rng), 0.0, weight
        )

    mass = float(np.sum(weight * width))
    lam = weight * width * (mean_rps * duration_s / mass) if mass > 0 else np.zeros(nbins)
    counts = rng.poisson(lam)
    total = int(counts.sum())
    t = np.repeat(left, counts) + rng.uniform(0.0, 1.0, total) * np.repeat(width, counts)
    t.sort()
    t = np.floor(t * 1e6) / 1e6
    inp, out = sample_tokens(total, token_profile, rng)
    return Trace(
        name=name or f"synth-{token_profile}-{seed}",
        fmt="synth",
        start_epoch=0.0,
        arrival_s=t,
        input_tokens=inp,
        output_tokens=out,
        service_s=None,
    )


def _idle_mask(
    center: npt.NDArray[np.float64],
    duration_s: float,
    fraction: float,
    gap_mean_s: float,
    rng: np.random.Generator,
) -> npt.NDArray[np.bool_]:
    """Bins whose centre falls in one of the idle gaps (total length = fraction x duration)."""
    idle_total = fraction * duration_s
    n_gaps = max(1, round(idle_total / gap_mean_s))
    gaps = idle_total * rng.dirichlet(np.ones(n_gaps))
    busy = (duration_s - idle_total) * rng.dirichlet(np.ones(n_gaps + 1))
    # Layout: busy[0], gap[0], busy[1], gap[1], ..., gap[n-1], busy[n].
    gap_start = np.cumsum(busy[:-1]) + np.concatenate([[0.0], np.cumsum(gaps)[:-1]])
    gap_end = gap_start + gaps
    k = np.searchsorted(gap_start, center, side="right") - 1
    idle: npt.NDArray[np.bool_] = (k >= 0) & (center < gap_end[np.maximum(k, 0)])
    return idle


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def write_csv(trace: Trace, path: str | Path) -> None:
    """Write the generic trace CSV; floats use the shortest repr that reads back exactly.

    ``start_epoch``, ``name`` and ``fmt`` are not stored (the format has no place for them).
    """
    path = Path(path)
    columns: list[list[float] | list[int]] = [
        trace.arrival_s.tolist(),
        trace.input_tokens.tolist(),
        trace.output_tokens.tolist(),
    ]
    header: tuple[str, ...] = HEADER
    row = "%r,%d,%d\n"
    if trace.service_s is not None:
        columns.append(trace.service_s.tolist())
        header = HEADER_WITH_SERVICE
        row = "%r,%d,%d,%r\n"
    step = 1 << 20
    with path.open("w", encoding="ascii", newline="\n") as fh:
        fh.write(",".join(header) + "\n")
        for i in range(0, trace.requests, step):
            chunk = zip(*(c[i : i + step] for c in columns), strict=True)
            fh.write("".join(map(row.__mod__, chunk)))
