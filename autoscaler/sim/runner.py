"""Replay a trace through a policy: the offline composition root.

The same ``Engine``, policies and guards as the live service run on virtual time. Each tick the
cluster model serves the tick's arrivals, then the signals a live source would scrape (queue depth,
in-flight requests, token counters, replica status, measured cold start) are handed to
``Engine.tick`` (after ``lagSeconds`` when configured), and the decision is applied to the model.
A policy sees only what was observable at the time: it cannot see the future.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autoscaler.config.models import PolicyFile
from autoscaler.core import signals
from autoscaler.core.types import Decision, Observation
from autoscaler.engine import Engine
from autoscaler.policy.builtin.llm import QUEUE_TIME_P95_SECONDS
from autoscaler.sim.cluster import Cluster
from autoscaler.sim.cluster_config import ClusterSpec
from autoscaler.sim.traces import Trace

TIMER = Callable[[], float]


@dataclass
class Timeline:
    """Down-sampled per-tick series for plots (at most ``limit`` points)."""

    t: list[float] = field(default_factory=list)
    desired: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    demand: list[float] = field(default_factory=list)


@dataclass
class RunResult:
    policy: str
    metrics: dict[str, Any]
    ttft: np.ndarray  # per request, NaN when dropped (a quantile sample after compact())
    timeline: Timeline

    def compact(self, points: int = 2000) -> None:
        """Replace the per-request TTFTs by an evenly spaced sample of their sorted values
        (dropped requests sort last, as NaN), enough for a CDF plot."""
        n = self.ttft.shape[0]
        if n <= points:
            return
        ordered = np.sort(np.where(np.isnan(self.ttft), np.inf, self.ttft))
        sample = ordered[np.linspace(0, n - 1, points).round().astype(np.int64)]
        self.ttft = np.where(np.isinf(sample), np.nan, sample)


def _service_arrays(
    trace: Trace, spec: ClusterSpec, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, bool, int]:
    """(prefill seconds, work, llm mode, slots per replica) for every request."""
    has_tokens = bool(trace.requests and (trace.input_tokens.any() or trace.output_tokens.any()))
    llm = spec.mode == "llm" or (spec.mode == "auto" and has_tokens and trace.service_s is None)
    n = trace.requests
    if llm:
        cap = spec.llm
        prefill = trace.input_tokens / cap.prefill_tokens_per_second
        work = trace.output_tokens.astype(np.float64)
        mean_tokens = float((trace.input_tokens + trace.output_tokens).mean()) if n else 1.0
        slots = max(1, min(cap.max_num_seqs, int(cap.kv_cache_tokens // max(mean_tokens, 1.0))))
        return prefill, work, True, slots
    svc = spec.service
    if trace.service_s is not None:
        work = trace.service_s / svc.speedup
    elif svc.distribution == "deterministic":
        work = np.full(n, svc.mean_seconds)
    elif svc.distribution == "exponential":
        work = rng.exponential(svc.mean_seconds, n)
    else:
        sigma2 = math.log1p(svc.cv * svc.cv)
        work = rng.lognormal(math.log(svc.mean_seconds) - sigma2 / 2, math.sqrt(sigma2), n)
    return np.zeros(n), np.asarray(work, dtype=np.float64), False, svc.concurrency


class SimWorld:
    """The cluster model plus the signal path, stepped one tick at a time.

    ``simulate`` drives it with the engine directly; the parity test drives the very same world
    through the live control loop (a source that calls ``advance`` and an actuator that calls
    ``apply``), and both must produce the same decision records.
    """

    def __init__(
        self,
        trace: Trace,
        key: str,
        spec: ClusterSpec,
        seed: int = 0,
        measure_from: float = 0.0,
    ) -> None:
        self.trace = trace
        self.key = key
        self.spec = spec
        rng = np.random.default_rng(seed)
        prefill, work, llm, slots = _service_arrays(trace, spec, rng)
        self.prefill_s = prefill
        self.slots = slots
        self.cluster = Cluster(
            spec,
            trace.arrival_s,
            prefill,
            work,
            trace.input_tokens,
            trace.output_tokens,
            slots,
            llm,
            rng,
        )
        self.tick = spec.signals.tick_seconds
        self.lag_ticks = math.ceil(spec.signals.lag_seconds / self.tick - 1e-9)
        self.scrape_every = spec.signals.scrape_every
        self.base = trace.start_epoch
        last_arrival = float(trace.arrival_s[-1]) if trace.requests else 0.0
        self.end = (math.floor(last_arrival / self.tick) + 1) * self.tick + spec.max_queue_seconds
        self.t = 0.0
        self.ticks = 0
        self.primed = False
        self.scale_events = 0
        self.last: tuple[int, int, int, int] = (0, 0, 0, 0)  # replicas, ready, running, waiting
        self._pending: deque[list[Observation]] = deque()
        self._arrived_since = 0
        # The measurement window [measure_from, end]: counters as they stood when it opened, and
        # the most replicas that existed inside it (see ``window_counts``).
        self.measure_from = measure_from
        self._before: tuple[int, int, int] = (0, 0, 0)  # cold-start requests, cold starts, events
        self._window_max = 0
        # TTFT p95 as vLLM's histogram reports it per scrape: requests whose first token came
        # since the previous scrape. Requests before ``_ttft_from`` are all reported or dropped.
        self._ttft_from = 0
        self._ttft_reported = np.zeros(trace.requests, dtype=np.bool_)

    @property
    def done(self) -> bool:
        return self.t >= self.end

    def priming(self) -> list[Observation]:
        """The status before any load: the first decision picks the warm starting count."""
        n = float(self.spec.initial_replicas)
        return [
            Observation(self.key, signals.REPLICAS, n, self.base),
            Observation(self.key, signals.REPLICAS_READY, n, self.base),
        ]

    def advance(self) -> list[Observation]:
        """Serve the next tick's requests; return what the engine sees at its end."""
        cluster = self.cluster
        t0, t1 = self.t, self.t + self.tick
        arrived = cluster.admit(t1)
        cut = self.measure_from
        if t0 < cut < t1:  # the window opens inside this tick: split the cold-request count
            cluster.count_cold_requests(t0, cut)
            self._before = (cluster.cold_start_requests, *self._before[1:])
            cluster.count_cold_requests(cut, t1)
        else:
            cluster.count_cold_requests(t0, t1)
            if t1 <= cut:
                self._before = (cluster.cold_start_requests, *self._before[1:])
        cluster.serve(t0, t1)
        replicas, ready = cluster.status(t1)
        waiting = cluster.waiting
        running = cluster.running(t1)
        cluster.set_batch(running, ready)
        now = self.base + t1
        key = self.key
        # Replica status comes from the Kubernetes status source (a watch on what the actuator
        # set), not from a scrape: it reaches the engine at once. Only scraped load signals lag.
        # (Lagging it too made guards compare against a stale "current" and the stale-based
        # decisions cancelled replicas still starting, flapping every few ticks.)
        status = [
            Observation(key, signals.REPLICAS, float(replicas), now),
            Observation(key, signals.REPLICAS_READY, float(ready), now),
            Observation(key, signals.REPLICAS_STARTING, float(replicas - ready), now),
        ]
        if cluster.last_cold_start_s is not None:
            status.append(
                Observation(key, signals.COLD_START_SECONDS, cluster.last_cold_start_s, now)
            )
        self._arrived_since += arrived
        if self.ticks % self.scrape_every:
            self._pending.append([])  # no scrape this tick; keep the lag line moving
        else:
            rps = self._arrived_since / (self.tick * self.scrape_every)
            scraped = _scrape(cluster, key, now, running, waiting, ready, self.slots, rps)
            latency = self._ttft_p95(t1) if self.cluster.llm else None
            if latency is not None:
                scraped.append(Observation(key, signals.TTFT_P95_SECONDS, latency[0], now))
                scraped.append(Observation(key, QUEUE_TIME_P95_SECONDS, latency[1], now))
            self._pending.append(scraped)
            self._arrived_since = 0
        if len(self._pending) > self.lag_ticks:
            status.extend(self._pending.popleft())
        self.last = (replicas, ready, running, waiting)
        self.t = t1
        self.ticks += 1
        return status

    def _ttft_p95(self, t: float) -> tuple[float, float] | None:
        """p95 TTFT and p95 queue time (TTFT less the request's own prefill: vLLM's
        request_queue_time) of the requests whose first token came by ``t`` and were not reported
        yet (None when there were none: missing, never zero, as the live histogram quantile)."""
        lo, hi = self._ttft_from, self.cluster.head
        if hi <= lo:
            return None
        ttft = self.cluster.ttft[lo:hi]
        with np.errstate(invalid="ignore"):
            due = (self.trace.arrival_s[lo:hi] + ttft) <= t  # NaN (dropped) compares False
        reported = self._ttft_reported[lo:hi]
        new = due & ~reported
        values = ttft[new]
        queued = values - self.prefill_s[lo:hi][new]
        reported |= due
        settled = reported | np.isnan(ttft)
        self._ttft_from = lo + (int(np.argmin(settled)) if not settled.all() else hi - lo)
        if not values.size:
            return None
        return float(np.percentile(values, 95)), float(np.percentile(queued, 95))

    def apply(self, replicas: int) -> None:
        """The decision taken at the current time lands on the cluster model."""
        if not self.primed:
            self.cluster.add_ready(replicas, 0.0)
            self.primed = True
        elif replicas != self.last[0]:
            self.scale_events += 1
            self.cluster.scale_to(replicas, self.t)
        cluster = self.cluster
        if self.t < self.measure_from:  # decided before the window: not counted in it
            self._before = (cluster.cold_start_requests, cluster.cold_starts, self.scale_events)
        if self.t + self.tick > self.measure_from:  # these replicas exist inside the window
            self._window_max = max(self._window_max, len(cluster.active))

    def window_counts(self) -> tuple[int, int, int, int]:
        """(cold-start requests, replica cold starts, scale events, most replicas) counted in
        ``[measure_from, end]``: a scale decision taken at or after ``measure_from`` counts, one
        taken before does not; the most replicas includes those running when the window opens."""
        cluster = self.cluster
        cold_requests, cold_starts, events = self._before
        return (
            cluster.cold_start_requests - cold_requests,
            cluster.cold_starts - cold_starts,
            self.scale_events - events,
            self._window_max,
        )


