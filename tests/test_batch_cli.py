"""`anyfast batch` end to end through the Typer app, against the loopback gateway.

Per-record server behaviour (a slow record, one that fails, one that gets a 429)
comes from `behave`, which wraps the gateway's default reply for the test's duration.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import threading
import time

import pytest
from gateway import Json, Reset, Stall, error_body
from helpers import KEY, closed_port, parse_lines, whole_lines
from typer.testing import CliRunner

from anyfast_cli.batch.jobs import JobOptions, parse_record
from anyfast_cli.cli import app
from anyfast_cli.errors import ExitCode
from anyfast_cli.settings import DEFAULT_MODEL

# --- helpers --------------------------------------------------------------------------------


def invoke(*args, input=None):
    return CliRunner().invoke(app, ["batch", *map(str, args)], input=input)


class Raw(str):
    """A line written as it is (a str item of jsonl is written as a JSON string)."""


def jsonl(*items) -> str:
    return "".join((item if isinstance(item, Raw) else json.dumps(item, ensure_ascii=False)) + "\n" for item in items)


def write_input(tmp_path, *items, name="in.jsonl"):
    path = tmp_path / name
    path.write_text(jsonl(*items))
    return path


def prompt_of(request) -> str:
    for message in reversed((request.body or {}).get("messages", [])):
        if message.get("role") == "user":
            return message["content"] if isinstance(message["content"], str) else json.dumps(message["content"])
    return ""


def prompts_sent(gateway) -> list[str]:
    return [prompt_of(r) for r in gateway.requests]


def answer_text(line: dict) -> str:
    return line["response"]["body"]["choices"][0]["message"]["content"]


def summary_of(stderr: str) -> str:
    lines = [l for l in stderr.splitlines() if l.startswith("anyfast: batch:")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def behave(gateway, monkeypatch):
    """behave(fn): fn(prompt, attempt) -> None (the default echo), a number (sleep that
    long, then echo), or a scripted reply (Json, Reset, ...); fn may be a coroutine
    function. `attempt` counts earlier requests with the same prompt."""
    original = gateway._default_reply
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def install(fn):
        async def reply(request):
            prompt = prompt_of(request)
            with lock:
                attempt = seen.get(prompt, 0)
                seen[prompt] = attempt + 1
            result = fn(prompt, attempt)
            if inspect.isawaitable(result):
                result = await result
            if isinstance(result, (int, float)) and not isinstance(result, bool):
                await asyncio.sleep(result)
                result = None
            return result if result is not None else await original(request)

        monkeypatch.setattr(gateway, "_default_reply", reply)

    return install


# --- input forms and settings -----------------------------------------------------------------


def test_every_input_form_and_record_overrides(env, gateway, tmp_path):
    path = write_input(
        tmp_path,
        "a plain prompt",
        {"prompt": "with system", "system": "be terse", "temperature": 1.5},
        {"messages": [{"role": "user", "content": "from messages"}], "id": "m1"},
        {
            "custom_id": "oa",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "glm-4-7-251222",
                "messages": [{"role": "user", "content": "openai form"}],
                "temperature": 0.9,
            },
        },
    )
    result = invoke(path, "-t", "0.2", "--max-tokens", "64", "-j", "1")
    assert result.exit_code == 0, result.stderr
    bodies = {prompt_of(r): r.body for r in gateway.requests}
    assert set(bodies) == {"a plain prompt", "with system", "from messages", "openai form"}
    assert bodies["a plain prompt"]["temperature"] == 0.2  # the flag, as a default
    assert bodies["with system"]["temperature"] == 1.5  # the record's own field wins over -t
    assert bodies["with system"]["messages"][0] == {"role": "system", "content": "be terse"}
    assert bodies["openai form"]["temperature"] == 0.9
    assert bodies["openai form"]["model"] == "glm-4-7-251222"
    assert all(b["max_tokens"] == 64 and b["stream"] is False for b in bodies.values())
    ids = {line["custom_id"]: answer_text(line) for line in parse_lines(result.stdout)}
    assert ids == {
        "1": "echo: a plain prompt",
        "2": "echo: with system",
        "m1": "echo: from messages",
        "oa": "echo: openai form",
    }


@pytest.mark.parametrize("args", [[], ["-"]])
def test_reads_stdin_when_no_file_or_dash(env, gateway, args):
    result = invoke(*args, input=jsonl("one", "two", Raw(""), "three"))
    assert result.exit_code == 0, result.stderr
    lines = parse_lines(result.stdout)
    assert sorted(l["custom_id"] for l in lines) == ["1", "2", "4"]  # ids are line numbers
    assert sorted(prompts_sent(gateway)) == ["one", "three", "two"]


def test_lines_mode_reads_plain_text(env, gateway):
    result = invoke("--lines", input='alpha\n\n{"prompt": "not parsed"}\n')
    assert result.exit_code == 0, result.stderr
    assert sorted(prompts_sent(gateway)) == ["alpha", '{"prompt": "not parsed"}']
    assert sorted(l["custom_id"] for l in parse_lines(result.stdout)) == ["1", "3"]


def test_lines_with_template_uses_text(env, gateway):
    result = invoke("--lines", "--template", "Summarise: {text}", input="first\nsecond\n")
    assert result.exit_code == 0, result.stderr
    assert sorted(prompts_sent(gateway)) == ["Summarise: first", "Summarise: second"]


def test_template_wins_over_prompt_key(env, gateway):
    result = invoke(
        "--template", "Review of {name}: {stars} stars", input=jsonl({"name": "Ada", "stars": 5, "prompt": "IGNORED"})
    )
    assert result.exit_code == 0, result.stderr
    assert prompts_sent(gateway) == ["Review of Ada: 5 stars"]


def test_system_flag_goes_to_records_without_one(env, gateway):
    result = invoke("-s", "FLAG", "-j", "1", input=jsonl({"prompt": "x"}, {"prompt": "y", "system": "OWN"}))
    assert result.exit_code == 0, result.stderr
    systems = {prompt_of(r): r.body["messages"][0]["content"] for r in gateway.requests}
    assert systems == {"x": "FLAG", "y": "OWN"}


def test_param_flag_and_model_flag_are_defaults(env, gateway):
    result = invoke(
        "-m",
        "glm-4-7-251222",
        "-p",
        "seed=7",
        input=jsonl("x", {"prompt": "y", "seed": 1, "model": "doubao-seed-2.0-pro"}),
    )
    assert result.exit_code == 0, result.stderr
    bodies = {prompt_of(r): r.body for r in gateway.requests}
    assert (bodies["x"]["model"], bodies["x"]["seed"]) == ("glm-4-7-251222", 7)
    assert (bodies["y"]["model"], bodies["y"]["seed"]) == ("doubao-seed-2.0-pro", 1)


# --- validation before anything is sent -----------------------------------------------------


def test_one_bad_line_at_the_end_sends_nothing(env, gateway, tmp_path):
    path = write_input(tmp_path, *[f"p{i}" for i in range(10)], Raw("{broken"))
    result = invoke(path)
    assert result.exit_code == 2
    assert gateway.requests == []
    assert result.stdout == ""
    errors = [l for l in result.stderr.splitlines() if l.startswith("anyfast: error:")]
    assert errors[0].startswith("anyfast: error: line 11:")
    assert "nothing was sent" in errors[-1]


def test_every_bad_line_and_duplicate_reported_with_line_numbers(env, gateway, tmp_path):
    path = write_input(
        tmp_path,
        {"id": "a", "prompt": "ok"},  # 1
        Raw("[1, 2]"),  # 2 not a record
        {"id": "a", "prompt": "again"},  # 3 duplicate of line 1
        {"prompt": "hot", "temperature": 5},  # 4 out of range
        {"text": "no prompt"},  # 5
        {"id": "b", "prompt": "ok"},  # 6
    )
    result = invoke(path)
    assert result.exit_code == 2
    assert gateway.requests == []
    numbered = re.findall(r"^anyfast: error: line (\d+): (.*)$", result.stderr, re.M)
    assert [int(n) for n, _ in numbered] == [2, 3, 4, 5]
    assert "duplicate" in numbered[1][1] and "line 1" in numbered[1][1]
    assert "temperature" in numbered[2][1]
    assert "4 invalid" in result.stderr


def test_first_twenty_errors_then_a_count(env, gateway, tmp_path):
    path = write_input(tmp_path, "fine", *[Raw("{bad")] * 25)
    result = invoke(path)
    assert result.exit_code == 2
    assert gateway.requests == []
    lines = result.stderr.splitlines()
    numbered = [l for l in lines if re.match(r"anyfast: error: line \d+:", l)]
    assert len(numbered) == 20
    assert numbered[0].startswith("anyfast: error: line 2:") and numbered[-1].startswith("anyfast: error: line 21:")
    tail = [l for l in lines if l not in numbered and l.startswith("anyfast: error:")]
    assert len(tail) == 1 and "25" in tail[0] and "5 more" in tail[0]


def test_invalid_input_leaves_an_existing_output_file_alone(env, gateway, tmp_path):
    path = write_input(tmp_path, "ok", Raw("{bad"))
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    result = invoke(path, "-o", out)
    assert result.exit_code == 2
    assert out.read_text() == "precious\n"


def test_invalid_input_is_reported_even_without_a_key(clean_env, gateway, tmp_path):
    result = invoke(write_input(tmp_path, Raw("{bad")))
    assert result.exit_code == 2
    assert "line 1" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--template", "no fields"],
        ["-j", "0"],
        ["--rpm", "0"],
        ["--tpm", "-5"],
        ["--resume"],  # needs -o
        ["-t", "3"],
        ["--shard", "0/2"],
    ],
)
def test_bad_flags_exit_2_and_send_nothing(env, gateway, tmp_path, args):
    result = invoke(write_input(tmp_path, "x"), *args)
    assert result.exit_code == 2, result.stderr
    assert gateway.requests == []
    assert result.stderr.startswith("anyfast: error:")


def test_output_onto_the_input_is_refused(env, gateway, tmp_path):
    path = write_input(tmp_path, "x", "y")
    before = path.read_bytes()
    result = invoke(path, "-o", path)
    assert result.exit_code == 2
    assert path.read_bytes() == before
    assert gateway.requests == []


@pytest.mark.parametrize("where", ["missing-dir/out.jsonl", "."])
@pytest.mark.parametrize("resume", [[], ["--resume"]])
def test_unwritable_output_is_a_usage_error(env, gateway, tmp_path, where, resume):
    result = invoke(write_input(tmp_path, "x"), "-o", tmp_path / where, *resume)
    assert result.exit_code == 2, result.stderr
    assert gateway.requests == []
    assert result.stderr.startswith("anyfast: error: cannot ")
    assert "internal error" not in result.stderr


def test_unreadable_input_file(env, gateway, tmp_path):
    result = invoke(tmp_path / "missing.jsonl")
    assert result.exit_code == 2
    assert "missing.jsonl" in result.stderr


def test_empty_input_is_fine(env, gateway):
    result = invoke(input="")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "0 ok, 0 failed" in summary_of(result.stderr)


# --- output form ------------------------------------------------------------------------------


def test_answered_line_is_the_openai_batch_output_form(env, gateway, tmp_path):
    out = tmp_path / "out.jsonl"
    result = invoke("-o", out, input=jsonl({"custom_id": "q1", "prompt": "hello"}))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    [line] = whole_lines(out)
    assert set(line) == {"id", "custom_id", "response", "error"}
    assert line["custom_id"] == "q1"
    assert line["error"] is None
    assert set(line["response"]) == {"status_code", "request_id", "body"}
    assert line["response"]["status_code"] == 200
    assert re.fullmatch(r"req-\d+", line["response"]["request_id"])  # the gateway's x-request-id
    assert line["response"]["body"]["object"] == "chat.completion"
    assert answer_text(line) == "echo: hello"
    assert isinstance(line["id"], str) and line["id"]


def test_failed_record_carries_error_and_last_response(env, gateway, behave):
    behave(
        lambda prompt, n: (
            Json(error_body("bad thing", "invalid_request_error", "bad_param"), status=400) if prompt == "no" else None
        )
    )
    result = invoke("--retries", "0", input=jsonl({"id": "y", "prompt": "yes"}, {"id": "n", "prompt": "no"}))
    assert result.exit_code == 6
    lines = {l["custom_id"]: l for l in parse_lines(result.stdout)}
    assert lines["y"]["error"] is None
    failed = lines["n"]
    assert set(failed) == {"id", "custom_id", "response", "error"}
    assert failed["error"]["code"] == "bad_param"
    assert "bad thing" in failed["error"]["message"]
    assert failed["response"]["status_code"] == 400
    assert failed["response"]["body"] == error_body("bad thing", "invalid_request_error", "bad_param")
    assert prompts_sent(gateway).count("no") == 1  # a 400 is not retried


def test_network_failure_after_answers_gives_an_error_line_with_null_response(env, gateway, behave):
    behave(lambda prompt, n: Reset() if prompt == "cut" else None)
    result = invoke(
        "-j",
        "1",
        "--retries",
        "0",
        input=jsonl({"id": "a", "prompt": "ok"}, {"id": "b", "prompt": "cut"}, {"id": "c", "prompt": "ok2"}),
    )
    assert result.exit_code == 6, result.stderr
    lines = {l["custom_id"]: l for l in parse_lines(result.stdout)}
    assert lines["b"]["response"] is None
    assert lines["b"]["error"]["code"] == "network_error"
    assert lines["a"]["error"] is None and lines["c"]["error"] is None


def test_timeout_after_answers_is_a_failed_record(env, gateway, behave):
    behave(lambda prompt, n: Stall(2.0) if prompt == "hang" else None)
    result = invoke("-j", "1", "--retries", "0", "--timeout", "0.3", input=jsonl("ok", "hang", "ok too"))
    assert result.exit_code == 6, result.stderr
    lines = {l["custom_id"]: l for l in parse_lines(result.stdout)}
    assert lines["2"]["error"]["code"] == "timeout"
    assert lines["2"]["response"] is None
    assert lines["1"]["error"] is None and lines["3"]["error"] is None


def test_error_inside_a_200_is_a_failed_record(env, gateway, behave):
    behave(
        lambda prompt, n: (
            Json({"error": {"message": "model overloaded", "code": "overloaded"}}) if prompt == "x" else None
        )
    )
    result = invoke("--retries", "0", input=jsonl("x", "y"))
    assert result.exit_code == 6
    lines = {l["custom_id"]: l for l in parse_lines(result.stdout)}
    assert lines["1"]["error"]["code"] == "overloaded"
    assert lines["1"]["response"]["status_code"] == 200
    assert lines["2"]["error"] is None


@pytest.mark.parametrize("raw", [b"null", b"[1, 2]", b'"text"', b"<html>busy</html>"])
def test_a_200_that_is_not_an_answer_is_a_failed_record(env, gateway, behave, raw):
    behave(lambda prompt, n: Json(raw=raw) if prompt == "x" else None)
    result = invoke("--retries", "0", "-j", "1", input=jsonl("x", "y"))
    assert result.exit_code == 6, result.stderr
    lines = {l["custom_id"]: l for l in parse_lines(result.stdout)}
    assert lines["1"]["error"]["code"] == "invalid_response"
    assert lines["1"]["response"]["status_code"] == 200
    assert lines["2"]["error"] is None
    assert "1 ok, 1 failed" in summary_of(result.stderr)


def test_every_line_is_whole_json_with_unicode(env, gateway):
    prompts = [f'prompt {i} 日本語 ü " \\ \t' for i in range(30)]
    result = invoke("-j", "8", input=jsonl(*prompts))
    assert result.exit_code == 0, result.stderr
    lines = parse_lines(result.stdout)
    assert len(lines) == 30
    assert sorted(answer_text(l) for l in lines) == sorted(f"echo: {p}" for p in prompts)


# --- order ----------------------------------------------------------------------------------


def test_completion_order_by_default(env, gateway, behave):
    behave(lambda prompt, n: 0.3 if prompt == "slow" else None)
    result = invoke("-j", "4", input=jsonl("slow", "f1", "f2", "f3"))
    assert result.exit_code == 0, result.stderr
    ids = [l["custom_id"] for l in parse_lines(result.stdout)]
    assert sorted(ids) == ["1", "2", "3", "4"]
    assert ids[-1] == "1"  # the slow first record finished last and was written last


def test_ordered_keeps_input_order(env, gateway, behave):
    behave(lambda prompt, n: 0.3 if prompt == "slow" else (0.1 if prompt == "f2" else None))
    result = invoke("-j", "4", "--ordered", input=jsonl("slow", "f1", "f2", "f3", "f4", "f5"))
    assert result.exit_code == 0, result.stderr
    assert [l["custom_id"] for l in parse_lines(result.stdout)] == ["1", "2", "3", "4", "5", "6"]


def test_ordered_with_failures_and_retries_keeps_input_order(env, gateway, behave):
    # the first records fail once and are retried 0.2 s later, so they finish after the others
    failure = Json(error_body("oops", "server_error"), status=500, headers={"Retry-After": "0.2"})
    behave(lambda prompt, n: failure if prompt in ("a", "b") and n == 0 else None)
    result = invoke("-j", "4", "--ordered", "--retries", "1", input=jsonl("a", "b", "c", "d"))
    assert result.exit_code == 0, result.stderr
    assert [l["custom_id"] for l in parse_lines(result.stdout)] == ["1", "2", "3", "4"]


def test_ordered_does_not_run_unboundedly_ahead(env, gateway, behave):
    """--ordered holds results back, so work may only run a bounded distance ahead (flat memory)."""
    slow_done = []

    async def fn(prompt, n):
        if prompt == "slow":
            await asyncio.sleep(0.3)  # unbounded, all 150 others would be sent by then
            slow_done.append(time.monotonic())
        return None

    behave(fn)
    result = invoke("-j", "2", "--ordered", "-o", "/dev/null", input=jsonl("slow", *[f"p{i}" for i in range(150)]))
    assert result.exit_code == 0, result.stderr
    ahead = [r for r in gateway.requests if r.at < slow_done[0] and prompt_of(r) != "slow"]
    assert 0 < len(ahead) <= 40


# --- resume ---------------------------------------------------------------------------------


def fingerprint_of(item, line_no: int) -> str:
    """The fingerprint anyfast gives this input line's request with default settings."""
    return parse_record(jsonl(item).encode(), line_no, line_no - 1, JobOptions(model=DEFAULT_MODEL)).fingerprint


