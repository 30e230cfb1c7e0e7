"""Per-pod samples to target-wide values: sample names, PromQL's quantile, counter memory."""

from __future__ import annotations

import math

import pytest

from autoscaler.config.signals import MetricMapping
from autoscaler.sources.podsignals import (
    CounterAggregator,
    PodReading,
    histogram_quantile,
    sample_names,
)
from autoscaler.sources.promtext import Scanner

INF = math.inf


def test_sample_names_accept_family_and_sample_spellings() -> None:
    counter = MetricMapping(signal="x", metric="vllm:prompt_tokens", type="counter")
    assert sample_names(counter) == ("vllm:prompt_tokens_total", "vllm:prompt_tokens")
    counter = MetricMapping(signal="x", metric="vllm:prompt_tokens_total", type="counter")
    assert sample_names(counter) == ("vllm:prompt_tokens_total", "vllm:prompt_tokens")
    kv = MetricMapping(signal="x", metric=("new", "old"))
    assert sample_names(kv) == ("new", "old")
    hist = MetricMapping(signal="x", metric="ttft_seconds", type="histogram", quantile=0.5)
    assert sample_names(hist) == ("ttft_seconds_bucket",)


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        # rank 50 of 100 in (1, 2], 30 of its 60 -> 1.5
        (0.5, [(1.0, 20), (2.0, 80), (INF, 100)], 1.5),
        # the first bucket starts at 0
        (0.25, [(1.0, 100), (INF, 100)], 0.25),
        # a rank in the +Inf bucket is the highest finite bound
        (0.99, [(1.0, 10), (2.0, 20), (INF, 100)], 2.0),
        # a rank exactly at a bucket's top stays in that bucket
        (0.2, [(1.0, 20), (2.0, 80), (INF, 100)], 1.0),
        # non-monotonic merged counts are made monotonic first
        (0.5, [(1.0, 60), (2.0, 50), (INF, 100)], 50 / 60),
        # a bucket bound at or below zero is returned as is
        (0.1, [(-1.0, 50), (INF, 100)], -1.0),
    ],
)
def test_histogram_quantile_as_promql(
    q: float, buckets: list[tuple[float, float]], expected: float
) -> None:
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


@pytest.mark.parametrize(
    "buckets",
    [
        [(1.0, 0), (INF, 0)],  # nothing observed
        [(1.0, 5), (2.0, 9)],  # no +Inf bucket
        [(INF, 9)],  # one bucket
        [],
    ],
)
def test_histogram_quantile_undefined(buckets: list[tuple[float, float]]) -> None:
    assert histogram_quantile(0.95, buckets) is None


def _reading(pod: str, body: str, ts: float, scanner: Scanner) -> PodReading:
    return PodReading((pod, "10.0.0.1"), scanner.scan(body), ts)


def test_counter_with_a_nan_sample_keeps_its_memory_and_counts_it_later() -> None:
    agg = CounterAggregator(MetricMapping(signal="t_total", metric="c", type="counter"))
    scanner = Scanner(agg.names)
    problems: list[str] = []
    assert agg.update([_reading("a", "c_total 100\n", 0, scanner)], problems.append) == (0.0, 0)
    assert agg.update([_reading("a", "c_total NaN\n", 10, scanner)], problems.append) is None
    assert problems == ["nan"]
    assert agg.update([_reading("a", "c_total 130\n", 20, scanner)], problems.append) == (30.0, 20)


def test_counter_mean_aggregate_is_a_per_pod_average_increase() -> None:
    agg = CounterAggregator(
        MetricMapping(signal="t_total", metric="c", type="counter", aggregate="mean")
    )
    scanner = Scanner(agg.names)
    pods = [("a", 100.0, 110.0), ("b", 100.0, 130.0)]
    problems: list[str] = []
    agg.update([_reading(p, f"c_total {v0}\n", 0, scanner) for p, v0, _ in pods], problems.append)
    out = agg.update(
        [_reading(p, f"c_total {v1}\n", 10, scanner) for p, _, v1 in pods], problems.append
    )
    assert problems == []
    assert out == (20.0, 10)


def test_a_metric_that_appears_on_a_known_pod_counts_from_zero() -> None:
    # kserve shows request_predict_seconds only after a pod's first request: those first
    # requests must count, not become the baseline.
    agg = CounterAggregator(MetricMapping(signal="t_total", metric="c", type="counter"))
    scanner = Scanner(agg.names)
    problems: list[str] = []
    # The pod answers without the metric: no value (an absent metric may be a wrong name).
    assert agg.update([_reading("a", "other 1\n", 0, scanner)], problems.append) is None
    assert agg.update([_reading("a", "c_total 7\n", 10, scanner)], problems.append) == (7.0, 10)
    assert agg.update([_reading("a", "c_total 9\n", 20, scanner)], problems.append) == (9.0, 20)
    # A pod seen for the first time with the metric already there is a baseline, as before.
    assert agg.update(
        [_reading("a", "c_total 9\n", 30, scanner), _reading("b", "c_total 500\n", 30, scanner)],
        problems.append,
    ) == (9.0, 30)
    assert problems == []
