"""Every Kubernetes API call of the actuators goes through one ``ApiCaller``: the shared rate
limit, bounded retries with backoff, and errors sorted into the error tree by what to do next.

    409                       ConflictError: the caller re-reads and recomputes (not retried
                              here: a retry of the same body would fail the same way)
    429, 5xx                  retried with full-jitter backoff, or after Retry-After when the
    timeouts, connection cut  server sent one (a Retry-After above the bound ends the attempts);
                              then ``CallFailed`` (a TransientActuationError) with its kind
    403, 404, 422, other 4xx  ``Rejected`` (a PermanentActuationError), never retried

Kinds (``ActuationOutcome.error``): ``forbidden`` (401, 403), ``not_found`` (404, 410),
``invalid`` (422 and other 4xx: the request itself is wrong), ``conflict``, ``rate_limited``
(429), ``transient`` (5xx, connection), ``timeout``.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp

from autoscaler.actuators.backoff import RetryPolicy, full_jitter, parse_retry_after
from autoscaler.actuators.ratelimit import TokenBucket
from autoscaler.core.clock import Clock
from autoscaler.core.errors import (
    ActuationError,
    ConflictError,
    PermanentActuationError,
    TransientActuationError,
)
from autoscaler.kube import ApiException

log = logging.getLogger("autoscaler.actuators.calls")

T = TypeVar("T")

FIELD_MANAGER = "kserve-autoscaler"
MERGE_PATCH = "application/merge-patch+json"

#: Keyword arguments of every patch: a JSON merge patch (kubernetes-asyncio sends a dict body
#: as a JSON patch unless told otherwise; its stubs do not list ``_content_type``, hence a dict)
#: by our field manager.
MERGE_PATCH_KWARGS: dict[str, Any] = {"_content_type": MERGE_PATCH, "field_manager": FIELD_MANAGER}


class Rejected(PermanentActuationError):
    """The API server (or the actuator, before asking it) refused; retrying will not help this
    tick. ``kind`` is the outcome's error kind."""

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message, status)
        self.kind = kind


class CallFailed(TransientActuationError):
    """Every attempt of a call failed for a reason that may pass (429, 5xx, timeout)."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after)
        self.kind = kind


def error_kind(error: ActuationError) -> str:
    """The outcome's error kind for an error raised by a call or a plan."""
    if isinstance(error, Rejected | CallFailed):
        return error.kind
    if isinstance(error, ConflictError):
        return "conflict"
    if isinstance(error, TransientActuationError):
        return "transient"
    return "invalid"


def _status_message(e: ApiException) -> str:
    """The Status message of an error answer, else its reason phrase."""
    try:
        body = json.loads(e.body) if e.body else {}
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or e.reason or f"HTTP {e.status}")


def _header(e: ApiException, name: str) -> str | None:
    headers: Any = e.headers
    if not headers:
        return None
    value = headers.get(name)
    return None if value is None else str(value)


class ApiCaller:
    """Rate limit, retry and classify API calls. One per process, shared by every actuator (the
    rate limit is the process's). ``retried`` counts retries by kind, ``calls`` every request
    sent (both for metrics)."""

    def __init__(
        self,
        clock: Clock,
        *,
        limiter: TokenBucket | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        request_timeout: float = 5.0,
    ) -> None:
        self.clock = clock
        self.limiter = limiter if limiter is not None else TokenBucket(clock)
        self.retry = retry if retry is not None else RetryPolicy()
        self.rng = rng if rng is not None else random.Random()
        self.request_timeout = request_timeout
        self.retried: Counter[str] = Counter()
        self.calls = 0

    async def __call__(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` (one API request) under the rate limit, retrying what may pass.
        ``what`` names the request in logs and errors ("patch revisions llm/chat-00001")."""
        attempt = 0
        while True:
            await self.limiter.acquire()
            self.calls += 1
            try:
                return await call()
            except ApiException as e:
                failure = self._classify(what, e)
            except TimeoutError:
                failure = CallFailed("timeout", f"{what}: timed out")
            except aiohttp.ClientError as e:
                failure = CallFailed("transient", f"{what}: {type(e).__name__}: {e}")
            attempt += 1
            if attempt >= self.retry.attempts:
                raise failure
            delay = self._delay(attempt - 1, failure.retry_after)
            if delay is None:
                raise failure
            self.retried[failure.kind] += 1
            log.info("%s; retry %d in %.2fs", failure, attempt, delay)
            await self.clock.sleep(delay)

    def _classify(self, what: str, e: ApiException) -> CallFailed:
        status = int(e.status or 0)
        message = f"{what}: {status} {_status_message(e)}"
        if status == 409:
            raise ConflictError(message)
        if status == 429 or status >= 500 or status == 0:
            retry_after = parse_retry_after(_header(e, "Retry-After"), self.clock.now())
            kind = "rate_limited" if status == 429 else "transient"
            return CallFailed(kind, message, retry_after)
        if status in (401, 403):
            raise Rejected("forbidden", message, status)
        if status in (404, 410):
            raise Rejected("not_found", message, status)
        raise Rejected("invalid", message, status)

    def _delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Full-jitter backoff, or the server's Retry-After (None: longer than we may wait)."""
        if retry_after is not None:
            return retry_after if retry_after <= self.retry.max_retry_after else None
        return full_jitter(self.rng, attempt, self.retry.backoff_base, self.retry.backoff_cap)
