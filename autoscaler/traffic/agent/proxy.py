"""The agent: a lean reverse proxy that admits requests by token budget (docs/agent.md).

Two listeners share one ``Agent``:

- the **proxy** (``--listen``, the port KServe routes to): every path is forwarded to the model
  server. ``POST .../v1/completions`` and ``POST .../v1/chat/completions`` (also under KServe's
  ``/openai`` prefix) are metered: charged an estimate at admission, settled with the real usage.
  Other POSTs (KServe V1 ``:predict``, V2 ``/infer``) pass the concurrency cap only; every other
  method passes straight through, so probes and metadata are never queued or refused. It runs on
  ``http1`` (an asyncio protocol parsed by httptools) and ``upstream`` (pooled keep-alive
  connections to the model server): about a fifth of the CPU aiohttp's server and client took
  per request (docs/agent.md, "Overhead").
- the **admin** app (``--metrics-listen``, default :9095, aiohttp): ``/metrics`` (the agent's
  registry, the GPU gauges with ``--nvml``, then the model server's own ``/metrics`` so one pod
  scrape reads both), ``/healthz`` and ``/limits``. A separate port, so no model path is shadowed.

Forwarding keeps method, raw path and query, body, status, reason and headers, minus the
hop-by-hop ones (RFC 9110 7.6.1, and those named in ``Connection``); ``Host`` is the upstream's.
Bodies are bytes, never decompressed; only metered requests are sent without
``Accept-Encoding``, so their usage can be read (gzip on loopback buys nothing). Answers with a
``Content-Length`` up to 256 KiB, and metered JSON answers, are read whole and sent in one write;
others (SSE streams, chunked, large) are relayed chunk by chunk as they arrive.

Over budget: 429 with ``Retry-After`` (seconds until the bucket holds the request, rounded up);
at the concurrency cap: 503 with ``Retry-After: 1``. With ``--queue-size`` > 0 a refused
request first waits (at most ``--queue-timeout``) for budget or a slot, unless the bucket says
it would wait longer than that anyway. Upstream unreachable: 502; no answer in time: 504.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from autoscaler.core.clock import Clock
from autoscaler.traffic.agent.budget import Charge, TokenBudget
from autoscaler.traffic.agent.estimate import SseCounter, parse_openai_request, usage_of_json
from autoscaler.traffic.agent.gcpolicy import GcPauses, GcPolicy
from autoscaler.traffic.agent.http1 import HttpConnection, HttpServer, Request
from autoscaler.traffic.agent.metrics import AgentMetrics, Series
from autoscaler.traffic.agent.options import AgentConfig
from autoscaler.traffic.agent.upstream import UpstreamConnection, UpstreamError, UpstreamPool
from autoscaler.traffic.agent.watcher import LimitsWatcher

__all__ = ["Agent", "retry_after"]

log = logging.getLogger("autoscaler.traffic.agent")

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
# the agent reads the body whole and frames it itself; Expect was answered by the agent
_REQUEST_DROP = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
_METERED_DROP = _REQUEST_DROP | {b"accept-encoding"}
_RESPONSE_DROP = HOP_BY_HOP | {b"content-length"}
METERED_SUFFIXES = (b"/v1/completions", b"/v1/chat/completions")
SMALL_BODY = 256 * 1024  # answers up to this Content-Length are read whole
ADMISSION_RETRY_AFTER_CAP = 3600  # seconds; a zero limit has no finite wait
IDLE_UPSTREAM_SECONDS = 30.0  # keep-alive connections to the model server idle longer are closed
SHUTDOWN_GRACE_SECONDS = 10.0  # answers in progress at SIGTERM get this long to finish


def _refusal_body(status: int, message: str, kind: str) -> bytes:
    """An OpenAI-style error body (``type`` is what OpenAI clients back off on)."""
    return json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()


_TOKENS_BODY = _refusal_body(429, "token rate limit exceeded", "rate_limit_exceeded")
_CONCURRENCY_BODY = _refusal_body(503, "too many requests in flight", "overloaded")


def connection_named(values: list[bytes]) -> frozenset[bytes]:
    """The header names ``Connection`` header values list (hop-by-hop too)."""
    named: set[bytes] = set()
    for value in values:
        named.update(t.strip().lower() for t in value.split(b","))
    return frozenset(named)


def filter_headers(headers: Headers, names: list[bytes], drop: frozenset[bytes]) -> Headers:
    """``headers`` without ``drop`` and those the Connection header names, order and case kept;
    ``names``: their lower-case names, in the same order."""
    if b"connection" in names:
        drop = drop | connection_named(
            [v for n, (_, v) in zip(names, headers, strict=True) if n == b"connection"]
        )
    # a plain loop: on Python 3.11 a comprehension makes a function object per call, and this
    # runs twice per request
    out = []
    for name, header in zip(names, headers, strict=True):
        if name not in drop:
            out.append(header)
    return out


def retry_after(wait: float) -> int:
    """Whole seconds for ``Retry-After`` (RFC 9110 allows no fractions): rounded up, at least 1."""
    if not math.isfinite(wait):
        return ADMISSION_RETRY_AFTER_CAP
    return max(1, min(ADMISSION_RETRY_AFTER_CAP, math.ceil(wait - 1e-9)))


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str  # "tokens" or "concurrency"
    wait: float | None


@dataclass(slots=True)
class _Meter:
    """A metered request's bookkeeping while its response passes through."""

    charge: Charge
    series: Series  # its admitted requests and tokens (metrics.py)
    prompt_estimate: int
    stream: bool
    admitted_at: float
    usage: int | None = None
    counter: SseCounter | None = None
    first_byte_at: float | None = None
    status: int | None = None

    def actual(self, status: int | None) -> float:
        if self.counter is not None:
            self.counter.close()
            if self.counter.usage is not None or self.counter.events:
                return float(self.counter.tokens(self.prompt_estimate))
        if self.usage is not None:
            return float(self.usage)
        if status is None or status >= 400:
            return 0.0  # the model server produced nothing: refund
        return self.charge.tokens  # no usage reported: the estimate stands


