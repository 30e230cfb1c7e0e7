"""PrometheusSource against the real Prometheus server scraping exporters on loopback.

Two exporters stand for two pods of ``llm/chat``, serving vLLM-shaped gauges and KServe's request
histogram with values the tests change. One ``prometheus`` (Debian package) per module, on a free
port, scrapes them every second (it is shared because Prometheus hands new targets to its scrape
loop only every 5 s, so a fresh server costs 5 s before its first scrape). Each test puts the pods
back to known values and waits until Prometheus shows them, then reads through the source:
values, the server's timestamps, staleness when the pods stop (missing, never zero), recovery.

Without the binary these tests skip on a developer machine, and fail in CI (``CI`` set), where
``.ci/run`` installs it. Waiting is bounded polling on the real clock (``SystemClock.sleep``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from autoscaler.config.signals import PrometheusSource as PrometheusConfig
from autoscaler.config.signals import PromQuery
from autoscaler.core.protocols import SourceReport
from autoscaler.core.types import Observation, TargetRef
from autoscaler.service.clock import SystemClock, perf_timer
from autoscaler.sources.prometheus import PrometheusSource
from autoscaler.testing.fake_prometheus import FakePrometheusAPI, Reply
from autoscaler.testing.prometheus_server import (
    PrometheusServer,
    PrometheusStartError,
    find_prometheus,
    free_port,
    static_scrape_config,
)

T = TypeVar("T")

CHAT = TargetRef("InferenceService", "llm", "chat")
SEL = 'namespace="{namespace}", isvc="{name}"'
QUERIES = {
    "requests_waiting": f"sum(vllm:num_requests_waiting{{{SEL}}})",
    "kv_cache_usage": f"avg(vllm:kv_cache_usage_perc{{{SEL}}})",
    "requests_running": f"scalar(sum(vllm:num_requests_running{{{SEL}}}))",
    "requests_total": f"sum(request_predict_seconds_count{{{SEL}}})",
    "latency_p95_seconds": (
        f"histogram_quantile(0.95, sum by (le) (request_predict_seconds_bucket{{{SEL}}}))"
    ),
}
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0)

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


class Exporter:
    """One pod's /metrics on a fixed loopback port. ``stop`` is a real outage (connections
    refused), ``start`` again brings the pod back on the same address."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.port = free_port()
        self.waiting = 0.0
        self.running = 0.0
        self.kv_cache = 0.0
        self.latencies: list[float] = []  # observations of KServe's request_predict_seconds
        self._runner: web.AppRunner | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        m = f'model_name="{self.model}"'
        lines = [
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f'vllm:num_requests_waiting{{engine="0",{m}}} {self.waiting}',
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f'vllm:num_requests_running{{engine="0",{m}}} {self.running}',
            "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f'vllm:kv_cache_usage_perc{{engine="0",{m}}} {self.kv_cache}',
            "# HELP request_predict_seconds predict latency",
            "# TYPE request_predict_seconds histogram",
        ]
        for le in (*BUCKETS, float("inf")):
            n = sum(1 for x in self.latencies if x <= le)
            bound = "+Inf" if le == float("inf") else repr(le)
            lines.append(f'request_predict_seconds_bucket{{le="{bound}",{m}}} {n}')
        lines.append(f"request_predict_seconds_sum{{{m}}} {sum(self.latencies)}")
        lines.append(f"request_predict_seconds_count{{{m}}} {len(self.latencies)}")
        return web.Response(
            text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8"
        )


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    found = find_prometheus()
    if found:
        return found
    if "CI" in os.environ:
        pytest.fail("the prometheus binary is missing in CI: .ci/run installs the Debian package")
    pytest.skip("the prometheus binary is not installed (apt-get install prometheus)")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def exporters() -> AsyncIterator[tuple[Exporter, Exporter]]:
    a, b = Exporter("chat"), Exporter("chat")
    yield a, b
    await a.stop()
    await b.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def prom(
    prometheus_binary: str, exporters: tuple[Exporter, Exporter]
) -> AsyncIterator[PrometheusServer]:
    job = static_scrape_config(
        "pods", [p.address for p in exporters], {"namespace": "llm", "isvc": "chat"}
    )
    async with PrometheusServer([job], binary=prometheus_binary, scrape_interval=1.0) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest_asyncio.fixture(loop_scope="module")
