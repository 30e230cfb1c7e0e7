"""From each pod's samples to one target-wide value per mapped signal.

One aggregator per target and mapping keeps what it needs between scrapes (counter values and
histogram buckets, per pod) and turns one tick's pod readings into at most one value.

Which samples: a mapping lists metric names; for each the sample names it stands for are tried in
order, and the first name with samples in the pod's body wins, so ``vllm:kv_cache_usage_perc``
and the older ``vllm:gpu_cache_usage_perc`` are both read, pod by pod, through a rolling upgrade.
prometheus_client strips ``_total`` from counter family names, so SREs write either form:

    gauge      name
    counter    name_total, name                  (name, name without _total when it ends in it)
    histogram  name_bucket

A counter kept inside a histogram is named by its sample: ``request_predict_seconds_count`` (the
requests) or ``tgi_request_generated_tokens_sum`` (the tokens).

then ``labels`` keeps the samples with those label values and ``scale`` multiplies the result.

Gauges: per pod, the sum of the matching samples; across pods, ``sum``, ``mean`` or ``max``.

Counters are made into rates per pod here, because only here are pods told apart: a pod replaced
mid-window must not read as a reset of the whole target, nor a new pod's lifetime total as a
burst. Per pod and series, the increase since the pod's previous scrape (a value that went down is
a reset: the new value is all increase; a pod's first scrape is its baseline; a pod that is gone
drops out). Then, by the signal's name:

- ``*_per_second`` (e.g. ``throttled_tokens_per_second``, read by policies as a gauge): each
  pod's increase over the time between its scrapes, combined across pods by ``aggregate``. A
  pod on its first scrape has no rate yet.
- any other name (``prompt_tokens_total``, ``requests_total``; policies read them with
  ``rate()``): a synthetic target-wide counter, the running total of the pods' increases
  (combined by ``aggregate``, normally ``sum``), starting at 0 when the source starts. Its rate
  over any window is the target's rate with resets and replaced pods already handled, and the
  engine's own reset handling still copes with a restarted autoscaler (the total starts over).

Histograms: per pod and series, the bucket increases since the previous scrape (a count that went
down, or a new bucket layout, is a reset: the new counts are the increase), merged over series and
pods by bucket bound; the ``quantile`` is then estimated by linear interpolation within the bucket
it falls in, exactly as PromQL's ``histogram_quantile(q, sum by (le) (increase(...)))``. A tick in
which no request was observed has no quantile: missing, never zero. ``aggregate`` does not apply
(a quantile is a property of the merged distribution, not of a pod).

Missing data, never zero. A pod that did not answer, or whose samples for the mapping were NaN,
infinite or negative (each counted, by ``problem``, as ``nan`` or ``negative``), is unknown for
the tick:

- ``sum``: the target's value is unknown: no value this tick. A partial sum would read as less
  load. For the synthetic counter the answering pods' increases still accrue, and the late pod's
  increase is counted in full at its next good scrape, so no increase is lost, only delayed.
- ``mean``/``max``, and histogram quantiles: over the pods that answered (an estimate from a
  sample of the pods, not biased low).

A pod that answered but does not expose the metric at all contributes nothing and is no error
(e.g. a multi-model target). With no pod reporting, there is no value.

Timestamps: a pod's readings are true at the time its body arrived, or at the samples' own
timestamp when the exposition gives one (the earliest, and never later than the arrival); the
target's value at the earliest of its pods' times, so its age is that of its oldest part.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from autoscaler.config.signals import MetricMapping
from autoscaler.sources.promtext import RawSample

__all__ = [
    "CounterAggregator",
    "GaugeAggregator",
    "HistogramAggregator",
    "PodReading",
    "SignalAggregator",
    "aggregator_for",
    "histogram_quantile",
    "sample_names",
]

PodKey = tuple[str, str]  # (pod name, pod IP): a pod recreated under the same name is a new pod
Series = tuple[tuple[str, str], ...]
Problem = Callable[[str], None]


class PodReading(NamedTuple):
    """One pod's scrape in one tick. ``samples`` is None when the scrape failed."""

    pod: PodKey
    samples: Mapping[str, list[RawSample]] | None
    ts: float


def sample_names(mapping: MetricMapping) -> tuple[str, ...]:
    """The sample names that stand for the mapping's metrics, in the order they are tried."""
    out: list[str] = []
    for name in mapping.metric:
        if mapping.type == "gauge":
            candidates: tuple[str, ...] = (name,)
        elif mapping.type == "counter":
            if name.endswith("_total"):
                candidates = (name, name[: -len("_total")])
            else:
                candidates = (name + "_total", name)
        else:
            candidates = (name,) if name.endswith("_bucket") else (name + "_bucket",)
        out.extend(c for c in candidates if c not in out)
    return tuple(out)


