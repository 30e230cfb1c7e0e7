"""The fake API server: HTTP routing, verbs, errors as ``Status`` objects, watches, faults."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from autoscaler.core.clock import Clock, ManualClock
from autoscaler.testing.fake_kube.patch import (
    PatchError,
    PatchFormatError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from autoscaler.testing.fake_kube.resources import (
    BUILTINS,
    KNOWN_CUSTOM,
    Resource,
    from_crd,
    prepare_builtin_create,
    validate_builtin,
    validate_name,
)
from autoscaler.testing.fake_kube.schema import Cause, apply_defaults, load_crds, prune, validate
from autoscaler.testing.fake_kube.selectors import (
    SelectorError,
    format_label_selector,
    parse_field_selector,
    parse_label_selector,
)
from autoscaler.testing.fake_kube.store import ABORT, END, Obj, Store, Watch

if TYPE_CHECKING:
    from autoscaler.kube import ApiClient

_NAMESPACE_MISMATCH = (
    "the namespace of the provided object does not match the namespace sent on the request"
)
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"


def shared_crd_dir() -> Path | None:
    """The upstream CRDs beside the project (``../shared/crds``), or ``$AUTOSCALER_CRD_DIR``;
    None when neither exists."""
    env = os.environ.get("AUTOSCALER_CRD_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[4] / "shared" / "crds"
    return path if path.is_dir() else None


class ApiError(Exception):
    """An error answer: becomes a ``Status`` body with this code and reason."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = dict(details or {})
        self.headers = dict(headers or {})

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


@dataclass(slots=True)
class Fault:
    """Fail the next ``remaining`` matching requests with ``status`` (None: cut the connection
    without an answer)."""

    status: int | None
    remaining: int
    verb: str | None = None
    resource: str | None = None  # plural, or plural/subresource
    retry_after: int | None = None

    def matches(self, verb: str, resource: str) -> bool:
        return (self.verb in (None, verb)) and (self.resource in (None, resource))


@dataclass(frozen=True, slots=True)
class RequestRecord:
    method: str
    path: str
    query: Mapping[str, str]
    content_type: str
    body: Any
    status: int
    verb: str = ""


@dataclass(slots=True)
class _Route:
    res: Resource
    namespace: str | None
    name: str | None
    sub: str | None
    api_version: str  # as requested (group/version)

    @property
    def rbac_resource(self) -> str:
        return f"{self.res.plural}/{self.sub}" if self.sub else self.res.plural


def _truthy(value: str | None) -> bool:
    return value in ("1", "t", "T", "true", "TRUE", "True")


def _int_param(value: str) -> int:
    try:
        return int(value)
    except ValueError as e:
        raise ApiError(400, "BadRequest", f"invalid integer parameter: {value!r}") from e


def _rfc3339(when: float) -> str:
    """metav1.Time: UTC, one-second resolution."""
    return datetime.fromtimestamp(when, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: Obj) -> dict[str, Any]:
    meta = obj.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise ApiError(400, "BadRequest", "metadata must be an object")
    return meta


