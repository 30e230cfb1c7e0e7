"""Small helpers the built-in policies share."""

from __future__ import annotations

from typing import Literal

from autoscaler.core.snapshot import Snapshot

Aggregation = Literal["mean", "max", "last"]


def aggregate(snap: Snapshot, signal: str, span: float, how: Aggregation) -> float | None:
    """The signal over the trailing span, or None when the span holds no sample."""
    if how == "mean":
        return snap.mean(signal, span)
    if how == "max":
        return snap.max(signal, span)
    return snap.last(signal) if snap.age(signal) <= span else None


def to_milli(value: float) -> int:
    """Quantity -> integer milli-units, as the HPA carries metric values."""
    return round(value * 1000.0)
