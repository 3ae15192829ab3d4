"""--rpm/--tpm pacing, and the runner's 429 handling, on a fake clock.

`Pacer` is checked as arithmetic; `Limiter` runs many concurrent acquirers on a
virtual clock (a tiny scheduler below), so nothing here really waits.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random

import pytest
from gateway import Json, error_body

from anyfast_cli.batch.jobs import JobOptions, parse_record
from anyfast_cli.batch.limiter import Limiter, Pacer, RateController
from anyfast_cli.batch.runner import BatchRunner, RunConfig


def most_in_any_window(starts: list[float], width: float = 1.0) -> int:
    """The most starts in any closed window [t, t + width] (it suffices to try t = each start)."""
    starts = sorted(starts)
    best = 0
    for i, t in enumerate(starts):
        j = i
        while j < len(starts) and starts[j] <= t + width + 1e-9:
            j += 1
        best = max(best, j - i)
    return best


class VirtualTime:
    """A clock and a sleep for Limiter; `run` drives the coroutines until all are done."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._sleepers: list = []
        self._order = itertools.count()
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._order), future))
        await future

    async def _settle(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    async def advance_to(self, when: float) -> None:
        """Wake every sleeper due by `when`, in time order, then set the clock to `when`."""
        await self._settle()
        while self._sleepers and self._sleepers[0][0] <= when:
            wake, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, wake)
            future.set_result(None)
            await self._settle()
        self.now = max(self.now, when)

    async def run(self, *coroutines):
        tasks = [asyncio.ensure_future(c) for c in coroutines]
        while not all(t.done() for t in tasks):
            await self._settle()
            if all(t.done() for t in tasks):
                break
            assert self._sleepers, "deadlock: tasks wait on something other than the clock"
            await self.advance_to(self._sleepers[0][0])
        return [t.result() for t in tasks]


def run(coro):
    return asyncio.run(coro)


# --- Pacer --------------------------------------------------------------------------------


def test_no_limits_means_start_now():
    pacer = Pacer()
    assert [pacer.reserve(5.0) for _ in range(100)] == [5.0] * 100


def test_rpm_spreads_starts_evenly():
    pacer = Pacer(rpm=120)
    assert [pacer.reserve(0.0) for _ in range(5)] == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_rpm_does_not_bank_idle_time():
    pacer = Pacer(rpm=60)
    assert pacer.reserve(0.0) == 0.0
    assert pacer.reserve(10.0) == 10.0  # a quiet spell does not allow a burst afterwards
    assert pacer.reserve(10.0) == 11.0


