"""Finds policy plugins through the ``autoscaler.policies`` entry-point group.

Built-ins register through the same group (see pyproject.toml), so they get no special path; a
fallback table keeps them available when the package runs from a source tree without metadata.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from importlib.metadata import entry_points

from autoscaler.policy.api import Policy

GROUP = "autoscaler.policies"

_BUILTINS = {
    "kpa": "autoscaler.policy.builtin.kpa:KpaPolicy",
    "hpa": "autoscaler.policy.builtin.hpa:HpaPolicy",
    "keda": "autoscaler.policy.builtin.keda:KedaPolicy",
    "queue": "autoscaler.policy.builtin.queue:QueuePolicy",
    "tokens": "autoscaler.policy.builtin.tokens:TokensPolicy",
    "gpu": "autoscaler.policy.builtin.gpu:GpuPolicy",
    "max": "autoscaler.policy.builtin.composite:MaxPolicy",
    "static": "autoscaler.policy.builtin.static:StaticPolicy",
    "keepalive": "autoscaler.policy.builtin.keepalive:KeepalivePolicy",
    "llm": "autoscaler.policy.builtin.llm:LlmPolicy",
    "predictive": "autoscaler.policy.builtin.predictive:PredictivePolicy",
}


def _load(spec: str) -> type[Policy[object, object]]:  # type: ignore[type-var]
    module, _, attr = spec.partition(":")
    cls = getattr(import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise TypeError(f"{spec} is not a Policy subclass")
    return cls


@cache
def _specs() -> dict[str, str]:
    specs = dict(_BUILTINS)
    for ep in entry_points(group=GROUP):
        specs[ep.name] = ep.value
    return specs


def policy_names() -> list[str]:
    return sorted(_specs())


@cache
def get_policy_class(name: str) -> type[Policy]:  # type: ignore[type-arg]
    """The plugin class registered as ``name``; KeyError listing the known names otherwise."""
    specs = _specs()
    if name not in specs:
        raise KeyError(f"unknown policy {name!r}; known policies: {', '.join(sorted(specs))}")
    return _load(specs[name])
