"""deploy/rbac.yaml is enough, live: the sources, every actuator and leader election run against
the fake API server whose RBAC allows exactly the role's rules, and nothing is forbidden.

The fake's allow-list is flat (verb, group, resource); the role's ``resourceNames`` are checked
afterwards on the recorded requests. Every rule of the role must also be exercised here, so the
role is not wider than what runs.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio.client import ApiClient
from prometheus_client import CollectorRegistry

from autoscaler.actuators import (
    ApiCaller,
    DeploymentActuator,
    EventRecorder,
    KnativeActuator,
    KServeActuator,
    RetryPolicy,
    TokenBucket,
)
from autoscaler.actuators.keda import KedaActuation, KedaActuator
from autoscaler.actuators.published import PublishedDecisions
from autoscaler.actuators.tokens import TokenLimitsPublisher
from autoscaler.config.loader import parse_policy
from autoscaler.config.models import Actuation
from autoscaler.config.rollout import Rollout
from autoscaler.core.types import Decision, TargetRef
from autoscaler.service.leader import LeaderElector
from autoscaler.service.selectors import SelectorResolver
from autoscaler.sources.kube_status import KubeStatusSource
from autoscaler.testing.clock import VirtualClock
from autoscaler.testing.fake_kube import FakeKube, shared_crd_dir
from autoscaler.traffic.rollout import RolloutController, RolloutMetrics

CRDS = shared_crd_dir()
pytestmark = pytest.mark.skipif(CRDS is None, reason="../shared/crds is not there")
RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"
NS = "ml"
LEASE_NS = "kserve-autoscaler"

Rule = dict[str, Any]


def rules() -> list[Rule]:
    docs = [d for d in yaml.safe_load_all(RBAC.read_text(encoding="utf-8")) if d]
    return [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]


def triples(rule: Rule) -> set[tuple[str, str, str]]:
    return {(v, g, r) for v in rule["verbs"] for g in rule["apiGroups"] for r in rule["resources"]}


def allowed_by_name(verb: str, group: str, resource: str, name: str | None) -> bool:
    """Whether some rule allows this request, resourceNames included (as the API server)."""
    for rule in rules():
        if (verb, group, resource) not in triples(rule):
            continue
        names = rule.get("resourceNames")
        if not names or name in names:
            return True
    return False


def request_triple(path: str, verb: str) -> tuple[str, str, str, str | None]:
    parts = [p for p in path.split("/") if p]
    if parts[0] == "api":
        group, rest = "", parts[2:]
    else:
        group, rest = parts[1], parts[3:]
    if rest and rest[0] == "namespaces":
        rest = rest[2:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) == 3 else "")
    name = rest[1] if len(rest) >= 2 else None
    return verb, group, resource, name


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(1_700_000_000.0)


@pytest.fixture
async def kube(clock: VirtualClock) -> AsyncIterator[FakeKube]:
    async with FakeKube(clock=clock, crd_dir=CRDS) as server:
        yield server


@pytest.fixture
async def api(kube: FakeKube) -> AsyncIterator[ApiClient]:
    async with kube.api_client() as client:
        yield client


def decision(target: str, replicas: int, rate: float | None = None) -> Decision:
    return Decision(
        target=target,
        ts=1_700_000_000.0,
        policy="queue",
        current=1,
        ready=1,
        starting=0,
        proposal=replicas,
        replicas=replicas,
        token_rate=rate,
        token_rate_per_replica=None if rate is None else rate / replicas,
        reason="rbac check",
        signals_ok=True,
    )


def seed(kube: FakeKube) -> None:
    kube.seed(
        {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": "iris", "namespace": NS},
            "spec": {"template": {"spec": {"containers": [{"image": "sklearn"}]}}},
            "status": {"latestReadyRevisionName": "iris-00001"},
        }
    )
    kube.seed(
        {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Revision",
            "metadata": {
                "name": "iris-00001",
                "namespace": NS,
                "labels": {"serving.knative.dev/service": "iris"},
                "annotations": {"autoscaling.knative.dev/min-scale": "1"},
            },
            "spec": {"containers": [{"image": "sklearn"}]},
        }
    )
    kube.seed(
        {
            "apiVersion": "autoscaling.internal.knative.dev/v1alpha1",
            "kind": "PodAutoscaler",
            "metadata": {"name": "iris-00001", "namespace": NS},
            "spec": {
                "protocolType": "http1",
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
            },
        }
    )
    kube.seed(
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {
                "name": "chat",
                "namespace": NS,
                "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"},
            },
            "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}}}},
            "status": {"deploymentMode": "RawDeployment"},
        }
    )
    labels = {"app": "raw"}
    kube.seed(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "raw", "namespace": NS},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "main", "image": "img"}]},
                },
            },
        }
    )
    kube.seed(
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": "chat", "namespace": NS},
            "spec": {
                "scaleTargetRef": {"name": "chat-predictor"},
                "triggers": [{"type": "metrics-api", "metadata": {"url": "http://x"}}],
            },
        }
    )
    kube.add_pod(NS, "raw-1", labels)
    kube.add_pod(NS, "iris-1", {"serving.knative.dev/service": "iris"})
    kube.add_pod(
        NS, "chat-1", {"serving.kserve.io/inferenceservice": "chat", "component": "predictor"}
    )


async def test_everything_runs_under_exactly_the_role(
    kube: FakeKube, api: ApiClient, clock: VirtualClock
) -> None:
    seed(kube)
    kube.allow(*{t for rule in rules() for t in triples(rule)})
    caller = ApiCaller(
        clock,
        limiter=TokenBucket(clock, rate=1000, burst=1000),
        retry=RetryPolicy(),
        rng=random.Random(1),
    )
    events = EventRecorder(api, caller, clock)
    shared: dict[str, Any] = {"caller": caller, "events": events}
    outcomes = []

    # Sources: list+watch of pods and of a Deployment target.
    targets = [
        TargetRef("Service", NS, "iris"),
        TargetRef("InferenceService", NS, "chat"),
        TargetRef("Deployment", NS, "raw"),
    ]
    status = KubeStatusSource(api, clock)
    try:
        await status.start(targets)
        # One shared watch per (kind, namespace): the pods of NS, and its Deployments.
        await kube.until(lambda: kube.watch_count("pods") == 1 and kube.watch_count("deployments"))
        report = await status.collect(targets)
        assert report.errors == {}
        assert {o.target for o in report.observations} == {t.key for t in targets}
    finally:
        await status.close()

    # Actuators: each engine, each knob.
    iris = TargetRef("Service", NS, "iris")
    for version in ("1.21", "1.20"):  # the Revision, then the PodAutoscaler
        knative = KnativeActuator(api, clock, knative_version=version, **shared)
        outcomes.append(await knative.apply(iris, decision(iris.key, 2 + len(outcomes)), None))
    chat = TargetRef("InferenceService", NS, "chat")
    kserve = KServeActuator(api, clock, **shared)
    outcomes.append(await kserve.apply(chat, decision(chat.key, 3), Actuation(mode="floor")))
    raw = TargetRef("Deployment", NS, "raw")
    deployment = DeploymentActuator(api, clock, **shared)
    outcomes.append(await deployment.apply(raw, decision(raw.key, 4), None))
    board = PublishedDecisions(clock)
    keda = KedaActuator(api, clock, decisions=board, **shared)
    owned = KedaActuation(owned=True, min_replicas=1, max_replicas=9)
    outcomes.append(await keda.apply(chat, decision(chat.key, 3), owned))
    outcomes.append(await keda.set_paused_replicas(NS, "chat", 2, reason="rbac check"))
    tokens = TokenLimitsPublisher(api, clock, decisions=board, min_interval_seconds=0, **shared)
    outcomes.append(await tokens.apply(chat, decision(chat.key, 3, 3000.0), None))  # create
    outcomes.append(await tokens.apply(chat, decision(chat.key, 3, 6000.0), None))  # patch
    for out in outcomes:
        assert out.applied and out.wrote and out.error is None, out

    # Canary rollouts (docs/rollouts.md): a Service whose traffic follows the latest revision is
    # pinned to it (patch services); no analysis or webhook is reached.
    rollouts = RolloutController(
        api, clock, **shared, analyzer=None, hooks=None, metrics=RolloutMetrics(CollectorRegistry())
    )
    rollout = Rollout.model_validate(
        {
            "steps": [50],
            "analysis": {
                "prometheus": {"url": "http://prom:9090"},
                "metrics": [{"name": "error_rate", "query": "q", "max": 0.01}],
            },
        }
    )
    pinned = await rollouts.step(iris, rollout)
    assert pinned.transitions == ["RolloutTrafficPinned"] and pinned.error == "", pinned

    # Selector targets (autoscaler/service/selectors.py): a list of each kind by label.
    selector_policy = parse_policy(
        "apiVersion: autoscaler.kserve.io/v1alpha1\n"
        "kind: AutoscalingPolicy\n"
        "metadata: {name: selectors}\n"
        "spec:\n  targets:\n"
        + "".join(
            f"    - {{kind: {kind}, namespace: {NS}, selector: {{matchLabels: {{a: b}}}},"
            " policy: {name: static, params: {replicas: 1}}}\n"
            for kind in ("InferenceService", "Service", "Deployment")
        )
    )
    resolver = SelectorResolver(api, clock, caller=caller)
    await resolver.resolve(selector_policy, ())
    assert resolver.failures == 0 and resolver.lists == 3

    # Leader election: create, renew (get + update), release.
    elector = LeaderElector(api, LEASE_NS, "kserve-autoscaler", "pod-a", clock)
    await elector._attempt()
    await elector._attempt()
    assert elector.is_leader
    assert await elector.release()

    forbidden = [r for r in kube.requests if r.status == 403]
    assert forbidden == []
    seen = set()
    for r in kube.requests:
        verb, group, resource, name = request_triple(r.path, r.verb)
        assert allowed_by_name(verb, group, resource, name), (r.method, r.path)
        seen.add((verb, group, resource))
    granted = {t for rule in rules() for t in triples(rule)}
    assert seen == granted, f"granted but never used: {sorted(granted - seen)}"
