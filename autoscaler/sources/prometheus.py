"""Signals from the Prometheus HTTP API: one instant PromQL query per target and signal.

For users who already aggregate in Prometheus (DCGM exporter GPU metrics, recording rules). Each
target's ``signals.prometheus`` block names a server and its queries; ``{namespace}`` and
``{name}`` in a query are replaced by the target's (plain ``str.replace``: PromQL has braces of
its own, so ``str.format`` would break on every label matcher).

    GET {url}/api/v1/query?query=<filled PromQL>

**One number per query.** A query must return a scalar or a vector of exactly one series
(aggregate in PromQL: ``sum(...)``, ``avg(...)``). An empty vector is missing data ("empty"), not
zero: Prometheus drops a series from instant results once its target stops answering (staleness
markers), and zero load must never be read into that. A vector of several series is missing data
("ambiguous") rather than a silent sum: summing would double count as soon as a query matches
series it was not meant to (a second job scraping the same pods, a label that forks a series),
and the SRE gets a counted error that points at the query instead of a scale-up nobody can explain.

**Timestamps.** An observation carries the result's own timestamp (the evaluation time Prometheus
reports), not the time we received it, so staleness is measured. A timestamp ahead of our clock
(clock skew between hosts) is pulled back to our ``now``: windows keep ``(now - span, now]``, and
a sample from the future would sit outside every window and block the samples after it.

**Failures** never raise; each is counted per target in the ``SourceReport`` and the signal is
missing for this collection. Problem kinds:

    timeout             no complete answer within timeoutSeconds (retried)
    connection          refused, reset, DNS, truncated body (retried)
    rate_limited        429 after the last retry (retried; Retry-After honoured)
    http_error          5xx after the last retry; any other unexpected status (not retried)
    bad_query           400 or 422: Prometheus rejected the PromQL (not retried; logged once)
    query_error         a 2xx answer whose status is not "success"
    parse_error         not JSON, or not the shape of the query API
    too_large           the answer exceeded max_body_bytes
    unsupported_result  a matrix, string or native-histogram result (not a number)
    empty               an empty vector: no such series (now)
    ambiguous           more than one series
    nan, inf, negative  a value no load signal can have
    internal_error      a bug in this module (logged with its traceback)

**Retries**: ``retries`` more attempts after the first, on timeouts, connection errors, 429 and
5xx, with exponential backoff and full jitter (``uniform(0, min(cap, base * 2**attempt))``). A
``Retry-After`` header (seconds or an HTTP date) replaces the jittered delay; one longer than
``max_retry_after`` ends the attempts for this collection (the next tick asks again). Sleeps go
through the injected Clock. Queries to the same Prometheus run concurrently, at most
``max_concurrency`` in flight; backoff sleeps do not hold a slot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import aiohttp

from autoscaler.config.models import Target
from autoscaler.config.signals import PrometheusSource as PrometheusConfig
from autoscaler.config.signals import PromQuery
from autoscaler.core.backoff import full_jitter, parse_retry_after
from autoscaler.core.clock import Clock
from autoscaler.core.protocols import SourceReport
from autoscaler.core.types import Observation, TargetRef

__all__ = [
    "PrometheusConfig",
    "PrometheusSource",
    "fill_query",
    "full_jitter",
    "parse_query_response",
    "parse_retry_after",
    "prometheus_configs",
]

log = logging.getLogger("autoscaler.sources.prometheus")

QUERY_PATH = "/api/v1/query"


class _Outcome(NamedTuple):
    """One HTTP attempt: a (ts, value) sample, or a problem kind and whether to try again."""

    sample: tuple[float, float] | None
    kind: str = ""
    retryable: bool = False
    retry_after: float | None = None


def fill_query(query: str, target: TargetRef) -> str:
    """The PromQL of ``query`` for ``target``: ``{namespace}`` and ``{name}`` filled in."""
    return query.replace("{namespace}", target.namespace).replace("{name}", target.name)


def prometheus_configs(
    targets: Iterable[tuple[TargetRef, Target]],
) -> dict[str, PrometheusConfig]:
    """target key -> its Prometheus block, for the targets of a policy that have one."""
    return {ref.key: t.signals.prometheus for ref, t in targets if t.signals.prometheus is not None}


def parse_query_response(payload: object) -> tuple[float, float] | str:
    """The ``(ts, value)`` of an instant query's answer, or the problem kind (module docstring)."""
    if not isinstance(payload, dict):
        return "parse_error"
    if payload.get("status") != "success":
        return "query_error"
    data = payload.get("data")
    if not isinstance(data, dict):
        return "parse_error"
    result_type = data.get("resultType")
    result = data.get("result")
    sample: object
    if result_type == "scalar":
        sample = result
    elif result_type == "vector":
        if not isinstance(result, list):
            return "parse_error"
        if not result:
            return "empty"
        if len(result) > 1:
            return "ambiguous"
        series = result[0]
        if not isinstance(series, dict):
            return "parse_error"
        if "value" not in series and "histogram" in series:
            return "unsupported_result"
        sample = series.get("value")
    elif result_type in ("matrix", "string"):
        return "unsupported_result"
    else:
        return "parse_error"
    if not isinstance(sample, list) or len(sample) != 2:
        return "parse_error"
    raw_ts, raw_value = sample
    if isinstance(raw_ts, bool) or not isinstance(raw_ts, int | float):
        return "parse_error"
    if not isinstance(raw_value, str | int | float) or isinstance(raw_value, bool):
        return "parse_error"
    try:
        ts = float(raw_ts)
        value = float(raw_value)
    except ValueError:
        return "parse_error"
    if not math.isfinite(ts):
        return "parse_error"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf"
    if value < 0:
        return "negative"
    return ts, value


