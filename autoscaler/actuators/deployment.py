"""Plain Deployments (a RawDeployment with no autoscaler of its own): ``spec.replicas`` through
the apps/v1 ``scale`` subresource.

Every mode sets replicas = N: with no engine behind the Deployment there is nothing to act
above a floor. The Deployment itself is read first (``get deployments``), for its replicas and
resourceVersion and for its owner: a Deployment controlled by another object (a KServe
InferenceService, say) is refused as ``owned_elsewhere``, because its controller would revert
the count at its next reconcile; drive that object instead (engine ``kserve``). An HPA or KEDA
pointed at the same Deployment would fight this actuator too; that is a configuration error this
actuator cannot see without reading every HPA.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from kubernetes_asyncio.client import ApiClient, AppsV1Api

from autoscaler.actuators.base import Change, Mode, Obj, Plan, Write, WritingActuator
from autoscaler.actuators.calls import MERGE_PATCH_KWARGS, Rejected
from autoscaler.actuators.events import ObjectRef
from autoscaler.core.clock import Clock
from autoscaler.core.types import Decision, TargetRef

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
        self, api: ApiClient, clock: Clock, *, allow_owned: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(api, clock, **kwargs)
        self.allow_owned = allow_owned
        self._apps = AppsV1Api(api)

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
