"""Edge cases a demanding shell user meets: closed streams, hostile or broken server
answers, bad URLs and values, keys echoed back, and batch input oddities."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pexpect
import pytest
from gateway import Json, Sse, Stall, error_body, sse_events
from helpers import KEY, WAIT, pty_end


def shell(script: str, env: dict) -> subprocess.CompletedProcess:
    """Run a bash script in which `anyfast` is this interpreter's `-m anyfast_cli`."""
    prelude = f'anyfast() {{ "{sys.executable}" -m anyfast_cli "$@"; }}\n'
    return subprocess.run(["bash", "-c", prelude + script], env=env, capture_output=True, text=True, timeout=WAIT)


# --- closed standard streams -------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--version"], ["complete", "hi"], ["config", "path"]])
def test_a_closed_stdout_ends_with_141_and_no_traceback(proc_env, gateway, args):
    done = shell(f"anyfast {' '.join(args)} >&-; echo status=$?", proc_env)
    assert "status=141" in done.stdout
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr


def test_a_closed_stderr_still_answers(proc_env, gateway):
    done = shell("anyfast complete -m doubao-x --reasoning hi 2>&-; echo status=$?", proc_env)
    assert done.stdout == "echo: hi\nstatus=0\n"


def test_a_big_answer_into_a_reader_that_leaves_exits_141(proc_env, gateway, tmp_path):
    (tmp_path / "big.txt").write_text("x" * 300_000)
    done = shell(
        f"anyfast complete --dry-run - < {tmp_path / 'big.txt'} | head -c 10 >/dev/null; echo status=${{PIPESTATUS[0]}}",
        proc_env,
    )
    assert "status=141" in done.stdout, done.stderr
    assert done.stderr == ""


# --- the server says odd things ---------------------------------------------------------------


def test_a_multi_line_server_message_is_one_error_line(run, gateway):
    gateway.script(Json(error_body("line one\nline two\n\tline three"), status=400))
    result = run("complete", "hi")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == ["anyfast: error: HTTP 400 Bad Request: line one line two line three"]


def test_a_huge_server_message_is_cut_short(run, gateway):
    gateway.script(Json(error_body("blah " * 5000), status=400))
    result = run("complete", "hi")
    line = result.stderr.splitlines()[0]
    assert len(line) < 400 and line.endswith("…")


@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_an_echoed_key_is_masked(run, gateway, stream):
    gateway.script(Json(error_body(f"Incorrect API key provided: {KEY}"), status=401))
    result = run("complete", stream, "hi")
    assert result.exit_code == 3
    assert KEY not in result.output and "Incorrect API key provided: ***" in result.stderr


def test_an_echoed_key_is_masked_in_batch_output(run, gateway):
    gateway.script(Json(error_body(f"bad request for key {KEY}"), status=400))
    result = run("batch", "--retries", "0", "-j", "1", input='"a"\n"b"\n')
    assert result.exit_code == 6
    assert KEY not in result.output
    assert "***" in result.stdout


@pytest.mark.parametrize(
    "body",
    [{"choices": "x"}, {"choices": ["x"]}, [1, 2], {"object": "chat.completion"}, {"choices": [{"message": "text"}]}],
    ids=["choices-string", "choices-of-strings", "a-list", "no-choices", "message-string"],
)
def test_a_200_that_is_not_a_completion_is_an_api_error(run, gateway, body):
    gateway.script(Json(body))
    result = run("complete", "--no-stream", "hi")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == ["anyfast: error: the server's answer is not a chat completion"]


@pytest.mark.parametrize("event", ["[1, 2]", '{"choices": "x"}', '{"choices": [{"delta": "text"}]}'])
def test_a_malformed_stream_event_is_an_api_error(run, gateway, event):
    gateway.script(Sse(sse_events(event)))
    result = run("complete", "hi")
    assert result.exit_code == 1
    assert "not a chat completion" in result.stderr and "internal error" not in result.stderr


def test_a_long_retry_after_is_named_in_the_error(run, gateway):
    gateway.script(Json(error_body("busy"), status=429, headers={"Retry-After": "120"}))
    result = run("complete", "hi")
    assert result.exit_code == 5
    assert "asks to wait 120 s" in result.stderr
    assert len(gateway.requests) == 1


# --- bad values found before anything is sent ------------------------------------------------


@pytest.mark.parametrize("url", ["not a url", "ftp://host/v1", "http://[::1", "", "http://"])
@pytest.mark.parametrize("command", [["complete", "hi"], ["batch"]])
def test_a_bad_base_url_is_a_usage_error(run, gateway, url, command):
    result = run(*command, "--base-url", url, input='"q"\n')
    assert result.exit_code == 2, result.output
    assert "base URL" in result.stderr and "internal error" not in result.stderr
    assert not gateway.requests


