"""Which limit the agent enforces (docs/token-limits.md), against the service's real endpoint.

The pure precedence rules first; then the watcher reading the service's own ``TokenLimitsApi``
(the real handler over a ``PublishedDecisions`` board, on loopback) and a file in the format the
publisher writes to the ConfigMap, so the agent's parser and the service's writer cannot drift.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from autoscaler.actuators.published import PublishedDecisions
from autoscaler.actuators.tokens import Limits, TokenLimitsApi
from autoscaler.core.types import Decision
from autoscaler.testing.clock import VirtualClock
from autoscaler.traffic.agent.budget import TokenBudget
from autoscaler.traffic.agent.limits import (
    Enforced,
    LimitDocument,
    LimitsFormatError,
    parse_limits,
    resolve,
)
from autoscaler.traffic.agent.metrics import AgentMetrics
from autoscaler.traffic.agent.options import AgentConfig
from autoscaler.traffic.agent.watcher import LimitsWatcher

T0 = 1_700_000_000.0
TARGET = "llm/chat"
DEFAULT = 500.0


def doc(rate: float | None, *, stale: bool = False, dry_run: bool = False) -> LimitDocument:
    return LimitDocument(TARGET, rate, stale=stale, dry_run=dry_run)


# -- the precedence, pure ------------------------------------------------------------------------


def test_fresh_http_beats_the_configmap() -> None:
    e = resolve(doc(2187.5), doc(2000.0), None, DEFAULT)
    assert (e.rate, e.source) == (2187.5, "http")


def test_stale_or_dry_run_http_falls_back_to_the_configmap() -> None:
    e = resolve(doc(2187.5, stale=True), doc(2000.0), None, DEFAULT)
    assert (e.rate, e.source) == (2000.0, "configmap")
    assert "stale" in e.reason
    e = resolve(doc(2187.5, dry_run=True), doc(2000.0), None, DEFAULT)
    assert (e.rate, e.source) == (2000.0, "configmap")
    assert "dry-run" in e.reason


def test_a_null_limit_is_the_configured_default() -> None:
    last = Enforced(900.0, "http", "x")
    assert resolve(doc(None), doc(2000.0), last, DEFAULT) == Enforced(
        DEFAULT, "default", "the policy sets no limit (HTTP)"
    )
    e = resolve(None, doc(None), last, DEFAULT)
    assert (e.rate, e.source) == (DEFAULT, "default")


def test_nothing_readable_keeps_the_last_limit_else_the_default() -> None:
    last = Enforced(900.0, "http", "fresh HTTP answer")
    e = resolve(None, None, last, DEFAULT, http_problem="down", configmap_problem="missing")
    assert (e.rate, e.source) == (900.0, "kept")
    assert e.reason == "kept the last limit (down; missing)"
    e = resolve(doc(50.0, stale=True), None, last, DEFAULT)
    assert (e.rate, e.source) == (900.0, "kept")  # stale is not a new limit
    e = resolve(None, None, None, DEFAULT)
    assert (e.rate, e.source) == (DEFAULT, "default")
    assert not math.isinf(e.rate)  # never unlimited by accident


def test_parse_rejects_what_it_does_not_know() -> None:
    ok = '{"version": 1, "target": "llm/chat", "tokenRatePerReplica": 10}'
    assert parse_limits(ok, "x") == LimitDocument("llm/chat", 10.0)
    for text, message in (
        ('{"version": 2, "tokenRatePerReplica": 1}', "unknown version 2"),
        ('{"version": 1}', "no tokenRatePerReplica"),
        ('{"version": 1, "tokenRatePerReplica": "fast"}', "must be a number or null"),
        ('{"version": 1, "tokenRatePerReplica": -3}', "finite and >= 0"),
        ('{"version": 1, "tokenRatePerReplica": true}', "must be a number or null"),
        ("[]", "not a JSON object"),
        ("{", "not JSON"),
    ):
        with pytest.raises(LimitsFormatError, match=message) as info:
            parse_limits(text, "/etc/token-limits/chat.json")
        assert str(info.value).startswith("/etc/token-limits/chat.json: ")


def _decision(rate: float | None, replicas: int = 4, ts: float = T0) -> Decision:
    return Decision(
        target=TARGET,
        ts=ts,
        policy="tokens",
        current=replicas,
        ready=replicas,
        starting=0,
        proposal=replicas,
        replicas=replicas,
        token_rate=rate,
        token_rate_per_replica=None if rate is None else rate / replicas,
        reason="test",
        signals_ok=True,
    )


def test_the_service_configmap_document_parses() -> None:
    text = Limits.of(_decision(10000.0)).document(TARGET, "tokens", T0)
    assert parse_limits(text, "cm") == LimitDocument(TARGET, 2500.0)
    text = Limits.of(_decision(None)).document(TARGET, "tokens", T0)
    assert parse_limits(text, "cm") == LimitDocument(TARGET, None)


# -- the watcher against the service's endpoint and a mounted file ------------------------------


class Service:
    """The service's real TokenLimitsApi on loopback, and a switch to take it down."""

    def __init__(self, clock: VirtualClock) -> None:
        self.board = PublishedDecisions(clock, max_age_seconds=60)
        self.down = False
        api = TokenLimitsApi(self.board)
        self.app = web.Application(middlewares=[self._maybe_down])
        self.app.add_routes(api.routes())
        self.server = TestServer(self.app, host="127.0.0.1")

    @web.middleware
    async def _maybe_down(self, request: web.Request, handler: object) -> web.StreamResponse:
        if self.down:
            assert request.transport is not None
            request.transport.close()  # the connection drops: a client error
            raise web.HTTPServiceUnavailable()
        return await handler(request)  # type: ignore[operator, no-any-return]

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
async def service(clock: VirtualClock) -> AsyncIterator[Service]:
    s = Service(clock)
    await s.server.start_server()
    yield s
    await s.server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def watcher(
    config: AgentConfig, clock: VirtualClock, session: aiohttp.ClientSession
) -> tuple[LimitsWatcher, TokenBudget, CollectorRegistry]:
    registry = CollectorRegistry()
    budget = TokenBudget(config.default_token_rate, clock.now())
    w = LimitsWatcher(config, budget, AgentMetrics(registry), clock, session)
    w.start_default()
    return w, budget, registry


