"""Where a target's signals come from: pod scrape mappings (data, with presets) and PromQL.

    signals:
      scrape:                       # the low-latency path: each ready pod's /metrics
        port: 8080
        presets: [vllm]             # vllm, kserve, queue-proxy, tgi, agent
        metrics:                    # extra or overriding mappings
          - {signal: requests_waiting, metric: "vllm:num_requests_waiting", aggregate: sum}
      prometheus:                   # for users who already aggregate in Prometheus
        url: http://prometheus.monitoring:9090
        queries:
          - signal: gpu_utilization
            query: 'avg(DCGM_FI_DEV_GPU_UTIL{namespace="{namespace}"}) / 100'

A mapping names the metric family (several names: the first one present wins, e.g. vLLM's old
and new KV-cache gauge), its type, how to combine pods, and for histograms the quantile.
Counters are turned into rates by the engine's windows (with reset handling), per pod by the
sources so a pod replaced mid-window does not read as a reset of the whole target.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from autoscaler.core import signals as sig
from autoscaler.policy.api import Params
from autoscaler.policy.builtin.llm import QUEUE_TIME_P95_SECONDS

MetricType = Literal["gauge", "counter", "histogram"]


class MetricMapping(Params):
    signal: str = Field(min_length=1)
    metric: tuple[str, ...] = Field(min_length=1, description="family names, first present wins")
    type: MetricType = "gauge"
    aggregate: Literal["sum", "mean", "max"] = "sum"
    quantile: float | None = Field(None, gt=0, lt=1, description="histograms: e.g. 0.95")
    labels: dict[str, str] = Field(default_factory=dict, description="only samples with these")
    scale: float = 1.0

    @field_validator("metric", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return (v,) if isinstance(v, str) else v


def _m(
    signal: str,
    metric: str | tuple[str, ...],
    type: MetricType = "gauge",
    aggregate: Literal["sum", "mean", "max"] = "sum",
    quantile: float | None = None,
    scale: float = 1.0,
) -> MetricMapping:
    names = (metric,) if isinstance(metric, str) else metric
    return MetricMapping(
        signal=signal, metric=names, type=type, aggregate=aggregate, quantile=quantile, scale=scale
    )


#: Known metric families of the servers KServe runs, as data.
PRESETS: dict[str, tuple[MetricMapping, ...]] = {
    "vllm": (
        _m(sig.RUNNING, "vllm:num_requests_running"),
        _m(sig.WAITING, "vllm:num_requests_waiting"),
        # Renamed in vLLM v0.10 (gpu_cache_usage_perc -> kv_cache_usage_perc); both are fractions.
        _m(
            sig.KV_CACHE_USAGE,
            ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
            aggregate="mean",
        ),
        _m(sig.PROMPT_TOKENS_TOTAL, "vllm:prompt_tokens", "counter"),
        _m(sig.GENERATION_TOKENS_TOTAL, "vllm:generation_tokens", "counter"),
        _m(sig.REQUESTS_TOTAL, "vllm:request_success", "counter"),
        _m(sig.TTFT_P95_SECONDS, "vllm:time_to_first_token_seconds", "histogram", "max", 0.95),
        # Time before prefill starts: the part of TTFT that more replicas shorten (llm policy).
        _m(QUEUE_TIME_P95_SECONDS, "vllm:request_queue_time_seconds", "histogram", "max", 0.95),
    ),
    "kserve": (
        # The request count is the latency histogram's _count sample.
        _m(sig.REQUESTS_TOTAL, "request_predict_seconds_count", "counter"),
        _m("latency_p95_seconds", "request_predict_seconds", "histogram", "max", 0.95),
    ),
    "queue-proxy": (
        _m(sig.CONCURRENCY, "queue_average_concurrent_requests"),
        _m(sig.RPS, "queue_requests_per_second"),
    ),
    "tgi": (
        _m(sig.WAITING, "tgi_queue_size"),
        _m(sig.RUNNING, "tgi_batch_current_size"),
        _m(sig.REQUESTS_TOTAL, "tgi_request_count", "counter"),
        # A histogram of tokens per request: its _sum sample counts the tokens generated.
        _m(sig.GENERATION_TOKENS_TOTAL, "tgi_request_generated_tokens_sum", "counter"),
    ),
    "agent": (
        _m(sig.GPU_UTILIZATION, "autoscaler_agent_gpu_utilization_ratio", aggregate="mean"),
        _m(sig.GPU_MEMORY_USED_FRACTION, "autoscaler_agent_gpu_memory_used_ratio", aggregate="max"),
        _m(sig.THROTTLED_TOKENS_PER_SECOND, "autoscaler_agent_rejected_tokens", "counter"),
    ),
}
PresetName = Literal["vllm", "kserve", "queue-proxy", "tgi", "agent"]


class PodScrape(Params):
    port: int = Field(8080, ge=1, le=65535)
    path: str = Field("/metrics", pattern=r"^/")
    scheme: Literal["http", "https"] = "http"
    presets: tuple[PresetName, ...] = ("vllm",)
    metrics: tuple[MetricMapping, ...] = ()
    timeout_seconds: float = Field(2.0, gt=0, le=60)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    pod_labels: dict[str, str] = Field(
        default_factory=dict, description="override how the target's pods are found"
    )

    def mappings(self) -> tuple[MetricMapping, ...]:
        """Preset mappings, then explicit ones; an explicit mapping replaces a preset's signal."""
        explicit = {m.signal for m in self.metrics}
        out = [m for p in self.presets for m in PRESETS[p] if m.signal not in explicit]
        return (*out, *self.metrics)


class PromQuery(Params):
    signal: str = Field(min_length=1)
    query: str = Field(min_length=1, description="PromQL; {namespace} and {name} are filled in")


class PrometheusSource(Params):
    url: str = Field(pattern=r"^https?://")
    queries: tuple[PromQuery, ...] = Field(min_length=1)
    timeout_seconds: float = Field(5.0, gt=0, le=120)
    retries: int = Field(2, ge=0, le=10)


class Signals(Params):
    scrape: PodScrape | None = Field(default_factory=PodScrape)
    prometheus: PrometheusSource | None = None
