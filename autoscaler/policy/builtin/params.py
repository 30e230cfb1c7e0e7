"""The params (pydantic models) of the built-in policies whose decisions are compiled.

``queue``, ``tokens``, ``kpa``, ``hpa``, ``keda`` and ``llm`` decide on
every target on every tick, so their modules are compiled with mypyc (autoscaler/native.py). A
pydantic model cannot be: pydantic reads the class's annotations and methods as Python objects.
The models live here, plain Python, and each policy module re-exports its own (``from
autoscaler.policy.builtin.queue import QueueParams`` still works).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from autoscaler.core import signals
from autoscaler.policy.api import Params
from autoscaler.policy.compat.knative import KpaSpec
from autoscaler.policy.compat.kubernetes import (
    HpaPolicy,
    ScalingRules,
    generate_scale_down_rules,
    generate_scale_up_rules,
    stabilization_windows,
)


# queue
class QueueParams(Params):
    signal: str = signals.WAITING
    target_per_replica: float = Field(gt=0, description="waiting requests one replica may hold")
    window_seconds: float = Field(30.0, gt=0)
    aggregation: Literal["mean", "max", "last"] = "mean"
    activation_threshold: float = Field(0.0, ge=0, description="0 -> 1 only above this")


# tokens
class TokensParams(Params):
    counters: tuple[str, ...] = (signals.PROMPT_TOKENS_TOTAL, signals.GENERATION_TOKENS_TOTAL)
    gauge: str | None = Field(None, description="a tokens/s gauge to use instead of counters")
    tokens_per_replica: float = Field(gt=0, description="tokens/s one replica serves within SLO")
    target_utilization: float = Field(0.8, gt=0, le=1)
    burst_reserve: float = Field(
        0.0, ge=0, le=10, description="spare replicas per square root of the load in replicas"
    )
    window_seconds: float = Field(60.0, gt=0)
    include_throttled: bool = True
    limit_headroom: float = Field(1.0, gt=0)


# kpa
class KpaParams(Params):
    metric: Literal["concurrency", "rps"] = "concurrency"
    signal: str | None = Field(None, description="defaults to concurrency or rps")
    target: float | None = Field(None, gt=0, description="autoscaling.knative.dev/target")
    container_concurrency: int = Field(0, ge=0)
    target_utilization_percentage: float = Field(70.0, gt=0, le=100)
    target_burst_capacity: float = Field(211.0, ge=-1)
    panic_window_percentage: float = Field(10.0, ge=1, le=100)
    panic_threshold_percentage: float = Field(200.0, ge=110, le=1000)
    max_scale_up_rate: float = Field(1000.0, gt=1)
    max_scale_down_rate: float = Field(2.0, gt=1)
    stable_window_seconds: float = Field(60.0, ge=6, le=3600)
    scale_down_delay_seconds: float = Field(0.0, ge=0, le=3600)
    activation_scale: int = Field(1, ge=1)
    initial_scale: int = Field(1, ge=0)
    activator_capacity: float = Field(100.0, gt=0)

    def spec(self) -> KpaSpec:
        default_total = 100.0 if self.metric == "concurrency" else 200.0
        total = self.target if self.target is not None else default_total
        if self.metric == "concurrency" and self.container_concurrency > 0:
            total = (
                min(total, float(self.container_concurrency))
                if self.target is not None
                else float(self.container_concurrency)
            )
        target = max(0.01, total * self.target_utilization_percentage / 100.0)
        return KpaSpec(
            scaling_metric=self.metric,
            target_value=target,
            total_value=total,
            target_burst_capacity=self.target_burst_capacity,
            panic_threshold=self.panic_threshold_percentage / 100.0,
            max_scale_up_rate=self.max_scale_up_rate,
            max_scale_down_rate=self.max_scale_down_rate,
            activator_capacity=self.activator_capacity,
            stable_window=self.stable_window_seconds,
            scale_down_delay=self.scale_down_delay_seconds,
            reachable=True,
            activation_scale=self.activation_scale,
            initial_scale=self.initial_scale,
        )

    @property
    def panic_window_seconds(self) -> float:
        # resources/metric.go: stable x percentage / 100, rounded to whole seconds, at least 1 s.
        return max(
            1.0, float(round(self.stable_window_seconds * self.panic_window_percentage / 100.0))
        )

    @property
    def signal_name(self) -> str:
        if self.signal:
            return self.signal
        return signals.CONCURRENCY if self.metric == "concurrency" else signals.RPS


# hpa_common
class HpaMetric(Params):
    """One External-style metric: the target-wide signal against a target."""

    signal: str
    type: Literal["AverageValue", "Value"] = "AverageValue"
    target: float = Field(gt=0, description="per replica for AverageValue, total for Value")
    window_seconds: float = Field(0.0, ge=0, description="0: the latest sample, as the HPA reads")


# hpa_common
class RuleModel(Params):
    type: Literal["Pods", "Percent"]
    value: int = Field(gt=0)
    period_seconds: int = Field(gt=0, le=1800)


# hpa_common
class ScalingRulesModel(Params):
    select_policy: Literal["Max", "Min", "Disabled"] = "Max"
    policies: tuple[RuleModel, ...] = ()
    stabilization_window_seconds: int | None = Field(None, ge=0, le=3600)

    def rules(self) -> ScalingRules:
        """Unset fields stay None so upstream's defaulting fills them."""
        return ScalingRules(
            select_policy=self.select_policy,
            policies=tuple(HpaPolicy(r.type, r.value, r.period_seconds) for r in self.policies)
            or None,
            stabilization_window_seconds=self.stabilization_window_seconds,
        )


