"""PrometheusSource against a scripted Prometheus API on loopback, on a manual clock.

Backoff sleeps go through the ManualClock, so they take no real time and the tests can read how
long the source waited. The two timeout tests wait for real (50 ms per attempt): a timeout is
an amount of time that has to pass.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import aiohttp
import pytest

from autoscaler.config.models import Target
from autoscaler.config.signals import PrometheusSource as PrometheusConfig
from autoscaler.config.signals import PromQuery
from autoscaler.core.clock import ManualClock
from autoscaler.core.types import TargetRef
from autoscaler.sources import prometheus as prom_mod
from autoscaler.sources.prometheus import (
    PrometheusSource,
    fill_query,
    full_jitter,
    parse_query_response,
    parse_retry_after,
    prometheus_configs,
)
from autoscaler.testing.fake_prometheus import FakePrometheusAPI, Reply, scalar_body, vector_body
from autoscaler.testing.prometheus_server import free_port

CHAT = TargetRef("InferenceService", "llm", "chat")
CODE = TargetRef("InferenceService", "llm", "code")
WAITING_Q = 'sum(vllm:num_requests_waiting{namespace="{namespace}", isvc="{name}"})'
WAITING_CHAT = 'sum(vllm:num_requests_waiting{namespace="llm", isvc="chat"})'
NOW = 1_700_000_000.0


@pytest.fixture
async def api() -> AsyncIterator[FakePrometheusAPI]:
    async with FakePrometheusAPI() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


def config(url: str, *queries: tuple[str, str], **kw: Any) -> PrometheusConfig:
    qs = queries or (("requests_waiting", WAITING_Q),)
    return PrometheusConfig(
        url=url, queries=tuple(PromQuery(signal=s, query=q) for s, q in qs), **kw
    )


def source(
    session: aiohttp.ClientSession,
    clock: ManualClock,
    configs: dict[str, PrometheusConfig],
    **kw: Any,
) -> PrometheusSource:
    return PrometheusSource(session, configs, clock=clock, rng=random.Random(7), **kw)


# --- pure helpers -------------------------------------------------------------------------------


def test_fill_query_replaces_only_the_placeholders() -> None:
    q = 'sum(rate(x{namespace="{namespace}",pod=~"{name}-.*"}[1m])) by (pod) / {name}'
    assert fill_query(q, CHAT) == 'sum(rate(x{namespace="llm",pod=~"chat-.*"}[1m])) by (pod) / chat'
    assert fill_query("up{job=~'a|b'}", CHAT) == "up{job=~'a|b'}"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (vector_body((NOW, "3.5")), (NOW, 3.5)),
        (vector_body((NOW, 0)), (NOW, 0.0)),
        (scalar_body(NOW, "2"), (NOW, 2.0)),
        (vector_body(), "empty"),
        (vector_body((NOW, "1"), (NOW, "2")), "ambiguous"),
        (vector_body((NOW, "NaN")), "nan"),
        (vector_body((NOW, "+Inf")), "inf"),
        (vector_body((NOW, "-Inf")), "inf"),
        (vector_body((NOW, "-0.5")), "negative"),
        (vector_body((NOW, "twelve")), "parse_error"),
        (
            {"status": "success", "data": {"resultType": "scalar", "result": ["soon", "1"]}},
            "parse_error",
        ),
        (
            {"status": "success", "data": {"resultType": "scalar", "result": [NOW, None]}},
            "parse_error",
        ),
        (
            {"status": "success", "data": {"resultType": "scalar", "result": ["NaN", "1"]}},
            "parse_error",
        ),
        (
            {"status": "success", "data": {"resultType": "matrix", "result": []}},
            "unsupported_result",
        ),
        (
            {"status": "success", "data": {"resultType": "string", "result": [NOW, "a"]}},
            "unsupported_result",
        ),
        (
            {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"histogram": [NOW, {}]}]},
            },
            "unsupported_result",
        ),
        ({"status": "error", "errorType": "timeout", "error": "query timed out"}, "query_error"),
        ({"status": "success"}, "parse_error"),
        ({"status": "success", "data": {"resultType": "vector", "result": {}}}, "parse_error"),
        (
            {"status": "success", "data": {"resultType": "vector", "result": [[NOW, "1"]]}},
            "parse_error",
        ),
        ({"status": "success", "data": {"resultType": "scalar", "result": [NOW]}}, "parse_error"),
        (
            {"status": "success", "data": {"resultType": "scalar", "result": [True, "1"]}},
            "parse_error",
        ),
        ({"status": "success", "data": {"resultType": "other", "result": []}}, "parse_error"),
        ([], "parse_error"),
    ],
)
def test_parse_query_response(payload: object, expected: object) -> None:
    assert parse_query_response(payload) == expected


def test_parse_retry_after() -> None:
    assert parse_retry_after(None, NOW) is None
    assert parse_retry_after("", NOW) is None
    assert parse_retry_after("3", NOW) == 3.0
    assert parse_retry_after(" 1.5 ", NOW) == 1.5
    assert parse_retry_after("-4", NOW) == 0.0
    assert parse_retry_after("nan", NOW) is None
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(formatdate(NOW + 20, usegmt=True), NOW) == pytest.approx(20.0)
    assert parse_retry_after(formatdate(NOW - 20, usegmt=True), NOW) == 0.0


def test_configs_come_from_the_targets_that_have_a_prometheus_block() -> None:
    block = {"url": "http://prom:9090", "queries": [{"signal": "rps", "query": "sum(x)"}]}
    with_prom = Target.model_validate(
        {
            "namespace": "llm",
            "name": "chat",
            "policy": {"name": "static"},
            "signals": {"prometheus": block},
        }
    )
    without = Target.model_validate(
        {"namespace": "llm", "name": "code", "policy": {"name": "static"}}
    )
    configs = prometheus_configs([(with_prom.ref(), with_prom), (without.ref(), without)])
    assert list(configs) == ["llm/chat"]
    assert configs["llm/chat"].url == "http://prom:9090"


# --- reading values -----------------------------------------------------------------------------


async def test_reads_the_value_with_the_results_own_timestamp(
    api: FakePrometheusAPI, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    api.values[WAITING_CHAT] = (NOW - 4.25, 7.0)
    src = source(session, clock, {CHAT.key: config(api.url)})
    report = await src.collect([CHAT])
    assert report.errors == {}
    assert [tuple(o) for o in report.observations] == [
        ("llm/chat", "requests_waiting", 7.0, NOW - 4.25)
    ]
    assert api.queries == [WAITING_CHAT]


async def test_scalar_results_and_several_queries_and_targets(
    api: FakePrometheusAPI, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    api.script(Reply(body=scalar_body(NOW - 1, "0.75")))
    api.values['avg(gpu{namespace="llm", isvc="code"})'] = (NOW - 2, 0.5)
    api.values['sum(waiting{namespace="llm", isvc="code"})'] = (NOW - 2, 3.0)
    cfg = config(
        api.url,
        ("gpu_utilization", 'avg(gpu{namespace="{namespace}", isvc="{name}"})'),
        ("requests_waiting", 'sum(waiting{namespace="{namespace}", isvc="{name}"})'),
    )
    src = source(session, clock, {CHAT.key: config(api.url), CODE.key: cfg}, max_concurrency=1)
    report = await src.collect([CHAT, CODE, TargetRef("Service", "other", "unconfigured")])
    assert report.errors == {}
    assert sorted(report.observations) == [
        ("llm/chat", "requests_waiting", 0.75, NOW - 1),
        ("llm/code", "gpu_utilization", 0.5, NOW - 2),
        ("llm/code", "requests_waiting", 3.0, NOW - 2),
    ]
    assert len(api.queries) == 3  # the unconfigured target is not asked about


async def test_a_timestamp_ahead_of_our_clock_is_pulled_back_to_now(
    api: FakePrometheusAPI, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    api.values[WAITING_CHAT] = (NOW + 30, 2.0)  # the server's clock runs ahead of ours
    report = await source(session, clock, {CHAT.key: config(api.url)}).collect([CHAT])
    assert [o.ts for o in report.observations] == [NOW]


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reply(body=vector_body()), "empty"),
        (Reply(body=vector_body((NOW, "1"), (NOW, "2"))), "ambiguous"),
        (Reply(body=vector_body((NOW, "NaN"))), "nan"),
        (Reply(body=vector_body((NOW, "+Inf"))), "inf"),
        (Reply(body=vector_body((NOW, "-1"))), "negative"),
        (Reply(body="<html>proxy login</html>"), "parse_error"),
        (Reply(body=b"\xff\xfe"), "parse_error"),
        (Reply(body={"status": "error", "errorType": "internal", "error": "x"}), "query_error"),
        (Reply.error(400, "bad_data", "parse error: unexpected end of input"), "bad_query"),
        (Reply.error(422, "execution", "many-to-many matching not allowed"), "bad_query"),
        (Reply(404, body="not found"), "http_error"),
        (Reply(401, body="unauthorized"), "http_error"),
    ],
)
async def test_problems_are_counted_as_missing_data_and_not_retried(
    api: FakePrometheusAPI,
    session: aiohttp.ClientSession,
    clock: ManualClock,
    reply: Reply,
    kind: str,
) -> None:
    api.script(reply)
    src = source(session, clock, {CHAT.key: config(api.url, retries=3)})
    report = await src.collect([CHAT])
    assert report.observations == []
    assert report.errors == {("llm/chat", kind): 1}
    assert len(api.queries) == 1
    assert clock.now() == NOW  # no backoff
    assert not src.retried


async def test_a_body_over_the_cap_is_too_large(
    api: FakePrometheusAPI, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    api.script(Reply(body=vector_body(*[(NOW, "1")] * 200)))
    src = source(session, clock, {CHAT.key: config(api.url)}, max_body_bytes=1024)
    report = await src.collect([CHAT])
    assert report.errors == {("llm/chat", "too_large"): 1}


async def test_errors_are_counted_per_target(
    api: FakePrometheusAPI, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    api.values['sum(vllm:num_requests_waiting{namespace="llm", isvc="code"})'] = (NOW, 1.0)
    # chat has no such series (empty vector), code does.
    src = source(session, clock, {CHAT.key: config(api.url), CODE.key: config(api.url)})
    report = await src.collect([CHAT, CODE])
    assert report.errors == {("llm/chat", "empty"): 1}
    assert [(o.target, o.value) for o in report.observations] == [("llm/code", 1.0)]


async def test_a_bad_query_is_logged_once(
    api: FakePrometheusAPI,
    session: aiohttp.ClientSession,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api.script(*[Reply.error(400, "bad_data", "unclosed left parenthesis")] * 2)
    src = source(session, clock, {CHAT.key: config(api.url)})
    with caplog.at_level(logging.WARNING, logger="autoscaler.sources.prometheus"):
        await src.collect([CHAT])
        await src.collect([CHAT])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "unclosed left parenthesis" in warnings[0]
    assert WAITING_CHAT in warnings[0]


# --- retries ------------------------------------------------------------------------------------


async def test_a_server_error_is_retried_with_jittered_backoff(
    api: FakePrometheusAPI, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    api.script(Reply.error(500, "internal"), Reply.error(503, "unavailable"))
    api.values[WAITING_CHAT] = (NOW, 5.0)
    src = source(session, clock, {CHAT.key: config(api.url, retries=2)}, backoff_base=0.1)
    report = await src.collect([CHAT])
    assert report.errors == {}
    assert [o.value for o in report.observations] == [5.0]
    assert len(api.queries) == 3
    assert src.retried == {"http_error": 2}
    # Full jitter: attempt k waits uniform(0, base * 2**k), so at most 0.1 + 0.2 in total.
    assert 0 < clock.now() - NOW <= 0.3


def test_backoff_is_full_jitter_capped() -> None:
    rng = random.Random(3)
    delays = [full_jitter(rng, k, 0.5, 2.0) for k in range(8) for _ in range(50)]
    assert all(0 <= d <= 2.0 for d in delays)
    assert max(delays) > 1.5  # late attempts are bounded by the cap, not base * 2**k
    first = [full_jitter(rng, 0, 0.5, 2.0) for _ in range(200)]
    assert all(d <= 0.5 for d in first)
    assert len(set(first)) > 100  # jittered, not a fixed delay


async def test_retries_run_out(
    api: FakePrometheusAPI, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    api.script(*[Reply.error(503, "unavailable")] * 3)
    api.values[WAITING_CHAT] = (NOW, 5.0)  # would answer a fourth attempt
    src = source(session, clock, {CHAT.key: config(api.url, retries=2)})
    report = await src.collect([CHAT])
    assert report.errors == {("llm/chat", "http_error"): 1}
    assert report.observations == []
    assert len(api.queries) == 3


async def test_no_retries_when_retries_is_zero(
    api: FakePrometheusAPI, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    api.script(Reply.error(500, "internal"))
    src = source(session, clock, {CHAT.key: config(api.url, retries=0)})
    report = await src.collect([CHAT])
    assert report.errors == {("llm/chat", "http_error"): 1}
    assert len(api.queries) == 1


async def test_429_waits_for_retry_after(
    api: FakePrometheusAPI, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    api.script(Reply(429, body="slow down", headers={"Retry-After": "3"}))
    api.values[WAITING_CHAT] = (NOW, 1.0)
    src = source(session, clock, {CHAT.key: config(api.url)})
    report = await src.collect([CHAT])
    assert [o.value for o in report.observations] == [1.0]
    assert clock.now() == NOW + 3
    assert src.retried == {"rate_limited": 1}


async def test_503_retry_after_as_an_http_date(
    api: FakePrometheusAPI, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    api.script(Reply(503, body="", headers={"Retry-After": formatdate(NOW + 2, usegmt=True)}))
    api.values[WAITING_CHAT] = (NOW, 1.0)
    report = await source(session, clock, {CHAT.key: config(api.url)}).collect([CHAT])
    assert [o.value for o in report.observations] == [1.0]
    assert clock.now() == pytest.approx(NOW + 2)


async def test_a_retry_after_longer_than_we_wait_ends_the_attempts(
    api: FakePrometheusAPI, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    api.script(Reply(429, body="", headers={"Retry-After": "120"}))
    api.values[WAITING_CHAT] = (NOW, 1.0)
    src = source(session, clock, {CHAT.key: config(api.url)}, max_retry_after=10)
    report = await src.collect([CHAT])
    assert report.errors == {("llm/chat", "rate_limited"): 1}
    assert len(api.queries) == 1
    assert clock.now() == NOW


async def test_a_timeout_is_retried(
    api: FakePrometheusAPI, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    api.script(Reply.hang())
    api.values[WAITING_CHAT] = (NOW, 4.0)
    src = source(session, clock, {CHAT.key: config(api.url, timeout_seconds=0.05)})
    report = await src.collect([CHAT])
    assert [o.value for o in report.observations] == [4.0]
    assert src.retried == {"timeout": 1}


async def test_a_server_that_never_answers_is_a_counted_timeout(
    api: FakePrometheusAPI, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    api.script(Reply.hang(), Reply.hang())
    src = source(session, clock, {CHAT.key: config(api.url, timeout_seconds=0.05, retries=1)})
    report = await src.collect([CHAT])
    assert report.observations == []
    assert report.errors == {("llm/chat", "timeout"): 1}
    assert len(api.queries) == 2


async def test_connection_refused_is_retried_then_counted(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    src = source(session, clock, {CHAT.key: config(url, retries=2)})
    report = await src.collect([CHAT])
    assert report.errors == {("llm/chat", "connection"): 1}
    assert src.retried == {"connection": 2}


# --- concurrency, robustness, reload ------------------------------------------------------------


async def test_queries_to_one_prometheus_run_concurrently_up_to_the_cap(
    api: FakePrometheusAPI, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    targets = [TargetRef("InferenceService", "llm", f"m{i}") for i in range(12)]
    for t in targets:
        api.values[fill_query(WAITING_Q, t)] = (NOW, 1.0)
    src = source(session, clock, {t.key: config(api.url) for t in targets}, max_concurrency=3)
    api.hold = asyncio.Event()
    task = asyncio.create_task(src.collect(targets))
    await asyncio.wait_for(api.wait_in_flight(3), 5)
    api.hold.set()
    report = await asyncio.wait_for(task, 5)
    assert len(report.observations) == 12
    assert api.max_in_flight == 3


async def test_collect_never_raises_for_a_bug_in_one_query(
    api: FakePrometheusAPI,
    session: aiohttp.ClientSession,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api.values[WAITING_CHAT] = (NOW, 1.0)
    real = prom_mod.parse_query_response

    def flaky(payload: object) -> tuple[float, float] | str:
        if "chat" in api.queries[-1]:
            raise RuntimeError("boom")
        return real(payload)

    monkeypatch.setattr(prom_mod, "parse_query_response", flaky)
    src = source(session, clock, {CHAT.key: config(api.url)}, max_concurrency=1)
    with caplog.at_level(logging.ERROR, logger="autoscaler.sources.prometheus"):
        report = await src.collect([CHAT])
    assert report.errors == {("llm/chat", "internal_error"): 1}
    assert "boom" in caplog.text


async def test_set_configs_replaces_the_targets_queries(
    api: FakePrometheusAPI, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    src = source(session, clock, {CHAT.key: config(api.url)})
    await src.collect([CHAT])
    src.set_configs({CHAT.key: config(api.url, ("rps", "sum(rate(x[1m]))"))})
    await src.collect([CHAT])
    src.set_configs({})
    report = await src.collect([CHAT])
    assert api.queries == [WAITING_CHAT, "sum(rate(x[1m]))"]
    assert report.observations == [] and report.errors == {}


async def test_close_leaves_the_callers_session_open(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    src = source(session, clock, {})
    await src.close()
    assert not session.closed
    assert (await src.collect([CHAT])).observations == []
