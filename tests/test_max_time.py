"""--max-time bounds a whole request, every attempt included (issue 10, class 3).

The decision is Attempts' (exchange.py, sans-I/O, tested here with a fake timer); the
shells pass what is left to their library: httpx for complete and chat, aiohttp for each
batch record. A server that drips a byte at a time must end at --max-time, exit 4.
"""

from __future__ import annotations

import json
import random
import time

import pytest
from gateway import Drip, Json, Sse, Stall, chunk, completion, error_body, sse_events
from helpers import parse_lines

from anyfast_cli.errors import ApiError, ExitCode, NetworkError
from anyfast_cli.exchange import Attempts, NetFailure

TARGET = "gateway.test"
DRIP_SECONDS = 30  # how long a drip would take in full: every bounded run ends long before it
MAX_TIME = "0.3"  # the --max-time of the runs below: ample for a loopback answer to begin
MAX_TIME_LINE = f"anyfast: error: the request took longer than --max-time {MAX_TIME} s"


class NoJitter(random.Random):
    def random(self):
        return 0.0


class FakeTimer:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def attempts(max_time=None, retries=3, timer=None) -> Attempts:
    return Attempts(retries=retries, target=TARGET, rng=NoJitter(), max_time=max_time, timer=timer or FakeTimer())


def busy() -> bytes:
    return json.dumps(error_body("busy")).encode()


# --- Attempts: the deadline, with a fake timer ----------------------------------------------------


def test_without_max_time_nothing_changes():
    trier = attempts()
    assert trier.time_left() is None
    assert trier.timeouts(10.0, 600.0) == (10.0, 600.0)
    assert trier.after_status(503, {}, busy()).delay == 0.5


def test_the_clock_starts_with_the_first_attempt_and_each_attempt_gets_what_is_left():
    timer = FakeTimer()
    trier = attempts(max_time=30, timer=timer)
    timer.now += 1000  # time before the first attempt (a rate limiter's wait) does not count
    assert trier.timeouts(10.0, 600.0) == (10.0, 30.0)
    timer.now += 25
    assert trier.timeouts(10.0, 600.0) == (5.0, 5.0)
    assert trier.timeouts(None, None) == (5.0, 5.0)
    timer.now += 5
    with pytest.raises(NetworkError) as raised:
        trier.time_left()
    assert raised.value.exit_code == ExitCode.NETWORK
    assert raised.value.message == "the request took longer than --max-time 30 s"
    assert raised.value.code == "timeout"


@pytest.mark.parametrize("kind", ["read_timeout", "connect_timeout", "closed", "refused", "other"])
def test_a_failure_once_the_time_is_up_is_the_max_time_error_and_is_not_retried(kind):
    timer = FakeTimer()
    trier = attempts(max_time=2, timer=timer)
    trier.time_left()
    timer.now += 2
    with pytest.raises(NetworkError) as raised:
        trier.after_network(NetFailure(kind))
    assert raised.value.message == "the request took longer than --max-time 2 s"
    assert trier.number == 0


def test_a_retry_whose_backoff_would_pass_the_deadline_is_not_made():
    timer = FakeTimer()
    trier = attempts(max_time=2.0, timer=timer)
    trier.time_left()
    assert trier.after_status(503, {}, busy()).delay == 0.5  # 0.5 s of 2 s: fits
    timer.now += 0.6
    assert trier.after_status(503, {}, busy()).delay == 1.0  # ends at 1.6 s: fits
    timer.now += 1.1
    with pytest.raises(ApiError) as raised:  # 2 s more would end at 3.7 s
        trier.after_status(503, {}, busy())
    assert raised.value.message == "HTTP 503: busy (not retried: --max-time 2 s would run out first)"
    assert raised.value.exit_code == ExitCode.API  # the server's answer, as it was: not a timeout


def test_a_retry_after_past_the_deadline_is_not_waited_for():
    trier = attempts(max_time=5)
    trier.time_left()
    with pytest.raises(ApiError) as raised:
        trier.after_status(429, {"retry-after": "10"}, busy())
    assert raised.value.exit_code == ExitCode.RATE_LIMITED
    assert raised.value.message.endswith("(not retried: --max-time 5 s would run out first)")


