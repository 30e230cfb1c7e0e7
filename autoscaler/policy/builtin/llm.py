"""``llm``: the default policy for LLM targets: replicas from what predicts time to first token.

Every scale-up term is a total replica count computed from what the READY replicas measure; the
proposal is compared with ``current`` (ready + starting), so capacity already on its way is counted
once and a term adds replicas only when demand outgrows it:

- **queue**: ``min(ceil(waiting / waitingPerReplica), ceil(ready * queueMaxGrowth))``. A
  waiting request has not begun prefill; a queue is the first sign the replicas are full. A queue
  that shrinks fast enough to clear within ``queueDrainSeconds`` (or the measured cold start, if
  longer) adds nothing: the replicas there catch up before a new one could help. While replicas
  start the queue adds nothing unless ``queueWhileStarting``: the queue that builds during a cold
  start is the demand those replicas were asked for, and counting it again stacked a fleet 3-5x
  too large in the simulator (Mooncake: 2 -> 32 replicas).
- **KV cache**: ``ceil(ready * kvUsage / kvTarget)``. vLLM queues new sequences once the KV cache
  is full, so usage near the target predicts waiting before it happens.
- **unserved demand** (``unservedDemand``): the token counters count served tokens, so a saturated
  fleet hides its demand. With the arrival rate ``a`` (``rps``) and the queue growing at ``g``
  requests/s, the replicas start ``a - g`` requests/s and the demand is the served load times
  ``a / (a - g)`` (at most 4x), once the queue is more than the ready replicas hold
  (``waitingPerReplica`` each; below that a growing queue is arrival noise on a fleet that keeps
  up). A rate, not a backlog: it does not grow while replicas start.
- **tokens**: ``ceil((prompt/s / prefillTokensPerSecond (+ or max) generation/s /
  decodeTokensPerSecond + throttled/s / mixed capacity) / targetUtilization)``: the share of a
  replica's GPU time the demand needs under its capacity model. ``phases: shared`` adds the
  prefill and decode shares (one GPU time-shares them); ``separate`` takes the larger (decode is
  memory-bound and overlaps compute-bound prefill in a continuous batch, and the simulator's
  cluster model runs them as separate resources). ``burstReserve`` (default 0) adds
  ``burstReserve * sqrt(load)`` spare replicas (``load`` in replicas, as the term's numerator):
  square-root staffing, spare capacity for the swing of random arrivals over a cold start, which
  grows as the square root of the load. A fixed utilization target keeps the same share spare at
  any load: too little on a quiet fleet (one replica at 70% has no room for a burst that
  doubles its load) and more than needed on a busy one. Scale-down judges the tokens target
  with the same reserve.
- **latency floor**: judged on what replicas can shorten, the wait before prefill, against the
  SLO's budget after the request's own prefill: ``budget = sloTtftSeconds - prefill`` with
  ``prefill = prompt tokens/s / rps / prefillTokensPerSecond`` (the mean request's own prefill
  on an idle replica; 0 without ``rps``; at most half the SLO). Queue time p95 (vLLM's
  ``request_queue_time``: TTFT less the request's own prefill) above ``queueTimeFraction *
  budget`` asks for ``max(ready + 1, ceil(ready * min(latency / bound, latencyMaxGrowth)))``
  (``latencyMaxGrowth`` default 2: at most twice ready; 1: one replica more per decision). Where
  the SLO is shorter than a cold start, what spikes the latency (a cluster of long prompts) has
  cleared before a new replica is ready, so a gentler response can pay for less idle capacity.
  TTFT is the fallback only when no queue time is reported: ``TTFT p95 - prefill`` against
  ``ttftScaleUpFraction * budget``, and only while requests queue (``ttftMinWaiting``). Raw TTFT
  would pin the fleet on long prompts: an 85k-token prompt's prefill alone takes 7 s on an idle
  replica, and more replicas would not shorten it. Latency counts from ``settleSeconds`` after
  the last replica became ready and never while one starts, so a replica on its way (or the
  backlog of its cold start) does not make the policy stack another.

Scale-down is slow and fragmentation-aware: replicas are whole GPUs, so taking one of ``n`` away
loads the remaining ``n - 1`` by ``n / (n - 1)`` (2 -> 1 doubles it). A step down happens only when
the remaining replicas would run below ``(1 - scaleDownMargin)`` of the token and KV targets with no
queue to speak of, when that has held for ``scaleDownDelaySeconds``, at most one step per
``scaleDownStepSeconds`` (default: the delay), never while replicas are starting, never while queue
time is above half its bound (or, without queue time, TTFT less prefill above ``ttftHoldFraction``
of the budget) and never while the GPUs are busier than ``gpuBusyUtilization``. A step removes one
replica, or with ``scaleDownMaxReplicas`` up to that many, as many as leave the rest below the
targets less the margin (after a burst the fleet comes back to what the load needs in one step, as
the KPA's does at the end of its stable window, instead of one delay per replica). The last replica
goes only with no load at all.

GPU utilisation is a guard only: with continuous batching a GPU reports near-100% "utilization"
as soon as it runs any sequence, so it saturates long before the replica does and cannot say how
many replicas are needed; it can only say "these GPUs are busy, do not take one away".

Token budget: the proposal's ``token_rate`` is what the ready replicas serve within the SLO,
``max(ready, 1) * tokens per replica * budgetUtilization``, so admitted load stays inside the
capacity that exists while new replicas start, and the limit lifts as each becomes ready. Tokens
per replica come from ``budgetTokensPerReplica`` or, by default, from the capacity model at the
observed prompt/generation mix.

Missing waiting or token counters give no proposal (the guards hold the last good count; never
zero). KV usage, TTFT and GPU utilisation are optional: without them their terms do not apply.
"""

