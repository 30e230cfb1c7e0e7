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
from autoscaler.core import signals
from autoscaler.core.snapshot import Snapshot
from autoscaler.core.types import Decision, Observation, TargetRef
from autoscaler.engine.target import TargetRuntime
from autoscaler.policy.guards import GuardState, apply_guards, apply_token_guards

_STATUS = signals.STATUS_SIGNALS


class Engine:
    def __init__(self, targets: Iterable[tuple[TargetRef, Target]] = ()) -> None:
        self._targets: dict[str, TargetRuntime] = {}
        self._order: list[TargetRuntime] = []
        self.unknown_observations = 0  # samples for targets we do not manage (counted, ignored)
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
        for ref, cfg in targets:
            old = self._targets.get(ref.key)
            if old is None or old.ref != ref:
                new[ref.key] = TargetRuntime(ref, cfg)
                continue
            if cfg != old.config:
                same_policy = old.config.policy.name == cfg.policy.name
                old.configure(cfg)
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
        key = None
        # Observations are tuples: unpacking beats four named-field lookups on the hot path.
        for target, signal, value, ts in observations:
            if target != key:  # observations usually come grouped by target
                key = target
                rt = targets.get(key)
            if rt is None:
                self.unknown_observations += 1
                continue
            if signal in _STATUS:
                # Replica status needs only its latest value: no window.
                if value - value == 0.0 and ts >= rt.status_ts.get(signal, -math.inf):
                    rt.status[signal] = value
                    rt.status_ts[signal] = ts
                continue
            w = rt.windows.get(signal)
            if w is None:
                w = rt.window(signal)
            w.add(ts, value)

    def tick(self, now: float, observations: Iterable[Observation] = ()) -> list[Decision]:
        self.observe(observations)
        return [self._decide(rt, now) for rt in self._order]

    def _decide(self, rt: TargetRuntime, now: float) -> Decision:
        status = rt.status
        last = rt.last
        v = status.get(signals.REPLICAS)
        if v is not None:
            current = int(v)
        elif last is not None:
            current = last.replicas
        else:
            current = int(status.get(signals.REPLICAS_READY, 0.0))
        v = status.get(signals.REPLICAS_READY)
        ready = current if v is None else int(v)
        v = status.get(signals.REPLICAS_STARTING)
        starting = max(0, current - ready) if v is None else int(v)
        snap = Snapshot(
            rt.key,
            now,
            current,
            ready,
            starting,
            rt.windows,
            status.get(signals.COLD_START_SECONDS),
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
        if rt.guard_state is None:
            rt.guard_state = GuardState(now)
        proposal, rt.policy_state = policy.decide(snap, state)
        cfg = rt.config
        replicas, ok, actions = apply_guards(
            cfg.guards, rt.guard_state, snap, proposal, rt.required
        )
        token_rate, token_actions = apply_token_guards(
            cfg.token_limits, rt.guard_state, now, proposal.token_rate, ok
        )
        if token_actions:
            actions.extend(token_actions)
        decision = Decision(
            target=rt.key,
            ts=now,
            policy=rt.policy_name,
            current=current,
            ready=ready,
            starting=starting,
            proposal=proposal.replicas,
            replicas=replicas,
            token_rate=token_rate,
            token_rate_per_replica=None if token_rate is None else token_rate / max(replicas, 1),
            reason=proposal.reason,
            signals_ok=ok,
            inputs=proposal.inputs,
            guards=tuple(actions),
        )
        rt.last = decision
        return decision
