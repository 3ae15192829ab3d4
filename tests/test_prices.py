"""Prices, cost and the one result object per request, as pure tables (§3 "Usage log, prices
and budgets"): prices.py's table and cost, result.py's Usage, RequestResult and status names."""

from __future__ import annotations

import hashlib
import math
import signal

import pytest
from helpers import LOG_KEYS, NOW

from anyfast_cli.errors import (
    AnyfastError,
    ApiAuthError,
    ApiError,
    BudgetError,
    NetworkError,
    RateLimitError,
    Terminated,
    UsageError,
)
from anyfast_cli.prices import NO_PRICES, Price, cost, parse_prices
from anyfast_cli.result import (
    NO_USAGE,
    RequestContext,
    Trace,
    Usage,
    build_result,
    exit_of,
    rfc3339,
    status_name,
)

SOURCE = "/etc/prices.yaml"


# --- parse_prices: bad shapes are exit 2, naming the source and the key ----------------------


@pytest.mark.parametrize(
    "data, words",
    [
        pytest.param([{"input": 1, "output": 2}], [], id="a list"),
        pytest.param("doubao-*: 1", [], id="a string"),
        pytest.param({"doubao-*": 1.5}, ["doubao-*"], id="entry a number"),
        pytest.param({"m": {"input": "1.5", "output": 2}}, ["m", "input", "1.5"], id="a number as text"),
        pytest.param({"doubao-*": [1, 2]}, ["doubao-*"], id="entry a list"),
        pytest.param({"m": {"input": -1, "output": 2}}, ["m", "input", "-1"], id="negative input"),
        pytest.param({"m": {"input": 1, "output": -0.5}}, ["m", "output"], id="negative output"),
        pytest.param({"m": {"input": 1, "output": 2, "cached_input": -1}}, ["m", "cached_input"], id="negative cached"),
        pytest.param({"m": {"input": math.nan, "output": 2}}, ["m", "input"], id="NaN"),
        pytest.param({"m": {"input": math.inf, "output": 2}}, ["m", "input"], id="infinity"),
        pytest.param({"m": {"input": "nan", "output": 2}}, ["m", "input"], id="NaN as text"),
        pytest.param({"m": {"input": "1e400", "output": 2}}, ["m", "input"], id="overflow as text"),
        pytest.param({"m": {"input": "cheap", "output": 2}}, ["m", "input", "cheap"], id="a word"),
        pytest.param({"m": {"input": "", "output": 2}}, ["m", "input"], id="empty text"),
        pytest.param({"m": {"input": True, "output": 2}}, ["m", "input"], id="a boolean"),
        pytest.param({"m": {"input": [1], "output": 2}}, ["m", "input"], id="a list value"),
        pytest.param({"m": {"input": {"usd": 1}, "output": 2}}, ["m", "input"], id="a mapping value"),
        pytest.param({"m": {"output": 2}}, ["m", "input", "missing"], id="input missing"),
        pytest.param({"m": {"input": 1}}, ["m", "output", "missing"], id="output missing"),
        pytest.param({"m": {"input": None, "output": 2}}, ["m", "input"], id="input null"),
        pytest.param({"m": {"input": 1, "output": 2, "inputs": 3}}, ["m", "inputs"], id="unknown key"),
        pytest.param({"m": {"input": 1, "output": 2, "currency": "USD"}}, ["m", "currency"], id="currency in an entry"),
        pytest.param({"m": {"input": 1, "output": 2, 7: 1}}, ["m", "7"], id="a number as key in an entry"),
        pytest.param({7: {"input": 1, "output": 2}}, ["7"], id="a number as model"),
        pytest.param({"": {"input": 1, "output": 2}}, ["''"], id="empty model"),
        pytest.param({"currency": 5, "m": {"input": 1, "output": 2}}, ["currency", "5"], id="currency a number"),
        pytest.param({"currency": "  ", "m": {"input": 1, "output": 2}}, ["currency"], id="currency blank"),
        pytest.param({"currency": ["USD"]}, ["currency"], id="currency a list"),
    ],
)
def test_bad_prices_are_usage_errors_naming_source_and_key(data, words):
    with pytest.raises(UsageError) as caught:
        parse_prices(data, SOURCE)
    assert caught.value.exit_code == 2
    message = caught.value.message
    assert message.startswith(SOURCE + ":"), message
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_unknown_keys_are_all_named():
    with pytest.raises(UsageError) as caught:
        parse_prices({"m": {"input": 1, "output": 2, "outptu": 3, "cache": 1}}, SOURCE)
    assert "cache" in caught.value.message and "outptu" in caught.value.message


