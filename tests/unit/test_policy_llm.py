"""The ``llm`` policy: each signal drives the count as documented (hand-computed values), replicas
still starting are not counted twice, scale-down is slow, fragmentation-aware and refuses near the
SLO, missing signals give no proposal, and the token budget tracks ready replicas."""

from __future__ import annotations

from typing import Any

import pytest

from autoscaler.config import parse_policy
from autoscaler.core import signals
from autoscaler.core.errors import ConfigError
from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import Observation, Proposal
from autoscaler.core.windows import SignalWindow
from autoscaler.engine import Engine
from autoscaler.policy.builtin.llm import QUEUE_TIME_P95_SECONDS, LlmParams, LlmPolicy, LlmState

# Capacity model with round numbers: a replica prefills 1000 tokens/s and decodes 100 tokens/s;
# it should run at half of that. SLO 2 s: TTFT above 1.6 s adds replicas, above 1.0 s holds;
# queue time above 0.5 s adds, above 0.25 s holds (without an arrival rate no prefill is known, so
# the whole SLO is the latency budget; the prefill tests below set ``rps``).
BASE: dict[str, Any] = {
    "sloTtftSeconds": 2,
    "prefillTokensPerSecond": 1000,
    "decodeTokensPerSecond": 100,
    "targetUtilization": 0.5,
    "tokenWindowSeconds": 60,
    "waitingPerReplica": 2,
    "queueWindowSeconds": 10,
    "kvTarget": 0.6,
    "ttftWindowSeconds": 30,
    "scaleDownMargin": 0.15,
    "scaleDownDelaySeconds": 300,
}


def policy(**overrides: Any) -> LlmPolicy:
    return LlmPolicy(LlmParams.model_validate({**BASE, **overrides}))


def snap(
    now: float,
    current: int,
    ready: int | None = None,
    starting: int = 0,
    *,
    prompt: float | None = 500.0,
    gen: float | None = 50.0,
    waiting: float | None = 0.0,
    series: dict[str, list[tuple[float, float]]] | None = None,
    cold_start: float | None = None,
    **gauges: float,
) -> Snapshot:
    """Counters rising at ``prompt``/``gen`` tokens/s over the last 30 s, gauges sampled at now."""
    windows: dict[str, SignalWindow] = {}

    def add(name: str, points: list[tuple[float, float]]) -> None:
        w = windows[name] = SignalWindow(3600)
        for ts, v in points:
            w.add(ts, v)

    if prompt is not None:
        add(signals.PROMPT_TOKENS_TOTAL, [(now - 30, 1e6), (now, 1e6 + 30 * prompt)])
    if gen is not None:
        add(signals.GENERATION_TOKENS_TOTAL, [(now - 30, 1e5), (now, 1e5 + 30 * gen)])
    if waiting is not None:
        add(signals.WAITING, [(now, waiting)])
    for name, value in gauges.items():
        add(name, [(now, value)])
    for name, points in (series or {}).items():
        add(name, points)
    ready = current if ready is None else ready
    return Snapshot("llm/chat", now, current, ready, starting, windows, cold_start)


def decide(p: LlmPolicy, s: Snapshot, state: LlmState | None = None) -> tuple[Proposal, LlmState]:
    return p.decide(s, p.initial_state(s) if state is None else state)


# -- scale-up terms ------------------------------------------------------------------------------


def test_token_demand_against_the_capacity_model() -> None:
    # 500/1000 + 50/100 = 1.0 replica of GPU time; at 0.5 utilisation: 2 replicas.
    prop, _ = decide(policy(), snap(1000, 1))
    assert prop.replicas == 2
    assert prop.reason == "token demand per replica"
    assert prop.inputs["load_replicas"] == pytest.approx(1.0)
    assert prop.inputs["prompt_tokens_per_second"] == pytest.approx(500)
    assert prop.inputs["generation_tokens_per_second"] == pytest.approx(50)


