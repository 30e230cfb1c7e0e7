"""Engine.tick: deterministic decision records, replica status derivation, hot reload."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscaler.config import load_policy, parse_policy
from autoscaler.core import signals
from autoscaler.core.types import Decision, GuardAction, Observation, TargetRef
from autoscaler.engine import Engine
from autoscaler.policy.builtin.hpa_common import HpaMemory
from autoscaler.policy.builtin.kpa import KpaState
from autoscaler.testing.sequences import demo_sequence

POLICIES = Path(__file__).resolve().parents[2] / "policies"

QUIET_GUARDS: dict[str, Any] = {
    "minReplicas": 0,
    "maxReplicas": 50,
    "stabilization": {"upSeconds": 0, "downSeconds": 0},
    "holdWhileScaling": {"enabled": False},
    "restartHoldSeconds": 0,
    "scaleToZero": {"idleSeconds": 0, "graceSeconds": 0},
}


def target(
    name: str,
    policy: str,
    params: dict[str, Any] | None = None,
    guards: dict[str, Any] | None = None,
    namespace: str = "ns",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "namespace": namespace,
        "name": name,
        "policy": {"name": policy, "params": params or {}},
        "guards": QUIET_GUARDS if guards is None else guards,
        **extra,
    }


def doc_text(*targets: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "autoscaler.kserve.io/v1alpha1",
            "kind": "AutoscalingPolicy",
            "metadata": {"name": "test"},
            "spec": {"targets": list(targets)},
        }
    )


def engine(*targets: dict[str, Any]) -> Engine:
    return Engine.from_policy(parse_policy(doc_text(*targets)))


def reload(e: Engine, *targets: dict[str, Any]) -> None:
    doc = parse_policy(doc_text(*targets))
    e.set_targets((t.ref(), t) for t in doc.spec.targets)


def obs(key: str, now: float, **values: float) -> list[Observation]:
    return [Observation(key, name, v, now) for name, v in values.items()]


def only(decisions: list[Decision]) -> Decision:
    assert len(decisions) == 1
    return decisions[0]


# -- determinism ---------------------------------------------------------------------------------


def _replay(shuffle_seed: int | None = None) -> list[dict[str, Any]]:
    e = Engine.from_policy(load_policy(POLICIES / "llm-chat.yaml"))
    key = "llm/chat"
    replicas = 1.0
    out: list[dict[str, Any]] = []
    rng = random.Random(shuffle_seed)
    for now, batch in demo_sequence([key], seconds=900, step=15):
        batch = [*batch, Observation(key, signals.REPLICAS, replicas, now)]
        if shuffle_seed is not None:
            rng.shuffle(batch)  # one sample per signal per tick: any order is the same input
        (d,) = e.tick(now, batch)
        replicas = float(d.replicas)
        out.append(d.to_dict())
    return out


def test_same_inputs_give_identical_decision_records() -> None:
    first = _replay()
    assert first == _replay()
    assert json.dumps(first, sort_keys=False) == json.dumps(_replay(), sort_keys=False)
    assert first == _replay(shuffle_seed=1)
    # The run is not trivial: the target scaled, and guards clipped on the way.
    assert len({d["replicas"] for d in first}) > 3
    assert any(d["guards"] for d in first)


def test_targets_are_decided_in_key_order() -> None:
    e = engine(
        target("zed", "static", {"replicas": 1}, namespace="b"),
        target("amy", "static", {"replicas": 2}, namespace="a"),
        target("bob", "static", {"replicas": 3}, namespace="a"),
    )
    assert [d.target for d in e.tick(0)] == ["a/amy", "a/bob", "b/zed"]


# -- the decision record -------------------------------------------------------------------------


def test_decision_record_fields() -> None:
    e = engine(
        target(
            "m",
            "static",
            {"replicas": 3, "tokenRate": 300},
            guards={**QUIET_GUARDS, "minReplicas": 1},
        )
    )
    d = only(e.tick(100.0, obs("ns/m", 100.0, replicas=2, replicas_ready=1, replicas_starting=1)))
    assert d.to_dict() == {
        "target": "ns/m",
        "ts": 100.0,
        "policy": "static",
        "current": 2,
        "ready": 1,
        "starting": 1,
        "inputs": {},
        "proposal": 3,
        "replicas": 3,
        "token_rate": 300.0,
        "token_rate_per_replica": 100.0,
        "reason": "static",
        "signals_ok": True,
        "guards": [],
    }
    assert d.changed


def test_decision_records_guard_clips_and_proposal_inputs() -> None:
    e = engine(
        target(
            "q",
            "queue",
            {"targetPerReplica": 2},
            guards={**QUIET_GUARDS, "maxReplicas": 4},
            tokenLimits={"floor": 50},
        )
    )
    d = only(e.tick(10.0, obs("ns/q", 10.0, requests_waiting=20, replicas=1)))
    assert d.proposal == 10
    assert d.replicas == 4
    assert d.inputs == {"requests_waiting": 20.0}
    assert d.reason == "queue per replica"
    assert d.guards == (GuardAction("bounds", 10, 4, "maxReplicas 4"),)
    assert d.token_rate is None  # queue proposes no limit and none was ever set


def test_missing_signal_is_recorded_as_fallback() -> None:
    e = engine(target("q", "queue", {"targetPerReplica": 2}))
    d = only(e.tick(10.0, obs("ns/q", 10.0, replicas=3)))
    assert (d.proposal, d.replicas, d.signals_ok) == (None, 3, False)
    assert d.guards == (
        GuardAction("fallback", None, 3, "stale or missing signals: requests_waiting"),
    )


# -- current, ready and starting -----------------------------------------------------------------


def _status(**values: float) -> tuple[int, int, int]:
    e = engine(target("s", "static", {"replicas": 9}))
    d = only(e.tick(5.0, obs("ns/s", 5.0, **values)))
    return d.current, d.ready, d.starting


def test_status_signals_give_current_ready_starting() -> None:
    assert _status(replicas=4, replicas_ready=3, replicas_starting=1) == (4, 3, 1)
    assert _status(replicas=4, replicas_ready=1, replicas_starting=0) == (4, 1, 0)
    assert _status(replicas=4, replicas_ready=3) == (4, 3, 1)  # starting = current - ready
    assert _status(replicas=4) == (4, 4, 0)  # ready defaults to current
    assert _status(replicas_ready=2) == (2, 2, 0)  # first tick: ready stands in for current
    assert _status() == (0, 0, 0)
    assert _status(replicas=2, replicas_ready=5) == (2, 5, 0)  # never negative


def test_current_follows_the_last_decision_without_status() -> None:
    e = engine(target("s", "static", {"replicas": 3}))
    assert only(e.tick(0.0)).current == 0
    d = only(e.tick(15.0))
    assert (d.current, d.replicas, d.changed) == (3, 3, False)
    # A status reading wins over the last decision, however old it is.
    d = only(e.tick(30.0, obs("ns/s", 30.0, replicas=5)))
    assert d.current == 5
    assert only(e.tick(900.0)).current == 5


def test_cold_start_signal_reaches_the_scale_to_zero_guard() -> None:
    guards = {
        **QUIET_GUARDS,
        "scaleToZero": {"idleSeconds": 0, "graceSeconds": 0, "maxColdStartSeconds": 30},
    }
    e = engine(target("s", "static", {"replicas": 0}, guards=guards))
    d = only(e.tick(0.0, obs("ns/s", 0.0, replicas=2, cold_start_seconds=45)))
    assert d.replicas == 1
    assert d.guards[-1].reason == "measured cold start 45s exceeds 30s"
    d = only(e.tick(15.0, obs("ns/s", 15.0, replicas=1, cold_start_seconds=20)))
    assert d.replicas == 0


def test_hold_nonzero_blocks_zero() -> None:
    e = engine(target("s", "static", {"replicas": 0}))
    e.set_hold_nonzero("ns/s", True)
    d = only(e.tick(0.0, obs("ns/s", 0.0, replicas=2)))
    assert d.replicas == 1
    assert d.guards[-1].reason == "a rollout is in progress"
    e.set_hold_nonzero("ns/s", False)
    assert only(e.tick(15.0, obs("ns/s", 15.0, replicas=1))).replicas == 0


# -- observations --------------------------------------------------------------------------------


def test_observations_for_unknown_targets_are_counted_and_ignored() -> None:
    e = engine(target("q", "queue", {"targetPerReplica": 2}))
    d = only(
        e.tick(
            0.0,
            [
                Observation("ns/other", signals.WAITING, 100.0, 0.0),
                Observation("ns/q", signals.WAITING, 4.0, 0.0),
                Observation("elsewhere/q", signals.WAITING, 100.0, 0.0),
            ],
        )
    )
    assert e.unknown_observations == 2
    assert d.proposal == 2
    e.tick(1.0, [Observation("x/y", "anything", 1.0, 1.0)])
    assert e.unknown_observations == 3


def test_non_finite_observations_are_missing_data() -> None:
    e = engine(target("q", "queue", {"targetPerReplica": 2}))
    d = only(e.tick(0.0, obs("ns/q", 0.0, requests_waiting=float("nan"), replicas=2)))
    assert (d.proposal, d.replicas, d.signals_ok) == (None, 2, False)
    assert e.targets["ns/q"].windows[signals.WAITING].dropped == 1


def test_selector_targets_are_left_to_callers() -> None:
    text = doc_text(
        target("q", "static", {"replicas": 1}),
        {
            "namespace": "ns",
            "selector": {"matchLabels": {"app": "x"}},
            "policy": {"name": "static", "params": {"replicas": 1}},
        },
    )
    e = Engine.from_policy(parse_policy(text))
    assert list(e.targets) == ["ns/q"]


# -- hot reload ----------------------------------------------------------------------------------


def test_reload_keeps_windows_and_guard_memory() -> None:
    guards = {
        **QUIET_GUARDS,
        "restartHoldSeconds": 60,
        "stabilization": {"upSeconds": 0, "downSeconds": 300},
        "fallback": {"maxSignalAgeSeconds": 120},
    }
    e = engine(target("q", "queue", {"targetPerReplica": 2, "windowSeconds": 120}, guards=guards))
    rt = e.targets["ns/q"]
    assert only(e.tick(0.0, obs("ns/q", 0.0, requests_waiting=20, replicas=1))).replicas == 10
    reload(
        e,
        target(
            "q",
            "queue",
            {"targetPerReplica": 4, "windowSeconds": 120},
            guards={**guards, "maxReplicas": 40},
        ),
    )
    assert e.targets["ns/q"] is rt
    assert rt.config.guards.max_replicas == 40
    # The window still holds the t=0 sample: 20 / 4 = 5 with no new observation.
    d = only(e.tick(70.0, obs("ns/q", 70.0, replicas=10)))
    assert d.proposal == 5
    # The stabilization memory (10 at t=0) survived the reload and holds the scale-down.
    assert d.replicas == 10
    assert [g.guard for g in d.guards] == ["stabilization"]
    # No restart hold at t=70: it counts from when the engine first saw the target (t=0).
    assert rt.guard_state is not None and rt.guard_state.first_seen == 0.0


def test_unchanged_config_is_a_no_op() -> None:
    t = target("k", "keda", {"trigger": {"signal": "requests_waiting", "target": 10}})
    e = engine(t)
    e.tick(0.0, obs("ns/k", 0.0, requests_waiting=0, replicas=0))
    rt = e.targets["ns/k"]
    state = rt.policy_state
    reload(e, t)
    assert e.targets["ns/k"] is rt
    assert rt.policy_state is state
    assert rt.carry is False


def test_reload_carries_policy_state_for_the_same_policy() -> None:
    params = {"trigger": {"signal": "requests_waiting", "target": 10}, "pollingIntervalSeconds": 30}
    e = engine(target("k", "keda", params))
    assert only(e.tick(0.0, obs("ns/k", 0.0, requests_waiting=0, replicas=0))).replicas == 0
    reload(e, target("k", "keda", {**params, "cooldownPeriodSeconds": 60}))
    # KEDA polled at t=0; with its state carried the next poll is at 30, not now.
    d = only(e.tick(15.0, obs("ns/k", 15.0, requests_waiting=50, replicas=0)))
    assert d.replicas == 0
    d = only(e.tick(30.0, obs("ns/k", 30.0, requests_waiting=50, replicas=0)))
    assert (d.replicas, d.reason) == (1, "KEDA activation")


def test_reload_updates_a_carried_kpa_decider() -> None:
    e = engine(target("k", "kpa", {"target": 100}))
    series = [Observation("ns/k", signals.CONCURRENCY, 900.0, float(t)) for t in range(61)]
    d = only(e.tick(60.0, [*series, *obs("ns/k", 60.0, replicas=5)]))
    assert d.replicas == 13
    state = e.targets["ns/k"].policy_state
    assert isinstance(state, KpaState) and state.decider.panicking
    panic_since = state.decider.panic_since
    reload(e, target("k", "kpa", {"target": 50}))
    d = only(e.tick(61.0, obs("ns/k", 61.0, concurrency=900, replicas=13)))
    new_state = e.targets["ns/k"].policy_state
    assert new_state is state  # the same decider, still panicking
    assert state.decider.spec.target_value == 35.0
    assert state.decider.panic_since is not None and state.decider.panic_since >= panic_since
    assert d.replicas == 26  # ceil(900 / 35): the new target applies at once


def test_reload_to_another_policy_starts_its_state_afresh() -> None:
    e = engine(target("k", "kpa"))
    e.tick(0.0, obs("ns/k", 0.0, concurrency=100, replicas=2))
    windows = e.targets["ns/k"].windows
    reload(e, target("k", "hpa", {"metrics": [{"signal": "concurrency", "target": 10}]}))
    d = only(e.tick(15.0, obs("ns/k", 15.0, replicas=2)))
    rt = e.targets["ns/k"]
    assert isinstance(rt.policy_state, HpaMemory)
    assert rt.windows is windows
    assert d.policy == "hpa"
    assert d.proposal == 6  # the last concurrency (100) / 10 = 10, limited to 2 + 4


def test_reload_of_a_max_policy_with_other_members() -> None:
    e = engine(
        target(
            "m",
            "max",
            {
                "policies": [
                    {"name": "queue", "params": {"targetPerReplica": 4}},
                    {
                        "name": "keda",
                        "params": {"trigger": {"signal": "requests_waiting", "target": 5}},
                    },
                ]
            },
        )
    )
    e.tick(0.0, obs("ns/m", 0.0, requests_waiting=20, concurrency=140, replicas=1))
    reload(
        e,
        target(
            "m",
            "max",
            {
                "policies": [
                    {"name": "kpa", "params": {}},
                    {
                        "name": "keda",
                        "params": {"trigger": {"signal": "requests_waiting", "target": 10}},
                    },
                ]
            },
        ),
    )
    d = only(e.tick(15.0, obs("ns/m", 15.0, requests_waiting=20, concurrency=140, replicas=1)))
    state = e.targets["ns/m"].policy_state
    assert isinstance(state.states[0], KpaState)
    # The keda member kept its place and its memory: its last poll (t=0) carried over.
    assert state.states[1].last_poll == 0.0
    assert d.proposal == 2  # kpa: ceil(140 / 70) = 2; keda: ceil(20 / 10) = 2


def test_removed_target_is_forgotten_and_changed_kind_starts_afresh() -> None:
    t = target("q", "queue", {"targetPerReplica": 2})
    e = engine(t)
    e.tick(0.0, obs("ns/q", 0.0, requests_waiting=4))
    rt = e.targets["ns/q"]
    reload(e, target("other", "static", {"replicas": 1}))
    assert list(e.targets) == ["ns/other"]
    reload(e, t)
    assert e.targets["ns/q"] is not rt
    assert e.targets["ns/q"].windows == {}
    e.tick(1.0, obs("ns/q", 1.0, requests_waiting=4))
    rt = e.targets["ns/q"]
    reload(e, {**t, "kind": "Deployment"})
    assert e.targets["ns/q"] is not rt
    assert e.targets["ns/q"].ref == TargetRef("Deployment", "ns", "q")


def test_engine_ingest_matches_signal_window_add() -> None:
    # Engine.observe inlines SignalWindow.add; the two must keep the same samples, drops and
    # trimming (NaN and inf, out-of-order and equal timestamps, gaps past the retention).
    e = engine(target("q", "queue", {"targetPerReplica": 5}))
    rt = e.targets["ns/q"]
    reference = rt.window("reference")  # same retention as the engine's own windows
    rng = random.Random(11)
    t = 0.0
    for _ in range(4000):
        t += rng.choice([1.0, 1.0, 0.0, -2.0, 45.0, 1.0])
        v = rng.choice([1.0, 2.5, 0.0, float("nan"), float("inf"), 7.0])
        ts = rng.choice([t, t, float("nan")]) if rng.random() < 0.02 else t
        reference.add(ts, v)
        e.observe([Observation("ns/q", signals.WAITING, v, ts)])
    w = rt.windows[signals.WAITING]
    assert w.dropped == reference.dropped > 0
    assert (len(w), w.last, w.last_ts) == (len(reference), reference.last, reference.last_ts)
    assert w._ts == reference._ts and w._vals == reference._vals
    assert w._start == reference._start
    for span in (5.0, 30.0, 60.0):
        assert w.mean(t, span) == reference.mean(t, span)
        assert w.max(t, span) == reference.max(t, span)
        assert w.rate(t, span) == reference.rate(t, span)


def test_engine_fills_every_snapshot_and_decision_slot() -> None:
    # The engine builds Decision and Snapshot through their __init__s positionally: a field
    # added to either without the engine setting it must fail here, not at a policy's first
    # read. (A compiled Snapshot has no __slots__ to list, and a compiled policy's methods cannot
    # be replaced: a Python policy wrapping the real one records what the engine passes.)
    from autoscaler.core.snapshot import Snapshot
    from autoscaler.policy.api import Policy

    seen: list[Snapshot] = []

    class Spy(Policy[Any, Any]):
        name = "spy"

        def __init__(self, inner: Policy[Any, Any]) -> None:
            super().__init__(inner.params)
            self.inner = inner

        def required_signals(self) -> tuple[str, ...]:
            return self.inner.required_signals()

        def initial_state(self, snap: Snapshot) -> Any:
            return self.inner.initial_state(snap)

        def decide(self, snap: Snapshot, state: Any) -> Any:
            seen.append(snap)
            return self.inner.decide(snap, state)

    e = engine(target("q", "queue", {"targetPerReplica": 5}))
    rt = e.targets["ns/q"]
    rt.policy = Spy(rt.policy)
    e.tick(0.0, obs("ns/q", 0.0, replicas=3, replicas_ready=2, requests_waiting=12))
    e.set_hold_nonzero("ns/q", True)
    d = only(e.tick(1.0, obs("ns/q", 1.0, requests_waiting=3, cold_start_seconds=40)))
    snap = seen[-1]
    names = (
        "_windows",
        "cold_start_s",
        "current",
        "hold_nonzero",
        "max_age",
        "now",
        "ready",
        "starting",
        "target",
    )
    values = {name: getattr(snap, name) for name in names}
    assert values == {
        "_windows": e.targets["ns/q"].windows,
        "cold_start_s": 40.0,
        "current": 3,
        "hold_nonzero": True,
        "max_age": 60.0,
        "now": 1.0,
        "ready": 2,
        "starting": 1,
        "target": "ns/q",
    }
    fields = {f.name: getattr(d, f.name) for f in dataclasses.fields(Decision)}
    assert Decision(**fields) == d
    assert fields["starting"] == 1 and fields["inputs"] == {signals.WAITING: 7.5}


def test_reload_reroutes_signals_to_what_the_new_policy_reads() -> None:
    # Engine.observe routes each signal once (window, status slot or dropped); a reload to a
    # policy that reads other signals must re-route them, not keep the old routes.
    e = engine(target("q", "queue", {"targetPerReplica": 5}))
    e.tick(0.0, obs("ns/q", 0.0, requests_waiting=10, concurrency=4, replicas=2))
    rt = e.targets["ns/q"]
    assert set(rt.windows) == {signals.WAITING}
    assert e.unread_observations == 1  # concurrency
    reload(e, target("q", "hpa", {"metrics": [{"signal": "concurrency", "target": 2}]}))
    assert set(rt.windows) == set()  # the queue policy's window is dropped
    d = only(e.tick(1.0, obs("ns/q", 1.0, requests_waiting=10, concurrency=8, replicas=2)))
    assert set(rt.windows) == {signals.CONCURRENCY}
    assert rt.windows[signals.CONCURRENCY].last == 8.0
    assert e.unread_observations == 2  # now requests_waiting
    assert d.proposal == 4 and d.current == 2  # 8 in flight / 2 per replica


@pytest.mark.parametrize(
    "path",
    sorted(Path("policies").glob("*.yaml")) + sorted(Path("policies/baselines").glob("*.yaml")),
)
def test_policy_and_guard_state_survive_pickling(path: Path) -> None:
    # Compiled state classes say how to rebuild themselves (by default a compiled class would be
    # called with no arguments). An engine whose states went through pickle decides as one whose
    # states did not.
    import pickle

    doc = load_policy(path)
    a, b = Engine.from_policy(doc), Engine.from_policy(doc)
    keys = list(a.targets)

    def tick(e: Engine, t: int) -> list[dict[str, Any]]:
        load = 3.0 + (t // 7) % 4 * 5.0
        o: list[Observation] = []
        for k in keys:
            o += obs(k, float(t), replicas=2, replicas_ready=2, requests_waiting=load)
            o += obs(k, float(t), concurrency=load * 2, rps=load)
            o += obs(k, float(t), prompt_tokens_total=900.0 * t, generation_tokens_total=250.0 * t)
        return [d.to_dict() for d in e.tick(float(t), o)]

    for t in range(40):
        assert tick(a, t) == tick(b, t)
    for rt in b.targets.values():
        rt.policy_state = pickle.loads(pickle.dumps(rt.policy_state))
        rt.guard_state = pickle.loads(pickle.dumps(rt.guard_state))
        rt.last = pickle.loads(pickle.dumps(rt.last))
    for t in range(40, 120):
        assert tick(a, t) == tick(b, t), t
