"""``queue``: replicas from queue depth (waiting requests) per replica.

The simplest signal that predicts time to first token on an LLM server: a request that waits has
not started prefill. desired = ceil(queue / targetPerReplica) over a short window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field

from autoscaler.core import signals
from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import Proposal
from autoscaler.policy.api import Params, Policy
from autoscaler.policy.builtin.common import aggregate


class QueueParams(Params):
    signal: str = signals.WAITING
    target_per_replica: float = Field(gt=0, description="waiting requests one replica may hold")
    window_seconds: float = Field(30.0, gt=0)
    aggregation: Literal["mean", "max", "last"] = "mean"
    activation_threshold: float = Field(0.0, ge=0, description="0 -> 1 only above this")


@dataclass(frozen=True, slots=True)
class QueueState:
    pass


class QueuePolicy(Policy[QueueParams, QueueState]):
    name: ClassVar[str] = "queue"
    params_model: ClassVar[type[Params]] = QueueParams

    def required_signals(self) -> tuple[str, ...]:
        return (self.params.signal,)

    def retention_seconds(self) -> float:
        return self.params.window_seconds

    def initial_state(self, snap: Snapshot) -> QueueState:
        return QueueState()

    def decide(self, snap: Snapshot, state: QueueState) -> tuple[Proposal, QueueState]:
        p = self.params
        value = aggregate(snap, p.signal, p.window_seconds, p.aggregation)
        if value is None:
            return Proposal(None, reason=f"no {p.signal} data in {p.window_seconds:g}s"), state
        if snap.current == 0 and value <= p.activation_threshold:
            desired = 0
        else:
            desired = math.ceil(value / p.target_per_replica - 1e-9)
        # The reason stays a constant: the value is in inputs, and formatting numbers into a
        # string for every target on every tick would cost more than the decision itself.
        return Proposal(desired, reason="queue per replica", inputs={p.signal: value}), state
