"""The I/O side of rollouts: read the target and its revisions, ask the pure machine, write.

Each ``step(ref, rollout)`` runs rounds of read -> ``decide`` -> write until the machine waits
(at most ``max_transitions`` transitions per call). Writes are JSON merge patches carrying the
``resourceVersion`` that was read, through the injected API caller (the actuators' ``ApiCaller``
in the service: shared rate limit, retries, 409 as ``ConflictError``); on a conflict the round
starts again from a fresh read (``conflict_attempts`` times). The state annotation on the canary
Revision is written before the traffic it announces, so a crash in between is repaired by the
next read (the machine sees traffic that differs from the state's step and writes it again).

This package may not import the sources or the actuators (import-linter layers): the API caller,
the Event recorder, the analysis and the webhooks are injected by the composition root.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

from autoscaler.config.models import Target
from autoscaler.config.rollout import Analysis, Rollout, Webhook
from autoscaler.core.clock import Clock
from autoscaler.core.errors import ActuationError, ConflictError
from autoscaler.core.types import TargetRef
from autoscaler.kube import ApiClient, CustomObjectsApi
from autoscaler.traffic.rollout import objects as o
from autoscaler.traffic.rollout.machine import (
    CheckResult,
    HookResult,
    Observed,
    Plan,
    RevisionView,
    decide,
)
from autoscaler.traffic.rollout.metrics import RolloutMetrics
from autoscaler.traffic.rollout.state import STATE_ANNOTATION, RolloutState, StateError

log = logging.getLogger("autoscaler.traffic.rollout")

T = TypeVar("T")

MERGE_PATCH_KWARGS: dict[str, Any] = {
    "_content_type": "application/merge-patch+json",
    "field_manager": "kserve-autoscaler",
}

KSVC = ("serving.knative.dev", "v1", "services", "Service")
REVISION = ("serving.knative.dev", "v1", "revisions", "Revision")
ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService")

#: (verb, group, resource) of every API call the controller makes (for the RBAC role).
API_CALLS: tuple[tuple[str, str, str], ...] = (
    ("get", "serving.knative.dev", "services"),
    ("patch", "serving.knative.dev", "services"),
    ("get", "serving.knative.dev", "revisions"),
    ("patch", "serving.knative.dev", "revisions"),
    ("get", "serving.kserve.io", "inferenceservices"),
    ("patch", "serving.kserve.io", "inferenceservices"),
    ("create", "", "events"),
)


class Caller(Protocol):
    """``ApiCaller``'s shape: run one API request under the rate limit with retries; raises the
    core error tree (``ConflictError`` on 409)."""

    async def __call__(self, what: str, call: Callable[[], Awaitable[T]]) -> T: ...


class EventSink(Protocol):
    """``EventRecorder``'s shape: ``obj`` has api_version, kind, namespace, name, uid and
    resource_version (``EventObject``)."""

    async def record(
        self, obj: Any, reason: str, message: str, *, warning: bool = False, action: str = "Scale"
    ) -> None: ...


class Analyzer(Protocol):
    async def measure(
        self, target: TargetRef, canary: str, stable: str, analysis: Analysis
    ) -> CheckResult: ...


class HookRunner(Protocol):
    async def run(self, hooks: Iterable[Webhook], payload: Mapping[str, Any]) -> HookResult: ...


@dataclass(frozen=True, slots=True)
class EventObject:
    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(slots=True)
class StepResult:
    """What one ``step`` did for one target: the transitions (Event reasons) made, the state
    left in the cluster, why it waits, or the error kind that stopped it."""

    target: str
    state: RolloutState | None = None
    transitions: list[str] = field(default_factory=list)
    waiting: str = ""
    error: str = ""
    hold: bool = False


@dataclass(slots=True)
class _Read:
    target: Any  # the Service or InferenceService
    canary_obj: Any | None
    observed: Observed
    follows_latest: bool = False
    latest_ready: str = ""


class RolloutController:
    """Steps rollouts; see the module docstring. ``hold(key, on)`` is the engine's
    ``set_hold_nonzero`` (the scale-to-zero guard's "a rollout is in progress")."""

    api_calls = API_CALLS

    def __init__(
        self,
        api: ApiClient,
        clock: Clock,
        *,
        caller: Caller,
        events: EventSink,
        analyzer: Analyzer,
        hooks: HookRunner,
        metrics: RolloutMetrics,
        hold: Callable[[str, bool], None] | None = None,
        request_timeout: float = 5.0,
        conflict_attempts: int = 3,
        max_transitions: int = 8,
    ) -> None:
        self._co = CustomObjectsApi(api)
        self.clock = clock
        self.caller = caller
        self.events = events
        self.analyzer = analyzer
        self.hooks = hooks
        self.metrics = metrics
        self.hold = hold
        self.request_timeout = request_timeout
        self.conflict_attempts = conflict_attempts
        self.max_transitions = max_transitions
        self._held: set[str] = set()

    # -- running -----------------------------------------------------------------------------

    async def step_all(self, targets: Iterable[tuple[TargetRef, Target]]) -> list[StepResult]:
        """Step every target with a rollout spec (concurrently; one failing never stops the
        others). Targets whose rollout spec went away are released from the hold."""
        jobs = [(ref, t.rollout) for ref, t in targets if t.rollout is not None]
        outcomes = await asyncio.gather(
            *(self.step(ref, r) for ref, r in jobs), return_exceptions=True
        )
        results: list[StepResult] = []
        for (ref, _), out in zip(jobs, outcomes, strict=True):
            if isinstance(out, BaseException):
                if not isinstance(out, Exception):
                    raise out  # cancellation and the like are not ours to swallow
                log.error("%s: rollout step failed", ref, exc_info=out)
                self.metrics.errors.labels(ref.key, "exception").inc()
                out = StepResult(ref.key, error="exception", hold=ref.key in self._held)
            results.append(out)
        active = {ref.key for ref, _ in jobs}
        for key in sorted(self._held - active):
            self._set_hold(key, False)
        return results

    async def run(
        self,
        stop: asyncio.Event,
        interval: float,
        targets: Callable[[], Iterable[tuple[TargetRef, Target]]],
        is_leader: Callable[[], bool] = lambda: True,
    ) -> None:
        """Step every rollout each ``interval`` seconds until ``stop``; only the leader acts."""
        while not stop.is_set():
            if is_leader():
                try:
                    await self.step_all(targets())
                except Exception:  # a bug here must not take the service down
                    log.exception("rollout step failed")
            sleeper = asyncio.ensure_future(self.clock.sleep(interval))
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait([sleeper, stopper], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in (sleeper, stopper):
                    w.cancel()
                await asyncio.gather(sleeper, stopper, return_exceptions=True)

    async def step(self, ref: TargetRef, rollout: Rollout) -> StepResult:
        # An error keeps the hold as it was: a failed read mid-rollout must not let it go cold.
        result = StepResult(ref.key, hold=ref.key in self._held)
        conflicts = 0
        transitions = 0
        while transitions < self.max_transitions:
            try:
                again = await self._round(ref, rollout, result)
            except ConflictError as e:
                conflicts += 1
                self.metrics.conflicts.labels(ref.key).inc()
                log.info("%s: %s; re-reading", ref, e)
                if conflicts >= self.conflict_attempts:
                    result.error = "conflict"
                    break
                continue
            except ActuationError as e:
                result.error = str(getattr(e, "kind", "") or type(e).__name__)
                log.warning("%s: rollout step not applied (%s): %s", ref, result.error, e)
                self.metrics.errors.labels(ref.key, result.error).inc()
                break
            if not again:
                break
            transitions += 1
        self._set_hold(ref.key, result.hold)
        self.metrics.observe_state(ref.key, rollout, result.state)
        return result

    # -- one round -----------------------------------------------------------------------------

    async def _round(self, ref: TargetRef, rollout: Rollout, result: StepResult) -> bool:
        read = await self._read(ref)
        now = self.clock.now()
        obs = read.observed
        if obs.state is not None:  # what the object holds now (a restarted process shows it)
            self.metrics.weight.labels(ref.key).set(obs.canary_percent)
        plan = decide(rollout, obs, now)
        if plan.need == "analysis":
            assert obs.canary is not None and obs.stable is not None
            checks = await self.analyzer.measure(
                ref, obs.canary.name, obs.stable.name, rollout.analysis
            )
            plan = decide(rollout, obs, now, checks=checks)
        elif plan.need == "webhooks":
            assert obs.canary is not None and obs.stable is not None and obs.state is not None
            payload = {
                "target": ref.key,
                "kind": ref.kind,
                "canary": obs.canary.name,
                "stable": obs.stable.name,
                "step": obs.state.step + 1,
                "weight": rollout.weights()[obs.state.step],
            }
            hooks = await self.hooks.run(rollout.webhooks, payload)
            plan = decide(rollout, obs, now, hooks=hooks)
        if plan.idle == "no canary" and read.follows_latest and ref.kind == "Service":
            return await self._pin(ref, read, result)
        result.hold = plan.hold
        result.state = plan.state or obs.state
        if not plan.writes:
            result.waiting = plan.idle
            await self._notes(ref, read, plan, result)
            if plan.check:
                self.metrics.checks.labels(ref.key, plan.check).inc()
            return False
        await self._write(ref, read, plan)
        if plan.check:
            self.metrics.checks.labels(ref.key, plan.check).inc()
        await self._notes(ref, read, plan, result)
        return plan.again

    async def _read(self, ref: TargetRef) -> _Read:
        if ref.kind == "Service":
            target = await self._get(KSVC, ref.namespace, ref.name)
            hint = await self._stable_hint(
                ref, o.dig(target, "status", "latestCreatedRevisionName")
            )
            stable, canary = o.ksvc_names(target, hint[0])
            percent = o.ksvc_canary_percent(target, canary) if canary else 0
            follows = o.ksvc_follows_latest(target)
            promoted = bool(canary) and o.ksvc_promoted(target, str(canary))
            latest_ready = str(o.dig(target, "status", "latestReadyRevisionName") or "")
        elif ref.kind == "InferenceService":
            target = await self._get(ISVC, ref.namespace, ref.name)
            predictor = o.dig(target, "status", "components", "predictor") or {}
            candidate = predictor.get("latestCreatedRevision") or predictor.get(
                "latestReadyRevision"
            )
            hint = await self._stable_hint(ref, candidate)
            stable, canary = o.isvc_names(target, hint[0])
            percent = o.isvc_canary_percent(target)
            promoted = o.isvc_promoted(target)
            follows, latest_ready = False, ""
        else:
            raise _Unsupported(f"{ref.kind} has no revisions to roll out")
        canary_obj = hint[1] if hint[1] is not None and canary == hint[2] else None
        if canary and canary_obj is None and canary != stable:
            canary_obj = await self._get(REVISION, ref.namespace, canary)
        stable_view = None
        if stable and stable != canary:
            stable_obj = await self._get(REVISION, ref.namespace, stable, optional=True)
            stable_view = o.revision_view(stable_obj) if stable_obj else RevisionView(stable)
        canary_view = o.revision_view(canary_obj) if canary_obj else None
        state, error = _parse_state(canary_obj)
        observed = Observed(stable_view, canary_view, percent, state, error, promoted)
        return _Read(target, canary_obj, observed, follows, latest_ready)

    async def _stable_hint(
        self, ref: TargetRef, candidate: object
    ) -> tuple[str | None, Any | None, str | None]:
        """(the stable named by the candidate canary's state, the candidate Revision, its name):
        an ongoing rollout keeps its stable even when the Service's traffic says otherwise."""
        if not candidate:
            return None, None, None
        rev = await self._get(REVISION, ref.namespace, str(candidate), optional=True)
        if rev is None:
            return None, None, None
        state, _ = _parse_state(rev)
        return (state.stable if state else None), rev, str(candidate)

    # -- writes --------------------------------------------------------------------------------

    async def _write(self, ref: TargetRef, read: _Read, plan: Plan) -> None:
        obs = read.observed
        if plan.state is not None or plan.min_scale is not None:
            annotations: dict[str, Any] = {}
            if plan.state is not None:
                annotations[STATE_ANNOTATION] = plan.state.to_json()
            if plan.min_scale is not None:
                annotations[o.MIN_SCALE] = plan.min_scale or None
                if read.canary_obj is not None and o.MIN_SCALE_ALIAS in (
                    o.dig(read.canary_obj, "metadata", "annotations") or {}
                ):
                    annotations[o.MIN_SCALE_ALIAS] = None
            assert read.canary_obj is not None
            await self._patch(REVISION, read.canary_obj, {"metadata": {"annotations": annotations}})
        if plan.canary_percent is not None:
            state = plan.state or obs.state
            assert state is not None
            if ref.kind == "Service":
                traffic = o.ksvc_traffic(
                    state.stable, state.canary, plan.canary_percent, plan.promote
                )
                await self._patch(KSVC, read.target, {"spec": {"traffic": traffic}})
            else:
                patch = o.isvc_patch(plan.canary_percent, plan.promote)
                await self._patch(ISVC, read.target, patch)
            self.metrics.weight.labels(ref.key).set(plan.canary_percent)

    async def _pin(self, ref: TargetRef, read: _Read, result: StepResult) -> bool:
        """A Knative Service whose traffic follows the latest revision: pin it to the latest
        ready one, so the next template change becomes a canary instead of going live."""
        latest_ready = read.latest_ready
        created = o.dig(read.target, "status", "latestCreatedRevisionName") or latest_ready
        if not latest_ready or created != latest_ready:
            result.waiting = "traffic follows the latest revision; waiting for it to be ready"
            return False
        traffic = [
            {
                "revisionName": latest_ready,
                "percent": 100,
                "latestRevision": False,
                "tag": o.STABLE_TAG,
            }
        ]
        rv = await self._patch(KSVC, read.target, {"spec": {"traffic": traffic}})
        message = f"traffic pinned to {latest_ready} (100%) so new revisions start as canaries"
        await self._event(ref, read.target, rv, "RolloutTrafficPinned", message, False)
        result.transitions.append("RolloutTrafficPinned")
        result.waiting = "pinned"
        return False

    async def _notes(self, ref: TargetRef, read: _Read, plan: Plan, result: StepResult) -> None:
        rv = str(o.dig(read.target, "metadata", "resourceVersion") or "")
        for note in plan.notes:
            result.transitions.append(note.reason)
            self.metrics.transitions.labels(ref.key, note.reason).inc()
            level = logging.WARNING if note.warning else logging.INFO
            log.log(level, "%s: %s: %s", ref, note.reason, note.message)
            await self._event(ref, read.target, rv, note.reason, note.message, note.warning)

    async def _event(
        self, ref: TargetRef, obj: Any, rv: str, reason: str, message: str, warning: bool
    ) -> None:
        group, version, _, kind = KSVC if ref.kind == "Service" else ISVC
        meta = obj.get("metadata") or {}
        involved = EventObject(
            f"{group}/{version}", kind, ref.namespace, ref.name, str(meta.get("uid") or ""), rv
        )
        try:
            await self.events.record(involved, reason, message, warning=warning, action="Rollout")
        except ActuationError as e:  # an Event never undoes the write it describes
            log.warning("no Event for %s: %s", involved, e)

    async def _get(
        self, res: tuple[str, str, str, str], namespace: str, name: str, *, optional: bool = False
    ) -> Any:
        group, version, plural, _ = res
        try:
            return await self.caller(
                f"get {plural} {namespace}/{name}",
                partial(
                    self._co.get_namespaced_custom_object,
                    group,
                    version,
                    namespace,
                    plural,
                    name,
                    _request_timeout=self.request_timeout,
                ),
            )
        except ActuationError as e:
            if optional and getattr(e, "kind", "") == "not_found":
                return None
            raise

    async def _patch(self, res: tuple[str, str, str, str], obj: Any, patch: dict[str, Any]) -> str:
        group, version, plural, _ = res
        meta = obj.get("metadata") or {}
        body = dict(patch)
        body["metadata"] = {
            **(patch.get("metadata") or {}),
            "resourceVersion": str(meta.get("resourceVersion") or ""),
        }
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        out = await self.caller(
            f"patch {plural} {namespace}/{name}",
            partial(
                self._co.patch_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                name,
                body,
                **MERGE_PATCH_KWARGS,
                _request_timeout=self.request_timeout,
            ),
        )
        return str(o.dig(out, "metadata", "resourceVersion") or "")

    def _set_hold(self, key: str, hold: bool) -> None:
        # Set again on every step while held: a hot reload may have rebuilt the engine target.
        if not hold and key not in self._held:
            return
        if hold:
            self._held.add(key)
        else:
            self._held.discard(key)
        if self.hold is not None:
            try:
                self.hold(key, hold)
            except KeyError:  # not (or no longer) an engine target
                log.info("%s: not an engine target; scale-to-zero hold not set", key)


class _Unsupported(ActuationError):
    kind = "unsupported"


def _parse_state(rev: Mapping[str, Any] | None) -> tuple[RolloutState | None, str]:
    if rev is None:
        return None, ""
    text = (o.dig(rev, "metadata", "annotations") or {}).get(STATE_ANNOTATION)
    if text is None:
        return None, ""
    try:
        return RolloutState.from_json(str(text)), ""
    except StateError as e:
        return None, f"{STATE_ANNOTATION}: {e}"
