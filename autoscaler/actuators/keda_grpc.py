"""KEDA's external-push scaler, served over gRPC from the published decisions.

KEDA's ``external-push`` trigger (``scalerAddress: <host>:<port>``) talks to this server through
the ``externalscaler.ExternalScaler`` service of ``proto/externalscaler.proto``:

    IsActive(ref)        -> result = the target's latest decision wants replicas > 0
    StreamIsActive(ref)  -> pushes the current state when the stream opens (if known and fresh)
                            and every flip after it. KEDA acts on each message at once
                            (``RequestScale(active)``), so 0 -> 1 does not wait for its poll.
    GetMetricSpec(ref)   -> one metric, ``desired-replicas``, targetSizeFloat 1 (targetSize 1)
    GetMetrics(req)      -> metricValueFloat = the decision's replicas (metricValue the same)
    StreamMetricSpec     -> Unimplemented: the target never changes, and KEDA then stays on
                            GetMetricSpec

With an ``AverageValue`` target of 1 the HPA that KEDA builds computes ``ceil(value / 1)``, so it
lands on our number (outside its tolerance band: set ``behavior.*.tolerance: 0`` where the
cluster supports it, see docs/keda.md).

Which target a ScaledObject means: the ``target`` key of the trigger's metadata (KEDA passes
every metadata key except its own as ``scalerMetadata``), as ``namespace/name`` or ``name`` (in
the ScaledObject's namespace); without it, the ScaledObject's own namespace and name.

Missing or stale data is an error, never "inactive" or zero: an unknown target is NOT_FOUND, a
decision older than the board's ``max_age_seconds`` is UNAVAILABLE. KEDA then counts a scaler
failure and applies the ScaledObject's ``fallback`` instead of scaling to zero on our silence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from grpc import aio

from autoscaler.actuators.proto import externalscaler_pb2 as pb
from autoscaler.actuators.proto import externalscaler_pb2_grpc as pb_grpc
from autoscaler.actuators.published import Published, PublishedDecisions

log = logging.getLogger("autoscaler.actuators.keda_grpc")

METRIC_NAME = "desired-replicas"
TARGET_KEY = "target"  # scalerMetadata key naming the target, "namespace/name" or "name"


def target_key(ref: pb.ScaledObjectRef) -> str:
    """The decision key (``namespace/name``) a ScaledObjectRef stands for."""
    named = ref.scalerMetadata.get(TARGET_KEY, "").strip()
    if named:
        return named if "/" in named else f"{ref.namespace}/{named}"
    return f"{ref.namespace}/{ref.name}"


class ExternalScalerService(pb_grpc.ExternalScalerServicer):
    """The ``externalscaler.ExternalScaler`` servicer (grpc.aio) over ``PublishedDecisions``."""

    def __init__(
        self,
        decisions: PublishedDecisions,
        on_activation_query: Callable[[], None] | None = None,
    ) -> None:
        self.decisions = decisions
        self.open_streams = 0
        # Called when KEDA asks whether an inactive target should wake: the service then ticks
        # at once, so a fresh decision answers KEDA's next poll instead of one a tick old.
        self.on_activation_query = on_activation_query

    async def _fresh(self, key: str, context: aio.ServicerContext[Any, Any]) -> Published:
        entry = self.decisions.get(key)
        if entry is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no decision for {key}")
            raise AssertionError("abort raises")  # pragma: no cover
        if self.decisions.is_stale(entry):
            age = self.decisions.age(entry)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"the latest decision for {key} is {age:.0f}s old "
                f"(> {self.decisions.max_age_seconds:.0f}s)",
            )
        return entry

    async def IsActive(
        self, request: pb.ScaledObjectRef, context: aio.ServicerContext[Any, Any]
    ) -> pb.IsActiveResponse:
        entry = await self._fresh(target_key(request), context)
        if not entry.active and self.on_activation_query is not None:
            self.on_activation_query()
        return pb.IsActiveResponse(result=entry.active)

    async def StreamIsActive(
        self, request: pb.ScaledObjectRef, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.IsActiveResponse]:
        key = target_key(request)
        wake = asyncio.Event()
        latest: list[bool] = []  # the newest state seen, at most one element

        def on_publish(new: Published, old: Published | None) -> None:
            if new.key == key:
                latest[:] = [new.active]
                wake.set()

        remove = self.decisions.add_listener(on_publish)
        self.open_streams += 1
        try:
            sent: bool | None = None
            entry = self.decisions.get(key)
            if entry is not None and not self.decisions.is_stale(entry):
                sent = entry.active
                yield pb.IsActiveResponse(result=sent)
            while True:
                await wake.wait()
                wake.clear()
                # Coalesce: several publishes between two sends push only the newest state,
                # and only when it differs from what this stream last told KEDA.
                if latest and latest[0] != sent:
                    sent = latest[0]
                    log.debug("%s: pushing active=%s", key, sent)
                    yield pb.IsActiveResponse(result=sent)
        finally:
            self.open_streams -= 1
            remove()

    async def GetMetricSpec(
        self, request: pb.ScaledObjectRef, context: aio.ServicerContext[Any, Any]
    ) -> pb.GetMetricSpecResponse:
        # Constant, and answered for targets without a decision yet: KEDA asks for it when it
        # builds the HPA, which must not fail because our first tick has not run.
        spec = pb.MetricSpec(metricName=METRIC_NAME, targetSize=1, targetSizeFloat=1.0)
        return pb.GetMetricSpecResponse(metricSpecs=[spec])

    async def GetMetrics(
        self, request: pb.GetMetricsRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.GetMetricsResponse:
        entry = await self._fresh(target_key(request.scaledObjectRef), context)
        replicas = entry.decision.replicas
        value = pb.MetricValue(
            metricName=request.metricName or METRIC_NAME,
            metricValue=int(replicas),
            metricValueFloat=float(replicas),
        )
        return pb.GetMetricsResponse(metricValues=[value])


class ExternalScalerServer:
    """A grpc.aio server for ``ExternalScalerService``.

    ``await start()`` binds ``host:port`` (port 0 picks a free one) and returns the port;
    ``await stop()`` ends open streams and stops. ``credentials`` (``grpc.ssl_server_credentials``)
    serves TLS; KEDA's trigger then needs ``enableTLS: "true"`` and the CA through a
    TriggerAuthentication.
    """

    def __init__(
        self,
        decisions: PublishedDecisions,
        *,
        host: str = "0.0.0.0",
        port: int = 9090,
        credentials: grpc.ServerCredentials | None = None,
        on_activation_query: Callable[[], None] | None = None,
    ) -> None:
        self.service = ExternalScalerService(decisions, on_activation_query)
        self.host = host
        self.port = port
        self.credentials = credentials
        self._server: aio.Server | None = None

    async def start(self) -> int:
        if self._server is not None:
            raise RuntimeError("already started")
        server = aio.server()
        pb_grpc.add_ExternalScalerServicer_to_server(  # type: ignore[no-untyped-call]
            self.service, server
        )
        address = f"{self.host}:{self.port}"
        if self.credentials is None:
            bound = int(server.add_insecure_port(address))
        else:
            bound = int(server.add_secure_port(address, self.credentials))
        await server.start()
        self._server = server
        self.port = bound
        log.info("KEDA external scaler listening on %s:%d", self.host, bound)
        return bound

    async def stop(self, grace: float | None = None) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)

    async def __aenter__(self) -> ExternalScalerServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
