"""``gpu``: the HPA formula over mean GPU utilization (NVML / DCGM).

Why this is better as a guard than as the primary signal for LLM serving: with continuous
batching a GPU reports near-100% "utilization" (a kernel was running in the sample period) as soon
as it has any work, whether it serves one sequence or two hundred, so the signal saturates long
before the replica does and says nothing about how many more replicas are needed. vLLM also
preallocates ~90% of GPU memory for the KV cache at start, so memory is flat. Queue depth,
KV-cache usage and token throughput measure the load; GPU utilization confirms the GPUs are busy.
For non-batching models (classic vision or tabular on GPU) it is a reasonable primary signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from autoscaler.core import signals
from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import Proposal
from autoscaler.policy.api import Params, Policy
from autoscaler.policy.builtin.common import to_milli
from autoscaler.policy.compat.kubernetes import Tolerance, replicas_for_external_average


class GpuParams(Params):
    signal: str = signals.GPU_UTILIZATION
    target_utilization: float = Field(0.7, gt=0, le=1, description="mean fraction per GPU")
    window_seconds: float = Field(60.0, gt=0)
    tolerance: float = Field(0.1, ge=0, lt=1)


@dataclass(frozen=True, slots=True)
class GpuState:
    pass


class GpuPolicy(Policy[GpuParams, GpuState]):
    name: ClassVar[str] = "gpu"
    params_model: ClassVar[type[Params]] = GpuParams

    def required_signals(self) -> tuple[str, ...]:
        return (self.params.signal,)

    def retention_seconds(self) -> float:
        return self.params.window_seconds

    def signals_read(self) -> frozenset[str]:
        return frozenset((self.params.signal,))

    def initial_state(self, snap: Snapshot) -> GpuState:
        return GpuState()

    def decide(self, snap: Snapshot, state: GpuState) -> tuple[Proposal, GpuState]:
        p = self.params
        util = snap.mean(p.signal, p.window_seconds)
        if util is None or snap.ready == 0:
            return Proposal(None, reason="no GPU utilization (or no ready replica)"), state
        total = util * snap.ready
        desired = replicas_for_external_average(
            snap.ready,
            [to_milli(total)],
            to_milli(p.target_utilization),
            Tolerance(p.tolerance, p.tolerance),
        )
        return Proposal(
            desired,
            reason="GPU utilization",
            inputs={p.signal: util},
        ), state
