"""``Engine.tick(now, observations) -> list[Decision]``: the pure decision core.

For every target: record the new samples in its rolling windows, build a snapshot, run the policy,
run the guard chain, and return one decision record. Synchronous and deterministic: no I/O, no
clock reads, no asyncio; targets are processed in a fixed (sorted) order so equal inputs give equal
records. The live control loop and the simulator both drive this same object.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from autoscaler.config.models import PolicyFile, Target
from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import Decision, Observation, TargetRef
from autoscaler.core.windows import SignalWindow
from autoscaler.engine.target import (
    COLD_START_SLOT,
    READY_SLOT,
    REPLICAS_SLOT,
    STARTING_SLOT,
    UNREAD,
    PlanCache,
    TargetRuntime,
)
from autoscaler.policy.guards import GuardState


class Engine:
    def __init__(self, targets: Iterable[tuple[TargetRef, Target]] = ()) -> None:
        self._targets: dict[str, TargetRuntime] = {}
        self._order: list[TargetRuntime] = []
        self.unknown_observations = 0  # samples for targets we do not manage (counted, ignored)
        self.unread_observations = 0  # samples of signals the target's policy does not read
        self.set_targets(targets)

    @classmethod
    def from_policy(cls, doc: PolicyFile) -> Engine:
        """An engine for the named targets of a policy file (selectors are resolved by callers)."""
        return cls((t.ref(), t) for t in doc.spec.targets if t.name is not None)

    # -- configuration -----------------------------------------------------------------------

    def set_targets(self, targets: Iterable[tuple[TargetRef, Target]]) -> None:
        """Replace the managed targets (hot reload). A target that persists keeps its windows,
        guard memory and, when its policy keeps the same name, its policy state."""
        new: dict[str, TargetRuntime] = {}
        plans = PlanCache()
        for ref, cfg in targets:
            old = self._targets.get(ref.key)
            if old is None or old.ref != ref:
                new[ref.key] = TargetRuntime(ref, cfg, plans)
                continue
            if cfg != old.config:
                same_policy = old.config.policy.name == cfg.policy.name
                old.configure(cfg, plans)
                # The rebuilt policy adopts the old state at its next decision, when it can see
                # a snapshot; a different policy starts afresh.
                old.carry = same_policy and old.policy_state is not None
                if not same_policy:
                    old.policy_state = None
            new[ref.key] = old
        self._targets = new
        self._order = [new[k] for k in sorted(new)]

    @property
    def targets(self) -> Mapping[str, TargetRuntime]:
        return self._targets

    def set_hold_nonzero(self, key: str, hold: bool) -> None:
        """Keep a target above zero (a rollout is in progress)."""
        self._targets[key].hold_nonzero = hold

    # -- the tick ----------------------------------------------------------------------------

    def observe(self, observations: Iterable[Observation]) -> None:
        targets = self._targets
        rt: TargetRuntime | None = None
        routes: dict[str, SignalWindow | int] = {}
        key = None
        unknown = 0
        unread = 0
        try:
            # Observations are tuples: unpacking beats four named-field lookups on the hot path.
            for target, signal, value, ts in observations:
                if target != key:  # observations usually come grouped by target
                    key = target
                    rt = targets.get(key)
                    if rt is not None:
                        routes = rt.routes
                if rt is None:
                    unknown += 1
                    continue
                r = routes.get(signal)
                if r is None:
                    r = rt.route(signal)
                if not isinstance(r, SignalWindow):
                    if r == UNREAD:
                        unread += 1
                    # Replica status needs only its latest value: no window.
                    elif value - value == 0.0 and ts >= rt.status_ts[r]:
                        rt.status[r] = value
                        rt.status_ts[r] = ts
                    continue
                w = r
                # SignalWindow.add, inlined: a call per sample is a fifth of the ingest cost at
                # 60,000 samples a tick. Keep the two in step (tests/unit/test_engine.py checks).
                if value - value != 0.0 or ts - ts != 0.0:  # NaN/inf: missing data
                    w.dropped += 1
                    continue
                tss = w._ts
                if tss and ts < tss[-1]:  # older than the newest: out of order
                    w.dropped += 1
                    continue
                tss.append(ts)
                w._vals.append(value)
                if tss[w._start] < ts - w.retention:
                    w._trim(ts)
        finally:
            self.unknown_observations += unknown
            self.unread_observations += unread

    def tick(self, now: float, observations: Iterable[Observation] = ()) -> list[Decision]:
        self.observe(observations)
        return [self._decide(rt, now) for rt in self._order]

    def _decide(self, rt: TargetRuntime, now: float) -> Decision:
        status = rt.status  # NaN: never seen
        windows = rt.windows
        v = status[REPLICAS_SLOT]
        if v == v:
            current = int(v)
        elif rt.last is not None:
            current = rt.last.replicas
        else:
            v = status[READY_SLOT]
            current = int(v) if v == v else 0
        v = status[READY_SLOT]
        ready = int(v) if v == v else current
        v = status[STARTING_SLOT]
        # max(0, current - ready) without the builtin's keyword parsing.
        starting = int(v) if v == v else (current - ready if current > ready else 0)
        v = status[COLD_START_SLOT]
        # A Snapshot is built through its __init__, which compiled (docs/engine-performance.md,
        # "The compiled core") is one C call; object.__new__ is refused on a compiled class.
        snap = Snapshot(
            rt.key,
            now,
            current,
            ready,
            starting,
            windows,
            v if v == v else None,
            rt.hold_nonzero,
            rt.max_age,
        )

        policy = rt.policy
        state = rt.policy_state
        if state is None:
            state = policy.initial_state(snap)
        elif rt.carry:
            state = policy.carry_state(state, snap)
            rt.carry = False
        gst = rt.guard_state
        if gst is None:
            gst = rt.guard_state = GuardState(now)
        proposal, rt.policy_state = policy.decide(snap, state)
        wanted = proposal.replicas
        token_rate = proposal.token_rate
        reason = proposal.reason
        inputs = proposal.inputs
        # The fallback guard's staleness test (GuardPlan.stale), on the windows directly.
        stale: list[str] | None = None
        max_age = rt.max_age
        for name in rt.required:
            w = windows.get(name)
            if w is None:
                age = math.inf
            else:
                tss = w._ts
                age = now - tss[-1] if tss else math.inf
            if age > max_age:
                if stale is None:
                    stale = [name]
                else:
                    stale.append(name)
        replicas, ok, actions = rt.guard_plan.apply(gst, snap, wanted, stale)
        token_plan = rt.token_plan
        # Without a proposed rate, and without a last one to hold on stale signals, the token
        # guards return None and change nothing: skip the call (most policies propose no rate).
        if token_plan is not None and (
            token_rate is not None or (not ok and gst.last_token_rate is not None)
        ):
            token_rate = token_plan.apply(gst, now, token_rate, ok, actions)
        decision = Decision(
            rt.key,
            now,
            rt.policy_name,
            current,
            ready,
            starting,
            wanted,
            replicas,
            token_rate,
            None if token_rate is None else token_rate / (replicas if replicas > 1 else 1),
            reason,
            ok,
            inputs,
            tuple(actions) if actions else (),
        )
        rt.last = decision
        return decision