def ok_line(record_id: str, text: str, fingerprint: str = "stale") -> str:
    return (
        json.dumps(
            {
                "id": f"batch_req_{fingerprint}",
                "custom_id": record_id,
                "response": {
                    "status_code": 200,
                    "request_id": "old",
                    "body": {"choices": [{"message": {"content": text}}]},
                },
                "error": None,
            },
            separators=(",", ":"),
        )
        + "\n"
    )


def test_resume_repairs_keeps_answered_and_runs_the_rest(env, gateway, tmp_path):
    path = write_input(tmp_path, *({"id": k, "prompt": f"prompt {k}"} for k in "abcde"))
    out = tmp_path / "out.jsonl"
    failed = (
        json.dumps({"id": "x", "custom_id": "b", "response": None, "error": {"code": "network_error", "message": "m"}})
        + "\n"
    )
    kept = ok_line("a", "KEPT", fingerprint_of({"id": "a", "prompt": "prompt a"}, 1))
    out.write_text(kept + failed + ok_line("zzz", "not in the input") + ok_line("a", "dup") + ok_line("c", "torn")[:30])
    result = invoke(path, "-o", out, "--resume", "-j", "1")
    assert result.exit_code == 0, result.stderr
    assert sorted(prompts_sent(gateway)) == ["prompt b", "prompt c", "prompt d", "prompt e"]  # a is not re-sent
    text = out.read_text()
    assert text.startswith(kept)
    lines = parse_lines(text)
    assert sorted(l["custom_id"] for l in lines) == ["a", "b", "c", "d", "e"]
    assert all(l["error"] is None for l in lines)
    assert "already answered" in summary_of(result.stderr)