def _spec_part(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


def _get_path(obj: Any, path: str) -> Any:
    for part in path.strip(".").split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _set_path(obj: Obj, path: str, value: Any) -> None:
    parts = path.strip(".").split(".")
    for part in parts[:-1]:
        obj = obj.setdefault(part, {})
    obj[parts[-1]] = value


class FakeKube:
    """An in-process Kubernetes API server on 127.0.0.1 (see the package docstring).

    ``async with FakeKube() as kube:`` starts it on a free port; ``kube.url`` is the host to give
    a client; ``kube.api_client()`` returns a kubernetes-asyncio ``ApiClient`` pointed at it.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        crd_dir: str | Path | None = None,
        history: int = 10_000,
        user: str = "system:serviceaccount:default:autoscaler",
    ) -> None:
        self.clock: Clock = clock if clock is not None else ManualClock(1_700_000_000.0)
        self.store = Store(history=history)
        self.user = user
        self._resources: dict[tuple[str, str, str], Resource] = {}
        for res in (*BUILTINS, *KNOWN_CUSTOM):
            self.register(res)
        if crd_dir is not None:
            self.load_crds(crd_dir)
        #: RBAC allow-list of (verb, group, resource) with "*" wildcards; None allows everything.
        self.rules: set[tuple[str, str, str]] | None = None
        self.faults: list[Fault] = []
        self.requests: list[RequestRecord] = []
        self.warnings: list[str] = []
        self._open = asyncio.Event()
        self._open.set()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._pending_warnings: list[str] = []
        self.held = 0  # requests waiting at the door while paused
        self._seq = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- lifecycle ---

    async def start(self) -> FakeKube:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        self.store.end_watches(END)
        self._open.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeKube:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def api_client(self) -> ApiClient:
        """A kubernetes-asyncio ApiClient for this server (the caller closes it)."""
        from autoscaler.kube import ApiClient, Configuration

        cfg = Configuration(host=self.url)
        return ApiClient(configuration=cfg)

    def write_kubeconfig(self, path: str | Path, namespace: str | None = None) -> str:
        """Write a kubeconfig for this server (plain HTTP, no credentials) to ``path``, for the
        service's ``--kubeconfig``; returns the path."""
        context: dict[str, str] = {"cluster": "fake", "user": "anonymous"}
        if namespace is not None:
            context["namespace"] = namespace
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "anonymous", "user": {}}],
            "contexts": [{"name": "fake", "context": context}],
            "current-context": "fake",
        }
        Path(path).write_text(json.dumps(doc), encoding="utf-8")
        return str(path)

    # --- configuration by tests ---

    def register(self, res: Resource) -> None:
        self._resources[(res.group, res.version, res.plural)] = res

    def load_crds(self, directory: str | Path) -> list[Resource]:
        loaded = [from_crd(c) for c in load_crds(directory)]
        for res in loaded:
            self.register(res)
        return loaded

    def resource(self, group: str, plural: str, version: str | None = None) -> Resource:
        for (g, v, p), res in self._resources.items():
            if g == group and p == plural and (version is None or v == version):
                return res
        raise KeyError(f"{plural}.{group}")

    def allow(self, *rules: tuple[str, str, str]) -> None:
        """Turn RBAC on (if off) and allow these (verb, group, resource) triples."""
        if self.rules is None:
            self.rules = set()
        self.rules.update(rules)

    def fail_next(
        self,
        n: int = 1,
        status: int | None = 500,
        *,
        verb: str | None = None,
        resource: str | None = None,
        retry_after: int | None = None,
    ) -> Fault:
        fault = Fault(status, n, verb, resource, retry_after)
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    def pause(self) -> None:
        """Hold every request at the door until ``resume()`` (a slow or hung API server)."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    def bookmark(self) -> int:
        """Send a BOOKMARK at the current revision to every watch that allows bookmarks."""
        return self.store.bookmark()

    def compact(self) -> None:
        """Forget the event history: watches from any older resourceVersion get 410 Gone."""
        self.store.compact()

    def drop_watches(self, *, abort: bool = True, plural: str | None = None) -> int:
        """End the open watches: ``abort`` cuts the connection mid-event, else a clean end."""
        res = next((r.key for r in self._resources.values() if r.plural == plural), None)
        if plural is not None and res is None:
            raise KeyError(plural)
        return self.store.end_watches(ABORT if abort else END, res)

    def watch_count(self, plural: str | None = None) -> int:
        return sum(1 for w in self.store.watches if plural is None or w.resource[1] == plural)

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Wait (no sleeping) until ``predicate()`` holds; re-checked after every request and
        every watch opened or closed."""
        if predicate():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, fut))
        try:
            await fut
        finally:
            self._waiters = [(p, f) for p, f in self._waiters if f is not fut]

    def _poke(self) -> None:
        for predicate, fut in list(self._waiters):
            if not fut.done() and predicate():
                fut.set_result(None)

    # --- direct object access for test setup and assertions (no HTTP, same semantics) ---

    def objects(self, group: str, plural: str, namespace: str | None = None) -> list[Obj]:
        res = self.resource(group, plural)
        return [self._out(res, o, res.api_version) for o in self.store.items(res.key, namespace)]

    def object(self, group: str, plural: str, namespace: str, name: str) -> Obj | None:
        res = self.resource(group, plural)
        obj = self.store.get(res.key, (namespace if res.namespaced else "", name))
        return None if obj is None else self._out(res, obj, res.api_version)

    def seed(self, obj: Obj) -> Obj:
        """Store ``obj`` as given, status included (what controllers would have written);
        stamps uid, creationTimestamp and resourceVersion. Validates custom objects."""
        group, _, version = obj["apiVersion"].rpartition("/")
        res = next(
            r
            for r in self._resources.values()
            if r.group == group and r.version == version and r.kind == obj["kind"]
        )
        obj = copy.deepcopy(obj)
        obj.pop("kind")
        obj.pop("apiVersion")
        meta = _meta(obj)
        ns = meta.get("namespace", "default") if res.namespaced else ""
        meta["namespace"] = ns
        self._stamp_new(meta)
        self._check_schema(res, obj, strict=True)
        if res.plural == "deployments":
            obj.setdefault("spec", {}).setdefault("replicas", 1)
        stored = self.store.put(res.key, (ns, meta["name"]), obj)
        return self._out(res, stored, res.api_version)

    def write(
        self, group: str, plural: str, namespace: str, name: str, fn: Callable[[Obj], None]
    ) -> Obj:
        """Change a stored object in place with ``fn`` (as a controller would): bumps the
        resourceVersion and notifies watches."""
        res = self.resource(group, plural)
        key = (namespace if res.namespaced else "", name)
        old = self.store.get(res.key, key)
        if old is None:
            raise KeyError(f"{res.group_resource} {namespace}/{name}")
        new = copy.deepcopy(old)
        fn(new)
        return self._out(res, self.store.put(res.key, key, new), res.api_version)

    def remove(self, group: str, plural: str, namespace: str, name: str) -> None:
        """Delete at once, ignoring grace periods and finalizers (as after the kubelet's
        confirmation or a controller dropping its finalizer)."""
        res = self.resource(group, plural)
        self.store.delete(res.key, (namespace if res.namespaced else "", name))

    # kubelet-like helpers for pods

    def add_pod(
        self,
        namespace: str,
        name: str,
        labels: Mapping[str, str],
        *,
        node: str | None = "node-1",
        image: str = "model-server:latest",
    ) -> Obj:
        """A pod as a ReplicaSet creates it and the scheduler binds it: Pending, no IP."""
        spec: Obj = {"containers": [{"name": "main", "image": image}]}
        if node:
            spec["nodeName"] = node
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": spec,
            "status": {"phase": "Pending", "qosClass": "BestEffort"},
        }
        return self.seed(pod)

    def set_pod_status(
        self, namespace: str, name: str, *, ready: bool, ip: str | None = None, phase: str = ""
    ) -> Obj:
        """What the kubelet reports: Running with an IP and start time, and the Ready condition
        with its lastTransitionTime set when readiness changes."""
        now = self._timestamp()

        def change(pod: Obj) -> None:
            status = pod.setdefault("status", {})
            status["phase"] = phase or "Running"
            status.setdefault("startTime", now)
            if ip is not None:
                status["podIP"] = ip
                status["podIPs"] = [{"ip": ip}]
            conds = {c["type"]: c for c in status.get("conditions", [])}
            for ctype in ("PodScheduled", "Initialized"):
                conds.setdefault(
                    ctype, {"type": ctype, "status": "True", "lastTransitionTime": now}
                )
            value = "True" if ready else "False"
            for ctype in ("ContainersReady", "Ready"):
                cond = conds.get(ctype)
                if cond is None or cond["status"] != value:
                    conds[ctype] = {"type": ctype, "status": value, "lastTransitionTime": now}
            status["conditions"] = list(conds.values())

        return self.write("", "pods", namespace, name, change)

    # --- HTTP ---

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        verb, status, body = "", 500, None
        recorded = False

        def record() -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            self.requests.append(
                RequestRecord(
                    request.method,
                    request.path,
                    dict(request.query),
                    request.headers.get("Content-Type", ""),
                    body,
                    status,
                    verb,
                )
            )
            self._poke()

        try:
            if not self._open.is_set():
                self.held += 1
                self._poke()
                try:
                    await self._open.wait()
                finally:
                    self.held -= 1
            raw = await request.read()
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError as e:
                    raise ApiError(400, "BadRequest", f"invalid JSON body: {e}") from e
            route = self._route(request.path)
            verb = self._verb(request.method, route, request.query)
            fault = self._take_fault(verb, route.rbac_resource)
            if fault is not None:
                if fault.status is None:
                    assert request.transport is not None
                    request.transport.abort()
                    status = 0
                    raise asyncio.CancelledError
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
                reason = {429: "TooManyRequests", 503: "ServiceUnavailable"}.get(
                    fault.status, "InternalError"
                )
                raise ApiError(
                    fault.status, reason, f"injected fault ({fault.status})", headers=headers
                )
            self._authorize(verb, route)
            if verb == "watch":
                status = 200
                return await self._watch(request, route, record)
            status, obj = self._dispatch(verb, route, request, body)
            return self._json(status, obj)
        except ApiError as e:
            status = e.code
            return self._json(e.code, e.status(), e.headers)
        finally:
            record()

    def _json(
        self, status: int, obj: Obj, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        hdrs = dict(headers or {})
        if self._pending_warnings:
            hdrs["Warning"] = ", ".join(f'299 - "{w}"' for w in self._pending_warnings)
            self._pending_warnings = []
        return web.Response(
            status=status,
            body=json.dumps(obj).encode(),
            content_type="application/json",
            headers=hdrs,
        )

    def _route(self, path: str) -> _Route:
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "api" and parts[1] == "v1":
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        res = self._resources.get((group, version, rest[0]))
        if res is None or (namespace is not None and not res.namespaced):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else None
        if sub is not None and not (
            (sub == "status" and res.status_subresource) or (sub == "scale" and res.scale)
        ):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        api_version = f"{group}/{version}" if group else version
        return _Route(res, namespace, name, sub, api_version)

    @staticmethod
    def _verb(method: str, route: _Route, query: Mapping[str, str]) -> str:
        if method == "GET":
            if route.name is not None:
                return "get"
            return "watch" if _truthy(query.get("watch")) else "list"
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
        if verb is None:
            raise ApiError(405, "MethodNotAllowed", f"method {method} is not supported")
        if verb == "delete" and route.name is None:
            return "deletecollection"
        if verb == "create" and route.name is not None:
            raise ApiError(405, "MethodNotAllowed", "POST to a named object is not supported")
        if verb in ("update", "patch") and route.name is None:
            raise ApiError(405, "MethodNotAllowed", f"{method} needs an object name")
        return verb

    def _take_fault(self, verb: str, resource: str) -> Fault | None:
        for fault in self.faults:
            if fault.remaining > 0 and fault.matches(verb, resource):
                fault.remaining -= 1
                return fault
        return None

    def _authorize(self, verb: str, route: _Route) -> None:
        if self.rules is None:
            return
        res = route.rbac_resource
        for v, g, r in self.rules:
            if v in ("*", verb) and g in ("*", route.res.group) and r in ("*", res):
                return
        where = (
            f' in the namespace "{route.namespace}"' if route.namespace else " at the cluster scope"
        )
        named = f'"{route.name}" ' if route.name else ""
        message = (
            f'{route.res.group_resource} {named}is forbidden: User "{self.user}" cannot {verb} '
            f'resource "{res}" in API group "{route.res.group}"{where}'
        )
        details = {"kind": route.res.plural, "group": route.res.group}
        if route.name:
            details["name"] = route.name
        raise ApiError(403, "Forbidden", message, details)

    # --- verbs ---

    def _dispatch(
        self, verb: str, route: _Route, request: web.Request, body: Any
    ) -> tuple[int, Obj]:
        q = request.query
        if verb == "list":
            return 200, self._list(route, q)
        if verb == "deletecollection":
            return 200, self._delete_collection(route, q)
        if verb == "create":
            return self._create(route, body, q)
        if verb == "get":
            obj = self._existing(route)
            if route.sub == "scale":
                return 200, self._scale_of(route, obj)
            return 200, self._out(route.res, obj, route.api_version)
        if verb == "update":
            return 200, self._update(route, body, q, require_rv=route.res.custom)
        if verb == "patch":
            ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
            return 200, self._patch(route, ctype, body, q)
        if verb == "delete":
            return 200, self._delete(route, body, q)
        raise ApiError(405, "MethodNotAllowed", verb)

    def _key(self, route: _Route, name: str | None = None) -> tuple[str, str]:
        return (route.namespace or "", name or route.name or "")

    def _existing(self, route: _Route) -> Obj:
        obj = self.store.get(route.res.key, self._key(route))
        if obj is None:
            raise self._not_found(route)
        return obj

    @staticmethod
    def _not_found(route: _Route) -> ApiError:
        details = {"name": route.name, "group": route.res.group, "kind": route.res.plural}
        msg = f'{route.res.group_resource} "{route.name}" not found'
        return ApiError(404, "NotFound", msg, details)

    @staticmethod
    def _conflict(route: _Route, name: str) -> ApiError:
        details = {"name": name, "group": route.res.group, "kind": route.res.plural}
        msg = (
            f'Operation cannot be fulfilled on {route.res.group_resource} "{name}": the object has '
            "been modified; please apply your changes to the latest version and try again"
        )
        return ApiError(409, "Conflict", msg, details)

    @staticmethod
    def _invalid(res: Resource, name: str, causes: list[Cause]) -> ApiError:
        listed = ", ".join(f"{c.field}: {c.message}" for c in causes)
        if len(causes) > 1:
            listed = f"[{listed}]"
        details = {
            "name": name,
            "group": res.group,
            "kind": res.kind,
            "causes": [
                {"reason": c.reason, "message": c.message, "field": c.field} for c in causes
            ],
        }
        return ApiError(
            422, "Invalid", f'{res.qualified_kind} "{name}" is invalid: {listed}', details
        )

    def _out(self, res: Resource, obj: Obj, api_version: str, *, in_list: bool = False) -> Obj:
        out = copy.deepcopy(obj)
        if not in_list or res.custom:
            out = {"apiVersion": api_version, "kind": res.kind, **out}
            out["apiVersion"], out["kind"] = api_version, res.kind
        return out

    def _timestamp(self) -> str:
        return _rfc3339(self.clock.now())

    def _stamp_new(self, meta: dict[str, Any]) -> None:
        self._seq += 1
        meta["uid"] = str(uuid.UUID(int=self._seq, version=4))
        meta.setdefault("creationTimestamp", self._timestamp())
        meta.setdefault("generation", 1)
        meta.pop("resourceVersion", None)

    def _check_schema(self, res: Resource, obj: Obj, *, strict: bool) -> list[str]:
        """Prune, default and validate a custom object; returns the pruned unknown fields."""
        if res.schema is None:
            return []
        unknown = prune(obj, res.schema)
        if unknown and strict:
            name = obj.get("metadata", {}).get("name", "")
            fields = ", ".join(f'unknown field "{u}"' for u in unknown)
            msg = (
                f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: '
                f"strict decoding error: {fields}"
            )
            raise ApiError(400, "BadRequest", msg, {"name": name})
        apply_defaults(obj, res.schema)
        causes = validate(obj, res.schema)
        if causes:
            raise self._invalid(res, obj.get("metadata", {}).get("name", ""), causes)
        return unknown

    def _admit(self, route: _Route, obj: Obj, old: Obj | None, q: Mapping[str, str]) -> None:
        """Schema (custom) or built-in validation; unknown fields per ``fieldValidation``."""
        res = route.res
        mode = q.get("fieldValidation", "Warn")
        unknown = self._check_schema(res, obj, strict=mode == "Strict")
        if unknown and mode == "Warn":
            warnings = [f'unknown field "{u}"' for u in unknown]
            self.warnings.extend(warnings)
            self._pending_warnings = warnings
        if not res.custom:
            causes = validate_builtin(res, obj, old)
            if causes:
                raise self._invalid(res, obj.get("metadata", {}).get("name", ""), causes)

    def _check_kind(self, route: _Route, body: Obj) -> None:
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if route.res.custom and (not kind or not api_version):
            missing = "Kind" if not kind else "apiVersion"
            raise ApiError(
                400, "BadRequest", f"Object '{missing}' is missing in '{json.dumps(body)}'"
            )
        if kind and kind != route.res.kind:
            msg = (
                f"the kind in the data ({kind}) does not match the expected kind ({route.res.kind})"
            )
            raise ApiError(400, "BadRequest", msg)
        if api_version and api_version != route.api_version:
            msg = (
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({route.api_version})"
            )
            raise ApiError(400, "BadRequest", msg)

    def _create(self, route: _Route, body: Any, q: Mapping[str, str]) -> tuple[int, Obj]:
        res = route.res
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be an object")
        obj = copy.deepcopy(body)
        self._check_kind(route, obj)
        obj.pop("kind", None)  # stored without; every answer adds those of the request
        obj.pop("apiVersion", None)
        meta = _meta(obj)
        ns = route.namespace or ""
        if res.namespaced:
            if meta.get("namespace") not in (None, "", ns):
                msg = _NAMESPACE_MISMATCH
                raise ApiError(400, "BadRequest", msg)
            meta["namespace"] = ns
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{self._suffix()}"
            else:
                cause = Cause(
                    "FieldValueRequired",
                    "metadata.name",
                    "Required value: name or generateName is required",
                )
                raise self._invalid(res, "", [cause])
        name = meta["name"]
        causes = validate_name(name)
        if causes:
            raise self._invalid(res, name, causes)
        if self.store.get(res.key, (ns, name)) is not None:
            details = {"name": name, "group": res.group, "kind": res.plural}
            raise ApiError(
                409, "AlreadyExists", f'{res.group_resource} "{name}" already exists', details
            )
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(k, None)
        self._stamp_new(meta)
        meta["generation"] = 1
        if res.custom:
            if res.status_subresource:
                obj.pop("status", None)
        else:
            prepare_builtin_create(res, obj)
        self._admit(route, obj, None, q)
        if q.get("dryRun") == "All":
            return 201, self._out(res, obj, route.api_version)
        stored = self.store.put(res.key, (ns, name), obj)
        return 201, self._out(res, stored, route.api_version)

    def _suffix(self) -> str:
        self._seq += 1
        alphabet = "bcdfghjklmnpqrstvwxz2456789"
        n, out = self._seq * 7919, []
        for _ in range(5):
            n, r = divmod(n, len(alphabet))
            out.append(alphabet[r])
        return "".join(out)

    def _update(self, route: _Route, body: Any, q: Mapping[str, str], *, require_rv: bool) -> Obj:
        res = route.res
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be an object")
        old = self._existing(route)
        if route.sub == "scale":
            return self._update_scale(route, old, body, q)
        new = copy.deepcopy(body)
        self._check_kind(route, new)
        meta = _meta(new)
        if meta.get("name") != route.name:
            msg = (
                f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                f"({route.name})"
            )
            raise ApiError(400, "BadRequest", msg)
        if res.namespaced and meta.get("namespace") not in (None, "", route.namespace):
            msg = _NAMESPACE_MISMATCH
            raise ApiError(400, "BadRequest", msg)
        rv = meta.get("resourceVersion")
        if rv in (None, ""):
            if require_rv:
                cause = Cause(
                    "FieldValueInvalid",
                    "metadata.resourceVersion",
                    "Invalid value: 0x0: must be specified for an update",
                )
                raise self._invalid(res, route.name or "", [cause])
        elif str(rv) != old["metadata"]["resourceVersion"]:
            raise self._conflict(route, route.name or "")
        return self._commit(route, old, new, q)

    def _commit(self, route: _Route, old: Obj, new: Obj, q: Mapping[str, str]) -> Obj:
        """The shared tail of update and patch: subresource masking, immutable metadata,
        generation, admission, no-op detection, finalizer-completed deletion."""
        res = route.res
        new.pop("kind", None)
        new.pop("apiVersion", None)
        if route.sub == "status":
            status = new.get("status")
            new = copy.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        elif res.status_subresource:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        meta, old_meta = _meta(new), old["metadata"]
        for k in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ):
            if k in old_meta:
                meta[k] = old_meta[k]
            else:
                meta.pop(k, None)
        meta["namespace"] = old_meta.get("namespace", "")
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if _spec_part(new) != _spec_part(old):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        self._admit(route, new, old, q)
        if new == old:
            return self._out(
                res, old, route.api_version
            )  # a no-op write does not bump the revision
        if q.get("dryRun") == "All":
            return self._out(res, new, route.api_version)
        key = self._key(route)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.store.delete(res.key, key)
            return self._out(res, new, route.api_version)
        return self._out(res, self.store.put(res.key, key, new), route.api_version)

    def _patch(self, route: _Route, ctype: str, patch: Any, q: Mapping[str, str]) -> Obj:
        res = route.res
        if (ctype == STRATEGIC and res.custom) or ctype not in (MERGE, JSON_PATCH, STRATEGIC):
            accepted = (
                [JSON_PATCH, MERGE, APPLY] if res.custom else [JSON_PATCH, MERGE, APPLY, STRATEGIC]
            )
            msg = (
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{', '.join(accepted)}"
            )
            if ctype == APPLY:
                msg = "server-side apply is not supported by the fake API server"
            raise ApiError(415, "UnsupportedMediaType", msg)
        old = self._existing(route)
        base = (
            self._scale_of(route, old)
            if route.sub == "scale"
            else self._out(res, old, route.api_version)
        )
        try:
            if ctype == MERGE:
                patched = merge_patch(base, patch)
            elif ctype == JSON_PATCH:
                patched = json_patch(base, patch)
            else:
                patched = strategic_merge_patch(base, patch)
        except PatchFormatError as e:
            raise ApiError(400, "BadRequest", str(e)) from e
        except PatchError as e:
            raise ApiError(422, "", str(e)) from e
        if not isinstance(patched, dict):
            raise ApiError(422, "", "the patch did not produce an object")
        rv = (patched.get("metadata") or {}).get("resourceVersion")
        if rv not in (None, "") and str(rv) != old["metadata"]["resourceVersion"]:
            raise self._conflict(route, route.name or "")
        if (patched.get("metadata") or {}).get("name") != route.name:
            raise ApiError(
                400, "BadRequest", "the name of the object does not match the name on the URL"
            )
        if route.sub == "scale":
            return self._update_scale(route, old, patched, q)
        return self._commit(route, old, patched, q)

    # --- scale subresource ---

    def _scale_of(self, route: _Route, obj: Obj) -> Obj:
        scale = route.res.scale or {}
        meta = obj["metadata"]
        selector = _get_path(obj, scale.get("labelSelectorPath", ""))
        if isinstance(selector, dict):
            selector = format_label_selector(selector)
        status: Obj = {"replicas": _get_path(obj, scale.get("statusReplicasPath", "")) or 0}
        if selector:
            status["selector"] = selector
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta["name"],
                "namespace": meta.get("namespace", ""),
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
                "creationTimestamp": meta["creationTimestamp"],
            },
            "spec": {"replicas": _get_path(obj, scale["specReplicasPath"]) or 0},
            "status": status,
        }

    def _update_scale(self, route: _Route, old: Obj, scale: Obj, q: Mapping[str, str]) -> Obj:
        rv = (scale.get("metadata") or {}).get("resourceVersion")
        if rv not in (None, "") and str(rv) != old["metadata"]["resourceVersion"]:
            raise self._conflict(route, route.name or "")
        replicas = (scale.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            cause = Cause(
                "FieldValueInvalid",
                "spec.replicas",
                f"Invalid value: {replicas}: must be greater than or equal to 0",
            )
            scale_res = Resource("autoscaling", "v1", "scale", "Scale")
            raise self._invalid(scale_res, route.name or "", [cause])
        new = copy.deepcopy(old)
        _set_path(new, (route.res.scale or {})["specReplicasPath"], replicas)
        main = _Route(route.res, route.namespace, route.name, None, route.api_version)
        committed = self._commit(main, old, new, q)
        return self._scale_of(route, committed)

    # --- delete ---

    def _delete(self, route: _Route, body: Any, q: Mapping[str, str]) -> Obj:
        res = route.res
        old = self._existing(route)
        opts = body if isinstance(body, dict) else {}
        pre = opts.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
            raise self._conflict(route, route.name or "")
        if (
            pre.get("resourceVersion")
            and str(pre["resourceVersion"]) != old["metadata"]["resourceVersion"]
        ):
            raise self._conflict(route, route.name or "")
        key = self._key(route)
        meta = old["metadata"]
        raw_grace = q.get("gracePeriodSeconds", opts.get("gracePeriodSeconds"))
        grace = None if raw_grace is None else _int_param(str(raw_grace))
        if grace is None and res.plural == "pods":
            grace = int((old.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
        # A pod bound to a node waits for its kubelet; anything with finalizers for them.
        graceful = res.plural == "pods" and bool((old.get("spec") or {}).get("nodeName"))
        graceful = graceful and (grace or 0) > 0
        if graceful or meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return self._out(res, old, route.api_version)  # already terminating
            period = grace if graceful and grace is not None else 0
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = _rfc3339(self.clock.now() + period)
            new["metadata"]["deletionGracePeriodSeconds"] = period
            return self._out(res, self.store.put(res.key, key, new), route.api_version)
        if q.get("dryRun") == "All":
            return self._out(res, old, route.api_version)
        self.store.delete(res.key, key)
        if res.return_deleted_object:
            return self._out(res, old, route.api_version)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": route.name,
                "group": res.group,
                "kind": res.plural,
                "uid": meta["uid"],
            },
        }

    def _delete_collection(self, route: _Route, q: Mapping[str, str]) -> Obj:
        listed = self._list(route, q)
        for item in listed["items"]:
            name = item["metadata"]["name"]
            sub = _Route(
                route.res,
                route.namespace or item["metadata"].get("namespace"),
                name,
                None,
                route.api_version,
            )
            if self.store.get(route.res.key, self._key(sub, name)) is not None:
                self._delete(sub, None, {})
        return listed

    # --- list and watch ---

    def _matcher(self, route: _Route, q: Mapping[str, str]) -> Callable[[Obj], bool]:
        try:
            labels = parse_label_selector(q.get("labelSelector"))
            fields = parse_field_selector(q.get("fieldSelector"), route.res.plural)
        except SelectorError as e:
            raise ApiError(400, "BadRequest", str(e)) from e
        return lambda o: labels(o.get("metadata", {}).get("labels") or {}) and fields(o)

    def _list(self, route: _Route, q: Mapping[str, str]) -> Obj:
        res = route.res
        match = self._matcher(route, q)
        rv_param, rv_match = q.get("resourceVersion", ""), q.get("resourceVersionMatch", "")
        rv = self.store.rv
        if rv_match == "Exact" and rv_param:
            at = _int_param(rv_param)
            if at < self.store.compacted_rv:
                raise ApiError(
                    410, "Expired", "The resourceVersion for the provided list is too old."
                )
            items = self.store.items_at(res.key, at, route.namespace)
            rv = at
        else:
            items = list(self.store.items(res.key, route.namespace))
        items = [o for o in items if match(o)]
        meta: Obj = {"resourceVersion": str(rv)}
        start = 0
        if q.get("continue"):
            try:
                token = json.loads(base64.urlsafe_b64decode(q["continue"]))
                start, rv = int(token["start"]), int(token["rv"])
            except (ValueError, KeyError, TypeError) as e:
                raise ApiError(400, "BadRequest", "invalid continue token") from e
            meta["resourceVersion"] = str(rv)
        limit = int(q.get("limit") or 0)
        if limit > 0 and start + limit < len(items):
            token = json.dumps({"start": start + limit, "rv": rv}).encode()
            meta["continue"] = base64.urlsafe_b64encode(token).decode()
            meta["remainingItemCount"] = len(items) - start - limit
            items = items[start : start + limit]
        else:
            items = items[start:]
        return {
            "kind": f"{res.kind}List",
            "apiVersion": route.api_version,
            "metadata": meta,
            "items": [self._out(res, o, route.api_version, in_list=True) for o in items],
        }

    async def _watch(
        self, request: web.Request, route: _Route, on_open: Callable[[], None]
    ) -> web.StreamResponse:
        q = request.query
        res = route.res
        match = self._matcher(route, q)
        watch = Watch(
            resource=res.key,
            namespace=route.namespace,
            match=match,
            bookmarks=_truthy(q.get("allowWatchBookmarks")),
            decorate=lambda o: self._out(res, o, route.api_version),
        )
        rv_param = q.get("resourceVersion", "")
        # Everything below up to registering the watch runs without awaiting, so no write can
        # slip between the initial state and the live events.
        if rv_param in ("", "0"):
            for obj in self.store.items(res.key, route.namespace):
                if match(obj):
                    watch.queue.put_nowait(("ADDED", watch.decorate(obj)))
        elif _int_param(rv_param) < self.store.compacted_rv:
            status = ApiError(
                410, "Expired", f"too old resource version: {rv_param} ({self.store.compacted_rv})"
            ).status()
            watch.queue.put_nowait(("ERROR", status))
            watch.queue.put_nowait(END)
        else:
            for change in self.store.changes_since(_int_param(rv_param)):
                watch.offer(change)
        self.store.watches.add(watch)
        timer = None
        if q.get("timeoutSeconds"):
            loop = asyncio.get_running_loop()
            timer = loop.call_later(_int_param(q["timeoutSeconds"]), watch.queue.put_nowait, END)
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        on_open()  # recorded when the stream opens, not when it ends
        try:
            while True:
                item = await watch.queue.get()
                if item == END:
                    break
                if item == ABORT:
                    await resp.write(b'{"type":"MODIFIED","object":{"kind":')
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
                assert isinstance(item, tuple)
                kind, obj = item
                await resp.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
            await resp.write_eof()
            return resp
        finally:
            if timer is not None:
                timer.cancel()
            self.store.watches.discard(watch)
            self._poke()
