"""The I/O boundaries as small protocols; in-repo fakes live in ``autoscaler.testing``.

Sources produce timestamped observations; actuators apply decisions and report what happened.
Neither imports the other. Both are async (they do I/O); the core only defines their shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from autoscaler.core.types import Observation, TargetRef


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