async def pods(
    prom: PrometheusServer, exporters: tuple[Exporter, Exporter], session: aiohttp.ClientSession
) -> tuple[Exporter, Exporter]:
    """Both pods up with known values, and Prometheus showing them (queue depth 3 + 4)."""
    a, b = exporters
    a.waiting, b.waiting = 3, 4
    a.running, b.running = 2, 1
    a.kv_cache, b.kv_cache = 0.5, 0.25
    a.latencies = [0.03, 0.07, 0.2, 0.2, 0.4, 0.9]
    b.latencies = [0.04, 0.3, 0.6]
    await a.start()
    await b.start()
    waiting = {"requests_waiting": QUERIES["requests_waiting"]}
    src = PrometheusSource(session, {CHAT.key: config(prom.url, waiting)}, clock=SystemClock())
    await until(SystemClock(), lambda: _equals(src, 7.0), "both pods scraped", timeout=20)
    return a, b


def config(url: str, queries: dict[str, str], **kw: float) -> PrometheusConfig:
    return PrometheusConfig(
        url=url,
        queries=tuple(PromQuery(signal=s, query=q) for s, q in queries.items()),
        **kw,
    )


def by_signal(report: SourceReport) -> dict[str, Observation]:
    return {o.signal: o for o in report.observations}


async def until(
    clock: SystemClock,
    probe: Callable[[], Awaitable[T | None]],
    what: str,
    timeout: float = 15.0,
) -> T:
    """Poll ``probe`` every 0.2 s until it returns something; fail after ``timeout`` seconds."""
    deadline = clock.now() + timeout
    while True:
        result = await probe()
        if result is not None:
            return result
        if clock.now() > deadline:
            pytest.fail(f"no {what} within {timeout} s")
        await clock.sleep(0.2)


async def _equals(src: PrometheusSource, expected: float) -> SourceReport | None:
    """The report when its one observation has the expected value, else None (poll again)."""
    report = await src.collect([CHAT])
    return report if [o.value for o in report.observations] == [expected] else None


def percentile_from_buckets(latencies: Sequence[float], q: float) -> float:
    """What histogram_quantile computes: linear interpolation inside the bucket of rank q*n."""
    total = len(latencies)
    rank = q * total
    lower, below = 0.0, 0
    for le in BUCKETS:
        count = sum(1 for x in latencies if x <= le)
        if count >= rank:
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return BUCKETS[-1]


async def test_values_and_timestamps_from_the_real_server(
    prom: PrometheusServer, pods: tuple[Exporter, Exporter], session: aiohttp.ClientSession
) -> None:
    clock = SystemClock()
    a, b = pods
    src = PrometheusSource(session, {CHAT.key: config(prom.url, QUERIES)}, clock=clock)

    started = clock.now()
    report = await src.collect([CHAT])
    assert report.errors == {}
    seen = by_signal(report)
    assert seen["requests_waiting"].value == 7.0
    assert seen["kv_cache_usage"].value == pytest.approx(0.375)
    assert seen["requests_running"].value == 3.0  # a scalar() result
    assert seen["requests_total"].value == 9.0
    expected_p95 = percentile_from_buckets(a.latencies + b.latencies, 0.95)
    assert seen["latency_p95_seconds"].value == pytest.approx(expected_p95)
    for ob in report.observations:
        # Prometheus's evaluation time (milliseconds, the server's clock), never ahead of ours.
        assert started - 1.0 <= ob.ts <= clock.now()
        assert ob.target == "llm/chat"

    a.waiting, b.waiting = 10, 1

    async def changed() -> Observation | None:
        ob = by_signal(await src.collect([CHAT])).get("requests_waiting")
        return ob if ob is not None and ob.value == 11.0 else None

    before = clock.now()
    newer = await until(clock, changed, "the changed queue depth", timeout=10)
    assert newer.ts >= before - 1.0


async def test_staleness_after_the_pods_stop_and_recovery(
    prom: PrometheusServer, pods: tuple[Exporter, Exporter], session: aiohttp.ClientSession
) -> None:
    clock = SystemClock()
    a, b = pods
    waiting = {"requests_waiting": QUERIES["requests_waiting"]}
    src = PrometheusSource(session, {CHAT.key: config(prom.url, waiting)}, clock=clock)
    seen: list[float] = []

    async def value(expected: float | None) -> SourceReport | None:
        report = await src.collect([CHAT])
        seen.extend(o.value for o in report.observations)
        if expected is None:
            return report if not report.observations else None
        return report if [o.value for o in report.observations] == [expected] else None

    await until(clock, lambda: value(7.0), "the first value")

    # One pod goes away: its series goes stale and the sum is the other pod's alone.
    await a.stop()
    await until(clock, lambda: value(4.0), "the sum without the stopped pod", timeout=10)
    await b.stop()

    # Both gone: the query has no series. Missing data, counted, never a zero.
    down = await until(clock, lambda: value(None), "missing data after both pods stopped", 10)
    assert down.errors == {("llm/chat", "empty"): 1}
    assert 0.0 not in seen
    assert set(seen) <= {7.0, 3.0, 4.0}

    # They come back with new values: so does the signal.
    a.waiting, b.waiting = 5, 6
    await a.start()
    await b.start()
    back = await until(clock, lambda: value(11.0), "recovery after the pods returned", 10)
    assert back.errors == {}
    assert back.observations[0].ts >= clock.now() - 2.0


