"""Object storage with etcd's revision semantics: one global revision bumped by every write,
an event history for watches (bounded, so an old revision expires with 410), and fan-out of
events to the open watches."""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
ResourceKey = tuple[str, str]  # (group, plural)
ObjectKey = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects


@dataclass(frozen=True, slots=True)
class Change:
    """One stored write: ``old`` is None for a creation, ``new`` is None for a deletion."""

    rv: int
    resource: ResourceKey
    key: ObjectKey
    old: Obj | None
    new: Obj | None


# What a watch puts on its queue: a (type, object) event, or a sentinel that ends the stream.
END = "END"  # close the stream cleanly (server-side timeout, shutdown)
ABORT = "ABORT"  # cut the connection mid-stream


@dataclass(eq=False)
class Watch:
    resource: ResourceKey
    namespace: str | None
    match: Callable[[Obj], bool]
    bookmarks: bool
    decorate: Callable[[Obj], Obj]  # adds kind/apiVersion of the watched version
    queue: asyncio.Queue[tuple[str, Obj] | str] = field(default_factory=asyncio.Queue)

    def wants(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        ns = obj.get("metadata", {}).get("namespace", "")
        return (self.namespace is None or ns == self.namespace) and self.match(obj)

    def offer(self, change: Change) -> None:
        """Translate a write into this watch's view: a label change that makes an object leave
        (or enter) the selection is a DELETED (or ADDED) event, as the watch cache sends."""
        if change.resource != self.resource:
            return
        before, after = self.wants(change.old), self.wants(change.new)
        if after and before:
            self.queue.put_nowait(("MODIFIED", self.decorate(change.new or {})))
        elif after:
            self.queue.put_nowait(("ADDED", self.decorate(change.new or {})))
        elif before:
            gone = copy.deepcopy(change.new if change.new is not None else change.old) or {}
            gone.setdefault("metadata", {})["resourceVersion"] = str(change.rv)
            self.queue.put_nowait(("DELETED", self.decorate(gone)))


class Store:
    def __init__(self, history: int = 10_000) -> None:
        self.rv = 1
        self._objects: dict[ResourceKey, dict[ObjectKey, Obj]] = {}
        self._history: deque[Change] = deque()
        self._history_limit = history
        self.compacted_rv = 1  # a watch may start from any revision >= this one
        self.watches: set[Watch] = set()

    # --- reads ---

    def get(self, resource: ResourceKey, key: ObjectKey) -> Obj | None:
        return self._objects.get(resource, {}).get(key)

    def items(self, resource: ResourceKey, namespace: str | None = None) -> Iterator[Obj]:
        objs = self._objects.get(resource, {})
        for k in sorted(objs):
            if namespace is None or k[0] == namespace:
                yield objs[k]

    def items_at(self, resource: ResourceKey, rv: int, namespace: str | None) -> list[Obj]:
        """The objects as they were at revision ``rv`` (>= compacted_rv), by undoing history."""
        state = {k: o for k, o in self._objects.get(resource, {}).items()}
        for change in reversed(self._history):
            if change.rv <= rv:
                break
            if change.resource != resource:
                continue
            if change.old is None:
                state.pop(change.key, None)
            else:
                state[change.key] = change.old
        return [state[k] for k in sorted(state) if namespace is None or k[0] == namespace]

    def changes_since(self, rv: int) -> Iterator[Change]:
        for change in self._history:
            if change.rv > rv:
                yield change

    # --- writes ---

    def _record(self, change: Change) -> None:
        self._history.append(change)
        while len(self._history) > self._history_limit:
            self.compacted_rv = self._history.popleft().rv
        for w in list(self.watches):
            w.offer(change)

    def put(self, resource: ResourceKey, key: ObjectKey, obj: Obj) -> Obj:
        """Create or replace; bumps the revision, stamps it on the object, notifies watches."""
        self.rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        old = self._objects.setdefault(resource, {}).get(key)
        self._objects[resource][key] = obj
        self._record(Change(self.rv, resource, key, old, obj))
        return obj

    def delete(self, resource: ResourceKey, key: ObjectKey) -> Obj | None:
        old = self._objects.get(resource, {}).pop(key, None)
        if old is None:
            return None
        self.rv += 1
        self._record(Change(self.rv, resource, key, old, None))
        return old

    def compact(self) -> None:
        """Forget all history (as etcd compaction): any watch from an older revision gets 410."""
        self._history.clear()
        self.compacted_rv = self.rv

    def bookmark(self) -> int:
        """Send a BOOKMARK at the current revision to every watch that allows them."""
        n = 0
        for w in list(self.watches):
            if w.bookmarks:
                obj = w.decorate({"metadata": {"resourceVersion": str(self.rv)}})
                w.queue.put_nowait(("BOOKMARK", obj))
                n += 1
        return n

    def end_watches(self, how: str = END, resource: ResourceKey | None = None) -> int:
        n = 0
        for w in list(self.watches):
            if resource is None or w.resource == resource:
                w.queue.put_nowait(how)
                n += 1
        return n
