"""The live control loop: sources -> Engine.tick -> actuators, once per tick.

Each tick gathers every source concurrently, each under its own deadline; a slow or failing
source only makes its signals missing (stale), it never stalls the tick. Decisions go to the
actuators concurrently, one task per target under a deadline, so a failing actuator never stalls
another target. Only the leader writes: a follower runs the same tick with every actuation in
dry-run, so a takeover starts with warm windows. Outcomes are recorded next to the decision that
caused them (served at /debug/decisions, counted in the metrics, logged).

Writes never hold a tick up (docs/actuators.md, "Writes that wait"): an actuator that can tell
at once, without I/O, that nothing is to be done (``settled``) answers inside the tick; any
other actuation runs as its own task, which the tick lets take one step: an actuation that needs
no I/O is done by then, and one that must wait (for the API server, the client-side rate limit,
a retry's backoff) is recorded as *pending*. The task goes on under its deadline, and its
outcome replaces the pending one in the decision record (and is counted) when it lands. At most
one actuation per target is in flight: a newer decision for a target whose write is still in
flight waits in a one-slot queue (the latest decision wins; an older queued one is dropped,
recorded as superseded), and runs when the one in flight ends, reading fresh state as every
actuation does.

History: the last ``history`` decisions per target, kept as the engine's ``Decision`` objects and
their outcomes (``DecisionHistory``), and turned into the record dicts only when read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from autoscaler.core.clock import Clock
from autoscaler.core.protocols import ActuationOutcome, Actuator, Source, SourceReport
from autoscaler.core.types import Decision, TargetRef
from autoscaler.engine import Engine
from autoscaler.service.metrics import ServiceMetrics

log = logging.getLogger("autoscaler.loop")
decisions_log = logging.getLogger("autoscaler.decisions")


def outcome_dict(o: ActuationOutcome, *, pending: bool = False) -> dict[str, Any]:
    return {
        "applied": o.applied,
        "wrote": o.wrote,
        "dry_run": o.dry_run,
        "error": o.error,
        "detail": o.detail,
        "changes": {k: [old, new] for k, (old, new) in sorted(o.changes.items())},
        "pending": pending,
    }


def _same_but_ts(a: Decision, b: Decision) -> bool:
    """Every field but ``ts`` equal (written out: a generic getattr loop costs 10x more)."""
    return (
        a.replicas == b.replicas
        and a.current == b.current
        and a.ready == b.ready
        and a.starting == b.starting
        and a.proposal == b.proposal
        and a.signals_ok == b.signals_ok
        and a.reason == b.reason
        and a.token_rate == b.token_rate
        and a.token_rate_per_replica == b.token_rate_per_replica
        and a.policy == b.policy
        and a.target == b.target
        and a.guards == b.guards
        and a.inputs == b.inputs
    )


# Every field _same_but_ts compares, and ts (a test holds this to Decision's fields, so a field
# added to Decision cannot be silently left out of the comparison).
COMPARED_FIELDS = frozenset(
    {
        "target", "ts", "policy", "current", "ready", "starting", "proposal", "replicas",
        "token_rate", "token_rate_per_replica", "reason", "signals_ok", "inputs", "guards",
    }
)  # fmt: skip


class _Ring:
    """One target's last ``size`` records, in parallel arrays: the decisions and outcomes (each
    shared with the record before when equal), the times as C doubles and the pending flags as
    bytes. ~25 bytes a record, where an object per record (with its own time) took ~96: 1.2
    instead of 4.8 MB for 50 records x 1,000 targets (docs/memory.md). Record number ``n``
    (counted from 0 since the target's first) is at index ``n % size``."""

    __slots__ = ("count", "decisions", "outcomes", "pending", "size", "ts")

    def __init__(self, size: int) -> None:
        self.size = size
        self.count = 0
        self.decisions: list[Decision] = []
        self.outcomes: list[ActuationOutcome] = []
        self.ts = array("d")
        self.pending = bytearray()

    def __len__(self) -> int:
        return len(self.decisions)

    def add(self, d: Decision, o: ActuationOutcome, pending: bool) -> int:
        """Record ``(d, o, pending)`` at ``d.ts``; returns its record number."""
        n, ts = self.count, d.ts
        if self.decisions:
            # A steady target decides the same thing tick after tick: keep one copy of the
            # decision and of the outcome (50 records x 1,000 targets of full copies were
            # ~56 MB); the served records are the same.
            last = (n - 1) % self.size
            prev_d, prev_o = self.decisions[last], self.outcomes[last]
            if prev_d is not d and _same_but_ts(prev_d, d):
                d = prev_d
            if prev_o is not o and prev_o == o:
                o = prev_o
        if n < self.size:
            self.decisions.append(d)
            self.outcomes.append(o)
            self.ts.append(ts)
            self.pending.append(pending)
        else:
            i = n % self.size
            self.decisions[i], self.outcomes[i] = d, o
            self.ts[i], self.pending[i] = ts, pending
        self.count = n + 1
        return n

    def index(self, n: int) -> int | None:
        """Where record ``n`` is, or None once newer records replaced it."""
        return n % self.size if self.count - self.size <= n < self.count else None

    def order(self) -> list[int]:
        """Indices oldest first."""
        k = len(self.decisions)
        first = self.count % self.size if k == self.size else 0
        return [(first + j) % k for j in range(k)] if k else []

    def record(self, i: int) -> dict[str, Any]:
        record = self.decisions[i].to_dict()
        record["ts"] = self.ts[i]
        record["actuation"] = outcome_dict(self.outcomes[i], pending=bool(self.pending[i]))
        return record


class _Entry:
    """A handle on one record: what a tick keeps of it (a write in flight updates its outcome
    when it lands, ``update``) and what ``DecisionHistory.last`` returns."""

    __slots__ = ("_n", "_ring", "decision", "outcome", "pending", "ts")

    def __init__(
        self,
        ring: _Ring,
        n: int,
        decision: Decision,
        outcome: ActuationOutcome,
        pending: bool,
        ts: float,
    ) -> None:
        self._ring, self._n = ring, n
        self.decision, self.outcome, self.pending = decision, outcome, pending
        self.ts = ts  # the record's own: ``decision`` may be an equal earlier one

    def update(self, outcome: ActuationOutcome, pending: bool) -> None:
        """A late outcome; into the history too while the record is still there."""
        self.outcome, self.pending = outcome, pending
        i = self._ring.index(self._n)
        if i is not None:
            self._ring.outcomes[i], self._ring.pending[i] = outcome, pending

    def to_dict(self) -> dict[str, Any]:
        record = self.decision.to_dict()
        record["ts"] = self.ts
        record["actuation"] = outcome_dict(self.outcome, pending=self.pending)
        return record


class Records(Sequence[dict[str, Any]]):
    """A target's recent decision records, oldest first, as dicts built on access."""

    __slots__ = ("_ring",)

    def __init__(self, ring: _Ring) -> None:
        self._ring = ring

    def __len__(self) -> int:
        return len(self._ring)

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        order = self._ring.order()
        if isinstance(i, slice):
            return [self._ring.record(j) for j in order[i]]
        return self._ring.record(order[i])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self._ring.record(j) for j in self._ring.order())


