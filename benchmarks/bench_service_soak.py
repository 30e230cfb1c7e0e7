"""Soak: the live service with 1,000 Deployment targets at a 1 s tick, on loopback.

    .venv/bin/python benchmarks/bench_service_soak.py [--targets 1000] [--seconds 600]
        [--tick 1] [--exporters 8] [--warmup 20] [--json OUT]

A world process, apart from this one so it does not take the service's CPU, runs the fake
Kubernetes API server with one Deployment ``soak/m-NNNN`` per target and one pod each (Ready,
podIP 127.0.0.x), and a handful of vLLM exporters, one per loopback address, all on one port:
each target's pod points at one of them, and each target scrapes its own path
(``/metrics/m-NNNN``), so the exporters serve every target its own load. The body is a realistic
vLLM ``/metrics`` (~20 KB, from ``bench_scrape.vllm_body``). Its ``vllm:num_requests_waiting``:

    wave    (default) a sine per target, 0..4 waiting over 20 minutes with a random phase: the
            target wants 1 or 2 replicas and changes about every 10 minutes, ~1.7 scale writes a
            second over 1,000 targets, within the actuators' client-side rate limit (10/s)
    steady  2 waiting everywhere, always: 1 replica, nothing to write

Each Deployment starts at the count its load wants, so the run does not open with a thousand
scale-ups.

This process runs the real service (``open_service`` + ``start_http``, what ``autoscaler run``
runs: status watches, pod scrape, engine, Deployment actuator, leader election, reload watcher,
HTTP) with the ``queue`` policy on every target, and after a warm-up measures for ``--seconds``:

- tick duration p50/p90/p99/max (each ``ControlLoop.tick`` timed; the same figures the service's
  ``autoscaler_tick_duration_seconds`` histogram buckets), and ticks run versus ticks due;
- process CPU (``resource.getrusage``: user + system over wall time) and RSS (``VmRSS`` sampled
  every second, its maximum; and ``ru_maxrss``, the peak over the whole run, start-up included);
  RSS after this process's imports, once the service is open, after the warm-up and at the end
  (``rss_mb.at``), and at the end glibc's heap, the threads and RSS split into anonymous and
  file-backed pages (``rss_mb.at_end``); ``--tracemalloc N`` prints where Python memory is held
  and what grew (docs/memory.md);
- what the ticks did: decisions with fresh signals, writes, actuation failures and source errors
  by kind, log records by level.

Targets (the issue's): p99 tick under 200 ms and RSS under 150 MB. The exit status is 0 either
way; the figures are printed (and written as JSON with ``--json``).

``--scrape-seconds`` and ``--scrape-max-rate`` set the service's scrape interval and its bound
(target scrapes a second; by default the interval is the tick, stretched to targets / 200: 5 s
at 1,000 targets). ``--profile FILE`` profiles the measured window on CPU time.

``--what-if`` measures a candidate change without making it, by patching this process only
(the figures say which were on):

    pool            kubernetes-asyncio's connection pool without its limit of 100. Kept for
                    comparison with history: the status source used to hold one watch per
                    Deployment and one per target's pods, and from 50 targets on the watches
                    took every connection. It now holds one per (kind, namespace), and the Lease
                    has a client of its own, so this should change nothing.

(The ``skip-unchanged`` what-if of earlier versions is now the product's behaviour: the
Deployment actuator skips targets whose watched ``spec.replicas`` already equal the decision.)

Figures, and what changed to get them: docs/kubernetes-status.md ("At 1,000 targets").
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import ctypes
import ctypes.util
import gc
import json
import logging
import math
import multiprocessing as mp
import pstats
import resource
import socket
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiohttp import web

from autoscaler import kube
from autoscaler.service import app as service_app
from autoscaler.service.app import Service, open_service, start_http
from autoscaler.service.clock import SystemClock
from autoscaler.service.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))
from bench_scrape import vllm_body

NS = "soak"
FIRST_IP = 30  # exporters on 127.0.0.30, .31, ...
PERIOD = 1200.0  # seconds of one load cycle (wave)
PEAK = 4.0  # waiting requests at the top of the cycle (2 replicas at 2 per replica)
PER_REPLICA = 2


def name(i: int) -> str:
    return f"m-{i:04d}"


def phase(i: int) -> float:
    return 2 * math.pi * ((i * 0.6180339887) % 1.0)  # spread evenly, fixed per target


def waiting(i: int, t: float, load: str) -> float:
    """Target i's queue ``t`` seconds into the run."""
    if load == "steady":
        return 2.0
    return float(round(PEAK / 2 * (1 + math.sin(2 * math.pi * t / PERIOD + phase(i)))))


