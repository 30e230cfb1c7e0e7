"""Rollouts analysed by the real Prometheus server (Debian package ``prometheus``) scraping a
canary pod's exporter on loopback, with the objects on the fake Kubernetes API server.

The analysis goes through ``SourceAnalyzer`` and the service's own ``PrometheusSource``. The
rollout's time is virtual (the fake API server and the controller share a VirtualClock the test
moves); only waiting for Prometheus to show a new value is bounded polling on the real clock, as
in tests/integration/test_real_prometheus.py. Without the binary these tests skip on a developer
machine and fail in CI (``CI`` set).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from kubernetes_asyncio.client import ApiClient

from autoscaler.config.rollout import Rollout
from autoscaler.core.types import TargetRef
from autoscaler.service.clock import SystemClock
from autoscaler.sources.prometheus import PrometheusSource
from autoscaler.testing.clock import VirtualClock
from autoscaler.testing.fake_kube import FakeKube, shared_crd_dir
from autoscaler.testing.prometheus_server import (
    PrometheusServer,
    find_prometheus,
    free_port,
    static_scrape_config,
)
from autoscaler.traffic.rollout import API_CALLS, SourceAnalyzer

CRDS = shared_crd_dir()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(CRDS is None, reason="../shared/crds is not there"),
]

NS = "llm"
SVC = TargetRef("Service", NS, "chat")
SEL = 'namespace="{namespace}", revision_name="{canary}"'
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0)


class CanaryPod:
    """The canary's /metrics: request counts by code and a latency histogram."""

    def __init__(self) -> None:
        self.port = free_port()
        self.ok = 0
        self.errors = 0
        self.latencies: list[float] = []
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def set(self, ok: int, errors: int, latencies: list[float]) -> None:
        self.ok, self.errors, self.latencies = ok, errors, latencies

    async def _metrics(self, request: web.Request) -> web.Response:
        lines = [
            "# TYPE app_requests_total counter",
            f'app_requests_total{{code="200"}} {self.ok}',
            f'app_requests_total{{code="500"}} {self.errors}',
            "# TYPE app_request_seconds histogram",
        ]
        for le in (*BUCKETS, float("inf")):
            n = sum(1 for x in self.latencies if x <= le)
            bound = "+Inf" if le == float("inf") else repr(le)
            lines.append(f'app_request_seconds_bucket{{le="{bound}"}} {n}')
        lines.append(f"app_request_seconds_sum {sum(self.latencies)}")
        lines.append(f"app_request_seconds_count {len(self.latencies)}")
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


HEALTHY = (999, 1, [0.04] * 90 + [0.2] * 10)  # 0.1% errors, p95 in the 0.1-0.25 bucket
SPIKE = (800, 200, [0.04] * 90 + [0.2] * 10)  # 20% errors


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    found = find_prometheus()
    if found:
        return found
    if "CI" in os.environ:
        pytest.fail("the prometheus binary is missing in CI: .ci/run installs the Debian package")
    pytest.skip("the prometheus binary is not installed (apt-get install prometheus)")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pod() -> AsyncIterator[CanaryPod]:
    p = CanaryPod()
    p.set(*HEALTHY)
    await p.start()
    yield p
    await p.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def prom(prometheus_binary: str, pod: CanaryPod) -> AsyncIterator[PrometheusServer]:
    labels = {"namespace": NS, "revision_name": "chat-00002"}
    job = static_scrape_config("canary", [f"127.0.0.1:{pod.port}"], labels)
    async with PrometheusServer([job], binary=prometheus_binary, scrape_interval=1.0) as server:
        yield server


# The conftest's kube and api, on this module's event loop (Prometheus is shared by the module).
@pytest_asyncio.fixture(loop_scope="module")
async def kube(clock: VirtualClock) -> AsyncIterator[FakeKube]:
    async with FakeKube(clock=clock, crd_dir=CRDS) as server:
        server.allow(*API_CALLS)
        yield server


@pytest_asyncio.fixture(loop_scope="module")
async def api(kube: FakeKube) -> AsyncIterator[ApiClient]:
    async with kube.api_client() as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def rollout_for(url: str, revision: str = "{canary}") -> Rollout:
    sel = SEL.replace("{canary}", revision)
    return Rollout.model_validate(
        {
            "steps": [10, 50, 100],
            "intervalSeconds": 60,
            "analysis": {
                "prometheus": {"url": url, "timeoutSeconds": 5, "retries": 1},
                "intervalSeconds": 30,
                "failedChecks": 3,
                "metrics": [
                    {
                        "name": "error_rate",
                        "query": f'sum(app_requests_total{{{sel}, code=~"5.."}}) '
                        f"/ sum(app_requests_total{{{sel}}})",
                        "max": 0.01,
                    },
                    {
                        "name": "latency_p95_seconds",
                        "query": "histogram_quantile(0.95, sum by (le) "
                        f"(app_request_seconds_bucket{{{sel}}}))",
                        "max": 0.5,
                    },
                ],
            },
        }
    )


