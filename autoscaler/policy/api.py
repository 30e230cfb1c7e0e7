"""The policy plugin API.

A policy is a class with typed params (a pydantic model) and typed state. The engine builds one
instance per target from the target's params, asks it for an initial state, and then on every tick
calls ``decide(snapshot, state) -> (proposal, state)``. A policy does arithmetic only: the shared
guard chain (bounds, scale-to-zero, step limits, stabilization, stale-signal fallback) wraps every
policy, so an author cannot forget them and every clip is recorded with its reason.

Third-party policies register under the ``autoscaler.policies`` entry-point group::

    [project.entry-points."autoscaler.policies"]
    mine = "my_pkg.policy:MyPolicy"
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class Params(BaseModel):
    """Base for policy params and every other SRE-facing model: strict, camelCase in YAML.

    Unknown keys are errors (a typo in a scaling policy is an outage).
    """

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        validate_default=True,
    )


# The base class lives in ``base`` (compiled; this module holds ``Params``, which cannot be).
from autoscaler.policy.base import P as P  # noqa: E402
from autoscaler.policy.base import Policy as Policy  # noqa: E402
from autoscaler.policy.base import S as S  # noqa: E402
