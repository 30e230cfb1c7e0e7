"""The per-request series: plain counters exported at scrape time (``RequestCounters``) give
what ``prometheus_client``'s own ``Counter`` and ``Gauge`` gave for the same updates."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import Metric

from autoscaler.core.clock import ManualClock
from autoscaler.traffic.agent import metrics as agent_metrics
from autoscaler.traffic.agent.metrics import (
    ADMITTED_REQUESTS,
    ADMITTED_TOKENS,
    IN_FLIGHT,
    REJECTED_REQUESTS,
    REJECTED_TOKENS,
    AgentMetrics,
    RequestCounters,
)

T0 = 1_700_000_000.0
PAIR = ["tenant", "model"]
TRIPLE = ["tenant", "model", "reason"]

# (operation, labels, amount): what a run of requests does to the series
OPERATIONS: list[tuple[str, tuple[str, ...], float]] = [
    ("in_flight", ("default",), 1),
    ("admitted", ("default", "chat"), 27.0),
    ("in_flight", ("free",), 1),
    ("in_flight", ("default",), -1),
    ("rejected", ("free", "chat", "tokens"), 91.0),
    ("admitted", ("key-0123456789ab", "_other"), 0.5),
    ("rejected", ("free", "chat", "tokens"), 12.0),
    ("rejected", ("default", "", "concurrency"), 0.0),
    ("admitted", ("default", "chat"), 16.0),
    ("in_flight", ("free",), -1),
]


def _reference(registry: CollectorRegistry) -> None:
    """The same updates through prometheus_client's classes, as the agent made them before."""
    in_flight = Gauge(*IN_FLIGHT, ["tenant"], registry=registry)
    admitted_requests = Counter(*ADMITTED_REQUESTS, PAIR, registry=registry)
    admitted_tokens = Counter(*ADMITTED_TOKENS, PAIR, registry=registry)
    rejected_requests = Counter(*REJECTED_REQUESTS, TRIPLE, registry=registry)
    rejected_tokens = Counter(*REJECTED_TOKENS, TRIPLE, registry=registry)
    for op, labels, amount in OPERATIONS:
        if op == "in_flight":
            in_flight.labels(*labels).inc(amount)
        elif op == "admitted":
            admitted_requests.labels(*labels).inc()
            admitted_tokens.labels(*labels).inc(amount)
        else:
            rejected_requests.labels(*labels).inc()
            rejected_tokens.labels(*labels).inc(amount)


def _counters(counters: RequestCounters, clock: ManualClock) -> None:
    """The same updates as the request path makes them (proxy.py)."""
    for op, labels, amount in OPERATIONS:
        clock.advance(1.0)
        if op == "in_flight":
            counters.tenant(labels[0])[0] += int(amount)
        else:
            table = counters.admitted_series if op == "admitted" else counters.rejected_series
            series = table(*labels)
            series.requests += 1
            series.tokens += amount


def _samples(registry: CollectorRegistry) -> dict[str, tuple[str, str, dict[str, object]]]:
    """Family name -> (type, help, {sample name and labels: value}); ``_created`` values are
    replaced by a marker (prometheus_client stamps them with its own wall clock)."""
    out: dict[str, tuple[str, str, dict[str, object]]] = {}
    family: Metric
    for family in registry.collect():
        samples: dict[str, object] = {}
        for s in family.samples:
            value = "created" if s.name.endswith("_created") else s.value
            samples[s.name + repr(sorted(s.labels.items()))] = value
        out[family.name] = (family.type, family.documentation, samples)
    return out


def test_scrape_time_counters_export_what_prometheus_client_did() -> None:
    reference = CollectorRegistry()
    _reference(reference)
    registry = CollectorRegistry()
    clock = ManualClock(T0)
    counters = RequestCounters(clock.now)
    registry.register(counters)
    _counters(counters, clock)
    assert _samples(registry) == _samples(reference)
    # the text a scrape reads, line by line, once the created timestamps are set aside
    created = re.compile(rb"^(\S+_created\{.*\}) \S+$", re.M)
    ours = created.sub(rb"\1 T", generate_latest(registry)).splitlines()
    theirs = created.sub(rb"\1 T", generate_latest(reference)).splitlines()
    assert sorted(ours) == sorted(theirs)
    assert (
        b'autoscaler_agent_rejected_tokens_total{model="chat",reason="tokens",tenant="free"} 103.0'
        in ours
    )


def test_created_is_the_clock_time_a_series_was_first_seen() -> None:
    registry = CollectorRegistry()
    clock = ManualClock(T0)
    counters = RequestCounters(clock.now)
    registry.register(counters)
    _counters(counters, clock)
    labels = {"tenant": "free", "model": "chat", "reason": "tokens"}
    # first rejected at the fifth operation, whose clock read T0 + 5
    assert registry.get_sample_value("autoscaler_agent_rejected_requests_created", labels) == T0 + 5
    assert registry.get_sample_value("autoscaler_agent_rejected_tokens_created", labels) == T0 + 5
    assert registry.get_sample_value("autoscaler_agent_rejected_requests_total", labels) == 2
    pair = {"tenant": "default", "model": "chat"}
    assert registry.get_sample_value("autoscaler_agent_admitted_tokens_total", pair) == 43
    assert registry.get_sample_value("autoscaler_agent_admitted_requests_created", pair) == T0 + 2
    assert registry.get_sample_value("autoscaler_agent_requests_in_flight", {"tenant": "free"}) == 0


def test_created_series_follow_prometheus_client_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_DISABLE_CREATED_SERIES", "true")
    registry = CollectorRegistry()
    clock = ManualClock(T0)
    counters = RequestCounters(clock.now)
    registry.register(counters)
    _counters(counters, clock)
    text = generate_latest(registry)
    assert b"_created" not in text
    assert b'autoscaler_agent_admitted_requests_total{model="chat",tenant="default"} 2.0' in text


def test_names_are_registered_so_a_second_metric_of_the_same_name_is_refused() -> None:
    registry = CollectorRegistry()
    AgentMetrics(registry, ManualClock(T0).now)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter(*ADMITTED_REQUESTS, PAIR, registry=registry)
    # an empty agent exports its families, with no series yet
    text = generate_latest(registry).decode()
    assert "# TYPE autoscaler_agent_rejected_tokens_total counter" in text
    assert "autoscaler_agent_rejected_tokens_total{" not in text


def test_the_module_exports_the_collector() -> None:
    assert {"AgentMetrics", "RequestCounters", "Series"} <= set(agent_metrics.__all__)
