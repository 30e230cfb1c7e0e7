"""``keepalive``: when a scale-to-zero target may go to zero, and when to bring it back.

The hybrid histogram policy of "Serverless in the Wild" (Shahrad et al., USENIX ATC'20), for
targets whose replicas are GPUs: per target, a histogram of idle times (the time from the end of
the last in-flight request to the next arrival) in ``binSeconds`` bins up to ``rangeSeconds``.

- **Histogram mode** (enough samples and a coefficient of variation of the bin counts of at least
  ``cvThreshold``, i.e. a real pattern): the head percentile of the idle times, less
  ``headMargin``, is when the next request is expected at the earliest; the tail percentile, plus
  ``tailMargin``, is how long to wait for it at most. After the last request ends the target goes
  to zero, comes back to one replica ``prewarmLead`` before the head (pre-warm), and stays up until
  the tail has passed (keep-alive), then goes to zero. When the head is so near that the spell at
  zero would be shorter than ``minUnloadSeconds`` it is not unloaded at all.
- **Fixed mode** (too few samples, or a flat histogram): a fixed keep-alive of
  ``fallbackKeepAliveSeconds``, the conservative default the paper falls back to.
- **Cost mode** (``rule: cost``, instead of histogram mode): the windows that minimise, over the
  learned idle times, ``coldStartCostSeconds`` x (scale-ups from zero) + idle replica-seconds.
  The keep-alive end is any bin edge; the pre-warm is either none (loaded from the start) or the
  head percentile's bin edge, whichever is cheaper. One weight, the price of a cold start in idle
  GPU-seconds, instead of two percentiles; sweeping it traces the cold-start / idle frontier.
- **Forecast mode** (more than ``oobFraction`` of the idle times were longer than the range): the
  paper forecasts the next idle time with ARIMA; we use the median of the last ``oobHistory``
  out-of-range idle times (a constant forecaster, documented in docs/keepalive.md), with the same
  margins around it.

While traffic flows the target is sized by an inner reactive policy (``inner``: e.g. ``kpa`` or
``queue``), floored at one replica. The policy never proposes zero on missing data: without a
fresh activity signal it returns no proposal, the fallback guard holds the last good count, and
the idle spell being measured is discarded (nobody saw it idle). The shared scale-to-zero guard
still applies after it (fresh signals, cold-start bound, protected windows, rollouts).

Idle times are measured at the resolution of the signals (one scrape): the end of the last
request is the first sample with no request in flight and no new arrival on the counter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from autoscaler.core import signals
from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import Proposal
from autoscaler.policy.api import Params, Policy
from autoscaler.policy.builtin.common import NestedPolicy
from autoscaler.policy.registry import get_policy_class

Mode = Literal["fixed", "histogram", "cost", "forecast"]


class InnerPolicy(NestedPolicy):
    """The reactive policy that sizes the target while traffic flows; its params are checked
    when the policy file is read, so a typo there names the inner field."""

    outer: ClassVar[str] = "keepalive"
    self_reference: ClassVar[str] = "a keepalive policy cannot contain another keepalive"

    @model_validator(mode="after")
    def _valid_params(self) -> InnerPolicy:
        try:
            get_policy_class(self.name).params_model.model_validate(self.params)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "params"
            raise ValueError(
                f"inner policy {self.name!r}: params.{where}: {first['msg']}"
            ) from None
        return self


class KeepaliveParams(Params):
    inner: InnerPolicy
    activity_signal: str = Field(signals.CONCURRENCY, description="requests in flight + waiting")
    arrivals_counter: str = Field(
        signals.REQUESTS_TOTAL, description="arrivals counter; catches requests between scrapes"
    )
    bin_seconds: float = Field(60.0, gt=0)
    range_seconds: float = Field(4 * 3600.0, gt=0)
    head_percentile: float = Field(5.0, gt=0, lt=100)
    tail_percentile: float = Field(99.0, gt=0, le=100)
    head_margin: float = Field(0.10, ge=0, lt=1, description="pre-warm this fraction earlier")
    tail_margin: float = Field(0.10, ge=0, description="keep alive this fraction longer")
    min_samples: int = Field(10, ge=1, description="idle times needed to trust the histogram")
    cv_threshold: float = Field(2.0, ge=0, description="CV of bin counts needed")
    fallback_keep_alive_seconds: float = Field(600.0, ge=0)
    prewarm_lead_seconds: float = Field(
        60.0, ge=0, description="start this early; the measured cold start when it is longer"
    )
    min_unload_seconds: float = Field(
        60.0, ge=0, description="do not unload for a spell at zero shorter than this"
    )
    oob_fraction: float = Field(0.5, gt=0, le=1, description="forecast mode above this share")
    oob_history: int = Field(8, ge=1, le=64)
    max_samples: int = Field(
        2000, ge=2, description="halve every count past this many, so old idle times fade"
    )
    rule: Literal["percentile", "cost"] = Field(
        "percentile",
        description="percentile: the paper's head/tail windows; cost: windows of least cost",
    )
    cold_start_cost_seconds: float = Field(
        1200.0,
        gt=0,
        description="rule cost: idle replica-seconds worth paying to avoid one scale-up from zero",
    )

    @field_validator("range_seconds")
    @classmethod
    def _bins_bounded(cls, v: float, info: ValidationInfo) -> float:
        width = info.data.get("bin_seconds")
        if width is not None and v / width > 10_000:
            raise ValueError(f"rangeSeconds ({v:g}) / binSeconds ({width:g}) exceeds 10000 bins")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> KeepaliveParams:
        if self.tail_percentile <= self.head_percentile:
            raise ValueError(
                f"tailPercentile ({self.tail_percentile:g}) must be > headPercentile "
                f"({self.head_percentile:g})"
            )
        if self.range_seconds < self.bin_seconds:
            raise ValueError(
                f"rangeSeconds ({self.range_seconds:g}) must be >= binSeconds "
                f"({self.bin_seconds:g})"
            )
        return self

    @property
    def n_bins(self) -> int:
        return math.ceil(self.range_seconds / self.bin_seconds - 1e-9)


@dataclass(frozen=True, slots=True)
class Windows:
    """When to have a replica up, in seconds after the last request ended."""

    mode: Mode
    prewarm_at: float  # the next arrival is expected no earlier than this (0: keep loaded)
    keep_until: float  # and no later than this


@dataclass(frozen=True, slots=True)
class KeepaliveState:
    """Bounded: ``bins`` has a fixed length, ``oob_recent`` at most ``oobHistory`` entries."""

    bins: tuple[int, ...]
    bin_seconds: float
    oob: int = 0  # idle times longer than the range
    oob_recent: tuple[float, ...] = ()
    idle_since: float | None = None  # when the last request ended (None: traffic or unknown)
    last_total: float | None = None  # the arrivals counter at the last tick
    inner: object = None
    inner_name: str = ""
    windows: Windows | None = None  # derived from the counts; recomputed when they change


def histogram_percentile_bin(bins: tuple[int, ...], q: float) -> int | None:
    """Index of the bin holding the q-th percentile (0 < q <= 100) of the counts: the first bin
    whose cumulative count reaches q% of the total. None for an empty histogram."""
    total = sum(bins)
    if total <= 0:
        return None
    need = q / 100.0 * total
    acc = 0
    for i, c in enumerate(bins):
        acc += c
        if acc >= need - 1e-9:
            return i
    return len(bins) - 1


def bin_cv(bins: tuple[int, ...]) -> float:
    """Coefficient of variation (population) of the bin counts; 0 for an empty histogram."""
    n = len(bins)
    total = sum(bins)
    if n == 0 or total == 0:
        return 0.0
    mean = total / n
    var = sum((c - mean) ** 2 for c in bins) / n
    return math.sqrt(var) / mean


def windows(state: KeepaliveState, p: KeepaliveParams) -> Windows:
    """The pre-warm and keep-alive windows the histogram (or its fallbacks) gives now."""
    in_range = sum(state.bins)
    total = in_range + state.oob
    fixed = Windows("fixed", 0.0, p.fallback_keep_alive_seconds)
    if total < p.min_samples:
        return fixed
    if state.oob / total > p.oob_fraction and state.oob_recent:
        ordered = sorted(state.oob_recent)
        mid = len(ordered) // 2
        predicted = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0
        return Windows(
            "forecast", predicted * (1.0 - p.head_margin), predicted * (1.0 + p.tail_margin)
        )
    if p.rule == "cost":
        if in_range < p.min_samples:
            return fixed
        return cost_windows(state.bins, state.oob, state.bin_seconds, p)
    if in_range < p.min_samples or bin_cv(state.bins) < p.cv_threshold:
        return fixed
    head = histogram_percentile_bin(state.bins, p.head_percentile)
    tail = histogram_percentile_bin(state.bins, p.tail_percentile)
    assert head is not None and tail is not None  # in_range >= min_samples >= 1
    w = state.bin_seconds
    return Windows(
        "histogram", head * w * (1.0 - p.head_margin), (tail + 1) * w * (1.0 + p.tail_margin)
    )


def cost_windows(bins: tuple[int, ...], oob: int, width: float, p: KeepaliveParams) -> Windows:
    """The window [prewarm_at, keep_until] of least expected cost over the learned idle times:
    ``coldStartCostSeconds`` per scale-up from zero (an idle spell that ends while the target is
    at zero) plus the replica-seconds kept up without a request. Idle times count at their bin's
    midpoint; out-of-range ones outlast every window. ``keep_until`` is a bin edge (0: go to zero
    at once); ``prewarm_at`` is 0 or the head percentile's bin edge, whose pre-warm costs
    ``prewarmLeadSeconds`` of a starting replica for every spell that lasts that long. Ties go to
    no pre-warm, then to the shorter keep-alive. A sum over bins: O(number of bins)."""
    n = len(bins)
    cnt = [0] * (n + 1)  # idle times in bins [0, j)
    mass = [0.0] * (n + 1)  # their sum, at bin midpoints
    for i, c in enumerate(bins):
        cnt[i + 1] = cnt[i] + c
        mass[i + 1] = mass[i] + c * (i + 0.5) * width
    total = cnt[n] + oob
    price = p.cold_start_cost_seconds
    starts = [0]
    head = histogram_percentile_bin(bins, p.head_percentile)
    if head is not None and head > 0:
        starts.append(head)
    best = (math.inf, 0.0, 0.0)
    for j0 in starts:
        at = j0 * width
        early = cnt[j0]  # spells that end before the replica is back: cold
        reach = total - early
        prewarm = p.prewarm_lead_seconds * reach if j0 else 0.0
        for j in range(j0 + 1 if j0 else 0, n + 1):
            late = total - cnt[j]  # spells that outlast the keep-alive: cold
            kept = (mass[j] - mass[j0]) - (cnt[j] - early) * at + late * (j * width - at)
            cost = price * (early + late) + kept + prewarm
            if cost < best[0] - 1e-9:
                best = (cost, at, j * width)
    return Windows("cost", best[1], best[2])


def record_idle(state: KeepaliveState, idle: float, p: KeepaliveParams) -> KeepaliveState:
    """The state with one more idle time counted (and all counts halved past maxSamples)."""
    bins = list(state.bins)
    oob, recent = state.oob, state.oob_recent
    if idle >= p.range_seconds:
        oob += 1
        recent = (*recent, idle)[-p.oob_history :]
    else:
        bins[min(len(bins) - 1, int(idle // state.bin_seconds))] += 1
    if sum(bins) + oob > p.max_samples:
        bins = [c // 2 for c in bins]
        oob //= 2
    new = replace(state, bins=tuple(bins), oob=oob, oob_recent=recent)
    return replace(new, windows=windows(new, p))


def _rebin(state: KeepaliveState, p: KeepaliveParams) -> KeepaliveState:
    """The same idle times in the bins of (possibly new) params: each old bin's count moves to
    the new bin holding its midpoint; beyond the new range it counts as out of range."""
    if state.bin_seconds == p.bin_seconds and len(state.bins) == p.n_bins:
        return state
    bins = [0] * p.n_bins
    oob = state.oob
    for i, c in enumerate(state.bins):
        if not c:
            continue
        mid = (i + 0.5) * state.bin_seconds
        if mid >= p.range_seconds:
            oob += c
        else:
            bins[min(p.n_bins - 1, int(mid // p.bin_seconds))] += c
    recent = state.oob_recent[-p.oob_history :]
    return replace(state, bins=tuple(bins), bin_seconds=p.bin_seconds, oob=oob, oob_recent=recent)


def _with_windows(state: KeepaliveState, p: KeepaliveParams) -> KeepaliveState:
    return replace(state, windows=windows(state, p))


class KeepalivePolicy(Policy[KeepaliveParams, KeepaliveState]):
    name: ClassVar[str] = "keepalive"
    params_model: ClassVar[type[Params]] = KeepaliveParams

    def __init__(self, params: KeepaliveParams) -> None:
        super().__init__(params)
        self.inner: Policy[Any, Any] = params.inner.build()

    def required_signals(self) -> tuple[str, ...]:
        own = (self.params.activity_signal, self.params.arrivals_counter)
        return own + tuple(s for s in self.inner.required_signals() if s not in own)

    def retention_seconds(self) -> float:
        return self.inner.retention_seconds()

    def initial_state(self, snap: Snapshot) -> KeepaliveState:
        p = self.params
        fresh = KeepaliveState(
            bins=(0,) * p.n_bins,
            bin_seconds=p.bin_seconds,
            inner=self.inner.initial_state(snap),
            inner_name=p.inner.name,
        )
        return _with_windows(fresh, p)

    def carry_state(self, old: object, snap: Snapshot) -> KeepaliveState:
        """After a reload the learned idle times stay (re-binned when the bins changed); the
        inner state stays when the inner policy is the same one."""
        if not isinstance(old, KeepaliveState):
            return self.initial_state(snap)
        inner = (
            self.inner.carry_state(old.inner, snap)
            if old.inner_name == self.params.inner.name
            else self.inner.initial_state(snap)
        )
        carried = replace(_rebin(old, self.params), inner=inner, inner_name=self.params.inner.name)
        return _with_windows(carried, self.params)

    def decide(self, snap: Snapshot, state: KeepaliveState) -> tuple[Proposal, KeepaliveState]:
        p = self.params
        inner_prop, inner_state = self.inner.decide(snap, state.inner)
        activity = snap.last(p.activity_signal)
        total = snap.last(p.arrivals_counter)
        if (
            activity is None
            or total is None
            or not snap.fresh(p.activity_signal)
            or not snap.fresh(p.arrivals_counter)
        ):
            # Nobody saw the target idle: forget the spell, propose nothing (the guard holds).
            state = replace(state, inner=inner_state, idle_since=None, last_total=None)
            return Proposal(None, reason="no fresh activity signal"), state
        if activity > 0 or state.last_total is None or total != state.last_total:
            if state.idle_since is not None:
                state = record_idle(state, snap.now - state.idle_since, p)
            state = replace(state, inner=inner_state, idle_since=None, last_total=total)
            if inner_prop.replicas is None:
                return inner_prop, state
            return Proposal(
                max(1, inner_prop.replicas),
                inner_prop.token_rate,
                "keepalive: traffic; " + inner_prop.reason,
                inner_prop.inputs,
            ), state
        since = snap.now if state.idle_since is None else state.idle_since
        if state.idle_since is None or inner_state is not state.inner:
            state = replace(state, inner=inner_state, idle_since=since)
        idle = snap.now - since
        w = state.windows or windows(state, p)
        lead = max(p.prewarm_lead_seconds, snap.cold_start_s or 0.0)
        fire = w.prewarm_at - lead
        loaded = idle < w.keep_until and (idle >= fire or fire < p.min_unload_seconds)
        inputs = {"idle_seconds": idle, "prewarm_at": w.prewarm_at, "keep_until": w.keep_until}
        if not loaded:
            return Proposal(0, reason=f"keepalive {w.mode}: unloaded", inputs=inputs), state
        if inner_prop.replicas is None:
            return inner_prop, state
        reason = f"keepalive {w.mode}: " + ("pre-warm" if idle >= fire > 0 else "keep-alive")
        return Proposal(max(1, inner_prop.replicas), inner_prop.token_rate, reason, inputs), state
