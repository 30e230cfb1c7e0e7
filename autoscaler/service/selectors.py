"""Selector targets resolved against the cluster (docs/policy-reference.md, "Selectors").

A policy target may name its objects by ``selector: {matchLabels: {...}}`` instead of ``name``.
The resolver lists the objects of the target's kind in its namespace with that label selector
(InferenceService: serving.kserve.io/v1beta1 inferenceservices; Knative Service:
serving.knative.dev/v1 services; Deployment: apps/v1 deployments), and each match becomes a
target of its own with the selector target's config.

- An object named explicitly by another target wins over a selector match; an object matched by
  two selectors goes to the first in file order. Each such conflict is logged once.
- A listing that fails (403, 404 of a missing CRD, 5xx, timeouts) keeps that selector's last
  good matches: an API hiccup never drops a target. The failure is logged and counted
  (``autoscaler_selector_list_failures_total``). A selector that never listed has no matches.
- Listing is a plain paged LIST, not a watch: matches change rarely, and a refresh every
  ``selector_refresh_seconds`` (plus one at start and after each policy reload) costs one
  request per selector.

The calls go through an ``ApiCaller`` (retries with backoff, errors sorted into the error tree);
the resolver's own by default, so its listing never takes the actuators' write budget.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from autoscaler.actuators.calls import ApiCaller, CallFailed, Rejected
from autoscaler.actuators.knative import ISVC, KSERVICE
from autoscaler.config.models import PolicyFile, Target
from autoscaler.core.clock import Clock
from autoscaler.core.types import TargetRef
from autoscaler.kube import ApiClient, AppsV1Api, CustomObjectsApi
from autoscaler.sources.kube_status import format_selector

log = logging.getLogger("autoscaler.selectors")

#: (kind, namespace, "k=v,...") of one selector target.
SelectorKey = tuple[str, str, str]
Pairs = list[tuple[TargetRef, Target]]

#: What the resolver asks of the API server (deploy/rbac.yaml; tests/unit/test_rbac.py).
API_CALLS: tuple[tuple[str, str, str], ...] = (
    ("list", ISVC.group, ISVC.plural),
    ("list", KSERVICE.group, KSERVICE.plural),
    ("list", "apps", "deployments"),
)

#: Custom kinds a selector may name: (group, version, plural).
CUSTOM_KINDS = {
    "InferenceService": (ISVC.group, ISVC.version, ISVC.plural),
    "Service": (KSERVICE.group, KSERVICE.version, KSERVICE.plural),
}
PAGE_SIZE = 500


def selector_key(t: Target) -> SelectorKey:
    if t.selector is None:
        raise ValueError("not a selector target")
    return (t.kind, t.namespace, format_selector(t.selector.match_labels))


def in_scope(t: Target, namespaces: Sequence[str]) -> bool:
    return not namespaces or t.namespace in namespaces


def expand(
    doc: PolicyFile,
    namespaces: Sequence[str],
    matches: Mapping[SelectorKey, Iterable[str]] | None,
    warned: set[tuple[str, str]] | None = None,
) -> Pairs:
    """The concrete targets of ``doc`` in ``namespaces`` (empty: all): named targets as they
    are, each selector target once per matched name (``matches``; None: selectors unresolved,
    reported and skipped). Explicit names win over matches, earlier selectors over later ones;
    ``warned`` remembers what was logged so a conflict is logged once, not every refresh."""
    warned = warned if warned is not None else set()

    def once(what: str, key: str, msg: str, *args: object) -> None:
        if (what, key) not in warned:
            warned.add((what, key))
            log.warning(msg, *args)

    targets = [t for t in doc.spec.targets if in_scope(t, namespaces)]
    out: Pairs = [(t.ref(), t) for t in targets if t.name is not None]
    taken: dict[str, str] = {ref.key: "named explicitly" for ref, _ in out}
    for t in targets:
        if t.selector is None:
            continue
        sel = selector_key(t)
        if matches is None:
            once(
                "unresolved",
                "/".join(sel),
                "selector target %s %s is not resolved; skipped",
                *sel[::2],
            )
            continue
        for name in sorted(set(matches.get(sel, ()))):
            ref = t.ref(name)
            owner = taken.get(ref.key)
            if owner is not None:
                once(
                    "conflict",
                    f"{ref.key}|{sel[2]}",
                    "%s matches selector %s but is %s; the selector's config is not applied",
                    ref,
                    sel[2],
                    owner,
                )
                continue
            taken[ref.key] = f"matched by selector {sel[2]}"
            out.append((ref, t))
    return out


class SelectorResolver:
    """Lists the matches of a policy's selector targets, keeping the last good listing of each
    selector when one fails. ``matches`` is the resolution in effect; ``failures`` counts failed
    listings by error kind (and ``on_failure`` is told of each, for metrics)."""

    api_calls = API_CALLS

    def __init__(
        self,
        api: ApiClient,
        clock: Clock,
        *,
        caller: ApiCaller | None = None,
        on_failure: Callable[[SelectorKey, str], None] | None = None,
    ) -> None:
        self.clock = clock
        self.caller = caller if caller is not None else ApiCaller(clock)
        self.on_failure = on_failure
        self._co = CustomObjectsApi(api)
        self._apps = AppsV1Api(api)
        self.matches: dict[SelectorKey, tuple[str, ...]] = {}
        self.resolved = False  # at least one resolve() ran
        self.failures = 0
        self.lists = 0
        self._warned: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()

    def pairs(self, doc: PolicyFile, namespaces: Sequence[str]) -> Pairs:
        """The concrete targets under the current resolution."""
        return expand(doc, namespaces, self.matches, self._warned)

    async def resolve(self, doc: PolicyFile, namespaces: Sequence[str]) -> bool:
        """List every selector of ``doc`` in scope; True when the matched names changed. A
        selector no longer in the policy is forgotten; one whose listing fails keeps its last
        good names."""
        keys = sorted(
            {selector_key(t) for t in doc.spec.targets if t.selector and in_scope(t, namespaces)}
        )
        new: dict[SelectorKey, tuple[str, ...]] = {}
        for sel in keys:
            try:
                new[sel] = await self._list(*sel)
                self.lists += 1
            except (Rejected, CallFailed) as e:
                self.failures += 1
                if self.on_failure is not None:
                    self.on_failure(sel, e.kind)
                kept = self.matches.get(sel)
                log.warning(
                    "listing %s in %s by %s failed (%s); keeping %s",
                    sel[0],
                    sel[1],
                    sel[2],
                    e,
                    f"the last {len(kept)} matches" if kept is not None else "no matches",
                )
                if kept is not None:
                    new[sel] = kept
        changed = new != self.matches
        if changed:
            log.info(
                "selector matches changed: %s",
                {"/".join(k): list(v) for k, v in sorted(new.items())},
            )
        self.matches = new
        self.resolved = True
        return changed

    async def _list(self, kind: str, namespace: str, labels: str) -> tuple[str, ...]:
        names: list[str] = []
        token: str | None = None
        while True:
            items, token = await self._page(kind, namespace, labels, token)
            names.extend(items)
            if not token:
                return tuple(sorted(names))

    async def _page(
        self, kind: str, namespace: str, labels: str, token: str | None
    ) -> tuple[list[str], str | None]:
        page: dict[str, Any] = {"limit": PAGE_SIZE}
        if token:
            page["_continue"] = token
        timeout = self.caller.request_timeout
        if kind == "Deployment":
            lst: Any = await self.caller(
                f"list deployments {namespace} -l {labels}",
                partial(
                    self._apps.list_namespaced_deployment,
                    namespace,
                    label_selector=labels,
                    _request_timeout=timeout,
                    **page,
                ),
            )
            meta = lst.metadata
            return [d.metadata.name for d in lst.items or []], meta._continue if meta else None
        res = CUSTOM_KINDS[kind]
        body: dict[str, Any] = await self.caller(
            f"list {res[2]} {namespace} -l {labels}",
            partial(
                self._co.list_namespaced_custom_object,
                res[0],
                res[1],
                namespace,
                res[2],
                label_selector=labels,
                _request_timeout=timeout,
                **page,
            ),
        )
        items = [str((o.get("metadata") or {}).get("name")) for o in body.get("items") or []]
        return items, (body.get("metadata") or {}).get("continue") or None

    def wake(self) -> None:
        """Resolve again now (a policy reload), not at the end of the interval."""
        self._wake.set()

    async def run(
        self, stop: asyncio.Event, interval: float, refresh: Callable[[], Awaitable[object]]
    ) -> None:
        """Call ``refresh`` every ``interval`` seconds, or at once after ``wake()``, until
        ``stop``. ``refresh`` resolves and applies; its errors are logged, never fatal."""
        while not stop.is_set():
            sleeper = asyncio.ensure_future(self.clock.sleep(interval))
            waker = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait([sleeper, waker, stopper], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for f in (sleeper, waker, stopper):
                    f.cancel()
                await asyncio.gather(sleeper, waker, stopper, return_exceptions=True)
            if stop.is_set():
                return
            self._wake.clear()
            try:
                await refresh()
            except Exception:
                log.exception("selector refresh failed; keeping the last resolution")
