"""Token buckets with plain numbers for time: admission, debt, refill, settlement, shares."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.traffic.agent.budget import OTHER, Charge, Shares, TokenBucket, TokenBudget

T0 = 1000.0


def test_bucket_starts_full_and_refills_at_the_rate_up_to_capacity() -> None:
    b = TokenBucket(rate=100.0, capacity=200.0, now=T0)
    assert b.level == 200.0
    b.adjust(150.0)
    assert b.level == 50.0
    b.refill(T0 + 1.0)
    assert b.level == 150.0
    b.refill(T0 + 10.0)
    assert b.level == 200.0  # capped


def test_wait_is_the_deficit_over_the_rate() -> None:
    b = TokenBucket(rate=100.0, capacity=200.0, now=T0)
    b.adjust(180.0)  # level 20
    assert b.wait(50.0, T0) == pytest.approx(0.3)
    assert b.wait(20.0, T0) == 0.0
    # a cost above the capacity needs only a full bucket
    assert b.wait(1000.0, T0) == pytest.approx(1.8)


def test_zero_rate_admits_nothing_and_waits_forever() -> None:
    budget = TokenBudget(0.0, T0)
    a = budget.try_admit("m", "t", 1.0, T0)
    assert not a.admitted
    assert a.wait == math.inf
    assert budget.try_admit("m", "t", 0.0, T0).admitted  # a free request is free


def test_unlimited_rate_admits_everything() -> None:
    budget = TokenBudget(math.inf, T0)
    for _ in range(100):
        assert budget.try_admit("m", "t", 1e6, T0).admitted


def test_large_request_runs_into_debt_and_delays_the_next() -> None:
    budget = TokenBudget(100.0, T0, burst_seconds=1.0)  # capacity 100
    first = budget.try_admit("m", "t", 500.0, T0)
    assert first.admitted
    assert budget.level("m") == -400.0
    second = budget.try_admit("m", "t", 10.0, T0)
    assert not second.admitted
    assert second.wait == pytest.approx(4.1)  # from -400 to +10 at 100/s
    assert budget.try_admit("m", "t", 10.0, T0 + 4.1).admitted


def test_settle_refunds_and_charges_the_difference() -> None:
    budget = TokenBudget(100.0, T0, burst_seconds=2.0)  # capacity 200
    a = budget.try_admit("m", "t", 150.0, T0)
    assert a.charge is not None
    budget.settle(a.charge, 30.0, T0)
    assert budget.level("m") == pytest.approx(170.0)
    assert budget.level("m", "t") == pytest.approx(170.0)
    b = budget.try_admit("m", "t", 100.0, T0)
    assert b.charge is not None
    budget.settle(b.charge, 250.0, T0)  # used more than estimated: debt
    assert budget.level("m") == pytest.approx(-80.0)
    c = budget.try_admit("m", "t", 10.0, T0)
    budget_refund = TokenBudget(100.0, T0, burst_seconds=2.0)
    r = budget_refund.try_admit("m", "t", 10.0, T0)
    assert r.charge is not None
    budget_refund.settle(r.charge, 0.0, T0)
    assert budget_refund.level("m") == 200.0  # a refund never lifts the level past capacity
    assert not c.admitted


def test_tenant_share_caps_one_tenant_but_not_another() -> None:
    budget = TokenBudget(1000.0, T0, shares=Shares(1.0, {"free": 0.1}))
    assert budget.try_admit("m", "free", 100.0, T0).admitted
    refused = budget.try_admit("m", "free", 50.0, T0)
    assert not refused.admitted
    assert refused.wait == pytest.approx(0.5)  # 50 tokens at 100/s
    assert budget.try_admit("m", "paid", 800.0, T0).admitted
    # the model bucket caps the sum: 100 left, a paid request of 200 must wait
    assert budget.level("m") == pytest.approx(100.0)
    assert budget.try_admit("m", "paid", 200.0, T0).wait == pytest.approx(0.1)


def test_refused_request_charges_neither_bucket() -> None:
    budget = TokenBudget(1000.0, T0, shares=Shares(1.0, {"free": 0.1}))
    assert budget.try_admit("m", "free", 100.0, T0).admitted
    before = budget.level("m")
    assert not budget.try_admit("m", "free", 100.0, T0).admitted
    assert budget.level("m") == before


def test_models_have_separate_buckets() -> None:
    budget = TokenBudget(100.0, T0)
    assert budget.try_admit("a", "t", 100.0, T0).admitted
    assert not budget.try_admit("a", "t", 100.0, T0).admitted
    assert budget.try_admit("b", "t", 100.0, T0).admitted


def test_set_rate_keeps_the_level_and_refills_at_the_new_rate() -> None:
    budget = TokenBudget(100.0, T0, burst_seconds=1.0, shares=Shares(0.5))
    assert budget.try_admit("m", "t", 50.0, T0).admitted  # model 50/100, tenant 0/50
    budget.set_rate(1000.0, T0 + 0.1)  # accrued 0.1 s at the old rate first
    assert budget.level("m") == pytest.approx(60.0)
    assert budget.level("m", "t") == pytest.approx(5.0)
    assert budget.level("m", now=T0 + 0.2) == pytest.approx(160.0)
    assert budget.level("m", "t", now=T0 + 0.2) == pytest.approx(55.0)
    budget.set_rate(10.0, T0 + 0.2)
    assert budget.level("m") == 10.0  # capped at the new capacity


def test_tenant_and_model_names_are_bounded() -> None:
    budget = TokenBudget(100.0, T0, max_models=2, max_tenants=2)
    for i in range(5):
        budget.try_admit(f"m{i}", f"t{i}", 1.0, T0)
    assert budget.model_key("m0") == "m0"
    assert budget.model_key("m4") == OTHER
    assert budget.tenant_key("t1") == "t1"
    assert budget.tenant_key("t9") == OTHER


def test_bad_values_are_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="token rate must be >= 0"):
        TokenBudget(-1.0, T0)
    with pytest.raises(ValueError, match="share of free must be in"):
        Shares(1.0, {"free": 1.5})
    with pytest.raises(ValueError, match="cost must be a finite number"):
        TokenBudget(1.0, T0).try_admit("m", "t", math.nan, T0)


@given(
    rate=st.floats(1.0, 1e5),
    burst=st.floats(0.1, 10.0),
    requests=st.lists(st.tuples(st.floats(0.0, 5.0), st.floats(0.0, 5e4)), min_size=1, max_size=60),
)
def test_admitted_tokens_never_exceed_rate_times_time_plus_burst(
    rate: float, burst: float, requests: list[tuple[float, float]]
) -> None:
    """Whatever the arrivals, admitted tokens <= capacity + rate x elapsed + the last request
    admitted in debt (admission needs min(cost, capacity), so one request may overdraw)."""
    budget = TokenBudget(rate, T0, burst_seconds=burst)
    now, admitted, largest = T0, 0.0, 0.0
    for gap, cost in requests:
        now += gap
        if budget.try_admit("m", "t", cost, now).admitted:
            admitted += cost
            largest = max(largest, cost)
    bound = rate * burst + rate * (now - T0) + largest
    assert admitted <= bound * (1 + 1e-9) + 1e-6


def test_tenant_names_seen_only_in_headers_are_bounded_too() -> None:
    budget = TokenBudget(100.0, T0, max_tenants=3)
    assert [budget.tenant_key(f"t{i}") for i in range(5)] == ["t0", "t1", "t2", OTHER, OTHER]
    assert budget.tenant_key("t1") == "t1"


def test_admit_is_try_admit_without_the_admission_object() -> None:
    """The request path's ``admit``: the charge (with the keys the budget tracks it under), or
    the wait as a number; same buckets, same validation as ``try_admit``."""
    budget = TokenBudget(100.0, T0, max_models=1)
    assert budget.admit("m", "t", 60.0, T0) == Charge("m", "t", 60.0)
    assert budget.admit("m", "t", 60.0, T0) == pytest.approx(0.2)  # 40 left, 20 more at 100/s
    assert budget.level("m") == pytest.approx(40.0)  # a refusal charges nothing
    assert budget.admit("other-model", "t", 10.0, T0) == Charge(OTHER, "t", 10.0)
    for cost in (math.nan, math.inf, -1.0):
        with pytest.raises(ValueError, match="cost"):
            budget.admit("m", "t", cost, T0)
