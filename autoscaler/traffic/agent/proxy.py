"""The agent: an aiohttp reverse proxy that admits requests by token budget (docs/agent.md).

Two applications share one ``Agent``:

- the **proxy** (``--listen``, the port KServe routes to): every path is forwarded to the model
  server. ``POST .../v1/completions`` and ``POST .../v1/chat/completions`` (also under KServe's
  ``/openai`` prefix) are metered: charged an estimate at admission, settled with the real usage.
  Other POSTs (KServe V1 ``:predict``, V2 ``/infer``) pass the concurrency cap only; every other
  method passes straight through, so probes and metadata are never queued or refused.
- the **admin** app (``--metrics-listen``, default :9095): ``/metrics`` (the agent's registry,
  the GPU gauges with ``--nvml``, then the model server's own ``/metrics`` so one pod scrape
  reads both), ``/healthz`` and ``/limits``. A separate port, so no model path is shadowed.

Forwarding keeps method, path and query, body, status and headers, minus the hop-by-hop ones
(RFC 9110 7.6.1, and those named in ``Connection``); ``Host`` is the upstream's. Bodies are not
decompressed (``auto_decompress=False``); only metered requests are sent without
``Accept-Encoding``, so their usage can be read (gzip on loopback buys nothing). Responses with
a small ``Content-Length`` are read whole and sent in one write; others (SSE streams, chunked,
large) are relayed chunk by chunk as they arrive.

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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from autoscaler.core.clock import Clock
from autoscaler.traffic.agent.budget import Charge, TokenBudget
from autoscaler.traffic.agent.estimate import SseCounter, parse_openai_request, usage_of_json
from autoscaler.traffic.agent.metrics import AgentMetrics
from autoscaler.traffic.agent.options import AgentConfig
from autoscaler.traffic.agent.watcher import LimitsWatcher

__all__ = ["Agent"]

log = logging.getLogger("autoscaler.traffic.agent")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_REQUEST_DROP = HOP_BY_HOP | {"host", "content-length"}
_RESPONSE_DROP = HOP_BY_HOP | {"content-length"}
METERED_SUFFIXES = ("/v1/completions", "/v1/chat/completions")
SMALL_BODY = 256 * 1024  # responses up to this Content-Length are read whole
ADMISSION_RETRY_AFTER_CAP = 3600  # seconds; a zero limit has no finite wait


def filter_headers(headers: CIMultiDictProxy[str], drop: frozenset[str]) -> CIMultiDict[str]:
    """A copy without hop-by-hop headers, including those the Connection header names."""
    named: frozenset[str] = frozenset()
    connection = headers.get("Connection")
    if connection:
        named = frozenset(t.strip().lower() for t in connection.split(","))
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in headers.items():
        lower = key.lower()
        if lower not in drop and lower not in named:
            out.add(key, value)
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


class Agent:
    """The composition of one agent: budget, limits watcher, metrics, upstream session."""

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
        self.metrics = AgentMetrics(registry)
        self.budget = TokenBudget(
            config.default_token_rate,
            clock.now(),
            burst_seconds=config.burst_seconds,
            shares=config.shares,
            max_tenants=config.max_tenants,
        )
        self.before_metrics = before_metrics
        self.upstream = config.upstream.rstrip("/")
        self.in_flight = 0
        self.queued = 0
        self._session: aiohttp.ClientSession | None = None
        self._watcher: LimitsWatcher | None = None
        self._waker: asyncio.Future[None] | None = None
        self._timeout = aiohttp.ClientTimeout(total=config.upstream_timeout, sock_connect=5.0)

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the agent is not started")
        return self._session

    @property
    def watcher(self) -> LimitsWatcher:
        if self._watcher is None:
            raise RuntimeError("the agent is not started")
        return self._watcher

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx of the proxy app: the session, a first limits read, the watcher loop."""
        connector = aiohttp.TCPConnector(
            limit=self.config.upstream_connections, limit_per_host=0, keepalive_timeout=30.0
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            timeout=self._timeout,
        )
        self._watcher = LimitsWatcher(
            self.config, self.budget, self.metrics, self.clock, self._session, self.notify
        )
        self._watcher.start_default()
        if self.config.limits_url or self.config.limits_file:
            await self._watcher.read_once()  # serve with the published limit from the start
        task = asyncio.create_task(self._watcher.run(), name="agent-limits")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self._session.close()
            self._session = None

    def proxy_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.cleanup_ctx.append(self._lifecycle)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def admin_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/healthz", self.handle_health)
        app.router.add_get("/limits", self.handle_limits)
        return app

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

    def tenant_of(self, request: web.Request) -> str:
        tenant = request.headers.get(self.config.tenant_header)
        if tenant:
            return tenant.strip()[:128] or "default"
        if self.config.tenant_from_api_key:
            auth = request.headers.get("Authorization", "")
            if auth[:7].lower() == "bearer " and auth[7:].strip():
                # never the key itself in labels or logs
                return "key-" + hashlib.sha256(auth[7:].strip().encode()).hexdigest()[:12]
        return "default"

    async def admit(self, model: str, tenant: str, cost: float | None) -> Charge | Refused | None:
        """Take a concurrency slot and (when ``cost`` is given) charge the buckets; wait in the
        queue when allowed. None: admitted, unmetered."""
        config = self.config
        queued_at: float | None = None
        admitted = False
        try:
            while True:
                now = self.clock.now()
                wait: float | None = None
                if config.max_concurrency and self.in_flight >= config.max_concurrency:
                    reason = "concurrency"
                elif cost is None:
                    self.in_flight += 1
                    admitted = True
                    return None
                else:
                    decision = self.budget.try_admit(model, tenant, cost, now)
                    if decision.charge is not None:
                        self.in_flight += 1
                        admitted = True
                        return decision.charge
                    reason, wait = "tokens", decision.wait
                if queued_at is None:
                    if self.queued >= config.queue_size or (
                        wait is not None and wait > config.queue_timeout
                    ):
                        return Refused(reason, wait)
                    queued_at = now
                    self.queued += 1
                    self.metrics.queued.inc()
                remaining = queued_at + config.queue_timeout - now
                if remaining <= 0:
                    return Refused(reason, wait)
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

    def _refuse(self, refused: Refused, model: str, tenant: str, cost: float) -> web.Response:
        m = self.metrics
        model = self.budget.model_key(model)
        m.rejected_requests.labels(tenant, model, refused.reason).inc()
        m.rejected_tokens.labels(tenant, model, refused.reason).inc(cost)
        if refused.reason == "tokens":
            seconds = retry_after(refused.wait if refused.wait is not None else 1.0)
            status, message = 429, "token rate limit exceeded"
            kind = "rate_limit_exceeded"
        else:
            seconds, status, message = 1, 503, "too many requests in flight"
            kind = "overloaded"
        body = {"error": {"message": message, "type": kind, "code": status}}
        return web.json_response(body, status=status, headers={"Retry-After": str(seconds)})

    # --- the proxy ---------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read() if request.body_exists else None
        if request.method != "POST":
            return await self._forward(request, body, None, metered=False)
        if request.path.endswith(METERED_SUFFIXES):
            parsed = parse_openai_request(body or b"", self.config.default_max_tokens)
        else:
            parsed = None
        tenant = self.budget.tenant_key(self.tenant_of(request))
        model = parsed.model if parsed is not None else ""
        cost = None if parsed is None else float(parsed.estimate)
        outcome = await self.admit(model, tenant, cost)
        if isinstance(outcome, Refused):
            return self._refuse(outcome, model, tenant, cost or 0.0)
        gauge = self.metrics.in_flight.labels(tenant)
        gauge.inc()
        meter: _Meter | None = None
        if outcome is not None and parsed is not None:
            meter = _Meter(outcome, parsed.prompt_tokens, parsed.stream, self.clock.now())
            self.metrics.admitted_requests.labels(outcome.tenant, outcome.model).inc()
        try:
            return await self._forward(request, body, meter, metered=parsed is not None)
        finally:
            gauge.dec()
            if meter is not None:
                self._settle(meter)
            self.release()

    def _settle(self, meter: _Meter) -> None:
        actual = meter.actual(meter.status)
        self.budget.settle(meter.charge, actual, self.clock.now())
        self.metrics.admitted_tokens.labels(meter.charge.tenant, meter.charge.model).inc(actual)

    async def _forward(
        self, request: web.Request, body: bytes | None, meter: _Meter | None, *, metered: bool
    ) -> web.StreamResponse:
        headers = filter_headers(request.headers, _REQUEST_DROP)
        if metered:
            headers.popall("Accept-Encoding", None)
        url = self.upstream + request.raw_path
        try:
            upstream = await self.session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False
            )
        except TimeoutError:
            self.metrics.upstream_errors.labels("timeout").inc()
            return _error(504, "the model server did not answer in time")
        except aiohttp.ClientError as e:
            self.metrics.upstream_errors.labels("connect").inc()
            log.warning("upstream %s: %s", url, e)
            return _error(502, "the model server is unreachable")
        try:
            return await self._relay(request, upstream, meter)
        finally:
            upstream.release()

    async def _relay(
        self, request: web.Request, upstream: aiohttp.ClientResponse, meter: _Meter | None
    ) -> web.StreamResponse:
        headers = filter_headers(upstream.headers, _RESPONSE_DROP)
        length = upstream.content_length
        if meter is not None:
            meter.status = upstream.status
        small = length is not None and length <= SMALL_BODY
        # a metered JSON answer is read whole, whatever its size, for its usage
        whole = (small or meter is not None) and not (meter is not None and meter.stream)
        if whole:
            try:
                data = await upstream.read()
            except (aiohttp.ClientError, TimeoutError) as e:
                self.metrics.upstream_errors.labels("disconnect").inc()
                log.warning("upstream %s: %s", request.raw_path, e)
                return _error(502, "the model server closed the connection")
            if meter is not None:
                meter.usage = usage_of_json(data)
            return web.Response(
                body=data, status=upstream.status, reason=upstream.reason, headers=headers
            )
        out = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        if length is not None:
            out.content_length = length
        counter: SseCounter | None = None
        if meter is not None and meter.stream:
            counter = meter.counter = SseCounter()
        await out.prepare(request)
        first = True
        try:
            async for chunk in upstream.content.iter_any():
                if first and meter is not None:
                    first = False
                    meter.first_byte_at = now = self.clock.now()
                    if meter.stream:
                        self.metrics.ttft.labels(meter.charge.model).observe(
                            now - meter.admitted_at
                        )
                if counter is not None:
                    counter.feed(chunk)
                await out.write(chunk)
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, TimeoutError) as e:
            # headers are sent: all we can do is cut the client's stream short as well
            self.metrics.upstream_errors.labels("disconnect").inc()
            log.warning("upstream %s broke off mid-body: %r", request.raw_path, e)
            if request.transport is not None:
                request.transport.close()
            return out
        await out.write_eof()
        return out

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


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "upstream_error", "code": status}}
    return web.json_response(body, status=status)
