"""What the service keeps per target, held compact (docs/memory.md): values and behaviour are
checked with the layout, so a compact form that computed something else would fail here."""

from __future__ import annotations

from array import array
from typing import Any

import pytest

from autoscaler.config.loader import parse_policy
from autoscaler.config.signals import MetricMapping
from autoscaler.core.errors import PolicyConfigError
from autoscaler.core.protocols import ActuationOutcome
from autoscaler.core.types import Decision
from autoscaler.service import policy_parse
from autoscaler.service.loop import DecisionHistory
from autoscaler.service.policy_parse import parse_policy_apart
from autoscaler.sources.podsignals import HistogramAggregator, PodReading
from autoscaler.sources.promtext import Scanner

HISTOGRAM = """\
ttft_seconds_bucket{le="0.1"} %d
ttft_seconds_bucket{le="0.5"} %d
ttft_seconds_bucket{le="1"} %d
ttft_seconds_bucket{le="+Inf"} %d
"""


def test_histogram_memory_is_doubles_with_one_shared_bucket_layout() -> None:
    mapping = MetricMapping(signal="ttft", metric="ttft_seconds", type="histogram", quantile=0.5)
    aggs = [HistogramAggregator(mapping) for _ in range(2)]
    scanner = Scanner(aggs[0].names)
    results = []
    for agg in aggs:
        first = PodReading(("p", "10.0.0.1"), scanner.scan(HISTOGRAM % (0, 0, 0, 0)), 0.0)
        assert agg.update([first], lambda _k: None) is None  # the pod's baseline
        # 10 requests since: 2 under 0.1 s, 8 more under 0.5 s: the median is in (0.1, 0.5].
        second = PodReading(("p", "10.0.0.1"), scanner.scan(HISTOGRAM % (2, 10, 10, 10)), 1.0)
        results.append(agg.update([second], lambda _k: None))
    # PromQL: 0.1 + (0.5 - 0.1) * (5 - 2) / 8
    assert results == [(pytest.approx(0.25), 1.0)] * 2
    kept = [next(iter(agg._pods[("p", "10.0.0.1")].values())) for agg in aggs]
    assert kept[0][0] == (0.1, 0.5, 1.0, float("inf"))
    assert kept[0][0] is kept[1][0]  # one bounds tuple for every target with the layout
    assert isinstance(kept[0][1], array) and kept[0][1].typecode == "d"
    assert list(kept[0][1]) == [2.0, 10.0, 10.0, 10.0]


def _policy(targets: int) -> str:
    lines = [
        "apiVersion: autoscaler.kserve.io/v1alpha1",
        "kind: AutoscalingPolicy",
        "metadata: {name: p}",
        "spec:",
        "  targets:",
    ]
    for i in range(targets):
        lines += [
            f"    - {{kind: Deployment, namespace: ns, name: m-{i:04d},",
            "       policy: {name: queue, params: {targetPerReplica: 2}},",
            "       guards: {minReplicas: 1, maxReplicas: 10},",
            "       actuation: {engine: deployment},",
            "       signals: {scrape: {port: 8000, path: /metrics, presets: [vllm]}}}",
        ]
    return "\n".join(lines) + "\n"


def test_a_large_policy_parsed_in_a_child_equals_the_parse_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    real = policy_parse._in_child

    def spy(*args: Any) -> Any:
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(policy_parse, "_in_child", spy)
    text = _policy(250)
    assert len(text) >= policy_parse.APART_MIN_BYTES
    doc = parse_policy_apart(text, "big.yaml")
    assert calls == ["big.yaml"]  # it did go to a child
    assert doc == parse_policy(text, "big.yaml")
    assert [t.name for t in doc.spec.targets][:2] == ["m-0000", "m-0001"]


def test_a_child_reports_the_same_located_problems() -> None:
    text = _policy(3).replace("maxReplicas: 10", "maxReplicas: nope", 1)
    with pytest.raises(PolicyConfigError) as here:
        parse_policy(text, "big.yaml")
    with pytest.raises(PolicyConfigError) as apart:
        parse_policy_apart(text, "big.yaml", min_bytes=0)
    assert apart.value.problems == here.value.problems
    first = apart.value.problems[0]
    where = ("big.yaml", 8, "spec.targets[0].guards.maxReplicas")
    assert (first.file, first.line, first.path) == where


def test_small_files_are_parsed_here(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_child(*_a: object) -> None:
        raise AssertionError("a small file went to a child process")

    monkeypatch.setattr(policy_parse, "_in_child", no_child)
    text = _policy(3)
    assert parse_policy_apart(text, "small.yaml") == parse_policy(text, "small.yaml")


def test_when_the_child_cannot_run_the_file_is_parsed_here(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_a: object) -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(policy_parse, "_in_child", broken)
    text = _policy(3)
    assert parse_policy_apart(text, "p.yaml", min_bytes=0) == parse_policy(text, "p.yaml")
    assert "parsing it here" in caplog.text


def test_a_child_that_fails_is_reported_and_the_file_parsed_here(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(policy_parse.sys, "executable", "/bin/false")  # a child that exits 1
    text = _policy(3)
    assert parse_policy_apart(text, "p.yaml", min_bytes=0) == parse_policy(text, "p.yaml")
    assert "exit status 1" in caplog.text


def _decision(ts: float, replicas: int) -> Decision:
    return Decision(
        target="ns/t",
        ts=ts,
        policy="queue",
        current=1,
        ready=1,
        starting=0,
        proposal=replicas,
        replicas=replicas,
        token_rate=None,
        token_rate_per_replica=None,
        reason="r",
        signals_ok=True,
        inputs={"waiting": float(replicas)},
    )


def test_history_ring_serves_the_last_records_in_order_and_late_outcomes() -> None:
    history = DecisionHistory(4)
    pending = ActuationOutcome("ns/t", applied=False, detail="in flight")
    entries = []
    for k in range(10):  # replicas 1,1,2,2,3,3,...: each decision repeats once
        entries.append(history.add(_decision(100.0 + k, 1 + k // 2), pending, True))
    records = history["ns/t"]
    assert [r["ts"] for r in records] == [106.0, 107.0, 108.0, 109.0]
    assert [r["replicas"] for r in records] == [4, 4, 5, 5]
    assert records[-1] == {
        **_decision(109.0, 5).to_dict(),
        "actuation": {
            "applied": False, "wrote": False, "dry_run": False, "error": None,
            "detail": "in flight", "changes": {}, "pending": True,
        },
    }  # fmt: skip
    # A write that lands late fills its record in...
    done = ActuationOutcome("ns/t", applied=True, wrote=True, detail="written")
    entries[7].update(done, False)
    assert [r["actuation"]["pending"] for r in records] == [True, False, True, True]
    assert records[1]["actuation"]["detail"] == "written"
    # ... unless newer records replaced it: then only the handle keeps it.
    entries[2].update(done, False)
    assert [r["actuation"]["detail"] for r in records] == [
        "in flight", "written", "in flight", "in flight",
    ]  # fmt: skip
    assert entries[2].outcome is done
    last = history.last("ns/t")
    assert last is not None and last.ts == 109.0 and last.decision.replicas == 5
    # Compact: equal decisions (but for the time) share one object; times are C doubles.
    ring = history._by_target["ns/t"]
    assert [id(d) for d in ring.decisions].count(id(ring.decisions[0])) == 2
    assert isinstance(ring.ts, array) and len(ring.ts) == 4
    assert history.last("ns/other") is None
    with pytest.raises(ValueError, match="at least 1 record"):
        DecisionHistory(0)
