"""The agent's HTTP/1.1 server: an asyncio ``Protocol`` parsed by httptools (llhttp, C).

Lean on purpose (docs/agent.md, "Overhead"): no router, no middleware, no per-request objects
beyond one ``Request``; bytes in, bytes out. The handler gets each complete request (its body
read whole: the agent meters from the body and forwards it with a ``Content-Length``) and this
connection as the place to write the answer, either whole (``respond``) or as a stream
(``start``, ``write``..., ``finish``).

- Keep-alive as the client asks (``should_keep_alive``: HTTP/1.1 unless ``Connection: close``,
  HTTP/1.0 only with ``Connection: keep-alive``).
- Pipelined requests are answered in order, one at a time: they queue on the connection (at
  most ``MAX_PIPELINED``; reading pauses beyond that) and the next one starts when the answer
  to the one before has been written.
- Request bodies with ``Content-Length`` or chunked; ``Expect: 100-continue`` is answered.
- Bad request syntax: 400; headers over ``MAX_HEADER_BYTES``: 431; a body over the limit: 413;
  each answered with ``Connection: close`` after the requests before it.
- Writes go straight to the transport; when the client reads slower than the answer arrives,
  ``pause_writing`` pauses the ``producer`` (the upstream connection) until it drains.
- The client going away cancels the request's handler task (its ``finally`` blocks settle the
  request and release the upstream connection) and drops what was queued behind it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

import httptools

__all__ = ["HttpConnection", "HttpServer", "Request"]

log = logging.getLogger("autoscaler.traffic.agent.http")

MAX_HEADER_BYTES = 64 * 1024  # request line and headers together
MAX_PIPELINED = 16  # requests queued on one connection before reading pauses
KEEPALIVE_TIMEOUT = 75.0  # seconds an idle client connection is kept (aiohttp's default too)
SWEEP_INTERVAL = 15.0  # seconds between looks for idle connections

REASONS = {
    200: b"OK",
    400: b"Bad Request",
    413: b"Payload Too Large",
    431: b"Request Header Fields Too Large",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}

Headers = list[tuple[bytes, bytes]]


class Producer(Protocol):
    """What feeds a streamed answer (the upstream connection), paused while the client lags."""

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class Request:
    """One parsed request. ``headers`` keep their order and case; ``names`` are their lower-case
    names (same order); ``header()`` looks one up."""

    __slots__ = (
        "body",
        "has_body",
        "headers",
        "index",
        "keep_alive",
        "method",
        "names",
        "target",
        "version",
    )

    def __init__(self) -> None:
        self.method = b""
        self.target = b""  # the raw request target: path and query as sent
        self.version = "1.1"
        self.headers: Headers = []
        self.names: list[bytes] = []
        self.index: dict[bytes, bytes] = {}  # lower-case name -> first value
        self.body = b""
        self.has_body = False  # it came with Content-Length or Transfer-Encoding
        self.keep_alive = True

    def header(self, lower_name: bytes) -> bytes | None:
        """The first value of a header, by its lower-case name."""
        return self.index.get(lower_name)


class _Refusal:
    """A protocol error to answer, in turn, before closing the connection."""

    __slots__ = ("message", "status")

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


class _ParseError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


Handler = Callable[[Request, "HttpConnection"], Awaitable[None]]


class HttpConnection(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.producer: Producer | None = None
        self._pending: deque[Request | _Refusal] = deque()
        self._task: asyncio.Task[None] | None = None
        self._req: Request | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._header_bytes = 0
        self._reading = True
        self._stop_reading = False  # after an error or an upgrade: parse no more
        self._write_paused = False
        # the answer in progress
        self._started = False
        self._finished = False
        self._chunked = False
        self._close_after = False
        self._keep_alive = True
        self._http11 = True
        # loop time of the last bytes read or answer finished: housekeeping runs on the event
        # loop's clock, as asyncio's own timeouts do; admission and metering use the agent's
        # injected Clock
        self.last_active = 0.0
        # the loop, read once per connection: asyncio.get_running_loop() costs a getpid()
        # system call on Python 3.11, and the request path would ask for it five times
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def idle(self) -> bool:
        return self._task is None and not self._pending and self._req is None

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)
        self._loop = loop = asyncio.get_running_loop()
        self.last_active = loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self._pending.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._stop_reading:
            return
        assert self._loop is not None  # connection_made came first
        self.last_active = self._loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # the request was read (it is queued, not started: its task runs on the next turn);
            # the agent does not tunnel upgrades (Upgrade is hop-by-hop): answer it, then close
            if self._pending and isinstance(self._pending[-1], Request):
                self._pending[-1].keep_alive = False
            self._stop(None)
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            if isinstance(cause, _ParseError):
                self._stop(_Refusal(cause.status, str(cause)))
            else:
                log.exception("request parsing failed", exc_info=cause)
                self._stop(_Refusal(500, "internal error"))
        except httptools.HttpParserError as e:
            self._stop(_Refusal(400, f"malformed request: {e}"))
        else:
            return
        self._dispatch()

    # eof_received is not overridden: a client's FIN closes the connection (as aiohttp does), so
    # a client that gives up mid-stream is noticed at once, not at the next write

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.producer is not None:
            self.producer.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.producer is not None:
            self.producer.resume_reading()

    # --- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._req = Request()
        self._chunks = []
        self._size = 0
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        req = self._req
        assert req is not None
        req.target += url
        self._count_header(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        # filled here rather than by a method of Request, and counted inline: this runs for
        # every header of every request
        req = self._req
        assert req is not None
        lower = name.lower()
        req.headers.append((name, value))
        req.names.append(lower)
        req.index.setdefault(lower, value)
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > MAX_HEADER_BYTES:
            raise _ParseError(431, f"request headers over {MAX_HEADER_BYTES} bytes")

    def _count_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_HEADER_BYTES:
            raise _ParseError(431, f"request headers over {MAX_HEADER_BYTES} bytes")

    def on_headers_complete(self) -> None:
        req = self._req
        assert req is not None
        parser = self.parser
        req.method = parser.get_method()
        req.version = parser.get_http_version()
        req.keep_alive = parser.should_keep_alive()
        index = req.index
        length = index.get(b"content-length")
        if length is not None:
            req.has_body = True
            if int(length) > self.server.max_body:  # llhttp checked it is a number
                raise _ParseError(413, f"request body over {self.server.max_body} bytes")
        elif b"transfer-encoding" in index:
            req.has_body = True
        expect = index.get(b"expect")
        if (
            expect is not None
            and expect.lower() == b"100-continue"
            and req.version == "1.1"
            and self._task is None
            and self.transport is not None
        ):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.server.max_body:
            raise _ParseError(413, f"request body over {self.server.max_body} bytes")
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        req = self._req
        assert req is not None
        self._req = None
        chunks = self._chunks
        if chunks:
            req.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._chunks = []
        self._pending.append(req)
        self._dispatch()

    # --- running requests in order ----------------------------------------------------------

    def _stop(self, refusal: _Refusal | None) -> None:
        self._stop_reading = True
        if refusal is not None:
            self._pending.append(refusal)

    def _dispatch(self) -> None:
        if self._task is None and self._pending and not self.closed:
            assert self._loop is not None
            self._task = self._loop.create_task(self._run())
        if len(self._pending) > MAX_PIPELINED and self._reading and self.transport is not None:
            self._reading = False
            self.transport.pause_reading()

    async def _run(self) -> None:
        try:
            while self._pending and not self.closed:
                item = self._pending.popleft()
                if not self._reading and len(self._pending) <= MAX_PIPELINED // 2:
                    self._reading = True
                    if self.transport is not None:
                        self.transport.resume_reading()
                self._started = self._finished = self._chunked = False
                self._close_after = False
                if isinstance(item, _Refusal):
                    self._keep_alive = False
                    self._close_after = True
                    self.respond_error(item.status, item.message)
                    self._close()
                    return
                self._keep_alive = item.keep_alive
                self._http11 = item.version == "1.1"
                try:
                    await self.server.handler(item, self)
                except Exception:
                    log.exception("handling %r failed", item.target)
                    if not self._started:
                        self.respond_error(500, "internal error")
                if not self._finished:
                    self.abort()  # an answer cut short: the client must not wait for more
                    return
                if not item.keep_alive or self._close_after:
                    self._close()
                    return
        finally:
            self._task = None
            assert self._loop is not None
            self.last_active = self._loop.time()
        if self._stop_reading and not self.closed:
            self._close()  # upgraded: nothing more will be answered

    def _close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        """Cut the connection (an upstream that broke off mid-answer)."""
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True

    # --- writing the answer -----------------------------------------------------------------

    @property
    def started(self) -> bool:
        """The answer's head went out (an error can no longer be answered, only cut short)."""
        return self._started

    def _head(self, status: int, reason: bytes, headers: Headers, framing: bytes) -> bytes:
        if self._close_after or not self._keep_alive:
            framing += b"Connection: close\r\n"
        elif not self._http11:
            framing += b"Connection: keep-alive\r\n"  # an HTTP/1.0 client assumes close
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        for name, value in headers:  # a loop, not a generator: one fewer object per answer
            parts += (name, b": ", value, b"\r\n")
        parts.append(framing)
        parts.append(b"\r\n")
        return b"".join(parts)

    def respond(self, status: int, reason: bytes, headers: Headers, body: bytes) -> None:
        """The whole answer in one write, framed by ``Content-Length``."""
        if self.closed or self.transport is None:
            self._finished = True
            return
        self._started = self._finished = True
        head = self._head(status, reason, headers, b"Content-Length: %d\r\n" % len(body))
        self.transport.write(head + body if body else head)

    def respond_error(self, status: int, message: str, extra: Headers | None = None) -> None:
        kind = "upstream_error" if status >= 500 else "invalid_request_error"
        error = {"message": message, "type": kind, "code": status}
        body = json.dumps({"error": error}).encode()
        headers: Headers = [(b"Content-Type", b"application/json; charset=utf-8")]
        if extra:
            headers.extend(extra)
        self.respond(status, REASONS.get(status, b"Error"), headers, body)

    def start(
        self,
        status: int,
        reason: bytes,
        headers: Headers,
        length: int | None,
        *,
        bodyless: bool = False,
    ) -> None:
        """Send the head of a streamed answer: ``length`` bytes will follow, or (``None``)
        chunks of unknown total, chunked to an HTTP/1.1 client and up to the close for an
        HTTP/1.0 one. ``bodyless`` (HEAD, 204, 304): ``headers`` already say what they say."""
        self._started = True
        if bodyless:
            framing = b""
            self._finished = True
        elif length is not None:
            framing = b"Content-Length: %d\r\n" % length
        elif self._http11:
            framing = b"Transfer-Encoding: chunked\r\n"
            self._chunked = True
        else:
            framing = b""
            self._close_after = True
        if self.closed or self.transport is None:
            return
        self.transport.write(self._head(status, reason, headers, framing))

    def write(self, chunk: bytes) -> None:
        if self.closed or self.transport is None or not chunk:
            return
        if self._chunked:
            self.transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
        else:
            self.transport.write(chunk)

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._chunked and not self.closed and self.transport is not None:
            self.transport.write(b"0\r\n\r\n")


