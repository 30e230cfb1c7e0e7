"""An exact, pure-Python port of Knative Serving's KPA decider.

Why this exists: callers that want "what would Knative's KPA do here" (the simulator, A/B
comparisons, a ``kpa`` policy that must behave like the real thing) need the decider's integer
outputs bit for bit, not an approximation. Everything below follows upstream ``knative/serving``
(see ``/work/shared/reference/knative-kpa.md`` sections 3-6); each rule names the upstream file it
comes from.

Scope: only the per-revision decider (``pkg/autoscaler/scaling/autoscaler.go``) and its
excess-burst-capacity (EBC) output, plus the 2-second max window that implements scale-down delay
(``pkg/autoscaler/aggregation/max/{window,timewindow}.go``). Metric bucketing/averaging, min/max
bounds, initial scale and scale-to-zero gating are *not* here: the caller passes the stable and
panic averages in, and applies bounds to the returned ``desired`` itself.

Exactness: the arithmetic is done with the same IEEE-754 double operations, in the same order, as
the Go code (``math.Ceil``/``math.Floor``, ``float64`` division, left-to-right subtraction), so the
integers match upstream's. Go keeps times and durations as integer nanoseconds; ``now``,
``panic_since``, ``stable_window`` and ``scale_down_delay`` are float seconds here and are turned
into integer nanoseconds (``round(s * 1e9)``) before every time comparison, so that boundaries
such as "``panic_since + stable_window`` strictly before ``now``" are decided the way Go decides
them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final, Literal, final

from autoscaler.core.rounding import round_even
from autoscaler.core.types import Value, field_values, rebuild

__all__ = [
    "INVALID_RESULT",
    "TICK_INTERVAL_SECONDS",
    "KpaDecider",
    "KpaResult",
    "KpaSpec",
    "ScalingMetric",
    "initial_excess_burst_capacity",
    "parse_go_duration",
]

ScalingMetric = Literal["concurrency", "rps"]

_NS_PER_SECOND: Final = 1_000_000_000

#: The decider tick (``tickInterval`` in ``pkg/autoscaler/scaling/multiscaler.go``). It is also the
#: slot width of the scale-down-delay window (``New`` in ``autoscaler.go`` passes it to
#: ``max.NewTimeWindow``).
TICK_INTERVAL_SECONDS: Final = 2
_TICK_INTERVAL_NS: Final = TICK_INTERVAL_SECONDS * _NS_PER_SECOND


def _to_ns(seconds: float) -> int:
    """Float seconds -> integer nanoseconds, the unit of Go's ``time.Time``/``time.Duration``.

    Rounding (not truncation) so that a value written as e.g. ``60.1`` lands on the nanosecond the
    author meant rather than one below it. The mapping is monotone, so comparisons stay consistent.
    """
    return round_even(seconds * 1e9)  # round(), written out for the compiled core


def _go_int_div(a: int, b: int) -> int:
    """Go's integer ``/``: truncates toward zero (Python's ``//`` floors)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


