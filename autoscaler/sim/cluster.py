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
next begin a request; only the chosen replica's entry changes per request. The per-request loop is
compiled (``autoscaler.sim.kernel``); this class keeps the replica bookkeeping.

The queue is a window [head, upto) over the trace's own arrays (FIFO order is arrival order), so
there is no per-request object.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from autoscaler.sim import kernel
from autoscaler.sim.cluster_config import ClusterSpec

INF = math.inf


@dataclass(slots=True)
class Replica:
    row: int  # its row in the kernel's arrays (rows are reused after a replica retires)
    created: float
    ready_at: float


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
        self._arr = np.ascontiguousarray(arrival, dtype=np.float64)
        self._prefill = np.ascontiguousarray(prefill_s, dtype=np.float64)
        self._work = np.ascontiguousarray(work, dtype=np.float64)  # output tokens or seconds
        self._tin = tokens_in
        self._tout = tokens_out
        self.slots = slots
        self.llm = llm
        self.rng = rng
        self.head = 0  # requests [head, upto) have arrived and not started
        self.upto = 0
        self.ttft = np.full(self.n, np.nan)
        # replicas: Python objects for bookkeeping, arrays for the kernel
        self.active: dict[int, Replica] = {}
        self._free_rows: list[int] = []
        cap = 16
        self._slots = np.zeros((cap, slots))
        self._prefill_free = np.zeros(cap)
        self._busy = np.zeros(cap)
        self._gkey = np.zeros(cap)
        self._grow = np.zeros(cap, dtype=np.int64)
        self._gn = 0
        self._inflight = np.zeros(max(1, self.n))
        self._inn = 0
        self._draining: list[tuple[float, float]] = []  # (created, end) of retired replicas
        # Replicas still starting, by when they become ready, and the count of ready ones, so the
        # per-tick status costs O(changes), not O(replicas).
        self._starting: list[tuple[float, int, Replica]] = []
        self._ready = 0
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

    def _row(self) -> int:
        if self._free_rows:
            return self._free_rows.pop()
        row = len(self.active) + len(self._free_rows)
        cap = self._busy.shape[0]
        if row >= cap:
            grow = cap
            self._slots = np.concatenate([self._slots, np.zeros((grow, self.slots))])
            self._prefill_free = np.concatenate([self._prefill_free, np.zeros(grow)])
            self._busy = np.concatenate([self._busy, np.zeros(grow)])
            self._gkey = np.concatenate([self._gkey, np.zeros(grow)])
            self._grow = np.concatenate([self._grow, np.zeros(grow, dtype=np.int64)])
        return row

    def _create(self, now: float, ready_at: float) -> None:
        row = self._row()
        rep = self.active[row] = Replica(row, now, ready_at)
        if ready_at > now:
            heapq.heappush(self._starting, (ready_at, row, rep))
        else:
            self._ready += 1
        self._slots[row, :] = ready_at
        self._prefill_free[row] = ready_at
        self._busy[row] = ready_at
        self._gn = kernel.gheap_push(self._gkey, self._grow, self._gn, ready_at, row)

    def scale_to(self, n: int, now: float) -> None:
        active = len(self.active)
        if n > active:
            for _ in range(n - active):
                self._create(now, now + self._cold_start())
                self.cold_starts += 1
        elif n < active:
            # Cancel replicas still starting (newest first), then drain the least busy ready ones.
            busy = self._busy
            starting = sorted(
                (r for r in self.active.values() if r.ready_at > now),
                key=lambda r: (-r.ready_at, -r.created, r.row),
            )
            ready = sorted(
                (r for r in self.active.values() if r.ready_at <= now),
                key=lambda r: (busy[r.row], r.created, r.row),
            )
            for r in (starting + ready)[: active - n]:
                del self.active[r.row]
                if r.ready_at <= now:
                    self._ready -= 1
                self._gn = kernel.gheap_remove(self._gkey, self._grow, self._gn, r.row)
                end = now if r.ready_at > now else max(now, float(busy[r.row]))
                self._draining.append((r.created, end))
                self._free_rows.append(r.row)
        self.max_replicas = max(self.max_replicas, len(self.active))

    def advance(self, now: float) -> None:
        """Count replicas that became ready by ``now`` and note the latest measured cold start."""
        starting = self._starting
        active = self.active
        while starting and starting[0][0] <= now:
            ready_at, row, rep = heapq.heappop(starting)
            if active.get(row) is rep:  # not cancelled while starting
                self._ready += 1
                self.last_cold_start_s = ready_at - rep.created

    def status(self, now: float) -> tuple[int, int]:
        """(replicas asked for, replicas ready) at ``now``."""
        self.advance(now)
        return len(self.active), self._ready

    def _first_ready(self) -> float:
        """When the first replica is (or becomes) ready: -inf when one is ready now."""
        if self._ready:
            return -INF
        starting = self._starting
        while starting and self.active.get(starting[0][1]) is not starting[0][2]:
            heapq.heappop(starting)
        return starting[0][0] if starting else INF

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
        arrived = upto - self.upto
        if arrived > 0:
            self.upto = upto
            return arrived
        return 0

    def count_cold_requests(self, t0: float, t1: float) -> None:
        """Arrivals in [t0, t1) that found no ready replica (the activator held them)."""
        self.advance(t0)
        first_ready = self._first_ready()
        if first_ready <= t0:
            return
        cut = min(first_ready, t1)
        lo = int(np.searchsorted(self._arr, t0, side="left"))
        hi = int(np.searchsorted(self._arr, cut, side="left"))
        self.cold_start_requests += max(0, hi - lo)

    def serve(self, t0: float, t1: float) -> None:
        """Start every queued request whose start falls before ``t1``; time out the expired."""
        h0 = self.head
        if h0 >= self.upto:
            return
        h1, self._inn, dropped, gen = kernel.serve(
            t1,
            h0,
            self.upto,
            self._arr,
            self._prefill,
            self._work,
            self.llm,
            self._tpot,
            self.spec.max_queue_seconds,
            self._slots,
            self._prefill_free,
            self._busy,
            self._gkey,
            self._grow,
            self._gn,
            self._inflight,
            self._inn,
            self.ttft,
        )
        if h1 > h0 and self.llm:
            tin = self._tin[h0:h1]
            if dropped:  # timed-out requests were never prefilled: not in the counter
                tin = tin[~np.isnan(self.ttft[h0:h1])]
            self.prompt_tokens += float(tin.sum())
            self.generation_tokens += gen
        self.dropped += dropped
        self.head = h1

    def running(self, now: float) -> int:
        self._inn = kernel.fheap_pop_until(self._inflight, self._inn, now)
        return self._inn

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
