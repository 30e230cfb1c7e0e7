"""Tests for the exact port of the Kubernetes HPA (``autoscaler/policy/compat/kubernetes.py``).

Most cases are ports of upstream ``kubernetes/kubernetes``
``pkg/controller/podautoscaler/replica_calculator_test.go`` and ``horizontal_test.go``. The
upstream test or case names are kept in the ids and comments. The rest are the worked examples
of ``hpa-keda.md`` Part A, plus edge cases of the Go arithmetic.

Upstream's fixtures give every pod two containers. Each container requests the listed request
and reports the listed usage, so both are doubled per pod. That never changes a utilization
percentage or a ratio, so the ports below use one value per pod. Upstream's "hot CPU" pods are
pods still in the CPU initialization period, and the readiness rule leaves them out. Here they
are ``ready=False``.

``generateEventsUniformDistribution(events, 120)`` places ``n`` events at ages
``120 - (120/n)*(i+1) + (120/n)/2`` seconds: [100, 60, 20] for 3 events, [105, 75, 45, 15] for
4, and [60] for one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import pytest

from autoscaler.policy.compat.kubernetes import (
    DEFAULT_DOWNSCALE_STABILIZATION_WINDOW_S,
    DEFAULT_SCALE_DOWN_RULES,
    DEFAULT_SCALE_UP_RULES,
    MAX_INT32,
    MAX_INT64,
    HpaPolicy,
    PodSample,
    ScaleEvent,
    ScalingRules,
    Tolerance,
    generate_scale_down_rules,
    generate_scale_up_rules,
    legacy_scale_up_limit,
    limit_rate,
    normalize_with_behaviors,
    normalize_without_behavior,
    replicas_change_per_period,
    replicas_for_external_average,
    replicas_for_external_metric,
    replicas_for_object_average,
    replicas_for_object_metric,
    replicas_for_pods_metric,
    replicas_for_resource_utilization,
    replicas_for_resource_value,
    scale_down_limit,
    scale_up_limit,
    stabilization_windows,
    stabilize,
    stabilize_without_behavior,
    tolerance_from_rules,
)

F, T = False, True


def make_pods(
    levels: Sequence[int],
    requests: Sequence[int] = (),
    *,
    count: int | None = None,
    ready: Sequence[bool] = (),
    phase: Sequence[str] = (),
    deleted: Sequence[bool] = (),
) -> list[PodSample]:
    """Pods the way upstream's ``prepareTestClientSet``/``buildFakePod`` build them.

    Pod ``i`` reports ``levels[i]``; past the end of ``levels`` it has no sample. Its request
    is ``requests[i]``; past the end it has none. Readiness defaults to True and the phase to
    Running. Upstream lists ``max(currentReplicas, len(podPhase))`` pods; here the count is
    the longest of ``levels``, ``requests``, ``phase`` and ``count``.
    """
    n = max(len(levels), len(requests), len(phase), count or 0)
    return [
        PodSample(
            usage_milli=levels[i] if i < len(levels) else None,
            ready=ready[i] if i < len(ready) else True,
            phase=phase[i] if i < len(phase) else "Running",
            deleted=deleted[i] if i < len(deleted) else False,
            request_milli=requests[i] if i < len(requests) else None,
        )
        for i in range(n)
    ]


def rules(
    pods: int, pods_period: int, percent: int, percent_period: int, window: int
) -> ScalingRules:
    """Upstream's ``generateScalingRules``: the policies whose value is non-zero, select Max."""
    policies: list[HpaPolicy] = []
    if pods:
        policies.append(HpaPolicy("Pods", pods, pods_period))
    if percent:
        policies.append(HpaPolicy("Percent", percent, percent_period))
    return ScalingRules("Max", policies, stabilization_window_seconds=window)


def uniform_events(changes: Sequence[int], period: int = 120) -> list[ScaleEvent]:
    """Upstream's ``generateEventsUniformDistribution``, with ages instead of timestamps."""
    segment = period / len(changes)
    return [(change, period - segment * (i + 1) + segment / 2) for i, change in enumerate(changes)]


def test_uniform_events_ages() -> None:
    assert uniform_events([1, 5, 9]) == [(1, 100.0), (5, 60.0), (9, 20.0)]
    assert uniform_events([8, 12, 9, 11]) == [(8, 105.0), (12, 75.0), (9, 45.0), (11, 15.0)]
    assert uniform_events([4]) == [(4, 60.0)]


# --------------------------------------------------------------------------------------------
# Tolerance
# --------------------------------------------------------------------------------------------


def test_tolerance_bounds_are_inclusive() -> None:
    # Tolerances.isWithin: (1 - down) <= r <= (1 + up). The old |1 - r| <= tol test put 1.1
    # outside, because 1.1 - 1.0 is 0.10000000000000009 in float64; the current code puts it
    # inside.
    tolerance = Tolerance()
    assert tolerance.is_within(1.1)
    assert tolerance.is_within(0.9)
    assert not tolerance.is_within(1.1000000000000003)
    assert not tolerance.is_within(0.8999999999999999)
    assert not tolerance.is_within(math.nan)
    assert Tolerance(scale_up=0.0, scale_down=0.0).is_within(1.0)


def test_tolerance_at_exact_boundary_keeps_current() -> None:
    # util 110 % of target 100 %: the ratio is exactly 1.1, inside the band.
    pods = make_pods([1100, 1100, 1100], [1000, 1000, 1000])
    assert replicas_for_resource_utilization(3, pods, 100, Tolerance()) == 3
    # util 111 %: ratio 1.11, outside the band -> ceil(1.11 * 3) = 4.
    pods = make_pods([1110, 1110, 1110], [1000, 1000, 1000])
    assert replicas_for_resource_utilization(3, pods, 100, Tolerance()) == 4


def test_tolerance_rejects_negative() -> None:
    with pytest.raises(ValueError):
        Tolerance(scale_up=-0.1)


def test_tolerance_from_rules() -> None:
    assert tolerance_from_rules(None, None) == Tolerance(0.1, 0.1)
    up = ScalingRules(tolerance=0.05)
    down = ScalingRules(tolerance=0.2)
    assert tolerance_from_rules(up, down) == Tolerance(scale_up=0.05, scale_down=0.2)
    assert tolerance_from_rules(up, None, default=0.3) == Tolerance(scale_up=0.05, scale_down=0.3)


# --------------------------------------------------------------------------------------------
# Resource metric, Utilization target (GetResourceReplicas)
# --------------------------------------------------------------------------------------------

REQ3 = [1000, 1000, 1000]
REQ4 = [1000] * 4
REQ5 = [1000] * 5
REQ7 = [1000] * 7
REQ_JITTER = [900, 1000, 1100]


