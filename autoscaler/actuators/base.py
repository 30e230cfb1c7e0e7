"""The write discipline every actuator shares.

Each ``apply`` of a decision is one or more rounds of read -> compare -> write:

1. **Plan** (the actuator's ``plan``): read the objects that carry the knob and compute, from
   what they hold now, the few fields that must change. Nothing differs: nothing is written.
2. **Write** each object that differs with a JSON merge patch (RFC 7386) of only our fields
   (annotations, or ``spec`` fields), ``fieldManager=kserve-autoscaler``, carrying the
   ``metadata.resourceVersion`` that was read. A concurrent writer in between makes that a 409,
   so a value computed from stale state is never written.
3. **On 409**: a new round on fresh state (``RetryPolicy.conflict_attempts`` rounds in all).
   Objects a previous round already brought to the decided values are equal now and not written
   again.

Around every API call (``ApiCaller``): the process-wide token bucket, retries with full-jitter
backoff on 429/5xx/timeouts (honouring a bounded ``Retry-After``), no retry on 403/404/422.
After each write, a core/v1 Event on the object (``events.py``).

``apply`` never raises for a per-target problem: it returns an ``ActuationOutcome`` with
``applied=False`` and the error kind, so the engine never assumes a failed write landed.

**Dry-run** (the actuator's ``dry_run`` flag, for ``autoscaler run --dry-run``, or the target's
``actuation.dryRun``): the same reads and the same plan, recorded in the outcome's ``changes``
with ``dry_run=True``; nothing is written and no Event is created. ``applied`` is then true only
when the objects already hold the decided values.

**Verified decisions** (``verify_every``, the Knative and KServe actuators): a decision found in
place (written, or already there, leader or dry-run follower) is trusted for ``verify_every``
seconds: ``settled`` answers the same decision again without I/O, so a steady fleet costs one
read per target per ``verify_every`` instead of one or two per tick through the shared client
rate limit. A different decision is applied at once. What waits up to ``verify_every``: noticing
that someone else changed the knob, and (Knative) that a new revision became the serving one.
The Deployment actuator needs no such trust: the status watch shows ``spec.replicas`` live.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, cast

from autoscaler.actuators.calls import ApiCaller, error_kind
from autoscaler.actuators.events import REASON_SCALED, EventRecorder, ObjectRef
from autoscaler.config.models import Actuation
from autoscaler.core.clock import Clock
from autoscaler.core.errors import ActuationError, ConflictError
from autoscaler.core.protocols import ActuationOutcome
from autoscaler.core.types import Decision, TargetRef
from autoscaler.kube import ApiClient

Mode = Literal["pin", "floor", "target"]
MODES: tuple[Mode, ...] = ("pin", "floor", "target")

#: Error kinds for targets this actuator will not drive (configuration, not failures).
REFUSALS = frozenset({"unsupported", "owned_elsewhere", "no_revision"})

#: How long the Knative and KServe actuators trust a decision found in place (see "Verified
#: decisions" above): at the default client rate limit (10 requests/s) a steady fleet of 1,000
#: targets then costs 8 reads/s, and a changed knob or a new serving revision waits at most 2 min.
VERIFY_EVERY_SECONDS = 120.0

#: Where a policy may put a per-pod target for ``target`` mode (``Proposal.inputs``).
TARGET_PER_POD = "target_per_pod"

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Change:
    """One field of one object: ``old`` as read (None: absent), ``new`` (None: removed)."""

    field: str
    old: object
    new: object


@dataclass(slots=True)
class Write:
    """A planned merge patch of one object, computed from the state read this round.

    ``send(body)`` sends ``body`` (``patch`` plus the resourceVersion precondition) and returns
    the object's new resourceVersion."""

    obj: ObjectRef
    changes: tuple[Change, ...]
    patch: Obj
    send: Callable[[Obj], Awaitable[str]]


@dataclass(slots=True)
class Plan:
    writes: list[Write] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def settings_of(actuation: object) -> tuple[Mode, bool]:
    """(mode, dry_run) from a target's ``Actuation`` (None: the model's defaults)."""
    if actuation is None:
        actuation = Actuation()
    mode = getattr(actuation, "mode", None)
    dry_run = getattr(actuation, "dry_run", False)
    if mode not in MODES:
        raise TypeError(f"not an Actuation: {actuation!r}")
    return cast(Mode, mode), bool(dry_run)


def same(old: object, new: object) -> bool:
    """Whether a stored value already equals the one we would write: numbers compare as numbers
    (annotation "3" equals 3 and "3.0"), anything else as is."""
    if old is None or new is None:
        return old is new
    try:
        a, b = float(str(old)), float(str(new))
    except ValueError:
        return str(old) == str(new)
    return a == b or (math.isnan(a) and math.isnan(b))


