"""The usage log, prices and budgets through the CLI against the loopback gateway, and
`anyfast usage` (§3 "Usage log, prices and budgets", §5 exit 9)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from gateway import Json, Sse, chunk, completion, error_body, model_not_found, sse_events
from helpers import KEY, LOG_KEYS, closed_port, whole_lines

from anyfast_cli.commands.usage import render_rows

DEFAULT_MODEL = "doubao-seed-1-6-vision-250815"
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
PRICES_YAML = "currency: USD\ndoubao-*: {input: 1000, output: 2000}\n"  # large, so costs are plain numbers
SLOW_DOWN = Json(error_body("slow down", "rate_limit_error"), status=429, headers={"Retry-After": "0"})


def echo_usage(request) -> tuple[int, int]:
    """The tokens the loopback gateway counts for its echo answer (see gateway._default_reply)."""
    messages = request.body["messages"]
    prompt = len(json.dumps(messages)) // 4
    text = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    return prompt, len(f"echo: {text}") // 4 + 1


def sha256_as_sent(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


@pytest.fixture
def log(tmp_path):
    return tmp_path / "usage.jsonl"


@pytest.fixture
def prices(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text(PRICES_YAML)
    return path


# --- one line per request ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["complete", "chat"])
@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_each_request_appends_one_line_with_the_contract_fields(run, gateway, log, command, stream):
    prompt = "the secret plan for 2027"
    result = run(command, stream, "--usage-log", log, prompt)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"echo: {prompt}\n"
    [line] = whole_lines(log)
    assert list(line) == LOG_KEYS
    [request] = gateway.requests
    prompt_tokens, completion_tokens = echo_usage(request)
    assert RFC3339_UTC.match(line["ts"]), line["ts"]
    age = datetime.now(timezone.utc) - datetime.fromisoformat(line["ts"].replace("Z", "+00:00"))
    assert timedelta(0) <= age < timedelta(seconds=60)
    assert line == {
        **line,
        "command": command,
        "profile": "default",
        "model": DEFAULT_MODEL,
        "status": "ok",
        "exit": 0,
        "attempts": 1,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "reasoning_tokens": None,
        "cached_tokens": None,
        "cost": None,
        "currency": None,
        "cache": None,
        "custom_id": None,
        "body_sha256": sha256_as_sent(request.body),
    }
    assert re.fullmatch(r"req-\d+", line["request_id"])  # the gateway's x-request-id
    assert isinstance(line["latency_ms"], int) and 0 <= line["latency_ms"] < 60_000
    data = log.read_text()
    assert "secret plan" not in data and "echo" not in data and KEY not in data and "thinking" not in data


def test_lines_accumulate_and_each_hashes_its_own_body(run, gateway, log):
    for prompt in ("one", "two", "one"):
        assert run("complete", "--usage-log", log, prompt).exit_code == 0
    lines = whole_lines(log)
    first = int(lines[0]["request_id"].removeprefix("req-"))
    assert [line["request_id"] for line in lines] == [f"req-{first + i}" for i in range(3)]
    assert [line["body_sha256"] for line in lines] == [sha256_as_sent(r.body) for r in gateway.requests]
    assert lines[0]["body_sha256"] == lines[2]["body_sha256"] != lines[1]["body_sha256"]


def test_the_log_comes_from_the_environment_and_the_config(run, gateway, tmp_path):
    from_env, from_config = tmp_path / "env.jsonl", tmp_path / "config.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(f"profiles:\n  default:\n    usage_log: {from_config}\n  work:\n    temperature: 0.5\n")
    assert run("complete", "--config", config, "hi", ANYFAST_USAGE_LOG=str(from_env)).exit_code == 0
    assert run("complete", "--config", config, "hi").exit_code == 0
    assert run("complete", "--config", config, "--profile", "work", "hi").exit_code == 0  # no log there
    assert len(whole_lines(from_env)) == 1
    assert len(whole_lines(from_config)) == 1
    assert whole_lines(from_env)[0]["profile"] == "default"


def test_the_log_names_the_profile(run, gateway, tmp_path, log):
    config = tmp_path / "config.yaml"
    config.write_text("profiles:\n  work:\n    temperature: 0.5\n")
    assert run("complete", "--config", config, "--profile", "work", "--usage-log", log, "hi").exit_code == 0
    assert whole_lines(log)[0]["profile"] == "work"


@pytest.mark.parametrize(
    "reply, status, exit_code",
    [
        (Json(error_body("bad thing", "invalid_request_error"), status=400), "invalid_request_error", 1),
        (Json(error_body("who are you", "authentication_error"), status=401), "authentication_error", 3),
        (Json(error_body("nope", "x", "insufficient_quota"), status=403), "insufficient_quota", 3),
        (Json(status=400, raw=b"", headers={"Content-Type": None}), "http_400", 1),
        (model_not_found(DEFAULT_MODEL), "model_not_found", 1),
    ],
)
def test_a_failed_request_logs_its_status_and_exit(run, gateway, log, reply, status, exit_code):
    gateway.script(reply)
    result = run("complete", "--usage-log", log, "hi")
    assert result.exit_code == exit_code, result.stderr
    [line] = whole_lines(log)
    assert (line["status"], line["exit"], line["attempts"]) == (status, exit_code, 1)
    assert line["total_tokens"] is None and line["cost"] is None


def test_a_request_that_cannot_connect_logs_network(run, gateway, log):
    result = run(
        "complete", "--usage-log", log, "--retries", "0", "--base-url", f"http://127.0.0.1:{closed_port()}/v1", "hi"
    )
    assert result.exit_code == 4
    [line] = whole_lines(log)
    assert (line["status"], line["exit"], line["request_id"]) == ("network", 4, None)


@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_retries_are_attempts_of_one_line(run, gateway, log, quick_backoff, stream):
    gateway.script(SLOW_DOWN, SLOW_DOWN)
    result = run("complete", stream, "--usage-log", log, "hi")
    assert result.exit_code == 0, result.stderr
    [line] = whole_lines(log)
    assert (line["status"], line["attempts"]) == ("ok", 3)


def test_rate_limited_after_retries_is_one_line(run, gateway, log, quick_backoff):
    gateway.script(SLOW_DOWN, SLOW_DOWN)
    result = run("complete", "--retries", "1", "--usage-log", log, "hi")
    assert result.exit_code == 5
    [line] = whole_lines(log)
    assert (line["status"], line["exit"], line["attempts"]) == ("rate_limit_error", 5, 2)


def test_latency_is_the_whole_request(run, gateway, log):
    gateway.latency = 0.25
    assert run("complete", "--usage-log", log, "hi").exit_code == 0
    assert 250 <= whole_lines(log)[0]["latency_ms"] < 10_000


@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_an_answer_of_tool_calls_logs_exit_8(run, gateway, log, stream):
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    if stream == "--stream":
        delta = {"tool_calls": [{"index": 0, **call}]}
        pieces = [{"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}]
        gateway.script(Sse(sse_events(*pieces, chunk(finish="tool_calls"))))
    else:
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        body = {
            "id": "c",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
        }
        gateway.script(Json(body))
    result = run("complete", stream, "--usage-log", log, "call f")
    assert result.exit_code == 8, result.stderr
    [line] = whole_lines(log)
    assert (line["status"], line["exit"]) == ("ok", 8)


USAGE_DETAILS = {
    "prompt_tokens": 1000,
    "completion_tokens": 300,
    "total_tokens": 1300,
    "prompt_tokens_details": {"cached_tokens": 400},
    "completion_tokens_details": {"reasoning_tokens": 120},
}


@pytest.mark.parametrize("stream", [True, False])
def test_cached_and_reasoning_tokens_and_cost(run, gateway, log, tmp_path, stream):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"currency": "CNY", "doubao-*": {"input": 2, "output": 8, "cached_input": 0.5}}))
    if stream:
        usage_chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": USAGE_DETAILS}
        gateway.script(Sse(sse_events(chunk("hello"), chunk(finish="stop"), usage_chunk)))
    else:
        gateway.script(Json(completion("hello", usage=USAGE_DETAILS)))
    result = run("complete", "--stream" if stream else "--no-stream", "--usage-log", log, "--prices", prices, "hi")
    assert result.exit_code == 0, result.stderr
    [line] = whole_lines(log)
    assert (line["prompt_tokens"], line["completion_tokens"], line["total_tokens"]) == (1000, 300, 1300)
    assert (line["reasoning_tokens"], line["cached_tokens"]) == (120, 400)
    # (1000 - 400) x 2 + 400 x 0.5 + 300 x 8 = 3800 per million, not rounded
    assert line["cost"] == pytest.approx(0.0038, rel=1e-12) and line["currency"] == "CNY"


def test_a_stream_whose_server_says_no_usage_logs_nulls(run, gateway, log, prices):
    gateway.script(Sse(sse_events(chunk("hello"), chunk(finish="stop"))))
    result = run("complete", "--usage-log", log, "--prices", prices, "hi")
    assert result.exit_code == 0, result.stderr
    [line] = whole_lines(log)
    assert line["prompt_tokens"] is None and line["total_tokens"] is None
    assert line["cost"] is None and line["status"] == "ok"


# --- --usage shows the cost ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_usage_shows_the_cost_when_the_model_has_a_price(run, gateway, prices, stream):
    result = run("complete", stream, "--usage", "--prices", prices, "hi")
    assert result.exit_code == 0, result.stderr
    prompt_tokens, completion_tokens = echo_usage(gateway.requests[0])
    expected = (prompt_tokens * 1000 + completion_tokens * 2000) / 1_000_000
    assert f"{prompt_tokens + completion_tokens} tokens" in result.stderr
    assert re.search(r"cost ([0-9.]+) USD", result.stderr).group(1) == f"{expected:g}"


def test_usage_without_a_price_shows_no_cost(run, gateway, prices):
    result = run("complete", "--usage", "--prices", prices, "-m", "glm-4", "hi")
    assert result.exit_code == 0 and "tokens" in result.stderr
    assert "cost" not in result.stderr


# --- where prices come from ------------------------------------------------------------------------


def write_config(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


PRICED_CONFIG = """\
prices:
  currency: TOP
  doubao-*: {input: 1000, output: 1000}
