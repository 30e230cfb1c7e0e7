"""A fake Kubernetes API server with real semantics, for tests (an aiohttp app on 127.0.0.1).

    async with FakeKube(crd_dir=shared_crd_dir()) as kube:
        async with kube.api_client() as api:      # kubernetes-asyncio, pointed at the fake
            await CoreV1Api(api).list_namespaced_pod("llm", label_selector="app=chat")

Served: core/v1 pods (with the status subresource), events, configmaps, namespaces; apps/v1
deployments (status and scale subresources); coordination.k8s.io/v1 leases; and namespaced
custom objects by group/version/plural: Knative services, configurations, revisions, routes,
podautoscalers and metrics, KServe inferenceservices, KEDA scaledobjects (schema-less, or with
the real openAPIV3Schema when ``crd_dir`` holds their CRDs; ``register()`` adds others).

Faithful (what a client sees from a real API server):

- One global resourceVersion (etcd revision) bumped by every write and stamped on the object;
  a list carries the revision it was served at. A write that changes nothing is not a write
  (no new resourceVersion, no event), as on a real server.
- GET, LIST (label and field selectors, limit/continue, ``resourceVersionMatch=Exact`` of a past
  revision), POST (generateName, ``dryRun=All``), PUT, PATCH, DELETE, DELETE collection.
- PUT with a stale ``metadata.resourceVersion`` is 409 Conflict; so is a patch that carries
  one, a scale update with a stale one and a delete with failing preconditions. Custom objects
  must carry a resourceVersion on PUT (422 otherwise); built-ins may update unconditionally.
- PATCH: ``application/merge-patch+json`` (RFC 7386), ``application/json-patch+json``
  (RFC 6902, all six ops including ``test``; a failing op is 422), and
  ``application/strategic-merge-patch+json`` for built-ins (lists merged by their patchMergeKey,
  ``$patch: delete|replace``); strategic merge on a custom resource is 415, as upstream.
- Status subresource: writes to the main resource keep the old status, writes to ``/status``
  change only the status; status is dropped on create. ``metadata.generation`` starts at 1 and
  is bumped when anything but metadata and status changes.
- Scale subresource of deployments (and of CRDs that declare one): an ``autoscaling/v1 Scale``.
- Finalizers and graceful deletion: an object with finalizers, or a pod bound to a node, gets a
  ``deletionTimestamp`` (MODIFIED) and goes away when its finalizers are removed (DELETED) or
  the kubelet confirms (``remove()``); an unbound pod is deleted at once.
- Errors are ``Status`` objects with the upstream reason and message shape: 400 BadRequest, 403
  Forbidden (from an RBAC allow-list of (verb, group, resource) set with ``allow()``; ``*``
  wildcards; subresources as ``deployments/scale``), 404 NotFound, 409 Conflict/AlreadyExists,
  410 Expired, 415, 422 Invalid with ``details.causes``, 429 with Retry-After, 500.
- Custom objects are pruned (unknown fields dropped, with a ``Warning`` header, or 400 with
  ``fieldValidation=Strict``), defaulted and validated against the CRD's structural schema
  (types, required, enum, pattern, bounds, lengths, int-or-string, nullable; the KEDA
  min<=max CEL rule). Built-ins get the few validations the autoscaler can trip: pod containers,
  deployment selector must match the template and is immutable, replicas >= 0, lease durations.
- Watches (``?watch=1``): JSON lines of ``{type, object}``. Without a resourceVersion (or "0"):
  synthetic ADDED events for the current state, then live events. From a resourceVersion: the
  history after it. An object that stops (starts) matching the selector arrives as DELETED
  (ADDED). DELETED carries the deletion's revision. ``allowWatchBookmarks`` lets ``bookmark()``
  send BOOKMARK events; ``timeoutSeconds`` ends the stream cleanly. A revision older than the
  kept history (``history`` writes, or after ``compact()``) gets an ERROR event with a 410
  Expired Status, as the watch cache sends.

Test controls: ``fail_next(n, status, verb=, resource=, retry_after=)`` (status None cuts the
connection), ``pause()``/``resume()`` (a hung server), ``drop_watches(abort=True)`` (cut watch
streams mid-event) or ``abort=False`` (clean end), ``bookmark()``, ``compact()``, ``until(pred)``
(await a condition re-checked after every request, without sleeping), ``requests`` (every
request with its verb, body and answer), and direct ``seed``/``write``/``remove``/``object``
plus kubelet-like ``add_pod``/``set_pod_status``. Timestamps come from the injected clock.

Not faithful (known gaps):

- No controllers: deployments do not create ReplicaSets or pods, nothing fills in status, no
  garbage collection by ownerReferences, no namespace lifecycle (objects may be created in a
  namespace that does not exist), no admission webhooks (Knative's and KServe's webhooks reject
  and default far more than their CRD schemas do).
- No authentication; RBAC is a flat allow-list, not Roles and bindings.
- Server-side apply (``application/apply-patch+yaml``) is 415; no managedFields.
- Strategic merge knows the merge keys of the common pod and deployment lists only, and ignores
  ``$setElementOrder``/``$retainKeys``/``$deleteFromPrimitiveList`` directives.
- Schema ``format`` is not checked; CEL rules other than the KEDA one are skipped; no
  conversion between CRD versions (all versions share one storage and schema per version);
  the CRD ``metadata`` schema is not applied.
- Built-in types are not schema-validated beyond the checks listed above.
- Watches: no server-initiated periodic bookmarks (only ``bookmark()``), no ``sendInitialEvents``
  (watch-list), unbounded per-watch buffers (a real server closes a watch that falls behind),
  a resourceVersion in the future is served as if current. Lists are served from the live
  state (with ``continue``, items may shift if objects change between pages).
- ``creationTimestamp`` and other times have one-second resolution as upstream, but come from
  the injected clock (a ManualClock by default), not the wall clock.
"""

from autoscaler.testing.fake_kube.server import (
    ApiError,
    FakeKube,
    Fault,
    RequestRecord,
    shared_crd_dir,
)

__all__ = ["ApiError", "FakeKube", "Fault", "RequestRecord", "shared_crd_dir"]
