"""Retry settings and the arithmetic of waiting: exponential backoff with full jitter, and the
server's ``Retry-After``.

Every actuator call retries through these (``autoscaler.actuators.calls``); sleeps go through the
injected Clock. The defaults keep one target's worst case (every attempt failing, plus the waits)
inside the control loop's actuation deadline (10 s by default), so a struggling API server makes
an outcome ``transient`` instead of a cancelled task.
"""

from __future__ import annotations

from dataclasses import dataclass

from autoscaler.core.backoff import full_jitter, parse_retry_after

__all__ = ["RetryPolicy", "full_jitter", "parse_retry_after"]


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
