"""The agent's HTTP/1.1 path at the protocol level: raw sockets on loopback, real upstreams.

The client side is a raw socket (so pipelining, chunked bodies, HTTP/1.0, malformed and
oversized requests can be sent as bytes); the model server is an aiohttp app, or a raw asyncio
server where the test needs to misbehave on purpose (close a kept-alive connection, break off
mid-body). Admission runs on a VirtualClock; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from autoscaler.testing.clock import VirtualClock, until
from autoscaler.traffic.agent.http1 import MAX_HEADER_BYTES
from autoscaler.traffic.agent.options import AgentConfig
from autoscaler.traffic.agent.proxy import SMALL_BODY, Agent

T0 = 1_700_000_000.0
BIG = bytes(range(256)) * (4 * SMALL_BODY // 256)  # 1 MiB: streamed, not read whole
FLOOD = 32  # MiB a stream sends to a client that does not read: far over any socket buffers


# -- helpers -------------------------------------------------------------------------------------


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


async def read_response(reader: asyncio.StreamReader, *, head: bool = False) -> Response:
    """One HTTP/1.1 response off the socket: Content-Length, chunked, or up to the close."""
    async with asyncio.timeout(10):
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                assert name.lower() not in headers, f"{name} twice"
                headers[name.lower()] = value.strip()
        if head or status in (204, 304):
            return Response(status, headers, b"")
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                parts.append(await reader.readexactly(size))
                assert await reader.readexactly(2) == b"\r\n"
                if size == 0:
                    break
            body = b"".join(parts)
        else:
            body = await reader.read()
        return Response(status, headers, body)


# -- the model server ----------------------------------------------------------------------------


class Model:
    """An aiohttp model server that records what reached it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.gate: asyncio.Event | None = None
        self.stream_done: asyncio.Future[str] | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/echo", self.echo)
        app.router.add_get("/big", self.big)
        app.router.add_get("/flood", self.flood)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        return app

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((request.method, request.path_qs, dict(request.headers), body))
        return web.Response(body=body, headers={"X-Method": request.method})

    async def big(self, request: web.Request) -> web.Response:
        return web.Response(body=BIG, content_type="application/octet-stream")

    async def flood(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # chunked: no length
        await resp.prepare(request)
        for _ in range(FLOOD * 4):
            await resp.write(BIG[: 256 * 1024])
        await resp.write_eof()
        return resp

    async def completions(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((request.method, request.path_qs, dict(request.headers), body))
        return web.json_response({"choices": [{"text": "hi"}], "usage": {"total_tokens": 10}})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            for i in range(3):
                await resp.write(b'data: {"choices": [{"delta": {"content": "t%d"}}]}\n\n' % i)
                if i == 0 and self.gate is not None:
                    await self.gate.wait()
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            if self.stream_done is not None:
                self.stream_done.set_result("client gone")
            raise
        if self.stream_done is not None:
            self.stream_done.set_result("finished")
        return resp


class RawUpstream:
    """A raw asyncio model server whose answers the test scripts: ``answer(n, head)`` gives the
    bytes for the n-th request on a connection (None: close without answering);
    ``close_after``: close the connection after each answer."""

    def __init__(
        self, answer: Callable[[int, bytes], bytes | None], *, close_after: bool = False
    ) -> None:
        self.answer = answer
        self.close_after = close_after
        self.connections = 0
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        outer = self

        class Conn(asyncio.Protocol):
            def __init__(self) -> None:
                self.n = 0
                self.buf = b""

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport
                outer.connections += 1

            def data_received(self, data: bytes) -> None:
                self.buf += data
                while b"\r\n\r\n" in self.buf:
                    head, _, rest = self.buf.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":")[1])
                    if len(rest) < length:
                        return
                    self.buf = rest[length:]
                    outer.requests += 1
                    self.n += 1
                    out = outer.answer(self.n, head)
                    if out is not None:
                        self.transport.write(out)  # type: ignore[attr-defined]
                    if out is None or outer.close_after:
                        self.transport.close()
                        return

        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(Conn, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


# -- the rig -------------------------------------------------------------------------------------


class Rig:
    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.model = Model()
        self.server: TestServer | None = None
        self.agent: Agent | None = None
        self.port = 0
        self.raw: list[RawUpstream] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self, upstream: str | None = None, **overrides: Any) -> Agent:
        if upstream is None:
            self.server = TestServer(self.model.app(), host="127.0.0.1")
            await self.server.start_server()
            upstream = str(self.server.make_url("")).rstrip("/")
        values: dict[str, Any] = {"upstream": upstream, "default_token_rate": 1000.0}
        values.update(overrides)
        self.agent = Agent(AgentConfig(**values), self.clock, CollectorRegistry())
        await self.agent.start()
        (_, self.port), *_ = await self.agent.listen("127.0.0.1", 0)
        return self.agent

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers.append(writer)
        return reader, writer

    async def exchange(self, data: bytes, *, head: bool = False) -> Response:
        reader, writer = await self.connect()
        writer.write(data)
        return await read_response(reader, head=head)

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.agent is not None:
            await self.agent.close()
        for raw in self.raw:
            await raw.close()
        if self.server is not None:
            await self.server.close()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig(VirtualClock(T0))
    yield r
    if r.model.gate is not None:
        r.model.gate.set()
    await r.close()


