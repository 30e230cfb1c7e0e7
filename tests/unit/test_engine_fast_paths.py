"""The engine's shortcuts give the very answers of the plain code they stand for.

docs/engine-performance.md lists them: the HPA memory's O(1) windows, the single-metric ``hpa``
path, the snapshot's inlined window queries, and windows kept only for the signals a policy reads.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import Any

import pytest

from autoscaler.config import parse_policy
from autoscaler.core import signals
from autoscaler.core.rounding import to_milli
from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import Decision, Observation, TargetRef
from autoscaler.core.windows import SignalWindow
from autoscaler.engine import Engine
from autoscaler.policy.api import Policy
from autoscaler.policy.builtin.hpa import HpaPolicy
from autoscaler.policy.builtin.hpa_common import (
    Behavior,
    BehaviorRules,
    HpaMemory,
    HpaMetric,
    MetricPlan,
)
from autoscaler.policy.compat.kubernetes import (
    Tolerance,
    limit_rate,
    replicas_for_external_average,
    replicas_for_external_metric,
    stabilize,
)


def _plain_normalize(
    mem: dict[str, list[tuple[float, int]]],
    now: float,
    current: int,
    desired: int,
    lo: int,
    hi: int,
    rules: BehaviorRules,
) -> tuple[int, str]:
    """HpaMemory.normalize as it was: filter and copy every entry on every call."""
    keep = max(rules.up_window, rules.down_window)
    mem["recs"] = [(t, r) for t, r in mem["recs"] if now - t < keep]
    recs = [(r, now - t) for t, r in mem["recs"]]
    stabilized = stabilize(current, desired, recs, rules.up_window, rules.down_window)
    mem["recs"].append((now, desired))
    mem["up"] = [(t, c) for t, c in mem["up"] if now - t < rules.period]
    mem["down"] = [(t, c) for t, c in mem["down"] if now - t < rules.period]
    ups = [(c, now - t) for t, c in mem["up"]]
    downs = [(c, now - t) for t, c in mem["down"]]
    final, reason = limit_rate(current, stabilized, lo, hi, rules.up, rules.down, ups, downs)
    if final > current:
        mem["up"].append((now, final - current))
    elif final < current:
        mem["down"].append((now, current - final))
    return final, reason


def _extremes(entries: list[tuple[float, int]], now: float) -> list[tuple[int, int] | None]:
    """(min, max) of the recommendations each window counts (age below it), for some windows."""
    out: list[tuple[int, int] | None] = []
    for window in (0.5, 1.0, 15.0, 20.0, 45.0, 60.0, 300.0, 1e9):
        values = [r for t, r in entries if now - t < window]
        out.append((min(values), max(values)) if values else None)
    return out


BEHAVIORS: list[dict[str, Any]] = [
    {},  # upstream defaults: 300 s down window, 15 s periods
    {
        "scaleUp": {
            "policies": [
                {"type": "Pods", "value": 2, "periodSeconds": 30},
                {"type": "Percent", "value": 50, "periodSeconds": 10},
            ],
            "stabilizationWindowSeconds": 20,
        },
        "scaleDown": {
            "selectPolicy": "Min",
            "policies": [{"type": "Percent", "value": 30, "periodSeconds": 20}],
            "stabilizationWindowSeconds": 45,
        },
    },
    {"scaleUp": {"stabilizationWindowSeconds": 60}, "scaleDown": {"selectPolicy": "Disabled"}},
    {"scaleDown": {"stabilizationWindowSeconds": 0}},
]


def _nan_eq(entries: Iterable[tuple[float, int]]) -> list[tuple[object, int]]:
    """Entries with NaN times comparable: a NaN equals only itself as the same object, and the
    compiled core (autoscaler/native.py) stores floats unboxed, so equal entries are new objects."""
    return [("nan" if ts != ts else ts, v) for ts, v in entries]


@pytest.mark.parametrize("seed", range(6))
def test_hpa_memory_matches_the_plain_computation(seed: int) -> None:
    # Steady and uneven steps, equal times, time going backwards, NaN times, and a change of
    # behavior (as after a reload) in the middle: replicas, reasons and entries stay equal.
    rng = random.Random(seed)
    behaviors = [BehaviorRules.of(Behavior.model_validate(b)) for b in BEHAVIORS]
    rules = behaviors[seed % len(behaviors)]
    mem = HpaMemory()
    plain: dict[str, list[tuple[float, int]]] = {"recs": [], "up": [], "down": []}
    now = 1000.0
    current = 5
    out_of_order = 0
    for step in range(1500):
        now += rng.choice([1.0, 1.0, 1.0, 15.0, 0.0, 0.5, 37.0])
        at = now
        if rng.random() < 0.01:
            at = now - rng.choice([3.0, 400.0])  # a call earlier than the last one
            out_of_order += 1
        if rng.random() < 0.003:
            at = math.nan
        if step == 700:
            rules = behaviors[(seed + 1) % len(behaviors)]
        desired = max(
            1, int(current * rng.choice([0.3, 0.8, 1.0, 1.0, 1.3, 2.5])) + rng.randint(-1, 1)
        )
        got = mem.normalize(at, current, desired, 1, 40, rules)
        assert got == _plain_normalize(plain, at, current, desired, 1, 40, rules), step
        # The memory drops a recommendation that a newer equal one makes redundant: fewer
        # entries, the same extremes over every window.
        assert len(mem.recommendations) <= len(plain["recs"])
        assert _extremes(mem.recommendations.entries(), at) == _extremes(plain["recs"], at)
        assert _nan_eq(mem.up_events) == _nan_eq(plain["up"])
        assert _nan_eq(mem.down_events) == _nan_eq(plain["down"])
        current = got[0]
    assert out_of_order > 5


def _hpa(metrics: list[dict[str, Any]], **params: Any) -> HpaPolicy:
    policy = HpaPolicy(HpaPolicy.params_model.model_validate({"metrics": metrics, **params}))
    assert isinstance(policy, HpaPolicy)
    return policy


@pytest.mark.parametrize("window", [0.0, 20.0])
def test_single_metric_hpa_matches_the_general_path(window: float) -> None:
    # One AverageValue metric takes _decide_single; the same policy with the general path forced
    # gives the same proposals and memory, across tolerance edges, huge values and no data.
    fast = _hpa([{"signal": "concurrency", "target": 7, "windowSeconds": window}], maxReplicas=30)
    slow = _hpa([{"signal": "concurrency", "target": 7, "windowSeconds": window}], maxReplicas=30)
    assert fast._single
    slow._single = False
    rng = random.Random(4)
    w = SignalWindow(120)
    s_fast, s_slow = HpaMemory(), HpaMemory()
    current = 3
    for t in range(600):
        value = rng.choice([0.0, 6.3, 7.0, 7.7, 21.0, 21.7, 70.0, 1e17, 3.5e-4, math.nan])
        if t % 50 != 7:  # a gap now and then: no data in the window
            w.add(float(t), value * current)
        snap = Snapshot("ns/m", float(t), current, current, 0, {"concurrency": w})
        p1, s_fast = fast.decide(snap, s_fast)
        p2, s_slow = slow.decide(snap, s_slow)
        assert p1 == p2
        assert dict(p1.inputs) == dict(p2.inputs)
        if p1.replicas is not None:
            current = max(1, min(30, p1.replicas))
    assert s_fast == s_slow


def metric_value(snap: Snapshot, m: HpaMetric) -> float | None:
    """What MetricPlan.value stands for, over the pydantic metric."""
    if m.window_seconds > 0:
        return snap.mean(m.signal, m.window_seconds)
    return snap.last(m.signal)


def metric_replicas(snap: Snapshot, current: int, m: HpaMetric, tol: Tolerance) -> int | None:
    """What MetricPlan.replicas stands for: upstream's functions, over the pydantic metric."""
    value = metric_value(snap, m)
    if value is None:
        return None
    if m.type == "AverageValue":
        return replicas_for_external_average(current, [to_milli(value)], to_milli(m.target), tol)
    if snap.ready == 0:
        return None
    return replicas_for_external_metric(
        current, [to_milli(value)], to_milli(m.target), snap.ready, tol
    )


