"""``load_trace``: one entry point for every trace format."""

from __future__ import annotations

import math
from pathlib import Path

from autoscaler.core.errors import InputFormatError
from autoscaler.sim.traces.alibaba_qps import load_alibaba_qps
from autoscaler.sim.traces.alibaba_requests import load_alibaba_requests
from autoscaler.sim.traces.azure import load_azure
from autoscaler.sim.traces.expand import DEFAULT_MAX_REQUESTS
from autoscaler.sim.traces.generic import load_generic_csv
from autoscaler.sim.traces.model import FORMATS, Trace
from autoscaler.sim.traces.mooncake import load_mooncake
from autoscaler.sim.traces.servegen import load_servegen
from autoscaler.sim.traces.sniff import sniff_format

RATE_FORMATS = ("alibaba-qps", "servegen")


def load_trace(
    path: str | Path,
    fmt: str = "auto",
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    speedup: float = 1.0,
    seed: int = 0,
    name: str | None = None,
    rate_scale: float = 1.0,
    max_requests: int = DEFAULT_MAX_REQUESTS,
) -> Trace:
    """Load a trace file of any supported format.

    ``start_s``/``end_s`` select ``[start_s, end_s)`` on the file's own time axis (t=0 is the
    first request for Azure and Alibaba, the trace origin otherwise) and re-base the result so
    that ``start_s`` becomes t=0; the window is applied while reading. ``speedup`` is applied
    after that (``Trace.scaled``). ``seed``, ``rate_scale`` and ``max_requests`` only matter
    for the rate-series formats (``alibaba-qps``, ``servegen``), which are expanded into
    seeded arrivals; for those, use the format's own loader for further options.
    """
    path = Path(path)
    if fmt == "auto":
        fmt = sniff_format(path)
    if fmt not in FORMATS:
        raise InputFormatError.at(
            str(path), 0, 0, f"unknown trace format {fmt!r}; expected one of {', '.join(FORMATS)}"
        )
    if fmt not in RATE_FORMATS and rate_scale != 1.0:
        raise ValueError(f"rate_scale only applies to {' and '.join(RATE_FORMATS)}, not {fmt!r}")
    if not (speedup > 0 and math.isfinite(speedup)):
        raise ValueError(f"speedup must be a positive finite number, got {speedup}")
    trace: Trace
    if fmt == "azure":
        trace = load_azure(path, start_s=start_s, end_s=end_s, name=name)
    elif fmt == "mooncake":
        trace = load_mooncake(path, start_s=start_s, end_s=end_s, name=name)
    elif fmt == "alibaba-requests":
        trace = load_alibaba_requests(path, start_s=start_s, end_s=end_s, name=name)
    elif fmt == "csv":
        trace = load_generic_csv(path, start_s=start_s, end_s=end_s, name=name)
    elif fmt == "alibaba-qps":
        trace = load_alibaba_qps(
            path,
            start_s=start_s,
            end_s=end_s,
            name=name,
            seed=seed,
            rate_scale=rate_scale,
            max_requests=max_requests,
        )
    else:
        trace = load_servegen(
            path,
            start_s=start_s,
            end_s=end_s,
            name=name,
            seed=seed,
            rate_scale=rate_scale,
            max_requests=max_requests,
        )
    return trace.scaled(speedup)
