"""Reading and writing the engines' own traffic fields (pure functions over object dicts).

Knative Service (``spec.traffic``)::

    traffic:
      - {revisionName: chat-00001, percent: 90, latestRevision: false, tag: stable}
      - {revisionName: chat-00002, percent: 10, latestRevision: false, tag: canary}

Both revisions are pinned (``latestRevision: false``): a template change made during the rollout
creates a revision that gets no traffic until the rollout reaches it. The tags give each one its
own URL (``stable-chat.llm.example.com``) for direct tests. The canary is the Service's
``status.latestCreatedRevisionName``; the stable is the rollout state's (or, before one exists,
the pinned revision with the most traffic).

KServe InferenceService (``spec.predictor.canaryTrafficPercent``): KServe splits traffic between
``status.components.predictor.latestRolledoutRevision`` (the last revision that had 100%, our
stable) and ``latestCreatedRevision`` (our canary). Promotion removes the field (KServe then
records the canary as latest rolled out); a rollback sets it to 0 (100% to the stable).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autoscaler.traffic.rollout.machine import RevisionView

MIN_SCALE = "autoscaling.knative.dev/min-scale"
MIN_SCALE_ALIAS = "autoscaling.knative.dev/minScale"
STABLE_TAG = "stable"
CANARY_TAG = "canary"

Obj = dict[str, Any]


def dig(obj: Mapping[str, Any] | None, *path: str) -> Any:
    cur: Any = obj
    for part in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def revision_view(rev: Mapping[str, Any]) -> RevisionView:
    """A Revision's readiness, replica counts and min-scale annotation."""
    ready: bool | None = None
    message = ""
    for cond in dig(rev, "status", "conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            status = cond.get("status")
            ready = True if status == "True" else False if status == "False" else None
            message = str(cond.get("message") or cond.get("reason") or "")
    annotations = dig(rev, "metadata", "annotations") or {}
    min_scale = annotations.get(MIN_SCALE, annotations.get(MIN_SCALE_ALIAS))
    return RevisionView(
        name=str(dig(rev, "metadata", "name") or ""),
        ready=ready,
        ready_message=message,
        actual=_count(dig(rev, "status", "actualReplicas")),
        desired=_count(dig(rev, "status", "desiredReplicas")),
        min_scale=None if min_scale is None else str(min_scale),
    )


# -- Knative Service ---------------------------------------------------------------------------


def ksvc_names(ksvc: Mapping[str, Any], stable_hint: str | None) -> tuple[str | None, str | None]:
    """(stable, canary) revision names of a Knative Service; None when not in a rollout shape
    (traffic follows the latest revision, or nothing was created yet)."""
    canary = dig(ksvc, "status", "latestCreatedRevisionName")
    if not canary:
        return None, None
    if stable_hint:
        return stable_hint, str(canary)
    pinned = [
        t
        for t in dig(ksvc, "spec", "traffic") or []
        if isinstance(t, Mapping) and t.get("revisionName") and not t.get("latestRevision")
    ]
    others = [t for t in pinned if t.get("revisionName") != canary]
    if not others:
        return None, str(canary)
    best = max(others, key=lambda t: (_count(t.get("percent")) or 0, str(t["revisionName"])))
    return str(best["revisionName"]), str(canary)


def ksvc_canary_percent(ksvc: Mapping[str, Any], canary: str) -> int:
    total = 0
    for t in dig(ksvc, "spec", "traffic") or []:
        if isinstance(t, Mapping) and t.get("revisionName") == canary:
            total += _count(t.get("percent")) or 0
    return total


def ksvc_traffic(stable: str, canary: str, percent: int, promote: bool = False) -> list[Obj]:
    """``spec.traffic`` with ``percent`` to the canary (a 100% step keeps the stable at 0%,
    tagged, for an instant rollback); ``promote``: the canary is the new stable, alone and
    tagged so."""
    if promote:
        return [
            {"revisionName": canary, "percent": 100, "latestRevision": False, "tag": STABLE_TAG}
        ]
    return [
        {
            "revisionName": stable,
            "percent": 100 - percent,
            "latestRevision": False,
            "tag": STABLE_TAG,
        },
        {"revisionName": canary, "percent": percent, "latestRevision": False, "tag": CANARY_TAG},
    ]


def ksvc_promoted(ksvc: Mapping[str, Any], canary: str) -> bool:
    entries = [t for t in dig(ksvc, "spec", "traffic") or [] if isinstance(t, Mapping)]
    return bool(entries) and all(t.get("revisionName") == canary for t in entries)


def ksvc_follows_latest(ksvc: Mapping[str, Any]) -> bool:
    """Whether traffic goes to whatever revision is latest (a template change goes live at once,
    so no canary is possible until the traffic is pinned)."""
    return any(
        isinstance(t, Mapping) and t.get("latestRevision") and (_count(t.get("percent")) or 0) > 0
        for t in dig(ksvc, "spec", "traffic") or [{"latestRevision": True, "percent": 100}]
    )


# -- KServe InferenceService -------------------------------------------------------------------


def isvc_names(isvc: Mapping[str, Any], stable_hint: str | None) -> tuple[str | None, str | None]:
    predictor = dig(isvc, "status", "components", "predictor") or {}
    canary = predictor.get("latestCreatedRevision") or predictor.get("latestReadyRevision")
    stable = stable_hint or predictor.get("latestRolledoutRevision")
    return (str(stable) if stable else None), (str(canary) if canary else None)


def isvc_canary_percent(isvc: Mapping[str, Any]) -> int:
    """``canaryTrafficPercent``; absent means the latest revision takes everything."""
    value = _count(dig(isvc, "spec", "predictor", "canaryTrafficPercent"))
    return 100 if value is None else value


def isvc_promoted(isvc: Mapping[str, Any]) -> bool:
    return dig(isvc, "spec", "predictor", "canaryTrafficPercent") is None


def isvc_patch(percent: int, promote: bool = False) -> Obj:
    """``promote`` removes the field (KServe's promotion), anything else sets it."""
    return {"spec": {"predictor": {"canaryTrafficPercent": None if promote else percent}}}
