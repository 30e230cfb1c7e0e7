"""ServeGen per-client rate windows (``servegen_*_trace_csvs.tar.gz``) expanded into arrivals.

Each ``chunk-<client>-trace.csv`` member is one client; every headerless row describes one
600-s window: ``window_start_s, rate, iat_cv, pattern, arg1, arg2``. ``rate`` is the published
request rate (req/s) and ``iat_cv`` the inter-arrival CV inside the window. ``pattern`` and
``arg1``/``arg2`` (the fitted Gamma/Weibull parameters) are not used: every window is expanded
with a stationary Gamma renewal process of mean gap 1/(rate x rate_scale) and CV
``min(iat_cv, max_cv)`` (shape 1/cv**2; see ``expand.py``), independently per client and window.

Decisions, documented because they change what the trace looks like:

- ``rate_scale`` (default 1.0) multiplies every rate. At 1.0 the released levels are huge
  (m-large ~237 M requests over 14 days, m-mid ~2.2 G), so expansion is refused above
  ``max_requests`` (default 10 M, ~800 MB of arrays); pick a window with ``start_s``/``end_s``
  or a ``rate_scale`` like 0.01. deepseek-r1 (~1.4 M) and mm-image (~0.8 M) load at 1.0.
- ``max_cv`` (default 10) caps the in-window CV. A few clients report CV up to ~1000, whose
  Gamma shape (1e-6) makes every window one enormous burst; the cap bounds the work and the
  count variance. The mean rate is unaffected, only the burstiness of those windows.
- Windows where every client reports rate 0 (the collection gaps in m-mid and m-small) come out
  as silence; mask them yourself if you use the series as demand.
- Token counts are 0: the companion ``chunk-*-dataset.json`` files were not published with the
  traces here. ``autoscaler.sim.synth.sample_tokens`` can attach synthetic ones.
- Slicing selects the windows overlapping ``[start_s, end_s)`` before expansion, so a sliced
  load is a different (equally distributed) realization than slicing a full load.

A single plain ``chunk-*-trace.csv`` file is also accepted (one client).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from autoscaler.core.errors import InputFormatError
from autoscaler.sim.traces._source import (
    GZIP_MAGIC,
    UTF8_BOM,
    archive_members,
    read_bytes,
    read_head,
    trace_name,
)
from autoscaler.sim.traces._table import Table
from autoscaler.sim.traces._window import check_window, origin, row_range
from autoscaler.sim.traces.expand import (
    DEFAULT_MAX_REQUESTS,
    check_scale,
    check_size,
    expected_requests,
    gamma_renewal_arrivals,
)
from autoscaler.sim.traces.model import Trace

WINDOW_S = 600.0
COLUMNS = ("window_start_s", "rate", "iat_cv", "pattern", "arg1", "arg2")
MEMBER_RE = re.compile(r"(?:^|/)chunk-\d+-trace\.csv$")
MIN_CV = 0.01
DEFAULT_MAX_CV = 10.0


def load_servegen(
    path: str | Path,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    seed: int = 0,
    rate_scale: float = 1.0,
    max_cv: float = DEFAULT_MAX_CV,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    name: str | None = None,
) -> Trace:
    check_window(start_s, end_s)
    check_scale(rate_scale)
    if not max_cv >= MIN_CV:
        raise ValueError(f"max_cv must be >= {MIN_CV}, got {max_cv}")
    path = Path(path)
    file = str(path)
    starts, rates, cvs = read_windows(path)
    lo = -np.inf if start_s is None else start_s
    hi = np.inf if end_s is None else end_s
    pick = (rates > 0) & (starts + WINDOW_S > lo) & (starts < hi)
    starts, rates, cvs = starts[pick], rates[pick] * rate_scale, cvs[pick]
    check_size(
        file,
        expected_requests(rates, WINDOW_S),
        max_requests,
        "pass a smaller rate_scale or a start_s/end_s window",
    )
    cvs = np.clip(cvs, MIN_CV, max_cv)
    t = gamma_renewal_arrivals(starts, WINDOW_S, rates, cvs, np.random.default_rng(seed))
    a, b = row_range(t, start_s, end_s)
    n = b - a
    return Trace(
        name=name or trace_name(path),
        fmt="servegen",
        start_epoch=0.0,
        arrival_s=t[a:b] - origin(start_s),
        input_tokens=np.zeros(n, np.int64),
        output_tokens=np.zeros(n, np.int64),
        service_s=None,
    )


def read_windows(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(window_start_s, rate, iat_cv) of every row of every client, clients in natural order."""
    file = str(path)
    if read_head(path, 2) == GZIP_MAGIC:
        members = archive_members(path, lambda m: MEMBER_RE.search(m) is not None)
        if not members:
            raise InputFormatError.at(file, 0, 0, "archive has no chunk-*-trace.csv members")
        sources = [(f"{file}!{member}", data) for member, data in members]
    else:
        sources = [(file, read_bytes(path))]
    starts, rates, cvs = [], [], []
    for where, data in sources:
        offset = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
        if not data[offset:] or data[offset:].isspace():
            raise InputFormatError.at(where, 1, 1, "empty file")
        table = Table.parse(data, where, COLUMNS, offset, first_line=1)
        ws = table.floats(0, minimum=0.0)
        rate = table.floats(1, minimum=0.0)
        cv = table.floats(2, minimum=0.0)
        table.check_sorted(0, ws, ~np.isnan(ws))
        table.raise_errors()
        starts.append(ws)
        rates.append(rate)
        cvs.append(cv)
    return np.concatenate(starts), np.concatenate(rates), np.concatenate(cvs)
