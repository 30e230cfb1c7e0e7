"""Pod scrape against real HTTP servers: one aiohttp app listening on 127.0.0.N for each pod.

All pods of a target share the scrape port, as in a cluster, so the farm binds the same port on
several loopback addresses and answers each request as that pod's behaviour says (a body, or a
handler that fails in a chosen way). Time is a ManualClock; nothing sleeps. Only the two tests
with a hanging pod wait for real, for their 50 ms scrape timeout.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from autoscaler.config.signals import MetricMapping, PodScrape
from autoscaler.core import signals as sig
from autoscaler.core.clock import ManualClock
from autoscaler.core.protocols import Source, SourceReport
from autoscaler.core.types import Observation, TargetRef
from autoscaler.core.windows import SignalWindow
from autoscaler.sources.pods import PodIndex, PodInfo
from autoscaler.sources.scrape import PodScrapeSource

REF = TargetRef("InferenceService", "llm", "chat")
KEY = REF.key
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
T0 = 1_700_000_000.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Behaviour = str | bytes | Handler


# -- realistic bodies --------------------------------------------------------------------------

TTFT_BOUNDS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0)
TPOT_BOUNDS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)


def _fmt(v: float) -> str:
    return repr(float(v))


def _histogram(
    name: str, help_: str, bounds: Sequence[float], counts: Sequence[int], labels: str
) -> list[str]:
    """Exposition lines of a histogram; ``counts`` per bucket (not cumulative), +Inf last."""
    assert len(counts) == len(bounds) + 1
    lines = [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
    total = sum(counts)
    mids = [b / 2 for b in bounds] + [bounds[-1] * 2]
    lines.append(
        f"{name}_sum{{{labels}}} {_fmt(sum(c * m for c, m in zip(counts, mids, strict=True)))}"
    )
    running = 0
    for bound, c in zip((*bounds, float("inf")), counts, strict=True):
        running += c
        le = "+Inf" if bound == float("inf") else repr(bound)
        lines.append(f'{name}_bucket{{le="{le}",{labels}}} {_fmt(running)}')
    lines.append(f"{name}_count{{{labels}}} {_fmt(total)}")
    return lines


def vllm_body(
    *,
    running: float = 0,
    waiting: float | str = 0,
    kv: float = 0.0,
    kv_name: str = "vllm:gpu_cache_usage_perc",
    prompt: float = 0,
    generation: float = 0,
    ttft: Sequence[int] | None = None,
    model: str = MODEL,
    extra: Sequence[str] = (),
) -> str:
    """A vLLM /metrics body as vLLM's prometheus_client exposition writes it."""
    m = f'model_name="{model}"'
    queue = waiting if isinstance(waiting, str) else _fmt(waiting)
    ttft = ttft or [0] * (len(TTFT_BOUNDS) + 1)
    lines = [
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
        f"vllm:num_requests_running{{{m}}} {_fmt(running)}",
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
        "# TYPE vllm:num_requests_waiting gauge",
        f"vllm:num_requests_waiting{{{m}}} {queue}",
        f"# HELP {kv_name} KV-cache usage. 1 means 100 percent usage.",
        f"# TYPE {kv_name} gauge",
        f"{kv_name}{{{m}}} {_fmt(kv)}",
        "# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.",
        "# TYPE vllm:num_preemptions_total counter",
        f"vllm:num_preemptions_total{{{m}}} 0.0",
        "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
        "# TYPE vllm:prompt_tokens_total counter",
        f"vllm:prompt_tokens_total{{{m}}} {_fmt(prompt)}",
        "# HELP vllm:prompt_tokens_created Number of prefill tokens processed.",
        "# TYPE vllm:prompt_tokens_created gauge",
        f"vllm:prompt_tokens_created{{{m}}} 1.7e+09",
        "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
        "# TYPE vllm:generation_tokens_total counter",
        f"vllm:generation_tokens_total{{{m}}} {_fmt(generation)}",
        "# HELP vllm:request_success_total Count of successfully processed requests.",
        "# TYPE vllm:request_success_total counter",
        f'vllm:request_success_total{{finished_reason="stop",{m}}} 7.0',
        f'vllm:request_success_total{{finished_reason="length",{m}}} 2.0',
        f'vllm:request_success_total{{finished_reason="abort",{m}}} 0.0',
        *_histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            TTFT_BOUNDS,
            ttft,
            m,
        ),
        *_histogram(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds.",
            TPOT_BOUNDS,
            [3] * (len(TPOT_BOUNDS) + 1),
            m,
        ),
        "# HELP python_gc_objects_collected_total Objects collected during gc",
        "# TYPE python_gc_objects_collected_total counter",
        'python_gc_objects_collected_total{generation="0"} 12345.0',
        "# HELP process_resident_memory_bytes Resident memory size in bytes.",
        "# TYPE process_resident_memory_bytes gauge",
        "process_resident_memory_bytes 5.4e+09",
        *extra,
    ]
    return "\n".join(lines) + "\n"