# -- the world process: fake API server and exporters ---------------------------------------------


class Exporter:
    """vLLM bodies, one per target path, each with that target's queue."""

    def __init__(self, k: int, clock: SystemClock, start: float, load: str) -> None:
        body = vllm_body(k)
        marker = "vllm:num_requests_waiting{"
        at = body.index(marker)
        end = body.index("\n", at)
        line = body[at:end]
        self.head = body[:at] + line.rsplit(" ", 1)[0] + " "
        self.tail = body[end:]
        self.clock = clock
        self.start = start
        self.load = load
        self.hits = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        i = int(request.match_info["target"].removeprefix("m-"))
        value = waiting(i, self.clock.now() - self.start, self.load)
        text = f"{self.head}{value!r}{self.tail}"
        return web.Response(text=text, content_type="text/plain", charset="utf-8")


def world_main(conn: Connection, targets: int, exporters: int, load: str) -> None:
    # Watches the service drops at shutdown end mid-write on the fake's side: not news.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    asyncio.run(_world(conn, targets, exporters, load))


async def _world(conn: Connection, targets: int, n_exporters: int, load: str) -> None:
    # Imported here, in the world process only: the service's process must not carry the fake.
    from autoscaler.testing.fake_kube import FakeKube

    clock = SystemClock()
    start = clock.now()
    exporters = [Exporter(k, clock, start, load) for k in range(n_exporters)]
    runners: list[web.AppRunner] = []
    port = 0
    for k, exp in enumerate(exporters):
        app = web.Application()
        app.router.add_get("/metrics/{target}", exp.handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((f"127.0.0.{FIRST_IP + k}", port))
        port = sock.getsockname()[1]
        await web.SockSite(runner, sock, backlog=1024).start()
        runners.append(runner)
    kube = FakeKube(clock=clock)
    await kube.start()
    for i in range(targets):
        labels = {"app": name(i)}
        kube.seed(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name(i), "namespace": NS},
                "spec": {
                    "replicas": max(1, math.ceil(waiting(i, 0.0, load) / PER_REPLICA)),
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]},
                    },
                },
            }
        )
        pod = f"{name(i)}-0"
        kube.add_pod(NS, pod, labels)
        kube.set_pod_status(NS, pod, ready=True, ip=f"127.0.0.{FIRST_IP + i % n_exporters}")
    conn.send({"url": kube.url, "port": port})

    loop = asyncio.get_running_loop()
    stop = loop.run_in_executor(None, conn.recv)
    requests: Counter[str] = Counter()
    peak_watches = 0
    while not stop.done():
        await asyncio.wait([stop], timeout=1.0)
        for r in kube.requests:  # count and forget (the fake keeps every request otherwise)
            parts = r.path.rstrip("/").split("/")
            resource_ = parts[-1] if r.verb in ("list", "watch", "create") else parts[-2]
            if r.path.endswith("/scale"):
                resource_ = "deployments/scale"
            requests[f"{r.verb} {resource_} {r.status}"] += 1
        kube.requests.clear()
        peak_watches = max(peak_watches, kube.watch_count())
    ru = resource.getrusage(resource.RUSAGE_SELF)
    conn.send(
        {
            "requests": dict(sorted(requests.items())),
            "scrapes": sum(e.hits for e in exporters),
            "peak_watches": peak_watches,
            "cpu_seconds": ru.ru_utime + ru.ru_stime,
        }
    )
    await kube.close()
    for runner in runners:
        await runner.cleanup()


