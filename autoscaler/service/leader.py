"""Leader election on a ``coordination.k8s.io/v1`` Lease, with client-go's semantics.

Only the leader writes; the other replicas keep computing (in dry-run) so that a takeover starts
with warm windows. One ``LeaderElector`` per process:

    elector = LeaderElector(api, "kserve", "kserve-autoscaler", identity=pod_name, clock=clock)
    task = asyncio.create_task(elector.run())
    ...  elector.is_leader, await elector.leading.wait(), await elector.wait_for_change()
    task.cancel(); await elector.release()          # on shutdown: hand over at once

The Lease record is ``spec.holderIdentity``, ``leaseDurationSeconds``, ``acquireTime``,
``renewTime`` (MicroTime) and ``leaseTransitions``. Every attempt (``retry_period`` apart, a
follower's with up to ``jitter`` x more) reads the Lease and:

- creates it, naming us, when it does not exist;
- takes it when its holder is empty (released) or when it has not changed for its
  ``leaseDurationSeconds`` **measured on our own clock from when we saw it change** (a new
  resourceVersion). The other host's ``renewTime`` is never compared with our clock, so clock
  skew between hosts cannot cause a premature takeover (client-go's ``observedTime``). A new
  holder sets ``acquireTime`` and bumps ``leaseTransitions``;
- renews it (``renewTime``) when we hold it;
- otherwise leaves it alone and waits, waking no later than the moment it would expire.

Every write is a PUT with the resourceVersion we read: of two candidates only one wins, the
other gets 409 and stays a follower.

The leader believes it leads only until ``renew_deadline`` after the *start* of its last
successful renewal. If it cannot renew by then (API outage, timeouts, 5xx) it steps down:
``is_leader`` turns False at that instant even while a request hangs, because every request is
bounded by the same deadline on the injected clock. A follower cannot take over before
``lease_duration`` after it saw that renewal, which is after its start; with
``renew_deadline < lease_duration`` there is never a moment with two leaders (as long as the
clocks tick at the same rate, whatever their offsets). A follower takes over within
``lease_duration`` of seeing the leader's last renewal, so within ``lease_duration`` plus one
follower poll (``retry_period`` x (1 + jitter)) of the leader's last renewal.

``release()`` stops believing first, then clears ``holderIdentity`` (and sets
``leaseDurationSeconds`` to 1, as client-go does) with the resourceVersion it read, so a
follower takes over at its next attempt instead of waiting for expiry. Cancelling ``run()``
does not release: a crash and a cancel look the same to the others.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp

from autoscaler.core.clock import Clock
from autoscaler.kube import ApiClient, CoordinationV1Api

log = logging.getLogger("autoscaler.service.leader")

T = TypeVar("T")
Obj = dict[str, Any]


def micro_time(when: float) -> str:
    """metav1.MicroTime: RFC 3339 in UTC with microseconds."""
    return datetime.fromtimestamp(when, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Result(enum.Enum):
    LEADING = "leading"  # we hold the lease now (created, taken or renewed)
    HELD = "held"  # someone else holds an unexpired lease
    CONFLICT = "conflict"  # lost a race (409): decide again on the next read


class _ApiStatus(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status


class LeaderElector:
    """Leader election on one Lease (see the module docstring for the rules)."""

    def __init__(
        self,
        api_client: ApiClient,
        namespace: str,
        name: str,
        identity: str,
        clock: Clock,
        lease_duration: float = 15,
        renew_deadline: float = 10,
        retry_period: float = 2,
        *,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        if not identity:
            raise ValueError("identity must not be empty")
        if not 0 < retry_period * (1 + jitter) < renew_deadline < lease_duration:
            raise ValueError(
                "need 0 < retry_period x (1 + jitter) < renew_deadline < lease_duration "
                f"(got {retry_period}, {jitter}, {renew_deadline}, {lease_duration})"
            )
        if int(lease_duration) != lease_duration:
            raise ValueError("lease_duration is whole seconds (leaseDurationSeconds)")
        self.coord = CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.clock = clock
        self.lease_duration = float(lease_duration)
        self.renew_deadline = float(renew_deadline)
        self.retry_period = float(retry_period)
        self.jitter = float(jitter)
        self.rng = rng if rng is not None else random.Random()
        #: set while we lead, cleared when we stop (step-down, loss or release)
        self.leading = asyncio.Event()
        #: leadership changes since start (ours, for metrics); the Lease counts holders
        self.transitions = 0
        #: while parked between attempts, the clock time of the next one; None during one
        self.next_attempt_at: float | None = None
        #: while an attempt runs, the clock time it is abandoned at
        self.attempt_deadline: float | None = None
        self._leader = False
        self._renewed_at = 0.0  # start of our last successful acquire or renew
        self._observed_rv: str | None = None
        self._observed_at = 0.0  # our clock when we saw the Lease change
        self._held_for = self.lease_duration  # the observed Lease's leaseDurationSeconds
        self._last_problem: str | None = None
        self._changed = asyncio.Event()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"LeaderElector({self.namespace}/{self.name}, {self.identity})"

    # --- what the rest of the service reads ---

    @property
    def is_leader(self) -> bool:
        """True only while our last renewal is younger than ``renew_deadline``."""
        return self._leader and self.clock.now() < self._renewed_at + self.renew_deadline

    def wait_for_change(self) -> Awaitable[bool]:
        """Wait for the next leadership change after this call (not after the first await);
        the awaitable returns whether we lead after it."""
        event = self._changed

        async def changed() -> bool:
            await event.wait()
            return self._leader

        return changed()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, re-checked whenever the elector's state changes
        (an attempt starts or ends, leadership changes). For tests and readiness probes."""
        if predicate():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, fut))
        try:
            await fut
        finally:
            self._waiters = [(p, f) for p, f in self._waiters if f is not fut]

    def _poke(self) -> None:
        for predicate, fut in list(self._waiters):
            if not fut.done() and predicate():
                fut.set_result(None)

    def _set_leader(self, leader: bool, why: str) -> None:
        if leader == self._leader:
            return
        self._leader = leader
        self.transitions += 1
        if leader:
            self.leading.set()
            log.info("%s: leading (%s)", self, why)
        else:
            self.leading.clear()
            log.warning("%s: stopped leading (%s)", self, why)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # --- the loop ---

    async def run(self) -> None:
        """Contend for the lease forever. Cancel to stop (this does not release)."""
        try:
            while True:
                delay = await self._attempt()
                self.next_attempt_at = self.clock.now() + delay
                self._poke()
                await self.clock.sleep(delay)
                self.next_attempt_at = None
        finally:
            self.next_attempt_at = None
            self.attempt_deadline = None
            self._poke()

    async def _attempt(self) -> float:
        """One try; returns the seconds until the next one."""
        start = self.clock.now()
        if self._leader and start >= self._renewed_at + self.renew_deadline:
            self._set_leader(False, f"no renewal within {self.renew_deadline:g}s")
        deadline = (
            self._renewed_at + self.renew_deadline if self._leader else start + self.renew_deadline
        )
        self.attempt_deadline = deadline
        self._poke()
        try:
            async with self._lock:
                result = await self._bounded(self._try_acquire_or_renew(start), deadline)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            result = None
            kind = _kind(e)
            # The first failure of a kind is a warning; its repeats every retry are not.
            level = logging.DEBUG if kind == self._last_problem else logging.WARNING
            log.log(level, "%s: lease attempt failed: %s", self, _describe(e))
            self._last_problem = kind
        else:
            if self._last_problem is not None:
                log.info("%s: the API server answers again", self)
            self._last_problem = None
        finally:
            self.attempt_deadline = None
        now = self.clock.now()
        if result is _Result.LEADING:
            self._renewed_at = start
            self._set_leader(True, "acquired" if not self._leader else "renewed")
            return self.retry_period
        if result is _Result.HELD:
            self._set_leader(False, "the lease is held by another candidate")
        elif self._leader and now >= self._renewed_at + self.renew_deadline:
            self._set_leader(False, f"no renewal within {self.renew_deadline:g}s")
        if self._leader:
            # A failed renewal: retry at the usual pace, but wake at the deadline to step down.
            return max(0.0, min(self.retry_period, self._renewed_at + self.renew_deadline - now))
        wait = self.retry_period * (1.0 + self.rng.uniform(0.0, self.jitter))
        if result is _Result.HELD:
            expiry = self._observed_at + self._held_for
            wait = min(wait, max(0.0, expiry - now))
        return wait

    async def _bounded(self, coro: Coroutine[Any, Any, T], deadline: float) -> T:
        """Run ``coro`` until ``deadline`` on the injected clock (a hung API server must not
        hold a leader past its renew deadline); raises TimeoutError after it."""
        task = asyncio.ensure_future(coro)
        timer = asyncio.ensure_future(self.clock.sleep(max(0.0, deadline - self.clock.now())))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (task, timer):
                t.cancel()
            await asyncio.gather(task, timer, return_exceptions=True)
        if task.cancelled():
            raise TimeoutError(f"no answer within {deadline - self.clock.now():.1f}s")
        return task.result()

    # --- one attempt (client-go's tryAcquireOrRenew) ---

    async def _try_acquire_or_renew(self, now: float) -> _Result:
        status, lease = await self._call(
            self.coord.read_namespaced_lease, name=self.name, namespace=self.namespace
        )
        if status == 404:
            return await self._create(now)
        if status != 200:
            raise _ApiStatus(status, json.dumps(lease).encode())
        meta = lease.get("metadata") or {}
        spec = lease.get("spec") or {}
        rv = str(meta.get("resourceVersion", ""))
        if rv != self._observed_rv:
            self._observed_rv, self._observed_at = rv, now
        holder = spec.get("holderIdentity") or ""
        self._held_for = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and now < self._observed_at + self._held_for:
            return _Result.HELD
        if holder == self.identity:
            acquired = spec.get("acquireTime") or micro_time(now)
            transitions = int(spec.get("leaseTransitions") or 0)
        else:
            acquired = micro_time(now)
            transitions = int(spec.get("leaseTransitions") or 0) + 1
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace, "resourceVersion": rv},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.lease_duration),
                "acquireTime": acquired,
                "renewTime": micro_time(now),
                "leaseTransitions": transitions,
            },
        }
        status, written = await self._call(
            self.coord.replace_namespaced_lease,
            name=self.name,
            namespace=self.namespace,
            body=body,
        )
        if status == 409:
            return _Result.CONFLICT
        if status != 200:
            raise _ApiStatus(status, json.dumps(written).encode())
        self._observe(written, now)
        if holder != self.identity:
            log.info("%s: took the lease from %r", self, holder or "nobody")
        return _Result.LEADING

    async def _create(self, now: float) -> _Result:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.lease_duration),
                "acquireTime": micro_time(now),
                "renewTime": micro_time(now),
                "leaseTransitions": 0,
            },
        }
        status, created = await self._call(
            self.coord.create_namespaced_lease, namespace=self.namespace, body=body
        )
        if status == 409:  # another candidate created it first
            return _Result.CONFLICT
        if status not in (200, 201):
            raise _ApiStatus(status, json.dumps(created).encode())
        self._observe(created, now)
        return _Result.LEADING

    def _observe(self, lease: Obj, now: float) -> None:
        self._observed_rv = str((lease.get("metadata") or {}).get("resourceVersion", ""))
        self._observed_at = now

    async def _call(self, method: Callable[..., Awaitable[Any]], **kwargs: Any) -> tuple[int, Obj]:
        """One request, raw JSON in and out (no model round trip of the MicroTimes)."""
        resp = await method(**kwargs, _preload_content=False)
        try:
            data = await resp.read()
            status = int(resp.status)
        finally:
            resp.release()
        try:
            body = json.loads(data) if data else {}
        except ValueError:
            body = {"raw": data[:200].decode(errors="replace")}
        return status, body if isinstance(body, dict) else {}

    # --- shutdown ---

    async def release(self) -> bool:
        """Give the lease up now if we hold it (cancel ``run()`` first). Returns whether the
        Lease was cleared. Stops believing it leads before it writes."""
        was_leader = self._leader
        self._set_leader(False, "released")
        if not was_leader:
            return False
        now = self.clock.now()
        try:
            async with self._lock:
                return await self._bounded(self._clear(now), now + self.renew_deadline)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("%s: release failed (the lease expires by itself): %s", self, _describe(e))
            return False

    async def _clear(self, now: float) -> bool:
        status, lease = await self._call(
            self.coord.read_namespaced_lease, name=self.name, namespace=self.namespace
        )
        spec = lease.get("spec") or {}
        if status != 200 or spec.get("holderIdentity") != self.identity:
            return False
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": (lease.get("metadata") or {}).get("resourceVersion"),
            },
            "spec": {
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": micro_time(now),
                "renewTime": micro_time(now),
                "leaseTransitions": int(spec.get("leaseTransitions") or 0),
            },
        }
        status, _ = await self._call(
            self.coord.replace_namespaced_lease, name=self.name, namespace=self.namespace, body=body
        )
        if status == 200:
            log.info("%s: released the lease", self)
            return True
        return False


def _kind(e: BaseException) -> str:
    if isinstance(e, _ApiStatus):
        return f"HTTP {e.status}"
    return type(e).__name__


def _describe(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return f"timeout ({e})"
    if isinstance(e, aiohttp.ClientError | OSError):
        return f"connection: {type(e).__name__}: {e}"
    return f"{type(e).__name__}: {e}"
