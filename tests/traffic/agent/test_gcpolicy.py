"""The agent's garbage-collection policy: collections timed by generation, the start-up heap
frozen once the agent is up and released when it stops (autoscaler/traffic/agent/gcpolicy.py)."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from collections.abc import Iterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Histogram

from autoscaler.testing.clock import VirtualClock, until
from autoscaler.traffic.agent.gcpolicy import GcPauses, GcPolicy
from autoscaler.traffic.agent.main import serve
from autoscaler.traffic.agent.metrics import GC_PAUSE_BUCKETS
from autoscaler.traffic.agent.options import AgentConfig
from autoscaler.traffic.agent.proxy import Agent

T0 = 1_700_000_000.0


class StepTimer:
    """A timer that moves by ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.now = 100.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "autoscaler_agent_gc_pause_seconds",
        "test",
        ["generation"],
        buckets=GC_PAUSE_BUCKETS,
        registry=registry,
    )


def sample(registry: CollectorRegistry, name: str, generation: str, **labels: str) -> float:
    value = registry.get_sample_value(name, {"generation": generation, **labels})
    return 0.0 if value is None else value


@pytest.fixture
def no_freeze_left() -> Iterator[None]:
    """Every test here must leave the interpreter's collector as it found it."""
    callbacks = list(gc.callbacks)
    assert gc.get_freeze_count() == 0
    yield
    assert gc.callbacks == callbacks
    assert gc.get_freeze_count() == 0


def test_each_collection_is_timed_into_its_generation() -> None:
    registry = CollectorRegistry()
    pauses = GcPauses(histogram(registry), StepTimer(0.003))
    pauses("start", {"generation": 2, "collected": 0, "uncollectable": 0})
    pauses("stop", {"generation": 2, "collected": 5, "uncollectable": 0})
    pauses("start", {"generation": 0, "collected": 0, "uncollectable": 0})
    pauses("stop", {"generation": 0, "collected": 0, "uncollectable": 0})
    name = "autoscaler_agent_gc_pause_seconds"
    assert sample(registry, f"{name}_count", "2") == 1
    assert sample(registry, f"{name}_sum", "2") == pytest.approx(0.003)
    assert sample(registry, f"{name}_count", "0") == 1
    assert sample(registry, f"{name}_count", "1") == 0
    # 3 ms: over the 2.5 ms bucket, within the 5 ms one
    assert sample(registry, f"{name}_bucket", "2", le="0.0025") == 0
    assert sample(registry, f"{name}_bucket", "2", le="0.005") == 1
    assert pauses.last is not None
    generation, seconds = pauses.last
    assert generation == 0 and seconds == pytest.approx(0.003)


def test_a_slow_collection_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    pauses = GcPauses(histogram(CollectorRegistry()), StepTimer(0.02), slow=0.005)
    with caplog.at_level(logging.DEBUG, logger="autoscaler.traffic.agent.gc"):
        pauses("start", {"generation": 2})
        pauses("stop", {"generation": 2, "collected": 7})
    assert [r.getMessage() for r in caplog.records] == [
        "gc: generation 2 collection held the agent 20.0 ms (7 collected)"
    ]
    caplog.clear()
    fast = GcPauses(histogram(CollectorRegistry()), StepTimer(0.0001), slow=0.005)
    with caplog.at_level(logging.DEBUG, logger="autoscaler.traffic.agent.gc"):
        fast("start", {"generation": 0})
        fast("stop", {"generation": 0, "collected": 0})
    assert caplog.records == []


@pytest.mark.usefixtures("no_freeze_left")
def test_installed_it_sees_the_interpreters_own_collections() -> None:
    registry = CollectorRegistry()
    pauses = GcPauses(histogram(registry), StepTimer(0.001))
    pauses.install()
    pauses.install()  # once only
    try:
        assert gc.callbacks.count(pauses) == 1
        gc.collect(1)
        assert sample(registry, "autoscaler_agent_gc_pause_seconds_count", "1") >= 1
    finally:
        pauses.uninstall()
    assert pauses not in gc.callbacks
    before = sample(registry, "autoscaler_agent_gc_pause_seconds_count", "1")
    gc.collect(1)
    assert sample(registry, "autoscaler_agent_gc_pause_seconds_count", "1") == before


@pytest.mark.usefixtures("no_freeze_left")
def test_take_over_freezes_the_start_up_heap_and_release_undoes_it() -> None:
    registry = CollectorRegistry()
    policy = GcPolicy(GcPauses(histogram(registry), StepTimer(0.001)))
    thresholds = gc.get_threshold()
    policy.take_over()
    try:
        # every module and object alive now is out of the collector's sight
        assert policy.frozen == gc.get_freeze_count() > 10_000
        assert policy.pauses.installed
        # the start-up collection itself is timed, as a full one
        assert sample(registry, "autoscaler_agent_gc_pause_seconds_count", "2") >= 1
        # a full collection now walks only what was allocated since: far fewer objects
        assert len(gc.get_objects()) < policy.frozen
        assert gc.get_threshold() == thresholds  # CPython's thresholds are kept
        policy.take_over()  # idempotent: no second freeze of a later heap
        assert gc.get_freeze_count() == policy.frozen
    finally:
        policy.release()
    assert gc.get_freeze_count() == 0
    assert not policy.pauses.installed
    policy.release()  # twice is harmless


@pytest.mark.parametrize("freeze", [True, False])
@pytest.mark.usefixtures("no_freeze_left")
async def test_serve_freezes_once_up_and_releases_on_stop(freeze: bool) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    config = AgentConfig(
        upstream=f"http://127.0.0.1:{closed_port}",
        listen=("127.0.0.1", 0),
        metrics_listen=("127.0.0.1", 0),
    )
    agent = Agent(config, VirtualClock(T0), CollectorRegistry())
    stop = asyncio.Event()
    seen: list[tuple[list[str], int, bool]] = []

    def ready(addresses: list[str]) -> None:
        seen.append((addresses, gc.get_freeze_count(), agent.gc.pauses.installed))

    task = asyncio.create_task(serve(agent, stop, ready, freeze_gc=freeze))
    try:
        await until(lambda: bool(seen) or task.done())
        (proxy, admin), frozen, installed = seen[0]
        assert installed
        assert (frozen > 10_000) if freeze else frozen == 0
        gc.collect(1)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{proxy}/v1/models/chat") as resp:
                assert resp.status == 502  # serving (nothing listens upstream)
            async with session.get(f"{admin}/metrics") as resp:
                text = await resp.text()
        assert 'autoscaler_agent_gc_pause_seconds_count{generation="1"}' in text
        count = agent.registry.get_sample_value(
            "autoscaler_agent_gc_pause_seconds_count", {"generation": "1"}
        )
        assert count is not None and count >= 1
    finally:
        stop.set()
        await task
    assert not agent.gc.pauses.installed
