"""The pods of each target, as the Kubernetes status source sees them (shared with pod scrape)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PodInfo:
    """One pod of a target. Times are UNIX seconds from the pod's status (None when unknown)."""

    name: str
    namespace: str
    ip: str | None
    ready: bool
    created: float | None = None  # metadata.creationTimestamp
    started: float | None = None  # status.startTime
    ready_at: float | None = None  # lastTransitionTime of the Ready condition when True
    deleting: bool = False  # metadata.deletionTimestamp is set
    labels: Mapping[str, str] = field(default_factory=dict)


class PodIndex:
    """target key -> its pods. Written by the status source, read by pod scrape."""

    def __init__(self) -> None:
        self._pods: dict[str, tuple[PodInfo, ...]] = {}

    def set_pods(self, target: str, pods: tuple[PodInfo, ...] | list[PodInfo]) -> None:
        self._pods[target] = tuple(sorted(pods, key=lambda p: p.name))

    def discard(self, target: str) -> None:
        """Forget a target that is no longer managed (after a config reload)."""
        self._pods.pop(target, None)

    def pods(self, target: str) -> tuple[PodInfo, ...]:
        return self._pods.get(target, ())

    def ready_pods(self, target: str) -> tuple[PodInfo, ...]:
        return tuple(p for p in self.pods(target) if p.ready and not p.deleting and p.ip)

    def targets(self) -> list[str]:
        return sorted(self._pods)
