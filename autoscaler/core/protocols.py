"""The I/O boundaries as small protocols; in-repo fakes live in ``autoscaler.testing``.

Sources produce timestamped observations; actuators apply decisions and report what happened.
Neither imports the other. Both are async (they do I/O); the core only defines their shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from autoscaler.core.types import Decision, Observation, TargetRef


@dataclass(slots=True)
class SourceReport:
    """What one collection produced: observations, and problems counted by kind.

    Problem kinds are short stable words ("timeout", "http_error", "parse_error", "nan",
    "negative", "too_large", "connection") counted per target key. A problem means missing data
    for that signal, never a zero.
    """

    observations: list[Observation] = field(default_factory=list)
    errors: dict[tuple[str, str], int] = field(default_factory=dict)  # (target key, kind) -> n

    def error(self, target: str, kind: str, n: int = 1) -> None:
        self.errors[(target, kind)] = self.errors.get((target, kind), 0) + n


class Source(Protocol):
    """A signal source. ``collect`` must not raise for a per-target problem: it reports it."""

    name: str

    async def collect(self, targets: Sequence[TargetRef]) -> SourceReport: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class ActuationOutcome:
    """What an actuator did with one decision, reported back so a failed write is never
    assumed applied.

    ``applied``: the object now holds the decided values (written, or already equal).
    ``wrote``: a write was sent and accepted. ``error`` is a short stable kind when not applied
    ("conflict", "forbidden", "not_found", "invalid", "transient", "rate_limited", "timeout",
    "owned_elsewhere", "no_revision", "unsupported"); ``changes`` maps each field written to
    (old, new).
    """

    target: str
    applied: bool
    wrote: bool = False
    dry_run: bool = False
    error: str | None = None
    detail: str = ""
    changes: dict[str, tuple[object, object]] = field(default_factory=dict)


class Actuator(Protocol):
    """Applies decisions to one kind of scaling knob. Never raises for a per-target problem."""

    name: str

    async def apply(
        self, target: TargetRef, decision: Decision, actuation: object
    ) -> ActuationOutcome: ...

    async def close(self) -> None: ...