def test_resume_after_failures_reruns_only_the_failed(env, gateway, tmp_path, behave):
    failing = {"on": True}
    behave(
        lambda prompt, n: (
            Json(error_body("down", "server_error"), status=503) if failing["on"] and prompt == "p3" else None
        )
    )
    path = write_input(tmp_path, *[f"p{i}" for i in range(6)])
    out = tmp_path / "out.jsonl"
    first = invoke(path, "-o", out, "--retries", "0")
    assert first.exit_code == 6
    assert len(whole_lines(out)) == 6
    failing["on"] = False
    gateway.requests.clear()
    second = invoke(path, "-o", out, "--resume", "--retries", "0")
    assert second.exit_code == 0, second.stderr
    assert prompts_sent(gateway) == ["p3"]
    lines = whole_lines(out)
    assert sorted(l["custom_id"] for l in lines) == ["1", "2", "3", "4", "5", "6"]
    assert all(l["error"] is None for l in lines)


def test_resume_with_everything_answered_sends_nothing(env, gateway, tmp_path):
    path = write_input(tmp_path, "x", "y")
    out = tmp_path / "out.jsonl"
    answered = ok_line("1", "one", fingerprint_of("x", 1)) + ok_line("2", "two", fingerprint_of("y", 2))
    out.write_text(answered)
    result = invoke(path, "-o", out, "--resume")
    assert result.exit_code == 0
    assert gateway.requests == []
    assert out.read_text() == answered