# --------------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KpaSpec:
    """The decider's inputs, mirroring upstream ``DeciderSpec`` (``pkg/autoscaler/scaling/
    multiscaler.go``) with times as float seconds.

    Frozen so a spec shared between deciders cannot change under one of them; use
    ``dataclasses.replace`` plus ``KpaDecider.update`` to change it, as Knative's ``Update`` swaps
    the whole spec pointer.

    Defaults are Knative's cluster defaults (``config/core/configmaps/autoscaler.yaml``): target
    100 x 70 % = 70, total 100, TBC 211, panic threshold 200 % = 2.0, rates 1000 / 2, activator
    capacity 100, stable window 60 s, no scale-down delay. ``activation_scale`` defaults to 1, which
    acts exactly like upstream's unset value 0: the rule only applies when it is > 1.

    ``scaling_metric`` only says which pair of averages the caller should pass to ``step``
    (``autoscaler.go`` reads RPS for ``"rps"`` and concurrency for anything else); the decider math
    is identical for both. ``initial_scale`` is not used by the decider itself, only by
    ``initial_excess_burst_capacity`` (the multiscaler's status before the first valid tick).
    """

    scaling_metric: ScalingMetric = "concurrency"
    target_value: float = 70.0
    total_value: float = 100.0
    target_burst_capacity: float = 211.0
    panic_threshold: float = 2.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    activator_capacity: float = 100.0
    stable_window: float = 60.0
    scale_down_delay: float = 0.0
    reachable: bool = True
    activation_scale: int = 1
    initial_scale: int = 1

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Compiled, a frozen dataclass's default pickling assigns its fields and is refused.
        return KpaSpec, field_values(self)

    def __post_init__(self) -> None:
        """Reject values Knative's webhook/config validation would reject *and* that would make the
        port raise or divide by zero, so a bad spec fails at construction, not mid-tick.

        Deliberately looser than Knative's admission ranges where the decider itself copes (e.g.
        rates of 1.1 or a 0 s stable window appear in upstream's own ``autoscaler_test.go``).
        """
        if self.scaling_metric not in ("concurrency", "rps"):
            raise ValueError(
                f"scaling_metric must be 'concurrency' or 'rps', not {self.scaling_metric!r}"
            )
        for name in (
            "target_value",
            "total_value",
            "target_burst_capacity",
            "panic_threshold",
            "max_scale_up_rate",
            "max_scale_down_rate",
            "activator_capacity",
            "stable_window",
            "scale_down_delay",
        ):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, not {value!r}")
        # autoscaling.TargetMin is 0.01; anything > 0 keeps ceil(S / target) defined.
        if self.target_value <= 0:
            raise ValueError(f"target_value must be > 0, not {self.target_value!r}")
        if self.max_scale_up_rate <= 0 or self.max_scale_down_rate <= 0:
            raise ValueError("max_scale_up_rate and max_scale_down_rate must be > 0")
        if self.stable_window < 0 or self.scale_down_delay < 0:
            raise ValueError("stable_window and scale_down_delay must be >= 0")
        # pkg/apis/autoscaling/annotation_validation.go and config.go: TBC is >= 0 or exactly -1.
        if self.target_burst_capacity < 0 and self.target_burst_capacity != -1:
            raise ValueError(
                f"target_burst_capacity must be >= 0 or -1, not {self.target_burst_capacity!r}"
            )
        if self.activation_scale < 0 or self.initial_scale < 0:
            raise ValueError("activation_scale and initial_scale must be >= 0")

    @classmethod
    def from_annotations(
        cls,
        annotations: Mapping[str, str],
        *,
        container_concurrency: int = 0,
        reachable: bool = True,
        container_concurrency_target_percentage: float = 70.0,
        container_concurrency_target_default: float = 100.0,
        requests_per_second_target_default: float = 200.0,
        rps_target_utilization: float = 0.7,
        target_burst_capacity: float = 211.0,
        panic_threshold_percentage: float = 200.0,
        max_scale_up_rate: float = 1000.0,
        max_scale_down_rate: float = 2.0,
        activator_capacity: float = 100.0,
        stable_window: float = 60.0,
        scale_down_delay: float = 0.0,
        initial_scale: int = 1,
        allow_zero_initial_scale: bool = False,
    ) -> KpaSpec:
        """Build a spec the way Knative's PA reconciler builds a ``DeciderSpec`` from the PA's
        ``autoscaling.knative.dev/*`` annotations plus ``config-autoscaler`` values (keyword args,
        defaulted to Knative's defaults).

        Why: lets a caller feed a real Revision's annotations and get the decider Knative would run.
        Rules (``pkg/reconciler/autoscaling/resources/target.go``, ``kpa/resources/decider.go``,
        ``pkg/apis/autoscaling/v1alpha1/pa_lifecycle.go``):

        - metric ``rps`` -> total = RPS default, utilisation = the fixed 0.7; anything else ->
          concurrency: total = ``container_concurrency`` if > 0 else the concurrency default,
          utilisation = the configured percentage (a value <= 1.0 is read as a fraction);
        - ``target`` replaces total, but for concurrency with ``container_concurrency`` > 0 the
          smaller of the two wins; ``target-utilization-percentage`` replaces utilisation (/100);
        - target = max(0.01, total x utilisation); panic threshold = percentage / 100;
        - an unparsable annotation counts as absent (the PA getters return ``ok=false``); the
          kebab-case key wins over its camelCase alias (``kmap.KeyPriority``);
        - ``initial-scale`` 0 is honoured only with ``allow_zero_initial_scale``.

        Range validation is the webhook's job upstream; here ``KpaSpec.__post_init__`` still
        rejects values the decider cannot compute with.
        """

        def get(key: str, alias: str | None = None) -> str | None:
            for k in (key, alias):
                if k is not None and f"autoscaling.knative.dev/{k}" in annotations:
                    return annotations[f"autoscaling.knative.dev/{k}"]
            return None

        def get_float(key: str, alias: str | None = None) -> float | None:
            raw = get(key, alias)
            if raw is None:
                return None
            try:
                return float(raw.strip())
            except ValueError:
                return None

        def get_int(key: str, alias: str | None = None) -> int | None:
            raw = get(key, alias)
            if raw is None:
                return None
            try:
                return int(raw.strip(), 10)
            except ValueError:
                return None

        def get_duration(key: str, alias: str | None = None) -> float | None:
            raw = get(key, alias)
            if raw is None:
                return None
            try:
                return parse_go_duration(raw)
            except ValueError:
                return None

        metric: ScalingMetric = "rps" if get("metric") == "rps" else "concurrency"
        if metric == "rps":
            total = requests_per_second_target_default
            utilisation = rps_target_utilization
        else:
            total = (
                float(container_concurrency)
                if container_concurrency > 0
                else (container_concurrency_target_default)
            )
            pct = container_concurrency_target_percentage
            utilisation = pct if pct <= 1.0 else pct / 100.0
        annotation_target = get_float("target")
        if annotation_target is not None:
            total = annotation_target
            if metric == "concurrency" and container_concurrency != 0:
                total = min(annotation_target, float(container_concurrency))
        annotation_tu = get_float("target-utilization-percentage", "targetUtilizationPercentage")
        if annotation_tu is not None:
            utilisation = annotation_tu / 100
        target = max(0.01, total * utilisation)

        threshold_pct = get_float("panic-threshold-percentage", "panicThresholdPercentage")
        tbc = get_float("target-burst-capacity", "targetBurstCapacity")
        window = get_duration("window")
        delay = get_duration("scale-down-delay", "scaleDownDelay")
        activation = get_int("activation-scale")
        init = get_int("initial-scale", "initialScale")
        if init is None or init < 0 or (init == 0 and not allow_zero_initial_scale):
            init = initial_scale
        return cls(
            scaling_metric=metric,
            target_value=target,
            total_value=total,
            target_burst_capacity=target_burst_capacity if tbc is None else tbc,
            panic_threshold=(panic_threshold_percentage if threshold_pct is None else threshold_pct)
            / 100.0,
            max_scale_up_rate=max_scale_up_rate,
            max_scale_down_rate=max_scale_down_rate,
            activator_capacity=activator_capacity,
            stable_window=stable_window if window is None else window,
            scale_down_delay=scale_down_delay if delay is None else delay,
            reachable=reachable,
            activation_scale=1 if activation is None else max(activation, 0),
            initial_scale=init,
        )


