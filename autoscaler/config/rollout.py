"""The ``rollout`` block of a target: an autoscaling-aware canary rollout (docs/rollouts.md).

    rollout:
      steps: [5, 10, 25, 50, 100]          # canary traffic percent per step (or stepWeight)
      intervalSeconds: 120                 # how long each step holds with passing analysis
      progressDeadlineSeconds: 900         # canary capacity not ready by then: roll back
      analysis:
        prometheus: {url: http://prometheus.monitoring:9090}
        intervalSeconds: 30                # one check every 30 s (a step needs 120/30 = 4)
        failedChecks: 3                    # failed checks in the rollout that roll it back
        metrics:
          - name: error_rate
            query: 'sum(rate(revision_request_count{revision_name="{canary}",
                    response_code_class="5xx"}[1m])) / sum(rate(revision_request_count{
                    revision_name="{canary}"}[1m]))'
            max: 0.01
      webhooks:
        - {name: smoke-test, url: http://tester.ci/run}

In a query, ``{canary}`` and ``{stable}`` are the revision names, ``{namespace}`` and ``{name}``
the target's (plain text replacement, as for ``signals.prometheus``).
"""

from __future__ import annotations

import math

from pydantic import Field, field_validator, model_validator

from autoscaler.policy.api import Params


class AnalysisMetric(Params):
    """One PromQL query whose value must lie in ``[min, max]`` (either bound may be omitted)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    query: str = Field(min_length=1)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounded(self) -> AnalysisMetric:
        if self.min is None and self.max is None:
            raise ValueError(f"metric {self.name}: set min, max or both")
        for bound in (self.min, self.max):
            if bound is not None and not math.isfinite(bound):
                raise ValueError(f"metric {self.name}: bounds must be finite numbers")
        if self.min is not None and self.max is not None and self.max < self.min:
            raise ValueError(f"metric {self.name}: max ({self.max}) must be >= min ({self.min})")
        return self

    def passes(self, value: float) -> bool:
        if self.min is not None and value < self.min:
            return False
        return self.max is None or value <= self.max


class AnalysisServer(Params):
    url: str = Field(pattern=r"^https?://")
    timeout_seconds: float = Field(5.0, gt=0, le=120)
    retries: int = Field(2, ge=0, le=10)


class Analysis(Params):
    prometheus: AnalysisServer
    interval_seconds: float = Field(30.0, gt=0, description="one check per interval")
    failed_checks: int = Field(3, ge=1, description="failed checks that roll the rollout back")
    metrics: tuple[AnalysisMetric, ...] = Field(min_length=1)

    @field_validator("metrics")
    @classmethod
    def _unique(cls, metrics: tuple[AnalysisMetric, ...]) -> tuple[AnalysisMetric, ...]:
        names = [m.name for m in metrics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"metric names must be unique: {', '.join(dupes)} listed twice")
        return metrics


class Webhook(Params):
    """POSTed (JSON) before each step; a non-2xx answer or no answer blocks the step and counts
    one failed check."""

    name: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://")
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    metadata: dict[str, str] = Field(default_factory=dict)


class Rollout(Params):
    steps: tuple[int, ...] | None = Field(None, min_length=1)
    step_weight: int | None = Field(None, ge=1, le=100)
    max_weight: int | None = Field(None, ge=1, le=100)
    interval_seconds: float = Field(120.0, gt=0, description="hold of each step")
    progress_deadline_seconds: float = Field(
        900.0, gt=0, description="canary not ready for a step this long: roll back"
    )
    max_canary_replicas: int | None = Field(None, ge=1, description="cap of the pre-scale")
    analysis: Analysis
    webhooks: tuple[Webhook, ...] = ()

    @model_validator(mode="after")
    def _one_schedule(self) -> Rollout:
        if (self.steps is None) == (self.step_weight is None):
            raise ValueError("set exactly one of steps or stepWeight")
        if self.steps is not None:
            if self.max_weight is not None:
                raise ValueError("maxWeight goes with stepWeight, not with steps")
            for s in self.steps:
                if not 1 <= s <= 100:
                    raise ValueError(f"steps must be percentages from 1 to 100, not {s}")
            if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
                raise ValueError(f"steps must increase strictly: {list(self.steps)}")
        elif (
            self.max_weight is not None
            and self.step_weight is not None
            and self.max_weight < self.step_weight
        ):
            raise ValueError(
                f"maxWeight ({self.max_weight}) must be >= stepWeight ({self.step_weight})"
            )
        if self.analysis.interval_seconds > self.interval_seconds:
            raise ValueError(
                f"analysis.intervalSeconds ({self.analysis.interval_seconds}) must be <= "
                f"intervalSeconds ({self.interval_seconds})"
            )
        return self

    def weights(self) -> tuple[int, ...]:
        """The canary's traffic percent at each step; promotion follows the last one."""
        if self.steps is not None:
            return self.steps
        step = self.step_weight or 100
        top = self.max_weight if self.max_weight is not None else 100
        return tuple(range(step, top + 1, step))

    def checks_per_step(self) -> int:
        """Passing checks a step needs: its hold divided by the check interval, at least one."""
        return max(1, math.ceil(self.interval_seconds / self.analysis.interval_seconds - 1e-9))
