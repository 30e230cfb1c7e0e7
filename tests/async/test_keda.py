"""KEDA: the metrics-api endpoint, rare ScaledObject writes against the fake API server with the
real KEDA CRD, and the example ScaledObjects validated against that CRD."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from kubernetes_asyncio.client import ApiClient

from autoscaler.actuators.backoff import RetryPolicy
from autoscaler.actuators.calls import ApiCaller, Rejected
from autoscaler.actuators.keda import (
    PAUSED_REPLICAS,
    KedaActuation,
    KedaActuator,
    MetricsApi,
    bounds_changes,
)
from autoscaler.actuators.published import PublishedDecisions
from autoscaler.actuators.ratelimit import TokenBucket
from autoscaler.config.models import Actuation
from autoscaler.core.types import Decision, TargetRef
from autoscaler.testing.clock import VirtualClock
from autoscaler.testing.fake_kube import FakeKube, shared_crd_dir

CRDS = shared_crd_dir()
needs_crds = pytest.mark.skipif(CRDS is None, reason="../shared/crds is not there")
EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
NS = "llm"
KEDA = ("keda.sh", "scaledobjects")
T0 = 1_700_000_000.0
Client = TestClient[web.Request, web.Application]


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
async def kube(clock: VirtualClock) -> AsyncIterator[FakeKube]:
    async with FakeKube(clock=clock, crd_dir=CRDS) as server:
        yield server


@pytest.fixture
async def api(kube: FakeKube) -> AsyncIterator[ApiClient]:
    async with kube.api_client() as client:
        yield client


@pytest.fixture
def board(clock: VirtualClock) -> PublishedDecisions:
    return PublishedDecisions(clock, max_age_seconds=30)


def decision(
    replicas: int,
    target: str = f"{NS}/chat",
    *,
    ts: float = T0,
    inputs: Mapping[str, float] | None = None,
    token_rate: float | None = None,
) -> Decision:
    return Decision(
        target=target,
        ts=ts,
        policy="max",
        current=2,
        ready=2,
        starting=0,
        proposal=replicas,
        replicas=replicas,
        token_rate=token_rate,
        token_rate_per_replica=None if token_rate is None else token_rate / max(replicas, 1),
        reason="max(tokens=3, queue=4)",
        signals_ok=True,
        inputs=dict(inputs or {}),
    )


def chat() -> TargetRef:
    return TargetRef("InferenceService", NS, "chat")


def scaled_object(name: str = "chat", owner: str | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS}
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": "serving.kserve.io/v1beta1",
                "kind": "InferenceService",
                "name": owner,
                "uid": "0000-1111",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"name": f"{name}-predictor"},
            "triggers": [
                {
                    "type": "metrics-api",
                    "metadata": {
                        "url": f"http://svc:8080/keda/metrics/{NS}/{name}",
                        "valueLocation": "desiredReplicas",
                        "targetValue": "1",
                    },
                }
            ],
            **spec,
        },
    }


def actuator(
    api: ApiClient, clock: VirtualClock, board: PublishedDecisions, **kw: Any
) -> KedaActuator:
    caller = ApiCaller(
        clock,
        limiter=TokenBucket(clock, rate=1000, burst=1000),
        retry=RetryPolicy(),
        rng=random.Random(7),
    )
    return KedaActuator(api, clock, decisions=board, caller=caller, **kw)


def so(kube: FakeKube, name: str = "chat") -> dict[str, Any]:
    obj = kube.object(*KEDA, NS, name)
    assert obj is not None
    return obj


def writes(kube: FakeKube) -> list[str]:
    return [
        f"{r.verb} {r.path.rsplit('/', 2)[-2]}"
        for r in kube.requests
        if r.verb in ("patch", "create", "update")
    ]


def events(kube: FakeKube) -> list[dict[str, Any]]:
    return kube.objects("", "events", NS)


def after_get(kube: FakeKube, action: Callable[[], None], times: int = 1) -> asyncio.Future[None]:
    """Run ``action`` right after the server answers a GET of a ScaledObject, before the client
    reads it: a concurrent writer between our read and our patch."""
    done = 0

    def hook() -> bool:
        nonlocal done
        seen = sum(1 for r in kube.requests if r.verb == "get" and "/scaledobjects/" in r.path)
        while done < min(seen, times):
            done += 1
            action()
        return done >= times

    return asyncio.ensure_future(kube.until(hook))


# --- the metrics-api endpoint ------------------------------------------------------------------


@pytest.fixture
async def http(
    board: PublishedDecisions,
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    app.add_routes(MetricsApi(board, load_signals={f"{NS}/chat": "requests_waiting"}).routes())
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_metrics_api_serves_the_latest_decision(
    http: Client, board: PublishedDecisions, clock: VirtualClock
) -> None:
    board.publish(decision(3, inputs={"requests_waiting": 11.5, "tokens_per_second": 900.0}))
    board.publish(decision(5, ts=T0 + 5, inputs={"requests_waiting": 19.0}, token_rate=10000.0))
    clock.advance(7)
    r = await http.get(f"/keda/metrics/{NS}/chat")
    assert r.status == 200
    body = await r.json()
    assert body["desiredReplicas"] == 5  # what KEDA's valueLocation reads
    assert body["value"] == 19.0  # the configured load signal
    assert body["inputs"] == {"requests_waiting": 19.0}
    assert body["tokenRate"] == 10000.0 and body["tokenRatePerReplica"] == 2000.0
    assert body["active"] is True and body["signalsOk"] is True and body["dryRun"] is False
    assert body["ageSeconds"] == 2.0 and body["ts"] == T0 + 5


async def test_metrics_api_value_defaults_to_the_only_input(
    board: PublishedDecisions,
) -> None:
    api = MetricsApi(board)
    one = board.publish(decision(2, target="ml/a", inputs={"concurrency": 7.0}))
    two = board.publish(decision(2, target="ml/b", inputs={"x": 1.0, "y": 2.0}))
    none = board.publish(decision(0, target="ml/c"))
    assert api.body(one)["value"] == 7.0
    assert api.body(two)["value"] is None  # ambiguous: KEDA should read desiredReplicas
    assert api.body(none)["value"] is None
    assert api.body(none)["active"] is False and api.body(none)["desiredReplicas"] == 0


async def test_metrics_api_unknown_is_404_and_stale_is_503(
    http: Client, board: PublishedDecisions, clock: VirtualClock
) -> None:
    r = await http.get(f"/keda/metrics/{NS}/nobody")
    assert r.status == 404
    assert (await r.json())["error"] == "unknown"
    board.publish(decision(4))
    clock.advance(30)
    assert (await http.get(f"/keda/metrics/{NS}/chat")).status == 200  # exactly max age: fresh
    clock.advance(0.5)
    r = await http.get(f"/keda/metrics/{NS}/chat")
    assert r.status == 503  # KEDA counts a failure; its fallback applies, not our old number
    body = await r.json()
    assert body["error"] == "stale" and body["ageSeconds"] == 30.5
    board.publish(decision(6, ts=clock.now()))
    r = await http.get(f"/keda/metrics/{NS}/chat")
    assert r.status == 200 and (await r.json())["desiredReplicas"] == 6
    board.forget(f"{NS}/chat")
    assert (await http.get(f"/keda/metrics/{NS}/chat")).status == 404


async def test_an_older_record_never_replaces_a_newer_one(board: PublishedDecisions) -> None:
    board.publish(decision(5, ts=T0 + 10))
    board.publish(decision(1, ts=T0))
    entry = board.get(f"{NS}/chat")
    assert entry is not None and entry.decision.replicas == 5


# --- KedaActuator: serve, and rare writes --------------------------------------------------------


async def test_apply_publishes_and_writes_nothing_without_ownership(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, board: PublishedDecisions
) -> None:
    kube.seed(scaled_object())
    keda = actuator(api, clock, board)
    for settings in (Actuation(engine="keda"), KedaActuation(min_replicas=2, max_replicas=9)):
        out = await keda.apply(chat(), decision(4), settings)
        assert out.applied and not out.wrote and out.error is None
        assert "desiredReplicas 4" in out.detail
    assert kube.requests == []  # not owned: not even a read
    entry = board.get(f"{NS}/chat")
    assert entry is not None and entry.decision.replicas == 4
    out = await keda.apply(TargetRef("Service", NS, "chat"), decision(4), None)
    assert out.error == "unsupported"  # Knative Services are not scaled by KEDA


async def test_owned_bounds_are_written_once_with_an_event(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, board: PublishedDecisions
) -> None:
    kube.seed(scaled_object(minReplicaCount=1, maxReplicaCount=10))
    keda = actuator(api, clock, board, resync_seconds=300)
    owned = KedaActuation(owned=True, min_replicas=2, max_replicas=12)
    out = await keda.apply(chat(), decision(4), owned)
    assert out.applied and out.wrote
    assert out.changes == {
        "ScaledObject/chat:spec.minReplicaCount": (1, 2),
        "ScaledObject/chat:spec.maxReplicaCount": (10, 12),
    }
    spec = so(kube)["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 12)
    assert spec["triggers"][0]["metadata"]["valueLocation"] == "desiredReplicas"  # untouched
    patch = next(r for r in kube.requests if r.verb == "patch")
    assert patch.content_type == "application/merge-patch+json"
    assert patch.query.get("fieldManager") == "kserve-autoscaler"
    assert patch.body["metadata"]["resourceVersion"]  # conditional on what was read
    assert set(patch.body) == {"metadata", "spec"}
    assert set(patch.body["spec"]) == {"minReplicaCount", "maxReplicaCount"}
    (event,) = events(kube)
    assert event["involvedObject"]["kind"] == "ScaledObject"
    assert "minReplicaCount 1 -> 2" in event["message"]
    assert "maxReplicaCount 10 -> 12" in event["message"]
    # The next ticks cost no API call; after the resync interval a read, still no write.
    n = len(kube.requests)
    for _ in range(5):
        clock.advance(10)
        assert (await keda.apply(chat(), decision(5), owned)).applied
    assert len(kube.requests) == n
    clock.advance(300)
    out = await keda.apply(chat(), decision(5), owned)
    assert out.applied and not out.wrote
    assert [r.verb for r in kube.requests[n:]] == ["get"]
    # A changed policy bound is written at once.
    out = await keda.apply(chat(), decision(5), KedaActuation(owned=True, max_replicas=20))
    assert out.wrote and out.changes == {"ScaledObject/chat:spec.maxReplicaCount": (12, 20)}


async def test_keda_defaults_count_as_values(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, board: PublishedDecisions
) -> None:
    kube.seed(scaled_object())  # no min (KEDA: 0), no max (KEDA: 100)
    keda = actuator(api, clock, board)
    out = await keda.apply(chat(), decision(1), KedaActuation(owned=True, min_replicas=0))
    assert out.applied and not out.wrote  # 0 is what KEDA uses already
    out = await keda.apply(chat(), decision(1), KedaActuation(owned=True, max_replicas=100))
    assert out.applied and not out.wrote
    assert writes(kube) == []


async def test_never_writes_a_scaled_object_kserve_owns(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, board: PublishedDecisions
) -> None:
    kube.seed(scaled_object("chat-predictor", owner="chat", minReplicaCount=1))
    keda = actuator(api, clock, board)
    owned = KedaActuation(owned=True, scaled_object="chat-predictor", min_replicas=3)
    out = await keda.apply(chat(), decision(4), owned)
    assert not out.applied and out.error == "owned_elsewhere"
    assert "InferenceService" in out.detail
    out = await keda.set_paused_replicas(NS, "chat-predictor", 2, reason="incident 42")
    assert not out.applied and out.error == "owned_elsewhere"
    assert writes(kube) == []
    entry = board.get(f"{NS}/chat")
    assert entry is not None and entry.decision.replicas == 4  # still served


async def test_invalid_bounds_are_refused_before_writing(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, board: PublishedDecisions
) -> None:
    kube.seed(scaled_object(minReplicaCount=2, maxReplicaCount=10, idleReplicaCount=0))
    keda = actuator(api, clock, board)
    for settings in (
        KedaActuation(owned=True, min_replicas=12),  # above the max it keeps
        KedaActuation(owned=True, min_replicas=3, max_replicas=0),
        KedaActuation(owned=True, min_replicas=0),  # idleReplicaCount 0 must stay below min
    ):
        out = await keda.apply(chat(), decision(4), settings)
        assert out.error == "invalid", settings
    assert writes(kube) == []
    with pytest.raises(Rejected):
        bounds_changes({}, -1, None)


async def test_a_concurrent_writer_is_a_409_and_the_write_is_redone_on_fresh_state(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, board: PublishedDecisions
) -> None:
    kube.seed(scaled_object(minReplicaCount=1, maxReplicaCount=10))

    def gitops() -> None:
        def change(obj: dict[str, Any]) -> None:
            obj["spec"]["maxReplicaCount"] = 30
            obj["metadata"].setdefault("labels", {})["team"] = "search"

        kube.write(*KEDA, NS, "chat", change)

    hooked = after_get(kube, gitops)
    keda = actuator(api, clock, board)
    out = await keda.apply(chat(), decision(4), KedaActuation(owned=True, min_replicas=2))
    await hooked
    assert out.applied and out.wrote
    statuses = [r.status for r in kube.requests if r.verb == "patch"]
    assert statuses == [409, 200]
    obj = so(kube)
    assert obj["spec"]["minReplicaCount"] == 2
    assert obj["spec"]["maxReplicaCount"] == 30  # the other writer's change survives
    assert obj["metadata"]["labels"] == {"team": "search"}
    assert len(events(kube)) == 1


async def test_paused_replicas_override_set_and_clear(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, board: PublishedDecisions
) -> None:
    kube.seed(scaled_object())
    keda = actuator(api, clock, board)
    out = await keda.set_paused_replicas(NS, "chat", 3, reason="runaway scale-up", dry_run=True)
    assert not out.applied and out.dry_run and out.changes
    assert writes(kube) == []
    out = await keda.set_paused_replicas(NS, "chat", 3, reason="runaway scale-up")
    assert out.applied and out.wrote
    assert so(kube)["metadata"]["annotations"] == {PAUSED_REPLICAS: "3"}
    out = await keda.set_paused_replicas(NS, "chat", 3, reason="again")
    assert out.applied and not out.wrote  # already set: no write, no Event
    out = await keda.set_paused_replicas(NS, "chat", None, reason="incident over")
    assert out.applied and out.wrote
    assert not (so(kube)["metadata"].get("annotations") or {})
    out = await keda.set_paused_replicas(NS, "chat", None, reason="incident over")
    assert out.applied and not out.wrote
    messages = {e["message"] for e in events(kube)}
    assert messages == {
        f"{PAUSED_REPLICAS} unset -> 3: runaway scale-up",
        f"{PAUSED_REPLICAS} 3 -> unset: incident over",
    }
    out = await keda.set_paused_replicas(NS, "missing", 1, reason="x")
    assert out.error == "not_found"
    out = await keda.set_paused_replicas(NS, "chat", -1, reason="x")
    assert out.error == "invalid"


async def test_dry_run_reports_the_bounds_it_would_write(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, board: PublishedDecisions
) -> None:
    kube.seed(scaled_object(minReplicaCount=1))
    keda = actuator(api, clock, board, dry_run=True)
    out = await keda.apply(chat(), decision(4), KedaActuation(owned=True, min_replicas=2))
    assert out.dry_run and not out.applied and not out.wrote
    assert out.changes == {"ScaledObject/chat:spec.minReplicaCount": (1, 2)}
    assert writes(kube) == []
    per_target = actuator(api, clock, board)
    out = await per_target.apply(
        chat(), decision(4), KedaActuation(owned=True, min_replicas=2, dry_run=True)
    )
    assert out.dry_run and not out.wrote and writes(kube) == []
    entry = board.get(f"{NS}/chat")
    assert entry is not None and entry.dry_run  # served, flagged


async def test_api_outage_is_reported_not_assumed_applied(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, board: PublishedDecisions
) -> None:
    kube.seed(scaled_object(minReplicaCount=1))
    kube.fail_next(100, 503)
    keda = actuator(api, clock, board)
    work = asyncio.ensure_future(
        keda.apply(chat(), decision(4), KedaActuation(owned=True, min_replicas=2))
    )
    while not work.done():  # the caller's backoff waits on the virtual clock
        parked = asyncio.ensure_future(clock.sleeping(1))
        await asyncio.wait({work, parked}, return_when=asyncio.FIRST_COMPLETED)
        if parked.done():
            clock.advance(clock.slept[-1])
        else:
            parked.cancel()
    out = work.result()
    assert not out.applied and out.error == "transient"
    kube.clear_faults()
    out = await keda.apply(chat(), decision(4), KedaActuation(owned=True, min_replicas=2))
    assert out.applied and out.wrote  # not cached as in place after the failure


# --- the example ScaledObjects -------------------------------------------------------------------


def example(name: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((EXAMPLES / name).read_text(encoding="utf-8")) if d]
    assert len(docs) == 1
    doc: dict[str, Any] = docs[0]
    return doc


@needs_crds
@pytest.mark.parametrize("name", ["keda-metrics-api.yaml", "keda-external-push.yaml"])
async def test_example_scaled_objects_validate_against_the_keda_crd(
    kube: FakeKube, name: str
) -> None:
    obj = example(name)
    stored = kube.seed(obj)  # strict: an unknown field is a 400, a schema violation a 422
    assert stored["spec"]["triggers"] == obj["spec"]["triggers"]
    assert stored["spec"]["advanced"] == obj["spec"]["advanced"]  # nothing pruned


@needs_crds
async def test_the_crd_check_catches_mistakes(kube: FakeKube) -> None:
    from autoscaler.testing.fake_kube import ApiError

    bad = example("keda-metrics-api.yaml")
    bad["spec"]["minReplicaCount"] = 20  # above maxReplicaCount: KEDA's CEL rule
    with pytest.raises(ApiError) as e:
        kube.seed(bad)
    assert e.value.code == 422
    typo = example("keda-external-push.yaml")
    typo["spec"]["pollingIntervall"] = 5
    with pytest.raises(ApiError) as e:
        kube.seed(typo)
    assert e.value.code == 400


def test_example_scaled_objects_point_at_our_endpoints() -> None:
    from autoscaler.actuators.keda_grpc import TARGET_KEY

    api = example("keda-metrics-api.yaml")
    (trigger,) = api["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "metrics-api" and trigger["metricType"] == "AverageValue"
    assert meta["valueLocation"] == "desiredReplicas" and meta["targetValue"] == "1"
    assert meta["url"].endswith("/keda/metrics/llm/chat")
    assert meta["url"].startswith("http://kserve-autoscaler.kserve-autoscaler.svc:8080/")
    assert "fallback" in api["spec"]
    push = example("keda-external-push.yaml")
    (trigger,) = push["spec"]["triggers"]
    assert trigger["type"] == "external-push"
    assert trigger["metadata"]["scalerAddress"] == "kserve-autoscaler.kserve-autoscaler.svc:9090"
    assert trigger["metadata"][TARGET_KEY] == "ml/iris"
    assert push["spec"]["minReplicaCount"] == 0
    for doc in (api, push):
        behavior = doc["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleUp"]["tolerance"] == behavior["scaleDown"]["tolerance"] == "0"


async def test_the_policy_actuation_block_drives_owned_bounds(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, board: PublishedDecisions
) -> None:
    from autoscaler.config import parse_policy

    doc = parse_policy(
        """
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {name: k}
spec:
  targets:
    - name: chat
      namespace: llm
      policy: {name: queue, params: {targetPerReplica: 2}}
      actuation:
        engine: keda
        keda: {owned: true, minReplicaCount: 2, maxReplicaCount: 12}
"""
    )
    kube.seed(scaled_object(minReplicaCount=1, maxReplicaCount=10))
    keda = actuator(api, clock, board, resync_seconds=300)
    out = await keda.apply(chat(), decision(4), doc.spec.targets[0].actuation)
    assert out.applied and out.wrote
    spec = so(kube)["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 12)
    # Without ownership the same block serves the signal and writes nothing.
    kube.seed(scaled_object(minReplicaCount=1, maxReplicaCount=10))
    unowned = doc.spec.targets[0].actuation.model_copy(
        update={"keda": doc.spec.targets[0].actuation.keda.model_copy(update={"owned": False})}  # type: ignore[union-attr]
    )
    out = await actuator(api, clock, board).apply(chat(), decision(4), unowned)
    assert out.applied and not out.wrote