@pytest.mark.parametrize("kind", ["AverageValue", "Value"])
def test_metric_plan_matches_metric_value_and_replicas(kind: str) -> None:
    # MetricPlan (hpa and keda, per target per tick) against the plain functions over the
    # pydantic metric: tolerance edges, zero and huge values, values past int64, no ready pods,
    # zero current, gaps in the data.
    rng = random.Random(11)
    for case in range(300):
        tol = rng.choice([0.0, 0.1, 0.25])
        window = rng.choice([0.0, 30.0])
        target = rng.choice([7.0, 0.5, 1e-3, 250.0])
        m = HpaMetric.model_validate(
            {"signal": "q", "type": kind, "target": target, "windowSeconds": window}
        )
        plan = MetricPlan(m, tol)
        w = SignalWindow(120)
        current = rng.choice([0, 1, 3, 40])
        ready = rng.choice([0, current, max(current - 1, 0)])
        for t in range(0, 60, rng.choice([1, 7, 61])):
            v = rng.choice([0.0, 6.3, 7.0, 7.7, 21.0, 1e17, 1e19, 3.5e-4])
            w.add(float(t), v * max(current, 1))
        snap = Snapshot("ns/m", 60.0, current, ready, 0, {"q": w})
        value = plan.value(snap)
        assert value == metric_value(snap, m), case
        if value is None:
            continue
        try:
            expected: int | type[Exception] | None = metric_replicas(
                snap, current, m, Tolerance(tol, tol)
            )
        except ValueError:
            expected = ValueError
        if expected is ValueError:
            with pytest.raises(ValueError):
                plan.replicas(snap, current, value)
        else:
            assert plan.replicas(snap, current, value) == expected, case