class DecisionHistory(Mapping[str, Records]):
    """target key -> its last ``size`` decision records (see ``Records``)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"history must keep at least 1 record per target, not {size}")
        self.size = size
        self._by_target: dict[str, _Ring] = {}

    def add(self, d: Decision, o: ActuationOutcome, pending: bool) -> _Entry:
        ring = self._by_target.get(d.target)
        if ring is None:
            ring = self._by_target[d.target] = _Ring(self.size)
        return _Entry(ring, ring.add(d, o, pending), d, o, pending, d.ts)

    def __getitem__(self, key: str) -> Records:
        return Records(self._by_target[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_target)

    def __len__(self) -> int:
        return len(self._by_target)

    def last(self, key: str) -> _Entry | None:
        ring = self._by_target.get(key)
        if not ring:
            return None
        n = ring.count - 1
        i = n % ring.size
        return _Entry(
            ring, n, ring.decisions[i], ring.outcomes[i], bool(ring.pending[i]), ring.ts[i]
        )


@dataclass(eq=False)
class _Write:
    """An actuation task and what the tick that started it left to do when it lands."""

    decision: Decision
    leader: bool
    task: asyncio.Task[ActuationOutcome] | None = None
    entry: _Entry | None = None  # set once the tick recorded it as pending
    queued: list[_Write] = field(default_factory=list)  # at most one


async def _one_step() -> None:
    """Yield to the event loop exactly once: the callbacks already scheduled (the first step of
    every task created before) run before this returns."""
    fut = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(fut.set_result, None)
    await fut


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
        self.records = DecisionHistory(history)
        self.ticks = 0
        self.missed = 0  # tick slots skipped because a tick overran
        self._wake = asyncio.Event()
        self._inflight: dict[str, _Write] = {}  # target key -> its actuation in flight
        # Run by ``run`` after each tick, before the pause (e.g. the service's paced garbage
        # collection): work that must not land inside a tick.
        self.between_ticks: list[Callable[[], None]] = []

    # -- one tick ----------------------------------------------------------------------------

    async def tick(self) -> list[tuple[Decision, ActuationOutcome]]:
        started = self.timer() if self.timer else None
        refs = [rt.ref for rt in self.engine.targets.values()]
        reports = await asyncio.gather(*(self._collect(s, refs) for s in self.sources))
        observations = [ob for r in reports for ob in r.observations]
        now = self.clock.now()
        decisions = self.engine.tick(now, observations)
        leader = self.is_leader()
        pairs = await self._actuate(decisions, leader)
        if self.publishers:
            await asyncio.gather(
                *(
                    self._publish(p, d, leader)
                    for d in decisions
                    if d.token_rate is not None
                    for p in self.publishers
                )
            )
        self.ticks += 1
        if started is not None and self.timer is not None:
            self.metrics.tick_seconds.observe(self.timer() - started)
        return pairs

    async def _actuate(
        self, decisions: list[Decision], leader: bool
    ) -> list[tuple[Decision, ActuationOutcome]]:
        """Start every decision's actuation, wait until each is done or about to wait, and
        record the outcomes (pending ones included) before anything else can land."""
        started: list[_Write] = []
        for d in decisions:
            busy = self._inflight.get(d.target)
            w = _Write(d, leader)
            if busy is None:
                done = self._settled(d, leader)
                if done is not None:  # nothing to do, and known without I/O: no task
                    w.entry = self._record(d, done, pending=False)
                    started.append(w)
                    continue
                self._start(w)
            else:
                for older in busy.queued:  # the latest decision wins the one slot
                    self._finish(
                        older,
                        self._pending_outcome(
                            older, "superseded by a newer decision before its write could start"
                        ),
                        pending=False,
                    )
                busy.queued[:] = [w]
            started.append(w)
        if any(w.task is not None for w in started):
            await _one_step()  # every task created above runs its first step first (FIFO)
        pairs: list[tuple[Decision, ActuationOutcome]] = []
        for w in started:
            if w.entry is not None:  # settled without a task
                pairs.append((w.decision, w.entry.outcome))
                continue
            task = w.task
            if task is not None and task.done():
                self._forget(w)
                o = (
                    ActuationOutcome(w.decision.target, applied=False, error="cancelled")
                    if task.cancelled()
                    else task.result()
                )
                w.entry = self._record(w.decision, o, pending=False)
            else:
                why = (
                    "in flight (API server, client-side rate limit or retry)"
                    if task is not None
                    else "queued behind the write in flight"
                )
                o = self._pending_outcome(w, why)
                w.entry = self._record(w.decision, o, pending=True)
            pairs.append((w.decision, o))
        self.metrics.actuation_pending.set(
            len(self._inflight) + sum(len(w.queued) for w in self._inflight.values())
        )
        return pairs

    def _pending_outcome(self, w: _Write, why: str) -> ActuationOutcome:
        rt = self.engine.targets.get(w.decision.target)
        dry = self.dry_run or not w.leader or (rt is not None and rt.config.actuation.dry_run)
        return ActuationOutcome(w.decision.target, applied=False, dry_run=dry, detail=why)

    def _start(self, w: _Write) -> None:
        task = asyncio.get_running_loop().create_task(
            self._apply(w.decision, w.leader), name=f"actuate {w.decision.target}"
        )
        w.task = task
        self._inflight[w.decision.target] = w
        task.add_done_callback(lambda _t: self._landed(w))

    def _forget(self, w: _Write) -> None:
        if self._inflight.get(w.decision.target) is w:
            del self._inflight[w.decision.target]

    def _landed(self, w: _Write) -> None:
        """An actuation task ended. If its tick already recorded it as pending, the outcome
        replaces that; then the decision queued behind it (if any) starts."""
        if w.entry is None:
            return  # its tick is still waiting for it and takes the outcome itself
        self._forget(w)
        assert w.task is not None
        if w.task.cancelled():
            o = ActuationOutcome(w.decision.target, applied=False, error="cancelled")
        else:
            o = w.task.result()
        self._finish(w, o, pending=False)
        if w.queued:  # recorded as pending by its tick, which is over: it lands on its own
            self._start(w.queued.pop())

    def _finish(self, w: _Write, o: ActuationOutcome, *, pending: bool) -> None:
        """A late outcome: into the decision's record, the metrics and the log."""
        if w.entry is not None:
            w.entry.update(o, pending)
        self.metrics.record_outcome(o)
        if o.wrote:
            decisions_log.info(
                "%s: %d -> %d (%s; landed after its tick)",
                w.decision.target,
                w.decision.current,
                w.decision.replicas,
                w.decision.reason,
                extra={"target": w.decision.target},
            )

    async def drain(self) -> None:
        """Wait for every actuation in flight (and those queued behind them) to land."""
        while self._inflight:
            tasks = [w.task for w in self._inflight.values() if w.task is not None]
            await asyncio.gather(*tasks, return_exceptions=True)
            # Each task's own done callback ran before gather's: queued ones have started.

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

    def _settled(self, d: Decision, leader: bool) -> ActuationOutcome | None:
        """The outcome an actuator can give at once, without I/O (``settled``: e.g. the
        Deployment actuator when the watch already shows the decided count), else None."""
        rt = self.engine.targets.get(d.target)
        if rt is None:
            return None
        actuation = rt.config.actuation
        actuator = self.actuators.get(actuation.engine)
        settled = getattr(actuator, "settled", None)
        if settled is None:
            return None
        result: ActuationOutcome | None = settled(rt.ref, d, actuation)
        if result is not None and (self.dry_run or not leader) and not result.dry_run:
            result = dataclasses.replace(result, dry_run=True)  # a follower: nothing written
        return result

    async def _apply(self, d: Decision, leader: bool) -> ActuationOutcome:
        rt = self.engine.targets.get(d.target)
        if rt is None:  # queued behind a write, and dropped from the policy since
            return ActuationOutcome(d.target, applied=False, error="gone", detail="no target")
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
            # asyncio.timeout, not wait_for: no inner task, so an actuation that needs no I/O
            # finishes in the one step the tick gives it.
            async with asyncio.timeout(self.actuation_deadline):
                return await actuator.apply(rt.ref, d, actuation)
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

    def _record(self, d: Decision, o: ActuationOutcome, *, pending: bool) -> _Entry:
        for observe in self.observers:
            observe(d, o)
        self.metrics.record_decision(d)
        self.metrics.record_outcome(o)
        entry = self.records.add(d, o, pending)
        if d.changed or o.wrote:
            extra = {"target": d.target, "decision": entry.to_dict()}
            decisions_log.info(
                "%s: %d -> %d (%s)", d.target, d.current, d.replicas, d.reason, extra=extra
            )
        elif decisions_log.isEnabledFor(logging.DEBUG):
            extra = {"target": d.target, "decision": entry.to_dict()}
            decisions_log.debug("%s: %d", d.target, d.replicas, extra=extra)
        return entry

    # -- running -----------------------------------------------------------------------------

    def wake(self) -> None:
        """Run the next tick now (a config reload or a KEDA activation request)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        """Tick every ``interval`` seconds of the clock until ``stop`` is set; the tick in
        flight always finishes, and so do the writes it left in flight.

        Ticks keep a fixed rate: each is due ``interval`` after the previous one was due, not
        after the previous one ended, so the time a tick takes does not stretch the period. A
        tick that overran starts the next one at once, and the slots it overran by are skipped
        (counted in ``missed`` and ``autoscaler_ticks_missed_total``), never run back to back.
        """
        due = self.clock.now()
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:  # the engine itself failed: log and keep the service alive
                log.exception("tick failed")
            for between in self.between_ticks:
                try:
                    between()
                except Exception:
                    log.exception("between-ticks hook failed")
            due += interval
            now = self.clock.now()
            if now > due:
                behind = int((now - due) // interval)
                if behind:
                    self.missed += behind
                    self.metrics.ticks_missed.inc(behind)
                due = now
            if await self._pause(due - now, stop):
                due = self.clock.now()  # woken early: the period restarts from this tick
        await self.drain()

    async def _pause(self, delay: float, stop: asyncio.Event) -> bool:
        """Wait ``delay`` seconds, or less on a wake-up or stop; True when woken early."""
        if self._wake.is_set():
            self._wake.clear()
            return True
        if delay <= 0:
            return False
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
        woken = self._wake.is_set()
        self._wake.clear()
        return woken
