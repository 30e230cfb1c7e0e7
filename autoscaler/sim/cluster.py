"""A model of one KServe target's serving replicas, driven on virtual time.

Requests wait in one FIFO queue (the activator / least-loaded routing of a real deployment) and
start on the earliest free sequence slot of a ready replica. Starts are committed only up to the
end of the current tick, so capacity added by a decision at the tick boundary serves the queue
from the moment it is ready, as in a real cluster. A request still waiting ``maxQueueSeconds``
after it arrived times out (dropped). Scaled-down replicas stop taking requests, finish their
in-flight work, and are billed until they do; a replica still starting is cancelled at once.

Routing picks the replica that can begin the request soonest: the later of its earliest free
sequence slot and the end of its prefill backlog (prefills share a replica's compute, one after
another), i.e. least outstanding prefill work, as least-request routing does. Each replica keeps a
heap of its slots' free times, and one global heap holds one entry per replica keyed by when it can
next begin a request; only the chosen replica's entry changes per request.

The queue is a window [head, upto) over the trace's own arrays (FIFO order is arrival order), so
there is no per-request object.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from autoscaler.sim.cluster_config import ClusterSpec

INF = math.inf


@dataclass(slots=True)
class Replica:
    rid: int
    created: float
    ready_at: float
    busy_until: float
    prefill_free: float  # the replica's compute does one prefill at a time (FIFO)
    slots: list[float]  # heap of its sequence slots' free times


class Cluster:
    """Replicas, slots and the request queue of one target."""

    def __init__(
        self,
        spec: ClusterSpec,
        arrival: npt.NDArray[np.float64],
        prefill_s: npt.NDArray[np.float64],
        work: npt.NDArray[np.float64],
        tokens_in: npt.NDArray[np.int64],
        tokens_out: npt.NDArray[np.int64],
        slots: int,
        llm: bool,
        rng: np.random.Generator,
    ) -> None:
        self.spec = spec
        self.n = int(arrival.shape[0])
        self._arr = arrival
        self._prefill = prefill_s
        self._work = work  # output tokens (llm) or service seconds (service model)
        self._tin = tokens_in
        self._tout = tokens_out
        self.slots = slots
        self.llm = llm
        self.rng = rng
        # queue: requests [head, upto) have arrived and not started; python-list mirrors of the
        # arrays for that region keep the hot loop off numpy scalars.
        self.head = 0
        self.upto = 0
        self._qa: list[float] = []
        self._qp: list[float] = []
        self._qw: list[float] = []
        self._qbase = 0  # trace index of _qa[0]
        self.ttft = np.full(self.n, np.nan)
        # replicas
        self._next_rid = 0
        self.active: dict[int, Replica] = {}
        self.retired: set[int] = set()
        self._replica_heap: list[tuple[float, int]] = []  # (can next begin a request, rid)
        self._inflight: list[float] = []  # finish times of started requests
        self.billed_seconds = 0.0  # closed replica lifetimes
        self._draining: list[tuple[float, float]] = []  # (created, end) of retired replicas
        # counters
        self.cold_starts = 0
        self.cold_start_requests = 0
        self.dropped = 0
        self.prompt_tokens = 0.0
        self.generation_tokens = 0.0
        self.last_cold_start_s: float | None = None
        self.max_replicas = 0
        self._tpot = spec.llm.tpot_seconds

    # -- replicas ----------------------------------------------------------------------------

    def _cold_start(self) -> float:
        cs = self.spec.cold_start
        if cs.mean_seconds <= 0:
            return 0.0
        if cs.cv <= 0:
            return cs.mean_seconds
        sigma2 = math.log1p(cs.cv * cs.cv)
        mu = math.log(cs.mean_seconds) - sigma2 / 2
        return float(self.rng.lognormal(mu, math.sqrt(sigma2)))

    def add_ready(self, count: int, now: float) -> None:
        """Replicas that are already serving at ``now`` (the initial state of a run)."""
        for _ in range(count):
            self._create(now, now)
        self.max_replicas = max(self.max_replicas, len(self.active))

    def _create(self, now: float, ready_at: float) -> None:
        rid = self._next_rid
        self._next_rid += 1
        self.active[rid] = Replica(rid, now, ready_at, ready_at, ready_at, [ready_at] * self.slots)
        heapq.heappush(self._replica_heap, (ready_at, rid))

    def scale_to(self, n: int, now: float) -> None:
        active = len(self.active)
        if n > active:
            for _ in range(n - active):
                self._create(now, now + self._cold_start())
                self.cold_starts += 1
        elif n < active:
            # Cancel replicas still starting (newest first), then drain the least busy ready ones.
            starting = sorted(
                (r for r in self.active.values() if r.ready_at > now),
                key=lambda r: (-r.ready_at, -r.rid),
            )
            ready = sorted(
                (r for r in self.active.values() if r.ready_at <= now),
                key=lambda r: (r.busy_until, r.rid),
            )
            for r in (starting + ready)[: active - n]:
                del self.active[r.rid]
                self.retired.add(r.rid)
                end = now if r.ready_at > now else max(now, r.busy_until)
                self._draining.append((r.created, end))
        self.max_replicas = max(self.max_replicas, len(self.active))

    def status(self, now: float) -> tuple[int, int]:
        """(replicas asked for, replicas ready) at ``now``."""
        ready = 0
        for r in self.active.values():
            if r.ready_at <= now:
                ready += 1
        return len(self.active), ready

    def note_ready(self, t0: float, t1: float) -> None:
        """Record the cold start of replicas that became ready in (t0, t1]."""
        for r in self.active.values():
            if t0 < r.ready_at <= t1 and r.ready_at > r.created:
                self.last_cold_start_s = r.ready_at - r.created

    def replica_seconds(self, end: float) -> float:
        total = 0.0
        for created, stop in self._draining:
            total += max(0.0, min(stop, end) - created)
        for r in self.active.values():
            total += max(0.0, end - r.created)
        return total

    # -- requests ----------------------------------------------------------------------------

    def admit(self, t1: float) -> int:
        """Requests arriving before ``t1`` join the queue; returns how many arrived."""
        upto = int(np.searchsorted(self._arr, t1, side="left"))
        if upto > self.upto:
            lo = self.upto
            self._qa.extend(self._arr[lo:upto].tolist())
            self._qp.extend(self._prefill[lo:upto].tolist())
            self._qw.extend(self._work[lo:upto].tolist())
            arrived = upto - lo
            self.upto = upto
            return arrived
        return 0

    def count_cold_requests(self, t0: float, t1: float) -> None:
        """Arrivals in [t0, t1) that found no ready replica (the activator held them)."""
        first_ready = min((r.ready_at for r in self.active.values()), default=INF)
        if first_ready <= t0:
            return
        cut = min(first_ready, t1)
        lo = int(np.searchsorted(self._arr, t0, side="left"))
        hi = int(np.searchsorted(self._arr, cut, side="left"))
        self.cold_start_requests += max(0, hi - lo)

    def serve(self, t0: float, t1: float) -> None:
        """Start every queued request whose start falls before ``t1``; time out the expired."""
        heap = self._replica_heap
        retired = self.retired
        inflight = self._inflight
        active = self.active
        timeout = self.spec.max_queue_seconds
        qa, qp, qw = self._qa, self._qp, self._qw
        base = self._qbase
        i = self.head - base
        end = self.upto - base
        out: list[float] = []
        llm = self.llm
        tpot = self._tpot
        pop, push, replace = heapq.heappop, heapq.heappush, heapq.heapreplace
        gen = 0.0
        dropped = 0
        while i < end:
            while heap and heap[0][1] in retired:
                pop(heap)
            a = qa[i]
            if heap:
                f, rid = heap[0]
                start = f if f > a else a
            else:
                start = INF
                rid = -1
            if start >= t1:
                if a + timeout < t1:
                    out.append(math.nan)
                    dropped += 1
                    i += 1
                    continue
                break
            if start - a > timeout:
                out.append(math.nan)
                dropped += 1
                i += 1
                continue
            pre = qp[i]
            w = qw[i]
            rep = active[rid]
            rslots = rep.slots
            if llm:
                # Prefill shares the replica's compute: one at a time, in admission order.
                first_token = start + pre
                rep.prefill_free = first_token
                finish = first_token + w * tpot
            else:
                first_token = start
                finish = start + w
            replace(rslots, finish)
            nxt = rslots[0]
            if llm and rep.prefill_free > nxt:
                nxt = rep.prefill_free
            replace(heap, (nxt, rid))
            push(inflight, finish)
            if finish > rep.busy_until:
                rep.busy_until = finish
            out.append(first_token - a)
            gen += w
            i += 1
        h0 = self.head
        h1 = i + base
        if out:
            self.ttft[h0:h1] = out
            if llm:
                tin = self._tin[h0:h1]
                if dropped:  # timed-out requests were never prefilled: not in the counter
                    tin = tin[~np.isnan(self.ttft[h0:h1])]
                self.prompt_tokens += float(tin.sum())
                self.generation_tokens += gen
        self.dropped += dropped
        self.head = h1
        if i > 65536 and i * 2 > len(qa):
            del qa[:i], qp[:i], qw[:i]
            self._qbase = h1

    def running(self, now: float) -> int:
        inflight = self._inflight
        while inflight and inflight[0] <= now:
            heapq.heappop(inflight)
        return len(inflight)

    @property
    def waiting(self) -> int:
        """Requests that have arrived and not begun prefill (vLLM's num_requests_waiting, plus
        the activator's buffer at zero replicas)."""
        return self.upto - self.head

    def set_batch(self, running: int, ready: int) -> None:
        """Decode speed for the next tick from the current batch size per ready replica."""
        llm = self.spec.llm
        batch = running / ready if ready else 1.0
        self._tpot = llm.tpot_seconds * (1.0 + llm.tpot_slope_per_seq * max(0.0, batch - 1.0))
