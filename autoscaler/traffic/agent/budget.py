"""Token buckets for admission: one per model, one per (model, tenant). Pure: no I/O, no clock.

Every call receives ``now`` (seconds, from the agent's injected Clock), so the arithmetic is
tested with plain numbers.

- A bucket refills at ``rate`` tokens/s up to ``capacity`` (``rate * burst_seconds``) and starts
  full.
- A request is admitted when its bucket holds ``min(cost, capacity)``; it is then charged its
  whole estimated cost, which may take the level below zero (a debt repaid by the refill). So a
  request larger than the burst is still served when the bucket is full, and it delays the next
  ones by exactly the time its tokens take at the rate: over any long window the admitted tokens
  never exceed ``rate * window + capacity``.
- Admission needs both the model's bucket and the tenant's (``share * rate``); both are charged,
  or neither.
- ``settle`` replaces the estimate by the real usage: the difference is refunded (up to the
  capacity) or charged as debt.
- ``wait`` is how long until a rejected request would fit: ``(need - level) / rate`` for the
  bucket that needs longest; the HTTP layer sends it rounded up as ``Retry-After``.

A rate of ``math.inf`` admits everything (only when configured so, never by default); a rate of
0 admits nothing and reports ``wait = math.inf``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Admission", "Charge", "Shares", "TokenBucket", "TokenBudget"]

OTHER = "_other"  # the shared key once max_models / max_tenants distinct names are tracked
EPSILON = 1e-6  # tokens: float dust from refill arithmetic is not a reason to wait


class TokenBucket:
    """One bucket; ``level`` may be negative (debt)."""

    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            if math.isinf(self.rate):
                self.level = self.capacity
            elif self.level < self.capacity:
                # conditionals rather than min(): this runs four times per request
                level = self.level + (now - self.updated) * self.rate
                self.level = level if level < self.capacity else self.capacity
            self.updated = now

    def reconfigure(self, rate: float, capacity: float, now: float) -> None:
        """New rate: what accrued so far accrued at the old rate; the level keeps its debt but
        is capped at the new capacity."""
        self.refill(now)
        self.rate = rate
        self.capacity = capacity
        self.level = min(self.level, capacity)

    def wait(self, cost: float, now: float) -> float:
        """Seconds until ``min(cost, capacity)`` is in the bucket; 0 when it is now."""
        rate = self.rate
        if rate <= 0:  # a zero limit admits nothing (its capacity is 0 too)
            return 0.0 if cost <= 0 else math.inf
        capacity = self.capacity
        if now > self.updated:  # refill() inlined: this runs twice per request
            if rate == math.inf:
                self.level = capacity
            elif self.level < capacity:
                level = self.level + (now - self.updated) * rate
                self.level = level if level < capacity else capacity
            self.updated = now
        deficit = (cost if cost < capacity else capacity) - self.level
        if deficit <= EPSILON or rate == math.inf:
            return 0.0
        return deficit / rate

    def adjust(self, delta: float) -> None:
        """Charge ``delta`` tokens (a negative delta is a refund, capped at the capacity)."""
        level = self.level - delta
        self.level = level if level < self.capacity else self.capacity

    def settle(self, delta: float, now: float) -> None:
        """``refill(now)`` then ``adjust(delta)``, in one call (twice per request)."""
        self.refill(now)
        level = self.level - delta
        self.level = level if level < self.capacity else self.capacity


@dataclass(frozen=True, slots=True)
class Shares:
    """Each tenant's share of a model's rate, 0..1. Tenants not named get ``default``; shares
    are ceilings and may add up to more than 1 (the model's bucket caps their sum)."""

    default: float = 1.0
    tenants: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, share in {"(default)": self.default, **self.tenants}.items():
            if not 0 < share <= 1:
                raise ValueError(f"tenant share of {name} must be in (0, 1], got {share}")

    def of(self, tenant: str) -> float:
        return self.tenants.get(tenant, self.default)


@dataclass(slots=True)
class Charge:
    """What an admitted request was charged, to settle when its usage is known. Treated as a
    value; not ``frozen``, because a frozen dataclass takes twice as long to make (one per
    request)."""

    model: str
    tenant: str
    tokens: float


@dataclass(frozen=True, slots=True)
class Admission:
    """``charge`` when admitted; else ``wait``: seconds until it would fit (may be inf)."""

    charge: Charge | None
    wait: float = 0.0

    @property
    def admitted(self) -> bool:
        return self.charge is not None


class TokenBudget:
    """The per-model and per-tenant buckets of one agent (one replica's share of the limit)."""

    def __init__(
        self,
        rate: float,
        now: float,
        *,
        burst_seconds: float = 1.0,
        shares: Shares | None = None,
        max_models: int = 64,
        max_tenants: int = 1000,
    ) -> None:
        if burst_seconds <= 0:
            raise ValueError(f"burst_seconds must be > 0, got {burst_seconds}")
        _check_rate(rate)
        self.rate = rate
        self.burst_seconds = burst_seconds
        self.shares = shares or Shares()
        self.max_models = max_models
        self.max_tenants = max_tenants
        self._models: dict[str, TokenBucket] = {}
        self._tenants: dict[tuple[str, str], TokenBucket] = {}
        self._tenant_names: set[str] = set()
        self._created = now

    def _capacity(self, rate: float) -> float:
        return math.inf if math.isinf(rate) else rate * self.burst_seconds

    def set_rate(self, rate: float, now: float) -> None:
        """The limit changed: every bucket keeps its level (capped) and refills at the new rate."""
        _check_rate(rate)
        self.rate = rate
        for bucket in self._models.values():
            bucket.reconfigure(rate, self._capacity(rate), now)
        for (_, tenant), bucket in self._tenants.items():
            r = rate * self.shares.of(tenant)
            bucket.reconfigure(r, self._capacity(r), now)

    def model_key(self, model: str) -> str:
        if model in self._models or len(self._models) < self.max_models:
            return model
        return OTHER

    def tenant_key(self, tenant: str) -> str:
        """The tenant's name, or OTHER once max_tenants names are known (this also bounds the
        metrics' label values, which come from a client-chosen header)."""
        if tenant in self._tenant_names:
            return tenant
        if len(self._tenant_names) < self.max_tenants:
            self._tenant_names.add(tenant)
            return tenant
        return OTHER

    def _model(self, model: str, now: float) -> TokenBucket:
        bucket = self._models.get(model)
        if bucket is None:
            bucket = self._models[model] = TokenBucket(self.rate, self._capacity(self.rate), now)
        return bucket

    def _tenant(self, model: str, tenant: str, now: float) -> TokenBucket:
        bucket = self._tenants.get((model, tenant))
        if bucket is None:
            r = self.rate * self.shares.of(tenant)
            bucket = self._tenants[(model, tenant)] = TokenBucket(r, self._capacity(r), now)
        return bucket

    def try_admit(self, model: str, tenant: str, cost: float, now: float) -> Admission:
        """Admit and charge ``cost`` tokens if both buckets allow it, else say how long to wait."""
        result = self.admit(model, tenant, cost, now)
        if isinstance(result, Charge):
            return Admission(result)
        return Admission(None, result)

    def admit(self, model: str, tenant: str, cost: float, now: float) -> Charge | float:
        """``try_admit`` for the request path: the ``Charge``, or the seconds to wait (> 0)."""
        if not 0.0 <= cost < math.inf:  # also NaN
            raise ValueError(f"cost must be a finite number >= 0, got {cost}")
        mb = self._models.get(model)
        if mb is None:
            model = self.model_key(model)
            mb = self._model(model, now)
        if tenant not in self._tenant_names:
            tenant = self.tenant_key(tenant)
        tb = self._tenants.get((model, tenant))
        if tb is None:
            tb = self._tenant(model, tenant, now)
        wait = mb.wait(cost, now)
        tenant_wait = tb.wait(cost, now)
        if tenant_wait > wait:
            wait = tenant_wait
        if wait > 0:
            return wait
        level = mb.level - cost  # adjust() inlined for both buckets
        mb.level = level if level < mb.capacity else mb.capacity
        level = tb.level - cost
        tb.level = level if level < tb.capacity else tb.capacity
        return Charge(model, tenant, cost)

    def settle(self, charge: Charge, actual: float, now: float) -> None:
        """Replace the charged estimate by the real usage (``actual`` tokens)."""
        delta = (actual if actual > 0.0 else 0.0) - charge.tokens
        model = charge.model
        bucket = self._models.get(model)
        if bucket is not None:
            bucket.settle(delta, now)
        bucket = self._tenants.get((model, charge.tenant))
        if bucket is not None:
            bucket.settle(delta, now)

    def level(self, model: str, tenant: str | None = None, now: float | None = None) -> float:
        """A bucket's level (for tests and /debug): the model's, or the tenant's within it."""
        bucket = self._models.get(model) if tenant is None else self._tenants.get((model, tenant))
        if bucket is None:
            share = 1.0 if tenant is None else self.shares.of(tenant)
            return self._capacity(self.rate * share)
        if now is not None:
            bucket.refill(now)
        return bucket.level


def _check_rate(rate: float) -> None:
    if math.isnan(rate) or rate < 0:
        raise ValueError(f"a token rate must be >= 0 (or inf), got {rate}")
