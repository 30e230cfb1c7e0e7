"""KEDA: serve the decision as KEDA's signal; write ScaledObjects rarely (hpa-keda.md B.5).

**Serve the signal (the recommended path).** ``KedaActuator.apply`` publishes each decision to
``PublishedDecisions``; two endpoints serve it, and a static ScaledObject points KEDA at one of
them (examples in deploy/examples/, details in docs/keda.md):

- ``MetricsApi``: ``GET /keda/metrics/{namespace}/{name}`` for KEDA's ``metrics-api`` scaler,
  JSON ``{"desiredReplicas": N, "value": <load>, "tokenRate": ..., ...}``. With
  ``valueLocation: desiredReplicas``, ``targetValue: "1"`` and metricType ``AverageValue`` (the
  default) the HPA that KEDA builds computes ``ceil(N / 1) = N``. 404 for a target we do not
  know, 503 when its latest decision is older than the board's ``max_age_seconds``: KEDA counts
  any non-200 as a scaler failure and its ``fallback`` takes over, instead of acting on data
  that stopped moving.
- ``autoscaler.actuators.keda_grpc``: KEDA's ``external-push`` gRPC scaler, for 0 -> 1 without
  waiting for KEDA's poll.

**Rare object writes.** Only on ScaledObjects the policy says we own (``KedaActuation.owned``),
and never on one with an ownerReference to an InferenceService (KServe creates those and
reverts drift at its next reconcile: drive the InferenceService instead, engine ``kserve``) or
to any other controller:

- ``minReplicaCount``/``maxReplicaCount`` from ``KedaActuation.min_replicas``/``max_replicas``
  (the policy's guard bounds, say): written only when they differ from what the object holds
  (KEDA's defaults: unset min is 0, unset max is 100), both in one merge patch so KEDA's
  ``min <= max`` rule sees the pair. The desired pair is checked again only every
  ``resync_seconds`` once it is in place, so a tick costs no API call;
- ``autoscaling.keda.sh/paused-replicas`` (``set_paused_replicas``): the emergency override
  that pins N and makes KEDA delete its HPA; ``None`` clears it.

Each write follows base.py's discipline: JSON merge patch of our fields only, with the
resourceVersion that was read (409 -> re-read and retry), an Event on the ScaledObject, and the
outcome reported back. Dry-run computes the same changes and writes nothing; the endpoints keep
serving (they are reads, and KEDA only reads them when a ScaledObject points at them).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from aiohttp import web

from autoscaler.actuators.base import (
    Change,
    Mode,
    Obj,
    Plan,
    Write,
    WritingActuator,
    dig,
    same,
    with_precondition,
)
from autoscaler.actuators.calls import MERGE_PATCH_KWARGS, Rejected, error_kind
from autoscaler.actuators.events import ObjectRef
from autoscaler.actuators.published import Published, PublishedDecisions
from autoscaler.config.models import KedaBounds
from autoscaler.core.clock import Clock
from autoscaler.core.errors import ActuationError, ConflictError
from autoscaler.core.protocols import ActuationOutcome
from autoscaler.core.types import Decision, TargetRef
from autoscaler.kube import ApiClient, CustomObjectsApi

log = logging.getLogger("autoscaler.actuators.keda")

KEDA_GROUP = "keda.sh"
KEDA_VERSION = "v1alpha1"
SCALED_OBJECTS = "scaledobjects"
SCALED_OBJECT_KIND = "ScaledObject"
PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"
KEDA_DEFAULT_MIN = 0  # GetHPAMinReplicas: unset min is 0 (scale to zero allowed)
KEDA_DEFAULT_MAX = 100  # GetHPAMaxReplicas

REASON_PAUSED = "AutoscalerPausedReplicas"

API_CALLS: tuple[tuple[str, str, str], ...] = (
    ("get", KEDA_GROUP, SCALED_OBJECTS),
    ("patch", KEDA_GROUP, SCALED_OBJECTS),
    ("create", "", "events"),
)


@dataclass(frozen=True, slots=True)
class KedaActuation:
    """A target's KEDA settings. ``scaled_object``: its name (default: the target's name;
    KServe names its ScaledObject after the component, e.g. ``chat-predictor``). ``owned``: the
    policy owns that ScaledObject's bounds; without it nothing is ever written. ``mode`` is
    accepted for symmetry with the other engines; the served signal carries the decision."""

    owned: bool = False
    scaled_object: str | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    dry_run: bool = False
    mode: Mode = "floor"

    @property
    def writes_bounds(self) -> bool:
        return self.owned and (self.min_replicas is not None or self.max_replicas is not None)


def owner_refusal(obj: Mapping[str, Any]) -> str | None:
    """Why we must not write this ScaledObject (another controller owns it), or None."""
    for ref in dig(obj, "metadata", "ownerReferences") or []:
        if not isinstance(ref, Mapping):
            continue
        if ref.get("kind") == "InferenceService":
            return (
                f"owned by InferenceService {ref.get('name')!r} (KServe reverts changes): "
                "drive the InferenceService (engine kserve) or serve the signal"
            )
        if ref.get("controller") is True:
            return f"controlled by {ref.get('kind')} {ref.get('name')!r}, which would revert us"
    return None


def bounds_changes(
    spec: Mapping[str, Any], min_replicas: int | None, max_replicas: int | None
) -> tuple[Change, ...]:
    """The spec changes that bring min/max to the desired values; raises Rejected (invalid)
    for a pair KEDA's validation would refuse."""
    old_min, old_max = spec.get("minReplicaCount"), spec.get("maxReplicaCount")
    eff_min = KEDA_DEFAULT_MIN if old_min is None else old_min
    eff_max = KEDA_DEFAULT_MAX if old_max is None else old_max
    new_min = eff_min if min_replicas is None else min_replicas
    new_max = eff_max if max_replicas is None else max_replicas
    if not (isinstance(new_min, int) and isinstance(new_max, int)):
        raise Rejected("invalid", f"replica counts must be integers ({new_min}, {new_max})")
    if new_min < 0 or new_max < 1 or new_min > new_max:
        raise Rejected(
            "invalid",
            f"minReplicaCount ({new_min}) must be >= 0 and <= maxReplicaCount ({new_max}) >= 1",
        )
    idle = spec.get("idleReplicaCount")
    if isinstance(idle, int) and new_min <= idle:
        raise Rejected(
            "invalid",
            f"idleReplicaCount ({idle}) must stay below minReplicaCount ({new_min})",
        )
    changes = []
    if min_replicas is not None and not same(eff_min, min_replicas):
        changes.append(Change("spec.minReplicaCount", old_min, min_replicas))
    if max_replicas is not None and not same(eff_max, max_replicas):
        changes.append(Change("spec.maxReplicaCount", old_max, max_replicas))
    return tuple(changes)


