"""The live control loop, hot reload and HTTP surface, with in-memory sources and actuators."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from autoscaler.config import parse_policy
from autoscaler.config.models import Actuation
from autoscaler.core import signals
from autoscaler.core.clock import ManualClock
from autoscaler.core.protocols import ActuationOutcome, SourceReport
from autoscaler.core.types import Decision, Observation, TargetRef
from autoscaler.engine import Engine
from autoscaler.service.http import ServiceState, build_http_app, redact
from autoscaler.service.loop import ControlLoop
from autoscaler.service.metrics import ServiceMetrics
from autoscaler.service.reload import PolicyWatcher

POLICY = """
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {name: svc}
spec:
  targets:
    - name: a
      namespace: ns
      policy: {name: queue, params: {targetPerReplica: 2, windowSeconds: 10, aggregation: last}}
      guards: {minReplicas: 1, maxReplicas: 20, restartHoldSeconds: 0,
               stabilization: {downSeconds: 0}}
      actuation: {engine: deployment}
    - name: b
      namespace: ns
      policy: {name: queue, params: {targetPerReplica: 2, windowSeconds: 10, aggregation: last}}
      guards: {minReplicas: 1, maxReplicas: 20, restartHoldSeconds: 0,
               stabilization: {downSeconds: 0}}
      actuation: {engine: knative}
      signals:
        prometheus: {url: "http://user:hunter2@prom:9090", queries: [{signal: x, query: up}]}