_GO_DURATION_UNITS_NS: Final[Mapping[str, int]] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 MICRO SIGN
    "μs": 1_000,  # U+03BC GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": _NS_PER_SECOND,
    "m": 60 * _NS_PER_SECOND,
    "h": 3600 * _NS_PER_SECOND,
}
_GO_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Parse a Go ``time.ParseDuration`` string (``"60s"``, ``"1m30s"``, ``"1.5h"``, ``"0"``) to
    float seconds.

    Why: Knative's ``window`` and ``scale-down-delay`` annotations are Go durations. Computed in
    exact integer nanoseconds first (as Go does, truncating sub-nanosecond fractions), then
    converted, so ``"1m30s"`` is exactly 90.0. Raises ``ValueError`` for what Go would reject.
    """
    s = text.strip()
    sign = 1
    if s[:1] in ("+", "-"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = Fraction(0)
    pos = 0
    while pos < len(s):
        m = _GO_DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r}")
        total += Fraction(m.group(1)) * _GO_DURATION_UNITS_NS[m.group(2)]
        pos = m.end()
    return sign * math.trunc(total) / _NS_PER_SECOND


# --------------------------------------------------------------------------------------------------
# Scale-down delay: the max window
# --------------------------------------------------------------------------------------------------


class _MaxWindow:
    """Port of ``pkg/autoscaler/aggregation/max/window.go``: the maximum over the last ``size``
    integer indexes, kept as a ring buffer of strictly descending (index, value) entries (the
    "ascending minima" algorithm).

    Ported structurally, ring buffer included, rather than as "max of a dict", so that odd inputs
    (an index that goes backwards, two records in one slot) behave exactly as upstream.
    """

    __slots__ = ("_first", "_length", "_maxima")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"window size must be >= 1, not {size}")
        self._maxima: list[tuple[int, int]] = [(0, 0)] * size  # (index, value)
        self._first = 0
        self._length = 0

    @property
    def size(self) -> int:
        return len(self._maxima)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        state = {"_maxima": list(self._maxima), "_first": self._first, "_length": self._length}
        return rebuild, (_MaxWindow, (1,), state)

    def _slot(self, i: int) -> int:
        return i % len(self._maxima)

    def record(self, index: int, value: int) -> None:
        size = len(self._maxima)
        # Step one: entries not above the new value can never be the maximum again.
        while self._length > 0:
            if value < self._maxima[self._slot(self._first + self._length - 1)][1]:
                break
            self._length -= 1
        # Step two: drop entries that have slid out of the window (index distance >= size).
        while self._length > 0 and index - self._maxima[self._first][0] >= size:
            self._length -= 1
            self._first += 1
            if self._first == size:
                self._first = 0
        # Step 2b: two records for the same index keep the larger value.
        if self._length > 0:
            last_index, last_value = self._maxima[self._slot(self._first + self._length - 1)]
            if last_index == index:
                value = max(value, last_value)
                self._length -= 1
        # Step three: append; the list stays sorted descending.
        self._maxima[self._slot(self._first + self._length)] = (index, value)
        self._length += 1
        if self._length > size:  # pragma: no cover - impossible, as upstream's panic says
            raise RuntimeError(f"max window length {self._length} exceeded size {size}")

    def current(self) -> int:
        return self._maxima[self._first][1]


class _MaxTimeWindow:
    """Port of ``pkg/autoscaler/aggregation/max/timewindow.go`` with the 2 s tick granularity.

    Slots = ceil(delay / 2 s) (float64 division of the nanosecond durations, as Go does). The
    slot of a time is ``int(now.Unix()) / 2`` in Go: whole seconds floored (``Unix()``), then Go's
    integer division, which truncates toward zero. For ``now >= 0`` that is ``floor(now / 2)``.
    """

    __slots__ = ("_granularity_s", "_window")

    def __init__(self, duration_ns: int, granularity_ns: int = _TICK_INTERVAL_NS) -> None:
        self._window = _MaxWindow(math.ceil(float(duration_ns) / float(granularity_ns)))
        self._granularity_s = granularity_ns // _NS_PER_SECOND

    @property
    def size(self) -> int:
        return self._window.size

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        state = {"_window": self._window, "_granularity_s": self._granularity_s}
        return rebuild, (_MaxTimeWindow, (_TICK_INTERVAL_NS,), state)

    def slot(self, now_ns: int) -> int:
        unix_seconds = now_ns // _NS_PER_SECOND  # floor, like Go's Time.Unix()
        return _go_int_div(unix_seconds, self._granularity_s)

    def record(self, now_ns: int, value: int) -> None:
        self._window.record(self.slot(now_ns), value)

    def current(self) -> int:
        return self._window.current()


# --------------------------------------------------------------------------------------------------
# The decider
# --------------------------------------------------------------------------------------------------


@final
class KpaResult(Value):
    """One tick's output, upstream ``ScaleResult`` (``multiscaler.go``).

    ``valid=False`` means "no decision" (missing data or a read error); the caller must keep its
    previous decision, as ``MultiScaler.tickScaler`` drops invalid results. ``desired`` is before
    min/max/initial-scale bounds and scale-to-zero gating (``kpa/scaler.go`` applies those).
    A ``Value``: one is built per target per tick.
    """

    _fields = ("valid", "desired", "excess_burst_capacity")
    __slots__ = _fields

    def __init__(self, valid: bool, desired: int, excess_burst_capacity: int) -> None:
        self.valid = valid
        self.desired = desired
        self.excess_burst_capacity = excess_burst_capacity


#: Upstream ``invalidSR``: ``ScaleResult{ScaleValid: false}``, i.e. zeros.
INVALID_RESULT: Final = KpaResult(valid=False, desired=0, excess_burst_capacity=0)


def initial_excess_burst_capacity(spec: KpaSpec) -> int:
    """EBC the multiscaler reports before the decider's first valid tick (``createScaler`` in
    ``multiscaler.go``): TBC itself when it is -1 or 0, else ``int32(initial_scale x total - TBC)``
    (Go's float->int conversion truncates toward zero).

    Why it matters: it decides whether the activator starts in the path (EBC < 0 -> proxy mode).
    """
    tbc = spec.target_burst_capacity
    if tbc in (-1, 0):
        return int(tbc)
    return math.trunc(spec.initial_scale * spec.total_value - tbc)


class KpaDecider:
    """Port of upstream's ``autoscaler`` type (``pkg/autoscaler/scaling/autoscaler.go``).

    Construction is ``New``/``newAutoscaler``; ``step`` is ``Scale``; ``update`` is ``Update``.
    State is the panic start (``panic_since``), the panic high-water mark (``max_panic_pods``) and
    the scale-down-delay window. ``panic_since`` and ``max_panic_pods`` are plain attributes because
    upstream's own tests set them directly (e.g. ``TestAutoscalerScale``'s ``prepFunc``).

    Time is passed in (``now``, float seconds) instead of read, so the decider is deterministic and
    replayable. Upstream reads ``time.Now()`` at construction; here the constructor's ``now`` is
    used. Upstream marks "not panicking" with Go's zero ``time.Time``; here it is
    ``panic_since is None``, so ``now = 0.0`` is an ordinary time.
    """

    __slots__ = ("_delay_window", "_spec", "max_panic_pods", "panic_since")

    def __init__(self, spec: KpaSpec, now: float, ready_pods: int | None) -> None:
        """``ready_pods=None`` means the count could not be read; like upstream, that counts as 0
        (normal for a brand-new revision whose endpoints do not exist yet).

        - More than one ready pod starts the decider in panic mode (``panic_since = now``), so a
          restarted autoscaler, which lost its metric history, holds the current scale until it has
          a stable window of data instead of scaling down on partial data.
        - ``max_panic_pods`` starts at the ready count (so panic never goes below it).
        - The delay window is created only if ``scale_down_delay > 0`` *now*; see ``update``.
        """
        n0 = 0 if ready_pods is None else ready_pods
        if n0 < 0:
            raise ValueError(f"ready_pods must be >= 0, not {n0}")
        self._spec = spec
        self.panic_since: float | None = now if n0 > 1 else None
        self.max_panic_pods: int = n0
        delay_ns = _to_ns(spec.scale_down_delay)
        self._delay_window: _MaxTimeWindow | None = (
            _MaxTimeWindow(delay_ns) if delay_ns > 0 else None
        )

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickling and copy (compiled, the default would call __init__ with no arguments).
        state = {
            "_delay_window": self._delay_window,
            "max_panic_pods": self.max_panic_pods,
            "panic_since": self.panic_since,
        }
        return rebuild, (KpaDecider, (self._spec, 0.0, None), state)

    @property
    def spec(self) -> KpaSpec:
        """The spec in force (read-only; change it with ``update``)."""
        return self._spec

    @property
    def panicking(self) -> bool:
        """Whether the decider is in panic mode (upstream: ``!panicTime.IsZero()``)."""
        return self.panic_since is not None

    @property
    def delay_window_slots(self) -> int | None:
        """Number of 2 s slots in the scale-down-delay window, or None when there is no window.

        Exposed because the window is fixed at construction, so callers (and tests) may need to know
        whether a spec change to ``scale_down_delay`` has any effect on this decider.
        """
        return None if self._delay_window is None else self._delay_window.size

    def update(self, spec: KpaSpec) -> None:
        """Swap the spec, exactly as upstream ``Update`` does: nothing else changes.

        In particular the delay window is neither created, resized nor removed. A decider built with
        ``scale_down_delay == 0`` ignores a later non-zero delay, and one built with a delay keeps
        applying its original window even if the new spec says 0 (upstream only rebuilds it when
        the decider is recreated, e.g. on an autoscaler restart; knative-kpa.md section 9). Panic
        state is kept too; the new ``stable_window`` applies to the next panic-exit check.
        """
        self._spec = spec

    def step(
        self,
        now: float,
        stable_value: float | None,
        panic_value: float | None,
        ready_pods: int | None,
    ) -> KpaResult:
        """One decider tick (upstream ``Scale``), returning the desired pod count and the EBC.

        ``stable_value``/``panic_value`` are the revision-wide stable and panic window averages of
        the spec's metric; ``None`` means no data or a read error (``ErrNoData`` and friends), which
        gives ``INVALID_RESULT`` and leaves all state untouched. ``ready_pods=None`` means the ready
        count could not be read, which is also invalid; **a "not found" endpoints object must be
        passed as 0**, as upstream presumes 0 for ``IsNotFound`` errors.

        Deviation: a NaN or infinite metric value also gives ``INVALID_RESULT``. Upstream's Go would
        run on with implementation-defined float->int32 conversions; no upstream test covers it.
        """
        if ready_pods is None:
            return INVALID_RESULT
        if ready_pods < 0:
            raise ValueError(f"ready_pods must be >= 0, not {ready_pods}")
        if stable_value is None or panic_value is None:
            return INVALID_RESULT
        # math.isfinite of both, without two calls: x - x is 0 for finite numbers, NaN otherwise.
        if not (stable_value - stable_value == 0.0 and panic_value - panic_value == 0.0):
            return INVALID_RESULT

        # The builtins max()/min() are written out below as the comparisons they make (max(a, b)
        # is b only when b > a, min(a, b) b only when b < a): this runs per target per tick, and
        # the builtins parse keyword arguments on every call.
        spec = self._spec
        # Rate limits and the panic ratio use at least one pod, so growth from 0 is possible.
        ready = float(ready_pods)
        if not ready > 1.0:
            ready = 1.0  # max(1.0, float(ready_pods))

        # ceil/floor guarantee a move of at least one pod even for rates close to 1
        # (e.g. rate 1.1 with 2 pods -> up limit 3). An unreachable revision (routing state
        # "reserve") may drop at once: no down limit.
        max_scale_up = float(math.ceil(spec.max_scale_up_rate * ready))
        max_scale_down = (
            float(math.floor(ready / spec.max_scale_down_rate)) if spec.reachable else 0.0
        )

        raw_stable = float(math.ceil(stable_value / spec.target_value))
        raw_panic = float(math.ceil(panic_value / spec.target_value))

        # int(min(max(raw, max_scale_down), max_scale_up)) for both.
        clamped = max_scale_down if max_scale_down > raw_stable else raw_stable
        stable_pods = int(max_scale_up if max_scale_up < clamped else clamped)
        clamped = max_scale_down if max_scale_down > raw_panic else raw_panic
        panic_pods = int(max_scale_up if max_scale_up < clamped else clamped)

        # Activation scale applies after the rate clamp (so it may exceed the up limit), and only
        # to a non-zero raw count, so it never lifts an idle revision off zero.
        if spec.activation_scale > 1:
            if raw_stable > 0 and spec.activation_scale > stable_pods:
                stable_pods = spec.activation_scale
            if raw_panic > 0 and spec.activation_scale > panic_pods:
                panic_pods = spec.activation_scale

        # The panic test uses the *unclamped* panic count over the pods ready now.
        over_threshold = raw_panic / ready >= spec.panic_threshold

        if over_threshold:
            # Enter panic, or push its start forward while the surge lasts.
            self.panic_since = now
        elif self.panic_since is not None:
            panic_end_ns = _to_ns(self.panic_since) + _to_ns(spec.stable_window)
            if panic_end_ns < _to_ns(now):
                # Leave panic only once a full stable window (strictly) has passed since the
                # last over-threshold tick: by then the surge is in the stable average.
                self.panic_since = None
                self.max_panic_pods = 0

        desired = stable_pods
        if self.panic_since is not None:
            # Provision for the larger of the two windows, and never scale down while panicking.
            if panic_pods > desired:  # max(desired, panic_pods)
                desired = panic_pods
            if desired > self.max_panic_pods:
                self.max_panic_pods = desired
            desired = self.max_panic_pods

        # Scale-down delay: the max over the last ceil(delay / 2 s) slots. Skipped for an
        # unreachable revision (knative/serving#15831), whose traffic has already moved away.
        if spec.reachable and self._delay_window is not None:
            self._delay_window.record(_to_ns(now), desired)
            desired = self._delay_window.current()

        # EBC uses the panic value so that activator placement reacts quickly; it uses the raw
        # ready count (0 pods -> no capacity). TBC -1 (unlimited) leaves it at -1.
        tbc = spec.target_burst_capacity
        excess_bc = -1.0
        if tbc == 0:
            excess_bc = 0.0
        elif tbc > 0:
            total_capacity = float(ready_pods) * spec.total_value
            excess_bc = float(math.floor(total_capacity - tbc - panic_value))

        return KpaResult(True, desired, int(excess_bc))