def test_burst_reserve_adds_spare_as_the_square_root_of_the_load() -> None:
    """``burstReserve``: load / targetUtilization + reserve x sqrt(load). One replica of load at
    0.5: 2 + 1.5 x 1 = 3.5 -> 4; nine replicas of load: 18 + 1.5 x 3 = 22.5 -> 23. The reserve
    doubles the quiet fleet and adds 28% to the busy one; the target alone keeps the same share
    spare at both loads."""
    assert decide(policy(burstReserve=1.5), snap(1000, 1))[0].replicas == 4
    busy = snap(1000, 10, prompt=4500.0, gen=450.0)
    assert decide(policy(), busy)[0].replicas == 18
    assert decide(policy(burstReserve=1.5), busy)[0].replicas == 23
    # Scale-down keeps the reserve: 4 replicas carry 1.0 of load with a reserve of 1.5 only
    # above (2 + 1.5) / 0.85 = 4.1 replicas, so none goes; without it 3 of 4 would be enough.
    assert _after_delay(policy(burstReserve=1.5), snap(1000, 4)).reason.startswith("tokens")
    assert _after_delay(policy(), snap(1000, 4)).replicas == 3


def test_throttled_tokens_count_as_demand_at_the_observed_mix() -> None:
    # Mix 500:50 -> one replica serves 1 / (10/11/1000 + 1/11/100) = 550 tokens/s; 275 refused
    # tokens/s are another 0.5 replica: (1.0 + 0.5) / 0.5 = 3.
    s = snap(1000, 1, **{signals.THROTTLED_TOKENS_PER_SECOND: 275.0})
    assert decide(policy(), s)[0].replicas == 3
    assert decide(policy(includeThrottled=False), s)[0].replicas == 2


def test_queue_drives_the_count() -> None:
    prop, _ = decide(policy(), snap(1000, 4, prompt=0, gen=0, waiting=13))
    assert prop.replicas == 7  # ceil(13 / 2)
    assert prop.reason == "queue per replica"


def test_queue_grows_the_fleet_at_most_by_the_growth_factor_per_step() -> None:
    s = snap(1000, 2, prompt=0, gen=0, waiting=40)
    assert decide(policy(), s)[0].replicas == 4  # min(ceil(40 / 2), 2 * 2 ready)
    assert decide(policy(queueMaxGrowth=3), s)[0].replicas == 6
    # From zero ready replicas the queue still asks for one.
    assert decide(policy(), snap(1000, 0, prompt=0, gen=0, waiting=5))[0].replicas == 1


def test_a_queue_that_drains_fast_adds_nothing() -> None:
    # Waiting over the 10 s window: mean 6, last 2: slope 2 * (6 - 2) / 10 = 0.8 requests/s, so
    # the queue clears in 2.5 s, within queueDrainSeconds (30): no queue term.
    fall = [(991.0, 10.0), (994.0, 8.0), (997.0, 4.0), (1000.0, 2.0)]
    s = snap(1000, 1, prompt=0, gen=0, waiting=None, series={signals.WAITING: fall})
    prop, _ = decide(policy(), s)
    assert prop.replicas == 1
    assert prop.inputs["requests_waiting"] == pytest.approx(6.0)
    # Asked to clear within 2 s, the same queue is a shortfall: ceil(6 / 2), capped at 2 x 1.
    assert decide(policy(queueDrainSeconds=2), s)[0].replicas == 2
    # ... unless a new replica would take longer than that to start: the measured cold start
    # (5 s here) is the horizon when it is longer.
    s5 = snap(1000, 1, prompt=0, gen=0, waiting=None, series={signals.WAITING: fall}, cold_start=5)
    assert decide(policy(queueDrainSeconds=2), s5)[0].replicas == 1
    # A growing queue is never "draining".
    rise = [(t, 12.0 - v) for t, v in fall]
    s = snap(1000, 2, prompt=0, gen=0, waiting=None, series={signals.WAITING: rise})
    assert decide(policy(), s)[0].replicas == 3  # ceil(mean 6 / 2)


def test_kv_cache_pressure_drives_the_count() -> None:
    s = snap(1000, 4, prompt=0, gen=0, **{signals.KV_CACHE_USAGE: 0.9})
    prop, _ = decide(policy(), s)
    assert prop.replicas == 6  # ceil(4 * 0.9 / 0.6)
    assert prop.reason == "KV cache per replica"
    assert prop.inputs["kv_cache_usage"] == pytest.approx(0.9)


