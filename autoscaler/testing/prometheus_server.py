"""Run the real Prometheus server (Debian package ``prometheus``) for a test.

    async with PrometheusServer([static_scrape_config("pods", ["127.0.0.1:8081"])]) as prom:
        ...  # query prom.url

Each instance gets a free loopback port, a temporary directory for its config and TSDB, and a
1 s scrape and evaluation interval. ``start`` returns once ``/-/ready`` answers 200 (bounded by
``ready_timeout``); ``stop`` terminates the process, waits, kills it if it lingers and removes the
directory. A service the Debian package may have started is never touched: tests use their own.

Prometheus hands new scrape targets to its scrape loop at most every 5 s, so the first scrape
comes about 5 s after start: share one server between the tests of a module where you can.

The binary is found with ``find_prometheus`` (``$PATH``, then ``/usr/bin/prometheus``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import aiohttp

from autoscaler.core.clock import Clock
from autoscaler.service.clock import SystemClock

__all__ = [
    "PrometheusServer",
    "PrometheusStartError",
    "find_prometheus",
    "free_port",
    "static_scrape_config",
]

_FALLBACK_BINARY = "/usr/bin/prometheus"
_PORT_ATTEMPTS = 3  # another process may take the free port between our probe and the bind


class PrometheusStartError(RuntimeError):
    """The server did not become ready; the message ends with the tail of its log."""


def find_prometheus() -> str | None:
    """The path of the ``prometheus`` binary, or None when it is not installed."""
    found = shutil.which("prometheus")
    if found:
        return found
    return _FALLBACK_BINARY if os.access(_FALLBACK_BINARY, os.X_OK) else None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def static_scrape_config(
    job: str,
    targets: Sequence[str],
    labels: Mapping[str, str] | None = None,
    *,
    interval: float | None = None,
    metrics_path: str = "/metrics",
) -> dict[str, Any]:
    """One ``scrape_configs`` entry scraping ``host:port`` targets, with extra target labels."""
    group: dict[str, Any] = {"targets": list(targets)}
    if labels:
        group["labels"] = dict(labels)
    cfg: dict[str, Any] = {
        "job_name": job,
        "metrics_path": metrics_path,
        "static_configs": [group],
    }
    if interval is not None:
        cfg["scrape_interval"] = _duration(interval)
        cfg["scrape_timeout"] = _duration(interval)
    return cfg


def _duration(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


class PrometheusServer:
    """A real Prometheus process on a free loopback port, as an async context manager."""

    def __init__(
        self,
        scrape_configs: Sequence[Mapping[str, Any]] = (),
        *,
        scrape_interval: float = 1.0,
        binary: str | None = None,
        clock: Clock | None = None,
        ready_timeout: float = 20.0,
        stop_timeout: float = 10.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self._scrape_configs = [dict(c) for c in scrape_configs]
        self._scrape_interval = scrape_interval
        self._binary = binary
        self._clock = clock if clock is not None else SystemClock()
        self._ready_timeout = ready_timeout
        self._stop_timeout = stop_timeout
        self._extra_args = tuple(extra_args)
        self._dir: Path | None = None
        self._log: IO[bytes] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("Prometheus is not running")
        return self._port

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise RuntimeError("Prometheus is not running")
        return self._dir

    async def __aenter__(self) -> PrometheusServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("Prometheus is already running")
        binary = self._binary or find_prometheus()
        if binary is None:
            raise PrometheusStartError("the prometheus binary is not installed")
        self._dir = Path(tempfile.mkdtemp(prefix="autoscaler-prometheus-"))
        self._write_config()
        try:
            for attempt in range(_PORT_ATTEMPTS):
                self._port = free_port()
                await self._spawn(binary)
                if await self._wait_ready():
                    return
                in_use = "address already in use" in self.log_tail().lower()
                await self._terminate()
                if not in_use or attempt == _PORT_ATTEMPTS - 1:
                    raise PrometheusStartError(
                        f"Prometheus did not become ready on port {self._port} within "
                        f"{self._ready_timeout} s; its log ends:\n{self.log_tail()}"
                    )
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Terminate the process (kill it after ``stop_timeout``) and remove its directory."""
        await self._terminate()
        self._port = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log (stdout and stderr)."""
        if self._dir is None:
            return ""
        path = self._dir / "prometheus.log"
        if not path.exists():
            return ""
        text = path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _write_config(self) -> None:
        interval = _duration(self._scrape_interval)
        config = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "scrape_configs": self._scrape_configs,
        }
        # JSON is YAML: no YAML writer needed.
        (self.directory / "prometheus.yml").write_text(json.dumps(config, indent=2))

    async def _spawn(self, binary: str) -> None:
        d = self.directory
        if self._log is None:
            self._log = (d / "prometheus.log").open("ab")
        self._proc = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={d / 'prometheus.yml'}",
            f"--storage.tsdb.path={d / 'data'}",
            f"--web.listen-address=127.0.0.1:{self._port}",
            "--web.enable-lifecycle",
            *self._extra_args,
            cwd=d,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
        )

    async def _wait_ready(self) -> bool:
        """Poll ``/-/ready`` until 200 (True), the process exits or the timeout ends (False)."""
        assert self._proc is not None
        deadline = self._clock.now() + self._ready_timeout
        url = f"http://127.0.0.1:{self._port}/-/ready"
        async with aiohttp.ClientSession() as session:
            while self._clock.now() < deadline:
                if self._proc.returncode is not None:
                    return False
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                        if r.status == 200:
                            return True
                await self._clock.sleep(0.05)
        return False

    async def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), self._stop_timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
