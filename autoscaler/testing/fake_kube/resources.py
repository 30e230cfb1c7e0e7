"""The resource types the fake serves: the built-ins the autoscaler uses, and custom resources
(schema-less by default, with the real openAPIV3Schema when loaded from CRD files)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autoscaler.testing.fake_kube.schema import Cause, CrdVersion
from autoscaler.testing.fake_kube.selectors import format_label_selector, parse_label_selector


@dataclass(frozen=True, slots=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    custom: bool = False  # a CRD: no strategic merge patch, no unconditional update
    status_subresource: bool = False
    scale: Mapping[str, str] | None = None  # specReplicasPath, statusReplicasPath, ...
    schema: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    return_deleted_object: bool = False  # DELETE answers with the object, not a Status

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def group_resource(self) -> str:
        """As in API error messages: ``pods``, ``deployments.apps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """As in Invalid messages: ``Pod``, ``Deployment.apps``."""
        return f"{self.kind}.{self.group}" if self.group else self.kind


_DEPLOYMENT_SCALE = {
    "specReplicasPath": ".spec.replicas",
    "statusReplicasPath": ".status.replicas",
    "labelSelectorPath": ".spec.selector",
}

BUILTINS: tuple[Resource, ...] = (
    Resource("", "v1", "pods", "Pod", status_subresource=True, return_deleted_object=True),
    Resource("", "v1", "events", "Event"),
    Resource("", "v1", "configmaps", "ConfigMap"),
    Resource("", "v1", "namespaces", "Namespace", namespaced=False, status_subresource=True),
    Resource(
        "apps", "v1", "deployments", "Deployment", status_subresource=True, scale=_DEPLOYMENT_SCALE
    ),
    Resource("coordination.k8s.io", "v1", "leases", "Lease"),
)

#: The custom resources the autoscaler reads and patches, registered without a schema until
#: the real CRDs are loaded (``FakeKube(crd_dir=...)``).
KNOWN_CUSTOM: tuple[Resource, ...] = tuple(
    Resource(g, v, p, k, custom=True, status_subresource=True, return_deleted_object=True)
    for g, v, p, k in (
        ("serving.knative.dev", "v1", "services", "Service"),
        ("serving.knative.dev", "v1", "configurations", "Configuration"),
        ("serving.knative.dev", "v1", "revisions", "Revision"),
        ("serving.knative.dev", "v1", "routes", "Route"),
        ("autoscaling.internal.knative.dev", "v1alpha1", "podautoscalers", "PodAutoscaler"),
        ("autoscaling.internal.knative.dev", "v1alpha1", "metrics", "Metric"),
        ("serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService"),
        ("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject"),
    )
)


def from_crd(crd: CrdVersion) -> Resource:
    return Resource(
        crd.group,
        crd.version,
        crd.plural,
        crd.kind,
        namespaced=crd.namespaced,
        custom=True,
        status_subresource=crd.status_subresource,
        scale=crd.scale,
        schema=crd.schema,
        return_deleted_object=True,
    )


# --- validation of the built-in types (the part of the real validation the autoscaler meets) ---

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def validate_name(name: str) -> list[Cause]:
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        msg = (
            f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case '
            "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
            "character"
        )
        return [Cause("FieldValueInvalid", "metadata.name", msg)]
    return []


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_builtin(res: Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes: list[Cause] = []
    if res.plural == "pods":
        containers = spec.get("containers")
        if not containers:
            causes.append(Cause("FieldValueRequired", "spec.containers", "Required value"))
        for i, c in enumerate(containers or []):
            for key in ("name", "image"):
                if not isinstance(c, dict) or not c.get(key):
                    where = f"spec.containers[{i}].{key}"
                    causes.append(Cause("FieldValueRequired", where, "Required value"))
    elif res.plural == "deployments":
        replicas = spec.get("replicas")
        if replicas is not None and (not _is_int(replicas) or replicas < 0):
            msg = f"Invalid value: {replicas}: must be greater than or equal to 0"
            causes.append(Cause("FieldValueInvalid", "spec.replicas", msg))
        selector = spec.get("selector")
        if not selector:
            causes.append(Cause("FieldValueRequired", "spec.selector", "Required value"))
        else:
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if not parse_label_selector(format_label_selector(selector))(labels):
                msg = f"Invalid value: {labels!r}: `selector` does not match template `labels`"
                causes.append(Cause("FieldValueInvalid", "spec.template.metadata.labels", msg))
            if old is not None and (old.get("spec") or {}).get("selector") != selector:
                msg = f"Invalid value: {selector!r}: field is immutable"
                causes.append(Cause("FieldValueInvalid", "spec.selector", msg))
    elif res.plural == "leases":
        duration = spec.get("leaseDurationSeconds")
        if duration is not None and (not _is_int(duration) or duration <= 0):
            msg = f"Invalid value: {duration}: must be greater than 0"
            causes.append(Cause("FieldValueInvalid", "spec.leaseDurationSeconds", msg))
        transitions = spec.get("leaseTransitions")
        if transitions is not None and (not _is_int(transitions) or transitions < 0):
            msg = f"Invalid value: {transitions}: must be greater than or equal to 0"
            causes.append(Cause("FieldValueInvalid", "spec.leaseTransitions", msg))
    return causes


def prepare_builtin_create(res: Resource, obj: dict[str, Any]) -> None:
    """What the built-in strategies do on create: reset status, default a few fields."""
    if res.plural == "pods":
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        spec = obj.setdefault("spec", {})
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
    elif res.plural == "deployments":
        obj["status"] = {}
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