def test_ttft_above_the_slo_fraction_scales_by_the_excess() -> None:
    # 2.4 s against 0.8 * 2 s = 1.6 s: 4 ready * 1.5 = 6.
    s = snap(1000, 4, prompt=0, gen=0, waiting=1, **{signals.TTFT_P95_SECONDS: 2.4})
    prop, _ = decide(policy(), s)
    assert prop.replicas == 6
    assert prop.reason == "TTFT above the SLO fraction"
    # At most doubled; at least one more.
    s = snap(1000, 4, prompt=0, gen=0, waiting=1, **{signals.TTFT_P95_SECONDS: 20.0})
    assert decide(policy(), s)[0].replicas == 8
    s = snap(1000, 4, prompt=0, gen=0, waiting=1, **{signals.TTFT_P95_SECONDS: 1.61})
    assert decide(policy(), s)[0].replicas == 5


def test_ttft_without_a_queue_is_prefill_bound_and_ignored() -> None:
    # Long prompts can exceed the SLO on an idle replica: more replicas would not help.
    s = snap(1000, 4, prompt=0, gen=0, waiting=0, **{signals.TTFT_P95_SECONDS: 5.0})
    prop, _ = decide(policy(), s)
    assert prop.replicas == 4
    assert prop.reason == "scale-down pending"


def test_queue_time_above_its_share_of_the_slo_scales() -> None:
    # 0.6 s against 0.25 * 2 s = 0.5 s: ceil(4 * 1.2) = 5.
    s = snap(1000, 4, prompt=0, gen=0, **{QUEUE_TIME_P95_SECONDS: 0.6})
    prop, _ = decide(policy(), s)
    assert prop.replicas == 5
    assert prop.inputs["queue_time_p95_seconds"] == pytest.approx(0.6)
    assert decide(policy(queueTimeSignal=None), s)[0].replicas == 4


def test_latency_max_growth_caps_both_latency_terms() -> None:
    # Queue time 5 s against 0.5 s would scale 8 ready by 10: the default cap doubles them,
    # 1.5 gives 12, and 1 leaves the floor of one more than ready.
    s = snap(1000, 8, prompt=0, gen=0, **{QUEUE_TIME_P95_SECONDS: 5.0})
    assert decide(policy(), s)[0].replicas == 16
    assert decide(policy(latencyMaxGrowth=1.5), s)[0].replicas == 12
    assert decide(policy(latencyMaxGrowth=1), s)[0].replicas == 9
    # Below the cap the excess still scales: 0.6 s against 0.5 s is 1.2 x 8 = 9.6 -> 10.
    s = snap(1000, 8, prompt=0, gen=0, **{QUEUE_TIME_P95_SECONDS: 0.6})
    assert decide(policy(latencyMaxGrowth=1.5), s)[0].replicas == 10
    # The TTFT fallback (no queue time reported) takes the same cap: 20 s against 1.6 s.
    s = snap(1000, 4, prompt=0, gen=0, waiting=1, **{signals.TTFT_P95_SECONDS: 20.0})
    assert decide(policy(latencyMaxGrowth=1.25), s)[0].replicas == 5
    with pytest.raises(ValueError, match="latencyMaxGrowth"):
        policy(latencyMaxGrowth=0.5)


def test_ttft_is_not_judged_when_queue_time_is_reported() -> None:
    # On long prompts TTFT is mostly each request's own prefill: with queue time reported, a TTFT
    # of 5 s (which alone would double 4 ready replicas: 5 / 1.6 > 2) adds nothing, because the
    # wait before prefill (0.2 s) is within its bound (0.5 s) ...
    s = snap(1000, 4, prompt=0, gen=0, waiting=1, **{signals.TTFT_P95_SECONDS: 5.0})
    assert decide(policy(), s)[0].replicas == 8
    both = {signals.TTFT_P95_SECONDS: 5.0, QUEUE_TIME_P95_SECONDS: 0.2}
    prop, _ = decide(policy(), snap(1000, 4, prompt=0, gen=0, waiting=1, **both))
    assert prop.replicas == 4
    assert prop.inputs["ttft_p95_seconds"] == pytest.approx(5.0)  # still reported
    # ... nor holds a scale-down (0.2 s is below the queue-time hold of 0.25 s).
    prop = _after_delay(policy(), snap(1000, 4, prompt=100, gen=10, waiting=1, **both))
    assert (prop.replicas, prop.reason) == (3, "remaining replicas below target")
    # Turning the queue-time signal off brings TTFT back as the latency signal.
    assert (
        decide(policy(queueTimeSignal=None), snap(1000, 4, prompt=0, gen=0, waiting=1, **both))[
            0
        ].replicas
        == 8
    )