profiles:
  default:
    temperature: 0.1
  priced:
    prices:
      currency: PROF
      doubao-seed-*: {input: 2000, output: 2000}
  empty:
    prices: {}
"""


@pytest.mark.parametrize(
    "args, currency, per_token",
    [
        pytest.param([], "TOP", 1000, id="top level"),
        pytest.param(["--profile", "priced"], "PROF", 2000, id="profile wins over top level"),
        pytest.param(["--profile", "empty"], None, None, id="a profile's empty prices win too"),
        pytest.param(["--prices", "FILE"], "FILE", 3000, id="--prices wins over top level"),
        pytest.param(["--profile", "priced", "--prices", "FILE"], "FILE", 3000, id="--prices wins over both"),
    ],
)
def test_prices_come_from_flag_then_profile_then_top_level(run, gateway, tmp_path, log, args, currency, per_token):
    config = write_config(tmp_path, PRICED_CONFIG)
    file = tmp_path / "mine.json"
    file.write_text(json.dumps({"currency": "FILE", "doubao-*": {"input": 3000, "output": 3000}}))
    args = [str(file) if a == "FILE" else a for a in args]
    result = run("complete", "--config", config, "--usage-log", log, *args, "hi")
    assert result.exit_code == 0, result.stderr
    [line] = whole_lines(log)
    assert line["currency"] == currency
    if per_token is None:
        assert line["cost"] is None
    else:
        assert line["cost"] == pytest.approx(line["total_tokens"] * per_token / 1_000_000)


@pytest.mark.parametrize(
    "text, words",
    [
        pytest.param("doubao-*: {input: -1, output: 2}\n", ["doubao-*", "input"], id="negative"),
        pytest.param("doubao-*: {input: .nan, output: 2}\n", [":1:"], id="NaN"),  # refused as the file is read
        pytest.param("doubao-*: {input: cheap, output: 2}\n", ["doubao-*", "input"], id="a word"),
        pytest.param("doubao-*: {input: 1, output: 2, per: token}\n", ["doubao-*", "per"], id="unknown key"),
        pytest.param("doubao-*: 5\n", ["doubao-*"], id="not a mapping"),
        pytest.param("- doubao-*\n", [], id="a list"),
        pytest.param("currency: [USD]\n", ["currency"], id="currency"),
    ],
)
def test_a_bad_prices_file_is_exit_2_naming_the_file_and_key(run, gateway, tmp_path, text, words):
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    result = run("complete", "--prices", path, "hi")
    assert result.exit_code == 2, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"anyfast: error: {path}"), first
    for word in words:
        assert word in first
    assert gateway.requests == []


def test_bad_prices_in_the_config_name_the_file_and_profile(run, gateway, tmp_path):
    config = write_config(tmp_path, "profiles:\n  work:\n    prices:\n      m: {input: -3, output: 1}\n")
    result = run("complete", "--config", config, "--profile", "work", "hi")
    assert result.exit_code == 2
    assert str(config) in result.stderr and "work" in result.stderr and "m: input" in result.stderr
    assert gateway.requests == []


@pytest.mark.parametrize("missing", ["no-such.yaml", "."])
def test_an_unreadable_prices_file_is_exit_2(run, gateway, tmp_path, missing):
    result = run("complete", "--prices", tmp_path / missing, "hi")
    assert result.exit_code == 2 and "anyfast: error:" in result.stderr
    assert gateway.requests == []


def test_a_glob_that_prices_no_model_used_is_only_a_warning(run, gateway, tmp_path, log):
    path = tmp_path / "prices.yaml"
    path.write_text("glm-*: {input: 1, output: 1}\ndoubao-*: {input: 1, output: 1}\n")
    result = run("complete", "--prices", path, "--usage-log", log, "hi")
    assert result.exit_code == 0 and result.stdout == "echo: hi\n"
    assert "glm-*" in result.stderr and "doubao-*" not in result.stderr
    assert whole_lines(log)[0]["cost"] is not None


# --- budgets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["flag", "config"])
def test_a_money_budget_with_an_unpriced_model_is_exit_2_before_sending(run, gateway, tmp_path, log, where):
    path = tmp_path / "prices.yaml"
    path.write_text("glm-*: {input: 1, output: 1}\n")
    if where == "flag":
        result = run("complete", "--budget", "5", "--prices", path, "--usage-log", log, "hi")
    else:
        config = write_config(tmp_path, "profiles:\n  default:\n    budget: 5\n")
        result = run("complete", "--config", config, "--prices", path, "--usage-log", log, "hi")
    assert result.exit_code == 2, result.stderr
    assert DEFAULT_MODEL in result.stderr.splitlines()[0]
    assert gateway.requests == []
    assert not log.exists() or log.read_bytes() == b""


def test_a_money_budget_with_a_priced_model_sends(run, gateway, prices, log):
    result = run("complete", "--budget", "5", "--prices", prices, "--usage-log", log, "hi")
    assert result.exit_code == 0, result.stderr
    assert len(gateway.requests) == 1


@pytest.mark.parametrize(
    "args",
    [["--budget=-1"], ["--budget", "nan"], ["--budget", "inf"], ["--budget-tokens=-5"], ["--budget-tokens", "1.5"]],
)
def test_a_bad_budget_is_exit_2(run, gateway, prices, args):
    result = run("complete", *args, "--prices", prices, "hi")
    assert result.exit_code == 2, result.stderr
    assert gateway.requests == []


@pytest.mark.parametrize("value", ["-1", "lots", "[1]"])
def test_a_bad_budget_in_the_config_names_the_profile(run, gateway, tmp_path, prices, value):
    config = write_config(tmp_path, f"profiles:\n  default:\n    budget: {value}\n")
    result = run("complete", "--config", config, "--prices", prices, "hi")
    assert result.exit_code == 2 and str(config) in result.stderr and "budget" in result.stderr
    assert gateway.requests == []


def test_budget_tokens_zero_stops_before_the_first_request(run, gateway):
    result = run("complete", "--budget-tokens", "0", "hi")
    assert result.exit_code == 9, result.stderr
    assert result.stderr.startswith("anyfast: error: budget reached")
    assert result.stdout == "" and gateway.requests == []


@pytest.mark.parametrize("command", ["complete", "chat"])
def test_a_token_budget_is_shared_through_one_log(run, gateway, log, command):
    first = run(command, "--usage-log", log, "--budget-tokens", "5", "hi")
    assert first.exit_code == 0, first.stderr
    [line] = whole_lines(log)
    assert line["total_tokens"] > 5  # the request in flight passed the cap; the next one is not sent
    second = run(command, "--usage-log", log, "--budget-tokens", "5", "hi")
    assert second.exit_code == 9, second.stderr
    assert second.stdout == ""
    assert "budget reached" in second.stderr and str(log) in second.stderr
    assert len(gateway.requests) == 1
    assert len(whole_lines(log)) == 1  # what was not sent is not logged


def test_a_token_budget_not_yet_reached_sends(run, gateway, log):
    assert run("complete", "--usage-log", log, "--budget-tokens", "1000", "hi").exit_code == 0
    assert run("complete", "--usage-log", log, "--budget-tokens", "1000", "hi").exit_code == 0
    assert len(gateway.requests) == 2


def test_a_money_budget_is_shared_through_one_log(run, gateway, log, prices):
    first = run("complete", "--usage-log", log, "--prices", prices, "hi")
    assert first.exit_code == 0
    spent = whole_lines(log)[0]["cost"]
    assert spent > 0
    below = run("complete", "--usage-log", log, "--prices", prices, "--budget", spent * 1.5, "hi")
    assert below.exit_code == 0, below.stderr
    reached = run("complete", "--usage-log", log, "--prices", prices, "--budget", spent * 1.5, "hi")
    assert reached.exit_code == 9, reached.stderr
    assert "USD" in reached.stderr
    assert len(gateway.requests) == 2 and len(whole_lines(log)) == 2


def test_a_budget_counts_lines_other_writers_left(run, gateway, log):
    """Lines the run did not write (another job's) count; null counts 0."""
    lines = [{"total_tokens": 40, "cost": None}, {"total_tokens": None, "cost": None}, {"total_tokens": 60}]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert run("complete", "--usage-log", log, "--budget-tokens", "101", "hi").exit_code == 0
    assert run("complete", "--usage-log", log, "--budget-tokens", "100", "hi").exit_code == 9
    assert len(gateway.requests) == 1


def test_a_budget_with_an_unreadable_log_line_warns_and_counts_what_it_can(run, gateway, log):
    log.write_text(
        json.dumps({"total_tokens": 70}) + "\n" + "}{ torn by hand\n" + json.dumps({"total_tokens": 30}) + "\n"
    )
    below = run("complete", "--usage-log", log, "--budget-tokens", "101", "hi")
    assert below.exit_code == 0, below.stderr
    assert "could not be read" in below.stderr and "line 2" in below.stderr and str(log) in below.stderr
    reached = run("complete", "--usage-log", log, "--budget-tokens", "100", "hi")
    assert reached.exit_code == 9
    assert "line 2" in reached.stderr
    assert len(gateway.requests) == 1


def test_a_budget_without_a_log_counts_this_run_only(run, gateway, tmp_path):
    """Without a usage log, nothing is read: another run's spending does not count."""
    assert run("complete", "--budget-tokens", "1", "hi").exit_code == 0
    assert run("complete", "--budget-tokens", "1", "hi").exit_code == 0
    assert len(gateway.requests) == 2


SCHEMA = "title, year int"


def test_a_schema_repair_is_a_request_of_its_own_line(run, gateway, log):
    gateway.script(
        Json(completion('{"title": "Dune", "year": "four"}')), Json(completion('{"title": "Dune", "year": 1965}'))
    )
    result = run("complete", "--schema", SCHEMA, "--usage-log", log, "a book")
    assert result.exit_code == 0, result.stderr
    lines = whole_lines(log)
    assert len(lines) == 2 == len(gateway.requests)
    assert [line["body_sha256"] for line in lines] == [sha256_as_sent(r.body) for r in gateway.requests]


def test_a_budget_reached_stops_the_repair(run, gateway, log):
    """A repair is a request too: once the first answer reached the cap, it is not sent."""
    gateway.script(Json(completion('{"title": "Dune", "year": "four"}')))
    result = run("complete", "--schema", SCHEMA, "--usage-log", log, "--budget-tokens", "5", "a book")
    assert result.exit_code == 9, result.stderr
    assert "budget reached" in result.stderr
    assert len(gateway.requests) == 1 and len(whole_lines(log)) == 1


# --- streamed requests ask for usage when something reads it ---------------------------------------


@pytest.mark.parametrize(
    "args, asked",
    [
        pytest.param(["--usage-log", "LOG"], True, id="log"),
        pytest.param([], True, id="log from the environment"),
        pytest.param(["--budget-tokens", "1000"], True, id="token budget"),
        pytest.param(["--budget", "100", "--prices", "PRICES"], True, id="money budget"),
        pytest.param(["--usage"], True, id="--usage"),
        pytest.param(["--prices", "PRICES"], False, id="prices alone"),
        pytest.param(["--no-stdin"], False, id="nothing"),
    ],
)
@pytest.mark.parametrize("command", ["complete", "chat"])
def test_streamed_requests_ask_for_usage_when_it_is_read(run, gateway, log, prices, args, asked, command, request):
    env = {"ANYFAST_USAGE_LOG": str(log)} if "environment" in request.node.callspec.id else {}
    args = [str(log) if a == "LOG" else str(prices) if a == "PRICES" else a for a in args]
    assert run(command, "--stream", *args, "hi", **env).exit_code == 0
    body = gateway.requests[0].body
    if asked:
        assert body["stream_options"] == {"include_usage": True}
    else:
        assert "stream_options" not in body
    if log.exists():
        assert whole_lines(log)[0]["total_tokens"] is not None  # asked for, and so logged


def test_whole_answers_never_ask_for_stream_options(run, gateway, log):
    assert run("complete", "--no-stream", "--usage-log", log, "--budget-tokens", "1000", "hi").exit_code == 0
    assert "stream_options" not in gateway.requests[0].body


# --- anyfast usage ---------------------------------------------------------------------------------

SAMPLE = [
    dict(ts="2026-11-30T23:59:59.999Z", command="complete", profile="default", model="doubao-a",
         prompt_tokens=10, completion_tokens=5, total_tokens=15, cost=0.5, currency="USD"),
    dict(ts="2026-12-01T01:00:00+02:00", command="batch", profile="work", model="doubao-a",
         prompt_tokens=20, completion_tokens=10, total_tokens=30, cost=0.25, currency="USD"),
    dict(ts="2026-12-01T00:00:00.000Z", command="chat", profile="work", model="glm-4",
         prompt_tokens=100, completion_tokens=50, total_tokens=150, cost=2, currency="CNY"),
    dict(ts="2026-12-01T12:00:00.000Z", command="complete", profile="default", model="glm-4",
         prompt_tokens=None, completion_tokens=None, total_tokens=None, cost=None, currency=None),
]  # fmt: skip


def row(requests, prompt, completion, cost, currency, **group):
    return {
        **group,
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost": cost,
        "currency": currency,
    }


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "sample.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in SAMPLE))
    return path


def usage_json(cli, *args, **env):
    result = cli("usage", "--json", *args, **env)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_usage_totals_per_currency(cli, sample):
    assert usage_json(cli, sample) == [
        row(2, 100, 50, 2, "CNY"),  # with the request the server said nothing of: it joins a row
        row(2, 30, 15, 0.75, "USD"),
    ]


@pytest.mark.parametrize(
    "by, rows",
    [
        (
            "model",
            [
                row(2, 30, 15, 0.75, "USD", model="doubao-a"),
                row(2, 100, 50, 2, "CNY", model="glm-4"),
            ],
        ),
        (
            "day",  # UTC days: 01:00 at +02:00 is the day before
            [
                row(2, 30, 15, 0.75, "USD", day="2026-11-30"),
                row(2, 100, 50, 2, "CNY", day="2026-12-01"),
            ],
        ),
        (
            "command",
            [
                row(1, 20, 10, 0.25, "USD", command="batch"),
                row(1, 100, 50, 2, "CNY", command="chat"),
                row(2, 10, 5, 0.5, "USD", command="complete"),
            ],
        ),
        (
            "profile",
            [
                row(2, 10, 5, 0.5, "USD", profile="default"),
                row(1, 100, 50, 2, "CNY", profile="work"),
                row(1, 20, 10, 0.25, "USD", profile="work"),
            ],
        ),
    ],
)
def test_usage_by(cli, sample, by, rows):
    assert usage_json(cli, sample, "--by", by) == rows


def test_usage_in_a_pipe_is_tab_separated_without_a_header(cli, sample):
    result = cli("usage", sample, "--by", "model")
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout == ("doubao-a\t2\t30\t15\t45\t0.75\tUSD\nglm-4\t2\t100\t50\t150\t2\tCNY\n")


def test_usage_at_a_terminal_is_aligned_under_a_header():
    rows = [row(12, 1000, 50, 0.125, "USD", model="doubao-a"), row(1, 5, 5, None, None, model="m")]
    lines = render_rows(rows, terminal=True).splitlines()
    assert lines[0].split() == ["model", "requests", "prompt", "completion", "total", "cost", "currency"]
    assert lines[1].split() == ["doubao-a", "12", "1000", "50", "1050", "0.125", "USD"]
    assert lines[2].split() == ["m", "1", "5", "5", "10", "-", "-"]
    # numbers right-aligned: each column's last character in the same place
    ends = [[m.end() for m in re.finditer(r"\S+", line)] for line in lines]
    assert ends[0][1:6] == ends[1][1:6] == ends[2][1:6]


def test_usage_reads_the_configured_log_by_default(cli, sample, tmp_path):
    assert usage_json(cli, ANYFAST_USAGE_LOG=str(sample))[-1]["requests"] == 2
    config = tmp_path / "config.yaml"
    config.write_text(f"profiles:\n  default:\n    usage_log: {sample}\n")
    assert usage_json(cli, "--config", config)[-1]["requests"] == 2


def test_usage_totals_several_files(cli, sample, tmp_path):
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps(SAMPLE[0]) + "\n")
    assert usage_json(cli, sample, other)[-1] == row(3, 40, 20, 1.25, "USD")


