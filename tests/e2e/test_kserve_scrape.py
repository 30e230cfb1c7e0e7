"""End to end: the real KServe model server serving scikit-learn, read by the pod-scrape source.

``sklearn_server.py`` (beside this file) trains an iris classifier, saves it with joblib and
serves it with ``kserve.ModelServer`` on a free loopback port, gRPC off. The test starts it as a
subprocess of this interpreter, waits (bounded) for ``/v2/health/ready``, sends V2 inference
requests with aiohttp and checks the answers, then reads the server's ``/metrics`` through
``PodScrapeSource`` with the ``kserve`` preset, for one pod at 127.0.0.1: the ``requests_total``
counter grows by exactly the requests sent between two collections, and the predict-latency
quantile is present and positive.

kserve and scikit-learn are in the ``test`` extra. Without them the test skips on a developer
machine and fails in CI (``CI`` set). Waiting is bounded polling on the real clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.config.signals import PodScrape
from autoscaler.core import signals as sig
from autoscaler.core.protocols import SourceReport
from autoscaler.core.types import Observation, TargetRef
from autoscaler.service.clock import SystemClock
from autoscaler.sources.pods import PodIndex, PodInfo
from autoscaler.sources.scrape import PodScrapeSource

SERVER_SCRIPT = Path(__file__).with_name("sklearn_server.py")
MODEL = "iris"
REF = TargetRef("InferenceService", "models", MODEL)
READY_TIMEOUT = 45.0  # importing kserve (fastapi, pandas, grpc) and training take a few seconds
STOP_TIMEOUT = 10.0
PORT_ATTEMPTS = 3  # another process may take the free port between our probe and the bind
CONCURRENCY = 8  # requests in flight while driving load

# One flower of each species from the iris data (rows 0, 50 and 100) and its class.
FLOWERS = (
    ((5.1, 3.5, 1.4, 0.2), 0),
    ((7.0, 3.2, 4.7, 1.4), 1),
    ((6.3, 3.3, 6.0, 2.5), 2),
)

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class ModelServerProcess:
    """The running server: its port and log."""

    proc: asyncio.subprocess.Process
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


async def _wait_ready(server: ModelServerProcess, session: aiohttp.ClientSession) -> bool:
    """True once ``/v2/health/ready`` says so; False if the process exits or time runs out."""
    clock = SystemClock()
    deadline = clock.now() + READY_TIMEOUT
    while clock.now() < deadline:
        if server.proc.returncode is not None:
            return False
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with session.get(
                f"{server.url}/v2/health/ready", timeout=aiohttp.ClientTimeout(total=2)
            ) as r:
                if r.status == 200 and (await r.json()).get("ready") is True:
                    return True
        await clock.sleep(0.2)
    return False


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (uvicorn shuts down gracefully), then SIGKILL if it lingers."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)


@pytest.fixture(scope="module")
def kserve_installed() -> None:
    missing = [m for m in ("kserve", "sklearn", "joblib") if importlib.util.find_spec(m) is None]
    if not missing:
        return
    message = f"{', '.join(missing)} not installed (pip install -e '.[test]')"
    if "CI" in os.environ:
        pytest.fail(f"{message}: the test extra must bring them in CI")
    pytest.skip(message)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(
    kserve_installed: None, session: aiohttp.ClientSession, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ModelServerProcess]:
    workdir = tmp_path_factory.mktemp("kserve-sklearn")
    for attempt in range(PORT_ATTEMPTS):
        log_path = workdir / f"server-{attempt}.log"
        log: IO[bytes] = log_path.open("wb")
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SERVER_SCRIPT),
            "--model_dir",
            str(workdir / "model"),
            "--model_name",
            MODEL,
            "--http_port",
            str(port),
            "--enable_grpc",
            "false",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
        running = ModelServerProcess(proc, port, log_path)
        try:
            ready = await _wait_ready(running, session)
            if ready:
                yield running
                return
            in_use = "address already in use" in running.log_tail().lower()
            if not in_use or attempt == PORT_ATTEMPTS - 1:
                pytest.fail(
                    f"the KServe model server was not ready on port {port} within "
                    f"{READY_TIMEOUT} s (exit code {proc.returncode}); its log ends:\n"
                    f"{running.log_tail()}"
                )
        finally:
            await _stop(proc)
            log.close()


# -- V2 inference ------------------------------------------------------------------------------


def v2_request(rows: Sequence[Sequence[float]]) -> dict[str, Any]:
    data = [x for row in rows for x in row]
    return {
        "inputs": [
            {
                "name": "input-0",
                "shape": [len(rows), len(rows[0])],
                "datatype": "FP32",
                "data": data,
            }
        ]
    }


async def infer(
    session: aiohttp.ClientSession, server: ModelServerProcess, rows: Sequence[Sequence[float]]
) -> list[int]:
    """One V2 inference request; the predicted classes."""
    async with session.post(
        f"{server.url}/v2/models/{MODEL}/infer",
        json=v2_request(rows),
        timeout=aiohttp.ClientTimeout(total=10),
    ) as r:
        body = await r.json()
        assert r.status == 200, body
    assert body["model_name"] == MODEL
    (output,) = body["outputs"]
    assert output["datatype"] == "INT64"
    assert output["shape"] == [len(rows)]
    return [int(v) for v in output["data"]]


async def drive(session: aiohttp.ClientSession, server: ModelServerProcess, n: int) -> None:
    """``n`` inference requests, ``CONCURRENCY`` in flight, each answered right."""
    slots = asyncio.Semaphore(CONCURRENCY)
    rows = [features for features, _ in FLOWERS]
    expected = [label for _, label in FLOWERS]

    async def one() -> None:
        async with slots:
            assert await infer(session, server, rows) == expected

    await asyncio.gather(*(one() for _ in range(n)))


async def server_request_count(session: aiohttp.ClientSession, server: ModelServerProcess) -> float:
    """``request_predict_seconds_count`` for the model, read with prometheus_client's parser."""
    async with session.get(f"{server.url}/metrics") as r:
        assert r.status == 200
        text = await r.text()
    for family in text_string_to_metric_families(text):
        if family.name == "request_predict_seconds":
            for s in family.samples:
                if s.name == "request_predict_seconds_count" and s.labels == {"model_name": MODEL}:
                    return float(s.value)
    raise AssertionError(f"no request_predict_seconds_count for {MODEL} in /metrics")