def test_queue_time_is_judged_against_the_slo_after_the_mean_prefill() -> None:
    # 500 prompt tokens/s at 1 request/s: 500 tokens per request, 0.5 s of prefill at 1000
    # tokens/s. The queue's budget is 2 - 0.5 = 1.5 s: it adds above 0.25 * 1.5 = 0.375 s.
    # 0.45 s: ceil(4 * 0.45 / 0.375) = ceil(4.8) = 5 (tokens ask for only (0.5 + 0.5) / 0.5 = 2).
    q = {QUEUE_TIME_P95_SECONDS: 0.45}
    prop, _ = decide(policy(), snap(1000, 4, **q, **{signals.RPS: 1.0}))
    assert prop.replicas == 5
    assert prop.reason == "queue time above its share of the SLO"
    assert prop.inputs["prefill_seconds"] == pytest.approx(0.5)
    # Without an arrival rate the prefill is unknown: the bound is 0.25 * 2 = 0.5 s, not passed.
    prop, _ = decide(policy(), snap(1000, 4, **q))
    assert prop.replicas == 4
    assert "prefill_seconds" not in prop.inputs
    # At most half the SLO counts as prefill: 500 tokens at 0.1 request/s would be 5 s of
    # prefill; taken as 1 s, the bound is 0.25 * 1 = 0.25 s: 4 * 0.45 / 0.25 = 7.2, capped at 8.
    prop, _ = decide(policy(), snap(1000, 4, **q, **{signals.RPS: 0.1}))
    assert prop.replicas == 8
    assert prop.inputs["prefill_seconds"] == pytest.approx(1.0)
    # The hold is half the bound: 0.1875 s. 100 tokens/s at 0.2 requests/s is 0.5 s of prefill
    # again; 0.2 s of queue time holds a step down that the whole-SLO bound (0.25 s) allows.
    calm = {QUEUE_TIME_P95_SECONDS: 0.2}
    s = snap(1000, 4, prompt=100, gen=10, waiting=1, **calm, **{signals.RPS: 0.2})
    prop = _after_delay(policy(), s)
    assert (prop.replicas, prop.reason) == (4, "queue time near its share of the SLO")
    assert (
        _after_delay(policy(), snap(1000, 4, prompt=100, gen=10, waiting=1, **calm)).replicas == 3
    )


def test_ttft_fallback_subtracts_the_mean_prefill() -> None:
    # No queue time reported: TTFT less the 0.5 s prefill (500 tokens per request at 1000/s)
    # against 0.8 x (2 - 0.5) = 1.2 s. TTFT 2.4 s: 1.9 s waited, ceil(4 * 1.9 / 1.2) = 7 (6 when
    # the prefill is unknown: 4 * 2.4 / 1.6).
    ttft = {signals.TTFT_P95_SECONDS: 2.4}
    prop, _ = decide(policy(), snap(1000, 4, gen=0, waiting=1, **ttft, **{signals.RPS: 1.0}))
    assert (prop.replicas, prop.reason) == (7, "TTFT above the SLO fraction")
    assert decide(policy(), snap(1000, 4, gen=0, waiting=1, **ttft))[0].replicas == 6
    # Hold: TTFT 1.2 s with 0.5 s prefill is 0.7 s waited, below 0.5 x 1.5 = 0.75 s: it steps
    # down (the whole-SLO hold, 1.0 s, refuses: see the scale-down tests).
    s = snap(
        1000, 4, prompt=100, gen=10, waiting=1, **{signals.TTFT_P95_SECONDS: 1.2, signals.RPS: 0.2}
    )
    assert _after_delay(policy(), s).replicas == 3