def test_resume_reruns_a_record_whose_request_changed(env, gateway, tmp_path):
    out = tmp_path / "out.jsonl"
    assert invoke(write_input(tmp_path, "x", "y"), "-o", out).exit_code == 0
    gateway.requests.clear()
    result = invoke(write_input(tmp_path, "x", "y edited"), "-o", out, "--resume")  # line 2 keeps id "2"
    assert result.exit_code == 0, result.stderr
    assert prompts_sent(gateway) == ["y edited"]
    assert sorted(answer_text(l) for l in whole_lines(out)) == ["echo: x", "echo: y edited"]


def test_resume_refuses_a_file_that_is_not_batch_output(env, gateway, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("important 1\nimportant 2\n")
    result = invoke(write_input(tmp_path, "x"), "-o", notes, "--resume")
    assert result.exit_code == 2
    assert "does not look like anyfast batch output" in result.stderr
    assert notes.read_text() == "important 1\nimportant 2\n"
    assert gateway.requests == []


def test_resume_without_an_existing_file_starts_fresh(env, gateway, tmp_path):
    out = tmp_path / "new.jsonl"
    result = invoke(write_input(tmp_path, "x", "y"), "-o", out, "--resume")
    assert result.exit_code == 0, result.stderr
    assert sorted(l["custom_id"] for l in whole_lines(out)) == ["1", "2"]


def test_without_resume_the_output_file_is_replaced(env, gateway, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text(ok_line("1", "stale") + ok_line("9", "other"))
    result = invoke(write_input(tmp_path, "x"), "-o", out)
    assert result.exit_code == 0
    lines = whole_lines(out)
    assert [l["custom_id"] for l in lines] == ["1"]
    assert answer_text(lines[0]) == "echo: x"


def test_resume_with_shard_runs_only_its_missing_records(env, gateway, tmp_path):
    path = write_input(tmp_path, *[f"p{i}" for i in range(6)])
    out = tmp_path / "part.jsonl"
    out.write_text(
        ok_line("1", "shard 1 line", fingerprint_of("p0", 1)) + ok_line("2", "mine", fingerprint_of("p1", 2))
    )
    result = invoke(path, "-o", out, "--resume", "--shard", "2/2")  # indexes 1, 3, 5 -> ids 2, 4, 6
    assert result.exit_code == 0, result.stderr
    assert sorted(prompts_sent(gateway)) == ["p3", "p5"]
    mine = [l["custom_id"] for l in whole_lines(out) if l["custom_id"] in ("2", "4", "6")]
    assert sorted(mine) == ["2", "4", "6"]


# --- limits -----------------------------------------------------------------------------------


@pytest.mark.parametrize("j", [1, 3])
def test_concurrency_never_exceeds_j(env, gateway, behave, j):
    state = {"active": 0, "most": 0}

    async def fn(prompt, n):
        state["active"] += 1
        state["most"] = max(state["most"], state["active"])
        try:
            await asyncio.sleep(0.05)
        finally:
            state["active"] -= 1
        return None

    behave(fn)
    result = invoke("-j", j, input=jsonl(*[f"p{i}" for i in range(4 * j + 2)]))
    assert result.exit_code == 0, result.stderr
    assert len(gateway.requests) == 4 * j + 2
    assert state["most"] <= j
    if j > 1:
        assert state["most"] > 1  # the pool really does run requests side by side


def test_rpm_spaces_request_starts(env, gateway):
    result = invoke("-j", "4", "--rpm", "600", input=jsonl(*[f"p{i}" for i in range(5)]))
    assert result.exit_code == 0, result.stderr
    starts = sorted(r.at for r in gateway.requests)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= 0.1 - 0.02  # 600 a minute: one every 0.1 s


def test_429_retry_after_holds_that_record_only_and_uses_no_retries(env, gateway, behave):
    served_429 = []

    wait = 0.5  # what each 429 asks for (retry-after-ms: 500)

    def fn(prompt, n):
        if prompt == "p1" and n < 2:
            served_429.append(time.monotonic())
            return Json(error_body("slow down", "rate_limit_error"), status=429, headers={"retry-after-ms": "500"})
        return 0.05

    behave(fn)
    result = invoke("-j", "2", "--retries", "0", input=jsonl(*[f"p{i}" for i in range(1, 6)]))
    assert result.exit_code == 0, result.stderr  # two 429s with --retries 0: rate limits use no retries
    assert len(parse_lines(result.stdout)) == 5
    p1 = sorted(r.at for r in gateway.requests if prompt_of(r) == "p1")
    assert len(p1) == 3
    assert p1[1] - served_429[0] >= wait - 0.02 and p1[2] - served_429[1] >= wait - 0.02  # never sooner than it said
    others = [r.at - served_429[0] for r in gateway.requests if prompt_of(r) != "p1"]
    assert min(sorted(others)[1:]) < wait  # the rest of the batch was not stopped for p1's wait
    assert "requests answered 429" in summary_of(result.stderr)


@pytest.mark.parametrize(
    "reply, code",
    [
        (Json(error_body("credit gone", "insufficient_quota", "insufficient_quota"), status=429), "insufficient_quota"),
        (Json(error_body("overloaded", "server_error"), status=503), "server_error"),
    ],
    ids=["429 for credit", "503"],
)
def test_an_error_body_is_read_once(env, gateway, monkeypatch, reply, code):
    """The rate limit and the retry decide from the one error status_failure reads."""
    import anyfast_cli.exchange

    reads = []
    original = anyfast_cli.exchange.error_from_response
    monkeypatch.setattr(
        anyfast_cli.exchange,
        "error_from_response",
        lambda *args, **kwargs: reads.append(1) or original(*args, **kwargs),
    )
    gateway.script(reply)
    result = invoke("--retries", "0", input=jsonl("a"))
    assert parse_lines(result.stdout)[0]["error"]["code"] == code
    assert len(reads) == 1


def test_the_summary_reports_the_rate_achieved_under_the_limit(env, gateway, behave):
    """One early 429 sets a pace far above what -j 2 and 0.1 s answers allow (20 a second):
    the summary says what the batch achieved, not the pace it was allowed."""

    def fn(prompt, n):
        if prompt == "p0" and n == 0:
            return Json(error_body("slow down", "rate_limit_error"), status=429, headers={"retry-after-ms": "10"})
        return 0.1

    behave(fn)
    result = invoke("-j", "2", "--no-progress", input=jsonl(*[f"p{i}" for i in range(30)]))
    assert result.exit_code == 0, result.stderr
    settled = re.search(r"settled at ([\d.]+) requests/s", summary_of(result.stderr))
    assert settled and 10 <= float(settled.group(1)) <= 21, result.stderr


def test_a_limit_that_lets_nothing_through_for_long_fails_records_with_exit_5(env, gateway, monkeypatch):
    from anyfast_cli.batch import limiter

    monkeypatch.setattr(limiter, "LIMITED_GIVE_UP", 1.0)
    gateway.script(
        *[Json(error_body("quota used up", "rate_limit_error"), status=429, headers={"Retry-After": "5"})] * 4
    )
    result = invoke("--retries", "0", input=jsonl("a", "b"))
    assert result.exit_code == ExitCode.RATE_LIMITED, result.stderr  # nothing was answered, and the limit is why
    lines = parse_lines(result.stdout)
    assert [line["error"]["code"] for line in lines] == ["rate_limit_error"] * 2
    assert "let nothing through" in lines[0]["error"]["message"]


def test_retries_are_counted_per_record(env, gateway, behave):
    def fn(prompt, n):  # 503s: 429s are rate limits, which use no retries
        if prompt in ("a", "b") and n == 0:
            return Json(error_body("overloaded"), status=503, headers={"Retry-After": "0"})
        if prompt == "always":
            return Json(error_body("overloaded"), status=503, headers={"Retry-After": "0"})
        return None

    behave(fn)
    result = invoke("-j", "1", "--retries", "1", input=jsonl("a", "b", "always", "c"))
    assert result.exit_code == 6, result.stderr
    lines = {l["custom_id"]: l for l in parse_lines(result.stdout)}
    assert [lines[k]["error"] is None for k in "1234"] == [True, True, False, True]
    assert lines["3"]["response"]["status_code"] == 503
    sent = prompts_sent(gateway)
    assert (sent.count("a"), sent.count("b"), sent.count("always"), sent.count("c")) == (2, 2, 2, 1)


@pytest.mark.parametrize("retries", [0, 2])
def test_500_beyond_retries_is_an_error_line_and_exit_6(env, gateway, behave, retries):
    behave(
        lambda prompt, n: (
            Json(error_body("boom", "server_error"), status=500, headers={"Retry-After": "0"})
            if prompt == "bad"
            else None
        )
    )
    result = invoke(
        "--retries",
        retries,
        input=jsonl({"id": "g1", "prompt": "good"}, {"id": "b", "prompt": "bad"}, {"id": "g2", "prompt": "good too"}),
    )
    assert result.exit_code == 6
    assert prompts_sent(gateway).count("bad") == retries + 1
    lines = {l["custom_id"]: l for l in parse_lines(result.stdout)}
    assert set(lines) == {"g1", "b", "g2"}
    assert lines["b"]["error"]["code"] == "server_error"
    assert "boom" in lines["b"]["error"]["message"]
    assert lines["b"]["response"]["status_code"] == 500
    assert lines["g1"]["error"] is None and lines["g2"]["error"] is None
    assert "2 ok, 1 failed" in summary_of(result.stderr)


def test_a_500_then_success_is_answered(env, gateway, behave):
    behave(lambda prompt, n: Json(error_body("blip"), status=502, headers={"Retry-After": "0"}) if n < 2 else None)
    result = invoke("--retries", "2", input=jsonl("x"))
    assert result.exit_code == 0, result.stderr
    assert len(gateway.requests) == 3


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_stops_the_batch_at_once(env, gateway, behave, status):
    behave(
        lambda prompt, n: (
            Json(error_body("invalid key", "authentication_error"), status=status) if prompt == "p3" else None
        )
    )
    result = invoke("-j", "1", "--retries", "3", input=jsonl(*[f"p{i}" for i in range(1, 9)]))
    assert result.exit_code == 3
    assert prompts_sent(gateway) == ["p1", "p2", "p3"]  # nothing after, and no retry
    assert [l["custom_id"] for l in parse_lines(result.stdout)] == ["1", "2"]
    assert f"anyfast: error: HTTP {status}" in result.stderr
    assert KEY not in result.stderr


def test_auth_failure_stops_a_concurrent_batch(env, gateway, behave):
    behave(lambda prompt, n: Json(error_body("invalid key"), status=401) if prompt == "p0" else 0.05)
    result = invoke("-j", "4", input=jsonl(*[f"p{i}" for i in range(60)]))
    gateway.settle()
    assert result.exit_code == 3
    assert len(gateway.requests) < 20


def test_no_api_key_exits_3_and_sends_nothing(clean_env, gateway):
    clean_env.setenv("ANYFAST_BASE_URL", gateway.url)
    result = invoke(input=jsonl("x"))
    assert result.exit_code == 3
    assert gateway.requests == []
    assert "no API key" in result.stderr


def test_unreachable_gateway_exits_4(clean_env, gateway):
    clean_env.setenv("ANYFAST_API_KEY", KEY)
    clean_env.setenv("ANYFAST_BASE_URL", f"http://127.0.0.1:{closed_port()}/v1")
    result = invoke("--retries", "0", input=jsonl("x", "y"))
    assert result.exit_code == 4


# --- dry run, shards, summary, progress ----------------------------------------------------------


def test_dry_run_prints_openai_batch_input_lines_without_a_key(clean_env, gateway, tmp_path):
    path = write_input(tmp_path, "hello", {"custom_id": "c2", "prompt": "bye", "temperature": 1.0})
    result = invoke(path, "--dry-run", "-t", "0.5", "-m", "glm-4-7-251222")
    assert result.exit_code == 0, result.stderr
    assert gateway.requests == []
    lines = parse_lines(result.stdout)
    assert lines == [
        {
            "custom_id": "1",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "glm-4-7-251222",
                "messages": [{"role": "user", "content": "hello"}],
                "temperature": 0.5,
                "stream": False,
            },
        },
        {
            "custom_id": "c2",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "glm-4-7-251222",
                "messages": [{"role": "user", "content": "bye"}],
                "temperature": 1.0,
                "stream": False,
            },
        },
    ]
    # and the dry run's output is itself valid input that means the same requests
    again = invoke("--dry-run", input=result.stdout)
    assert again.exit_code == 0
    assert parse_lines(again.stdout) == lines


