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

    def __init__(self, trace: Trace, key: str, spec: ClusterSpec, seed: int = 0) -> None:
        self.trace = trace
        self.key = key
        self.spec = spec
        rng = np.random.default_rng(seed)
        prefill, work, llm, slots = _service_arrays(trace, spec, rng)
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
        cluster.count_cold_requests(t0, t1)
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
            self._pending.append(
                _scrape(cluster, key, now, running, waiting, ready, self.slots, rps)
            )
            self._arrived_since = 0
        if len(self._pending) > self.lag_ticks:
            status.extend(self._pending.popleft())
        self.last = (replicas, ready, running, waiting)
        self.t = t1
        self.ticks += 1
        return status

    def apply(self, replicas: int) -> None:
        """The decision taken at the current time lands on the cluster model."""
        if not self.primed:
            self.cluster.add_ready(replicas, 0.0)
            self.primed = True
            return
        if replicas != self.last[0]:
            self.scale_events += 1
            self.cluster.scale_to(replicas, self.t)


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
) -> RunResult:
    """Run one policy over one trace; deterministic for a seed (wall-time fields aside)."""
    engine = Engine.from_policy(policy)
    if not engine.targets:
        raise ValueError(
            f"policy {policy.metadata.name!r} names no target (selectors need a "
            "cluster to resolve against)"
        )
    key = sorted(engine.targets)[0]
    engine = Engine([(engine.targets[key].ref, engine.targets[key].config)])
    world = SimWorld(trace, key, spec, seed)
    slo = slo_ttft_s if slo_ttft_s is not None else spec.slo_ttft_seconds
    (first,) = engine.tick(world.base, world.priming())
    if on_decision is not None:
        on_decision(first)
    world.apply(first.replicas)

    timeline = Timeline()
    stride = max(1, int(world.end / world.tick / max(1, timeline_points)))
    started = timer() if timer else 0.0
    next_progress = 0.05
    while not world.done:
        observations = world.advance()
        (decision,) = engine.tick(world.base + world.t, observations)
        if on_decision is not None:
            on_decision(decision)
        world.apply(decision.replicas)
        if (world.ticks - 1) % stride == 0:
            _, ready, running, waiting = world.last
            timeline.t.append(world.t)
            timeline.desired.append(decision.replicas)
            timeline.ready.append(ready)
            timeline.demand.append(float(running + waiting))
        if progress is not None and world.t / world.end >= next_progress:
            progress(world.t / world.end)
            next_progress += 0.05
    wall = (timer() - started) if timer else 0.0
    metrics = summarize(trace, world.cluster, spec, slo, world.end, world.scale_events, wall)
    return RunResult(policy.metadata.name, metrics, world.cluster.ttft, timeline)


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
    cluster: Cluster,
    spec: ClusterSpec,
    slo: float,
    end: float,
    scale_events: int,
    wall: float,
) -> dict[str, Any]:
    ttft = cluster.ttft
    done = ~np.isnan(ttft)
    completed = int(done.sum())
    ok = done & (ttft <= slo + 1e-12)
    replica_s = cluster.replica_seconds(end)
    gpu_s = replica_s * spec.gpus_per_replica
    good_tokens = float((trace.input_tokens[ok] + trace.output_tokens[ok]).sum())
    served = ttft[done]
    n = trace.requests

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
        "mean_replicas": round(replica_s / end, 6) if end > 0 else 0.0,
        "max_replicas": cluster.max_replicas,
        "cold_starts": cluster.cold_starts,
        "cold_start_requests": cluster.cold_start_requests,
        "scale_events": scale_events,
        "goodput_tokens_per_gpu_s": round(good_tokens / gpu_s, 6) if gpu_s > 0 else 0.0,
        "wall_seconds": round(wall, 3),
        "sim_requests_per_s": round(n / wall, 1) if wall > 0 else None,
    }
