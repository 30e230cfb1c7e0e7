"""A source and an actuator backed by the simulator's cluster model, for driving the live
control loop on virtual time (the live-vs-simulator parity test, and plugin authors' own)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from autoscaler.core.protocols import ActuationOutcome, SourceReport
from autoscaler.core.types import Decision, TargetRef
from autoscaler.sim.runner import SimWorld


class SimSource:
    """Each collect serves the next tick of the trace and returns what the engine would see;
    the first returns the priming status. Sets ``stop`` when the trace is done."""

    name = "sim"

    def __init__(self, world: SimWorld, stop: asyncio.Event) -> None:
        self.world = world
        self.stop = stop
        self._primed = False

    async def collect(self, targets: Sequence[TargetRef]) -> SourceReport:
        if not self._primed:
            self._primed = True
            return SourceReport(self.world.priming())
        observations = self.world.advance()
        if self.world.done:
            self.stop.set()
        return SourceReport(observations)

    async def close(self) -> None:
        return None


class SimActuator:
    """Applies decisions to the cluster model, as a Deployment scale write would."""

    name = "sim"

    def __init__(self, world: SimWorld) -> None:
        self.world = world

    async def apply(
        self, target: TargetRef, decision: Decision, actuation: object
    ) -> ActuationOutcome:
        before = self.world.last[0]
        self.world.apply(decision.replicas)
        wrote = decision.replicas != before
        changes = {"replicas": (before, decision.replicas)} if wrote else {}
        return ActuationOutcome(target.key, applied=True, wrote=wrote, changes=dict(changes))

    async def close(self) -> None:
        return None