@pytest.mark.parametrize("rpm", [30, 60, 90, 120, 180, 600, 3000])
def test_rpm_window_bound_under_a_burst(rpm):
    pacer = Pacer(rpm=rpm)
    starts = [pacer.reserve(0.0) for _ in range(rpm // 2 + 10)]
    assert most_in_any_window(starts) <= rpm / 60 + 1
    assert starts == sorted(starts)


@pytest.mark.parametrize("seed", range(5))
def test_rpm_window_bound_with_random_arrivals(seed):
    rng = random.Random(seed)
    rpm = rng.choice([60, 150, 600])
    pacer = Pacer(rpm=rpm)
    now, starts = 0.0, []
    for _ in range(400):
        now += rng.expovariate(rpm / 60 * 1.5)  # asked for faster than allowed
        start = pacer.reserve(now)
        assert start >= now
        starts.append(start)
    assert most_in_any_window(starts) <= rpm / 60 + 1


def test_tpm_spaces_by_estimated_tokens():
    pacer = Pacer(tpm=600)  # 0.1 s of budget per token
    assert pacer.reserve(0.0, tokens=10) == 0.0
    assert pacer.reserve(0.0, tokens=5) == pytest.approx(1.0)
    assert pacer.reserve(0.0, tokens=1) == pytest.approx(1.5)
    assert pacer.reserve(5.0, tokens=1) == 5.0


def test_tpm_bound_over_a_minute():
    pacer = Pacer(tpm=1200)
    starts = [pacer.reserve(0.0, tokens=100) for _ in range(50)]
    in_first_minute = [s for s in starts if s < 60.0]
    assert len(in_first_minute) * 100 <= 1200 + 100  # the budget, give or take the one in progress


def test_rpm_and_tpm_together_the_stricter_wins():
    pacer = Pacer(rpm=600, tpm=60)  # 0.1 s per request, 1 s per token
    assert pacer.reserve(0.0, tokens=3) == 0.0
    assert pacer.reserve(0.0, tokens=1) == pytest.approx(3.0)
    pacer = Pacer(rpm=6, tpm=60_000)  # 10 s per request, tokens nearly free
    assert pacer.reserve(0.0, tokens=3) == 0.0
    assert pacer.reserve(0.0, tokens=3) == pytest.approx(10.0)


# --- Limiter on virtual time --------------------------------------------------------------


def test_limiter_concurrent_acquirers_respect_rpm():
    vt = VirtualTime()
    limiter = Limiter(Pacer(rpm=180), clock=vt.clock, sleep=vt.sleep)
    starts = []

    async def worker(n):
        for _ in range(n):
            await limiter.acquire()
            starts.append(vt.now)

    async def main():
        await vt.run(*(worker(10) for _ in range(8)))

    run(main())
    assert len(starts) == 80
    assert most_in_any_window(starts) <= 180 / 60 + 1
    assert max(starts) - min(starts) == pytest.approx(79 / 3)  # and no slower than the limit


def test_limiter_tpm_spacing():
    vt = VirtualTime(start=0.0)
    limiter = Limiter(Pacer(tpm=60), clock=vt.clock, sleep=vt.sleep)  # 1 s per token
    starts = []

    async def one(tokens):
        await limiter.acquire(tokens)
        starts.append(vt.now)

    async def main():
        await vt.run(one(4), one(2), one(1))

    run(main())
    assert starts == pytest.approx([0.0, 4.0, 6.0])


def test_limiter_without_limits_does_not_sleep():
    vt = VirtualTime()
    limiter = Limiter(Pacer(), clock=vt.clock, sleep=vt.sleep)

    async def main():
        for _ in range(50):
            await limiter.acquire(1000)

    run(main())
    assert vt.sleeps == []


def test_a_start_due_now_does_not_queue_behind_woken_waiters():
    # Workers queued behind a pause are woken one loop iteration apart; a worker whose start is
    # due must not join that line, or at once-answered requests every start stays an iteration
    # apart for the rest of the batch (a convoy: one answer read per iteration).
    async def main():
        limiter = Limiter(Pacer())
        await limiter._turn.acquire()  # someone waits out a pause
        waiter = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0)  # the waiter is queued
        limiter._turn.release()  # the pause is over: the waiter is woken, not yet run
        due = limiter.acquire()
        with pytest.raises(StopIteration):  # returned at once, without waiting for its turn
            due.send(None)
        await waiter

    run(main())


# --- the runner tells the limiter about Retry-After ---------------------------------------


def test_runner_429_retry_after_holds_that_record_and_uses_no_retry(gateway):
    """The runner sleeps and paces on fake time: a Retry-After of 30 s costs nothing here."""
    gateway.script(Json(error_body("slow down", "rate_limit_error"), status=429, headers={"Retry-After": "30"}))
    vt = VirtualTime(start=0.0)
    controller = RateController(initial_rate=0)
    limiter = Limiter(Pacer(), controller, clock=vt.clock, sleep=vt.sleep)
    runner_sleeps = []

    async def fake_sleep(seconds):
        runner_sleeps.append(seconds)
        vt.now += seconds

    outcomes = []
    runner = BatchRunner(
        RunConfig(base_url=gateway.url, api_key="sk-test", concurrency=1, retries=0),
        limiter,
        outcomes.append,
        sleep=fake_sleep,
    )
    record = parse_record(b'"hi"\n', 1, 0, JobOptions(model="m"))
    run(runner.run(iter([record])))
    assert runner_sleeps == [pytest.approx(30.0)]  # not sooner than the server said
    assert len(gateway.requests) == 2
    assert [o.ok for o in outcomes] == [True]  # --retries 0: a 429 uses no retry
    assert controller.limited == 1


def test_runner_429_without_retry_after_retries_soon(gateway):
    gateway.script(Json(error_body("slow down"), status=429))
    limiter = Limiter(Pacer(), RateController())

    async def no_sleep(seconds):
        pass

    outcomes = []
    runner = BatchRunner(
        RunConfig(base_url=gateway.url, api_key="sk-test", concurrency=1, retries=1),
        limiter,
        outcomes.append,
        sleep=no_sleep,
    )
    run(runner.run(iter([parse_record(b'"hi"\n', 1, 0, JobOptions(model="m"))])))
    assert [o.ok for o in outcomes] == [True]
    assert len(gateway.requests) == 2