@pytest.mark.parametrize(
    ("current", "pods", "target", "tolerance", "expected"),
    [
        # TestReplicaCalcResourceScale "scale up": util 50 % vs 30 % -> ceil(5/3 * 3) = 5.
        pytest.param(3, make_pods([300, 500, 700], REQ3), 30, Tolerance(), 5, id="scale-up"),
        # "scale up: unready pod scales less": 60 % over the ready pods (ratio 2), then the
        # unready pod counts as 0: 40 % -> ceil(4/3 * 3) = 4 instead of 6.
        pytest.param(
            3,
            make_pods([300, 500, 700], REQ3, ready=[F, T, T]),
            30,
            Tolerance(),
            4,
            id="scale-up-unready-pod-scales-less",
        ),
        # "scale up: hot-CPU pod scales less" (pod 0 is still initializing).
        pytest.param(
            3,
            make_pods([300, 500, 700], REQ3, ready=[F, T, T]),
            30,
            Tolerance(),
            4,
            id="scale-up-hot-cpu-pod-scales-less",
        ),
        # "no scale: unready pods ignored": 40 % -> ratio 4/3. With the two unready pods at 0
        # it is 13 % -> 0.43, on the other side of 1, so keep 3.
        pytest.param(
            3,
            make_pods([400, 500, 700], REQ3, ready=[T, F, F]),
            30,
            Tolerance(),
            3,
            id="no-scale-unready-pods-ignored",
        ),
        # "scale up: failed pods ignored": two Failed pods without samples; 60 % -> 2 * 2 = 4.
        pytest.param(
            2,
            make_pods(
                [500, 700],
                REQ4,
                ready=[T, T, F, F],
                phase=["Running", "Running", "Failed", "Failed"],
            ),
            30,
            Tolerance(),
            4,
            id="scale-up-failed-pods-ignored",
        ),
        # Failed pods are ignored even when they still report a sample.
        pytest.param(
            2,
            make_pods(
                [500, 700, 9000, 9000], REQ4, phase=["Running", "Running", "Failed", "Failed"]
            ),
            30,
            Tolerance(),
            4,
            id="scale-up-failed-pods-with-samples-ignored",
        ),
        # "scale up: pods being deleted are ignored".
        pytest.param(
            2,
            make_pods([500, 700], REQ4, count=4, ready=[T, T, F, F], deleted=[F, F, T, T]),
            30,
            Tolerance(),
            4,
            id="scale-up-deleted-pods-ignored",
        ),
        # "scale down": 28 % vs 50 % -> ceil(0.56 * 5) = 3.
        pytest.param(
            5, make_pods([100, 300, 500, 250, 250], REQ5), 50, Tolerance(), 3, id="scale-down"
        ),
        # "scale down: exclude unready pods": 30 % over the ready pods -> ceil(0.6 * 3) = 2.
        pytest.param(
            5,
            make_pods([100, 300, 500, 250, 250], REQ5, ready=[T, T, T, F, F]),
            50,
            Tolerance(),
            2,
            id="scale-down-exclude-unready-pods",
        ),
        # "scale down: ignore hot-CPU pods".
        pytest.param(
            5,
            make_pods([100, 300, 500, 250, 250], REQ5, ready=[T, T, T, F, F]),
            50,
            Tolerance(),
            2,
            id="scale-down-ignore-hot-cpu-pods",
        ),
        # "scale down: exclude unscheduled pods": four Pending pods; 10 % -> ceil(0.2) = 1.
        pytest.param(
            5,
            make_pods(
                [100],
                REQ5,
                ready=[T, F, F, F, F],
                phase=["Running", "Pending", "Pending", "Pending", "Pending"],
            ),
            50,
            Tolerance(),
            1,
            id="scale-down-exclude-unscheduled-pods",
        ),
        # "scale down: failed pods ignored".
        pytest.param(
            5,
            make_pods(
                [100, 300, 500, 250, 250],
                REQ7,
                ready=[T, T, T, T, T, F, F],
                phase=["Running"] * 5 + ["Failed"] * 2,
            ),
            50,
            Tolerance(),
            3,
            id="scale-down-failed-pods-ignored",
        ),
        # "scale down: pods being deleted are ignored".
        pytest.param(
            5,
            make_pods(
                [100, 300, 500, 250, 250],
                REQ7,
                count=7,
                ready=[T, T, T, T, T, F, F],
                deleted=[F, F, F, F, F, T, T],
            ),
            50,
            Tolerance(),
            3,
            id="scale-down-deleted-pods-ignored",
        ),
        # TestReplicaCalcTolerance: 3060 / 3000 -> 102 %, within 10 %.
        pytest.param(
            3, make_pods([1010, 1030, 1020], REQ_JITTER), 100, Tolerance(), 3, id="tolerance"
        ),
        # TestReplicaCalcConfigurableTolerance "Outside of a 0% tolerance": 101 % -> 4.
        pytest.param(
            3,
            make_pods([909, 1010, 1111], REQ_JITTER),
            100,
            Tolerance(scale_up=0.0, scale_down=0.0),
            4,
            id="configurable-outside-0pct",
        ),
        # "Within a 200% scale-up tolerance": 190 % stays.
        pytest.param(
            3,
            make_pods([1890, 1910, 1900], REQ_JITTER),
            100,
            Tolerance(scale_up=2.0, scale_down=0.1),
            3,
            id="configurable-within-200pct-up",
        ),
        # "Outside 8% scale-up tolerance (and superfluous scale-down tolerance)": 109 % -> 4.
        pytest.param(
            3,
            make_pods([1100, 1080, 1090], REQ_JITTER),
            100,
            Tolerance(scale_up=0.08, scale_down=2.0),
            4,
            id="configurable-outside-8pct-up",
        ),
        # "Within a 36% scale-down tolerance": 65 % >= 64 %.
        pytest.param(
            3,
            make_pods([660, 640, 650], REQ_JITTER),
            100,
            Tolerance(scale_up=0.1, scale_down=0.36),
            3,
            id="configurable-within-36pct-down",
        ),
        # "Outside a 34% scale-down tolerance": 65 % < 66 % -> ceil(0.65 * 3) = 2.
        pytest.param(
            3,
            make_pods([660, 640, 650], REQ_JITTER),
            100,
            Tolerance(scale_up=0.1, scale_down=0.34),
            2,
            id="configurable-outside-34pct-down",
        ),
        # TestReplicaCalcSuperfluousMetrics, without the two metrics of unknown pods, which do
        # not change the fast path: 23500 / 4000 -> 587 % -> ceil(5.87 * 4) = 24.
        pytest.param(
            4, make_pods([4000, 9500, 3000, 7000], REQ4), 100, Tolerance(), 24, id="superfluous"
        ),
        # TestReplicaCalcMissingMetrics: 495 / 2000 -> 24 %; the 2 missing pods count as 100 %:
        # 2495 / 4000 -> 62 % -> ceil(0.62 * 4) = 3.
        pytest.param(4, make_pods([400, 95], REQ4), 100, Tolerance(), 3, id="missing-metrics"),
        # TestReplicaCalcMissingMetricsNoChangeEq: ratio exactly 1 -> no fill -> keep 2.
        pytest.param(
            2, make_pods([1000], [1000, 1000]), 100, Tolerance(), 2, id="missing-no-change-eq"
        ),
        # ...NoChangeGt: 190 %, missing pod at 0 -> 95 %, direction flips -> keep 2.
        pytest.param(
            2, make_pods([1900], [1000, 1000]), 100, Tolerance(), 2, id="missing-no-change-gt"
        ),
        # ...NoChangeLt: 60 %, missing pod at 100 % -> 80 % -> ceil(0.8 * 2) = 2.
        pytest.param(
            2, make_pods([600], [1000, 1000]), 100, Tolerance(), 2, id="missing-no-change-lt"
        ),
        # TestReplicaCalcMissingMetricsUnreadyChange: 45 % -> 0.9 (< 1, so unready pods are not
        # rebalanced); the missing pod at 100 %: 1450 / 2000 -> 72 % -> 1.44, flips -> keep 3.
        pytest.param(
            3,
            make_pods([100, 450], REQ3, ready=[F, T, T]),
            50,
            Tolerance(),
            3,
            id="missing-unready-change",
        ),
        # ...HotCpuNoChange: the same with pod 0 initializing.
        pytest.param(
            3,
            make_pods([100, 450], REQ3, ready=[F, T, T]),
            50,
            Tolerance(),
            3,
            id="missing-hot-cpu-no-change",
        ),
        # ...UnreadyScaleUp: 200 % -> 4.0; missing and unready at 0: 2000 / 3000 -> 66 % ->
        # ceil(1.32 * 3) = 4.
        pytest.param(
            3,
            make_pods([100, 2000], REQ3, ready=[F, T, T]),
            50,
            Tolerance(),
            4,
            id="missing-unready-scale-up",
        ),
        # ...HotCpuScaleUp.
        pytest.param(
            3,
            make_pods([100, 2000], REQ3, ready=[F, T, T]),
            50,
            Tolerance(),
            4,
            id="missing-hot-cpu-scale-up",
        ),
        # ...UnreadyScaleDown: 10 % -> 0.2; the missing pod at 100 %: 1200 / 3000 -> 40 % ->
        # ceil(0.8 * 3) = 3.
        pytest.param(
            4,
            make_pods([100, 100, 100], REQ4, ready=[F, T, T, T]),
            50,
            Tolerance(),
            3,
            id="missing-unready-scale-down",
        ),
        # TestReplicaCalcMissingMetricsScaleDownTargetOver100: 200 / 3000 -> 6 % of 300 %. The
        # missing pod counts as max(100, 300) = 300 % of its 2000m request = 6000m:
        # 6200 / 5000 -> 124 % -> ceil(124/300 * 3) = 2.
        pytest.param(
            4,
            make_pods([200, 100, 100], [1000, 1000, 2000, 2000], ready=[F, T, T, T]),
            300,
            Tolerance(),
            2,
            id="missing-scale-down-target-over-100",
        ),
        # TestReplicaCalcDuringRollingUpdateWithMaxSurge: 3 pods for 2 replicas; 10 %, then
        # the missing pod at 100 % -> 40 % -> ceil(0.8 * 3) = 3 > 2 while scaling down -> 2.
        pytest.param(
            2,
            make_pods([100, 100], REQ3, phase=["Running"] * 3),
            50,
            Tolerance(),
            2,
            id="rolling-update-max-surge",
        ),
        # TestReplicaCalcComputedToleranceAlgImplementation: 10 pods at 150m, 3000m requested
        # in total (50 %). The target int32((1/(2*0.9) + .01) * 100) = 56 gives a ratio of
        # 0.892857, outside the band -> ceil(8.93) = 9.
        pytest.param(
            10,
            make_pods([150] * 10, [400, 200, 310, 290, 302, 298, 301, 299, 300, 300]),
            56,
            Tolerance(),
            9,
            id="computed-tolerance-scale",
        ),
        # ...and int32((1/(2*0.9) + .004) * 100) = 55 gives 0.909, inside the band -> 10.
        pytest.param(
            10,
            make_pods([150] * 10, [400, 200, 310, 290, 302, 298, 301, 299, 300, 300]),
            55,
            Tolerance(),
            10,
            id="computed-tolerance-no-scale",
        ),
        # Utilization truncates: 1 * 100 / 3 = 33 %, vs 33 % -> ratio 1.0.
        pytest.param(3, make_pods([1, 0, 0], [1, 1, 1]), 33, Tolerance(), 3, id="truncating"),
    ],
)
def test_resource_utilization(
    current: int, pods: list[PodSample], target: int, tolerance: Tolerance, expected: int
) -> None:
    assert replicas_for_resource_utilization(current, pods, target, tolerance) == expected


