"""Client-side pacing for --rpm and --tpm, and the whole batch's pause after a 429.

`Pacer` is pure arithmetic on times it is given; `Limiter` is the small async
wrapper that sleeps, with its clock and sleep injected so tests run on fake time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class Pacer:
    """Hands out start times spread evenly: one request every 60/rpm seconds, and
    each request's estimated tokens take tokens*60/tpm seconds of the token budget.
    So any one-second window holds at most rpm/60 + 1 starts."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None) -> None:
        self._request_gap = 60.0 / rpm if rpm else 0.0
        self._seconds_per_token = 60.0 / tpm if tpm else 0.0
        self._next_request = float("-inf")
        self._tokens_free_at = float("-inf")
        self.paused_until = float("-inf")

    def reserve(self, now: float, tokens: int = 0) -> float:
        start = max(now, self._next_request, self._tokens_free_at, self.paused_until)
        if self._request_gap:
            self._next_request = start + self._request_gap
        if self._seconds_per_token:
            self._tokens_free_at = start + tokens * self._seconds_per_token
        return start

    def pause(self, until: float) -> None:
        """Hold back every new start until `until` (a 429 with Retry-After)."""
        self.paused_until = max(self.paused_until, until)
        self._next_request = max(self._next_request, until)
        self._tokens_free_at = max(self._tokens_free_at, until)


class Limiter:
    def __init__(
        self,
        pacer: Pacer,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.pacer = pacer
        self.clock = clock
        self._sleep = sleep

    async def acquire(self, tokens: int = 0) -> None:
        """Wait for this request's start time; if a pause arrived meanwhile, queue again after it."""
        while True:
            start = self.pacer.reserve(self.clock(), tokens)
            delay = start - self.clock()
            if delay > 0:
                await self._sleep(delay)
            if self.pacer.paused_until <= start:
                return

    def pause_for(self, seconds: float) -> None:
        self.pacer.pause(self.clock() + seconds)
