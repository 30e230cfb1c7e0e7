"""Hot reload of the policy file (a mounted ConfigMap): watch, debounce, keep the last good.

Kubernetes updates a mounted ConfigMap by swapping a symlink, which inotify-style watches often
miss, so the file's content is polled (cheap: one small file) and a change takes effect only
after it has stayed the same for ``debounce`` seconds (editors and the kubelet write in steps).
A valid new file is handed to ``on_change``; an invalid one is logged and counted with its
FILE:LINE:COL problems and the last good policy keeps running. A large file is parsed in a
child process (``policy_parse.py``: the parse's peak would stay in this one's heap).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from autoscaler.config.loader import read_text
from autoscaler.config.models import PolicyFile
from autoscaler.core.clock import Clock
from autoscaler.core.errors import ConfigError, Problem
from autoscaler.service.metrics import ServiceMetrics
from autoscaler.service.policy_parse import APART_MIN_BYTES, parse_policy_apart

log = logging.getLogger("autoscaler.reload")


class PolicyWatcher:
    def __init__(
        self,
        path: Path,
        clock: Clock,
        metrics: ServiceMetrics,
        on_change: Callable[[PolicyFile], None],
        *,
        interval: float = 2.0,
        debounce: float = 2.0,
    ) -> None:
        self.path = path
        self.clock = clock
        self.metrics = metrics
        self.on_change = on_change
        self.interval = interval
        self.debounce = debounce
        self.loaded_digest: str | None = None
        self.last_problems: tuple[Problem, ...] = ()
        self._seen: tuple[str, float] | None = None  # (digest, first seen at)

    def _digest(self) -> tuple[str, str] | None:
        try:
            text = read_text(self.path)
        except ConfigError:
            return None  # mid-swap or gone: try again next poll
        return hashlib.sha256(text.encode()).hexdigest(), text

    def initial(self) -> PolicyFile:
        """Load at start-up: an invalid file here is fatal (there is no last good policy)."""
        text = read_text(self.path)
        doc = parse_policy_apart(text, str(self.path))
        self.loaded_digest = hashlib.sha256(text.encode()).hexdigest()
        self.metrics.config_reloads.labels("initial").inc()
        self.metrics.config_problems.set(0)
        return doc

    def poll(self) -> bool:
        """Check the file once; returns True when a new policy was applied."""
        text = self._due()
        if text is None:
            return False
        return self._apply(self._parse(text))

    async def poll_async(self) -> bool:
        """:meth:`poll`, with the parse off the event loop: a 1,000-target file takes seconds to
        parse (in a child process, ``policy_parse.py``), and the control loop keeps ticking on the
        last good policy meanwhile instead of stalling for them."""
        text = self._due()
        if text is None:
            return False
        if len(text) < APART_MIN_BYTES:  # parsed here in milliseconds: no thread hop
            return self._apply(self._parse(text))
        return self._apply(await asyncio.to_thread(self._parse, text))

    def _parse(self, text: str) -> PolicyFile | ConfigError:
        try:
            return parse_policy_apart(text, str(self.path))
        except ConfigError as e:
            return e

    def _due(self) -> str | None:
        """The file's text when a changed file has settled for the debounce, else None."""
        got = self._digest()
        if got is None:
            return None
        digest, text = got
        now = self.clock.now()
        if digest == self.loaded_digest:
            self._seen = None
            return None
        if self._seen is None or self._seen[0] != digest:
            self._seen = (digest, now)
            if self.debounce > 0:
                return None
        if now - self._seen[1] < self.debounce:
            return None
        self._seen = None
        self.loaded_digest = digest  # a bad file is reported once, not on every poll
        return text

    def _apply(self, doc: PolicyFile | ConfigError) -> bool:
        if isinstance(doc, ConfigError):
            e = doc
            self.last_problems = e.problems
            self.metrics.config_reloads.labels("rejected").inc()
            self.metrics.config_problems.set(len(e.problems))
            for p in e.problems:
                log.error("policy reload rejected, keeping the last good policy: %s", p)
            return False
        self.last_problems = ()
        self.metrics.config_reloads.labels("applied").inc()
        self.metrics.config_problems.set(0)
        log.info("policy reloaded from %s", self.path)
        self.on_change(doc)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll_async()
            sleeper = asyncio.ensure_future(self.clock.sleep(self.interval))
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait([sleeper, stopper], return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                stopper.cancel()
                await asyncio.gather(sleeper, stopper, return_exceptions=True)