from __future__ import annotations

import math
from typing import ClassVar, final

from autoscaler.core import signals
from autoscaler.core.snapshot import Snapshot, aggregate
from autoscaler.core.types import EMPTY, Proposal, Value
from autoscaler.policy.api import Params, Policy
from autoscaler.policy.builtin.params import QUEUE_TIME_P95_SECONDS as QUEUE_TIME_P95_SECONDS
from autoscaler.policy.builtin.params import LlmParams as LlmParams


@final
class LlmState(Value):
    """The policy's memory of one target; ``decide`` returns a new one (a ``Value``)."""

    _fields = ("below_since", "last_down", "last_starting")
    __slots__ = _fields

    def __init__(
        self,
        below_since: float | None = None,  # when the scale-down condition last became true
        last_down: float | None = None,  # when the policy last proposed a step down
        last_starting: float | None = None,  # when replicas were last seen starting
    ) -> None:
        self.below_since = below_since
        self.last_down = last_down
        self.last_starting = last_starting


@final
class LlmKnobs:
    """``LlmParams`` read once into plain typed attributes, same names: ``decide`` reads about
    forty per target per tick, and a pydantic field read costs ~250 instructions where a compiled
    attribute read costs a few."""

    __slots__ = (
        "budget_tokens_per_replica",
        "budget_utilization",
        "burst_reserve",
        "decode_tokens_per_second",
        "gpu_busy_utilization",
        "gpu_window_seconds",
        "include_throttled",
        "kv_target",
        "kv_window_seconds",
        "latency_max_growth",
        "phases",
        "prefill_tokens_per_second",
        "queue_aggregation",
        "queue_drain_seconds",
        "queue_max_growth",
        "queue_time_fraction",
        "queue_time_signal",
        "queue_while_starting",
        "queue_window_seconds",
        "scale_down_delay_seconds",
        "scale_down_margin",
        "scale_down_max_replicas",
        "scale_down_step_seconds",
        "settle_seconds",
        "slo_ttft_seconds",
        "target_utilization",
        "token_window_seconds",
        "ttft_hold_fraction",
        "ttft_min_waiting",
        "ttft_scale_up_fraction",
        "ttft_signal",
        "ttft_window_seconds",
        "unserved_demand",
        "waiting_per_replica",
    )

    def __init__(self, p: LlmParams) -> None:
        self.slo_ttft_seconds = float(p.slo_ttft_seconds)
        self.prefill_tokens_per_second = float(p.prefill_tokens_per_second)
        self.decode_tokens_per_second = float(p.decode_tokens_per_second)
        self.target_utilization = float(p.target_utilization)
        self.burst_reserve = float(p.burst_reserve)
        self.token_window_seconds = float(p.token_window_seconds)
        self.waiting_per_replica = float(p.waiting_per_replica)
        self.queue_window_seconds = float(p.queue_window_seconds)
        self.queue_drain_seconds = float(p.queue_drain_seconds)
        self.queue_max_growth = float(p.queue_max_growth)
        self.kv_target = float(p.kv_target)
        self.kv_window_seconds = float(p.kv_window_seconds)
        self.ttft_window_seconds = float(p.ttft_window_seconds)
        self.ttft_scale_up_fraction = float(p.ttft_scale_up_fraction)
        self.ttft_hold_fraction = float(p.ttft_hold_fraction)
        self.ttft_min_waiting = float(p.ttft_min_waiting)
        self.queue_time_fraction = float(p.queue_time_fraction)
        self.latency_max_growth = float(p.latency_max_growth)
        self.settle_seconds = float(p.settle_seconds)
        self.scale_down_margin = float(p.scale_down_margin)
        self.scale_down_delay_seconds = float(p.scale_down_delay_seconds)
        self.gpu_window_seconds = float(p.gpu_window_seconds)
        self.budget_utilization = float(p.budget_utilization)
        self.scale_down_step_seconds = (
            None if p.scale_down_step_seconds is None else float(p.scale_down_step_seconds)
        )
        self.scale_down_max_replicas = int(p.scale_down_max_replicas)
        self.gpu_busy_utilization = (
            None if p.gpu_busy_utilization is None else float(p.gpu_busy_utilization)
        )
        self.budget_tokens_per_replica = (
            None if p.budget_tokens_per_replica is None else float(p.budget_tokens_per_replica)
        )
        self.include_throttled = bool(p.include_throttled)
        self.queue_while_starting = bool(p.queue_while_starting)
        self.unserved_demand = bool(p.unserved_demand)
        self.phases: str = p.phases
        self.queue_aggregation: str = p.queue_aggregation
        self.ttft_signal: str = p.ttft_signal
        self.queue_time_signal: str | None = p.queue_time_signal