def test_computed_tolerance_targets_match_upstream_formula() -> None:
    # The targets hard-coded above, computed as the Go test does.
    requested_to_used = float(3000 // 1500)
    assert int((abs(1 / (requested_to_used * (1 - 0.1))) + 0.01) * 100) == 56
    assert int((abs(1 / (requested_to_used * (1 - 0.1))) + 0.004) * 100) == 55


def test_resource_readiness_only_applies_to_cpu() -> None:
    # The same pods as "scale-up-unready-pod-scales-less": for memory the readiness rule is not
    # consulted, so all three pods are ready -> 50 % vs 30 % -> 5.
    pods = make_pods([300, 500, 700], REQ3, ready=[F, T, T])
    assert replicas_for_resource_utilization(3, pods, 30, Tolerance(), resource="memory") == 5
    assert replicas_for_resource_utilization(3, pods, 30, Tolerance(), resource="cpu") == 4


def test_resource_pending_pod_with_sample_is_unready() -> None:
    # A Pending pod is unready even for memory. On a scale-up it counts as 0: 1200 / 3000 ->
    # 40 % vs 30 % -> ceil(4/3 * 3) = 4.
    pods = make_pods([9000, 500, 700], REQ3, phase=["Pending", "Running", "Running"])
    assert replicas_for_resource_utilization(3, pods, 30, Tolerance(), resource="memory") == 4


def test_group_pods_rule_order() -> None:
    # groupPods: "no sample" is checked before the CPU readiness rule, so an unready pod
    # without a sample is *missing*. On a scale-down it counts as 100 % of its request:
    # 20 % -> 0.4, then 1200 / 2000 -> 60 % -> 1.2, the other side of 1 -> keep 2. (As an
    # unready pod it would be dropped: ceil(0.4 * 1) = 1.)
    pods = make_pods([200], [1000, 1000], ready=[T, F])
    assert replicas_for_resource_utilization(2, pods, 50) == 2
    # A deletion timestamp wins over Pending (TestGroupPods "ignore pods with deletion
    # timestamps"): the pod is ignored, so 115 % -> ceil(1.15 * 1) = 2. If it were merely
    # Pending (unready) it would count as 0: 57 % -> 0.57, the other side of 1 -> keep 1.
    pending = ["Running", "Pending"]
    pods = make_pods([1150], [1000, 1000], phase=pending, deleted=[F, T])
    assert replicas_for_resource_utilization(1, pods, 100) == 2
    pods = make_pods([1150], [1000, 1000], phase=pending)
    assert replicas_for_resource_utilization(1, pods, 100) == 1
    # "Succeeded" (or any other phase) is not special: such a pod counts as ready.
    pods = make_pods([1150, 1150], [1000, 1000], phase=["Running", "Succeeded"])
    assert replicas_for_resource_utilization(1, pods, 100) == 3


def test_resource_errors() -> None:
    # TestReplicaCalcEmptyMetrics.
    with pytest.raises(ValueError, match="no metrics"):
        replicas_for_resource_utilization(4, make_pods([], REQ3, count=3), 100)
    # TestReplicaCalcEmptyCPURequest.
    with pytest.raises(ValueError, match="missing request for cpu"):
        replicas_for_resource_utilization(1, make_pods([200]), 100)
    # A request is needed for every listed pod, even an ignored one (calculateRequests).
    with pytest.raises(ValueError, match="missing request"):
        replicas_for_resource_utilization(
            1, make_pods([200, 200], [1000], phase=["Running", "Failed"]), 100
        )
    # No pods at all.
    with pytest.raises(ValueError, match="no pods"):
        replicas_for_resource_utilization(1, [], 100)
    # Only unready pods reported a sample.
    with pytest.raises(ValueError, match="did not receive metrics"):
        replicas_for_resource_utilization(2, make_pods([200, 200], [1000, 1000], ready=[F, F]), 50)
    # All requests are zero (GetResourceUtilizationRatio).
    with pytest.raises(ValueError, match="no metrics returned matched known pods"):
        replicas_for_resource_utilization(1, make_pods([200], [0]), 50)
    with pytest.raises(ValueError):
        replicas_for_resource_utilization(1, make_pods([200], [1000]), 0)
    with pytest.raises(ValueError):
        replicas_for_resource_utilization(-1, make_pods([200], [1000]), 50)


# --------------------------------------------------------------------------------------------
# Pods metric and raw resource values (calcPlainMetricReplicas)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "pods", "target", "tolerance", "expected"),
    [
        # TestReplicaCalcScaleUpCM: average 20000 vs 15000 -> ceil(4/3 * 3) = 4.
        pytest.param(3, make_pods([20000, 10000, 30000]), 15000, Tolerance(), 4, id="scale-up"),
        # TestReplicaCalcScaleUpCMUnreadyHotCpuNoLessScale: readiness is not consulted for
        # Pods metrics -> average 30000 -> 6.
        pytest.param(
            3,
            make_pods([50000, 10000, 30000], ready=[T, T, F]),
            15000,
            Tolerance(),
            6,
            id="unready-hot-cpu-no-less-scale",
        ),
        # ...ScaleWouldScaleDown: 95000 / 3 = 31666 (truncated) -> ceil(2.111 * 3) = 7.
        pytest.param(
            3,
            make_pods([50000, 15000, 30000], ready=[F, T, F]),
            15000,
            Tolerance(),
            7,
            id="unready-hot-cpu-scale-would-scale-down",
        ),
        # TestReplicaCalcScaleDownCM: 12000 vs 20000 -> 0.6 * 5 = 3.
        pytest.param(5, make_pods([12000] * 5), 20000, Tolerance(), 3, id="scale-down"),
        # TestReplicaCalcToleranceCM: 20666 -> 1.033, within.
        pytest.param(3, make_pods([20000, 21000, 21000]), 20000, Tolerance(), 3, id="tolerance"),
        # TestReplicaCalcConfigurableToleranceCM: scale-up tolerance 1 % -> ceil(3.0999) = 4.
        pytest.param(
            3,
            make_pods([20000, 21000, 21000]),
            20000,
            Tolerance(scale_up=0.01, scale_down=0.1),
            4,
            id="configurable-tolerance",
        ),
        # TestPlainMetricReplicaCalcMissingMetricsNoChangeEq: the average is exactly the
        # target, so the two missing pods are not filled in -> keep 5.
        pytest.param(
            5,
            make_pods([20000, 19000, 21000], count=5),
            20000,
            Tolerance(),
            5,
            id="missing-no-change-eq",
        ),
        # TestReplicaCalcDuringRollingUpdateWithMaxSurgeCM: 10000 / 17000; the missing pod at
        # the target -> 12333 -> ceil(0.7255 * 3) = 3 > 2 while scaling down -> 2.
        pytest.param(
            2,
            make_pods([10000, 10000], phase=["Running"] * 3),
            17000,
            Tolerance(),
            2,
            id="rolling-update-max-surge",
        ),
        # Missing pods on a scale-up count as 0: (30000 + 0) / 2 = 15000 vs 10000 -> 1.5 ->
        # ceil(1.5 * 2) = 3.
        pytest.param(
            2, make_pods([30000], count=2), 10000, Tolerance(), 3, id="missing-scale-up-zero"
        ),
        # A Pending pod is unready for Pods metrics: on a scale-up it counts as 0:
        # 30000 / 2 = 15000 vs 10000 -> ceil(1.5 * 2) = 3 (it would be 3 * 3 = 9 with the
        # Pending pod's own sample).
        pytest.param(
            2,
            make_pods([30000, 90000], phase=["Running", "Pending"]),
            10000,
            Tolerance(),
            3,
            id="pending-counts-zero-on-scale-up",
        ),
        # The average truncates toward zero like Go: (1 + 1 + 2) / 3 = 1 -> ratio 1.0.
        pytest.param(3, make_pods([1, 1, 2]), 1, Tolerance(), 3, id="average-truncates"),
        # Negative custom metrics: Go division truncates toward zero: -7 / 2 = -3.
        # Ratio -3 / 1 -> ceil(-3 * 2) = -6, as upstream returns it.
        pytest.param(2, make_pods([-3, -4]), 1, Tolerance(), -6, id="negative-truncates"),
    ],
)
def test_pods_metric(
    current: int, pods: list[PodSample], target: int, tolerance: Tolerance, expected: int
) -> None:
    assert replicas_for_pods_metric(current, pods, target, tolerance) == expected


