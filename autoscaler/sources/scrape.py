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

**When** (``interval``): with no interval, ``collect`` scrapes every pod and waits for them
(``autoscaler run --once``, tests). With an interval (the service: ``scrape_seconds``, by
default its tick), a background task scrapes each target every ``interval`` seconds, at a phase
of its own (a hash of its key) spread over the interval, and aggregates what it read right away;
``collect`` then only hands over the observations (and problems) that arrived since the previous
collect, without waiting for any pod. ``max_rate`` (the service: ``scrape_max_rate``, 200 target
scrapes a second) stretches the interval to targets / max_rate when that is longer: a 20 KB vLLM
body costs about 1 ms of CPU to fetch, parse and aggregate, so 1,000 targets scraped every
second would take a whole core and starve the tick, the watches and the Lease renewals of the
same event loop. The price: a value reaches the engine up to one interval (plus one tick) after
the pod showed it (5 s at 1,000 targets); a target whose scrape is still running when its next
phase comes skips that phase. docs/kubernetes-status.md has the figures.

The source owns no connection pool: the composition root passes an ``aiohttp.ClientSession``
whose connector allows at least ``concurrency`` connections (aiohttp's default is 100), since
aiohttp counts the wait for a pooled connection against the request's timeout.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import Counter
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
    def build(
        cls, config: PodScrape, scanners: dict[frozenset[str], Scanner] | None = None
    ) -> _Target:
        aggregators = tuple(aggregator_for(m) for m in config.mappings())
        names = frozenset(n for a in aggregators for n in a.names)
        # One Scanner per set of wanted names, shared by the targets that want the same: its
        # memo of parsed label sets would otherwise be held a thousand times over.
        scanners = {} if scanners is None else scanners
        scanner = scanners.get(names)
        if scanner is None:
            scanner = scanners[names] = Scanner(names)
        return cls(
            config=config,
            scanner=scanner,
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
        *,
        interval: float | None = None,
        max_rate: float | None = None,
        phases: int = 100,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if interval is not None and interval <= 0:
            raise ValueError("interval must be > 0 (or None: scrape in collect)")
        if max_rate is not None and max_rate <= 0:
            raise ValueError("max_rate must be > 0 (or None: no bound)")
        if phases < 1:
            raise ValueError("phases must be at least 1")
        self._session = session
        self._pods = pods
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._targets: dict[str, _Target] = {}
        self._scanners: dict[frozenset[str], Scanner] = {}
        self.interval = interval
        # Target scrapes per second at most: the interval stretches to len(targets) / max_rate
        # when that is longer, bounding the CPU that scraping takes, whatever the fleet's size.
        self.max_rate = max_rate
        self.phases = phases  # the interval is cut in this many phases
        self.scrapes = 0  # target scrapes run (every pod of one target), for tests and stats
        self.skipped = 0  # phases a target skipped because its previous scrape still ran
        self._by_phase: list[list[str]] = [[] for _ in range(phases)]
        self._fresh: dict[str, tuple[list[Observation], Counter[str]]] = {}
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
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
                old
                if old is not None and old.config == config
                else _Target.build(config, self._scanners)
            )
        self._targets = targets
        used = {id(t.scanner) for t in targets.values()}
        self._scanners = {k: v for k, v in self._scanners.items() if id(v) in used}
        by_phase: list[list[str]] = [[] for _ in range(self.phases)]
        for key in sorted(targets):
            by_phase[self.phase_of(key)].append(key)
        self._by_phase = by_phase
        for key in [k for k in self._fresh if k not in targets]:
            del self._fresh[key]

    @property
    def effective_interval(self) -> float | None:
        """Seconds between two scrapes of a target: ``interval``, stretched by ``max_rate``."""
        if self.interval is None:
            return None
        if self.max_rate is None:
            return self.interval
        return max(self.interval, len(self._targets) / self.max_rate)

    def phase_of(self, key: str) -> int:
        """The target's phase: stable across restarts and replicas (not Python's hash)."""
        return zlib.crc32(key.encode()) % self.phases

    async def collect(self, targets: Sequence[TargetRef]) -> SourceReport:
        if self.interval is not None:
            return self._hand_over(targets)
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
            readings = self._readings(key, pods, results[i : i + len(pods)], report)
            i += len(pods)
            self._aggregate(key, target, readings, report)
        return report

    @staticmethod
    def _readings(
        key: str,
        pods: Sequence[PodInfo],
        results: Sequence[str | tuple[dict[str, list[RawSample]], float]],
        report: SourceReport,
    ) -> list[PodReading]:
        readings: list[PodReading] = []
        for pod, result in zip(pods, results, strict=True):
            if isinstance(result, str):
                report.error(key, result)
                log.debug("scrape %s pod %s (%s): %s", key, pod.name, pod.ip, result)
                readings.append(PodReading((pod.name, pod.ip or ""), None, 0.0))
            else:
                samples, ts = result
                readings.append(PodReading((pod.name, pod.ip or ""), samples, ts))
        return readings

    async def close(self) -> None:
        """Stop the background scraping (the session belongs to the composition root)."""
        tasks = [t for t in (self._runner, *self._tasks) if t is not None]
        self._runner = None
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._busy.clear()

    # -- background scraping (with an interval) --------------------------------------------------

    def _hand_over(self, targets: Sequence[TargetRef]) -> SourceReport:
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="scrape phases")
        report = SourceReport()
        fresh = self._fresh
        if not fresh:
            return report
        for ref in targets:
            got = fresh.pop(ref.key, None)
            if got is None:
                continue
            observations, errors = got
            report.observations.extend(observations)
            for kind, n in errors.items():
                report.error(ref.key, kind, n)
        return report

    async def _run(self) -> None:
        """Start each phase's target scrapes at its moment, forever (until ``close``)."""
        assert self.interval is not None
        due = self._clock.now()
        phase = 0
        while True:
            interval = self.effective_interval or self.interval
            step = interval / self.phases
            for key in self._by_phase[phase]:
                if key in self._busy:
                    self.skipped += 1
                    continue
                target = self._targets.get(key)
                if target is None:
                    continue
                self._busy.add(key)
                task = asyncio.get_running_loop().create_task(self._scrape_target(key, target))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            phase = (phase + 1) % self.phases
            due += step
            delay = due - self._clock.now()
            if delay < -interval:  # fell a whole interval behind: do not run to catch up
                due = self._clock.now()
            elif delay > 0:
                await self._clock.sleep(delay)

    async def _scrape_target(self, key: str, target: _Target) -> None:
        try:
            pods = self._pods.ready_pods(key)
            results = await asyncio.gather(*(self._read(target, pod) for pod in pods))
            report = SourceReport()
            readings = self._readings(key, pods, results, report)
            if self._targets.get(key) is not target:
                return  # reconfigured while it ran: its aggregators are gone
            self._aggregate(key, target, readings, report)
            self.scrapes += 1
            old = self._fresh.get(key)
            errors: Counter[str] = Counter()
            for (_, kind), n in report.errors.items():
                errors[kind] += n
            if old is not None:  # not collected yet: the newer values win, problems add up
                errors.update(old[1])
            self._fresh[key] = (report.observations, errors)
        except Exception:  # a bug here must not end the scraping of every other target
            log.exception("scrape of %s failed", key)
        finally:
            self._busy.discard(key)

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
