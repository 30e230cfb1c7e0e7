"""Demand forecasters for the ``predictive`` policy: pure Python, typed, O(1) per update.

Each forecaster sees one value per bucket (e.g. the mean request rate of a 5-minute bucket) in
time order through ``update(y)`` and answers ``forecast(h)``: the value expected ``h >= 1``
buckets after the last one it saw, or None while it has not seen enough to say.

- ``LastValue``: the last value (the "no change" baseline every predictor must beat).
- ``SeasonalNaive``: the value one season earlier at the same phase.
- ``HoltWinters``: additive Holt-Winters (level, trend and a seasonal profile), or Holt's linear
  trend when ``season`` is None.

Memory is bounded by the season length (a ring of ``season`` values); an update touches a fixed
number of slots and never scans the history. The classes are mutable on purpose: copying a
season-long tuple per update would make an update O(season). ``copy()`` gives an independent
snapshot where one is needed.
"""

from __future__ import annotations

import math
from typing import Protocol


class Forecaster(Protocol):
    name: str

    def update(self, y: float) -> None: ...

    def forecast(self, h: int) -> float | None: ...


def _check_value(y: float) -> None:
    if not math.isfinite(y):
        raise ValueError(f"forecaster input must be finite, got {y!r}")


def _check_h(h: int) -> None:
    if h < 1:
        raise ValueError(f"forecast horizon must be >= 1 bucket, got {h}")


class LastValue:
    """forecast(h) = the last value seen."""

    __slots__ = ("last", "name")

    def __init__(self) -> None:
        self.name = "last-value"
        self.last: float | None = None

    def update(self, y: float) -> None:
        _check_value(y)
        self.last = y

    def forecast(self, h: int) -> float | None:
        _check_h(h)
        return self.last

    def copy(self) -> LastValue:
        c = LastValue()
        c.last = self.last
        return c