@pytest.mark.parametrize("data", [None, {}, {"currency": "EUR"}])
def test_no_prices_is_an_empty_table(data):
    table = parse_prices(data, SOURCE)
    assert not table
    assert table.price_for("anything") is None


def test_good_prices_parse_to_floats_with_currency_and_source():
    table = parse_prices(
        {
            "currency": " CNY ",
            "doubao-*": {"input": 1, "output": 2.5, "cached_input": 0},
            "glm-4": {"input": 0, "output": 0},
        },
        SOURCE,
    )
    assert table and table.currency == "CNY" and table.source == SOURCE
    assert table.price_for("doubao-x") == Price(1.0, 2.5, 0.0)
    assert table.price_for("glm-4") == Price(0.0, 0.0, None)  # free is a price; cached_input not said
    assert table.price_for("glm-4-7") is None


def test_a_model_named_currency_is_not_a_price():
    """`currency:` beside the models is the table's currency, never a model."""
    table = parse_prices({"currency": "USD", "m": {"input": 1, "output": 1}}, SOURCE)
    assert table.price_for("currency") is None


# --- price_for: exact > longer glob > shorter glob; equal lengths in the file's order -------------

ENTRY = {"input": 1, "output": 1}


def priced(*names):
    """A table whose price for each name is its position (input = output = i)."""
    return parse_prices({name: {"input": i, "output": i} for i, name in enumerate(names)}, SOURCE)


@pytest.mark.parametrize(
    "names, model, expected",
    [
        # an exact name beats every glob, wherever it stands in the file and however long the glob
        (["doubao-seed-1-6-*", "doubao-*", "doubao-seed-1-6-251015"], "doubao-seed-1-6-251015", 2),
        (["doubao-seed-1-6-251015", "doubao-seed-1-6-2510?5"], "doubao-seed-1-6-251015", 0),
        (["m*", "m"], "m", 1),
        # a longer glob beats a shorter one, in either file order
        (["doubao-*", "doubao-seed-*"], "doubao-seed-1-6", 1),
        (["doubao-seed-*", "doubao-*"], "doubao-seed-1-6", 0),
        (["*", "doubao-*"], "doubao-x", 1),
        # the shorter glob still prices what the longer one does not match
        (["doubao-*", "doubao-seed-*"], "doubao-lite", 0),
        # equal lengths: the first in the file
        (["doubao-*", "*-250815"], "doubao-seed-1-6-vision-250815", 0),
        (["*-250815", "doubao-*"], "doubao-seed-1-6-vision-250815", 0),
        (["*-250815", "doubao-*"], "doubao-lite", 1),
        # ? and [...] are globs too; matching is case-sensitive and whole-name
        (["glm-4-[0-9]", "glm-*"], "glm-4-7", 0),
        (["glm-4-?"], "glm-4-77", None),
        (["Doubao-*"], "doubao-x", None),
        (["doubao"], "doubao-x", None),
    ],
)
def test_price_for_precedence(names, model, expected):
    price = priced(*names).price_for(model)
    assert (price.input if price else None) == expected


def test_unused_globs_are_the_ones_matching_no_model():
    table = priced("doubao-*", "glm-*", "gpt-4o")
    assert table.unused_globs(["doubao-x", "gpt-4o"]) == ["glm-*"]
    assert table.unused_globs([]) == ["doubao-*", "glm-*"]


# --- cost --------------------------------------------------------------------------------------

WITH_CACHED = Price(input=2.0, output=8.0, cached_input=0.5)
NO_CACHED = Price(input=2.0, output=8.0)


