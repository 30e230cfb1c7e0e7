"""Pod scrape throughput: parse+map cost per vLLM body, and a full tick over 1,000 pods.

    .venv/bin/python benchmarks/bench_scrape.py [--pods 1000] [--targets 10] [--ticks 10]
                                                [--concurrency 64] [--no-keepalive]

1. Parse cost per body, no network: a realistic vLLM /metrics body (rendered by
   prometheus_client itself: two models, ten histograms of 13-23 buckets, counters with label
   sets, process and GC collectors) read with prometheus_client's full parser, for reference,
   and with the source's scanner + mapping for the vLLM preset.
2. End to end: a server process listens on one port at 1,000 loopback addresses (127.0.1.x,
   127.0.2.x, ...), one per pod, and serves such bodies; this process runs PodScrapeSource.collect
   over all pods (spread over --targets targets) and reports the tick's wall time, its CPU time
   (this process only; the server has its own core) and bodies per second on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import random
import socket
import statistics
import time
from multiprocessing.connection import Connection

import aiohttp
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.config.signals import PodScrape
from autoscaler.core.types import TargetRef
from autoscaler.service.clock import SystemClock
from autoscaler.sources.pods import PodIndex, PodInfo
from autoscaler.sources.podsignals import PodReading, aggregator_for
from autoscaler.sources.promtext import Scanner
from autoscaler.sources.scrape import PodScrapeSource

MODELS = ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b-sql-lora")
# vLLM's bucket bounds (vllm/engine/metrics.py).
TTFT = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5]
TTFT += [10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]
TPOT = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5]
TPOT += [10.0, 20.0, 40.0, 80.0]
LATENCY = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0]
LATENCY += [120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]
TOKENS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
HISTOGRAMS = (
    ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT),
    ("vllm:time_per_output_token_seconds", "Histogram of time per output token.", TPOT),
    ("vllm:e2e_request_latency_seconds", "End to end request latency in seconds.", LATENCY),
    ("vllm:request_queue_time_seconds", "Time spent in WAITING phase for request.", LATENCY),
    ("vllm:request_prompt_tokens", "Number of prefill tokens processed.", TOKENS),
    ("vllm:request_generation_tokens", "Number of generation tokens processed.", TOKENS),
)


def vllm_body(seed: int, models: tuple[str, ...] = MODELS[:1]) -> str:
    """A vLLM /metrics body as vLLM's prometheus_client exposition renders it."""
    rng = random.Random(seed)
    reg = CollectorRegistry()
    ProcessCollector(registry=reg)
    GCCollector(registry=reg)
    PlatformCollector(registry=reg)
    labels = ["model_name"]

    def gauge(name: str, doc: str) -> Gauge:
        return Gauge(name, doc, labels, registry=reg)

    running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
    waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
    kv = gauge("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.")
    prefix = gauge("vllm:gpu_prefix_cache_hit_rate", "GPU prefix cache block hit rate.")
    counters = [
        Counter(name, doc, labels, registry=reg)
        for name, doc in (
            ("vllm:num_preemptions", "Cumulative number of preemption from the engine."),
            ("vllm:prompt_tokens", "Number of prefill tokens processed."),
            ("vllm:generation_tokens", "Number of generation tokens processed."),
        )
    ]
    success = Counter(
        "vllm:request_success",
        "Count of successfully processed requests.",
        [*labels, "finished_reason"],
        registry=reg,
    )
    hists = [(Histogram(n, d, labels, buckets=b, registry=reg), b) for n, d, b in HISTOGRAMS]
    for m in models:
        running.labels(m).set(rng.randint(0, 64))
        waiting.labels(m).set(rng.randint(0, 20))
        kv.labels(m).set(rng.random())
        prefix.labels(m).set(rng.random())
        for c in counters:
            c.labels(m).inc(rng.randint(0, 10**7))
        for reason in ("stop", "length", "abort"):
            success.labels(m, reason).inc(rng.randint(0, 10**4))
        for h, bounds in hists:
            for _ in range(40):
                h.labels(m).observe(rng.choice(bounds) * rng.random())
    return generate_latest(reg).decode()