# hpa_common
class Behavior(Params):
    scale_up: ScalingRulesModel | None = None
    scale_down: ScalingRulesModel | None = None

    def up(self) -> ScalingRules:
        return generate_scale_up_rules(self.scale_up.rules() if self.scale_up else None)

    def down(self) -> ScalingRules:
        return generate_scale_down_rules(self.scale_down.rules() if self.scale_down else None)

    def windows(self) -> tuple[int, int]:
        """(up, down) stabilization seconds, the scale-down default being the 300 s flag."""
        return stabilization_windows(self.up(), self.down())


# hpa
class HpaParams(Params):
    metrics: tuple[HpaMetric, ...] = Field(min_length=1)
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(10, ge=1)
    tolerance: float = Field(0.1, ge=0, lt=1)
    behavior: Behavior = Field(default_factory=Behavior)

    @model_validator(mode="after")
    def _bounds(self) -> HpaParams:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"maxReplicas ({self.max_replicas}) must be >= minReplicas ({self.min_replicas})"
            )
        return self


# keda
class KedaParams(Params):
    trigger: HpaMetric
    activation_threshold: float = Field(0.0, ge=0)
    polling_interval_seconds: float = Field(30.0, gt=0)
    cooldown_period_seconds: float = Field(300.0, ge=0)
    initial_cooldown_period_seconds: float = Field(0.0, ge=0)
    min_replica_count: int = Field(0, ge=0)
    max_replica_count: int = Field(100, ge=1)
    idle_replica_count: int | None = Field(None, ge=0)
    tolerance: float = Field(0.1, ge=0, lt=1)
    behavior: Behavior = Field(default_factory=Behavior)

    @model_validator(mode="after")
    def _bounds(self) -> KedaParams:
        if self.max_replica_count < self.min_replica_count:
            raise ValueError(
                f"maxReplicaCount ({self.max_replica_count}) must be >= "
                f"minReplicaCount ({self.min_replica_count})"
            )
        if self.idle_replica_count is not None and self.idle_replica_count >= max(
            self.min_replica_count, 1
        ):
            raise ValueError("idleReplicaCount must be below minReplicaCount")
        return self


# llm
#: p95 of the time requests wait before their prefill starts (vLLM's
#: ``vllm:request_queue_time_seconds`` histogram): the part of TTFT that replicas can shorten.
QUEUE_TIME_P95_SECONDS = "queue_time_p95_seconds"


