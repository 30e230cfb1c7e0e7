"""Alibaba GenAI 2026 (GenTD26) Stable-Diffusion request trace, ``lora_request_trace.csv``.

Columns (header required, extra columns after the known ones are fine): ``gmt_create``
(``YYYY-MM-DD HH:MM:SS``, anonymized by a time offset, read as UTC), ..., ``exec_time_seconds``.
Every row is a request that arrived, so all rows are kept whatever their ``predict_status``
(SUCCEED, FAILED, PENDING, PROCESSING): failed requests still loaded the service.
``service_s`` is ``exec_time_seconds`` (PENDING rows have 0.0). There are no token counts.
t=0 is the first request; rows must be in ascending time order (the published file is).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autoscaler.core.errors import InputFormatError
from autoscaler.sim.traces._source import read_bytes, trace_name
from autoscaler.sim.traces._table import Table, split_header
from autoscaler.sim.traces._window import check_window, origin, row_range
from autoscaler.sim.traces.model import Trace

TIME_COLUMN = "gmt_create"
SERVICE_COLUMN = "exec_time_seconds"


def load_alibaba_requests(
    path: str | Path,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    name: str | None = None,
) -> Trace:
    check_window(start_s, end_s)
    path = Path(path)
    file = str(path)
    data = read_bytes(path)
    names, offset = split_header(data, file)
    if not names or names[0] != TIME_COLUMN:
        raise InputFormatError.at(
            file,
            1,
            1,
            f"wrong header for an Alibaba request trace: first column must be "
            f"{TIME_COLUMN!r}, found {names[0] if names else ''!r}",
        )
    if SERVICE_COLUMN not in names:
        raise InputFormatError.at(
            file, 1, len(",".join(names)) + 1, f"header has no {SERVICE_COLUMN!r} column"
        )
    service_col = names.index(SERVICE_COLUMN)
    table = Table.parse(data, file, tuple(names), offset, first_line=2)

    ns, valid = table.datetimes_ns(0)
    table.check_sorted(0, ns, valid)
    table.raise_errors(lambda rows: rows.floats(service_col, minimum=0.0))
    t0 = int(ns[0])
    t = (ns - t0).astype(np.float64) / 1e9
    lo, hi = row_range(t, start_s, end_s)
    rows = table.take(lo, hi)
    service = rows.floats(service_col, minimum=0.0)
    rows.raise_errors()
    n = hi - lo
    return Trace(
        name=name or trace_name(path),
        fmt="alibaba-requests",
        start_epoch=t0 / 1e9 + origin(start_s),
        arrival_s=t[lo:hi] - origin(start_s),
        input_tokens=np.zeros(n, np.int64),
        output_tokens=np.zeros(n, np.int64),
        service_s=service,
    )
