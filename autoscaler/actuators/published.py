"""The latest decision per target, for the endpoints that serve it.

KEDA's metrics-api scaler and external scaler, and the agents that enforce token-rate limits,
read decisions instead of having them written into objects. ``PublishedDecisions`` is what they
read: the signal actuators (``KedaActuator``, ``TokenLimitsPublisher``) publish each decision
here, and the HTTP and gRPC handlers look it up by ``namespace/name``.

A decision is *stale* when it is older than ``max_age_seconds`` on the injected clock
(``now - decision.ts``): the control loop stopped, or its sources went quiet. Readers must not
act on stale data as if it were current: the KEDA endpoints answer an error (so KEDA's fallback
takes over), the token endpoint flags it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from autoscaler.core.clock import Clock
from autoscaler.core.types import Decision

log = logging.getLogger("autoscaler.actuators.published")

Listener = Callable[["Published", "Published | None"], None]


@dataclass(frozen=True, slots=True)
class Published:
    """One target's latest decision as published. ``dry_run``: the target's actuation is in
    dry-run (serve it, but readers that enforce, such as the agent, treat it as advisory)."""

    decision: Decision
    dry_run: bool = False

    @property
    def key(self) -> str:
        return self.decision.target

    @property
    def active(self) -> bool:
        """KEDA's notion: the target should run at least one replica."""
        return self.decision.replicas > 0


class PublishedDecisions:
    """The latest decision per target key; listeners hear every publish (``new, old``)."""

    def __init__(self, clock: Clock, *, max_age_seconds: float = 60.0) -> None:
        if max_age_seconds <= 0:
            raise ValueError("max_age_seconds must be > 0")
        self.clock = clock
        self.max_age_seconds = float(max_age_seconds)
        self._latest: dict[str, Published] = {}
        self._listeners: list[Listener] = []

    def publish(self, decision: Decision, *, dry_run: bool = False) -> Published:
        entry = Published(decision, dry_run)
        old = self._latest.get(decision.target)
        if old is not None and old.decision.ts > decision.ts:
            return old  # an older record arriving late never replaces a newer one
        self._latest[decision.target] = entry
        for listener in list(self._listeners):
            try:
                listener(entry, old)
            except Exception:  # a broken reader must not break publishing for the others
                log.exception("listener failed for %s", decision.target)
        return entry

    def get(self, key: str) -> Published | None:
        return self._latest.get(key)

    def forget(self, key: str) -> None:
        """The target is no longer managed: readers get "unknown", not its last numbers."""
        self._latest.pop(key, None)

    def keys(self) -> list[str]:
        return sorted(self._latest)

    def age(self, entry: Published) -> float:
        return max(0.0, self.clock.now() - entry.decision.ts)

    def is_stale(self, entry: Published) -> bool:
        return self.age(entry) > self.max_age_seconds

    @property
    def listeners(self) -> int:
        """How many listeners are registered (open StreamIsActive calls, say)."""
        return len(self._listeners)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(new, old)`` after every publish; returns the function that removes
        it. Listeners run synchronously inside ``publish`` and must not block."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove
