"""Shared fixtures of the rollout tests: the fake Kubernetes API server (real CRD schemas, RBAC
limited to the controller's API_CALLS), a VirtualClock, and a Harness that builds controllers
(a new one is a restarted service) and reads back what they wrote."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient
from prometheus_client import CollectorRegistry

from autoscaler.actuators import ApiCaller, EventRecorder, RetryPolicy, TokenBucket
from autoscaler.config.rollout import Analysis, Rollout, Webhook
from autoscaler.core.types import TargetRef
from autoscaler.testing.clock import VirtualClock
from autoscaler.testing.fake_kube import FakeKube, shared_crd_dir
from autoscaler.traffic.rollout import (
    API_CALLS,
    STATE_ANNOTATION,
    CheckResult,
    HookResult,
    RolloutController,
    RolloutMetrics,
    RolloutState,
    StepResult,
)

CRDS = shared_crd_dir()
NS = "llm"
KN = "serving.knative.dev"
MIN = "autoscaling.knative.dev/min-scale"
SVC = TargetRef("Service", NS, "chat")
GOOD = {"error_rate": 0.001}

ROLLOUT = Rollout.model_validate(
    {
        "steps": [10, 50, 100],
        "intervalSeconds": 60,
        "progressDeadlineSeconds": 600,
        "analysis": {
            "prometheus": {"url": "http://prom:9090"},
            "intervalSeconds": 30,
            "failedChecks": 3,
            "metrics": [{"name": "error_rate", "query": "q{canary}", "max": 0.01}],
        },
    }
)


class ScriptedAnalysis:
    """The Analyzer protocol: returns ``values`` and records each call."""

    def __init__(self) -> None:
        self.values: dict[str, float | None] = dict(GOOD)
        self.calls: list[tuple[str, str, str]] = []

    async def measure(
        self, target: TargetRef, canary: str, stable: str, analysis: Analysis
    ) -> CheckResult:
        self.calls.append((target.key, canary, stable))
        return CheckResult(dict(self.values))


class ScriptedHooks:
    def __init__(self) -> None:
        self.ok = True
        self.payloads: list[dict[str, Any]] = []

    async def run(self, hooks: Iterable[Webhook], payload: Mapping[str, Any]) -> HookResult:
        self.payloads.append(dict(payload))
        return HookResult(self.ok, "" if self.ok else "webhook smoke: HTTP 503")


# --- fixtures and builders -------------------------------------------------------------------


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
async def kube(clock: VirtualClock) -> AsyncIterator[FakeKube]:
    async with FakeKube(clock=clock, crd_dir=CRDS) as server:
        server.allow(*API_CALLS)  # the controller's RBAC, nothing more
        yield server


@pytest.fixture
async def api(kube: FakeKube) -> AsyncIterator[ApiClient]:
    async with kube.api_client() as client:
        yield client


def revision(name: str, actual: int, *, ready: str = "True", **annotations: str) -> dict[str, Any]:
    service = name.rsplit("-", 1)[0]
    return {
        "apiVersion": f"{KN}/v1",
        "kind": "Revision",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"serving.knative.dev/service": service},
            "annotations": dict(annotations),
        },
        "spec": {"containers": [{"image": "vllm/vllm-openai:v0.10"}]},
        "status": {
            "conditions": [{"type": "Ready", "status": ready}],
            "actualReplicas": actual,
            "desiredReplicas": actual,
        },
    }


def ksvc(traffic: list[dict[str, Any]], created: str = "chat-00002") -> dict[str, Any]:
    return {
        "apiVersion": f"{KN}/v1",
        "kind": "Service",
        "metadata": {"name": "chat", "namespace": NS},
        "spec": {
            "template": {"spec": {"containers": [{"image": "vllm/vllm-openai:v0.10"}]}},
            "traffic": traffic,
        },
        "status": {
            "latestCreatedRevisionName": created,
            "latestReadyRevisionName": "chat-00001",
        },
    }


PINNED = [{"revisionName": "chat-00001", "percent": 100, "latestRevision": False, "tag": "stable"}]


class Harness:
    def __init__(self, api: ApiClient, kube: FakeKube, clock: VirtualClock) -> None:
        self.api, self.kube, self.clock = api, kube, clock
        self.analysis: Any = ScriptedAnalysis()
        self.hooks = ScriptedHooks()
        self.holds: list[tuple[str, bool]] = []
        self.registry = CollectorRegistry()
        self.rollout = ROLLOUT
        self.make_revision = revision
        self.make_ksvc = ksvc
        self.controller = self.new_controller()

    def new_controller(self, caller: Any = None) -> RolloutController:
        """A fresh controller: a restarted service (nothing kept in memory)."""
        base = ApiCaller(
            self.clock,
            limiter=TokenBucket(self.clock, rate=1000.0, burst=1000),
            retry=RetryPolicy(),
            rng=random.Random(3),
        )
        self.registry = CollectorRegistry()
        return RolloutController(
            self.api,
            self.clock,
            caller=caller or base,
            events=EventRecorder(self.api, base, self.clock),
            analyzer=self.analysis,
            hooks=self.hooks,
            metrics=RolloutMetrics(self.registry),
            hold=lambda key, hold: self.holds.append((key, hold)),
        )

    async def step(self, ref: TargetRef = SVC, rollout: Rollout | None = None) -> StepResult:
        return await self.controller.step(ref, rollout or self.rollout)

    def revision(self, name: str) -> dict[str, Any]:
        obj = self.kube.object(KN, "revisions", NS, name)
        assert obj is not None
        return obj

    def state(self, name: str = "chat-00002") -> RolloutState:
        return RolloutState.from_json(
            self.revision(name)["metadata"]["annotations"][STATE_ANNOTATION]
        )

    def traffic(self) -> list[tuple[str, int, str]]:
        svc = self.kube.object(KN, "services", NS, "chat")
        assert svc is not None
        return [(t["revisionName"], t["percent"], t.get("tag", "")) for t in svc["spec"]["traffic"]]

    def set_replicas(self, name: str, actual: int, desired: int | None = None) -> None:
        """What Knative's autoscaler would report on the Revision."""

        def change(rev: dict[str, Any]) -> None:
            rev["status"]["actualReplicas"] = actual
            rev["status"]["desiredReplicas"] = actual if desired is None else desired

        self.kube.write(KN, "revisions", NS, name, change)

    def events(self) -> list[str]:
        return [e["reason"] for e in self.kube.objects("", "events", NS)]

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def seed_canary(self, stable_replicas: int = 4) -> None:
        self.kube.seed(revision("chat-00001", stable_replicas, **{MIN: "2"}))
        self.kube.seed(revision("chat-00002", 0, ready="Unknown"))  # just created: cold
        self.kube.seed(ksvc(PINNED))

    def mark_ready(self, name: str) -> None:
        self.kube.write(
            KN,
            "revisions",
            NS,
            name,
            lambda rev: rev["status"].update(conditions=[{"type": "Ready", "status": "True"}]),
        )

    async def to_first_step(self) -> None:
        """Start, pre-scale (the canary becomes ready with 1 replica), shift 10%."""
        r = await self.step()
        assert r.transitions == ["RolloutStarted", "RolloutPreScaling"]
        assert r.waiting == "waiting for 1 canary replicas (0 ready)"
        assert self.revision("chat-00002")["metadata"]["annotations"][MIN] == "1"
        assert self.traffic()[1] == ("chat-00002", 0, "canary")
        self.set_replicas("chat-00002", 1)
        self.mark_ready("chat-00002")
        r = await self.step()
        assert r.transitions == ["RolloutStepShifted"]
        assert self.traffic() == [("chat-00001", 90, "stable"), ("chat-00002", 10, "canary")]

    async def check(self, seconds: float = 30.0) -> StepResult:
        """Move virtual time to the next analysis check and step."""
        self.clock.advance(seconds)
        return await self.step()


@pytest.fixture
def h(api: ApiClient, kube: FakeKube, clock: VirtualClock) -> Harness:
    return Harness(api, kube, clock)