KSERVE_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def kserve_body(predict: Sequence[int]) -> str:
    """KServe's Python model server: latency histograms per step, default prometheus buckets."""
    m = 'model_name="sklearn-iris"'
    zero = [0] * (len(KSERVE_BOUNDS) + 1)
    return (
        "\n".join(
            [
                *_histogram(
                    "request_preprocess_seconds", "pre-process latency", KSERVE_BOUNDS, zero, m
                ),
                *_histogram(
                    "request_predict_seconds", "predict latency", KSERVE_BOUNDS, predict, m
                ),
                *_histogram(
                    "request_postprocess_seconds", "post-process latency", KSERVE_BOUNDS, zero, m
                ),
            ]
        )
        + "\n"
    )


def queue_proxy_body(concurrency: float, rps: float, pod: str) -> str:
    """Knative queue-proxy's autoscaling stats (port 9091)."""
    labels = (
        f'configuration_name="chat-predictor",destination_namespace="llm",pod_name="{pod}",'
        'revision_name="chat-predictor-00001",service_name="chat-predictor"'
    )
    return (
        "# HELP queue_requests_per_second Number of requests received since last Stat\n"
        "# TYPE queue_requests_per_second gauge\n"
        f"queue_requests_per_second{{{labels}}} {rps}\n"
        "# HELP queue_proxied_operations_per_second Number proxied requests since last Stat\n"
        "# TYPE queue_proxied_operations_per_second gauge\n"
        f"queue_proxied_operations_per_second{{{labels}}} {rps}\n"
        "# HELP queue_average_concurrent_requests Number of requests currently being handled\n"
        "# TYPE queue_average_concurrent_requests gauge\n"
        f"queue_average_concurrent_requests{{{labels}}} {concurrency}\n"
        "# HELP queue_average_proxied_concurrent_requests Number of proxied requests\n"
        "# TYPE queue_average_proxied_concurrent_requests gauge\n"
        f"queue_average_proxied_concurrent_requests{{{labels}}} {concurrency}\n"
        "# HELP process_uptime Time since process start\n"
        "# TYPE process_uptime gauge\n"
        "process_uptime 5423.2\n"
    )


def tgi_body(queue: int, batch: int, requests: int, tokens: int) -> str:
    """TGI's router (Rust metrics-exporter-prometheus: counters without a _total suffix)."""
    bounds = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)
    per = [0] * len(bounds) + [0]
    per[6] = requests  # every request generated between 32 and 64 tokens
    return (
        "\n".join(
            [
                "# TYPE tgi_request_count counter",
                f"tgi_request_count {requests}",
                "# TYPE tgi_request_success counter",
                f"tgi_request_success {requests}",
                "# TYPE tgi_queue_size gauge",
                f"tgi_queue_size {queue}",
                "# TYPE tgi_batch_current_size gauge",
                f"tgi_batch_current_size {batch}",
                "# TYPE tgi_request_generated_tokens histogram",
                *[
                    f'tgi_request_generated_tokens_bucket{{le="{b}"}} {sum(per[: i + 1])}'
                    for i, b in enumerate(bounds)
                ],
                f'tgi_request_generated_tokens_bucket{{le="+Inf"}} {requests}',
                f"tgi_request_generated_tokens_sum {tokens}",
                f"tgi_request_generated_tokens_count {requests}",
            ]
        )
        + "\n"
    )


# -- the pod farm ------------------------------------------------------------------------------


class Farm:
    """One aiohttp app listening on the same port at 127.0.0.{FIRST + i}, one address per pod."""

    FIRST = 20

    def __init__(self) -> None:
        self.behaviour: dict[str, Behaviour] = {}
        self.hits: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.changed = asyncio.Condition()
        self.release = asyncio.Event()  # hanging handlers wait for this; set at teardown
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._servers: list[asyncio.AbstractServer] = []

    @staticmethod
    def ip(i: int) -> str:
        return f"127.0.0.{Farm.FIRST + i}"

    def pod(self, i: int, *, name: str | None = None, ready: bool = True) -> PodInfo:
        return PodInfo(name=name or f"chat-{i}", namespace="llm", ip=self.ip(i), ready=ready)

    async def start(self, n: int) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        for i in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.ip(i), self.port))
            self.port = sock.getsockname()[1]
            await web.SockSite(self._runner, sock).start()

    async def resetting_pod(self, i: int) -> None:
        """A pod that resets every connection (RST) as soon as the request arrives."""

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readline()
            raw = writer.get_extra_info("socket")
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

        self._servers.append(await asyncio.start_server(on_connect, self.ip(i), self.port))

    async def stop(self) -> None:
        self.release.set()
        for server in self._servers:
            server.close()
            await server.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()

    def serve(self, i: int, behaviour: Behaviour) -> None:
        self.behaviour[self.ip(i)] = behaviour

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        ip = request.transport.get_extra_info("sockname")[0]
        self.hits[ip] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        async with self.changed:
            self.changed.notify_all()
        try:
            b = self.behaviour[ip]
            if isinstance(b, str | bytes):
                body = b.encode() if isinstance(b, str) else b
                return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
            return await b(request)
        finally:
            self.in_flight -= 1

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(10), self.changed:
            await self.changed.wait_for(predicate)


