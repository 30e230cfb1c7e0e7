"""Pure-Python port of the Kubernetes HPA replica calculation and ``behavior`` rate limiting.

Upstream: ``kubernetes/kubernetes``

* ``pkg/controller/podautoscaler/replica_calculator.go`` for the per-metric proposals,
* ``pkg/controller/podautoscaler/metrics/utilization.go`` for the averaging arithmetic,
* ``pkg/controller/podautoscaler/horizontal.go`` for stabilization, rate policies and the
  min/max conditions,
* ``pkg/apis/autoscaling/v2/defaults.go`` for the default ``behavior``.

The port follows upstream to the integer:

* Metric values are integer milli-units (``Quantity.MilliValue()``), as the HPA uses them.
* Averages and percentages use Go's truncating integer division before the float ratio is formed.
* Ratios are computed like Go's ``float64(a) / float64(b)``: each operand is first converted to
  a float. Python's exact ``int / int`` would round differently for very large values.
* Replica counts use ``math.ceil`` of the same float expression. Percent scale-down limits use
  Go's truncating ``int32(float64)`` conversion. This keeps upstream's float quirks: a 10 %
  scale-up of 50 replicas allows 56, not 55, because ``50 * 1.1`` is slightly above 55 in binary.

Conventions of this port:

* A pod is a :class:`PodSample`. ``usage_milli=None`` means the metrics API returned **no
  sample** for the pod. Upstream calls such a pod *missing*.
* ``ready=False`` marks a pod that the HPA's CPU readiness rule in ``groupPods`` leaves out:
  it is not Ready, or it is still in its CPU initialization period. The caller decides this,
  because the port has no clock. As upstream, the flag matters only when the resource is CPU.
  For ``Pods`` metrics and non-CPU resources it is ignored.
* ``phase="Pending"`` makes a pod *unready* for every metric type. ``phase="Failed"`` or
  ``deleted=True`` makes it *ignored*.
* Ages are in seconds, measured back from "now". An event or recommendation counts for a
  window ``W`` when ``age < W``. This is Go's ``timestamp.After(now - W)``. The legacy
  (no-``behavior``) stabilization is the exception: it uses ``!timestamp.Before(cutoff)``,
  so there ``age <= W`` counts.
* Errors that upstream returns as ``error`` raise :class:`ValueError`. This covers no pods,
  no usable samples, a missing request and an empty external metric list. Non-positive targets
  also raise, as the API server's validation rejects them.

Not modelled:

* Metrics for pods that are not in the pod list ("superfluous" metrics).
* Container-level requests and ``ContainerResource``: ``request_milli`` is the pod's request,
  already summed over its containers as upstream's ``calculateRequests`` does.
* ``int32`` overflow of the utilization percentage and of the unguarded ``int32(math.Ceil(..))``
  conversions. Python integers do not wrap. Upstream's explicit ``MaxInt32``/``MaxInt64``
  saturation for Object and External metrics *is* ported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal

__all__ = [
    "DEFAULT_DOWNSCALE_STABILIZATION_WINDOW_S",
    "DEFAULT_SCALE_DOWN_RULES",
    "DEFAULT_SCALE_UP_RULES",
    "DEFAULT_TOLERANCE",
    "LEGACY_SCALE_UP_LIMIT_FACTOR",
    "LEGACY_SCALE_UP_LIMIT_MINIMUM",
    "MAX_INT32",
    "MAX_INT64",
    "MIN_INT32",
    "HpaPolicy",
    "PodSample",
    "PolicyType",
    "Recommendation",
    "ScaleEvent",
    "ScalingRules",
    "SelectPolicy",
    "Tolerance",
    "generate_scale_down_rules",
    "generate_scale_up_rules",
    "legacy_scale_up_limit",
    "limit_down",
    "limit_rate",
    "limit_up",
    "normalize_with_behaviors",
    "normalize_without_behavior",
    "replicas_change_per_period",
    "replicas_for_external_average",
    "replicas_for_external_metric",
    "replicas_for_object_average",
    "replicas_for_object_metric",
    "replicas_for_pods_metric",
    "replicas_for_resource_utilization",
    "replicas_for_resource_value",
    "scale_down_limit",
    "scale_down_limit_resolved",
    "scale_down_limit_totals",
    "scale_up_limit",
    "scale_up_limit_resolved",
    "scale_up_limit_totals",
    "stabilization_windows",
    "stabilize",
    "stabilize_without_behavior",
    "tolerance_from_rules",
]

MAX_INT32: Final = 2**31 - 1
MIN_INT32: Final = -(2**31)
MAX_INT64: Final = 2**63 - 1

#: ``--horizontal-pod-autoscaler-downscale-stabilization`` default (5 min). Upstream's
#: ``maybeInitScaleDownStabilizationWindow`` fills a nil scale-down window with it.
DEFAULT_DOWNSCALE_STABILIZATION_WINDOW_S: Final = 300

#: ``scaleUpLimitFactor`` and ``scaleUpLimitMinimum`` in ``horizontal.go``. They are used only
#: without ``behavior``.
LEGACY_SCALE_UP_LIMIT_FACTOR: Final = 2.0
LEGACY_SCALE_UP_LIMIT_MINIMUM: Final = 4.0

#: Limits from upstream's API validation (``validateScalingRules``/``validateScalingPolicy``).
_MAX_PERIOD_SECONDS: Final = 1800
_MAX_STABILIZATION_WINDOW_SECONDS: Final = 3600

SelectPolicy = Literal["Max", "Min", "Disabled"]
PolicyType = Literal["Pods", "Percent"]

#: ``(replica_change, age_seconds)``. ``replica_change`` is the absolute, non-negative number of
#: pods added (up list) or removed (down list), as in upstream's ``timestampedScaleEvent``.
ScaleEvent = tuple[int, float]
#: ``(replicas, age_seconds)``: an unstabilized recommendation (``timestampedRecommendation``).
Recommendation = tuple[int, float]


# --------------------------------------------------------------------------------------------
# Go arithmetic helpers
# --------------------------------------------------------------------------------------------


def _go_div(a: int, b: int) -> int:
    """Go integer division: truncates toward zero (Python's ``//`` floors)."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _fdiv(a: float, b: float) -> float:
    """IEEE-754 division like Go's ``float64 / float64``: a zero divisor yields ±Inf or NaN."""
    if b != 0.0:
        return a / b
    if a == 0.0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _wrap_int64(value: int) -> int:
    """Two's-complement wrap-around of Go's ``int64`` addition."""
    return (value + 2**63) % 2**64 - 2**63


def _trunc_to_int(value: float) -> int:
    """Go's ``int32(float64)`` conversion for in-range values: truncation toward zero."""
    return int(value)


# --------------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """Per-direction tolerances, upstream's ``Tolerances{scaleDown, scaleUp}``.

    A usage ratio is *within tolerance* when ``1 - scale_down <= ratio <= 1 + scale_up``. Both
    bounds are inclusive, as in ``Tolerances.isWithin`` (``replica_calculator.go``). The default
    of 0.1 is the ``--horizontal-pod-autoscaler-tolerance`` flag.
    """

    scale_up: float = 0.1
    scale_down: float = 0.1

    def __post_init__(self) -> None:
        if self.scale_up < 0 or self.scale_down < 0:
            raise ValueError("tolerances must be non-negative")

    def is_within(self, usage_ratio: float) -> bool:
        """``Tolerances.isWithin``. NaN is never within."""
        return (1.0 - self.scale_down) <= usage_ratio <= (1.0 + self.scale_up)


DEFAULT_TOLERANCE = Tolerance()


@dataclass(frozen=True)
class PodSample:
    """One pod that the HPA's selector matched, with its metric sample.

    ``usage_milli`` is the pod's metric in milli-units, summed over its containers for resource
    metrics. ``None`` means the metrics API returned no sample, which makes the pod *missing*.
    ``ready`` is the result of the HPA's CPU readiness rule and is consulted only for CPU.
    ``phase`` is the pod phase. ``"Failed"`` pods and ``deleted`` pods (deletion timestamp set)
    are ignored. ``"Pending"`` pods are *unready*.
    ``request_milli`` is the pod's request for the resource. It is needed only for
    ``Utilization`` targets, and is required there for **every** listed pod, ignored ones
    included, as upstream's ``calculateRequests`` requires.
    """

    usage_milli: int | None
    ready: bool = True
    phase: str = "Running"
    deleted: bool = False
    request_milli: int | None = None


@dataclass(frozen=True)
class HpaPolicy:
    """``HPAScalingPolicy``: change at most ``value`` pods (``Pods``) or ``value`` percent
    (``Percent``) per ``period_seconds``.

    Validated like the API server's ``validateScalingPolicy``: ``value > 0`` and
    ``0 < period_seconds <= 1800``.
    """

    type: PolicyType
    value: int
    period_seconds: int

    def __post_init__(self) -> None:
        if self.type not in ("Pods", "Percent"):
            raise ValueError(f"unsupported policy type {self.type!r}")
        if self.value <= 0:
            raise ValueError("policy value must be greater than zero")
        if not 0 < self.period_seconds <= _MAX_PERIOD_SECONDS:
            raise ValueError(
                f"policy period_seconds must be in (0, {_MAX_PERIOD_SECONDS}], "
                f"got {self.period_seconds}"
            )


@dataclass(frozen=True)
class ScalingRules:
    """``HPAScalingRules`` for one direction.

    Unset fields are filled in like ``GenerateHPAScaleUpRules``/``GenerateHPAScaleDownRules``
    (``pkg/apis/autoscaling/v2/defaults.go``):

    * ``policies=None``: the direction's default policies.
    * ``stabilization_window_seconds=None``: 0 s for scale-up. For scale-down it is the
      controller flag, :data:`DEFAULT_DOWNSCALE_STABILIZATION_WINDOW_S` (300 s) by default.
    * ``tolerance=None``: the controller's tolerance flag (0.1). This is the
      ``HPAConfigurableTolerance`` field.

    ``select_policy`` defaults to ``"Max"``, which is also upstream's default. Explicit policies
    must be non-empty, as the API server requires.
    """

    select_policy: SelectPolicy = "Max"
    policies: Sequence[HpaPolicy] | None = None
    stabilization_window_seconds: int | None = None
    tolerance: float | None = None

    def __post_init__(self) -> None:
        if self.select_policy not in ("Max", "Min", "Disabled"):
            raise ValueError(f"unsupported select_policy {self.select_policy!r}")
        if self.policies is not None:
            policies = tuple(self.policies)
            if not policies:
                raise ValueError("must specify at least one policy")
            object.__setattr__(self, "policies", policies)
        window = self.stabilization_window_seconds
        if window is not None and not 0 <= window <= _MAX_STABILIZATION_WINDOW_SECONDS:
            raise ValueError(
                f"stabilization_window_seconds must be in [0, {_MAX_STABILIZATION_WINDOW_SECONDS}]"
            )
        if self.tolerance is not None and self.tolerance < 0:
            raise ValueError("tolerance must be non-negative")


#: ``defaultHPAScaleUpRules``: no stabilization. Per 15 s, the larger of +4 pods and +100 %.
DEFAULT_SCALE_UP_RULES = ScalingRules(
    select_policy="Max",
    policies=(HpaPolicy("Pods", 4, 15), HpaPolicy("Percent", 100, 15)),
    stabilization_window_seconds=0,
)

#: ``defaultHPAScaleDownRules``: -100 % per 15 s. As upstream, the stabilization window is left
#: unset (``None``). The controller then applies its downscale-stabilization flag, 300 s by
#: default (:data:`DEFAULT_DOWNSCALE_STABILIZATION_WINDOW_S`); see :func:`stabilization_windows`.
DEFAULT_SCALE_DOWN_RULES = ScalingRules(
    select_policy="Max",
    policies=(HpaPolicy("Percent", 100, 15),),
    stabilization_window_seconds=None,
)


def _copy_scaling_rules(rules: ScalingRules | None, defaults: ScalingRules) -> ScalingRules:
    """``copyHPAScalingRules``: the non-nil fields of ``rules`` override ``defaults``."""
    if rules is None:
        return defaults
    return replace(
        defaults,
        select_policy=rules.select_policy,
        policies=rules.policies if rules.policies is not None else defaults.policies,
        stabilization_window_seconds=(
            rules.stabilization_window_seconds
            if rules.stabilization_window_seconds is not None
            else defaults.stabilization_window_seconds
        ),
        tolerance=rules.tolerance if rules.tolerance is not None else defaults.tolerance,
    )


def generate_scale_up_rules(rules: ScalingRules | None) -> ScalingRules:
    """``GenerateHPAScaleUpRules``: fill the unset fields from :data:`DEFAULT_SCALE_UP_RULES`."""
    return _copy_scaling_rules(rules, DEFAULT_SCALE_UP_RULES)


def generate_scale_down_rules(rules: ScalingRules | None) -> ScalingRules:
    """``GenerateHPAScaleDownRules``: fill the unset fields from
    :data:`DEFAULT_SCALE_DOWN_RULES`. An unset window stays ``None``, meaning the flag."""
    return _copy_scaling_rules(rules, DEFAULT_SCALE_DOWN_RULES)


def stabilization_windows(
    scale_up_rules: ScalingRules | None,
    scale_down_rules: ScalingRules | None,
    downscale_stabilization_window_s: int = DEFAULT_DOWNSCALE_STABILIZATION_WINDOW_S,
) -> tuple[int, int]:
    """The effective ``(up_window_s, down_window_s)`` for a ``behavior``.

    The rules are defaulted as ``GenerateHPAScale{Up,Down}Rules`` does. A nil scale-down window
    then takes the controller flag (``maybeInitScaleDownStabilizationWindow``).
    """
    up = generate_scale_up_rules(scale_up_rules).stabilization_window_seconds
    down = generate_scale_down_rules(scale_down_rules).stabilization_window_seconds
    return (
        up if up is not None else 0,
        down if down is not None else downscale_stabilization_window_s,
    )


def tolerance_from_rules(
    scale_up_rules: ScalingRules | None,
    scale_down_rules: ScalingRules | None,
    default: float = 0.1,
) -> Tolerance:
    """Per-direction :class:`Tolerance` from ``behavior.scale{Up,Down}.tolerance``
    (KEP-4951, ``HPAConfigurableTolerance``). An unset direction uses the controller's
    ``--horizontal-pod-autoscaler-tolerance`` value ``default``."""
    up = scale_up_rules.tolerance if scale_up_rules is not None else None
    down = scale_down_rules.tolerance if scale_down_rules is not None else None
    return Tolerance(
        scale_up=up if up is not None else default,
        scale_down=down if down is not None else default,
    )


# --------------------------------------------------------------------------------------------
# Replica calculator (replica_calculator.go)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PodGroups:
    ready_count: int
    unready: tuple[int, ...]
    missing: tuple[int, ...]
    ignored: tuple[int, ...]


def _group_pods(pods: Sequence[PodSample], cpu_readiness: bool) -> _PodGroups:
    """``groupPods``. The first matching rule wins:

    1. deletion timestamp set or phase ``Failed``: *ignored*;
    2. phase ``Pending``: *unready*;
    3. no metric sample: *missing*;
    4. CPU only: the readiness rule says unready (``ready=False``): *unready*;
    5. otherwise *ready*.
    """
    ready_count = 0
    unready: list[int] = []
    missing: list[int] = []
    ignored: list[int] = []
    for index, pod in enumerate(pods):
        if pod.deleted or pod.phase == "Failed":
            ignored.append(index)
        elif pod.phase == "Pending":
            unready.append(index)
        elif pod.usage_milli is None:
            missing.append(index)
        elif cpu_readiness and not pod.ready:
            unready.append(index)
        else:
            ready_count += 1
    return _PodGroups(ready_count, tuple(unready), tuple(missing), tuple(ignored))


def _check_current(current: int) -> None:
    if current < 0:
        raise ValueError(f"current replicas must be non-negative, got {current}")


def _check_positive(name: str, value: int) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


def _sampled_metrics(pods: Sequence[PodSample], groups: _PodGroups) -> dict[int, int]:
    """The metric map after ``removeMetricsForPods`` of the ignored and unready pods."""
    if not pods:
        raise ValueError("no pods returned by selector while calculating replica count")
    if all(pod.usage_milli is None for pod in pods):
        raise ValueError("no metrics returned from metrics API")
    dropped = set(groups.ignored) | set(groups.unready)
    metrics = {
        index: pod.usage_milli
        for index, pod in enumerate(pods)
        if pod.usage_milli is not None and index not in dropped
    }
    if not metrics:
        raise ValueError("did not receive metrics for targeted pods (pods might be unready)")
    return metrics


def _resource_utilization_ratio(
    metrics: dict[int, int], requests: Sequence[int], target_utilization: int
) -> float:
    """``metrics.GetResourceUtilizationRatio``: ``util = trunc(100 * Σusage / Σrequest)``, then
    ``util / target``."""
    metrics_total = sum(metrics.values())
    requests_total = sum(requests[index] for index in metrics)
    if requests_total == 0:
        raise ValueError("no metrics returned matched known pods")
    current_utilization = _go_div(metrics_total * 100, requests_total)
    return float(current_utilization) / float(target_utilization)


def _metric_usage_ratio(metrics: dict[int, int], target_usage: int) -> float:
    """``metrics.GetMetricUsageRatio``: ``trunc(Σvalue / count) / target``."""
    current_usage = _go_div(sum(metrics.values()), len(metrics))
    return float(current_usage) / float(target_usage)


def replicas_for_resource_utilization(
    current: int,
    pods: Sequence[PodSample],
    target_utilization: int,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    *,
    resource: str = "cpu",
) -> int:
    """``ReplicaCalculator.GetResourceReplicas``: a ``Resource`` metric with a ``Utilization``
    target, in percent of the pods' requests.

    Every listed pod needs ``request_milli``, or :class:`ValueError` is raised. The CPU
    readiness rule applies only when ``resource == "cpu"``.

    * Fast path: there are no missing pods, and not (some unready pods and ``ratio > 1``).
      Within tolerance, return ``current``. Otherwise return ``ceil(ratio * ready)``.
    * Missing pods count as ``max(100, target)`` % of their request when ``ratio < 1``, and as
      0 when ``ratio > 1``. When ``ratio > 1``, unready pods count as 0.
    * Return ``current`` in three cases: the recomputed ratio is within tolerance; it is on the
      other side of 1; or ``ceil(new_ratio * len(samples))`` moves against the ratio's
      direction. Otherwise return that ceiling.
    """
    _check_current(current)
    _check_positive("target_utilization", target_utilization)
    groups = _group_pods(pods, cpu_readiness=resource == "cpu")
    metrics = _sampled_metrics(pods, groups)
    requests: list[int] = []
    for index, pod in enumerate(pods):
        if pod.request_milli is None:
            raise ValueError(f"missing request for {resource} in pod {index}")
        requests.append(pod.request_milli)

    usage_ratio = _resource_utilization_ratio(metrics, requests, target_utilization)

    scale_up_with_unready = bool(groups.unready) and usage_ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if tolerance.is_within(usage_ratio):
            return current
        return math.ceil(usage_ratio * float(groups.ready_count))

    if groups.missing:
        if usage_ratio < 1.0:
            fallback_utilization = max(100, target_utilization)
            for index in groups.missing:
                metrics[index] = _go_div(requests[index] * fallback_utilization, 100)
        elif usage_ratio > 1.0:
            for index in groups.missing:
                metrics[index] = 0

    if scale_up_with_unready:
        for index in groups.unready:
            metrics[index] = 0

    new_usage_ratio = _resource_utilization_ratio(metrics, requests, target_utilization)
    return _rebalanced_replicas(current, usage_ratio, new_usage_ratio, len(metrics), tolerance)


def _rebalanced_replicas(
    current: int, usage_ratio: float, new_usage_ratio: float, count: int, tolerance: Tolerance
) -> int:
    """The tail shared by ``GetResourceReplicas`` and ``calcPlainMetricReplicas``."""
    if (
        tolerance.is_within(new_usage_ratio)
        or (usage_ratio < 1.0 and new_usage_ratio > 1.0)
        or (usage_ratio > 1.0 and new_usage_ratio < 1.0)
    ):
        return current
    new_replicas = math.ceil(new_usage_ratio * float(count))
    if (new_usage_ratio < 1.0 and new_replicas > current) or (
        new_usage_ratio > 1.0 and new_replicas < current
    ):
        return current
    return new_replicas


def _plain_metric_replicas(
    current: int,
    pods: Sequence[PodSample],
    target_usage: int,
    tolerance: Tolerance,
    cpu_readiness: bool,
) -> int:
    """``ReplicaCalculator.calcPlainMetricReplicas``."""
    _check_current(current)
    _check_positive("target_average_milli", target_usage)
    groups = _group_pods(pods, cpu_readiness=cpu_readiness)
    metrics = _sampled_metrics(pods, groups)

    usage_ratio = _metric_usage_ratio(metrics, target_usage)

    scale_up_with_unready = bool(groups.unready) and usage_ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if tolerance.is_within(usage_ratio):
            return current
        return math.ceil(usage_ratio * float(groups.ready_count))

    if groups.missing:
        if usage_ratio < 1.0:
            for index in groups.missing:
                metrics[index] = target_usage
        elif usage_ratio > 1.0:
            for index in groups.missing:
                metrics[index] = 0

    if scale_up_with_unready:
        for index in groups.unready:
            metrics[index] = 0

    new_usage_ratio = _metric_usage_ratio(metrics, target_usage)
    return _rebalanced_replicas(current, usage_ratio, new_usage_ratio, len(metrics), tolerance)


def replicas_for_pods_metric(
    current: int,
    pods: Sequence[PodSample],
    target_average_milli: int,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> int:
    """``ReplicaCalculator.GetMetricReplicas``: a ``Pods`` metric with an ``AverageValue``
    target.

    The ratio is ``trunc(Σvalue / count) / target``. Missing pods count as exactly the target
    when ``ratio < 1``, and as 0 when ``ratio > 1``. The CPU readiness rule is **not** used:
    ``ready`` is ignored, and only ``Pending`` pods are unready. They count as 0 on a scale-up.
    """
    return _plain_metric_replicas(
        current, pods, target_average_milli, tolerance, cpu_readiness=False
    )


def replicas_for_resource_value(
    current: int,
    pods: Sequence[PodSample],
    target_average_milli: int,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    *,
    resource: str = "cpu",
) -> int:
    """``ReplicaCalculator.GetRawResourceReplicas``: a ``Resource`` metric with an
    ``AverageValue`` target. This is ``calcPlainMetricReplicas`` with the resource name, so the
    CPU readiness rule applies when ``resource == "cpu"``."""
    return _plain_metric_replicas(
        current, pods, target_average_milli, tolerance, cpu_readiness=resource == "cpu"
    )


def _usage_ratio_replica_count(
    current: int, usage_ratio: float, ready_pod_count: int, tolerance: Tolerance
) -> int:
    """``ReplicaCalculator.getUsageRatioReplicaCount``.

    When ``current != 0``: within tolerance, keep ``current``. Otherwise return
    ``ceil(ratio * readyPods)``, saturated at ``MaxInt32``. When ``current == 0``, the
    ``HPAScaleToZero`` path returns ``ceil(ratio)`` and applies no tolerance.
    """
    if current != 0:
        if tolerance.is_within(usage_ratio):
            return current
        replica_count_float = usage_ratio * float(ready_pod_count)
        if replica_count_float > MAX_INT32:
            return MAX_INT32
        return math.ceil(replica_count_float)
    return math.ceil(usage_ratio)


def replicas_for_object_metric(
    current: int,
    value_milli: int,
    target_milli: int,
    ready_pod_count: int,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> int:
    """``ReplicaCalculator.GetObjectMetricReplicas``: an ``Object`` metric with a ``Value``
    target.

    ``ready_pod_count`` counts the pods that are ``Running`` and ``Ready``
    (``getReadyPodsCount``). The result scales the **ready** count, not ``current``.
    ``current`` is ``scale.spec.replicas``.
    """
    _check_current(current)
    _check_positive("target_milli", target_milli)
    if ready_pod_count < 0:
        raise ValueError("ready_pod_count must be non-negative")
    usage_ratio = float(value_milli) / float(target_milli)
    return _usage_ratio_replica_count(current, usage_ratio, ready_pod_count, tolerance)


def replicas_for_object_average(
    current: int,
    value_milli: int,
    target_per_pod_milli: int,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> int:
    """``ReplicaCalculator.GetObjectPerPodMetricReplicas``: an ``Object`` metric with an
    ``AverageValue`` target.

    ``current`` is ``scale.status.replicas``. When ``value / (target * current)`` is within
    tolerance, keep ``current``. Otherwise return ``ceil(value / target)``. Readiness plays no
    part.
    """
    _check_current(current)
    _check_positive("target_per_pod_milli", target_per_pod_milli)
    usage_ratio = _fdiv(float(value_milli), float(target_per_pod_milli) * float(current))
    if not tolerance.is_within(usage_ratio):
        return math.ceil(float(value_milli) / float(target_per_pod_milli))
    return current


def _external_values(values_milli: Sequence[int]) -> None:
    if not values_milli:
        raise ValueError("no metrics returned from external metrics API")


def replicas_for_external_metric(
    current: int,
    values_milli: Sequence[int],
    target_milli: int,
    ready_pod_count: int,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> int:
    """``ReplicaCalculator.GetExternalMetricReplicas``: an ``External`` metric with a ``Value``
    target.

    The series are summed, saturating at ``MaxInt64`` on positive overflow as upstream does.
    From there the rules are those of :func:`replicas_for_object_metric`: the result scales the
    ready pod count.
    """
    _check_current(current)
    _check_positive("target_milli", target_milli)
    if ready_pod_count < 0:
        raise ValueError("ready_pod_count must be non-negative")
    _external_values(values_milli)
    usage = 0
    for value in values_milli:
        if value > 0 and usage > MAX_INT64 - value:
            usage = MAX_INT64
            break
        usage = _wrap_int64(usage + value)
    usage_ratio = float(usage) / float(target_milli)
    return _usage_ratio_replica_count(current, usage_ratio, ready_pod_count, tolerance)


def replicas_for_external_average(
    current: int,
    values_milli: Sequence[int],
    target_per_pod_milli: int,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> int:
    """``ReplicaCalculator.GetExternalPerPodMetricReplicas``: an ``External`` metric with an
    ``AverageValue`` target. This is KEDA's default.

    ``current`` is ``scale.status.replicas``. The series are summed. As upstream, a running sum
    that goes negative is taken as an int64 overflow and saturates to ``MaxInt64``. Negative
    values therefore saturate too; KEDA never sends them. When
    ``total / (target * current)`` is within tolerance, keep ``current``. Otherwise return
    ``ceil(total / target)``, saturated at ``MaxInt32``.
    """
    _check_current(current)
    _check_positive("target_per_pod_milli", target_per_pod_milli)
    _external_values(values_milli)
    usage = 0
    for value in values_milli:
        usage = _wrap_int64(usage + value)
        if usage < 0:
            usage = MAX_INT64
            break
    usage_ratio = _fdiv(float(usage), float(target_per_pod_milli) * float(current))
    if not tolerance.is_within(usage_ratio):
        replica_count = math.ceil(float(usage) / float(target_per_pod_milli))
        return MAX_INT32 if replica_count > MAX_INT32 else replica_count
    return current


# --------------------------------------------------------------------------------------------
# Stabilization and rate limits (horizontal.go)
# --------------------------------------------------------------------------------------------


def stabilize(
    current: int,
    desired: int,
    recommendations: Sequence[Recommendation],
    up_window_s: float,
    down_window_s: float,
) -> int:
    """``HorizontalController.stabilizeRecommendationWithBehaviors``. Both directions apply.

    * ``up = min(desired, recommendations younger than up_window_s)``
    * ``down = max(desired, recommendations younger than down_window_s)``
    * Start from ``current``. Raise it to ``up`` if it is below. Then lower it to ``down`` if
      it is above.

    The caller records ``(desired, 0)`` afterwards. Upstream stores the *unstabilized* proposal.
    """
    up_recommendation = desired
    down_recommendation = desired
    for replicas, age in recommendations:
        if age < up_window_s:
            up_recommendation = min(replicas, up_recommendation)
        if age < down_window_s:
            down_recommendation = max(replicas, down_recommendation)
    recommendation = current
    if recommendation < up_recommendation:
        recommendation = up_recommendation
    if recommendation > down_recommendation:
        recommendation = down_recommendation
    return recommendation


def replicas_change_per_period(period_seconds: float, events: Sequence[ScaleEvent]) -> int:
    """``getReplicasChangePerPeriod``: the sum of changes with ``age < period_seconds``
    (``timestamp.After(now - period)``)."""
    return sum(change for change, age in events if age < period_seconds)


def scale_up_limit(
    current: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    rules: ScalingRules | None,
) -> int:
    """``calculateScaleUpLimitWithScalingRules``: the largest count the scale-up policies allow.

    ``None`` or unset policies take the default scale-up rules. ``Disabled`` returns
    ``current``. Each policy starts from
    ``current - added_in_period + removed_in_period``. A ``Pods`` policy proposes
    ``start + value``. A ``Percent`` policy proposes ``ceil(start * (1 + value/100))`` in
    float64. ``Max`` (default) keeps the largest proposal and ``Min`` the smallest. The result
    may be below ``current``; :func:`limit_rate` floors it.
    """
    return scale_up_limit_resolved(current, up_events, down_events, generate_scale_up_rules(rules))


def scale_up_limit_resolved(
    current: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    resolved: ScalingRules,
) -> int:
    """:func:`scale_up_limit` on rules already filled in by :func:`generate_scale_up_rules`
    (filling them in again gives equal rules: callers that keep them skip that work)."""
    if resolved.select_policy == "Disabled":
        return current
    pick_min = resolved.select_policy == "Min"
    result = MAX_INT32 if pick_min else MIN_INT32
    for policy in resolved.policies or ():
        added = replicas_change_per_period(policy.period_seconds, up_events)
        deleted = replicas_change_per_period(policy.period_seconds, down_events)
        period_start = current - added + deleted
        if policy.type == "Pods":
            proposed = period_start + policy.value
        else:
            proposed = math.ceil(float(period_start) * (1 + float(policy.value) / 100))
        result = min(result, proposed) if pick_min else max(result, proposed)
    return result


def scale_up_limit_totals(current: int, added: int, deleted: int, resolved: ScalingRules) -> int:
    """:func:`scale_up_limit_resolved` for rules whose policies all share one period, given the
    replicas added and deleted within it (what each policy would sum from the events)."""
    if resolved.select_policy == "Disabled":
        return current
    pick_min = resolved.select_policy == "Min"
    result = MAX_INT32 if pick_min else MIN_INT32
    period_start = current - added + deleted
    for policy in resolved.policies or ():
        if policy.type == "Pods":
            proposed = period_start + policy.value
        else:
            proposed = math.ceil(float(period_start) * (1 + float(policy.value) / 100))
        result = min(result, proposed) if pick_min else max(result, proposed)
    return result


def scale_down_limit(
    current: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    rules: ScalingRules | None,
) -> int:
    """``calculateScaleDownLimitWithBehaviors``: the smallest count the scale-down policies
    allow.

    ``None`` or unset policies take the default scale-down rules. ``Disabled`` returns
    ``current``. Each policy starts from
    ``current - added_in_period + removed_in_period``. A ``Pods`` policy proposes
    ``start - value``. A ``Percent`` policy proposes ``int32(start * (1 - value/100))``, which
    truncates. ``Max`` (default, the largest change) keeps the smallest proposal and ``Min``
    the largest. The result may exceed ``current``; :func:`limit_rate` caps it.
    """
    return scale_down_limit_resolved(
        current, up_events, down_events, generate_scale_down_rules(rules)
    )


def scale_down_limit_resolved(
    current: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    resolved: ScalingRules,
) -> int:
    """:func:`scale_down_limit` on rules already filled in by :func:`generate_scale_down_rules`."""
    if resolved.select_policy == "Disabled":
        return current
    pick_max = resolved.select_policy == "Min"
    result = MIN_INT32 if pick_max else MAX_INT32
    for policy in resolved.policies or ():
        added = replicas_change_per_period(policy.period_seconds, up_events)
        deleted = replicas_change_per_period(policy.period_seconds, down_events)
        period_start = current - added + deleted
        if policy.type == "Pods":
            proposed = period_start - policy.value
        else:
            proposed = _trunc_to_int(float(period_start) * (1 - float(policy.value) / 100))
        result = max(result, proposed) if pick_max else min(result, proposed)
    return result


def scale_down_limit_totals(current: int, added: int, deleted: int, resolved: ScalingRules) -> int:
    """:func:`scale_down_limit_resolved` for rules whose policies all share one period (see
    :func:`scale_up_limit_totals`)."""
    if resolved.select_policy == "Disabled":
        return current
    pick_max = resolved.select_policy == "Min"
    result = MIN_INT32 if pick_max else MAX_INT32
    period_start = current - added + deleted
    for policy in resolved.policies or ():
        if policy.type == "Pods":
            proposed = period_start - policy.value
        else:
            proposed = _trunc_to_int(float(period_start) * (1 - float(policy.value) / 100))
        result = max(result, proposed) if pick_max else min(result, proposed)
    return result


def limit_rate(
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    scale_up_rules: ScalingRules | None = None,
    scale_down_rules: ScalingRules | None = None,
    up_events: Sequence[ScaleEvent] = (),
    down_events: Sequence[ScaleEvent] = (),
) -> tuple[int, str]:
    """``HorizontalController.convertDesiredReplicasWithBehaviorRate``. Returns
    ``(replicas, reason)``.

    ``desired`` is the stabilized recommendation. ``None`` rules mean upstream's defaults
    (:data:`DEFAULT_SCALE_UP_RULES` / :data:`DEFAULT_SCALE_DOWN_RULES`).

    * Going up, the limit is floored at ``current`` and the top is ``min(max, limit)``. The
      reason is ``ScaleUpLimit`` when the limit binds, otherwise ``TooManyReplicas``.
    * Going down, the limit is capped at ``current`` and the bottom is ``max(min, limit)``. The
      reason is ``ScaleDownLimit`` or ``TooFewReplicas``.
    * Otherwise the reason is ``DesiredWithinRange``.
    """
    if desired > current:
        up_limit = scale_up_limit(current, up_events, down_events, scale_up_rules)
        return limit_up(current, desired, max_replicas, up_limit)
    if desired < current:
        down_limit = scale_down_limit(current, up_events, down_events, scale_down_rules)
        return limit_down(current, desired, min_replicas, down_limit)
    return desired, "DesiredWithinRange"


def limit_up(current: int, desired: int, max_replicas: int, up_limit: int) -> tuple[int, str]:
    """:func:`limit_rate` going up (``desired > current``), given the policies' limit."""
    up_limit = max(up_limit, current)
    if max_replicas > up_limit:
        maximum_allowed, reason = up_limit, "ScaleUpLimit"
    else:
        maximum_allowed, reason = max_replicas, "TooManyReplicas"
    if desired > maximum_allowed:
        return maximum_allowed, reason
    return desired, "DesiredWithinRange"


def limit_down(current: int, desired: int, min_replicas: int, down_limit: int) -> tuple[int, str]:
    """:func:`limit_rate` going down (``desired < current``), given the policies' limit."""
    down_limit = min(down_limit, current)
    if min_replicas < down_limit:
        minimum_allowed, reason = down_limit, "ScaleDownLimit"
    else:
        minimum_allowed, reason = min_replicas, "TooFewReplicas"
    if desired < minimum_allowed:
        return minimum_allowed, reason
    return desired, "DesiredWithinRange"


def normalize_with_behaviors(
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    scale_up_rules: ScalingRules | None,
    scale_down_rules: ScalingRules | None,
    recommendations: Sequence[Recommendation],
    up_events: Sequence[ScaleEvent] = (),
    down_events: Sequence[ScaleEvent] = (),
    *,
    downscale_stabilization_window_s: int = DEFAULT_DOWNSCALE_STABILIZATION_WINDOW_S,
) -> tuple[int, str]:
    """``HorizontalController.normalizeDesiredReplicasWithBehaviors``: :func:`stabilize` with the
    effective windows (:func:`stabilization_windows`), then :func:`limit_rate`. Returns the
    rate step's ``(replicas, reason)``."""
    up_window, down_window = stabilization_windows(
        scale_up_rules, scale_down_rules, downscale_stabilization_window_s
    )
    stabilized = stabilize(current, desired, recommendations, up_window, down_window)
    return limit_rate(
        current,
        stabilized,
        min_replicas,
        max_replicas,
        scale_up_rules,
        scale_down_rules,
        up_events,
        down_events,
    )


# --------------------------------------------------------------------------------------------
# Legacy path: HPA without `behavior`
# --------------------------------------------------------------------------------------------


def stabilize_without_behavior(
    desired: int,
    recommendations: Sequence[Recommendation],
    window_s: float = DEFAULT_DOWNSCALE_STABILIZATION_WINDOW_S,
) -> int:
    """``HorizontalController.stabilizeRecommendation``: the maximum of ``desired`` and the
    recommendations not older than ``window_s``.

    Here ``age <= window_s`` counts: upstream skips only ``timestamp.Before(cutoff)``.
    """
    result = desired
    for replicas, age in recommendations:
        if age <= window_s and replicas > result:
            result = replicas
    return result


def legacy_scale_up_limit(current: int) -> int:
    """``calculateScaleUpLimit``: ``int32(max(2.0 * current, 4.0))``."""
    return _trunc_to_int(
        max(LEGACY_SCALE_UP_LIMIT_FACTOR * float(current), LEGACY_SCALE_UP_LIMIT_MINIMUM)
    )


def normalize_without_behavior(
    current: int, desired: int, min_replicas: int, max_replicas: int
) -> tuple[int, str]:
    """``convertDesiredReplicasWithRules``. Returns ``(replicas, reason)``.

    Below ``min`` the result is ``TooFewReplicas``; this check runs first. Above
    ``min(max, max(2 * current, 4))`` it is ``ScaleUpLimit`` or ``TooManyReplicas``.
    Otherwise it is ``DesiredWithinRange``.
    """
    up_limit = legacy_scale_up_limit(current)
    if max_replicas > up_limit:
        maximum_allowed, reason = up_limit, "ScaleUpLimit"
    else:
        maximum_allowed, reason = max_replicas, "TooManyReplicas"
    if desired < min_replicas:
        return min_replicas, "TooFewReplicas"
    if desired > maximum_allowed:
        return maximum_allowed, reason
    return desired, "DesiredWithinRange"
