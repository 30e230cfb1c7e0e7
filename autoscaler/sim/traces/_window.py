"""The ``[start_s, end_s)`` window loaders apply while reading."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt


def check_window(start_s: float | None, end_s: float | None) -> None:
    """ValueError for a window that cannot select anything sensible."""
    for label, value in (("start_s", start_s), ("end_s", end_s)):
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{label} must be finite, got {value}")
    if start_s is not None and end_s is not None and end_s < start_s:
        raise ValueError(f"end_s ({end_s}) is before start_s ({start_s})")


def row_range(
    t: npt.NDArray[np.float64], start_s: float | None, end_s: float | None
) -> tuple[int, int]:
    """Index range of the sorted times ``t`` that fall in ``[start_s, end_s)``."""
    lo = 0 if start_s is None else int(np.searchsorted(t, start_s, side="left"))
    hi = t.shape[0] if end_s is None else int(np.searchsorted(t, end_s, side="left"))
    return lo, max(lo, hi)


def origin(start_s: float | None) -> float:
    """Where t=0 of the returned trace lies on the file's own time axis."""
    return 0.0 if start_s is None else float(start_s)
