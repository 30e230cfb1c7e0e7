"""Pod scrape: each ready pod's ``/metrics``, mapped to target-wide signals.

The low-latency path (Knative's autoscaler and AIBrix read pods directly too): for every target
with a scrape config, every ready pod in the ``PodIndex`` (ready, not deleting, with an IP) is
fetched at ``{scheme}://{ip}:{port}{path}``, all pods of all targets concurrently under one
global cap (``concurrency``), each with the config's timeout and body cap. Bodies are read by a
``promtext.Scanner`` that finds only the lines the target's mappings need, and
``podsignals`` turns each tick's pod readings into at most one observation per mapping. In
short (the full rules are in its docstring): gauges are summed, averaged or maxed over pods;
counters become per-pod increases, emitted as one synthetic target-wide counter (the running total
of the increases, which policies read with ``rate()``; resets and replaced pods are handled per
pod) or, for ``*_per_second`` signals, as the rate itself; histograms give the quantile of the
bucket increases merged over pods; a ``sum`` with a pod unknown is no value, never a partial sum.

Problems are counted in the report per target by kind and are missing data, never zero:

    connection    refused, reset, closed mid-body
    timeout       no full answer within ``timeout_seconds`` (waiting for a slot does not count)
    http_error    any status but 200 (redirects are not followed)
    too_large     a body over ``max_body_bytes`` (reading stops there; gzip is capped inflated)
    parse_error   not UTF-8, not the text format, or a malformed line of a mapped metric
    nan, negative a mapped sample that is NaN/infinite or below zero (per sample)

The source owns no connection pool: the composition root passes an ``aiohttp.ClientSession``
whose connector allows at least ``concurrency`` connections (aiohttp's default is 100), since
aiohttp counts the wait for a pooled connection against the request's timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from autoscaler.config.signals import PodScrape
from autoscaler.core.clock import Clock
from autoscaler.core.protocols import SourceReport
from autoscaler.core.types import Observation, TargetRef
from autoscaler.sources.pods import PodIndex, PodInfo
from autoscaler.sources.podsignals import PodReading, SignalAggregator, aggregator_for
from autoscaler.sources.promtext import ParseError, RawSample, Scanner

__all__ = ["PodScrapeSource"]

log = logging.getLogger("autoscaler.sources.scrape")

_HEADERS = {
    "Accept": "text/plain;version=0.0.4;q=1,*/*;q=0.1",
    "User-Agent": "kserve-autoscaler",
}
_CHUNK = 64 * 1024


@dataclass(slots=True)
class _Target:
    """One target's compiled scrape config and the aggregators' memory."""

    config: PodScrape
    scanner: Scanner
    aggregators: tuple[SignalAggregator, ...]
    timeout: aiohttp.ClientTimeout

    @classmethod
    def build(cls, config: PodScrape) -> _Target:
        aggregators = tuple(aggregator_for(m) for m in config.mappings())
        return cls(
            config=config,
            scanner=Scanner(n for a in aggregators for n in a.names),
            aggregators=aggregators,
            timeout=aiohttp.ClientTimeout(total=config.timeout_seconds),
        )

    def url(self, ip: str) -> str:
        host = f"[{ip}]" if ":" in ip else ip
        c = self.config
        return f"{c.scheme}://{host}:{c.port}{c.path}"


class PodScrapeSource:
    """Scrapes the ready pods of each configured target; see the module docstring."""

    name = "scrape"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        pods: PodIndex,
        configs: Mapping[str, PodScrape],
        clock: Clock,
        concurrency: int = 64,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._session = session
        self._pods = pods
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._targets: dict[str, _Target] = {}
        self.configure(configs)

    def configure(self, configs: Mapping[str, PodScrape]) -> None:
        """Set the scrape config of each target key (hot reload).

        A target whose config is unchanged keeps its counter and histogram memory; a changed one
        starts afresh (its synthetic counters restart at 0, which windows read as a reset).
        """
        targets: dict[str, _Target] = {}
        for key, config in configs.items():
            old = self._targets.get(key)
            targets[key] = (
                old if old is not None and old.config == config else _Target.build(config)
            )
        self._targets = targets

    async def collect(self, targets: Sequence[TargetRef]) -> SourceReport:
        report = SourceReport()
        plan: list[tuple[str, _Target, tuple[PodInfo, ...]]] = []
        for ref in targets:
            target = self._targets.get(ref.key)
            if target is not None:
                plan.append((ref.key, target, self._pods.ready_pods(ref.key)))
        results = await asyncio.gather(
            *(self._read(target, pod) for _, target, pods in plan for pod in pods)
        )
        i = 0
        for key, target, pods in plan:
            readings: list[PodReading] = []
            for pod in pods:
                result = results[i]
                i += 1
                if isinstance(result, str):
                    report.error(key, result)
                    log.debug("scrape %s pod %s (%s): %s", key, pod.name, pod.ip, result)
                    readings.append(PodReading((pod.name, pod.ip or ""), None, 0.0))
                else:
                    samples, ts = result
                    readings.append(PodReading((pod.name, pod.ip or ""), samples, ts))
            self._aggregate(key, target, readings, report)
        return report

    async def close(self) -> None:
        """Nothing to release: the session belongs to the composition root."""

    def _aggregate(
        self, key: str, target: _Target, readings: list[PodReading], report: SourceReport
    ) -> None:
        def problem(kind: str) -> None:
            report.error(key, kind)

        for agg in target.aggregators:
            out = agg.update(readings, problem)
            if out is not None:
                report.observations.append(Observation(key, agg.signal, out[0], out[1]))

    async def _read(
        self, target: _Target, pod: PodInfo
    ) -> str | tuple[dict[str, list[RawSample]], float]:
        """One pod's samples and when they arrived, or the kind of problem."""
        assert pod.ip is not None  # ready_pods() only returns pods with an IP
        cap = target.config.max_body_bytes
        chunks: list[bytes] = []
        try:
            async with (
                self._slots,
                self._session.get(
                    target.url(pod.ip),
                    headers=_HEADERS,
                    timeout=target.timeout,
                    allow_redirects=False,
                ) as resp,
            ):
                if resp.status != 200:
                    return "http_error"
                if resp.content_length is not None and resp.content_length > cap:
                    resp.close()
                    return "too_large"
                size = 0
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    size += len(chunk)
                    if size > cap:
                        resp.close()  # do not drain the rest into a reused connection
                        return "too_large"
                    chunks.append(chunk)
                ts = self._clock.now()
        except TimeoutError:
            return "timeout"
        except (aiohttp.ClientError, OSError):
            return "connection"
        # Parsing is CPU work: done after the connection slot is given back.
        try:
            return target.scanner.scan(b"".join(chunks).decode("utf-8")), ts
        except (UnicodeDecodeError, ParseError) as e:
            log.debug("scrape pod %s (%s): %s", pod.name, pod.ip, e)
            return "parse_error"