def test_pods_metric_errors() -> None:
    with pytest.raises(ValueError):
        replicas_for_pods_metric(2, make_pods([], count=2), 100)
    with pytest.raises(ValueError):
        replicas_for_pods_metric(2, [], 100)
    with pytest.raises(ValueError):
        replicas_for_pods_metric(2, make_pods([1, 1]), 0)


def test_resource_value_uses_cpu_readiness() -> None:
    # GetRawResourceReplicas goes through calcPlainMetricReplicas *with* the resource name, so
    # for CPU the readiness rule applies: average 600 over the two ready pods vs 300 -> 2.0;
    # the unready pod counts as 0 -> 400 -> ceil(4/3 * 3) = 4.
    pods = make_pods([300, 500, 700], ready=[F, T, T])
    assert replicas_for_resource_value(3, pods, 300) == 4
    # For memory all pods count: 500 vs 300 -> 5.
    assert replicas_for_resource_value(3, pods, 300, resource="memory") == 5
    # And a Pods metric ignores readiness too.
    assert replicas_for_pods_metric(3, pods, 300) == 5


# --------------------------------------------------------------------------------------------
# Object and External metrics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "value", "target", "ready", "tolerance", "expected"),
    [
        # TestReplicaCalcScaleUpCMObject: 20000 / 15000 * 3 ready = 4.
        pytest.param(3, 20000, 15000, 3, Tolerance(), 4, id="scale-up"),
        # TestReplicaCalcScaleUpCMObjectIgnoresUnreadyPods: one ready pod -> 5 * 1 = 5.
        pytest.param(3, 50000, 10000, 1, Tolerance(), 5, id="ignores-unready-pods"),
        # TestReplicaCalcScaleDownCMObject: 0.6 * 5 = 3.
        pytest.param(5, 12000, 20000, 5, Tolerance(), 3, id="scale-down"),
        # TestReplicaCalcToleranceCMObject: 1.0333, within.
        pytest.param(3, 20666, 20000, 3, Tolerance(), 3, id="tolerance"),
        # TestReplicaCalcConfigurableToleranceCMObject: scale-up tolerance 1 % -> 4.
        pytest.param(3, 20666, 20000, 3, Tolerance(0.01, 0.1), 4, id="configurable-tolerance"),
        # TestReplicaCalcScaleUpOverflow: MaxInt64 / 1 * 3 saturates at MaxInt32.
        pytest.param(3, MAX_INT64, 1, 3, Tolerance(), MAX_INT32, id="overflow-saturates"),
        # HPAScaleToZero: from 0 replicas, ceil(ratio) with no tolerance and no ready pods.
        pytest.param(0, 1500, 1000, 0, Tolerance(), 2, id="from-zero"),
        pytest.param(0, 1050, 1000, 0, Tolerance(), 2, id="from-zero-ignores-tolerance"),
        pytest.param(0, 0, 1000, 0, Tolerance(), 0, id="stays-zero"),
        # Scaled by the ready pods, not the current count: 2.0 * 2 ready = 4 (not 8).
        pytest.param(4, 2000, 1000, 2, Tolerance(), 4, id="uses-ready-count"),
    ],
)
def test_object_metric(
    current: int, value: int, target: int, ready: int, tolerance: Tolerance, expected: int
) -> None:
    assert replicas_for_object_metric(current, value, target, ready, tolerance) == expected


@pytest.mark.parametrize(
    ("current", "value", "target", "tolerance", "expected"),
    [
        # TestReplicaCalcScaleUpCMPerPodObject: 20000 / (5000 * 3) = 1.33 -> ceil(4.0) = 4.
        pytest.param(3, 20000, 5000, Tolerance(), 4, id="scale-up"),
        # TestReplicaCalcScaleDownPerPodCMObject: 6000 / 2000 = 3.
        pytest.param(5, 6000, 2000, Tolerance(), 3, id="scale-down"),
        # TestReplicaCalcTolerancePerPodCMObject: 20166 / 20000, within.
        pytest.param(4, 20166, 5000, Tolerance(), 4, id="tolerance"),
        # TestReplicaCalcConfigurableTolerancePerPodCMObject: 20208 / 20000 = 1.0104 > 1.01 ->
        # ceil(4.0416) = 5.
        pytest.param(4, 20208, 5000, Tolerance(0.01, 0.1), 5, id="configurable-tolerance"),
        # With 0 status replicas the ratio is +Inf (never within) -> ceil(total / target).
        pytest.param(0, 2500, 1000, Tolerance(), 3, id="zero-status-replicas"),
        # ... and 0 / 0 is NaN (never within) -> ceil(0) = 0.
        pytest.param(0, 0, 1000, Tolerance(), 0, id="zero-over-zero"),
    ],
)
def test_object_average(
    current: int, value: int, target: int, tolerance: Tolerance, expected: int
) -> None:
    assert replicas_for_object_average(current, value, target, tolerance) == expected