@pytest.fixture
def real(h: Any, prom: PrometheusServer, session: aiohttp.ClientSession) -> Any:
    """The harness analysing through the real server."""
    clock = SystemClock()
    h.analysis = SourceAnalyzer(lambda cfgs: PrometheusSource(session, cfgs, clock=clock))
    h.rollout = rollout_for(prom.url)
    h.controller = h.new_controller()
    return h


async def show(h: Any, pod: CanaryPod, values: tuple[int, int, list[float]]) -> None:
    """Set the pod's counters and wait (real time, bounded) until Prometheus answers with them."""
    pod.set(*values)
    ok, errors, _ = values
    expected = errors / (ok + errors)
    clock = SystemClock()
    deadline = clock.now() + 20.0
    while True:
        got = await h.analysis.measure(SVC, "chat-00002", "chat-00001", h.rollout.analysis)
        value = got.values["error_rate"]
        if value is not None and abs(value - expected) < 1e-9:
            assert got.values["latency_p95_seconds"] is not None
            return
        if clock.now() > deadline:
            pytest.fail(f"Prometheus did not show error_rate {expected} within 20 s (got {value})")
        await clock.sleep(0.25)


async def test_a_healthy_rollout_promotes(real: Any, pod: CanaryPod) -> None:
    h = real
    await show(h, pod, HEALTHY)
    h.seed_canary()
    await h.to_first_step()
    # The stable shrinks as it loses traffic; the canary is pre-scaled to its share of the
    # 4 replicas the target needs (2 for 50%, 4 for 100%).
    for stable, replicas in ((3, 2), (2, 4)):
        h.set_replicas("chat-00001", stable)
        await h.check()
        r = await h.check()
        assert r.transitions[0] == "RolloutStepPassed"
        h.set_replicas("chat-00002", replicas)
        r = await h.step()
        assert r.transitions == ["RolloutStepShifted"]
    await h.check()
    r = await h.check()
    assert r.transitions == ["RolloutPromoted"]
    assert h.traffic() == [("chat-00002", 100, "stable")]
    assert h.metric("autoscaler_rollout_checks_total", target=SVC.key, result="passed") == 6


async def test_an_error_spike_rolls_back_within_the_threshold(real: Any, pod: CanaryPod) -> None:
    h = real
    await show(h, pod, HEALTHY)
    h.seed_canary()
    await h.to_first_step()
    await show(h, pod, SPIKE)
    reasons = [(await h.check()).transitions for _ in range(3)]
    assert reasons == [["RolloutCheckFailed"], ["RolloutCheckFailed"], ["RolloutRolledBack"]]
    assert h.traffic() == [("chat-00001", 100, "stable"), ("chat-00002", 0, "canary")]
    st = h.state()
    assert st.phase == "RolledBack" and st.failed == 3
    assert "error_rate 0.2 outside [-inf, 0.01]" in st.reason


async def test_a_cold_canary_does_not_roll_back(real: Any, pod: CanaryPod) -> None:
    h = real
    await show(h, pod, HEALTHY)
    h.seed_canary()
    await h.to_first_step()
    await show(h, pod, SPIKE)  # what a canary looks like while its replicas start
    h.set_replicas("chat-00002", 1, desired=4)
    for _ in range(5):
        r = await h.check()
        assert "RolloutCheckFailed" not in r.transitions
    assert h.state().failed == 0 and h.traffic()[1][1] == 10
    await show(h, pod, HEALTHY)
    h.set_replicas("chat-00002", 4)
    await h.check()
    r = await h.check()
    assert r.transitions[0] == "RolloutStepPassed"


async def test_a_restart_mid_rollout_resumes(real: Any, pod: CanaryPod) -> None:
    h = real
    await show(h, pod, HEALTHY)
    h.seed_canary()
    await h.to_first_step()
    await show(h, pod, SPIKE)
    await h.check()
    await h.check()
    assert h.state().failed == 2
    h.controller = h.new_controller()  # the service restarts
    r = await h.check()  # still spiking: the third failure, counted from the object's state
    assert r.transitions == ["RolloutRolledBack"]
    await show(h, pod, HEALTHY)


async def test_no_series_is_inconclusive_never_a_pass(real: Any, prom: PrometheusServer) -> None:
    h = real
    h.rollout = rollout_for(prom.url, revision="chat-99999")  # a revision nobody scrapes
    await show_any(h)
    h.seed_canary()
    await h.to_first_step()
    for _ in range(4):
        r = await h.check()
        assert r.transitions == ["RolloutCheckInconclusive"]
    st = h.state()
    assert (st.step, st.passed, st.failed) == (0, 0, 0)


async def show_any(h: Any) -> None:
    """Prometheus answers (an empty vector for the unscraped revision): the analysis says None."""
    got = await h.analysis.measure(SVC, "chat-00002", "chat-00001", h.rollout.analysis)
    assert got.values == {"error_rate": None, "latency_p95_seconds": None}
