"""Retry settings and the arithmetic of waiting: exponential backoff with full jitter, and the
server's ``Retry-After``.

Every actuator call retries through these (``autoscaler.actuators.calls``); sleeps go through the
injected Clock. The defaults keep one target's worst case (every attempt failing, plus the waits)
inside the control loop's actuation deadline (10 s by default), so a struggling API server makes
an outcome ``transient`` instead of a cancelled task.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts``: tries of one API call on 429, 5xx, timeouts and connection errors (the first
    included). ``conflict_attempts``: read-compare-write rounds on 409 before giving up.
    ``max_retry_after``: a longer ``Retry-After`` ends the attempts for this tick rather than
    hold the target's task (the next tick asks again); the API server's priority and fairness
    answers 429 with ``Retry-After: 1``."""

    attempts: int = 3
    conflict_attempts: int = 4
    backoff_base: float = 0.25
    backoff_cap: float = 2.0
    max_retry_after: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.conflict_attempts < 1:
            raise ValueError("attempts and conflict_attempts must be >= 1")
        if self.backoff_base < 0 or self.backoff_cap < 0 or self.max_retry_after < 0:
            raise ValueError("backoff times must be >= 0")


def full_jitter(rng: random.Random, attempt: int, base: float, cap: float) -> float:
    """The wait before retry ``attempt + 1``: uniform over [0, min(cap, base * 2**attempt)]
    (AWS's "full jitter": retries of many clients spread out instead of arriving together)."""
    return rng.uniform(0.0, min(cap, base * 2.0**attempt))


def parse_retry_after(header: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date), or None."""
    if not header:
        return None
    header = header.strip()
    try:
        seconds = float(header)
    except ValueError:
        try:
            when = parsedate_to_datetime(header)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            return None
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
