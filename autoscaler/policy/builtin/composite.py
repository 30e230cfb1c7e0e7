"""``max``: several policies combined by the largest proposal, as the HPA combines metrics.

Missing data follows the HPA (A.3): when some members cannot decide, the valid ones may still
scale up, but never down (a scale-down needs every signal). The token-rate limit is the smallest
any member proposes (the most conservative).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field

from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import Proposal
from autoscaler.policy.api import Params, Policy
from autoscaler.policy.builtin.common import NestedPolicy


class Member(NestedPolicy):
    outer: ClassVar[str] = "max"
    self_reference: ClassVar[str] = "a max policy cannot contain another max"


class MaxParams(Params):
    policies: tuple[Member, ...] = Field(min_length=1)


@dataclass(slots=True)
class MaxState:
    states: list[object]
    names: tuple[str, ...] = ()  # the member policy of each state, to carry them over a reload


class MaxPolicy(Policy[MaxParams, MaxState]):
    name: ClassVar[str] = "max"
    params_model: ClassVar[type[Params]] = MaxParams

    def __init__(self, params: MaxParams) -> None:
        super().__init__(params)
        self.members: list[Policy[Any, Any]] = []
        for m in params.policies:
            self.members.append(m.build())
        self._required = [m.required_signals() for m in self.members]

    def required_signals(self) -> tuple[str, ...]:
        # None for the guard: a member with stale signals is invalid here instead, so the others
        # may still scale up (the HPA's rule); a scale-down needs every member, and a proposal
        # of None (all invalid) still makes the fallback guard hold.
        return ()

    def _member_fresh(self, i: int, snap: Snapshot) -> bool:
        return all(snap.fresh(s) for s in self._required[i])

    def retention_seconds(self) -> float:
        return max(m.retention_seconds() for m in self.members)

    def signals_read(self) -> frozenset[str] | None:
        read: set[str] = set()
        for m, required in zip(self.members, self._required, strict=True):
            member = m.signals_read()
            if member is None:
                return None
            read |= member
            read.update(required)  # _member_fresh reads them
        return frozenset(read)

    def initial_state(self, snap: Snapshot) -> MaxState:
        return MaxState(
            [m.initial_state(snap) for m in self.members], tuple(m.name for m in self.members)
        )

    def carry_state(self, old: object, snap: Snapshot) -> MaxState:
        """After a reload, a member keeps its state when the same policy is at the same place;
        any other member starts afresh (a state of another policy would not fit it)."""
        if not isinstance(old, MaxState):
            return self.initial_state(snap)
        states: list[object] = []
        for i, m in enumerate(self.members):
            if i < len(old.states) and i < len(old.names) and old.names[i] == m.name:
                states.append(m.carry_state(old.states[i], snap))
            else:
                states.append(m.initial_state(snap))
        return MaxState(states, tuple(m.name for m in self.members))

    def decide(self, snap: Snapshot, state: MaxState) -> tuple[Proposal, MaxState]:
        best: int | None = None
        invalid = False
        rates: list[float] = []
        inputs: dict[str, float] = {}
        reasons: list[str] = []
        for i, m in enumerate(self.members):
            prop, state.states[i] = m.decide(snap, state.states[i])
            inputs.update(prop.inputs)
            reasons.append(f"{m.name}={prop.replicas}")
            if prop.token_rate is not None:
                rates.append(prop.token_rate)
            if prop.replicas is None or not self._member_fresh(i, snap):
                invalid = True
            elif best is None or prop.replicas > best:
                best = prop.replicas
        rate = min(rates) if rates else None
        if best is None or (invalid and best < snap.current):
            return Proposal(None, token_rate=rate, reason="; ".join(reasons), inputs=inputs), state
        return Proposal(
            best, token_rate=rate, reason="max(" + ", ".join(reasons) + ")", inputs=inputs
        ), state