class LlmPolicy(Policy[LlmParams, LlmState]):
    name: ClassVar[str] = "llm"
    params_model: ClassVar[type[Params]] = LlmParams

    def __init__(self, params: LlmParams) -> None:
        super().__init__(params)
        self._k = LlmKnobs(params)

    def required_signals(self) -> tuple[str, ...]:
        return (signals.WAITING, signals.PROMPT_TOKENS_TOTAL, signals.GENERATION_TOKENS_TOTAL)

    def signals_read(self) -> frozenset[str]:
        p = self.params
        read = {
            signals.WAITING,
            signals.PROMPT_TOKENS_TOTAL,
            signals.GENERATION_TOKENS_TOTAL,
            signals.KV_CACHE_USAGE,
            signals.RPS,
            p.ttft_signal,
        }
        if p.include_throttled:
            read.add(signals.THROTTLED_TOKENS_PER_SECOND)
        if p.queue_time_signal is not None:
            read.add(p.queue_time_signal)
        if p.gpu_busy_utilization is not None:
            read.add(signals.GPU_UTILIZATION)
        return frozenset(read)

    def retention_seconds(self) -> float:
        p = self.params
        return max(
            p.token_window_seconds,
            p.queue_window_seconds,
            p.kv_window_seconds,
            p.ttft_window_seconds,
            p.gpu_window_seconds,
        )

    def initial_state(self, snap: Snapshot) -> LlmState:
        return LlmState()

    def token_budget(self, ready: int, prompt_rate: float | None, gen_rate: float | None) -> float:
        """Tokens/s the ready replicas serve within the SLO (at least one replica's worth)."""
        p = self._k
        per_replica = p.budget_tokens_per_replica
        if per_replica is None:
            if prompt_rate is None or gen_rate is None:  # mix unknown: 50/50
                prompt_rate = gen_rate = 0.0
            per_replica = _mixed_capacity(p, prompt_rate, gen_rate)
        return max(ready, 1) * per_replica * p.budget_utilization

    def decide(self, snap: Snapshot, state: LlmState) -> tuple[Proposal, LlmState]:
        p = self._k
        window = p.token_window_seconds
        prompt = snap.rate(signals.PROMPT_TOKENS_TOTAL, window)
        gen = snap.rate(signals.GENERATION_TOKENS_TOTAL, window)
        budget = self.token_budget(snap.ready, prompt, gen)
        waiting = aggregate(snap, signals.WAITING, p.queue_window_seconds, p.queue_aggregation)
        if prompt is None or gen is None or waiting is None:
            none = Proposal(None, budget, "no queue or token data yet", EMPTY)
            return none, LlmState(None, state.last_down, state.last_starting)
        throttled = 0.0
        if p.include_throttled:
            throttled = snap.mean(signals.THROTTLED_TOKENS_PER_SECOND, window) or 0.0
        # Fraction of one replica's GPU time the demand needs (prefill and decode share it).
        prefill_load = prompt / p.prefill_tokens_per_second
        decode_load = gen / p.decode_tokens_per_second
        if p.phases == "shared":
            load = prefill_load + decode_load
        else:
            load = max(prefill_load, decode_load)
        load += throttled / _mixed_capacity(p, prompt, gen)
        ready = snap.ready
        kv = snap.mean(signals.KV_CACHE_USAGE, p.kv_window_seconds)
        # Latency measured while replicas were starting describes a fleet without the capacity
        # already on its way: only samples from settleSeconds after the last replica became
        # ready count (the backlog of the cold start drains meanwhile), and none while one is
        # still starting (else each ready replica would add another).
        now = snap.now
        last_starting = now if snap.starting > 0 else state.last_starting
        # The new state's fields (one LlmState is built, at the return).
        below_since = state.below_since
        last_down = state.last_down
        span = p.ttft_window_seconds
        if last_starting is not None:
            span = min(span, now - last_starting - p.settle_seconds)
        ttft = snap.max(p.ttft_signal, span) if span > 0 else None
        qtime = None
        if p.queue_time_signal is not None and span > 0:
            qtime = snap.max(p.queue_time_signal, span)
        # The SLO's budget for waiting: what is left after the mean request's own prefill, which
        # more replicas cannot shorten (at most half the SLO is taken as prefill).
        prefill_s = _prefill_seconds(p, prompt, snap.mean(signals.RPS, window))
        after_prefill = p.slo_ttft_seconds - prefill_s
        # TTFT less the prefill estimates queue time when the server does not report it; it
        # counts only while requests queue (a long prompt's prefill alone can exceed the SLO).
        wait = None
        if qtime is None and ttft is not None:
            queued = snap.mean(signals.WAITING, span) or 0.0
            if queued >= p.ttft_min_waiting:
                wait = ttft - prefill_s

        n_tokens = _ceil(_reserved(p, load) / p.target_utilization)
        # A queue keeps growing while new replicas start; the replicas it already asked for will
        # drain it, so it may grow the fleet by at most queueMaxGrowth x ready per cold start.
        n_queue = min(
            _ceil(waiting / p.waiting_per_replica), max(_ceil(ready * p.queue_max_growth), 1)
        )
        # A shrinking queue that clears before a new replica could be ready gains nothing from
        # one: the horizon is queueDrainSeconds or the measured cold start, whichever is longer.
        horizon = max(p.queue_drain_seconds, snap.cold_start_s or 0.0)
        last_waiting = snap.last(signals.WAITING)
        if (snap.starting > 0 and not p.queue_while_starting) or _draining(
            last_waiting, waiting, p.queue_window_seconds, horizon
        ):
            # A queue that grows while replicas start is the demand they were asked for; one
            # that shrinks fast enough clears on the replicas already there.
            n_queue = 0
        n_kv = _ceil(ready * kv / p.kv_target) if kv is not None and ready else 0
        n_unserved = 0
        if p.unserved_demand:
            # Counters count served tokens only: a saturated fleet hides its demand. With the
            # arrival rate a and the queue growing at g requests/s, the replicas start a - g
            # requests/s, so the demand is the served load times a / (a - g). Only once the
            # queue is more than the ready replicas hold: below that a growing queue is the
            # noise of arrivals on a fleet that keeps up (flat load of long prompts).
            arrivals = snap.mean(signals.RPS, p.queue_window_seconds)
            growth = _queue_slope(last_waiting, waiting, p.queue_window_seconds)
            backlog = last_waiting or 0.0
            saturated = backlog > p.waiting_per_replica * max(ready, 1)
            if saturated and arrivals is not None and growth > 0 and arrivals > 0:
                factor = min(arrivals / max(arrivals - growth, arrivals / 4.0), 4.0)
                n_unserved = _ceil(load * factor / p.target_utilization)
        cap = p.latency_max_growth
        n_ttft = _latency_count(ready, wait, p.ttft_scale_up_fraction * after_prefill, cap)
        n_qtime = _latency_count(ready, qtime, p.queue_time_fraction * after_prefill, cap)
        want = _largest(n_tokens, n_queue, n_kv, n_ttft, n_qtime, n_unserved)
        inputs = {
            "prompt_tokens_per_second": prompt,
            "generation_tokens_per_second": gen,
            "requests_waiting": waiting,
            "load_replicas": load,
            "token_budget": budget,
        }
        if kv is not None:
            inputs["kv_cache_usage"] = kv
        if ttft is not None:
            inputs["ttft_p95_seconds"] = ttft
        if qtime is not None:
            inputs["queue_time_p95_seconds"] = qtime
        if prefill_s > 0:
            inputs["prefill_seconds"] = prefill_s

        current = snap.current
        if want > current:
            # Scale-up terms name the total they need; replicas already starting are in
            # ``current``, so only demand beyond them adds more.
            reason = _top_reason(n_tokens, n_queue, n_kv, n_ttft, n_qtime, n_unserved)
            up = Proposal(want, budget, reason, inputs)
            return up, LlmState(None, last_down, last_starting)
        if current <= 0:
            idle = Proposal(current, budget, "idle at zero", inputs)
            return idle, LlmState(None, None, last_starting)

        blocker = self._down_blocker(snap, load, waiting, kv, wait, qtime, after_prefill)
        if blocker:
            held_up = Proposal(current, budget, blocker, inputs)
            return held_up, LlmState(None, last_down, last_starting)
        since = below_since if below_since is not None else now
        delay = p.scale_down_delay_seconds
        held = now - since >= delay
        step = p.scale_down_step_seconds if p.scale_down_step_seconds is not None else delay
        spaced = last_down is None or now - last_down >= step
        if held and spaced:
            gone = self._removable(snap.ready, load, waiting, kv)
            down = Proposal(current - gone, budget, "remaining replicas below target", inputs)
            return down, LlmState(since, now, last_starting)
        pending = Proposal(current, budget, "scale-down pending", inputs)
        return pending, LlmState(since, last_down, last_starting)

    def _down_blocker(
        self,
        snap: Snapshot,
        load: float,
        waiting: float,
        kv: float | None,
        wait: float | None,
        qtime: float | None,
        after_prefill: float,
    ) -> str:
        """Why taking one replica away now would hurt ("" when it would not). ``wait`` is TTFT
        less prefill (only when no queue time is reported); both are judged against the SLO's
        budget after prefill."""
        p = self._k
        if snap.starting > 0:
            return "replicas starting"
        if wait is not None and wait > p.ttft_hold_fraction * after_prefill:
            return "TTFT near the SLO"
        if qtime is not None and qtime > 0.5 * p.queue_time_fraction * after_prefill:
            return "queue time near its share of the SLO"
        if p.gpu_busy_utilization is not None:
            gpu = snap.mean(signals.GPU_UTILIZATION, p.gpu_window_seconds)
            if gpu is not None and gpu > p.gpu_busy_utilization:
                return "GPUs busy"
        ready = snap.ready
        remaining = ready - 1
        if remaining < 1:
            # The last replica goes only when there is no demand at all.
            idle = load <= 0.0 and waiting <= 0.0
            return "" if idle else "last replica has load"
        return self._over_on(remaining, ready, load, waiting, kv)

    def _over_on(
        self, remaining: int, ready: int, load: float, waiting: float, kv: float | None
    ) -> str:
        """Which target ``remaining`` of the ``ready`` replicas would exceed, less the scale-down
        margin ("" when none)."""
        p = self._k
        keep = 1.0 - p.scale_down_margin
        if _reserved(p, load) / remaining > p.target_utilization * keep:
            return "tokens would exceed target on fewer replicas"
        if kv is not None and kv * ready / remaining > p.kv_target * keep:
            return "KV cache would exceed target on fewer replicas"
        if waiting > p.waiting_per_replica * remaining * keep:
            return "queue would exceed target on fewer replicas"
        return ""

    def _removable(self, ready: int, load: float, waiting: float, kv: float | None) -> int:
        """How many replicas one step removes: the most, up to ``scaleDownMaxReplicas``, that
        leave at least one replica carrying the load below every target less the margin. One
        always qualifies here (``_down_blocker`` checked it), including the last replica when
        there is no load at all."""
        gone = 1
        most = min(self._k.scale_down_max_replicas, ready - 1)
        while gone < most and not self._over_on(ready - gone - 1, ready, load, waiting, kv):
            gone += 1
        return gone


