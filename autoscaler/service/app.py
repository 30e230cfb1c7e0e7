"""The live composition root: builds clients, sources, engine, actuators, leader election and
the HTTP app, and runs them until SIGTERM.

Nothing here is created at import time; every run (and every test) gets fresh registries,
sessions and clients.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import json
import logging
import random
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from autoscaler.config.models import PolicyFile, Target
from autoscaler.core.protocols import ActuationOutcome, Actuator, Source
from autoscaler.core.types import Decision, TargetRef
from autoscaler.engine import Engine
from autoscaler.kube import ApiClient, Configuration, load_incluster_config, load_kube_config
from autoscaler.service.clock import SystemClock, perf_timer
from autoscaler.service.http import ServiceState, build_http_app
from autoscaler.service.logs import setup_logging
from autoscaler.service.loop import ControlLoop
from autoscaler.service.metrics import ServiceMetrics
from autoscaler.service.reload import PolicyWatcher
from autoscaler.service.selectors import SelectorResolver, expand
from autoscaler.service.settings import Settings
from autoscaler.sources.kube_status import KubeStatusSource
from autoscaler.sources.pods import PodIndex
from autoscaler.sources.prometheus import PrometheusSource, prometheus_configs
from autoscaler.sources.scrape import PodScrapeSource

log = logging.getLogger("autoscaler.app")


def managed_targets(
    doc: PolicyFile, settings: Settings, selectors: SelectorResolver | None = None
) -> list[tuple[TargetRef, Target]]:
    """The concrete targets of the policy within the namespaces this process manages.

    Named targets as they are; each selector target once per object its label selector matched
    in the cluster, as ``selectors`` last resolved it (autoscaler/service/selectors.py: explicit
    names win, a failed listing keeps the last good matches). Without a resolver, selector
    targets are reported and skipped (never guessed).
    """
    if selectors is None:
        return expand(doc, settings.namespaces, None)
    return selectors.pairs(doc, settings.namespaces)


async def _kube_client(settings: Settings) -> ApiClient:
    if settings.kubeconfig:
        cfg = Configuration()
        await load_kube_config(config_file=settings.kubeconfig, client_configuration=cfg)
        return ApiClient(configuration=cfg)
    load_incluster_config()  # type: ignore[no-untyped-call]
    return ApiClient()


class Service:
    """One running service: wiring plus the pieces tests reach into."""

    def __init__(
        self,
        settings: Settings,
        api: ApiClient,
        session: aiohttp.ClientSession,
        lease_api: ApiClient | None = None,
    ) -> None:
        self.settings = settings
        self.api = api
        # Leader election on its own client (and so its own connection pool): renewing the
        # Lease must never queue behind the data traffic (docs/leader-election.md).
        self.lease_api = lease_api if lease_api is not None else api
        self.session = session
        self.clock = SystemClock()
        self.registry = CollectorRegistry()
        self.metrics = ServiceMetrics(self.registry)
        self.watcher = PolicyWatcher(
            Path(settings.config), self.clock, self.metrics, self.reload, interval=2.0, debounce=2.0
        )
        self.policy = self.watcher.initial()
        # Selector targets: resolved by ``refresh_selectors`` (open_service runs it before the
        # first tick), after each reload and every selector_refresh_seconds.
        self.selectors = SelectorResolver(
            api, self.clock, on_failure=self.metrics.record_selector_failure
        )
        pairs = managed_targets(self.policy, settings, self.selectors)
        self.engine = Engine(pairs)
        self.pods = PodIndex()
        self.status = KubeStatusSource(
            api, self.clock, pod_index=self.pods, pod_labels=self._pod_labels(pairs)
        )
        self.scrape = PodScrapeSource(
            session,
            self.pods,
            self._scrape_configs(pairs),
            self.clock,
            interval=settings.scrape_interval,
            max_rate=settings.scrape_max_rate or None,
        )
        self.prometheus = PrometheusSource(
            session, prometheus_configs(pairs), clock=self.clock, rng=random.Random()
        )
        sources: list[Source] = [self.status, self.scrape, self.prometheus]
        from autoscaler.actuators.published import PublishedDecisions

        # The latest decision per target, served to KEDA (HTTP and gRPC) and to the agents.
        self.board = PublishedDecisions(self.clock)
        self.grpc: Any = None
        self.actuators: dict[str, Actuator] = self._build_actuators()
        self.leader: Any = None
        self.http_state: ServiceState | None = None  # what the HTTP handlers read
        if not settings.once:
            from autoscaler.service.leader import LeaderElector

            self.leader = LeaderElector(
                self.lease_api,
                settings.lease_namespace,
                settings.lease_name,
                settings.identity,
                self.clock,
                lease_duration=settings.lease_timings[0],
                renew_deadline=settings.lease_timings[1],
                retry_period=settings.lease_timings[2],
            )
        self.loop = ControlLoop(
            self.engine,
            sources,
            self.actuators,
            self.clock,
            self.metrics,
            source_deadline=settings.source_deadline_seconds,
            actuation_deadline=settings.actuation_deadline_seconds,
            is_leader=self._is_leader,
            dry_run=settings.dry_run,
            timer=perf_timer,
            publishers=[self.tokens],
            # Every target's decision is served to KEDA, whatever engine writes it.
            observers=[self._publish],
        )
        self.rollouts = self._build_rollouts()  # canary rollouts (docs/rollouts.md)

    # -- canary rollouts (docs/rollouts.md): a controller stepped beside the loop ---------------
    def _build_rollouts(self) -> Any:
        from autoscaler.traffic.rollout import (
            RolloutController,
            RolloutMetrics,
            SourceAnalyzer,
            WebhookRunner,
        )

        knative: Any = self.actuators["knative"]  # its ApiCaller and EventRecorder are shared
        return RolloutController(
            self.api,
            self.clock,
            caller=knative.caller,
            events=knative.events,
            analyzer=SourceAnalyzer(
                lambda cfgs: PrometheusSource(self.session, cfgs, clock=self.clock)
            ),
            hooks=WebhookRunner(self.session),
            metrics=RolloutMetrics(self.registry),
            hold=self.engine.set_hold_nonzero,
        )

    def _run_rollouts(self, stop: asyncio.Event) -> asyncio.Task[None] | None:
        """Leader only, every tick; not under --dry-run (the controller has no dry-run mode)."""
        if self.settings.dry_run:
            return None
        targets = lambda: managed_targets(self.policy, self.settings, self.selectors)  # noqa: E731
        run = self.rollouts.run(stop, self.settings.tick_seconds, targets, self._is_leader)
        return asyncio.create_task(run, name="rollouts")

    # -- end of canary rollouts --------------------------------------------------------------

    def _publish(self, decision: Decision, outcome: ActuationOutcome) -> None:
        self.board.publish(decision, dry_run=outcome.dry_run)

    def _is_leader(self) -> bool:
        leading = self.leader is None or bool(self.leader.is_leader)
        self.metrics.leader.set(1 if leading else 0)
        return leading

    @staticmethod
    def _pod_labels(pairs: list[tuple[TargetRef, Target]]) -> dict[str, Mapping[str, str]]:
        return {
            ref.key: dict(t.signals.scrape.pod_labels)
            for ref, t in pairs
            if t.signals.scrape is not None and t.signals.scrape.pod_labels
        }

    @staticmethod
    def _scrape_configs(pairs: list[tuple[TargetRef, Target]]) -> dict[str, Any]:
        return {ref.key: t.signals.scrape for ref, t in pairs if t.signals.scrape is not None}

    def _build_actuators(self) -> dict[str, Actuator]:
        from autoscaler.actuators import ENGINES, ApiCaller, EventRecorder, build_actuator
        from autoscaler.actuators.keda import KedaActuator
        from autoscaler.actuators.tokens import TokenLimitsPublisher

        # One caller and one event recorder: every actuator shares the client-side rate limit.
        caller = ApiCaller(self.clock)
        events = EventRecorder(self.api, caller, self.clock)
        actuators: dict[str, Actuator] = {
            name: build_actuator(
                name,
                self.api,
                self.clock,
                caller=caller,
                events=events,
                # A Deployment whose watched spec.replicas already equals the decision is
                # not read again (docs/actuators.md, "Skip unchanged").
                **self._actuator_options(name),
            )
            for name in ENGINES
        }
        actuators["keda"] = KedaActuator(
            self.api, self.clock, decisions=self.board, caller=caller, events=events
        )
        self.tokens = TokenLimitsPublisher(
            self.api, self.clock, decisions=self.board, caller=caller, events=events
        )
        return actuators

    def _actuator_options(self, engine: str) -> dict[str, Any]:
        return {"watched": self.status.watched_replicas} if engine == "deployment" else {}

    def reload(self, doc: PolicyFile) -> None:
        """A valid new policy: carried state for persisting targets, at the next tick. Its
        selectors are resolved again at once, in the background; until then an unchanged
        selector keeps its matches and a new or changed one has none."""
        self._apply(doc)
        self.selectors.wake()

    async def refresh_selectors(self) -> bool:
        """List the selector targets' matches; a changed set re-applies the policy (the reload
        path: persisting targets keep their state, new matches start fresh, vanished ones go).
        True when it changed."""
        changed = await self.selectors.resolve(self.policy, self.settings.namespaces)
        if changed:
            self._apply(self.policy)
        return changed

    def _apply(self, doc: PolicyFile) -> None:
        pairs = managed_targets(doc, self.settings, self.selectors)
        self.policy = doc
        self.engine.set_targets(pairs)
        keep = {ref.key for ref, _ in pairs}
        for key in self.pods.targets():
            if key not in keep:
                self.pods.discard(key)
        self.scrape.configure(self._scrape_configs(pairs))
        self.prometheus.set_configs(prometheus_configs(pairs))
        self.status.pod_labels = self._pod_labels(pairs)
        if self.http_state is not None:
            self.http_state.policy = doc  # /debug/config shows the policy in effect
        self.loop.wake()

    def http_app(self) -> web.Application:
        state = ServiceState(
            self.loop,
            self.registry,
            self.policy,
            self.settings.config,
            checks={
                "config": lambda: self.policy is not None,
                "kubernetes": lambda: (
                    self.status.stats.get("lists", 0) > 0 or not self.engine.targets
                ),
                "ticked": lambda: self.loop.ticks > 0,
            },
            settings={k: v for k, v in vars(self.settings).items()},
        )
        self.http_state = state
        from autoscaler.actuators.keda import MetricsApi
        from autoscaler.actuators.tokens import TokenLimitsApi

        app = build_http_app(state)
        app.router.add_routes(MetricsApi(self.board).routes())  # KEDA's metrics-api scaler
        app.router.add_routes(TokenLimitsApi(self.board).routes())  # the agents' limits
        app.cleanup_ctx.append(self._background)
        return app

    async def _background(self, app: web.Application) -> AsyncIterator[None]:
        grpc_at = self.settings.grpc_host_port
        if grpc_at is not None:
            from autoscaler.actuators.keda_grpc import ExternalScalerServer

            self.grpc = ExternalScalerServer(
                self.board, host=grpc_at[0], port=grpc_at[1], on_activation_query=self.loop.wake
            )
            await self.grpc.start()
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(self.loop.run(stop, self.settings.tick_seconds), name="loop"),
            asyncio.create_task(self.watcher.run(stop), name="reload"),
            asyncio.create_task(
                self.selectors.run(
                    stop, self.settings.selector_refresh_seconds, self.refresh_selectors
                ),
                name="selectors",
            ),
        ]
        if self.leader is not None:
            tasks.append(asyncio.create_task(self.leader.run(), name="leader"))
        rollouts = self._run_rollouts(stop)  # canary rollouts (docs/rollouts.md)
        yield
        # SIGTERM: finish the tick in flight, release the Lease, close everything.
        stop.set()
        await asyncio.gather(*tasks[:3], return_exceptions=True)
        if rollouts is not None:  # canary rollouts: the step in flight finishes
            await asyncio.gather(rollouts, return_exceptions=True)
        if self.leader is not None:
            tasks[3].cancel()
            await asyncio.gather(tasks[3], return_exceptions=True)
            await self.leader.release()
        if self.grpc is not None:
            await self.grpc.stop(1.0)
        await self.close()

    async def close(self) -> None:
        await self.status.close()
        await self.scrape.close()
        await self.prometheus.close()
        for a in self.actuators.values():
            await a.close()
        await self.tokens.close()


@asynccontextmanager
async def open_service(settings: Settings) -> AsyncIterator[Service]:
    async with AsyncExitStack() as stack:
        api = await _kube_client(settings)
        stack.push_async_callback(api.close)
        lease_api = None if settings.once else await _kube_client(settings)
        if lease_api is not None:
            stack.push_async_callback(lease_api.close)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        svc = Service(settings, api, session, lease_api)
        await svc.refresh_selectors()  # selector targets are known before the first tick
        yield svc


async def run_once(settings: Settings) -> int:
    """One tick (sources, decisions, writes), decision records on stdout as JSON lines."""
    async with open_service(settings) as svc:
        try:
            # The pod scrape reads the pods the status source lists, and the sources of a tick
            # run concurrently: list them first, or the one tick would scrape no pod.
            await svc.status.collect([rt.ref for rt in svc.engine.targets.values()])
            pairs = await svc.loop.tick()
            await svc.loop.drain()  # writes that waited for the rate limit land before exit
        finally:
            await svc.close()
    for d, _ in pairs:
        record = svc.loop.records[d.target][-1]
        sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
    return 0


async def start_http(svc: Service) -> web.AppRunner:
    """Serve the HTTP app on ``settings.listen``; its startup starts the control loop, the
    reload watcher and leader election, and ``runner.cleanup()`` (what SIGTERM triggers) stops
    them gracefully. ``runner.addresses`` holds the bound address (for port 0)."""
    runner = web.AppRunner(svc.http_app(), handle_signals=False)
    await runner.setup()
    host, port = svc.settings.host_port
    await web.TCPSite(runner, host, port).start()
    log.info("serving on %s:%d, %d targets", host, port, len(svc.engine.targets))
    return runner


def _trim_malloc() -> None:
    """Give the C heap's free pages back to the OS (glibc's ``malloc_trim``): ~5 MB of RSS after
    the policy's parse at 1,000 targets. Elsewhere (musl, macOS) there is nothing to do."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


