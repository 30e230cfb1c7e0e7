"""A queue of timestamped counts: the memories of the HPA and of the step and stabilization guards.

Both keep ``(time, count)`` entries in arrival order, drop the old ones from the front and, for
the monotonic stabilization queues, the undercut ones from the back. A ``deque`` of tuples did
this. Compiled (autoscaler/native.py), each deque operation is a Python method call of about 150
instructions, each entry a tuple and a float, and an empty deque takes 600 bytes; a target has
up to nine such queues and touches them ten to twenty times a tick. ``StampQueue`` keeps the
times and counts in two lists and the front as an index: its operations are direct C calls of a
few dozen instructions, and an empty queue is three small objects.

Iterating gives ``(time, count)`` tuples, oldest first, so code and tests that read the entries
(the plain recomputation after time goes backwards, equality of memories) see what a deque gave.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final

# The lists are storage: the entries are those from ``_head`` up to ``_end``. Popping moves an
# index (a list that shrinks and regrows reallocates: the monotonic queues empty and refill every
# few ticks), and an emptied queue starts again at the front of its storage. The dropped front is
# compacted once it is this long and at least half the storage: amortised O(1) per pop.
_COMPACT_AT: Final = 32


class StampQueue:
    """``(time, count)`` pairs, oldest first. ``popleft``/``pop`` need a non-empty queue."""

    __slots__ = ("_end", "_head", "_n", "_t")

    def __init__(self, items: Iterable[tuple[float, int]] = ()) -> None:
        self._t: list[float] = []
        self._n: list[int] = []
        for t, n in items:
            self._t.append(t)
            self._n.append(n)
        self._head = 0
        self._end = len(self._t)

    def __len__(self) -> int:
        return self._end - self._head

    def __bool__(self) -> bool:
        return self._end > self._head

    def __iter__(self) -> Iterator[tuple[float, int]]:
        return iter(self.entries())

    def entries(self) -> list[tuple[float, int]]:
        """The entries as ``(time, count)`` tuples, oldest first."""
        t, n = self._t, self._n
        return [(t[i], n[i]) for i in range(self._head, self._end)]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StampQueue):
            return NotImplemented
        return self.entries() == other.entries()

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        return f"StampQueue({self.entries()!r})"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickling and copy of the memories that hold one (compiled, the default would not).
        return StampQueue, (self.entries(),)

    def first_t(self) -> float:
        return self._t[self._head]

    def first_n(self) -> int:
        return self._n[self._head]

    def last_t(self) -> float:
        return self._t[self._end - 1]

    def last_n(self) -> int:
        return self._n[self._end - 1]

    def append(self, t: float, n: int) -> None:
        end = self._end
        if end < len(self._t):
            self._t[end] = t
            self._n[end] = n
        else:
            self._t.append(t)
            self._n.append(n)
        self._end = end + 1

    def popleft(self) -> int:
        """Drop the oldest entry; its count."""
        h = self._head
        n = self._n[h]
        h += 1
        end = self._end
        if h == end:
            self._end = 0
            h = 0
        elif h >= _COMPACT_AT and h + h >= end:
            del self._t[:h]
            del self._n[:h]
            self._end = end - h
            h = 0
        self._head = h
        return n

    def pop(self) -> int:
        """Drop the newest entry; its count."""
        end = self._end - 1
        n = self._n[end]
        if end == self._head:
            self._head = 0
            end = 0
        self._end = end
        return n

    def clear(self) -> None:
        self._head = 0
        self._end = 0