def _reserved(p: LlmKnobs, load: float) -> float:
    """The load plus its burst reserve, in units the utilization target divides:
    ``load + burstReserve * targetUtilization * sqrt(load)``, so that over the target it asks
    for ``load / targetUtilization + burstReserve * sqrt(load)`` replicas."""
    if p.burst_reserve <= 0.0 or load <= 0.0:
        return load
    return load + p.burst_reserve * p.target_utilization * math.sqrt(load)


def _largest(a: int, b: int, c: int, d: int, e: int, f: int) -> int:
    """``max`` of six ints. Compiled, ``max`` with more than two arguments is a generic call
    of the builtin (~1,700 instructions); two-argument ``max`` is a comparison."""
    return max(max(max(a, b), max(c, d)), max(e, f))


def _ceil(x: float) -> int:
    return math.ceil(x - 1e-9) if x > 0 else 0


def _queue_slope(last: float | None, mean: float, span: float) -> float:
    """Requests/s the queue grew by over the window (negative when it shrank), from the window's
    mean and its last value: a linear change from mean - d to mean + d has slope 2d / span."""
    return 0.0 if last is None else 2.0 * (last - mean) / span


def _draining(last: float | None, mean: float, span: float, within: float) -> bool:
    """The queue is shrinking fast enough to clear within ``within`` seconds: the replicas that
    are there already catch up. The slope is estimated from the window's mean and its last value
    (a linear decline from mean + d to mean - d over the span has slope 2d / span)."""
    if last is None or last >= mean or within <= 0:
        return False
    slope = 2.0 * (mean - last) / span
    return last / slope <= within