@pytest.mark.parametrize(
    ("current", "values", "target", "ready", "tolerance", "expected"),
    [
        # TestReplicaCalcScaleUpCMExternalIgnoresUnreadyPods: 8600 / 4400 * 1 ready -> 2.
        pytest.param(3, [8600], 4400, 1, Tolerance(), 2, id="ignores-unready-pods"),
        # TestReplicaCalcScaleDownCMExternal: 8600 / 14334 * 5 = 2.99986 -> 3.
        pytest.param(5, [8600], 14334, 5, Tolerance(), 3, id="scale-down"),
        # TestReplicaCalcToleranceCMExternal: 8600 / 8888 = 0.9676, within.
        pytest.param(3, [8600], 8888, 3, Tolerance(), 3, id="tolerance"),
        # TestReplicaCalcConfigurableToleranceCMExternal: 8900 / 8800 = 1.0114 > 1.01 -> 4.
        pytest.param(3, [8900], 8800, 3, Tolerance(0.01, 0.1), 4, id="configurable-tolerance"),
        # TestReplicaCalcExternalMetricUsageOverflow: the sum saturates at MaxInt64 -> ratio
        # 1.0 against a MaxInt64 target.
        pytest.param(
            3, [MAX_INT64 // 2 + 1, MAX_INT64 // 2 + 1], MAX_INT64, 3, Tolerance(), 3, id="sum-cap"
        ),
        # Several series are summed: (3000 + 5000) / 2000 * 2 = 8.
        pytest.param(2, [3000, 5000], 2000, 2, Tolerance(), 8, id="sum-of-series"),
        # From zero: ceil(8600 / 4400) = 2.
        pytest.param(0, [8600], 4400, 0, Tolerance(), 2, id="from-zero"),
    ],
)
def test_external_metric(
    current: int,
    values: list[int],
    target: int,
    ready: int,
    tolerance: Tolerance,
    expected: int,
) -> None:
    assert replicas_for_external_metric(current, values, target, ready, tolerance) == expected


@pytest.mark.parametrize(
    ("current", "values", "target", "tolerance", "expected"),
    [
        # TestReplicaCalcScaleUpPerPodCMExternal: 8600 / (2150 * 3) = 1.33 -> 4.
        pytest.param(3, [8600], 2150, Tolerance(), 4, id="scale-up"),
        # TestReplicaCalcScaleDownPerPodCMExternal: ceil(8600 / 2867) = ceil(2.9997) = 3.
        pytest.param(5, [8600], 2867, Tolerance(), 3, id="scale-down"),
        # TestReplicaCalcTolerancePerPodCMExternal: 8600 / 8700, within.
        pytest.param(3, [8600], 2900, Tolerance(), 3, id="tolerance"),
        # TestReplicaCalcConfigurableTolerancePerPodCMExternal: 8600 / 8400 = 1.024 -> 4.
        pytest.param(3, [8600], 2800, Tolerance(0.01, 0.1), 4, id="configurable-tolerance"),
        # TestExternalPerPodMetricReplicaOverflow: MaxInt64 / 1 saturates at MaxInt32.
        pytest.param(1, [MAX_INT64], 1, Tolerance(), MAX_INT32, id="replica-overflow"),
        # TestExternalPerPodMetricUsageOverflow: MaxInt64 / MaxInt64 = 1.0 -> keep 1.
        pytest.param(1, [MAX_INT64], MAX_INT64, Tolerance(), 1, id="usage-overflow"),
        # An int64 overflow of the running sum saturates to MaxInt64 instead of wrapping.
        pytest.param(1, [MAX_INT64, 1], MAX_INT64, Tolerance(), 1, id="sum-wraps-saturates"),
        # Several series are summed: ceil((4000 + 3500) / 1000) = 8.
        pytest.param(2, [4000, 3500], 1000, Tolerance(), 8, id="sum-of-series"),
        # Upstream quirk: a negative running sum is read as an overflow -> MaxInt64 ->
        # MaxInt32 replicas.
        pytest.param(2, [-1000], 1000, Tolerance(), MAX_INT32, id="negative-sum-quirk"),
    ],
)
def test_external_average(
    current: int, values: list[int], target: int, tolerance: Tolerance, expected: int
) -> None:
    assert replicas_for_external_average(current, values, target, tolerance) == expected


def test_object_and_external_errors() -> None:
    with pytest.raises(ValueError, match="no metrics"):
        replicas_for_external_metric(1, [], 1000, 1)
    with pytest.raises(ValueError, match="no metrics"):
        replicas_for_external_average(1, [], 1000)
    with pytest.raises(ValueError):
        replicas_for_external_average(1, [1000], 0)
    with pytest.raises(ValueError):
        replicas_for_object_metric(1, 1000, 1000, -1)
    with pytest.raises(ValueError):
        replicas_for_object_average(1, 1000, -5)


# hpa-keda.md A.2 "Tolerance pitfall": a controller that serves the desired replica count N as
# an AverageValue metric with target 1 never moves from 20 to 21, because 21/20 = 1.05 is
# within the band. Only a per-HPA tolerance helps. Scaling value and target by the same
# constant does not.
def test_worked_example_tolerance_pitfall() -> None:
    assert replicas_for_external_average(20, [21_000], 1_000) == 20
    assert replicas_for_external_average(20, [22_000], 1_000) == 20  # 1.1: still inside
    assert replicas_for_external_average(20, [23_000], 1_000) == 23
    assert replicas_for_external_average(20, [21_000_000], 1_000_000) == 20
    assert replicas_for_external_average(20, [21_000], 1_000, Tolerance(scale_up=0.0)) == 21
    # Going down the band is [0.9, 1]: 18/20 = 0.9 holds, 17/20 moves.
    assert replicas_for_external_average(20, [18_000], 1_000) == 20
    assert replicas_for_external_average(20, [17_000], 1_000) == 17


# hpa-keda.md A.2 / B.2: Object or External AverageValue gives ceil(total / target) once outside
# the band, whatever the readiness. With Value it scales the ready pod count instead.
def test_worked_example_average_vs_value() -> None:
    assert replicas_for_external_average(3, [95_000], 10_000) == 10
    assert replicas_for_object_average(3, [95_000][0], 10_000) == 10
    assert replicas_for_external_metric(3, [95_000], 10_000, ready_pod_count=3) == 29
    assert replicas_for_external_metric(3, [95_000], 10_000, ready_pod_count=1) == 10


# hpa-keda.md B.3: KEDA's fallback serves target * F. Under an AverageValue target the HPA then
# lands on exactly F.
@pytest.mark.parametrize(("current", "fallback"), [(3, 7), (10, 2), (1, 1), (5, 50)])
def test_worked_example_keda_fallback_lands_on_f(current: int, fallback: int) -> None:
    target = 5_000
    result = replicas_for_external_average(current, [target * fallback], target)
    expected = current if Tolerance().is_within(fallback / current) else fallback
    assert result == expected
    assert replicas_for_external_average(current, [target * fallback], target, Tolerance(0, 0)) == (
        fallback
    )


# --------------------------------------------------------------------------------------------
# Stabilization (stabilizeRecommendationWithBehaviors)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recommendations", "current", "desired", "up_window", "down_window", "expected"),
    [
        # TestNormalizeDesiredReplicasWithBehavior cases; unset windows are 0 there.
        pytest.param([], 100, 5, 0, 0, 5, id="empty-recommendations-scale-down"),
        pytest.param([(4, 120), (5, 60)], 100, 3, 0, 180, 5, id="simple-scale-down"),
        pytest.param([(4, 120), (5, 60)], 1, 7, 300, 0, 4, id="simple-scale-up"),
        pytest.param([(1, 120), (2, 60)], 100, 3, 300, 0, 3, id="no-scale-down-stabilization"),
        pytest.param([(4, 120), (5, 60)], 1, 3, 0, 300, 3, id="no-scale-up-stabilization"),
        pytest.param([(10, 600), (9, 540)], 100, 3, 0, 0, 3, id="no-down-reuse"),
        pytest.param([(10, 600), (9, 540)], 1, 100, 0, 0, 100, id="no-up-reuse"),
        pytest.param(
            [(10, 600), (4, 60), (5, 120), (9, 540)], 100, 3, 0, 180, 5, id="down-obsolete"
        ),
        pytest.param(
            [(10, 6000), (6, 60), (5, 120), (9, 180)], 1, 100, 300, 0, 5, id="up-obsolete"
        ),
        # "scale up and down stabilization, do not scale up when prenormalized rec goes down".
        pytest.param([(2, 6000), (3, 180)], 2, 1, 300, 300, 2, id="no-up-when-rec-goes-down"),
        # "... do not scale down when prenormalized rec goes up".
        pytest.param([(2, 6000), (1, 180)], 2, 3, 300, 300, 2, id="no-down-when-rec-goes-up"),
        # An entry counts only while age < window (timestamp.After(now - window)).
        pytest.param([(9, 300)], 10, 3, 0, 300, 3, id="age-equal-to-window-excluded"),
        pytest.param([(9, 299.999)], 10, 3, 0, 300, 9, id="age-below-window-included"),
        # up = min(9, 6) = 6 raises current 4 to 6; down = max(3, 6) = 6 lowers current 8 to 6.
        pytest.param([(6, 10)], 4, 9, 60, 60, 6, id="up-bounded-by-window-min"),
        pytest.param([(6, 10)], 8, 3, 60, 60, 6, id="down-bounded-by-window-max"),
    ],
)
def test_stabilize(
    recommendations: list[tuple[int, float]],
    current: int,
    desired: int,
    up_window: int,
    down_window: int,
    expected: int,
) -> None:
    assert stabilize(current, desired, recommendations, up_window, down_window) == expected


