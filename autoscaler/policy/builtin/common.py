"""Small helpers the built-in policies share."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from autoscaler.core.rounding import to_milli as to_milli
from autoscaler.core.snapshot import aggregate as aggregate
from autoscaler.policy.api import Params, Policy
from autoscaler.policy.registry import get_policy_class

Aggregation = Literal["mean", "max", "last"]


class NestedPolicy(Params):
    """A policy inside another (a ``max`` member, the inner policy of ``predictive`` and
    ``keepalive``): a registered name and its params. Subclasses name the containing policy,
    which may not contain itself, and the message saying so."""

    outer: ClassVar[str] = ""
    self_reference: ClassVar[str] = ""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v == cls.outer:
            raise ValueError(cls.self_reference)
        try:
            get_policy_class(v)
        except KeyError as e:
            raise ValueError(str(e.args[0])) from e
        return v

    def build(self) -> Policy[Any, Any]:
        """The nested policy, its params validated by its own model."""
        cls = get_policy_class(self.name)
        return cls(cls.params_model.model_validate(self.params))
