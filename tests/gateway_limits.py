"""Server-side rate limiters for the loopback gateway, and for simulations on fake time.

Each fake is pure: `admit(now)` takes the time (any clock, in seconds) and returns a
`Verdict`: let the request through, or refuse it with a 429 whose headers say when to come
back in one of three styles (`Retry-After` in whole seconds, `retry-after-ms`, or nothing),
optionally with OpenAI's `x-ratelimit-*-requests` headers on every answer.

    gateway.limiter = TokenBucket(rate=200, burst=20)      # tests/gateway.py asks its gate() first
    verdict = FixedWindow(limit=200).admit(now)             # or drive it on fake time

The kinds a gateway really uses:
- `TokenBucket(rate, burst)`: `burst` requests at once, refilled at `rate` per second.
- `FixedWindow(limit, window=1.0)`: `limit` requests per calendar window (windows start at
  multiples of `window` on the clock given); `FixedWindow(limit, 60.0)` is a per-minute quota.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

RETRY_STYLES = ("seconds", "ms", "none")


@dataclass
class Verdict:
    allowed: bool
    headers: dict = field(default_factory=dict)  # sent with the answer, 200 or 429
    wait: float = 0.0  # refused: the true seconds until a request would be let through

    @property
    def status(self) -> int:
        return 200 if self.allowed else 429


def format_duration(seconds: float) -> str:
    """OpenAI's form of `x-ratelimit-reset-*`: "20ms", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"


class _Limit:
    """What every fake shares: the refusal's headers and the x-ratelimit-* headers."""

    def __init__(self, retry: str, ratelimit_headers: bool) -> None:
        if retry not in RETRY_STYLES:
            raise ValueError(f"retry must be one of {RETRY_STYLES}, got {retry!r}")
        self.retry = retry
        self.ratelimit_headers = ratelimit_headers
        self.admitted = 0
        self.refused = 0

    def admit(self, now: float) -> Verdict:
        allowed, wait = self._take(now)
        headers = {}
        if self.ratelimit_headers:
            limit, remaining, reset = self._state(now)
            headers.update(
                {
                    "x-ratelimit-limit-requests": str(limit),
                    "x-ratelimit-remaining-requests": str(remaining),
                    "x-ratelimit-reset-requests": format_duration(reset),
                }
            )
        if allowed:
            self.admitted += 1
            return Verdict(True, headers)
        self.refused += 1
        if self.retry == "seconds":
            headers["Retry-After"] = str(max(1, math.ceil(wait)))
        elif self.retry == "ms":
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
        return Verdict(False, headers, wait)

    def gate(self, now: float):
        """The loopback gateway's hook: (a 429 reply, {}) or (None, headers for the normal answer)."""
        verdict = self.admit(now)
        return (None, verdict.headers) if verdict.allowed else (refusal_reply(verdict), {})

    def _take(self, now: float) -> tuple[bool, float]:
        raise NotImplementedError

    def _state(self, now: float) -> tuple[int, int, float]:
        raise NotImplementedError


class TokenBucket(_Limit):
    """`burst` tokens, refilled continuously at `rate` per second; a request takes one."""

    def __init__(self, rate: float, burst: int, *, retry: str = "seconds", ratelimit_headers: bool = False) -> None:
        super().__init__(retry, ratelimit_headers)
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at: float | None = None

    def _refill(self, now: float) -> None:
        if self._at is not None and now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        if self._at is None or now > self._at:
            self._at = now

    def _take(self, now: float) -> tuple[bool, float]:
        self._refill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            return True, 0.0
        return False, (1 - self._tokens) / self.rate

    def _state(self, now: float) -> tuple[int, int, float]:
        self._refill(now)
        return self.burst, int(self._tokens), (self.burst - self._tokens) / self.rate


class FixedWindow(_Limit):
    """At most `limit` requests in each window [k*window, (k+1)*window) of the clock."""

    def __init__(
        self, limit: int, window: float = 1.0, *, retry: str = "seconds", ratelimit_headers: bool = False
    ) -> None:
        super().__init__(retry, ratelimit_headers)
        self.limit = limit
        self.window = window
        self.rate = limit / window
        self._current: int | None = None
        self._used = 0

    def _roll(self, now: float) -> None:
        index = math.floor(now / self.window)
        if index != self._current:
            self._current, self._used = index, 0

    def _take(self, now: float) -> tuple[bool, float]:
        self._roll(now)
        if self._used < self.limit:
            self._used += 1
            return True, 0.0
        return False, (self._current + 1) * self.window - now

    def _state(self, now: float) -> tuple[int, int, float]:
        self._roll(now)
        return self.limit, self.limit - self._used, (self._current + 1) * self.window - now


def make_limiter(
    kind: str, rate: float, *, burst: int = 20, retry: str = "seconds", ratelimit_headers: bool = False
) -> _Limit:
    """By name, for the benchmark's command line: "bucket", "window" (one second) or "minute"."""
    if kind == "bucket":
        return TokenBucket(rate, burst, retry=retry, ratelimit_headers=ratelimit_headers)
    if kind == "window":
        return FixedWindow(round(rate), 1.0, retry=retry, ratelimit_headers=ratelimit_headers)
    if kind == "minute":
        return FixedWindow(round(rate * 60), 60.0, retry=retry, ratelimit_headers=ratelimit_headers)
    raise ValueError(f"unknown limiter kind {kind!r}")


def refusal_reply(verdict: Verdict):
    """The gateway's 429 for a refused request (imported late: gateway.py does not import this module)."""
    from gateway import Json, error_body

    return Json(
        error_body("Rate limit reached for requests", "rate_limit_error", "rate_limit_exceeded"),
        status=429,
        headers=dict(verdict.headers),
    )
