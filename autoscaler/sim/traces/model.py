"""The in-memory request trace every loader and the synthetic generator produce."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Formats ``load_trace`` reads ("csv" is the generic ``timestamp_s,input_tokens,...`` file).
#: Traces made by ``autoscaler.sim.synth.synth_trace`` carry ``fmt="synth"``.
FORMATS: tuple[str, ...] = (
    "azure",
    "mooncake",
    "alibaba-requests",
    "alibaba-qps",
    "servegen",
    "csv",
)


@dataclass(frozen=True, slots=True)
class Trace:
    """Request arrivals, one entry per request, sorted by arrival time.

    ``start_epoch`` is the UNIX time of t=0 for formats with absolute timestamps (Azure, Alibaba),
    else 0.0. Arrays are converted to the documented dtypes and made read-only on construction,
    so a Trace is immutable in practice, not just by attribute.
    """

    name: str
    fmt: str
    start_epoch: float
    arrival_s: FloatArray
    input_tokens: IntArray
    output_tokens: IntArray
    service_s: FloatArray | None

    def __post_init__(self) -> None:
        arrival: FloatArray = _frozen(self.arrival_s, np.float64)
        n = arrival.shape[0]
        inp = _frozen(self.input_tokens, np.int64)
        out = _frozen(self.output_tokens, np.int64)
        svc = None if self.service_s is None else _frozen(self.service_s, np.float64)
        for label, arr in (("input_tokens", inp), ("output_tokens", out), ("service_s", svc)):
            if arr is not None and arr.shape != (n,):
                raise ValueError(f"Trace.{label} has shape {arr.shape}, expected ({n},)")
        if not bool(np.all(np.isfinite(arrival))):
            raise ValueError("Trace.arrival_s must be finite")
        if n > 1 and bool(np.any(arrival[1:] < arrival[:-1])):
            raise ValueError("Trace.arrival_s must be sorted ascending")
        object.__setattr__(self, "arrival_s", arrival)
        object.__setattr__(self, "input_tokens", inp)
        object.__setattr__(self, "output_tokens", out)
        object.__setattr__(self, "service_s", svc)

    @property
    def requests(self) -> int:
        """Number of requests."""
        return int(self.arrival_s.shape[0])

    @property
    def span_s(self) -> float:
        """Time from the first to the last arrival (0.0 for fewer than two requests)."""
        if self.requests < 2:
            return 0.0
        return float(self.arrival_s[-1] - self.arrival_s[0])

    def slice(self, start_s: float, end_s: float | None = None) -> Trace:
        """Requests arriving in ``[start_s, end_s)``, re-based so that ``start_s`` becomes t=0.

        ``start_epoch`` moves with t=0 when the trace has absolute times (non-zero start_epoch).
        """
        if end_s is not None and end_s < start_s:
            raise ValueError(f"slice end {end_s} is before start {start_s}")
        lo = int(np.searchsorted(self.arrival_s, start_s, side="left"))
        hi = (
            self.requests
            if end_s is None
            else int(np.searchsorted(self.arrival_s, end_s, side="left"))
        )
        return Trace(
            name=self.name,
            fmt=self.fmt,
            start_epoch=self.start_epoch + start_s if self.start_epoch else 0.0,
            arrival_s=self.arrival_s[lo:hi] - start_s,
            input_tokens=self.input_tokens[lo:hi],
            output_tokens=self.output_tokens[lo:hi],
            service_s=None if self.service_s is None else self.service_s[lo:hi],
        )

    def scaled(self, speedup: float) -> Trace:
        """Replay at ``speedup`` times the rate: arrival times are divided by ``speedup``.

        Service times and token counts are request properties and stay unchanged.
        """
        if not speedup > 0 or not np.isfinite(speedup):
            raise ValueError(f"speedup must be a positive finite number, got {speedup}")
        if speedup == 1.0:
            return self
        return Trace(
            name=self.name,
            fmt=self.fmt,
            start_epoch=self.start_epoch,
            arrival_s=self.arrival_s / speedup,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            service_s=self.service_s,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trace):
            return NotImplemented
        if (self.service_s is None) != (other.service_s is None):
            return False
        return (
            self.name == other.name
            and self.fmt == other.fmt
            and self.start_epoch == other.start_epoch
            and np.array_equal(self.arrival_s, other.arrival_s)
            and np.array_equal(self.input_tokens, other.input_tokens)
            and np.array_equal(self.output_tokens, other.output_tokens)
            and (
                self.service_s is None
                or other.service_s is None
                or np.array_equal(self.service_s, other.service_s)
            )
        )

    def __repr__(self) -> str:
        return (
            f"Trace(name={self.name!r}, fmt={self.fmt!r}, requests={self.requests}, "
            f"span_s={self.span_s:.3f}, start_epoch={self.start_epoch!r}, "
            f"service_s={'yes' if self.service_s is not None else 'no'})"
        )


def _frozen(values: object, dtype: type[np.generic]) -> npt.NDArray[Any]:
    arr = np.ascontiguousarray(values, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"Trace arrays must be one-dimensional, got shape {arr.shape}")
    if arr.flags.writeable:
        if arr is values:
            # Never flip the flag on a caller's array that may be a view they still write to.
            arr = arr.copy()
        arr.flags.writeable = False
    return arr
