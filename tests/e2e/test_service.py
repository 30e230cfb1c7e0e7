"""The live service end to end on loopback: ``autoscaler run`` against the fake Kubernetes API
server, with a vLLM-shaped metrics exporter whose queue the test sets.

The service is the real composition root (``open_service`` and ``start_http``, what
``run_forever`` runs): a kubeconfig file points kubernetes-asyncio at the fake API server, the
Kubernetes status source watches the Deployment ``ns/model`` and its one pod (Ready, podIP
127.0.0.x), the pod scrape source reads ``vllm:num_requests_waiting`` from the exporter on that
address, the engine runs the ``queue`` policy with its guards, the Deployment actuator writes
the scale subresource (and an Event), leader election holds a Lease, and the HTTP surface
answers on a free port. Everything runs on the real clock (a 0.2 s tick); waits are bounded
polls through ``SystemClock``.

One scenario walks through what the issue asks of the service, in order: scale up within one
tick of the queue crossing the threshold; scale down only after the stabilization window; no
scale to zero while the exporter refuses connections (its errors counted in /metrics), then to
zero once it is back and idle; a bad policy reload keeps the old policy and a good one is
applied; the HTTP endpoints answer; graceful shutdown finishes the tick in flight, releases the
Lease and leaves no task behind. Separate tests run ``autoscaler run --once`` and ``autoscaler
run`` (SIGTERM) as subprocesses, and drive a target from the real Prometheus server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.service.app import Service, open_service, start_http
from autoscaler.service.clock import SystemClock
from autoscaler.service.settings import Settings
from autoscaler.testing.fake_kube import FakeKube
from autoscaler.testing.prometheus_server import (
    PrometheusServer,
    find_prometheus,
    static_scrape_config,
)

pytestmark = pytest.mark.slow

CLOCK = SystemClock()
NS = "ns"
NAME = "model"
KEY = f"{NS}/{NAME}"
LABELS = {"app": NAME}
TICK = 0.2
DOWN_SECONDS = 1.0  # stabilization.downSeconds
IDLE_SECONDS = 1.0  # scaleToZero.idleSeconds (grace 0)
WINDOW = 0.4  # the queue policy's window: empty 0.4 s after the exporter stops answering
LEASE = "kserve-autoscaler-e2e"
IDENTITY = "autoscaler-e2e-0"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
WAIT = 10.0  # bound of every wait for a state the service should reach within a few ticks


def policy_yaml(port: int, *, per_replica: float = 2, prometheus: str | None = None) -> str:
    """One Deployment target on the ``queue`` policy; guards tuned for crisp timings."""
    signals = (
        f"""
      signals:
        scrape: null
        prometheus:
          url: {prometheus}
          timeoutSeconds: 2
          queries:
            - signal: requests_waiting
              query: 'sum(vllm:num_requests_waiting{{job="{NAME}"}})'"""
        if prometheus
        else f"""
      signals:
        scrape: {{port: {port}, presets: [vllm], timeoutSeconds: 1}}"""
    )
    return f"""\
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {{name: e2e}}
spec:
  targets:
    - kind: Deployment
      namespace: {NS}
      name: {NAME}
      policy:
        name: queue
        params: {{targetPerReplica: {per_replica}, windowSeconds: {WINDOW}, aggregation: last}}
      guards:
        minReplicas: 0
        maxReplicas: 10
        restartHoldSeconds: 0
        stabilization: {{upSeconds: 0, downSeconds: {DOWN_SECONDS}}}
        scaleToZero: {{idleSeconds: {IDLE_SECONDS}, graceSeconds: 0}}
        holdWhileScaling: {{enabled: false}}
        fallback: {{maxSignalAgeSeconds: 0.5, mode: hold}}
      actuation: {{engine: deployment}}{signals}