def test_unserved_demand_from_arrivals_while_the_queue_grows() -> None:
    # Waiting over the 10 s window rises 2 -> 8: mean 5, last 8, so it grows 2 * 3 / 10 = 0.6
    # requests/s. With 1.2 arrivals/s the replicas start 0.6/s: demand is twice the served
    # load, 2 * 1.0 / 0.5 = 4 replicas (the queue alone asks ceil(5 / 2) = 3).
    rise = [(991.0, 2.0), (994.0, 4.0), (997.0, 6.0), (1000.0, 8.0)]
    s = snap(1000, 2, waiting=None, series={signals.WAITING: rise}, **{signals.RPS: 1.2})
    assert decide(policy(unservedDemand=True), s)[0].replicas == 4
    assert decide(policy(), s)[0].replicas == 3
    # At most 4x the served load, however fast the queue grows against the arrivals.
    s = snap(1000, 2, waiting=None, series={signals.WAITING: rise}, **{signals.RPS: 0.5})
    assert decide(policy(unservedDemand=True), s)[0].replicas == 8  # 4 * 1.0 / 0.5
    # No arrival rate: the term does not apply.
    s = snap(1000, 2, waiting=None, series={signals.WAITING: rise})
    assert decide(policy(unservedDemand=True), s)[0].replicas == 3


def test_unserved_demand_waits_for_a_queue_beyond_what_ready_replicas_hold() -> None:
    # The same growth (2 -> 8, 0.6 requests/s against 1.2 arrivals/s) on 4 ready replicas: the
    # last queue (8) is what 4 x 2 hold, not more, so it is arrival noise on a fleet that keeps
    # up: the tokens' 2 replicas stand (the queue's ceil(5 / 2) = 3 is below the 4 there).
    rise = [(991.0, 2.0), (994.0, 4.0), (997.0, 6.0), (1000.0, 8.0)]
    s = snap(1000, 4, waiting=None, series={signals.WAITING: rise}, **{signals.RPS: 1.2})
    prop, _ = decide(policy(unservedDemand=True), s)
    assert prop.replicas == 4
    assert prop.reason != "arrivals outgrow served tokens"
    # One more waiting request (2 -> 9: mean 5.25, slope 0.75/s) is beyond what 4 hold: demand
    # is 1.2 / (1.2 - 0.75) = 2.67x the served load: ceil(2.67 * 1.0 / 0.5) = 6.
    rise9 = [(991.0, 2.0), (994.0, 4.0), (997.0, 6.0), (1000.0, 9.0)]
    s = snap(1000, 4, waiting=None, series={signals.WAITING: rise9}, **{signals.RPS: 1.2})
    prop, _ = decide(policy(unservedDemand=True), s)
    assert (prop.replicas, prop.reason) == (6, "arrivals outgrow served tokens")


def test_largest_term_wins() -> None:
    s = snap(1000, 3, waiting=9, **{signals.KV_CACHE_USAGE: 0.3})
    prop, _ = decide(policy(), s)
    assert prop.replicas == 5  # queue ceil(9 / 2) = 5 > tokens 2 = kv ceil(3 * 0.3 / 0.6)
    assert prop.reason == "queue per replica"


# -- replicas still starting ---------------------------------------------------------------------


def test_starting_replicas_are_not_double_counted() -> None:
    p = policy()
    # Tokens ask for 2, the queue for 4: 6 are already asked for (2 ready, 4 starting).
    s = snap(1000, 6, ready=2, starting=4, waiting=7)
    prop, state = decide(p, s)
    assert prop.replicas == 6
    assert state.last_starting == 1000
    # TTFT measured on the 2 ready replicas would double them again; while replicas start it
    # does not count, so nothing is stacked.
    s = snap(1000, 6, ready=2, starting=4, waiting=3, **{signals.TTFT_P95_SECONDS: 9.0})
    assert decide(p, s)[0].replicas == 6


def test_demand_beyond_what_is_starting_adds_more() -> None:
    # Token demand measured on the ready replicas: 3000/1000 + 50/100 = 3.5 -> 7 > 6 asked for.
    s = snap(1000, 6, ready=2, starting=4, prompt=3000)
    assert decide(policy(), s)[0].replicas == 7
    # A queue that builds while replicas start is what they were asked for: by default it adds
    # nothing; with queueWhileStarting it may, within the growth cap over ready replicas.
    s = snap(1000, 6, ready=2, starting=4, waiting=20)
    assert decide(policy(), s)[0].replicas == 6
    assert decide(policy(queueWhileStarting=True), s)[0].replicas == 6  # cap 2 x 2 ready
    p = policy(queueWhileStarting=True, queueMaxGrowth=5)
    assert decide(p, s)[0].replicas == 10  # ceil(20 / 2), within 5 x 2