def test_usage_since(cli, tmp_path):
    now = datetime.now(timezone.utc)
    path = tmp_path / "usage.jsonl"
    ages = [timedelta(hours=1), timedelta(hours=13), timedelta(days=3), timedelta(days=10)]
    lines = [
        {"ts": (now - age).strftime("%Y-%m-%dT%H:%M:%S.000Z"), "total_tokens": 10**i, "cost": None} for i, age in
        enumerate(ages)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    def tokens(*args):
        return usage_json(cli, path, *args)[0]["total_tokens"]

    assert tokens() == 1111
    assert tokens("--since", "12h") == 1
    assert tokens("--since", "2d") == 11
    assert tokens("--since", "7d") == 111
    assert tokens("--since", "2w") == 1111
    assert tokens("--since", "30m") == 0
    assert tokens("--since", (now - timedelta(days=5)).date().isoformat()) == 111
    assert tokens("--since", (now + timedelta(days=2)).date().isoformat()) == 0


def test_usage_by_day_since_a_date(cli, sample):
    rows = usage_json(cli, sample, "--by", "day", "--since", "2026-12-01")
    assert [(r["day"], r["requests"]) for r in rows] == [("2026-12-01", 2)]


@pytest.mark.parametrize(
    "args",
    [["--by", "week"], ["--by", "MODEL"], ["--since", "yesterday"], ["--since", "7"], ["--since", "-7d"],
     ["--since", "2026-13-01"]],
)  # fmt: skip
def test_usage_bad_by_or_since_is_exit_2(cli, sample, args):
    result = cli("usage", sample, *args)
    assert result.exit_code == 2, result.stdout
    assert result.stderr.startswith("anyfast: error:") and result.stdout == ""
    assert "Traceback" not in result.stderr


def test_usage_of_a_missing_file_or_a_directory_or_no_log_is_exit_2(cli, sample, tmp_path):
    missing = tmp_path / "nope.jsonl"
    result = cli("usage", sample, missing)
    assert result.exit_code == 2 and str(missing) in result.stderr and result.stdout == ""
    result = cli("usage", tmp_path)
    assert result.exit_code == 2 and str(tmp_path) in result.stderr
    result = cli("usage")
    assert result.exit_code == 2 and "no usage log" in result.stderr


def test_usage_skips_unreadable_lines_naming_file_and_line(cli, tmp_path):
    path = tmp_path / "usage.jsonl"
    good = json.dumps({"ts": "2026-12-01T00:00:00Z", "total_tokens": 5, "cost": None})
    path.write_text(f"{good}\nnot json\n\n{good}\n[1, 2]\n" + '{"ts": "2026-12-01T00:00:0' + f"\n{good}")
    result = cli("usage", "--json", path)
    assert result.exit_code == 0
    assert json.loads(result.stdout)[0]["total_tokens"] == 15
    assert result.stderr.splitlines() == [
        f"anyfast: warning: {path}:{n}: not a usage line; skipped" for n in (2, 5, 6)
    ], result.stderr


def test_usage_by_day_skips_a_line_without_a_time(cli, tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_text(json.dumps({"total_tokens": 5}) + "\n" + json.dumps({"ts": "2026-12-01T00:00:00Z"}) + "\n")
    result = cli("usage", "--json", "--by", "day", path)
    assert result.exit_code == 0
    assert [r["day"] for r in json.loads(result.stdout)] == ["2026-12-01"]
    assert f"{path}:1:" in result.stderr


def test_usage_with_numbers_no_writer_meant_prints_valid_json(cli, tmp_path):
    path = tmp_path / "usage.jsonl"
    good = {"ts": "2026-12-01T00:00:00Z", "total_tokens": 5, "cost": 0.5, "currency": "USD"}
    path.write_text(
        '{"ts": "2026-12-01T00:00:00Z", "total_tokens": 1e400, "cost": Infinity, "currency": "USD"}\n'
        '{"ts": "2026-12-01T00:00:00Z", "prompt_tokens": NaN, "cost": 1e400, "currency": "USD"}\n'
        + json.dumps(good)
        + "\n"
    )
    result = cli("usage", "--json", path)
    assert result.exit_code == 0, result.stderr
    [total] = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert (total["requests"], total["total_tokens"], total["cost"]) == (3, 5, 0.5)


def test_a_budget_with_numbers_no_writer_meant_in_the_log_counts_them_as_zero(run, gateway, log):
    log.write_text('{"total_tokens": 1e400, "cost": 1e400}\n{"total_tokens": 10}\n')
    result = run("complete", "--usage-log", log, "--budget-tokens", "11", "hi")
    assert result.exit_code == 0, result.stderr
    assert run("complete", "--usage-log", log, "--budget-tokens", "11", "hi").exit_code == 9


@pytest.mark.parametrize("args", [["--by", "day"], ["--since", "30d"], ["--since", "0001-01-02"]])
def test_usage_skips_a_time_before_any_utc_date(cli, tmp_path, args):
    """0001-01-01T00:00+01:00 is a time Python reads but cannot bring to UTC (once an internal error)."""
    path = tmp_path / "usage.jsonl"
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    path.write_text(
        json.dumps({"ts": "0001-01-01T00:00:00+01:00", "total_tokens": 1})
        + "\n"
        + json.dumps({"ts": now, "total_tokens": 2})
        + "\n"
    )
    result = cli("usage", "--json", path, *args)
    assert result.exit_code == 0, result.stderr
    assert [row["total_tokens"] for row in json.loads(result.stdout)] == [2]
    assert f"{path}:1: not a usage line" in result.stderr


@pytest.mark.parametrize("since", ["99999999d", "9999999999999999999999w", "0001-01-01T00:00:00+01:00"])
def test_usage_since_further_back_than_any_date_is_exit_2(cli, sample, since):
    result = cli("usage", sample, "--since", since)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("anyfast: error: --since") and "internal error" not in result.stderr


def test_usage_names_the_first_skipped_lines_then_counts(cli, tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_text("garbage\n" * 25)
    result = cli("usage", "--json", path)
    assert result.exit_code == 0
    warnings = result.stderr.splitlines()
    assert len(warnings) == 21
    assert f"{path}:20:" in warnings[19] and "5 more" in warnings[20]


def test_usage_of_an_empty_log_is_one_row_of_zeros(cli, tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_text("")
    assert usage_json(cli, path) == [row(0, 0, 0, None, None)]


def test_usage_of_a_thousand_lines(cli, tmp_path):
    path = tmp_path / "usage.jsonl"
    models = ["doubao-a", "doubao-b", "glm-4", "gpt-4o"]
    with open(path, "w") as file:
        for i in range(1000):
            day = 1 + i % 5
            file.write(
                json.dumps(
                    {
                        "ts": f"2026-12-0{day}T0{i % 10}:00:00.000Z",
                        "command": "batch",
                        "profile": "default",
                        "model": models[i % 4],
                        "prompt_tokens": i,
                        "completion_tokens": 1,
                        "total_tokens": i + 1,
                        "cost": 0.001,
                        "currency": "USD",
                    }
                )
                + "\n"
            )
    [total] = usage_json(cli, path)
    assert total["requests"] == 1000 and total["total_tokens"] == sum(range(1, 1001))
    assert total["cost"] == pytest.approx(1.0)
    by_model = usage_json(cli, path, "--by", "model")
    assert [(r["model"], r["requests"]) for r in by_model] == [(m, 250) for m in models]
    by_day = usage_json(cli, path, "--by", "day")
    assert [r["requests"] for r in by_day] == [200] * 5


def test_usage_totals_what_complete_logged(run, cli, gateway, log, prices):
    for _ in range(3):
        assert run("complete", "--usage-log", log, "--prices", prices, "hi").exit_code == 0
    lines = whole_lines(log)
    [total] = usage_json(cli, log)
    assert total["requests"] == 3 and total["currency"] == "USD"
    assert total["total_tokens"] == sum(line["total_tokens"] for line in lines)
    assert total["cost"] == pytest.approx(sum(line["cost"] for line in lines))