@pytest.mark.parametrize(
    "price, prompt, completion, cached, expected",
    [
        # (1000 - 400) x 2 + 400 x 0.5 + 200 x 8 = 3000 per million
        (WITH_CACHED, 1000, 200, 400, 0.003),
        # cached_input not given: cached tokens cost the input price
        (NO_CACHED, 1000, 200, 400, 0.0036),
        (NO_CACHED, 1000, 200, None, 0.0036),
        (WITH_CACHED, 1000, 200, None, 0.0036),
        (WITH_CACHED, 1000, 200, 0, 0.0036),
        # all of the prompt cached
        (WITH_CACHED, 1000, 0, 1000, 0.0005),
        # more cached than prompt (a server's slip) is at most the prompt
        (WITH_CACHED, 100, 0, 500, 0.00005),
        # one side unknown counts 0
        (WITH_CACHED, None, 1_000_000, None, 8.0),
        (WITH_CACHED, 1_000_000, None, None, 2.0),
        (Price(0.0, 0.0, 0.0), 10**6, 10**6, 10, 0.0),
        # a large count is not rounded
        (Price(0.15, 0.6), 123_456_789, 7, None, (123_456_789 * 0.15 + 7 * 0.6) / 1_000_000),
    ],
)
def test_cost_table(price, prompt, completion, cached, expected):
    assert cost(price, prompt, completion, cached) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_cost_is_not_rounded():
    assert cost(Price(1.0, 1.0), 1, 0) == 1e-6
    assert cost(Price(0.3, 0.0), 1, 0) == pytest.approx(3e-7, rel=1e-12)


@pytest.mark.parametrize(
    "price, prompt, completion",
    [(None, 1000, 200), (None, None, None), (NO_CACHED, None, None)],
)
def test_cost_is_none_without_a_price_or_counts(price, prompt, completion):
    assert cost(price, prompt, completion, 5) is None


# --- Usage.of -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, [], "usage", 5, True])
def test_usage_of_a_non_object_says_nothing(value):
    assert Usage.of(value) == NO_USAGE


@pytest.mark.parametrize(
    "value, expected",
    [
        (12, 12),
        (0, 0),
        (12.0, 12),  # a whole float is a count
        (12.5, None),
        (-1, None),
        ("12", None),
        (True, None),
        (False, None),
        (None, None),
        (math.nan, None),
        (math.inf, None),
        (10**15, 10**15),
        (10**15 + 1, None),
        ([12], None),
    ],
)
def test_usage_counts(value, expected):
    usage = Usage.of(
        {
            "prompt_tokens": value,
            "completion_tokens": value,
            "total_tokens": value,
            "prompt_tokens_details": {"cached_tokens": value},
            "completion_tokens_details": {"reasoning_tokens": value},
        }
    )
    assert usage == Usage(expected, expected, expected, expected, expected)
    for count in (usage.prompt_tokens, usage.cached_tokens):
        assert count is None or type(count) is int


@pytest.mark.parametrize("details", [None, 5, "x", [1], {}])
def test_usage_details_that_are_not_objects_say_nothing(details):
    usage = Usage.of({"prompt_tokens": 3, "prompt_tokens_details": details, "completion_tokens_details": details})
    assert usage == Usage(prompt_tokens=3)


def test_usage_reads_the_details():
    usage = Usage.of(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 200,
            "total_tokens": 1200,
            "prompt_tokens_details": {"cached_tokens": 400, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 150},
        }
    )
    assert usage == Usage(1000, 200, 1200, 150, 400)


@pytest.mark.parametrize(
    "usage, tokens",
    [
        (Usage(10, 5, 20), 20),  # the total as the server says it
        (Usage(10, 5), 15),
        (Usage(10), 10),
        (Usage(None, 5), 5),
        (NO_USAGE, 0),
        (Usage(10, 5, 0), 0),
    ],
)
def test_usage_tokens_for_a_budget(usage, tokens):
    assert usage.tokens == tokens


# --- status names and exits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "error, status, exit_code",
    [
        (None, "ok", 0),
        (ApiError("no channel", status=503, code="model_not_found"), "model_not_found", 1),
        (ApiError("bad", status=400, code="invalid_request_error"), "invalid_request_error", 1),
        (ApiError("bad gateway", status=502), "http_502", 1),
        (RateLimitError("slow down", status=429), "http_429", 5),
        (ApiAuthError("who are you", status=401), "http_401", 3),
        (ApiAuthError("who are you", status=401, code="invalid_api_key"), "invalid_api_key", 3),
        (NetworkError("timed out", code="timeout"), "timeout", 4),
        (NetworkError("reset", code="network_error"), "network", 4),
        (NetworkError("cannot connect"), "network", 4),
        (ApiError("odd"), "error", 1),
        (BudgetError("budget reached"), "budget", 9),
        (KeyboardInterrupt(), "interrupted", 130),
        (Terminated(signal.SIGTERM), "terminated", 143),
        (Terminated(signal.SIGHUP), "terminated", 129),
        (GeneratorExit(), "closed", 141),
        (ValueError("a bug"), "error", 1),
    ],
)
def test_status_names_and_exits(error, status, exit_code):
    assert status_name(error) == status
    assert exit_of(error) == exit_code


