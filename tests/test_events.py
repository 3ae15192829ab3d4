"""--events (§3 "Events"): NDJSON on stdout for a supervising program. Every run here goes
through the `cli` fixture or parse_events, which validate each line against the shipped
schema and check that `start` comes first and exactly one `result` last."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gateway import Json, Reset, Sse, Stall, chunk, completion, error_body, hidden_cut, sse_events
from helpers import KEY, ROOT, WAIT, parse_events, spawn_cli, whole_lines


def kinds(events) -> list[str]:
    return [event["event"] for event in events]


def text_of(events, kind="content", choice=0) -> str:
    return "".join(e["delta"] for e in events if e["event"] == kind and e["choice"] == choice)


# --- the stream of a good answer ------------------------------------------------------------------


def test_a_streamed_answer_is_start_reasoning_content_result(run, gateway, tmp_path):
    log = tmp_path / "usage.jsonl"
    result = run("complete", "--events", "--usage-log", log, "hello")
    assert result.exit_code == 0, result.stderr
    events = result.events
    assert events[0] == {"v": 1, "event": "start", "model": "doubao-seed-1-6-vision-250815", "attempt": 1}
    assert kinds(events)[1] == "reasoning" and text_of(events, "reasoning") == "thinking about it"
    assert text_of(events) == "echo: hello"
    final = events[-1]
    # the usage log's own line, plus the outcome: one object read by both
    logged = whole_lines(log)
    assert len(logged) == 1
    assert {k: v for k, v in final.items() if k not in ("v", "event", "finish_reason", "error")} == logged[0]
    assert final["status"] == "ok" and final["exit"] == 0 and final["error"] is None
    assert final["finish_reason"] == "stop" and final["total_tokens"] > 0  # usage is asked for
    assert result.stderr == ""


def test_a_whole_answer_gives_one_content_event(run, gateway):
    result = run("complete", "--events", "--no-stream", "-m", "m", "hello")
    assert result.exit_code == 0
    assert kinds(result.events) == ["start", "content", "result"]
    assert text_of(result.events) == "echo: hello"


def test_every_choice_has_its_content(run, gateway):
    pieces = [
        {"choices": [{"index": 0, "delta": {"content": "a"}}, {"index": 1, "delta": {"content": "b"}}]},
        {"choices": [{"index": 1, "delta": {"content": "B"}, "finish_reason": "stop"}]},
        chunk(finish="stop"),
    ]
    gateway.script(Sse(sse_events(*pieces)))
    result = run("complete", "--events", "-p", "n=2", "two")
    assert result.exit_code == 0
    assert text_of(result.events, choice=0) == "a" and text_of(result.events, choice=1) == "bB"


def test_tool_calls_are_whole_events_and_exit_8(run, gateway, tmp_path):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([{"name": "weather", "parameters": {"type": "object"}}]))
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"ci'}}
    more = {"index": 0, "function": {"arguments": 'ty":"Oslo"}'}}
    gateway.script(
        Sse(
            sse_events(
                {"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]},
                {"choices": [{"index": 0, "delta": {"tool_calls": [more]}}]},
                {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
            )
        )
    )
    result = run("complete", "--events", "--tools", tools, "weather?")
    assert result.exit_code == 8, result.stderr
    calls = [e for e in result.events if e["event"] == "tool_call"]
    assert calls == [
        {
            "v": 1,
            "event": "tool_call",
            "choice": 0,
            "call": {
                "id": "call_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
            },
        }
    ]
    assert result.events[-1]["exit"] == 8 and result.events[-1]["finish_reason"] == "tool_calls"


def test_schema_answers_carry_parsed(run, gateway):
    gateway.script(Json(completion('{"name": "Ada"}')))
    result = run("complete", "--events", "--schema", "name", "who?")
    assert result.exit_code == 0, result.stderr
    assert result.events[-1]["parsed"] == {"name": "Ada"}
    assert text_of(result.events) == '{"name": "Ada"}'


def test_a_schema_mismatch_counts_the_repair_and_ends_in_exit_7(run, gateway):
    gateway.script(Json(completion("not json")), Json(completion("still not")))
    result = run("complete", "--events", "--schema", "name", "who?")
    assert result.exit_code == 7
    final = result.events[-1]
    assert kinds(result.events).count("start") == 2 and final["attempts"] == 2
    assert final["exit"] == 7 and final["error"]["code"] == "invalid_json" and final["parsed"] is None


def test_the_key_is_masked_even_when_streamed_in_pieces(run, gateway):
    gateway.script(
        Sse(sse_events(chunk("key: " + KEY[:6]), chunk(KEY[6:14]), chunk(KEY[14:] + "!"), chunk(finish="stop")))
    )
    result = run("complete", "--events", "echo it")
    assert result.exit_code == 0
    assert KEY not in result.stdout and KEY[6:14] not in result.stdout
    assert text_of(result.events) == "key: ***!"


def test_markdown_never_applies_to_events(run, gateway):
    gateway.script(Sse(sse_events(chunk("# Title\n\n**bold**"), chunk(finish="stop"))))
    result = run("complete", "--events", "--markdown", "md")
    assert text_of(result.events) == "# Title\n\n**bold**" and "\x1b" not in result.stdout


# --- retries, warnings and failures: one result, always last ---------------------------------------


def test_a_retry_is_an_event_with_its_status_wait_and_reason(run, gateway, quick_backoff):
    gateway.script(Json(error_body("overloaded", "server_error"), status=503))
    result = run("complete", "--events", "hi")
    assert result.exit_code == 0
    retry = next(e for e in result.events if e["event"] == "retry")
    assert retry["status"] == 503 and retry["failure"] is None and retry["attempt"] == 1
    assert retry["wait_s"] >= 0 and "overloaded" in retry["reason"]
    assert kinds(result.events)[:2] == ["start", "retry"] and result.events[-1]["attempts"] == 2


def test_a_network_retry_names_the_failure(run, gateway, quick_backoff):
    gateway.script(Reset())
    result = run("complete", "--events", "hi")
    assert result.exit_code == 0
    retry = next(e for e in result.events if e["event"] == "retry")
    assert retry["status"] is None and retry["failure"] == "closed"


def test_the_verbose_line_and_the_event_are_one_retry(run, gateway, quick_backoff):
    gateway.script(Json(error_body("overloaded", "server_error"), status=503))
    result = run("complete", "--events", "-v", "hi")
    assert "retry 1 of 2" in result.stderr  # the same Retry, told in prose
    assert kinds(result.events).count("retry") == 1


def test_a_warning_is_an_event_too(run, gateway):
    gateway.script(hidden_cut("half an ans"))
    result = run("complete", "--events", "hi")
    assert result.exit_code == 0
    warning = next(e for e in result.events if e["event"] == "warning")
    assert "without a finish_reason" in warning["message"] and warning["message"] in result.stderr
    assert result.events[-1]["finish_reason"] is None


@pytest.mark.parametrize(
    ("reply", "status", "code"),
    [
        (Json(error_body("bad", "invalid_request_error"), status=400), 1, "invalid_request_error"),
        (Json(error_body("no", "authentication_error"), status=401), 3, "authentication_error"),
        (Json(status=429, raw=b"", headers={"Content-Type": None}), 5, "http_429"),
        (Json(error_body("down", "server_error"), status=500), 1, "server_error"),
        (Sse(sse_events(chunk("cut sh"), done=False), cut=True), 1, "stream_error"),
    ],
    ids=["400", "401", "429", "500", "broken-stream"],
)
def test_every_failure_ends_in_one_result_with_the_exit_status(run, gateway, reply, status, code):
    gateway.script(*[reply] * 3)
    result = run("complete", "--events", "--retries", "0", "hi")
    assert result.exit_code == status, result.stderr
    final = result.events[-1]
    assert final["exit"] == status and final["status"] != "ok"
    assert final["error"]["message"] and final["error"]["code"]


def test_a_budget_reached_before_sending_still_starts_and_ends(run, gateway, tmp_path):
    result = run("complete", "--events", "--budget-tokens", "0", "hi")
    assert result.exit_code == 9
    assert kinds(result.events) == ["start", "result"]
    assert result.events[-1]["attempts"] == 0 and result.events[-1]["error"]["code"] == "budget"
    assert gateway.requests == []


def test_no_key_still_ends_in_a_result(run, gateway):
    result = run("complete", "--events", "hi", key=None)
    assert result.exit_code == 3 and result.events[-1]["exit"] == 3


@pytest.mark.parametrize("other", ["--json", "--dry-run"])
def test_events_with_json_or_dry_run_is_a_usage_error(run, gateway, other):
    result = run("complete", "--events", other, "hi")
    assert result.exit_code == 2 and result.stdout == ""
    assert "--events and " + other in result.stderr and "internal error" not in result.stderr


def test_chat_writes_events_and_saves(run, gateway, tmp_path):
    saved = tmp_path / "talk.yaml"
    result = run("chat", "--events", "--save", saved, "-m", "m", "hello")
    assert result.exit_code == 0
    assert text_of(result.events) == "echo: hello" and result.events[-1]["command"] == "chat"
    assert "echo: hello" in saved.read_text()


# --- the schema ----------------------------------------------------------------------------------


def test_schema_events_prints_the_shipped_schema(cli):
    result = cli("schema", "--events")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == json.loads((ROOT / "anyfast_cli" / "events.schema.json").read_text())


def test_schema_events_takes_no_spec(cli):
    result = cli("schema", "--events", "name")
    assert result.exit_code == 2 and "no SPEC" in result.stderr


def test_the_schema_rejects_lines_that_drift():
    """The validation the suite relies on can fail: a field too many, a result not last."""
    good = '{"v":1,"event":"start","model":"m","attempt":1}\n'
    with pytest.raises(AssertionError):
        parse_events(good + '{"v":1,"event":"content","delta":"x","choice":0,"extra":1}\n')
    with pytest.raises(AssertionError):
        parse_events(good)  # no result


# --- signals: a real process, the result still last -------------------------------------------------


@pytest.mark.parametrize(
    ("signum", "status", "code"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_signal_mid_answer_ends_with_one_result(proc_env, gateway, signum, status, code):
    # the first words, then keep-alive comments 0.1 s apart for as long as the test may take
    gateway.script(Sse(sse_events(chunk("first words"), done=False) + [b": keep-alive\n\n"] * (WAIT * 10), delay=0.1))
    process = spawn_cli(proc_env, "complete", "--events", "hi")
    try:
        started = time.monotonic()
        first = process.stdout.readline()
        assert json.loads(first)["event"] == "start"
        while '"content"' not in process.stdout.readline():
            assert time.monotonic() - started < WAIT
        process.send_signal(signum)
        rest, stderr = process.communicate(timeout=WAIT)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == status, stderr
    events = parse_events(first + '{"v":1,"event":"content","delta":"x","choice":0}\n' + rest)
    final = events[-1]
    assert final["exit"] == status and final["status"] == code and final["error"]["code"] == code


def test_a_signal_while_waiting_for_the_server_ends_with_one_result(proc_env, gateway):
    gateway.script(Stall(WAIT))
    process = spawn_cli(proc_env, "complete", "--events", "hi")
    try:
        first = process.stdout.readline()
        process.send_signal(signal.SIGTERM)
        rest, stderr = process.communicate(timeout=WAIT)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == 143, stderr
    assert kinds(parse_events(first + rest)) == ["start", "result"]


@pytest.mark.skipif(shutil.which("jq") is None, reason="the README's supervisor needs jq")
def test_the_readme_supervisor_reacts_to_retry_and_result(proc_env, gateway, tmp_path, quick_backoff):
    text = (ROOT / "README.md").read_text()
    script = tmp_path / "supervise.sh"
    script.write_text(text[text.index("#!/bin/sh") : text.index("\ndone\n", text.index("#!/bin/sh")) + 6])
    gateway.script(Json(error_body("overloaded", "server_error"), status=503))
    env = {**proc_env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{proc_env['PATH']}"}
    done = subprocess.run(["sh", script, "hello"], env=env, capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0 and done.stdout == "echo: hello\n", done.stderr
    assert "retry after 503" in done.stderr and "ok after 2 attempt(s)" in done.stderr
    gateway.served = ["m"]
    done = subprocess.run(["sh", script, "-m", "x", "hello"], env=env, capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 1 and "x: model_not_found" in done.stderr  # anyfast's own status


def test_events_with_an_output_file_is_a_usage_error(run, gateway, tmp_path):
    target = tmp_path / "out.txt"
    result = run("complete", "--events", "-o", target, "hi")
    assert result.exit_code == 2 and result.stdout == "" and not target.exists()
    assert "--events and -o" in result.stderr and gateway.requests == []


def test_a_cache_hit_tells_the_events_of_a_fresh_answer(run, gateway, tmp_path):
    cache = tmp_path / "cache"
    fresh = run("complete", "--events", "--cache", cache, "hello")
    hit = run("complete", "--events", "--cache", cache, "hello")
    assert fresh.exit_code == hit.exit_code == 0 and len(gateway.requests) == 1
    assert kinds(hit.events)[0] == "start" and text_of(hit.events) == text_of(fresh.events) == "echo: hello"
    assert fresh.events[-1]["cache"] == "miss" and hit.events[-1]["cache"] == "hit"
    assert hit.events[-1]["attempts"] == 1 and hit.events[-1]["total_tokens"] == 0


def test_a_fallbacks_answer_is_cached_under_the_first_request(run, gateway, tmp_path):
    gateway.served = ["m"]
    cache = tmp_path / "cache"
    first = run("complete", "--cache", cache, "-m", "x", "--fallback", "m", "hello")
    again = run("complete", "--cache", cache, "--cache-mode", "replay", "-m", "x", "--fallback", "m", "hello")
    assert first.exit_code == again.exit_code == 0 and again.stdout == first.stdout == "echo: hello\n"
    assert len(gateway.requests) == 2  # x, then m; the replay sent nothing
