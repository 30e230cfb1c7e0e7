"""The project's own trace CSV: ``timestamp_s,input_tokens,output_tokens[,service_s]``.

- ``timestamp_s``: seconds since t=0 (finite, >= 0), rows in ascending (non-decreasing) order;
  an out-of-order row is an error pointing at it, the file is never re-sorted.
- ``input_tokens``, ``output_tokens``: non-negative integers (0 = unknown).
- ``service_s``: optional per-request service time in seconds (finite, >= 0).

No quoting, a header line is required, blank lines are only allowed at the end. This is what
``autoscaler.sim.synth.write_csv`` writes; floats there use Python's shortest round-trip repr, so
a written trace loads back bit-identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autoscaler.sim.traces._source import read_bytes, trace_name
from autoscaler.sim.traces._table import Table, check_header, split_header
from autoscaler.sim.traces._window import check_window, origin, row_range
from autoscaler.sim.traces.model import FloatArray, IntArray, Trace

HEADER = ("timestamp_s", "input_tokens", "output_tokens")
HEADER_WITH_SERVICE = (*HEADER, "service_s")


def load_generic_csv(
    path: str | Path,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    name: str | None = None,
) -> Trace:
    """Load a generic trace CSV; only rows in ``[start_s, end_s)`` are kept (re-based to 0).

    Timestamps of every row are parsed and checked for order; the token and service columns are
    parsed only for the rows inside the window.
    """
    check_window(start_s, end_s)
    path = Path(path)
    file = str(path)
    data = read_bytes(path)
    names, offset = split_header(data, file)
    expected = HEADER_WITH_SERVICE if len(names) == len(HEADER_WITH_SERVICE) else HEADER
    check_header(file, names, expected, "a trace CSV")
    table = Table.parse(data, file, expected, offset, first_line=2)

    t = table.floats(0, minimum=0.0)
    table.check_sorted(0, t, ~np.isnan(t))
    table.raise_errors(_other_columns)
    lo, hi = row_range(t, start_s, end_s)
    rows = table.take(lo, hi)
    inp, out, svc = _other_columns(rows)
    rows.raise_errors()
    return Trace(
        name=name or trace_name(path),
        fmt="csv",
        start_epoch=0.0,
        arrival_s=t[lo:hi] - origin(start_s),
        input_tokens=inp,
        output_tokens=out,
        service_s=svc,
    )


def _other_columns(rows: Table) -> tuple[IntArray, IntArray, FloatArray | None]:
    service = rows.floats(3, minimum=0.0) if len(rows.names) == 4 else None
    return rows.ints(1), rows.ints(2), service