class KedaActuator(WritingActuator):
    """Publishes decisions for the KEDA endpoints; writes owned ScaledObjects' bounds rarely.

    ``apply(target, decision, actuation)``: ``actuation`` is a ``KedaActuation`` or anything with
    ``dry_run`` (the policy's ``Actuation``: serve only, never write)."""

    name = "keda"
    kinds = ("InferenceService", "Deployment")
    api_calls = API_CALLS

    def __init__(
        self,
        api: ApiClient,
        clock: Clock,
        *,
        decisions: PublishedDecisions,
        resync_seconds: float = 300.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(api, clock, **kwargs)
        self.decisions = decisions
        self.resync_seconds = resync_seconds
        self._co = CustomObjectsApi(api)
        self._settings: dict[str, KedaActuation] = {}
        # target key -> ((min, max), when verified): the bounds known to be in place
        self._in_place: dict[str, tuple[tuple[int | None, int | None], float]] = {}

    async def apply(
        self, target: TargetRef, decision: Decision, actuation: object
    ) -> ActuationOutcome:
        settings = actuation if isinstance(actuation, KedaActuation) else None
        dry = bool(getattr(actuation, "dry_run", False))
        bounds = getattr(actuation, "keda", None)
        if settings is None and isinstance(bounds, KedaBounds):  # the policy's actuation block
            settings = KedaActuation(
                owned=bounds.owned,
                scaled_object=bounds.scaled_object,
                min_replicas=bounds.min_replica_count,
                max_replicas=bounds.max_replica_count,
                dry_run=dry,
            )
        key = target.key
        if target.kind not in self.kinds:
            detail = f"engine keda drives {', '.join(self.kinds)}, not {target.kind}"
            return ActuationOutcome(
                key, applied=False, dry_run=dry, error="unsupported", detail=detail
            )
        self.decisions.publish(decision, dry_run=dry)
        served = f"served to KEDA: desiredReplicas {decision.replicas}"
        if settings is None or not settings.writes_bounds:
            return ActuationOutcome(key, applied=True, dry_run=dry or self.dry_run, detail=served)
        wanted = (settings.min_replicas, settings.max_replicas)
        known = self._in_place.get(key)
        now = self.clock.now()
        if known is not None and known[0] == wanted and now - known[1] < self.resync_seconds:
            return ActuationOutcome(key, applied=True, dry_run=dry or self.dry_run, detail=served)
        self._settings[key] = settings
        try:
            outcome = await super().apply(target, decision, settings)
        finally:
            self._settings.pop(key, None)
        if outcome.applied and not outcome.dry_run:
            self._in_place[key] = (wanted, now)
        else:
            self._in_place.pop(key, None)
        outcome.detail = f"{served}; ScaledObject: {outcome.detail}"
        return outcome

    def forget(self, target: TargetRef) -> None:
        """The target is no longer managed: stop serving its last decision."""
        self.decisions.forget(target.key)
        self._in_place.pop(target.key, None)

    async def _read(self, namespace: str, name: str) -> Obj:
        obj: Obj = await self.caller(
            f"get scaledobjects {namespace}/{name}",
            partial(
                self._co.get_namespaced_custom_object,
                KEDA_GROUP,
                KEDA_VERSION,
                namespace,
                SCALED_OBJECTS,
                name,
                _request_timeout=self.caller.request_timeout,
            ),
        )
        return obj

    async def _patch(self, namespace: str, name: str, body: Obj) -> str:
        out = await self._co.patch_namespaced_custom_object(
            KEDA_GROUP,
            KEDA_VERSION,
            namespace,
            SCALED_OBJECTS,
            name,
            body,
            **MERGE_PATCH_KWARGS,
            _request_timeout=self.caller.request_timeout,
        )
        return str(dig(out, "metadata", "resourceVersion") or "")

    async def plan(self, target: TargetRef, decision: Decision, mode: Mode) -> Plan:
        settings = self._settings[target.key]
        name = settings.scaled_object or target.name
        obj = await self._read(target.namespace, name)
        refusal = owner_refusal(obj)
        if refusal is not None:
            raise Rejected(
                "owned_elsewhere", f"ScaledObject {target.namespace}/{name} is {refusal}"
            )
        changes = bounds_changes(
            dig(obj, "spec") or {}, settings.min_replicas, settings.max_replicas
        )
        plan = Plan()
        if changes:
            patch = {"spec": {c.field.rpartition(".")[2]: c.new for c in changes}}
            ref = ObjectRef.of(obj, f"{KEDA_GROUP}/{KEDA_VERSION}", SCALED_OBJECT_KIND)
            plan.writes.append(
                Write(ref, changes, patch, partial(self._patch, target.namespace, name))
            )
        return plan

    async def set_paused_replicas(
        self,
        namespace: str,
        name: str,
        replicas: int | None,
        *,
        reason: str,
        dry_run: bool = False,
    ) -> ActuationOutcome:
        """Set (``replicas``) or clear (None) ``autoscaling.keda.sh/paused-replicas`` on a
        ScaledObject: the emergency override. KEDA then pins the target at N and deletes its
        HPA (which loses its history) until the annotation goes. ``reason`` goes into the
        Event. Not on ScaledObjects another controller owns."""
        key = f"{namespace}/{name}"
        dry = dry_run or self.dry_run
        if replicas is not None and (isinstance(replicas, bool) or replicas < 0):
            return ActuationOutcome(
                key, applied=False, dry_run=dry, error="invalid", detail=f"replicas {replicas}"
            )
        new = None if replicas is None else str(int(replicas))
        last: ActuationError = ConflictError("no round ran")
        for _round in range(self.caller.retry.conflict_attempts):
            try:
                obj = await self._read(namespace, name)
                refusal = owner_refusal(obj)
                if refusal is not None:
                    raise Rejected("owned_elsewhere", f"ScaledObject {key} is {refusal}")
                old = (dig(obj, "metadata", "annotations") or {}).get(PAUSED_REPLICAS)
                if same(old, new):
                    return ActuationOutcome(
                        key, applied=True, dry_run=dry, detail=f"{PAUSED_REPLICAS} already {old}"
                    )
                changes: dict[str, tuple[object, object]] = {
                    f"ScaledObject/{name}:{PAUSED_REPLICAS}": (old, new)
                }
                what = f"{PAUSED_REPLICAS} {_show(old)} -> {_show(new)}"
                if dry:
                    return ActuationOutcome(
                        key, applied=False, dry_run=True, detail=f"would {what}", changes=changes
                    )
                ref = ObjectRef.of(obj, f"{KEDA_GROUP}/{KEDA_VERSION}", SCALED_OBJECT_KIND)
                body = with_precondition(
                    {"metadata": {"annotations": {PAUSED_REPLICAS: new}}}, ref.resource_version
                )
                await self.caller(
                    f"patch scaledobjects {key}", partial(self._patch, namespace, name, body)
                )
                log.warning("ScaledObject %s: %s (%s)", key, what, reason)
                detail = what
                try:
                    await self.events.record(ref, REASON_PAUSED, f"{what}: {reason}")
                except ActuationError as e:
                    detail += f"; event not recorded ({error_kind(e)})"
                return ActuationOutcome(
                    key, applied=True, wrote=True, detail=detail, changes=changes
                )
            except ConflictError as e:
                self.caller.retried["conflict"] += 1
                last = e
            except ActuationError as e:
                return ActuationOutcome(
                    key, applied=False, dry_run=dry, error=error_kind(e), detail=str(e)
                )
        return ActuationOutcome(key, applied=False, dry_run=dry, error="conflict", detail=str(last))


def _show(value: object) -> str:
    return "unset" if value is None else str(value)


# --- the metrics-api endpoint -------------------------------------------------------------------


def _number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class MetricsApi:
    """``GET /keda/metrics/{namespace}/{name}`` for KEDA's metrics-api scaler.

    200 body (keys in camelCase, as KEDA's GJSON ``valueLocation`` reads them)::

        {"target": "llm/chat", "desiredReplicas": 16, "active": true,
         "value": 88.6, "inputs": {"requests_waiting": 88.6, ...},
         "tokenRate": 35000.0, "tokenRatePerReplica": 2187.5,
         "policy": "max", "signalsOk": true, "dryRun": false, "ts": ..., "ageSeconds": 0.4}

    ``value`` is the load the target scales on: the input named by ``load_signals[target]``,
    else the policy's only input, else null. Use ``valueLocation: desiredReplicas`` with
    ``targetValue: "1"``; ``inputs.<signal>`` exposes raw signals for those who prefer KEDA's
    own arithmetic. 404: unknown target. 503: the decision is stale (KEDA's fallback applies).
    """

    PATH = "/keda/metrics/{namespace}/{name}"

    def __init__(
        self, decisions: PublishedDecisions, *, load_signals: Mapping[str, str] | None = None
    ) -> None:
        self.decisions = decisions
        self.load_signals = dict(load_signals or {})

    def routes(self) -> list[web.RouteDef]:
        return [web.get(self.PATH, self.handle)]

    def app(self) -> web.Application:
        """The endpoint as an application of its own (``app.add_subapp`` needs the prefix
        stripped, so mount ``routes()`` on the main app instead when sharing a port)."""
        app = web.Application()
        app.add_routes(self.routes())
        return app

    def body(self, entry: Published) -> dict[str, Any]:
        d = entry.decision
        load = self.load_signals.get(d.target)
        if load is not None:
            value = d.inputs.get(load)
        else:
            value = next(iter(d.inputs.values())) if len(d.inputs) == 1 else None
        return {
            "target": d.target,
            "desiredReplicas": d.replicas,
            "active": entry.active,
            "value": _number(value),
            "inputs": {k: _number(v) for k, v in sorted(d.inputs.items())},
            "tokenRate": _number(d.token_rate),
            "tokenRatePerReplica": _number(d.token_rate_per_replica),
            "policy": d.policy,
            "signalsOk": d.signals_ok,
            "dryRun": entry.dry_run,
            "ts": d.ts,
            "ageSeconds": round(self.decisions.age(entry), 3),
        }

    async def handle(self, request: web.Request) -> web.Response:
        key = f"{request.match_info['namespace']}/{request.match_info['name']}"
        entry = self.decisions.get(key)
        if entry is None:
            return _error(404, "unknown", key, "no decision for this target")
        if self.decisions.is_stale(entry):
            age = self.decisions.age(entry)
            message = (
                f"the latest decision is {age:.0f}s old "
                f"(> {self.decisions.max_age_seconds:.0f}s); KEDA's fallback applies"
            )
            return _error(503, "stale", key, message, ageSeconds=round(age, 3))
        return web.json_response(self.body(entry))


def _error(
    status: int, kind: Literal["unknown", "stale"], key: str, message: str, **extra: Any
) -> web.Response:
    body = {"error": kind, "target": key, "message": message, **extra}
    return web.json_response(body, status=status)
