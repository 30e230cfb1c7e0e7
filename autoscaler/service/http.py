"""The service's HTTP surface (aiohttp): health, readiness, metrics and debug views.

Handlers only read state; background work lives in cleanup contexts (see app.py), never in
handlers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from autoscaler.config.models import PolicyFile
from autoscaler.service.loop import ControlLoop

_SECRET = re.compile(r"(token|password|secret|authorization|apikey|api_key|credential)", re.I)
_USERINFO = re.compile(r"(https?://)[^/@\s]+@")


@dataclass
class ServiceState:
    """What the handlers read. ``checks`` are named readiness probes (True when healthy)."""

    loop: ControlLoop
    registry: CollectorRegistry
    policy: PolicyFile
    policy_path: str = ""
    checks: dict[str, Callable[[], bool]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


STATE = web.AppKey("state", ServiceState)


def redact(value: Any) -> Any:
    """Copy of a config tree with secret-looking keys masked and URL credentials removed."""
    if isinstance(value, dict):
        return {k: ("***" if _SECRET.search(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _USERINFO.sub(r"\1***@", value)
    return value


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    failing = sorted(name for name, check in state.checks.items() if not check())
    body = {"ready": not failing, "failing": failing, "ticks": state.loop.ticks}
    return web.json_response(body, status=503 if failing else 200)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[STATE].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def debug_decisions(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        n = int(request.query.get("n", "20"))
    except ValueError:
        raise web.HTTPBadRequest(text="n must be an integer") from None
    wanted = request.query.get("target")
    out = {
        key: records[-n:] if n > 0 else []
        for key, records in sorted(state.loop.records.items())
        if wanted is None or key == wanted
    }
    if wanted is not None and not out:
        raise web.HTTPNotFound(text=f"no decisions for target {wanted!r}")
    return web.json_response(out)


async def debug_config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = {
        "policyFile": state.policy_path,
        "policy": redact(state.policy.model_dump(mode="json", by_alias=True)),
        "settings": redact(state.settings),
    }
    return web.json_response(body)


def build_http_app(state: ServiceState) -> web.Application:
    app = web.Application()
    app[STATE] = state
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/debug/decisions", debug_decisions)
    app.router.add_get("/debug/config", debug_config)
    return app