def target_per_pod(decision: Decision) -> float | None:
    value = decision.inputs.get(TARGET_PER_POD)
    return None if value is None else float(value)


def change_key(obj: ObjectRef, change: Change) -> str:
    return f"{obj.kind}/{obj.name}:{change.field}"


def _show(value: object) -> str:
    return "unset" if value is None else str(value)


def event_message(
    target: TargetRef, obj: ObjectRef, changes: tuple[Change, ...], decision: Decision, mode: Mode
) -> str:
    """``min-scale 1 -> 3, max-scale 1 -> 3 for InferenceService/llm/chat (policy max, mode pin):
    max(tokens=20, queue=23); guards: bounds 23 -> 16 (maxReplicas 16)``"""
    what = ", ".join(
        f"{c.field.rpartition('/')[2]} {_show(c.old)} -> {_show(c.new)}" for c in changes
    )
    why = decision.reason or "no reason given"
    text = f"{what} for {target} (policy {decision.policy}, mode {mode}): {why}"
    if decision.guards:
        clips = "; ".join(
            f"{g.guard} {_show(g.before)} -> {_show(g.after)} ({g.reason})" for g in decision.guards
        )
        text += f"; guards: {clips}"
    return text


def with_precondition(patch: Obj, resource_version: str) -> Obj:
    """``patch`` plus ``metadata.resourceVersion``: the server answers 409 if the object changed
    since it was read (a merge patch without it would apply to whatever is there now)."""
    body = dict(patch)
    meta = dict(body.get("metadata") or {})
    if resource_version:
        meta["resourceVersion"] = resource_version
    if meta:
        body["metadata"] = meta
    return body


def dig(obj: Mapping[str, Any] | None, *path: str) -> Any:
    """``obj[a][b]...``, or None when any step is missing or not a mapping."""
    cur: Any = obj
    for part in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