"""


def deployment(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": LABELS},
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.6.3"}]},
            },
        },
    }


# -- the model server's metrics -----------------------------------------------------------------


class Exporter:
    """vLLM's ``/metrics`` on one loopback address and port. ``waiting`` is the queue the test
    sets; ``stop()`` closes the socket (the address then refuses connections) and ``start()``
    binds the same port again; while ``gate`` is clear, requests wait at the door."""

    def __init__(self, ip: str, waiting: float = 0.0) -> None:
        self.ip = ip
        self.port = 0
        self.waiting = waiting
        self.hits = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.held = asyncio.Event()  # set when a request is waiting at the closed gate
        self._runner: web.AppRunner | None = None

    async def start(self) -> Exporter:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.ip, self.port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        self.hits += 1
        if not self.gate.is_set():
            self.held.set()
            await self.gate.wait()
        return web.Response(text=self.body(), content_type="text/plain", charset="utf-8")

    def body(self) -> str:
        m = f'model_name="{MODEL}"'
        return "\n".join(
            [
                "# HELP vllm:num_requests_running Number of requests in model execution batches.",
                "# TYPE vllm:num_requests_running gauge",
                f"vllm:num_requests_running{{{m}}} {min(self.waiting, 8.0)!r}",
                "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
                "# TYPE vllm:num_requests_waiting gauge",
                f"vllm:num_requests_waiting{{{m}}} {float(self.waiting)!r}",
                "# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.",
                "# TYPE vllm:gpu_cache_usage_perc gauge",
                f"vllm:gpu_cache_usage_perc{{{m}}} 0.25",
                "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
                "# TYPE vllm:prompt_tokens_total counter",
                f"vllm:prompt_tokens_total{{{m}}} {1000.0 + self.hits}",
                "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
                "# TYPE vllm:generation_tokens_total counter",
                f"vllm:generation_tokens_total{{{m}}} {500.0 + self.hits}",
                "",
            ]
        )


# -- waiting and reading --------------------------------------------------------------------------


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]],
    what: str,
    timeout: float = WAIT,
    every: Callable[[], None] | None = None,
) -> float:
    """Poll ``predicate`` every 50 ms (real time, bounded); returns the clock when it held."""
    deadline = CLOCK.now() + timeout
    while True:
        if every is not None:
            every()
        got = predicate()
        if not isinstance(got, bool):
            got = await got
        if got:
            return CLOCK.now()
        if CLOCK.now() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await CLOCK.sleep(0.05)


async def hold(seconds: float, every: Callable[[], None] | None = None) -> None:
    """Let the service run for ``seconds`` of real time (a bounded wait)."""
    end = CLOCK.now() + seconds
    while CLOCK.now() < end:
        if every is not None:
            every()
        await CLOCK.sleep(0.05)


class Trail:
    """Every decision record of the target, in order: the loop keeps only the last 50, so the
    test drains them as it polls (each wait calls ``sync``)."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.records: list[dict[str, Any]] = []

    def sync(self) -> None:
        last = self.records[-1]["ts"] if self.records else 0.0
        held = list(self.svc.loop.records.get(KEY, ()))
        # A write that was still in flight at its tick is recorded pending and its outcome
        # filled in when it lands: take the landed version of the records we hold.
        landed = {r["ts"]: r for r in held if not r["actuation"]["pending"]}
        for i, r in enumerate(self.records):
            if r["actuation"]["pending"] and r["ts"] in landed:
                self.records[i] = landed[r["ts"]]
        self.records.extend(r for r in held if r["ts"] > last)

    def since(self, t: float) -> list[dict[str, Any]]:
        self.sync()
        return [r for r in self.records if r["ts"] > t]

    async def decided(self, t: float, replicas: int) -> list[dict[str, Any]]:
        """The records since ``t`` once one of them decided ``replicas`` (a tick records its
        decision after the write and its Event, so the fake may see the write first)."""

        def landed() -> bool:
            first = next((r for r in self.since(t) if r["replicas"] == replicas), None)
            return first is not None and not first["actuation"]["pending"]

        await eventually(landed, f"a record of {replicas} replicas, its write landed")
        return self.since(t)


def spec_replicas(kube: FakeKube) -> int:
    obj = kube.object("apps", "deployments", NS, NAME)
    assert obj is not None
    return int(obj["spec"]["replicas"])


def scale_writes(kube: FakeKube) -> list[int]:
    """Every replica count written to the Deployment's scale subresource, in order."""
    return [
        int(r.body["spec"]["replicas"])
        for r in kube.requests
        if r.method == "PATCH" and r.path.endswith(f"/deployments/{NAME}/scale") and r.status == 200
    ]


def lease_holder(kube: FakeKube) -> str | None:
    lease = kube.object("coordination.k8s.io", "leases", "default", LEASE)
    return None if lease is None else str(lease["spec"].get("holderIdentity") or "")