def test_stream_options_must_be_an_object(run, gateway):
    result = run("complete", "-p", "stream_options=3", "--usage", "hi")
    assert result.exit_code == 2 and "stream_options" in result.stderr
    assert not gateway.requests


def test_save_onto_a_directory_fails_before_sending(run, gateway, tmp_path):
    result = run("chat", "--save", tmp_path, "hi")
    assert result.exit_code == 2 and "directory" in result.stderr
    assert not gateway.requests


def test_fps_without_a_video_is_a_usage_error(run, gateway):
    result = run("complete", "--fps", "2", "hi")
    assert result.exit_code == 2 and "--fps" in result.stderr
    assert not gateway.requests


def test_concurrency_has_a_ceiling(run, gateway):
    result = run("batch", "-j", "1000000", input='"q"\n')
    assert result.exit_code == 2 and "--concurrency" in result.stderr
    assert not gateway.requests


# --- the key command and stdin ----------------------------------------------------------------


def test_api_key_command_does_not_eat_a_read_loop_s_input(proc_env, gateway, tmp_path):
    config = tmp_path / "k.yaml"
    config.write_text("profiles:\n  default:\n    api_key_command: head -1 >/dev/null; echo sk-from-command\n")
    config.chmod(0o600)
    env = {k: v for k, v in proc_env.items() if k != "ANYFAST_API_KEY"}
    done = shell(
        f'printf "q1\\nq2\\nq3\\n" | while read -r q; do anyfast complete --config {config} -n "$q"; done', env
    )
    assert done.stdout == "echo: q1\necho: q2\necho: q3\n", done.stderr
    assert gateway.requests[-1].headers["authorization"] == "Bearer sk-from-command"


# --- saved conversations ----------------------------------------------------------------------


def test_save_to_a_json_file_writes_json_that_chat_reads_back(run, gateway, tmp_path):
    saved = tmp_path / "talk.json"
    assert run("chat", "--save", saved, "first").exit_code == 0
    data = json.loads(saved.read_text())
    assert data["messages"] == [{"role": "user", "content": "first"}, {"role": "assistant", "content": "echo: first"}]
    assert run("chat", "-f", saved, "--save", saved, "second").exit_code == 0
    assert [m["content"] for m in json.loads(saved.read_text())["messages"]][-2:] == ["second", "echo: second"]


def test_saved_messages_put_role_first(run, gateway, tmp_path):
    talk = tmp_path / "t.yaml"
    talk.write_text("- user: look\n  images: [https://e.com/a.png]\n")
    assert run("chat", "-f", talk, "--save", talk).exit_code == 0
    assert talk.read_text().splitlines()[1].startswith("- role: user")


# --- batch input oddities ---------------------------------------------------------------------


def test_batch_input_with_a_byte_order_mark(run, gateway):
    result = run("batch", input='\ufeff"first"\n"second"\n')
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2


@pytest.mark.parametrize(
    "line, words",
    [
        ('{"prompt": "x", "images": ["a.png"]}', "'images' is not supported"),
        (
            '{"custom_id": "c", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": ["nope"]}}',
            "message 1",
        ),
        (
            '{"custom_id": "c", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [{"role": "robot", "content": "x"}]}}',
            "unknown role",
        ),
        ('{"prompt": "unterminated', "not valid JSON: Unterminated string starting at, column"),
    ],
)
def test_batch_rejects_records_that_would_fail_at_the_server(run, gateway, line, words):
    result = run("batch", "--dry-run", input=line + "\n")
    assert result.exit_code == 2
    assert words in result.stderr
    assert "at at" not in result.stderr


# --- colour -------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [{"NO_COLOR": "1"}, {"TERM": "dumb"}])
def test_batch_progress_on_a_terminal_has_no_escape_sequences_without_colour(proc_env, gateway, tmp_path, extra):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(f'"q{i}"\n' for i in range(50)))
    child = pexpect.spawn(
        sys.executable,
        ["-m", "anyfast_cli", "batch", str(source), "-o", str(tmp_path / "out.jsonl")],
        env={**proc_env, "TERM": "xterm", **extra},
        encoding="utf-8",
        timeout=WAIT,
    )
    pty_end(child)
    assert child.exitstatus == 0
    assert "50/50 done" in child.before
    assert "\x1b" not in child.before


# --- second review ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        Json(raw=b"<html>captive portal login</html>", headers={"Content-Type": "text/html"}),
        Json(raw=b"plain words, not events", headers={"Content-Type": "text/plain"}),
    ],
    ids=["html", "plain-text"],
)
def test_a_200_that_is_not_an_event_stream_is_an_api_error_not_retried(run, gateway, reply):
    gateway.script(reply, reply, reply)
    result = run("complete", "hi")
    assert result.exit_code == 1
    assert "not an event stream" in result.stderr and (
        "captive portal" in result.stderr or "plain words" in result.stderr
    )
    assert len(gateway.requests) == 1


