"""The agent's Prometheus metrics, in a registry the composition root passes in.

``autoscaler_agent_rejected_tokens_total`` is the one the service reads back (the ``agent`` scrape
preset maps it to ``throttled_tokens_per_second``: demand the target is not serving), so its
name is part of the contract with ``autoscaler/config/signals.py``. The GPU gauges come from
``autoscaler.sources.nvml.NvmlCollector``, registered by the CLI when ``--nvml`` is given.

The per-request series (in flight, admitted and rejected requests and tokens) are plain numbers
the request path adds to, exported by ``RequestCounters`` when ``/metrics`` is scraped: the same
names, labels, values and ``_created`` series as ``prometheus_client``'s ``Counter`` and
``Gauge`` (a test holds them equal), without a lock, a mutex-guarded value object and a
label-validity check on each of the four updates a request makes (docs/agent.md, "CPU per
request"). The rest (queue, TTFT, limits, GC) stay ``prometheus_client`` metrics: they are not
touched on every request.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["AgentMetrics", "RequestCounters", "Series"]

TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# the agent's latency budget is 1 ms: the buckets tell a 0.1 ms young collection from a 20 ms
# full one
GC_PAUSE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

IN_FLIGHT = (
    "autoscaler_agent_requests_in_flight",
    "Requests admitted and not finished, by tenant.",
)
ADMITTED_REQUESTS = (
    "autoscaler_agent_admitted_requests",
    "Requests admitted (metered ones; KServe V1/V2 and other paths are not metered).",
)
REJECTED_REQUESTS = (
    "autoscaler_agent_rejected_requests",
    "Requests refused: reason tokens (429), concurrency (503).",
)
ADMITTED_TOKENS = (
    "autoscaler_agent_admitted_tokens",
    "Tokens served to admitted requests (real usage once known, else the estimate).",
)
REJECTED_TOKENS = (
    "autoscaler_agent_rejected_tokens",
    "Estimated tokens of refused requests: demand this replica is not serving.",
)


def _use_created() -> bool:
    """As ``prometheus_client`` decides for its own counters (same environment variable)."""
    flag = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False")
    return flag.lower() not in ("true", "1", "t")


class Series:
    """The requests and tokens of one label set; the request path adds to the fields."""

    __slots__ = ("created", "requests", "tokens")

    def __init__(self, created: float | None) -> None:
        self.requests = 0
        self.tokens = 0.0
        self.created = created


class RequestCounters(Collector):
    """The per-request series as plain numbers, exported at scrape time.

    Owned by the event loop's thread: the request path and the admin port's ``/metrics`` run on
    the same loop, so nothing here needs a lock (``collect`` copies each map before walking it
    all the same). Label sets are bounded by the budget's ``tenant_key`` and ``model_key``.
    ``now`` (wall seconds, the agent's Clock) stamps each series' ``_created``, as
    ``prometheus_client`` does; without it there is no ``_created``."""

    def __init__(self, now: Callable[[], float] | None = None) -> None:
        self._now = now if _use_created() else None
        self.in_flight: dict[str, list[int]] = {}  # tenant -> [count]
        self.admitted: dict[tuple[str, str], Series] = {}  # (tenant, model)
        self.rejected: dict[tuple[str, str, str], Series] = {}  # (tenant, model, reason)

    def tenant(self, tenant: str) -> list[int]:
        """The one-element in-flight count of a tenant (made at first sight)."""
        cell = self.in_flight.get(tenant)
        if cell is None:
            cell = self.in_flight[tenant] = [0]
        return cell

    def admitted_series(self, tenant: str, model: str) -> Series:
        key = (tenant, model)
        series = self.admitted.get(key)
        if series is None:
            series = self.admitted[key] = Series(self._now() if self._now else None)
        return series

    def rejected_series(self, tenant: str, model: str, reason: str) -> Series:
        key = (tenant, model, reason)
        series = self.rejected.get(key)
        if series is None:
            series = self.rejected[key] = Series(self._now() if self._now else None)
        return series

    def describe(self) -> Iterator[Metric]:
        """The families without samples: the registry learns the names (and refuses a second
        metric of the same name) without a collection."""
        yield GaugeMetricFamily(*IN_FLIGHT, labels=["tenant"])
        yield CounterMetricFamily(*ADMITTED_REQUESTS, labels=["tenant", "model"])
        yield CounterMetricFamily(*REJECTED_REQUESTS, labels=["tenant", "model", "reason"])
        yield CounterMetricFamily(*ADMITTED_TOKENS, labels=["tenant", "model"])
        yield CounterMetricFamily(*REJECTED_TOKENS, labels=["tenant", "model", "reason"])

    def collect(self) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily(*IN_FLIGHT, labels=["tenant"])
        for tenant, cell in list(self.in_flight.items()):
            in_flight.add_metric([tenant], float(cell[0]))
        yield in_flight
        for requests_doc, tokens_doc, labels, table in (
            (ADMITTED_REQUESTS, ADMITTED_TOKENS, ["tenant", "model"], self.admitted),
            (REJECTED_REQUESTS, REJECTED_TOKENS, ["tenant", "model", "reason"], self.rejected),
        ):
            requests = CounterMetricFamily(*requests_doc, labels=labels)
            tokens = CounterMetricFamily(*tokens_doc, labels=labels)
            for key, series in list(table.items()):
                requests.add_metric(list(key), float(series.requests), created=series.created)
                tokens.add_metric(list(key), series.tokens, created=series.created)
            yield requests
            yield tokens


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry, now: Callable[[], float] | None = None) -> None:
        self.registry = registry
        self.requests = RequestCounters(now)
        registry.register(self.requests)
        self.queued = Gauge(
            "autoscaler_agent_requests_queued",
            "Requests waiting for token budget or a concurrency slot.",
            registry=registry,
        )
        self.ttft = Histogram(
            "autoscaler_agent_time_to_first_token_seconds",
            "Streaming requests: admission to the first body chunk from the model server.",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "autoscaler_agent_queue_wait_seconds",
            "Time admitted requests spent in the queue.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=registry,
        )
        self.token_limit = Gauge(
            "autoscaler_agent_token_limit_tokens_per_second",
            "Token rate this replica enforces (+Inf: unlimited, as configured).",
            registry=registry,
        )
        self.limit_source = Gauge(
            "autoscaler_agent_token_limit_source",
            "1 for where the enforced limit came from: http, configmap, default or kept.",
            ["source"],
            registry=registry,
        )
        self.limit_reads = Counter(
            "autoscaler_agent_limit_reads",
            "Reads of the published limits, by source and result (ok, unreadable, stale...).",
            ["source", "result"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "autoscaler_agent_upstream_errors",
            "Requests the model server did not answer: connect, timeout, disconnect.",
            ["kind"],
            registry=registry,
        )
        self.gc_pause = Histogram(
            "autoscaler_agent_gc_pause_seconds",
            "Garbage collections: how long each held the agent, by generation (0, 1, 2).",
            ["generation"],
            buckets=GC_PAUSE_BUCKETS,
            registry=registry,
        )
        for source in ("http", "configmap", "default", "kept"):
            self.limit_source.labels(source).set(0)

    def set_limit(self, rate: float, source: str) -> None:
        self.token_limit.set(rate)
        for s in ("http", "configmap", "default", "kept"):
            self.limit_source.labels(s).set(1 if s == source else 0)
