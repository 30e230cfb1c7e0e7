"""Actuators: apply decisions through the knobs each engine owns (docs/actuators.md).

    knative      Knative Service / serverless InferenceService: Revision (or PodAutoscaler)
                 min-scale, max-scale and target annotations
    kserve       raw-deployment InferenceService: spec.predictor minReplicas, maxReplicas,
                 scaleTarget
    deployment   plain Deployment: the scale subresource

Build them with ``build_actuator``; give every actuator of a process the same ``ApiCaller`` (and
so the same client-side rate limit) and ``EventRecorder``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from autoscaler.actuators.backoff import RetryPolicy
from autoscaler.actuators.base import TARGET_PER_POD, WritingActuator
from autoscaler.actuators.calls import FIELD_MANAGER, ApiCaller
from autoscaler.actuators.deployment import DeploymentActuator
from autoscaler.actuators.events import EventRecorder
from autoscaler.actuators.knative import KnativeActuator
from autoscaler.actuators.kserve import KServeActuator
from autoscaler.actuators.ratelimit import TokenBucket
from autoscaler.core.clock import Clock
from autoscaler.kube import ApiClient

__all__ = [
    "ENGINES",
    "FIELD_MANAGER",
    "TARGET_PER_POD",
    "ApiCaller",
    "DeploymentActuator",
    "EventRecorder",
    "KServeActuator",
    "KnativeActuator",
    "RetryPolicy",
    "TokenBucket",
    "WritingActuator",
    "build_actuator",
]

#: ``actuation.engine`` -> the actuator class that drives it.
ENGINES: Mapping[str, Callable[..., WritingActuator]] = {
    "knative": KnativeActuator,
    "kserve": KServeActuator,
    "deployment": DeploymentActuator,
}


def build_actuator(
    engine: str,
    api_client: ApiClient,
    clock: Clock,
    *,
    caller: ApiCaller | None = None,
    events: EventRecorder | None = None,
    dry_run: bool = False,
    **options: Any,
) -> WritingActuator:
    """The actuator for ``engine`` (``Actuation.engine``). ``caller`` and ``events`` default to
    new ones; pass the same to every actuator so they share one rate limit. ``options`` go to the
    actuator (``knative_version`` for knative, ``allow_owned`` for deployment)."""
    try:
        factory = ENGINES[engine]
    except KeyError:
        known = ", ".join(sorted(ENGINES))
        raise ValueError(f"no actuator for engine {engine!r} (known: {known})") from None
    if caller is None:
        caller = ApiCaller(clock)
    if events is None:
        events = EventRecorder(api_client, caller, clock)
    return factory(api_client, clock, caller=caller, events=events, dry_run=dry_run, **options)
