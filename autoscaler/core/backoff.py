"""The arithmetic of waiting between retries, shared by sources and actuators: exponential
backoff with full jitter, and the server's ``Retry-After``. Pure: ``now`` and the rng are given."""

from __future__ import annotations

import math
import random
from email.utils import parsedate_to_datetime


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