class SeasonalNaive:
    """forecast(h) = the value seen ``season`` buckets before the bucket being forecast.

    For h > season the same phase of the last full season is repeated. None until one full
    season has been seen.
    """

    __slots__ = ("_ring", "count", "name", "season")

    def __init__(self, season: int) -> None:
        if season < 1:
            raise ValueError(f"season must be >= 1 bucket, got {season}")
        self.name = "seasonal-naive"
        self.season = season
        self._ring = [0.0] * season  # _ring[i % season] = the i-th value seen
        self.count = 0

    def update(self, y: float) -> None:
        _check_value(y)
        self._ring[self.count % self.season] = y
        self.count += 1

    def forecast(self, h: int) -> float | None:
        _check_h(h)
        if self.count < self.season:
            return None
        # The target is value index count - 1 + h; one season back, wrapped into the last season.
        m = self.season
        back = (self.count - 1 + h) - m * ((h - 1) // m + 1)
        return self._ring[back % m]

    def copy(self) -> SeasonalNaive:
        c = SeasonalNaive(self.season)
        c._ring = list(self._ring)
        c.count = self.count
        return c


class HoltWinters:
    """Additive Holt-Winters with smoothing factors alpha (level), beta (trend), gamma (season).

    Initialisation (the usual simple one): after the first full season, level = the season's
    mean, trend = 0, seasonal index i = y_i - level. From then on, for each value y_t:

        level_t  = alpha (y_t - s_{t-m}) + (1 - alpha) (level_{t-1} + trend_{t-1})
        trend_t  = beta (level_t - level_{t-1}) + (1 - beta) trend_{t-1}
        s_t      = gamma (y_t - level_t) + (1 - gamma) s_{t-m}
        forecast(h) = level_t + h trend_t + s_{t-m+1+((h-1) mod m)}

    With ``season=None`` there is no seasonal term (Holt's linear trend), initialised on the
    first value. ``damped`` (phi in (0, 1]) damps the trend, so a ramp is not extrapolated
    forever: forecast(h) = level + (phi + ... + phi^h) trend. ``floor`` clamps forecasts from
    below (demand is never negative).
    """

    __slots__ = (
        "_init_sum",
        "_seasonal",
        "alpha",
        "beta",
        "count",
        "floor",
        "gamma",
        "level",
        "name",
        "phi",
        "season",
        "trend",
    )

    def __init__(
        self,
        season: int | None,
        alpha: float = 0.3,
        beta: float = 0.05,
        gamma: float = 0.2,
        phi: float = 1.0,
        floor: float | None = 0.0,
    ) -> None:
        if season is not None and season < 2:
            raise ValueError(f"season must be >= 2 buckets (or None), got {season}")
        for label, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{label} must be in [0, 1], got {v}")
        if not 0.0 < phi <= 1.0:
            raise ValueError(f"phi must be in (0, 1], got {phi}")
        self.name = "holt-winters"
        self.season = season
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self.phi = phi
        self.floor = floor
        self.level = 0.0
        self.trend = 0.0
        self._seasonal = [0.0] * (season or 0)  # _seasonal[i % m] = index of phase i
        self._init_sum = 0.0
        self.count = 0

    @property
    def ready(self) -> bool:
        return self.count >= (self.season or 1)

    def update(self, y: float) -> None:
        _check_value(y)
        m = self.season
        t = self.count
        self.count = t + 1
        if m is None:
            if t == 0:
                self.level = y
                return
            prev = self.level
            self.level = self.alpha * y + (1 - self.alpha) * (prev + self.phi * self.trend)
            self.trend = self.beta * (self.level - prev) + (1 - self.beta) * self.phi * self.trend
            return
        if t < m:
            # First season: keep the values; fit the initial level and indices at its end.
            self._seasonal[t] = y
            self._init_sum += y
            if t == m - 1:
                self.level = self._init_sum / m
                for i in range(m):
                    self._seasonal[i] -= self.level
            return
        i = t % m
        s_old = self._seasonal[i]
        prev = self.level
        self.level = self.alpha * (y - s_old) + (1 - self.alpha) * (prev + self.phi * self.trend)
        self.trend = self.beta * (self.level - prev) + (1 - self.beta) * self.phi * self.trend
        self._seasonal[i] = self.gamma * (y - self.level) + (1 - self.gamma) * s_old

    def forecast(self, h: int) -> float | None:
        _check_h(h)
        if not self.ready:
            return None
        phi = self.phi
        damp = float(h) if phi == 1.0 else phi * (1 - phi**h) / (1 - phi)
        value = self.level + damp * self.trend
        m = self.season
        if m is not None:
            # Last value seen has index count - 1; the forecast target is count - 1 + h.
            value += self._seasonal[(self.count - 1 + h) % m]
        if self.floor is not None and value < self.floor:
            return self.floor
        return value

    def copy(self) -> HoltWinters:
        c = HoltWinters(self.season, self.alpha, self.beta, self.gamma, self.phi, self.floor)
        c.level = self.level
        c.trend = self.trend
        c._seasonal = list(self._seasonal)
        c._init_sum = self._init_sum
        c.count = self.count
        return c


class RollingMae:
    """Mean absolute error of the last ``k`` scored forecasts; O(1) per score (running sum)."""

    __slots__ = ("_errors", "_sum", "count", "k")

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self._errors = [0.0] * k
        self._sum = 0.0
        self.count = 0

    def add(self, error: float) -> None:
        e = abs(error)
        i = self.count % self.k
        if self.count >= self.k:
            self._sum -= self._errors[i]
        self._errors[i] = e
        self._sum += e
        self.count += 1
        if self.count % self.k == 0:
            # The running sum drifts by float error over months of updates: re-sum exactly once
            # per cycle (O(k) every k updates, so still O(1) amortised).
            self._sum = math.fsum(self._errors)

    @property
    def n(self) -> int:
        return min(self.count, self.k)

    @property
    def value(self) -> float | None:
        n = self.n
        return max(self._sum, 0.0) / n if n else None

    def copy(self) -> RollingMae:
        c = RollingMae(self.k)
        c._errors = list(self._errors)
        c._sum = self._sum
        c.count = self.count
        return c


class Scored:
    """A forecaster whose ``horizon``-bucket-ahead forecasts are scored when the actuals arrive.

    After each value the forecaster's ``horizon``-step forecast is kept in a ring of ``horizon``
    slots; when the value it targeted arrives, its absolute error enters a rolling MAE over the
    last ``k`` scored forecasts. Every update is O(1).
    """

    __slots__ = ("_pending", "count", "horizon", "mae", "model")

    def __init__(
        self, model: LastValue | SeasonalNaive | HoltWinters, horizon: int, k: int
    ) -> None:
        _check_h(horizon)
        self.model = model
        self.horizon = horizon
        self.mae = RollingMae(k)
        self._pending: list[float | None] = [None] * horizon
        self.count = 0

    @property
    def name(self) -> str:
        return self.model.name

    def observe(self, y: float) -> None:
        slot = self.count % self.horizon
        issued = self._pending[slot] if self.count >= self.horizon else None
        if issued is not None:
            self.mae.add(y - issued)
        self.model.update(y)
        self._pending[slot] = self.model.forecast(self.horizon)
        self.count += 1

    def copy(self) -> Scored:
        c = Scored(self.model.copy(), self.horizon, self.mae.k)
        c.mae = self.mae.copy()
        c._pending = list(self._pending)
        c.count = self.count
        return c
