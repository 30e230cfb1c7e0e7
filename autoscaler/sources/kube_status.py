"""The Kubernetes status source: replicas, readiness and cold starts of each target's pods.

One list+watch per (kind, namespace), shared by every target of the namespace: all the pods of
the namespace, and (when a Deployment target lives there) all its Deployments, each read with
kubernetes-asyncio (JSON lines read raw) as client-go's reflector does: list, then watch from
the list's resourceVersion with bookmarks; a watch that ends is resumed from the last
resourceVersion seen; a 410 Gone (the revision was compacted) relists; a relist also runs every
``resync_seconds`` (stretched by a random ``resync_jitter`` fraction, drawn afresh after each
list, so the watches of a process do not all relist at the same moment) as a guard against
missed events; errors back off exponentially with jitter on the injected clock. Events are
filtered and dispatched to targets client-side (an index on one equality requirement of each
target's selector keeps that cheap). A watch per target would hold one pooled connection each:
kubernetes-asyncio's pool has 100, so from about 50 targets on every connection would be held
by a watch and the actuators' requests would wait forever (docs/kubernetes-status.md). The pods
go into the shared ``PodIndex`` (pod scrape reads the ready ones from it).

Which pods belong to a target:

    InferenceService  serving.kserve.io/inferenceservice=<name>,component=predictor
                      (both modes; transformer and explainer pods are not the scaled component)
    Service (Knative) serving.knative.dev/service=<name> (every revision's pods)
    Deployment        the Deployment's spec.selector (matchLabels and matchExpressions), read
                      from the namespace's Deployment watch, so a changed selector is followed
    any kind          an explicit label map (``pod_labels``, from the policy's
                      ``signals.scrape.podLabels``) overrides the above

What ``collect`` reports per target, with ``ts`` = the clock's now (a healthy watch is current):

    replicas           Deployment: spec.replicas (what is being asked for now). InferenceService
                       and Knative Service: the number of pods that are not terminating. The
                       desired count of those lives in the KPA or the Deployment Knative and
                       KServe manage; their pods follow it within seconds (a pod is created
                       Pending even when it cannot be scheduled), and counting pods needs no
                       extra RBAC or watch per target.
    replicas_ready     pods not terminating whose Ready condition is True
    replicas_starting  pods not terminating and not ready (Pending, pulling, loading the model)
    cold_start_seconds the latest measured creation -> first Ready of a pod (metav1.Time has
                       one-second resolution); measured once per pod, when it is first seen
                       ready, so a pod that flaps later does not count its age as a cold start.
                       Pods already ready when the source starts are measured from their status.

Pods in phase Succeeded or Failed (evicted, completed) are not replicas and are left out.

While a target's watch is not healthy (the API server is down, 403, 404 for a Deployment that
does not exist, or never synced) it reports no observation for that target, only errors: missing
data, never zero. Errors are counted per (target, kind) in the report, each failed call once;
a target that stays unhealthy reports at least one error per collect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp

from autoscaler.core import signals as sig
from autoscaler.core.clock import Clock
from autoscaler.core.protocols import SourceReport
from autoscaler.core.types import Observation, TargetRef
from autoscaler.kube import ApiClient, AppsV1Api, CoreV1Api
from autoscaler.sources.pods import PodIndex, PodInfo

log = logging.getLogger("autoscaler.sources.kube_status")

KSERVE_LABEL = "serving.kserve.io/inferenceservice"
KSERVE_COMPONENT_LABEL = "component"
KNATIVE_SERVICE_LABEL = "serving.knative.dev/service"

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class KubeStatusSettings:
    resync_seconds: float = 300.0  # relist this often even when the watch is healthy
    resync_jitter: float = 0.2  # ... stretched by up to this fraction, drawn per list
    watch_timeout_seconds: int = 290  # server-side timeoutSeconds of one watch request
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    request_timeout_seconds: float = 30.0  # lists and the connection of a watch
    list_page_size: int = 500  # objects per page of a list (client-go's default)
    initial_sync_timeout_seconds: float = 5.0  # a first collect waits this long for a list


# --- parsing ------------------------------------------------------------------------------------


def parse_time(value: Any) -> float | None:
    """RFC 3339 (``2024-05-01T12:00:00Z``, fractions and offsets too) -> UNIX seconds."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None  # Kubernetes times are always UTC with a zone; refuse to guess
    return when.timestamp()


