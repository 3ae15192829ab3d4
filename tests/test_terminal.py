"""Behaviour at a real terminal, driven through a pseudo-terminal (pexpect): the
interactive chat session, colour rules, and Ctrl-C during a streamed answer."""

from __future__ import annotations

import sys

import pexpect
import pytest
import yaml
from gateway import Json, Sse, chunk, error_body, sse_events
from helpers import pty_end

ESC = "\x1b["
TIMEOUT = 20  # seconds; reached only when something hangs


@pytest.fixture
def term_env(proc_env):
    """proc_env, on a terminal that shows colour."""
    return {**proc_env, "TERM": "xterm-256color"}


def spawn(env, *args, cwd=None) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable, ["-m", "anyfast_cli", *args], env=env, encoding="utf-8", timeout=TIMEOUT, cwd=cwd
    )
    child.setwinsize(40, 200)
    child.delaybeforesend = None  # no 0.05 s pause before each send: what is sent waits in the terminal's queue
    return child


def finish(child: pexpect.spawn) -> str:
    return pty_end(child)


def user_contents(request) -> list[str]:
    return [m["content"] for m in request.body["messages"]]


# --- the interactive session ---------------------------------------------------------------


def test_two_turns_keep_history_and_ctrl_d_leaves_with_0(gateway, term_env):
    child = spawn(term_env, "chat")
    child.expect("> ")
    child.sendline("first question")
    child.expect("echo: first question")
    child.expect("> ")
    child.sendline("second question")
    child.expect("echo: second question")
    child.expect("> ")
    child.sendeof()
    finish(child)
    assert child.exitstatus == 0
    assert user_contents(gateway.requests[-1]) == ["first question", "echo: first question", "second question"]


def test_save_reset_and_system(gateway, term_env, tmp_path):
    saved = tmp_path / "talk.yaml"
    child = spawn(term_env, "chat")
    child.expect("> ")
    child.sendline("remember me")
    child.expect("echo: remember me")
    child.sendline(f"/save {saved}")
    child.expect("saved 2 messages")
    child.sendline("/reset")
    child.expect("cleared")
    child.sendline("/system be brief")
    child.expect("system prompt set")
    child.sendline("fresh start")
    child.expect("echo: fresh start")
    child.sendline("/exit")
    finish(child)
    assert child.exitstatus == 0
    assert yaml.safe_load(saved.read_text())["messages"] == [
        {"role": "user", "content": "remember me"},
        {"role": "assistant", "content": "echo: remember me"},
    ]
    assert gateway.requests[-1].body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "fresh start"},
    ]


def test_error_turn_prints_one_line_and_is_not_kept(gateway, term_env):
    gateway.script(Json(error_body("model overloaded"), status=400))
    child = spawn(term_env, "chat")
    child.expect("> ")
    child.sendline("doomed")
    child.expect("anyfast: error: HTTP 400 Bad Request: model overloaded")
    child.expect("> ")
    child.sendline("second try")
    child.expect("echo: second try")
    child.expect("> ")
    child.sendeof()
    finish(child)
    assert child.exitstatus == 0
    assert user_contents(gateway.requests[-1]) == ["second try"]


def test_content_and_an_error_event_in_one_read_show_the_content_then_the_error(gateway, term_env):
    body = b"".join(sse_events(chunk("the part that came"), {"error": {"message": "upstream broke"}}, done=False))
    gateway.script(Sse([body]))  # one write: one read
    child = spawn(term_env, "chat")
    child.expect("> ")
    child.sendline("doomed")
    child.expect_exact("the part that came")
    child.expect_exact("anyfast: error: the server reported an error: upstream broke")
    child.expect("> ")
    child.sendline("again")
    child.expect("echo: again")
    child.expect("> ")
    child.sendeof()
    finish(child)
    assert child.exitstatus == 0
    assert user_contents(gateway.requests[-1]) == ["again"]  # the failed turn is not kept


def test_ctrl_c_cuts_the_reply_keeps_it_marked_and_the_session_goes_on(gateway, term_env, tmp_path):
    pieces = sse_events(chunk("partial answer "), *[chunk("more ") for _ in range(200)], chunk(finish="stop"))
    gateway.script(Sse(pieces, delay=0.05))  # 10 s in all: cut long before its end
    saved = tmp_path / "cut.yaml"
    child = spawn(term_env, "chat", "--save", str(saved))
    child.expect("> ")
    child.sendline("long one")
    child.expect("partial answer")
    child.sendintr()
    child.expect("reply cut short")
    child.expect("> ")
    child.sendline("next")
    child.expect("echo: next")
    child.expect("> ")
    child.sendeof()
    finish(child)
    assert child.exitstatus == 0
    sent = gateway.requests[-1].body["messages"]
    assert sent[0] == {"role": "user", "content": "long one"}
    assert sent[1]["role"] == "assistant" and sent[1]["content"].startswith("partial answer")
    assert "cut" not in sent[1]  # our marker never reaches the API
    messages = yaml.safe_load(saved.read_text())["messages"]
    assert messages[1]["cut"] is True and messages[1]["content"].startswith("partial answer")


