"""A core/v1 Event on each object we change, so ``kubectl describe`` shows who scaled it, from
what to what, under which policy and why.

One Event per object written, type Normal, reason ``AutoscalerScaled``, from the component
``kserve-autoscaler``. Other writers (canary rollouts) give their own reason and action, and
type Warning for what an operator should look at (a rollback, a failed check). An Event that
cannot be created is logged and reported in the outcome's detail; it never undoes or fails the
write it describes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from autoscaler.actuators.calls import FIELD_MANAGER, ApiCaller
from autoscaler.core.clock import Clock
from autoscaler.kube import ApiClient, CoreV1Api

log = logging.getLogger("autoscaler.actuators.events")

REASON_SCALED = "AutoscalerScaled"
MAX_MESSAGE = 1024  # what kubectl shows comfortably; the API allows more


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """The object an Event is about (``involvedObject``)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    @classmethod
    def of(cls, obj: dict[str, Any], api_version: str, kind: str) -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(
            api_version,
            kind,
            str(meta.get("namespace", "")),
            str(meta.get("name", "")),
            str(meta.get("uid") or ""),
            str(meta.get("resourceVersion") or ""),
        )


def _rfc3339(when: float) -> str:
    return datetime.fromtimestamp(when, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    """Creates Events through the shared ApiCaller (rate limit and retries included)."""

    def __init__(
        self,
        api: ApiClient,
        caller: ApiCaller,
        clock: Clock,
        *,
        component: str = FIELD_MANAGER,
        instance: str = "",
    ) -> None:
        self._core = CoreV1Api(api)
        self._caller = caller
        self._clock = clock
        self.component = component
        self.instance = instance or component

    def body(
        self,
        obj: ObjectRef,
        reason: str,
        message: str,
        *,
        warning: bool = False,
        action: str = "Scale",
    ) -> dict[str, Any]:
        now = _rfc3339(self._clock.now())
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        involved = {
            "apiVersion": obj.api_version,
            "kind": obj.kind,
            "namespace": obj.namespace,
            "name": obj.name,
        }
        if obj.uid:
            involved["uid"] = obj.uid
        if obj.resource_version:
            involved["resourceVersion"] = obj.resource_version
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{obj.name}.", "namespace": obj.namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "action": action,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }

    async def record(
        self,
        obj: ObjectRef,
        reason: str,
        message: str,
        *,
        warning: bool = False,
        action: str = "Scale",
    ) -> None:
        """Create the Event; raises the caller's errors (the caller decides what they mean)."""
        # A dict: the stubs want a CoreV1Event.
        body: Any = self.body(obj, reason, message, warning=warning, action=action)
        await self._caller(
            f"create events {obj.namespace} ({obj})",
            lambda: self._core.create_namespaced_event(
                obj.namespace, body, _request_timeout=self._caller.request_timeout
            ),
        )
