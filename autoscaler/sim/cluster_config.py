"""The cluster model YAML: what one replica of the served model can do and how fast it starts.

    apiVersion: autoscaler.kserve.io/v1alpha1
    kind: ClusterModel
    metadata: {name: llama-8b-h100}
    spec:
      gpusPerReplica: 1
      coldStart: {meanSeconds: 90, cv: 0.25}
      llm: {prefillTokensPerSecond: 12000, ...}

Defaults describe a 7-8B model served by vLLM on one H100-class GPU; docs/simulator.md names the
published figures they come from. Validated like policies (FILE:LINE:COL errors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from autoscaler.config.loader import parse_document, read_text
from autoscaler.config.models import Metadata
from autoscaler.policy.api import Params


class ColdStart(Params):
    mean_seconds: float = Field(90.0, ge=0, description="pod created -> ready (model load)")
    cv: float = Field(0.25, ge=0, description="coefficient of variation (lognormal)")


class LlmCapacity(Params):
    """Continuous batching on one replica.

    A request holds one of ``slots`` sequence slots from admission to its last token; slots are
    min(maxNumSeqs, kvCacheTokens / mean tokens per request of the trace), so long contexts leave
    fewer concurrent sequences. TTFT = queueing + prefill; decode time per output token grows with
    the batch: tpot(b) = tpotSeconds x (1 + tpotSlopePerSeq x (b - 1)).
    """

    prefill_tokens_per_second: float = Field(12000.0, gt=0)
    tpot_seconds: float = Field(0.007, gt=0, description="time per output token at batch 1")
    tpot_slope_per_seq: float = Field(0.04, ge=0)
    max_num_seqs: int = Field(256, ge=1)
    kv_cache_tokens: int = Field(400_000, ge=1)
    # Token demand one replica is sized for, for policies' capacity params (documentation only).


class ServiceModel(Params):
    """Requests without tokens: each holds one of ``concurrency`` slots for its service time."""

    concurrency: int = Field(1, ge=1)
    mean_seconds: float = Field(0.1, gt=0, description="used when the trace has no service time")
    distribution: Literal["exponential", "deterministic", "lognormal"] = "exponential"
    cv: float = Field(1.0, ge=0, description="for lognormal")
    speedup: float = Field(1.0, gt=0, description="divide trace service times by this")


class Signals(Params):
    """How signals reach the policy, as the live sources deliver them."""

    tick_seconds: float = Field(1.0, gt=0, description="engine tick interval")
    scrape_seconds: float | None = Field(
        None, gt=0, description="load signals are scraped this often (default: every tick)"
    )
    lag_seconds: float = Field(0.0, ge=0, description="scrape-to-decision delay")

    @model_validator(mode="after")
    def _whole_ticks(self) -> Signals:
        if self.scrape_seconds is not None:
            ratio = self.scrape_seconds / self.tick_seconds
            if ratio < 1 or abs(ratio - round(ratio)) > 1e-9:
                raise ValueError(
                    f"scrapeSeconds ({self.scrape_seconds:g}) must be a whole multiple of "
                    f"tickSeconds ({self.tick_seconds:g})"
                )
        return self

    @property
    def scrape_every(self) -> int:
        """Ticks between scrapes."""
        if self.scrape_seconds is None:
            return 1
        return round(self.scrape_seconds / self.tick_seconds)


class ClusterSpec(Params):
    gpus_per_replica: float = Field(1.0, ge=0)
    initial_replicas: int = Field(1, ge=0)
    cold_start: ColdStart = Field(default_factory=ColdStart)
    llm: LlmCapacity = Field(default_factory=LlmCapacity)
    service: ServiceModel = Field(default_factory=ServiceModel)
    mode: Literal["auto", "llm", "service"] = Field(
        "auto", description="auto: llm when the trace has tokens, else service"
    )
    max_queue_seconds: float = Field(60.0, gt=0, description="a request waiting longer times out")
    signals: Signals = Field(default_factory=Signals)
    slo_ttft_seconds: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _sane(self) -> ClusterSpec:
        if self.signals.lag_seconds > 60 * self.signals.tick_seconds:
            raise ValueError("signals.lagSeconds is more than 60 ticks")
        return self


class ClusterModelFile(Params):
    api_version: Literal["autoscaler.kserve.io/v1alpha1"] = "autoscaler.kserve.io/v1alpha1"
    kind: Literal["ClusterModel"] = "ClusterModel"
    metadata: Metadata = Field(default_factory=lambda: Metadata(name="default"))
    spec: ClusterSpec = Field(default_factory=ClusterSpec)


def load_cluster(path: str | Path | None) -> ClusterModelFile:
    """The cluster model in ``path``, or the calibrated defaults when None."""
    if path is None:
        return ClusterModelFile()
    return parse_document(read_text(path), str(path), ClusterModelFile, "ClusterModel")