@pytest.mark.parametrize(
    ("recommendations", "desired", "expected"),
    [
        # TestNormalizeDesiredReplicas (legacy stabilizeRecommendation, 5 min window).
        pytest.param([], 5, 5, id="empty-log"),
        pytest.param([(4, 120), (5, 60)], 3, 5, id="stabilize"),
        pytest.param([(1, 120), (2, 60)], 3, 3, id="no-stabilize"),
        pytest.param([(10, 600), (9, 540)], 3, 3, id="no-stabilize-old"),
        pytest.param([(10, 600), (4, 60), (5, 120), (9, 540)], 3, 5, id="stabilize-old"),
        # The legacy path keeps samples with age <= window (!Before(cutoff)).
        pytest.param([(9, 300)], 3, 9, id="age-equal-to-window-included"),
        pytest.param([(9, 300.001)], 3, 3, id="age-above-window-excluded"),
    ],
)
def test_stabilize_without_behavior(
    recommendations: list[tuple[int, float]], desired: int, expected: int
) -> None:
    assert stabilize_without_behavior(desired, recommendations) == expected


def test_stabilization_windows_defaults() -> None:
    assert stabilization_windows(None, None) == (0, DEFAULT_DOWNSCALE_STABILIZATION_WINDOW_S)
    assert stabilization_windows(None, None, downscale_stabilization_window_s=60) == (0, 60)
    up = rules(4, 15, 0, 0, 30)
    down = ScalingRules(policies=[HpaPolicy("Pods", 1, 60)])  # window unset -> flag
    assert stabilization_windows(up, down) == (30, 300)
    assert stabilization_windows(up, rules(1, 60, 0, 0, 0)) == (30, 0)


# --------------------------------------------------------------------------------------------
# Rate limits (convertDesiredReplicasWithBehaviorRate and friends)
# --------------------------------------------------------------------------------------------


def rate_case(
    name: str,
    current: int,
    desired: int,
    expected: int,
    reason: str,
    *,
    min_r: int = 1,
    max_r: int = 1000,
    up: ScalingRules | None = None,
    down: ScalingRules | None = None,
    up_events: Sequence[ScaleEvent] = (),
    down_events: Sequence[ScaleEvent] = (),
) -> object:
    """One ``TestScalingWithRules`` case as a ``pytest.param``."""
    args = (current, desired, min_r, max_r, up, down, up_events, down_events, expected, reason)
    return pytest.param(*args, id=name)


E3 = uniform_events([1, 5, 9])  # ages 100, 60, 20
E4 = uniform_events([8, 12, 9, 11])  # ages 105, 75, 45, 15


@pytest.mark.parametrize(
    (
        "current",
        "desired",
        "min_r",
        "max_r",
        "up",
        "down",
        "up_events",
        "down_events",
        "expected",
        "reason",
    ),
    [
        # TestScalingWithRules, all cases, in upstream order.
        rate_case("within-range", 5, 7, 7, "DesiredWithinRange", min_r=3, max_r=8),
        rate_case("below-min", 3, 1, 2, "TooFewReplicas", min_r=2, max_r=8),
        rate_case("within-range-min-0", 1, 0, 0, "DesiredWithinRange", min_r=0, max_r=10),
        # The default up limit is max(20 + 4, 2 * 20) = 40 > max 10.
        rate_case("max-below-up-limit", 20, 1000, 10, "TooManyReplicas", max_r=10),
        rate_case("more-than-max", 100, 1000, 150, "TooManyReplicas", min_r=100, max_r=150),
        # ceil(3 * 1.01) = 4.
        rate_case(
            "user-up-policy-limit", 3, 1000, 4, "ScaleUpLimit", max_r=2000, up=rules(0, 0, 1, 60, 0)
        ),
        # Marked testThis (skipped) upstream; the expected values still hold: 1000 - 20.
        rate_case(
            "user-down-policy-limit",
            1000,
            3,
            980,
            "ScaleDownLimit",
            min_r=3,
            max_r=2000,
            down=rules(20, 60, 0, 0, 0),
        ),
        # ScaleUp without PeriodSeconds usage. Defaults: max(10 + 4, 10 * 2) = 20.
        rate_case("up-default-behavior", 10, 50, 20, "ScaleUpLimit"),
        rate_case(
            "up-pods-larger-than-percent",
            10,
            500,
            110,
            "ScaleUpLimit",
            up=rules(100, 60, 100, 60, 0),
        ),
        rate_case(
            "up-percent-larger-than-pods", 10, 500, 20, "ScaleUpLimit", up=rules(2, 60, 100, 60, 0)
        ),
        rate_case(
            "up-large-pod-policy", 10, 50, 50, "DesiredWithinRange", up=rules(100, 60, 0, 0, 0)
        ),
        rate_case(
            "up-large-percent-policy",
            10,
            50,
            50,
            "DesiredWithinRange",
            up=rules(10000, 60, 0, 0, 0),
        ),
        rate_case("up-pod-policy-limit", 10, 50, 40, "ScaleUpLimit", up=rules(30, 60, 0, 0, 0)),
        rate_case(
            "up-percent-policy-limit", 10, 50, 30, "ScaleUpLimit", up=rules(0, 0, 200, 60, 0)
        ),
        # min(100 - 20, int(100 * 0.99)) = 80.
        rate_case(
            "down-percent-larger-than-pods",
            100,
            2,
            80,
            "ScaleDownLimit",
            down=rules(20, 60, 1, 60, 300),
        ),
        rate_case(
            "down-pods-larger-than-percent",
            100,
            2,
            98,
            "ScaleDownLimit",
            down=rules(2, 60, 1, 60, 300),
        ),
        rate_case(
            "down-min-nil-large-pod-policy",
            10,
            0,
            1,
            "TooFewReplicas",
            down=rules(100, 60, 0, 0, 300),
        ),
        rate_case(
            "down-min-large-pod-policy", 10, 0, 1, "TooFewReplicas", down=rules(100, 60, 0, 0, 300)
        ),
        rate_case(
            "down-min-large-percent-policy",
            10,
            2,
            5,
            "TooFewReplicas",
            min_r=5,
            down=rules(0, 0, 100, 60, 300),
        ),
        rate_case(
            "down-pod-policy-limit", 10, 2, 5, "ScaleDownLimit", down=rules(5, 60, 0, 0, 300)
        ),
        rate_case(
            "down-percent-policy-limit",
            10,
            5,
            5,
            "DesiredWithinRange",
            down=rules(0, 0, 50, 60, 300),
        ),
        # Only the event at age 20 is inside the 60 s period: 91 + 300 > max 200.
        rate_case(
            "up-max-large-pod-policy-events",
            100,
            500,
            200,
            "TooManyReplicas",
            max_r=200,
            up=rules(300, 60, 0, 0, 0),
            up_events=E3,
        ),
        rate_case(
            "up-max-large-percent-policy-events",
            100,
            500,
            200,
            "TooManyReplicas",
            max_r=200,
            up=rules(0, 0, 10000, 60, 0),
            up_events=E3,
        ),
        # 120 s ago there were 100 - 15 = 85 replicas; 85 + 5 < 100 -> no scale-up at all.
        rate_case(
            "up-current-limit-recent-events",
            100,
            500,
            100,
            "ScaleUpLimit",
            up=rules(5, 120, 0, 0, 0),
            up_events=E3,
        ),
        # 100 - 15 + 150.
        rate_case(
            "up-pod-policy-previous-events",
            100,
            500,
            235,
            "ScaleUpLimit",
            up=rules(150, 120, 0, 0, 0),
            up_events=E3,
        ),
        # (100 - 15) * 300 %.
        rate_case(
            "up-percent-policy-previous-events",
            100,
            500,
            255,
            "ScaleUpLimit",
            up=rules(0, 0, 200, 120, 0),
            up_events=E3,
        ),
        # Period start 6 - 4 + 2 = 4 -> 4 * 400 % = 16.
        rate_case(
            "up-percent-up-and-down-events",
            6,
            24,
            16,
            "ScaleUpLimit",
            up=rules(0, 0, 300, 300, 0),
            up_events=uniform_events([4]),
            down_events=uniform_events([2]),
        ),
        # ScaleDown with PeriodSeconds usage. The default 15 s period sees none of the events.
        rate_case(
            "down-default-policy-previous-events", 10, 5, 5, "DesiredWithinRange", down_events=E3
        ),
        rate_case(
            "down-min-nil-large-pod-policy-events",
            100,
            0,
            1,
            "TooFewReplicas",
            down=rules(115, 120, 0, 0, 300),
            down_events=E3,
        ),
        rate_case(
            "down-min-large-pod-policy-events",
            100,
            0,
            5,
            "TooFewReplicas",
            min_r=5,
            down=rules(130, 120, 0, 0, 300),
            down_events=E3,
        ),
        rate_case(
            "down-min-large-percent-policy-events",
            100,
            2,
            5,
            "TooFewReplicas",
            min_r=5,
            down=rules(0, 0, 100, 120, 300),
            down_events=E3,
        ),
        # 100 + 15 - 5 = 110 > 100 -> capped at current.
        rate_case(
            "down-pod-policy-previous-events",
            100,
            2,
            100,
            "ScaleDownLimit",
            down=rules(5, 120, 0, 0, 300),
            down_events=E3,
        ),
        # (100 + 12) - 50 % = 56.
        rate_case(
            "down-percent-policy-previous-events",
            100,
            0,
            56,
            "ScaleDownLimit",
            down=rules(0, 0, 50, 120, 300),
            down_events=uniform_events([2, 4, 6]),
        ),
        # Period start 10 - 2 + 4 = 12 -> 50 % = 6.
        rate_case(
            "down-percent-up-and-down-events",
            10,
            1,
            6,
            "ScaleDownLimit",
            down=rules(0, 0, 50, 180, 0),
            up_events=uniform_events([2]),
            down_events=uniform_events([4]),
        ),
        # (100 + 30) - 10 % = 117 > 100 -> keep 100.
        rate_case(
            "down-previous-events-prevent-scale-down",
            100,
            0,
            100,
            "ScaleDownLimit",
            down=rules(0, 0, 10, 120, 300),
            down_events=uniform_events([10, 10, 10]),
        ),
        # (10 + 30) - 1000 % = -360 -> below min 1; desired 5 is fine.
        rate_case(
            "down-previous-events-still-allow",
            10,
            5,
            5,
            "DesiredWithinRange",
            down=rules(0, 0, 1000, 120, 300),
            down_events=uniform_events([10, 10, 10]),
        ),
        rate_case(
            "outdated-one-policy-up",
            100,
            200,
            200,
            "DesiredWithinRange",
            up=rules(1000, 60, 0, 0, 0),
            up_events=E4,
        ),
        rate_case(
            "not-outdated-two-policies-up",
            100,
            200,
            200,
            "DesiredWithinRange",
            up=rules(1000, 120, 100, 60, 0),
            up_events=E4,
        ),
        rate_case(
            "outdated-two-policies-up",
            100,
            200,
            200,
            "DesiredWithinRange",
            up=rules(1000, 30, 100, 60, 0),
            up_events=E4,
        ),
        rate_case(
            "outdated-one-policy-down",
            100,
            5,
            5,
            "DesiredWithinRange",
            down=rules(1000, 60, 0, 0, 300),
            down_events=E4,
        ),
        rate_case(
            "not-outdated-two-policies-down",
            100,
            5,
            5,
            "DesiredWithinRange",
            down=rules(1000, 120, 100, 60, 300),
            down_events=E4,
        ),
        rate_case(
            "outdated-two-policies-down",
            100,
            5,
            5,
            "DesiredWithinRange",
            down=rules(1000, 30, 100, 60, 300),
            down_events=E4,
        ),
    ],
)
def test_limit_rate_upstream_scaling_with_rules(
    current: int,
    desired: int,
    min_r: int,
    max_r: int,
    up: ScalingRules | None,
    down: ScalingRules | None,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    expected: int,
    reason: str,
) -> None:
    assert limit_rate(current, desired, min_r, max_r, up, down, up_events, down_events) == (
        expected,
        reason,
    )


