"""Long-horizon LLM arrival traces from the ServeGen and Alibaba QPS rate series.

Both sources are rates, not requests: the existing loaders (``servegen.py``,
``alibaba_qps.py``) expand them into seeded arrivals. This module reuses them and adds what a
long-horizon LLM scenario needs on top:

- **Token counts.** Neither source has them, and with zero tokens the simulator cannot model an
  LLM replica. Each request gets independent synthetic (input, output) counts drawn from one of
  the published profiles in ``autoscaler.sim.synth.TOKEN_PROFILES`` (seeded, after the arrivals;
  default ``mooncake``, long contexts, so one H100 replica serves about 1 request/s and a fleet
  of 2-30 replicas stays at a few million requests per simulated week).
- **ServeGen collection gaps.** m-mid and m-small have 10-minute windows where every client
  reports rate 0 (the collector was down, not the service: the neighbouring windows are at full
  level). With ``fill_gaps`` (default) each such window takes every client's rate and CV of the
  same window one day earlier (already filled if that was a gap too), so the demand series has
  no fake outages. ``fill_gaps=False`` keeps the loader's behaviour (silence).
- **Scale.** ``rate_scale`` multiplies every rate (the loaders' own argument). Pick it for the
  fleet you want, e.g. ``SERVEGEN_M_SMALL_SCALE`` below gives about 2-30 replicas of
  ``simulations/clusters/llm-8b-h100.yaml`` with the mooncake profile.

``window_rates`` gives the aggregate rate per source window (after scaling and gap filling), the
"true" demand an evaluation uses to find ramps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autoscaler.sim.synth import sample_tokens
from autoscaler.sim.traces._window import check_window, origin, row_range
from autoscaler.sim.traces.alibaba_qps import load_alibaba_qps
from autoscaler.sim.traces.expand import (
    DEFAULT_MAX_REQUESTS,
    check_scale,
    check_size,
    expected_requests,
    gamma_renewal_arrivals,
)
from autoscaler.sim.traces.model import FloatArray, Trace
from autoscaler.sim.traces.servegen import DEFAULT_MAX_CV, MIN_CV, WINDOW_S, read_windows

DAY_S = 86400.0
#: ServeGen m-small (mean ~1,174 req/s) x this ~ 8 req/s mean, ~2-30 mooncake-sized replicas.
SERVEGEN_M_SMALL_SCALE = 0.0068
#: Alibaba GenAI QPS (mean ~2.65 at 1.0, 10-minute p95 ~7.3) x this: ~1-20 replicas.
ALIBABA_QPS_SCALE = 1.5


def servegen_grid(
    path: str | Path, *, fill_gaps: bool = True
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(window starts, rates[client, window], cvs[client, window]) of a ServeGen archive.

    Every client of the released traces has a row for every window; anything else is refused.
    """
    starts, rates, cvs = read_windows(Path(path))
    windows = np.unique(starts)
    n_clients, rest = divmod(starts.shape[0], windows.shape[0])
    if rest or not np.array_equal(starts.reshape(n_clients, -1)[0], windows):
        raise ValueError(f"{path}: clients do not share one window grid; cannot fill gaps")
    grid_r = rates.reshape(n_clients, -1).copy()
    grid_c = cvs.reshape(n_clients, -1).copy()
    if fill_gaps:
        per_day = round(DAY_S / WINDOW_S)
        for w in np.flatnonzero(grid_r.sum(axis=0) == 0):
            src = w - per_day
            if src >= 0:
                grid_r[:, w] = grid_r[:, src]
                grid_c[:, w] = grid_c[:, src]
    return windows, grid_r, grid_c


def window_rates(
    path: str | Path, *, rate_scale: float = 1.0, fill_gaps: bool = True
) -> tuple[FloatArray, FloatArray]:
    """(window starts, aggregate req/s) of a ServeGen archive, scaled and gap-filled."""
    windows, rates, _ = servegen_grid(path, fill_gaps=fill_gaps)
    return windows, rates.sum(axis=0) * rate_scale


def build_servegen(
    path: str | Path,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    rate_scale: float = SERVEGEN_M_SMALL_SCALE,
    seed: int = 0,
    token_profile: str = "mooncake",
    fill_gaps: bool = True,
    max_cv: float = DEFAULT_MAX_CV,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    name: str | None = None,
) -> Trace:
    """ServeGen arrivals over ``[start_s, end_s)`` (re-based to t=0) with synthetic tokens.

    The expansion is the ServeGen loader's (a Gamma renewal process per client and window, CV
    capped at ``max_cv``), on the gap-filled grid.
    """
    check_window(start_s, end_s)
    check_scale(rate_scale)
    if not max_cv >= MIN_CV:
        raise ValueError(f"max_cv must be >= {MIN_CV}, got {max_cv}")
    windows, rates, cvs = servegen_grid(path, fill_gaps=fill_gaps)
    n_clients = rates.shape[0]
    starts = np.tile(windows, n_clients)
    r = rates.reshape(-1) * rate_scale
    c = np.clip(cvs.reshape(-1), MIN_CV, max_cv)
    lo = -np.inf if start_s is None else start_s
    hi = np.inf if end_s is None else end_s
    pick = (r > 0) & (starts + WINDOW_S > lo) & (starts < hi)
    check_size(
        str(path),
        expected_requests(r[pick], WINDOW_S),
        max_requests,
        "pass a smaller rate_scale or a start_s/end_s window",
    )
    rng = np.random.default_rng(seed)
    t = gamma_renewal_arrivals(starts[pick], WINDOW_S, r[pick], c[pick], rng)
    a, b = row_range(t, start_s, end_s)
    arrivals = t[a:b] - origin(start_s)
    inp, out = sample_tokens(arrivals.shape[0], token_profile, rng)
    return Trace(
        name=name or f"servegen-{Path(path).name.split('_trace')[0]}",
        fmt="servegen",
        start_epoch=0.0,
        arrival_s=arrivals,
        input_tokens=inp,
        output_tokens=out,
        service_s=None,
    )


def build_alibaba_qps(
    path: str | Path,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    rate_scale: float = ALIBABA_QPS_SCALE,
    seed: int = 0,
    token_profile: str = "mooncake",
    request_type: str | None = None,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    name: str | None = None,
) -> Trace:
    """Alibaba GenAI QPS arrivals (the loader's per-minute Poisson expansion) with tokens."""
    base = load_alibaba_qps(
        path,
        start_s=start_s,
        end_s=end_s,
        seed=seed,
        rate_scale=rate_scale,
        request_type=request_type,
        max_requests=max_requests,
        name=name,
    )
    # Tokens come from their own stream so the arrivals stay those of the loader for this seed.
    inp, out = sample_tokens(base.requests, token_profile, np.random.default_rng([seed, 1]))
    return Trace(
        name=base.name,
        fmt=base.fmt,
        start_epoch=base.start_epoch,
        arrival_s=base.arrival_s,
        input_tokens=inp,
        output_tokens=out,
        service_s=None,
    )
