"""Leader election on a Lease: two electors contend on the fake API server, on virtual time.

The driver advances the VirtualClock in small steps and, after each, waits (without sleeping)
until every running elector is parked before its next attempt, then checks the invariant: never
two leaders. Requests go over loopback HTTP to the fake; no real time passes in the logic.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from autoscaler.service.leader import LeaderElector
from autoscaler.testing.clock import VirtualClock
from autoscaler.testing.fake_kube import FakeKube

NS, LEASE = "kserve", "kserve-autoscaler"
L, DEADLINE, RETRY, JITTER = 15.0, 10.0, 2.0, 0.2
POLL = RETRY * (1 + JITTER)  # the longest a follower waits between two reads


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(1_700_000_000.0)


@pytest.fixture
async def kube(clock: VirtualClock) -> AsyncIterator[FakeKube]:
    async with FakeKube(clock=clock) as server:
        yield server


@pytest.fixture
async def api(kube: FakeKube) -> AsyncIterator[ApiClient]:
    async with kube.api_client() as client:
        yield client


class Cluster:
    """Electors sharing one Lease, their tasks, and a virtual-time driver."""

    def __init__(self, api: ApiClient, clock: VirtualClock, kube: FakeKube) -> None:
        self.api, self.clock, self.kube = api, clock, kube
        self.electors: dict[str, LeaderElector] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.became: dict[str, list[float]] = {}  # identity -> times it became leader

    def add(self, identity: str, seed: int) -> LeaderElector:
        e = LeaderElector(
            self.api,
            NS,
            LEASE,
            identity,
            self.clock,
            lease_duration=L,
            renew_deadline=DEADLINE,
            retry_period=RETRY,
            jitter=JITTER,
            rng=random.Random(seed),
        )
        self.electors[identity] = e
        self.became[identity] = []
        return e

    def start(self, identity: str) -> None:
        self.tasks[identity] = asyncio.create_task(self.electors[identity].run())

    async def crash(self, identity: str) -> None:
        task = self.tasks.pop(identity)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def running(self) -> list[LeaderElector]:
        return [self.electors[i] for i in self.tasks]

    def leaders(self) -> list[str]:
        return [i for i, e in self.electors.items() if e.is_leader]

    async def settle(self, *, hung: bool = False) -> None:
        """Every running elector is parked before its next attempt (or, with ``hung``, stuck
        in a request the paused server holds, waiting for its deadline)."""
        now = self.clock.now()
        for e in self.running():

            def quiet(e: LeaderElector = e) -> bool:
                if e.next_attempt_at is not None and e.next_attempt_at > now:
                    return True
                return hung and e.attempt_deadline is not None and e.attempt_deadline > now

            await e.wait_until(quiet)
        if hung:
            in_flight = sum(1 for e in self.running() if e.next_attempt_at is None)
            await self.kube.until(lambda: self.kube.held >= in_flight)

    async def run_for(self, seconds: float, step: float = 0.25, *, hung: bool = False) -> None:
        await self.settle(hung=hung)
        end = self.clock.now() + seconds
        while self.clock.now() < end - 1e-9:
            self.clock.advance(step)
            await self.settle(hung=hung)
            self.check()

    async def run_until(
        self, predicate: Callable[[], bool], limit: float, step: float = 0.25
    ) -> float:
        """Advance until ``predicate()``; returns the clock time it first held."""
        await self.settle()
        end = self.clock.now() + limit
        while not predicate():
            assert self.clock.now() < end, "condition not reached in time"
            self.clock.advance(step)
            await self.settle()
            self.check()
        return self.clock.now()

    def check(self) -> None:
        leaders = self.leaders()
        assert len(leaders) <= 1, f"two leaders at {self.clock.now()}: {leaders}"
        for identity in leaders:
            if not self.became[identity] or self.became[identity][-1] < 0:
                self.became[identity].append(self.clock.now())
        for identity, e in self.electors.items():
            if not e.is_leader and self.became[identity] and self.became[identity][-1] >= 0:
                self.became[identity].append(-self.clock.now())  # negative: stopped leading

    async def close(self) -> None:
        for identity in list(self.tasks):
            await self.crash(identity)


@pytest.fixture
async def cluster(api: ApiClient, clock: VirtualClock, kube: FakeKube) -> AsyncIterator[Cluster]:
    c = Cluster(api, clock, kube)
    yield c
    await c.close()


def lease(kube: FakeKube) -> dict[str, object]:
    obj = kube.object("coordination.k8s.io", "leases", NS, LEASE)
    assert obj is not None
    spec = obj["spec"]
    assert isinstance(spec, dict)
    return spec


async def test_exactly_one_leader_at_a_time(cluster: Cluster, kube: FakeKube) -> None:
    a, b = cluster.add("a", 1), cluster.add("b", 2)
    cluster.start("a")
    cluster.start("b")
    await cluster.run_for(120)
    assert len(cluster.leaders()) == 1
    leader = cluster.leaders()[0]
    spec = lease(kube)
    assert spec["holderIdentity"] == leader
    assert spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0  # the first holder created it; nobody took it over
    assert spec["acquireTime"] and spec["renewTime"]
    assert (a.is_leader, b.is_leader).count(True) == 1
    assert a.leading.is_set() == a.is_leader and b.leading.is_set() == b.is_leader
    # The leader renews every retry period; the follower never wrote.
    writes = [r for r in kube.requests if r.verb in ("update", "create") and r.status < 300]
    assert len(writes) >= 120 / RETRY - 2


async def test_takeover_after_a_crash_within_one_lease_duration(
    cluster: Cluster, kube: FakeKube, clock: VirtualClock
) -> None:
    cluster.add("a", 1)
    b = cluster.add("b", 2)
    cluster.start("a")
    await cluster.run_until(lambda: cluster.electors["a"].is_leader, limit=5)
    cluster.start("b")
    await cluster.run_for(30)
    assert cluster.leaders() == ["a"]
    # Crash: cancel without release. Its last renewal was sent at _renewed_at.
    last_renewal = cluster.electors["a"]._renewed_at
    await cluster.crash("a")
    assert lease(kube)["holderIdentity"] == "a"
    took = await cluster.run_until(lambda: b.is_leader, limit=L + 2 * POLL)
    # Never before a full lease duration since the renewal, never later than one follower
    # poll after it (the follower measures expiry from when it saw the lease change).
    assert last_renewal + L <= took <= last_renewal + L + POLL + 0.25
    spec = lease(kube)
    assert spec["holderIdentity"] == "b"
    assert spec["leaseTransitions"] == 1


async def test_clock_skew_does_not_cause_an_early_takeover(
    cluster: Cluster, kube: FakeKube, clock: VirtualClock
) -> None:
    # The holder's renewTime says it renewed long ago (its clock is an hour behind ours); a
    # follower must still wait a full lease duration from when it saw the record change.
    kube.seed(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LEASE, "namespace": NS},
            "spec": {
                "holderIdentity": "elsewhere",
                "leaseDurationSeconds": 15,
                "renewTime": "2023-11-14T21:13:20.000000Z",
                "acquireTime": "2023-11-14T21:00:00.000000Z",
                "leaseTransitions": 3,
            },
        }
    )
    b = cluster.add("b", 2)
    cluster.start("b")
    start = clock.now()
    took = await cluster.run_until(lambda: b.is_leader, limit=L + 2 * POLL)
    assert start + L <= took <= start + L + 0.25
    assert lease(kube)["leaseTransitions"] == 4


async def test_graceful_release_hands_over_at_the_next_attempt(
    cluster: Cluster, kube: FakeKube, clock: VirtualClock
) -> None:
    a = cluster.add("a", 1)
    b = cluster.add("b", 2)
    cluster.start("a")
    await cluster.run_until(lambda: a.is_leader, limit=5)
    cluster.start("b")
    await cluster.run_for(20)
    await cluster.crash("a")  # the service's shutdown: stop the loop, then release
    changed = asyncio.create_task(a.wait_for_change())
    assert await a.release() is True
    assert await changed is False
    assert not a.is_leader and not a.leading.is_set()
    assert lease(kube)["holderIdentity"] == ""
    released = clock.now()
    took = await cluster.run_until(lambda: b.is_leader, limit=L)
    assert took - released <= POLL + 0.25  # not a lease duration: the holder is empty
    assert lease(kube)["holderIdentity"] == "b"
    assert await a.release() is False  # not leading: nothing to release


async def test_api_outage_makes_the_leader_step_down_after_the_renew_deadline(
    cluster: Cluster, kube: FakeKube, clock: VirtualClock
) -> None:
    a, b = cluster.add("a", 1), cluster.add("b", 2)
    cluster.start("a")
    await cluster.run_until(lambda: a.is_leader, limit=5)
    cluster.start("b")
    await cluster.run_for(10)
    assert cluster.leaders() == ["a"]
    last_renewal = a._renewed_at
    changed = asyncio.create_task(a.wait_for_change())
    kube.pause()  # requests hang: neither answers nor errors
    seen_leading_until = clock.now()
    while a.is_leader:
        clock.advance(0.25)
        await cluster.settle(hung=True)
        if a.is_leader:
            seen_leading_until = clock.now()
        assert not b.is_leader
    stepped_down = clock.now()
    assert seen_leading_until < last_renewal + DEADLINE <= stepped_down
    assert stepped_down - (last_renewal + DEADLINE) < 0.25 + 1e-9
    assert await changed is False  # the loop noticed too, not only the property
    assert not a.leading.is_set()
    await cluster.run_for(30, hung=True)  # the outage goes on: nobody leads
    assert cluster.leaders() == []
    kube.resume()
    await cluster.run_until(lambda: len(cluster.leaders()) == 1, limit=L + 2 * POLL)
    await cluster.run_for(20)
    assert len(cluster.leaders()) == 1


async def test_errors_from_the_server_step_down_at_the_deadline_not_before(
    cluster: Cluster, kube: FakeKube, clock: VirtualClock
) -> None:
    a = cluster.add("a", 1)
    cluster.start("a")
    await cluster.run_until(lambda: a.is_leader, limit=5)
    kube.fail_next(1000, 500, resource="leases")
    renewed = a._renewed_at
    await cluster.run_until(lambda: not a.is_leader, limit=DEADLINE + RETRY)
    assert clock.now() >= renewed + DEADLINE
    kube.clear_faults()
    await cluster.run_until(lambda: a.is_leader, limit=3 * RETRY)
    assert lease(kube)["holderIdentity"] == "a"


async def test_a_lost_race_is_a_409_and_the_loser_follows(
    api: ApiClient, clock: VirtualClock, kube: FakeKube
) -> None:
    a = LeaderElector(api, NS, LEASE, "a", clock, rng=random.Random(1))
    b = LeaderElector(api, NS, LEASE, "b", clock, rng=random.Random(2))
    # Both read "absent" and create: one create wins, the other is 409 (AlreadyExists). Neither
    # creates before both have read, so the race happens whatever the loop's interleaving.
    both_read = asyncio.Barrier(2)
    for e in (a, b):

        async def create(now: float, real: Any = e._create) -> Any:
            await both_read.wait()
            return await real(now)

        e._create = create  # type: ignore[method-assign]
    results = await asyncio.gather(a._attempt(), b._attempt())
    assert all(r > 0 for r in results)
    assert [a.is_leader, b.is_leader].count(True) == 1
    assert any(r.status == 409 for r in kube.requests)


async def test_settings_are_checked(api: ApiClient, clock: VirtualClock) -> None:
    with pytest.raises(ValueError, match="renew_deadline < lease_duration"):
        LeaderElector(api, NS, LEASE, "a", clock, lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError, match="identity"):
        LeaderElector(api, NS, LEASE, "", clock)


# --- the service gives the elector a client of its own --------------------------------------


async def test_the_lease_has_its_own_client_and_wins_while_data_traffic_holds_every_connection(
    tmp_path: object,
) -> None:
    from pathlib import Path

    from kubernetes_asyncio.client import CoreV1Api

    from autoscaler.service.app import open_service
    from autoscaler.service.settings import Settings

    assert isinstance(tmp_path, Path)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: autoscaler.kserve.io/v1alpha1\nkind: AutoscalingPolicy\n"
        "metadata: {name: p}\nspec:\n  targets:\n"
        "    - {kind: Deployment, namespace: ml, name: raw, actuation: {engine: deployment},\n"
        "       policy: {name: queue, params: {targetPerReplica: 2}}}\n"
    )
    async with FakeKube(clock=VirtualClock()) as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        settings = Settings(
            config=str(policy),
            kubeconfig=kubeconfig,
            lease_namespace="default",
            identity="solo",
            keda_grpc_listen="",
        )
        async with open_service(settings) as svc:
            assert svc.leader is not None
            assert svc.leader.coord.api_client is svc.lease_api
            assert svc.lease_api is not svc.api
            assert svc.lease_api.rest_client.pool_manager is not svc.api.rest_client.pool_manager
            # Data traffic takes every connection of the data client's pool (100): long watches.
            core = CoreV1Api(svc.api)
            size = svc.api.configuration.connection_pool_maxsize
            watches = [
                asyncio.ensure_future(
                    core.list_namespaced_pod(
                        f"ns-{i}", watch=True, timeout_seconds=3600, _preload_content=False
                    )
                )
                for i in range(size)
            ]
            await kube.until(lambda: kube.watch_count("pods") == size)
            starved = asyncio.ensure_future(core.list_namespaced_pod("ml"))
            elector = asyncio.ensure_future(svc.leader.run())
            try:
                await asyncio.wait_for(svc.leader.leading.wait(), 10)  # real seconds, a bound
                assert svc.leader.is_leader
                assert not starved.done()  # the data client really had no connection left
            finally:
                elector.cancel()
                starved.cancel()
                await asyncio.gather(elector, starved, return_exceptions=True)
                for w in watches:
                    if w.done() and not w.cancelled() and w.exception() is None:
                        w.result().close()
                    w.cancel()
                await asyncio.gather(*watches, return_exceptions=True)
                await svc.close()
