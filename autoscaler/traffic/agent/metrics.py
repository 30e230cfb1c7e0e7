"""The agent's Prometheus metrics, in a registry the composition root passes in.

``autoscaler_agent_rejected_tokens_total`` is the one the service reads back (the ``agent`` scrape
preset maps it to ``throttled_tokens_per_second``: demand the target is not serving), so its
name is part of the contract with ``autoscaler/config/signals.py``. The GPU gauges come from
``autoscaler.sources.nvml.NvmlCollector``, registered by the CLI when ``--nvml`` is given.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["AgentMetrics"]

TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# the agent's latency budget is 1 ms: the buckets tell a 0.1 ms young collection from a 20 ms
# full one
GC_PAUSE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.in_flight = Gauge(
            "autoscaler_agent_requests_in_flight",
            "Requests admitted and not finished, by tenant.",
            ["tenant"],
            registry=registry,
        )
        self.queued = Gauge(
            "autoscaler_agent_requests_queued",
            "Requests waiting for token budget or a concurrency slot.",
            registry=registry,
        )
        self.admitted_requests = Counter(
            "autoscaler_agent_admitted_requests",
            "Requests admitted (metered ones; KServe V1/V2 and other paths are not metered).",
            ["tenant", "model"],
            registry=registry,
        )
        self.rejected_requests = Counter(
            "autoscaler_agent_rejected_requests",
            "Requests refused: reason tokens (429), concurrency (503).",
            ["tenant", "model", "reason"],
            registry=registry,
        )
        self.admitted_tokens = Counter(
            "autoscaler_agent_admitted_tokens",
            "Tokens served to admitted requests (real usage once known, else the estimate).",
            ["tenant", "model"],
            registry=registry,
        )
        self.rejected_tokens = Counter(
            "autoscaler_agent_rejected_tokens",
            "Estimated tokens of refused requests: demand this replica is not serving.",
            ["tenant", "model", "reason"],
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