def test_a_network_retry_past_the_deadline_is_not_made():
    timer = FakeTimer()
    trier = attempts(max_time=1, timer=timer)
    trier.time_left()
    timer.now += 0.7
    with pytest.raises(NetworkError) as raised:
        trier.after_network(NetFailure("refused", "connection refused"))
    assert (
        raised.value.message
        == f"cannot connect to {TARGET}: connection refused (not retried: --max-time 1 s would run out first)"
    )


def test_leaves_time_for():
    timer = FakeTimer()
    trier = attempts(max_time=10, timer=timer)
    assert trier.leaves_time_for(1e9)  # the clock has not started
    trier.time_left()
    assert trier.leaves_time_for(9.0) and not trier.leaves_time_for(10.0)


# --- the setting -------------------------------------------------------------------------------


def test_max_time_is_a_setting_never_a_body_field(cli, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("profiles:\n  default:\n    max_time: 12.5\n    temperature: 0.5\n")
    result = cli("complete", "--config", config, "--dry-run", "hi")
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)["body"]
    assert "max_time" not in body and body["temperature"] == 0.5


@pytest.mark.parametrize("where", ["flag", "profile"])
@pytest.mark.parametrize("value", ["0", "-3", "forever", "1e9"])
def test_a_bad_max_time_is_a_usage_error(cli, tmp_path, where, value):
    if where == "flag":
        result = cli("complete", "--max-time", value, "--dry-run", "hi")
    else:
        config = tmp_path / "config.yaml"
        config.write_text(f"profiles:\n  default:\n    max_time: {value!r}\n")
        result = cli("complete", "--config", config, "--dry-run", "hi")
    assert result.exit_code == ExitCode.USAGE
    if where == "profile" or value in ("0", "-3", "1e9"):
        assert "--max-time (max_time) must be a number of seconds" in result.stderr


def test_help_documents_max_time_and_the_stdin_rule(cli):
    text = " ".join(cli("complete", "--help").stdout.split())
    assert "--max-time SECONDS" in text
    assert "a pipe that never closes keeps the command waiting" in text


# --- complete and chat (httpx) ---------------------------------------------------------------------


def drip(pieces: int = DRIP_SECONDS * 20) -> Sse:
    """An answer that arrives a word every 0.05 s: never silent long enough for --timeout."""
    return Sse(sse_events(*[chunk(f"w{i} ") for i in range(pieces)], chunk(finish="stop")), delay=0.05)


def drip_bytes(pieces: int = DRIP_SECONDS * 20) -> Sse:
    """A whole JSON answer sent a byte every 0.05 s (a non-streamed request)."""
    body = json.dumps(
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}]}
    )
    return Sse(
        [body[i : i + 1].encode() for i in range(len(body))] + [b" "] * pieces,
        delay=0.05,
        headers={"Content-Type": "application/json"},
    )


def timed(run, *args):
    started = time.monotonic()
    result = run(*args)
    return result, time.monotonic() - started


@pytest.mark.parametrize("command", [["complete"], ["chat", "-n"]])
def test_a_dripping_stream_ends_at_max_time_with_its_line_ended(run, gateway, command):
    gateway.script(drip())
    result, elapsed = timed(run, *command, "--max-time", MAX_TIME, "hi")
    assert result.exit_code == ExitCode.NETWORK, result.stderr
    assert result.stderr.splitlines()[0] == MAX_TIME_LINE
    assert result.stdout.startswith("w0 ") and result.stdout.endswith("\n")
    assert elapsed < DRIP_SECONDS / 3
    assert len(gateway.requests) == 1  # running out is never retried


def test_a_whole_answer_dripping_ends_at_max_time(run, gateway):
    gateway.script(drip_bytes())
    result, elapsed = timed(run, "complete", "--json", "--max-time", MAX_TIME, "--retries", "3", "hi")
    assert result.exit_code == ExitCode.NETWORK, result.stderr
    assert result.stderr.splitlines()[0] == MAX_TIME_LINE
    assert result.stdout == ""
    assert elapsed < DRIP_SECONDS / 3
    assert len(gateway.requests) == 1


