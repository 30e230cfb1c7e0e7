"""Token-rate limits: the ConfigMap the agents watch (against the fake API server) and the HTTP
endpoint they poll."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from kubernetes_asyncio.client import ApiClient

from autoscaler.actuators.backoff import RetryPolicy
from autoscaler.actuators.calls import ApiCaller
from autoscaler.actuators.published import PublishedDecisions
from autoscaler.actuators.ratelimit import TokenBucket
from autoscaler.actuators.tokens import (
    CONFIGMAP,
    Limits,
    TokenLimitsApi,
    TokenLimitsPublisher,
    config_key,
    limits_from_configmap,
)
from autoscaler.config.models import Actuation
from autoscaler.core.types import Decision, TargetRef
from autoscaler.testing.clock import VirtualClock
from autoscaler.testing.fake_kube import FakeKube

NS = "llm"
T0 = 1_700_000_000.0
Client = TestClient[web.Request, web.Application]


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
async def kube(clock: VirtualClock) -> AsyncIterator[FakeKube]:
    async with FakeKube(clock=clock) as server:
        yield server


@pytest.fixture
async def api(kube: FakeKube) -> AsyncIterator[ApiClient]:
    async with kube.api_client() as client:
        yield client


@pytest.fixture
def board(clock: VirtualClock) -> PublishedDecisions:
    return PublishedDecisions(clock, max_age_seconds=30)


def publisher(
    api: ApiClient, clock: VirtualClock, board: PublishedDecisions, **kw: Any
) -> TokenLimitsPublisher:
    caller = ApiCaller(
        clock,
        limiter=TokenBucket(clock, rate=1000, burst=1000),
        retry=RetryPolicy(),
        rng=random.Random(7),
    )
    return TokenLimitsPublisher(api, clock, decisions=board, caller=caller, **kw)


def decision(
    replicas: int, rate: float | None, target: str = f"{NS}/chat", ts: float = T0
) -> Decision:
    return Decision(
        target=target,
        ts=ts,
        policy="tokens",
        current=replicas,
        ready=replicas,
        starting=0,
        proposal=replicas,
        replicas=replicas,
        token_rate=rate,
        token_rate_per_replica=None if rate is None else rate / max(replicas, 1),
        reason="tokens_per_second 9000 / 2500 per replica",
        signals_ok=True,
    )


def ref(name: str = "chat") -> TargetRef:
    return TargetRef("InferenceService", NS, name)


def data(kube: FakeKube) -> dict[str, str]:
    cm = kube.object("", "configmaps", NS, CONFIGMAP)
    assert cm is not None
    return dict(cm.get("data") or {})


def api_writes(kube: FakeKube) -> list[str]:
    return [
        f"{r.verb} {r.status}"
        for r in kube.requests
        if r.verb in ("create", "patch") and "/configmaps" in r.path
    ]


def configmap_requests(kube: FakeKube) -> int:
    return sum(1 for r in kube.requests if "/configmaps" in r.path)


async def test_first_limit_creates_the_configmap_with_one_key_per_target(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, board: PublishedDecisions
) -> None:
    tokens = publisher(api, clock, board)
    out = await tokens.apply(ref(), decision(4, 10000.0), Actuation())
    assert out.applied and out.wrote
    out = await tokens.apply(ref("code"), decision(2, 3000.0, target=f"{NS}/code"), None)
    assert out.applied and out.wrote
    assert api_writes(kube) == ["create 201", "patch 200"]
    got = data(kube)
    assert sorted(got) == ["chat.json", "code.json"]
    doc = json.loads(got["chat.json"])
    assert doc == {
        "version": 1,
        "target": f"{NS}/chat",
        "tokenRate": 10000.0,
        "tokenRatePerReplica": 2500.0,
        "replicas": 4,
        "policy": "tokens",
        "changedAt": "2023-11-14T22:13:20Z",
    }
    assert limits_from_configmap(got, "code") == Limits(3000.0, 1500.0, 2)
    cm = kube.object("", "configmaps", NS, CONFIGMAP)
    assert cm is not None
    assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kserve-autoscaler"
    patch = next(r for r in kube.requests if r.verb == "patch")
    assert patch.content_type == "application/merge-patch+json"
    assert patch.body["data"] == {"code.json": got["code.json"]}  # our key only
    assert patch.body["metadata"]["resourceVersion"]
    evts = kube.objects("", "events", NS)
    assert len(evts) == 2
    assert all(e["involvedObject"]["kind"] == "ConfigMap" for e in evts)
    assert any("tokenRatePerReplica unset -> 2500.0" in e["message"] for e in evts)


async def test_small_changes_are_not_written_and_steady_ticks_cost_no_call(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, board: PublishedDecisions
) -> None:
    tokens = publisher(api, clock, board, min_relative_change=0.05, min_interval_seconds=10)
    await tokens.apply(ref(), decision(4, 10000.0), None)
    n = configmap_requests(kube)
    for i in range(1, 20):  # the token slew guard nudges the limit each tick
        clock.advance(1)
        out = await tokens.apply(ref(), decision(4, 10000.0 + 20 * i, ts=clock.now()), None)
        assert out.applied and not out.wrote
    assert configmap_requests(kube) == n
    entry = board.get(f"{NS}/chat")
    assert entry is not None and entry.decision.token_rate == 10380.0  # HTTP is exact
    # Replicas alone do not change what an agent enforces per replica... but the share does.
    out = await tokens.apply(ref(), decision(5, 10000.0, ts=clock.now()), None)
    assert out.wrote  # per-replica 2500 -> 2000: 20%


async def test_a_large_change_waits_for_the_minimum_interval(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, board: PublishedDecisions
) -> None:
    tokens = publisher(api, clock, board, min_interval_seconds=10)
    await tokens.apply(ref(), decision(4, 10000.0), None)
    clock.advance(3)
    out = await tokens.apply(ref(), decision(4, 20000.0, ts=clock.now()), None)
    assert not out.applied and not out.wrote and "next write in 7.0s" in out.detail
    clock.advance(7)
    out = await tokens.apply(ref(), decision(4, 20000.0, ts=clock.now()), None)
    assert out.applied and out.wrote
    assert json.loads(data(kube)["chat.json"])["tokenRate"] == 20000.0
    # A limit going away is written at once: the agents fall back to their default.
    clock.advance(1)
    out = await tokens.apply(ref(), decision(4, None, ts=clock.now()), None)
    assert out.wrote
    doc = json.loads(data(kube)["chat.json"])
    assert doc["tokenRate"] is None and doc["tokenRatePerReplica"] is None


async def test_a_target_without_limits_writes_nothing(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, board: PublishedDecisions
) -> None:
    tokens = publisher(api, clock, board)
    out = await tokens.apply(ref(), decision(4, None), None)
    assert out.applied and not out.wrote
    assert api_writes(kube) == []
    assert kube.object("", "configmaps", NS, CONFIGMAP) is None


async def test_concurrent_targets_of_a_namespace_take_turns_without_conflicts(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, board: PublishedDecisions
) -> None:
    tokens = publisher(api, clock, board)
    names = [f"m{i}" for i in range(6)]
    outs = await asyncio.gather(
        *(tokens.apply(ref(n), decision(2, 1000.0, target=f"{NS}/{n}"), None) for n in names)
    )
    assert all(o.applied and o.wrote for o in outs)
    assert sorted(data(kube)) == sorted(config_key(n) for n in names)
    assert all(not w.endswith("409") for w in api_writes(kube))


def after(kube: FakeKube, verb: str, action: Callable[[], None]) -> asyncio.Future[None]:
    """Run ``action`` right after the server answers the next matching ConfigMap request,
    before the client reads the answer."""
    done = False
    start = len(kube.requests)

    def hook() -> bool:
        nonlocal done
        fresh = kube.requests[start:]
        if not done and any(r.verb == verb and "/configmaps" in r.path for r in fresh):
            done = True
            action()
        return done

    return asyncio.ensure_future(kube.until(hook))


async def test_someone_else_changing_the_configmap_is_a_409_then_a_retry(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, board: PublishedDecisions
) -> None:
    tokens = publisher(api, clock, board, resync_seconds=1)
    await tokens.apply(ref(), decision(4, 10000.0), None)

    def operator() -> None:
        def change(cm: dict[str, Any]) -> None:
            cm["data"]["notes.txt"] = "limits reviewed"

        kube.write("", "configmaps", NS, CONFIGMAP, change)

    clock.advance(11)
    hooked = after(kube, "get", operator)
    out = await tokens.apply(ref(), decision(4, 20000.0, ts=clock.now()), None)
    await hooked
    assert out.applied and out.wrote
    assert api_writes(kube)[1:] == ["patch 409", "patch 200"]
    got = data(kube)
    assert got["notes.txt"] == "limits reviewed"  # their key survives
    assert json.loads(got["chat.json"])["tokenRate"] == 20000.0


async def test_a_deleted_configmap_is_created_again(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, board: PublishedDecisions
) -> None:
    tokens = publisher(api, clock, board)
    await tokens.apply(ref(), decision(4, 10000.0), None)
    kube.remove("", "configmaps", NS, CONFIGMAP)
    clock.advance(11)
    out = await tokens.apply(ref(), decision(4, 20000.0, ts=clock.now()), None)
    assert out.applied and out.wrote
    assert api_writes(kube) == ["create 201", "patch 404", "create 201"]
    assert json.loads(data(kube)["chat.json"])["tokenRate"] == 20000.0


async def test_a_racing_create_is_a_409_then_a_patch(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, board: PublishedDecisions
) -> None:
    tokens = publisher(api, clock, board)

    def other_writer() -> None:
        kube.seed(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": CONFIGMAP, "namespace": NS},
                "data": {"other.json": "{}"},
            }
        )

    hooked = after(kube, "get", other_writer)
    out = await tokens.apply(ref(), decision(4, 10000.0), None)
    await hooked
    assert out.applied and out.wrote
    assert api_writes(kube) == ["create 409", "patch 200"]
    assert sorted(data(kube)) == ["chat.json", "other.json"]


async def test_dry_run_writes_nothing_and_reports_the_change(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, board: PublishedDecisions
) -> None:
    tokens = publisher(api, clock, board, dry_run=True)
    out = await tokens.apply(ref(), decision(4, 10000.0), None)
    assert out.dry_run and not out.applied and not out.wrote
    (change,) = out.changes.values()
    assert change[0] is None and json.loads(str(change[1]))["tokenRate"] == 10000.0
    live = publisher(api, clock, board)
    out = await live.apply(ref(), decision(4, 10000.0), Actuation(dry_run=True))
    assert out.dry_run and not out.wrote
    assert api_writes(kube) == []
    entry = board.get(f"{NS}/chat")
    assert entry is not None and entry.dry_run  # the target's own dry-run is flagged


async def test_api_errors_are_reported(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, board: PublishedDecisions
) -> None:
    kube.allow(("get", "", "configmaps"))  # no create: 403
    tokens = publisher(api, clock, board)
    out = await tokens.apply(ref(), decision(4, 10000.0), None)
    assert not out.applied and out.error == "forbidden"
    entry = board.get(f"{NS}/chat")
    assert entry is not None  # the HTTP endpoint still has it


# --- HTTP ------------------------------------------------------------------------------------


@pytest.fixture
async def http(board: PublishedDecisions) -> AsyncIterator[Client]:
    app = web.Application()
    app.add_routes(TokenLimitsApi(board).routes())
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_http_serves_current_limits_with_a_stale_flag(
    http: Client, board: PublishedDecisions, clock: VirtualClock
) -> None:
    assert (await http.get(f"/tokens/{NS}/chat")).status == 404
    board.publish(decision(4, 10000.0))
    clock.advance(2)
    r = await http.get(f"/tokens/{NS}/chat")
    assert r.status == 200
    assert r.headers["Cache-Control"] == "no-store"
    body = await r.json()
    assert body == {
        "version": 1,
        "target": f"{NS}/chat",
        "tokenRate": 10000.0,
        "tokenRatePerReplica": 2500.0,
        "replicas": 4,
        "policy": "tokens",
        "ts": T0,
        "ageSeconds": 2.0,
        "stale": False,
        "dryRun": False,
    }
    clock.advance(40)
    body = await (await http.get(f"/tokens/{NS}/chat")).json()
    assert body["stale"] is True and body["tokenRate"] == 10000.0  # the agent keeps its limits