async def test_queries_that_do_not_name_one_number(
    prom: PrometheusServer, pods: tuple[Exporter, Exporter], session: aiohttp.ClientSession
) -> None:
    clock = SystemClock()
    queries = {
        "requests_waiting": QUERIES["requests_waiting"],
        "per_pod": f"vllm:num_requests_waiting{{{SEL}}}",  # two series: one per pod
        "typo": f"sum(vllm:num_requests_waitin{{{SEL}}})",  # no such series
    }
    src = PrometheusSource(session, {CHAT.key: config(prom.url, queries)}, clock=clock)

    report = await src.collect([CHAT])
    assert [o.signal for o in report.observations] == ["requests_waiting"]
    assert report.errors == {("llm/chat", "ambiguous"): 1, ("llm/chat", "empty"): 1}


async def test_rejected_queries_are_not_retried(
    prom: PrometheusServer, pods: tuple[Exporter, Exporter], session: aiohttp.ClientSession
) -> None:
    clock = SystemClock()
    async with FakePrometheusAPI(upstream=prom.url) as proxy:  # counts what reaches Prometheus
        queries = {
            # 400: PromQL that does not parse.
            "unparsable": f"sum(vllm:num_requests_waiting{{{SEL}}}",
            # 422: parses, fails at execution (both pods match on namespace: many-to-many).
            "many_to_many": (
                f"vllm:num_requests_waiting{{{SEL}}} * on (namespace) "
                f"vllm:num_requests_running{{{SEL}}}"
            ),
        }
        src = PrometheusSource(
            session, {CHAT.key: config(proxy.url, queries, retries=3)}, clock=clock
        )

        async def rejected() -> SourceReport | None:
            proxy.queries.clear()
            report = await src.collect([CHAT])
            return report if report.errors.get(("llm/chat", "bad_query")) == 2 else None

        report = await until(clock, rejected, "both queries rejected")
        assert report.observations == []
        assert len(proxy.queries) == 2  # one request each: a 400/422 is never retried
        assert not src.retried


async def test_a_server_error_is_retried_and_then_succeeds(
    prom: PrometheusServer, pods: tuple[Exporter, Exporter], session: aiohttp.ClientSession
) -> None:
    clock = SystemClock()
    async with FakePrometheusAPI(upstream=prom.url) as proxy:
        waiting = {"requests_waiting": QUERIES["requests_waiting"]}
        src = PrometheusSource(
            session, {CHAT.key: config(proxy.url, waiting, retries=2)}, clock=clock
        )
        proxy.queries.clear()
        proxy.script(Reply.error(500, "internal", "boom"))
        report = await src.collect([CHAT])
        assert [o.value for o in report.observations] == [7.0]
        assert report.errors == {}
        assert len(proxy.queries) == 2
        assert src.retried == {"http_error": 1}


async def test_a_prometheus_that_never_answers_times_out(session: aiohttp.ClientSession) -> None:
    # No real Prometheus needed: the server accepts the connection and says nothing.
    clock = SystemClock()
    async with FakePrometheusAPI() as stuck:
        stuck.script(*[Reply.hang()] * 4)
        waiting = {"requests_waiting": QUERIES["requests_waiting"]}
        cfg = config(stuck.url, waiting, timeout_seconds=0.2, retries=1)
        src = PrometheusSource(session, {CHAT.key: cfg}, clock=clock, backoff_base=0.05)
        t0 = perf_timer()
        report = await src.collect([CHAT])
        elapsed = perf_timer() - t0
    assert report.observations == []
    assert report.errors == {("llm/chat", "timeout"): 1}
    assert len(stuck.queries) == 2
    assert 0.4 <= elapsed < 2.0  # two 0.2 s attempts and a short backoff, not a hang


async def test_a_server_that_fails_to_start_is_reported_with_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "prometheus"
    fake.write_text("#!/bin/sh\necho 'err: unknown flag --storage.tsdb.path' >&2\nexit 1\n")
    fake.chmod(0o755)
    server = PrometheusServer(binary=str(fake), ready_timeout=5)
    with pytest.raises(PrometheusStartError, match="unknown flag"):
        await server.start()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url