class HttpServer:
    """The listening side: makes an ``HttpConnection`` per client and closes them all on exit."""

    def __init__(self, handler: Handler, *, max_body: int) -> None:
        self.handler = handler
        self.max_body = max_body
        self.connections: set[HttpConnection] = set()
        self.server: asyncio.Server | None = None
        self.keepalive_timeout = KEEPALIVE_TIMEOUT
        self._sweeper: asyncio.TimerHandle | None = None

    def sweep(self, now: float) -> int:
        """Close the keep-alive connections idle longer than ``keepalive_timeout`` (clients
        that vanished without a FIN would hold them forever); how many were closed."""
        stale = [
            c for c in self.connections if c.idle and now - c.last_active > self.keepalive_timeout
        ]
        for conn in stale:
            conn._close()
        return len(stale)

    def _sweep_later(self) -> None:
        loop = asyncio.get_running_loop()
        self.sweep(loop.time())
        self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep_later)

    async def listen(self, host: str, port: int, *, backlog: int = 1024) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: HttpConnection(self), host, port, backlog=backlog, reuse_address=True
        )
        self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep_later)
        return self.server

    @property
    def addresses(self) -> list[tuple[str, int]]:
        if self.server is None:
            return []
        return [s.getsockname()[:2] for s in self.server.sockets]

    async def close(self, grace: float = 10.0) -> None:
        """Stop accepting, let answers in progress finish (at most ``grace`` s), close the rest."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self.server is not None:
            self.server.close()
        busy = [c._task for c in self.connections if c._task is not None]
        for conn in list(self.connections):
            if conn._task is None:
                conn._close()
        if busy:
            await asyncio.wait(busy, timeout=grace)
        for conn in list(self.connections):
            conn.abort()
        if self.server is not None:
            await self.server.wait_closed()
            self.server = None