def test_dry_run_still_validates(clean_env, gateway):
    result = invoke("--dry-run", input=jsonl("ok", Raw("{bad")))
    assert result.exit_code == 2
    assert result.stdout == ""


def test_dry_run_with_shard(clean_env, gateway):
    result = invoke("--dry-run", "--shard", "1/3", input=jsonl(*[f"p{i}" for i in range(8)]))
    assert result.exit_code == 0
    assert [l["body"]["messages"][0]["content"] for l in parse_lines(result.stdout)] == ["p0", "p3", "p6"]


@pytest.mark.parametrize(
    "k,n,expected",
    [
        ("1", "3", ["p0", "p3", "p6"]),
        ("2", "3", ["p1", "p4"]),
        ("3", "3", ["p2", "p5"]),
        ("1", "1", [f"p{i}" for i in range(7)]),
    ],
)
def test_shard_runs_its_share(env, gateway, k, n, expected):
    # a blank line in the middle does not shift the indexes: records, not lines, are counted
    text = jsonl("p0", "p1", "p2") + "\n" + jsonl("p3", "p4", "p5", "p6")
    result = invoke("--shard", f"{k}/{n}", "-j", "1", input=text)
    assert result.exit_code == 0, result.stderr
    assert prompts_sent(gateway) == expected
    assert len(parse_lines(result.stdout)) == len(expected)


