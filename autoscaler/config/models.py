"""Strict pydantic models of the SRE-facing policy YAML.

    apiVersion: autoscaler.kserve.io/v1alpha1
    kind: AutoscalingPolicy
    metadata: {name: llm-chat}
    spec:
      targets:
        - kind: InferenceService        # or Service (Knative) or Deployment
          namespace: llm
          name: chat                    # or selector: {matchLabels: {...}}
          policy: {name: tokens, params: {tokensPerReplica: 2500}}
          guards: {minReplicas: 1, maxReplicas: 8}
          tokenLimits: {floor: 500}
          actuation: {engine: knative, mode: floor}

Unknown keys are errors everywhere. Shared settings across targets use YAML anchors and merge
keys (``<<: *defaults``), which the loader supports, rather than an inheritance scheme of ours.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from autoscaler.config.rollout import Rollout
from autoscaler.config.signals import Signals
from autoscaler.core.types import TargetRef
from autoscaler.policy.api import Params, Policy
from autoscaler.policy.guards import Guards, TokenLimits
from autoscaler.policy.registry import get_policy_class

API_VERSION = "autoscaler.kserve.io/v1alpha1"
KIND = "AutoscalingPolicy"

# Error context key: the path, below the validated field, of the node a problem is about.
AT = "at"


def located_error(kind: str, message: str, *at: str | int) -> PydanticCustomError:
    """A validation error that the loader reports at ``at`` below the validated field (pydantic
    itself can only place a validator's error on the field or model it validates). ``message``
    must not contain ``{at}``, which pydantic would fill from the context."""
    return PydanticCustomError(kind, message, {AT: at})


class Selector(Params):
    match_labels: dict[str, str] = Field(min_length=1)


class PolicyRef(Params):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        try:
            get_policy_class(v)
        except KeyError as e:
            raise ValueError(str(e.args[0])) from e
        return v


class KedaBounds(Params):
    """engine keda: the decision is served to KEDA (docs/keda.md); with ``owned`` the policy
    also owns these bounds of the ScaledObject, written rarely and only when they differ."""

    scaled_object: str | None = Field(None, description="default: the target's name")
    owned: bool = False
    min_replica_count: int | None = Field(None, ge=0)
    max_replica_count: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> KedaBounds:
        lo, hi = self.min_replica_count, self.max_replica_count
        if lo is not None and hi is not None and hi < lo:
            raise ValueError(f"maxReplicaCount ({hi}) must be >= minReplicaCount ({lo})")
        return self


class Actuation(Params):
    """Which engine's knobs carry the decision (docs/actuators.md, docs/keda.md)."""

    engine: Literal["knative", "kserve", "keda", "deployment"] = "knative"
    mode: Literal["pin", "floor", "target"] = Field(
        "floor", description="pin: min=max=N; floor: min-scale only; target: per-pod target"
    )
    dry_run: bool = False
    keda: KedaBounds | None = None


class Target(Params):
    kind: Literal["InferenceService", "Service", "Deployment"] = "InferenceService"
    namespace: str = Field("default", min_length=1)
    name: str | None = Field(None, min_length=1)
    selector: Selector | None = None
    policy: PolicyRef
    guards: Guards = Field(default_factory=Guards)
    token_limits: TokenLimits | None = None
    actuation: Actuation = Field(default_factory=Actuation)
    signals: Signals = Field(default_factory=Signals)
    rollout: Rollout | None = Field(None, description="canary rollouts (docs/rollouts.md)")

    @model_validator(mode="after")
    def _named_once(self) -> Target:
        if (self.name is None) == (self.selector is None):
            raise ValueError("set exactly one of name or selector")
        return self

    @model_validator(mode="after")
    def _rollout_needs_revisions(self) -> Target:
        if self.rollout is not None and self.kind == "Deployment":
            raise located_error(
                "rollout_kind",
                "a rollout shifts traffic between revisions: InferenceService or Service only",
                "rollout",
            )
        return self

    def ref(self, name: str | None = None) -> TargetRef:
        """The concrete target (``name`` resolves a selector match)."""
        resolved = name or self.name
        if resolved is None:
            raise ValueError("a selector target needs a resolved name")
        return TargetRef(self.kind, self.namespace, resolved)

    def build_policy(self) -> Policy[Any, Any]:
        cls = get_policy_class(self.policy.name)
        return cls(cls.params_model.model_validate(self.policy.params))


class Metadata(Params):
    name: str = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Spec(Params):
    targets: tuple[Target, ...] = Field(min_length=1)

    @field_validator("targets")
    @classmethod
    def _unique(cls, targets: tuple[Target, ...]) -> tuple[Target, ...]:
        seen: dict[tuple[str, str, str], int] = {}
        for i, t in enumerate(targets):
            if t.selector is not None:
                labels = ",".join(f"{k}={v}" for k, v in sorted(t.selector.match_labels.items()))
                what = f"selector {labels}"
            else:
                what = str(t.name)
            key = (t.kind, t.namespace, what)
            if key in seen:
                raise located_error(
                    "duplicate_target",
                    f"target {t.kind} {t.namespace}/{what} is listed twice "
                    f"(first as targets[{seen[key]}])",
                    i,
                )
            seen[key] = i
        return targets


class PolicyFile(Params):
    api_version: Literal["autoscaler.kserve.io/v1alpha1"]
    kind: Literal["AutoscalingPolicy"]
    metadata: Metadata
    spec: Spec