"""


class QueueSource:
    name = "queue"

    def __init__(self, clock: ManualClock, depth: dict[str, float]) -> None:
        self.clock = clock
        self.depth = depth

    async def collect(self, targets: Sequence[TargetRef]) -> SourceReport:
        now = self.clock.now()
        return SourceReport(
            [Observation(t.key, signals.WAITING, self.depth[t.key], now) for t in targets]
        )

    async def close(self) -> None:
        return None


class HangingSource:
    name = "hanging"

    async def collect(self, targets: Sequence[TargetRef]) -> SourceReport:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        return None


class Recorder:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.calls: list[tuple[str, int, bool]] = []

    async def apply(self, target: TargetRef, d: Decision, actuation: object) -> ActuationOutcome:
        assert isinstance(actuation, Actuation)
        self.calls.append((target.key, d.replicas, actuation.dry_run))
        if self.fail:
            raise RuntimeError("API exploded")
        return ActuationOutcome(
            target.key, applied=True, wrote=not actuation.dry_run, dry_run=actuation.dry_run
        )

    async def close(self) -> None:
        return None


def _loop(
    sources: list[object], *, leader: bool = True, fail_b: bool = False
) -> tuple[ControlLoop, Recorder, Recorder, ManualClock]:
    clock = ManualClock(1_700_000_000.0)
    engine = Engine.from_policy(parse_policy(POLICY))
    a, b = Recorder("deployment"), Recorder("knative", fail=fail_b)
    loop = ControlLoop(
        engine,
        sources,
        {"deployment": a, "knative": b},
        clock,  # type: ignore[arg-type]
        ServiceMetrics(CollectorRegistry()),
        source_deadline=0.05,
        is_leader=lambda: leader,
    )
    return loop, a, b, clock


async def test_tick_decides_and_applies_every_target() -> None:
    clock_holder: dict[str, float] = {"ns/a": 9.0, "ns/b": 3.0}
    loop, a, b, clock = _loop([])
    loop.sources = [QueueSource(clock, clock_holder)]
    pairs = await loop.tick()
    assert [(d.target, d.replicas) for d, _ in pairs] == [("ns/a", 5), ("ns/b", 2)]
    assert a.calls == [("ns/a", 5, False)] and b.calls == [("ns/b", 2, False)]
    assert all(o.applied for _, o in pairs)
    rec = loop.records["ns/a"][-1]
    assert rec["actuation"]["applied"] is True and rec["replicas"] == 5


async def test_a_hanging_source_misses_its_deadline_and_the_tick_goes_on() -> None:
    loop, _a, _, clock = _loop([])
    loop.sources = [HangingSource(), QueueSource(clock, {"ns/a": 4.0, "ns/b": 4.0})]
    pairs = await loop.tick()
    assert [d.replicas for d, _ in pairs] == [2, 2]
    errors = loop.metrics.registry.get_sample_value(
        "autoscaler_source_errors_total",
        {"source": "hanging", "target": "ns/a", "kind": "deadline"},
    )
    assert errors == 1.0


async def test_a_failing_actuator_does_not_stall_the_other_target() -> None:
    loop, _a, _b, clock = _loop([], fail_b=True)
    loop.sources = [QueueSource(clock, {"ns/a": 6.0, "ns/b": 6.0})]
    pairs = await loop.tick()
    outcomes = {d.target: o for d, o in pairs}
    assert outcomes["ns/a"].applied and outcomes["ns/a"].wrote
    assert not outcomes["ns/b"].applied and outcomes["ns/b"].error == "exception"
    assert (
        loop.metrics.registry.get_sample_value(
            "autoscaler_actuation_failures_total", {"target": "ns/b", "kind": "exception"}
        )
        == 1.0
    )


async def test_a_follower_computes_but_writes_nothing() -> None:
    loop, a, b, clock = _loop([], leader=False)
    loop.sources = [QueueSource(clock, {"ns/a": 6.0, "ns/b": 6.0})]
    await loop.tick()
    assert a.calls == [("ns/a", 3, True)] and b.calls == [("ns/b", 3, True)]


async def test_missing_signals_never_scale_down_to_the_floor() -> None:
    depth = {"ns/a": 20.0, "ns/b": 20.0}
    loop, _a, _, clock = _loop([])
    src = QueueSource(clock, depth)
    loop.sources = [src]
    await loop.tick()
    loop.sources = []  # the source disappears: no data at all
    for _ in range(120):
        clock.advance(1)
        pairs = await loop.tick()
    assert [d.replicas for d, _ in pairs] == [10, 10]
    assert not pairs[0][0].signals_ok


async def test_run_wakes_early_and_stops_after_the_tick_in_flight() -> None:
    loop, _a, _, clock = _loop([])
    loop.sources = [QueueSource(clock, {"ns/a": 2.0, "ns/b": 2.0})]
    stop = asyncio.Event()

    class Sleepless(ManualClock):
        async def sleep(self, seconds: float) -> None:
            await asyncio.Event().wait()  # never wakes by itself: only wake() or stop

    loop.clock = Sleepless(clock.now())
    task = asyncio.create_task(loop.run(stop, interval=3600))
    while loop.ticks < 1:
        await _yield()
    loop.wake()
    while loop.ticks < 2:
        await _yield()
    stop.set()
    await asyncio.wait_for(task, 5)
    assert loop.ticks == 2


async def _yield() -> None:
    # Let other tasks run without sleeping (asyncio.sleep is banned outside the clock module).
    fut = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(fut.set_result, None)
    await fut


def test_redact_masks_secrets_and_url_credentials() -> None:
    got = redact(
        {"url": "http://user:hunter2@prom:9090", "apiToken": "abc", "x": [{"password": 1}]}
    )
    assert got == {"url": "http://***@prom:9090", "apiToken": "***", "x": [{"password": "***"}]}


async def test_http_endpoints(tmp_path: Path) -> None:
    loop, _a, _, clock = _loop([])
    loop.sources = [QueueSource(clock, {"ns/a": 9.0, "ns/b": 1.0})]
    await loop.tick()
    ready = {"kubernetes": True}
    state = ServiceState(
        loop,
        loop.metrics.registry,
        parse_policy(POLICY),
        "policy.yaml",
        checks={"kubernetes": lambda: ready["kubernetes"]},
    )
    async with TestClient(TestServer(build_http_app(state))) as client:
        assert (await client.get("/healthz")).status == 200
        r = await client.get("/readyz")
        assert r.status == 200 and (await r.json())["ready"] is True
        ready["kubernetes"] = False
        r = await client.get("/readyz")
        assert r.status == 503 and (await r.json())["failing"] == ["kubernetes"]
        text = await (await client.get("/metrics")).text()
        assert 'autoscaler_desired_replicas{target="ns/a"} 5.0' in text
        dec = await (await client.get("/debug/decisions?target=ns/a&n=1")).json()
        assert list(dec) == ["ns/a"] and dec["ns/a"][0]["replicas"] == 5
        assert (await client.get("/debug/decisions?target=nope")).status == 404
        cfg = await (await client.get("/debug/config")).json()
        url = cfg["policy"]["spec"]["targets"][1]["signals"]["prometheus"]["url"]
        assert url == "http://***@prom:9090"
        assert "hunter2" not in json.dumps(cfg)


def _write(path: Path, text: str) -> None:
    path.write_text(text)


async def test_reload_applies_a_good_file_after_debounce_and_keeps_state(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    _write(path, POLICY)
    clock = ManualClock(100.0)
    metrics = ServiceMetrics(CollectorRegistry())
    applied: list[object] = []
    w = PolicyWatcher(path, clock, metrics, applied.append, debounce=2.0)
    doc = w.initial()
    engine = Engine.from_policy(doc)
    window = engine.targets["ns/a"].windows
    _write(path, POLICY.replace("maxReplicas: 20", "maxReplicas: 7"))
    assert not w.poll()  # first sight of the change: debounce
    clock.advance(1.0)
    assert not w.poll()
    clock.advance(1.5)
    assert w.poll()
    assert len(applied) == 1
    engine.set_targets((t.ref(), t) for t in applied[0].spec.targets)  # type: ignore[attr-defined]
    assert engine.targets["ns/a"].config.guards.max_replicas == 7
    assert engine.targets["ns/a"].windows is window  # state carried over
    assert (
        metrics.registry.get_sample_value("autoscaler_config_reloads_total", {"outcome": "applied"})
        == 1.0
    )


async def test_reload_rejects_a_bad_file_and_keeps_the_last_good(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    _write(path, POLICY)
    clock = ManualClock(100.0)
    metrics = ServiceMetrics(CollectorRegistry())
    applied: list[object] = []
    w = PolicyWatcher(path, clock, metrics, applied.append, debounce=0.0)
    w.initial()
    _write(path, POLICY.replace("maxReplicas: 20", "maxReplica: 20", 1))
    assert not w.poll()
    assert applied == []
    assert w.last_problems and str(w.last_problems[0]).startswith(f"{path}:")
    assert "unknown key 'maxReplica'" in str(w.last_problems[0])
    assert metrics.registry.get_sample_value("autoscaler_config_problems") == 1.0
    assert not w.poll()  # reported once, not on every poll
    _write(path, POLICY)
    assert w.poll() and len(applied) == 1  # fixing the file applies it


async def test_a_large_reload_is_parsed_off_the_event_loop(tmp_path: Path) -> None:
    """A file past APART_MIN_BYTES is parsed in a worker thread (which runs the child process):
    the event loop keeps running other work (the control loop's ticks) until the parse is back,
    and the result is applied exactly as ``poll`` would apply it."""
    import threading

    from autoscaler.service.reload import APART_MIN_BYTES

    path = tmp_path / "policy.yaml"
    _write(path, POLICY)
    clock = ManualClock(100.0)
    metrics = ServiceMetrics(CollectorRegistry())
    applied: list[object] = []
    w = PolicyWatcher(path, clock, metrics, applied.append, debounce=0.0)
    w.initial()
    big = POLICY.replace("maxReplicas: 20", "maxReplicas: 7") + "#" * APART_MIN_BYTES + "\n"
    _write(path, big)
    release = threading.Event()
    parsed_in: list[str] = []
    real_parse = w._parse

    def slow_parse(text: str) -> object:
        parsed_in.append(threading.current_thread().name)
        release.wait(10)
        return real_parse(text)

    async def one_loop_turn() -> None:
        turn = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(turn.set_result, None)
        await turn

    w._parse = slow_parse  # type: ignore[method-assign]
    reload = asyncio.ensure_future(w.poll_async())
    ticks = 0
    while not parsed_in:  # the parse has started in its thread
        await one_loop_turn()
    for _ in range(50):  # the loop still runs other tasks while the parse is held
        await one_loop_turn()
        ticks += 1
    assert ticks == 50 and not reload.done() and applied == []
    assert parsed_in[0] != threading.main_thread().name
    release.set()
    assert await reload
    assert applied[0].spec.targets[0].guards.max_replicas == 7  # type: ignore[attr-defined]


async def test_token_limits_go_to_the_publishers_too() -> None:
    doc = parse_policy(
        """
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {name: tok}
spec:
  targets:
    - {name: t, namespace: ns, policy: {name: tokens, params: {tokensPerReplica: 100}},
       tokenLimits: {floor: 50}, actuation: {engine: deployment}}
    - {name: q, namespace: ns, policy: {name: queue, params: {targetPerReplica: 2}},
       actuation: {engine: deployment}}
"""
    )
    clock = ManualClock(1_700_000_000.0)
    main, tokens = Recorder("deployment"), Recorder("tokens")
    loop = ControlLoop(
        Engine.from_policy(doc),
        [],
        {"deployment": main},
        clock,
        ServiceMetrics(CollectorRegistry()),
        publishers=[tokens],
        is_leader=lambda: False,
    )
    await loop.tick()
    assert sorted(k for k, _, _ in main.calls) == ["ns/q", "ns/t"]
    # Only the target with a token-rate limit is published, in dry-run as a follower.
    assert tokens.calls == [("ns/t", 1, True)]