@pytest.fixture
async def farm() -> AsyncIterator[Farm]:
    f = Farm()
    yield f
    await f.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


class Rig:
    """A source over a farm, with the pod index and clock the test drives."""

    def __init__(self, farm: Farm, session: aiohttp.ClientSession, clock: ManualClock) -> None:
        self.farm = farm
        self.session = session
        self.clock = clock
        self.index = PodIndex()
        self.source: PodScrapeSource | None = None

    def build(self, config: PodScrape | None = None, concurrency: int = 64) -> PodScrapeSource:
        cfg = config or PodScrape(port=self.farm.port, presets=("vllm",))
        self.source = PodScrapeSource(
            self.session, self.index, {KEY: cfg}, self.clock, concurrency=concurrency
        )
        return self.source

    def pods(self, *pods: PodInfo) -> None:
        self.index.set_pods(KEY, list(pods))

    async def tick(self, advance: float = 10.0) -> SourceReport:
        self.clock.advance(advance)
        assert self.source is not None
        return await self.source.collect([REF])


@pytest.fixture
async def rig(farm: Farm, session: aiohttp.ClientSession, clock: ManualClock) -> Rig:
    return Rig(farm, session, clock)


def values(report: SourceReport) -> dict[str, float]:
    out: dict[str, float] = {}
    for o in report.observations:
        assert o.target == KEY
        assert o.signal not in out, f"{o.signal} observed twice"
        out[o.signal] = o.value
    return out


def errors(report: SourceReport) -> dict[str, int]:
    return {kind: n for (target, kind), n in report.errors.items() if target == KEY}


async def _spin(n: int) -> None:
    """Let the event loop run n iterations (sockets included) without sleeping."""
    loop = asyncio.get_running_loop()
    for _ in range(n):
        fut = loop.create_future()
        loop.call_soon(fut.set_result, None)
        await fut


# -- values and aggregation --------------------------------------------------------------------


async def test_vllm_gauges_are_summed_and_kv_cache_averaged(rig: Rig, farm: Farm) -> None:
    await farm.start(3)
    rig.build()
    rig.pods(farm.pod(0), farm.pod(1), farm.pod(2))
    farm.serve(0, vllm_body(running=10, waiting=4, kv=0.50))
    farm.serve(1, vllm_body(running=12, waiting=0, kv=0.70))
    farm.serve(2, vllm_body(running=3, waiting=1, kv=0.90))
    report = await rig.tick()
    v = values(report)
    assert v[sig.RUNNING] == 25
    assert v[sig.WAITING] == 5
    assert v[sig.KV_CACHE_USAGE] == pytest.approx(0.70)
    assert errors(report) == {}
    assert all(o.ts == rig.clock.now() for o in report.observations)
    assert set(farm.hits) == {farm.ip(0), farm.ip(1), farm.ip(2)}


async def test_source_satisfies_the_protocol(rig: Rig, farm: Farm) -> None:
    await farm.start(1)
    source: Source = rig.build()
    assert source.name == "scrape"
    await source.close()


async def test_only_ready_pods_are_scraped(rig: Rig, farm: Farm) -> None:
    await farm.start(3)
    rig.build()
    rig.pods(farm.pod(0), farm.pod(1, ready=False), farm.pod(2))
    for i in range(3):
        farm.serve(i, vllm_body(waiting=2))
    v = values(await rig.tick())
    assert v[sig.WAITING] == 4
    assert farm.hits[farm.ip(1)] == 0


async def test_no_ready_pods_means_no_observations(rig: Rig, farm: Farm) -> None:
    await farm.start(1)
    rig.build()
    rig.pods()
    report = await rig.tick()
    assert report.observations == [] and report.errors == {}


async def test_max_aggregate_and_scale(rig: Rig, farm: Farm) -> None:
    await farm.start(2)
    cfg = PodScrape(
        port=farm.port,
        presets=(),
        metrics=(
            MetricMapping(
                signal="waiting_max", metric="vllm:num_requests_waiting", aggregate="max"
            ),
            MetricMapping(signal="running_pct", metric="vllm:num_requests_running", scale=0.01),
        ),
    )
    rig.build(cfg)
    rig.pods(farm.pod(0), farm.pod(1))
    farm.serve(0, vllm_body(running=30, waiting=7))
    farm.serve(1, vllm_body(running=20, waiting=2))
    v = values(await rig.tick())
    assert v == {"waiting_max": 7, "running_pct": pytest.approx(0.5)}