def simulate(
    trace: Trace,
    policy: PolicyFile,
    spec: ClusterSpec,
    *,
    seed: int = 0,
    slo_ttft_s: float | None = None,
    timer: TIMER | None = None,
    on_decision: Callable[[Decision], None] | None = None,
    progress: Callable[[float], None] | None = None,
    timeline_points: int = 2000,
    measure_from: float | None = None,
) -> RunResult:
    """Run one policy over one trace; deterministic for a seed (wall-time fields aside).

    ``measure_from`` (seconds on the trace's time axis, as its arrivals) opens a measurement
    window: the whole trace is replayed, so the policy warms up on what came before, but every
    reported figure covers ``[measure_from, end]`` only: GPU-hours of the replicas' time inside
    it, attainment, TTFT percentiles, drops and goodput of the requests arriving at or after it,
    cold-start requests, cold starts and scale events inside it. The per-request TTFTs and the
    timeline returned are the window's too. None (or 0) measures the whole run.
    """
    cut = 0.0 if measure_from is None else float(measure_from)
    if not math.isfinite(cut) or cut < 0:
        raise ValueError(f"measure_from must be a finite time >= 0 s, got {measure_from!r}")
    engine = Engine.from_policy(policy)
    if not engine.targets:
        raise ValueError(
            f"policy {policy.metadata.name!r} names no target (selectors need a "
            "cluster to resolve against)"
        )
    key = sorted(engine.targets)[0]
    engine = Engine([(engine.targets[key].ref, engine.targets[key].config)])
    world = SimWorld(trace, key, spec, seed, measure_from=cut)
    if cut >= world.end:
        raise ValueError(
            f"measure_from ({cut:g} s) is at or after the end of the run ({world.end:g} s)"
        )
    slo = slo_ttft_s if slo_ttft_s is not None else spec.slo_ttft_seconds
    (first,) = engine.tick(world.base, world.priming())
    if on_decision is not None:
        on_decision(first)
    world.apply(first.replicas)

    timeline = Timeline()
    stride = max(1, int((world.end - cut) / world.tick / max(1, timeline_points)))
    started = timer() if timer else 0.0
    next_progress = 0.05
    while not world.done:
        observations = world.advance()
        (decision,) = engine.tick(world.base + world.t, observations)
        if on_decision is not None:
            on_decision(decision)
        world.apply(decision.replicas)
        if world.t >= cut and (world.ticks - 1) % stride == 0:
            _, ready, running, waiting = world.last
            timeline.t.append(world.t)
            timeline.desired.append(decision.replicas)
            timeline.ready.append(ready)
            timeline.demand.append(float(running + waiting))
        if progress is not None and world.t / world.end >= next_progress:
            progress(world.t / world.end)
            next_progress += 0.05
    wall = (timer() - started) if timer else 0.0
    metrics = summarize(trace, world, spec, slo, wall)
    measured = trace.arrival_s >= cut
    ttft = world.cluster.ttft if measured.all() else world.cluster.ttft[measured]
    return RunResult(policy.metadata.name, metrics, ttft, timeline)