def test_scale_limits_with_min_select_policy() -> None:
    # TestCalculateScaleUpLimitWithScalingRules: Min of {1 + 2, ceil(1 * 1.5)} = 2.
    both = [HpaPolicy("Pods", 2, 60), HpaPolicy("Percent", 50, 60)]
    min_rules = ScalingRules("Min", both, stabilization_window_seconds=300)
    assert scale_up_limit(1, [], [], min_rules) == 2
    # TestCalculateScaleDownLimitWithBehaviors: Min change of {5 - 2, int(5 * 0.5)} -> 3.
    assert scale_down_limit(5, [], [], min_rules) == 3
    # Max (the default) picks the larger change.
    max_rules = ScalingRules("Max", both)
    assert scale_up_limit(1, [], [], max_rules) == 3
    assert scale_down_limit(5, [], [], max_rules) == 2


def test_select_policy_min_through_limit_rate() -> None:
    both = [HpaPolicy("Pods", 4, 60), HpaPolicy("Percent", 100, 60)]
    up = ScalingRules("Min", both)
    # From 10: Min of {14, 20} = 14.
    assert limit_rate(10, 50, 1, 100, up, None) == (14, "ScaleUpLimit")
    down = ScalingRules("Min", [HpaPolicy("Pods", 4, 60), HpaPolicy("Percent", 50, 60)])
    # From 10: the smaller change of {6, 5} -> 6.
    assert limit_rate(10, 1, 1, 100, None, down) == (6, "ScaleDownLimit")


def test_select_policy_disabled() -> None:
    disabled = ScalingRules("Disabled")
    assert scale_up_limit(7, [], [], disabled) == 7
    assert scale_down_limit(7, [], [], disabled) == 7
    # KEDA's paused-scale-out / paused-scale-in: no movement, the policies do not matter.
    assert limit_rate(7, 20, 1, 100, disabled, None) == (7, "ScaleUpLimit")
    assert limit_rate(7, 2, 1, 100, None, disabled) == (7, "ScaleDownLimit")
    # Disabled up with max below current + 1 still clamps the other way round.
    assert limit_rate(7, 20, 1, 7, disabled, None) == (7, "TooManyReplicas")
    # The other direction keeps working.
    assert limit_rate(7, 5, 1, 100, disabled, None) == (5, "DesiredWithinRange")


def test_percent_policies_keep_float64_quirks() -> None:
    # ceil(float64(50) * (1 + 10/100)) = ceil(55.00000000000001) = 56 upstream (exact: 55).
    assert scale_up_limit(50, [], [], rules(0, 0, 10, 60, 0)) == 56
    assert limit_rate(50, 100, 1, 1000, rules(0, 0, 10, 60, 0), None) == (56, "ScaleUpLimit")
    # int32(float64(10) * (1 - 80/100)) = int32(1.9999999999999996) = 1 upstream (exact: 2).
    assert scale_down_limit(10, [], [], rules(0, 0, 80, 60, 0)) == 1
    assert limit_rate(10, 0, 0, 1000, None, rules(0, 0, 80, 60, 0)) == (1, "ScaleDownLimit")


def test_scale_up_limit_may_fall_below_current() -> None:
    # calculateScaleUpLimitWithScalingRules itself is not floored; limit_rate floors it.
    events = uniform_events([1, 5, 9])
    assert scale_up_limit(100, events, [], rules(5, 120, 0, 0, 0)) == 90
    assert scale_down_limit(100, [], events, rules(5, 120, 0, 0, 0)) == 110


def test_limit_rate_no_change_is_within_range() -> None:
    assert limit_rate(5, 5, 1, 10) == (5, "DesiredWithinRange")
    # Rate limiting does not enforce min/max when nothing changes (the controller's
    # out-of-bounds branch handles that before normalization).
    assert limit_rate(5, 5, 6, 10) == (5, "DesiredWithinRange")


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        # TestStoreScaleEvents: getReplicasChangePerPeriod(60, prevScaleEvents).
        pytest.param([(7, 61)], 0, id="one-outdated"),
        pytest.param([(7, 58)], 7, id="one-actual"),
        pytest.param([(7, 61), (6, 59)], 6, id="two-one-outdated"),
        pytest.param([(8, 29), (6, 59), (7, 61), (9, 61)], 14, id="four-mixed"),
        pytest.param([(7, 58), (6, 59)], 13, id="two-actual"),
        pytest.param([(5, 60)], 0, id="age-equal-to-period-excluded"),
        pytest.param([], 0, id="empty"),
    ],
)
def test_replicas_change_per_period(events: list[ScaleEvent], expected: int) -> None:
    assert replicas_change_per_period(60, events) == expected


