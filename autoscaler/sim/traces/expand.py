"""Rate series to request arrivals: per-window rates become seeded, deterministic arrivals.

Two processes, both exact in expectation (mean count in a window = rate x width):

- ``poisson_arrivals``: Poisson count per window, arrivals placed uniformly in the window.
- ``gamma_renewal_arrivals``: a Gamma renewal process per window with inter-arrival mean
  1/rate and coefficient of variation ``cv`` (shape 1/cv**2; cv=1 is Poisson, cv>1 bursty,
  cv<1 regular). Each window starts in the stationary state (the first arrival is a uniform
  fraction of a length-biased gap, Gamma(shape+1)), so short windows and bursty windows are not
  biased towards extra arrivals at their start. Windows are independent.

Everything is vectorized over windows; work is split into chunks of at most ``CHUNK_DRAWS``
random draws so memory stays bounded, and the chunking depends only on the inputs, so a given
seed always produces the same arrivals.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from autoscaler.core.errors import InputFormatError

FloatArray = npt.NDArray[np.float64]
CHUNK_DRAWS = 1 << 21


def expected_requests(rate: FloatArray, width: float) -> float:
    return float(np.sum(rate) * width)


def poisson_arrivals(
    window_start: FloatArray, width: float, rate: FloatArray, rng: np.random.Generator
) -> FloatArray:
    """Sorted arrivals of a Poisson process with a piecewise-constant rate."""
    counts = rng.poisson(np.maximum(rate, 0.0) * width)
    t = np.repeat(window_start, counts) + rng.uniform(0.0, width, int(counts.sum()))
    t.sort()
    return t


def gamma_renewal_arrivals(
    window_start: FloatArray,
    width: float,
    rate: FloatArray,
    cv: FloatArray,
    rng: np.random.Generator,
) -> FloatArray:
    """Sorted arrivals of independent stationary Gamma renewal processes, one per window."""
    active = np.flatnonzero(rate > 0)
    start = window_start[active]
    r = rate[active]
    c = cv[active]
    shape = 1.0 / (c * c)
    scale = (c * c) / r
    mean = r * width
    budget = _budget(mean, c)
    out: list[FloatArray] = []
    cum = np.cumsum(budget)
    i = 0
    n = start.shape[0]
    while i < n:
        done_before = int(cum[i - 1]) if i else 0
        j = int(np.searchsorted(cum, done_before + CHUNK_DRAWS, side="right"))
        j = max(j, i + 1)
        out.extend(_renewal_chunk(start[i:j], width, r[i:j], c[i:j], shape[i:j], scale[i:j], rng))
        i = j
    t = np.concatenate(out) if out else np.zeros(0, np.float64)
    t.sort()
    return t


def _budget(mean: FloatArray, cv: FloatArray) -> npt.NDArray[np.int64]:
    """Draws per window that usually cover it in one round (more rounds top up the rest)."""
    return np.ceil(mean + 3.0 * cv * np.sqrt(mean) + 4.0).astype(np.int64)


def _renewal_chunk(
    start: FloatArray,
    width: float,
    rate: FloatArray,
    cv: FloatArray,
    shape: FloatArray,
    scale: FloatArray,
    rng: np.random.Generator,
) -> list[FloatArray]:
    # Stationary start: forward recurrence time = U * (length-biased gap ~ Gamma(shape + 1)).
    pos = rng.uniform(size=start.shape[0]) * rng.gamma(shape + 1.0, scale)
    out = [start[pos < width] + pos[pos < width]]
    active = np.flatnonzero(pos < width)
    need = _budget(rate[active] * (width - pos[active]), cv[active])
    while active.size:
        seg = np.repeat(np.arange(active.size), need)
        gaps = rng.gamma(shape[active][seg], scale[active][seg])
        cs = np.cumsum(gaps)
        seg_end = np.cumsum(need) - 1
        total = cs[seg_end]
        base = np.concatenate([np.zeros(1), total[:-1]])
        t = pos[active][seg] + (cs - base[seg])
        keep = t < width
        out.append(start[active][seg][keep] + t[keep])
        pos[active] = pos[active] + (total - base)
        active = active[pos[active] < width]
        need = _budget(rate[active] * (width - pos[active]), cv[active])
    return out


#: Default cap on the expected number of requests a rate series may expand into.
DEFAULT_MAX_REQUESTS = 10_000_000


def check_size(file: str, expected: float, max_requests: int, hint: str) -> None:
    """Refuse (InputFormatError, no location) to expand into more than ``max_requests``."""
    if expected > max_requests:
        raise InputFormatError.at(
            file,
            0,
            0,
            f"expanding this rate series would create about {expected:,.0f} requests, more than "
            f"max_requests={max_requests:,}; {hint}",
        )


def check_scale(rate_scale: float) -> None:
    if not (rate_scale > 0 and np.isfinite(rate_scale)):
        raise ValueError(f"rate_scale must be a positive finite number, got {rate_scale}")