class _Relay:
    """Takes the model server's answer as it is parsed and writes it to the client: whole (one
    write, ``Content-Length``) or streamed chunk by chunk; meters it on the way."""

    __slots__ = ("agent", "buffer", "client", "head_only", "headers", "meter", "reason", "status")

    def __init__(
        self, agent: Agent, client: HttpConnection, meter: _Meter | None, head_only: bool
    ) -> None:
        self.agent = agent
        self.client = client
        self.meter = meter
        self.head_only = head_only
        self.buffer: list[bytes] | None = None
        self.status = 0
        self.reason = b""
        self.headers: Headers = []

    def head(
        self, status: int, reason: bytes, headers: Headers, upstream: UpstreamConnection
    ) -> None:
        raw_length = upstream.content_length
        length = int(raw_length) if raw_length else None  # the parser accepted it: digits
        out = filter_headers(headers, upstream.names, _RESPONSE_DROP)
        meter = self.meter
        if meter is not None:
            meter.status = status
        self.status, self.reason, self.headers = status, reason, out
        if self.head_only or status in (204, 304):
            if raw_length and self.head_only:
                out.append((b"Content-Length", raw_length))  # what a GET would get
            self.client.start(status, reason, out, None, bodyless=True)
            return
        stream = meter is not None and meter.stream
        if not stream and (meter is not None or (length is not None and length <= SMALL_BODY)):
            self.buffer = []  # a metered JSON answer is read whole, any size, for its usage
            return
        if stream:
            assert meter is not None
            meter.counter = SseCounter()
        self.client.start(status, reason, out, length)
        self.client.producer = upstream

    def body(self, chunk: bytes) -> None:
        if self.buffer is not None:
            self.buffer.append(chunk)
            return
        meter = self.meter
        if meter is not None:
            if meter.first_byte_at is None:
                meter.first_byte_at = now = self.agent.clock.now()
                if meter.stream:
                    self.agent.ttft(meter.charge.model).observe(now - meter.admitted_at)
            if meter.counter is not None:
                meter.counter.feed(chunk)
        self.client.write(chunk)

    def done(self) -> None:
        buffer = self.buffer
        if buffer is None:
            self.client.producer = None
            self.client.finish()
            return
        self.buffer = None
        data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
        if self.meter is not None:
            self.meter.usage = usage_of_json(data)
        self.client.respond(self.status, self.reason, self.headers, data)

    def fail(self, status: int, message: str) -> None:
        self.client.producer = None
        if self.client.started:
            self.client.abort()  # headers are sent: all we can do is cut the client short too
        else:
            self.client.respond_error(status, message)


