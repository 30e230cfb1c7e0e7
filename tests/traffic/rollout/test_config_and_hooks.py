"""The rollout block as the loader reports it (FILE:LINE:COL), the shipped example, and the
webhook runner against a real aiohttp server on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from autoscaler.config.loader import load_policy, parse_policy
from autoscaler.config.rollout import Webhook
from autoscaler.core.errors import PolicyConfigError
from autoscaler.testing.prometheus_server import free_port
from autoscaler.traffic.rollout import WebhookRunner

ROOT = Path(__file__).resolve().parents[3]

HEAD = """\
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {name: t}
spec:
  targets:
"""

TARGET = """\
    - kind: {kind}
      name: chat
      policy: {{name: queue, params: {{targetPerReplica: 4}}}}
      rollout:
        steps: {steps}
        intervalSeconds: 60
        analysis:
          prometheus: {{url: "http://prom:9090"}}
          metrics:
            - {{name: error_rate, query: "q", max: 0.01}}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyConfigError) as e:
        parse_policy(text, "p.yaml")
    return [str(p) for p in e.value.problems]


def test_the_shipped_canary_policy_loads() -> None:
    doc = load_policy(ROOT / "policies" / "llm-canary.yaml")
    rollout = doc.spec.targets[0].rollout
    assert rollout is not None
    assert rollout.weights() == (5, 10, 25, 50, 100)
    assert rollout.checks_per_step() == 4
    assert [m.name for m in rollout.analysis.metrics] == [
        "error_rate",
        "latency_p95_seconds",
        "ttft_p95_seconds",
    ]
    assert rollout.webhooks[0].metadata == {"suite": "chat-basic"}


def test_errors_name_file_line_and_field() -> None:
    text = HEAD + TARGET.format(kind="Service", steps="[10, 5]")
    assert problems(text) == [
        "p.yaml:9:7: spec.targets[0].rollout: steps must increase strictly: [10, 5]"
    ]
    text = HEAD + TARGET.format(kind="Deployment", steps="[10]")
    assert problems(text) == [
        "p.yaml:9:7: spec.targets[0].rollout: a rollout shifts traffic between revisions: "
        "InferenceService or Service only"
    ]
    text = HEAD + TARGET.format(kind="Service", steps="[10]").replace("max: 0.01", "maks: 0.01")
    assert problems(text) == [
        "p.yaml:15:46: spec.targets[0].rollout.analysis.metrics[0].maks: unknown key 'maks'"
    ]


# -- webhooks -------------------------------------------------------------------------------


class HookServer:
    def __init__(self) -> None:
        self.status = 200
        self.bodies: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        return web.Response(status=self.status, text="ok")


@pytest.fixture
async def tester() -> AsyncIterator[tuple[HookServer, str]]:
    t = HookServer()
    app = web.Application()
    app.router.add_post("/smoke", t.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield t, f"http://127.0.0.1:{port}/smoke"
    await runner.cleanup()


async def test_webhooks_post_the_step_and_fail_on_non_2xx(tester: tuple[HookServer, str]) -> None:
    t, url = tester
    hooks = [
        Webhook(name="smoke", url=url, metadata={"suite": "basic"}),
        Webhook(name="load", url=url),
    ]
    payload = {"target": "llm/chat", "canary": "chat-2", "step": 1, "weight": 10}
    async with aiohttp.ClientSession() as session:
        runner = WebhookRunner(session)
        ok = await runner.run(hooks, payload)
        assert ok.ok and ok.detail == ""
        assert t.bodies[0] == {"name": "smoke", "metadata": {"suite": "basic"}, **payload}
        assert [b["name"] for b in t.bodies] == ["smoke", "load"]
        t.status = 503
        t.bodies.clear()
        failed = await runner.run(hooks, payload)
        assert not failed.ok and failed.detail == "webhook smoke: HTTP 503"
        assert len(t.bodies) == 1  # the first failure ends the round
        refused = await runner.run(
            [Webhook(name="gone", url=f"http://127.0.0.1:{free_port()}/x")], payload
        )
        assert not refused.ok and refused.detail.startswith("webhook gone: ClientConnectorError")
    assert json.dumps(t.bodies)  # the bodies were JSON