def post(path: bytes, body: bytes, *extra: bytes) -> bytes:
    headers = b"".join(h + b"\r\n" for h in extra)
    return b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n%s\r\n%s" % (
        path,
        len(body),
        headers,
        body,
    )


COMPLETION = json.dumps({"model": "m", "prompt": "hi", "max_tokens": 90}).encode()


# -- request bodies ------------------------------------------------------------------------------


async def test_a_chunked_request_body_reaches_the_model_server_whole(rig: Rig) -> None:
    await rig.start()
    resp = await rig.exchange(
        b"PUT /echo?x=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: text/plain\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    assert (resp.status, resp.body) == (200, b"hello world")
    method, path_qs, headers, body = rig.model.seen[-1]
    assert (method, path_qs, body) == ("PUT", "/echo?x=1", b"hello world")
    # forwarded with a length of its own, the client's framing dropped (hop-by-hop)
    assert headers["Content-Length"] == "11"
    assert "Transfer-Encoding" not in headers
    assert headers["Content-Type"] == "text/plain"


async def test_a_chunked_completion_is_metered_like_any_other(rig: Rig) -> None:
    agent = await rig.start()
    half = len(COMPLETION) // 2
    chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        half,
        COMPLETION[:half],
        len(COMPLETION) - half,
        COMPLETION[half:],
    )
    resp = await rig.exchange(
        b"POST /v1/completions HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    )
    assert resp.status == 200
    assert agent.budget.level("m") == pytest.approx(1000 - 10)  # settled with the usage


async def test_large_bodies_pass_through_byte_for_byte(rig: Rig) -> None:
    await rig.start()
    resp = await rig.exchange(post(b"/echo", BIG))
    assert resp.status == 200
    assert resp.body == BIG
    assert rig.model.seen[-1][3] == BIG
    big = await rig.exchange(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
    # over SMALL_BODY: relayed as it arrives, with the model server's length
    assert big.headers["content-length"] == str(len(BIG))
    assert big.body == BIG


async def test_a_body_over_the_limit_is_413_and_the_connection_closes(rig: Rig) -> None:
    await rig.start(max_body_bytes=1000)
    reader, writer = await rig.connect()
    writer.write(post(b"/echo", b"x" * 1001))
    resp = await read_response(reader)
    assert resp.status == 413
    assert resp.headers["connection"] == "close"
    assert await reader.read() == b""  # closed
    assert rig.model.seen == []
    chunked = await rig.exchange(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n" % (1001, b"y" * 1001)
    )
    assert chunked.status == 413  # counted as it arrives, without a length to check first


async def test_expect_100_continue_is_answered(rig: Rig) -> None:
    await rig.start()
    reader, writer = await rig.connect()
    writer.write(
        b"PUT /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    async with asyncio.timeout(10):
        interim = await reader.readuntil(b"\r\n\r\n")
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"ok")
    resp = await read_response(reader)
    assert (resp.status, resp.body) == (200, b"ok")
    assert "Expect" not in rig.model.seen[-1][2]  # the agent sent the body whole


# -- keep-alive and pipelining -------------------------------------------------------------------


async def test_pipelined_requests_are_answered_in_order_on_one_upstream_connection(
    rig: Rig,
) -> None:
    agent = await rig.start()
    reader, writer = await rig.connect()
    writer.write(b"".join(post(b"/echo?n=%d" % i, b"body-%d" % i) for i in range(5)))
    bodies = [(await read_response(reader)).body for _ in range(5)]
    assert bodies == [b"body-%d" % i for i in range(5)]
    assert [s[1] for s in rig.model.seen] == [f"/echo?n={i}" for i in range(5)]
    # answered one at a time, so one kept-alive upstream connection served them all
    assert agent.pool.opened == 1
    writer.write(post(b"/echo", b"again"))
    assert (await read_response(reader)).body == b"again"  # the client's connection lives on
    assert agent.pool.opened == 1 and agent.pool.idle == 1


async def test_connection_close_and_http10_close_after_the_answer(rig: Rig) -> None:
    await rig.start()
    reader, writer = await rig.connect()
    writer.write(b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    resp = await read_response(reader)
    assert (resp.status, resp.headers["connection"]) == (200, "close")
    assert await reader.read() == b""
    assert "Connection" not in rig.model.seen[-1][2]  # hop-by-hop: not forwarded
    reader, writer = await rig.connect()
    writer.write(b"GET /big HTTP/1.0\r\n\r\n")
    old = await read_response(reader)
    assert old.body == BIG  # streamed to an HTTP/1.0 client: no chunked framing
    assert "transfer-encoding" not in old.headers
    assert await reader.read() == b""


async def test_http10_keep_alive_is_kept_and_said(rig: Rig) -> None:
    agent = await rig.start()
    reader, writer = await rig.connect()
    for _ in range(2):
        writer.write(b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        resp = await read_response(reader)
        assert (resp.status, resp.headers["connection"]) == (200, "keep-alive")
    assert len(agent.servers[0].connections) == 1


async def test_idle_client_connections_are_closed_after_the_keepalive_timeout(rig: Rig) -> None:
    agent = await rig.start()
    reader, writer = await rig.connect()
    writer.write(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (await read_response(reader)).status == 200
    server = agent.servers[0]
    (conn,) = server.connections
    await until(lambda: conn.idle)
    assert server.sweep(conn.last_active + server.keepalive_timeout - 1) == 0
    assert server.sweep(conn.last_active + server.keepalive_timeout + 1) == 1
    async with asyncio.timeout(10):
        assert await reader.read() == b""
    await until(lambda: not server.connections)


async def test_head_answers_keep_their_length_and_no_body(rig: Rig) -> None:
    agent = await rig.start()
    reader, writer = await rig.connect()
    writer.write(b"HEAD /big HTTP/1.1\r\nHost: a\r\n\r\n")
    resp = await read_response(reader, head=True)
    assert (resp.status, resp.headers["content-length"]) == (200, str(len(BIG)))
    writer.write(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (await read_response(reader)).status == 200  # nothing stray was left on the wire
    assert agent.pool.opened == 2  # a HEAD answer's connection is not reused


# -- the model server's connection ---------------------------------------------------------------

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def test_at_the_connection_limit_requests_wait_for_a_free_connection(rig: Rig) -> None:
    rig.model.gate = asyncio.Event()
    agent = await rig.start(upstream_connections=1)
    body = json.dumps({"model": "m", "prompt": "hi", "stream": True}).encode()
    reader, writer = await rig.connect()
    writer.write(post(b"/v1/chat/completions", body))
    async with asyncio.timeout(10):
        await reader.readuntil(b"\n\n\r\n")  # the stream holds the only connection
    waiting = asyncio.create_task(rig.exchange(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"))
    await until(lambda: agent.pool.waiting == 1)
    assert rig.model.seen == []  # not sent: no connection free
    rig.model.gate.set()
    async with asyncio.timeout(10):
        assert (await waiting).status == 200
    assert agent.pool.opened == 1  # the stream's connection, reused


async def test_an_upstream_connection_closed_after_its_answer_is_replaced(rig: Rig) -> None:
    raw = RawUpstream(lambda n, _: ANSWER[:17] + b"Connection: close\r\n" + ANSWER[17:])
    rig.raw.append(raw)
    agent = await rig.start(await raw.start())
    for _ in range(3):
        resp = await rig.exchange(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (resp.status, resp.body) == (200, b"ok")
        assert "connection" not in resp.headers  # the upstream's Connection is hop-by-hop
    assert (raw.connections, agent.pool.opened, agent.pool.idle) == (3, 3, 0)


async def test_a_kept_alive_connection_the_upstream_closed_is_retried_once(rig: Rig) -> None:
    # the model server answers the first request on each connection and closes the connection
    # on the second without a word, as one whose keep-alive timer just ran out
    raw = RawUpstream(lambda n, _: ANSWER if n == 1 else None)
    rig.raw.append(raw)
    agent = await rig.start(await raw.start())
    assert (await rig.exchange(post(b"/v1/completions", COMPLETION))).status == 200
    assert agent.pool.idle == 1
    again = await rig.exchange(post(b"/v1/completions", COMPLETION))
    assert (again.status, again.body) == (200, b"ok")
    assert raw.connections == 2  # sent once more, on a fresh connection
    assert agent.in_flight == 0


async def test_an_upstream_breaking_off_mid_answer(rig: Rig) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"
    answers = {
        b"/small": head % 10 + b"short",  # read whole: nothing sent yet, so a clean 502
        b"/large": head % (SMALL_BODY + 10) + b"x" * 100,  # streamed: the client is cut short
    }
    raw = RawUpstream(lambda n, request: answers[request.split(b" ")[1]], close_after=True)
    rig.raw.append(raw)
    await rig.start(await raw.start())
    small = await rig.exchange(b"GET /small HTTP/1.1\r\nHost: a\r\n\r\n")
    assert small.status == 502
    assert json.loads(small.body)["error"]["message"] == "the model server closed the connection"
    reader, writer = await rig.connect()
    writer.write(b"GET /large HTTP/1.1\r\nHost: a\r\n\r\n")
    async with asyncio.timeout(10):
        got = await reader.read()  # up to the close
    assert got.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: %d" % (SMALL_BODY + 10) in got
    assert got.endswith(b"\r\n\r\n" + b"x" * 100)  # what came, then the connection closed
    assert rig.agent is not None
    registry = rig.agent.registry
    assert (
        registry.get_sample_value("autoscaler_agent_upstream_errors_total", {"kind": "disconnect"})
        == 2
    )


async def test_no_answer_in_time_is_504_and_the_connection_is_cut(rig: Rig) -> None:
    raw = RawUpstream(lambda n, _: None if n > 1 else b"")  # takes the request, never answers
    rig.raw.append(raw)
    agent = await rig.start(await raw.start(), upstream_timeout=30.0)
    reader, writer = await rig.connect()
    writer.write(post(b"/v1/completions", COMPLETION))
    await until(lambda: raw.requests == 1)
    pool = agent.pool
    now = asyncio.get_running_loop().time()
    assert pool.expire(now) == 0  # deadlines are checked on the loop's clock, not slept on
    assert pool.expire(now + 31.0) == 1
    resp = await read_response(reader)
    assert resp.status == 504
    assert json.loads(resp.body)["error"]["message"] == "the model server did not answer in time"
    await until(lambda: agent.in_flight == 0)
    assert agent.budget.level("m") == pytest.approx(1000)  # refunded: nothing was served
    assert (
        agent.registry.get_sample_value(
            "autoscaler_agent_upstream_errors_total", {"kind": "timeout"}
        )
        == 1
    )


# -- the client's connection ---------------------------------------------------------------------


async def test_a_client_gone_mid_stream_settles_and_cuts_the_upstream(rig: Rig) -> None:
    rig.model.gate = asyncio.Event()
    rig.model.stream_done = asyncio.get_running_loop().create_future()
    agent = await rig.start()
    body = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hello there"}], "stream": True}
    ).encode()
    reader, writer = await rig.connect()
    writer.write(post(b"/v1/chat/completions", body))
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
        first = await reader.readuntil(b"\n\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert b'"t0"' in first
    assert agent.in_flight == 1
    writer.close()
    await until(lambda: agent.in_flight == 0)
    # estimate 7 + 512 charged; settled to the prompt estimate 7 + the 1 event relayed
    assert agent.budget.level("m") == pytest.approx(1000 - 8)
    async with asyncio.timeout(10):
        assert await rig.model.stream_done == "client gone"  # the upstream stream was cut
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not [t for t in tasks if "_run" in repr(t.get_coro())]  # no handler left behind


async def test_a_slow_client_pauses_the_upstream_instead_of_buffering(rig: Rig) -> None:
    agent = await rig.start()
    reader, writer = await rig.connect()
    writer.write(b"GET /flood HTTP/1.1\r\nHost: a\r\n\r\n")
    server = agent.servers[0]
    await until(lambda: any(c._write_paused for c in server.connections))
    (conn,) = server.connections
    upstream = conn.producer
    assert upstream is not None
    assert upstream.transport is not None and not upstream.transport.is_reading()
    assert conn.transport is not None
    assert conn.transport.get_write_buffer_size() < 8 * 1024 * 1024  # not the whole stream
    resp = await read_response(reader)  # now the client reads: the rest flows
    assert len(resp.body) == FLOOD * 1024 * 1024
    assert resp.body[: 256 * 1024] == BIG[: 256 * 1024]


async def test_shutdown_lets_an_answer_in_progress_finish(rig: Rig) -> None:
    rig.model.gate = asyncio.Event()
    agent = await rig.start()
    body = json.dumps({"model": "m", "prompt": "hi", "stream": True}).encode()
    reader, writer = await rig.connect()
    writer.write(post(b"/v1/chat/completions", body))
    idle_reader, idle_writer = await rig.connect()
    idle_writer.write(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (await read_response(idle_reader)).status == 200
    async with asyncio.timeout(10):
        await reader.readuntil(b"\n\n\r\n")  # the first event: the stream is in progress
    closing = asyncio.create_task(agent.close(grace=30.0))
    async with asyncio.timeout(10):
        assert await idle_reader.read() == b""  # the idle keep-alive connection is closed
    assert not closing.done()
    rig.model.gate.set()
    async with asyncio.timeout(10):
        await closing
        rest = await reader.read()
    assert rest.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")  # finished, not cut
    rig.agent = None  # closed already


# -- bad requests --------------------------------------------------------------------------------


async def test_a_malformed_request_is_400_and_closes(rig: Rig) -> None:
    await rig.start()
    reader, writer = await rig.connect()
    writer.write(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\nNOT HTTP AT ALL\r\n\r\n")
    ok = await read_response(reader)
    bad = await read_response(reader)
    assert ok.status == 200  # the good request before it is answered first
    assert bad.status == 400
    assert bad.headers["connection"] == "close"
    assert json.loads(bad.body)["error"]["code"] == 400
    assert await reader.read() == b""
    assert len(rig.model.seen) == 1


async def test_an_upgrade_is_forwarded_plain_then_the_connection_closes(rig: Rig) -> None:
    await rig.start()
    reader, writer = await rig.connect()
    writer.write(
        b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        b"\x81\x05hello"  # what a websocket client would send next: never parsed
    )
    resp = await read_response(reader)
    assert (resp.status, resp.headers["connection"]) == (200, "close")
    assert await reader.read() == b""
    method, _, headers, _ = rig.model.seen[-1]
    assert method == "GET" and "Upgrade" not in headers
    assert len(rig.model.seen) == 1


async def test_oversized_headers_are_431(rig: Rig) -> None:
    await rig.start()
    big = b"X-Big: " + b"a" * MAX_HEADER_BYTES + b"\r\n"
    resp = await rig.exchange(b"GET /echo HTTP/1.1\r\nHost: a\r\n" + big + b"\r\n")
    assert resp.status == 431
    assert resp.headers["connection"] == "close"
    assert rig.model.seen == []