def test_snapshot_queries_equal_the_window_queries() -> None:
    # Snapshot.mean and .rate inline SignalWindow.mean and .rate: same answers, same sums.
    rng = random.Random(9)
    a, b = SignalWindow(50), SignalWindow(50)
    t = 0.0
    for _ in range(3000):
        t += rng.choice([0.5, 1.0, 1.0, 4.0, 0.0])
        v = rng.choice([0.0, rng.random() * 1e6, 1e9 + rng.random(), 3.0])
        a.add(t, v)
        b.add(t, v)
        span = rng.choice([1.0, 10.0, 30.0, 50.0])
        snap = Snapshot("ns/x", t, 1, 1, 0, {"x": a})
        if rng.random() < 0.6:
            assert snap.mean("x", span) == b.mean(t, span)
        if rng.random() < 0.6:
            assert snap.rate("x", span) == b.rate(t, span)
    assert Snapshot("ns/x", t, 1, 1, 0, {}).mean("x", 10.0) is None
    a._sync()
    b._sync()
    assert (a._csum, a._cinc, a._start) == (b._csum, b._cinc, b._start)


TEMPLATE = """
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {{name: t}}
spec:
  targets:
    - name: model
      policy: {policy}
      guards: {{minReplicas: 0, maxReplicas: 40, stabilization: {{downSeconds: 20}},
        scaleToZero: {{idleSeconds: 5, graceSeconds: 5}}}}
"""

READING = [
    "{name: queue, params: {targetPerReplica: 4, windowSeconds: 10}}",
    "{name: tokens, params: {tokensPerReplica: 900, windowSeconds: 10}}",
    "{name: kpa, params: {metric: concurrency, stableWindowSeconds: 10}}",
    "{name: hpa, params: {metrics: [{signal: concurrency, target: 5}, "
    "{signal: requests_waiting, target: 2, windowSeconds: 5}]}}",
    "{name: keda, params: {trigger: {signal: requests_waiting, target: 3}}}",
    "{name: max, params: {policies: [{name: queue, params: {targetPerReplica: 3}}, "
    "{name: kpa, params: {metric: rps}}]}}",
    "{name: llm, params: {sloTtftSeconds: 2, prefillTokensPerSecond: 4000, "
    "decodeTokensPerSecond: 900, queueWindowSeconds: 5, scaleDownDelaySeconds: 20}}",
]


