"""``kpa``: Knative's KPA decider (the exact port in compat.knative) fed from windowed signals.

Target resolution follows Knative's ``resources/target.go``: total = ``target`` (the
``autoscaling.knative.dev/target`` annotation) or the default (100 concurrency / 200 rps), capped
by a non-zero ``containerConcurrency`` for the concurrency metric; target = max(0.01, total x
utilization). Stable and panic values are the mean of the target-wide signal over the stable and
panic windows. Knative's min/max-scale and scale-to-zero grace live in our guards (bounds and
scaleToZero), as they live outside the decider upstream.

Windowing difference, on purpose: Knative averages per-second buckets; we average the samples in
the span. With the 1 s scrape Knative uses these agree; with sparser samples ours averages what
was seen. As upstream, a panic window with no sample (while the stable window has data) reads 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import EMPTY, Proposal
from autoscaler.policy.api import Params, Policy
from autoscaler.policy.builtin.params import KpaParams as KpaParams
from autoscaler.policy.compat.knative import KpaDecider


@dataclass(slots=True)
class KpaState:
    decider: KpaDecider

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return KpaState, (self.decider,)  # compiled, the default would call KpaState()


class KpaPolicy(Policy[KpaParams, KpaState]):
    name: ClassVar[str] = "kpa"
    params_model: ClassVar[type[Params]] = KpaParams

    def __init__(self, params: KpaParams) -> None:
        super().__init__(params)
        self.spec = params.spec()
        # decide() runs per target per tick: read the (frozen) params once, as plain attributes.
        self._signal = params.signal_name
        self._stable_window = params.stable_window_seconds
        self._panic_window = params.panic_window_seconds
        self._stable_key = f"{self._signal}_stable"
        self._panic_key = f"{self._signal}_panic"

    def required_signals(self) -> tuple[str, ...]:
        return (self.params.signal_name,)

    def retention_seconds(self) -> float:
        return self.params.stable_window_seconds

    def signals_read(self) -> frozenset[str]:
        return frozenset((self.params.signal_name,))

    def initial_state(self, snap: Snapshot) -> KpaState:
        return KpaState(KpaDecider(self.spec, snap.now, snap.ready))

    def carry_state(self, old: object, snap: Snapshot) -> KpaState:
        if isinstance(old, KpaState):
            old.decider.update(self.spec)
            return old
        return self.initial_state(snap)

    def decide(self, snap: Snapshot, state: KpaState) -> tuple[Proposal, KpaState]:
        name = self._signal
        stable = snap.mean(name, self._stable_window)
        panic = snap.mean(name, self._panic_window)
        if stable is not None and panic is None:
            panic = 0.0
        decider = state.decider
        res = decider.step(snap.now, stable, panic, snap.ready)
        if not res.valid:
            return Proposal(None, None, "no data in the stable window", EMPTY), state
        inputs = {
            self._stable_key: stable or 0.0,
            self._panic_key: panic or 0.0,
            "excess_burst_capacity": float(res.excess_burst_capacity),
        }
        # decider.panicking, read without the property call.
        reason = "kpa panic" if decider.panic_since is not None else "kpa stable"
        return Proposal(res.desired, None, reason, inputs), state