def test_ctrl_c_at_an_empty_prompt_leaves_with_130(term_env):
    child = spawn(term_env, "chat")
    child.expect("> ")
    child.sendintr()
    finish(child)
    assert child.exitstatus == 130


def test_reasoning_shows_dimmed_and_is_never_saved(gateway, term_env, tmp_path):
    saved = tmp_path / "r.yaml"
    child = spawn(term_env, "chat", "--reasoning", "-m", "doubao-seed-1-6-251015", "--save", str(saved))
    child.expect("> ")
    child.sendline("think")
    child.expect_exact("\x1b[2mthinking about it")
    child.expect("echo: think")
    child.expect("> ")
    child.sendeof()
    finish(child)
    assert "thinking" not in saved.read_text()


def test_a_file_seeds_the_session_with_dash_i(gateway, term_env, tmp_path):
    talk = tmp_path / "talk.yaml"
    talk.write_text("messages:\n  - user: seeded\n  - assistant: ok\n")
    child = spawn(term_env, "chat", "-I", "-f", str(talk))
    child.expect("> ")
    child.sendline("after seed")
    child.expect("echo: after seed")
    child.expect("> ")
    child.sendeof()
    finish(child)
    assert user_contents(gateway.requests[-1]) == ["seeded", "ok", "after seed"]


# --- colour -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra_env, coloured",
    [({}, True), ({"NO_COLOR": "1"}, False), ({"TERM": "dumb"}, False), ({"NO_COLOR": ""}, True)],
)
def test_json_on_a_terminal_is_pretty_and_coloured_only_when_allowed(term_env, extra_env, coloured):
    child = spawn({**term_env, **extra_env}, "complete", "--json", "hi")
    output = finish(child)
    assert child.exitstatus == 0
    assert (ESC in output) is coloured
    assert '"content": "echo: hi"' in output.replace("\x1b[0m", "").replace("\r", "") or coloured
    assert "\n  " in output.replace("\r", "")  # indented: pretty on a terminal


def test_no_escape_sequences_in_a_pipe_even_with_a_terminal_stderr(term_env):
    child = pexpect.spawn(
        "sh",
        ["-c", f'"{sys.executable}" -m anyfast_cli complete --json --reasoning -m doubao-x hi | od -c'],
        env=term_env,
        encoding="utf-8",
        timeout=TIMEOUT,
    )
    output = finish(child)
    assert "033" not in output  # od -c shows ESC as 033
    assert child.exitstatus == 0


@pytest.mark.parametrize("extra_env, dimmed", [({}, True), ({"NO_COLOR": "1"}, False), ({"TERM": "dumb"}, False)])
def test_reasoning_is_dim_on_a_terminal_only_when_colour_is_allowed(term_env, extra_env, dimmed):
    child = spawn({**term_env, **extra_env}, "complete", "--reasoning", "-m", "doubao-x", "hi")
    output = finish(child)
    assert "thinking about it" in output
    assert (ESC in output) is dimmed


# --- Ctrl-C in a streamed answer --------------------------------------------------------------


def test_ctrl_c_during_a_stream_keeps_the_text_ends_the_line_and_exits_130(gateway, term_env):
    gateway.script(
        Sse(sse_events(chunk("half of it"), *[chunk(".") for _ in range(200)], chunk(finish="stop")), delay=0.05)
    )
    child = spawn(term_env, "complete", "go")
    child.expect("half of it")
    child.sendintr()
    output = finish(child)
    assert child.exitstatus == 130
    assert "Traceback" not in output
    assert output.endswith("\r\n")


def test_the_session_looks_the_key_up_once(gateway, term_env, tmp_path):
    calls = tmp_path / "calls"
    config = tmp_path / "k.yaml"
    config.write_text(f"profiles:\n  default:\n    api_key_command: echo x >> {calls}; echo sk-from-command\n")
    config.chmod(0o600)
    env = {k: v for k, v in term_env.items() if k != "ANYFAST_API_KEY"}
    child = spawn(env, "chat", "--config", str(config))
    for question in ("one", "two", "three"):
        child.expect("> ")
        child.sendline(question)
        child.expect(f"echo: {question}")
    child.expect("> ")
    child.sendeof()
    finish(child)
    assert child.exitstatus == 0
    assert calls.read_text() == "x\n"  # not once per turn: a password manager would ask each time
