"""When answers are rendered (§4 Markdown at a terminal), in-process: --markdown / --raw, the
config's `markdown: auto|always|never`, NO_COLOR and TERM=dumb winning, and the outputs that are
always raw (pipes, --json, tool calls, --save) staying byte-exact."""

from __future__ import annotations

import json

import pytest
import yaml
from gateway import Json, Sse, chunk, completion, sse_events
from terminal_replay import SGR
from test_tool_calls import expected_stdout, streamed_calls

from anyfast_cli.output import wants_markdown
from anyfast_cli.settings import SettingFlags, resolve_settings

ANSWER = "# Title\n\nSome **bold** and a [link](https://example.com).\n\n```python\nx = 1\n```"
CURSOR_MOVES = ("\x1b[A", "\x1b[1A", "\x1b[J")


def stream(text: str = ANSWER) -> Sse:
    return Sse(sse_events(*[chunk(text[i : i + 5]) for i in range(0, len(text), 5)], chunk(finish="stop")))


@pytest.mark.parametrize(
    "flag, mode, tty, env, expected",
    [
        (None, "auto", True, {}, True),
        (None, "auto", False, {}, False),
        (None, "always", False, {}, True),
        (None, "never", True, {}, False),
        (True, "never", False, {}, True),
        (False, "always", True, {}, False),
        (True, "always", True, {"NO_COLOR": "1"}, False),
        (True, "always", True, {"TERM": "dumb"}, False),
        (None, "auto", True, {"NO_COLOR": ""}, True),
    ],
)
def test_the_decision(flag, mode, tty, env, expected):
    assert wants_markdown(flag, mode, stdout_isatty=tty, env=env) is expected


def write_config(tmp_path, mode) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"profiles": {"default": {"markdown": mode}}}))
    return str(path)


def test_a_pipe_gets_the_answer_byte_for_byte(run, gateway):
    gateway.script(stream())
    result = run("complete", "-n", "go")
    assert result.exit_code == 0 and result.stdout == ANSWER + "\n"


def test_markdown_renders_into_a_pipe_without_moving_the_cursor(run, gateway):
    gateway.script(stream())
    result = run("complete", "-n", "--markdown", "go")
    assert result.exit_code == 0, result.stderr
    assert "\x1b[" in result.stdout and "**" not in result.stdout and "# Title" not in result.stdout
    assert "link (https://example.com)" in SGR.sub("", result.stdout)
    assert not any(move in result.stdout for move in CURSOR_MOVES)
    assert result.stdout.endswith("\n")


@pytest.mark.parametrize(
    "mode, flag, rendered",
    [("always", [], True), ("never", ["--markdown"], True), ("always", ["--raw"], False), ("never", [], False)],
)
def test_the_config_key_and_the_flags(run, gateway, tmp_path, mode, flag, rendered):
    gateway.script(stream())
    result = run("complete", "-n", "--config", write_config(tmp_path, mode), *flag, "go")
    assert result.exit_code == 0, result.stderr
    assert ("\x1b[" in result.stdout) is rendered
    assert (result.stdout == ANSWER + "\n") is not rendered


def test_a_bad_mode_is_a_usage_error_naming_the_profile(run, tmp_path):
    result = run("complete", "-n", "--config", write_config(tmp_path, "sometimes"), "go")
    assert result.exit_code == 2
    assert "markdown must be one of auto, always, never" in result.stderr and "profile 'default'" in result.stderr


def test_config_show_says_where_the_mode_came_from(cli, tmp_path):
    result = cli("config", "show", "--json", "--config", write_config(tmp_path, "never"))
    assert json.loads(result.stdout)["markdown"] == {"value": "never", "source": "profile"}


@pytest.mark.parametrize("env", [{"NO_COLOR": "1"}, {"TERM": "dumb"}])
def test_no_color_and_dumb_win_over_markdown(run, gateway, env):
    gateway.script(stream())
    result = run("complete", "-n", "--markdown", "go", **env)
    assert result.stdout == ANSWER + "\n"


def test_json_is_never_rendered(run, gateway):
    gateway.script(Json(completion(ANSWER)))
    result = run("complete", "-n", "--markdown", "--json", "go")
    assert json.loads(result.stdout)["choices"][0]["message"]["content"] == ANSWER


def test_tool_call_lines_stay_exact(run, gateway):
    gateway.script(Sse(sse_events(*streamed_calls("tool_calls"))))
    result = run("complete", "-n", "--markdown", "weather?")
    assert result.exit_code == 8 and result.stdout == expected_stdout()


def test_save_keeps_the_raw_text(run, gateway, tmp_path):
    saved = tmp_path / "talk.yaml"
    gateway.script(stream())
    result = run("chat", "-n", "--markdown", "--save", saved, "go")
    assert result.exit_code == 0 and "\x1b[" in result.stdout
    assert yaml.safe_load(saved.read_text())["messages"][-1] == {"role": "assistant", "content": ANSWER}


def test_a_whole_answer_is_rendered_once(run, gateway):
    gateway.script(Json(completion(ANSWER)))
    result = run("complete", "-n", "--markdown", "--no-stream", "go")
    assert result.exit_code == 0 and result.stdout.count("x = ") == 1 and "**" not in result.stdout


def test_an_escape_in_the_answer_is_neutralised_before_rendering(run, gateway):
    gateway.script(stream("**a** \x1b]52;c;aGk=\x07 b\n"))
    result = run("complete", "-n", "--markdown", "go")
    assert "\x1b]" not in result.stdout and "\x07" not in result.stdout and "^[]52;c;aGk=^G" in result.stdout


def test_settings_default_to_auto():
    assert resolve_settings(SettingFlags(), {}, {}).markdown == "auto"