class GcPacer:
    """Garbage collection between ticks instead of inside them.

    At 1,000 targets the heap holds a few million objects (windows, decision history, pods),
    and CPython's automatic collections land wherever allocation happens to trip them: in the
    soak, 14 full collections in 90 s of up to 350 ms each (on a loaded machine), and young ones
    adding ~4 % of the wall time, all inside ticks. ``take_over`` collects what start-up left
    (parsing the policy peaks at ~30 MB of YAML nodes), freezes every object alive then out of
    the collector's sight (``gc.freeze``), and turns automatic collection off; the control loop
    then calls the pacer after every tick: a young collection (generations 0 and 1) each time,
    a full one every ``full_every`` seconds. Reference counting still frees everything that is
    not in a cycle at once; cycles wait at most one tick. ``release`` turns it back on.
    """

    def __init__(self, clock: SystemClock, full_every: float = 60.0) -> None:
        self.clock = clock
        self.full_every = full_every
        self._last_full = clock.now()
        self.full = 0  # full collections run

    def take_over(self) -> None:
        gc.collect()
        _trim_malloc()
        gc.freeze()
        gc.disable()

    def release(self) -> None:
        gc.enable()

    def __call__(self) -> None:
        now = self.clock.now()
        if now - self._last_full >= self.full_every:
            self._last_full = now
            self.full += 1
            gc.collect(2)
        else:
            gc.collect(1)


def pace_gc(svc: Service) -> GcPacer:
    """Hand garbage collection to the control loop (see ``GcPacer``); what ``run_forever``
    does once the service is up."""
    pacer = GcPacer(svc.clock)
    pacer.take_over()
    svc.loop.between_ticks.append(pacer)
    return pacer


async def run_forever(settings: Settings) -> int:
    async with open_service(settings) as svc:
        runner = await start_http(svc)
        pacer = pace_gc(svc)
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopped.set)
        await stopped.wait()
        log.info("shutting down")
        try:
            await runner.cleanup()
        finally:
            pacer.release()
    return 0


def main(settings: Settings) -> int:
    setup_logging(settings.log_level, settings.log_json)
    return asyncio.run(run_once(settings) if settings.once else run_forever(settings))