async def test_old_and_new_kv_cache_names_through_a_rolling_upgrade(rig: Rig, farm: Farm) -> None:
    await farm.start(3)
    rig.build()
    rig.pods(farm.pod(0), farm.pod(1), farm.pod(2))
    farm.serve(0, vllm_body(kv=0.2, kv_name="vllm:gpu_cache_usage_perc"))  # before v0.10
    farm.serve(1, vllm_body(kv=0.6, kv_name="vllm:kv_cache_usage_perc"))  # after
    # A build that exposes both: the first listed name (the new one) wins.
    both = vllm_body(
        kv=0.4,
        kv_name="vllm:kv_cache_usage_perc",
        extra=[f'vllm:gpu_cache_usage_perc{{model_name="{MODEL}"}} 0.99'],
    )
    farm.serve(2, both)
    v = values(await rig.tick())
    assert v[sig.KV_CACHE_USAGE] == pytest.approx((0.2 + 0.6 + 0.4) / 3)


async def test_label_filter_keeps_one_model(rig: Rig, farm: Farm) -> None:
    await farm.start(2)
    cfg = PodScrape(
        port=farm.port,
        presets=("vllm",),
        metrics=(
            MetricMapping(
                signal=sig.WAITING,
                metric="vllm:num_requests_waiting",
                labels={"model_name": "chat-lora"},
            ),
        ),
    )
    rig.build(cfg)
    rig.pods(farm.pod(0), farm.pod(1))
    lora = ['vllm:num_requests_waiting{model_name="chat-lora"} 6.0']
    farm.serve(0, vllm_body(waiting=100, running=1, extra=lora))
    farm.serve(1, vllm_body(waiting=100, running=2))  # does not serve the adapter: contributes 0
    v = values(await rig.tick())
    assert v[sig.WAITING] == 6  # the explicit mapping replaced the preset's
    assert v[sig.RUNNING] == 3


async def test_sample_timestamp_is_used_when_given(rig: Rig, farm: Farm) -> None:
    await farm.start(1)
    rig.build(PodScrape(port=farm.port, presets=("queue-proxy",)))
    rig.pods(farm.pod(0))
    stamped = 'queue_average_concurrent_requests{pod_name="a"} 3 1700000004500\n'
    farm.serve(0, stamped)
    report = await rig.tick(advance=10)
    assert report.observations == [Observation(KEY, sig.CONCURRENCY, 3.0, 1_700_000_004.5)]


# -- other servers' presets --------------------------------------------------------------------


async def test_queue_proxy_preset(rig: Rig, farm: Farm) -> None:
    await farm.start(2)
    rig.build(PodScrape(port=farm.port, presets=("queue-proxy",)))
    rig.pods(farm.pod(0), farm.pod(1))
    farm.serve(0, queue_proxy_body(concurrency=2.5, rps=10, pod="chat-0"))
    farm.serve(1, queue_proxy_body(concurrency=1.5, rps=6, pod="chat-1"))
    assert values(await rig.tick()) == {sig.CONCURRENCY: 4.0, sig.RPS: 16.0}


async def test_tgi_preset_counters_without_total_suffix(rig: Rig, farm: Farm) -> None:
    await farm.start(1)
    rig.build(PodScrape(port=farm.port, presets=("tgi",)))
    rig.pods(farm.pod(0))
    farm.serve(0, tgi_body(queue=3, batch=8, requests=100, tokens=4800))
    v = values(await rig.tick())
    assert v == {
        sig.WAITING: 3,
        sig.RUNNING: 8,
        sig.REQUESTS_TOTAL: 0.0,  # the baseline of the synthetic counters
        sig.GENERATION_TOKENS_TOTAL: 0.0,
    }
    farm.serve(0, tgi_body(queue=1, batch=8, requests=130, tokens=6300))
    v = values(await rig.tick(advance=10))
    assert v[sig.REQUESTS_TOTAL] == 30
    assert v[sig.GENERATION_TOKENS_TOTAL] == 1500  # tokens from the histogram's _sum


