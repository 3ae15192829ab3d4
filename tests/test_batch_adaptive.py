"""The adaptive sending rate (RateController), on fake time.

First its rules one by one, then whole batches against simulated server limiters
(tests/ratelimit_sim.py drives the controller as the runner does; the limiters are the
gateway's fakes from tests/gateway_limits.py). The simulations are deterministic (seeded).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import statistics

import pytest
from gateway_limits import FixedWindow, TokenBucket
from ratelimit_sim import AlwaysAllow, simulate

from anyfast_cli.batch import limiter as limiter_module
from anyfast_cli.batch.limiter import (
    CUT,
    LIMITED_GIVE_UP,
    NO_HEADER_RETRY,
    Limiter,
    Pacer,
    RateController,
    parse_duration,
)

LIMIT = 200  # requests per second, the simulated servers' rate


def controller(**options) -> RateController:
    return RateController(rng=random.Random(0), **options)


def send_at(control: RateController, rate: float, start: float, seconds: float) -> list[float]:
    """Send as fast as the controller allows, but no faster than `rate`; returns the send times."""
    times, now = [], start
    while now < start + seconds:
        now = control.next_start(now)
        control.on_send(now)
        times.append(now)
        now += 1 / rate
    return times


# --- the rules ------------------------------------------------------------------------------


def test_unlimited_until_the_first_429_after_a_short_ramp():
    control = controller()
    starts = [control.next_start(0.0)]
    control.on_send(starts[0])
    for _ in range(20):
        start = control.next_start(starts[-1])
        control.on_send(start)
        starts.append(start)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert 0 < gaps[0] <= 1 / limiter_module.INITIAL_RATE  # the first wave is spread a little ...
    assert starts[-1] < 0.05
    assert control.next_start(0.5) == 0.5 and control.rate is None  # ... and soon not at all
    for now in (0.5, 0.5, 0.5):
        control.on_send(now)
        control.on_answer(now + 0.1, now)
    assert control.next_start(0.6) == 0.6 and control.rate is None


def test_no_ramp_means_no_wait_at_all():
    control = controller(initial_rate=0)
    for _ in range(100):
        assert control.next_start(1.0) == 1.0
        control.on_send(1.0)


def test_a_429_cuts_the_rate_to_just_under_what_got_through_in_the_last_second():
    control = controller(initial_rate=0)
    for i in range(600):  # 300/s for two seconds (no answers yet); in the last one, 60 were refused
        t = i / 300
        control.on_send(t)
        if i >= 300 and i % 5 == 0:
            control.on_rate_limited(t + 0.001, t, 1.0)
    assert control.rate == pytest.approx(CUT * 300, rel=0.02)  # the first 429: 300/s got through until then
    control.on_answer(2.0, 598 / 300)  # one sent after that 429 got through: the streak is over
    retry = control.on_rate_limited(2.0, 599 / 300, None)  # a new one
    assert control.rate == pytest.approx(CUT * 240, rel=0.02)  # 300 sent less 60 refused, in the last second
    assert 2.0 <= retry <= 2.0 + NO_HEADER_RETRY
    first = control.next_start(2.0)
    control.on_send(first)
    assert control.next_start(first) == pytest.approx(first + 1 / control.rate)


def test_the_batch_settles_near_the_limit():
    result = simulate(bucket("seconds"), records=4000, concurrency=64)
    rates = [rate for t, rate in result.clients[0].rates if t - result.clients[0].first_send > 5.0]
    assert 0.9 * LIMIT <= statistics.median(rates) <= 1.15 * LIMIT  # a sawtooth around the limit ...
    assert 0.8 * LIMIT <= min(rates) and max(rates) <= 1.4 * LIMIT  # ... as the bucket's burst hides overshoot a while


def test_one_cut_per_streak_of_429s():
    control = controller(initial_rate=0)
    times = send_at(control, rate=300, start=0.0, seconds=1.0)
    control.on_rate_limited(1.0, times[-1], 1.0)
    rate = control.rate
    for t in times[-5:-1]:  # refusals of requests sent before the cut say nothing new
        control.on_rate_limited(1.001, t, 1.0)
    assert control.rate == rate


def test_the_rate_probes_back_up_when_429s_stop():
    control = controller(initial_rate=0)
    times = send_at(control, rate=300, start=0.0, seconds=1.0)
    control.on_rate_limited(1.0, times[-1], None)
    cut = control.rate
    now = 1.0
    for _ in range(2000):  # the rate holds sends back, and every answer comes back fine
        start = control.next_start(now)
        control.on_send(start)
        control.on_answer(start + 0.1, start)
        now = start
    assert now > 3.0
    assert control.rate > cut / CUT * 1.1  # back past what got through, and still probing


def test_the_rate_does_not_grow_while_it_holds_nothing_back():
    control = controller(initial_rate=0)
    times = send_at(control, rate=300, start=0.0, seconds=1.0)
    control.on_rate_limited(1.0, times[-1], None)
    cut = control.rate
    for i in range(100):  # -j bounds the sends: 10 a second, far under the rate
        t = 2.0 + i / 10
        control.on_send(control.next_start(t))
        control.on_answer(t + 0.1, t)
    assert control.rate == cut


def test_achieved_is_what_got_through_under_the_limit_not_the_pace_set():
    control = controller(initial_rate=0)
    assert control.achieved() is None  # no 429 yet: nothing to report
    times = send_at(control, rate=300, start=0.0, seconds=1.0)
    control.on_rate_limited(1.0, times[-1], None)
    control.on_answer(1.5, times[-2])
    assert control.achieved() is None  # half a second says too little
    for i in range(100):  # -j bounds the sends: 10 a second, far under the pace it set
        t = 2.0 + i / 10
        control.on_send(control.next_start(t))
        control.on_answer(t + 0.1, t)
    assert control.rate > 200 and control.achieved() == pytest.approx(101 / (11.9 + 0.1 - 1.0))  # 1.0 to 12.0


def test_achieved_under_a_quota_is_the_quota():
    quota = FixedWindow(600, 60.0, retry="seconds")  # 10 a second, in minutes
    control = simulate(quota, records=2000, concurrency=64).clients[0].controller
    assert control.achieved() == pytest.approx(10, rel=0.1)  # the pace set had grown past 10^7 a second
    assert simulate(bucket("seconds"), records=2000, concurrency=64).clients[0].controller.achieved() == (
        pytest.approx(LIMIT, rel=0.05)
    )


def test_retry_after_is_honoured_for_that_record_and_the_rest_go_on():
    control = controller(initial_rate=0)
    times = send_at(control, rate=300, start=0.0, seconds=1.0)
    assert control.on_rate_limited(1.0, times[-1], 30.0) == 31.0
    assert control.on_rate_limited(1.0, times[-2], 0.25) == 1.25
    assert control.next_start(1.0) < 1.1  # slowed, not stopped


def test_retry_after_ms_and_dates_come_parsed_by_the_runner():
    control = controller(initial_rate=0)
    control.on_send(0.0)
    assert control.on_rate_limited(0.01, 0.0, 0.05) == pytest.approx(0.06)


def test_nothing_through_with_a_long_retry_after_holds_every_new_send():
    control = controller(initial_rate=0)
    send_at(control, rate=100, start=0.0, seconds=1.0)
    control.on_answer(1.0, 0.9)
    now, sent = 1.0, []
    while now < 3.0:  # a per-minute quota ran out: every request is refused, "come back in 40 s"
        start = control.next_start(now)
        if start > now + 5:
            break
        control.on_send(start)
        sent.append(start)
        control.on_rate_limited(start + 0.005, start, 40.0)
        now = start + 0.005
    assert control.hold_until > 40.0
    assert len(sent) < 150  # once it is clear that nothing gets through, nothing more is sent
    first = control.next_start(now)
    assert first >= control.hold_until - 0.01
    control.on_send(first)  # the first after the hold goes alone for a moment
    assert control.next_start(first) > first


def test_short_retry_after_probes_instead_of_holding_it_all():
    """`Retry-After: 1` from a 1-second window may mean 50 ms: a doubling probe finds the end."""
    control = controller(initial_rate=0)
    send_at(control, rate=100, start=0.0, seconds=1.0)
    control.on_answer(1.0, 0.9)
    holds, now = [], 1.0
    for _ in range(6):
        start = control.next_start(now)
        control.on_send(start)
        control.on_rate_limited(start + 0.001, start, 1.0)
        holds.append(control.hold_until - (start + 0.001))
        now = start + 0.001
    assert holds[0] < 0.2
    assert max(holds) <= 1.0


def test_holds_end_at_different_moments_for_different_processes():
    ends = set()
    for seed in range(5):
        control = RateController(rng=random.Random(seed), initial_rate=0)
        times = send_at(control, rate=300, start=0.0, seconds=1.0)
        control.on_rate_limited(1.0, times[-1], None)
        control.on_answer(1.0, 0.0)
        control.on_answer(1.0, 1.0, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "5s"})
        ends.add(control.next_start(1.0))
    assert all(6.0 <= end < 6.0 + 1 / (CUT * 100) for end in ends)  # within one gap of the reset
    assert len(ends) == 5


def test_ratelimit_headers_hold_until_the_reset_counted_from_the_send():
    control = controller(initial_rate=0)
    control.on_send(10.0)
    control.on_answer(12.0, 10.0, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"})
    assert control.next_start(12.0) == pytest.approx(370.0, abs=0.01)
    control = controller(initial_rate=0)
    control.on_send(10.0)
    control.on_answer(
        12.0,
        10.0,
        {
            "x-ratelimit-remaining-requests": "5",
            "x-ratelimit-reset-requests": "6m0s",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "20s",
        },
    )
    assert control.next_start(12.0) == pytest.approx(30.0, abs=0.01)
    control = controller(initial_rate=0)
    control.on_send(10.0)
    control.on_answer(12.0, 10.0, {"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "1s"})
    assert control.next_start(12.0) == 12.0  # requests remain: nothing to hold


def test_ratelimit_reset_stands_in_for_a_missing_retry_after():
    control = controller(initial_rate=0)
    control.on_send(0.0)
    retry = control.on_rate_limited(
        0.01, 0.0, None, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}
    )
    assert retry == pytest.approx(2.0)


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("1s", 1.0),
        ("20ms", 0.02),
        ("6m0s", 360.0),
        ("1h2m3.5s", 3723.5),
        ("1.5", 1.5),
        ("0", 0.0),
        ("250us", 0.00025),
        (" 2s ", 2.0),
        ("soon", None),
        ("-1", None),
        ("1x", None),
        ("", None),
        (None, None),
        ("nan", None),
        ("3s1", None),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_a_record_fails_only_when_nothing_got_through_for_long():
    control = controller(initial_rate=0)
    control.on_send(0.0)
    control.on_answer(0.1, 0.0)
    assert control.on_rate_limited(LIMITED_GIVE_UP - 1, LIMITED_GIVE_UP - 1.1, 0.5) is not None
    assert control.on_rate_limited(LIMITED_GIVE_UP + 1, LIMITED_GIVE_UP + 0.9, 0.5) is None
    control.on_answer(LIMITED_GIVE_UP + 2, LIMITED_GIVE_UP)  # something got through again
    assert control.on_rate_limited(LIMITED_GIVE_UP + 3, LIMITED_GIVE_UP + 2.9, 0.5) is not None


def test_a_record_fails_at_once_when_the_server_says_the_wait_is_too_long():
    control = controller(initial_rate=0)
    control.on_send(0.0)
    control.on_answer(0.1, 0.0)
    assert control.on_rate_limited(1.0, 0.9, 3600.0) is None


def test_nothing_ever_got_through_counts_from_the_first_send():
    control = controller(initial_rate=0)
    control.on_send(100.0)
    assert control.on_rate_limited(100.0 + LIMITED_GIVE_UP - 10, 100.0, 5.0) is not None
    assert control.on_rate_limited(100.0 + LIMITED_GIVE_UP + 1, 100.0, 5.0) is None


def test_each_change_of_rate_is_logged_once():
    lines = []
    control = RateController(rng=random.Random(0), log=lines.append, initial_rate=0)
    times = send_at(control, rate=300, start=0.0, seconds=1.0)
    control.on_rate_limited(1.0, times[-1], None)
    assert lines == [f"rate: {control.rate:.1f} requests/s (after a 429)"]
    control.on_rate_limited(1.0, times[-2], None)
    assert len(lines) == 1


# --- the async Limiter with a controller, on virtual time ---------------------------------


class VirtualTime:
    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), future))
        await future

    async def run(self, *coroutines):
        tasks = [asyncio.ensure_future(c) for c in coroutines]
        while True:
            for _ in range(20):
                await asyncio.sleep(0)
            if all(t.done() for t in tasks):
                return [t.result() for t in tasks]
            wake, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, wake)
            future.set_result(None)


def test_limiter_waits_for_the_controller_and_returns_the_start():
    vt = VirtualTime()
    control = controller(initial_rate=0)
    limiter = Limiter(Pacer(), control, clock=vt.clock, sleep=vt.sleep)
    times = send_at(control, rate=300, start=-1.0, seconds=1.0)
    control.on_rate_limited(0.0, times[-1], None)  # now about 180/s
    vt.now = max(0.0, control.next_start(0.0))
    starts = asyncio.run(vt.run(*(limiter.acquire() for _ in range(10))))
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert gaps == pytest.approx([1 / control.rate] * 9)


def test_limiter_rpm_stays_a_ceiling_over_the_controller():
    vt = VirtualTime()
    limiter = Limiter(Pacer(rpm=60), controller(), clock=vt.clock, sleep=vt.sleep)
    starts = asyncio.run(vt.run(*(limiter.acquire() for _ in range(5))))
    assert starts == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])


def test_limiter_hold_that_arrives_while_waiting_is_seen():
    vt = VirtualTime()
    control = controller(initial_rate=0)
    limiter = Limiter(Pacer(rpm=60), control, clock=vt.clock, sleep=vt.sleep)

    async def holder():
        await vt.sleep(0.5)
        control.on_send(0.5)
        control.on_answer(0.5, 0.5, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "3s"})

    async def main():
        return await vt.run(limiter.acquire(), limiter.acquire(), holder())

    first, second, _ = asyncio.run(main())
    assert first == 0.0 and second >= 3.5


# --- whole batches against simulated limiters ---------------------------------------------


def bucket(retry, headers=False):
    return TokenBucket(LIMIT, 20, retry=retry, ratelimit_headers=headers)


def window(retry, headers=False):
    return FixedWindow(LIMIT, 1.0, retry=retry, ratelimit_headers=headers)


SERVERS = [
    (kind, retry, headers) for kind in (bucket, window) for retry in ("seconds", "ms", "none") for headers in (False,)
]
SERVERS += [(bucket, "none", True), (window, "seconds", True)]


@pytest.mark.parametrize("concurrency", [64, 200])
@pytest.mark.parametrize("kind, retry, headers", SERVERS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_batch_settles_just_under_the_limit(kind, retry, headers, concurrency):
    result = simulate(kind(retry, headers), records=2000, concurrency=concurrency)
    assert result.failed == 0 and result.ok == 2000
    assert result.used >= 0.90, result.line()
    assert result.refused_share <= 0.05, result.line()


@pytest.mark.parametrize(
    "kind, retry",
    [(bucket, "seconds"), (bucket, "ms"), (window, "seconds"), (window, "none")],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_two_shards_share_one_limit(kind, retry):
    result = simulate(kind(retry), records=2000, concurrency=64, clients=2, stagger=0.2)
    assert result.failed == 0 and result.ok == 2000
    assert result.used >= 0.85, result.line()
    rates = [c.ok / (c.last_answer - c.first_send) for c in result.clients]
    assert min(rates) >= 0.5 * max(rates), rates  # neither starves


def test_two_jobs_of_different_sizes_both_finish():
    sim_result = simulate(bucket("seconds"), records=3000, concurrency=64, clients=2, stagger=1.0)
    assert sim_result.failed == 0 and sim_result.used >= 0.85, sim_result.line()


@pytest.mark.parametrize("retry", ["seconds", "ms"])
def test_retry_after_is_honoured_per_request(retry):
    result = simulate(window(retry), records=1000, concurrency=64)
    client = result.clients[0]
    assert client.not_before, "the run should have met some 429s"
    sends: dict[int, list[float]] = {}
    for t, record in client.sends:
        sends.setdefault(record, []).append(t)
    for record, refused_at, retry_after in client.not_before:
        later = [t for t in sends[record] if t > refused_at]
        assert later and later[0] >= refused_at + retry_after - 1e-9


def test_a_quota_that_runs_out_holds_the_batch_instead_of_wasting_requests():
    quota = FixedWindow(600, 60.0, retry="seconds")  # the run starts 40 s into the first minute
    result = simulate(quota, records=2000, concurrency=64)
    assert result.failed == 0
    assert result.elapsed <= 140.0 + 2.0  # the fourth minute opens 140 s in: done right after
    assert result.refused_share <= 0.02, result.line()


def test_rpm_stays_a_ceiling_under_the_adaptive_rate():
    result = simulate(bucket("seconds"), records=1000, concurrency=64, pacer=Pacer(rpm=6000))  # 100/s, half the limit
    starts = sorted(t for t, _ in result.clients[0].sends)
    assert result.refused == 0
    assert max(sum(1 for t in starts[i : i + 200] if t <= s + 1.0) for i, s in enumerate(starts)) <= 101
    assert result.used == pytest.approx(0.5, abs=0.02)


def test_adaptive_rate_works_under_a_looser_rpm():
    result = simulate(bucket("seconds"), records=2000, concurrency=64, pacer=Pacer(rpm=60 * 400))
    assert result.failed == 0 and result.used >= 0.9 and result.refused_share <= 0.05, result.line()


def test_a_limit_it_never_reaches_costs_nothing():
    limited = simulate(bucket("seconds"), records=500, concurrency=8)  # 8 in flight x 10/s = 80/s
    unlimited = simulate(AlwaysAllow(), records=500, concurrency=8)
    assert limited.refused == 0
    assert limited.elapsed == pytest.approx(unlimited.elapsed, rel=0.01)
    assert limited.clients[0].controller.rate is None


def test_no_limit_at_all_the_ramp_costs_little():
    result = simulate(AlwaysAllow(), records=2000, concurrency=200, latency=0.2)
    assert result.elapsed <= 2.0 * 1.06


def test_a_limit_that_lets_nothing_through_fails_the_records_after_the_bound():
    class Closed:
        rate = LIMIT

        def admit(self, now):
            from gateway_limits import Verdict

            return Verdict(False, {"Retry-After": "30"}, 30.0)

    result = simulate(Closed(), records=100, concurrency=8, until=LIMITED_GIVE_UP * 2)
    assert result.failed == 100 and result.ok == 0
    client = result.clients[0]
    assert LIMITED_GIVE_UP - 60 <= client.last_answer - client.first_send <= LIMITED_GIVE_UP + 60
    assert result.requests < 100 + 2 * LIMITED_GIVE_UP / 30 + 50  # held, not hammering
