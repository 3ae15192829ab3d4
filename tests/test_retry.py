"""The retry policy: which statuses retry, Retry-After parsing, backoff and limits."""

from __future__ import annotations

import email.utils
import random

import httpx
import pytest
from helpers import NOW

from anyfast_cli.retry import (
    INITIAL_BACKOFF,
    JITTER,
    MAX_BACKOFF,
    MAX_RETRY_AFTER,
    backoff_delay,
    is_retryable_status,
    parse_retry_after,
    should_retry,
)


@pytest.mark.parametrize(
    "status, retryable",
    [
        (408, True),
        (409, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (599, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (422, False),
        (200, False),
        (301, False),
    ],
)
def test_retryable_statuses(status, retryable):
    assert is_retryable_status(status) is retryable


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({}, None),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": " 2.5 "}, 2.5),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"retry-after": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),  # a date in the past
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # the finer one wins
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),  # a broken -ms falls back
        ({"retry-after": "soon"}, None),
        ({"retry-after": ""}, None),
        ({"retry-after": "Funday, 99 Foo 2024 25:61:61 GMT"}, None),
    ],
    ids=lambda value: repr(value),
)
def test_parse_retry_after(headers, expected):
    result = parse_retry_after(headers, NOW)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def test_parse_retry_after_reads_real_response_headers_case_insensitively():
    headers = httpx.Headers({"Retry-After": "7", "X-Other": "1"})
    assert parse_retry_after(headers, NOW) == 7.0
    assert parse_retry_after(httpx.Headers({"Retry-After-Ms": "20"}), NOW) == pytest.approx(0.02)


@pytest.mark.parametrize("attempt", range(8))
def test_backoff_grows_exponentially_with_jitter_within_bounds(attempt):
    rng = random.Random(attempt)
    base = min(INITIAL_BACKOFF * 2**attempt, MAX_BACKOFF)
    delays = [backoff_delay(attempt, None, rng) for _ in range(200)]
    assert all(base * (1 - JITTER) <= d <= base for d in delays)
    assert len(set(delays)) > 1  # jitter spreads clients out


def test_backoff_table_and_cap():
    class NoJitter(random.Random):
        def random(self):
            return 0.0

    assert [backoff_delay(a, None, NoJitter()) for a in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_backoff_is_reproducible_with_a_seed():
    first = [backoff_delay(a, None, random.Random(42)) for a in range(5)]
    second = [backoff_delay(a, None, random.Random(42)) for a in range(5)]
    assert first == second


@pytest.mark.parametrize("retry_after", [0.0, 3.0, 12.5, MAX_RETRY_AFTER])
def test_backoff_takes_the_servers_word(retry_after):
    assert backoff_delay(0, retry_after, random.Random(1)) == retry_after
    assert backoff_delay(5, retry_after, random.Random(1)) == retry_after


def test_backoff_ignores_an_absurd_retry_after():
    delay = backoff_delay(1, MAX_RETRY_AFTER + 1, random.Random(1))
    assert 1.0 * (1 - JITTER) <= delay <= 1.0


@pytest.mark.parametrize(
    "attempt, max_retries, retry_after, expected",
    [
        (0, 2, None, True),
        (1, 2, None, True),
        (2, 2, None, False),
        (3, 2, None, False),
        (0, 0, None, False),
        (0, 5, 0.0, True),
        (0, 5, MAX_RETRY_AFTER, True),
        (0, 5, MAX_RETRY_AFTER + 0.5, False),  # not worth waiting for
        (5, 5, 1.0, False),
    ],
)
def test_should_retry_limits(attempt, max_retries, retry_after, expected):
    assert should_retry(attempt, max_retries, retry_after) is expected
