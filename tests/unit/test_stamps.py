"""StampQueue against a deque of tuples, the structure it replaced in the HPA and guard memories."""

from __future__ import annotations

import math
from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.core.stamps import StampQueue

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.floats(allow_nan=True), st.integers(-5, 50)),
        st.tuples(st.just("popleft")),
        st.tuples(st.just("pop")),
        st.tuples(st.just("clear")),
    ),
    max_size=400,
)


def _key(entries: list[tuple[float, int]]) -> list[tuple[object, int]]:
    # NaN compares unequal to itself; a compiled queue stores times unboxed, so the NaN it hands
    # back is not the object appended (a deque's is).
    return [("nan" if math.isnan(t) else t, n) for t, n in entries]


@settings(max_examples=300, deadline=None)
@given(_OPS)
def test_stamp_queue_behaves_as_a_deque_of_tuples(ops: list[tuple[object, ...]]) -> None:
    q = StampQueue()
    model: deque[tuple[float, int]] = deque()
    for op in ops:
        if op[0] == "append":
            t, n = op[1], op[2]
            assert isinstance(t, float) and isinstance(n, int)
            q.append(t, n)
            model.append((t, n))
        elif op[0] == "clear":
            q.clear()
            model.clear()
        elif model:
            if op[0] == "popleft":
                assert q.popleft() == model.popleft()[1]
            else:
                assert q.pop() == model.pop()[1]
        assert len(q) == len(model)
        assert bool(q) == bool(model)
        assert _key(q.entries()) == _key(list(model))
        if model:
            ends = [(q.first_t(), q.first_n()), (q.last_t(), q.last_n())]
            assert _key(ends) == _key([model[0], model[-1]])


def test_long_running_queue_keeps_its_storage_bounded() -> None:
    # A sliding window (append one, drop the oldest) for many ticks: the dropped front is
    # compacted, so storage stays within twice the live entries plus the compaction threshold.
    q = StampQueue()
    for i in range(10_000):
        q.append(float(i), i % 7)
        if len(q) > 40:
            q.popleft()
        assert len(q._t) <= 2 * len(q) + 32
    assert len(q) == 40
    assert q.entries() == [(float(i), i % 7) for i in range(9_960, 10_000)]


def test_emptied_queue_reuses_its_storage_and_compares_by_value() -> None:
    q = StampQueue([(1.0, 3), (2.0, 4)])
    assert list(q) == [(1.0, 3), (2.0, 4)]
    q.pop()
    q.pop()
    assert not q and len(q) == 0
    q.append(5.0, 9)  # written over the old storage
    assert q == StampQueue([(5.0, 9)])
    assert q != StampQueue([(5.0, 8)])
    assert repr(q) == "StampQueue([(5.0, 9)])"
    assert q.__eq__(object()) is NotImplemented


def test_records_and_memories_pickle_and_copy() -> None:
    # Compiled classes pickle by calling __init__ with no arguments unless told otherwise; the
    # records (and the HPA memory built on StampQueue) say how to rebuild themselves.
    import copy
    import pickle

    from autoscaler.core.types import Decision, GuardAction, Proposal
    from autoscaler.policy.builtin.hpa_common import HpaMemory
    from autoscaler.policy.builtin.llm import LlmState
    from autoscaler.policy.compat.knative import KpaResult

    mem = HpaMemory()
    mem.recommendations.append(1.0, 3)
    mem.up_events.append(1.0, 2)
    action = GuardAction("bounds", 5, 4, "maxReplicas 4")
    objects = [
        StampQueue([(1.0, 2), (3.0, 4)]),
        mem,
        action,
        Proposal(3, 10.0, "why", {"x": 1.0}),
        Decision("ns/m", 1.0, "queue", 2, 2, 0, 3, 3, None, None, "r", True, {"x": 1.0}, (action,)),
        KpaResult(True, 3, 1),
        LlmState(1.0, None, 2.0),
    ]
    for obj in objects:
        for twin in (pickle.loads(pickle.dumps(obj)), copy.deepcopy(obj), copy.copy(obj)):
            assert type(twin) is type(obj) and twin == obj, obj