def test_tool_calls_exit_8_only_without_an_error():
    assert exit_of(None, tool_calls=True) == 8
    assert exit_of(ApiError("x", code="c"), tool_calls=True) == 1


def test_status_is_never_empty():
    for error in (ApiError("x", code=""), ApiError("x", status=0), AnyfastError("x"), Exception()):
        assert status_name(error)


# --- rfc3339 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "epoch, text",
    [
        (NOW, "2023-11-14T22:13:20.000Z"),
        (0.0, "1970-01-01T00:00:00.000Z"),
        (NOW + 0.5, "2023-11-14T22:13:20.500Z"),
        (NOW + 59.999, "2023-11-14T22:14:19.999Z"),
        (1_798_761_599.25, "2026-12-31T23:59:59.250Z"),
    ],
)
def test_rfc3339(epoch, text):
    assert rfc3339(epoch) == text


# --- build_result and the log line ------------------------------------------------------------

PRICES = parse_prices({"currency": "USD", "doubao-*": {"input": 2, "output": 8, "cached_input": 0.5}}, SOURCE)
USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 200,
    "total_tokens": 1200,
    "prompt_tokens_details": {"cached_tokens": 400},
    "completion_tokens_details": {"reasoning_tokens": 150},
}


def result_for(model="doubao-x", prices=PRICES, error=None, **trace):
    trace = Trace(model, started=100.0, payload=b'{"model":"doubao-x"}', **trace)
    return build_result(
        RequestContext("complete", "work", prices), trace, ended=101.25, now=NOW, attempts=2, error=error
    )


def test_log_line_has_exactly_the_contract_keys_in_order():
    line = result_for(usage=USAGE, request_id="req-7", custom_id="r1", cache="miss").log_line()
    assert list(line) == LOG_KEYS
    assert line == {
        "ts": "2023-11-14T22:13:20.000Z",
        "command": "complete",
        "profile": "work",
        "model": "doubao-x",
        "request_id": "req-7",
        "status": "ok",
        "exit": 0,
        "attempts": 2,
        "latency_ms": 1250,
        "prompt_tokens": 1000,
        "completion_tokens": 200,
        "total_tokens": 1200,
        "reasoning_tokens": 150,
        "cached_tokens": 400,
        "cost": pytest.approx(0.003),
        "currency": "USD",
        "cache": "miss",
        "custom_id": "r1",
        "body_sha256": hashlib.sha256(b'{"model":"doubao-x"}').hexdigest(),
    }


def test_a_failed_request_logs_nulls_not_guesses():
    line = result_for(error=ApiError("no channel", status=503, code="model_not_found")).log_line()
    assert list(line) == LOG_KEYS
    assert line["status"] == "model_not_found" and line["exit"] == 1
    assert all(line[name] is None for name in ("prompt_tokens", "total_tokens", "cached_tokens", "cost"))
    assert line["currency"] == "USD"  # the model has a price; the server said no counts


def test_an_unpriced_model_has_no_cost_and_no_currency():
    line = result_for(model="glm-4", usage=USAGE).log_line()
    assert line["cost"] is None and line["currency"] is None
    assert result_for(prices=NO_PRICES, usage=USAGE).log_line()["cost"] is None


def test_a_result_never_carries_text_or_the_key():
    result = result_for(usage=USAGE, finish_reason="stop")
    text = repr(result.log_line())
    assert "finish_reason" not in text and "stop" not in text
    assert result.error is None


def test_attempts_and_latency_are_never_below_their_floor():
    trace = Trace("m", started=10.0)
    result = build_result(RequestContext("c", "p", NO_PRICES), trace, ended=9.0, now=NOW, attempts=0)
    assert result.attempts == 1 and result.latency_ms == 0 and result.body_sha256 is None