# hpa-keda.md A.4 "Default behavior": per 15 s the defaults allow doubling or +4 pods,
# whichever is larger. From 3 toward 40 (max 40), one step per 15 s sync: 7, 14, 28, 40.
def test_worked_example_default_scale_up_steps() -> None:
    current = 3
    seen: list[int] = []
    previous_change: list[ScaleEvent] = []
    while current < 40:
        new, _ = limit_rate(current, 40, 1, 40, None, None, previous_change, [])
        previous_change = [(new - current, 15.0)]  # 15 s later: outside the 15 s period
        current = new
        seen.append(current)
    assert seen == [7, 14, 28, 40]


def test_worked_example_default_scale_up_within_same_period() -> None:
    # A second sync inside the same 15 s period sees the earlier +4 (3 -> 7): the period
    # started at 3, so the limit is still max(3 + 4, 3 * 2) = 7.
    assert limit_rate(7, 40, 1, 40, None, None, [(4, 10.0)], []) == (7, "ScaleUpLimit")


# hpa-keda.md A.4: "On the way down [the defaults] allow dropping to the stabilized value in a
# single step", i.e. -100 % per 15 s after the 300 s window.
def test_worked_example_default_scale_down_one_step() -> None:
    assert limit_rate(40, 3, 1, 100) == (3, "DesiredWithinRange")
    assert limit_rate(40, 0, 2, 100) == (2, "TooFewReplicas")
    # With the 300 s stabilization, a 5-minute-old peak still holds the count...
    recommendations = [(40, 299.0), (10, 200.0)]
    assert normalize_with_behaviors(40, 3, 1, 100, None, None, recommendations) == (
        40,
        "DesiredWithinRange",
    )
    # ...and once it ages out, the next highest recommendation applies in one step.
    recommendations = [(40, 300.0), (10, 200.0)]
    assert normalize_with_behaviors(40, 3, 1, 100, None, None, recommendations) == (
        10,
        "DesiredWithinRange",
    )


# hpa-keda.md A.4: a Percent scale-down truncates what stays. At 10 % per 60 s, 80 -> 72, then
# 72 holds while those 8 pods are inside the period, then 72 -> 64.
def test_worked_example_percent_scale_down_truncates() -> None:
    down = rules(0, 0, 10, 60, 0)
    assert limit_rate(80, 1, 1, 100, None, down) == (72, "ScaleDownLimit")
    assert limit_rate(72, 1, 1, 100, None, down, [], [(8, 30.0)]) == (72, "ScaleDownLimit")
    assert limit_rate(72, 1, 1, 100, None, down, [], [(8, 60.0)]) == (64, "ScaleDownLimit")


def test_normalize_with_behaviors_combines_stabilization_and_rate() -> None:
    up = rules(2, 60, 0, 0, 120)
    # Up-window minimum of {9, 8, 12} is 8; the Pods policy then allows 5 + 2 = 7.
    recommendations = [(8, 100.0), (12, 30.0)]
    assert normalize_with_behaviors(5, 9, 1, 20, up, None, recommendations) == (7, "ScaleUpLimit")
    # The stabilized 8 is under the rate limit with a bigger policy.
    up = rules(10, 60, 0, 0, 120)
    assert normalize_with_behaviors(5, 9, 1, 20, up, None, recommendations) == (
        8,
        "DesiredWithinRange",
    )
    # A custom downscale flag is used when the scale-down window is unset.
    assert normalize_with_behaviors(
        10, 2, 1, 20, None, None, [(9, 90.0)], downscale_stabilization_window_s=60
    ) == (2, "DesiredWithinRange")
    assert normalize_with_behaviors(
        10, 2, 1, 20, None, None, [(9, 90.0)], downscale_stabilization_window_s=120
    ) == (9, "DesiredWithinRange")


# --------------------------------------------------------------------------------------------
# Defaults and rule generation
# --------------------------------------------------------------------------------------------


def test_default_rules() -> None:
    expected_up = ScalingRules("Max", (HpaPolicy("Pods", 4, 15), HpaPolicy("Percent", 100, 15)), 0)
    expected_down = ScalingRules("Max", (HpaPolicy("Percent", 100, 15),), None)
    assert expected_up == DEFAULT_SCALE_UP_RULES
    assert expected_down == DEFAULT_SCALE_DOWN_RULES
    assert generate_scale_up_rules(None) == DEFAULT_SCALE_UP_RULES
    assert generate_scale_down_rules(None) == DEFAULT_SCALE_DOWN_RULES


def test_generate_rules_fills_unset_fields() -> None:
    # KEDA's paused-scale-in writes only selectPolicy: Disabled; the defaults fill the rest.
    generated = generate_scale_down_rules(ScalingRules("Disabled"))
    assert generated == dataclasses.replace(DEFAULT_SCALE_DOWN_RULES, select_policy="Disabled")
    generated = generate_scale_up_rules(ScalingRules(stabilization_window_seconds=60))
    assert generated.policies == DEFAULT_SCALE_UP_RULES.policies
    assert generated.stabilization_window_seconds == 60
    # Explicit policies replace the defaults entirely.
    custom = ScalingRules(policies=[HpaPolicy("Pods", 1, 30)])
    assert generate_scale_up_rules(custom).policies == (HpaPolicy("Pods", 1, 30),)
    assert generate_scale_up_rules(custom).stabilization_window_seconds == 0
    # Unset policies mean the direction's defaults in the limit functions.
    assert scale_up_limit(10, [], [], ScalingRules()) == 20
    assert scale_down_limit(10, [], [], ScalingRules()) == 0


def test_rules_validation() -> None:
    with pytest.raises(ValueError):
        HpaPolicy("Pods", 0, 15)
    with pytest.raises(ValueError):
        HpaPolicy("Percent", 10, 0)
    with pytest.raises(ValueError):
        HpaPolicy("Percent", 10, 1801)
    with pytest.raises(ValueError):
        HpaPolicy("Replicas", 1, 15)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ScalingRules("Fastest")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ScalingRules(policies=[])
    with pytest.raises(ValueError):
        ScalingRules(stabilization_window_seconds=3601)
    with pytest.raises(ValueError):
        ScalingRules(tolerance=-1.0)
    # A list of policies is stored as a tuple, so the rules stay hashable.
    assert hash(ScalingRules(policies=[HpaPolicy("Pods", 1, 15)])) == hash(
        ScalingRules(policies=(HpaPolicy("Pods", 1, 15),))
    )


# --------------------------------------------------------------------------------------------
# Legacy normalization (no behavior)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "desired", "min_r", "max_r", "expected", "reason"),
    [
        # TestConvertDesiredReplicasWithRules.
        pytest.param(5, 7, 3, 8, 7, "DesiredWithinRange", id="within-range"),
        pytest.param(3, 1, 2, 8, 2, "TooFewReplicas", id="below-min"),
        pytest.param(1, 0, 0, 10, 0, "DesiredWithinRange", id="zero-within-range"),
        pytest.param(20, 1000, 1, 10, 10, "TooManyReplicas", id="max-below-limit"),
        pytest.param(3, 1000, 1, 2000, 6, "ScaleUpLimit", id="scale-up-limit"),
        # max(2 * 1, 4) = 4.
        pytest.param(1, 1000, 1, 2000, 4, "ScaleUpLimit", id="scale-up-limit-minimum"),
        pytest.param(0, 1000, 0, 2000, 4, "ScaleUpLimit", id="scale-up-limit-from-zero"),
    ],
)
def test_normalize_without_behavior(
    current: int, desired: int, min_r: int, max_r: int, expected: int, reason: str
) -> None:
    assert normalize_without_behavior(current, desired, min_r, max_r) == (expected, reason)


def test_legacy_scale_up_limit() -> None:
    assert [legacy_scale_up_limit(c) for c in (0, 1, 2, 3, 10)] == [4, 4, 4, 6, 20]