@pytest.mark.parametrize("flags", [[], ["--json"]], ids=["stream", "whole"])
def test_a_server_that_never_answers_ends_at_max_time_not_at_timeout(run, gateway, flags):
    gateway.script(Stall(DRIP_SECONDS), Stall(DRIP_SECONDS))
    result, elapsed = timed(run, "complete", *flags, "--max-time", MAX_TIME, "--timeout", "600", "--retries", "3", "hi")
    assert result.exit_code == ExitCode.NETWORK
    assert result.stderr.splitlines()[0] == MAX_TIME_LINE
    assert elapsed < DRIP_SECONDS / 3
    assert len(gateway.requests) == 1


def test_max_time_covers_every_attempt(run, gateway):
    """Attempts that fail fast are retried, but all of them share the one deadline."""
    gateway.script(Json(error_body("busy"), status=503, headers={"Retry-After": "0"}), Stall(DRIP_SECONDS))
    result, elapsed = timed(run, "complete", "--max-time", "0.5", "--retries", "5", "hi")
    assert result.exit_code == ExitCode.NETWORK
    assert "longer than --max-time 0.5 s" in result.stderr
    assert len(gateway.requests) == 2
    assert elapsed < DRIP_SECONDS / 3


def test_a_retry_after_past_max_time_is_not_waited_for(run, gateway):
    gateway.script(Json(error_body("slow down"), status=429, headers={"Retry-After": "20"}))
    result, elapsed = timed(run, "complete", "--max-time", "5", "--retries", "3", "hi")
    assert result.exit_code == ExitCode.RATE_LIMITED
    assert "(not retried: --max-time 5 s would run out first)" in result.stderr
    assert len(gateway.requests) == 1
    assert elapsed < 5


def test_max_time_from_the_config(run, gateway, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"profiles:\n  default:\n    max_time: {MAX_TIME}\n")
    gateway.script(drip())
    result = run("complete", "--config", config, "hi")
    assert result.exit_code == ExitCode.NETWORK
    assert result.stderr.splitlines()[0] == MAX_TIME_LINE


def test_an_answer_in_time_is_untouched(run, gateway):
    result = run("complete", "--max-time", "30", "hi")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "echo: hi\n"


# --- every stage: connecting, the headers, sniffing a stream, a body with no length ----------------------
# The deadline is armed before the attempt connects and shuts its socket down when it strikes;
# whatever the attempt then looks like (a read error, a partial body), the failure is --max-time's.

STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"  # no length: the body ends with the connection
)
JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
STREAM_BODY = b"".join(sse_events(chunk("dripped"), chunk(finish="stop")))
WHOLE_BODY = json.dumps(completion("dripped")).encode()


def dripped_head(head: bytes, body: bytes) -> Drip:
    """The status line and headers a byte every 0.05 s (padded: 10 s in all), then the body."""
    padded = head.replace(b"\r\n\r\n", b"\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n")
    return Drip(padded + body)


@pytest.mark.parametrize(
    "flags, reply",
    [
        ([], dripped_head(STREAM_HEAD, STREAM_BODY)),
        (["--no-stream"], dripped_head(JSON_HEAD, WHOLE_BODY)),
        ([], Drip(STREAM_BODY, head=STREAM_HEAD, delay=0.1)),  # cut at "data": never "not an event stream"
        ([], Drip(WHOLE_BODY, head=JSON_HEAD, delay=0.1)),  # a stream answered whole: never "not JSON"
        (["--no-stream"], Drip(WHOLE_BODY, head=JSON_HEAD, delay=0.1)),
    ],
    ids=["stream headers", "whole headers", "stream body", "stream answered whole", "whole body"],
)
def test_a_drip_at_any_stage_ends_at_max_time(run, gateway, flags, reply):
    gateway.script(reply)
    result, elapsed = timed(run, "complete", "-n", *flags, "--max-time", MAX_TIME, "--retries", "3", "hi")
    assert result.exit_code == ExitCode.NETWORK, result.stderr
    assert result.stderr.splitlines()[0] == MAX_TIME_LINE
    assert result.stdout == ""
    assert elapsed < 3
    assert len(gateway.requests) == 1


def test_a_kept_alive_connection_is_cut_at_max_time_too(run, gateway):
    """The second attempt reuses the first one's connection, which opened before its deadline."""
    connections = gateway.connections
    gateway.script(Json(error_body("busy"), status=503, headers={"Retry-After": "0"}), dripped_head(STREAM_HEAD, b""))
    result, elapsed = timed(run, "complete", "-n", "--max-time", MAX_TIME, "--retries", "3", "hi")
    assert result.exit_code == ExitCode.NETWORK, result.stderr
    assert result.stderr.splitlines()[0] == MAX_TIME_LINE
    assert elapsed < 3
    assert len(gateway.requests) == 2 and gateway.connections == connections + 1


