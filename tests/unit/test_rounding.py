"""round_even, to_milli and first_after: builtins written out for the compiled core."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.core.rounding import round_even, to_milli


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_round_even_is_round(x: float) -> None:
    assert round_even(x) == round(x)


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12))
def test_to_milli_is_round_of_milli(x: float) -> None:
    assert to_milli(x) == round(x * 1000.0)


def test_ties_go_to_even_and_bad_values_raise() -> None:
    ties = [-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 2.0**52 + 1, -(2.0**53), 1e300]
    assert [round_even(x) for x in ties] == [round(x) for x in ties]
    assert [round_even(x) for x in ties[:8]] == [-4, -2, -2, 0, 0, 2, 2, 4]
    assert round_even(0.49999999999999994) == 0 and round_even(-0.0) == 0
    with pytest.raises(ValueError):
        round_even(math.nan)
    for inf in (math.inf, -math.inf):
        with pytest.raises(OverflowError):
            round_even(inf)


@given(
    st.lists(st.floats(allow_nan=False, min_value=-1e12, max_value=1e12), max_size=80),
    st.one_of(st.floats(min_value=-1e12, max_value=1e12), st.just(math.nan)),
    st.integers(min_value=0, max_value=90),
)
def test_first_after_is_bisect_right(values: list[float], x: float, lo: int) -> None:
    # windows.first_after writes bisect_right out for the compiled core: the same index always.
    from bisect import bisect_right

    from autoscaler.core.windows import first_after

    tss = sorted(values)
    lo = min(lo, len(tss))
    assert first_after(tss, x, lo) == bisect_right(tss, x, lo)
