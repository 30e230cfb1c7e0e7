"""Which token-rate limit the agent enforces (docs/token-limits.md). Pure: text in, decision out.

The service publishes each target's limit over HTTP (``GET /tokens/{ns}/{name}``) and in the
ConfigMap ``kserve-autoscaler-token-limits`` (key ``<name>.json``, mounted at
``/etc/token-limits/<name>.json``). The agent enforces, in this order:

1. a fresh HTTP answer that is not ``dryRun``: its ``tokenRatePerReplica``;
2. else the ConfigMap key: its ``tokenRatePerReplica``;
3. a ``null`` limit (the policy sets none): the configured default;
4. nothing readable (service unreachable, key missing or unparsable, ``stale``, unknown version):
   keep the limit enforced now; with none yet, the configured default.

Never "unlimited" by accident: the default is a number unless the operator configured ``inf``.

The documents are parsed here rather than with ``autoscaler.actuators.tokens`` because the
layers keep ``traffic`` and ``actuators`` independent; tests/traffic/agent/test_limits.py feeds
this parser the service's own output so the two cannot drift apart.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FORMAT_VERSION",
    "Enforced",
    "LimitDocument",
    "LimitsFormatError",
    "parse_limits",
    "resolve",
]

FORMAT_VERSION = 1


class LimitsFormatError(ValueError):
    """A limits document the agent cannot use (it then keeps what it enforces)."""


@dataclass(frozen=True, slots=True)
class LimitDocument:
    """One published limit. ``rate_per_replica`` None: the policy sets no limit."""

    target: str
    rate_per_replica: float | None
    stale: bool = False
    dry_run: bool = False


def _rate(data: dict[str, Any], where: str) -> float | None:
    value = data.get("tokenRatePerReplica")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LimitsFormatError(f"{where}: tokenRatePerReplica must be a number or null")
    if not math.isfinite(value) or value < 0:
        raise LimitsFormatError(f"{where}: tokenRatePerReplica must be finite and >= 0")
    return float(value)


def parse_limits(text: str | bytes, where: str) -> LimitDocument:
    """Parse an HTTP answer or a ConfigMap value; ``where`` names the source in errors."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise LimitsFormatError(f"{where}: not JSON ({e})") from None
    if not isinstance(data, dict):
        raise LimitsFormatError(f"{where}: not a JSON object")
    version = data.get("version")
    if version != FORMAT_VERSION:
        raise LimitsFormatError(f"{where}: unknown version {version!r} (this agent reads 1)")
    if "tokenRatePerReplica" not in data:
        raise LimitsFormatError(f"{where}: no tokenRatePerReplica field")
    return LimitDocument(
        target=str(data.get("target", "")),
        rate_per_replica=_rate(data, where),
        stale=data.get("stale") is True,
        dry_run=data.get("dryRun") is True,
    )


@dataclass(frozen=True, slots=True)
class Enforced:
    """The limit in force: tokens/s for this replica, where it came from and why."""

    rate: float
    source: str  # "http", "configmap", "default" or "kept"
    reason: str


def resolve(
    http: LimitDocument | None,
    configmap: LimitDocument | None,
    current: Enforced | None,
    default: float,
    *,
    http_problem: str = "no HTTP answer",
    configmap_problem: str = "no ConfigMap key",
) -> Enforced:
    """The limit to enforce now. ``http`` and ``configmap`` are None when unreadable (the
    ``*_problem`` strings say why, for the reason); ``current`` is what is enforced now."""
    if http is not None and not http.stale and not http.dry_run:
        if http.rate_per_replica is None:
            return Enforced(default, "default", "the policy sets no limit (HTTP)")
        return Enforced(http.rate_per_replica, "http", "fresh HTTP answer")
    if http is not None:
        http_problem = "HTTP answer is stale" if http.stale else "HTTP answer is dry-run"
    if configmap is not None:
        if configmap.rate_per_replica is None:
            return Enforced(default, "default", "the policy sets no limit (ConfigMap)")
        return Enforced(configmap.rate_per_replica, "configmap", f"ConfigMap key ({http_problem})")
    why = f"{http_problem}; {configmap_problem}"
    if current is not None and current.source != "default":
        return Enforced(current.rate, "kept", f"kept the last limit ({why})")
    return Enforced(default, "default", f"no limit read yet ({why})")
