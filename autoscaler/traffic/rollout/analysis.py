"""Analysis through any ``Source`` (the service passes the Prometheus source) and webhooks.

``SourceAnalyzer`` turns a rollout's metrics into a Prometheus source configuration
(``signals.prometheus`` shape: one query per metric, the metric's name as the signal) and
collects once. The source brings its retries, timeouts and its reading of bad answers: an empty
vector, several series, NaN or a refused query is a *missing* value here (an inconclusive check),
never a zero that would pass an error-rate bound.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp

from autoscaler.config.rollout import Analysis, Webhook
from autoscaler.config.signals import PrometheusSource as PrometheusConfig
from autoscaler.config.signals import PromQuery
from autoscaler.core.protocols import Source
from autoscaler.core.types import TargetRef
from autoscaler.traffic.rollout.machine import CheckResult, HookResult

log = logging.getLogger("autoscaler.traffic.rollout")

SourceFactory = Callable[[Mapping[str, PrometheusConfig]], Source]


def fill_revisions(query: str, canary: str, stable: str) -> str:
    """``{canary}`` and ``{stable}`` replaced (the source fills ``{namespace}``, ``{name}``)."""
    return query.replace("{canary}", canary).replace("{stable}", stable)


class SourceAnalyzer:
    """Measures a rollout's metrics with a source built by ``make_source`` from the configs
    (in the service: ``PrometheusSource(session, configs, clock=clock)``)."""

    def __init__(self, make_source: SourceFactory) -> None:
        self.make_source = make_source

    async def measure(
        self, target: TargetRef, canary: str, stable: str, analysis: Analysis
    ) -> CheckResult:
        server = analysis.prometheus
        config = PrometheusConfig(
            url=server.url,
            timeout_seconds=server.timeout_seconds,
            retries=server.retries,
            queries=tuple(
                PromQuery(signal=m.name, query=fill_revisions(m.query, canary, stable))
                for m in analysis.metrics
            ),
        )
        source = self.make_source({target.key: config})
        try:
            report = await source.collect([target])
        finally:
            await source.close()
        values: dict[str, float | None] = {m.name: None for m in analysis.metrics}
        for ob in report.observations:
            if ob.target == target.key and ob.signal in values:
                values[ob.signal] = ob.value
        if report.errors:
            log.info("%s: analysis problems %s", target, dict(report.errors))
        return CheckResult(values)


class WebhookRunner:
    """POSTs ``{"name", "metadata", ...payload}`` as JSON to each webhook in order; the first
    non-2xx answer, timeout or connection error fails the lot (the rest are not called)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def run(self, hooks: Iterable[Webhook], payload: Mapping[str, Any]) -> HookResult:
        for hook in hooks:
            body = json.dumps({"name": hook.name, "metadata": hook.metadata, **payload})
            try:
                async with (
                    asyncio.timeout(hook.timeout_seconds),
                    self.session.post(
                        hook.url, data=body, headers={"Content-Type": "application/json"}
                    ) as resp,
                ):
                    status = resp.status
                    await resp.read()
            except TimeoutError:
                return HookResult(
                    False, f"webhook {hook.name}: no answer in {hook.timeout_seconds:g}s"
                )
            except aiohttp.ClientError as e:
                return HookResult(False, f"webhook {hook.name}: {type(e).__name__}: {e}")
            if not 200 <= status < 300:
                return HookResult(False, f"webhook {hook.name}: HTTP {status}")
        return HookResult(True)
