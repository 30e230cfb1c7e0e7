"""KubeStatusSource against the fake API server on 127.0.0.1, through kubernetes-asyncio.

The fake and the source share one VirtualClock: pod timestamps come from it, and the source's
backoff sleeps park on it until a test advances it, so nothing sleeps for real. Tests wait for
the source with ``source.wait_until`` (re-checked on every list, event and error) and for the
server with ``kube.until``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from kubernetes_asyncio.client import ApiClient, AppsV1Api, CoreV1Api

from autoscaler.core import signals as sig
from autoscaler.core.protocols import Source, SourceReport
from autoscaler.core.types import TargetRef
from autoscaler.sources.kube_status import (
    KNATIVE_SERVICE_LABEL,
    KSERVE_LABEL,
    KubeStatusSettings,
    KubeStatusSource,
    label_selector_string,
    matches,
    parse_time,
    pod_info,
    pod_selector,
    requirements,
)
from autoscaler.sources.pods import PodIndex
from autoscaler.testing.clock import VirtualClock
from autoscaler.testing.fake_kube import FakeKube

NOW = 1_700_000_000.0
CHAT = TargetRef("InferenceService", "llm", "chat")
SKLEARN = TargetRef("Service", "ml", "iris")
RAW = TargetRef("Deployment", "ml", "raw")
CHAT_LABELS = {KSERVE_LABEL: "chat", "component": "predictor"}
MERGE = "application/merge-patch+json"
SETTINGS = KubeStatusSettings(resync_seconds=300, backoff_initial_seconds=1, backoff_max_seconds=8)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(NOW)


@pytest.fixture
async def kube(clock: VirtualClock) -> AsyncIterator[FakeKube]:
    async with FakeKube(clock=clock) as server:
        yield server


@pytest.fixture
async def api(kube: FakeKube) -> AsyncIterator[ApiClient]:
    async with kube.api_client() as client:
        yield client


@pytest.fixture
def index() -> PodIndex:
    return PodIndex()


@pytest.fixture
async def source(
    api: ApiClient, clock: VirtualClock, index: PodIndex
) -> AsyncIterator[KubeStatusSource]:
    src = KubeStatusSource(api, clock, pod_index=index, settings=SETTINGS)
    yield src
    await src.close()


def values(report: SourceReport, target: TargetRef) -> dict[str, float]:
    return {o.signal: o.value for o in report.observations if o.target == target.key}


def status(report: SourceReport, target: TargetRef) -> tuple[float, float, float]:
    v = values(report, target)
    return v[sig.REPLICAS], v[sig.REPLICAS_READY], v[sig.REPLICAS_STARTING]


async def seen(
    source: KubeStatusSource, index: PodIndex, target: TargetRef, pred: Callable[..., bool]
) -> None:
    await source.wait_until(lambda: pred(index.pods(target.key)))


def deployment(name: str, labels: dict[str, str], replicas: int = 2) -> dict[str, object]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "sklearn"}]},
            },
        },
    }


# --- pure helpers -------------------------------------------------------------------------------


def test_parse_time_accepts_rfc3339_and_refuses_garbage() -> None:
    assert parse_time("2023-11-14T22:13:20Z") == NOW
    assert parse_time("2023-11-14T22:13:20.250000Z") == NOW + 0.25
    assert parse_time("2023-11-15T00:13:20+02:00") == NOW
    assert parse_time("2023-11-14T22:13:20") is None  # no zone: refuse to guess
    assert parse_time("yesterday") is None
    assert parse_time(None) is None


def test_pod_info_reads_ready_condition_times_and_deletion() -> None:
    info = pod_info(
        {
            "metadata": {
                "name": "p",
                "namespace": "llm",
                "creationTimestamp": "2023-11-14T22:13:20Z",
                "deletionTimestamp": "2023-11-14T22:20:00Z",
                "labels": {"a": "b"},
            },
            "status": {
                "podIP": "10.1.2.3",
                "startTime": "2023-11-14T22:13:25Z",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "lastTransitionTime": "2023-11-14T22:15:20Z",
                    }
                ],
            },
        }
    )
    assert (info.name, info.namespace, info.ip, info.ready) == ("p", "llm", "10.1.2.3", True)
    assert (info.created, info.started, info.ready_at) == (NOW, NOW + 5, NOW + 120)
    assert info.deleting and info.labels == {"a": "b"}
    cond = {"type": "Ready", "status": "False", "lastTransitionTime": "2023-11-14T22:15:20Z"}
    not_ready = pod_info({"metadata": {"name": "q"}, "status": {"conditions": [cond]}})
    assert not not_ready.ready and not_ready.ready_at is None and not_ready.ip is None


def test_selectors_per_target_kind() -> None:
    assert pod_selector(CHAT) == "component=predictor,serving.kserve.io/inferenceservice=chat"
    assert pod_selector(SKLEARN) == f"{KNATIVE_SERVICE_LABEL}=iris"
    assert pod_selector(RAW) is None  # read from the Deployment
    assert pod_selector(RAW, {"app": "x"}) == "app=x"
    sel = {
        "matchLabels": {"app": "raw"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["b", "a"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ],
    }
    assert label_selector_string(sel) == "app=raw,tier in (a,b),!canary"
    assert label_selector_string({}) is None
    with pytest.raises(ValueError):
        pod_selector(TargetRef("StatefulSet", "a", "b"))


def test_is_a_source(api: ApiClient, clock: VirtualClock) -> None:
    src: Source = KubeStatusSource(api, clock)
    assert src.name == "kube_status"


# --- pods through their life --------------------------------------------------------------------


async def test_pods_appear_become_ready_and_go(
    kube: FakeKube, source: KubeStatusSource, index: PodIndex, clock: VirtualClock, api: ApiClient
) -> None:
    kube.add_pod("llm", "chat-1", CHAT_LABELS)
    kube.add_pod("llm", "chat-transformer", {KSERVE_LABEL: "chat", "component": "transformer"})
    kube.add_pod("llm", "other", {KSERVE_LABEL: "code", "component": "predictor"})

    report = await source.collect([CHAT])  # the first collect waits for the initial list
    assert report.errors == {}
    assert status(report, CHAT) == (1, 0, 1)
    assert sig.COLD_START_SECONDS not in values(report, CHAT)
    assert {o.ts for o in report.observations} == {NOW}
    assert [p.name for p in index.pods(CHAT.key)] == ["chat-1"]
    assert index.ready_pods(CHAT.key) == ()

    clock.advance(30)
    kube.set_pod_status("llm", "chat-1", ready=False, ip="10.0.0.1")  # running, loading
    clock.advance(60)
    kube.set_pod_status("llm", "chat-1", ready=True, ip="10.0.0.1")
    await seen(source, index, CHAT, lambda pods: pods and pods[0].ready)
    report = await source.collect([CHAT])
    assert status(report, CHAT) == (1, 1, 0)
    assert values(report, CHAT)[sig.COLD_START_SECONDS] == 90
    assert {o.ts for o in report.observations} == {NOW + 90}
    assert [(p.name, p.ip) for p in index.ready_pods(CHAT.key)] == [("chat-1", "10.0.0.1")]

    # A second pod scales in; then the first is deleted: bound to a node, it terminates first.
    clock.advance(10)
    kube.add_pod("llm", "chat-2", CHAT_LABELS)
    await seen(source, index, CHAT, lambda pods: len(pods) == 2)
    assert status(await source.collect([CHAT]), CHAT) == (2, 1, 1)
    await CoreV1Api(api).delete_namespaced_pod("chat-1", "llm")
    await seen(source, index, CHAT, lambda pods: pods[0].deleting)
    report = await source.collect([CHAT])
    assert status(report, CHAT) == (1, 0, 1)  # terminating pods are not replicas
    assert index.ready_pods(CHAT.key) == ()  # nor scrape targets
    assert values(report, CHAT)[sig.COLD_START_SECONDS] == 90  # the latest measurement stays
    kube.remove("", "pods", "llm", "chat-1")  # the kubelet confirms
    await seen(source, index, CHAT, lambda pods: [p.name for p in pods] == ["chat-2"])
    assert status(await source.collect([CHAT]), CHAT) == (1, 0, 1)
    assert source.stats["lists"] == 1  # all of it through one watch


async def test_cold_start_is_measured_once_per_pod(
    kube: FakeKube, source: KubeStatusSource, index: PodIndex, clock: VirtualClock
) -> None:
    kube.add_pod("llm", "chat-1", CHAT_LABELS)
    await source.collect([CHAT])
    clock.advance(120)
    kube.set_pod_status("llm", "chat-1", ready=True, ip="10.0.0.1")
    await seen(source, index, CHAT, lambda pods: pods[0].ready)
    assert values(await source.collect([CHAT]), CHAT)[sig.COLD_START_SECONDS] == 120
    # A readiness flap an hour later is not a cold start of an hour.
    clock.advance(3600)
    kube.set_pod_status("llm", "chat-1", ready=False)
    await seen(source, index, CHAT, lambda pods: not pods[0].ready)
    clock.advance(5)
    kube.set_pod_status("llm", "chat-1", ready=True)
    await seen(source, index, CHAT, lambda pods: pods[0].ready)
    assert values(await source.collect([CHAT]), CHAT)[sig.COLD_START_SECONDS] == 120
    # A new pod measures again: the latest measurement wins.
    kube.add_pod("llm", "chat-2", CHAT_LABELS)
    clock.advance(45)
    kube.set_pod_status("llm", "chat-2", ready=True, ip="10.0.0.2")
    await seen(source, index, CHAT, lambda pods: all(p.ready for p in pods) and len(pods) == 2)
    assert values(await source.collect([CHAT]), CHAT)[sig.COLD_START_SECONDS] == 45


async def test_pods_already_ready_at_start_are_measured_and_terminal_pods_ignored(
    kube: FakeKube, source: KubeStatusSource, clock: VirtualClock
) -> None:
    kube.add_pod("llm", "chat-1", CHAT_LABELS)
    clock.advance(75)
    kube.set_pod_status("llm", "chat-1", ready=True, ip="10.0.0.1")
    kube.add_pod("llm", "chat-evicted", CHAT_LABELS)
    kube.set_pod_status("llm", "chat-evicted", ready=False, phase="Failed")
    clock.advance(1000)
    report = await source.collect([CHAT])
    assert status(report, CHAT) == (1, 1, 0)
    assert values(report, CHAT)[sig.COLD_START_SECONDS] == 75


async def test_an_unsupported_kind_is_reported_without_hiding_the_others(
    kube: FakeKube, source: KubeStatusSource
) -> None:
    odd = TargetRef("StatefulSet", "llm", "odd")
    kube.add_pod("llm", "chat-1", CHAT_LABELS)
    report = await source.collect([odd, CHAT])
    assert report.errors == {(odd.key, "unsupported"): 1}
    assert status(report, CHAT) == (1, 0, 1)


async def test_knative_service_target(kube: FakeKube, source: KubeStatusSource) -> None:
    labels = {KNATIVE_SERVICE_LABEL: "iris", "serving.knative.dev/revision": "iris-00001"}
    kube.add_pod("ml", "iris-00001-deployment-a", labels)
    kube.add_pod(
        "ml", "iris-00002-deployment-b", {**labels, "serving.knative.dev/revision": "iris-00002"}
    )
    kube.set_pod_status("ml", "iris-00001-deployment-a", ready=True, ip="10.0.1.1")
    report = await source.collect([SKLEARN])
    assert status(report, SKLEARN) == (2, 1, 1)  # pods of every revision


async def test_deployment_target_reads_spec_replicas_and_follows_scale(
    kube: FakeKube, source: KubeStatusSource, index: PodIndex, api: ApiClient
) -> None:
    kube.seed(deployment("raw", {"app": "raw"}, replicas=2))
    kube.add_pod("ml", "raw-a", {"app": "raw"})
    kube.set_pod_status("ml", "raw-a", ready=True, ip="10.0.2.1")
    kube.add_pod("ml", "unrelated", {"app": "other"})
    report = await source.collect([RAW])
    assert status(report, RAW) == (2, 1, 0)  # desired 2, one pod so far
    await AppsV1Api(api).patch_namespaced_deployment_scale("raw", "ml", {"spec": {"replicas": 5}})
    await source.wait_until(lambda: status(_sync_collect(source, RAW), RAW)[0] == 5)
    assert [p.name for p in index.pods(RAW.key)] == ["raw-a"]


def _sync_collect(source: KubeStatusSource, target: TargetRef) -> SourceReport:
    # What collect would report now, without awaiting (for wait_until predicates).
    report = SourceReport()
    source._targets[target].observe(source.clock.now(), report)
    return report


async def test_deployment_that_does_not_exist_is_missing_until_created(
    kube: FakeKube, source: KubeStatusSource
) -> None:
    report = await source.collect([RAW])
    assert report.observations == []
    assert report.errors == {(RAW.key, "not_found"): 1}
    kube.seed(deployment("raw", {"app": "raw"}, replicas=3))
    await source.wait_until(lambda: source._targets[RAW].healthy())
    report = await source.collect([RAW])
    assert status(report, RAW) == (3, 0, 0)
    assert report.errors == {}
    kube.remove("apps", "deployments", "ml", "raw")
    await source.wait_until(lambda: not source._targets[RAW].healthy())
    report = await source.collect([RAW])
    assert report.observations == [] and report.errors == {(RAW.key, "not_found"): 1}


async def test_pod_labels_override_the_default_selector(
    kube: FakeKube, api: ApiClient, clock: VirtualClock, index: PodIndex
) -> None:
    kube.add_pod("llm", "custom-1", {"app": "chat-vllm"})
    kube.add_pod("llm", "chat-1", CHAT_LABELS)
    src = KubeStatusSource(api, clock, pod_index=index, pod_labels={CHAT.key: {"app": "chat-vllm"}})
    try:
        report = await src.collect([CHAT])
        assert status(report, CHAT) == (1, 0, 1)
        assert [p.name for p in index.pods(CHAT.key)] == ["custom-1"]
    finally:
        await src.close()


# --- watch faults -------------------------------------------------------------------------------


async def test_dropped_watch_resumes_from_the_last_revision(
    kube: FakeKube, source: KubeStatusSource, index: PodIndex
) -> None:
    kube.add_pod("llm", "chat-1", CHAT_LABELS)
    await source.collect([CHAT])
    await kube.until(lambda: kube.watch_count("pods") == 1)
    assert kube.drop_watches(abort=True) == 1  # cut mid-event
    kube.add_pod("llm", "chat-2", CHAT_LABELS)  # written while no watch is open
    await seen(source, index, CHAT, lambda pods: len(pods) == 2)
    report = await source.collect([CHAT])
    assert status(report, CHAT) == (2, 0, 2)
    assert report.errors == {}
    assert source.stats["watch_drops"] == 1
    assert source.stats["lists"] == 1  # resumed, not relisted
    watches = [r for r in kube.requests if r.verb == "watch"]
    assert len(watches) == 2 and watches[1].query["resourceVersion"] != ""


async def test_clean_end_of_a_watch_is_resumed(kube: FakeKube, source: KubeStatusSource) -> None:
    await source.collect([CHAT])
    await kube.until(lambda: kube.watch_count("pods") == 1)
    kube.drop_watches(abort=False)  # as when the server's timeoutSeconds runs out
    await kube.until(lambda: len([r for r in kube.requests if r.verb == "watch"]) == 2)
    assert source.stats.get("watch_drops", 0) == 0 and source.stats["lists"] == 1


async def test_expired_revision_relists(
    kube: FakeKube, source: KubeStatusSource, index: PodIndex
) -> None:
    kube.add_pod("llm", "chat-1", CHAT_LABELS)
    await source.collect([CHAT])
    await kube.until(lambda: kube.watch_count("pods") == 1)
    kube.drop_watches()
    kube.remove("", "pods", "llm", "chat-1")
    kube.add_pod("llm", "chat-2", CHAT_LABELS)
    kube.compact()  # the revision the source holds is gone: its re-watch gets 410
    await seen(source, index, CHAT, lambda pods: [p.name for p in pods] == ["chat-2"])
    assert source.stats["expired"] == 1
    assert source.stats["lists"] == 2
    report = await source.collect([CHAT])
    assert status(report, CHAT) == (1, 0, 1) and report.errors == {}


async def test_periodic_resync_relists_a_healthy_watch(
    kube: FakeKube, source: KubeStatusSource, clock: VirtualClock
) -> None:
    kube.add_pod("llm", "chat-1", CHAT_LABELS)
    await source.collect([CHAT])
    await kube.until(lambda: kube.watch_count("pods") == 1)
    informer = source._targets[CHAT].pod_informer
    assert SETTINGS.resync_seconds <= informer.resync_after
    assert informer.resync_after <= SETTINGS.resync_seconds * (1 + SETTINGS.resync_jitter)
    clock.advance(informer.resync_after - 0.001)
    assert not informer.resync_due(clock.now())
    clock.advance(0.001)
    report = await source.collect([CHAT])  # due: closes the stream and relists
    assert status(report, CHAT) == (1, 0, 1)
    await source.wait_until(lambda: source.stats.get("relists", 0) == 1)
    await kube.until(lambda: kube.watch_count("pods") == 1)
    assert source.stats["lists"] == 2
    assert report.errors == {}


async def test_bookmarks_advance_the_resume_revision(
    kube: FakeKube, source: KubeStatusSource
) -> None:
    await source.collect([CHAT])
    await kube.until(lambda: kube.watch_count("pods") == 1)
    kube.seed(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "llm"}}
    )
    assert kube.bookmark() == 1
    rv = str(kube.store.rv)
    informer = source._targets[CHAT].pod_informer
    assert informer is not None
    await source.wait_until(lambda: informer.rv == rv)
    kube.drop_watches()
    await kube.until(lambda: len([r for r in kube.requests if r.verb == "watch"]) == 2)
    assert [r for r in kube.requests if r.verb == "watch"][1].query["resourceVersion"] == rv


# --- outages ------------------------------------------------------------------------------------


async def test_api_outage_is_missing_data_never_zero_and_recovers(
    kube: FakeKube, source: KubeStatusSource, clock: VirtualClock, index: PodIndex
) -> None:
    kube.add_pod("llm", "chat-1", CHAT_LABELS)
    kube.set_pod_status("llm", "chat-1", ready=True, ip="10.0.0.1")
    assert status(await source.collect([CHAT]), CHAT) == (1, 1, 0)
    await kube.until(lambda: kube.watch_count("pods") == 1)

    outage = kube.fail_next(10**6, 503)
    kube.drop_watches()
    await clock.sleeping(1)  # the re-watch failed; the source backs off on the clock
    report = await source.collect([CHAT])
    assert values(report, CHAT) == {}  # missing, not zero
    assert report.errors == {(CHAT.key, "http_error"): 1}
    report = await source.collect([CHAT])
    assert values(report, CHAT) == {}
    assert report.errors == {(CHAT.key, "http_error"): 1}  # still down: reported every collect

    # Backoff doubles, with jitter in [0.5, 1] of it.
    for _ in range(3):
        clock.advance(SETTINGS.backoff_max_seconds)
        await clock.sleeping(1)
    delays = clock.slept
    assert len(delays) == 4
    for i, d in enumerate(delays):
        assert 0.5 * 2**i <= d <= 2**i

    kube.add_pod("llm", "chat-2", CHAT_LABELS)  # happens during the outage
    outage.remaining = 0
    clock.advance(SETTINGS.backoff_max_seconds)
    await seen(source, index, CHAT, lambda pods: len(pods) == 2)
    await source.wait_until(lambda: source._targets[CHAT].healthy())
    report = await source.collect([CHAT])
    assert status(report, CHAT) == (2, 1, 1)
    assert report.errors == {(CHAT.key, "http_error"): 3}  # the failures since the last collect
    assert (await source.collect([CHAT])).errors == {}


async def test_connection_refused_style_failures_are_connection_errors(
    kube: FakeKube, source: KubeStatusSource, clock: VirtualClock
) -> None:
    await source.collect([CHAT])
    await kube.until(lambda: kube.watch_count("pods") == 1)
    kube.fail_next(10**6, None)  # cut every connection without an answer
    kube.drop_watches()
    await clock.sleeping(1)
    report = await source.collect([CHAT])
    assert values(report, CHAT) == {}
    assert report.errors == {(CHAT.key, "connection"): 1}


async def test_retry_after_is_honoured(
    kube: FakeKube, source: KubeStatusSource, clock: VirtualClock
) -> None:
    kube.fail_next(1, 429, verb="list", retry_after=7)
    report = await source.collect([CHAT])
    assert report.errors == {(CHAT.key, "http_error"): 1}
    assert clock.slept == [7]
    clock.advance(7)
    await source.wait_until(lambda: source._targets[CHAT].healthy())
    assert status(await source.collect([CHAT]), CHAT) == (0, 0, 0)  # a real zero: no pods


async def test_forbidden_is_reported_as_such(
    kube: FakeKube, source: KubeStatusSource, clock: VirtualClock
) -> None:
    kube.allow(("get", "", "pods"))  # RBAC without list/watch on pods
    report = await source.collect([CHAT])
    assert values(report, CHAT) == {}
    assert report.errors == {(CHAT.key, "forbidden"): 1}
    kube.allow(("list", "", "pods"), ("watch", "", "pods"))
    clock.advance(SETTINGS.backoff_max_seconds)
    await source.wait_until(lambda: source._targets[CHAT].healthy())
    assert status(await source.collect([CHAT]), CHAT) == (0, 0, 0)


async def test_a_hung_first_list_is_a_timeout_not_zero(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    settings = KubeStatusSettings(initial_sync_timeout_seconds=0.05, request_timeout_seconds=60)
    src = KubeStatusSource(api, clock, settings=settings)
    kube.pause()
    try:
        report = await src.collect([CHAT])  # waits 50 ms of real time for the first list
        assert report.observations == []
        assert report.errors == {(CHAT.key, "not_synced"): 1}
    finally:
        kube.resume()
        await src.close()


# --- lifecycle ----------------------------------------------------------------------------------


async def test_targets_no_longer_asked_for_stop_their_watches(
    kube: FakeKube, source: KubeStatusSource, index: PodIndex
) -> None:
    kube.add_pod("llm", "chat-1", CHAT_LABELS)
    kube.seed(deployment("raw", {"app": "raw"}))
    await source.collect([CHAT, RAW, SKLEARN])
    # One pod watch per namespace (llm, ml) and ml's Deployment watch.
    await kube.until(lambda: kube.watch_count() == 3)
    await source.collect([CHAT, SKLEARN])
    await kube.until(lambda: kube.watch_count() == 2)  # no Deployment target left in ml
    assert index.pods(RAW.key) == ()
    await source.collect([CHAT])
    await kube.until(lambda: kube.watch_count() == 1)
    assert len(source.tasks()) == 1
    assert [p.name for p in index.pods(CHAT.key)] == ["chat-1"]
    assert index.pods(RAW.key) == () and index.pods(SKLEARN.key) == ()


async def test_close_leaves_no_tasks_behind(clock: VirtualClock) -> None:
    before = asyncio.all_tasks()
    async with FakeKube(clock=clock) as kube, kube.api_client() as api:
        kube.seed(deployment("raw", {"app": "raw"}))
        src = KubeStatusSource(api, clock)
        await src.start([CHAT, RAW, SKLEARN])
        await src.collect([CHAT, RAW, SKLEARN])
        kube.fail_next(10**6, 500, resource="pods")
        kube.drop_watches()
        await clock.sleeping(2)  # both pod watches (llm, ml) are parked in their backoff
        tasks = src.tasks()
        assert len(tasks) == 3  # pods in llm, pods and Deployments in ml
        await src.close()
        assert all(t.done() for t in tasks)
        assert src.tasks() == []
        assert not [t for t in asyncio.all_tasks() if "_Informer" in t.get_coro().__qualname__]
        with pytest.raises(RuntimeError):
            await src.collect([CHAT])
    # With the client and the server closed too, nothing at all is left running.
    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()


# --- shared watches -----------------------------------------------------------------------------


async def test_one_watch_per_kind_and_namespace_whatever_the_number_of_targets(
    kube: FakeKube, source: KubeStatusSource, index: PodIndex, api: ApiClient
) -> None:
    refs = [TargetRef("Deployment", "ml", f"m-{i:03d}") for i in range(120)]
    for i, ref in enumerate(refs):
        kube.seed(deployment(ref.name, {"app": ref.name}, replicas=1 + i % 3))
        kube.add_pod("ml", f"{ref.name}-0", {"app": ref.name, "tier": "model"})
        kube.set_pod_status("ml", f"{ref.name}-0", ready=True, ip=f"10.1.{i // 250}.{i % 250}")
    isvcs = [TargetRef("InferenceService", "llm", f"chat-{i}") for i in range(30)]
    for ref in isvcs:
        kube.add_pod("llm", f"{ref.name}-p", {KSERVE_LABEL: ref.name, "component": "predictor"})
    report = await source.collect([*refs, *isvcs])
    assert report.errors == {}
    # 150 targets, two namespaces: pods in ml and llm, Deployments in ml. Nothing per target,
    # so kubernetes-asyncio's pool of 100 connections is never held by watches.
    await kube.until(lambda: kube.watch_count() == 3)
    assert kube.watch_count("pods") == 2 and kube.watch_count("deployments") == 1
    assert len([r for r in kube.requests if r.verb == "list"]) == 3
    for i, ref in enumerate(refs):
        assert status(report, ref) == (1 + i % 3, 1, 0)  # each target got its own pod only
        assert [p.name for p in index.pods(ref.key)] == [f"{ref.name}-0"]
        assert source.watched_replicas(ref) == 1 + i % 3
    for ref in isvcs:
        assert status(report, ref) == (1, 0, 1)
    assert source.watched_replicas(isvcs[0]) is None  # only Deployments carry spec.replicas

    # Events are dispatched to the one target they belong to.
    await AppsV1Api(api).patch_namespaced_deployment_scale("m-007", "ml", {"spec": {"replicas": 9}})
    await source.wait_until(lambda: source.watched_replicas(refs[7]) == 9)
    kube.add_pod("ml", "m-007-1", {"app": "m-007"})
    await seen(source, index, refs[7], lambda pods: len(pods) == 2)
    report = await source.collect([*refs, *isvcs])
    assert status(report, refs[7]) == (9, 1, 1)
    assert status(report, refs[8]) == (1 + 8 % 3, 1, 0)
    assert [p.name for p in index.pods(refs[6].key)] == ["m-006-0"]


async def test_a_changed_selector_moves_pods_between_targets(
    kube: FakeKube, source: KubeStatusSource, index: PodIndex, api: ApiClient
) -> None:
    kube.seed(deployment("raw", {"app": "raw"}, replicas=1))
    kube.add_pod("ml", "raw-a", {"app": "raw"})
    kube.add_pod("ml", "raw-b", {"app": "raw-v2"})
    expr = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["raw-v2", "x"]}]}
    await source.collect([RAW])
    assert [p.name for p in index.pods(RAW.key)] == ["raw-a"]
    # spec.selector is immutable: a new selector comes with a re-created Deployment.
    kube.remove("apps", "deployments", "ml", "raw")
    await source.wait_until(lambda: not source._targets[RAW].healthy())
    assert index.pods(RAW.key) == ()
    recreated = deployment("raw", {"app": "x"}, replicas=1)
    recreated["spec"]["selector"] = expr  # type: ignore[index]
    kube.seed(recreated)
    await seen(source, index, RAW, lambda pods: [p.name for p in pods] == ["raw-b"])
    # A pod relabelled out of the selector leaves the target; one relabelled in joins it.
    core = CoreV1Api(api)
    patch = {"metadata": {"labels": {"app": "x"}}}
    await core.patch_namespaced_pod("raw-a", "ml", patch, _content_type=MERGE)
    await seen(source, index, RAW, lambda pods: len(pods) == 2)
    await core.patch_namespaced_pod(
        "raw-b", "ml", {"metadata": {"labels": {"app": "gone"}}}, _content_type=MERGE
    )
    await seen(source, index, RAW, lambda pods: [p.name for p in pods] == ["raw-a"])


def test_client_side_selector_semantics() -> None:
    reqs = requirements(
        {
            "matchLabels": {"app": "a"},
            "matchExpressions": [
                {"key": "tier", "operator": "NotIn", "values": ["canary"]},
                {"key": "model", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }
    )
    assert reqs is not None
    assert matches(reqs, {"app": "a", "model": "m"})
    assert matches(reqs, {"app": "a", "model": "m", "tier": "stable"})
    assert not matches(reqs, {"app": "a", "model": "m", "tier": "canary"})
    assert not matches(reqs, {"app": "a"})
    assert not matches(reqs, {"app": "a", "model": "m", "legacy": ""})
    assert not matches(reqs, {"app": "b", "model": "m"})
    assert requirements({}) is None  # match-all is refused
    odd = requirements({"matchExpressions": [{"key": "a", "operator": "Near", "values": []}]})
    assert odd is not None and not matches(odd, {"a": "1"})


async def test_resync_deadlines_are_jittered_per_watch(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    import random

    src = KubeStatusSource(api, clock, settings=SETTINGS, rng=random.Random(7))
    refs = [TargetRef("InferenceService", f"ns-{i}", "chat") for i in range(12)]
    try:
        await src.collect(refs)
        informers = [s.pod_informer for s in src._targets.values()]
        assert len({id(i) for i in informers}) == 12
        after = sorted(i.resync_after for i in informers)
        top = SETTINGS.resync_seconds * (1 + SETTINGS.resync_jitter)
        assert SETTINGS.resync_seconds <= after[0] and after[-1] <= top
        assert len(set(after)) == 12  # no two relist at the same moment
        assert after[-1] - after[0] > 0.3 * (top - SETTINGS.resync_seconds)  # spread out
    finally:
        await src.close()


async def test_lists_are_read_in_pages(kube: FakeKube, api: ApiClient, clock: VirtualClock) -> None:
    settings = KubeStatusSettings(list_page_size=50)
    src = KubeStatusSource(api, clock, settings=settings)
    refs = [TargetRef("Deployment", "ml", f"d-{i:03d}") for i in range(120)]
    for i, ref in enumerate(refs):
        kube.seed(deployment(ref.name, {"app": ref.name}, replicas=1 + i % 4))
    try:
        report = await src.collect(refs)
        assert report.errors == {}
        assert [src.watched_replicas(r) for r in refs] == [1 + i % 4 for i in range(120)]
        lists = [r for r in kube.requests if r.verb == "list" and "deployments" in r.path]
        assert [r.query.get("limit") for r in lists] == ["50", "50", "50"]
        assert "continue" not in lists[0].query and lists[1].query["continue"]
        assert src.stats["lists"] == 2  # one list of the Deployments (3 pages), one of the pods
    finally:
        await src.close()