class WritingActuator:
    """The base of the Kubernetes actuators: ``apply`` runs the rounds described in the module
    docstring around the subclass's ``plan``. ``kinds``: the target kinds it can drive.

    ``dry_run`` may be flipped at run time (a follower that becomes leader)."""

    name = "base"
    kinds: tuple[str, ...] = ()
    #: (verb, group, resource) of every API call the actuator makes, for its RBAC role.
    api_calls: tuple[tuple[str, str, str], ...] = ()

    def __init__(
        self,
        api: ApiClient,
        clock: Clock,
        *,
        caller: ApiCaller | None = None,
        events: EventRecorder | None = None,
        dry_run: bool = False,
        verify_every: float | None = None,
    ) -> None:
        self.api = api
        self.clock = clock
        self.caller = caller if caller is not None else ApiCaller(clock)
        self.events = events if events is not None else EventRecorder(api, self.caller, clock)
        self.dry_run = dry_run
        self.log = logging.getLogger(f"autoscaler.actuators.{self.name}")
        # Trust a decision found in place (written, or already there) for this long without
        # reading the object again (``settled``); None: read on every apply. See the module
        # docstring's "Verified decisions".
        self.verify_every = verify_every
        self._verified: dict[str, tuple[tuple[object, ...], float]] = {}

    @staticmethod
    def _signature(decision: Decision, mode: Mode) -> tuple[object, ...]:
        """What ``plan`` reads from a decision: equal signatures need equal objects."""
        return (decision.replicas, mode, target_per_pod(decision))

    def settled(
        self, target: TargetRef, decision: Decision, actuation: object
    ) -> ActuationOutcome | None:
        """The outcome, without I/O, when this same decision was found in place less than
        ``verify_every`` seconds ago; else None (the control loop then runs ``apply``)."""
        if self.verify_every is None or target.kind not in self.kinds:
            return None
        known = self._verified.get(target.key)
        if known is None:
            return None
        mode, dry = settings_of(actuation)
        age = self.clock.now() - known[1]
        if known[0] != self._signature(decision, mode) or not 0 <= age < self.verify_every:
            return None
        return ActuationOutcome(
            target.key,
            applied=True,
            dry_run=dry or self.dry_run,
            detail=f"holds the decided values (verified {age:.0f}s ago)",
        )

    def forget(self, target: TargetRef) -> None:
        """The target is no longer managed: drop what is known of its objects."""
        self._verified.pop(target.key, None)

    async def plan(self, target: TargetRef, decision: Decision, mode: Mode) -> Plan:
        raise NotImplementedError

    async def close(self) -> None:
        """Nothing to release: the ApiClient belongs to the composition root."""

    async def apply(
        self, target: TargetRef, decision: Decision, actuation: object
    ) -> ActuationOutcome:
        """Read, compare and write (always: ``settled`` is the shortcut callers may ask
        first). With ``verify_every``, remembers a decision found in place."""
        started = self.clock.now()
        outcome = await self._apply(target, decision, actuation)
        if self.verify_every is not None:
            if outcome.applied:
                mode, _ = settings_of(actuation)
                self._verified[target.key] = (self._signature(decision, mode), started)
            else:
                self._verified.pop(target.key, None)
        return outcome

    async def _apply(
        self, target: TargetRef, decision: Decision, actuation: object
    ) -> ActuationOutcome:
        mode, dry = settings_of(actuation)
        dry = dry or self.dry_run
        key = target.key
        if target.kind not in self.kinds:
            detail = f"engine {self.name} drives {', '.join(self.kinds)}, not {target.kind}"
            return ActuationOutcome(
                key, applied=False, dry_run=dry, error="unsupported", detail=detail
            )
        if decision.replicas < 0:
            detail = f"refusing a negative replica count ({decision.replicas})"
            return ActuationOutcome(key, applied=False, dry_run=dry, error="invalid", detail=detail)
        changes: dict[str, tuple[object, object]] = {}
        notes: list[str] = []
        wrote = False
        last: ActuationError = ConflictError("no round ran")
        for _round in range(self.caller.retry.conflict_attempts):
            try:
                plan = await self.plan(target, decision, mode)
                notes.extend(n for n in plan.notes if n not in notes)
                if dry:
                    for w in plan.writes:
                        changes.update({change_key(w.obj, c): (c.old, c.new) for c in w.changes})
                    return ActuationOutcome(
                        key,
                        applied=not plan.writes,
                        dry_run=True,
                        detail=self._detail(notes, changes, dry=True),
                        changes=changes,
                    )
                for w in plan.writes:
                    body = with_precondition(w.patch, w.obj.resource_version)
                    new_rv = await self.caller(f"patch {w.obj}", partial(w.send, body))
                    wrote = True
                    changes.update({change_key(w.obj, c): (c.old, c.new) for c in w.changes})
                    self.log.info(
                        "%s: %s",
                        w.obj,
                        ", ".join(f"{c.field} {c.old} -> {c.new}" for c in w.changes),
                    )
                    note = await self._event(target, w, new_rv, decision, mode)
                    if note:
                        notes.append(note)
                return ActuationOutcome(
                    key,
                    applied=True,
                    wrote=wrote,
                    detail=self._detail(notes, changes, dry=False),
                    changes=changes,
                )
            except ConflictError as e:
                self.caller.retried["conflict"] += 1
                self.log.info("%s: %s; re-reading", key, e)
                last = e
            except ActuationError as e:
                return self._failed(key, e, wrote, changes, notes, dry)
        return self._failed(key, last, wrote, changes, notes, dry)

    def _failed(
        self,
        key: str,
        error: ActuationError,
        wrote: bool,
        changes: dict[str, tuple[object, object]],
        notes: list[str],
        dry: bool,
    ) -> ActuationOutcome:
        kind = error_kind(error)
        # A target we refuse by design repeats every tick: not a warning each time.
        level = logging.INFO if kind in REFUSALS else logging.WARNING
        self.log.log(level, "%s not applied (%s): %s", key, kind, error)
        return ActuationOutcome(
            key,
            applied=False,
            wrote=wrote,
            dry_run=dry,
            error=kind,
            detail="; ".join([str(error), *notes]),
            changes=changes,
        )

    async def _event(
        self, target: TargetRef, w: Write, new_rv: str, decision: Decision, mode: Mode
    ) -> str:
        obj = ObjectRef(
            w.obj.api_version, w.obj.kind, w.obj.namespace, w.obj.name, w.obj.uid, new_rv
        )
        message = event_message(target, obj, w.changes, decision, mode)
        try:
            await self.events.record(obj, REASON_SCALED, message)
        except ActuationError as e:
            self.log.warning("no Event for %s: %s", obj, e)
            return f"event not recorded for {obj} ({error_kind(e)})"
        return ""

    @staticmethod
    def _detail(
        notes: list[str], changes: Mapping[str, tuple[object, object]], *, dry: bool
    ) -> str:
        if changes:
            verb = "would change" if dry else "changed"
            what = ", ".join(f"{k} {_show(o)} -> {_show(n)}" for k, (o, n) in changes.items())
            head = f"{verb} {what}"
        else:
            head = "already holds the decided values"
        return "; ".join([head, *notes])