def pod_info(obj: Mapping[str, Any]) -> PodInfo:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    ready, ready_at = False, None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            ready = cond.get("status") == "True"
            ready_at = parse_time(cond.get("lastTransitionTime")) if ready else None
    return PodInfo(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        ip=status.get("podIP") or None,
        ready=ready,
        created=parse_time(meta.get("creationTimestamp")),
        started=parse_time(status.get("startTime")),
        ready_at=ready_at,
        deleting=bool(meta.get("deletionTimestamp")),
        labels=dict(meta.get("labels") or {}),
    )


def _terminal(obj: Mapping[str, Any]) -> bool:
    return (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def format_selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def label_selector_string(selector: Mapping[str, Any]) -> str | None:
    """A ``metav1.LabelSelector`` as a query string; None for an empty (match-all) selector,
    which the source refuses rather than watching every pod of the namespace."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), sorted(expr.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts) or None


def pod_selector(target: TargetRef, override: Mapping[str, str] | None = None) -> str | None:
    """The label selector of a target's pods; None for a Deployment (read from the object)."""
    if override:
        return format_selector(override)
    if target.kind == "InferenceService":
        return format_selector({KSERVE_LABEL: target.name, KSERVE_COMPONENT_LABEL: "predictor"})
    if target.kind == "Service":
        return format_selector({KNATIVE_SERVICE_LABEL: target.name})
    if target.kind == "Deployment":
        return None
    raise ValueError(f"unsupported target kind {target.kind!r}")


# --- one list+watch -----------------------------------------------------------------------------


class _HttpError(Exception):
    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message[:200]}")
        self.status = status
        self.retry_after = retry_after


class _Expired(Exception):
    """410 Gone: the resourceVersion we hold is compacted away; relist."""


class _Dropped(Exception):
    """The watch stream broke after it was established."""


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, _HttpError):
        return {403: "forbidden", 404: "not_found"}.get(exc.status, "http_error")
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, (aiohttp.ClientError, OSError, _Dropped)):
        return "connection"
    if isinstance(exc, (ValueError, KeyError, TypeError)):
        return "parse_error"
    return "error"


async def _http_error(resp: aiohttp.ClientResponse) -> _HttpError:
    try:
        body = await resp.text()
        message = json.loads(body).get("message", body)
    except (ValueError, aiohttp.ClientError, AttributeError):
        message = resp.reason or ""
    retry_after = None
    with contextlib.suppress(TypeError, ValueError):
        retry_after = float(resp.headers.get("Retry-After", ""))
    return _HttpError(resp.status, str(message), retry_after)


ListCall = Callable[..., Awaitable[Any]]