async def test_kserve_preset_latency_quantile_and_request_count(rig: Rig, farm: Farm) -> None:
    await farm.start(1)
    rig.build(PodScrape(port=farm.port, presets=("kserve",)))
    rig.pods(farm.pod(0))
    n = len(KSERVE_BOUNDS) + 1
    first = [0] * n
    first[2] = 50  # 50 requests in (0.01, 0.025]
    farm.serve(0, kserve_body(first))
    v = values(await rig.tick())
    assert v == {sig.REQUESTS_TOTAL: 0.0}  # a baseline; no latency yet (nothing new observed)
    second = list(first)
    second[6] += 20  # 20 more in (0.1, 0.25]
    farm.serve(0, kserve_body(second))
    v = values(await rig.tick())
    assert v[sig.REQUESTS_TOTAL] == 20
    # All 20 new requests fell in (0.1, 0.25]: p95 at rank 19 of 20 -> 0.1 + 0.15 * 19/20.
    assert v["latency_p95_seconds"] == pytest.approx(0.1 + 0.15 * 19 / 20)


# -- counters ----------------------------------------------------------------------------------


async def test_counter_rate_across_a_reset(rig: Rig, farm: Farm) -> None:
    await farm.start(2)
    rig.build()
    rig.pods(farm.pod(0), farm.pod(1))
    window = SignalWindow(600)

    async def tick(a: float, b: float) -> float:
        farm.serve(0, vllm_body(prompt=a))
        farm.serve(1, vllm_body(prompt=b))
        report = await rig.tick(advance=10)
        (obs,) = [o for o in report.observations if o.signal == sig.PROMPT_TOKENS_TOTAL]
        window.add(obs.ts, obs.value)
        return obs.value

    assert await tick(1000, 2000) == 0  # baselines
    assert await tick(1500, 2600) == 1100
    assert await tick(200, 3000) == 1100 + 200 + 400  # pod 0 restarted: 200 is all new
    assert await tick(700, 3100) == 1700 + 500 + 100
    # The engine's rate over the synthetic counter is the target's true rate: no reset seen.
    assert window.rate(rig.clock.now(), 600) == pytest.approx(2300 / 30)
    assert window.rate(rig.clock.now(), 15) == pytest.approx(600 / 10)


async def test_a_pod_replaced_mid_window_neither_resets_nor_spikes(rig: Rig, farm: Farm) -> None:
    await farm.start(3)
    rig.build()
    window = SignalWindow(600)

    async def tick(bodies: dict[int, float]) -> float:
        rig.pods(*(farm.pod(i) for i in bodies))
        for i, prompt in bodies.items():
            farm.serve(i, vllm_body(prompt=prompt))
        report = await rig.tick(advance=10)
        (obs,) = [o for o in report.observations if o.signal == sig.PROMPT_TOKENS_TOTAL]
        window.add(obs.ts, obs.value)
        return obs.value

    assert await tick({0: 10_000, 1: 50_000}) == 0
    assert await tick({0: 10_100, 1: 50_100}) == 200
    # Pod 1 is replaced by pod 2, whose lifetime total (30,000) is not a burst of this tick.
    assert await tick({0: 10_200, 2: 30_000}) == 300
    assert await tick({0: 10_300, 2: 30_100}) == 500
    assert window.rate(rig.clock.now(), 600) == pytest.approx(500 / 30)
    # Summing the raw counters instead would have read 60,100 -> 40,200: a "reset" of the target.


async def test_a_pod_recreated_under_the_same_name_is_a_new_pod(rig: Rig, farm: Farm) -> None:
    await farm.start(3)
    rig.build()
    rig.pods(farm.pod(0, name="chat-0"))
    farm.serve(0, vllm_body(prompt=100))
    farm.serve(1, vllm_body(prompt=5000))
    await rig.tick()
    rig.pods(farm.pod(1, name="chat-0"))  # same name, new IP: a StatefulSet pod recreated
    v = values(await rig.tick())
    assert v[sig.PROMPT_TOKENS_TOTAL] == 0  # a baseline, not 4,900 tokens in one tick


async def test_per_second_counter_signal_is_a_rate(rig: Rig, farm: Farm) -> None:
    await farm.start(2)
    cfg = PodScrape(
        port=farm.port,
        presets=(),
        metrics=(
            MetricMapping(
                signal=sig.TOKENS_PER_SECOND, metric="vllm:generation_tokens", type="counter"
            ),
        ),
    )
    rig.build(cfg)
    rig.pods(farm.pod(0), farm.pod(1))
    farm.serve(0, vllm_body(generation=1000))
    farm.serve(1, vllm_body(generation=1000))
    assert values(await rig.tick(advance=10)) == {}  # no rate before a second scrape
    farm.serve(0, vllm_body(generation=1500))
    farm.serve(1, vllm_body(generation=1200))
    assert values(await rig.tick(advance=5)) == {sig.TOKENS_PER_SECOND: pytest.approx(140.0)}


# -- histograms --------------------------------------------------------------------------------


def _ttft(**buckets: int) -> list[int]:
    """Per-bucket TTFT counts by bucket index name, e.g. _ttft(b8=10) for (0.1, 0.25]."""
    counts = [0] * (len(TTFT_BOUNDS) + 1)
    for k, n in buckets.items():
        counts[int(k[1:])] = n
    return counts