@pytest.mark.parametrize("value", ["0/3", "4/3", "1/0", "x", "1/", "a/b", "-1/2", "1.5/3"])
def test_bad_shard_exits_2(env, gateway, value):
    result = invoke("--shard", value, input=jsonl("x"))
    assert result.exit_code == 2
    assert gateway.requests == []
    assert "--shard" in result.stderr


def test_summary_line_on_stderr(env, gateway, behave):
    behave(lambda prompt, n: Json(error_body("nope"), status=400) if prompt == "bad" else None)
    result = invoke("--retries", "0", "--no-progress", input=jsonl("a", "bad", "b"))
    assert result.exit_code == 6
    lines = parse_lines(result.stdout)
    tokens = sum(l["response"]["body"]["usage"]["total_tokens"] for l in lines if l["error"] is None)
    summary = summary_of(result.stderr)
    assert re.fullmatch(rf"anyfast: batch: 2 ok, 1 failed; {tokens:,} tokens, [\d.]+ s, [\d.]+ requests/s", summary)


def test_only_the_summary_on_stderr_when_not_a_terminal(env, gateway):
    result = invoke(input=jsonl(*[f"p{i}" for i in range(5)]))
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [summary_of(result.stderr)]
    assert "\x1b" not in result.stderr and "\r" not in result.stderr