class _Informer:
    """List, then watch from the list's resourceVersion, forever; hands objects to callbacks."""

    def __init__(
        self,
        what: str,
        call: ListCall,
        kwargs: Mapping[str, Any],
        on_replace: Callable[[list[Obj]], None],
        on_event: Callable[[str, Obj], None],
        owner: KubeStatusSource,
    ) -> None:
        self.what = what
        self._call = call
        self._kwargs = dict(kwargs)
        self._on_replace = on_replace
        self._on_event = on_event
        self._owner = owner
        self.rv: str | None = None
        self.last_list: float | None = None
        self.resync_after = self._owner.settings.resync_seconds  # redrawn after every list
        self.healthy = False
        self.error_kind: str | None = None
        self.failures: dict[str, int] = {}  # kind -> failed calls since the last collect
        self.settled = asyncio.Event()  # the first list succeeded or failed
        self._resync = False
        self._progress = False  # the current watch stream delivered an event
        self._resp: aiohttp.ClientResponse | None = None

    @property
    def _s(self) -> KubeStatusSettings:
        return self._owner.settings

    def resync_due(self, now: float) -> bool:
        return self.last_list is not None and now - self.last_list >= self.resync_after

    def request_resync(self) -> None:
        """Relist now: end the current watch stream (it is resumed by a list)."""
        self._resync = True
        if self._resp is not None:
            self._resp.close()

    def take_failures(self) -> dict[str, int]:
        out, self.failures = self.failures, {}
        return out

    async def run(self) -> None:
        backoff = self._s.backoff_initial_seconds
        need_list = True
        drops = 0  # consecutive broken streams that delivered nothing
        while True:
            try:
                if need_list or self._resync or self.resync_due(self._owner.clock.now()):
                    relist = self.last_list is not None
                    self._resync = False
                    await self._list()
                    need_list = False
                    if relist:
                        self._owner.count("relists")
                await self._watch()
                backoff = self._s.backoff_initial_seconds
                drops = 0
                continue
            except _Expired:
                self._owner.count("expired")
                need_list = True
                continue
            except asyncio.CancelledError:
                raise
            except _Dropped as exc:
                if self._resync:
                    continue  # we closed the stream ourselves to relist
                self._owner.count("watch_drops")
                drops = 1 if self._progress else drops + 1
                if drops == 1:
                    continue  # a broken stream is routine: resume from the last revision now
                error: Exception = exc
            except Exception as exc:
                drops = 0
                error = exc
            self._fail(error)
            delay = backoff * self._owner.rng.uniform(0.5, 1.0)
            if isinstance(error, _HttpError) and error.retry_after:
                delay = max(delay, error.retry_after)
            backoff = min(backoff * 2, self._s.backoff_max_seconds)
            await self._owner.clock.sleep(delay)

    def _fail(self, exc: BaseException) -> None:
        kind = _error_kind(exc)
        if self.error_kind != kind:
            log.warning("%s: %s (%s)", self.what, kind, exc)
        self.healthy = False
        self.error_kind = kind
        self.failures[kind] = self.failures.get(kind, 0) + 1
        self.settled.set()
        self._owner.count(f"errors_{kind}")

    def _ok(self) -> None:
        if self.error_kind is not None:
            log.info("%s: recovered", self.what)
        self.healthy = True
        self.error_kind = None

    async def _list(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._s.request_timeout_seconds)
        items: list[Obj] = []
        token: str | None = None
        while True:  # in pages, as client-go does: a namespace's pods can be megabytes of JSON
            page: dict[str, Any] = {"limit": self._s.list_page_size}
            if token:
                page["_continue"] = token
            resp = await self._call(
                **self._kwargs, **page, _preload_content=False, _request_timeout=timeout
            )
            try:
                if resp.status != 200:
                    raise await _http_error(resp)
                data = json.loads(await resp.read())
            finally:
                resp.release()
            items.extend(data.get("items") or [])
            meta = data.get("metadata") or {}
            token = meta.get("continue") or None
            if token is None:
                break
        self._on_replace(items)
        self.rv = str(data["metadata"]["resourceVersion"])
        self.last_list = self._owner.clock.now()
        self.resync_after = self._s.resync_seconds * (
            1.0 + self._owner.rng.uniform(0.0, self._s.resync_jitter)
        )
        self._ok()
        self.settled.set()
        self._owner.count("lists")

    async def _watch(self) -> None:
        """One watch request, until the server ends it."""
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self._s.request_timeout_seconds,
            sock_read=self._s.watch_timeout_seconds + self._s.request_timeout_seconds,
        )
        resp = await self._call(
            **self._kwargs,
            watch=True,
            resource_version=self.rv,
            allow_watch_bookmarks=True,
            timeout_seconds=self._s.watch_timeout_seconds,
            _preload_content=False,
            _request_timeout=timeout,
        )
        self._resp = resp
        self._progress = False
        try:
            if self._resync:
                raise _Dropped("closed for a resync")
            if resp.status != 200:
                raise await _http_error(resp)
            self._ok()
            self._owner.count("watches")
            while True:
                try:
                    line = await resp.content.readline()
                except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as e:
                    raise _Dropped(str(e)) from e
                if not line:
                    if self._resync:
                        raise _Dropped("closed for a resync")
                    return
                if not line.endswith(b"\n"):
                    raise _Dropped("stream cut mid-event")
                self._handle(json.loads(line))
                self._progress = True
        finally:
            self._resp = None
            resp.release()

    def _handle(self, event: Mapping[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired(obj.get("message", ""))
            raise _HttpError(int(obj.get("code") or 500), str(obj.get("message", "")))
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self._on_event(kind, obj)
        elif kind != "BOOKMARK":
            raise ValueError(f"unknown watch event type {kind!r}")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self.rv = str(rv)
        self._owner.count("bookmarks" if kind == "BOOKMARK" else "events")


# --- client-side label selection ----------------------------------------------------------------

Requirement = tuple[str, str, frozenset[str]]  # (key, operator, values)


def requirements(selector: Mapping[str, Any]) -> tuple[Requirement, ...] | None:
    """A ``metav1.LabelSelector`` as requirements to match pods with on our side; None for an
    empty (match-all) selector, refused like ``label_selector_string`` refuses it."""
    reqs: list[Requirement] = [
        (str(k), "In", frozenset([str(v)]))
        for k, v in sorted((selector.get("matchLabels") or {}).items())
    ]
    for expr in selector.get("matchExpressions") or []:
        op = str(expr.get("operator"))
        # An operator we do not know matches nothing (the API server rejects those anyway).
        reqs.append((str(expr.get("key")), op, frozenset(str(v) for v in expr.get("values") or [])))
    return tuple(reqs) or None


def matches(reqs: Sequence[Requirement], labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics (``NotIn`` holds for a missing key)."""
    for key, op, values in reqs:
        value = labels.get(key)
        if op == "In":
            ok = value in values
        elif op == "NotIn":
            ok = value is None or value not in values
        elif op == "Exists":
            ok = value is not None
        elif op == "DoesNotExist":
            ok = value is None
        else:
            ok = False
        if not ok:
            return False
    return True


def _index_key(reqs: Sequence[Requirement]) -> tuple[str, str] | None:
    """One ``key=value`` every matching pod carries: the index that keeps dispatch cheap."""
    for key, op, values in reqs:
        if op == "In" and len(values) == 1:
            return key, next(iter(values))
    return None


def pod_requirements(
    target: TargetRef, override: Mapping[str, str] | None = None
) -> tuple[Requirement, ...] | None:
    """``pod_selector`` as requirements; None for a Deployment (read from the object)."""
    if override:
        return requirements({"matchLabels": override})
    if target.kind == "InferenceService":
        return requirements(
            {"matchLabels": {KSERVE_LABEL: target.name, KSERVE_COMPONENT_LABEL: "predictor"}}
        )
    if target.kind == "Service":
        return requirements({"matchLabels": {KNATIVE_SERVICE_LABEL: target.name}})
    if target.kind == "Deployment":
        return None
    raise ValueError(f"unsupported target kind {target.kind!r}")


# --- one target ---------------------------------------------------------------------------------


class _Target:
    """A target's pods (and, for a Deployment, what its Deployment asks for), fed by the
    namespace's shared watches."""

    def __init__(self, owner: KubeStatusSource, ns: _Namespace, target: TargetRef) -> None:
        self.owner = owner
        self.ns = ns
        self.target = target
        self.pods: dict[str, PodInfo] = {}
        self._uids: dict[str, str] = {}  # pod name -> uid
        self._measured: set[str] = set()  # uids whose cold start is recorded
        self.cold_start: tuple[float, float] | None = None  # (ready_at, seconds), latest
        self.desired: int | None = None
        self.exists = True  # False when a Deployment target is not there
        self.controlled = False  # the Deployment has a controller (KServe, say)
        self.override = owner.pod_labels.get(target.key)
        self.reqs: tuple[Requirement, ...] | None = pod_requirements(target, self.override)
        self.index_key: tuple[str, str] | None = (
            None if self.reqs is None else _index_key(self.reqs)
        )

    @property
    def pod_informer(self) -> _Informer:
        return self.ns.pod_informer

    @property
    def deployment(self) -> _Informer | None:
        return self.ns.deployment_informer if self.target.kind == "Deployment" else None

    def informers(self) -> list[_Informer]:
        return [i for i in (self.deployment, self.pod_informer) if i is not None]

    # Deployment

    def deployment_seen(self, obj: Obj | None) -> None:
        if obj is None:
            self.exists, self.desired, self.controlled = False, None, False
            reqs = None
        else:
            spec = obj.get("spec") or {}
            self.exists = True
            owners = (obj.get("metadata") or {}).get("ownerReferences") or []
            self.controlled = any(o.get("controller") for o in owners)
            replicas = spec.get("replicas")
            self.desired = int(replicas) if replicas is not None else 1  # the API's default
            reqs = (
                requirements({"matchLabels": self.override})
                if self.override
                else requirements(spec.get("selector") or {})
            )
        if reqs != self.reqs:
            self.ns.reselect(self, reqs)

    # Pods (the namespace dispatches them; it publishes after a batch)

    def clear_pods(self) -> None:
        self.pods.clear()
        self._uids.clear()

    def forget_unlisted(self) -> None:
        self._measured &= set(self._uids.values())

    def remove_pod(self, name: str) -> None:
        self.pods.pop(name, None)
        uid = self._uids.pop(name, None)
        self._measured.discard(uid or "")

    def add_pod(self, info: PodInfo, uid: str) -> None:
        self.pods[info.name] = info
        self._uids[info.name] = uid
        if info.ready and uid not in self._measured:
            self._measured.add(uid)
            if info.ready_at is not None and info.created is not None:
                seconds = info.ready_at - info.created
                if seconds >= 0 and (
                    self.cold_start is None or info.ready_at >= self.cold_start[0]
                ):
                    self.cold_start = (info.ready_at, seconds)

    def publish(self) -> None:
        self.owner.pod_index.set_pods(self.target.key, list(self.pods.values()))

    # Reporting

    def healthy(self) -> bool:
        if self.target.kind == "Deployment":
            dep = self.deployment
            if dep is None or not dep.healthy or not self.exists:
                return False
        return self.reqs is not None and self.pod_informer.healthy

    def watched_replicas(self) -> int | None:
        """spec.replicas as the watch last saw it, while the watch is healthy and no other
        controller owns the Deployment (else None)."""
        if self.target.kind != "Deployment" or self.controlled or not self.healthy():
            return None
        return self.desired

    def observe(
        self, now: float, report: SourceReport, failures: Mapping[str, int] | None = None
    ) -> None:
        key = self.target.key
        failures = dict(failures or {})
        if not self.healthy():
            if not failures:
                last = next((i.error_kind for i in self.informers() if i.error_kind), None)
                if self.target.kind == "Deployment" and not self.exists and last is None:
                    last = "not_found"
                failures[last or "not_synced"] = 1
            for kind, n in sorted(failures.items()):
                report.error(key, kind, n)
            return
        for kind, n in sorted(failures.items()):
            report.error(key, kind, n)  # failed and recovered since the last collect
        live = [p for p in self.pods.values() if not p.deleting]
        ready = sum(1 for p in live if p.ready)
        replicas = self.desired if self.target.kind == "Deployment" else len(live)
        obs = report.observations
        if replicas is not None:
            obs.append(Observation(key, sig.REPLICAS, float(replicas), now))
        obs.append(Observation(key, sig.REPLICAS_READY, float(ready), now))
        obs.append(Observation(key, sig.REPLICAS_STARTING, float(len(live) - ready), now))
        if self.cold_start is not None:
            obs.append(Observation(key, sig.COLD_START_SECONDS, self.cold_start[1], now))


def _deployment_summary(obj: Obj) -> Obj:
    """What a target needs of a Deployment (a whole one is ~5 KB of Python objects, kept for
    every Deployment of the namespace)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    owners = [
        {"controller": True} for o in meta.get("ownerReferences") or [] if o.get("controller")
    ]
    return {
        "metadata": {"name": meta.get("name", ""), "ownerReferences": owners},
        "spec": {"replicas": spec.get("replicas"), "selector": spec.get("selector") or {}},
    }


# --- one namespace ------------------------------------------------------------------------------


class _Namespace:
    """The shared watches of one namespace and the dispatch of their objects to its targets."""

    def __init__(self, owner: KubeStatusSource, namespace: str) -> None:
        self.owner = owner
        self.namespace = namespace
        self.targets: dict[TargetRef, _Target] = {}
        self.deployment_targets: dict[str, _Target] = {}  # Deployment name -> its target
        # Every pod of the namespace that is not terminal: name -> (info, uid).
        self.pods: dict[str, tuple[PodInfo, str]] = {}
        self._pods_by_label: dict[tuple[str, str], set[str]] = {}
        self._members: dict[str, list[_Target]] = {}  # pod name -> targets it was given to
        self._by_label: dict[tuple[str, str], list[_Target]] = {}  # index key -> targets
        self._scan: list[_Target] = []  # targets whose selector has no single key=value
        self.deployments: dict[str, Obj] = {}  # every Deployment of the namespace, by name
        self.pod_informer = _Informer(
            f"pods in {namespace}",
            owner.core.list_namespaced_pod,
            {"namespace": namespace},
            self._pods_listed,
            self._pod_event,
            owner,
        )
        self.deployment_informer: _Informer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._deployment_task: asyncio.Task[None] | None = None
        self._spawn(self.pod_informer)

    def _spawn(self, informer: _Informer) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(informer.run(), name=informer.what)
        self._tasks = [t for t in self._tasks if not t.done()] + [task]
        return task

    def tasks(self) -> list[asyncio.Task[None]]:
        return [t for t in self._tasks if not t.done()]

    def informers(self) -> list[_Informer]:
        return [i for i in (self.deployment_informer, self.pod_informer) if i is not None]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for state in self.targets.values():
            self.owner.pod_index.set_pods(state.target.key, ())

    # Targets

    def add(self, state: _Target) -> None:
        if state.target.kind == "Deployment":
            self.deployment_targets[state.target.name] = state
            if self.deployment_informer is None:
                self.deployment_informer = _Informer(
                    f"deployments in {self.namespace}",
                    self.owner.apps.list_namespaced_deployment,
                    {"namespace": self.namespace},
                    self._deployments_listed,
                    self._deployment_event,
                    self.owner,
                )
                self._deployment_task = self._spawn(self.deployment_informer)
            elif self.deployment_informer.last_list is not None:
                state.deployment_seen(self.deployments.get(state.target.name))
        self.targets[state.target] = state  # after deployment_seen: _select indexes it once
        self._select(state)
        state.publish()

    async def remove(self, state: _Target) -> None:
        self._unindex(state)
        for name in list(state.pods):
            members = self._members.get(name)
            if members is not None and state in members:
                members.remove(state)
        self.targets.pop(state.target, None)
        self.owner.pod_index.set_pods(state.target.key, ())
        if state.target.kind == "Deployment":
            self.deployment_targets.pop(state.target.name, None)
            if not self.deployment_targets and self._deployment_task is not None:
                self._deployment_task.cancel()
                await asyncio.gather(self._deployment_task, return_exceptions=True)
                self._deployment_task = None
                self.deployment_informer = None
                self.deployments.clear()

    def _index(self, state: _Target) -> None:
        if state.reqs is None:
            return
        state.index_key = _index_key(state.reqs)
        if state.index_key is None:
            self._scan.append(state)
        else:
            self._by_label.setdefault(state.index_key, []).append(state)

    def _unindex(self, state: _Target) -> None:
        if state.reqs is None:
            return
        if state.index_key is None:
            if state in self._scan:
                self._scan.remove(state)
        else:
            bucket = self._by_label.get(state.index_key, [])
            if state in bucket:
                bucket.remove(state)
            if not bucket:
                self._by_label.pop(state.index_key, None)

    def _select(self, state: _Target) -> None:
        """Index a target and give it the pods it selects (from the ones we hold)."""
        self._index(state)
        state.clear_pods()
        if state.reqs is None:
            return
        if state.index_key is not None:
            names: Iterable[str] = sorted(self._pods_by_label.get(state.index_key, ()))
        else:
            names = list(self.pods)
        for name in names:
            info, uid = self.pods[name]
            if matches(state.reqs, info.labels):
                state.add_pod(info, uid)
                self._members.setdefault(name, []).append(state)

    def reselect(self, state: _Target, reqs: tuple[Requirement, ...] | None) -> None:
        """A Deployment's selector changed (or appeared, or went): follow it."""
        if state.target not in self.targets:
            state.reqs = reqs
            return
        self._unindex(state)
        for name in list(state.pods):
            members = self._members.get(name)
            if members is not None and state in members:
                members.remove(state)
        state.reqs = reqs
        self._select(state)
        state.publish()

    def _matching(self, labels: Mapping[str, str]) -> list[_Target]:
        out = [
            s
            for kv in labels.items()
            for s in self._by_label.get(kv, ())
            if s.reqs is not None and matches(s.reqs, labels)
        ]
        out.extend(s for s in self._scan if s.reqs is not None and matches(s.reqs, labels))
        return out

    # Pods

    def _forget_pod(self, name: str) -> None:
        held = self.pods.pop(name, None)
        if held is not None:
            for kv in held[0].labels.items():
                names = self._pods_by_label.get(kv)
                if names is not None:
                    names.discard(name)
                    if not names:
                        del self._pods_by_label[kv]

    def _hold_pod(self, info: PodInfo, uid: str) -> None:
        self._forget_pod(info.name)
        self.pods[info.name] = (info, uid)
        for kv in info.labels.items():
            self._pods_by_label.setdefault(kv, set()).add(info.name)

    def _pods_listed(self, items: list[Obj]) -> None:
        for state in self.targets.values():
            state.clear_pods()
        self.pods.clear()
        self._pods_by_label.clear()
        self._members.clear()
        for obj in items:
            if _terminal(obj):
                continue
            info = pod_info(obj)
            uid = (obj.get("metadata") or {}).get("uid") or info.name
            self._hold_pod(info, uid)
            targets = self._matching(info.labels)
            for state in targets:
                state.add_pod(info, uid)
            if targets:
                self._members[info.name] = targets
        for state in self.targets.values():
            state.forget_unlisted()
            state.publish()

    def _pod_event(self, kind: str, obj: Obj) -> None:
        info = pod_info(obj)
        name = info.name
        before = self._members.pop(name, [])
        if kind == "DELETED" or _terminal(obj):
            self._forget_pod(name)
            after: list[_Target] = []
        else:
            uid = (obj.get("metadata") or {}).get("uid") or name
            self._hold_pod(info, uid)
            after = self._matching(info.labels)
            for state in after:
                state.add_pod(info, uid)
            if after:
                self._members[name] = after
        for state in before:
            if state not in after:
                if kind == "DELETED":
                    state.remove_pod(name)
                else:  # terminal, or relabelled away: no longer its pod (measured stays)
                    state.pods.pop(name, None)
                    state._uids.pop(name, None)
        for state in {id(s): s for s in (*before, *after)}.values():
            state.publish()

    # Deployments

    def _deployments_listed(self, items: list[Obj]) -> None:
        self.deployments = {
            (o.get("metadata") or {}).get("name", ""): _deployment_summary(o) for o in items
        }
        for name, state in self.deployment_targets.items():
            state.deployment_seen(self.deployments.get(name))

    def _deployment_event(self, kind: str, obj: Obj) -> None:
        name = (obj.get("metadata") or {}).get("name", "")
        if kind == "DELETED":
            self.deployments.pop(name, None)
        else:
            self.deployments[name] = _deployment_summary(obj)
        state = self.deployment_targets.get(name)
        if state is not None:
            state.deployment_seen(None if kind == "DELETED" else obj)


# --- the source ---------------------------------------------------------------------------------


class KubeStatusSource:
    """``Source`` of replica status from Kubernetes watches (see the module docstring).

    ``start(targets)`` opens the watches early (optional: ``collect`` opens missing ones and
    closes those of namespaces no longer asked for); ``close()`` cancels and awaits every task.
    ``stats`` counts lists, relists, watches, events, drops, 410s and errors by kind.
    """

    name = "kube_status"

    def __init__(
        self,
        api: ApiClient,
        clock: Clock,
        *,
        pod_index: PodIndex | None = None,
        pod_labels: Mapping[str, Mapping[str, str]] | None = None,
        settings: KubeStatusSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.core = CoreV1Api(api)
        self.apps = AppsV1Api(api)
        self.clock = clock
        self.pod_index = pod_index if pod_index is not None else PodIndex()
        self.pod_labels: dict[str, Mapping[str, str]] = dict(pod_labels or {})
        self.settings = settings or KubeStatusSettings()
        self.rng = rng or random.Random(0)
        self.stats: dict[str, int] = {}
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._targets: dict[TargetRef, _Target] = {}
        self._namespaces: dict[str, _Namespace] = {}
        self._unsupported: set[TargetRef] = set()
        self._closed = False

    def count(self, what: str, n: int = 1) -> None:
        """Count a happening (lists, events, errors...) and wake ``wait_until`` callers."""
        self.stats[what] = self.stats.get(what, 0) + n
        if self._waiters:
            for predicate, fut in list(self._waiters):
                if not fut.done() and predicate():
                    fut.set_result(None)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, re-checked after every list, watch event, drop
        and error: lets tests (and a readiness probe) wait for the source without sleeping."""
        if predicate():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, fut))
        try:
            await fut
        finally:
            self._waiters = [(p, f) for p, f in self._waiters if f is not fut]

    def watched_replicas(self, target: TargetRef) -> int | None:
        """A Deployment target's ``spec.replicas`` as its healthy watch last saw it; None when
        unknown (not a Deployment, not watched yet, watch unhealthy, no such Deployment) or
        when another controller owns the Deployment (the actuator then reads and refuses)."""
        state = self._targets.get(target)
        return None if state is None else state.watched_replicas()

    async def start(self, targets: Sequence[TargetRef] = ()) -> None:
        await self._reconcile(targets)

    async def _reconcile(self, targets: Sequence[TargetRef]) -> None:
        if self._closed:
            raise RuntimeError("the source is closed")
        if len(targets) == len(self._targets) and all(t in self._targets for t in targets):
            return  # the common case: nothing to add or drop
        wanted = dict.fromkeys(targets)  # ordered, and O(1) membership for many targets
        for ref in [t for t in self._targets if t not in wanted]:
            state = self._targets.pop(ref)
            await state.ns.remove(state)
            if not state.ns.targets:
                del self._namespaces[state.ns.namespace]
                await state.ns.stop()
        for ref in wanted:
            if ref in self._targets or ref in self._unsupported:
                continue
            ns = self._namespaces.get(ref.namespace)
            try:
                pod_requirements(ref, self.pod_labels.get(ref.key))
            except ValueError as e:  # a kind this source cannot follow: reported per collect
                self._unsupported.add(ref)
                log.error("%s: %s", ref, e)
                continue
            if ns is None:
                ns = self._namespaces[ref.namespace] = _Namespace(self, ref.namespace)
            state = _Target(self, ns, ref)
            self._targets[ref] = state
            ns.add(state)

    async def collect(self, targets: Sequence[TargetRef]) -> SourceReport:
        report = SourceReport()
        await self._reconcile(targets)
        await self._await_first_sync([self._targets[t] for t in targets if t in self._targets])
        now = self.clock.now()
        failures: dict[int, dict[str, int]] = {}
        for ns in self._namespaces.values():
            for informer in ns.informers():
                failures[id(informer)] = informer.take_failures()
                if informer.resync_due(now):
                    informer.request_resync()
        for ref in targets:
            state = self._targets.get(ref)
            if state is None:
                report.error(ref.key, "unsupported")
                continue
            informers = state.informers()
            if len(informers) == 1:
                state.observe(now, report, failures.get(id(informers[0])))
                continue
            summed: dict[str, int] = {}
            for informer in informers:
                for kind, n in failures.get(id(informer), {}).items():
                    summed[kind] = summed.get(kind, 0) + n
            state.observe(now, report, summed)
        return report

    async def _await_first_sync(self, states: list[_Target]) -> None:
        namespaces = {id(s.ns): s.ns for s in states}.values()
        pending = [i.settled for ns in namespaces for i in ns.informers() if not i.settled.is_set()]
        if not pending:
            return

        async def settled() -> None:
            for event in pending:
                await event.wait()

        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(settled(), self.settings.initial_sync_timeout_seconds)

    def tasks(self) -> list[asyncio.Task[None]]:
        """The live watch tasks (for tests and the service's health endpoint)."""
        return [t for ns in self._namespaces.values() for t in ns.tasks()]

    async def close(self) -> None:
        self._closed = True
        namespaces = list(self._namespaces.values())
        self._namespaces.clear()
        self._targets.clear()
        for ns in namespaces:
            await ns.stop()