async def test_histogram_quantile_over_the_merged_pods(rig: Rig, farm: Farm) -> None:
    await farm.start(2)
    rig.build()
    rig.pods(farm.pod(0), farm.pod(1))
    farm.serve(0, vllm_body(ttft=_ttft(b3=500)))  # history before the source started
    farm.serve(1, vllm_body(ttft=_ttft(b12=7)))
    assert sig.TTFT_P95_SECONDS not in values(await rig.tick())  # baselines only
    # This period: pod 0 saw 10 requests in each of (0.1,0.25], (0.25,0.5], (0.5,0.75],
    # (0.75,1.0]; pod 1 saw 40 in (1.0, 2.5].
    farm.serve(0, vllm_body(ttft=_ttft(b3=500, b8=10, b9=10, b10=10, b11=10)))
    farm.serve(1, vllm_body(ttft=_ttft(b12=47)))
    v = values(await rig.tick())
    # 80 merged: rank 76 lands in (1.0, 2.5], 36 of its 40 in -> 1.0 + 1.5 * 36/40.
    assert v[sig.TTFT_P95_SECONDS] == pytest.approx(1.0 + 1.5 * 36 / 40)
    # A period without a single new request has no TTFT: missing, not zero.
    v = values(await rig.tick())
    assert sig.TTFT_P95_SECONDS not in v


async def test_histogram_reset_in_one_pod(rig: Rig, farm: Farm) -> None:
    await farm.start(1)
    rig.build()
    rig.pods(farm.pod(0))
    farm.serve(0, vllm_body(ttft=_ttft(b12=1000)))
    await rig.tick()
    farm.serve(0, vllm_body(ttft=_ttft(b7=20)))  # restarted: 20 requests since, in (0.08, 0.1]
    v = values(await rig.tick())
    assert v[sig.TTFT_P95_SECONDS] == pytest.approx(0.08 + 0.02 * 19 / 20)


# -- faults: missing data, never zero ----------------------------------------------------------


async def test_each_fault_is_counted_by_kind(rig: Rig, farm: Farm) -> None:
    await farm.start(9)
    await farm.resetting_pod(9)
    cfg = PodScrape(port=farm.port, presets=("vllm",), timeout_seconds=0.05, max_body_bytes=16384)
    rig.build(cfg)

    async def hang(request: web.Request) -> web.StreamResponse:
        await farm.release.wait()
        return web.Response(text="late")

    async def error(request: web.Request) -> web.StreamResponse:
        return web.Response(status=500, text="engine dead")

    async def stream_huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE_LATEST})
        await resp.prepare(request)  # chunked: no Content-Length to refuse up front
        for _ in range(64):
            await resp.write(b"# " + b"x" * 1000 + b"\n")  # 64 KB
        await resp.write_eof()
        return resp

    farm.serve(0, hang)
    farm.serve(1, error)
    farm.serve(2, "<html><body><h1>502 Bad Gateway</h1></body></html>\n")
    farm.serve(3, "upstream connect error or disconnect/reset before headers\n")
    farm.serve(4, b"\x1f\x8b\x08\x00\xff\xfe\xfa garbage")
    farm.serve(5, "# TYPE x gauge\n" + "#" * 40_000 + "\n")  # 40 KB, over the 16 KB cap
    farm.serve(6, stream_huge)
    farm.serve(7, 'vllm:num_requests_waiting{model_name="trunc')  # cut off mid-line
    farm.serve(8, vllm_body(waiting=3, running=1, kv=0.5))
    pods = [farm.pod(i) for i in range(10)]
    pods.append(PodInfo("chat-refused", "llm", "127.0.0.250", ready=True))  # nothing listens
    rig.pods(*pods)
    report = await rig.tick()
    assert errors(report) == {
        "timeout": 1,
        "http_error": 1,
        "parse_error": 4,
        "too_large": 2,
        "connection": 2,  # reset (pod 9) and refused
    }
    # Ten of eleven pods failed: sums are unknown, the mean is over the one pod that answered.
    assert values(report) == {sig.KV_CACHE_USAGE: 0.5}


async def test_nan_and_negative_samples_are_dropped_and_counted(rig: Rig, farm: Farm) -> None:
    await farm.start(3)
    rig.build()
    rig.pods(farm.pod(0), farm.pod(1), farm.pod(2))
    farm.serve(0, vllm_body(waiting="NaN", running=1, kv=0.4))
    farm.serve(1, vllm_body(waiting=2, running=1, kv=-0.3))
    farm.serve(2, vllm_body(waiting=3, running=1, kv=0.6))
    report = await rig.tick()
    assert errors(report) == {"nan": 1, "negative": 1}
    v = values(report)
    assert sig.WAITING not in v  # one pod's queue unknown: the sum is unknown
    assert v[sig.RUNNING] == 3
    assert v[sig.KV_CACHE_USAGE] == pytest.approx(0.5)  # the mean of the pods that have it