class Agent:
    """The composition of one agent: budget, limits watcher, metrics, upstream pool, server."""

    def __init__(
        self,
        config: AgentConfig,
        clock: Clock,
        registry: CollectorRegistry,
        *,
        before_metrics: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.registry = registry
        self.metrics = AgentMetrics(registry, clock.now)
        self.counters = self.metrics.requests
        self.gc = GcPolicy(GcPauses(self.metrics.gc_pause, clock.now))
        self.budget = TokenBudget(
            config.default_token_rate,
            clock.now(),
            burst_seconds=config.burst_seconds,
            shares=config.shares,
            max_tenants=config.max_tenants,
        )
        self.before_metrics = before_metrics
        self.upstream = config.upstream.rstrip("/")
        parts = urlsplit(self.upstream)
        self._upstream_host = parts.hostname or "127.0.0.1"
        self._upstream_port = parts.port or 80
        self._host_header = parts.netloc.encode("idna")
        self._prefix = parts.path.encode()
        self._tenant_header = config.tenant_header.lower().encode("latin-1")
        self.in_flight = 0
        self.queued = 0
        self._session: aiohttp.ClientSession | None = None
        self._watcher: LimitsWatcher | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._pool: UpstreamPool | None = None
        self._servers: list[HttpServer] = []
        self._ttft: dict[str, Any] = {}  # histogram children by model
        self._waker: asyncio.Future[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def session(self) -> aiohttp.ClientSession:
        """For the limits watcher and the model server's /metrics (the admin port)."""
        if self._session is None:
            raise RuntimeError("the agent is not started")
        return self._session

    @property
    def watcher(self) -> LimitsWatcher:
        if self._watcher is None:
            raise RuntimeError("the agent is not started")
        return self._watcher

    @property
    def pool(self) -> UpstreamPool:
        if self._pool is None:
            raise RuntimeError("the agent is not started")
        return self._pool

    @property
    def servers(self) -> list[HttpServer]:
        """The proxy's listeners (``listen``)."""
        return self._servers

    async def start(self) -> None:
        """The upstream pool, the session, a first limits read and the watcher loop."""
        self._pool = UpstreamPool(
            self._upstream_host,
            self._upstream_port,
            self.clock,
            limit=self.config.upstream_connections,
            idle_timeout=IDLE_UPSTREAM_SECONDS,
            timeout=self.config.upstream_timeout,
        )
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            # no Accept-Encoding: the model server's /metrics is appended as-is, never gzipped
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=self.config.limits_timeout, sock_connect=5.0),
        )
        self._watcher = LimitsWatcher(
            self.config, self.budget, self.metrics, self.clock, self._session, self.notify
        )
        self._watcher.start_default()
        if self.config.limits_url or self.config.limits_file:
            await self._watcher.read_once()  # serve with the published limit from the start
        self._watch_task = asyncio.create_task(self._watcher.run(), name="agent-limits")

    async def listen(self, host: str, port: int, *, backlog: int = 1024) -> list[tuple[str, int]]:
        """Serve the proxy on ``host:port`` (0: any free port); the bound addresses."""
        server = HttpServer(self.handle, max_body=self.config.max_body_bytes)
        await server.listen(host, port, backlog=backlog)
        self._servers.append(server)
        return server.addresses

    def admin_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/healthz", self.handle_health)
        app.router.add_get("/limits", self.handle_limits)
        return app

    async def close(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stop accepting, let answers in progress finish (at most ``grace``), close the rest."""
        for server in self._servers:
            await server.close(grace)
        self._servers.clear()
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
            self._watch_task = None
        if self._pool is not None:
            await self._pool.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- admission ---------------------------------------------------------------------------

    def notify(self) -> None:
        """Wake queued requests: budget came back, a slot freed, or the limit changed."""
        if self._waker is not None and not self._waker.done():
            self._waker.set_result(None)
        self._waker = None

    async def _wait(self, seconds: float) -> None:
        if self._waker is None:
            self._waker = asyncio.get_running_loop().create_future()
        waker = self._waker
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        try:
            await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            await asyncio.wait((sleeper,))

    def admit_now(
        self, model: str, tenant: str, cost: float | None, now: float
    ) -> Charge | Refused | None:
        """One try, without waiting: take a concurrency slot and (when ``cost`` is given) charge
        the buckets. None: admitted, unmetered. The request path calls this first and goes
        through ``admit`` (a coroutine, the queue) only when refused with a queue configured."""
        limit = self.config.max_concurrency
        if limit and self.in_flight >= limit:
            return Refused("concurrency", None)
        if cost is None:
            self.in_flight += 1
            return None
        charge = self.budget.admit(model, tenant, cost, now)
        if not isinstance(charge, Charge):
            return Refused("tokens", charge)
        self.in_flight += 1
        return charge

    async def admit(self, model: str, tenant: str, cost: float | None) -> Charge | Refused | None:
        """Take a concurrency slot and (when ``cost`` is given) charge the buckets; wait in the
        queue when allowed. None: admitted, unmetered."""
        config = self.config
        queued_at: float | None = None
        admitted = False
        try:
            while True:
                now = self.clock.now()
                outcome = self.admit_now(model, tenant, cost, now)
                if not isinstance(outcome, Refused):
                    admitted = True
                    return outcome
                wait = outcome.wait
                if queued_at is None:
                    if self.queued >= config.queue_size or (
                        wait is not None and wait > config.queue_timeout
                    ):
                        return outcome
                    queued_at = now
                    self.queued += 1
                    self.metrics.queued.inc()
                remaining = queued_at + config.queue_timeout - now
                if remaining <= 0:
                    return outcome
                await self._wait(remaining if wait is None else min(wait, remaining))
        finally:
            if queued_at is not None:
                self.queued -= 1
                self.metrics.queued.dec()
                if admitted:
                    self.metrics.queue_wait.observe(self.clock.now() - queued_at)

    def release(self) -> None:
        self.in_flight -= 1
        self.notify()

    # --- the proxy ---------------------------------------------------------------------------

    def tenant_of(self, request: Request) -> str:
        index = request.index
        tenant = index.get(self._tenant_header)
        if tenant:
            return tenant.decode("latin-1").strip()[:128] or "default"
        raw = index.get(b"authorization")
        if raw and self.config.tenant_from_api_key:
            auth = raw.decode("latin-1")
            if auth[:7].lower() == "bearer " and auth[7:].strip():
                # never the key itself in labels or logs
                return "key-" + hashlib.sha256(auth[7:].strip().encode()).hexdigest()[:12]
        return "default"

    def _refuse(
        self, client: HttpConnection, refused: Refused, model: str, tenant: str, cost: float
    ) -> None:
        # under a storm of refusals this is the hot path: plain counters (metrics.py), label
        # sets bounded by the budget's keys; the bodies are constants
        series = self.counters.rejected_series(tenant, self.budget.model_key(model), refused.reason)
        series.requests += 1
        series.tokens += cost
        if refused.reason == "tokens":
            seconds = retry_after(refused.wait if refused.wait is not None else 1.0)
            status, reason, body = 429, b"Too Many Requests", _TOKENS_BODY
        else:
            seconds, status, reason, body = 1, 503, b"Service Unavailable", _CONCURRENCY_BODY
        headers = [
            (b"Content-Type", b"application/json; charset=utf-8"),
            (b"Retry-After", b"%d" % seconds),
        ]
        client.respond(status, reason, headers, body)

    async def handle(self, request: Request, client: HttpConnection) -> None:
        """One request, from the HTTP server: admit, forward, settle."""
        if request.method != b"POST":
            await self._forward(request, client, None, metered=False)
            return
        target = request.target
        query = target.find(b"?")
        if (target if query < 0 else target[:query]).endswith(METERED_SUFFIXES):
            parsed = parse_openai_request(request.body, self.config.default_max_tokens)
        else:
            parsed = None
        tenant = self.budget.tenant_key(self.tenant_of(request))
        if parsed is None:
            model, cost = "", None
        else:
            model, cost = parsed.model, float(parsed.estimate)
        now = self.clock.now()
        outcome = self.admit_now(model, tenant, cost, now)
        if isinstance(outcome, Refused) and self.config.queue_size:
            outcome = await self.admit(model, tenant, cost)  # the queue: wait for budget/a slot
            now = self.clock.now()
        if isinstance(outcome, Refused):
            self._refuse(client, outcome, model, tenant, cost or 0.0)
            return
        in_flight = self.counters.tenant(tenant)
        in_flight[0] += 1
        meter: _Meter | None = None
        if outcome is not None and parsed is not None:
            series = self.counters.admitted_series(outcome.tenant, outcome.model)
            series.requests += 1
            meter = _Meter(outcome, series, parsed.prompt_tokens, parsed.stream, now)
        try:
            await self._forward(request, client, meter, metered=parsed is not None)
        finally:
            in_flight[0] -= 1
            if meter is not None:
                actual = meter.actual(meter.status)
                self.budget.settle(meter.charge, actual, self.clock.now())
                meter.series.tokens += actual
            self.release()

    def ttft(self, model: str) -> Any:
        """The time-to-first-token histogram of a model, looked up once (``model`` is the
        budget's ``model_key``: bounded)."""
        child = self._ttft.get(model)
        if child is None:
            child = self._ttft[model] = self.metrics.ttft.labels(model)
        return child

    def upstream_request(self, request: Request, *, metered: bool) -> bytes:
        """The bytes sent to the model server: request line, filtered headers, body."""
        drop = _METERED_DROP if metered else _REQUEST_DROP
        parts = [
            b"%s %s%s HTTP/1.1\r\nHost: %s\r\n"
            % (request.method, self._prefix, request.target, self._host_header)
        ]
        for name, value in filter_headers(request.headers, request.names, drop):
            parts += (name, b": ", value, b"\r\n")
        body = request.body
        if request.has_body or body:
            parts.append(b"Content-Length: %d\r\n\r\n" % len(body))
            parts.append(body)
        else:
            parts.append(b"\r\n")
        return b"".join(parts)

    async def _forward(
        self, request: Request, client: HttpConnection, meter: _Meter | None, *, metered: bool
    ) -> None:
        data = self.upstream_request(request, metered=metered)
        head_only = request.method == b"HEAD"
        relay = _Relay(self, client, meter, head_only)
        try:
            await self.pool.exchange(data, relay, head_only=head_only)
        except UpstreamError as e:
            self.metrics.upstream_errors.labels(e.kind).inc()
            log.warning("upstream %s: %s", request.target, e)
            if e.kind == "timeout":
                relay.fail(504, "the model server did not answer in time")
            elif e.kind == "connect":
                relay.fail(502, "the model server is unreachable")
            else:
                relay.fail(502, "the model server closed the connection")

    # --- admin -------------------------------------------------------------------------------

    async def handle_metrics(self, request: web.Request) -> web.Response:
        if self.before_metrics is not None:
            await self.before_metrics()
        body = generate_latest(self.registry)
        path = self.config.upstream_metrics_path
        if path and self._session is not None:
            body += await self._upstream_metrics(path)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _upstream_metrics(self, path: str) -> bytes:
        """The model server's exposition, appended as-is (its names never start with
        ``autoscaler_agent_``); an unreachable one leaves only ``..._upstream_metrics_up 0``."""
        up = 0
        text = b""
        try:
            async with self.session.get(
                self.upstream + path,
                headers={"Accept": "text/plain;version=0.0.4"},
                timeout=aiohttp.ClientTimeout(total=self.config.limits_timeout),
            ) as resp:
                if resp.status == 200 and "gzip" not in resp.headers.get("Content-Encoding", ""):
                    text = await resp.read()
                    up = 1
        except (aiohttp.ClientError, TimeoutError) as e:
            log.debug("upstream metrics: %r", e)
        head = (
            b"# HELP autoscaler_agent_upstream_metrics_up 1 when the model server's /metrics "
            b"was read and appended below.\n# TYPE autoscaler_agent_upstream_metrics_up gauge\n"
            b"autoscaler_agent_upstream_metrics_up %d\n" % up
        )
        if text and not text.endswith(b"\n"):
            text += b"\n"
        return head + text

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def handle_limits(self, request: web.Request) -> web.Response:
        enforced = self._watcher.enforced if self._watcher is not None else None
        body = {
            "target": self.config.target,
            "tokenRatePerReplica": None if enforced is None else _json_rate(enforced.rate),
            "source": None if enforced is None else enforced.source,
            "reason": None if enforced is None else enforced.reason,
            "inFlight": self.in_flight,
            "queued": self.queued,
        }
        return web.Response(text=json.dumps(body), content_type="application/json")


def _json_rate(rate: float) -> float | str:
    return "unlimited" if math.isinf(rate) else rate
