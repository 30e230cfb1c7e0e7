"""A scripted Prometheus query API on loopback, for testing what reads Prometheus.

    async with FakePrometheusAPI() as api:
        api.values["sum(up)"] = (1700000000.0, 3.0)       # answered as a one-series vector
        api.script(Reply(500), Reply.hang())              # the next two requests, in order
        ...  # point a PrometheusSource at api.url; api.queries lists what it was asked

A request takes the next scripted reply if any; otherwise it is proxied to ``upstream`` (a real
Prometheus) when one is given, or answered from ``values`` (an empty vector for an unknown query).
A ``Reply.hang()`` never answers until the server stops, as a stuck Prometheus would.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

__all__ = ["FakePrometheusAPI", "Reply", "scalar_body", "vector_body"]


def vector_body(*samples: tuple[float, float | str], labels: dict[str, str] | None = None) -> Any:
    """A successful instant-vector answer with one series per ``(ts, value)`` sample."""
    base: dict[str, str] = dict(labels or {})
    result: list[dict[str, Any]] = [
        {"metric": {**base, "series": str(i)}, "value": [ts, str(value)]}
        for i, (ts, value) in enumerate(samples)
    ]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def scalar_body(ts: float, value: float | str) -> Any:
    """A successful scalar answer."""
    return {"status": "success", "data": {"resultType": "scalar", "result": [ts, str(value)]}}


@dataclass(frozen=True)
class Reply:
    """One scripted HTTP answer: status, body (JSON-encoded unless bytes or str) and headers."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hang_forever: bool = False

    @classmethod
    def hang(cls) -> Reply:
        return cls(hang_forever=True)

    @classmethod
    def error(cls, status: int, error_type: str = "bad_data", message: str = "") -> Reply:
        """The error shape Prometheus uses (400 bad_data, 422 execution, 503 timeout...)."""
        body = {"status": "error", "errorType": error_type, "error": message or error_type}
        return cls(status, body)

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        if self.body is None:
            return b""
        return json.dumps(self.body).encode()


class FakePrometheusAPI:
    """An aiohttp server on 127.0.0.1 answering ``/api/v1/query`` (GET or form POST)."""

    def __init__(self, upstream: str | None = None) -> None:
        self.upstream = upstream.rstrip("/") if upstream else None
        self.values: dict[str, tuple[float, float]] = {}
        self.queries: list[str] = []  # every query received, in order
        self.max_in_flight = 0
        self.hold: asyncio.Event | None = None  # when set to an Event, answers wait for it
        self._in_flight = 0
        self._changed = asyncio.Condition()
        self._script: deque[Reply] = deque()
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self._port: int | None = None

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("the fake Prometheus is not running")
        return f"http://127.0.0.1:{self._port}"

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order."""
        self._script.extend(replies)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def wait_in_flight(self, n: int) -> None:
        """Return once at least ``n`` requests are being answered at the same time."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._in_flight >= n)

    async def __aenter__(self) -> FakePrometheusAPI:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/v1/query", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        if self.upstream:
            self._client = aiohttp.ClientSession()

    async def stop(self) -> None:
        # Waiting handlers return, so shutdown does not wait for them.
        self._released.set()
        if self.hold is not None:
            self.hold.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        self._port = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            query = (await request.post()).get("query")
        else:
            query = request.query.get("query")
        query = query if isinstance(query, str) else ""
        self.queries.append(query)
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        async with self._changed:
            self._changed.notify_all()
        try:
            if self.hold is not None:
                await self.hold.wait()
            if self._script:
                reply = self._script.popleft()
                if reply.hang_forever:
                    await self._released.wait()
                    return web.Response(status=503)
                return web.Response(
                    status=reply.status,
                    body=reply.encoded(),
                    headers=reply.headers,
                    content_type="application/json",
                )
            if self.upstream is not None:
                return await self._proxy(query)
            sample = self.values.get(query)
            body = vector_body(sample) if sample is not None else vector_body()
            return web.json_response(body)
        finally:
            self._in_flight -= 1

    async def _proxy(self, query: str) -> web.Response:
        assert self._client is not None
        url = f"{self.upstream}/api/v1/query"
        async with self._client.get(url, params={"query": query}) as upstream:
            body = await upstream.read()
            return web.Response(status=upstream.status, body=body, content_type="application/json")
