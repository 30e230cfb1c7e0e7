"""Agent overhead: latency the proxy adds, at fixed request rates, and streaming time to first byte.

    .venv/bin/python benchmarks/bench_agent.py [--rates 1000,5000] [--seconds 5]
                                               [--sequential 2000] [--streams 300]
                                               [--agent-core 0] [--no-uvloop]

Three processes: a fast model server (this file, ``--serve-upstream``: a fixed OpenAI JSON
answer with usage, and an SSE stream whose first event leaves at once), the agent started
through the real CLI (``autoscaler agent``, token budget on but high enough never to refuse,
so every request is parsed, charged and settled), and this process as the load generator.

1. Added latency: open-loop load (requests sent on a fixed schedule, not when the previous one
   returns, so a slow proxy cannot slow the load down) of ``POST /v1/completions`` at each rate,
   first straight to the model server, then through the agent. Reported: p50/p90/p99 of each,
   and the difference, which is the agent's added latency; plus the agent's CPU seconds per
   1,000 requests (from /proc) and the rate actually achieved.
2. Sequential: ``--sequential`` requests one at a time, straight and through the agent: the
   added latency with no queueing, which a loaded machine cannot spoil by overload.
3. Streaming: ``--streams`` sequential streaming chat requests, each timed to its first body
   byte, straight and through the agent; the difference of the medians and p99s is the agent's
   time-to-first-byte overhead.

``--agent-core N`` pins the agent to one core (``sched_setaffinity``) and the other two
processes to the remaining cores when there are any: the target is "p99 under 1 ms added at
1,000 requests/s on one core". On a shared machine the figures move with the neighbours' load;
run it a few times and compare like with like.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web

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


# -- the model server (its own process) ----------------------------------------------------------


async def _completions(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ANSWER, content_type="application/json")


async def _chat(request: web.Request) -> web.StreamResponse:
    await request.read()
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for i in range(8):
        event = {"choices": [{"index": 0, "delta": {"content": f"t{i}"}}]}
        await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        if i == 0:
            await asyncio.sleep(0.002)  # the rest of the tokens come later, as from a model
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def _ready(request: web.Request) -> web.Response:
    return web.json_response({"ready": True})


def serve_upstream(port: int) -> None:
    app = web.Application()
    app.router.add_post("/v1/completions", _completions)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_get("/v1/models/chat", _ready)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=4096)


# -- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process for {url} exited with {proc.returncode}")
        try:
            host, _, port = url.removeprefix("http://").partition(":")
            with socket.create_connection((host, int(port))):
                pass
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} not ready after {seconds}s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def pin(pid: int, cores: set[int]) -> None:
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, cores)


# -- load ----------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def open_loop(url: str, rate: float, seconds: float) -> tuple[list[float], float, int]:
    """Latencies (s) of requests sent every 1/rate seconds; the achieved rate; errors."""
    connector = aiohttp.TCPConnector(limit=2000, limit_per_host=0)
    latencies: list[float] = []
    errors = 0
    kinds: dict[str, int] = {}
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            nonlocal errors
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=BODY, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                        kinds[f"HTTP {resp.status}"] = kinds.get(f"HTTP {resp.status}", 0) + 1
                        return
            except aiohttp.ClientError as e:
                errors += 1
                kinds[type(e).__name__] = kinds.get(type(e).__name__, 0) + 1
                return
            latencies.append(time.perf_counter() - t0)

        # warm the pool and both processes
        await asyncio.gather(*(one() for _ in range(200)))
        latencies.clear()
        total = int(rate * seconds)
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        sent = 0
        while sent < total:
            due = min(total, int((time.perf_counter() - start) * rate) + 1)
            while sent < due:
                tasks.append(asyncio.create_task(one()))
                sent += 1
            next_at = start + sent / rate
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    if kinds:
        print(f"  errors at {url}: {kinds}")
    return latencies, total / elapsed, errors


async def sequential(url: str, n: int) -> list[float]:
    """Latencies of n requests one after another: the added latency with no queueing at all."""
    out: list[float] = []
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        for i in range(n + 50):
            t0 = time.perf_counter()
            async with session.post(url, data=BODY, headers=headers) as resp:
                await resp.read()
            if i >= 50:  # warm-up
                out.append(time.perf_counter() - t0)
    return out


async def first_bytes(url: str, n: int) -> list[float]:
    out: list[float] = []
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        for i in range(n + 20):
            t0 = time.perf_counter()
            async with session.post(url, data=STREAM_BODY, headers=headers) as resp:
                await resp.content.readany()
                ttfb = time.perf_counter() - t0
                await resp.read()
            if i >= 20:  # warm-up
                out.append(ttfb)
    return out


def ms(x: float) -> str:
    return f"{x * 1000:7.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rates", default="1000,5000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--agent-core", type=int, default=0, help="-1: no pinning")
    parser.add_argument(
        "--no-uvloop", action="store_true", help="the agent on asyncio's own loop, for comparison"
    )
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return

    up_port, agent_port = free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{up_port}"
    agent_url = f"http://127.0.0.1:{agent_port}"
    upstream = subprocess.Popen([sys.executable, __file__, "--serve-upstream", str(up_port)])
    agent = subprocess.Popen(
        [
            sys.executable, "-m", "autoscaler", "agent",
            "--upstream", upstream_url,
            "--listen", f"127.0.0.1:{agent_port}",
            "--metrics-listen", "off",
            "--default-token-rate", "1e12",
        ],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "AUTOSCALER_AGENT_UVLOOP": "0" if args.no_uvloop else "1"},
    )  # fmt: skip
    try:
        cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
        if args.agent_core >= 0 and args.agent_core in cores:
            pin(agent.pid, {args.agent_core})
            rest = cores - {args.agent_core}
            pin(upstream.pid, rest)
            pin(0, rest)
        wait_ready(upstream_url, upstream)
        wait_ready(agent_url, agent)
        print(
            f"cores: {sorted(cores)}; agent pinned to {args.agent_core}; "
            f"agent loop: {'asyncio' if args.no_uvloop else 'uvloop if installed'}; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        print("\nadded latency, POST /v1/completions (metered: parsed, charged, settled), ms")
        print(
            f"{'rate':>6} {'achieved':>9} {'path':<7} {'p50':>7} {'p90':>7} {'p99':>7} "
            f"{'errors':>6} {'agent CPU s/1k req':>18}"
        )
        for rate in (float(r) for r in args.rates.split(",")):
            direct, direct_rate, direct_err = asyncio.run(
                open_loop(upstream_url + "/v1/completions", rate, args.seconds)
            )
            cpu0 = cpu_seconds(agent.pid)
            proxied, proxied_rate, proxied_err = asyncio.run(
                open_loop(agent_url + "/v1/completions", rate, args.seconds)
            )
            cpu = cpu_seconds(agent.pid) - cpu0
            per_k = cpu / max(1, len(proxied)) * 1000
            for name, lat, got, err, extra in (
                ("direct", direct, direct_rate, direct_err, ""),
                ("agent", proxied, proxied_rate, proxied_err, f"{per_k:18.3f}"),
            ):
                print(
                    f"{rate:6.0f} {got:9.0f} {name:<7} {ms(pct(lat, 0.5))} {ms(pct(lat, 0.9))} "
                    f"{ms(pct(lat, 0.99))} {err:6d} {extra}"
                )
            print(
                f"{rate:6.0f} {'':9} {'added':<7} {ms(pct(proxied, 0.5) - pct(direct, 0.5))} "
                f"{ms(pct(proxied, 0.9) - pct(direct, 0.9))} "
                f"{ms(pct(proxied, 0.99) - pct(direct, 0.99))}"
            )
        direct_seq = asyncio.run(sequential(upstream_url + "/v1/completions", args.sequential))
        agent_seq = asyncio.run(sequential(agent_url + "/v1/completions", args.sequential))
        print(f"\n{args.sequential} sequential requests (no queueing), ms")
        print(f"{'path':<7} {'p50':>7} {'p90':>7} {'p99':>7}")
        for name, lat in (("direct", direct_seq), ("agent", agent_seq)):
            print(f"{name:<7} {ms(pct(lat, 0.5))} {ms(pct(lat, 0.9))} {ms(pct(lat, 0.99))}")
        print(
            f"{'added':<7} {ms(pct(agent_seq, 0.5) - pct(direct_seq, 0.5))} "
            f"{ms(pct(agent_seq, 0.9) - pct(direct_seq, 0.9))} "
            f"{ms(pct(agent_seq, 0.99) - pct(direct_seq, 0.99))}"
        )
        direct_ttfb = asyncio.run(first_bytes(upstream_url + "/v1/chat/completions", args.streams))
        agent_ttfb = asyncio.run(first_bytes(agent_url + "/v1/chat/completions", args.streams))
        print(f"\nstreaming time to first byte, {args.streams} sequential streams, ms")
        print(f"{'path':<7} {'p50':>7} {'p99':>7}")
        print(f"{'direct':<7} {ms(statistics.median(direct_ttfb))} {ms(pct(direct_ttfb, 0.99))}")
        print(f"{'agent':<7} {ms(statistics.median(agent_ttfb))} {ms(pct(agent_ttfb, 0.99))}")
        added50 = statistics.median(agent_ttfb) - statistics.median(direct_ttfb)
        added99 = pct(agent_ttfb, 0.99) - pct(direct_ttfb, 0.99)
        print(f"{'added':<7} {ms(added50)} {ms(added99)}")
    finally:
        for proc in (agent, upstream):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
