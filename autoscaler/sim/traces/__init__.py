"""The simulator's trace layer: request arrivals from published traces and our own CSV.

``load_trace(path)`` reads any supported format (sniffed from the name and first bytes) into a
``Trace``; malformed input raises ``autoscaler.core.errors.InputFormatError`` with file, line and
column. See each format module's docstring for its quirks and the decisions taken.
"""

from autoscaler.sim.traces.alibaba_qps import load_alibaba_qps
from autoscaler.sim.traces.alibaba_requests import load_alibaba_requests
from autoscaler.sim.traces.azure import load_azure
from autoscaler.sim.traces.expand import (
    DEFAULT_MAX_REQUESTS,
    gamma_renewal_arrivals,
    poisson_arrivals,
)
from autoscaler.sim.traces.generic import load_generic_csv
from autoscaler.sim.traces.load import load_trace
from autoscaler.sim.traces.model import FORMATS, Trace
from autoscaler.sim.traces.mooncake import load_mooncake
from autoscaler.sim.traces.servegen import load_servegen
from autoscaler.sim.traces.sniff import sniff_format
from autoscaler.sim.traces.summary import trace_summary

__all__ = [
    "DEFAULT_MAX_REQUESTS",
    "FORMATS",
    "Trace",
    "gamma_renewal_arrivals",
    "load_alibaba_qps",
    "load_alibaba_requests",
    "load_azure",
    "load_generic_csv",
    "load_mooncake",
    "load_servegen",
    "load_trace",
    "poisson_arrivals",
    "sniff_format",
    "trace_summary",
]
