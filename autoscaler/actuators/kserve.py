"""KServe InferenceServices in raw deployment mode ("RawDeployment", "Standard"): the
predictor's ``minReplicas``/``maxReplicas`` (hpa-keda.md Part C).

KServe turns those fields into the HPA or the KEDA ScaledObject it creates and owns, and
overwrites any drift on those objects at its next reconcile, so the InferenceService is the
knob; this actuator never writes an HPA or a ScaledObject. In raw mode a change of these fields
does not roll the pods (no revisions). A serverless InferenceService is refused
(``unsupported``): there these fields are the Knative template, and a change creates a new
revision; use the ``knative`` engine.

What is written, by ``serving.kserve.io/autoscalerClass`` and mode:

    hpa (default), keda   pin:    minReplicas = maxReplicas = N
                          floor:  minReplicas = N; the HPA or KEDA scales above it
                          target: as floor, and scaleTarget = the policy's per-pod target
                                  (``Decision.inputs["target_per_pod"]``, rounded, >= 1) in the
                                  units of the ISVC's scaleMetric; not written when
                                  ``autoScaling`` is set, which takes precedence over it
    none, external        minReplicas = maxReplicas = N in every mode: no autoscaler exists to
                          act above a floor, and KServe sets the Deployment's replicas from
                          minReplicas for these classes (``external`` on older releases,
                          ``none`` on later ones, where ``external`` leaves the Deployment's
                          replicas to whoever owns them)

``maxReplicas`` 0 means "unset" to KServe, so it is never written: N = 0 writes minReplicas 0
and leaves maxReplicas alone (zero then needs a class that can reach it: keda, none, external).
In floor and target modes a maxReplicas below N is raised to N (KServe rejects min > max).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from typing import Any

from autoscaler.actuators.base import (
    VERIFY_EVERY_SECONDS,
    Change,
    Mode,
    Obj,
    Plan,
    Write,
    WritingActuator,
    dig,
    same,
    target_per_pod,
)
from autoscaler.actuators.calls import MERGE_PATCH_KWARGS, Rejected
from autoscaler.actuators.events import ObjectRef
from autoscaler.actuators.knative import ISVC, KSERVE_DEPLOYMENT_MODE
from autoscaler.core.clock import Clock
from autoscaler.core.types import Decision, TargetRef
from autoscaler.kube import ApiClient, CustomObjectsApi

AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
DEFAULT_CLASS = "hpa"
SCALING_CLASSES = frozenset({"hpa", "keda"})
FIXED_CLASSES = frozenset({"none", "external"})
NOT_RAW_MODES = frozenset({"Serverless", "Knative", "ModelMesh"})

API_CALLS: tuple[tuple[str, str, str], ...] = (
    ("get", ISVC.group, ISVC.plural),
    ("patch", ISVC.group, ISVC.plural),
    ("create", "", "events"),
)


def _as_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def predictor_changes(
    predictor: Mapping[str, Any],
    autoscaler_class: str,
    replicas: int,
    mode: Mode,
    per_pod: float | None,
    notes: list[str],
) -> tuple[Change, ...]:
    """The ``spec.predictor`` changes that carry the decision (see the module docstring)."""
    desired: dict[str, int] = {"minReplicas": replicas}
    current_max = _as_int(predictor.get("maxReplicas"))
    exact = mode == "pin" or autoscaler_class in FIXED_CLASSES
    if exact and replicas > 0:
        desired["maxReplicas"] = replicas
    elif current_max is not None and 0 < current_max < replicas:
        desired["maxReplicas"] = replicas
        notes.append(f"maxReplicas {current_max} raised to minReplicas {replicas}")
    if mode == "target" and per_pod is not None and autoscaler_class in SCALING_CLASSES:
        if predictor.get("autoScaling"):
            notes.append("scaleTarget not written: spec.predictor.autoScaling takes precedence")
        elif math.isfinite(per_pod) and per_pod > 0:
            desired["scaleTarget"] = max(1, round(per_pod))
        else:
            notes.append(f"per-pod target {per_pod} not written")
    return tuple(
        Change(f"spec.predictor.{k}", predictor.get(k), v)
        for k, v in desired.items()
        if not same(predictor.get(k), v)
    )


class KServeActuator(WritingActuator):
    """``spec.predictor`` replica fields of a raw-deployment InferenceService."""

    name = "kserve"
    kinds = ("InferenceService",)
    api_calls = API_CALLS

    def __init__(self, api: ApiClient, clock: Clock, **kwargs: Any) -> None:
        kwargs.setdefault("verify_every", VERIFY_EVERY_SECONDS)
        super().__init__(api, clock, **kwargs)
        self._co = CustomObjectsApi(api)

    async def plan(self, target: TargetRef, decision: Decision, mode: Mode) -> Plan:
        plan = Plan()
        isvc: Obj = await self.caller(
            f"get inferenceservices {target.key}",
            partial(
                self._co.get_namespaced_custom_object,
                ISVC.group,
                ISVC.version,
                target.namespace,
                ISVC.plural,
                target.name,
                _request_timeout=self.caller.request_timeout,
            ),
        )
        annotations = dig(isvc, "metadata", "annotations") or {}
        deployment_mode = dig(isvc, "status", "deploymentMode") or annotations.get(
            KSERVE_DEPLOYMENT_MODE
        )
        if deployment_mode in NOT_RAW_MODES:
            hint = "use engine knative" if deployment_mode != "ModelMesh" else "not supported"
            raise Rejected(
                "unsupported",
                f"{target} runs in {deployment_mode} mode: a spec change would roll a new "
                f"revision; {hint}",
            )
        autoscaler_class = str(annotations.get(AUTOSCALER_CLASS) or DEFAULT_CLASS)
        if autoscaler_class not in SCALING_CLASSES | FIXED_CLASSES:
            raise Rejected(
                "unsupported", f"{target}: unknown {AUTOSCALER_CLASS} {autoscaler_class!r}"
            )
        predictor = dig(isvc, "spec", "predictor") or {}
        changes = predictor_changes(
            predictor,
            autoscaler_class,
            decision.replicas,
            mode,
            target_per_pod(decision),
            plan.notes,
        )
        if changes:
            patch = {"spec": {"predictor": {c.field.rpartition(".")[2]: c.new for c in changes}}}
            send = partial(self._patch, target.namespace, target.name)
            ref = ObjectRef.of(isvc, ISVC.api_version, ISVC.kind)
            plan.writes.append(Write(ref, changes, patch, send))
        return plan

    async def _patch(self, namespace: str, name: str, body: Obj) -> str:
        out = await self._co.patch_namespaced_custom_object(
            ISVC.group,
            ISVC.version,
            namespace,
            ISVC.plural,
            name,
            body,
            **MERGE_PATCH_KWARGS,
            _request_timeout=self.caller.request_timeout,
        )
        return str(dig(out, "metadata", "resourceVersion") or "")
