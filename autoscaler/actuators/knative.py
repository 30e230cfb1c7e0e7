"""Knative Services and KServe serverless InferenceServices: scale annotations on the serving
Revision (knative-kpa.md section 9).

On each apply the actuator asks the target which revision is latest-ready
(``status.latestReadyRevisionName`` of a Knative Service,
``status.components.predictor.latestReadyRevision`` of an InferenceService) and writes that
Revision's ``metadata.annotations``, unless ``status.traffic`` sends most of the traffic to
another revision (a canary rollout in progress: see ``serving_revision``). Knative >= 1.21
copies a Revision's autoscaling annotations to its PodAutoscaler on every reconcile, so
min-scale and max-scale change live, without a new revision. When a new revision becomes
ready, the next apply follows it (the outcome's detail says "new revision"). The Service and
InferenceService are only read: writing their template would create a new revision, with new
pods starting cold.

Before Knative 1.21 the revision reconciler leaves PodAutoscaler annotations alone and does not
copy later Revision changes, so the knob is the PodAutoscaler (same name as the revision).
``knative_version``: "1.21" or later writes the Revision only, older versions the PodAutoscaler
only, and "auto" (the default) writes both with the same values. That is right on every
version: on >= 1.21 the PodAutoscaler then already holds what the revision controller would
copy there, so nothing fights.

Modes (``autoscaling.knative.dev/`` annotations):

    pin     min-scale = max-scale = N: the KPA's bounds force N whatever its decider says.
            N = 0 writes min-scale 0 and leaves max-scale alone, because max-scale 0 means
            "unlimited" to Knative: zero cannot be pinned, only allowed (the KPA scales to
            zero once the revision is idle, if the cluster allows scale to zero).
    floor   min-scale = N; the KPA scales above it on its own signal. max-scale is left alone,
            unless it is below N (Knative rejects min > max): then it is raised to N.
    target  as floor, and ``target`` = the policy's per-pod target when it gives one
            (``Decision.inputs["target_per_pod"]``, >= 0.01), in the revision's metric
            (concurrency or rps): the KPA then sizes by that target above the floor.

The camelCase spellings (``minScale``, ``maxScale``) are read as well; when we write a key whose
camelCase alias is present, the alias is removed in the same patch so one value remains.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
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
from autoscaler.core.clock import Clock
from autoscaler.core.types import Decision, TargetRef
from autoscaler.kube import ApiClient, CustomObjectsApi

MIN_SCALE = "autoscaling.knative.dev/min-scale"
MAX_SCALE = "autoscaling.knative.dev/max-scale"
TARGET = "autoscaling.knative.dev/target"
ALIASES = {
    MIN_SCALE: "autoscaling.knative.dev/minScale",
    MAX_SCALE: "autoscaling.knative.dev/maxScale",
}
MIN_TARGET = 0.01  # Knative's validation: target >= 0.01

KNATIVE_SERVICE_LABEL = "serving.knative.dev/service"
KSERVE_LABEL = "serving.kserve.io/inferenceservice"
KSERVE_COMPONENT_LABEL = "component"
KSERVE_DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
RAW_MODES = frozenset({"RawDeployment", "Standard"})

#: The first Knative release that propagates Revision annotation changes to the PodAutoscaler.
LIVE_REVISION_ANNOTATIONS = (1, 21)


@dataclass(frozen=True, slots=True)
class CustomResource:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


KSERVICE = CustomResource("serving.knative.dev", "v1", "services", "Service")
REVISION = CustomResource("serving.knative.dev", "v1", "revisions", "Revision")
PODAUTOSCALER = CustomResource(
    "autoscaling.internal.knative.dev", "v1alpha1", "podautoscalers", "PodAutoscaler"
)
ISVC = CustomResource("serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService")

#: (verb, group, resource) of every API call this actuator makes (for the RBAC role).
API_CALLS: tuple[tuple[str, str, str], ...] = (
    ("get", KSERVICE.group, KSERVICE.plural),
    ("get", ISVC.group, ISVC.plural),
    ("get", REVISION.group, REVISION.plural),
    ("patch", REVISION.group, REVISION.plural),
    ("get", PODAUTOSCALER.group, PODAUTOSCALER.plural),
    ("patch", PODAUTOSCALER.group, PODAUTOSCALER.plural),
    ("create", "", "events"),
)


def parse_knative_version(text: str) -> tuple[int, int] | None:
    """ "auto" -> None; "1.21", "v1.20.3", "knative-v1.21.0" -> (major, minor)."""
    if text.strip().lower() == "auto":
        return None
    m = re.search(r"(\d+)\.(\d+)", text)
    if m is None:
        raise ValueError(f"knative_version must be 'auto' or like '1.21', not {text!r}")
    return int(m.group(1)), int(m.group(2))


def _lookup(annotations: Mapping[str, str], key: str) -> str | None:
    """The value Knative reads: the kebab-case key wins over its camelCase alias."""
    if key in annotations:
        return annotations[key]
    alias = ALIASES.get(key)
    return annotations.get(alias) if alias else None


def _as_int(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def serving_revision(traffic: object, latest_ready: object) -> str | None:
    """The revision that carries the most traffic (``status.traffic``), else the latest ready.

    Normally the two are the same revision. During a canary rollout (docs/rollouts.md) the latest
    ready revision is the canary with a small share, and its min-scale belongs to the rollout's
    pre-scale: the engine's decision, which sizes the whole target, goes to the revision serving
    most of the traffic. On a tie the latest ready revision wins, so a 50/50 step and a promoted
    canary follow the new revision.
    """
    shares: dict[str, float] = {}
    if isinstance(traffic, list):
        for entry in traffic:
            if not isinstance(entry, Mapping):
                continue
            name = entry.get("revisionName")
            percent = entry.get("percent")
            if isinstance(name, str) and name and isinstance(percent, int | float):
                shares[name] = shares.get(name, 0.0) + float(percent)
    latest = latest_ready if isinstance(latest_ready, str) and latest_ready else None
    if not shares:
        return latest
    best = max(shares.values())
    if latest is not None and shares.get(latest, -1.0) >= best:
        return latest
    return max(sorted(shares), key=lambda n: shares[n])


def format_target(value: float) -> str:
    """A per-pod target as Knative parses it: "10", "2.5" (two decimals at most)."""
    if value == int(value):
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def scale_annotations(
    annotations: Mapping[str, str],
    replicas: int,
    mode: Mode,
    per_pod: float | None,
    notes: list[str],
) -> tuple[Change, ...]:
    """The annotation changes that make ``annotations`` carry the decision (see the module
    docstring for each mode); empty when they already do."""
    desired: dict[str, str] = {MIN_SCALE: str(replicas)}
    current_max = _as_int(_lookup(annotations, MAX_SCALE))
    if mode == "pin" and replicas > 0:
        desired[MAX_SCALE] = str(replicas)
    elif current_max is not None and 0 < current_max < replicas:
        desired[MAX_SCALE] = str(replicas)
        notes.append(f"max-scale {current_max} raised to min-scale {replicas}")
    if mode == "target" and per_pod is not None:
        if math.isfinite(per_pod) and per_pod >= MIN_TARGET:
            desired[TARGET] = format_target(per_pod)
        else:
            notes.append(f"per-pod target {per_pod} not written (must be >= {MIN_TARGET})")
    changes: list[Change] = []
    for key, value in desired.items():
        old = _lookup(annotations, key)
        if same(old, value):
            continue
        changes.append(Change(key, annotations.get(key), value))
        alias = ALIASES.get(key)
        if alias is not None and alias in annotations:
            changes.append(Change(alias, annotations[alias], None))
    return tuple(changes)


def annotation_patch(changes: tuple[Change, ...]) -> Obj:
    return {"metadata": {"annotations": {c.field: c.new for c in changes}}}


class KnativeActuator(WritingActuator):
    """Scale annotations on the latest ready Revision (and/or its PodAutoscaler) of a Knative
    Service or a serverless InferenceService. ``revisions`` maps each target key to the
    latest-ready revision of its last apply."""

    name = "knative"
    kinds = ("Service", "InferenceService")
    api_calls = API_CALLS

    def __init__(
        self, api: ApiClient, clock: Clock, *, knative_version: str = "auto", **kwargs: Any
    ) -> None:
        kwargs.setdefault("verify_every", VERIFY_EVERY_SECONDS)
        super().__init__(api, clock, **kwargs)
        self.version = parse_knative_version(knative_version)
        self._co = CustomObjectsApi(api)
        self.revisions: dict[str, str] = {}

    def _knobs(self) -> list[tuple[CustomResource, bool]]:
        """The objects to write, each with whether it may be missing."""
        if self.version is None:
            return [(REVISION, False), (PODAUTOSCALER, True)]
        if self.version >= LIVE_REVISION_ANNOTATIONS:
            return [(REVISION, False)]
        return [(PODAUTOSCALER, False)]

    async def plan(self, target: TargetRef, decision: Decision, mode: Mode) -> Plan:
        plan = Plan()
        revision = await self._latest_ready(target)
        previous = self.revisions.get(target.key)
        if previous is not None and previous != revision:
            plan.notes.append(f"new revision {revision} (was {previous})")
            self.log.info("%s: new ready revision %s (was %s)", target, revision, previous)
        self.revisions[target.key] = revision
        per_pod = target_per_pod(decision)
        for res, optional in self._knobs():
            obj = await self._get(res, target.namespace, revision, optional=optional)
            if obj is None:
                plan.notes.append(f"no {res.kind} {revision}")
                continue
            if res is REVISION:
                self._check_owner(target, obj)
            annotations = dig(obj, "metadata", "annotations") or {}
            changes = scale_annotations(annotations, decision.replicas, mode, per_pod, plan.notes)
            if changes:
                send = partial(self._patch, res, target.namespace, revision)
                ref = ObjectRef.of(obj, res.api_version, res.kind)
                plan.writes.append(Write(ref, changes, annotation_patch(changes), send))
        return plan

    async def _latest_ready(self, target: TargetRef) -> str:
        if target.kind == "InferenceService":
            isvc = await self._get(ISVC, target.namespace, target.name)
            assert isvc is not None
            deployment_mode = dig(isvc, "status", "deploymentMode") or dig(
                isvc, "metadata", "annotations", KSERVE_DEPLOYMENT_MODE
            )
            if deployment_mode in RAW_MODES:
                raise Rejected(
                    "unsupported",
                    f"{target} runs in {deployment_mode} mode (no revisions): use engine kserve",
                )
            predictor = dig(isvc, "status", "components", "predictor") or {}
            name = serving_revision(predictor.get("traffic"), predictor.get("latestReadyRevision"))
        else:
            ksvc = await self._get(KSERVICE, target.namespace, target.name)
            status = dig(ksvc, "status") or {}
            name = serving_revision(status.get("traffic"), status.get("latestReadyRevisionName"))
        if not name:
            raise Rejected("no_revision", f"{target} has no ready revision yet")
        return str(name)

    @staticmethod
    def _check_owner(target: TargetRef, revision: Obj) -> None:
        """A revision the target's status points at carries the target's labels; refuse one
        labelled for another target (a status we misread must not scale someone else)."""
        labels = dig(revision, "metadata", "labels") or {}
        if target.kind == "InferenceService":
            expected = {KSERVE_LABEL: target.name, KSERVE_COMPONENT_LABEL: "predictor"}
        else:
            expected = {KNATIVE_SERVICE_LABEL: target.name}
        wrong = {k: labels[k] for k, v in expected.items() if k in labels and labels[k] != v}
        if wrong:
            name = dig(revision, "metadata", "name")
            raise Rejected("no_revision", f"revision {name} is labelled {wrong}, not {target}")

    async def _get(
        self, res: CustomResource, namespace: str, name: str, *, optional: bool = False
    ) -> Obj | None:
        try:
            obj: Obj = await self.caller(
                f"get {res.plural} {namespace}/{name}",
                partial(
                    self._co.get_namespaced_custom_object,
                    res.group,
                    res.version,
                    namespace,
                    res.plural,
                    name,
                    _request_timeout=self.caller.request_timeout,
                ),
            )
        except Rejected as e:
            if optional and e.kind == "not_found":
                return None
            raise
        return obj

    async def _patch(self, res: CustomResource, namespace: str, name: str, body: Obj) -> str:
        out = await self._co.patch_namespaced_custom_object(
            res.group,
            res.version,
            namespace,
            res.plural,
            name,
            body,
            **MERGE_PATCH_KWARGS,
            _request_timeout=self.caller.request_timeout,
        )
        return str(dig(out, "metadata", "resourceVersion") or "")