async def test_infinite_value_counts_as_nan(rig: Rig, farm: Farm) -> None:
    await farm.start(1)
    rig.build()
    rig.pods(farm.pod(0))
    farm.serve(0, vllm_body(waiting="+Inf"))
    report = await rig.tick()
    assert errors(report) == {"nan": 1}
    assert sig.WAITING not in values(report)


async def test_partial_failure_semantics(rig: Rig, farm: Farm) -> None:
    await farm.start(3)
    rig.build()
    rig.pods(farm.pod(0), farm.pod(1), farm.pod(2))
    for i in range(3):
        farm.serve(i, vllm_body(waiting=2, kv=0.5, prompt=1000, ttft=_ttft(b8=10)))
    await rig.tick()

    async def error(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503)

    farm.serve(0, vllm_body(waiting=4, kv=0.2, prompt=1100, ttft=_ttft(b8=20)))
    farm.serve(1, vllm_body(waiting=6, kv=0.4, prompt=1300, ttft=_ttft(b8=30)))
    farm.serve(2, error)
    report = await rig.tick()
    v = values(report)
    assert errors(report) == {"http_error": 1}
    assert sig.WAITING not in v  # a partial sum would read as less load
    assert sig.PROMPT_TOKENS_TOTAL not in v  # the same for the counter...
    assert v[sig.KV_CACHE_USAGE] == pytest.approx(0.3)  # mean over the pods that answered
    assert v[sig.TTFT_P95_SECONDS] == pytest.approx(0.1 + 0.15 * 0.95)  # quantile likewise

    farm.serve(2, vllm_body(waiting=1, kv=0.9, prompt=1700, ttft=_ttft(b8=10)))
    v = values(await rig.tick())
    # ...whose increases are delayed, not lost: 100 + 300 + pod 2's 700 over two ticks.
    assert v[sig.PROMPT_TOKENS_TOTAL] == 1100
    assert v[sig.WAITING] == 4 + 6 + 1


async def test_timeout_leaves_the_other_pods_alone(rig: Rig, farm: Farm) -> None:
    await farm.start(2)
    rig.build(PodScrape(port=farm.port, presets=("vllm",), timeout_seconds=0.05))
    rig.pods(farm.pod(0), farm.pod(1))

    async def hang(request: web.Request) -> web.StreamResponse:
        await farm.release.wait()
        return web.Response(text="late")

    farm.serve(0, hang)
    farm.serve(1, vllm_body(kv=0.25))
    report = await rig.tick()
    assert errors(report) == {"timeout": 1}
    assert values(report) == {sig.KV_CACHE_USAGE: 0.25}


async def test_concurrency_cap_is_respected(rig: Rig, farm: Farm) -> None:
    pods = 12
    await farm.start(pods)
    rig.build(concurrency=3)
    rig.pods(*(farm.pod(i) for i in range(pods)))
    gate = asyncio.Event()

    async def gated(request: web.Request) -> web.StreamResponse:
        await gate.wait()
        return web.Response(body=vllm_body(waiting=1).encode())

    for i in range(pods):
        farm.serve(i, gated)
    task = asyncio.create_task(rig.tick())
    await farm.wait_for(lambda: farm.in_flight >= 3)
    await _spin(300)  # had the cap leaked, more requests would have arrived by now
    assert farm.in_flight == 3
    gate.set()
    report = await task
    assert farm.max_in_flight == 3
    assert sum(farm.hits.values()) == pods
    assert values(report)[sig.WAITING] == pods


async def test_targets_are_scraped_concurrently_under_one_cap(rig: Rig, farm: Farm) -> None:
    await farm.start(4)
    other = TargetRef("InferenceService", "llm", "embed")
    cfg = PodScrape(port=farm.port, presets=("vllm",))
    source = PodScrapeSource(
        rig.session, rig.index, {KEY: cfg, other.key: cfg}, rig.clock, concurrency=4
    )
    rig.index.set_pods(KEY, [farm.pod(0), farm.pod(1)])
    rig.index.set_pods(other.key, [farm.pod(2), farm.pod(3)])
    gate = asyncio.Event()

    async def gated(request: web.Request) -> web.StreamResponse:
        await gate.wait()
        return web.Response(body=vllm_body(waiting=2).encode())

    for i in range(4):
        farm.serve(i, gated)
    task = asyncio.create_task(source.collect([REF, other]))
    await farm.wait_for(lambda: farm.in_flight == 4)  # both targets' pods at once
    gate.set()
    report = await task
    by_target = {(o.target, o.signal): o.value for o in report.observations}
    assert by_target[(KEY, sig.WAITING)] == 4
    assert by_target[(other.key, sig.WAITING)] == 4


