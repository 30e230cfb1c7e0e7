"""Queueing sanity of the simulator's service model against closed-form results.

With a ``static`` policy the replica count is fixed, every replica has one slot (concurrency 1)
and the cluster routes the FIFO queue to the replica that can begin soonest, so the model is a
FCFS multi-server queue: M/M/c for Poisson arrivals with exponential service, M/D/1 for one
replica with deterministic service. In service mode TTFT is the wait in queue, so the mean TTFT
must match Erlang C (M/M/c) and Pollaczek-Khinchine (M/D/1).

Seeded and long enough that the sampling error is well inside the 5 % tolerance; the first 1 %
of requests (the queue starting empty) is discarded as warm-up.
"""

from __future__ import annotations

import numpy as np
import pytest

from autoscaler.config import parse_policy
from autoscaler.config.models import PolicyFile
from autoscaler.sim.cluster_config import ClusterSpec
from autoscaler.sim.runner import simulate
from autoscaler.sim.traces import Trace

MEAN_S = 0.01  # mean service time; the tick (10 s) only matters for decisions
TOLERANCE = 0.05


def static_policy(replicas: int) -> PolicyFile:
    return parse_policy(
        f"""
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {{name: static-{replicas}}}
spec:
  targets:
    - kind: InferenceService
      namespace: default
      name: model
      policy: {{name: static, params: {{replicas: {replicas}}}}}
      guards: {{minReplicas: 0, maxReplicas: 1000, restartHoldSeconds: 0}}
      actuation: {{engine: kserve, mode: pin}}
"""
    )


def service_spec(replicas: int, distribution: str = "exponential", slots: int = 1) -> ClusterSpec:
    return ClusterSpec.model_validate(
        {
            "initialReplicas": replicas,
            "service": {"concurrency": slots, "meanSeconds": MEAN_S, "distribution": distribution},
            # Far above any wait these loads produce: nothing may drop. (The run lasts this long
            # after the last arrival, so it is not set astronomically high.)
            "maxQueueSeconds": 60,
            "coldStart": {"meanSeconds": 0, "cv": 0},
            "signals": {"tickSeconds": 10},
        }
    )


def poisson_trace(rate: float, n: int, seed: int, service_s: np.ndarray | None = None) -> Trace:
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1.0 / rate, n))
    zeros = np.zeros(n, np.int64)
    return Trace("poisson", "csv", 0.0, arrival, zeros, zeros, service_s)


def erlang_c(c: int, a: float) -> float:
    """Probability that an arrival waits in M/M/c with offered load ``a`` = lambda / mu < c."""
    term = 1.0
    head = 0.0
    for k in range(c):
        head += term
        term *= a / (k + 1)
    tail = term * c / (c - a)  # a^c / c! * c / (c - a)
    return tail / (head + tail)


def mmc_mean_wait(c: int, rate: float, mean_s: float) -> float:
    """Erlang C mean wait in queue: C(c, a) / (c mu - lambda)."""
    return erlang_c(c, rate * mean_s) / (c / mean_s - rate)


def md1_mean_wait(rate: float, mean_s: float) -> float:
    """Pollaczek-Khinchine for deterministic service: lambda s^2 / (2 (1 - rho))."""
    rho = rate * mean_s
    return rate * mean_s * mean_s / (2.0 * (1.0 - rho))


