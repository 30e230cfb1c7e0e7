"""Token-rate limits, published where the agents read them (docs/token-limits.md).

Each target's decision carries a token-rate limit (``Decision.token_rate``, tokens/s for the
whole target) and its per-replica share (``token_rate_per_replica``), which each agent enforces
in front of its model server. ``TokenLimitsPublisher.apply`` publishes them twice:

- **HTTP**: ``TokenLimitsApi`` serves ``GET /tokens/{namespace}/{name}`` from the latest decision
  (``PublishedDecisions``), with ``"stale": true`` once that decision is older than the board's
  ``max_age_seconds``: the agent then keeps what it enforces, as it would if the service were
  down. 404 for a target we do not know.
- **ConfigMap** ``kserve-autoscaler-token-limits`` in the target's namespace, one key per target
  (``<name>.json``), for agents that watch it or mount it as a volume. It is created when
  missing and changed by a JSON merge patch of our key only, carrying the resourceVersion read
  (409: re-read and retry); an Event on the ConfigMap records each change.

The ConfigMap is written only when a limit moved by at least ``min_relative_change`` (5%) from
what the key holds, or appeared or went away, and at most once per ``min_interval_seconds`` per
target: the token guards slew the limit a little every tick, and a write per tick per target
would load the API server and every watching agent for nothing. The HTTP endpoint always has
the exact current values. The ConfigMap's state is cached per namespace (from what was read and
written) and re-read every ``resync_seconds``, so a steady tick makes no API call.

Dry-run (the publisher's ``dry_run``, or the target's ``actuation.dryRun``): the same
comparison, reported in the outcome; nothing is written. The HTTP endpoint still serves the
target, flagged ``"dryRun": true`` when the target's own actuation is dry-run, which agents
treat as advisory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aiohttp import web

from autoscaler.actuators.calls import MERGE_PATCH_KWARGS, ApiCaller, Rejected, error_kind
from autoscaler.actuators.events import EventRecorder, ObjectRef
from autoscaler.actuators.published import Published, PublishedDecisions
from autoscaler.core.clock import Clock
from autoscaler.core.errors import ActuationError, ConflictError
from autoscaler.core.protocols import ActuationOutcome
from autoscaler.core.types import Decision, TargetRef
from autoscaler.kube import ApiClient, CoreV1Api

log = logging.getLogger("autoscaler.actuators.tokens")

CONFIGMAP = "kserve-autoscaler-token-limits"
FORMAT_VERSION = 1
REASON_TOKENS = "AutoscalerTokenLimits"

API_CALLS: tuple[tuple[str, str, str], ...] = (
    ("get", "", "configmaps"),
    ("create", "", "configmaps"),
    ("patch", "", "configmaps"),
    ("create", "", "events"),
)

Obj = dict[str, Any]


def config_key(target: TargetRef | str) -> str:
    """The ConfigMap key of a target: ``<name>.json`` (keys allow ``[-._a-zA-Z0-9]``, and
    Kubernetes names are DNS subdomains)."""
    name = target.name if isinstance(target, TargetRef) else target.rpartition("/")[2]
    return f"{name}.json"


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 3)


def _rfc3339(when: float) -> str:
    return datetime.fromtimestamp(when, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Limits:
    """What an agent enforces for one target."""

    token_rate: float | None
    token_rate_per_replica: float | None
    replicas: int

    @classmethod
    def of(cls, decision: Decision) -> Limits:
        return cls(
            _finite(decision.token_rate),
            _finite(decision.token_rate_per_replica),
            decision.replicas,
        )

    @classmethod
    def parse(cls, text: str | None) -> Limits | None:
        """From a ConfigMap value; None when absent or unreadable (then it is rewritten)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(
                _finite(data["tokenRate"]) if data.get("tokenRate") is not None else None,
                _finite(data["tokenRatePerReplica"])
                if data.get("tokenRatePerReplica") is not None
                else None,
                int(data.get("replicas", 0)),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    @property
    def limited(self) -> bool:
        return self.token_rate is not None or self.token_rate_per_replica is not None

    def differs(self, old: Limits | None, threshold: float) -> bool:
        """A change worth a write: a limit appeared or went away, or one moved by at least
        ``threshold`` relative to ``old`` (the replica count alone is not a change)."""
        if old is None:
            return True
        for new_v, old_v in (
            (self.token_rate, old.token_rate),
            (self.token_rate_per_replica, old.token_rate_per_replica),
        ):
            if (new_v is None) != (old_v is None):
                return True
            if new_v is not None and old_v is not None:
                base = max(abs(old_v), 1e-9)
                if abs(new_v - old_v) / base >= threshold:
                    return True
        return False

    def document(self, target: str, policy: str, now: float) -> str:
        body = {
            "version": FORMAT_VERSION,
            "target": target,
            "tokenRate": self.token_rate,
            "tokenRatePerReplica": self.token_rate_per_replica,
            "replicas": self.replicas,
            "policy": policy,
            "changedAt": _rfc3339(now),
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"))


@dataclass(slots=True)
class _Cached:
    """A namespace's ConfigMap as last read or written (None: it does not exist)."""

    obj: Obj | None
    read_at: float


class TokenLimitsPublisher:
    """The ``Actuator`` for token-rate limits (see the module docstring)."""

    name = "tokens"
    api_calls = API_CALLS

    def __init__(
        self,
        api: ApiClient,
        clock: Clock,
        *,
        decisions: PublishedDecisions,
        caller: ApiCaller | None = None,
        events: EventRecorder | None = None,
        dry_run: bool = False,
        min_relative_change: float = 0.05,
        min_interval_seconds: float = 10.0,
        resync_seconds: float = 300.0,
    ) -> None:
        if min_relative_change < 0 or min_interval_seconds < 0 or resync_seconds <= 0:
            raise ValueError("thresholds must be >= 0 and resync_seconds > 0")
        self.clock = clock
        self.decisions = decisions
        self.caller = caller if caller is not None else ApiCaller(clock)
        self.events = events if events is not None else EventRecorder(api, self.caller, clock)
        self.dry_run = dry_run
        self.min_relative_change = min_relative_change
        self.min_interval_seconds = min_interval_seconds
        self.resync_seconds = resync_seconds
        self._api = api
        self._core = CoreV1Api(api)
        self._cache: dict[str, _Cached] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._written_at: dict[str, float] = {}  # target key -> when we last wrote its key

    async def close(self) -> None:
        """Nothing to release: the ApiClient belongs to the composition root."""

    def forget(self, target: TargetRef) -> None:
        """The target is no longer managed: stop serving it (its ConfigMap key stays, and the
        agents keep its last limits, as they do when the service is unreachable)."""
        self.decisions.forget(target.key)
        self._written_at.pop(target.key, None)

    async def apply(
        self, target: TargetRef, decision: Decision, actuation: object
    ) -> ActuationOutcome:
        target_dry = bool(getattr(actuation, "dry_run", False))
        dry = target_dry or self.dry_run
        self.decisions.publish(decision, dry_run=target_dry)
        key = target.key
        lock = self._locks.setdefault(target.namespace, asyncio.Lock())
        last: ActuationError = ConflictError("no round ran")
        async with lock:  # targets of one namespace share one ConfigMap: one writer at a time
            for _round in range(self.caller.retry.conflict_attempts):
                try:
                    return await self._round(target, decision, dry)
                except ConflictError as e:
                    self.caller.retried["conflict"] += 1
                    self._cache.pop(target.namespace, None)
                    log.info("%s: %s; re-reading", key, e)
                    last = e
                except Rejected as e:
                    if e.kind == "not_found":  # deleted under us: read again, then create
                        self._cache.pop(target.namespace, None)
                        last = e
                        continue
                    return self._failed(key, e, dry)
                except ActuationError as e:
                    return self._failed(key, e, dry)
        return self._failed(key, last, dry)

    def _failed(self, key: str, error: ActuationError, dry: bool) -> ActuationOutcome:
        kind = error_kind(error)
        log.warning("%s: token limits not written (%s): %s", key, kind, error)
        return ActuationOutcome(key, applied=False, dry_run=dry, error=kind, detail=str(error))

    async def _round(self, target: TargetRef, decision: Decision, dry: bool) -> ActuationOutcome:
        key, ns, now = target.key, target.namespace, self.clock.now()
        cm = await self._configmap(ns, now)
        data = (cm or {}).get("data") or {}
        field = config_key(target)
        old_text = data.get(field)
        old = Limits.parse(old_text)
        new = Limits.of(decision)
        if old is None and old_text is None and not new.limited:
            return ActuationOutcome(key, applied=True, dry_run=dry, detail="no token-rate limit")
        if not new.differs(old, self.min_relative_change):
            return ActuationOutcome(key, applied=True, dry_run=dry, detail="limits in place")
        since = now - self._written_at.get(key, -math.inf)
        if old is not None and old.limited == new.limited and since < self.min_interval_seconds:
            detail = f"limits changed; next write in {self.min_interval_seconds - since:.1f}s"
            return ActuationOutcome(key, applied=False, dry_run=dry, detail=detail)
        text = new.document(key, decision.policy, now)
        changes: dict[str, tuple[object, object]] = {
            f"ConfigMap/{CONFIGMAP}:data.{field}": (old_text, text)
        }
        what = f"{field}: tokenRate {_show(old, 'token_rate')} -> {new.token_rate}, "
        what += f"tokenRatePerReplica {_show(old, 'token_rate_per_replica')} -> "
        what += f"{new.token_rate_per_replica}"
        if dry:
            return ActuationOutcome(
                key, applied=False, dry_run=True, detail=f"would set {what}", changes=changes
            )
        if cm is None:
            written = await self._create(ns, field, text)
        else:
            rv = str((cm.get("metadata") or {}).get("resourceVersion") or "")
            written = await self._patch(ns, field, text, rv)
        self._cache[ns] = _Cached(written, now)
        self._written_at[key] = now
        log.info("ConfigMap %s/%s %s (%s)", ns, CONFIGMAP, what, decision.reason)
        detail = f"set {what}"
        ref = ObjectRef.of(written, "v1", "ConfigMap")
        try:
            await self.events.record(ref, REASON_TOKENS, f"{what} for {target}: {decision.reason}")
        except ActuationError as e:
            detail += f"; event not recorded ({error_kind(e)})"
        return ActuationOutcome(key, applied=True, wrote=True, detail=detail, changes=changes)

    async def _configmap(self, namespace: str, now: float) -> Obj | None:
        cached = self._cache.get(namespace)
        if cached is not None and now - cached.read_at < self.resync_seconds:
            return cached.obj
        obj: Obj | None
        try:
            obj = await self._send(
                f"get configmaps {namespace}/{CONFIGMAP}",
                partial(self._core.read_namespaced_config_map, CONFIGMAP, namespace),
            )
        except Rejected as e:
            if e.kind != "not_found":
                raise
            obj = None
        self._cache[namespace] = _Cached(obj, now)
        return obj

    async def _create(self, namespace: str, field: str, text: str) -> Obj:
        body: Any = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": CONFIGMAP,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "kserve-autoscaler"},
            },
            "data": {field: text},
        }
        # 409 AlreadyExists (another writer created it first) is a ConflictError: re-read, patch
        return await self._send(
            f"create configmaps {namespace}/{CONFIGMAP}",
            partial(
                self._core.create_namespaced_config_map,
                namespace,
                body,
                field_manager=MERGE_PATCH_KWARGS["field_manager"],
            ),
        )

    async def _patch(self, namespace: str, field: str, text: str, rv: str) -> Obj:
        body: Any = {"data": {field: text}}
        if rv:
            body["metadata"] = {"resourceVersion": rv}
        return await self._send(
            f"patch configmaps {namespace}/{CONFIGMAP}",
            partial(
                self._core.patch_namespaced_config_map,
                CONFIGMAP,
                namespace,
                body,
                **MERGE_PATCH_KWARGS,
            ),
        )

    async def _send(self, what: str, call: partial[Any]) -> Obj:
        """One request through the shared caller; the answer as the API's JSON (camelCase)."""
        model = await self.caller(what, partial(call, _request_timeout=self.caller.request_timeout))
        obj: Obj = self._api.sanitize_for_serialization(model)
        return obj