async def get(base: str, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(base + path) as r:
        return r.status, await r.text()


async def metric(base: str, name: str, **labels: str) -> float:
    """One sample of the service's /metrics (0 when the series is not there yet)."""
    _, text = await get(base, "/metrics")
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


async def metric_is(value: float, base: str, name: str, **labels: str) -> bool:
    return await metric(base, name, **labels) == value


# -- fixtures -----------------------------------------------------------------------------------


class World:
    def __init__(self, kube: FakeKube, exporter: Exporter, tmp: Path) -> None:
        self.kube = kube
        self.exporter = exporter
        self.policy = tmp / "policy.yaml"
        self.kubeconfig = tmp / "kubeconfig"
        self.policy.write_text(policy_yaml(exporter.port))
        kube.write_kubeconfig(self.kubeconfig, namespace="default")

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "config": str(self.policy),
            "kubeconfig": str(self.kubeconfig),
            "tick_seconds": TICK,
            # Pods are scraped in the background, staggered; a quarter tick keeps "within one
            # tick of the signal" (the service's default is one scrape per tick).
            "scrape_seconds": TICK / 4,
            "listen": "127.0.0.1:0",
            "keda_grpc_listen": "127.0.0.1:0",
            "lease_name": LEASE,
            "lease_namespace": "default",
            "identity": IDENTITY,
            "source_deadline_seconds": 2.0,
            "actuation_deadline_seconds": 2.0,
            "log_json": False,
        }
        values.update(overrides)
        return Settings(**values)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    exporter = await Exporter("127.0.0.61", waiting=2).start()
    try:
        async with FakeKube(clock=CLOCK) as kube:
            kube.seed(deployment(replicas=1))
            kube.add_pod(NS, "model-7d9f-x2k4q", LABELS)
            kube.set_pod_status(NS, "model-7d9f-x2k4q", ready=True, ip=exporter.ip)
            yield World(kube, exporter, tmp_path)
    finally:
        exporter.gate.set()
        await exporter.stop()


# -- the scenario -------------------------------------------------------------------------------


async def test_the_service_end_to_end(world: World) -> None:
    kube, exporter = world.kube, world.exporter
    before = asyncio.all_tasks()
    async with open_service(world.settings()) as svc:
        # Poll the policy file every 0.1 s with a 0.3 s debounce (2 s and 2 s in production).
        svc.watcher.interval, svc.watcher.debounce = 0.1, 0.3
        runner = await start_http(svc)
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        trail = Trail(svc)
        try:
            await _scenario(svc, base, trail, kube, exporter, world.policy)
        except BaseException:
            await runner.cleanup()
            raise
        await _graceful_shutdown(svc, runner, trail, kube, exporter)
    # The status source's watches are closed (the fake sees the connections go).
    await eventually(lambda: kube.watch_count() == 0, "the watches to close", timeout=2.0)
    # Nothing of the service's is left running (the fake's server side of the connections the
    # service closed ends on its own, within a moment).
    me = asyncio.current_task()

    def leftovers() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() - before if t is not me and not t.done()]

    with contextlib.suppress(AssertionError):
        await eventually(lambda: not leftovers(), "tasks to finish", timeout=2.0)
    assert leftovers() == [], [t.get_coro() for t in leftovers()]


