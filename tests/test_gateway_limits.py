"""The server-side rate limiter fakes (tests/gateway_limits.py), on fake time and through the gateway."""

from __future__ import annotations

import httpx
import pytest
from gateway_limits import FixedWindow, TokenBucket, format_duration, make_limiter

from anyfast_cli.batch.limiter import parse_duration
from anyfast_cli.retry import parse_retry_after


def statuses(limiter, times):
    return [limiter.admit(t).status for t in times]


def lower(headers):
    return {k.lower(): v for k, v in headers.items()}


def test_token_bucket_lets_a_burst_through_then_refills_at_its_rate():
    bucket = TokenBucket(rate=10, burst=3)
    assert statuses(bucket, [0.0] * 5) == [200, 200, 200, 429, 429]
    assert statuses(bucket, [0.05]) == [429]  # half a token back
    assert statuses(bucket, [0.1, 0.1]) == [200, 429]
    assert statuses(bucket, [10.0] * 4) == [200, 200, 200, 429]  # a long rest fills it only to the burst
    assert (bucket.admitted, bucket.refused) == (7, 5)


def test_token_bucket_sustains_exactly_its_rate():
    bucket = TokenBucket(rate=200, burst=20)
    times = [i / 400 for i in range(4000)]  # 10 s asked at twice the rate
    assert statuses(bucket, times).count(200) == pytest.approx(20 + 200 * 10, abs=2)


def test_fixed_window_counts_per_calendar_window():
    window = FixedWindow(limit=3, window=1.0)
    assert statuses(window, [0.1, 0.2, 0.3, 0.9, 0.99]) == [200, 200, 200, 429, 429]
    assert statuses(window, [1.0, 1.0, 1.0, 1.5]) == [200, 200, 200, 429]  # a new window, whole again
    assert statuses(window, [5.2]) == [200]


def test_per_minute_quota_is_a_sixty_second_window():
    quota = make_limiter("minute", rate=2)  # 120 a minute
    assert quota.limit == 120 and quota.window == 60.0
    assert statuses(quota, [61.0] * 121).count(429) == 1
    verdict = quota.admit(100.0)
    assert not verdict.allowed and verdict.wait == pytest.approx(20.0)
    assert verdict.headers == {"Retry-After": "20"}


@pytest.mark.parametrize(
    "retry, header, seconds",
    [
        ("seconds", "Retry-After", 1.0),  # 50 ms, rounded up to whole seconds as most servers do
        ("ms", "retry-after-ms", 0.05),
        ("none", None, None),
    ],
)
def test_refusal_says_when_in_each_style(retry, header, seconds):
    bucket = TokenBucket(rate=20, burst=1, retry=retry)
    assert bucket.admit(0.0).allowed
    verdict = bucket.admit(0.0)
    assert verdict.status == 429 and verdict.wait == pytest.approx(0.05)
    assert list(verdict.headers) == ([header] if header else [])
    assert parse_retry_after(lower(verdict.headers), 0.0) == seconds


def test_fixed_window_retry_after_points_at_the_next_window():
    window = FixedWindow(limit=1, window=1.0, retry="ms")
    window.admit(7.25)
    verdict = window.admit(7.5)
    assert verdict.headers == {"retry-after-ms": "500"} and verdict.wait == pytest.approx(0.5)


def test_ratelimit_headers_on_every_answer():
    window = FixedWindow(limit=2, window=1.0, ratelimit_headers=True)
    first, second, third = (window.admit(t) for t in (0.25, 0.5, 0.75))
    assert first.headers == {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "750ms",
    }
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert third.status == 429 and third.headers["x-ratelimit-remaining-requests"] == "0"
    assert third.headers["Retry-After"] == "1"
    bucket = TokenBucket(rate=10, burst=5, ratelimit_headers=True)
    headers = bucket.admit(0.0).headers
    assert (headers["x-ratelimit-remaining-requests"], headers["x-ratelimit-reset-requests"]) == ("4", "100ms")


@pytest.mark.parametrize(
    "seconds, text",
    [(0.02, "20ms"), (0.0004, "1ms"), (1.5, "1.5s"), (59.25, "59.25s"), (360.0, "6m0s"), (61.5, "1m1.5s")],
)
def test_format_duration_is_what_parse_duration_reads(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(max(seconds, 0.001))


def test_unknown_styles_and_kinds_are_refused():
    with pytest.raises(ValueError):
        TokenBucket(1, 1, retry="minutes")
    with pytest.raises(ValueError):
        make_limiter("leaky", 1)


def test_gateway_asks_its_limiter_before_the_default_answer(gateway):
    gateway.limiter = TokenBucket(rate=0.001, burst=2, ratelimit_headers=True)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=gateway.url) as client:
        answers = [client.post("/chat/completions", json=body, headers={"Authorization": "Bearer k"}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].json()["choices"][0]["message"]["content"] == "echo: hi"
    assert answers[0].headers["x-ratelimit-remaining-requests"] == "1"
    assert answers[2].json()["error"]["type"] == "rate_limit_error"
    assert int(answers[2].headers["retry-after"]) > 100
    assert len(gateway.requests) == 3


def test_gateway_limiter_is_cleared_by_reset(gateway):
    gateway.limiter = FixedWindow(limit=0)
    gateway.reset()
    assert gateway.limiter is None