def test_latency_from_before_the_last_replica_settled_is_ignored() -> None:
    # TTFT 9 s while the new replica was still starting (985), 1.2 s after it became ready (990).
    ttft = [(985.0, 9.0), (995.0, 1.2)]
    s = snap(1000, 4, prompt=0, gen=0, waiting=1, series={signals.TTFT_P95_SECONDS: ttft})
    state = LlmState(last_starting=990)
    p = policy(settleSeconds=0)
    assert p.decide(s, state)[0].replicas == 4  # only 1.2 s counts (below 1.6 s), not 9 s
    assert p.decide(s, LlmState())[0].replicas == 8  # nothing started recently: 9 s counts
    # With the default 30 s to settle (the cold start's backlog drains), neither counts yet.
    assert policy().decide(s, state)[0].replicas == 4
    late = snap(1030, 4, prompt=0, gen=0, waiting=1, series={signals.TTFT_P95_SECONDS: ttft})
    assert policy().decide(late, state)[0].replicas == 4  # 1030 - 990 - 30 = 10 s: no sample
    now = [(1025.0, 9.0)]
    later = snap(1030, 4, prompt=0, gen=0, waiting=1, series={signals.TTFT_P95_SECONDS: now})
    assert policy().decide(later, state)[0].replicas == 8


# -- scale-down ----------------------------------------------------------------------------------


def test_scale_down_is_one_step_after_the_delay_and_spaced() -> None:
    p = policy()
    low = {"prompt": 100.0, "gen": 10.0}  # 0.2 replica of load
    prop, st = decide(p, snap(1000, 4, **low))
    assert (prop.replicas, prop.reason) == (4, "scale-down pending")
    prop, st = decide(p, snap(1299, 4, **low), st)
    assert prop.replicas == 4
    prop, st = decide(p, snap(1300, 4, **low), st)
    assert (prop.replicas, prop.reason) == (3, "remaining replicas below target")
    assert st.last_down == 1300
    # The next step waits another full delay, even though the condition still holds.
    prop, st = decide(p, snap(1301, 3, **low), st)
    assert prop.replicas == 3
    prop, st = decide(p, snap(1600, 3, **low), st)
    assert prop.replicas == 2


def test_steps_after_the_first_may_be_spaced_closer_than_the_delay() -> None:
    p = policy(scaleDownStepSeconds=60)
    low = {"prompt": 100.0, "gen": 10.0}
    _, st = decide(p, snap(1000, 4, **low))
    prop, st = decide(p, snap(1300, 4, **low), st)
    assert prop.replicas == 3
    assert decide(p, snap(1359, 3, **low), st)[0].replicas == 3
    assert decide(p, snap(1360, 3, **low), st)[0].replicas == 2


def test_a_step_may_remove_as_many_replicas_as_the_rest_carry() -> None:
    """``scaleDownMaxReplicas``: after a burst, back to what the load needs in one step. 1.5
    replicas of prefill at a 0.5 target less the 15% margin need 4 replicas (1.5 / 4 = 0.375 <=
    0.425, 1.5 / 3 = 0.5 > 0.425)."""
    load = {"prompt": 1500.0, "gen": 0.0}
    assert _after_delay(policy(), snap(1000, 8, **load)).replicas == 7  # the default: one
    fast = _after_delay(policy(scaleDownMaxReplicas=8), snap(1000, 8, **load))
    assert (fast.replicas, fast.reason) == (4, "remaining replicas below target")
    assert _after_delay(policy(scaleDownMaxReplicas=2), snap(1000, 8, **load)).replicas == 6
    # every target counts: 7 waiting need 5 replicas (7 > 2 x 4 x 0.85), 0.2 KV on 8 needs 4
    queued = snap(1000, 8, waiting=7, **load)
    assert _after_delay(policy(scaleDownMaxReplicas=8), queued).replicas == 5
    kv = snap(1000, 8, prompt=0.0, gen=0.0, **{signals.KV_CACHE_USAGE: 0.2})
    assert _after_delay(policy(scaleDownMaxReplicas=8), kv).replicas == 4
    # never below one replica in a step; the last goes alone, and only with no load
    idle = snap(1000, 3, prompt=0.0, gen=0.0)
    assert _after_delay(policy(scaleDownMaxReplicas=8), idle).replicas == 1
    assert (
        _after_delay(policy(scaleDownMaxReplicas=8), snap(1000, 1, prompt=0.0, gen=0.0)).replicas
        == 0
    )


