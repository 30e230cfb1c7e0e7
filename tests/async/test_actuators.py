"""The actuators against the fake Kubernetes API server, with the real CRD schemas and object
shapes: Knative Service, Revision and PodAutoscaler; KServe InferenceService serverless and raw;
a Deployment. Time is virtual: backoff, Retry-After and the rate limit wait on a VirtualClock
that the test advances (``drive``), never in real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import pytest
from kubernetes_asyncio.client import ApiClient, ApiException

from autoscaler.actuators import (
    ApiCaller,
    DeploymentActuator,
    EventRecorder,
    KnativeActuator,
    KServeActuator,
    RetryPolicy,
    TokenBucket,
    WritingActuator,
    build_actuator,
)
from autoscaler.actuators.base import VERIFY_EVERY_SECONDS
from autoscaler.actuators.calls import CallFailed
from autoscaler.actuators.knative import (
    format_target,
    parse_knative_version,
    scale_annotations,
    serving_revision,
)
from autoscaler.config.models import Actuation
from autoscaler.core.errors import ConflictError
from autoscaler.core.protocols import ActuationOutcome
from autoscaler.core.types import Decision, GuardAction, TargetRef
from autoscaler.testing.clock import VirtualClock
from autoscaler.testing.fake_kube import FakeKube, shared_crd_dir

CRDS = shared_crd_dir()
pytestmark = pytest.mark.skipif(CRDS is None, reason="../shared/crds is not there")

T = TypeVar("T")
NS = "ml"
MIN = "autoscaling.knative.dev/min-scale"
MAX = "autoscaling.knative.dev/max-scale"
TARGET = "autoscaling.knative.dev/target"
MERGE = "application/merge-patch+json"
KN = ("serving.knative.dev", "v1")
PA_GROUP = "autoscaling.internal.knative.dev"
KSERVE = "serving.kserve.io"


# --- fixtures and builders -------------------------------------------------------------------


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
async def kube(clock: VirtualClock) -> AsyncIterator[FakeKube]:
    async with FakeKube(clock=clock, crd_dir=CRDS) as server:
        yield server


@pytest.fixture
async def api(kube: FakeKube) -> AsyncIterator[ApiClient]:
    async with kube.api_client() as client:
        yield client


def caller_for(
    clock: VirtualClock, *, rate: float = 1000.0, burst: int = 1000, **retry: Any
) -> ApiCaller:
    return ApiCaller(
        clock,
        limiter=TokenBucket(clock, rate=rate, burst=burst),
        retry=RetryPolicy(**retry),
        rng=random.Random(7),
    )


def knative(
    api: ApiClient, clock: VirtualClock, version: str = "1.21", **kw: Any
) -> KnativeActuator:
    kw.setdefault("caller", caller_for(clock))
    return KnativeActuator(api, clock, knative_version=version, **kw)


def decision(
    replicas: int,
    target: str = f"{NS}/iris",
    *,
    inputs: Mapping[str, float] | None = None,
    guards: tuple[GuardAction, ...] = (),
) -> Decision:
    return Decision(
        target=target,
        ts=1_700_000_000.0,
        policy="queue",
        current=1,
        ready=1,
        starting=0,
        proposal=replicas,
        replicas=replicas,
        token_rate=None,
        token_rate_per_replica=None,
        reason="requests_waiting 12 / 4 per replica",
        signals_ok=True,
        inputs=dict(inputs or {}),
        guards=guards,
    )


def mode(m: str, **kw: Any) -> Actuation:
    return Actuation(mode=m, **kw)


def ksvc(name: str = "iris", latest: str | None = "iris-00001") -> dict[str, Any]:
    status: dict[str, Any] = {"observedGeneration": 1}
    if latest:
        status |= {"latestReadyRevisionName": latest, "latestCreatedRevisionName": latest}
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "template": {
                "metadata": {"annotations": {MIN: "1", MAX: "10"}},
                "spec": {"containers": [{"image": "kserve/sklearnserver:v0.14"}]},
            }
        },
        "status": status,
    }


def revision(
    name: str = "iris-00001",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    service = name.rsplit("-", 1)[0]
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": dict(
                labels
                if labels is not None
                else {
                    "serving.knative.dev/service": service,
                    "serving.knative.dev/configuration": service,
                    "serving.knative.dev/configurationGeneration": name.rsplit("-", 1)[1],
                }
            ),
            "annotations": dict(
                annotations
                if annotations is not None
                else {
                    MIN: "1",
                    MAX: "10",
                    "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
                    "serving.knative.dev/creator": "alice@example.com",
                }
            ),
        },
        "spec": {
            "containerConcurrency": 0,
            "containers": [{"image": "kserve/sklearnserver:v0.14"}],
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}], "actualReplicas": 1},
    }


def podautoscaler(name: str = "iris-00001", annotations: Mapping[str, str] | None = None) -> Any:
    return {
        "apiVersion": f"{PA_GROUP}/v1alpha1",
        "kind": "PodAutoscaler",
        "metadata": {
            "name": name,
            "namespace": NS,
            "annotations": dict(annotations if annotations is not None else {MIN: "1", MAX: "10"}),
        },
        "spec": {
            "protocolType": "http1",
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        },
    }


def isvc(
    name: str = "iris",
    *,
    deployment_mode: str = "RawDeployment",
    autoscaler_class: str | None = None,
    latest: str | None = None,
    **predictor: Any,
) -> dict[str, Any]:
    annotations = {"serving.kserve.io/deploymentMode": deployment_mode}
    if autoscaler_class:
        annotations["serving.kserve.io/autoscalerClass"] = autoscaler_class
    status: dict[str, Any] = {"deploymentMode": deployment_mode}
    if latest:
        status["components"] = {"predictor": {"latestReadyRevision": latest}}
    return {
        "apiVersion": f"{KSERVE}/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}}, **predictor}},
        "status": status,
    }


def deployment(name: str = "raw", replicas: int = 2, owner: str | None = None) -> Any:
    labels = {"app": name}
    meta: dict[str, Any] = {"name": name, "namespace": NS}
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": f"{KSERVE}/v1beta1",
                "kind": "InferenceService",
                "name": owner,
                "uid": "0000-1111",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "img:1"}]},
            },
        },
    }


def rev_obj(kube: FakeKube, name: str = "iris-00001") -> dict[str, Any]:
    obj = kube.object(*KN[:1], "revisions", NS, name)
    assert obj is not None
    return obj


def annotations_of(obj: dict[str, Any] | None) -> dict[str, str]:
    assert obj is not None
    return dict(obj["metadata"].get("annotations") or {})


def rv(obj: dict[str, Any] | None) -> str:
    assert obj is not None
    return str(obj["metadata"]["resourceVersion"])


def events(kube: FakeKube) -> list[dict[str, Any]]:
    return kube.objects("", "events", NS)


def plural(path: str) -> str:
    return path.split("/namespaces/")[1].split("/")[1]


def writes(kube: FakeKube) -> list[Any]:
    return [r for r in kube.requests if r.verb in ("patch", "update", "create", "delete")]


def patches(kube: FakeKube, plural: str = "") -> list[Any]:
    return [r for r in kube.requests if r.verb == "patch" and (not plural or plural in r.path)]


async def drive(clock: VirtualClock, work: Awaitable[T]) -> T:
    """Await ``work``; whenever it parks in the virtual clock (backoff, Retry-After, the rate
    limit), advance the clock by what it asked for. No real time passes."""
    task = asyncio.ensure_future(work)
    while not task.done():
        parked = asyncio.ensure_future(clock.sleeping(1))
        await asyncio.wait({task, parked}, return_when=asyncio.FIRST_COMPLETED)
        if parked.done():
            clock.advance(clock.slept[-1])
        else:
            parked.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await parked
    return task.result()


def after_each(
    kube: FakeKube, verb: str, plural: str, action: Callable[[], None], times: int = 1
) -> asyncio.Future[None]:
    """Run ``action`` right after the server answers a matching request, before the client
    reads that answer: a concurrent writer slipping in between our read and our write.
    ``times`` answers get it (then the returned future resolves)."""
    done = 0

    def hook() -> bool:
        nonlocal done
        seen = sum(1 for r in kube.requests if r.verb == verb and f"/{plural}/" in r.path)
        while done < min(seen, times):
            done += 1
            action()
        return done >= times

    return asyncio.ensure_future(kube.until(hook))


def someone_else_annotates(
    kube: FakeKube, group: str, plural: str, name: str
) -> Callable[[], None]:
    def action() -> None:
        def change(obj: dict[str, Any]) -> None:
            anns = obj["metadata"].setdefault("annotations", {})
            anns["example.com/touched"] = str(int(anns.get("example.com/touched", "0")) + 1)

        kube.write(group, plural, NS, name, change)

    return action


async def seed_knative(kube: FakeKube, *, pa: bool = False) -> None:
    kube.seed(ksvc())
    kube.seed(revision())
    if pa:
        kube.seed(podautoscaler())


def iris() -> TargetRef:
    return TargetRef("Service", NS, "iris")


# --- Knative: modes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("m", "replicas", "inputs", "expected"),
    [
        ("pin", 3, {}, {MIN: "3", MAX: "3"}),
        ("floor", 3, {}, {MIN: "3", MAX: "10"}),
        ("floor", 12, {}, {MIN: "12", MAX: "12"}),  # min > max would be rejected: max raised
        ("target", 3, {"target_per_pod": 2.5}, {MIN: "3", MAX: "10", TARGET: "2.5"}),
        ("target", 3, {}, {MIN: "3", MAX: "10"}),
        ("pin", 0, {}, {MIN: "0", MAX: "10"}),  # max-scale 0 would mean unlimited: left alone
        ("floor", 0, {}, {MIN: "0", MAX: "10"}),
    ],
)
async def test_knative_modes_write_revision_annotations(
    kube: FakeKube,
    api: ApiClient,
    clock: VirtualClock,
    m: str,
    replicas: int,
    inputs: dict[str, float],
    expected: dict[str, str],
) -> None:
    await seed_knative(kube)
    service_rv = rv(kube.object(KN[0], "services", NS, "iris"))
    out = await knative(api, clock).apply(iris(), decision(replicas, inputs=inputs), mode(m))
    assert out.applied and out.wrote and out.error is None
    got = annotations_of(rev_obj(kube))
    assert {k: got.get(k) for k in expected} == expected
    assert got.get(TARGET) == expected.get(TARGET)
    # never the Service: its template would roll a new revision
    assert rv(kube.object(KN[0], "services", NS, "iris")) == service_rv
    assert [plural(r.path) for r in writes(kube)] == ["revisions", "events"]
    assert out.changes[f"Revision/iris-00001:{MIN}"] == ("1", str(replicas))


async def test_knative_no_write_when_the_revision_already_holds_the_values(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    await seed_knative(kube)
    act = knative(api, clock)
    first = await act.apply(iris(), decision(3), mode("pin"))
    assert first.wrote
    before, n_events, n_requests = rv(rev_obj(kube)), len(events(kube)), len(kube.requests)
    again = await act.apply(iris(), decision(3), mode("pin"))
    assert again.applied and not again.wrote and again.changes == {}
    assert rv(rev_obj(kube)) == before
    assert len(events(kube)) == n_events
    assert [r.verb for r in kube.requests[n_requests:]] == ["get", "get"]  # service, revision


async def test_knative_merge_patch_touches_only_our_annotations(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    await seed_knative(kube)
    await knative(api, clock).apply(iris(), decision(4), mode("pin"))
    got = rev_obj(kube)
    assert got["metadata"]["annotations"] == {
        MIN: "4",
        MAX: "4",
        "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
        "serving.knative.dev/creator": "alice@example.com",
    }
    assert got["metadata"]["labels"]["serving.knative.dev/service"] == "iris"
    assert got["spec"]["containers"] == [{"image": "kserve/sklearnserver:v0.14"}]
    (patch,) = patches(kube, "revisions")
    assert patch.content_type == MERGE
    assert patch.query.get("fieldManager") == "kserve-autoscaler"
    assert patch.body == {
        "metadata": {
            "annotations": {MIN: "4", MAX: "4"},
            "resourceVersion": patch.body["metadata"]["resourceVersion"],
        }
    }


async def test_knative_camel_case_alias_is_replaced(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    kube.seed(ksvc())
    kube.seed(revision(annotations={"autoscaling.knative.dev/minScale": "2"}))
    act = knative(api, clock)
    assert not (await act.apply(iris(), decision(2), mode("floor"))).wrote  # alias holds 2
    out = await act.apply(iris(), decision(5), mode("floor"))
    assert out.wrote
    assert annotations_of(rev_obj(kube)) == {MIN: "5"}


async def test_serverless_inference_service_targets_the_predictor_revision(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    labels = {
        "serving.knative.dev/service": "iris-predictor",
        "serving.kserve.io/inferenceservice": "iris",
        "component": "predictor",
    }
    kube.seed(isvc(deployment_mode="Serverless", latest="iris-predictor-00002", minReplicas=1))
    kube.seed(ksvc("iris-predictor", latest="iris-predictor-00002"))
    kube.seed(revision("iris-predictor-00001", labels=labels))
    kube.seed(revision("iris-predictor-00002", labels=labels))
    isvc_rv = rv(kube.object(KSERVE, "inferenceservices", NS, "iris"))
    ksvc_rv = rv(kube.object(KN[0], "services", NS, "iris-predictor"))
    old_rv = rv(rev_obj(kube, "iris-predictor-00001"))
    target = TargetRef("InferenceService", NS, "iris")
    out = await knative(api, clock).apply(target, decision(2), mode("pin"))
    assert out.applied and out.wrote, out
    assert annotations_of(rev_obj(kube, "iris-predictor-00002"))[MIN] == "2"
    assert rv(rev_obj(kube, "iris-predictor-00001")) == old_rv
    assert rv(kube.object(KSERVE, "inferenceservices", NS, "iris")) == isvc_rv
    assert rv(kube.object(KN[0], "services", NS, "iris-predictor")) == ksvc_rv


async def test_a_new_revision_is_followed(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    await seed_knative(kube)
    act = knative(api, clock)
    await act.apply(iris(), decision(3), mode("pin"))
    assert act.revisions["ml/iris"] == "iris-00001"
    # a template change rolled out: Knative created iris-00002 (from the template's values)
    kube.seed(revision("iris-00002"))
    old_rv = rv(rev_obj(kube))

    def ready(obj: dict[str, Any]) -> None:
        obj["status"]["latestReadyRevisionName"] = "iris-00002"

    kube.write(KN[0], "services", NS, "iris", ready)
    out = await act.apply(iris(), decision(3), mode("pin"))
    assert out.wrote and "new revision iris-00002 (was iris-00001)" in out.detail
    assert annotations_of(rev_obj(kube, "iris-00002"))[MIN] == "3"
    assert rv(rev_obj(kube)) == old_rv
    assert act.revisions["ml/iris"] == "iris-00002"


async def test_a_canary_in_progress_leaves_the_decision_on_the_stable_revision(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    # A rollout shifted 10% to iris-00002, the latest ready revision: its min-scale is the
    # rollout's pre-scale (docs/rollouts.md), and the target-wide decision goes to iris-00001,
    # which serves 90%. At 50/50 and after promotion the decision follows the new revision.
    await seed_knative(kube)
    kube.seed(revision("iris-00002"))
    act = knative(api, clock)

    def split(canary: int) -> Any:
        def edit(obj: dict[str, Any]) -> None:
            obj["status"]["latestReadyRevisionName"] = "iris-00002"
            obj["status"]["traffic"] = [
                {"revisionName": "iris-00001", "percent": 100 - canary, "tag": "stable"},
                {"revisionName": "iris-00002", "percent": canary, "tag": "canary"},
            ]

        return edit

    kube.write(KN[0], "services", NS, "iris", split(10))
    canary_rv = rv(rev_obj(kube, "iris-00002"))
    out = await act.apply(iris(), decision(4), mode("floor"))
    assert out.wrote, out
    assert annotations_of(rev_obj(kube, "iris-00001"))[MIN] == "4"
    assert rv(rev_obj(kube, "iris-00002")) == canary_rv
    kube.write(KN[0], "services", NS, "iris", split(50))
    out = await act.apply(iris(), decision(5), mode("floor"))
    assert annotations_of(rev_obj(kube, "iris-00002"))[MIN] == "5"
    assert "new revision iris-00002 (was iris-00001)" in out.detail


def test_serving_revision_picks_the_most_traffic_and_prefers_latest_on_ties() -> None:
    two = [{"revisionName": "a", "percent": 70}, {"revisionName": "b", "percent": 30}]
    assert serving_revision(two, "b") == "a"
    assert serving_revision([two[0], {"revisionName": "b", "percent": 70}], "b") == "b"
    # Entries for one revision add up (a tagged entry and the main route, say).
    tagged = [{"revisionName": "b", "percent": 40}, {"revisionName": "b", "percent": 20}]
    assert serving_revision([*tagged, {"revisionName": "a", "percent": 40}], "a") == "b"
    # No traffic block (or garbage in it): the latest ready revision, as before.
    assert serving_revision(None, "b") == "b"
    assert serving_revision([{"percent": 100}, "x"], "b") == "b"
    assert serving_revision([], None) is None


async def test_a_decision_found_in_place_is_trusted_for_verify_every(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    # The control loop asks ``settled`` first: within verify_every of finding the same decision
    # in place, no read; a new decision, an expired verification, a failure or a forgotten
    # target go back to the API.
    await seed_knative(kube)
    act = knative(api, clock, verify_every=120.0)
    target, floor = iris(), mode("floor")
    assert act.settled(target, decision(3), floor) is None  # nothing known yet
    assert (await act.apply(target, decision(3), floor)).wrote
    reads = len(kube.requests)
    clock.advance(119.0)
    done = act.settled(target, decision(3), floor)
    assert done is not None and done.applied and not done.wrote
    assert done.detail == "holds the decided values (verified 119s ago)"
    assert len(kube.requests) == reads
    assert act.settled(target, decision(4), floor) is None  # a different decision
    assert act.settled(target, decision(3), mode("pin")) is None  # a different mode
    clock.advance(1.0)
    assert act.settled(target, decision(3), floor) is None  # verification expired
    # Re-verified by a read that finds the values in place (no write): trusted again.
    out = await act.apply(target, decision(3), floor)
    assert out.applied and not out.wrote
    assert act.settled(target, decision(3), floor) is not None
    # Someone deleted the revision: the failure drops the trust at once.
    kube.write(KN[0], "services", NS, "iris", lambda o: o["status"].pop("latestReadyRevisionName"))
    assert not (await act.apply(target, decision(3), floor)).applied
    assert act.settled(target, decision(3), floor) is None
    act.forget(target)
    # The default for the Knative and KServe actuators; the base class reads every time.
    assert knative(api, clock).verify_every == VERIFY_EVERY_SECONDS == 120.0


async def test_old_knative_writes_the_podautoscaler(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    await seed_knative(kube, pa=True)
    rev_rv = rv(rev_obj(kube))
    out = await knative(api, clock, version="v1.20.2").apply(iris(), decision(3), mode("pin"))
    assert out.wrote
    pa = kube.object(PA_GROUP, "podautoscalers", NS, "iris-00001")
    assert annotations_of(pa) == {MIN: "3", MAX: "3"}
    assert rv(rev_obj(kube)) == rev_rv
    (event,) = events(kube)
    assert event["involvedObject"]["kind"] == "PodAutoscaler"


async def test_auto_version_writes_revision_and_podautoscaler(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    await seed_knative(kube, pa=True)
    out = await knative(api, clock, version="auto").apply(iris(), decision(3), mode("floor"))
    assert out.wrote
    assert annotations_of(rev_obj(kube))[MIN] == "3"
    assert annotations_of(kube.object(PA_GROUP, "podautoscalers", NS, "iris-00001"))[MIN] == "3"
    assert sorted(e["involvedObject"]["kind"] for e in events(kube)) == [
        "PodAutoscaler",
        "Revision",
    ]


async def test_auto_version_without_podautoscaler_writes_the_revision(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    await seed_knative(kube)
    out = await knative(api, clock, version="auto").apply(iris(), decision(3), mode("floor"))
    assert out.applied and out.wrote and "no PodAutoscaler iris-00001" in out.detail


async def test_knative_refusals(kube: FakeKube, api: ApiClient, clock: VirtualClock) -> None:
    act = knative(api, clock)
    kube.seed(ksvc(latest=None))
    out = await act.apply(iris(), decision(3), mode("pin"))
    assert (out.applied, out.error) == (False, "no_revision")
    kube.seed(ksvc("other", latest="iris-00001"))
    kube.seed(revision())
    out = await act.apply(TargetRef("Service", NS, "other"), decision(3), mode("pin"))
    assert out.error == "no_revision" and "labelled" in out.detail
    kube.seed(isvc("raw"))
    out = await act.apply(TargetRef("InferenceService", NS, "raw"), decision(3), mode("pin"))
    assert out.error == "unsupported"
    out = await act.apply(TargetRef("Deployment", NS, "raw"), decision(3), mode("pin"))
    assert out.error == "unsupported"
    out = await act.apply(TargetRef("Service", NS, "missing"), decision(3), mode("pin"))
    assert out.error == "not_found"
    out = await act.apply(iris(), decision(-1), mode("pin"))
    assert out.error == "invalid"
    assert writes(kube) == []


# --- KServe raw deployment ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "m", "replicas", "inputs", "expected"),
    [
        (None, "pin", 4, {}, {"minReplicas": 4, "maxReplicas": 4}),
        ("hpa", "floor", 4, {}, {"minReplicas": 4, "maxReplicas": 10}),
        ("hpa", "floor", 12, {}, {"minReplicas": 12, "maxReplicas": 12}),
        ("keda", "target", 2, {"target_per_pod": 7.6}, {"minReplicas": 2, "scaleTarget": 8}),
        ("keda", "pin", 0, {}, {"minReplicas": 0, "maxReplicas": 10}),
        ("none", "floor", 3, {}, {"minReplicas": 3, "maxReplicas": 3}),
        ("external", "target", 5, {"target_per_pod": 3}, {"minReplicas": 5, "maxReplicas": 5}),
    ],
)
async def test_kserve_raw_modes_and_classes(
    kube: FakeKube,
    api: ApiClient,
    clock: VirtualClock,
    cls: str | None,
    m: str,
    replicas: int,
    inputs: dict[str, float],
    expected: dict[str, int],
) -> None:
    kube.seed(isvc(autoscaler_class=cls, minReplicas=1, maxReplicas=10, scaleMetric="concurrency"))
    act = KServeActuator(api, clock, caller=caller_for(clock))
    target = TargetRef("InferenceService", NS, "iris")
    out = await act.apply(target, decision(replicas, inputs=inputs), mode(m))
    assert out.applied and out.wrote, out
    predictor = kube.object(KSERVE, "inferenceservices", NS, "iris")["spec"]["predictor"]  # type: ignore[index]
    assert {k: predictor.get(k) for k in expected} == expected
    assert predictor["model"] == {"modelFormat": {"name": "sklearn"}}
    assert predictor["scaleMetric"] == "concurrency"
    (patch,) = patches(kube, "inferenceservices")
    assert patch.content_type == MERGE and patch.query.get("fieldManager") == "kserve-autoscaler"
    assert set(patch.body["spec"]["predictor"]) <= {"minReplicas", "maxReplicas", "scaleTarget"}
    again = await act.apply(target, decision(replicas, inputs=inputs), mode(m))
    assert again.applied and not again.wrote


async def test_kserve_never_touches_the_scaled_object_it_owns(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    made = kube.seed(isvc(autoscaler_class="keda", minReplicas=1, maxReplicas=4))
    kube.seed(
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {
                "name": "iris-predictor",
                "namespace": NS,
                "ownerReferences": [
                    {
                        "apiVersion": f"{KSERVE}/v1beta1",
                        "kind": "InferenceService",
                        "name": "iris",
                        "uid": made["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {
                "scaleTargetRef": {"name": "iris-predictor"},
                "minReplicaCount": 1,
                "maxReplicaCount": 4,
                "triggers": [{"type": "prometheus", "metadata": {"query": "x", "threshold": "1"}}],
            },
        }
    )
    so_rv = rv(kube.object("keda.sh", "scaledobjects", NS, "iris-predictor"))
    act = KServeActuator(api, clock, caller=caller_for(clock))
    out = await act.apply(TargetRef("InferenceService", NS, "iris"), decision(3), mode("pin"))
    assert out.wrote
    assert rv(kube.object("keda.sh", "scaledobjects", NS, "iris-predictor")) == so_rv
    assert not [r for r in kube.requests if "scaledobjects" in r.path]


async def test_kserve_refuses_serverless_and_unknown_classes(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    kube.seed(isvc("sl", deployment_mode="Serverless", latest="sl-predictor-00001"))
    kube.seed(isvc("odd", autoscaler_class="kpa"))
    act = KServeActuator(api, clock, caller=caller_for(clock))
    out = await act.apply(TargetRef("InferenceService", NS, "sl"), decision(3), mode("pin"))
    assert out.error == "unsupported" and "engine knative" in out.detail
    out = await act.apply(TargetRef("InferenceService", NS, "odd"), decision(3), mode("pin"))
    assert out.error == "unsupported"
    assert writes(kube) == []


async def test_422_from_the_schema_is_invalid_and_not_retried(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    kube.seed(isvc(minReplicas=1, maxReplicas=4))

    def corrupt(obj: dict[str, Any]) -> None:  # stored before a stricter CRD, say
        obj["spec"]["predictor"]["scaleMetric"] = "gpu"

    kube.write(KSERVE, "inferenceservices", NS, "iris", corrupt)
    act = KServeActuator(api, clock, caller=caller_for(clock))
    out = await act.apply(TargetRef("InferenceService", NS, "iris"), decision(3), mode("pin"))
    assert (out.applied, out.wrote, out.error) == (False, False, "invalid")
    assert "scaleMetric" in out.detail
    assert len(patches(kube)) == 1 and clock.slept == []


# --- Deployment ---------------------------------------------------------------------------------


async def test_deployment_scale_subresource(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    kube.seed(deployment(replicas=2))
    act = DeploymentActuator(api, clock, caller=caller_for(clock))
    target = TargetRef("Deployment", NS, "raw")
    for m in ("pin", "floor", "target"):
        out = await act.apply(target, decision(5), mode(m))
        assert out.applied
    dep = kube.object("apps", "deployments", NS, "raw")
    assert dep is not None and dep["spec"]["replicas"] == 5
    (patch,) = patches(kube, "deployments")
    assert patch.path.endswith("/deployments/raw/scale") and patch.content_type == MERGE
    assert patch.body["spec"] == {"replicas": 5}
    assert patch.query.get("fieldManager") == "kserve-autoscaler"
    (event,) = events(kube)
    assert event["involvedObject"]["kind"] == "Deployment"
    assert event["message"].startswith("spec.replicas 2 -> 5 for Deployment/ml/raw")
    out = await act.apply(target, decision(0), mode("pin"))
    assert out.wrote and kube.object("apps", "deployments", NS, "raw")["spec"]["replicas"] == 0  # type: ignore[index]


async def test_deployment_owned_by_another_controller_is_refused(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    kube.seed(deployment("iris-predictor", owner="iris"))
    target = TargetRef("Deployment", NS, "iris-predictor")
    act = DeploymentActuator(api, clock, caller=caller_for(clock))
    out = await act.apply(target, decision(5), mode("pin"))
    assert out.error == "owned_elsewhere" and "InferenceService iris" in out.detail
    assert writes(kube) == []
    forced = DeploymentActuator(api, clock, caller=caller_for(clock), allow_owned=True)
    assert (await forced.apply(target, decision(5), mode("pin"))).wrote


# --- the write discipline: conflicts, outages, rate limits, RBAC ------------------------------


async def test_409_under_a_concurrent_writer_is_retried_on_fresh_state(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    await seed_knative(kube)
    hook = after_each(
        kube, "get", "revisions", someone_else_annotates(kube, *KN[:1], "revisions", "iris-00001")
    )
    out = await knative(api, clock).apply(iris(), decision(3), mode("pin"))
    await hook
    assert out.applied and out.wrote, out
    assert [r.status for r in patches(kube, "revisions")] == [409, 200]
    got = annotations_of(rev_obj(kube))
    assert got[MIN] == "3" and got["example.com/touched"] == "1"  # theirs kept, ours applied
    assert len(events(kube)) == 1


async def test_409_every_time_gives_up_after_the_bounded_rounds(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    await seed_knative(kube)
    hook = after_each(
        kube,
        "get",
        "revisions",
        someone_else_annotates(kube, *KN[:1], "revisions", "iris-00001"),
        times=100,
    )
    act = knative(api, clock, caller=caller_for(clock, conflict_attempts=3))
    out = await act.apply(iris(), decision(3), mode("pin"))
    hook.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await hook
    assert (out.applied, out.error) == (False, "conflict")
    assert [r.status for r in patches(kube, "revisions")] == [409, 409, 409]
    assert annotations_of(rev_obj(kube))[MIN] == "1" and events(kube) == []


async def test_api_outage_mid_write_backs_off_then_succeeds(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    await seed_knative(kube)
    kube.fail_next(2, 500, verb="patch")
    act = knative(api, clock, caller=caller_for(clock, backoff_base=0.5, backoff_cap=4.0))
    out = await drive(clock, act.apply(iris(), decision(3), mode("pin")))
    assert out.applied and out.wrote
    assert [r.status for r in patches(kube, "revisions")] == [500, 500, 200]
    assert len(clock.slept) == 2
    assert 0 <= clock.slept[0] <= 0.5 and 0 <= clock.slept[1] <= 1.0  # full jitter, doubling
    assert act.caller.retried["transient"] == 2


async def test_api_outage_that_persists_is_reported_not_applied(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    await seed_knative(kube)
    kube.fail_next(100, 503, verb="patch")
    act = knative(api, clock)
    out = await drive(clock, act.apply(iris(), decision(3), mode("pin")))
    assert (out.applied, out.wrote, out.error) == (False, False, "transient")
    assert len(patches(kube, "revisions")) == act.caller.retry.attempts == 3
    assert annotations_of(rev_obj(kube))[MIN] == "1" and events(kube) == []


async def test_connection_cut_on_read_is_retried(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    await seed_knative(kube)
    # aiohttp itself retries once on a reused connection the server dropped; the rest is ours
    kube.fail_next(2, None, verb="get", resource="services")
    act = knative(api, clock)
    out = await drive(clock, act.apply(iris(), decision(3), mode("pin")))
    assert out.applied and out.wrote
    assert act.caller.retried["transient"] >= 1 and len(clock.slept) >= 1


async def test_429_retry_after_is_honoured(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    await seed_knative(kube)
    kube.fail_next(1, 429, verb="patch", retry_after=2)
    start = clock.now()
    act = knative(api, clock)
    out = await drive(clock, act.apply(iris(), decision(3), mode("pin")))
    assert out.applied and out.wrote
    assert clock.slept == [2.0] and clock.now() - start == 2.0
    assert act.caller.retried["rate_limited"] == 1


async def test_429_retry_after_beyond_the_bound_ends_the_attempts(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    await seed_knative(kube)
    kube.fail_next(1, 429, verb="patch", retry_after=60)
    out = await knative(api, clock).apply(iris(), decision(3), mode("pin"))
    assert (out.applied, out.error) == (False, "rate_limited")
    assert clock.slept == [] and len(patches(kube)) == 1


async def test_403_without_patch_permission_is_forbidden_and_not_retried(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    await seed_knative(kube)
    kube.allow(("get", KN[0], "services"), ("get", KN[0], "revisions"), ("create", "", "events"))
    out = await knative(api, clock).apply(iris(), decision(3), mode("pin"))
    assert (out.applied, out.wrote, out.error) == (False, False, "forbidden")
    assert [r.status for r in patches(kube)] == [403] and clock.slept == []
    assert 'cannot patch resource "revisions"' in out.detail


@pytest.mark.parametrize("flag", ["actuation", "actuator"])
async def test_dry_run_records_the_changes_and_writes_nothing(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, flag: str
) -> None:
    await seed_knative(kube)
    kube.seed(deployment(replicas=2))
    kube.seed(isvc("raw-isvc", minReplicas=1))
    before = kube.store.rv
    dry = flag == "actuator"
    actuation = mode("pin", dry_run=not dry)
    caller = caller_for(clock)
    outs = [
        await knative(api, clock, caller=caller, dry_run=dry).apply(iris(), decision(3), actuation),
        await KServeActuator(api, clock, caller=caller, dry_run=dry).apply(
            TargetRef("InferenceService", NS, "raw-isvc"), decision(3), actuation
        ),
        await DeploymentActuator(api, clock, caller=caller, dry_run=dry).apply(
            TargetRef("Deployment", NS, "raw"), decision(3), actuation
        ),
    ]
    assert writes(kube) == [] and events(kube) == []
    assert kube.store.rv == before  # no object anywhere changed
    for out in outs:
        assert out.dry_run and not out.applied and not out.wrote and out.error is None
        assert out.detail.startswith("would change")
    assert outs[0].changes == {
        f"Revision/iris-00001:{MIN}": ("1", "3"),
        f"Revision/iris-00001:{MAX}": ("10", "3"),
    }
    assert outs[1].changes == {
        "InferenceService/raw-isvc:spec.predictor.minReplicas": (1, 3),
        "InferenceService/raw-isvc:spec.predictor.maxReplicas": (None, 3),
    }
    assert outs[2].changes == {"Deployment/raw:spec.replicas": (2, 3)}


async def test_an_event_per_change_with_old_new_policy_and_why(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    await seed_knative(kube)
    guards = (GuardAction("bounds", 23, 16, "maxReplicas 16"),)
    act = knative(api, clock)
    await act.apply(iris(), decision(16, guards=guards), mode("pin"))
    await act.apply(iris(), decision(16, guards=guards), mode("pin"))  # equal: no event
    await act.apply(iris(), decision(12), mode("floor"))
    first, second = sorted(events(kube), key=lambda e: e["metadata"]["resourceVersion"])
    assert first["reason"] == "AutoscalerScaled" and first["type"] == "Normal"
    assert first["involvedObject"]["kind"] == "Revision"
    assert first["involvedObject"]["name"] == "iris-00001"
    assert first["involvedObject"]["uid"] == rev_obj(kube)["metadata"]["uid"]
    assert first["source"] == {"component": "kserve-autoscaler"}
    assert first["message"] == (
        "min-scale 1 -> 16, max-scale 10 -> 16 for Service/ml/iris (policy queue, mode pin): "
        "requests_waiting 12 / 4 per replica; guards: bounds 23 -> 16 (maxReplicas 16)"
    )
    assert second["message"].startswith("min-scale 16 -> 12 for Service/ml/iris")


async def test_a_failed_event_does_not_fail_the_write(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    await seed_knative(kube)
    kube.allow(("get", KN[0], "*"), ("patch", KN[0], "revisions"))
    out = await knative(api, clock).apply(iris(), decision(3), mode("pin"))
    assert out.applied and out.wrote and out.error is None
    assert "event not recorded for Revision ml/iris-00001 (forbidden)" in out.detail


async def test_the_client_rate_limit_spaces_calls(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    await seed_knative(kube)
    kube.seed(deployment(replicas=2))
    granted: list[float] = []

    class Recording(TokenBucket):
        async def acquire(self) -> float:
            waited = await super().acquire()
            granted.append(clock.now())
            return waited

    caller = ApiCaller(clock, limiter=Recording(clock, rate=2.0, burst=2))
    kn = knative(api, clock, caller=caller)  # one limiter shared by both actuators
    dep = DeploymentActuator(api, clock, caller=caller)

    async def both() -> list[ActuationOutcome]:
        a = kn.apply(iris(), decision(3), mode("pin"))  # get, get, patch, event
        b = dep.apply(TargetRef("Deployment", NS, "raw"), decision(3), mode("pin"))  # 3 calls
        return list(await asyncio.gather(a, b))

    start = clock.now()
    outs = await drive(clock, both())
    assert all(o.applied and o.wrote for o in outs)
    assert caller.calls == len(kube.requests) == 7
    # two at once (the burst), then one every 0.5 s
    assert [t - start for t in granted] == [0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


async def test_token_bucket_refills_at_its_rate(clock: VirtualClock) -> None:
    bucket = TokenBucket(clock, rate=4.0, burst=2)
    waits = [await drive(clock, bucket.acquire()) for _ in range(4)]
    assert waits == [0.0, 0.0, 0.25, 0.25]
    clock.advance(10)  # idle: refills up to the burst only
    waits = [await drive(clock, bucket.acquire()) for _ in range(3)]
    assert waits == [0.0, 0.0, 0.25]


@pytest.mark.parametrize(
    ("engine", "target", "seed"),
    [
        ("knative", TargetRef("Service", NS, "iris"), "knative"),
        ("kserve", TargetRef("InferenceService", NS, "iris"), "isvc"),
        ("deployment", TargetRef("Deployment", NS, "raw"), "deployment"),
    ],
)
async def test_each_actuator_needs_only_its_declared_api_calls(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, engine: str, target: TargetRef, seed: str
) -> None:
    options: dict[str, Any] = {}
    if seed == "knative":
        await seed_knative(kube, pa=True)
        options["knative_version"] = "auto"  # the most calls: Revision and PodAutoscaler
    elif seed == "isvc":
        kube.seed(isvc(minReplicas=1))
    else:
        kube.seed(deployment())
    act = build_actuator(engine, api, clock, caller=caller_for(clock), **options)
    kube.allow(*act.api_calls)
    out = await act.apply(target, decision(3), mode("pin"))
    assert out.applied and out.wrote and "event not recorded" not in out.detail, out
    assert all(r.status < 400 for r in kube.requests)


# --- pieces -----------------------------------------------------------------------------------


async def test_build_actuator(api: ApiClient, clock: VirtualClock) -> None:
    caller = caller_for(clock)
    events_ = EventRecorder(api, caller, clock, instance="autoscaler-0")
    built = {
        e: build_actuator(e, api, clock, caller=caller, events=events_, dry_run=True)
        for e in ("knative", "kserve", "deployment")
    }
    assert {e: type(a) for e, a in built.items()} == {
        "knative": KnativeActuator,
        "kserve": KServeActuator,
        "deployment": DeploymentActuator,
    }
    assert all(
        isinstance(a, WritingActuator) and a.caller is caller and a.dry_run for a in built.values()
    )
    assert build_actuator("knative", api, clock, knative_version="1.20").version == (1, 20)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="no actuator for engine 'nope'"):
        build_actuator("nope", api, clock)


async def test_caller_classifies_and_retries(clock: VirtualClock) -> None:
    caller = caller_for(clock)
    calls = 0

    async def times_out() -> None:
        nonlocal calls
        calls += 1
        raise TimeoutError

    with pytest.raises(CallFailed) as failed:
        await drive(clock, caller("get x", times_out))
    assert failed.value.kind == "timeout" and calls == 3 and len(clock.slept) == 2

    async def conflict() -> None:
        raise ApiException(status=409, reason="Conflict")

    with pytest.raises(ConflictError):
        await caller("patch x", conflict)


def test_knative_annotation_arithmetic() -> None:
    notes: list[str] = []
    assert scale_annotations({MIN: "3", MAX: "3"}, 3, "pin", None, notes) == ()
    changes = scale_annotations({}, 2, "target", 0.001, notes)
    assert [(c.field, c.old, c.new) for c in changes] == [(MIN, None, "2")]
    assert notes == ["per-pod target 0.001 not written (must be >= 0.01)"]
    assert format_target(10.0) == "10" and format_target(2.5) == "2.5"
    assert format_target(0.3333) == "0.33"
    assert parse_knative_version("auto") is None
    assert parse_knative_version("knative-v1.21.0") == (1, 21)
    with pytest.raises(ValueError):
        parse_knative_version("latest")
