"""The rollout controller against the fake Kubernetes API server (real CRD schemas, real
resourceVersion conflicts, RBAC limited to the controller's API_CALLS). The analysis is a
scripted stand-in of the Analyzer protocol here (the real Prometheus path is in
test_real_prometheus.py); time is a VirtualClock the test moves."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from autoscaler.actuators import ApiCaller, TokenBucket
from autoscaler.config.models import Target
from autoscaler.config.rollout import Webhook
from autoscaler.core.types import TargetRef
from autoscaler.testing.fake_kube import FakeKube, shared_crd_dir
from autoscaler.traffic.rollout import API_CALLS, STATE_ANNOTATION, RolloutState

pytestmark = pytest.mark.skipif(shared_crd_dir() is None, reason="../shared/crds is not there")

T = TypeVar("T")
NS = "llm"
KN = "serving.knative.dev"
KSERVE = "serving.kserve.io"
MIN = "autoscaling.knative.dev/min-scale"
SVC = TargetRef("Service", NS, "chat")
ISVC = TargetRef("InferenceService", NS, "iris")
GOOD = {"error_rate": 0.001}
SPIKE = {"error_rate": 0.3}
PINNED = [{"revisionName": "chat-00001", "percent": 100, "latestRevision": False, "tag": "stable"}]


# --- tests ---------------------------------------------------------------------------------


async def test_a_healthy_rollout_promotes(h: Any) -> None:
    h.seed_canary()
    await h.to_first_step()
    assert (SVC.key, True) in h.holds  # scale-to-zero guard held during the rollout
    await h.check()
    h.set_replicas("chat-00001", 3)  # the stable shrank on its 90% share (3 / 0.9: 4 in all)
    r = await h.check()  # two passing checks (60 s / 30 s): step 2, pre-scale 50% of 4 = 2
    assert r.transitions == ["RolloutStepPassed", "RolloutPreScaling"]
    assert h.revision("chat-00002")["metadata"]["annotations"][MIN] == "2"
    assert h.traffic()[1][1] == 10  # no shift before the capacity is there
    h.set_replicas("chat-00002", 2)
    r = await h.step()
    assert r.transitions == ["RolloutStepShifted"]
    assert h.traffic() == [("chat-00001", 50, "stable"), ("chat-00002", 50, "canary")]
    await h.check()
    h.set_replicas("chat-00001", 2)
    await h.check()  # 100% of 2 / 0.5 = 4
    assert h.revision("chat-00002")["metadata"]["annotations"][MIN] == "4"
    h.set_replicas("chat-00002", 4)
    await h.step()
    assert h.traffic() == [("chat-00001", 0, "stable"), ("chat-00002", 100, "canary")]
    await h.check()
    r = await h.check()
    assert r.transitions == ["RolloutPromoted"]
    assert h.traffic() == [("chat-00002", 100, "stable")]
    assert h.state().phase == "Succeeded"
    assert h.holds[-1] == (SVC.key, False)
    assert h.analysis.calls[0] == (SVC.key, "chat-00002", "chat-00001")
    assert len(h.analysis.calls) == 6
    assert h.events().count("RolloutStepShifted") == 3
    assert h.events().count("RolloutPromoted") == 1
    assert h.metric("autoscaler_rollout_canary_weight_percent", target=SVC.key) == 100
    assert h.metric("autoscaler_rollout_phase", target=SVC.key, phase="Succeeded") == 1
    assert h.metric("autoscaler_rollout_checks_total", target=SVC.key, result="passed") == 6
    # Idle afterwards: nothing more is written.
    before = h.kube.object(KN, "services", NS, "chat")
    r = await h.check()
    assert r.transitions == [] and h.kube.object(KN, "services", NS, "chat") == before


async def test_an_error_spike_rolls_back_within_the_threshold(h: Any) -> None:
    h.seed_canary()
    await h.to_first_step()
    await h.check()  # one good check
    shifted_at = h.clock.now()
    h.analysis.values = dict(SPIKE)
    r1 = await h.check()
    r2 = await h.check()
    assert r1.transitions == r2.transitions == ["RolloutCheckFailed"]
    assert h.traffic()[1][1] == 10
    r3 = await h.check()
    assert r3.transitions == ["RolloutRolledBack"]
    assert h.clock.now() - shifted_at == 3 * 30.0  # failedChecks x analysis interval
    assert h.traffic() == [("chat-00001", 100, "stable"), ("chat-00002", 0, "canary")]
    st = h.state()
    assert st.phase == "RolledBack" and st.failed == 3
    assert "error_rate 0.3 outside [-inf, 0.01]" in st.reason
    assert MIN not in h.revision("chat-00002")["metadata"]["annotations"]  # pre-scale undone
    assert h.holds[-1] == (SVC.key, False)
    assert h.metric("autoscaler_rollout_checks_total", target=SVC.key, result="failed") == 3
    # A rolled-back canary is not retried.
    h.analysis.values = dict(GOOD)
    await h.check()
    assert h.traffic()[1][1] == 0


async def test_a_cold_canary_does_not_roll_back(h: Any) -> None:
    h.seed_canary()
    await h.to_first_step()
    # The canary scales up under its new traffic: 1 of 3 replicas ready; meanwhile its error
    # rate looks terrible (requests queue at the activator and time out).
    h.set_replicas("chat-00002", 1, desired=3)
    h.analysis.values = dict(SPIKE)
    for _ in range(6):
        r = await h.check()
        assert "RolloutCheckFailed" not in r.transitions
    assert h.analysis.calls == []  # nothing is even asked while cold
    assert h.state().failed == 0 and h.traffic()[1][1] == 10
    assert h.events().count("RolloutAnalysisPaused") == 1
    assert h.metric("autoscaler_rollout_checks_total", target=SVC.key, result="paused") == 6
    # Warm again and healthy: the rollout carries on.
    h.set_replicas("chat-00002", 3)
    h.analysis.values = dict(GOOD)
    await h.check()
    r = await h.check()
    # 3 canary replicas already cover 50% of the 5 the target needs: the floor is raised to 3
    # (so they stay) and the shift follows at once, without waiting.
    assert r.transitions == ["RolloutStepPassed", "RolloutPreScaling", "RolloutStepShifted"]
    assert h.revision("chat-00002")["metadata"]["annotations"][MIN] == "3"
    assert h.traffic()[1][1] == 50


async def test_a_restart_mid_rollout_resumes_from_the_object(h: Any) -> None:
    h.seed_canary()
    await h.to_first_step()
    h.analysis.values = dict(SPIKE)
    await h.check()  # one failed check, stored on the canary revision
    assert h.state().failed == 1
    # The process dies; a new one knows nothing but the cluster.
    h.controller = h.new_controller()
    h.analysis.values = dict(GOOD)
    r = await h.check()
    assert r.transitions == []  # a passing check, same step: nothing restarted
    st = h.state()
    assert (st.step, st.failed, st.passed, st.shifted) == (0, 1, 1, True)
    assert h.events().count("RolloutStarted") == 1
    assert (SVC.key, True) in h.holds  # the new process holds the target again


async def test_a_crash_between_state_and_traffic_is_repaired(h: Any) -> None:
    h.seed_canary()
    h.set_replicas("chat-00002", 1)
    await h.step()  # started, pre-scaled, waits for Ready
    h.mark_ready("chat-00002")
    # The state write (shift to 10%) lands, the traffic write fails for good (422).
    h.kube.fail_next(1, 422, verb="patch", resource="services")
    r = await h.step()
    assert r.error == "invalid"
    assert h.state().shifted and h.traffic()[1][1] == 0
    h.controller = h.new_controller()
    r = await h.step()
    assert h.traffic() == [("chat-00001", 90, "stable"), ("chat-00002", 10, "canary")]
    assert r.error == ""


async def test_conflicts_are_retried_on_fresh_state(h: Any) -> None:
    h.seed_canary()
    inner = ApiCaller(h.clock, limiter=TokenBucket(h.clock, rate=1000.0, burst=1000))
    raced = False

    async def racing(what: str, call: Callable[[], Awaitable[T]]) -> T:
        # The Knative actuator writes the canary between our read and our write: a real 409.
        nonlocal raced
        if what.startswith("patch revisions") and not raced:
            raced = True
            h.kube.write(
                KN,
                "revisions",
                NS,
                "chat-00002",
                lambda rev: rev["metadata"]["annotations"].update({MIN: "0"}),
            )
        return await inner(what, call)

    h.controller = h.new_controller(caller=racing)
    r = await h.step()
    assert r.error == ""
    assert h.metric("autoscaler_rollout_conflicts_total", target=SVC.key) == 1
    assert h.state().original_min_scale == "0"  # decided again on what was there after the race
    assert h.revision("chat-00002")["metadata"]["annotations"][MIN] == "1"


async def test_a_service_following_the_latest_revision_is_pinned(h: Any) -> None:
    h.kube.seed(h.make_revision("chat-00001", 2))
    svc = h.make_ksvc([{"latestRevision": True, "percent": 100}], created="chat-00001")
    h.kube.seed(svc)
    r = await h.step()
    assert r.transitions == ["RolloutTrafficPinned"]
    assert h.traffic() == [("chat-00001", 100, "stable")]
    r = await h.step()
    assert r.transitions == [] and r.waiting == "no canary"


async def test_a_failing_webhook_blocks_the_step(h: Any) -> None:
    hooked = h.rollout.model_copy(
        update={"webhooks": (Webhook(name="smoke", url="http://t/smoke"),)}
    )
    h.seed_canary()
    h.set_replicas("chat-00002", 1)
    h.mark_ready("chat-00002")
    h.hooks.ok = False
    r = await h.step(rollout=hooked)
    assert "RolloutWebhookFailed" in r.transitions
    assert h.traffic()[1][1] == 0 and h.state().failed == 1
    assert h.hooks.payloads[0] == {
        "target": SVC.key,
        "kind": "Service",
        "canary": "chat-00002",
        "stable": "chat-00001",
        "step": 1,
        "weight": 10,
    }
    h.hooks.ok = True
    await h.check()
    await h.step(rollout=hooked)
    assert h.traffic()[1][1] == 10


# --- KServe ----------------------------------------------------------------------------------


def isvc(percent: int | None = 10) -> dict[str, Any]:
    predictor: dict[str, Any] = {"model": {"modelFormat": {"name": "sklearn"}}}
    if percent is not None:
        predictor["canaryTrafficPercent"] = percent
    return {
        "apiVersion": f"{KSERVE}/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "iris", "namespace": NS},
        "spec": {"predictor": predictor},
        "status": {
            "components": {
                "predictor": {
                    "latestCreatedRevision": "iris-predictor-00002",
                    "latestReadyRevision": "iris-predictor-00002",
                    "latestRolledoutRevision": "iris-predictor-00001",
                }
            }
        },
    }


def canary_percent(kube: FakeKube) -> object:
    obj = kube.object(KSERVE, "inferenceservices", NS, "iris")
    assert obj is not None
    return obj["spec"]["predictor"].get("canaryTrafficPercent", "absent")


async def test_kserve_canary_traffic_percent_walks_and_rolls_back(h: Any) -> None:
    h.kube.seed(h.make_revision("iris-predictor-00001", 2))
    h.kube.seed(h.make_revision("iris-predictor-00002", 1))
    h.kube.seed(isvc(10))  # the SRE's update, as KServe's docs show it
    r = await h.step(ISVC)
    # Taken over at 0% until the canary has capacity; 1 replica is enough for 10% of 2.
    assert r.transitions == ["RolloutStarted", "RolloutPreScaling", "RolloutStepShifted"]
    assert canary_percent(h.kube) == 10
    h.analysis.values = dict(SPIKE)
    for _ in range(3):
        h.clock.advance(30)
        r = await h.step(ISVC)
    assert r.transitions == ["RolloutRolledBack"]
    assert canary_percent(h.kube) == 0  # KServe: 100% to latestRolledoutRevision
    rolled = [e for e in h.kube.objects("", "events", NS) if e["reason"] == "RolloutRolledBack"]
    assert len(rolled) == 1
    assert rolled[0]["involvedObject"]["kind"] == "InferenceService"
    assert rolled[0]["involvedObject"]["name"] == "iris"
    assert "3 failed checks" in rolled[0]["message"]
    # kubectl get events --field-selector type=Warning shows the rollback and the failed checks.
    assert (rolled[0]["type"], rolled[0]["action"]) == ("Warning", "Rollout")
    kinds = {e["reason"]: e["type"] for e in h.kube.objects("", "events", NS)}
    assert kinds["RolloutStarted"] == "Normal" and kinds["RolloutStepShifted"] == "Normal"


async def test_kserve_promotion_removes_canary_traffic_percent(h: Any) -> None:
    h.kube.seed(h.make_revision("iris-predictor-00001", 2))
    h.kube.seed(h.make_revision("iris-predictor-00002", 2))
    h.kube.seed(isvc(None))
    quick = h.rollout.model_copy(update={"steps": (50,)})
    await h.step(ISVC, quick)
    assert canary_percent(h.kube) == 50
    for _ in range(2):
        h.clock.advance(30)
        r = await h.step(ISVC, quick)
    assert r.transitions == ["RolloutPromoted"]
    assert canary_percent(h.kube) == "absent"
    st = RolloutState.from_json(
        h.revision("iris-predictor-00002")["metadata"]["annotations"][STATE_ANNOTATION]
    )
    assert st.phase == "Succeeded"
    assert json.loads(st.to_json())["canary"] == "iris-predictor-00002"


async def test_rbac_denial_is_reported_not_raised(h: Any) -> None:
    h.seed_canary()
    h.kube.rules = {r for r in API_CALLS if r != ("patch", KN, "revisions")}
    r = await h.step()
    assert r.error == "forbidden"
    assert h.metric("autoscaler_rollout_errors_total", target=SVC.key, kind="forbidden") == 1


async def test_step_all_releases_the_hold_when_the_rollout_spec_goes(h: Any) -> None:
    h.seed_canary()
    with_rollout = Target.model_validate(
        {
            "kind": "Service",
            "namespace": NS,
            "name": "chat",
            "policy": {"name": "queue", "params": {"targetPerReplica": 4}},
            "rollout": h.rollout.model_dump(by_alias=True, exclude_none=True),
        }
    )
    without = with_rollout.model_copy(update={"rollout": None})
    results = await h.controller.step_all([(SVC, with_rollout)])
    assert [r.target for r in results] == [SVC.key]
    assert h.holds[-1] == (SVC.key, True)
    assert await h.controller.step_all([(SVC, without)]) == []  # the spec was removed
    assert h.holds[-1] == (SVC.key, False)


async def test_a_failing_target_does_not_stop_the_others(h: Any) -> None:
    h.seed_canary()
    h.kube.seed(h.make_revision("iris-predictor-00001", 2))
    h.kube.seed(h.make_revision("iris-predictor-00002", 1))
    h.kube.seed(isvc(10))

    class Broken:
        async def measure(self, *args: Any) -> Any:
            raise RuntimeError("a bug in an analyzer")

    h.analysis = Broken()
    h.controller = h.new_controller()
    spec = {"namespace": NS, "policy": {"name": "queue", "params": {"targetPerReplica": 4}}}
    rollout = h.rollout.model_dump(by_alias=True, exclude_none=True)
    svc = Target.model_validate({**spec, "kind": "Service", "name": "chat", "rollout": rollout})
    iris = Target.model_validate({**spec, "name": "iris", "rollout": rollout})
    # The ISVC's canary is ready at once: shifted, then its first check hits the broken analyzer.
    await h.controller.step_all([(SVC, svc), (ISVC, iris)])
    h.clock.advance(30)
    results = await h.controller.step_all([(SVC, svc), (ISVC, iris)])
    assert [(r.target, r.error) for r in results] == [(SVC.key, ""), (ISVC.key, "exception")]
    assert h.metric("autoscaler_rollout_errors_total", target=ISVC.key, kind="exception") == 1
    assert (ISVC.key, False) not in h.holds  # the hold stays while the rollout is in doubt
