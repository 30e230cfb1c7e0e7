"""Reads the published token-rate limits every few seconds and applies them to the budget.

Both sources are read on every round (the HTTP endpoint of the service, the mounted ConfigMap
file) and ``limits.resolve`` picks what to enforce, so the precedence and the "keep the last
limit" rule live in one pure function. A read that fails is a logged, counted problem, never an
exception out of the loop: the agent keeps serving with the limit it has.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp

from autoscaler.core.clock import Clock
from autoscaler.traffic.agent.budget import TokenBudget
from autoscaler.traffic.agent.limits import (
    Enforced,
    LimitDocument,
    LimitsFormatError,
    parse_limits,
    resolve,
)
from autoscaler.traffic.agent.metrics import AgentMetrics
from autoscaler.traffic.agent.options import AgentConfig

__all__ = ["LimitsWatcher"]

log = logging.getLogger("autoscaler.traffic.agent.limits")

Read = tuple[LimitDocument | None, str]


class LimitsWatcher:
    def __init__(
        self,
        config: AgentConfig,
        budget: TokenBudget,
        metrics: AgentMetrics,
        clock: Clock,
        session: aiohttp.ClientSession,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.budget = budget
        self.metrics = metrics
        self.clock = clock
        self.session = session
        self.on_change = on_change
        self.enforced: Enforced | None = None
        self.rounds = 0
        self._timeout = aiohttp.ClientTimeout(total=config.limits_timeout)

    def start_default(self) -> Enforced:
        """Before the first read: the configured default."""
        return self._apply(resolve(None, None, None, self.config.default_token_rate))

    async def read_once(self) -> Enforced:
        http, http_problem = await self._read_http()
        configmap, cm_problem = self._read_file()
        self.rounds += 1
        return self._apply(
            resolve(
                http,
                configmap,
                self.enforced,
                self.config.default_token_rate,
                http_problem=http_problem,
                configmap_problem=cm_problem,
            )
        )

    async def run(self) -> None:
        """Read forever, every ``limits_interval`` seconds (a cleanup_ctx task)."""
        while True:
            await self.clock.sleep(self.config.limits_interval)
            try:
                await self.read_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive any bug in one read
                log.exception("reading token limits failed; keeping %s", self.enforced)

    def _apply(self, new: Enforced) -> Enforced:
        old = self.enforced
        self.enforced = new
        if old is None or old.rate != new.rate or old.source != new.source:
            level = logging.INFO if old is None or old.rate != new.rate else logging.DEBUG
            log.log(level, "token limit %s tokens/s from %s: %s", new.rate, new.source, new.reason)
        if self.budget.rate != new.rate:
            self.budget.set_rate(new.rate, self.clock.now())
            self.on_change()
        self.metrics.set_limit(new.rate, new.source)
        return new

    def _check(self, doc: LimitDocument, where: str) -> LimitDocument:
        if self.config.target is not None and doc.target and doc.target != self.config.target:
            raise LimitsFormatError(f"{where}: for target {doc.target}, not {self.config.target}")
        return doc

    async def _read_http(self) -> Read:
        if self.config.limits_url is None or self.config.limits_path is None:
            return None, "no --limits-url"
        url = self.config.limits_url.rstrip("/") + self.config.limits_path
        try:
            async with self.session.get(url, timeout=self._timeout) as resp:
                body = await resp.read()
                if resp.status != 200:
                    self.metrics.limit_reads.labels("http", f"status_{resp.status}").inc()
                    return None, f"HTTP {resp.status} from {url}"
            doc = self._check(parse_limits(body, url), url)
        except (aiohttp.ClientError, TimeoutError) as e:
            self.metrics.limit_reads.labels("http", "unreachable").inc()
            log.debug("token limits: %s unreachable: %r", url, e)
            return None, f"{url} unreachable ({type(e).__name__})"
        except LimitsFormatError as e:
            self.metrics.limit_reads.labels("http", "unreadable").inc()
            log.warning("token limits: %s", e)
            return None, str(e)
        result = "stale" if doc.stale else "dry_run" if doc.dry_run else "ok"
        self.metrics.limit_reads.labels("http", result).inc()
        return doc, ""

    def _read_file(self) -> Read:
        path = self.config.limits_file
        if path is None:
            return None, "no ConfigMap file"
        try:
            # A few hundred bytes on a local volume: reading inline beats a thread hop.
            with open(path, "rb") as f:
                text = f.read(64 * 1024)
        except FileNotFoundError:
            self.metrics.limit_reads.labels("configmap", "missing").inc()
            return None, f"{path} missing"
        except OSError as e:
            self.metrics.limit_reads.labels("configmap", "unreadable").inc()
            return None, f"{path}: {e.strerror}"
        try:
            doc = self._check(parse_limits(text, path), path)
        except LimitsFormatError as e:
            self.metrics.limit_reads.labels("configmap", "unreadable").inc()
            log.warning("token limits: %s", e)
            return None, str(e)
        self.metrics.limit_reads.labels("configmap", "ok").inc()
        return doc, ""
