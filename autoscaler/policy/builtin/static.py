"""``static``: a fixed replica count; the static peak-provisioning baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import Proposal
from autoscaler.policy.api import Params, Policy


class StaticParams(Params):
    replicas: int = Field(ge=0)
    token_rate: float | None = Field(None, gt=0, description="fixed token-rate limit, tokens/s")


@dataclass(frozen=True, slots=True)
class StaticState:
    pass


class StaticPolicy(Policy[StaticParams, StaticState]):
    name: ClassVar[str] = "static"
    params_model: ClassVar[type[Params]] = StaticParams

    def required_signals(self) -> tuple[str, ...]:
        return ()

    def retention_seconds(self) -> float:
        return 1.0

    def signals_read(self) -> frozenset[str]:
        return frozenset()

    def initial_state(self, snap: Snapshot) -> StaticState:
        return StaticState()

    def decide(self, snap: Snapshot, state: StaticState) -> tuple[Proposal, StaticState]:
        return Proposal(
            self.params.replicas, token_rate=self.params.token_rate, reason="static"
        ), state
