"""Keep-alive connections to the model server: an asyncio ``Protocol`` with httptools' response
parser, pooled.

One exchange at a time per connection. The request goes out in one write (head and body
joined); the answer is handed to a ``Sink`` from the parser's callbacks, in the same turn of the
event loop that read it, so a streamed chunk reaches the client without a task switch.

- A connection goes back to the pool when its answer ended and both sides allow keep-alive; the
  pool reuses the most recently used one first and drops those idle over ``idle_timeout``
  (counted on the agent's clock) and those the model server closed.
- A request sent on a reused connection that the server had closed meanwhile (no byte of answer
  came back) is sent once more on a fresh connection: the server never saw it.
- Answers to ``HEAD`` end with their head (the parser cannot know there is no body); that
  connection is not reused. 1xx interim answers are skipped. An answer without length ends when
  the server closes.
- At most ``limit`` connections; more requests wait for one to be free.
- An exchange not finished ``timeout`` seconds after it started is cut (``UpstreamError``
  ``timeout``). Deadlines are checked every ``check_interval`` (1 s) on the event loop's clock
  rather than with a timer per request: a timer armed and cancelled per request cost more than
  the rest of the exchange's bookkeeping, and a 600 s limit does not need better than a second.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol, cast

import httptools

from autoscaler.core.clock import Clock

__all__ = ["Sink", "UpstreamConnection", "UpstreamError", "UpstreamPool"]

Headers = list[tuple[bytes, bytes]]


class UpstreamError(Exception):
    """The exchange failed; ``kind`` is ``connect`` or ``disconnect``; ``received`` says
    whether any byte of the answer had arrived."""

    def __init__(self, kind: str, message: str, *, received: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.received = received


class Sink(Protocol):
    """Where an answer goes, as it is parsed."""

    def head(
        self, status: int, reason: bytes, headers: Headers, upstream: UpstreamConnection
    ) -> None: ...
    def body(self, chunk: bytes) -> None: ...
    def done(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self.deadline = 0.0  # loop time by which the exchange in progress must end
        self._sink: Sink | None = None
        self._done: asyncio.Future[None] | None = None
        self._head_only = False
        self._received = False
        self._reason = b""
        self._headers: Headers = []
        self.names: list[bytes] = []  # the answer's header names, lower-case, same order
        self.content_length = b""  # its Content-Length as sent (b"": none)
        self._status = 0
        self._framed = False  # the answer has Content-Length or is chunked
        self._keep_alive = False
        self._interim = False

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self.pool.forget(self)
        if self._done is None or self._done.done():
            return
        if self._status and not self._framed and not self._interim:
            self._complete()  # an answer without length ends with the connection
        else:
            reason = "the model server closed the connection"
            self._fail(UpstreamError("disconnect", reason, received=self._received))

    def data_received(self, data: bytes) -> None:
        if self._done is None or self._done.done():
            self.abort()  # bytes nobody asked for: this connection cannot be trusted again
            return
        self._received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            self.abort()
            self._fail(
                UpstreamError("disconnect", f"relaying the answer failed: {e.__context__!r}")
            )
        except httptools.HttpParserError as e:
            self.abort()
            self._fail(UpstreamError("disconnect", f"malformed answer: {e}", received=True))

    # --- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._headers = []
        self.names = []
        self.content_length = b""
        self._reason = b""
        self._framed = False

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        # the lower-case names are kept for the sink, which filters the headers by them
        self._headers.append((name, value))
        lower = name.lower()
        self.names.append(lower)
        if lower == b"content-length":
            self._framed = True
            self.content_length = value
        elif lower == b"transfer-encoding":
            self._framed = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self._interim = 100 <= status < 200 and status != 101
        if self._interim:
            return
        self._status = status
        self._keep_alive = self.parser.should_keep_alive()
        assert self._sink is not None
        self._sink.head(status, self._reason, self._headers, self)
        if self._head_only:
            self._keep_alive = False
            self._complete()

    def on_body(self, body: bytes) -> None:
        if self._sink is not None:
            self._sink.body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._complete()

    # --- the exchange -----------------------------------------------------------------------

    def send(self, data: bytes, sink: Sink, *, head_only: bool) -> asyncio.Future[None]:
        assert self.transport is not None
        self._sink = sink
        self._head_only = head_only
        self._received = False
        self._status = 0
        self._interim = False
        self.reusable = False
        self._done = done = self.pool.loop().create_future()
        self.transport.write(data)
        return done

    @property
    def busy(self) -> bool:
        return self._done is not None and not self._done.done()

    def expire(self) -> None:
        self.abort()
        self._fail(UpstreamError("timeout", "no answer in time", received=self._received))

    def _complete(self) -> None:
        done, sink = self._done, self._sink
        if done is None or done.done() or sink is None:
            return
        self.reusable = self._keep_alive and not self.closed
        self._sink = None
        sink.done()
        if not done.done():
            done.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        self._sink = None
        if self._done is not None and not self._done.done():
            self._done.set_exception(error)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.abort()


class UpstreamPool:
    """Keep-alive connections to one ``host:port``."""

    def __init__(
        self,
        host: str,
        port: int,
        clock: Clock,
        *,
        limit: int = 1000,
        idle_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        timeout: float = 600.0,
        check_interval: float = 1.0,
    ) -> None:
        self.host = host
        self.port = port
        self.clock = clock
        self.limit = limit
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.check_interval = min(check_interval, timeout)
        self._checker: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.opened = 0  # connections made, for tests and the benchmark
        self._idle: deque[UpstreamConnection] = deque()
        self._busy = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._all: set[UpstreamConnection] = set()

    @property
    def idle(self) -> int:
        return len(self._idle)

    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, read once: ``asyncio.get_running_loop()`` costs a ``getpid()``
        system call on Python 3.11, and each exchange would ask for it twice."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _take_idle(self) -> UpstreamConnection | None:
        """A live idle connection, its slot taken, when one is free now: the common case, done
        without the coroutine ``_acquire`` is. None: ``_acquire`` waits or connects."""
        idle = self._idle
        if self._busy >= self.limit or not idle:
            return None
        now = self.clock.now()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since <= self.idle_timeout:
                self._busy += 1
                return conn
            conn.abort()
        return None

    async def _acquire(self) -> tuple[UpstreamConnection, bool]:
        while self._busy >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, then cancelled: pass the turn on
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self._busy += 1
        try:
            now = self.clock.now()
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed and now - conn.idle_since <= self.idle_timeout:
                    return conn, True
                conn.abort()
            return await self._connect(), False
        except BaseException:
            self._release_slot()
            raise

    async def _connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(self), self.host, self.port
                )
        except (OSError, TimeoutError) as e:
            raise UpstreamError("connect", f"{self.host}:{self.port}: {e!r}") from e
        self.opened += 1
        self._all.add(conn)
        return conn

    @property
    def waiting(self) -> int:
        """Exchanges waiting for a connection (all ``limit`` are busy)."""
        return len(self._waiters)

    def _release_slot(self) -> None:
        self._busy -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    def _release(self, conn: UpstreamConnection) -> None:
        if conn.reusable and not conn.closed:
            now = self.clock.now()
            conn.idle_since = now
            self._idle.append(conn)
            while self._idle and now - self._idle[0].idle_since > self.idle_timeout:
                self._idle.popleft().abort()
        else:
            conn.abort()
        self._release_slot()

    def forget(self, conn: UpstreamConnection) -> None:
        self._all.discard(conn)

    def expire(self, now: float) -> int:
        """Cut the exchanges past their deadline at loop time ``now``; how many."""
        late = [c for c in self._all if c.busy and c.deadline < now]
        for conn in late:
            conn.expire()
        return len(late)

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        self.expire(loop.time())
        self._checker = loop.call_later(self.check_interval, self._check)

    async def exchange(self, request: bytes, sink: Sink, *, head_only: bool = False) -> None:
        """Send ``request`` and feed its answer to ``sink``; raises ``UpstreamError``. Cancelled
        midway, the connection is cut (its answer is unfinished) and not reused."""
        loop = self.loop()
        if self._checker is None:
            self._checker = loop.call_later(self.check_interval, self._check)
        deadline = loop.time() + self.timeout
        for attempt in (1, 2):
            conn = self._take_idle()
            reused = conn is not None
            if conn is None:
                conn, reused = await self._acquire()
            conn.deadline = deadline
            done = conn.send(request, sink, head_only=head_only)
            try:
                await done
                return
            except UpstreamError as e:
                if attempt == 1 and reused and not e.received:
                    continue  # closed by the server while idle: it never saw this request
                raise
            finally:
                if not done.done():
                    done.cancel()
                    conn.abort()
                self._release(conn)

    async def close(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            self._checker = None
        for conn in list(self._all):
            conn.abort()
        self._idle.clear()