# -- tests -------------------------------------------------------------------------------------


async def test_v2_inference_predicts_each_species(
    session: aiohttp.ClientSession, server: ModelServerProcess
) -> None:
    assert await infer(session, server, [f for f, _ in FLOWERS]) == [c for _, c in FLOWERS]
    for features, label in FLOWERS:
        assert await infer(session, server, [features]) == [label]


def _by_signal(report: SourceReport) -> dict[str, Observation]:
    assert report.errors == {}
    out = {o.signal: o for o in report.observations}
    assert len(out) == len(report.observations), report.observations
    assert all(o.target == REF.key for o in report.observations)
    return out


async def test_pod_scrape_reads_kserve_request_metrics(
    session: aiohttp.ClientSession, server: ModelServerProcess
) -> None:
    clock = SystemClock()
    pods = PodIndex()
    pod = PodInfo(name=f"{MODEL}-predictor-0", namespace=REF.namespace, ip="127.0.0.1", ready=True)
    pods.set_pods(REF.key, [pod])
    config = PodScrape(port=server.port, presets=("kserve",), timeout_seconds=5.0)
    source = PodScrapeSource(session, pods, {REF.key: config}, clock)

    await drive(session, server, 25)  # the server has seen traffic before the first scrape

    before = clock.now()
    first = _by_signal(await source.collect([REF]))
    after = clock.now()
    # The pod's first scrape is the counter's baseline; no latency quantile without an increase.
    assert first[sig.REQUESTS_TOTAL].value == 0.0
    assert before <= first[sig.REQUESTS_TOTAL].ts <= after
    assert "latency_p95_seconds" not in first

    served_before = await server_request_count(session, server)
    sent = 40
    await drive(session, server, sent)
    assert await server_request_count(session, server) - served_before == sent

    second = _by_signal(await source.collect([REF]))
    total = second[sig.REQUESTS_TOTAL]
    assert total.value - first[sig.REQUESTS_TOTAL].value == sent
    assert total.ts > first[sig.REQUESTS_TOTAL].ts
    p95 = second["latency_p95_seconds"]
    # A scikit-learn predict on 3 rows takes well under KServe's smallest bucket (5 ms).
    assert 0.0 < p95.value <= 10.0
    assert p95.ts == total.ts

    # No requests in between: the counter holds and there is no quantile (missing, never zero).
    third = _by_signal(await source.collect([REF]))
    assert third[sig.REQUESTS_TOTAL].value == total.value
    assert "latency_p95_seconds" not in third
