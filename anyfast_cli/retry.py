"""Which failures are retried, and how long to wait (pure: never sleeps).

The loop that sleeps lives with the I/O (client.py, batch/runner.py); it asks
these functions what to do, passing its own clock and random generator.
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Mapping
from dataclasses import dataclass

INITIAL_BACKOFF = 0.5  # seconds before the first retry
MAX_BACKOFF = 8.0  # exponential growth stops here
JITTER = 0.25  # up to this fraction is taken off each wait, so clients spread out
MAX_RETRY_AFTER = 60.0  # a server asking for longer than this is not waited for

RETRYABLE_STATUSES = frozenset({408, 409, 429})


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds the server asks us to wait: `retry-after-ms`, or `Retry-After`
    as seconds or as an HTTP date (compared with `now`, a Unix time)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now)


def backoff_delay(attempt: int, retry_after: float | None, rng: random.Random) -> float:
    """Wait before retry number `attempt` (0-based): the server's word if it gave
    a sensible one, else exponential backoff with jitter."""
    if retry_after is not None and retry_after <= MAX_RETRY_AFTER:
        return retry_after
    base = min(INITIAL_BACKOFF * 2**attempt, MAX_BACKOFF)
    return base * (1 - JITTER * rng.random())


@dataclass(frozen=True)
class RetryPlan:
    delay: float | None  # seconds to wait before the next attempt; None: the failure is final
    retry_after: float | None = None  # what the server asked for, if it said
    wait_too_long: bool = False  # not retried only because the server asked for a longer wait than anyfast gives


def plan_retry(
    attempt: int,
    max_retries: int,
    rng: random.Random,
    *,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
    now: float = 0.0,
) -> RetryPlan:
    """What to do after failed attempt number `attempt` (0-based); `status` None means a
    network failure. The one decision both retry loops (client, batch runner) follow."""
    retry_after = parse_retry_after(headers, now) if headers is not None else None
    if status is not None and not is_retryable_status(status):
        return RetryPlan(None, retry_after)
    if not should_retry(attempt, max_retries, retry_after):
        return RetryPlan(None, retry_after, wait_too_long=attempt < max_retries)
    return RetryPlan(backoff_delay(attempt, retry_after, rng), retry_after)


def should_retry(attempt: int, max_retries: int, retry_after: float | None) -> bool:
    """Retry while attempts remain, unless the server asked for an absurd wait."""
    if attempt >= max_retries:
        return False
    return retry_after is None or retry_after <= MAX_RETRY_AFTER
