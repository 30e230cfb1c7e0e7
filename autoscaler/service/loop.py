"""The live control loop: sources -> Engine.tick -> actuators, once per tick.

Each tick gathers every source concurrently, each under its own deadline; a slow or failing
source only makes its signals missing (stale), it never stalls the tick. Decisions go to the
actuators concurrently, one task per target under a deadline, so a failing actuator never stalls
another target. Only the leader writes: a follower runs the same tick with every actuation in
dry-run, so a takeover starts with warm windows. Outcomes are recorded next to the decision that
caused them (served at /debug/decisions, counted in the metrics, logged).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from autoscaler.core.clock import Clock
from autoscaler.core.protocols import ActuationOutcome, Actuator, Source, SourceReport
from autoscaler.core.types import Decision, TargetRef
from autoscaler.engine import Engine
from autoscaler.service.metrics import ServiceMetrics

log = logging.getLogger("autoscaler.loop")
decisions_log = logging.getLogger("autoscaler.decisions")


class ControlLoop:
    def __init__(
        self,
        engine: Engine,
        sources: Sequence[Source],
        actuators: Mapping[str, Actuator],
        clock: Clock,
        metrics: ServiceMetrics,
        *,
        source_deadline: float = 5.0,
        actuation_deadline: float = 10.0,
        history: int = 50,
        is_leader: Callable[[], bool] = lambda: True,
        dry_run: bool = False,
        timer: Callable[[], float] | None = None,
        publishers: Sequence[Actuator] = (),
        observers: Sequence[Callable[[Decision, ActuationOutcome], None]] = (),
    ) -> None:
        self.engine = engine
        self.sources = list(sources)
        self.actuators = dict(actuators)
        self.clock = clock
        self.metrics = metrics
        self.source_deadline = source_deadline
        self.actuation_deadline = actuation_deadline
        self.is_leader = is_leader
        self.dry_run = dry_run
        self.timer = timer
        # Applied to every decision that carries a token-rate limit, besides the engine's own
        # actuator (the limits reach the agents through them).
        self.publishers = list(publishers)
        # Called with every decision and its outcome (e.g. the board KEDA's endpoints serve).
        self.observers = list(observers)
        self._history = history
        self.records: dict[str, deque[dict[str, Any]]] = {}
        self.ticks = 0
        self._wake = asyncio.Event()

    # -- one tick ----------------------------------------------------------------------------

    async def tick(self) -> list[tuple[Decision, ActuationOutcome]]:
        started = self.timer() if self.timer else None
        refs = [rt.ref for rt in self.engine.targets.values()]
        reports = await asyncio.gather(*(self._collect(s, refs) for s in self.sources))
        observations = [ob for r in reports for ob in r.observations]
        now = self.clock.now()
        decisions = self.engine.tick(now, observations)
        leader = self.is_leader()
        outcomes = await asyncio.gather(*(self._apply(d, leader) for d in decisions))
        if self.publishers:
            await asyncio.gather(
                *(
                    self._publish(p, d, leader)
                    for d in decisions
                    if d.token_rate is not None
                    for p in self.publishers
                )
            )
        pairs = list(zip(decisions, outcomes, strict=True))
        for d, o in pairs:
            self._record(d, o)
        self.ticks += 1
        if started is not None and self.timer is not None:
            self.metrics.tick_seconds.observe(self.timer() - started)
        return pairs

    async def _collect(self, source: Source, refs: list[TargetRef]) -> SourceReport:
        name = getattr(source, "name", type(source).__name__)
        try:
            report = await asyncio.wait_for(source.collect(refs), self.source_deadline)
        except TimeoutError:
            report = SourceReport()
            for ref in refs:
                report.error(ref.key, "deadline")
            log.warning("source %s missed its %.1fs deadline", name, self.source_deadline)
        except Exception:  # a broken source must not stop the loop; its signals go stale
            log.exception("source %s failed", name)
            report = SourceReport()
            for ref in refs:
                report.error(ref.key, "exception")
        self.metrics.record_report(name, report)
        return report

    async def _apply(self, d: Decision, leader: bool) -> ActuationOutcome:
        rt = self.engine.targets[d.target]
        actuation = rt.config.actuation
        dry = self.dry_run or actuation.dry_run or not leader
        if dry and not actuation.dry_run:
            actuation = actuation.model_copy(update={"dry_run": True})
        actuator = self.actuators.get(actuation.engine)
        if actuator is None:
            return ActuationOutcome(
                d.target,
                applied=False,
                dry_run=dry,
                error="no_actuator",
                detail=f"no actuator for engine {actuation.engine!r}",
            )
        try:
            return await asyncio.wait_for(
                actuator.apply(rt.ref, d, actuation), self.actuation_deadline
            )
        except TimeoutError:
            return ActuationOutcome(d.target, applied=False, dry_run=dry, error="timeout")
        except Exception as e:  # an actuator bug must not stall other targets
            log.exception("actuator %s failed for %s", actuation.engine, d.target)
            return ActuationOutcome(
                d.target, applied=False, dry_run=dry, error="exception", detail=repr(e)
            )

    async def _publish(self, publisher: Actuator, d: Decision, leader: bool) -> None:
        rt = self.engine.targets[d.target]
        actuation = rt.config.actuation
        if self.dry_run or not leader:
            actuation = actuation.model_copy(update={"dry_run": True})
        try:
            o = await asyncio.wait_for(
                publisher.apply(rt.ref, d, actuation), self.actuation_deadline
            )
        except TimeoutError:
            o = ActuationOutcome(d.target, applied=False, error="timeout")
        except Exception as e:
            log.exception("publisher %s failed for %s", publisher.name, d.target)
            o = ActuationOutcome(d.target, applied=False, error="exception", detail=repr(e))
        self.metrics.record_outcome(o)

    def _record(self, d: Decision, o: ActuationOutcome) -> None:
        for observe in self.observers:
            observe(d, o)
        self.metrics.record_decision(d)
        self.metrics.record_outcome(o)
        record = d.to_dict()
        record["actuation"] = {
            "applied": o.applied,
            "wrote": o.wrote,
            "dry_run": o.dry_run,
            "error": o.error,
            "detail": o.detail,
            "changes": {k: [old, new] for k, (old, new) in sorted(o.changes.items())},
        }
        hist = self.records.get(d.target)
        if hist is None:
            hist = self.records[d.target] = deque(maxlen=self._history)
        hist.append(record)
        extra = {"target": d.target, "decision": record}
        if d.changed or o.wrote:
            decisions_log.info(
                "%s: %d -> %d (%s)", d.target, d.current, d.replicas, d.reason, extra=extra
            )
        else:
            decisions_log.debug("%s: %d", d.target, d.replicas, extra=extra)

    # -- running -----------------------------------------------------------------------------

    def wake(self) -> None:
        """Run the next tick now (a config reload or a KEDA activation request)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        """Tick every ``interval`` seconds of the clock until ``stop`` is set; the tick in
        flight always finishes."""
        while not stop.is_set():
            started = self.clock.now()
            try:
                await self.tick()
            except Exception:  # the engine itself failed: log and keep the service alive
                log.exception("tick failed")
            delay = max(0.0, interval - (self.clock.now() - started))
            await self._pause(delay, stop)

    async def _pause(self, delay: float, stop: asyncio.Event) -> None:
        if self._wake.is_set():
            self._wake.clear()
            return
        waits = [
            asyncio.ensure_future(self.clock.sleep(delay)),
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(stop.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        self._wake.clear()