def _show(limits: Limits | None, attr: str) -> str:
    return "unset" if limits is None else str(getattr(limits, attr))


# --- the HTTP endpoint --------------------------------------------------------------------------


class TokenLimitsApi:
    """``GET /tokens/{namespace}/{name}``: the target's current limits (docs/token-limits.md)::

    {"version": 1, "target": "llm/chat", "tokenRate": 35000.0,
     "tokenRatePerReplica": 2187.5, "replicas": 16, "policy": "max",
     "ts": 1700000390.0, "ageSeconds": 0.4, "stale": false, "dryRun": false}
    """

    PATH = "/tokens/{namespace}/{name}"

    def __init__(self, decisions: PublishedDecisions) -> None:
        self.decisions = decisions

    def routes(self) -> list[web.RouteDef]:
        return [web.get(self.PATH, self.handle)]

    def body(self, entry: Published) -> dict[str, Any]:
        limits = Limits.of(entry.decision)
        return {
            "version": FORMAT_VERSION,
            "target": entry.key,
            "tokenRate": limits.token_rate,
            "tokenRatePerReplica": limits.token_rate_per_replica,
            "replicas": limits.replicas,
            "policy": entry.decision.policy,
            "ts": entry.decision.ts,
            "ageSeconds": round(self.decisions.age(entry), 3),
            "stale": self.decisions.is_stale(entry),
            "dryRun": entry.dry_run,
        }

    async def handle(self, request: web.Request) -> web.Response:
        key = f"{request.match_info['namespace']}/{request.match_info['name']}"
        entry = self.decisions.get(key)
        if entry is None:
            body = {"error": "unknown", "target": key, "message": "no decision for this target"}
            return web.json_response(body, status=404)
        return web.json_response(self.body(entry), headers={"Cache-Control": "no-store"})


def limits_from_configmap(data: Mapping[str, str], name: str) -> Limits | None:
    """What an agent reads from the ConfigMap's ``data`` for target ``name`` (a helper for the
    agent and the tests; the format is in docs/token-limits.md)."""
    return Limits.parse(data.get(config_key(name)))