def test_no_progress_is_accepted(env, gateway):
    result = invoke("--no-progress", input=jsonl("x"))
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [summary_of(result.stderr)]


def test_exit_0_when_all_answered(env, gateway):
    result = invoke("-j", "4", input=jsonl(*[f"p{i}" for i in range(12)]))
    assert result.exit_code == 0
    assert "12 ok, 0 failed" in summary_of(result.stderr)
    assert len(parse_lines(result.stdout)) == 12


# --- decisions made after review --------------------------------------------------------------


def test_dry_run_writes_to_the_output_file_when_given(clean_env, gateway, tmp_path):
    out = tmp_path / "requests.jsonl"
    result = invoke("--dry-run", "-o", out, input=jsonl("a", "b"))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert [line["custom_id"] for line in whole_lines(out)] == ["1", "2"]


@pytest.mark.parametrize("raw", [b"{}", b'{"id": "x", "object": "chat.completion"}'])
def test_a_200_object_without_choices_is_a_failed_record(env, gateway, behave, raw):
    behave(lambda prompt, n: Json(raw=raw) if prompt == "x" else None)
    result = invoke("--retries", "0", input=jsonl("x", "y"))
    assert result.exit_code == 6, result.stderr
    lines = {l["custom_id"]: l for l in parse_lines(result.stdout)}
    assert lines["1"]["error"]["code"] == "invalid_response"
    assert lines["2"]["error"] is None


def test_an_absurd_retry_after_fails_that_record_without_stalling_the_batch(env, gateway, behave):
    behave(
        lambda prompt, n: (
            Json(error_body("come back later"), status=429, headers={"Retry-After": "3600"}) if prompt == "x" else None
        )
    )
    result = invoke("-j", "1", "--retries", "3", input=jsonl("x", "y", "z"))
    assert result.exit_code == 6, result.stderr
    lines = {l["custom_id"]: l for l in parse_lines(result.stdout)}
    assert lines["1"]["error"]["code"] and lines["1"]["response"]["status_code"] == 429
    assert lines["2"]["error"] is None and lines["3"]["error"] is None
    assert prompts_sent(gateway).count("x") == 1  # not retried: the server asked for too long a wait
