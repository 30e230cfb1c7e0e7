"""``queue``: replicas from queue depth (waiting requests) per replica.

The simplest signal that predicts time to first token on an LLM server: a request that waits has
not started prefill. desired = ceil(queue / targetPerReplica) over a short window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from autoscaler.core.snapshot import Snapshot, aggregate
from autoscaler.core.types import EMPTY, Proposal
from autoscaler.policy.api import Params, Policy
from autoscaler.policy.builtin.params import QueueParams as QueueParams


@dataclass(frozen=True, slots=True)
class QueueState:
    pass


class QueuePolicy(Policy[QueueParams, QueueState]):
    name: ClassVar[str] = "queue"
    params_model: ClassVar[type[Params]] = QueueParams

    def __init__(self, params: QueueParams) -> None:
        super().__init__(params)
        # decide() runs per target per tick: read the (frozen) params once, as plain attributes.
        self._signal = params.signal
        self._window = params.window_seconds
        self._mean = params.aggregation == "mean"
        self._aggregation = params.aggregation
        self._threshold = params.activation_threshold
        self._per_replica = params.target_per_replica
        self._no_data = f"no {params.signal} data in {params.window_seconds:g}s"

    def required_signals(self) -> tuple[str, ...]:
        return (self.params.signal,)

    def retention_seconds(self) -> float:
        return self.params.window_seconds

    def signals_read(self) -> frozenset[str]:
        return frozenset((self.params.signal,))

    def initial_state(self, snap: Snapshot) -> QueueState:
        return QueueState()

    def decide(self, snap: Snapshot, state: QueueState) -> tuple[Proposal, QueueState]:
        signal = self._signal
        if self._mean:
            value = snap.mean(signal, self._window)
        else:
            value = aggregate(snap, signal, self._window, self._aggregation)
        if value is None:
            return Proposal(None, None, self._no_data, EMPTY), state
        if snap.current == 0 and value <= self._threshold:
            desired = 0
        else:
            desired = math.ceil(value / self._per_replica - 1e-9)
        # The reason stays a constant: the value is in inputs, and formatting numbers into a
        # string for every target on every tick would cost more than the decision itself.
        return Proposal(desired, None, "queue per replica", {signal: value}), state
