"""The simulator's per-request hot loop, compiled with numba.

One function, ``serve``, starts queued requests on replicas; small array-backed heaps replace
Python's heapq so the loop compiles. With ``NUMBA_DISABLE_JIT=1`` the same code runs as plain
Python (slowly), which is how a reader can step through it.

Layout (all owned by ``Cluster``):
- ``slots[row, :]``   a min-heap of the free times of one replica's sequence slots;
- ``prefill[row]``    when the replica's compute finishes its prefill backlog;
- ``busy[row]``       when its last started request finishes (billing of a draining replica);
- ``gkey/grow``       a min-heap over live replicas keyed by (when it can next begin, row);
- ``inflight``        a min-heap of finish times of started requests (for the running count).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _fsift_down(h: np.ndarray, n: int, pos: int) -> None:
    x = h[pos]
    while True:
        child = 2 * pos + 1
        if child >= n:
            break
        if child + 1 < n and h[child + 1] < h[child]:
            child += 1
        if h[child] < x:
            h[pos] = h[child]
            pos = child
        else:
            break
    h[pos] = x


@njit(cache=True, nogil=True)
def fheap_push(h: np.ndarray, n: int, x: float) -> int:
    pos = n
    while pos > 0:
        parent = (pos - 1) >> 1
        if x < h[parent]:
            h[pos] = h[parent]
            pos = parent
        else:
            break
    h[pos] = x
    return n + 1


@njit(cache=True, nogil=True)
def fheap_pop_until(h: np.ndarray, n: int, now: float) -> int:
    """Pop every entry <= now; returns the new size."""
    while n > 0 and h[0] <= now:
        n -= 1
        if n > 0:
            h[0] = h[n]
            _fsift_down(h, n, 0)
    return n


@njit(cache=True, nogil=True)
def _less(k1: float, r1: int, k2: float, r2: int) -> bool:
    return k1 < k2 or (k1 == k2 and r1 < r2)


@njit(cache=True, nogil=True)
def _gsift_down(key: np.ndarray, row: np.ndarray, n: int, pos: int) -> None:
    k = key[pos]
    r = row[pos]
    while True:
        child = 2 * pos + 1
        if child >= n:
            break
        if child + 1 < n and _less(key[child + 1], row[child + 1], key[child], row[child]):
            child += 1
        if _less(key[child], row[child], k, r):
            key[pos] = key[child]
            row[pos] = row[child]
            pos = child
        else:
            break
    key[pos] = k
    row[pos] = r


@njit(cache=True, nogil=True)
def _gsift_up(key: np.ndarray, row: np.ndarray, pos: int) -> None:
    k = key[pos]
    r = row[pos]
    while pos > 0:
        parent = (pos - 1) >> 1
        if _less(k, r, key[parent], row[parent]):
            key[pos] = key[parent]
            row[pos] = row[parent]
            pos = parent
        else:
            break
    key[pos] = k
    row[pos] = r


@njit(cache=True, nogil=True)
def gheap_push(key: np.ndarray, row: np.ndarray, n: int, k: float, r: int) -> int:
    key[n] = k
    row[n] = r
    _gsift_up(key, row, n)
    return n + 1


@njit(cache=True, nogil=True)
def gheap_remove(key: np.ndarray, row: np.ndarray, n: int, r: int) -> int:
    """Remove the entry of replica row ``r`` (a retired replica); returns the new size."""
    for i in range(n):
        if row[i] == r:
            n -= 1
            if i < n:
                key[i] = key[n]
                row[i] = row[n]
                _gsift_down(key, row, n, i)
                _gsift_up(key, row, i)
            return n
    return n


@njit(cache=True, nogil=True)
def serve(
    t1: float,
    head: int,
    upto: int,
    arrival: np.ndarray,
    prefill_s: np.ndarray,
    work: np.ndarray,
    llm: bool,
    tpot: float,
    timeout: float,
    slots: np.ndarray,
    prefill: np.ndarray,
    busy: np.ndarray,
    gkey: np.ndarray,
    grow: np.ndarray,
    gn: int,
    inflight: np.ndarray,
    inn: int,
    ttft: np.ndarray,
) -> tuple[int, int, int, float]:
    """Start queued requests [head, upto) whose start falls before t1, in FIFO order.

    A request starts on the replica that can begin it soonest (the later of its earliest free
    slot and its prefill backlog); one still waiting ``timeout`` after arrival is dropped.
    Returns (new head, new inflight size, dropped, generation tokens started).
    """
    nslots = slots.shape[1]
    dropped = 0
    gen = 0.0
    i = head
    while i < upto:
        a = arrival[i]
        if gn > 0:
            f = gkey[0]
            start = f if f > a else a
        else:
            start = np.inf
        if start >= t1:
            if a + timeout < t1:
                ttft[i] = np.nan
                dropped += 1
                i += 1
                continue
            break
        if start - a > timeout:
            ttft[i] = np.nan
            dropped += 1
            i += 1
            continue
        r = grow[0]
        w = work[i]
        if llm:
            # Prefill shares the replica's compute: one at a time, in admission order.
            first = start + prefill_s[i]
            prefill[r] = first
            finish = first + w * tpot
        else:
            first = start
            finish = start + w
        row = slots[r]
        row[0] = finish
        _fsift_down(row, nslots, 0)
        nxt = row[0]
        if llm and prefill[r] > nxt:
            nxt = prefill[r]
        gkey[0] = nxt
        _gsift_down(gkey, grow, gn, 0)
        inn = fheap_push(inflight, inn, finish)
        if finish > busy[r]:
            busy[r] = finish
        ttft[i] = first - a
        gen += w
        i += 1
    return i, inn, dropped, gen
