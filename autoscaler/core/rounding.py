"""``round()`` of a float to an int, written out, for the compiled core (autoscaler/native.py).

Compiled with mypyc, the builtin ``round(x)`` is a generic call costing ~2,000 machine
instructions; the HPA's milli-units and Knative's nanoseconds take one per target per tick. These
give the very same integers (ties to even), and raise as ``round`` does on NaN and infinity.
"""

from __future__ import annotations


def round_even(x: float) -> int:
    """``round(x)``: the nearest integer, ties to the even one."""
    f = int(x)  # truncates toward zero; ValueError on NaN, OverflowError on infinity
    if f > x:
        f -= 1  # the floor, for negative x
    frac = x - f  # exact: f is x's integer part
    if frac > 0.5 or (frac == 0.5 and f % 2 == 1):
        f += 1
    return f


def to_milli(value: float) -> int:
    """Quantity -> integer milli-units, as the HPA carries metric values."""
    return round_even(value * 1000.0)