def test_a_whole_answer_without_choices_is_an_error(run, gateway):
    gateway.script(Json({"id": "x", "choices": []}))
    result = run("complete", "--no-stream", "hi")
    assert result.exit_code == 1 and "not a chat completion" in result.stderr


@pytest.mark.parametrize("value", ["inf", "1e308", "0", "-1", "nan"])
def test_a_timeout_out_of_range_is_a_usage_error(run, gateway, value):
    result = run("complete", "--timeout", value, "hi")
    assert result.exit_code == 2 and "timeout" in result.stderr
    assert not gateway.requests


@pytest.mark.parametrize("target", ["stdout", "file"])
def test_a_full_disk_is_one_clear_error(proc_env, gateway, target):
    redirect = "> /dev/full" if target == "stdout" else "-o /dev/full"
    done = shell(
        f"anyfast batch {redirect} <<< '\"q\"'; echo status=$?; anyfast complete hi > /dev/full; echo status=$?",
        proc_env,
    )
    assert done.stdout.splitlines() == ["status=1", "status=1"], done.stderr
    assert "No space left on device" in done.stderr and "internal error" not in done.stderr


def test_ctrl_c_before_a_reply_begins_leaves_no_turn(gateway, proc_env):
    gateway.script(Stall(3))
    child = pexpect.spawn(
        sys.executable, ["-m", "anyfast_cli", "chat"], env={**proc_env, "TERM": "xterm"}, encoding="utf-8", timeout=WAIT
    )
    child.delaybeforesend = None  # each send follows the expect of the prompt
    child.expect("> ")
    child.sendline("wait")
    gateway_wait = 0
    while not gateway.requests and gateway_wait < 100:  # the request has reached the server
        child.expect([pexpect.TIMEOUT], timeout=0.05)
        gateway_wait += 1
    child.sendintr()
    child.expect("request cancelled")
    child.expect("> ")
    child.sendline("next")
    child.expect("echo: next")
    child.expect("> ")
    child.sendeof()
    pty_end(child)
    assert child.exitstatus == 0
    assert [m["content"] for m in gateway.requests[-1].body["messages"]] == ["next"]


def test_every_yaml_example_in_the_readme_is_valid(tmp_path):
    import re

    import yaml

    from anyfast_cli.inputs import parse_conversation
    from anyfast_cli.prices import parse_prices
    from anyfast_cli.settings import parse_config

    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    assert len(blocks) >= 2
    for block in blocks:
        data = yaml.safe_load(block)
        if "apiVersion" in data or "jobs" in data:
            continue  # a Kubernetes manifest (--shard auto) or a CI workflow (the cache), not a file anyfast reads
        if "messages" in data:
            conversation = parse_conversation(block, "README")
            assert conversation.messages
            if conversation.is_template:  # a prompt file: its placeholders are well formed
                from anyfast_cli.templating import compile_template

                assert compile_template(conversation, "README", block).names
        elif "prices" in data:  # a config's top-level price table
            assert parse_prices(parse_config(block, "README")["prices"], "README")
        else:
            config = parse_config(block, "README")
            assert config.get("profiles") or config.get("prices")  # prices may be top-level (§2)


@pytest.mark.parametrize("model", ["", "   "])
def test_an_empty_model_is_a_usage_error(run, gateway, model):
    result = run("complete", "-m", model, "hi")
    assert result.exit_code == 2 and "model" in result.stderr
    assert not gateway.requests


def test_a_reserved_field_names_the_right_flag(run, gateway):
    result = run("batch", "-p", "stream=true", input='"q"\n')
    assert result.exit_code == 2
    assert "'stream' is set by anyfast itself" in result.stderr and "batch never streams" in result.stderr


def test_an_error_body_in_another_framework_s_shape_is_shown(run, gateway):
    gateway.script(Json({"detail": "field required: messages"}, status=422))
    result = run("complete", "hi")
    assert result.exit_code == 1 and "field required: messages" in result.stderr


@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_an_answer_cut_at_the_token_limit_says_so_on_stderr(run, gateway, stream):
    from gateway import chunk, completion

    cut = completion("partial")
    cut["choices"][0]["finish_reason"] = "length"
    gateway.script(Sse(sse_events(chunk("partial"), chunk(finish="length"))) if stream == "--stream" else Json(cut))
    result = run("complete", stream, "hi")
    assert result.exit_code == 0
    assert result.stdout == "partial\n"
    assert "token limit" in result.stderr and result.stderr.startswith("anyfast: warning:")


def test_an_empty_batch_input_warns(run, gateway):
    result = run("batch", input="\n\n")
    assert result.exit_code == 0 and result.stdout == ""
    assert "no records" in result.stderr


def test_config_show_gives_the_default_timeout_as_a_number(cli):
    result = cli("config", "show", "--json")
    assert json.loads(result.stdout)["timeout"] == {"value": 600.0, "source": "default; connect 10 s"}