async def _scenario(
    svc: Service, base: str, trail: Trail, kube: FakeKube, exporter: Exporter, policy: Path
) -> None:
    sync = trail.sync
    # Start: the Lease is ours, the pod is scraped, the one replica is right for a queue of 2.
    await eventually(lambda: lease_holder(kube) == IDENTITY, "the Lease", every=sync)
    assert svc.leader is not None
    await eventually(lambda: svc.leader.is_leader, "leadership", every=sync)
    await eventually(
        lambda: bool(trail.records) and trail.records[-1]["inputs"].get("requests_waiting") == 2,
        "a decision on the scraped queue",
        every=sync,
    )
    assert trail.records[-1]["replicas"] == 1
    assert trail.records[-1]["actuation"]["dry_run"] is False  # the leader writes
    assert spec_replicas(kube) == 1
    assert scale_writes(kube) == []

    # 1. Scale up within one tick of the queue crossing the threshold: 6 waiting at 2 per
    # replica is 3 replicas. Only the tick in flight may still have read the old queue.
    exporter.waiting = 6
    t_up = CLOCK.now()
    seen = await eventually(lambda: spec_replicas(kube) == 3, "scale up to 3", every=sync)
    after = await trail.decided(t_up, 3)
    first = next(i for i, r in enumerate(after) if r["replicas"] == 3)
    assert first <= 1, after[: first + 1]
    assert after[first]["inputs"] == {"requests_waiting": 6.0}
    assert after[first]["actuation"]["changes"] == {f"Deployment/{NAME}:spec.replicas": [1, 3]}
    assert seen - t_up < 2 * TICK + 1.0  # and in wall time (generous for a loaded machine)
    assert scale_writes(kube) == [3]
    events = kube.objects("", "events", NS)
    assert [(e["involvedObject"]["kind"], e["involvedObject"]["name"]) for e in events] == [
        ("Deployment", NAME)
    ]
    assert events[0]["type"] == "Normal"
    assert "3" in events[0]["message"]

    # 2. Scale down only after the stabilization window: a queue of 2 wants 1 replica, but the
    # window holds the highest recommendation of the last DOWN_SECONDS.
    exporter.waiting = 2
    t_down = CLOCK.now()
    seen = await eventually(lambda: spec_replicas(kube) == 1, "scale down to 1", every=sync)
    after = await trail.decided(t_down, 1)
    last_high = max(r["ts"] for r in trail.records if r["proposal"] == 3)
    first = next(i for i, r in enumerate(after) if r["replicas"] == 1)
    assert after[first]["ts"] - last_high >= DOWN_SECONDS - 1e-6
    held = [r for r in after[:first] if r["proposal"] == 1]
    assert held, "the window held at least one tick"
    for r in held:
        assert r["replicas"] == 3
        assert [g["guard"] for g in r["guards"]] == ["stabilization"]
    assert seen - t_down < DOWN_SECONDS + 2 * TICK + 1.0  # and not much later
    assert scale_writes(kube) == [3, 1]

    # 3. The queue empties and, before the idle period is over, the exporter goes away (the pod's
    # address refuses connections). Missing data is never zero: the target holds 1 replica for
    # longer than the window, the idle period and the stabilization window together.
    exporter.waiting = 0
    t_idle = CLOCK.now()
    await eventually(lambda: any(r["proposal"] == 0 for r in trail.since(t_idle)), "proposal 0")
    await exporter.stop()
    t_gone = CLOCK.now()
    errors_before = await metric(
        base, "autoscaler_source_errors_total", source="scrape", target=KEY, kind="connection"
    )
    await hold(WINDOW + IDLE_SECONDS + DOWN_SECONDS + 0.6, every=sync)
    outage = trail.since(t_gone)
    assert len(outage) >= 8
    assert all(r["replicas"] == 1 for r in outage), [r["replicas"] for r in outage]
    blind = [r for r in outage if r["proposal"] is None]
    assert len(blind) >= 5
    assert all(not r["signals_ok"] for r in blind)
    assert all(r["guards"][0]["guard"] == "fallback" for r in blind if r["guards"])
    assert spec_replicas(kube) == 1
    assert scale_writes(kube) == [3, 1]
    errors = await metric(
        base, "autoscaler_source_errors_total", source="scrape", target=KEY, kind="connection"
    )
    assert errors - errors_before >= len(blind)
    assert await metric(base, "autoscaler_signals_stale", target=KEY) == 1

    # ... and once the exporter answers again, still idle, the target goes to zero: after the
    # idle period (the idle clock restarted, nobody saw the target idle while it was gone).
    await exporter.start()
    t_back = CLOCK.now()
    seen = await eventually(lambda: spec_replicas(kube) == 0, "scale to zero", every=sync)
    assert seen - t_back >= IDLE_SECONDS
    assert scale_writes(kube) == [3, 1, 0]
    assert await metric(base, "autoscaler_signals_stale", target=KEY) == 0

    # 0 -> 3 as soon as there is a queue again.
    exporter.waiting = 6
    await eventually(lambda: spec_replicas(kube) == 3, "scale from zero", every=sync)

    # 4. A bad policy reload keeps the old policy; a good one is applied.
    exporter.waiting = 4
    await eventually(lambda: spec_replicas(kube) == 2, "scale down to 2", every=sync)
    good = policy.read_text()
    policy.write_text(good.replace("targetPerReplica: 2", "targetPerReplica: -1"))
    await eventually(
        lambda: metric_is(1, base, "autoscaler_config_reloads_total", outcome="rejected"),
        "the bad policy to be rejected",
        every=sync,
    )
    assert await metric(base, "autoscaler_config_problems") == 1
    assert await metric(base, "autoscaler_config_reloads_total", outcome="applied") == 0
    t_bad = CLOCK.now()
    exporter.waiting = 8  # decisions continue, on the old policy: 8 / 2 = 4
    await eventually(lambda: spec_replicas(kube) == 4, "old-policy decisions", every=sync)
    decided = next(r for r in await trail.decided(t_bad, 4) if r["replicas"] == 4)
    assert decided["inputs"] == {"requests_waiting": 8.0}
    assert svc.watcher.last_problems and "targetPerReplica" in str(svc.watcher.last_problems[0])
    policy.write_text(good.replace("targetPerReplica: 2", "targetPerReplica: 1"))
    await eventually(
        lambda: metric_is(1, base, "autoscaler_config_reloads_total", outcome="applied"),
        "the good policy to be applied",
        every=sync,
    )
    await eventually(lambda: spec_replicas(kube) == 8, "new-policy decisions (8 / 1)", every=sync)
    assert await metric(base, "autoscaler_config_problems") == 0
    assert await metric(base, "autoscaler_config_reloads_total", outcome="rejected") == 1
    assert scale_writes(kube) == [3, 1, 0, 3, 2, 4, 8]

    # 5. The HTTP surface.
    status, body = await get(base, "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "alive"})
    status, body = await get(base, "/readyz")
    ready = json.loads(body)
    assert status == 200 and ready["ready"] is True and ready["failing"] == [], ready
    assert ready["ticks"] >= 20
    status, body = await get(base, f"/debug/decisions?target={KEY}&n=3")
    assert status == 200
    records = json.loads(body)[KEY]
    assert len(records) == 3
    assert {"target", "ts", "policy", "inputs", "proposal", "replicas", "guards", "actuation"} <= (
        records[-1].keys()
    )
    assert records[-1]["replicas"] == 8 and records[-1]["policy"] == "queue"
    ns, name = KEY.split("/")
    status, body = await get(base, f"/keda/metrics/{ns}/{name}")
    assert status == 200 and json.loads(body)["desiredReplicas"] == 8  # KEDA's metrics-api
    status, body = await get(base, "/debug/config")
    assert status == 200
    params = json.loads(body)["policy"]["spec"]["targets"][0]["policy"]["params"]
    assert params["targetPerReplica"] == 1  # the policy now in effect
    assert await metric(base, "autoscaler_leader") == 1
    assert await metric(base, "autoscaler_desired_replicas", target=KEY) == 8
    assert await metric(base, "autoscaler_actuation_writes_total", target=KEY) == 7
    assert await metric(base, "autoscaler_tick_duration_seconds_count") >= 20


async def _graceful_shutdown(
    svc: Service, runner: web.AppRunner, trail: Trail, kube: FakeKube, exporter: Exporter
) -> None:
    """What SIGTERM does in ``run_forever``: ``runner.cleanup()``. A write is caught in flight
    (the API server holds every request at its door), the shutdown waits for it to land, and
    only then is the Lease released; no tick starts once the shutdown began."""
    kube.pause()
    exporter.waiting = 10  # 10 / 1: the next decision is 10, its write held at the door
    await eventually(
        lambda: any(r["replicas"] == 10 and r["actuation"]["pending"] for r in trail.records),
        "a write in flight",
        every=trail.sync,
    )
    shutdown = asyncio.create_task(runner.cleanup())
    await hold(0.3)
    ticks = svc.loop.ticks
    assert not shutdown.done()  # waiting for the write in flight
    assert lease_holder(kube) == IDENTITY
    kube.resume()
    await asyncio.wait_for(shutdown, WAIT)
    assert svc.loop.ticks == ticks  # no tick started while the write was landing
    trail.sync()
    assert trail.records[-1]["replicas"] == 10
    assert spec_replicas(kube) == 10
    assert lease_holder(kube) == ""  # released at once, not left to expire
    writes = [
        i
        for i, r in enumerate(kube.requests)
        if r.method in ("PATCH", "PUT") and ("/scale" in r.path or "/leases/" in r.path)
    ]
    last_scale = max(i for i in writes if "/scale" in kube.requests[i].path)
    release = max(i for i in writes if "/leases/" in kube.requests[i].path)
    assert last_scale < release  # the write of the last tick went out before the release


# -- the command line ---------------------------------------------------------------------------


async def _autoscaler(
    *args: str, timeout: float = 30.0, send: signal.Signals | None = None, after: Any = None
) -> tuple[int, str, str]:
    """Run ``python -m autoscaler ARGS`` (bounded); with ``send``, deliver that signal once the
    awaitable ``after`` is done."""
    # KEDA's gRPC scaler would listen on :9090 by default: a free loopback port instead.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "AUTOSCALER_KEDA_GRPC_LISTEN": "127.0.0.1:0"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "autoscaler",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        if send is not None:
            await asyncio.wait_for(after, timeout)
            proc.send_signal(send)
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_run_once_prints_the_decision_records(world: World) -> None:
    world.exporter.waiting = 6
    code, out, err = await _autoscaler(
        "run", "--once", "--config", str(world.policy), "--kubeconfig", str(world.kubeconfig)
    )
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 1, out
    record = json.loads(lines[0])
    assert {
        "target",
        "ts",
        "policy",
        "current",
        "ready",
        "starting",
        "inputs",
        "proposal",
        "replicas",
        "token_rate",
        "token_rate_per_replica",
        "reason",
        "signals_ok",
        "guards",
        "actuation",
    } == record.keys()
    assert record["target"] == KEY
    assert record["inputs"] == {"requests_waiting": 6.0}
    assert (record["current"], record["proposal"], record["replicas"]) == (1, 3, 3)
    assert record["actuation"]["applied"] is True and record["actuation"]["wrote"] is True
    assert spec_replicas(world.kube) == 3  # --once writes (no leader election)
    assert lease_holder(world.kube) is None


async def test_sigterm_stops_the_service_and_releases_the_lease(world: World) -> None:
    world.exporter.waiting = 6
    args = ["run", "--config", str(world.policy), "--kubeconfig", str(world.kubeconfig)]
    args += ["--tick-seconds", str(TICK), "--listen", "127.0.0.1:0", "--identity", IDENTITY]
    args += ["--lease-name", LEASE, "--lease-namespace", "default", "--text-logs"]
    scaled = world.kube.until(
        lambda: spec_replicas(world.kube) == 3 and bool(lease_holder(world.kube))
    )
    code, _, err = await _autoscaler(*args, send=signal.SIGTERM, after=scaled)
    assert code == 0, err
    assert "shutting down" in err
    assert lease_holder(world.kube) == ""
    assert world.kube.watch_count() == 0


# -- the real Prometheus server as the source ---------------------------------------------------


@pytest.mark.skipif(find_prometheus() is None, reason="the prometheus binary is not installed")
async def test_a_target_driven_through_the_real_prometheus(world: World) -> None:
    exporter = world.exporter
    scrape = static_scrape_config(NAME, [f"{exporter.ip}:{exporter.port}"], interval=0.5)
    async with PrometheusServer([scrape]) as prom:
        world.policy.write_text(policy_yaml(exporter.port, prometheus=prom.url))
        async with open_service(world.settings()) as svc:
            runner = await start_http(svc)
            trail = Trail(svc)
            try:
                # Prometheus hands a new target to its scrape loop within ~5 s of starting.
                await eventually(
                    lambda: any(r["inputs"].get("requests_waiting") == 2 for r in trail.since(0)),
                    "the queue through Prometheus",
                    timeout=20,
                )
                assert spec_replicas(world.kube) == 1
                exporter.waiting = 6
                t_up = CLOCK.now()
                seen = await eventually(
                    lambda: spec_replicas(world.kube) == 3, "scale up", every=trail.sync
                )
                # One scrape interval, Prometheus' evaluation, one tick.
                assert seen - t_up < 0.5 + 1.0 + 2 * TICK + 1.0
                first = next(r for r in await trail.decided(t_up, 3) if r["replicas"] == 3)
                assert first["inputs"] == {"requests_waiting": 6.0}
            finally:
                await runner.cleanup()
        assert lease_holder(world.kube) == ""
