"""``predictive``: a reactive policy with a floor raised ahead of forecast demand.

desired = max(inner proposal, floor), floor = ceil(forecast / (capacityPerReplica x
targetUtilization) + burstReserve x sqrt(forecast / capacityPerReplica)), where the forecast is
the largest demand a predictor expects over the next ``horizonSeconds`` (set it to about the
cold start: a replica asked for now serves from then on). Demand is measured per
bucket of ``bucketSeconds`` (the rate of the request counter, or the mean of a gauge) and fed to
the forecasters once per bucket, so the per-tick cost is the inner policy's plus a comparison.

A predictor (seasonal-naive, Holt-Winters) raises the floor only while its rolling MAE over its
last ``errorWindow`` scored forecasts (each scored when the bucket it forecast closes) beats the
last-value baseline's, which is always computed beside it; otherwise the policy is the inner
policy alone. The decision's reason names the predictor in use (or why none is) and its inputs
carry the forecast, the floor and every MAE.

Never below the inner policy; when the inner policy has no valid proposal (missing data) this
policy has none either, whatever the forecast says: a forecast may raise a floor, it never
decides alone. Missing demand for a bucket is filled with the last value and not scored; a gap
longer than a season restarts the forecasters.

State: a frozen dataclass carried across reloads (same inner policy name -> the inner state is
carried; same forecasting settings -> the forecasters are kept). The forecaster bank inside it is
the one mutable part (O(1) updates over a season-long ring, see ``autoscaler.policy.forecast``);
the engine keeps only the newest state, so no older state is ever read again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from autoscaler.core import signals
from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import EMPTY, Proposal
from autoscaler.policy.api import Params, Policy
from autoscaler.policy.builtin.common import NestedPolicy
from autoscaler.policy.forecast import HoltWinters, LastValue, Scored, SeasonalNaive

PredictorName = Literal["seasonal-naive", "holt-winters"]


class InnerPolicy(NestedPolicy):
    outer: ClassVar[str] = "predictive"
    self_reference: ClassVar[str] = "a predictive policy cannot wrap another predictive policy"


class HoltWintersParams(Params):
    alpha: float = Field(0.3, ge=0, le=1, description="level smoothing")
    beta: float = Field(0.05, ge=0, le=1, description="trend smoothing")
    gamma: float = Field(0.2, ge=0, le=1, description="seasonal smoothing")
    phi: float = Field(0.9, gt=0, le=1, description="trend damping (1 = undamped)")


class PredictiveParams(Params):
    inner: InnerPolicy
    counters: tuple[str, ...] = (signals.REQUESTS_TOTAL,)
    gauge: str | None = Field(None, description="a demand gauge to use instead of counters")
    capacity_per_replica: float = Field(gt=0, description="demand/s one replica serves in SLO")
    target_utilization: float = Field(0.8, gt=0, le=1)
    burst_reserve: float = Field(
        0.0, ge=0, le=10, description="spare replicas per square root of the forecast load"
    )
    bucket_seconds: float = Field(300.0, ge=10, description="demand is forecast per bucket")
    season_seconds: float | None = Field(86400.0, description="None: no seasonal predictor")
    horizon_seconds: float = Field(180.0, gt=0, description="about the cold start")
    predictors: tuple[PredictorName, ...] = Field(("seasonal-naive", "holt-winters"), min_length=1)
    holt_winters: HoltWintersParams = HoltWintersParams()
    error_window: int = Field(48, ge=1, description="scored forecasts in the rolling MAE")
    min_scored: int = Field(12, ge=1, description="scored forecasts before a predictor is used")
    margin: float = Field(0.0, ge=0, lt=1, description="MAE must be < (1 - margin) x baseline")

    @field_validator("counters")
    @classmethod
    def _some_counter(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("name at least one counter (or set gauge)")
        return v

    @model_validator(mode="after")
    def _season_fits(self) -> PredictiveParams:
        s = self.season_seconds
        if s is not None:
            n = s / self.bucket_seconds
            if abs(n - round(n)) > 1e-9 or round(n) < 2:
                raise ValueError(
                    f"seasonSeconds ({s:g}) must be a whole multiple (>= 2) of bucketSeconds "
                    f"({self.bucket_seconds:g})"
                )
        if "seasonal-naive" in self.predictors and s is None:
            raise ValueError("predictor seasonal-naive needs seasonSeconds")
        if self.min_scored > self.error_window:
            raise ValueError(
                f"minScored ({self.min_scored}) must be <= errorWindow ({self.error_window})"
            )
        return self


class ForecastBank:
    """The last-value baseline and the predictors, all fed the same per-bucket demand."""

    __slots__ = ("baseline", "key", "predictors", "season")

    def __init__(self, p: PredictiveParams) -> None:
        self.key = _bank_key(p)
        horizon = _horizon_buckets(p)
        self.season = _season_buckets(p)
        self.baseline = Scored(LastValue(), horizon, p.error_window)
        self.predictors: list[Scored] = []
        hw = p.holt_winters
        for name in p.predictors:
            model: SeasonalNaive | HoltWinters
            if name == "seasonal-naive":
                assert self.season is not None  # checked by the params
                model = SeasonalNaive(self.season)
            else:
                model = HoltWinters(self.season, hw.alpha, hw.beta, hw.gamma, hw.phi)
            self.predictors.append(Scored(model, horizon, p.error_window))

    def observe(self, y: float, *, score: bool = True) -> None:
        if score:
            self.baseline.observe(y)
            for s in self.predictors:
                s.observe(y)
        else:
            _fill(self.baseline, y)
            for s in self.predictors:
                _fill(s, y)


def _fill(s: Scored, y: float) -> None:
    """Feed a stand-in value (a missing bucket) without scoring the forecast it targeted."""
    slot = s.count % s.horizon
    s.model.update(y)
    s._pending[slot] = None  # nothing to score against a stand-in later either
    s.count += 1


def _horizon_buckets(p: PredictiveParams) -> int:
    return max(1, math.ceil(p.horizon_seconds / p.bucket_seconds - 1e-9))


def _season_buckets(p: PredictiveParams) -> int | None:
    return None if p.season_seconds is None else round(p.season_seconds / p.bucket_seconds)


def _bank_key(p: PredictiveParams) -> tuple[object, ...]:
    return (
        p.counters,
        p.gauge,
        p.bucket_seconds,
        p.season_seconds,
        p.horizon_seconds,
        p.predictors,
        p.holt_winters,
        p.error_window,
    )


@dataclass(frozen=True, slots=True)
class PredictiveState:
    inner: object  # the inner policy's state
    inner_name: str
    bank: ForecastBank | None = None  # None until the first bucket starts
    bucket: int = -1  # index of the bucket in progress (floor(now / bucketSeconds))
    # While a predictor is in use: floors[j] = replicas for the largest forecast over buckets
    # bucket..bucket + j (prefix maxima), and forecasts[j] that largest forecast.
    floors: tuple[int, ...] | None = None
    forecasts: tuple[float, ...] | None = None
    reason: str = "predictive: warming up"
    inputs: MappingProxyType[str, float] | None = None


class PredictivePolicy(Policy[PredictiveParams, PredictiveState]):
    name: ClassVar[str] = "predictive"
    params_model: ClassVar[type[Params]] = PredictiveParams

    def __init__(self, params: PredictiveParams) -> None:
        super().__init__(params)
        self.inner: Policy[Any, Any] = params.inner.build()
        self._horizon = _horizon_buckets(params)
        # Buckets the floor may have to cover: the one in progress up to the one holding
        # now + horizon, for any now inside the bucket in progress.
        self._steps = math.ceil(params.horizon_seconds / params.bucket_seconds - 1e-9) + 1
        self._per_replica = params.capacity_per_replica * params.target_utilization

    def _floor(self, forecast: float) -> int:
        """Replicas for a forecast: its load at the target utilization, plus the square-root
        reserve (as the ``tokens`` policy's burstReserve: a forecast is a mean, and the arrivals
        around it are random, so a quiet fleet needs relatively more spare than a busy one)."""
        p = self.params
        need = forecast / self._per_replica
        if p.burst_reserve > 0:  # at 0 the same arithmetic as before the reserve existed
            need += p.burst_reserve * math.sqrt(forecast / p.capacity_per_replica)
        return math.ceil(need - 1e-9)

    def required_signals(self) -> tuple[str, ...]:
        # The demand signal is optional (no forecast -> the inner policy alone); the fallback
        # guard watches what the inner policy cannot decide without.
        return self.inner.required_signals()

    def retention_seconds(self) -> float:
        # The demand of a bucket is read over the trailing bucket when it closes.
        return max(self.inner.retention_seconds(), self.params.bucket_seconds + 30.0)

    def initial_state(self, snap: Snapshot) -> PredictiveState:
        return PredictiveState(self.inner.initial_state(snap), self.params.inner.name)

    def carry_state(self, old: object, snap: Snapshot) -> PredictiveState:
        if not isinstance(old, PredictiveState):
            return self.initial_state(snap)
        if old.inner_name == self.params.inner.name:
            inner = self.inner.carry_state(old.inner, snap)
        else:
            inner = self.inner.initial_state(snap)
        bank = old.bank if old.bank is not None and old.bank.key == _bank_key(self.params) else None
        if bank is None:
            return PredictiveState(inner, self.params.inner.name)
        # Same forecasters: choose again now, as capacity, margin or minScored may have changed.
        return self._choose(PredictiveState(inner, self.params.inner.name), bank, old.bucket, None)

    def _demand(self, snap: Snapshot) -> float | None:
        p = self.params
        span = p.bucket_seconds
        if p.gauge is not None:
            return snap.mean(p.gauge, span)
        total = 0.0
        for name in p.counters:
            r = snap.rate(name, span)
            if r is None:
                return None
            total += r
        return total

    def _new_bucket(self, snap: Snapshot, state: PredictiveState, bucket: int) -> PredictiveState:
        p = self.params
        bank = state.bank
        if bank is None or state.bucket < 0:
            return PredictiveState(state.inner, state.inner_name, bank or ForecastBank(p), bucket)
        gap = bucket - state.bucket
        season = bank.season or 1
        y = self._demand(snap)
        if gap > max(season, self._horizon) + 1:
            bank = ForecastBank(p)  # the history no longer lines up with the clock
            if y is not None:
                bank.observe(y)
        else:
            stand_in = bank.baseline.model.forecast(1)
            for _ in range(gap - 1):  # buckets with no decision at all
                if stand_in is not None:
                    bank.observe(stand_in, score=False)
            if y is not None:
                bank.observe(y)
            elif stand_in is not None:
                bank.observe(stand_in, score=False)
        return self._choose(state, bank, bucket, y)

    def _choose(
        self, state: PredictiveState, bank: ForecastBank, bucket: int, y: float | None
    ) -> PredictiveState:
        p = self.params
        base = bank.baseline.mae
        base_mae = base.value if base.n >= p.min_scored else None
        inputs: dict[str, float] = {}
        if y is not None:
            inputs["demand_bucket"] = y
        if base_mae is not None:
            inputs["mae_last_value"] = base_mae
        best: Scored | None = None
        best_mae = math.inf
        for s in bank.predictors:
            mae = s.mae.value if s.mae.n >= p.min_scored else None
            if mae is None:
                continue
            inputs["mae_" + s.name.replace("-", "_")] = mae
            if base_mae is not None and mae < (1 - p.margin) * base_mae and mae < best_mae:
                best, best_mae = s, mae
        if best is None:
            reason = (
                "predictive: no predictor beats last-value; reactive"
                if base_mae is not None
                else "predictive: too few scored forecasts; reactive"
            )
            return PredictiveState(
                state.inner,
                state.inner_name,
                bank,
                bucket,
                reason=reason,
                inputs=MappingProxyType(inputs),
            )
        forecasts: list[float] = []
        for step in range(1, self._steps + 1):
            f = best.model.forecast(step)
            if f is None:
                return PredictiveState(
                    state.inner,
                    state.inner_name,
                    bank,
                    bucket,
                    reason=f"predictive: {best.name} not ready; reactive",
                    inputs=MappingProxyType(inputs),
                )
            forecasts.append(max(f, forecasts[-1]) if forecasts else max(f, 0.0))
        floors = tuple(self._floor(f) for f in forecasts)
        reason = f"predictive: {best.name} (MAE {best_mae:.4g} < last-value {base_mae:.4g})"
        return PredictiveState(
            state.inner,
            state.inner_name,
            bank,
            bucket,
            floors,
            tuple(forecasts),
            reason,
            MappingProxyType(inputs),
        )

    def decide(self, snap: Snapshot, state: PredictiveState) -> tuple[Proposal, PredictiveState]:
        inner_prop, inner_state = self.inner.decide(snap, state.inner)
        bucket = math.floor(snap.now / self.params.bucket_seconds)
        if bucket != state.bucket:
            state = self._new_bucket(snap, state, bucket)
        if inner_state is not state.inner:
            state = PredictiveState(
                inner_state,
                state.inner_name,
                state.bank,
                state.bucket,
                state.floors,
                state.forecasts,
                state.reason,
                state.inputs,
            )
        ours = state.inputs if state.inputs is not None else EMPTY
        inner_replicas = inner_prop.replicas
        inputs: dict[str, float] = {**inner_prop.inputs, **ours}
        if inner_replicas is None:
            return Proposal(
                None,
                token_rate=inner_prop.token_rate,
                reason=f"{state.reason}; inner {self.params.inner.name}: {inner_prop.reason}",
                inputs=inputs,
            ), state
        inputs["inner_replicas"] = float(inner_replicas)
        floors = state.floors
        if floors is None or state.forecasts is None:
            return Proposal(
                inner_replicas,
                token_rate=inner_prop.token_rate,
                reason=f"{state.reason}; {self.params.inner.name} {inner_replicas}",
                inputs=inputs,
            ), state
        # The buckets from the one in progress to the one holding now + horizon.
        p = self.params
        last = math.floor((snap.now + p.horizon_seconds) / p.bucket_seconds) - state.bucket
        j = min(max(last, 0), len(floors) - 1)
        floor = floors[j]
        inputs["forecast_demand"] = state.forecasts[j]
        inputs["forecast_floor"] = float(floor)
        if floor > inner_replicas:
            replicas = floor
            reason = f"{state.reason}; floor {floor} > {self.params.inner.name} {inner_replicas}"
        else:
            replicas = inner_replicas
            reason = f"{state.reason}; {self.params.inner.name} {inner_replicas}"
        return Proposal(
            replicas, token_rate=inner_prop.token_rate, reason=reason, inputs=inputs
        ), state