def waits(
    trace: Trace, replicas: int, distribution: str = "exponential", slots: int = 1, seed: int = 7
) -> np.ndarray:
    cluster = service_spec(replicas, distribution, slots)
    result = simulate(trace, static_policy(replicas), cluster, seed=seed)
    ttft = result.ttft
    assert result.metrics["dropped"] == 0
    assert result.metrics["max_replicas"] == replicas
    assert result.metrics["cold_starts"] == 0
    assert not np.isnan(ttft).any()
    return ttft[trace.requests // 100 :]


def test_erlang_c_helper_known_values() -> None:
    # M/M/1: C = rho, W = rho / (mu - lambda). M/M/2 at a = 1: C = 1/3.
    assert erlang_c(1, 0.7) == pytest.approx(0.7)
    assert erlang_c(2, 1.0) == pytest.approx(1.0 / 3.0)
    assert mmc_mean_wait(1, 70.0, 0.01) == pytest.approx(0.7 / 30.0)
    # M/D/1 waits half as long as M/M/1 at the same load.
    assert md1_mean_wait(70.0, 0.01) == pytest.approx(mmc_mean_wait(1, 70.0, 0.01) / 2)


@pytest.mark.parametrize(
    ("replicas", "slots", "rho", "n"),
    [
        (1, 1, 0.7, 800_000),
        (4, 1, 0.8, 1_000_000),
        (1, 4, 0.8, 1_000_000),  # one replica with 4 slots is the same M/M/4
        (8, 1, 0.9, 1_500_000),
    ],
)
def test_mmc_mean_wait_matches_erlang_c(replicas: int, slots: int, rho: float, n: int) -> None:
    """Exponential service times given in the trace; the formula is evaluated at the sample's
    realized arrival rate and mean service time, which removes the first-order sampling noise of
    the load (at rho = 0.9 a 0.3 % load error moves the mean wait by ~3 %) and leaves the check
    on the queueing itself. The nominal-load check is the M/M/1 test below."""
    c = replicas * slots
    rate = rho * c / MEAN_S
    rng = np.random.default_rng(1000 + c)
    service = rng.exponential(MEAN_S, n)
    trace = poisson_trace(rate, n, seed=2000 + c, service_s=service)
    w = waits(trace, replicas, slots=slots)
    rate_hat = (n - 1) / float(trace.arrival_s[-1] - trace.arrival_s[0])
    mean_hat = float(service.mean())
    expected = mmc_mean_wait(c, rate_hat, mean_hat)
    assert abs(float(w.mean()) / expected - 1.0) < TOLERANCE
    # The fraction of requests that wait at all is Erlang C itself (tight: low variance).
    assert float((w > 0).mean()) == pytest.approx(erlang_c(c, rate_hat * mean_hat), rel=0.01)


def test_mm1_with_sampled_exponential_service_matches_erlang_c() -> None:
    """The service model's own exponential draw (no service times in the trace), one replica."""
    c, rho, n = 1, 0.7, 1_000_000
    rate = rho * c / MEAN_S
    w = waits(poisson_trace(rate, n, seed=31), c, "exponential")
    assert abs(float(w.mean()) / mmc_mean_wait(c, rate, MEAN_S) - 1.0) < TOLERANCE
    assert float((w > 0).mean()) == pytest.approx(rho, rel=0.02)


def test_md1_mean_wait_matches_pollaczek_khinchine() -> None:
    rho, n = 0.7, 800_000
    rate = rho / MEAN_S
    w = waits(poisson_trace(rate, n, seed=41), 1, "deterministic")
    assert abs(float(w.mean()) / md1_mean_wait(rate, MEAN_S) - 1.0) < TOLERANCE
    # The service time really is deterministic: M/D/1 waits about half as long as M/M/1.
    assert float(w.mean()) < 0.6 * mmc_mean_wait(1, rate, MEAN_S)


def test_more_replicas_than_load_means_no_waiting() -> None:
    """c = 8 at rho = 0.1 (Erlang C ~ 1e-5): virtually nobody waits, and the mean wait is tiny."""
    c, rho, n = 8, 0.1, 100_000
    rate = rho * c / MEAN_S
    w = waits(poisson_trace(rate, n, seed=51), c)
    assert float((w > 0).mean()) < 1e-3
    assert float(w.mean()) < 1e-5


def test_slots_on_one_replica_queue_like_single_slot_replicas() -> None:
    """FCFS to the earliest free slot: 1 replica x 4 slots and 4 replicas x 1 slot are the same
    M/M/4, request by request."""
    n = 50_000
    rng = np.random.default_rng(61)
    trace = poisson_trace(0.8 * 4 / MEAN_S, n, seed=62, service_s=rng.exponential(MEAN_S, n))
    np.testing.assert_allclose(waits(trace, 1, slots=4), waits(trace, 4, slots=1), atol=1e-9)