# -- this process: the service ------------------------------------------------------------------


def policy_yaml(targets: int, port: int) -> str:
    lines = [
        "apiVersion: autoscaler.kserve.io/v1alpha1",
        "kind: AutoscalingPolicy",
        "metadata: {name: soak}",
        "spec:",
        "  targets:",
    ]
    for i in range(targets):
        scrape = f"{{port: {port}, path: /metrics/{name(i)}, presets: [vllm]}}"
        lines += [
            f"    - {{kind: Deployment, namespace: {NS}, name: {name(i)},",
            f"       policy: {{name: queue, params: {{targetPerReplica: {PER_REPLICA}}}}},",
            "       guards: {minReplicas: 1, maxReplicas: 10, restartHoldSeconds: 30,",
            "                stabilization: {downSeconds: 30}},",
            "       actuation: {engine: deployment},",
            f"       signals: {{scrape: {scrape}}}}}",
        ]
    return "\n".join(lines) + "\n"


def kubeconfig_yaml(server: str) -> str:
    return (
        "apiVersion: v1\nkind: Config\n"
        f'clusters: [{{name: fake, cluster: {{server: "{server}"}}}}]\n'
        "users: [{name: anonymous, user: {}}]\n"
        "contexts: [{name: fake, context: {cluster: fake, user: anonymous}}]\n"
        "current-context: fake\n"
    )


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def malloc_stats() -> dict[str, Any]:
    """glibc's view of the C heap (MB): what it holds from the OS, in use, free inside it; and
    the threads (each may get a malloc arena of its own). Empty where there is no mallinfo2."""
    names = Counter(
        (task / "comm").read_text().strip() for task in Path("/proc/self/task").iterdir()
    )
    out: dict[str, Any] = {"threads": sum(names.values()), "thread_names": dict(names)}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        info = libc.mallinfo2
    except (OSError, AttributeError):
        return out
    info.restype = _Mallinfo2
    m = info()
    mb = 2**20
    out.update(
        heap_mb=round((m.arena + m.hblkhd) / mb, 1),
        in_use_mb=round((m.uordblks + m.hblkhd) / mb, 1),
        free_inside_mb=round(m.fordblks / mb, 1),
        mmapped_mb=round(m.hblkhd / mb, 1),
    )
    return out


def smaps() -> dict[str, float]:
    """RSS split into anonymous memory (heaps) and file-backed pages (code, shared libraries)."""
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Anonymous", "Shared_Clean", "Private_Clean"):
            out[key.lower() + "_mb"] = round(int(rest.split()[0]) / 1024, 1)
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


class CountingHandler(logging.Handler):
    """Counts log records by logger and level; prints the first few warnings and errors."""

    def __init__(self, show: int = 5) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()
        self.show = show

    def emit(self, record: logging.LogRecord) -> None:
        key = f"{record.levelname.lower()} {record.name}"
        self.counts[key] += 1
        if self.counts[key] <= self.show:
            print(f"  log: {key}: {record.getMessage()[:160]}", file=sys.stderr)


def samples(svc: Service, name_: str) -> Counter[str]:
    """A counter family of the service's registry, summed over targets, by its other labels."""
    out: Counter[str] = Counter()
    for family in svc.registry.collect():
        for s in family.samples:
            if s.name == name_:
                rest = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "target")
                out[rest] += s.value
    return out


