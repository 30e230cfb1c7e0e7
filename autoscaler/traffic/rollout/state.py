"""What a rollout knows about itself, stored as JSON in an annotation of the canary Revision.

All progress lives in the cluster, never in this process: a restarted (or newly elected) service
reads the annotation and carries on from the same step, with the same failed-check count and the
same step start time. Why the canary Revision and not the Service or InferenceService: the
rollout is *about* that revision (a newer revision starts a new rollout by itself), and KServe
copies an InferenceService's annotations into the Knative template, so writing there would
create a new revision with every step.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

STATE_ANNOTATION = "autoscaler.kserve.io/rollout-state"

Phase = Literal["Progressing", "Succeeded", "RolledBack"]
PHASES: tuple[Phase, ...] = ("Progressing", "Succeeded", "RolledBack")


class StateError(ValueError):
    """The annotation holds something that is not a rollout state (hand-edited, truncated)."""


@dataclass(frozen=True, slots=True)
class RolloutState:
    """``step`` indexes the rollout's weights. Before ``shifted`` the step is being prepared
    (canary pre-scaled, webhooks run); after it, traffic is at the step's weight and checks
    count. ``started_at``: when the step's traffic was shifted (or the wait began), epoch
    seconds. ``paused_since``: analysis paused since then because the canary was cold."""

    canary: str
    stable: str
    phase: Phase = "Progressing"
    step: int = 0
    shifted: bool = False
    started_at: float = 0.0
    passed: int = 0
    failed: int = 0
    last_check_at: float | None = None
    paused_since: float | None = None
    hooks_done: bool = False
    original_min_scale: str | None = None
    reason: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    def but(self, **changes: Any) -> RolloutState:
        return replace(self, **changes)

    @property
    def done(self) -> bool:
        return self.phase != "Progressing"

    @classmethod
    def from_json(cls, text: str) -> RolloutState:
        try:
            raw = json.loads(text)
        except ValueError as e:
            raise StateError(f"not JSON: {e}") from e
        if not isinstance(raw, dict):
            raise StateError("not a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise StateError(f"unknown keys {unknown}")
        for key in ("canary", "stable"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise StateError(f"{key} must be a revision name")
        if raw.get("phase", "Progressing") not in PHASES:
            raise StateError(f"phase must be one of {list(PHASES)}, not {raw.get('phase')!r}")
        for key in ("step", "passed", "failed"):
            v = raw.get(key, 0)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise StateError(f"{key} must be a non-negative integer, not {v!r}")
        for key in ("started_at", "last_check_at", "paused_since"):
            v = raw.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise StateError(f"{key} must be a number, not {v!r}")
        for key in ("shifted", "hooks_done"):
            if not isinstance(raw.get(key, False), bool):
                raise StateError(f"{key} must be true or false")
        oms = raw.get("original_min_scale")
        if oms is not None and not isinstance(oms, str):
            raise StateError("original_min_scale must be a string or null")
        if not isinstance(raw.get("reason", ""), str):
            raise StateError("reason must be a string")
        return cls(**raw)
