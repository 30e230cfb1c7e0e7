"""Azure LLM inference trace 2023: ``TIMESTAMP,ContextTokens,GeneratedTokens``.

``TIMESTAMP`` looks like ``2023-11-16 18:17:03.9799600`` (7 fractional digits, no zone) and is
read as UTC; a ``Z`` or ``+HH:MM`` suffix (as in the 2024 release) is honoured. t=0 is the
first request, ``start_epoch`` its UNIX time. Times are differenced in integer nanoseconds
before the conversion to float seconds, so no precision is lost to the large epoch value.
Rows must be in ascending time order (the published files are).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autoscaler.sim.traces._source import read_bytes, trace_name
from autoscaler.sim.traces._table import Table, check_header, split_header
from autoscaler.sim.traces._window import check_window, origin, row_range
from autoscaler.sim.traces.model import IntArray, Trace

HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


def load_azure(
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
    check_header(file, names, HEADER, "an Azure LLM trace")
    table = Table.parse(data, file, HEADER, offset, first_line=2)

    ns, valid = table.datetimes_ns(0)
    table.check_sorted(0, ns, valid)
    table.raise_errors(_other_columns)
    t0 = int(ns[0])
    t = (ns - t0).astype(np.float64) / 1e9
    lo, hi = row_range(t, start_s, end_s)
    rows = table.take(lo, hi)
    inp, out = _other_columns(rows)
    rows.raise_errors()
    return Trace(
        name=name or trace_name(path),
        fmt="azure",
        start_epoch=t0 / 1e9 + origin(start_s),
        arrival_s=t[lo:hi] - origin(start_s),
        input_tokens=inp,
        output_tokens=out,
        service_s=None,
    )


def _other_columns(rows: Table) -> tuple[IntArray, IntArray]:
    return rows.ints(1), rows.ints(2)
