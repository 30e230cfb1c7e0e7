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

from abc import ABC, abstractmethod
from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import Proposal


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


P = TypeVar("P", bound=Params)
S = TypeVar("S")


class Policy(ABC, Generic[P, S]):
    """Base class of every policy plugin. Subclasses set ``name`` and ``params_model``."""

    name: ClassVar[str]
    params_model: ClassVar[type[Params]]

    def __init__(self, params: P) -> None:
        self.params = params

    @abstractmethod
    def required_signals(self) -> tuple[str, ...]:
        """Signals without which this policy cannot decide; the fallback guard watches them."""

    def retention_seconds(self) -> float:
        """How far back the policy reads its signals (the engine keeps that much history)."""
        return 600.0

    def signals_read(self) -> frozenset[str] | None:
        """Every signal ``decide`` may read from the snapshot, or None (the default) for "any".

        The engine keeps windows only for these (replica status aside): samples of other signals
        are counted and dropped at ingest, which saves their cost on every tick and their memory.
        A policy that declares a set must never read a signal outside it (it would see no data).
        After a hot reload to a policy that reads a signal the old one did not, that signal's
        history starts at the reload.
        """
        return None

    @abstractmethod
    def initial_state(self, snap: Snapshot) -> S:
        """State for a target seen for the first time (or after a restart)."""

    @abstractmethod
    def decide(self, snap: Snapshot, state: S) -> tuple[Proposal, S]:
        """The replica count (and token rate) this policy wants, before guards."""

    def carry_state(self, old: object, snap: Snapshot) -> S:
        """State to continue with after a config reload; by default the old state if it fits."""
        return self.initial_state(snap) if old is None else old  # type: ignore[return-value]