def _run(policy: str, read_everything: bool) -> tuple[list[Decision], Engine]:
    cfg = parse_policy(TEMPLATE.format(policy=policy)).spec.targets[0]
    refs = [TargetRef("InferenceService", "ns", f"m{i}") for i in range(4)]
    engine = Engine((r, cfg) for r in refs)
    if read_everything:
        for rt in engine.targets.values():
            rt.reads = None
    rng = random.Random(2)
    out = []
    replicas = dict.fromkeys((r.key for r in refs), 2.0)
    tokens = 0.0
    for tick in range(300):
        now = 100.0 + tick
        tokens += rng.random() * 5000
        obs = []
        for k in replicas:
            load = 0.0 if (tick // 40) % 3 == 0 else rng.random() * 40
            obs += [
                Observation(k, signals.REPLICAS, replicas[k], now),
                Observation(k, signals.REPLICAS_READY, replicas[k], now),
                Observation(k, signals.CONCURRENCY, load, now),
                Observation(k, signals.RPS, load * 3, now),
                Observation(k, signals.WAITING, load / 4, now),
                Observation(k, signals.KV_CACHE_USAGE, rng.random(), now),
                Observation(k, signals.PROMPT_TOKENS_TOTAL, tokens, now),
                Observation(k, signals.GENERATION_TOKENS_TOTAL, tokens / 3, now),
            ]
        for d in engine.tick(now, obs):
            out.append(d)
            replicas[d.target] = float(d.replicas)
    return out, engine


@pytest.mark.parametrize("policy", READING)
def test_windows_only_for_signals_read_change_no_decision(policy: str) -> None:
    kept, lean = _run(policy, read_everything=False)
    everything, full = _run(policy, read_everything=True)
    assert [d.to_dict() for d in kept] == [d.to_dict() for d in everything]
    assert {d.replicas for d in kept} != {kept[0].replicas}  # the load moved the replicas
    rt = next(iter(lean.targets.values()))
    reads = rt.policy.signals_read()
    assert reads is not None
    assert set(rt.windows) <= reads
    assert set(rt.windows) < set(next(iter(full.targets.values())).windows)
    assert lean.unread_observations > 0 and full.unread_observations == 0


def test_a_policy_that_declares_nothing_keeps_every_signal() -> None:
    class Anything(Policy[Any, Any]):
        name = "anything"

        def required_signals(self) -> tuple[str, ...]:
            return ()

        def initial_state(self, snap: Snapshot) -> None:
            return None

        def decide(self, snap: Snapshot, state: None) -> Any:
            raise NotImplementedError

    assert Anything(None).signals_read() is None


def test_reload_to_a_policy_reading_other_signals_drops_and_starts_windows() -> None:
    cfg_q = parse_policy(TEMPLATE.format(policy=READING[0])).spec.targets[0]
    cfg_k = parse_policy(TEMPLATE.format(policy=READING[2])).spec.targets[0]
    ref = TargetRef("InferenceService", "ns", "m")
    engine = Engine([(ref, cfg_q)])
    feed = [
        Observation(ref.key, signals.WAITING, 8.0, 1.0),
        Observation(ref.key, signals.CONCURRENCY, 8.0, 1.0),
    ]
    engine.tick(1.0, feed)
    rt = engine.targets[ref.key]
    assert set(rt.windows) == {signals.WAITING}
    engine.set_targets([(ref, cfg_k)])
    assert rt.windows == {}  # the kpa policy does not read the queue
    engine.tick(2.0, [o._replace(ts=2.0) for o in feed])
    assert set(rt.windows) == {signals.CONCURRENCY}
    assert len(rt.windows[signals.CONCURRENCY]) == 1  # history starts at the reload


def test_queue_keeps_memory_bounded_by_its_signal() -> None:
    # The point of it for the live service: a target whose policy reads one signal keeps one
    # window, however many signals the sources scrape.
    _, lean = _run(READING[0], read_everything=False)
    assert all(set(rt.windows) == {signals.WAITING} for rt in lean.targets.values())


@pytest.mark.parametrize(
    "steps",
    [
        {
            "stepUp": {"pods": 3, "periodSeconds": 20},
            "stepDown": {"percent": 25, "periodSeconds": 20},
        },
        {"stepDown": {"pods": 1, "percent": 40, "periodSeconds": 15, "select": "Min"}},
        {"stepUp": {"percent": 50, "periodSeconds": 10}},
    ],
)
def test_step_rule_totals_match_the_event_sums(steps: dict[str, Any]) -> None:
    # With one period for every step rule the guard keeps running totals of the scale events;
    # forced to sum the events on every call instead, the same plan gives the same replicas,
    # actions and events, with time going backwards and NaN times on the way.
    from autoscaler.policy.guards import GuardPlan, Guards, GuardState

    g = Guards.model_validate(
        {"minReplicas": 1, "maxReplicas": 60, "restartHoldSeconds": 0, **steps}
    )
    fast, slow = GuardPlan(g), GuardPlan(g)
    assert fast.single_period
    slow.single_period = False
    st_fast, st_slow = GuardState(0.0), GuardState(0.0)
    rng = random.Random(5)
    w = SignalWindow(100)
    current = 10
    now = 0.0
    clipped: set[str] = set()
    for step in range(2000):
        now += rng.choice([1.0, 1.0, 3.0, 0.0])
        at = now - 50.0 if rng.random() < 0.01 else (math.nan if rng.random() < 0.002 else now)
        w.add(now, 1.0)
        snap = Snapshot("ns/m", at, current, current, 0, {"x": w})
        want = max(0, current + rng.choice([-6, -2, -1, 0, 0, 1, 3, 9]))
        a = fast.apply(st_fast, snap, want, None)
        b = slow.apply(st_slow, snap, want, None)
        assert a == b, step
        assert _nan_eq(st_fast.up_events) == _nan_eq(st_slow.up_events)
        assert _nan_eq(st_fast.down_events) == _nan_eq(st_slow.down_events)
        clipped.update(action.guard for action in a[2])
        current = a[0]
    assert clipped & {"stepUp", "stepDown"}


def test_required_signals_are_kept_even_when_not_declared_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The fallback guard watches the required signals' windows: the engine keeps them whatever
    # a (third-party) policy declares it reads.
    from autoscaler.policy.builtin.queue import QueuePolicy

    monkeypatch.setattr(QueuePolicy, "signals_read", lambda self: frozenset())
    kept, lean = _run(READING[0], read_everything=False)
    everything, _ = _run(READING[0], read_everything=True)
    assert [d.to_dict() for d in kept] == [d.to_dict() for d in everything]
    rt = next(iter(lean.targets.values()))
    assert rt.reads == frozenset({signals.WAITING})
    assert set(rt.windows) == {signals.WAITING}


def test_hpa_memory_keeps_only_the_changes_in_its_window() -> None:
    # A steady recommendation is one entry, not one per tick of the 300 s window; a change adds
    # one, and the queue holds at most the distinct runs inside the window.
    rules = BehaviorRules.of(Behavior.model_validate({}))  # 300 s down window
    mem = HpaMemory()
    for t in range(1000):
        mem.normalize(float(t), 4, 4, 1, 10, rules)
    assert mem.recommendations.entries() == [(999.0, 4)]
    for t in range(1000, 1100):
        mem.normalize(float(t), 4, 3 + (t // 10) % 2, 1, 10, rules)  # alternates every 10 s
    assert len(mem.recommendations) == 11  # the 4 from before and ten runs of 3s and 4s