def _per_call(fn: object, n: int) -> float:
    assert callable(fn)
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def bench_parse(models: tuple[str, ...]) -> None:
    body = vllm_body(1, models)
    cfg = PodScrape(presets=("vllm",))
    aggs = [aggregator_for(m) for m in cfg.mappings()]
    scanner = Scanner(n for a in aggs for n in a.names)
    pod = ("pod", "10.0.0.1")

    def reference() -> None:
        for _ in text_string_to_metric_families(body):
            pass

    def ours() -> None:
        readings = [PodReading(pod, scanner.scan(body), 0.0)]
        for a in aggs:
            a.update(readings, lambda kind: None)

    lines = body.count("\n")
    ref = _per_call(reference, 50)
    own = _per_call(ours, 2000)
    print(f"body: {lines} lines, {len(body) / 1024:.1f} KiB, {len(models)} model label set(s)")
    print(f"  prometheus_client full parse : {ref * 1e6:8.0f} us/body  {1 / ref:8.0f} bodies/s")
    print(f"  scanner + vLLM preset mapping: {own * 1e6:8.0f} us/body  {1 / own:8.0f} bodies/s")


# -- end to end ----------------------------------------------------------------------------------


def pod_ip(i: int) -> str:
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


def serve(pods: int, conn: Connection) -> None:
    """The server process: one app, listening on the same port at each pod's address."""
    variants = [vllm_body(seed) for seed in range(16)]
    bodies = [v.encode() for v in variants]
    hits: dict[str, int] = {}

    async def handle(request: web.Request) -> web.Response:
        assert request.transport is not None
        ip = request.transport.get_extra_info("sockname")[0]
        n = hits[ip] = hits.get(ip, 0) + 1
        return web.Response(body=bodies[n % len(bodies)], headers={"Content-Type": CONTENT_TYPE})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/metrics", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = 0
        for i in range(pods):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((pod_ip(i), port))
            port = sock.getsockname()[1]
            await web.SockSite(runner, sock, backlog=1024).start()
        conn.send((port, len(variants[0])))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop
        await runner.cleanup()

    asyncio.run(main())


CONTENT_TYPE = CONTENT_TYPE_LATEST


async def bench_collect(
    port: int, pods: int, targets: int, ticks: int, concurrency: int, keepalive: bool
) -> None:
    index = PodIndex()
    refs = [TargetRef("InferenceService", "llm", f"model-{t}") for t in range(targets)]
    for t, ref in enumerate(refs):
        index.set_pods(
            ref.key,
            [
                PodInfo(f"{ref.name}-{i}", "llm", pod_ip(i), ready=True)
                for i in range(t, pods, targets)
            ],
        )
    cfg = PodScrape(port=port, presets=("vllm",))
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=not keepalive)
    async with aiohttp.ClientSession(connector=connector) as session:
        source = PodScrapeSource(
            session, index, {r.key: cfg for r in refs}, SystemClock(), concurrency=concurrency
        )
        walls: list[float] = []
        cpus: list[float] = []
        report = None
        for tick in range(ticks + 2):
            gc.collect()
            w0, c0 = time.perf_counter(), time.process_time()
            report = await source.collect(refs)
            w, c = time.perf_counter() - w0, time.process_time() - c0
            if tick >= 2:  # the first ticks open connections and fill caches
                walls.append(w)
                cpus.append(c)
        assert report is not None
        if report.errors:
            print("  errors:", dict(sorted(report.errors.items())[:5]))
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        mode = "keep-alive" if keepalive else "new connection per scrape"
        print(f"collect over {pods} pods in {targets} targets, concurrency {concurrency}, {mode}:")
        print(
            f"  tick {wall * 1e3:.0f} ms wall (median of {ticks}; min {min(walls) * 1e3:.0f},"
            f" max {max(walls) * 1e3:.0f}), {cpu * 1e3:.0f} ms CPU in the scraping process"
        )
        print(
            f"  {pods / wall:.0f} bodies/s on one core, {cpu / pods * 1e6:.0f} us CPU per pod,"
            f" {len(report.observations)} observations per tick"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--targets", type=int, default=10)
    ap.add_argument("--ticks", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--no-keepalive", action="store_true")
    args = ap.parse_args()

    bench_parse(MODELS[:1])
    bench_parse(MODELS)

    parent, child = mp.get_context("spawn").Pipe()
    server = mp.get_context("spawn").Process(target=serve, args=(args.pods, child), daemon=True)
    server.start()
    port, size = parent.recv()
    print(f"server: {args.pods} addresses on port {port}, bodies of {size / 1024:.1f} KiB")
    try:
        asyncio.run(
            bench_collect(
                port,
                args.pods,
                args.targets,
                args.ticks,
                args.concurrency,
                keepalive=not args.no_keepalive,
            )
        )
    finally:
        parent.send("stop")
        server.join(timeout=10)


if __name__ == "__main__":
    main()
