"""Agent overhead: the latency the proxy adds, at fixed request rates, and streaming first byte.

    .venv/bin/python benchmarks/bench_agent.py [--rates 1000,5000] [--seconds 5]
                                               [--connections 32] [--sequential 2000]
                                               [--streams 300] [--agent-core 0] [--repeat 1]

Three kinds of process, each cheap enough that only the agent is measured:

- a **fast model server** (``--serve-upstream``): a raw asyncio protocol (uvloop, httptools)
  answering ``POST /v1/completions`` with a canned OpenAI JSON answer that carries ``usage``,
  and ``POST /v1/chat/completions`` with an SSE stream whose first event leaves at once and the
  rest 2 ms later, chunked, as a model server would;
- **the agent**, started through the real CLI (``autoscaler agent``), token budget on but high
  enough never to refuse, so every request is parsed, charged and settled;
- a **load generator** (``--generate``), one process per measurement: raw sockets, pre-built
  request bytes, ``--connections`` keep-alive connections, **open loop** (request *i* is due at
  ``start + i / rate`` whatever happened to the ones before; its latency runs from that due time
  to the last byte of its answer, so a stall is charged to every request it delays, no
  coordinated omission). A request due when every connection is busy waits for the first free
  one, and that wait is in its latency.

``added`` at each percentile = via the agent minus straight to the model server, both measured
by the same generator at the same rate, one after the other. The agent is pinned to one core
(``--agent-core``, ``sched_setaffinity``); the model server and the generator share the others.
The agent's CPU per request comes from its utime + stime (``/proc/PID/stat``) over the run.

``--python-path N`` instead measures only the agent's own Python code per request, in process,
with fake transports: the part this repository can change, steadier than the rest on a busy
machine.

Also: ``--sequential`` requests one at a time on one connection (added latency with no
queueing) and ``--streams`` sequential streams timed to their first event (time to first byte).
At a rate the agent cannot sustain the generator says so: achieved rate below the asked one.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any, cast

import httptools

ROOT = Path(__file__).resolve().parent.parent
BODY = json.dumps(
    {"model": "chat", "prompt": "Say hello to the benchmark in a few words.", "max_tokens": 16}
).encode()
ANSWER = json.dumps(
    {
        "id": "cmpl-bench",
        "object": "text_completion",
        "model": "chat",
        "choices": [{"index": 0, "text": " Hello, benchmark!", "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
    }
).encode()
STREAM_BODY = json.dumps(
    {
        "model": "chat",
        "messages": [{"role": "user", "content": "Say hello."}],
        "stream": True,
        "max_tokens": 16,
    }
).encode()


def request_bytes(path: bytes, body: bytes) -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path, len(body), body)
    )


COMPLETION = request_bytes(b"/v1/completions", BODY)
STREAM = request_bytes(b"/v1/chat/completions", STREAM_BODY)


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


# -- the fast model server (its own process) -----------------------------------------------------

JSON_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    % (len(ANSWER), ANSWER)
)
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


SSE_FIRST = _chunk(b'data: {"choices": [{"index": 0, "delta": {"content": "t0"}}]}\n\n')
SSE_REST = (
    b"".join(
        _chunk(b'data: {"choices": [{"index": 0, "delta": {"content": "t%d"}}]}\n\n' % i)
        for i in range(1, 8)
    )
    + _chunk(b"data: [DONE]\n\n")
    + b"0\r\n\r\n"
)


class FastUpstream(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_message_complete(self) -> None:
        transport = self.transport
        assert transport is not None
        if self.url.endswith(b"/chat/completions"):
            transport.write(SSE_HEAD + SSE_FIRST)
            asyncio.get_running_loop().call_later(0.002, transport.write, SSE_REST)
        else:
            transport.write(JSON_ANSWER)


def serve_upstream(port: int) -> None:
    loop = new_loop()
    server = loop.run_until_complete(
        loop.create_server(FastUpstream, "127.0.0.1", port, backlog=4096)
    )
    try:
        loop.run_forever()
    finally:
        server.close()


# -- the load generator (its own process) --------------------------------------------------------


class Client(asyncio.Protocol):
    """One keep-alive connection; one request at a time (no pipelining)."""

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.due = 0.0
        self.first: float | None = None
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes, due: float) -> None:
        assert self.transport is not None
        self.due = due
        self.first = None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def on_message_complete(self) -> None:
        self.gen.finished(self, time.perf_counter())

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.lost(self)


class Generator:
    def __init__(self, port: int, data: bytes) -> None:
        self.port = port
        self.data = data
        self.idle: deque[Client] = deque()
        self.backlog: deque[float] = deque()
        self.latencies: list[float] = []
        self.first_bytes: list[float] = []
        self.errors = 0
        self.done: asyncio.Future[None] | None = None
        self.expected = 0
        self.elapsed = 0.0

    async def connect(self, n: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(n):
            _, client = await loop.create_connection(lambda: Client(self), "127.0.0.1", self.port)
            self.idle.append(client)

    def submit(self, due: float) -> None:
        if self.idle:
            self.idle.popleft().send(self.data, due)
        else:
            self.backlog.append(due)

    def finished(self, client: Client, now: float) -> None:
        if client.status != 200:
            self.errors += 1
        else:
            self.latencies.append(now - client.due)
            if client.first is not None:
                self.first_bytes.append(client.first - client.due)
        if self.backlog:
            client.send(self.data, self.backlog.popleft())
        else:
            self.idle.append(client)
        if (
            self.done is not None
            and not self.done.done()
            and len(self.latencies) + self.errors >= self.expected
        ):
            self.done.set_result(None)

    def lost(self, client: Client) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("a connection closed mid-run"))

    async def open_loop(self, rate: float, seconds: float) -> float:
        """Send rate x seconds requests on schedule; the achieved rate (answers per second)."""
        loop = asyncio.get_running_loop()
        total = int(rate * seconds)
        self.expected = total
        self.done = loop.create_future()
        start = time.perf_counter()
        sent = 0
        while sent < total:
            now = time.perf_counter()
            due_count = min(total, int((now - start) * rate) + 1)
            while sent < due_count:
                self.submit(start + sent / rate)
                sent += 1
            # wake at the next due time (the loop's timer resolution is 1 ms; those late are
            # charged from their due time, not from when they left)
            await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
        await asyncio.wait_for(self.done, 60)
        self.elapsed = time.perf_counter() - start
        return total / self.elapsed

    async def one_by_one(self, n: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(n):
            self.expected = len(self.latencies) + self.errors + 1
            self.done = loop.create_future()
            self.submit(time.perf_counter())
            await asyncio.wait_for(self.done, 10)


def generate(args: argparse.Namespace) -> None:
    data = STREAM if args.mode == "stream" else COMPLETION
    gen = Generator(args.generate, data)

    async def run() -> dict[str, Any]:
        connections = args.connections if args.mode == "rate" else 1
        await gen.connect(connections)
        # warm up: the agent's pool, both processes' caches
        await gen.one_by_one(100)
        if args.mode == "rate":
            await gen.open_loop(args.rate, 0.5)
        gen.latencies.clear()
        gen.first_bytes.clear()
        gen.errors = 0
        if args.mode == "rate":
            cpu0 = cpu_seconds(args.watch_pid) if args.watch_pid else 0.0
            achieved = await gen.open_loop(args.rate, args.seconds)
            cpu_run = (cpu_seconds(args.watch_pid) - cpu0) if args.watch_pid else 0.0
        else:
            await gen.one_by_one(args.count)
            achieved = cpu_run = 0.0
        return {
            "latencies": gen.latencies,
            "first_bytes": gen.first_bytes,
            "errors": gen.errors,
            "achieved": achieved,
            "elapsed": gen.elapsed,
            "cpu_run": cpu_run,
        }

    loop = new_loop()
    try:
        result = loop.run_until_complete(run())
    finally:
        loop.close()
    json.dump(result, sys.stdout)


# -- the Python path alone (in this process) ----------------------------------------------------


class _FakeTransport:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def writelines(self, data: Any) -> None:
        self.out.extend(data)

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _LoopClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def timed_collection() -> float:
    start = time.perf_counter()
    gc.collect()
    return time.perf_counter() - start


def python_path(n: int, profile: int = 0) -> None:
    """CPU per request of the agent's own Python path: the real Agent, HttpConnection and
    UpstreamConnection fed the benchmark's request and answer bytes through fake transports (no
    sockets, no kernel). Best of 5 rounds, so a busy neighbour inflates it less. ``profile``:
    one more round under cProfile, and its ``profile`` functions with the most own time, with
    their calls per request (cProfile's overhead inflates every figure; read the proportions)."""
    from prometheus_client import CollectorRegistry

    from autoscaler.traffic.agent.http1 import HttpConnection, HttpServer
    from autoscaler.traffic.agent.options import AgentConfig
    from autoscaler.traffic.agent.proxy import Agent
    from autoscaler.traffic.agent.upstream import UpstreamConnection

    async def run() -> float:
        config = AgentConfig(upstream="http://127.0.0.1:1", default_token_rate=1e12)
        agent = Agent(config, _LoopClock(), CollectorRegistry())
        await agent.start()
        client = HttpConnection(HttpServer(agent.handle, max_body=1 << 20))
        to_client = _FakeTransport()
        client.connection_made(to_client)  # type: ignore[arg-type]
        upstream = UpstreamConnection(agent.pool)
        to_upstream = _FakeTransport()
        upstream.connection_made(to_upstream)  # type: ignore[arg-type]
        upstream.reusable = True
        upstream.idle_since = agent.clock.now()
        agent.pool._idle.append(upstream)
        loop = asyncio.get_running_loop()

        async def turn() -> None:
            fut = loop.create_future()
            loop.call_soon(fut.set_result, None)
            await fut

        # what a full collection costs in this process, before and after the agent's policy
        # freezes the start-up heap (gcpolicy.py); best of 3 each
        unfrozen = min(timed_collection() for _ in range(3))
        objects = len(gc.get_objects())
        policy = getattr(agent, "gc", None)  # None: an agent from before gcpolicy (--agent-path)
        if policy is not None:
            policy.take_over()
            frozen = min(timed_collection() for _ in range(3))
            print(
                f"full garbage collection of the agent's heap: {unfrozen * 1e3:.2f} ms "
                f"({objects} objects); with the start-up heap frozen: {frozen * 1e3:.3f} ms "
                f"({len(gc.get_objects())} objects)"
            )

        async def requests() -> None:
            for _ in range(n):
                client.data_received(COMPLETION)
                while not to_upstream.out:
                    await turn()
                to_upstream.out.clear()
                upstream.data_received(JSON_ANSWER)
                while client._task is not None:
                    await turn()
                assert to_client.out[-1].startswith(b"HTTP/1.1 200 OK"), to_client.out
                to_client.out.clear()

        best = float("inf")
        for _ in range(5):
            c0 = time.process_time()
            await requests()
            best = min(best, time.process_time() - c0)
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            await requests()
            profiler.disable()
            print_profile(profiler, n, profile)
        if policy is not None:
            policy.release()
        await agent.close()
        return best / n

    loop = new_loop()
    try:
        per_request = loop.run_until_complete(run())
    finally:
        loop.close()
    print(
        f"agent Python path alone (no sockets; includes ~10 us of this harness's own loop "
        f"turns): {per_request * 1e6:.0f} us CPU per request"
    )


def print_profile(profiler: cProfile.Profile, n: int, top: int) -> None:
    """The functions with the most own time, and calls per request of everything called at
    least once per request (the harness's own ``turn``/``run`` included: read them as such)."""
    stats = pstats.Stats(profiler)
    rows = []
    calls = 0.0
    for (path, line, name), (_, ncalls, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        per_request = ncalls / n
        if per_request >= 1:
            calls += per_request
            rows.append((own, per_request, f"{Path(path).name}:{line} {name}"))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    print(f"\nprofile: {calls:.0f} Python-visible calls per request; the {top} with most own time")
    print(f"  {'own %':>6} {'calls/req':>9}  function")
    for own, per_request, where in rows[:top]:
        print(f"  {own / total:6.1%} {per_request:9.1f}  {where}")


# -- the harness ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process for port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port)):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} not ready after {seconds}s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def run_generator(port: int, cores: set[int], watch_pid: int = 0, **options: Any) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--generate", str(port)]
    for key, value in options.items():
        argv += [f"--{key}", str(value)]
    argv += ["--watch-pid", str(watch_pid)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    if cores:
        os.sched_setaffinity(proc.pid, cores)
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"load generator failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(out)
    return result


NGINX_CONF = """
daemon off; master_process off; worker_processes 1; pid {dir}/nginx.pid;
error_log {dir}/error.log crit;
events {{ worker_connections 4096; }}
http {{
  access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir};
  uwsgi_temp_path {dir}; scgi_temp_path {dir};
  upstream model {{ server 127.0.0.1:{up}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://model; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_buffering off; proxy_request_buffering off;
    }}
  }}
}}
"""


def nginx(up_port: int, port: int) -> subprocess.Popen[bytes]:
    """nginx as the proxy under test (``--reference nginx``): one process, so the pinning and
    the CPU accounting apply to it as to the agent."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(binary):
        raise SystemExit("--reference nginx needs nginx (apt-get install nginx-light)")
    workdir = tempfile.mkdtemp(prefix="bench-nginx-")
    conf = Path(workdir) / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, up=up_port, port=port), encoding="utf-8")
    return subprocess.Popen(
        [binary, "-c", str(conf), "-p", workdir, "-e", f"{workdir}/error.log"],
        stderr=subprocess.DEVNULL,
    )


def scrape(port: int) -> str:
    """The agent's /metrics (its admin port), or '' when it has none."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError:
        return ""
    return b"".join(chunks).decode("utf-8", "replace")


def gc_pauses(text: str) -> dict[str, float]:
    """``autoscaler_agent_gc_pause_seconds``: count and sum by generation, and how many took
    over 1 ms (from the buckets): ``{"count_0": .., "sum_0": .., "over_1ms": ..}``."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("autoscaler_agent_gc_pause_seconds"):
            continue
        name, _, value = line.rpartition(" ")
        gen = name.partition('generation="')[2][:1]
        if name.startswith("autoscaler_agent_gc_pause_seconds_count"):
            out[f"count_{gen}"] = float(value)
        elif name.startswith("autoscaler_agent_gc_pause_seconds_sum"):
            out[f"sum_{gen}"] = float(value)
        elif 'le="0.001"' in name:
            out["under_1ms"] = out.get("under_1ms", 0.0) + float(value)
    if not out:
        return out  # an agent without the metric (--agent-path, an older checkout)
    total = sum(v for k, v in out.items() if k.startswith("count_"))
    out["over_1ms"] = total - out.get("under_1ms", 0.0)
    return out


def gc_line(before: dict[str, float], after: dict[str, float]) -> str:
    if not after:
        return "  gc: no autoscaler_agent_gc_pause_seconds (not this agent, or no admin port)"
    cells = []
    for gen in "012":
        n = after.get(f"count_{gen}", 0.0) - before.get(f"count_{gen}", 0.0)
        ms = (after.get(f"sum_{gen}", 0.0) - before.get(f"sum_{gen}", 0.0)) * 1000
        cells.append(f"gen{gen} {n:.0f} ({ms:.1f} ms)")
    over = after.get("over_1ms", 0.0) - before.get("over_1ms", 0.0)
    return f"  gc collections in the agent: {', '.join(cells)}; over 1 ms: {over:.0f}"


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summary(rate: float, runs: list[dict[str, Any]], name: str) -> list[str]:
    """After the repeats of one rate: the median across runs of each percentile's added
    figure (one VM hiccup does not decide it), and every run's p99 (so hiccups show)."""
    lines = [f"\n{rate:.0f} req/s, {len(runs)} runs: median across runs"]
    lines.append(header())
    for path in ("direct", name):
        cells = " ".join(f"{median([r[path][q] for r in runs]) * 1000:8.3f}" for _, q in QS)
        lines.append(f"  {path:<7} {cells}")
    cells = " ".join(
        f"{median([r[name][q] - r['direct'][q] for r in runs]) * 1000:+8.3f}" for _, q in QS
    )
    lines.append(f"  {'added':<7} {cells}")
    p99 = ", ".join(f"{r['direct'][0.99] * 1000:.2f}/{r[name][0.99] * 1000:.2f}" for r in runs)
    lines.append(f"  p99 per run, direct/{name} (ms): {p99}")
    cpu = ", ".join(f"{r['cpu_us']:.0f}" for r in runs)
    busy = ", ".join(f"{r['busy']:.0%}" for r in runs)
    lines.append(
        f"  {name} CPU per request (us): {cpu} (median {median([r['cpu_us'] for r in runs]):.0f});"
        f" busy {busy}"
    )
    return lines


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


QS = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))


def row(name: str, values: list[float], extra: str = "") -> str:
    cells = " ".join(f"{pct(values, q) * 1000:8.3f}" for _, q in QS)
    return f"  {name:<7} {cells} {extra}"


def added(direct: list[float], agent: list[float]) -> str:
    cells = " ".join(f"{(pct(agent, q) - pct(direct, q)) * 1000:+8.3f}" for _, q in QS)
    return f"  {'added':<7} {cells}"


def header() -> str:
    return f"  {'path':<7} " + " ".join(f"{n:>8}" for n, _ in QS) + "  (ms)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--generate", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="rate", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=1000.0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--watch-pid", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--scrape-loop", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--agent-path",
        default="",
        help="a directory prepended to the agent's PYTHONPATH: measure another checkout's "
        "autoscaler package (e.g. the aiohttp agent, from git archive) against the same load",
    )
    parser.add_argument(
        "--reference",
        choices=["agent", "nginx"],
        default="agent",
        help="nginx: put nginx (Debian's, one worker process, keep-alive upstream pool, "
        "unbuffered) where the agent goes, with the same pinning and load: what any proxy hop "
        "adds on this machine, the floor the agent's figures are read against",
    )
    parser.add_argument("--rates", default="1000,5000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each open-loop rate")
    parser.add_argument("--agent-core", type=int, default=0, help="-1: no pinning")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run every process of the benchmark at this niceness (-10: ahead of other jobs "
        "on a shared machine, as a pod's CPU request would put the agent; needs root)",
    )
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="run the agent with AUTOSCALER_AGENT_GC_FREEZE=0 (CPython's collector untouched): "
        "the comparison for docs/agent.md's garbage collection figures",
    )
    parser.add_argument(
        "--scrape-every",
        type=float,
        default=0.0,
        metavar="S",
        help="scrape the agent's /metrics every S seconds during each run, as Prometheus "
        "would (0: only before and after, for the gc figures)",
    )
    parser.add_argument(
        "--python-path",
        type=int,
        default=0,
        metavar="N",
        help="only measure the agent's Python path in this process, N requests x 5 rounds",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="K",
        help="with --python-path: one more round under cProfile, and the K functions with the "
        "most own time with their calls per request",
    )
    args = parser.parse_args()
    if args.python_path:
        python_path(args.python_path, args.profile)
        return
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return
    if args.generate:
        generate(args)
        return
    if args.scrape_loop:
        while True:
            scrape(args.scrape_loop)
            time.sleep(args.scrape_every)

    if args.nice:
        # every process of the benchmark inherits it: the model server, the agent (or nginx) and
        # the generators, so the direct and the proxied runs are treated alike
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    up_port, agent_port, admin_port = free_port(), free_port(), free_port()
    env = dict(os.environ)
    if args.no_gc_freeze:
        env["AUTOSCALER_AGENT_GC_FREEZE"] = "0"
    if args.agent_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.agent_path, env.get("PYTHONPATH")]))
    upstream = subprocess.Popen([sys.executable, __file__, "--serve-upstream", str(up_port)])
    agent = nginx(up_port, agent_port) if args.reference == "nginx" else subprocess.Popen(
        [
            sys.executable, "-m", "autoscaler", "agent",
            "--upstream", f"http://127.0.0.1:{up_port}",
            "--listen", f"127.0.0.1:{agent_port}",
            "--metrics-listen", f"127.0.0.1:{admin_port}",
            "--upstream-metrics-path", "",
            "--default-token-rate", "1e12",
        ],
        cwd=args.agent_path or ROOT,
        stderr=subprocess.DEVNULL,
        env=env,
    )  # fmt: skip
    try:
        cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
        rest: set[int] = set()
        if args.agent_core >= 0 and args.agent_core in cores:
            os.sched_setaffinity(agent.pid, {args.agent_core})
            rest = (cores - {args.agent_core}) or cores
            os.sched_setaffinity(upstream.pid, rest)
            os.sched_setaffinity(0, rest)
        wait_ready(up_port, upstream)
        wait_ready(agent_port, agent)
        print(
            f"cores {sorted(cores)}: agent on {args.agent_core}, model server and load "
            f"generator on {sorted(rest) or 'any'}; load average {os.getloadavg()[0]:.1f}; "
            f"{args.connections} keep-alive connections, open loop; nice "
            f"{os.getpriority(os.PRIO_PROCESS, 0)}"
        )
        print("\nPOST /v1/completions (metered: parsed, charged, settled)")
        has_admin = args.reference == "agent"
        summaries: list[str] = []
        for rate in (float(r) for r in args.rates.split(",")):
            runs: list[dict[str, Any]] = []
            for run in range(args.repeat):
                # direct and agent runs interleave, so drift on the machine hits both
                opts = {"rate": rate, "seconds": args.seconds, "connections": args.connections}
                direct = run_generator(up_port, rest, **opts)
                gc0 = gc_pauses(scrape(admin_port)) if has_admin else {}
                cpu0 = cpu_seconds(agent.pid)
                scraper = None
                if has_admin and args.scrape_every > 0:
                    scraper = subprocess.Popen(
                        [sys.executable, __file__, "--scrape-loop", str(admin_port),
                         "--scrape-every", str(args.scrape_every)]
                    )  # fmt: skip
                    if rest:
                        os.sched_setaffinity(scraper.pid, rest)
                try:
                    proxied = run_generator(agent_port, rest, agent.pid, **opts)
                finally:
                    if scraper is not None:
                        scraper.terminate()
                        scraper.wait(10)
                cpu_run = proxied["cpu_run"]
                cpu = cpu_seconds(agent.pid) - cpu0
                gc1 = gc_pauses(scrape(admin_port)) if has_admin else {}
                # the warm-up requests (100 + rate / 2) ran through the agent too
                served = len(proxied["latencies"]) + proxied["errors"] + 100 + int(rate * 0.5)
                saturated = proxied["achieved"] < 0.97 * rate
                busy = cpu_run / proxied["elapsed"]
                via = args.reference
                print(
                    f"\n{rate:.0f} req/s asked (run {run + 1}): achieved "
                    f"{direct['achieved']:.0f} direct, {proxied['achieved']:.0f} via {via}"
                    f"{f' ({via} saturated)' if saturated else ''}; errors "
                    f"{direct['errors']}/{proxied['errors']}; {via} CPU "
                    f"{cpu / served * 1e6:.0f} us/request, busy {busy:.0%} of the measured run"
                    f"; load average {os.getloadavg()[0]:.1f}"
                )
                print(header())
                print(row("direct", direct["latencies"]))
                print(row(args.reference, proxied["latencies"]))
                print(added(direct["latencies"], proxied["latencies"]))
                if has_admin:
                    print(gc_line(gc0, gc1))
                runs.append(
                    {
                        "direct": {q: pct(direct["latencies"], q) for _, q in QS},
                        args.reference: {q: pct(proxied["latencies"], q) for _, q in QS},
                        "cpu_us": cpu / served * 1e6,
                        "busy": busy,
                    }
                )
            summaries.extend(summary(rate, runs, args.reference))
        if args.repeat > 1:
            print("\n== summary ==", *summaries, sep="\n")

        direct = run_generator(up_port, rest, mode="sequential", count=args.sequential)
        cpu0 = cpu_seconds(agent.pid)
        proxied = run_generator(agent_port, rest, mode="sequential", count=args.sequential)
        cpu = cpu_seconds(agent.pid) - cpu0
        print(
            f"\n{args.sequential} sequential requests, one connection (no queueing); "
            f"{args.reference} CPU "
            f"{cpu / (args.sequential + 100) * 1e6:.0f} us/request"
        )
        print(header())
        print(row("direct", direct["latencies"]))
        print(row(args.reference, proxied["latencies"]))
        print(added(direct["latencies"], proxied["latencies"]))

        direct = run_generator(up_port, rest, mode="stream", count=args.streams)
        proxied = run_generator(agent_port, rest, mode="stream", count=args.streams)
        print(f"\nstreaming time to first event, {args.streams} sequential streams (metered)")
        print(header())
        print(row("direct", direct["first_bytes"]))
        print(row(args.reference, proxied["first_bytes"]))
        print(added(direct["first_bytes"], proxied["first_bytes"]))
    finally:
        for proc in (agent, upstream):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
