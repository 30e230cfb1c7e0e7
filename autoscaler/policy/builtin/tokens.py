"""``tokens``: replicas from token throughput per replica, and the matching token-rate limit.

Demand is the rate of the prompt and generation token counters (or a tokens/s gauge), plus the
tokens the agent refused (throttled demand is demand we did not serve, so sustained throttling
scales up). desired = ceil(demand / (tokensPerReplica * targetUtilization) + burstReserve *
sqrt(demand / tokensPerReplica)): with ``burstReserve`` (default 0) the spare capacity grows as
the square root of the load, as square-root staffing sizes it for random arrivals (the swing of
a Poisson load over a cold start is about the square root of its mean): a quiet fleet keeps
relatively more spare than a busy one, where a fixed utilization target keeps the same share.

The limit is what the ready replicas can serve: ready * tokensPerReplica * limitHeadroom, so
admitted load stays within capacity while new replicas start, and rises as they become ready.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from autoscaler.core import signals
from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import EMPTY, Proposal
from autoscaler.policy.api import Params, Policy
from autoscaler.policy.builtin.params import TokensParams as TokensParams


@dataclass(frozen=True, slots=True)
class TokensState:
    pass


def token_demand(snap: Snapshot, p: TokensParams) -> float | None:
    """Tokens/s asked of the target over the window, or None when it cannot be measured."""
    if p.gauge is not None:
        demand = snap.mean(p.gauge, p.window_seconds)
        if demand is None:
            return None
    else:
        demand = 0.0
        for name in p.counters:
            r = snap.rate(name, p.window_seconds)
            if r is None:
                return None
            demand += r
    if p.include_throttled:
        demand += snap.mean(signals.THROTTLED_TOKENS_PER_SECOND, p.window_seconds) or 0.0
    return demand


class TokensPolicy(Policy[TokensParams, TokensState]):
    name: ClassVar[str] = "tokens"
    params_model: ClassVar[type[Params]] = TokensParams

    def __init__(self, params: TokensParams) -> None:
        super().__init__(params)
        # decide() runs per target per tick: read the (frozen) params once, as plain attributes.
        self._tokens_per_replica = params.tokens_per_replica
        self._headroom = params.limit_headroom
        self._per_replica = params.tokens_per_replica * params.target_utilization
        self._reserve = params.burst_reserve
        self._gauge = params.gauge
        self._counters = params.counters
        self._window = params.window_seconds
        self._throttled = params.include_throttled

    def required_signals(self) -> tuple[str, ...]:
        return (self.params.gauge,) if self.params.gauge else self.params.counters

    def retention_seconds(self) -> float:
        return self.params.window_seconds

    def signals_read(self) -> frozenset[str]:
        p = self.params
        read = {p.gauge} if p.gauge is not None else set(p.counters)
        if p.include_throttled:
            read.add(signals.THROTTLED_TOKENS_PER_SECOND)
        return frozenset(read)

    def initial_state(self, snap: Snapshot) -> TokensState:
        return TokensState()

    def decide(self, snap: Snapshot, state: TokensState) -> tuple[Proposal, TokensState]:
        ready = snap.ready
        # max(ready, 1) * tokensPerReplica * limitHeadroom, in that order (same rounding).
        limit = (ready if ready >= 1 else 1) * self._tokens_per_replica * self._headroom
        # token_demand(), with the params read once.
        window = self._window
        # A float and a flag rather than ``float | None``: compiled, arithmetic on an optional
        # float is a generic (boxed) call.
        demand = 0.0
        known = True
        if self._gauge is not None:
            mean = snap.mean(self._gauge, window)
            if mean is None:
                known = False
            else:
                demand = mean
        else:
            for name in self._counters:
                r = snap.rate(name, window)
                if r is None:
                    known = False
                    break
                demand += r
        if not known:
            return Proposal(None, limit, "no token rate yet", EMPTY), state
        if self._throttled:
            demand += snap.mean(signals.THROTTLED_TOKENS_PER_SECOND, window) or 0.0
        need = demand / self._per_replica
        if self._reserve > 0.0 and demand > 0.0:
            need += self._reserve * math.sqrt(demand / self._tokens_per_replica)
        desired = math.ceil(need - 1e-9)
        inputs = {"tokens_per_second": demand}
        return Proposal(desired, limit, "token demand per replica", inputs), state