def _prefill_seconds(p: LlmKnobs, prompt: float, rps: float | None) -> float:
    """The mean request's own prefill on an idle replica (prompt tokens per request over the
    replica's prefill rate), at most half the SLO; 0 without an arrival rate."""
    if rps is None or rps <= 0 or prompt <= 0:
        return 0.0
    return min(prompt / rps / p.prefill_tokens_per_second, 0.5 * p.slo_ttft_seconds)


def _latency_count(ready: int, latency: float | None, bound: float, growth: float) -> int:
    """Replicas a latency above its bound asks for: ready scaled by the excess (at most
    ``growth`` times), at least one more than ready; 0 (no opinion) within the bound."""
    if latency is None or latency <= bound:
        return 0
    return max(ready + 1, _ceil(ready * min(latency / bound, growth)))


def _mixed_capacity(p: LlmKnobs, prompt: float, gen: float) -> float:
    """Tokens/s (prompt + generation) one replica serves at the given mix (50/50 unknown)."""
    total = prompt + gen
    fp, fg = (prompt / total, gen / total) if total > 0 else (0.5, 0.5)
    return 1.0 / (fp / p.prefill_tokens_per_second + fg / p.decode_tokens_per_second)


def _top_reason(
    n_tokens: int, n_queue: int, n_kv: int, n_ttft: int, n_qtime: int, n_unserved: int
) -> str:
    # Constant strings (formatting numbers per tick costs more than the decision).
    best = _largest(n_tokens, n_queue, n_kv, n_ttft, n_qtime, n_unserved)
    if n_ttft == best:
        return "TTFT above the SLO fraction"
    if n_unserved == best:
        return "arrivals outgrow served tokens"
    if n_qtime == best:
        return "queue time above its share of the SLO"
    if n_queue == best:
        return "queue per replica"
    if n_kv == best:
        return "KV cache per replica"
    return "token demand per replica"