class PrometheusSource:
    """A Source (``autoscaler.core.protocols``) over the Prometheus HTTP API.

    ``configs`` maps a target key (``namespace/name``) to its ``signals.prometheus`` block;
    ``collect`` queries only the targets that have one. The session is the caller's: ``close``
    leaves it open. ``retried`` counts retries by problem kind (a retry that then succeeded is not
    a problem in the report, but it is worth a metric).
    """

    name = "prometheus"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        configs: Mapping[str, PrometheusConfig] | None = None,
        *,
        clock: Clock,
        rng: random.Random | None = None,
        max_concurrency: int = 8,
        backoff_base: float = 0.1,
        backoff_cap: float = 2.0,
        max_retry_after: float = 10.0,
        max_body_bytes: int = 1024 * 1024,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._session = session
        self._configs: dict[str, PrometheusConfig] = dict(configs or {})
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._max_concurrency = max_concurrency
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._max_retry_after = max_retry_after
        self._max_body_bytes = max_body_bytes
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._warned: set[tuple[str, str]] = set()
        self.retried: Counter[str] = Counter()

    def set_configs(self, configs: Mapping[str, PrometheusConfig]) -> None:
        """Replace the per-target configuration (hot reload); takes effect at the next collect."""
        self._configs = dict(configs)

    async def collect(self, targets: Sequence[TargetRef]) -> SourceReport:
        jobs: list[tuple[TargetRef, PrometheusConfig, PromQuery]] = [
            (t, cfg, q)
            for t in targets
            if (cfg := self._configs.get(t.key)) is not None
            for q in cfg.queries
        ]
        results = await asyncio.gather(*(self._read(t, cfg, q) for t, cfg, q in jobs))
        report = SourceReport()
        for (target, _, query), result in zip(jobs, results, strict=True):
            if isinstance(result, str):
                report.error(target.key, result)
            else:
                ts, value = result
                report.observations.append(Observation(target.key, query.signal, value, ts))
        return report

    async def close(self) -> None:
        """Nothing to release: the session belongs to whoever passed it in."""

    async def _read(
        self, target: TargetRef, cfg: PrometheusConfig, query: PromQuery
    ) -> tuple[float, float] | str:
        promql = fill_query(query.query, target)
        try:
            outcome = await self._query(cfg, promql)
        except Exception:
            log.exception("query for %s %s failed unexpectedly", target.key, query.signal)
            return "internal_error"
        if outcome.sample is None:
            log.debug("no %s for %s from %s: %s", query.signal, target.key, cfg.url, outcome.kind)
            return outcome.kind
        ts, value = outcome.sample
        return min(ts, self._clock.now()), value

    async def _query(self, cfg: PrometheusConfig, promql: str) -> _Outcome:
        url = cfg.url.rstrip("/") + QUERY_PATH
        slots = self._slots.get(cfg.url)
        if slots is None:
            slots = self._slots[cfg.url] = asyncio.Semaphore(self._max_concurrency)
        attempt = 0
        while True:
            async with slots:
                outcome = await self._attempt(url, promql, cfg.timeout_seconds)
            if outcome.sample is not None or not outcome.retryable or attempt >= cfg.retries:
                return outcome
            delay = self._delay(attempt, outcome.retry_after)
            if delay is None:
                return outcome
            self.retried[outcome.kind] += 1
            attempt += 1
            await self._clock.sleep(delay)

    def _delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Full-jitter exponential backoff, or the server's Retry-After (None: too long to wait)."""
        if retry_after is not None:
            return retry_after if retry_after <= self._max_retry_after else None
        return full_jitter(self._rng, attempt, self._backoff_base, self._backoff_cap)

    async def _attempt(self, url: str, promql: str, timeout: float) -> _Outcome:
        try:
            async with (
                asyncio.timeout(timeout),
                self._session.get(
                    url, params={"query": promql}, headers={"Accept": "application/json"}
                ) as resp,
            ):
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                body = await self._read_body(resp)
        except TimeoutError:
            return _Outcome(None, "timeout", retryable=True)
        except aiohttp.ClientError:
            return _Outcome(None, "connection", retryable=True)
        if body is None:
            return _Outcome(None, "too_large")
        if status == 429 or status >= 500:
            kind = "rate_limited" if status == 429 else "http_error"
            wait = parse_retry_after(retry_after, self._clock.now())
            return _Outcome(None, kind, retryable=True, retry_after=wait)
        if status in (400, 422):
            self._warn_bad_query(url, promql, body)
            return _Outcome(None, "bad_query")
        if not 200 <= status < 300:
            return _Outcome(None, "http_error")
        try:
            payload = json.loads(body)
        except ValueError:
            return _Outcome(None, "parse_error")
        parsed = parse_query_response(payload)
        if isinstance(parsed, str):
            return _Outcome(None, parsed)
        return _Outcome(parsed)

    async def _read_body(self, resp: aiohttp.ClientResponse) -> bytes | None:
        """The body, or None when it is larger than max_body_bytes (read no further)."""
        limit = self._max_body_bytes
        if resp.content_length is not None and resp.content_length > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _warn_bad_query(self, url: str, promql: str, body: bytes) -> None:
        if (url, promql) in self._warned:
            return
        self._warned.add((url, promql))
        try:
            detail = json.loads(body).get("error", "")
        except (ValueError, AttributeError):
            detail = body[:200].decode("utf-8", "replace")
        log.warning("Prometheus at %s rejected query %r: %s", url, promql, detail)