def test_silence_after_output_began_is_a_timeout_with_what_was_printed_kept(run, gateway):
    first = b"".join(sse_events(chunk("Hello"), done=False))
    gateway.script(Drip(b"".join(sse_events(chunk(finish="stop"))), head=STREAM_HEAD + first, delay=5))
    result, elapsed = timed(run, "complete", "-n", "--timeout", "0.3", "hi")
    assert result.exit_code == ExitCode.NETWORK, result.stderr
    assert result.stdout == "Hello\n"
    assert result.stderr.startswith(f"anyfast: error: the stream broke: timed out waiting for {gateway.origin}")
    assert elapsed < 3


# --- batch (aiohttp): each record has its own --max-time -----------------------------------------------


def test_a_dripping_record_fails_at_max_time_and_the_others_are_answered(run, gateway, tmp_path, behave):
    behave(lambda prompt: drip_bytes() if prompt == "slow" else None)
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"id": name, "prompt": name}) + "\n" for name in ["a", "b", "slow", "c"]))
    started = time.monotonic()
    result = run("batch", data, "--max-time", MAX_TIME, "--retries", "3", "-j", "4")
    elapsed = time.monotonic() - started
    assert result.exit_code == ExitCode.BATCH_PARTIAL, result.stderr
    lines = {line["custom_id"]: line for line in parse_lines(result.stdout)}
    assert {k for k, line in lines.items() if line["error"] is None} == {"a", "b", "c"}
    assert lines["slow"]["error"] == {"code": "timeout", "message": MAX_TIME_LINE.removeprefix("anyfast: error: ")}
    assert sum(1 for r in gateway.requests if r.body["messages"][-1]["content"] == "slow") == 1
    assert elapsed < DRIP_SECONDS / 3


@pytest.mark.parametrize(
    "reply", [dripped_head(JSON_HEAD, WHOLE_BODY), Drip(WHOLE_BODY, head=JSON_HEAD, delay=0.1)], ids=["headers", "body"]
)
def test_a_batch_record_dripping_at_any_stage_fails_at_max_time(run, gateway, tmp_path, behave, reply):
    behave(lambda prompt: reply if prompt == "slow" else None)
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"id": name, "prompt": name}) + "\n" for name in ["a", "slow"]))
    result, elapsed = timed(run, "batch", data, "--max-time", MAX_TIME, "--retries", "3", "-j", "2")
    assert result.exit_code == ExitCode.BATCH_PARTIAL, result.stderr
    lines = {line["custom_id"]: line for line in parse_lines(result.stdout)}
    assert lines["a"]["error"] is None
    assert lines["slow"]["error"] == {"code": "timeout", "message": MAX_TIME_LINE.removeprefix("anyfast: error: ")}
    assert elapsed < 3


def test_a_batch_whose_first_outcome_is_max_time_goes_on(run, gateway, tmp_path, behave):
    # --max-time is the record's, not a sign that the server is down (issue 15; test_batch_slow.py)
    behave(lambda prompt: drip_bytes())
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(f"p{i}") + "\n" for i in range(3)))
    result = run("batch", data, "--max-time", MAX_TIME, "-j", "1")
    assert result.exit_code == ExitCode.BATCH_PARTIAL
    assert [line["error"]["code"] for line in parse_lines(result.stdout)] == ["timeout"] * 3


def test_a_rate_limited_record_does_not_wait_past_max_time(run, gateway, tmp_path, behave):
    behave(
        lambda prompt: (
            Json(error_body("slow down"), status=429, headers={"Retry-After": "20"}) if prompt == "limited" else None
        )
    )
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"id": name, "prompt": name}) + "\n" for name in ["a", "limited"]))
    result = run("batch", data, "--max-time", "3", "-j", "1")
    assert result.exit_code == ExitCode.BATCH_PARTIAL, result.stderr
    lines = {line["custom_id"]: line for line in parse_lines(result.stdout)}
    assert lines["limited"]["error"]["message"].endswith("(not retried: --max-time 3 s would run out first)")
    assert lines["a"]["error"] is None
