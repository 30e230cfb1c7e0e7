"""Plain Deployments (a RawDeployment with no autoscaler of its own): ``spec.replicas`` through
the apps/v1 ``scale`` subresource.

Every mode sets replicas = N: with no engine behind the Deployment there is nothing to act
above a floor. The Deployment itself is read first (``get deployments``), for its replicas and
resourceVersion and for its owner: a Deployment controlled by another object (a KServe
InferenceService, say) is refused as ``owned_elsewhere``, because its controller would revert
the count at its next reconcile; drive that object instead (engine ``kserve``). An HPA or KEDA
pointed at the same Deployment would fight this actuator too; that is a configuration error this
actuator cannot see without reading every HPA.

**Skip unchanged** (``watched``): the status source already watches every Deployment target and
knows its ``spec.replicas``. Given that lookup, a decision equal to the watched count is
``applied`` without any API call (no read through the shared rate limit for the thousand
targets whose count is already right). Anything else (a different count, an unhealthy watch,
a Deployment a controller owns: the lookup answers None) takes the full read -> compare ->
write path on fresh state, so a lagging watch costs at most one needless read, never a write
computed from stale state.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from autoscaler.actuators.base import (
    Change,
    Mode,
    Obj,
    Plan,
    Write,
    WritingActuator,
    settings_of,
)
from autoscaler.actuators.calls import MERGE_PATCH_KWARGS, Rejected
from autoscaler.actuators.events import ObjectRef
from autoscaler.core.clock import Clock
from autoscaler.core.protocols import ActuationOutcome
from autoscaler.core.types import Decision, TargetRef
from autoscaler.kube import ApiClient, AppsV1Api

API_CALLS: tuple[tuple[str, str, str], ...] = (
    ("get", "apps", "deployments"),
    ("patch", "apps", "deployments/scale"),
    ("create", "", "events"),
)


class DeploymentActuator(WritingActuator):
    """``spec.replicas`` of a Deployment through its scale subresource. ``allow_owned`` lets it
    scale a Deployment that another controller owns (when that controller leaves replicas
    alone)."""

    name = "deployment"
    kinds = ("Deployment",)
    api_calls = API_CALLS

    def __init__(
        self,
        api: ApiClient,
        clock: Clock,
        *,
        allow_owned: bool = False,
        watched: Callable[[TargetRef], int | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(api, clock, **kwargs)
        self.allow_owned = allow_owned
        self.watched = watched
        self.skipped = 0  # decisions applied from the watch, without an API call
        self._apps = AppsV1Api(api)

    def settled(
        self, target: TargetRef, decision: Decision, actuation: object
    ) -> ActuationOutcome | None:
        """The outcome when the watch already shows the decided count (no API call, no task
        needed: the control loop asks this first), else None."""
        if self.watched is None or target.kind not in self.kinds:
            return None
        seen = self.watched(target)
        if seen is None or seen != decision.replicas:
            return None
        _, dry = settings_of(actuation)
        self.skipped += 1
        return ActuationOutcome(
            target.key,
            applied=True,
            dry_run=dry or self.dry_run,
            detail=f"already holds the decided values (spec.replicas {seen}, watched)",
        )

    async def apply(
        self, target: TargetRef, decision: Decision, actuation: object
    ) -> ActuationOutcome:
        done = self.settled(target, decision, actuation)
        return done if done is not None else await super().apply(target, decision, actuation)

    async def plan(self, target: TargetRef, decision: Decision, mode: Mode) -> Plan:
        plan = Plan()
        dep = await self.caller(
            f"get deployments {target.key}",
            partial(
                self._apps.read_namespaced_deployment,
                target.name,
                target.namespace,
                _request_timeout=self.caller.request_timeout,
            ),
        )
        meta = dep.metadata
        owner = next((o for o in meta.owner_references or [] if o.controller), None)
        if owner is not None and not self.allow_owned:
            raise Rejected(
                "owned_elsewhere",
                f"{target} is controlled by {owner.kind} {owner.name}, which would revert "
                "its replicas: drive that object instead",
            )
        current = dep.spec.replicas if dep.spec.replicas is not None else 1
        if current != decision.replicas:
            change = Change("spec.replicas", current, decision.replicas)
            ref = ObjectRef(
                "apps/v1",
                "Deployment",
                target.namespace,
                target.name,
                meta.uid or "",
                meta.resource_version or "",
            )
            patch: Obj = {"spec": {"replicas": decision.replicas}}
            send = partial(self._patch_scale, target.namespace, target.name)
            plan.writes.append(Write(ref, (change,), patch, send))
        return plan

    async def _patch_scale(self, namespace: str, name: str, body: Obj) -> str:
        scale = await self._apps.patch_namespaced_deployment_scale(
            name,
            namespace,
            body,
            **MERGE_PATCH_KWARGS,
            _request_timeout=self.caller.request_timeout,
        )
        return str(scale.metadata.resource_version or "")