def test_a_blocked_tick_restarts_the_delay() -> None:
    p = policy()
    low = {"prompt": 100.0, "gen": 10.0}
    _, st = decide(p, snap(1000, 4, **low))
    _, st = decide(p, snap(1200, 4, waiting=9, **low), st)  # a queue: 9 > 2 * 3 * 0.85
    assert st.below_since is None
    _, st = decide(p, snap(1250, 4, **low), st)
    assert decide(p, snap(1500, 4, **low), st)[0].replicas == 4
    assert decide(p, snap(1550, 4, **low), st)[0].replicas == 3


def _after_delay(p: LlmPolicy, s: Snapshot) -> Proposal:
    return p.decide(s, LlmState(below_since=s.now - 1000))[0]


@pytest.mark.parametrize(
    ("gauges", "why"),
    [
        ({signals.TTFT_P95_SECONDS: 1.2}, "TTFT near the SLO"),
        ({QUEUE_TIME_P95_SECONDS: 0.3}, "queue time near its share of the SLO"),
        ({signals.GPU_UTILIZATION: 0.97}, "GPUs busy"),
    ],
)
def test_scale_down_refuses_near_the_slo_and_on_busy_gpus(
    gauges: dict[str, float], why: str
) -> None:
    s = snap(1000, 4, prompt=100, gen=10, waiting=1, **gauges)
    prop = _after_delay(policy(), s)
    assert (prop.replicas, prop.reason) == (4, why)
    # Below those bounds the same load steps down.
    calm = snap(1000, 4, prompt=100, gen=10, waiting=1)
    assert _after_delay(policy(), calm).replicas == 3


def test_scale_down_refuses_while_replicas_start() -> None:
    prop = _after_delay(policy(), snap(1000, 4, ready=3, starting=1, prompt=100, gen=10))
    assert (prop.replicas, prop.reason) == (4, "replicas starting")


def test_scale_down_is_fragmentation_aware() -> None:
    p = policy()
    # 0.4 replica of load on 2: one replica would run at 0.4 <= 0.5 * 0.85: step down.
    assert _after_delay(p, snap(1000, 2, prompt=200, gen=20)).replicas == 1
    # 0.45 on 2: the token term alone says ceil(0.9) = 1, but one replica would run at 0.45,
    # above 0.425: stay at 2.
    prop = _after_delay(p, snap(1000, 2, prompt=250, gen=20))
    assert (prop.replicas, prop.reason) == (2, "tokens would exceed target on fewer replicas")
    # KV: 0.3 on 2 replicas is 0.6 on one, above 0.6 * 0.85.
    prop = _after_delay(p, snap(1000, 2, prompt=0, gen=0, **{signals.KV_CACHE_USAGE: 0.3}))
    assert (prop.replicas, prop.reason) == (2, "KV cache would exceed target on fewer replicas")


def test_last_replica_goes_only_without_any_load() -> None:
    p = policy()
    prop = _after_delay(p, snap(1000, 1, prompt=1, gen=0))
    assert (prop.replicas, prop.reason) == (1, "last replica has load")
    assert _after_delay(p, snap(1000, 1, prompt=0, gen=0)).replicas == 0


# -- missing signals -----------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["prompt", "gen", "waiting"])
def test_missing_required_signal_gives_no_proposal(missing: str) -> None:
    s = snap(1000, 3, **{missing: None})  # type: ignore[arg-type]
    prop, st = decide(policy(), s)
    assert prop.replicas is None
    assert prop.token_rate == pytest.approx(3 * 550 if missing == "waiting" else 3 * 1000 / 5.5)
    assert st.below_since is None


def test_missing_signals_never_take_the_target_to_zero() -> None:
    doc = parse_policy(
        """
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {name: m}
spec:
  targets:
    - name: chat
      policy:
        name: llm
        params: {sloTtftSeconds: 2, prefillTokensPerSecond: 1000, decodeTokensPerSecond: 100}
      guards: {minReplicas: 0, restartHoldSeconds: 0}
""",
        "m.yaml",
    )
    e = Engine.from_policy(doc)
    (key,) = e.targets
    (d,) = e.tick(0.0, [Observation(key, signals.REPLICAS, 3.0, 0.0)])
    for t in (30.0, 600.0, 1200.0):
        (d,) = e.tick(t, [Observation(key, signals.REPLICAS, 3.0, t)])
        assert d.proposal is None
        assert d.replicas == 3


