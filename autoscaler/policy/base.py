"""The compiled base class of every policy plugin (``autoscaler.policy.api`` re-exports it).

Compiled with the engine (autoscaler/native.py) so that the engine's call into a built-in
policy's ``decide`` is a direct call, not a Python method lookup with argument parsing;
``allow_interpreted_subclasses`` keeps it an ordinary base class for third-party policies written
in Python. It is here rather than in ``api`` because ``api`` also holds ``Params``, a pydantic
model, which cannot be compiled.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from mypy_extensions import mypyc_attr

from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import Proposal

if TYPE_CHECKING:
    from autoscaler.policy.api import Params

P = TypeVar("P", bound="Params")
S = TypeVar("S")


@mypyc_attr(allow_interpreted_subclasses=True)
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