def _scrape(
    cluster: Cluster,
    key: str,
    now: float,
    running: int,
    waiting: int,
    ready: int,
    slots: int,
    rps: float,
) -> list[Observation]:
    """The load signals a scrape of the target's pods (and the activator) would return now."""
    return [
        Observation(key, signals.CONCURRENCY, float(running + waiting), now),
        Observation(key, signals.RUNNING, float(running), now),
        Observation(key, signals.WAITING, float(waiting), now),
        Observation(key, signals.RPS, rps, now),
        Observation(key, signals.REQUESTS_TOTAL, float(cluster.upto), now),
        Observation(key, signals.PROMPT_TOKENS_TOTAL, cluster.prompt_tokens, now),
        Observation(key, signals.GENERATION_TOKENS_TOTAL, cluster.generation_tokens, now),
        Observation(
            key, signals.KV_CACHE_USAGE, min(1.0, running / (ready * slots)) if ready else 0.0, now
        ),
    ]


def summarize(
    trace: Trace,
    world: SimWorld,
    spec: ClusterSpec,
    slo: float,
    wall: float,
) -> dict[str, Any]:
    """The run's figures over its measurement window ``[world.measure_from, world.end]``."""
    cluster = world.cluster
    start, end = world.measure_from, world.end
    measured = trace.arrival_s >= start
    ttft = cluster.ttft[measured]
    done = ~np.isnan(ttft)
    completed = int(done.sum())
    ok = done & (ttft <= slo + 1e-12)
    # Replica time inside [start, end]: everything up to end less everything up to start.
    replica_s = cluster.replica_seconds(end) - (cluster.replica_seconds(start) if start else 0.0)
    gpu_s = replica_s * spec.gpus_per_replica
    tokens = trace.input_tokens[measured] + trace.output_tokens[measured]
    good_tokens = float(tokens[ok].sum())
    served = ttft[done]
    n = int(measured.sum())
    cold_requests, cold_starts, scale_events, max_replicas = world.window_counts()
    span = end - start

    def pct(q: float) -> float | None:
        return round(float(np.percentile(served, q)), 6) if completed else None

    return {
        "requests": n,
        "completed": completed,
        "dropped": n - completed,
        "slo_attainment": round(float(ok.sum()) / n, 6) if n else 1.0,
        "ttft_p50_s": pct(50),
        "ttft_p95_s": pct(95),
        "ttft_p99_s": pct(99),
        "gpu_hours": round(gpu_s / 3600.0, 6),
        "replica_hours": round(replica_s / 3600.0, 6),
        "mean_replicas": round(replica_s / span, 6) if span > 0 else 0.0,
        "max_replicas": max_replicas,
        "cold_starts": cold_starts,
        "cold_start_requests": cold_requests,
        "scale_events": scale_events,
        "goodput_tokens_per_gpu_s": round(good_tokens / gpu_s, 6) if gpu_s > 0 else 0.0,
        "wall_seconds": round(wall, 3),
        "sim_requests_per_s": round(trace.requests / wall, 1) if wall > 0 else None,
    }