# -- token budget --------------------------------------------------------------------------------


def test_token_budget_tracks_ready_replicas_and_lifts_as_they_become_ready() -> None:
    p = policy()
    # Mix 500:50 -> 550 tokens/s per replica (see above).
    starting = decide(p, snap(1000, 4, ready=1, starting=3))[0]
    assert starting.token_rate == pytest.approx(550)
    two = decide(p, snap(1030, 4, ready=2, starting=2))[0]
    assert two.token_rate == pytest.approx(1100)
    four = decide(p, snap(1060, 4, ready=4))[0]
    assert four.token_rate == pytest.approx(2200)
    # No ready replica: one replica's worth, never a zero limit that refuses everything.
    assert decide(p, snap(1000, 2, ready=0, starting=2))[0].token_rate == pytest.approx(550)


def test_token_budget_from_a_fixed_rate_and_utilization() -> None:
    p = policy(budgetTokensPerReplica=800, budgetUtilization=0.9)
    assert decide(p, snap(1000, 3))[0].token_rate == pytest.approx(3 * 800 * 0.9)
    # Unknown mix (no counters yet): 50/50 -> 1 / (0.5/1000 + 0.5/100) tokens/s per replica.
    q = policy()
    prop, _ = decide(q, snap(1000, 2, prompt=None, gen=None))
    assert prop.token_rate == pytest.approx(2 / (0.5 / 1000 + 0.5 / 100))


def test_budget_reaches_the_decision_through_the_engine() -> None:
    doc = parse_policy(
        """
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {name: m}
spec:
  targets:
    - name: chat
      policy:
        name: llm
        params:
          sloTtftSeconds: 2
          prefillTokensPerSecond: 1000
          decodeTokensPerSecond: 100
          budgetTokensPerReplica: 500
""",
        "m.yaml",
    )
    e = Engine.from_policy(doc)
    (key,) = e.targets

    def obs(t: float, ready: float) -> list[Observation]:
        return [
            Observation(key, signals.REPLICAS, 3.0, t),
            Observation(key, signals.REPLICAS_READY, ready, t),
            Observation(key, signals.REPLICAS_STARTING, 3.0 - ready, t),
        ]

    assert e.tick(0.0, obs(0.0, 1.0))[0].token_rate == pytest.approx(500)
    assert e.tick(15.0, obs(15.0, 3.0))[0].token_rate == pytest.approx(1500)


# -- params --------------------------------------------------------------------------------------


def test_params_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="prefillTokensPerSecond"):
        LlmParams.model_validate({"sloTtftSeconds": 2, "decodeTokensPerSecond": 100})
    with pytest.raises(ValueError, match="targetUtilization"):
        LlmParams.model_validate({**BASE, "targetUtilization": 1.5})
    with pytest.raises(
        ValueError, match=r"ttftHoldFraction \(0.9\) must be <= ttftScaleUpFraction"
    ):
        LlmParams.model_validate({**BASE, "ttftHoldFraction": 0.9, "ttftScaleUpFraction": 0.8})
    with pytest.raises(ValueError, match="waitingPerReplicas"):
        LlmParams.model_validate({**BASE, "waitingPerReplicas": 3})


def test_bad_params_in_a_policy_file_name_file_and_line() -> None:
    text = """\
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {name: m}
spec:
  targets:
    - name: chat
      policy:
        name: llm
        params:
          sloTtftSeconds: 2
          prefillTokensPerSecond: 1000
          decodeTokensPerSecond: -5
"""
    with pytest.raises(ConfigError) as err:
        parse_policy(text, "chat.yaml")
    msg = str(err.value)
    assert "chat.yaml:12" in msg
    assert "decodeTokensPerSecond" in msg


def test_required_signals_and_retention() -> None:
    p = policy(gpuWindowSeconds=120)
    assert p.required_signals() == (
        signals.WAITING,
        signals.PROMPT_TOKENS_TOTAL,
        signals.GENERATION_TOKENS_TOTAL,
    )
    assert p.retention_seconds() == 120