async def test_unconfigured_targets_are_skipped_and_reload_keeps_memory(
    rig: Rig, farm: Farm
) -> None:
    await farm.start(1)
    source = rig.build()
    rig.pods(farm.pod(0))
    farm.serve(0, vllm_body(prompt=100))
    await rig.tick()
    unknown = TargetRef("InferenceService", "llm", "unknown")
    assert (await source.collect([unknown])).observations == []
    same = PodScrape(port=farm.port, presets=("vllm",))
    source.configure({KEY: same})  # equal config: the counter memory survives
    farm.serve(0, vllm_body(prompt=160))
    assert values(await rig.tick())[sig.PROMPT_TOKENS_TOTAL] == 60
    source.configure({KEY: PodScrape(port=farm.port, presets=("vllm",), timeout_seconds=1)})
    assert values(await rig.tick())[sig.PROMPT_TOKENS_TOTAL] == 0  # a new config starts afresh


def test_ipv6_pod_addresses_are_bracketed() -> None:
    from autoscaler.sources.scrape import _Target

    t = _Target.build(PodScrape(port=8080, path="/metrics"))
    assert t.url("fd00::12") == "http://[fd00::12]:8080/metrics"
    assert t.url("10.0.0.7") == "http://10.0.0.7:8080/metrics"


def test_histogram_mapping_without_quantile_is_rejected() -> None:
    cfg = PodScrape(
        presets=(),
        metrics=(MetricMapping(signal="lat", metric="request_predict_seconds", type="histogram"),),
    )
    with pytest.raises(ValueError, match="quantile"):
        PodScrapeSource(None, PodIndex(), {KEY: cfg}, ManualClock())  # type: ignore[arg-type]


# -- background scraping, staggered (the service) --------------------------------------------


async def test_background_scrape_staggers_targets_over_the_interval_and_hands_each_batch_once(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    from autoscaler.testing.clock import VirtualClock

    await farm.start(6)
    refs = [TargetRef("InferenceService", "llm", f"m{i}") for i in range(6)]
    for i in range(6):
        farm.serve(i, vllm_body(waiting=i))
    cfg = PodScrape(port=farm.port, presets=("vllm",))
    vclock = VirtualClock(T0)
    index = PodIndex()
    for i, ref in enumerate(refs):
        index.set_pods(ref.key, [farm.pod(i)])
    src = PodScrapeSource(
        session, index, {r.key: cfg for r in refs}, vclock, interval=1.0, phases=4
    )
    try:
        # Targets with the same mappings share one Scanner (and its memo of label sets).
        assert len({id(src._targets[r.key].scanner) for r in refs}) == 1
        first = await src.collect(refs)  # starts the phases; nothing scraped yet
        assert first.observations == [] and first.errors == {}
        seen: dict[str, float] = {}
        for phase in range(4):
            if phase:
                vclock.advance(0.25)
            await vclock.sleeping(1)  # the phase's scrapes are started, the runner waits
            await asyncio.gather(*list(src._tasks))
            report = await src.collect(refs)
            got = {o.target: o.value for o in report.observations if o.signal == sig.WAITING}
            assert set(got) == {r.key for r in refs if src.phase_of(r.key) == phase}
            seen.update(got)
            assert (await src.collect(refs)).observations == []  # handed over once
        assert seen == {r.key: float(i) for i, r in enumerate(refs)}
        assert src.scrapes == 6 and sum(farm.hits.values()) == 6  # once each per interval
        vclock.advance(0.25)  # the next interval starts over with phase 0
        await vclock.sleeping(1)
        await asyncio.gather(*list(src._tasks))
        assert src.scrapes == 6 + sum(1 for r in refs if src.phase_of(r.key) == 0)
    finally:
        await src.close()
    assert src._runner is None and not src._tasks


async def test_max_rate_stretches_the_interval_to_bound_the_scrape_load(
    session: aiohttp.ClientSession,
) -> None:
    cfg = PodScrape(port=8080, presets=("vllm",))
    configs = {f"llm/m{i}": cfg for i in range(1000)}
    clock = ManualClock(T0)
    assert (
        PodScrapeSource(session, PodIndex(), configs, clock, interval=1.0).effective_interval == 1.0
    )
    bounded = PodScrapeSource(session, PodIndex(), configs, clock, interval=1.0, max_rate=200)
    assert bounded.effective_interval == 5.0  # 1,000 targets at 200 a second
    bounded.configure({k: cfg for k in list(configs)[:100]})
    assert bounded.effective_interval == 1.0  # never shorter than asked
    assert PodScrapeSource(session, PodIndex(), configs, clock).effective_interval is None
    with pytest.raises(ValueError):
        PodScrapeSource(session, PodIndex(), configs, clock, interval=1.0, max_rate=0)
