"""Value types shared by every layer: targets, observations, proposals and decision records."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple

EMPTY: Mapping[str, float] = MappingProxyType({})


def _plain(inputs: Mapping[str, float]) -> Mapping[str, float]:
    """``inputs`` as something pickle takes: the shared empty ``EMPTY`` is a mappingproxy."""
    return inputs if type(inputs) is dict else dict(inputs)


def field_values(obj: Any) -> tuple[Any, ...]:
    """A dataclass's field values in declaration order: the arguments of its ``__init__`` for
    the dataclasses here, so ``cls, field_values(obj)`` is how they pickle."""
    return tuple([getattr(obj, f.name) for f in fields(obj)])


def rebuild(cls: Any, args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    """``cls(*args)`` with ``state``'s attributes set: how compiled state classes pickle and
    copy (by default a compiled class would be called with no arguments). A class's
    ``__reduce__`` returns ``rebuild, (cls, args, state)``."""
    obj = cls(*args)
    for name, value in state.items():
        setattr(obj, name, value)
    return obj


class Value:
    """Base of a small record the engine builds per target per tick: compares, hashes and prints
    by its ``_fields``. A plain class rather than a frozen dataclass, whose generated
    ``__init__`` stays a Python function when compiled (autoscaler/native.py); subclasses write
    their ``__init__`` out and are treated as immutable."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def _key(self) -> tuple[object, ...]:
        return tuple([getattr(self, name) for name in self._fields])

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self) or not isinstance(other, Value):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        args = ", ".join([f"{name}={getattr(self, name)!r}" for name in self._fields])
        return f"{type(self).__name__}({args})"

    # Read as the tuple of its fields, as the NamedTuples some of these were: unpacking,
    # indexing and len() keep working for code written against them.
    def __iter__(self) -> Iterator[Any]:
        return iter(self._key())

    def __getitem__(self, index: int) -> Any:
        return self._key()[index]

    def __len__(self) -> int:
        return len(self._fields)

    # Compiled, the default pickling calls __init__ without arguments; a subclass's __init__
    # takes its fields in ``_fields`` order.
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), self._key()


@dataclass(frozen=True, slots=True)
class TargetRef:
    """A scaling target. ``kind`` is the Kubernetes kind (InferenceService, Service, Deployment)."""

    kind: str
    namespace: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


class Observation(NamedTuple):
    """One timestamped reading of one signal for one target (``target`` is ``TargetRef.key``).

    ``ts`` is the time the source says the value was true (a scrape's or a Prometheus sample's own
    timestamp), not when we received it, so staleness is measured rather than guessed.
    A NamedTuple: immutable and cheap to build, as sources build many per tick.
    """

    target: str
    signal: str
    value: float
    ts: float


class Proposal(Value):
    """What a policy wants before guards. ``replicas=None`` means "no valid decision this tick"
    (missing data, as Knative's invalid decider result): the guards then hold the last good count.

    Built like the NamedTuple it was (positional or keyword fields, ``_replace``, unpacking into
    its four fields, equality by value), but a compiled record: every policy builds one per
    target per tick, and a tuple subclass costs a generic ``tuple.__new__`` call (about 700
    instructions) where this is one C call.
    """

    __slots__ = ("inputs", "reason", "replicas", "token_rate")
    _fields: ClassVar[tuple[str, ...]] = ("replicas", "token_rate", "reason", "inputs")

    def __init__(
        self,
        replicas: int | None,
        token_rate: float | None = None,
        reason: str = "",
        inputs: Mapping[str, float] = EMPTY,
    ) -> None:
        self.replicas = replicas
        self.token_rate = token_rate
        self.reason = reason
        self.inputs = inputs

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return Proposal, (self.replicas, self.token_rate, self.reason, _plain(self.inputs))

    def _replace(self, **changes: Any) -> Proposal:
        fields = {name: getattr(self, name) for name in self._fields}
        unknown = set(changes) - set(fields)
        if unknown:
            raise ValueError(f"Proposal has no fields {sorted(unknown)}")
        fields.update(changes)
        return Proposal(**fields)


class GuardAction(Value):
    """A guard changed the replica count (or token rate) from ``before`` to ``after``, and why.

    A compiled record like ``Proposal`` (it was a NamedTuple: fields, unpacking and equality by
    value are kept): guards build them per target per tick when they clip.
    """

    __slots__ = ("after", "before", "guard", "reason")
    _fields: ClassVar[tuple[str, ...]] = ("guard", "before", "after", "reason")

    def __init__(self, guard: str, before: float | None, after: float | None, reason: str) -> None:
        self.guard = guard
        self.before = before
        self.after = after
        self.reason = reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "guard": self.guard,
            "before": self.before,
            "after": self.after,
            "reason": self.reason,
        }


@dataclass(init=False)
class Decision:
    """The record of one target's tick: what was seen, what the policy wanted, every clip and why.

    The same record is logged, counted, served at /debug/decisions and written by the simulator.
    Treat it as immutable; it is not frozen only because frozen dataclasses cost ~2 us more to
    build, and the engine builds one per target per tick. The ``__init__`` is written out rather
    than generated: compiled (autoscaler/native.py) it is one C call with unboxed arguments, where
    a generated one stays a Python function.
    """

    target: str
    ts: float
    policy: str
    current: int
    ready: int
    starting: int
    proposal: int | None
    replicas: int
    token_rate: float | None
    token_rate_per_replica: float | None
    reason: str
    signals_ok: bool
    inputs: Mapping[str, float]
    guards: tuple[GuardAction, ...]

    def __init__(
        self,
        target: str,
        ts: float,
        policy: str,
        current: int,
        ready: int,
        starting: int,
        proposal: int | None,
        replicas: int,
        token_rate: float | None,
        token_rate_per_replica: float | None,
        reason: str,
        signals_ok: bool,
        inputs: Mapping[str, float] = EMPTY,
        guards: tuple[GuardAction, ...] = (),
    ) -> None:
        self.target = target
        self.ts = ts
        self.policy = policy
        self.current = current
        self.ready = ready
        self.starting = starting
        self.proposal = proposal
        self.replicas = replicas
        self.token_rate = token_rate
        self.token_rate_per_replica = token_rate_per_replica
        self.reason = reason
        self.signals_ok = signals_ok
        self.inputs = inputs
        self.guards = guards

    @property
    def changed(self) -> bool:
        return self.replicas != self.current

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickling and copy (compiled, the default would call __init__ without arguments).
        *head, inputs, guards = field_values(self)
        return Decision, (*head, _plain(inputs), guards)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ts": self.ts,
            "policy": self.policy,
            "current": self.current,
            "ready": self.ready,
            "starting": self.starting,
            "inputs": dict(sorted(self.inputs.items())),
            "proposal": self.proposal,
            "replicas": self.replicas,
            "token_rate": self.token_rate,
            "token_rate_per_replica": self.token_rate_per_replica,
            "reason": self.reason,
            "signals_ok": self.signals_ok,
            "guards": [g.to_dict() for g in self.guards],
        }
