"""Alibaba GenAI 2026 gateway QPS samples (``qps.tar.gz`` holding ``qps.csv``) as arrivals.

``qps.csv`` has ``timestamp_anon,value,container_ip,request_type``; one row is one container's
QPS sample, the scale is anonymized ("preserves trend proportions"). As the dataset README
recommends, samples are summed across containers per window: windows are ``window_s`` = 60 s
wide (the README's per-minute convention), counted from the first selected sample, which is
t=0 (``start_epoch`` is its anonymized UNIX time). The summed value x ``rate_scale`` is taken as
the window's request rate in req/s, and each window is expanded into Poisson arrivals (seeded).
Rows need not be sorted (they are binned). ``request_type`` selects ``"Generative Requests"``
or ``"API Requests"``; None (default) keeps both. Tokens are 0; there is no service time.

Because the sampling is irregular, a window's sum also depends on how many samples land in it:
use the shape, and set ``rate_scale`` to reach the absolute level you want (mean ~2.65 req/s at
1.0 with both types). A plain ``qps.csv`` is accepted too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autoscaler.core.errors import InputFormatError
from autoscaler.sim.traces._source import (
    GZIP_MAGIC,
    archive_members,
    read_bytes,
    read_head,
    trace_name,
)
from autoscaler.sim.traces._table import Table, check_header, split_header
from autoscaler.sim.traces._window import check_window, origin, row_range
from autoscaler.sim.traces.expand import (
    DEFAULT_MAX_REQUESTS,
    check_scale,
    check_size,
    expected_requests,
    poisson_arrivals,
)
from autoscaler.sim.traces.model import FloatArray, Trace

HEADER = ("timestamp_anon", "value", "container_ip", "request_type")
MEMBER = "qps.csv"
DEFAULT_WINDOW_S = 60.0


def load_alibaba_qps(
    path: str | Path,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    seed: int = 0,
    rate_scale: float = 1.0,
    window_s: float = DEFAULT_WINDOW_S,
    request_type: str | None = None,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    name: str | None = None,
) -> Trace:
    check_window(start_s, end_s)
    check_scale(rate_scale)
    if not (window_s > 0 and np.isfinite(window_s)):
        raise ValueError(f"window_s must be a positive finite number, got {window_s}")
    path = Path(path)
    file = str(path)
    where, data = _qps_bytes(path)
    names, offset = split_header(data, where)
    check_header(where, names, HEADER, "an Alibaba QPS file")
    table = Table.parse(data, where, HEADER, offset, first_line=2)
    ts = table.floats(0, minimum=0.0)
    value = table.floats(1, minimum=0.0)
    table.raise_errors()
    if request_type is not None:
        kinds = np.array(table.strings(3))
        keep = kinds == request_type
        if not keep.any():
            found = ", ".join(sorted(set(kinds.tolist())))
            raise InputFormatError.at(
                where, 0, 0, f"no rows with request_type {request_type!r} (found: {found})"
            )
        ts, value = ts[keep], value[keep]
    t0 = float(ts.min())
    idx = np.floor((ts - t0) / window_s).astype(np.int64)
    rate: FloatArray = np.bincount(idx, weights=value).astype(np.float64) * rate_scale
    starts = np.arange(rate.shape[0], dtype=np.float64) * window_s
    lo = -np.inf if start_s is None else start_s
    hi = np.inf if end_s is None else end_s
    pick = (starts + window_s > lo) & (starts < hi)
    check_size(
        file,
        expected_requests(rate[pick], window_s),
        max_requests,
        "pass a smaller rate_scale or a start_s/end_s window",
    )
    t = poisson_arrivals(starts[pick], window_s, rate[pick], np.random.default_rng(seed))
    a, b = row_range(t, start_s, end_s)
    n = b - a
    return Trace(
        name=name or trace_name(path),
        fmt="alibaba-qps",
        start_epoch=t0 + origin(start_s),
        arrival_s=t[a:b] - origin(start_s),
        input_tokens=np.zeros(n, np.int64),
        output_tokens=np.zeros(n, np.int64),
        service_s=None,
    )


def _qps_bytes(path: Path) -> tuple[str, bytes]:
    file = str(path)
    if read_head(path, 2) != GZIP_MAGIC:
        return file, read_bytes(path)
    members = archive_members(path, lambda m: m.rsplit("/", 1)[-1] == MEMBER)
    if not members:
        raise InputFormatError.at(file, 0, 0, f"archive has no {MEMBER} member")
    member, data = members[0]
    where = f"{file}!{member}"
    if not data or data.isspace():
        raise InputFormatError.at(where, 1, 1, "empty file")
    return where, data