_INF = math.inf


def _problem(value: float) -> str:
    """The kind of problem with a value that is not a finite, non-negative number."""
    return "nan" if math.isnan(value) or math.isinf(value) else "negative"


def _combine(how: str, values: Sequence[float]) -> float:
    if how == "sum":
        return math.fsum(values)
    if how == "mean":
        return math.fsum(values) / len(values)
    return max(values)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """PromQL's bucketQuantile over (upper bound, cumulative count) sorted by bound.

    None (PromQL's NaN) without a +Inf bucket, with fewer than two buckets, or with no
    observations. Counts are made monotonic first, as Prometheus does for merged histograms.
    """
    n = len(buckets)
    if n < 2 or not math.isinf(buckets[-1][0]) or buckets[-1][0] < 0:
        return None
    counts: list[float] = []
    running = 0.0
    for _, c in buckets:
        running = max(running, c)
        counts.append(running)
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    b = bisect_left(counts, rank, 0, n - 1)
    if b == n - 1:
        return buckets[n - 2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start = 0.0
    end = buckets[b][0]
    count = counts[b]
    if b > 0:
        start = buckets[b - 1][0]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    if count <= 0:
        return end
    return start + (end - start) * (rank / count)


class SignalAggregator:
    """Base: the samples one mapping reads from one pod's body."""

    def __init__(self, mapping: MetricMapping) -> None:
        self.mapping = mapping
        self.signal = mapping.signal
        self.names = sample_names(mapping)
        self._wanted = tuple(sorted(mapping.labels.items()))
        self._how = mapping.aggregate
        self._scale = mapping.scale

    def _select(self, samples: Mapping[str, list[RawSample]]) -> list[RawSample]:
        for name in self.names:
            found = samples.get(name)
            if found:
                wanted = self._wanted
                return [s for s in found if s.labels.matches(wanted)] if wanted else found
        return []

    def update(
        self, readings: Sequence[PodReading], problem: Problem
    ) -> tuple[float, float] | None:
        """The target's (value, ts) this tick, or None when it is unknown."""
        raise NotImplementedError


class GaugeAggregator(SignalAggregator):
    def update(
        self, readings: Sequence[PodReading], problem: Problem
    ) -> tuple[float, float] | None:
        values: list[float] = []
        times: list[float] = []
        unknown = False
        for r in readings:
            if r.samples is None:
                unknown = True
                continue
            found = self._select(r.samples)
            if not found:
                continue
            total = 0.0
            ts = r.ts
            ok = True
            for s in found:
                v = s.value
                if v != v or v < 0.0 or v == _INF:  # NaN, negative or infinite: rare
                    problem(_problem(v))
                    ok = False
                    continue
                total += v
                if s.timestamp is not None and s.timestamp < ts:
                    ts = s.timestamp
            if not ok:
                unknown = True
                continue
            values.append(total)
            times.append(ts)
        if not values or (unknown and self._how == "sum"):
            return None
        return _combine(self._how, values) * self._scale, min(times)


@dataclass(slots=True)
class _CounterMemory:
    ts: float
    series: dict[Series, float]


class CounterAggregator(SignalAggregator):
    def __init__(self, mapping: MetricMapping) -> None:
        super().__init__(mapping)
        self.rate_form = mapping.signal.endswith("_per_second")
        self.total = 0.0  # the synthetic target-wide counter
        self._pods: dict[PodKey, _CounterMemory] = {}

    def update(
        self, readings: Sequence[PodReading], problem: Problem
    ) -> tuple[float, float] | None:
        seen: set[PodKey] = set()
        increases: list[float] = []
        rates: list[float] = []
        times: list[float] = []
        unknown = False
        for r in readings:
            seen.add(r.pod)
            if r.samples is None:
                unknown = True  # its memory is kept: the increase is counted at its next read
                continue
            found = self._select(r.samples)
            if not found:
                # The pod answered without the metric (kserve shows a histogram only after the
                # first request). Remember it with no series, so that when the metric appears
                # it counts from zero instead of being taken as a baseline and losing the first
                # requests. It still gives no value now: an absent metric may be a wrong name.
                self._pods[r.pod] = _CounterMemory(r.ts, {})
                continue
            series: dict[Series, float] = {}
            ts = r.ts
            ok = True
            for s in found:
                v = s.value
                if v != v or v < 0.0 or v == _INF:  # NaN, negative or infinite: rare
                    problem(_problem(v))
                    ok = False
                    continue
                key = s.labels.series
                series[key] = series.get(key, 0.0) + v
                if s.timestamp is not None and s.timestamp < ts:
                    ts = s.timestamp
            if not ok:
                unknown = True
                continue
            times.append(ts)
            prev = self._pods.get(r.pod)
            self._pods[r.pod] = _CounterMemory(ts, series)
            if prev is None:
                unknown = unknown or self.rate_form  # a baseline, no rate yet
                continue
            before = prev.series
            increase = 0.0
            for key, value in series.items():
                p = before.get(key)
                # A new series counts from zero; a value that went down was reset.
                increase += value if p is None or value < p else value - p
            increases.append(increase)
            if self.rate_form:
                dt = ts - prev.ts
                if dt > 0:
                    rates.append(increase / dt)
                else:
                    unknown = True
        for gone in self._pods.keys() - seen:
            del self._pods[gone]
        if self.rate_form:
            if not rates or (unknown and self._how == "sum"):
                return None
            return _combine(self._how, rates) * self._scale, min(times)
        if increases:
            self.total += _combine(self._how, increases) * self._scale
        if not times or (unknown and self._how == "sum"):
            return None
        return self.total, min(times)


# (upper bounds, cumulative counts): one bounds tuple is shared by every pod and target with the
# same layout (interned, as sys.intern does strings: immutable, so sharing is invisible), and
# the counts are C doubles. Tuples of float objects were ~3x the memory (two vLLM histograms:
# ~2 MB at 1,000 targets; docs/memory.md).
Buckets = tuple[tuple[float, ...], "array[float]"]
_LAYOUTS: dict[tuple[float, ...], tuple[float, ...]] = {}
_LAYOUTS_MAX = 256  # distinct layouts interned (a handful in practice); then it starts over


def _layout(les: tuple[float, ...]) -> tuple[float, ...]:
    shared = _LAYOUTS.get(les)
    if shared is None:
        if len(_LAYOUTS) >= _LAYOUTS_MAX:
            _LAYOUTS.clear()
        shared = _LAYOUTS[les] = les
    return shared


class HistogramAggregator(SignalAggregator):
    def __init__(self, mapping: MetricMapping) -> None:
        super().__init__(mapping)
        if mapping.quantile is None:
            raise ValueError(f"histogram mapping for {mapping.signal!r} needs a quantile")
        self.quantile = mapping.quantile
        self._pods: dict[PodKey, dict[Series, Buckets]] = {}

    def update(
        self, readings: Sequence[PodReading], problem: Problem
    ) -> tuple[float, float] | None:
        seen: set[PodKey] = set()
        merged: dict[float, float] = {}
        times: list[float] = []
        for r in readings:
            seen.add(r.pod)
            if r.samples is None:
                continue
            found = self._select(r.samples)
            if not found:
                self._pods[r.pod] = {}  # as for counters: a later series counts from zero
                continue
            by_series: dict[Series, list[tuple[float, float]]] = {}
            ts = r.ts
            ok = True
            for s in found:
                le = s.labels.le
                if le is None:
                    continue
                v = s.value
                if v != v or v < 0.0 or v == _INF:  # NaN, negative or infinite: rare
                    problem(_problem(v))
                    ok = False
                    continue
                by_series.setdefault(s.labels.series, []).append((le, v))
                if s.timestamp is not None and s.timestamp < ts:
                    ts = s.timestamp
            if not ok:
                continue
            current: dict[Series, Buckets] = {}
            for key, pairs in by_series.items():
                pairs.sort()
                les = _layout(tuple(p[0] for p in pairs))
                current[key] = (les, array("d", [p[1] for p in pairs]))
            prev = self._pods.get(r.pod)
            self._pods[r.pod] = current
            if prev is None:
                continue
            times.append(ts)
            for key, (les, counts) in current.items():
                before = prev.get(key)
                deltas: Sequence[float] = counts
                if before is not None and before[0] == les:
                    diff = [c - b for c, b in zip(counts, before[1], strict=True)]
                    if min(diff) >= 0:
                        deltas = diff
                for le, d in zip(les, deltas, strict=True):
                    merged[le] = merged.get(le, 0.0) + d
        for gone in self._pods.keys() - seen:
            del self._pods[gone]
        if not merged:
            return None
        q = histogram_quantile(self.quantile, sorted(merged.items()))
        if q is None:
            return None
        return q * self._scale, min(times)


def aggregator_for(mapping: MetricMapping) -> SignalAggregator:
    if mapping.type == "gauge":
        return GaugeAggregator(mapping)
    if mapping.type == "counter":
        return CounterAggregator(mapping)
    return HistogramAggregator(mapping)
