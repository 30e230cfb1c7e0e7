"""The control loop's writes at scale: a tick never waits for a rate-limited write, one write in
flight per target (latest decision wins), the skip of Deployments whose watched count already
matches, the fixed-rate tick schedule, and the compact decision history."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from autoscaler.actuators import ApiCaller, DeploymentActuator, TokenBucket
from autoscaler.config import parse_policy
from autoscaler.core import signals
from autoscaler.core.clock import ManualClock
from autoscaler.core.protocols import ActuationOutcome, SourceReport
from autoscaler.core.types import Decision, Observation, TargetRef
from autoscaler.engine import Engine
from autoscaler.service.loop import ControlLoop
from autoscaler.service.metrics import ServiceMetrics
from autoscaler.testing.clock import VirtualClock

T0 = 1_700_000_000.0


def policy(n: int, engine: str = "deployment") -> str:
    lines = [
        "apiVersion: autoscaler.kserve.io/v1alpha1",
        "kind: AutoscalingPolicy",
        "metadata: {name: w}",
        "spec:",
        "  targets:",
    ]
    for i in range(n):
        lines += [
            f"    - name: t{i}",
            "      kind: Deployment",
            "      namespace: ns",
            "      policy: {name: queue, params: {targetPerReplica: 2, windowSeconds: 10,",
            "                                      aggregation: last}}",
            "      guards: {minReplicas: 1, maxReplicas: 20, restartHoldSeconds: 0,",
            "               stabilization: {downSeconds: 0}}",
            f"      actuation: {{engine: {engine}}}",
        ]
    return "\n".join(lines) + "\n"


class Queue:
    name = "queue"

    def __init__(self, clock: VirtualClock | ManualClock, depth: dict[str, float]) -> None:
        self.clock = clock
        self.depth = depth

    async def collect(self, targets: Sequence[TargetRef]) -> SourceReport:
        now = self.clock.now()
        return SourceReport(
            [Observation(t.key, signals.WAITING, self.depth[t.key], now) for t in targets]
        )

    async def close(self) -> None:
        return None


class Limited:
    """An actuator whose every apply takes one token of a shared bucket (as ApiCaller does)."""

    name = "deployment"

    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket
        self.applied: list[tuple[str, int]] = []

    async def apply(self, target: TargetRef, d: Decision, actuation: object) -> ActuationOutcome:
        await self.bucket.acquire()
        self.applied.append((target.key, d.replicas))
        return ActuationOutcome(target.key, applied=True, wrote=True, changes={"r": (1, 2)})

    async def close(self) -> None:
        return None


def _loop(
    n: int, clock: VirtualClock | ManualClock, actuator: object, depth: dict[str, float]
) -> ControlLoop:
    return ControlLoop(
        Engine.from_policy(parse_policy(policy(n))),
        [Queue(clock, depth)],
        {"deployment": actuator},  # type: ignore[dict-item]
        clock,
        ServiceMetrics(CollectorRegistry()),
    )


async def land_all(loop: ControlLoop, clock: VirtualClock) -> int:
    """Advance the clock a second at a time while writes wait, until every one has landed;
    returns the seconds it took."""
    drained = asyncio.ensure_future(loop.drain())
    seconds = 0
    while not drained.done():
        sleeping = asyncio.ensure_future(clock.sleeping(1))
        await asyncio.wait([drained, sleeping], return_when=asyncio.FIRST_COMPLETED)
        if sleeping.done():
            clock.advance(1.0)
            seconds += 1
        else:
            sleeping.cancel()
    return seconds


def _writes(loop: ControlLoop, target: str) -> float | None:
    return loop.metrics.registry.get_sample_value(
        "autoscaler_actuation_writes_total", {"target": target}
    )


async def test_a_tick_does_not_wait_for_rate_limited_writes_and_records_them_when_they_land() -> (
    None
):
    clock = VirtualClock(T0)
    bucket = TokenBucket(clock, rate=1.0, burst=2)
    actuator = Limited(bucket)
    depth = {f"ns/t{i}": 6.0 for i in range(5)}
    loop = _loop(5, clock, actuator, depth)

    pairs = await loop.tick()  # with no clock advance: only waiting on the bucket could block
    outcomes = {d.target: o for d, o in pairs}
    assert [d.target for d, _ in pairs] == [f"ns/t{i}" for i in range(5)]  # decision order
    done = sorted(k for k, o in outcomes.items() if o.applied)
    pending = sorted(k for k, o in outcomes.items() if not o.applied)
    assert len(done) == 2 and len(pending) == 3  # the burst went out; the rest wait
    for key in pending:
        assert outcomes[key].error is None and "rate limit" in outcomes[key].detail
        rec = loop.records[key][-1]
        assert rec["actuation"]["pending"] is True and rec["actuation"]["applied"] is False
        assert _writes(loop, key) is None  # not counted until it lands
    assert loop.metrics.registry.get_sample_value("autoscaler_actuation_pending") == 3

    # The writes land one a second; each replaces its pending outcome in the same record.
    assert await land_all(loop, clock) == 3
    assert sorted(k for k, _ in actuator.applied) == sorted(depth)
    for key in pending:
        assert len(loop.records[key]) == 1
        rec = loop.records[key][-1]
        assert rec["actuation"]["pending"] is False
        assert rec["actuation"]["applied"] is True and rec["actuation"]["wrote"] is True
        assert _writes(loop, key) == 1.0


async def test_one_write_in_flight_per_target_and_the_latest_decision_wins() -> None:
    clock = VirtualClock(T0)
    bucket = TokenBucket(clock, rate=1.0, burst=1)
    actuator = Limited(bucket)
    depth = {"ns/t0": 6.0, "ns/t1": 6.0}
    loop = _loop(2, clock, actuator, depth)
    await loop.tick()  # t0 takes the token; t1 waits for the next one
    assert actuator.applied == [("ns/t0", 3)]
    depth["ns/t1"] = 10.0
    second = {d.target: o for d, o in await loop.tick()}  # t1 in flight: queued behind it
    assert "queued behind the write in flight" in second["ns/t1"].detail
    depth["ns/t1"] = 14.0
    await loop.tick()  # a newer decision replaces the queued one
    superseded = loop.records["ns/t1"][1]
    assert superseded["replicas"] == 5
    assert superseded["actuation"]["pending"] is False
    assert "superseded" in superseded["actuation"]["detail"]
    await land_all(loop, clock)
    assert len(actuator.applied) == 5  # t0 of each of the 3 ticks, and t1 twice
    # t1: the decision in flight (3 replicas), then only the latest one (7), never 5.
    assert [r for k, r in actuator.applied if k == "ns/t1"] == [3, 7]
    assert loop.records["ns/t1"][-1]["actuation"]["applied"] is True
    assert not loop._inflight


async def test_a_tick_does_not_wait_for_a_slow_api_server() -> None:
    clock = VirtualClock(T0)
    answer = asyncio.Event()

    class Slow:  # every write waits for the API server's answer
        name = "deployment"

        async def apply(self, t: TargetRef, d: Decision, a: object) -> ActuationOutcome:
            await answer.wait()
            return ActuationOutcome(t.key, applied=True, wrote=True)

        async def close(self) -> None:
            return None

    loop = _loop(2, clock, Slow(), {"ns/t0": 6.0, "ns/t1": 2.0})
    pairs = await asyncio.wait_for(loop.tick(), 5)  # returns although no answer ever came
    assert all(not o.applied and o.error is None for _, o in pairs)
    assert all(loop.records[k][-1]["actuation"]["pending"] for k in ("ns/t0", "ns/t1"))
    answer.set()
    await loop.drain()
    for key in ("ns/t0", "ns/t1"):
        rec = loop.records[key][-1]
        assert rec["actuation"]["applied"] and not rec["actuation"]["pending"]
        assert _writes(loop, key) == 1.0
    assert loop.metrics.registry.get_sample_value("autoscaler_actuation_pending") == 2  # at tick


async def test_deployments_whose_watched_count_matches_are_not_read_nor_tasked() -> None:
    clock = VirtualClock(T0)
    watched = {"ns/t0": 3, "ns/t1": 2}

    class Api:  # the actuator must not touch the API for a settled decision
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"API used: {name}")

    actuator = DeploymentActuator(
        Api(),  # type: ignore[arg-type]
        clock,
        caller=ApiCaller(clock),
        events=object(),  # type: ignore[arg-type]
        watched=lambda ref: watched.get(ref.key),
    )
    actuator._apps = Api()  # type: ignore[assignment]
    loop = _loop(1, clock, actuator, {"ns/t0": 6.0})
    created: list[asyncio.Task[object]] = []
    real = asyncio.get_running_loop().create_task

    def spy(coro, **kw):  # type: ignore[no-untyped-def]
        task = real(coro, **kw)
        created.append(task)
        return task

    asyncio.get_running_loop().create_task = spy  # type: ignore[method-assign]
    try:
        pairs = await loop.tick()
    finally:
        del asyncio.get_running_loop().create_task
    ((d, o),) = pairs
    assert d.replicas == 3 and o.applied and not o.wrote and not o.dry_run
    assert "watched" in o.detail
    assert actuator.skipped == 1
    assert not [t for t in created if t.get_name().startswith("actuate")]
    # As a follower the same decision is settled in dry-run.
    loop.is_leader = lambda: False
    ((_, o),) = await loop.tick()
    assert o.applied and o.dry_run and actuator.skipped == 2
    # A watched count that differs (or is unknown) takes the full path: here the API.
    watched["ns/t0"] = 1
    ((_, o),) = await loop.tick()
    assert not o.applied and o.error == "exception"  # our Api refused to be used


async def test_ticks_keep_a_fixed_rate_and_count_the_slots_an_overrun_skips() -> None:
    clock = ManualClock(T0)
    starts: list[float] = []
    stop = asyncio.Event()

    class Slow:
        name = "slow"

        async def collect(self, targets: Sequence[TargetRef]) -> SourceReport:
            starts.append(clock.now())
            took = {1: 0.3, 2: 2.5}.get(len(starts), 0.1)  # the second tick overruns
            clock.advance(took)
            if len(starts) == 5:
                stop.set()
            return SourceReport()

        async def close(self) -> None:
            return None

    loop = ControlLoop(
        Engine.from_policy(parse_policy(policy(1))),
        [Slow()],
        {},
        clock,
        ServiceMetrics(CollectorRegistry()),
    )
    await loop.run(stop, interval=1.0)
    # Due at 0, 1 (ends at 3.5: slots 2 and 3 are skipped, the next starts at once), then
    # every second from there: a tick's own time does not stretch the period.
    assert [round(s - T0, 3) for s in starts] == [0.0, 1.0, 3.5, 4.5, 5.5]
    assert loop.missed == 1
    assert loop.metrics.registry.get_sample_value("autoscaler_ticks_missed_total") == 1.0


async def test_history_keeps_decisions_and_serves_the_same_records() -> None:
    clock = ManualClock(T0)

    class Ok:
        name = "deployment"

        async def apply(self, t: TargetRef, d: Decision, a: object) -> ActuationOutcome:
            return ActuationOutcome(t.key, applied=True, detail="ok", changes={"x": (1, 3)})

        async def close(self) -> None:
            return None

    loop = ControlLoop(
        Engine.from_policy(parse_policy(policy(1))),
        [Queue(clock, {"ns/t0": 6.0})],
        {"deployment": Ok()},  # type: ignore[dict-item]
        clock,
        ServiceMetrics(CollectorRegistry()),
        history=3,
    )
    decisions = []
    for _ in range(5):
        ((d, _),) = await loop.tick()
        decisions.append(d)
        clock.advance(1)
    records = loop.records["ns/t0"]
    assert len(records) == 3 and list(loop.records) == ["ns/t0"]
    assert records[-1] == {
        **decisions[-1].to_dict(),
        "actuation": {
            "applied": True,
            "wrote": False,
            "dry_run": False,
            "error": None,
            "detail": "ok",
            "changes": {"x": [1, 3]},
            "pending": False,
        },
    }
    assert [r["ts"] for r in records] == [d.ts for d in decisions[-3:]]
    assert [r["ts"] for r in records[-2:]] == [d.ts for d in decisions[-2:]]
    # A steady target decides the same but for the time: one copy is kept, not three.
    ring = loop.records._by_target["ns/t0"]  # kept in parallel arrays (docs/memory.md)
    assert len({id(d) for d in ring.decisions}) == 1
    assert len({id(o) for o in ring.outcomes}) == 1
    assert len({r["ts"] for r in records}) == 3
    # A decision that differs is kept as its own.
    loop.sources = [Queue(clock, {"ns/t0": 12.0})]
    ((d, _),) = await loop.tick()
    assert loop.records["ns/t0"][-1]["replicas"] == d.replicas == 6
    assert loop.records["ns/t0"][-2]["replicas"] == 3


def test_the_history_compares_every_field_of_a_decision() -> None:
    import dataclasses

    from autoscaler.service.loop import COMPARED_FIELDS

    assert {f.name for f in dataclasses.fields(Decision)} == COMPARED_FIELDS