def write(path: Path, rate: float | None) -> None:
    path.write_text(Limits.of(_decision(rate)).document(TARGET, "tokens", T0))


async def test_precedence_through_the_real_endpoint_and_file(
    service: Service, clock: VirtualClock, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    file = tmp_path / "chat.json"
    config = AgentConfig(
        upstream="http://127.0.0.1:1",
        target=TARGET,
        limits_url=service.url,
        limits_file=str(file),
        default_token_rate=DEFAULT,
    )
    w, budget, registry = watcher(config, clock, session)
    assert (await w.read_once()).source == "default"  # 404 and no file yet
    assert budget.rate == DEFAULT

    write(file, 8000.0)  # 2000 per replica
    e = await w.read_once()
    assert (e.rate, e.source) == (2000.0, "configmap")

    service.board.publish(_decision(8750.0))  # 2187.5 per replica, fresh
    e = await w.read_once()
    assert (e.rate, e.source) == (2187.5, "http")
    assert budget.rate == 2187.5
    assert registry.get_sample_value("autoscaler_agent_token_limit_tokens_per_second") == 2187.5
    assert registry.get_sample_value("autoscaler_agent_token_limit_source", {"source": "http"}) == 1

    clock.advance(61)  # the service stopped deciding: its answer is stale -> the ConfigMap
    e = await w.read_once()
    assert (e.rate, e.source) == (2000.0, "configmap")

    file.unlink()  # and the key went away: keep what we enforce
    e = await w.read_once()
    assert (e.rate, e.source) == (2000.0, "kept")

    service.board.publish(_decision(4000.0, ts=clock.now()))
    service.down = True  # unreachable: keep the last limit
    e = await w.read_once()
    assert (e.rate, e.source) == (2000.0, "kept")
    assert "unreachable" in e.reason
    reads = registry.get_sample_value(
        "autoscaler_agent_limit_reads_total", {"source": "http", "result": "unreachable"}
    )
    assert reads == 1

    service.down = False
    assert (await w.read_once()).rate == 1000.0  # fresh again
    service.board.publish(_decision(None, ts=clock.now()))  # the policy dropped its limit
    e = await w.read_once()
    assert (e.rate, e.source) == (DEFAULT, "default")
    assert budget.rate == DEFAULT


async def test_dry_run_answer_is_advisory(
    service: Service, clock: VirtualClock, session: aiohttp.ClientSession
) -> None:
    config = AgentConfig(upstream="http://127.0.0.1:1", target=TARGET, limits_url=service.url)
    w, _, _ = watcher(config, clock, session)
    service.board.publish(_decision(400.0), dry_run=True)
    e = await w.read_once()
    assert (e.rate, e.source) == (config.default_token_rate, "default")
    assert "dry-run" in e.reason


async def test_unreadable_file_and_foreign_target_keep_the_limit(
    clock: VirtualClock, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    file = tmp_path / "chat.json"
    config = AgentConfig(
        upstream="http://127.0.0.1:1", target=TARGET, limits_file=str(file), default_token_rate=7
    )
    w, budget, registry = watcher(config, clock, session)
    write(file, 4000.0)
    assert (await w.read_once()).rate == 1000.0
    file.write_text("{garbage")
    assert (await w.read_once()).source == "kept"
    file.write_text(json.dumps({"version": 1, "target": "llm/other", "tokenRatePerReplica": 1}))
    e = await w.read_once()
    assert (e.rate, e.source) == (1000.0, "kept")
    assert "for target llm/other" in e.reason
    unreadable = registry.get_sample_value(
        "autoscaler_agent_limit_reads_total", {"source": "configmap", "result": "unreadable"}
    )
    assert unreadable == 2
    assert budget.rate == 1000.0


async def test_watcher_loop_reads_every_interval_on_the_clock(
    clock: VirtualClock, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    import asyncio

    file = tmp_path / "chat.json"
    write(file, 4000.0)
    config = AgentConfig(
        upstream="http://127.0.0.1:1", target=TARGET, limits_file=str(file), limits_interval=5
    )
    w, budget, _ = watcher(config, clock, session)
    task = asyncio.create_task(w.run())
    try:
        async with asyncio.timeout(5):
            await clock.sleeping(1)
            assert w.rounds == 0
            clock.advance(5)
            await clock.sleeping(1)
            assert w.rounds == 1 and budget.rate == 1000.0
            write(file, 8000.0)
            clock.advance(5)
            await clock.sleeping(1)
            assert w.rounds == 2 and budget.rate == 2000.0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert clock.slept == [5, 5, 5]
