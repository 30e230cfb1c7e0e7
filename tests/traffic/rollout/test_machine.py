"""The pure rollout state machine: every transition from observed state, results and ``now``."""

from __future__ import annotations

import pytest

from autoscaler.config.rollout import Rollout
from autoscaler.traffic.rollout.machine import (
    CheckResult,
    HookResult,
    Observed,
    Plan,
    RevisionView,
    decide,
    is_cold,
    prescale_replicas,
    serving_replicas,
)
from autoscaler.traffic.rollout.state import RolloutState, StateError

ANALYSIS = {
    "prometheus": {"url": "http://prom:9090"},
    "intervalSeconds": 30,
    "failedChecks": 2,
    "metrics": [
        {"name": "error_rate", "query": "e", "max": 0.01},
        {"name": "p95", "query": "l", "min": 0, "max": 2.0},
    ],
}


def spec(**kw: object) -> Rollout:
    raw: dict[str, object] = {"steps": [10, 50, 100], "intervalSeconds": 60, "analysis": ANALYSIS}
    raw.update(kw)
    return Rollout.model_validate(raw)


GOOD = CheckResult({"error_rate": 0.001, "p95": 0.4})
BAD = CheckResult({"error_rate": 0.2, "p95": 0.4})


def warm(name: str = "chat-2", n: int = 2, min_scale: str | None = "2") -> RevisionView:
    return RevisionView(name, ready=True, actual=n, desired=n, min_scale=min_scale)


STABLE = RevisionView("chat-1", ready=True, actual=10, desired=10)


def observed(state: RolloutState | None, canary: RevisionView, percent: int) -> Observed:
    return Observed(STABLE, canary, percent, state)


def run(rollout: Rollout, obs: Observed, now: float, **kw: object) -> Plan:
    plan = decide(rollout, obs, now)
    if plan.need == "analysis":
        plan = decide(rollout, obs, now, checks=kw.get("checks", GOOD))  # type: ignore[arg-type]
    elif plan.need == "webhooks":
        plan = decide(rollout, obs, now, hooks=kw.get("hooks", HookResult(True)))  # type: ignore[arg-type]
    return plan


class Sim:
    """Applies plans to a canary/traffic model, as the controller applies them to objects."""

    def __init__(self, rollout: Rollout, canary: RevisionView, percent: int = 0) -> None:
        self.rollout = rollout
        self.canary = canary
        self.percent = percent
        self.stable = STABLE
        self.state: RolloutState | None = None
        self.reasons: list[str] = []

    def tick(self, now: float, **kw: object) -> Plan:
        last = Plan()
        for _ in range(10):
            obs = Observed(self.stable, self.canary, self.percent, self.state)
            plan = run(self.rollout, obs, now, **kw)
            self.reasons += [n.reason for n in plan.notes]
            if plan.state is not None:
                self.state = plan.state
            if plan.canary_percent is not None:
                self.percent = plan.canary_percent
            if plan.min_scale is not None:
                self.canary = RevisionView(
                    self.canary.name,
                    self.canary.ready,
                    actual=self.canary.actual,
                    desired=self.canary.desired,
                    min_scale=plan.min_scale or None,
                )
            last = plan
            if not plan.again:
                break
        return last


