"""The fake Kubernetes API server keeps the semantics clients rely on.

Most requests go through kubernetes-asyncio (the client the autoscaler uses), some through raw
aiohttp where the test needs an exact content type or the Status body. Schema tests load the
real CRDs from ../shared/crds (skipped when that directory is absent).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import watch
from kubernetes_asyncio.client import (
    ApiClient,
    ApiException,
    AppsV1Api,
    CoordinationV1Api,
    CoreV1Api,
    CustomObjectsApi,
)

from autoscaler.core.clock import ManualClock
from autoscaler.testing.fake_kube import FakeKube, shared_crd_dir
from autoscaler.testing.fake_kube.patch import (
    PatchError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from autoscaler.testing.fake_kube.selectors import SelectorError, parse_label_selector

CRDS = shared_crd_dir()
needs_crds = pytest.mark.skipif(CRDS is None, reason="../shared/crds is not there")
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    async with FakeKube(clock=ManualClock(1_700_000_000.0), crd_dir=CRDS) as server:
        yield server


@pytest.fixture
async def api(kube: FakeKube) -> AsyncIterator[ApiClient]:
    async with kube.api_client() as client:
        yield client


async def call(
    kube: FakeKube, method: str, path: str, body: Any = None, ctype: str = "application/json"
) -> tuple[int, dict[str, Any], Any]:
    data = None if body is None else json.dumps(body)
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, kube.url + path, data=data, headers={"Content-Type": ctype}) as r,
    ):
        return r.status, await r.json(), r.headers


def pod(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": "x"}},
        "spec": {"containers": [{"name": "main", "image": "img:1"}]},
    }


def scaled_object(name: str = "chat", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": "llm"},
        "spec": {
            "scaleTargetRef": {"name": "chat-predictor"},
            "triggers": [{"type": "prometheus", "metadata": {"query": "x"}}],
            **spec,
        },
    }


def deployment(name: str = "raw", replicas: int = 2) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "img:1"}]},
            },
        },
    }


def status_of(e: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(e.body)
    return body


# --- pure pieces ----------------------------------------------------------------------------


def test_merge_patch_rfc7386() -> None:
    doc = {"a": {"b": 1, "c": 2}, "l": [1, 2], "k": "v"}
    assert merge_patch(doc, {"a": {"b": None, "d": 3}, "l": [3], "k": None}) == {
        "a": {"c": 2, "d": 3},
        "l": [3],
    }
    assert doc == {"a": {"b": 1, "c": 2}, "l": [1, 2], "k": "v"}  # input untouched


def test_json_patch_rfc6902_ops() -> None:
    doc = {"a": [1, 2], "m": {"x": 1}, "a~b": {"c/d": 0}}
    out = json_patch(
        doc,
        [
            {"op": "add", "path": "/a/1", "value": 9},
            {"op": "add", "path": "/a/-", "value": 7},
            {"op": "remove", "path": "/a/0"},
            {"op": "replace", "path": "/m/x", "value": 2},
            {"op": "copy", "from": "/m", "path": "/n"},
            {"op": "move", "from": "/n/x", "path": "/moved"},
            {"op": "test", "path": "/a~0b/c~1d", "value": 0},
        ],
    )
    assert out == {"a": [9, 2, 7], "m": {"x": 2}, "n": {}, "moved": 2, "a~b": {"c/d": 0}}
    for bad in (
        [{"op": "test", "path": "/m/x", "value": 5}],
        [{"op": "replace", "path": "/nope", "value": 1}],
        [{"op": "remove", "path": "/a/5"}],
        [{"op": "frobnicate", "path": "/a"}],
    ):
        with pytest.raises(PatchError):
            json_patch(doc, bad)


def test_strategic_merge_merges_lists_by_key() -> None:
    spec = {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}
    out = strategic_merge_patch(
        spec, {"containers": [{"name": "b", "image": "2"}, {"name": "c", "image": "3"}]}
    )
    assert out["containers"] == [
        {"name": "a", "image": "1"},
        {"name": "b", "image": "2"},
        {"name": "c", "image": "3"},
    ]
    out = strategic_merge_patch(spec, {"containers": [{"name": "a", "$patch": "delete"}]})
    assert [c["name"] for c in out["containers"]] == ["b"]
    meta = strategic_merge_patch({"finalizers": ["x"]}, {"finalizers": ["y", "x"]})
    assert meta == {"finalizers": ["x", "y"]}


def test_label_selectors() -> None:
    match = parse_label_selector("app=x,tier in (a, b),env!=prod,canary,!legacy")
    assert match({"app": "x", "tier": "a", "env": "dev", "canary": ""})
    assert not match({"app": "x", "tier": "c", "canary": ""})
    assert not match({"app": "x", "tier": "a", "canary": "", "legacy": "1"})
    assert not match({"app": "x", "tier": "a", "env": "prod", "canary": ""})
    assert parse_label_selector("a notin (x)")({})
    with pytest.raises(SelectorError):
        parse_label_selector("a in x")


# --- CRUD, resourceVersion and conflicts ------------------------------------------------------


async def test_create_get_list_with_resource_versions(kube: FakeKube, api: ApiClient) -> None:
    v1 = CoreV1Api(api)
    created = await v1.create_namespaced_pod("llm", pod("a"))
    assert created.status.phase == "Pending"  # status is the server's, not the client's
    assert created.metadata.uid and created.metadata.generation == 1
    assert str(created.metadata.creation_timestamp) == "2023-11-14 22:13:20+00:00"
    b = await v1.create_namespaced_pod("llm", pod("b", {"app": "y"}))
    assert int(b.metadata.resource_version) > int(created.metadata.resource_version)
    listed = await v1.list_namespaced_pod("llm", label_selector="app=x")
    assert [p.metadata.name for p in listed.items] == ["a"]
    assert listed.metadata.resource_version == b.metadata.resource_version
    got = await v1.read_namespaced_pod("a", "llm")
    assert got.metadata.resource_version == created.metadata.resource_version
    with pytest.raises(ApiException) as e:
        await v1.create_namespaced_pod("llm", pod("a"))
    assert e.value.status == 409 and status_of(e.value)["reason"] == "AlreadyExists"
    assert [p.metadata.name for p in (await v1.list_pod_for_all_namespaces()).items] == ["a", "b"]


async def test_generate_name_dry_run_and_name_validation(kube: FakeKube, api: ApiClient) -> None:
    v1 = CoreV1Api(api)
    body = pod("")
    body["metadata"] = {"generateName": "chat-"}
    made = await v1.create_namespaced_pod("llm", body)
    assert made.metadata.name.startswith("chat-") and len(made.metadata.name) == 10
    await v1.create_namespaced_pod("llm", pod("dry"), dry_run="All")
    assert kube.object("", "pods", "llm", "dry") is None
    with pytest.raises(ApiException) as e:
        await v1.create_namespaced_pod("llm", pod("Not_A_Name"))
    assert e.value.status == 422 and "RFC 1123" in status_of(e.value)["message"]


async def test_put_with_stale_resource_version_conflicts(kube: FakeKube, api: ApiClient) -> None:
    core = CoreV1Api(api)
    cm = await core.create_namespaced_config_map(
        "llm", {"metadata": {"name": "policy"}, "data": {"a": "1"}}
    )
    cm.data = {"a": "2"}
    updated = await core.replace_namespaced_config_map("policy", "llm", cm)
    assert int(updated.metadata.resource_version) > int(cm.metadata.resource_version)
    cm.data = {"a": "3"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as e:
        await core.replace_namespaced_config_map("policy", "llm", cm)
    body = status_of(e.value)
    assert e.value.status == 409 and body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]
    # Built-ins may update unconditionally (no resourceVersion in the body).
    cm.metadata.resource_version = None
    assert (await core.replace_namespaced_config_map("policy", "llm", cm)).data == {"a": "3"}


async def test_custom_objects_need_a_resource_version_on_put(
    kube: FakeKube, api: ApiClient
) -> None:
    co = CustomObjectsApi(api)
    made = await co.create_namespaced_custom_object(
        "keda.sh", "v1alpha1", "llm", "scaledobjects", scaled_object()
    )
    made["metadata"].pop("resourceVersion")
    with pytest.raises(ApiException) as e:
        await co.replace_namespaced_custom_object(
            "keda.sh", "v1alpha1", "llm", "scaledobjects", "chat", made
        )
    assert e.value.status == 422
    assert "must be specified for an update" in status_of(e.value)["message"]


async def test_not_found(kube: FakeKube, api: ApiClient) -> None:
    with pytest.raises(ApiException) as e:
        await AppsV1Api(api).read_namespaced_deployment("nope", "ml")
    body = status_of(e.value)
    assert e.value.status == 404 and body["message"] == 'deployments.apps "nope" not found'
    assert body["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}
    for method, ctype in (
        ("PATCH", MERGE),
        ("DELETE", "application/json"),
        ("PUT", "application/json"),
    ):
        code, _, _ = await call(
            kube, method, "/api/v1/namespaces/x/pods/nope", {"metadata": {"name": "nope"}}, ctype
        )
        assert code == 404
    code, body, _ = await call(kube, "GET", "/apis/example.com/v1/namespaces/x/widgets")
    assert code == 404  # an unknown resource type


# --- patches --------------------------------------------------------------------------------------


async def test_merge_and_json_patch_on_custom_objects(kube: FakeKube, api: ApiClient) -> None:
    co = CustomObjectsApi(api)
    args = ("keda.sh", "v1alpha1", "llm", "scaledobjects", "chat")
    made = await co.create_namespaced_custom_object(*args[:4], scaled_object(minReplicaCount=1))
    merged = await co.patch_namespaced_custom_object(
        *args, {"spec": {"maxReplicaCount": 8, "minReplicaCount": None}}, _content_type=MERGE
    )
    assert merged["spec"]["maxReplicaCount"] == 8 and "minReplicaCount" not in merged["spec"]
    assert merged["metadata"]["generation"] == 2
    assert int(merged["metadata"]["resourceVersion"]) > int(made["metadata"]["resourceVersion"])
    # A list body goes as a JSON patch (kubernetes-asyncio picks the content type by body type).
    patched = await co.patch_namespaced_custom_object(
        *args,
        [
            {"op": "test", "path": "/spec/maxReplicaCount", "value": 8},
            {"op": "replace", "path": "/spec/maxReplicaCount", "value": 4},
        ],
    )
    assert patched["spec"]["maxReplicaCount"] == 4
    with pytest.raises(ApiException) as e:
        await co.patch_namespaced_custom_object(
            *args, [{"op": "test", "path": "/spec/maxReplicaCount", "value": 8}]
        )
    assert e.value.status == 422 and "test failed" in status_of(e.value)["message"]
    # A dict body without a content type is sent as a JSON patch, and rejected as upstream does.
    with pytest.raises(ApiException) as e:
        await co.patch_namespaced_custom_object(*args, {"spec": {"maxReplicaCount": 2}})
    assert e.value.status == 400


async def test_patch_carrying_a_resource_version_is_conditional(
    kube: FakeKube, api: ApiClient
) -> None:
    co = CustomObjectsApi(api)
    args = ("keda.sh", "v1alpha1", "llm", "scaledobjects", "chat")
    made = await co.create_namespaced_custom_object(*args[:4], scaled_object())
    rv = made["metadata"]["resourceVersion"]
    body = {"metadata": {"resourceVersion": rv}, "spec": {"maxReplicaCount": 3}}
    ok = await co.patch_namespaced_custom_object(*args, body, _content_type=MERGE)
    with pytest.raises(ApiException) as e:  # same resourceVersion again: now stale
        await co.patch_namespaced_custom_object(*args, body, _content_type=MERGE)
    assert e.value.status == 409
    stale_test = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "replace", "path": "/spec/maxReplicaCount", "value": 5},
    ]
    with pytest.raises(ApiException) as e:
        await co.patch_namespaced_custom_object(*args, stale_test)
    assert e.value.status == 422  # the optimistic-lock idiom of JSON patch
    fresh = [
        {
            "op": "replace",
            "path": "/metadata/resourceVersion",
            "value": ok["metadata"]["resourceVersion"],
        }
    ]
    assert (await co.patch_namespaced_custom_object(*args, fresh))["metadata"][
        "resourceVersion"
    ] == ok["metadata"]["resourceVersion"]


async def test_noop_patch_does_not_bump_the_revision(kube: FakeKube, api: ApiClient) -> None:
    co = CustomObjectsApi(api)
    args = ("keda.sh", "v1alpha1", "llm", "scaledobjects", "chat")
    made = await co.create_namespaced_custom_object(*args[:4], scaled_object(maxReplicaCount=3))
    same = await co.patch_namespaced_custom_object(
        *args, {"spec": {"maxReplicaCount": 3}}, _content_type=MERGE
    )
    assert same["metadata"]["resourceVersion"] == made["metadata"]["resourceVersion"]
    assert same["metadata"]["generation"] == 1


async def test_strategic_merge_for_builtins_415_for_custom(kube: FakeKube, api: ApiClient) -> None:
    apps = AppsV1Api(api)
    await apps.create_namespaced_deployment("ml", deployment())
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "s:1"}]}}}}
    out = await apps.patch_namespaced_deployment("raw", "ml", patch)  # strategic by default
    assert [c.name for c in out.spec.template.spec.containers] == ["main", "side"]
    assert kube.requests[-1].content_type == STRATEGIC
    await CustomObjectsApi(api).create_namespaced_custom_object(
        "keda.sh", "v1alpha1", "llm", "scaledobjects", scaled_object()
    )
    code, body, _ = await call(
        kube,
        "PATCH",
        "/apis/keda.sh/v1alpha1/namespaces/llm/scaledobjects/chat",
        {"spec": {}},
        STRATEGIC,
    )
    assert code == 415 and body["reason"] == "UnsupportedMediaType"
    code, _, _ = await call(
        kube,
        "PATCH",
        "/apis/keda.sh/v1alpha1/namespaces/llm/scaledobjects/chat",
        {},
        "application/apply-patch+yaml",
    )
    assert code == 415


# --- RBAC -----------------------------------------------------------------------------------------


async def test_forbidden_by_the_allow_list(kube: FakeKube, api: ApiClient) -> None:
    kube.allow(("get", "apps", "deployments"), ("patch", "apps", "deployments/scale"))
    kube.seed({**deployment(), "metadata": {"name": "raw", "namespace": "ml"}})
    apps = AppsV1Api(api)
    assert (await apps.read_namespaced_deployment("raw", "ml")).spec.replicas == 2
    scaled = await apps.patch_namespaced_deployment_scale("raw", "ml", {"spec": {"replicas": 3}})
    assert scaled.spec.replicas == 3
    with pytest.raises(ApiException) as e:
        await apps.patch_namespaced_deployment("raw", "ml", {"spec": {"replicas": 4}})
    body = status_of(e.value)
    assert e.value.status == 403 and body["reason"] == "Forbidden"
    assert body["message"] == (
        'deployments.apps "raw" is forbidden: User "system:serviceaccount:default:autoscaler" '
        'cannot patch resource "deployments" in API group "apps" in the namespace "ml"'
    )
    with pytest.raises(ApiException) as e:
        await CoreV1Api(api).list_namespaced_pod("ml")
    assert e.value.status == 403
    kube.allow(("*", "", "*"))
    await CoreV1Api(api).list_namespaced_pod("ml")


# --- schemas from the real CRDs -----------------------------------------------------------------


@needs_crds
async def test_422_from_the_keda_crd(kube: FakeKube, api: ApiClient) -> None:
    co = CustomObjectsApi(api)
    args = ("keda.sh", "v1alpha1", "llm", "scaledobjects")
    bad = scaled_object()
    del bad["spec"]["scaleTargetRef"]
    bad["spec"]["minReplicaCount"] = "two"
    with pytest.raises(ApiException) as e:
        await co.create_namespaced_custom_object(*args, bad)
    body = status_of(e.value)
    assert e.value.status == 422 and body["reason"] == "Invalid"
    fields = {c["field"]: c["reason"] for c in body["details"]["causes"]}
    assert fields == {
        "spec.scaleTargetRef": "FieldValueRequired",
        "spec.minReplicaCount": "FieldValueTypeInvalid",
    }
    assert body["message"].startswith('ScaledObject.keda.sh "chat" is invalid: [')
    with pytest.raises(ApiException) as e:  # the CRD's CEL rule, min <= max
        await co.create_namespaced_custom_object(
            *args, scaled_object(minReplicaCount=5, maxReplicaCount=2)
        )
    assert (
        "minReplicaCount must be less than or equal to maxReplicaCount"
        in status_of(e.value)["message"]
    )
    with pytest.raises(ApiException) as e:  # the same rule guards patches
        await co.create_namespaced_custom_object(*args, scaled_object(maxReplicaCount=2))
        await co.patch_namespaced_custom_object(
            *args, "chat", {"spec": {"minReplicaCount": 3}}, _content_type=MERGE
        )
    assert e.value.status == 422


@needs_crds
async def test_unknown_fields_are_pruned_with_a_warning_or_rejected_when_strict(
    kube: FakeKube, api: ApiClient
) -> None:
    co = CustomObjectsApi(api)
    args = ("keda.sh", "v1alpha1", "llm", "scaledobjects")
    made = await co.create_namespaced_custom_object(*args, scaled_object(maxReplicaCuont=3))
    assert "maxReplicaCuont" not in made["spec"]
    assert kube.warnings == ['unknown field "spec.maxReplicaCuont"']
    with pytest.raises(ApiException) as e:
        await co.create_namespaced_custom_object(
            *args, scaled_object("strict", maxReplicaCuont=3), field_validation="Strict"
        )
    assert e.value.status == 400 and "strict decoding error" in status_of(e.value)["message"]


@needs_crds
async def test_422_from_the_kserve_and_knative_crds(kube: FakeKube, api: ApiClient) -> None:
    co = CustomObjectsApi(api)
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "chat"},
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "maxReplicas": 4,
                "model": {"modelFormat": {"name": "sklearn"}},
            }
        },
    }
    made = await co.create_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", "llm", "inferenceservices", isvc
    )
    assert made["spec"]["predictor"]["minReplicas"] == 1
    with pytest.raises(ApiException) as e:
        await co.patch_namespaced_custom_object(
            "serving.kserve.io",
            "v1beta1",
            "llm",
            "inferenceservices",
            "chat",
            {"spec": {"predictor": {"minReplicas": "one"}}},
            _content_type=MERGE,
        )
    assert e.value.status == 422
    assert (
        "spec.predictor.minReplicas in body must be of type integer"
        in status_of(e.value)["message"]
    )
    rev = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {
            "name": "iris-00001",
            "annotations": {"autoscaling.knative.dev/min-scale": "1"},
        },
        "spec": {"containerConcurrency": "ten", "containers": [{"image": "x"}]},
    }
    with pytest.raises(ApiException) as e:
        await co.create_namespaced_custom_object(
            "serving.knative.dev", "v1", "ml", "revisions", rev
        )
    assert e.value.status == 422 and "spec.containerConcurrency" in status_of(e.value)["message"]
    rev["spec"]["containerConcurrency"] = 10
    made = await co.create_namespaced_custom_object(
        "serving.knative.dev", "v1", "ml", "revisions", rev
    )
    assert made["metadata"]["annotations"] == {"autoscaling.knative.dev/min-scale": "1"}


async def test_builtin_validation(kube: FakeKube, api: ApiClient) -> None:
    apps = AppsV1Api(api)
    bad = deployment()
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    with pytest.raises(ApiException) as e:
        await apps.create_namespaced_deployment("ml", bad)
    assert e.value.status == 422 and "does not match template" in status_of(e.value)["message"]
    await apps.create_namespaced_deployment("ml", deployment())
    with pytest.raises(ApiException) as e:
        await apps.patch_namespaced_deployment_scale("raw", "ml", {"spec": {"replicas": -1}})
    assert e.value.status == 422
    no_containers = pod("p")
    no_containers["spec"] = {}
    with pytest.raises(ApiException) as e:
        await CoreV1Api(api).create_namespaced_pod("ml", no_containers)
    assert e.value.status == 422


# --- subresources ---------------------------------------------------------------------------------


async def test_status_subresource_and_generation(kube: FakeKube, api: ApiClient) -> None:
    co = CustomObjectsApi(api)
    args = ("serving.knative.dev", "v1", "ml", "revisions", "r")
    rev = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {"name": "r"},
        "spec": {"containers": [{"image": "x"}]},
        "status": {"actualReplicas": 9},
    }
    made = await co.create_namespaced_custom_object(*args[:4], rev)
    assert "status" not in made  # dropped on create
    st = await co.patch_namespaced_custom_object_status(
        *args,
        {"status": {"actualReplicas": 2}, "spec": {"containerConcurrency": 1}},
        _content_type=MERGE,
    )
    assert st["status"] == {"actualReplicas": 2} and "containerConcurrency" not in st["spec"]
    assert st["metadata"]["generation"] == 1  # status writes do not bump it
    main = await co.patch_namespaced_custom_object(
        *args,
        {"status": {"actualReplicas": 5}, "spec": {"containerConcurrency": 1}},
        _content_type=MERGE,
    )
    assert main["status"] == {"actualReplicas": 2} and main["spec"]["containerConcurrency"] == 1
    assert main["metadata"]["generation"] == 2


async def test_deployment_scale_subresource(kube: FakeKube, api: ApiClient) -> None:
    apps = AppsV1Api(api)
    await apps.create_namespaced_deployment("ml", deployment(replicas=2))
    scale = await apps.read_namespaced_deployment_scale("raw", "ml")
    assert (scale.spec.replicas, scale.status.selector) == (2, "app=raw")
    scale.spec.replicas = 4
    assert (await apps.replace_namespaced_deployment_scale("raw", "ml", scale)).spec.replicas == 4
    scale.spec.replicas = 5  # stale resourceVersion
    with pytest.raises(ApiException) as e:
        await apps.replace_namespaced_deployment_scale("raw", "ml", scale)
    assert e.value.status == 409
    dep = await apps.read_namespaced_deployment("raw", "ml")
    assert dep.spec.replicas == 4 and dep.metadata.generation == 2


# --- deletion -------------------------------------------------------------------------------------


async def test_finalizers_and_graceful_pod_deletion(kube: FakeKube, api: ApiClient) -> None:
    co = CustomObjectsApi(api)
    args = ("keda.sh", "v1alpha1", "llm", "scaledobjects", "chat")
    so = scaled_object()
    so["metadata"]["finalizers"] = ["finalizer.keda.sh"]
    await co.create_namespaced_custom_object(*args[:4], so)
    await co.delete_namespaced_custom_object(*args)
    pending = await co.get_namespaced_custom_object(*args)
    assert pending["metadata"]["deletionTimestamp"]
    await co.patch_namespaced_custom_object(
        *args, {"metadata": {"finalizers": None}}, _content_type=MERGE
    )
    assert kube.object("keda.sh", "scaledobjects", "llm", "chat") is None

    v1 = CoreV1Api(api)
    kube.add_pod("llm", "bound", {"app": "x"})  # on a node: graceful
    await v1.create_namespaced_pod("llm", pod("unbound"))  # never scheduled: deleted at once
    await v1.delete_namespaced_pod("unbound", "llm")
    assert kube.object("", "pods", "llm", "unbound") is None
    deleted = await v1.delete_namespaced_pod("bound", "llm")
    assert deleted.metadata.deletion_grace_period_seconds == 30
    assert kube.object("", "pods", "llm", "bound") is not None
    await v1.delete_namespaced_pod("bound", "llm", grace_period_seconds=0)  # force
    assert kube.object("", "pods", "llm", "bound") is None


async def test_delete_preconditions_and_collection(kube: FakeKube, api: ApiClient) -> None:
    v1 = CoreV1Api(api)
    a = await v1.create_namespaced_pod("llm", pod("a"))
    await v1.create_namespaced_pod("llm", pod("b", {"app": "y"}))
    with pytest.raises(ApiException) as e:
        await v1.delete_namespaced_pod("a", "llm", body={"preconditions": {"resourceVersion": "1"}})
    assert e.value.status == 409
    await v1.delete_namespaced_pod(
        "a", "llm", body={"preconditions": {"resourceVersion": a.metadata.resource_version}}
    )
    await v1.create_namespaced_pod("llm", pod("c"))
    await v1.delete_collection_namespaced_pod("llm", label_selector="app=y")
    assert [p["metadata"]["name"] for p in kube.objects("", "pods", "llm")] == ["c"]


# --- lists ----------------------------------------------------------------------------------------


async def test_paged_and_historical_lists(kube: FakeKube, api: ApiClient) -> None:
    v1 = CoreV1Api(api)
    for name in "abcde":
        await v1.create_namespaced_pod("llm", pod(name))
    page = await v1.list_namespaced_pod("llm", limit=2)
    names = [p.metadata.name for p in page.items]
    while page.metadata._continue:
        page = await v1.list_namespaced_pod("llm", limit=2, _continue=page.metadata._continue)
        names += [p.metadata.name for p in page.items]
    assert names == list("abcde")
    at = (await v1.list_namespaced_pod("llm")).metadata.resource_version
    await v1.delete_namespaced_pod("a", "llm")
    then = await v1.list_namespaced_pod("llm", resource_version=at, resource_version_match="Exact")
    assert [p.metadata.name for p in then.items] == list("abcde")
    kube.compact()
    with pytest.raises(ApiException) as e:
        await v1.list_namespaced_pod("llm", resource_version=at, resource_version_match="Exact")
    assert e.value.status == 410
    with pytest.raises(ApiException) as e:
        await v1.list_namespaced_pod("llm", field_selector="spec.bogus=1")
    assert e.value.status == 400
    assert len((await v1.list_namespaced_pod("llm", field_selector="metadata.name=b")).items) == 1


# --- watches --------------------------------------------------------------------------------------


async def test_watch_streams_events_with_bookmarks(kube: FakeKube, api: ApiClient) -> None:
    v1 = CoreV1Api(api)
    await v1.create_namespaced_pod("llm", pod("a"))
    listed = await v1.list_namespaced_pod("llm", label_selector="app=x")
    seen: list[tuple[str, str, str]] = []

    async def writes() -> None:
        await kube.until(lambda: kube.watch_count("pods") == 1)
        await v1.create_namespaced_pod("llm", pod("b"))
        await v1.patch_namespaced_pod("b", "llm", {"metadata": {"labels": {"extra": "1"}}})
        await v1.patch_namespaced_pod("a", "llm", {"metadata": {"labels": {"app": "gone"}}})
        kube.bookmark()
        await v1.delete_namespaced_pod("b", "llm")

    writer = asyncio.create_task(writes())
    w = watch.Watch()
    async with w:
        async for ev in w.stream(
            v1.list_namespaced_pod,
            "llm",
            label_selector="app=x",
            resource_version=listed.metadata.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=30,
        ):
            meta = ev["raw_object"]["metadata"]
            seen.append((ev["type"], meta.get("name", ""), meta["resourceVersion"]))
            if ev["type"] == "DELETED" and meta["name"] == "b":
                break
    await writer
    kinds = [(t, n) for t, n, _ in seen]
    assert kinds == [
        ("ADDED", "b"),
        ("MODIFIED", "b"),
        ("DELETED", "a"),  # left the selection: a DELETED for this watch
        ("BOOKMARK", ""),
        ("DELETED", "b"),
    ]
    revisions = [int(rv) for _, _, rv in seen]
    assert revisions == sorted(revisions) and len(set(revisions)) == 4  # bookmark repeats one
    assert seen[-1][2] == str(kube.store.rv)


async def test_watch_without_revision_starts_with_current_state(
    kube: FakeKube, api: ApiClient
) -> None:
    v1 = CoreV1Api(api)
    await v1.create_namespaced_pod("llm", pod("a"))
    await v1.create_namespaced_pod("other", pod("b"))
    w = watch.Watch()
    async with w:
        events = [
            (ev["type"], ev["object"].metadata.name)
            async for ev in w.stream(v1.list_namespaced_pod, "llm", timeout_seconds=0)
        ]
    assert events == [("ADDED", "a")]  # then the stream ends: timeoutSeconds


async def test_watch_from_a_compacted_revision_is_410(kube: FakeKube, api: ApiClient) -> None:
    v1 = CoreV1Api(api)
    old = (await v1.list_namespaced_pod("llm")).metadata.resource_version
    await v1.create_namespaced_pod("llm", pod("a"))
    kube.compact()
    w = watch.Watch()
    with pytest.raises(ApiException) as e:
        async with w:
            async for _ in w.stream(
                v1.list_namespaced_pod, "llm", resource_version=old, timeout_seconds=5
            ):
                pass
    assert e.value.status == 410
    status, event, _ = await call(
        kube, "GET", f"/api/v1/namespaces/llm/pods?watch=1&resourceVersion={old}"
    )
    assert status == 200  # the error is an event in the stream, as the watch cache sends it
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")


async def test_watch_history_is_bounded() -> None:
    async with FakeKube(history=3) as kube, kube.api_client() as api:
        v1 = CoreV1Api(api)
        start = (await v1.list_namespaced_pod("llm")).metadata.resource_version
        for name in "abcd":
            await v1.create_namespaced_pod("llm", pod(name))
        w = watch.Watch()
        with pytest.raises(ApiException) as e:
            async with w:
                async for _ in w.stream(
                    v1.list_namespaced_pod, "llm", resource_version=start, timeout_seconds=5
                ):
                    pass
        assert e.value.status == 410


async def test_dropped_watch_breaks_the_stream_mid_event(kube: FakeKube, api: ApiClient) -> None:
    v1 = CoreV1Api(api)

    async def drop() -> None:
        await kube.until(lambda: kube.watch_count() == 1)
        kube.drop_watches()

    dropper = asyncio.create_task(drop())
    w = watch.Watch()
    with pytest.raises(aiohttp.ClientPayloadError):
        async with w:
            async for _ in w.stream(v1.list_namespaced_pod, "llm", timeout_seconds=30):
                pass
    await dropper
    await kube.until(lambda: kube.watch_count() == 0)


# --- faults, leases, events ---------------------------------------------------------------------


async def test_injected_faults_then_recovery(kube: FakeKube, api: ApiClient) -> None:
    v1 = CoreV1Api(api)
    kube.fail_next(2, 500, verb="list")
    for _ in range(2):
        with pytest.raises(ApiException) as e:
            await v1.list_namespaced_pod("llm")
        assert e.value.status == 500
    await v1.list_namespaced_pod("llm")
    kube.fail_next(1, 429, retry_after=3)
    with pytest.raises(ApiException) as e:
        await v1.read_namespace("default")
    assert e.value.status == 429 and e.value.headers["Retry-After"] == "3"
    kube.fail_next(5, None)  # the connection is cut (aiohttp retries a reused connection once)
    with pytest.raises(aiohttp.ClientError):
        await v1.list_namespaced_pod("llm")


async def test_pause_holds_requests_until_resumed(kube: FakeKube, api: ApiClient) -> None:
    kube.pause()
    pending = asyncio.create_task(CoreV1Api(api).list_namespaced_pod("llm"))
    await kube.until(lambda: kube.held == 1)
    assert not pending.done()
    kube.resume()
    assert (await pending).items == []


async def test_lease_leader_election_pattern(kube: FakeKube, api: ApiClient) -> None:
    coord = CoordinationV1Api(api)
    lease = {
        "metadata": {"name": "autoscaler"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }
    held = await coord.create_namespaced_lease("kserve", lease)
    with pytest.raises(ApiException) as e:  # a second candidate loses the race to create
        await coord.create_namespaced_lease("kserve", lease)
    assert e.value.status == 409
    mine, theirs = held, await coord.read_namespaced_lease("autoscaler", "kserve")
    mine.spec.renew_time = "2023-11-14T22:13:25.000000Z"
    await coord.replace_namespaced_lease("autoscaler", "kserve", mine)
    theirs.spec.holder_identity = "b"
    with pytest.raises(ApiException) as e:  # takeover on a stale read
        await coord.replace_namespaced_lease("autoscaler", "kserve", theirs)
    assert e.value.status == 409
    got = await coord.read_namespaced_lease("autoscaler", "kserve")
    assert got.spec.holder_identity == "a"
    bad = {"metadata": {"name": "bad"}, "spec": {"leaseDurationSeconds": 0}}
    with pytest.raises(ApiException) as e:
        await coord.create_namespaced_lease("kserve", bad)
    assert e.value.status == 422


async def test_events_can_be_posted(kube: FakeKube, api: ApiClient) -> None:
    event = {
        "metadata": {"generateName": "chat."},
        "involvedObject": {"kind": "InferenceService", "namespace": "llm", "name": "chat"},
        "reason": "ScaledUp",
        "message": "2 -> 4: queue",
        "type": "Normal",
    }
    made = await CoreV1Api(api).create_namespaced_event("llm", event)
    assert made.reason == "ScaledUp"
    listed = await CoreV1Api(api).list_namespaced_event("llm", field_selector="reason=ScaledUp")
    assert [e.involved_object.name for e in listed.items] == ["chat"]
