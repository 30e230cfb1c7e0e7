"""The live service runs the rollout controller (autoscaler/service/app.py's hook): the leader
steps every target with a rollout spec each tick, holds it above zero, and serves the rollout
metrics. Real time against the fake API server (as tests/e2e), bounded waits of a few ticks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.service.app import open_service, start_http
from autoscaler.service.clock import SystemClock
from autoscaler.service.settings import Settings
from autoscaler.testing.fake_kube import FakeKube
from autoscaler.traffic.rollout import STATE_ANNOTATION

pytestmark = pytest.mark.slow

CLOCK = SystemClock()
NS = "llm"
KN = "serving.knative.dev"

POLICY = """\
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {name: canary}
spec:
  targets:
    - kind: Service
      namespace: llm
      name: chat
      policy: {name: static, params: {replicas: 1}}
      actuation: {engine: knative, mode: floor}
      rollout:
        steps: [10, 100]
        intervalSeconds: 60
        analysis:
          prometheus: {url: "http://127.0.0.1:9"}
          intervalSeconds: 30
          metrics:
            - {name: error_rate, query: 'sum(errors{revision_name="{canary}"})', max: 0.01}
"""


def revision(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{KN}/v1",
        "kind": "Revision",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"serving.knative.dev/service": "chat"},
            "annotations": {},
        },
        "spec": {"containers": [{"image": "vllm/vllm-openai:v0.10"}]},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "actualReplicas": 1,
            "desiredReplicas": 1,
        },
    }


def ksvc() -> dict[str, Any]:
    pinned = {"revisionName": "chat-00001", "percent": 100, "latestRevision": False}
    return {
        "apiVersion": f"{KN}/v1",
        "kind": "Service",
        "metadata": {"name": "chat", "namespace": NS},
        "spec": {
            "template": {"spec": {"containers": [{"image": "vllm/vllm-openai:v0.10"}]}},
            "traffic": [pinned],
        },
        "status": {
            "latestCreatedRevisionName": "chat-00002",
            "latestReadyRevisionName": "chat-00002",
        },
    }


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = CLOCK.now() + timeout
    while not predicate():
        if CLOCK.now() > deadline:
            pytest.fail(f"no {what} within {timeout} s")
        await CLOCK.sleep(0.05)


async def test_the_leader_steps_rollouts_each_tick(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    async with FakeKube(clock=CLOCK) as kube:
        kube.seed(revision("chat-00001"))
        kube.seed(revision("chat-00002"))
        kube.seed(ksvc())
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        settings = Settings(
            config=str(policy),
            kubeconfig=kubeconfig,
            tick_seconds=0.1,
            listen="127.0.0.1:0",
            keda_grpc_listen="",
            lease_name="rollout-wiring",
            identity="wiring-0",
            log_json=False,
        )
        async with open_service(settings) as svc:
            runner = await start_http(svc)
            try:

                def shifted() -> bool:
                    obj = kube.object(KN, "services", NS, "chat")
                    return obj is not None and any(
                        t["revisionName"] == "chat-00002" and t["percent"] == 10
                        for t in obj["spec"]["traffic"]
                    )

                await eventually(shifted, "10% to the canary")
                rev = kube.object(KN, "revisions", NS, "chat-00002")
                assert rev is not None
                state = json.loads(rev["metadata"]["annotations"][STATE_ANNOTATION])
                assert state["shifted"] is True and state["stable"] == "chat-00001"
                await eventually(
                    lambda: svc.engine.targets["llm/chat"].hold_nonzero, "the scale-to-zero hold"
                )
                port = runner.addresses[0][1]
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"http://127.0.0.1:{port}/metrics") as resp,
                ):
                    text = await resp.text()
                samples = {
                    (s.name, s.labels.get("target")): s.value
                    for f in text_string_to_metric_families(text)
                    for s in f.samples
                }
                assert samples[("autoscaler_rollout_canary_weight_percent", "llm/chat")] == 10
                reasons = {e["reason"] for e in kube.objects("", "events", NS)}
                assert {"RolloutStarted", "RolloutStepShifted"} <= reasons
                # The canary's floor covers its share (10% of 1 stable replica: 1); the knative
                # actuator, which writes the latest ready revision (the canary), may set it first.
                assert rev["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "1"
            finally:
                await runner.cleanup()