def test_weights_from_steps_or_step_weight() -> None:
    assert spec().weights() == (10, 50, 100)
    assert spec(steps=None, stepWeight=20).weights() == (20, 40, 60, 80, 100)
    assert spec(steps=None, stepWeight=20, maxWeight=50).weights() == (20, 40)
    assert spec().checks_per_step() == 2  # 60 s hold / 30 s checks


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"steps": [10, 5]}, "steps must increase strictly"),
        ({"steps": [0, 5]}, "percentages from 1 to 100"),
        ({"steps": None}, "set exactly one of steps or stepWeight"),
        ({"stepWeight": 10}, "set exactly one of steps or stepWeight"),
        ({"maxWeight": 50}, "maxWeight goes with stepWeight"),
        ({"intervalSeconds": 10}, "must be <= intervalSeconds (10.0)"),
    ],
)
def test_invalid_schedules(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        spec(**kw)


def test_prescale_uses_the_stable_share_not_the_canary() -> None:
    # 10 stable replicas at 100%: 10% needs 1, 50% needs 5.
    assert prescale_replicas(serving_replicas(STABLE, warm(n=0), 0), 10, None) == 1
    assert prescale_replicas(serving_replicas(STABLE, warm(n=0), 0), 50, None) == 5
    # After the 50% step the stable shrank to 5 (a 50% share): the target still needs 10.
    half = RevisionView("chat-1", ready=True, actual=5, desired=5)
    assert serving_replicas(half, warm(n=5), 50) == 10
    assert prescale_replicas(10, 100, None) == 10
    assert prescale_replicas(10, 100, 4) == 4  # maxCanaryReplicas
    assert prescale_replicas(0, 5, None) == 1  # never a step on zero canary replicas


def test_cold_means_from_zero_or_replicas_starting() -> None:
    assert is_cold(RevisionView("c", ready=True, actual=0, desired=1)) == "scaling from zero"
    assert is_cold(RevisionView("c", ready=True, actual=1, desired=3)) == (
        "2 of 3 replicas still starting"
    )
    assert is_cold(RevisionView("c", ready=None, actual=1, desired=1)) == "not ready"
    assert is_cold(warm()) == ""


def test_a_new_canary_starts_at_zero_traffic_and_holds_the_target() -> None:
    plan = decide(spec(), observed(None, warm(min_scale=None), 10), 100.0)
    assert plan.canary_percent == 0
    assert plan.hold and plan.again
    assert plan.state == RolloutState(
        "chat-2", "chat-1", step=0, started_at=100.0, original_min_scale=None
    )
    assert [n.reason for n in plan.notes] == ["RolloutStarted"]


def test_no_canary_is_idle_and_releases_the_hold() -> None:
    plan = decide(spec(), Observed(STABLE, None, 0), 0.0)
    assert plan == Plan(idle="no canary")
    assert not plan.hold


def test_healthy_rollout_walks_every_step_and_promotes() -> None:
    sim = Sim(spec(), warm(n=0, min_scale=None))
    sim.tick(0.0)
    # Pre-scale: 10% of 10 stable replicas = 1; the canary is not ready yet: wait, no shift.
    assert sim.canary.min_scale == "1" and sim.percent == 0
    sim.canary = RevisionView("chat-2", True, actual=1, desired=1, min_scale="1")
    sim.tick(5.0)
    assert sim.percent == 10 and sim.state is not None and sim.state.shifted
    assert sim.state.started_at == 5.0
    sim.tick(20.0)  # no check before the analysis interval
    assert sim.state.passed == 0
    sim.tick(35.0)
    assert sim.state.passed == 1 and sim.percent == 10
    # The stable shrank to 9 replicas on its 90% share: the target needs 10 in all.
    sim.stable = RevisionView("chat-1", ready=True, actual=9, desired=9)
    sim.tick(65.0)  # second passing check: step done; pre-scale to 50% of 10 = 5 replicas
    assert sim.state.step == 1 and not sim.state.shifted
    assert sim.canary.min_scale == "5" and sim.percent == 10
    sim.canary = RevisionView("chat-2", True, actual=5, desired=5, min_scale="5")
    sim.tick(70.0)
    assert sim.percent == 50
    sim.stable = RevisionView("chat-1", ready=True, actual=5, desired=5)
    sim.tick(100.0)
    sim.tick(130.0)
    assert sim.state.step == 2
    assert sim.canary.min_scale == "10"  # 100% of 10 stable replicas (at a 50% share: 20)
    sim.canary = RevisionView("chat-2", True, actual=10, desired=10, min_scale="10")
    sim.tick(131.0)
    assert sim.percent == 100
    sim.tick(161.0)
    last = sim.tick(191.0)
    assert sim.state.phase == "Succeeded" and sim.percent == 100
    assert not last.hold
    assert sim.reasons == [
        "RolloutStarted",
        "RolloutPreScaling",
        "RolloutStepShifted",
        "RolloutStepPassed",
        "RolloutPreScaling",
        "RolloutStepShifted",
        "RolloutStepPassed",
        "RolloutPreScaling",
        "RolloutStepShifted",
        "RolloutPromoted",
    ]


def shifted_at(step: int, percent: int, **kw: object) -> Sim:
    sim = Sim(spec(), warm(), percent)
    sim.state = RolloutState(
        "chat-2", "chat-1", step=step, shifted=True, started_at=0.0, last_check_at=0.0, **kw
    )  # type: ignore[arg-type]
    return sim


def test_failed_checks_roll_back_at_the_threshold() -> None:
    sim = shifted_at(1, 50, original_min_scale="1")
    sim.tick(30.0, checks=BAD)
    assert sim.state is not None and sim.state.failed == 1 and sim.percent == 50
    assert sim.reasons == ["RolloutCheckFailed"]
    sim.tick(45.0, checks=BAD)  # not due: the failure is not counted twice
    assert sim.state.failed == 1
    sim.tick(60.0, checks=BAD)
    assert sim.state.phase == "RolledBack" and sim.state.failed == 2
    assert sim.percent == 0
    assert sim.canary.min_scale == "1"  # the pre-scale is undone
    assert sim.reasons[-1] == "RolloutRolledBack"
    assert "error_rate 0.2 outside [-inf, 0.01]" in sim.state.reason
    sim.tick(90.0, checks=GOOD)  # a rolled-back canary stays rolled back
    assert sim.state.phase == "RolledBack" and sim.percent == 0


def test_failed_checks_count_across_steps() -> None:
    sim = shifted_at(0, 10, failed=1)
    sim.tick(30.0, checks=BAD)
    assert sim.state is not None and sim.state.phase == "RolledBack"


def test_cold_canary_pauses_analysis_without_counting() -> None:
    sim = shifted_at(1, 50)
    sim.canary = RevisionView("chat-2", True, actual=2, desired=5, min_scale="5")
    for t in (30.0, 60.0, 90.0, 120.0):
        plan = sim.tick(t, checks=BAD)
        assert plan.need == "" and plan.check == "paused" and plan.hold
    assert sim.state is not None and sim.state.failed == 0 and sim.state.passed == 0
    assert sim.state.paused_since == 30.0
    assert sim.reasons == ["RolloutAnalysisPaused"]  # one Event per pause, not per check
    sim.canary = warm(n=5, min_scale="5")
    sim.tick(150.0, checks=BAD)
    assert sim.state.failed == 1 and sim.state.paused_since is None


def test_a_canary_cold_past_the_deadline_rolls_back() -> None:
    sim = shifted_at(0, 10)
    sim.canary = RevisionView("chat-2", True, actual=0, desired=1, min_scale="1")
    sim.tick(30.0)
    sim.tick(30.0 + 900.0)
    assert sim.state is not None and sim.state.phase == "RolledBack"
    assert "cold" in sim.state.reason


def test_missing_metrics_are_inconclusive() -> None:
    sim = shifted_at(0, 10)
    plan = sim.tick(30.0, checks=CheckResult({"error_rate": None, "p95": 0.1}))
    assert plan.check == "inconclusive"
    assert sim.state is not None and (sim.state.passed, sim.state.failed) == (0, 0)
    assert sim.state.last_check_at == 30.0
    plan = sim.tick(60.0, checks=CheckResult({"error_rate": float("nan"), "p95": 0.1}))
    assert plan.check == "inconclusive"


def test_min_bound_fails_too() -> None:
    sim = shifted_at(0, 10)
    plan = sim.tick(30.0, checks=CheckResult({"error_rate": 0.0, "p95": -1.0}))
    assert plan.check == "failed"


def test_traffic_that_differs_from_the_state_is_written_again() -> None:
    # A crash after the state was written and before the traffic was: resume converges.
    sim = shifted_at(1, 10)
    plan = decide(spec(), observed(sim.state, sim.canary, 10), 31.0)
    assert plan.canary_percent == 50 and plan.state is None


def test_progress_deadline_while_waiting_for_capacity() -> None:
    sim = Sim(spec(), RevisionView("chat-2", None, actual=0, desired=1, min_scale=None))
    sim.tick(0.0)
    sim.tick(899.0)
    assert sim.state is not None and sim.state.phase == "Progressing" and sim.percent == 0
    sim.tick(901.0)
    assert sim.state.phase == "RolledBack" and "not ready within 900s" in sim.state.reason


def test_failed_revision_rolls_back_at_once() -> None:
    sim = shifted_at(0, 10)
    sim.canary = RevisionView("chat-2", False, "ImagePullBackOff", actual=0, desired=0)
    sim.tick(1.0)
    assert sim.state is not None and sim.state.phase == "RolledBack"
    assert sim.state.reason == "canary revision failed: ImagePullBackOff"


def test_webhooks_gate_each_step_and_count_failures() -> None:
    hooked = spec(webhooks=[{"name": "smoke", "url": "http://t/smoke"}])
    sim = Sim(hooked, warm(n=1, min_scale="1"))
    sim.tick(0.0, hooks=HookResult(False, "webhook smoke: HTTP 500"))
    assert sim.percent == 0 and sim.state is not None and sim.state.failed == 1
    assert sim.reasons[-1] == "RolloutWebhookFailed"
    sim.tick(10.0, hooks=HookResult(True))  # retried only at the next check interval
    assert sim.percent == 0
    sim.tick(30.0, hooks=HookResult(True))
    assert sim.percent == 10 and sim.state.hooks_done


def test_webhook_failures_reach_the_threshold() -> None:
    hooked = spec(webhooks=[{"name": "smoke", "url": "http://t/smoke"}])
    sim = Sim(hooked, warm(n=1, min_scale="1"))
    sim.tick(0.0, hooks=HookResult(False, "down"))
    sim.tick(30.0, hooks=HookResult(False, "down"))
    assert sim.state is not None and sim.state.phase == "RolledBack" and sim.percent == 0


def test_an_unreadable_state_is_never_acted_on() -> None:
    obs = Observed(STABLE, warm(), 10, None, "not JSON")
    plan = decide(spec(), obs, 0.0)
    assert not plan.writes and plan.hold
    assert [n.reason for n in plan.notes] == ["RolloutStateInvalid"]


def test_state_round_trip_and_validation() -> None:
    st = RolloutState("a", "b", step=2, shifted=True, started_at=5.5, failed=1)
    assert RolloutState.from_json(st.to_json()) == st
    for bad, message in [
        ("{", "not JSON"),
        ("[]", "not a JSON object"),
        ('{"canary": "a", "stable": "b", "zzz": 1}', "unknown keys"),
        ('{"canary": "a", "stable": "b", "step": -1}', "step must be"),
        ('{"canary": "a", "stable": "b", "phase": "Done"}', "phase must be"),
        ('{"canary": "", "stable": "b"}', "canary must be"),
    ]:
        with pytest.raises(StateError, match=message):
            RolloutState.from_json(bad)
