"""The agent as a real proxy on loopback, in front of a real aiohttp model server that streams.

The upstream speaks OpenAI (JSON and SSE, with or without a final usage chunk) and KServe V1/V2,
records what reached it, and can hold a stream after its first event until the test releases
it. Admission runs on a VirtualClock: refills and queue waits move only when the test advances
time, and the test waits for parked requests with ``clock.sleeping``, never with real sleeps.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from autoscaler.config.signals import PodScrape
from autoscaler.core import signals as sig
from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import TargetRef
from autoscaler.core.windows import SignalWindow
from autoscaler.policy.builtin.tokens import TokensParams, TokensPolicy
from autoscaler.sources.nvml import NvmlCollector, NvmlReader
from autoscaler.sources.pods import PodIndex, PodInfo
from autoscaler.sources.scrape import PodScrapeSource
from autoscaler.testing.clock import VirtualClock, until
from autoscaler.testing.fake_nvml import FakeGpu, FakeNvml
from autoscaler.traffic.agent.budget import Shares
from autoscaler.traffic.agent.options import AgentConfig
from autoscaler.traffic.agent.proxy import Agent, retry_after

T0 = 1_700_000_000.0
MODEL = "chat"


# -- the model server ----------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Upstream:
    """A fake model server. ``usage``: the usage it reports (None: none); ``events``: content
    events per stream; ``gate``: when set, streams stop after their first event until it is."""

    usage: dict[str, int] | None = field(default_factory=lambda: {"total_tokens": 42})
    events: int = 5
    stream_usage: bool = False
    gate: asyncio.Event | None = None
    seen: list[Seen] = field(default_factory=list)
    sent_last: bool = False
    in_flight: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/openai/v1/chat/completions", self.chat)  # KServe's HF runtime
        app.router.add_get("/v1/models/chat", self.v1_ready)
        app.router.add_post("/v1/models/chat:predict", self.v1_predict)
        app.router.add_post("/v2/models/chat/infer", self.v2_infer)
        app.router.add_route("*", "/echo", self.echo)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def _record(self, request: web.Request) -> bytes:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path_qs, dict(request.headers), body))
        return body

    async def completions(self, request: web.Request) -> web.Response:
        await self._record(request)
        body: dict[str, Any] = {"id": "cmpl-1", "choices": [{"text": "hello"}]}
        if self.usage is not None:
            body["usage"] = self.usage
        return web.json_response(body)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        raw = await self._record(request)
        if json.loads(raw).get("fail"):
            error = {"error": {"message": "bad request", "type": "BadRequestError"}}
            return web.json_response(error, status=400)
        if not json.loads(raw).get("stream"):
            return await self.completions(request)
        self.in_flight += 1
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for i in range(self.events):
                chunk = {"choices": [{"delta": {"content": f"tok{i} "}}]}
                await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
                if i == 0 and self.gate is not None:
                    await self.gate.wait()
            if self.stream_usage and self.usage is not None:
                await resp.write(
                    f"data: {json.dumps({'choices': [], 'usage': self.usage})}\n\n".encode()
                )
            self.sent_last = True
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        finally:
            self.in_flight -= 1

    async def v1_ready(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"name": "chat", "ready": True})

    async def v1_predict(self, request: web.Request) -> web.Response:
        body = json.loads(await self._record(request))
        return web.json_response({"predictions": [sum(x) for x in body["instances"]]})

    async def v2_infer(self, request: web.Request) -> web.Response:
        body = json.loads(await self._record(request))
        data = body["inputs"][0]["data"]
        out = {"name": "out", "shape": [1], "datatype": "FP32", "data": [sum(data)]}
        return web.json_response({"model_name": "chat", "outputs": [out]}, status=200)

    async def echo(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        return web.Response(
            body=body[::-1],
            status=418,
            headers={
                "X-Up": "1",
                "Keep-Alive": "timeout=5",
                "Proxy-Authenticate": "Basic",
                "Trailer": "X-Checksum",
                "Content-Type": "application/x-reversed",
            },
        )

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            text="# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 3\n"
        )


# -- the rig -------------------------------------------------------------------------------------


class Rig:
    def __init__(self, upstream: Upstream, clock: VirtualClock) -> None:
        self.upstream = upstream
        self.clock = clock
        self.servers: list[TestServer] = []
        self.agent: Agent | None = None
        self.agents: list[Agent] = []
        self.proxy = ""
        self.registry = CollectorRegistry()
        self.session = aiohttp.ClientSession()
        self.upstream_url = ""

    async def start_upstream(self) -> None:
        server = TestServer(self.upstream.app(), host="127.0.0.1")
        await server.start_server()
        self.servers.append(server)
        self.upstream_url = str(server.make_url("")).rstrip("/")

    async def start(self, **overrides: Any) -> Agent:
        values: dict[str, Any] = {
            "upstream": self.upstream_url,
            "default_token_rate": 1000.0,
            "default_max_tokens": 100,
        }
        values.update(overrides)
        return await self.start_agent(Agent(AgentConfig(**values), self.clock, self.registry))

    async def start_agent(self, agent: Agent) -> Agent:
        self.agent = agent
        await agent.start()
        self.agents.append(agent)
        (_, port), *_ = await agent.listen("127.0.0.1", 0)
        self.proxy = f"http://127.0.0.1:{port}"
        server = TestServer(agent.admin_app(), host="127.0.0.1")
        await server.start_server()
        self.servers.append(server)
        return agent

    @property
    def admin(self) -> TestServer:
        return self.servers[-1]

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def post(self, path: str, body: dict[str, Any], **headers: str) -> aiohttp.ClientResponse:
        resp = await self.session.post(self.proxy + path, json=body, headers=headers)
        await resp.read()
        return resp

    async def close(self) -> None:
        await self.session.close()
        for agent in self.agents:
            await agent.close()
        for server in reversed(self.servers):
            await server.close()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
async def rig(clock: VirtualClock) -> AsyncIterator[Rig]:
    r = Rig(Upstream(), clock)
    await r.start_upstream()
    yield r
    if r.upstream.gate is not None:
        r.upstream.gate.set()
    await r.close()


def completion(max_tokens: int = 90, prompt: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, **extra}


def chat(stream: bool = True, max_tokens: int = 90, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": "hello there"}]  # 4 + 3 tokens
    return {
        "model": MODEL,
        "messages": messages,
        "stream": stream,
        "max_tokens": max_tokens,
        **extra,
    }


async def parked(clock: VirtualClock, n: int) -> None:
    """Until n coroutines sleep on the clock (the limits watcher is always one of them)."""
    async with asyncio.timeout(10):
        await clock.sleeping(n)


# -- streaming -----------------------------------------------------------------------------------


async def test_stream_reaches_the_client_chunk_by_chunk(rig: Rig) -> None:
    rig.upstream.gate = asyncio.Event()
    await rig.start()
    async with rig.session.post(rig.proxy + "/v1/chat/completions", json=chat()) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        first = await resp.content.readuntil(b"\n\n")
        # the client has the first event while the model server still holds the rest
        assert first == b'data: {"choices": [{"delta": {"content": "tok0 "}}]}\n\n'
        assert not rig.upstream.sent_last
        rig.upstream.gate.set()
        rest = await resp.read()
    assert rig.upstream.sent_last
    assert rest.count(b"data: ") == 5  # tok1..tok4 and [DONE], byte for byte
    assert rest.endswith(b"data: [DONE]\n\n")


async def test_stream_settles_with_counted_events_without_usage(rig: Rig) -> None:
    rig.upstream.usage = None
    agent = await rig.start(burst_seconds=1.0)
    resp = await rig.post("/v1/chat/completions", chat())
    assert resp.status == 200
    # estimate (4 + 3) + 90 charged, settled to prompt estimate 7 + 5 content events
    assert agent.budget.level(MODEL) == pytest.approx(1000 - 12)
    assert rig.value("autoscaler_agent_admitted_tokens_total", tenant="default", model=MODEL) == 12
    assert rig.value("autoscaler_agent_time_to_first_token_seconds_count", model=MODEL) == 1


async def test_stream_settles_with_the_final_usage_chunk(rig: Rig) -> None:
    rig.upstream.stream_usage = True
    rig.upstream.usage = {"prompt_tokens": 30, "completion_tokens": 70}
    agent = await rig.start()
    resp = await rig.post("/v1/chat/completions", chat(max_tokens=500))
    assert resp.status == 200
    assert agent.budget.level(MODEL) == pytest.approx(1000 - 100)


async def test_json_answer_settles_with_its_usage(rig: Rig) -> None:
    agent = await rig.start()
    resp = await rig.post("/v1/completions", completion(max_tokens=500))
    assert resp.status == 200
    assert (await resp.json())["usage"] == {"total_tokens": 42}
    assert agent.budget.level(MODEL) == pytest.approx(1000 - 42)
    assert rig.value("autoscaler_agent_admitted_requests_total", tenant="default", model=MODEL) == 1
    # metered requests go to the model server without Accept-Encoding, so usage is readable
    assert "Accept-Encoding" not in rig.upstream.seen[-1].headers


async def test_kserve_openai_prefix_is_metered_and_errors_refund(rig: Rig) -> None:
    rig.upstream.stream_usage = True
    rig.upstream.usage = {"total_tokens": 30}
    agent = await rig.start()
    resp = await rig.post("/openai/v1/chat/completions", chat())
    assert resp.status == 200
    assert agent.budget.level(MODEL) == pytest.approx(1000 - 30)
    failed = await rig.post("/openai/v1/chat/completions", chat(fail=True))
    assert failed.status == 400
    assert (await failed.json())["error"]["type"] == "BadRequestError"  # passed through
    assert agent.budget.level(MODEL) == pytest.approx(1000 - 30)  # the 97 charged came back
    assert rig.value("autoscaler_agent_admitted_requests_total", tenant="default", model=MODEL) == 2


# -- admission -----------------------------------------------------------------------------------


async def test_over_budget_is_429_with_retry_after_from_the_refill(
    rig: Rig, clock: VirtualClock
) -> None:
    rig.upstream.usage = None  # the estimate stands
    agent = await rig.start(default_token_rate=10.0)  # bucket of 10 tokens
    first = await rig.post("/v1/completions", completion(max_tokens=90))  # 1 + 90 tokens
    assert first.status == 200
    assert agent.budget.level(MODEL) == pytest.approx(10 - 91)
    refused = await rig.post("/v1/completions", completion(max_tokens=90))
    assert refused.status == 429
    # from -81 to the 10 a request needs at 10 tokens/s: 9.1 s, sent as 10
    assert refused.headers["Retry-After"] == "10"
    assert (await refused.json())["error"]["type"] == "rate_limit_exceeded"
    labels = {"tenant": "default", "model": MODEL, "reason": "tokens"}
    assert rig.value("autoscaler_agent_rejected_tokens_total", **labels) == 91
    assert rig.value("autoscaler_agent_rejected_requests_total", **labels) == 1
    assert len(rig.upstream.seen) == 1  # the refused one never reached the model server
    clock.advance(9.0)
    assert (await rig.post("/v1/completions", completion())).status == 429
    clock.advance(float(refused.headers["Retry-After"]) - 9.0)  # the client waited as told
    assert (await rig.post("/v1/completions", completion())).status == 200


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert retry_after(0.01) == 1
    assert retry_after(1.0) == 1
    assert retry_after(1.2) == 2
    assert retry_after(float("inf")) == 3600


async def test_bounded_queue_waits_for_the_refill_then_refuses_when_full(
    rig: Rig, clock: VirtualClock
) -> None:
    rig.upstream.usage = None
    agent = await rig.start(default_token_rate=100.0, queue_size=1, queue_timeout=5.0)
    assert (await rig.post("/v1/completions", completion())).status == 200  # level 100 -> 9
    waiting = asyncio.create_task(rig.post("/v1/completions", completion()))
    await parked(clock, 2)  # the watcher and the queued request
    assert agent.queued == 1
    assert rig.value("autoscaler_agent_requests_queued") == 1
    full = await rig.post("/v1/completions", completion())
    assert full.status == 429  # the queue holds one
    assert full.headers["Retry-After"] == "1"  # (91 - 9) / 100 = 0.82 s
    clock.advance(0.8)
    await parked(clock, 2)
    assert agent.queued == 1  # not yet: 80 of the 82 tokens it waits for
    clock.advance(0.03)
    async with asyncio.timeout(10):
        resp = await waiting
    assert resp.status == 200
    assert agent.queued == 0
    assert rig.value("autoscaler_agent_queue_wait_seconds_count") == 1
    assert rig.value("autoscaler_agent_queue_wait_seconds_sum") == pytest.approx(0.83)


async def test_queue_times_out_and_a_long_wait_is_refused_at_once(
    rig: Rig, clock: VirtualClock
) -> None:
    rig.upstream.usage = None
    agent = await rig.start(
        default_token_rate=10.0, queue_size=4, queue_timeout=5.0, limits_interval=600.0
    )
    assert (await rig.post("/v1/completions", completion(max_tokens=90))).status == 200
    before = len(rig.upstream.seen)  # level 10 - 91 = -81
    # 9.1 s of refill needed: longer than the queue timeout, so it is refused without waiting
    at_once = await rig.post("/v1/completions", completion(max_tokens=9))
    assert (at_once.status, at_once.headers["Retry-After"]) == (429, "10")
    assert agent.queued == 0 and clock.now() == T0
    clock.advance(8.5)  # level 4: a request of 10 needs 0.6 s more, so it queues
    waiting = asyncio.create_task(rig.post("/v1/completions", completion(max_tokens=9)))
    await parked(clock, 2)
    assert agent.queued == 1
    agent.budget.set_rate(0.0, clock.now())  # then the limit drops to nothing
    clock.advance(0.6)
    await parked(clock, 2)  # woke, found no budget, sleeps out the rest of its 5 s
    clock.advance(4.5)
    async with asyncio.timeout(10):
        resp = await waiting
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "3600"  # a zero limit has no finite wait
    assert len(rig.upstream.seen) == before
    assert agent.queued == 0


async def test_a_refund_wakes_the_queue_before_the_refill(rig: Rig, clock: VirtualClock) -> None:
    rig.upstream.gate = asyncio.Event()
    rig.upstream.usage = None
    agent = await rig.start(default_token_rate=100.0, queue_size=1, queue_timeout=5.0)
    streaming = asyncio.create_task(rig.post("/v1/chat/completions", chat()))  # 97 charged
    await until(lambda: rig.upstream.in_flight == 1)
    # level 100 - 97 = 3; a request of 51 tokens would wait 0.48 s for the refill
    waiting = asyncio.create_task(rig.post("/v1/completions", completion(max_tokens=50)))
    await parked(clock, 2)
    assert agent.queued == 1
    rig.upstream.gate.set()  # the stream ends after 5 events: 12 tokens, 85 refunded
    async with asyncio.timeout(10):
        assert (await streaming).status == 200
        resp = await waiting
    assert resp.status == 200
    assert clock.now() == T0  # no time passed: the refund, not the refill, let it in


async def test_concurrency_cap_refuses_posts_but_never_probes(
    rig: Rig, clock: VirtualClock
) -> None:
    rig.upstream.gate = asyncio.Event()
    agent = await rig.start(max_concurrency=1)
    streaming = asyncio.create_task(rig.post("/v1/chat/completions", chat()))
    await until(lambda: rig.upstream.in_flight == 1)
    infer = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}
    refused = await rig.post("/v2/models/chat/infer", infer)
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "1"
    labels = {"tenant": "default", "model": "", "reason": "concurrency"}
    assert rig.value("autoscaler_agent_rejected_requests_total", **labels) == 1
    probe = await rig.session.get(rig.proxy + "/v1/models/chat")
    assert probe.status == 200  # a GET is never capped: readiness survives saturation
    assert agent.in_flight == 1
    rig.upstream.gate.set()
    assert (await streaming).status == 200
    assert (await rig.post("/v2/models/chat/infer", infer)).status == 200
    assert agent.in_flight == 0


async def test_tenant_shares_limit_one_tenant_only(rig: Rig) -> None:
    rig.upstream.usage = None
    await rig.start(shares=Shares(1.0, {"free": 0.1}))  # free: 100 tokens/s of 1000
    assert (await rig.post("/v1/completions", completion(), **{"X-Tenant": "free"})).status == 200
    refused = await rig.post("/v1/completions", completion(), **{"X-Tenant": "free"})
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "1"  # (91 - 9) / 100 tokens/s
    ok = await rig.post("/v1/completions", completion(), **{"X-Tenant": "paid"})
    assert ok.status == 200
    assert (
        rig.value(
            "autoscaler_agent_rejected_tokens_total", tenant="free", model=MODEL, reason="tokens"
        )
        == 91
    )
    assert rig.value("autoscaler_agent_admitted_requests_total", tenant="paid", model=MODEL) == 1


async def test_api_key_tenants_are_hashed_never_exported(rig: Rig) -> None:
    await rig.start(shares=Shares(0.1))
    key = "sk-secret-123"
    auth = {"Authorization": f"Bearer {key}"}
    assert (await rig.post("/v1/completions", completion(), **auth)).status == 200
    assert (await rig.post("/v1/completions", completion(), **auth)).status == 429
    other = {"Authorization": "Bearer sk-other"}
    assert (await rig.post("/v1/completions", completion(), **other)).status == 200
    metrics = await (await rig.session.get(rig.admin.make_url("/metrics"))).text()
    assert key not in metrics
    assert 'tenant="key-' in metrics
    assert rig.upstream.seen[-1].headers["Authorization"] == "Bearer sk-other"  # passed on


# -- pass-through --------------------------------------------------------------------------------


async def test_hop_by_hop_headers_are_dropped_both_ways(rig: Rig) -> None:
    await rig.start()
    resp = await rig.session.put(
        rig.proxy + "/echo?a=1&b=%20x",
        data=b"payload",
        headers={
            "Connection": "keep-alive, X-Drop-Me",
            "X-Drop-Me": "1",
            "TE": "trailers",
            "Proxy-Authorization": "Basic abc",
            "Upgrade": "websocket",
            "X-Keep": "yes",
            "Content-Type": "application/octet-stream",
        },
    )
    assert resp.status == 418
    assert await resp.read() == b"daolyap"
    seen = rig.upstream.seen[-1]
    assert (seen.method, seen.path_qs, seen.body) == ("PUT", "/echo?a=1&b=%20x", b"payload")
    lower = {k.lower() for k in seen.headers}
    assert "x-keep" in lower and "content-type" in lower
    for hop in ("x-drop-me", "te", "proxy-authorization", "upgrade"):
        assert hop not in lower, hop
    assert resp.headers["X-Up"] == "1"
    assert resp.headers["Content-Type"] == "application/x-reversed"
    for hop in ("Proxy-Authenticate", "Trailer", "Keep-Alive"):
        assert hop not in resp.headers, hop


async def test_kserve_v1_and_v2_pass_through_unmetered(rig: Rig) -> None:
    await rig.start()
    ready = await rig.session.get(rig.proxy + "/v1/models/chat")
    assert (ready.status, await ready.json()) == (200, {"name": "chat", "ready": True})
    v1 = await rig.post("/v1/models/chat:predict", {"instances": [[1, 2], [3, 4]]})
    assert (v1.status, await v1.json()) == (200, {"predictions": [3, 7]})
    body = {"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}]}
    v2 = await rig.session.post(rig.proxy + "/v2/models/chat/infer?trace=1", json=body)
    assert v2.status == 200
    assert (await v2.json())["outputs"][0]["data"] == [6]
    assert rig.upstream.seen[-1].path_qs == "/v2/models/chat/infer?trace=1"
    assert json.loads(rig.upstream.seen[-1].body) == body
    assert rig.agent is not None and rig.agent.budget.level(MODEL) == 1000  # nothing charged
    missing = await rig.session.get(rig.proxy + "/v2/models/other/ready")
    assert missing.status == 404  # the model server's own answer, passed through


async def test_upstream_down_is_502_and_refunds(clock: VirtualClock) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    rig = Rig(Upstream(), clock)
    rig.upstream_url = f"http://127.0.0.1:{port}"
    try:
        agent = await rig.start()
        resp = await rig.post("/v1/completions", completion())
        assert resp.status == 502
        assert (await resp.json())["error"]["message"] == "the model server is unreachable"
        assert agent.budget.level(MODEL) == 1000  # refunded: nothing was served
        assert rig.value("autoscaler_agent_upstream_errors_total", kind="connect") == 1
        assert agent.in_flight == 0
        probe = await rig.session.get(rig.proxy + "/v1/models/chat")
        assert probe.status == 502
    finally:
        await rig.close()


# -- metrics and the feedback loop ---------------------------------------------------------------


async def test_admin_metrics_with_gpu_gauges_and_the_model_servers_metrics(
    rig: Rig, clock: VirtualClock
) -> None:
    reader = NvmlReader(
        binding=FakeNvml([FakeGpu(utilization_percent=75, memory_used=40 * 1024**3)])
    )
    rig.registry.register(NvmlCollector(reader))
    agent = Agent(
        AgentConfig(upstream=rig.upstream_url, default_token_rate=1000.0),
        clock,
        rig.registry,
        before_metrics=reader.read,
    )
    await rig.start_agent(agent)
    text = await (await rig.session.get(rig.admin.make_url("/metrics"))).text()
    assert 'autoscaler_agent_gpu_utilization_ratio{gpu="0"} 0.75' in text
    assert 'autoscaler_agent_gpu_memory_used_ratio{gpu="0"} 0.5' in text
    assert "autoscaler_agent_token_limit_tokens_per_second 1000.0" in text
    assert "autoscaler_agent_upstream_metrics_up 1" in text
    assert text.endswith("vllm:num_requests_waiting 3\n")
    # the proxy port serves the model server's /metrics, not the agent's: nothing is shadowed
    proxied = await (await rig.session.get(rig.proxy + "/metrics")).text()
    assert "autoscaler_agent" not in proxied
    limits = await (await rig.session.get(rig.admin.make_url("/limits"))).json()
    assert limits["tokenRatePerReplica"] == 1000.0 and limits["source"] == "default"


async def test_rejections_feed_back_as_throttled_demand_that_scales_up(
    rig: Rig, clock: VirtualClock
) -> None:
    """Agent refuses tokens -> the service's ``agent`` preset scrape of the agent's /metrics
    reads throttled_tokens_per_second -> the ``tokens`` policy asks for more replicas."""
    rig.upstream.usage = None
    await rig.start(default_token_rate=100.0)
    admin = rig.admin
    index = PodIndex()
    ref = TargetRef("InferenceService", "llm", "chat")
    index.set_pods(ref.key, [PodInfo(name="chat-0", namespace="llm", ip="127.0.0.1", ready=True)])
    scrape = PodScrapeSource(
        rig.session,
        index,
        {ref.key: PodScrape(port=admin.port, presets=("agent",))},
        clock,
    )
    window = SignalWindow(3600)

    async def tick() -> dict[str, float]:
        report = await scrape.collect([ref])
        for o in report.observations:
            if o.signal == sig.THROTTLED_TOKENS_PER_SECOND:
                window.add(o.ts, o.value)
        return {o.signal: o.value for o in report.observations}

    assert sig.THROTTLED_TOKENS_PER_SECOND not in await tick()  # first scrape: a baseline
    assert (await rig.post("/v1/completions", completion())).status == 200
    for _ in range(10):
        assert (await rig.post("/v1/completions", completion())).status == 429
    clock.advance(10.0)
    seen = await tick()
    assert seen[sig.THROTTLED_TOKENS_PER_SECOND] == pytest.approx(91.0)  # 10 x 91 tokens / 10 s

    policy = TokensPolicy(TokensParams(tokens_per_replica=100.0, gauge=sig.TOKENS_PER_SECOND))
    served = SignalWindow(3600)
    served.add(clock.now(), 50.0)  # what the replica serves
    snap = Snapshot(ref.key, clock.now(), 1, 1, 0, {sig.TOKENS_PER_SECOND: served})
    alone, _ = policy.decide(snap, policy.initial_state(snap))
    windows = {sig.TOKENS_PER_SECOND: served, sig.THROTTLED_TOKENS_PER_SECOND: window}
    snap = Snapshot(ref.key, clock.now(), 1, 1, 0, windows)
    with_throttled, _ = policy.decide(snap, policy.initial_state(snap))
    assert alone.replicas == 1  # 50 / 80
    assert with_throttled.replicas == 2  # (50 + 91) / 80
    assert with_throttled.inputs["tokens_per_second"] == pytest.approx(141.0)


async def test_the_agent_serves_until_stopped(rig: Rig, clock: VirtualClock) -> None:
    from autoscaler.traffic.agent.main import serve

    config = AgentConfig(
        upstream=rig.upstream_url, listen=("127.0.0.1", 0), metrics_listen=("127.0.0.1", 0)
    )
    agent = Agent(config, clock, CollectorRegistry())
    stop = asyncio.Event()
    bound: list[list[str]] = []
    task = asyncio.create_task(serve(agent, stop, bound.append))
    await until(lambda: bool(bound))
    proxy, admin = bound[0]
    assert (await rig.session.get(f"{proxy}/v1/models/chat")).status == 200
    assert (await rig.session.get(f"{admin}/healthz")).status == 200
    stop.set()
    await task
    with pytest.raises(aiohttp.ClientConnectionError):
        await rig.session.get(f"{proxy}/v1/models/chat")