async def _unpooled_client(settings: Settings) -> kube.ApiClient:
    """What-if ``pool``: the service's client with no limit on connections."""
    cfg = kube.Configuration()
    await kube.load_kube_config(config_file=settings.kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = 0  # aiohttp: no limit
    return kube.ApiClient(configuration=cfg)


def _time_phases(svc: Service) -> dict[str, list[float]]:
    """Wall time of each source's collect and of the engine's tick, per tick (the sources run
    concurrently, so their times overlap; the rest of a tick is actuation and recording)."""
    phases: dict[str, list[float]] = {}
    for source in svc.loop.sources:
        phases[f"source {source.name}"] = times = []
        collect = source.collect

        async def timed_collect(targets: Any, collect: Any = collect, times: Any = times) -> Any:
            t0 = time.perf_counter()
            try:
                return await collect(targets)
            finally:
                times.append(time.perf_counter() - t0)

        source.collect = timed_collect  # type: ignore[method-assign]
    phases["engine tick"] = engine_times = []
    # The loop's engine behind a proxy that times tick(): a compiled Engine's methods cannot be
    # replaced (autoscaler/native.py), and the loop reads the engine only through attributes.
    svc.loop.engine = _TimedEngine(svc.engine, engine_times)  # type: ignore[assignment]
    return phases


class _TimedEngine:
    """Delegates to the engine; appends the duration of every ``tick`` to ``times``."""

    def __init__(self, engine: Any, times: list[float]) -> None:
        self._engine = engine
        self._times = times

    def tick(self, now: float, observations: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self._engine.tick(now, observations)
        finally:
            self._times.append(time.perf_counter() - t0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def _top(
    snapshot: tracemalloc.Snapshot, base: tracemalloc.Snapshot | None, n: int, by: str = "lineno"
) -> None:
    """The ``n`` source lines (or files) holding the most traced memory (or that grew most
    since ``base``)."""
    if base is None:
        stats: list[Any] = snapshot.statistics(by)
        title = f"held at the end, by {by}"
    else:
        stats = snapshot.compare_to(base, by)
        title = "grown over the measured window"
    print(f"tracemalloc, {title} (MB, blocks):", file=sys.stderr)
    for st in stats[:n]:
        size = getattr(st, "size_diff", st.size) if base is not None else st.size
        count = getattr(st, "count_diff", st.count) if base is not None else st.count
        frame = st.traceback[0]
        where = f"{Path(frame.filename).name}:{frame.lineno}" if by == "lineno" else frame.filename
        print(f"  {size / 2**20:8.2f} {count:9d}  {where}", file=sys.stderr)


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    rss_at = {"imported": round(rss_bytes() / 2**20, 1)}
    if args.tracemalloc:
        tracemalloc.start()
    if "pool" in args.what_if:
        service_app._kube_client = _unpooled_client  # type: ignore[assignment]
    ctx = mp.get_context("spawn")
    here, there = ctx.Pipe()
    world = ctx.Process(target=world_main, args=(there, args.targets, args.exporters, args.load))
    world.start()
    loop = asyncio.get_running_loop()
    t_setup = time.perf_counter()
    info = await loop.run_in_executor(None, here.recv)
    print(
        f"world: {args.targets} deployments and pods, {args.exporters} exporters "
        f"({time.perf_counter() - t_setup:.1f}s)",
        file=sys.stderr,
    )
    logs = CountingHandler()
    root = logging.getLogger()
    root.handlers[:] = [logs]
    root.setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "policy.yaml"
        policy.write_text(policy_yaml(args.targets, info["port"]))
        kubeconfig = Path(tmp) / "kubeconfig"
        kubeconfig.write_text(kubeconfig_yaml(info["url"]))
        settings = Settings(
            config=str(policy),
            kubeconfig=str(kubeconfig),
            tick_seconds=args.tick,
            listen="127.0.0.1:0",
            keda_grpc_listen="127.0.0.1:0",
            lease_namespace="default",
            identity="soak-0",
            log_level="warning",
            scrape_seconds=args.scrape_seconds,
            scrape_max_rate=args.scrape_max_rate,
        )
        durations: list[float] = []
        async with open_service(settings) as svc:
            rss_at["service_open"] = round(rss_bytes() / 2**20, 1)
            tick = svc.loop.tick

            async def timed() -> Any:
                t0 = time.perf_counter()
                try:
                    return await tick()
                finally:
                    durations.append(time.perf_counter() - t0)

            svc.loop.tick = timed  # type: ignore[method-assign]
            phases = _time_phases(svc)
            t_start = time.perf_counter()
            runner = await start_http(svc)
            pacer = service_app.pace_gc(svc)  # as run_forever does
            try:
                await asyncio.sleep(args.warmup)
                print(
                    f"warm-up: {len(durations)} ticks, last "
                    f"{durations[-1] * 1000 if durations else float('nan'):.0f} ms, "
                    f"RSS {rss_bytes() / 2**20:.0f} MB",
                    file=sys.stderr,
                )
                rss_at["warm"] = round(rss_bytes() / 2**20, 1)
                traced0 = tracemalloc.take_snapshot() if args.tracemalloc else None
                first = len(durations)
                for values in phases.values():
                    values.clear()
                before = samples(svc, "autoscaler_actuation_writes_total").total()
                fails0 = samples(svc, "autoscaler_actuation_failures_total")
                errors0 = samples(svc, "autoscaler_source_errors_total")
                profile = cProfile.Profile(time.process_time) if args.profile else None
                if profile is not None:
                    profile.enable()
                gc_pauses: list[tuple[int, float]] = []
                gc_started = [0.0]

                def gc_timer(phase_: str, info: dict[str, int]) -> None:
                    if phase_ == "start":
                        gc_started[0] = time.perf_counter()
                    else:
                        gc_pauses.append((info["generation"], time.perf_counter() - gc_started[0]))

                gc.callbacks.append(gc_timer)
                ru0 = resource.getrusage(resource.RUSAGE_SELF)
                t0 = time.perf_counter()
                rss_max = 0
                fresh = total = 0
                next_report = t0 + 60
                last_census: Counter[str] = Counter()
                while (now := time.perf_counter()) < t0 + args.seconds:
                    await asyncio.sleep(min(1.0, t0 + args.seconds - now))
                    rss_max = max(rss_max, rss_bytes())
                    for key in svc.loop.records:
                        last = svc.loop.records.last(key)
                        if last is not None:
                            total += 1
                            fresh += last.decision.signals_ok
                    if time.perf_counter() >= next_report:
                        window = durations[first:]
                        print(
                            f"  {time.perf_counter() - t0:4.0f}s: {len(window)} ticks, "
                            f"p99 {pct(window, 0.99) * 1000:.0f} ms, "
                            f"RSS {rss_bytes() / 2**20:.0f} MB",
                            file=sys.stderr,
                        )
                        next_report += 60
                        if args.census:
                            census = Counter(type(o).__name__ for o in gc.get_objects())
                            grown = census - last_census if last_census else Counter()
                            last_census = census
                            print(f"    objects grown: {grown.most_common(8)}", file=sys.stderr)
                wall = time.perf_counter() - t0
                ru1 = resource.getrusage(resource.RUSAGE_SELF)
                rss_at["end"] = round(rss_bytes() / 2**20, 1)
                heap = {**malloc_stats(), **smaps()}
                if traced0 is not None:
                    traced1 = tracemalloc.take_snapshot()
                    _top(traced1, None, args.tracemalloc)
                    _top(traced1, None, args.tracemalloc, by="filename")
                    _top(traced1, traced0, args.tracemalloc)
                    current, peak = tracemalloc.get_traced_memory()
                    print(
                        f"tracemalloc: {current / 2**20:.1f} MB traced, peak {peak / 2**20:.1f}",
                        file=sys.stderr,
                    )
                gc.callbacks.remove(gc_timer)
                if profile is not None:
                    profile.disable()
                    profile.dump_stats(args.profile)
                    stats = pstats.Stats(profile, stream=sys.stderr)
                    stats.sort_stats("tottime").print_stats(25)
                window = durations[first:]
                writes = samples(svc, "autoscaler_actuation_writes_total").total() - before
                fails = samples(svc, "autoscaler_actuation_failures_total")
                fails.subtract(fails0)
                errors = samples(svc, "autoscaler_source_errors_total")
                errors.subtract(errors0)
                targets = len(svc.engine.targets)
                skipped = getattr(svc.actuators["deployment"], "skipped", 0)
                svc_scrape_interval = svc.scrape.effective_interval
            finally:
                await runner.cleanup()
                pacer.release()
            run_seconds = time.perf_counter() - t_start
    here.send("stop")
    world_stats = await loop.run_in_executor(None, here.recv)
    world.join(timeout=30)

    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "targets": targets,
        "what_if": sorted(args.what_if),
        "load": args.load,
        "tick_seconds": args.tick,
        "measured_seconds": round(wall, 1),
        "run_seconds": round(run_seconds, 1),
        "ticks": len(window),
        "ticks_due": int(wall / args.tick),
        "tick_ms": {
            "p50": round(statistics.median(window) * 1000, 1),
            "p90": round(pct(window, 0.90) * 1000, 1),
            "p99": round(pct(window, 0.99) * 1000, 1),
            "max": round(max(window) * 1000, 1),
            "mean": round(statistics.fmean(window) * 1000, 1),
        },
        "phase_p50_ms": {k: round(statistics.median(v) * 1000, 1) for k, v in phases.items() if v},
        "cpu": {
            "seconds": round(cpu, 1),
            "fraction_of_one_core": round(cpu / wall, 3),
            "per_tick_ms": round(cpu / max(1, len(window)) * 1000, 1),
        },
        "rss_mb": {
            "max_sampled": round(rss_max / 2**20, 1),
            "peak_ru_maxrss": round(ru1.ru_maxrss / 1024, 1),
            # imported: this process's modules; service_open: + policy parsed, first lists
            # read, targets built; warm: after the warm-up; end: after the measured window
            "at": rss_at,
            "at_end": heap,
        },
        "scrape_seconds": svc_scrape_interval,
        "ticks_missed": svc.loop.missed,
        "target_scrapes": svc.scrape.scrapes,
        "target_scrapes_skipped_busy": svc.scrape.skipped,
        "actuations_skipped_as_watched": skipped,
        "gc": {
            f"gen{g}": {
                "count": len(ps),
                "max_ms": round(max(ps) * 1000, 1),
                "total_ms": round(sum(ps) * 1000, 1),
            }
            for g in (0, 1, 2)
            if (ps := [d for gen, d in gc_pauses if gen == g])
        },
        "gc_full_between_ticks": pacer.full,
        "decisions_with_fresh_signals": round(fresh / max(1, total), 4),
        "actuation_writes": int(writes),
        "actuation_failures": {k: int(v) for k, v in fails.items() if v},
        "source_errors": {k: int(v) for k, v in errors.items() if v},
        "logs": dict(logs.counts),
        "world": world_stats,
        "meets_targets": {
            "p99_tick_under_200ms": pct(window, 0.99) < 0.2,
            "rss_under_150mb": rss_max < 150 * 2**20,
        },
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--targets", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=600.0, help="measured time after warm-up")
    p.add_argument("--tick", type=float, default=1.0, help="the service's tick in seconds")
    p.add_argument("--exporters", type=int, default=8, help="exporter addresses the pods share")
    p.add_argument("--warmup", type=float, default=20.0, help="seconds before measuring")
    p.add_argument("--load", choices=["wave", "steady"], default="wave", help="see above")
    p.add_argument(
        "--scrape-seconds",
        type=float,
        default=None,
        help="the service's scrape_seconds (default: its tick, as the service defaults)",
    )
    p.add_argument(
        "--scrape-max-rate",
        type=float,
        default=Settings.scrape_max_rate,
        help="the service's scrape_max_rate (target scrapes a second; 0: no bound)",
    )
    p.add_argument(
        "--census",
        action="store_true",
        help="print which object types grew, every 60 s (costs a pause: not for timing)",
    )
    p.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="N",
        help="trace allocations from start-up; print the N lines holding and growing most "
        "(slows the service and inflates RSS: not for the figures)",
    )
    p.add_argument("--json", help="write the figures here as JSON")
    p.add_argument("--profile", help="cProfile the measured window into this file")
    p.add_argument(
        "--what-if",
        action="append",
        default=[],
        choices=["pool"],
        help="measure a candidate change (see above); repeatable",
    )
    args = p.parse_args()
    result = asyncio.run(soak(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