class LlmParams(Params):
    slo_ttft_seconds: float = Field(gt=0, description="the TTFT SLO the latency terms aim at")
    # Capacity model of one replica.
    prefill_tokens_per_second: float = Field(gt=0, description="prompt tokens/s one replica")
    decode_tokens_per_second: float = Field(gt=0, description="generation tokens/s one replica")
    target_utilization: float = Field(0.7, gt=0, le=1, description="of the capacity model")
    burst_reserve: float = Field(
        0.0, ge=0, le=10, description="spare replicas per square root of the load in replicas"
    )
    phases: Literal["shared", "separate"] = Field(
        "shared", description="prefill and decode share the GPU (sum) or run apart (max)"
    )
    token_window_seconds: float = Field(60.0, gt=0)
    include_throttled: bool = True
    # Queue.
    waiting_per_replica: float = Field(2.0, gt=0, description="waiting requests one replica holds")
    queue_window_seconds: float = Field(10.0, gt=0)
    queue_aggregation: Literal["mean", "max", "last"] = "mean"
    queue_drain_seconds: float = Field(
        30.0, ge=0, description="a queue shrinking fast enough to clear in this adds nothing"
    )
    queue_while_starting: bool = Field(
        False, description="let the queue add replicas while others start (bursty traffic)"
    )
    unserved_demand: bool = Field(
        False, description="size for arrivals (rps) while the queue grows, not served tokens"
    )
    queue_max_growth: float = Field(
        2.0, ge=1, description="the queue term asks for at most this times the ready replicas"
    )
    # KV cache.
    kv_target: float = Field(0.8, gt=0, le=1, description="KV-cache usage fraction to run at")
    kv_window_seconds: float = Field(30.0, gt=0)
    # Latency floor.
    ttft_signal: str = signals.TTFT_P95_SECONDS
    ttft_window_seconds: float = Field(30.0, gt=0)
    ttft_scale_up_fraction: float = Field(
        0.8, gt=0, description="of the SLO after prefill: TTFT less prefill above adds replicas"
    )
    ttft_hold_fraction: float = Field(
        0.5, gt=0, description="of the SLO after prefill: above, never scale down"
    )
    ttft_min_waiting: float = Field(
        1.0, ge=0, description="TTFT (used without queue time) counts only while this many wait"
    )
    queue_time_signal: str | None = Field(
        QUEUE_TIME_P95_SECONDS, description="p95 time requests wait before prefill (optional)"
    )
    queue_time_fraction: float = Field(
        0.25, gt=0, description="of the SLO after prefill: queue time above adds, above half holds"
    )
    latency_max_growth: float = Field(
        2.0,
        ge=1,
        description="a latency term asks for at most this times the ready replicas (and one more)",
    )
    settle_seconds: float = Field(
        30.0, ge=0, description="latency after replicas became ready is ignored this long"
    )
    # Scale-down.
    scale_down_margin: float = Field(0.15, ge=0, lt=1, description="below the targets by this")
    scale_down_delay_seconds: float = Field(300.0, ge=0, description="condition held this long")
    scale_down_step_seconds: float | None = Field(
        None, ge=0, description="at most one step per this (default: the delay)"
    )
    scale_down_max_replicas: int = Field(
        1,
        ge=1,
        description="replicas one step may remove, as many as the rest carry below the targets",
    )
    # Guard.
    gpu_busy_utilization: float | None = Field(
        0.95, gt=0, le=1, description="no scale-down while mean GPU utilisation is above"
    )
    gpu_window_seconds: float = Field(60.0, gt=0)
    # Token budget.
    budget_tokens_per_replica: float | None = Field(
        None, gt=0, description="tokens/s one replica serves in SLO; default: capacity model"
    )
    budget_utilization: float = Field(1.0, gt=0, description="of the per-replica token rate")

    @model_validator(mode="after")
    def _ordered_fractions(self) -> LlmParams:
        if self.ttft_hold_fraction > self.ttft_scale_up_fraction:
            raise ValueError(
                f"ttftHoldFraction ({self.ttft_hold_fraction:g}) must be <= "
                f"ttftScaleUpFraction ({self.ttft_scale_up_fraction:g})"
            )
        return self
