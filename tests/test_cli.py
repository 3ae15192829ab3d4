"""`anyfast complete` and `anyfast chat` through Typer's CliRunner against the loopback gateway."""

from __future__ import annotations

import base64
import json
import os

import pytest
import yaml
from gateway import Json, Reset, Sse, chunk, error_body, sse_events
from helpers import KEY, OTHER_MODEL, closed_port

DEFAULT_MODEL = "doubao-seed-1-6-vision-250815"
SLOW_DOWN = Json(error_body("slow down", "rate_limit_error"), status=429, headers={"Retry-After": "0"})


def sent(gateway) -> dict:
    assert gateway.requests, "nothing was sent"
    return gateway.requests[-1].body


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("anyfast: error:")]


def assert_one_error(result, *words) -> None:
    """One `anyfast: error:` line, at most one hint line, nothing else, no traceback."""
    lines = result.stderr.splitlines()
    assert len(error_lines(result)) == 1, result.stderr
    assert lines[0].startswith("anyfast: error:")
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("anyfast: hint:")), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


def chunks_content(stdout: str) -> str:
    text = ""
    for line in stdout.splitlines():
        for choice in json.loads(line).get("choices") or ():
            text += (choice.get("delta") or {}).get("content") or ""
    return text


# --- stdout is the answer only ---------------------------------------------------------------

TEXT_MODES = [
    [],
    ["--stream"],
    ["--no-stream"],
    ["--reasoning"],
    ["--usage"],
    ["-v"],
    ["--reasoning", "--usage", "-v"],
    ["--no-stream", "--reasoning", "--usage", "-v"],
]
JSON_MODES = [["--json"], ["--json", "--reasoning", "--usage", "-v"], ["--json", "--no-stream", "--usage"]]
JSONL_MODES = [["--json", "--stream"], ["--json", "--stream", "--reasoning", "--usage", "-v"]]


@pytest.mark.parametrize("command", ["complete", "chat"])
@pytest.mark.parametrize("mode", TEXT_MODES + JSON_MODES + JSONL_MODES, ids=lambda m: " ".join(m) or "default")
def test_stdout_is_only_the_answer_in_every_output_mode(run, gateway, command, mode):
    result = run(command, *mode, "hi")
    assert result.exit_code == 0, result.stderr
    if mode in TEXT_MODES:
        assert result.stdout == "echo: hi\n"
    elif mode in JSON_MODES:
        assert result.stdout.count("\n") == 1 and result.stdout.endswith("\n")
        assert json.loads(result.stdout)["choices"][0]["message"]["content"] == "echo: hi"
    else:
        assert chunks_content(result.stdout) == "echo: hi"
    assert KEY not in result.stdout + result.stderr
    assert "anyfast:" not in result.stdout


def test_json_is_one_compact_object_of_a_whole_response(run, gateway):
    result = run("complete", "--json", "hi")
    obj = json.loads(result.stdout)
    assert result.stdout == json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"
    assert obj["object"] == "chat.completion" and obj["usage"]["total_tokens"] > 0
    assert sent(gateway)["stream"] is False
    assert result.stderr == ""


def test_json_stream_is_jsonl_without_done(run, gateway):
    result = run("complete", "--json", "--stream", "hi")
    lines = result.stdout.splitlines()
    objects = [json.loads(line) for line in lines]
    assert len(objects) >= 3 and all(o["object"] == "chat.completion.chunk" for o in objects)
    assert "[DONE]" not in result.stdout
    assert objects[-1]["choices"][0]["finish_reason"] == "stop"
    assert sent(gateway)["stream"] is True


@pytest.mark.parametrize("stream", [True, False])
def test_usage_goes_to_stderr_and_is_asked_for_when_streaming(run, gateway, stream):
    result = run("complete", "--usage", "--stream" if stream else "--no-stream", "hi")
    assert result.stdout == "echo: hi\n"
    body = sent(gateway)
    if stream:
        assert body["stream_options"] == {"include_usage": True}
    else:
        assert "stream_options" not in body
    assert result.stderr.startswith("usage: ") and "tokens" in result.stderr


def test_without_usage_no_stream_options(run, gateway):
    run("complete", "hi")
    assert "stream_options" not in sent(gateway)


@pytest.mark.parametrize("extra", [[], ["--no-stream"], ["--json"], ["--json", "--stream"]])
def test_reasoning_goes_to_stderr_only_when_asked(run, extra):
    shown = run("complete", "--reasoning", *extra, "hi")
    hidden = run("complete", *extra, "hi")
    assert shown.stderr == "thinking about it\n"
    assert hidden.stderr == ""
    assert shown.stdout.count("\n") == hidden.stdout.count("\n")
    if "--json" not in extra:
        assert shown.stdout == hidden.stdout == "echo: hi\n"


def test_verbose_shows_url_status_and_request_id_on_stderr(run, gateway):
    result = run("complete", "-v", "hi")
    assert result.stdout == "echo: hi\n"
    assert f"POST {gateway.url}/chat/completions" in result.stderr
    assert f"model={DEFAULT_MODEL}" in result.stderr
    assert "200 OK" in result.stderr and "request id req-" in result.stderr
    assert "key from environment" in result.stderr


# --- the key is never printed ----------------------------------------------------------------

KEY_CASES = [
    pytest.param([], [], id="ok"),
    pytest.param(["-v"], [], id="verbose"),
    pytest.param(["-v", "--json", "--stream", "--usage", "--reasoning"], [], id="everything"),
    pytest.param(["-v", "--dry-run"], [], id="dry-run"),
    pytest.param(["-v", "--retries", "0"], [Json(error_body("bad key"), status=401)], id="401"),
    pytest.param(["-v", "--retries", "0"], [Json(error_body("boom"), status=500)], id="500"),
    pytest.param(["-v"], [Json(error_body("x"), status=503, headers={"Retry-After": "0"})], id="retried"),
    pytest.param(["-v", "--retries", "0"], [Reset()], id="reset"),
    pytest.param(["-v"], [Sse(sse_events(chunk("half"), done=False), cut=True)], id="broken-stream"),
    pytest.param(["-v", "--temperature", "9"], [], id="usage-error"),
]


@pytest.mark.parametrize("flags, script", KEY_CASES)
@pytest.mark.parametrize("key_from", ["env", "flag"])
def test_the_key_is_never_printed(run, gateway, flags, script, key_from):
    gateway.script(*script)
    if key_from == "flag":
        result = run("complete", "--api-key", KEY, *flags, "hi", key=None)
    else:
        result = run("complete", *flags, "hi")
    assert KEY not in result.stdout + result.stderr
    if gateway.requests:
        assert gateway.requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_verbose_connection_refused_does_not_print_the_key(run, gateway):
    result = run("complete", "-v", "--retries", "0", "hi", ANYFAST_BASE_URL=f"http://127.0.0.1:{closed_port()}/v1")
    assert result.exit_code == 4
    assert KEY not in result.stdout + result.stderr


# --- dry run ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["complete", "chat"])
def test_dry_run_needs_no_key_and_sends_nothing(run, gateway, command):
    result = run(command, "--dry-run", "-t", "0.5", "hi", key=None)
    assert result.exit_code == 0, result.stderr
    assert gateway.requests == []
    assert json.loads(result.stdout) == {
        "method": "POST",
        "url": f"{gateway.url}/chat/completions",
        "headers": {"Authorization": "Bearer ***", "Content-Type": "application/json"},
        "body": {
            "model": DEFAULT_MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0.5,
            "stream": True,
        },
    }
    assert result.stderr == ""


def test_dry_run_still_checks_ranges(run, gateway):
    result = run("complete", "--dry-run", "--top-p", "2", "hi", key=None)
    assert result.exit_code == 2
    assert result.stdout == ""


# --- exit status (§5) ------------------------------------------------------------------------

EXIT_CASES = [
    # id, args, scripted replies, extra env, exit status, words in the error line, requests sent
    ("no prompt", ["complete"], [], {}, 2, "no prompt", 0),
    ("dash without stdin", ["complete", "-"], [], {}, 2, "no prompt", 0),
    ("unknown flag", ["complete", "--nope", "hi"], [], {}, 2, "--nope", 0),
    ("not a number", ["complete", "--max-tokens", "many", "hi"], [], {}, 2, "many", 0),
    ("temperature range", ["complete", "-t", "2.5", "hi"], [], {}, 2, "temperature", 0),
    ("top_p range", ["complete", "--top-p", "1.1", "hi"], [], {}, 2, "top_p", 0),
    ("penalty range", ["complete", "--presence-penalty", "-3", "hi"], [], {}, 2, "presence_penalty", 0),
    ("max tokens default model", ["complete", "--max-tokens", "9000", "hi"], [], {}, 2, "8192", 0),
    ("param range", ["complete", "-p", "temperature=7", "hi"], [], {}, 2, "temperature", 0),
    ("bad param", ["complete", "-p", "novalue", "hi"], [], {}, 2, "KEY=VALUE", 0),
    ("stream as param", ["complete", "-p", "stream=false", "hi"], [], {}, 2, "stream", 0),
    ("missing image", ["complete", "-i", "/nonexistent/x.png", "hi"], [], {}, 2, "x.png", 0),
    ("missing chat file", ["chat", "-f", "/nonexistent/talk.yaml"], [], {}, 2, "talk.yaml", 0),
    ("missing config", ["complete", "--config", "/nonexistent/c.yaml", "hi"], [], {}, 2, "c.yaml", 0),
    ("empty chat", ["chat"], [], {}, 2, "nothing to send", 0),
    ("no key", ["complete", "hi"], [], {"ANYFAST_API_KEY": None}, 3, "no API key", 0),
    ("401", ["complete", "hi"], [Json(error_body("Invalid API key"), status=401)], {}, 3, "Invalid API key", 1),
    ("403", ["complete", "hi"], [Json(error_body("forbidden model"), status=403)], {}, 3, "forbidden model", 1),
    ("reset", ["complete", "--retries", "0", "hi"], [Reset()], {}, 4, "127.0.0.1", 1),
    ("429 after retries", ["complete", "hi"], [SLOW_DOWN] * 3, {}, 5, "slow down", 3),
    ("429 json", ["complete", "--json", "hi"], [SLOW_DOWN] * 3, {}, 5, "slow down", 3),
    (
        "500",
        ["complete", "--retries", "0", "hi"],
        [Json(error_body("it broke", "server_error"), status=500)],
        {},
        1,
        "it broke",
        1,
    ),
    ("400", ["complete", "hi"], [Json(error_body("bad request body"), status=400)], {}, 1, "bad request body", 1),
    (
        "404",
        ["complete", "-m", "nope", "hi"],
        [Json(error_body("model not found"), status=404)],
        {},
        1,
        "model not found",
        1,
    ),
    ("200 json error", ["complete", "hi"], [Json(error_body("quota exceeded"))], {}, 1, "quota exceeded", 1),
    (
        "error event",
        ["complete", "hi"],
        [Sse(sse_events({"error": {"message": "overloaded"}}))],
        {},
        1,
        "overloaded",
        1,
    ),
]


@pytest.mark.parametrize(
    "args, script, env, status, words, requests", [c[1:] for c in EXIT_CASES], ids=[c[0] for c in EXIT_CASES]
)
def test_exit_status(run, gateway, args, script, env, status, words, requests):
    gateway.script(*script)
    result = run(*args, **env)
    assert result.exit_code == status, result.stderr
    assert_one_error(result, words)
    assert result.stdout == ""
    assert len(gateway.requests) == requests


def test_connection_refused_exits_4(run, gateway):
    result = run("complete", "--retries", "0", "hi", ANYFAST_BASE_URL=f"http://127.0.0.1:{closed_port()}/v1")
    assert result.exit_code == 4
    assert_one_error(result, "cannot connect")


def test_retries_then_success_exits_0(run, gateway):
    gateway.script(Json(error_body("x"), status=503, headers={"Retry-After": "0"}), SLOW_DOWN)
    result = run("complete", "hi")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "echo: hi\n", "")
    assert len(gateway.requests) == 3


def test_retries_zero_means_one_attempt(run, gateway):
    gateway.script(SLOW_DOWN, SLOW_DOWN)
    result = run("complete", "--retries", "0", "hi")
    assert result.exit_code == 5
    assert len(gateway.requests) == 1


@pytest.mark.parametrize(
    "pieces, words",
    [
        (sse_events(chunk("partial an"), done=False), "the stream broke"),
        (sse_events(chunk("partial an"), {"error": {"message": "content filtered"}}), "content filtered"),
    ],
    ids=["truncated", "error-event"],
)
@pytest.mark.parametrize("cut", [False, True])
def test_a_broken_stream_keeps_what_was_printed_and_exits_1(run, gateway, pieces, words, cut):
    gateway.script(Sse(pieces, cut=cut))
    result = run("complete", "hi")
    assert result.exit_code == 1
    assert result.stdout == "partial an\n"  # kept, its line ended
    assert_one_error(result, words)
    assert len(gateway.requests) == 1  # never retried after output


def test_a_finish_reason_without_done_is_success(run, gateway):
    gateway.script(Sse(sse_events(chunk("all"), chunk(" here", finish="stop"), done=False)))
    result = run("complete", "hi")
    assert (result.exit_code, result.stdout) == (0, "all here\n")


def test_max_tokens_over_8192_is_fine_for_another_model(run, gateway):
    result = run("complete", "-m", OTHER_MODEL, "--max-tokens", "16384", "hi")
    assert result.exit_code == 0, result.stderr
    assert sent(gateway)["max_tokens"] == 16384


def test_debug_shows_the_traceback(run, gateway):
    result = run("complete", "hi", ANYFAST_API_KEY=None, ANYFAST_DEBUG="1")
    assert result.exit_code == 3
    assert "Traceback" in result.stderr
    assert "anyfast: error: no API key" in result.stderr


# --- request body ----------------------------------------------------------------------------


def test_only_set_fields_are_sent(run, gateway):
    run("complete", "hi")
    assert set(sent(gateway)) == {"model", "messages", "stream"}


def test_params_and_stop_in_the_body(run, gateway):
    result = run(
        "complete",
        "-p",
        'thinking={"type":"disabled"}',
        "-p",
        "reasoning_effort=low",
        "-p",
        "seed=7",
        "--stop",
        "END",
        "--max-tokens",
        "50",
        "-t",
        "0.5",
        "--top-p",
        "0.9",
        "--frequency-penalty",
        "-1",
        "--presence-penalty",
        "1.5",
        "-s",
        "Be terse.",
        "hi",
    )
    assert result.exit_code == 0, result.stderr
    assert sent(gateway) == {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}],
        "thinking": {"type": "disabled"},
        "reasoning_effort": "low",
        "seed": 7,
        "stop": "END",
        "max_tokens": 50,
        "temperature": 0.5,
        "top_p": 0.9,
        "frequency_penalty": -1.0,
        "presence_penalty": 1.5,
        "stream": True,
    }


def test_several_stops_are_a_list(run, gateway):
    run("complete", "--stop", "a", "--stop", "b", "hi")
    assert sent(gateway)["stop"] == ["a", "b"]


def test_prompt_arguments_and_stdin(run, gateway):
    result = run("complete", "Write a commit message:", input="diff --git a b\n+x\n")
    assert result.exit_code == 0
    assert sent(gateway)["messages"] == [{"role": "user", "content": "Write a commit message:\n\ndiff --git a b\n+x"}]


def test_no_stdin_flag_ignores_piped_text(run, gateway):
    run("complete", "-n", "question", input="not for us\n")
    assert sent(gateway)["messages"][-1]["content"] == "question"


def test_dash_is_stdin_alone(run, gateway):
    run("complete", "-", input="only this\n")
    assert sent(gateway)["messages"][-1]["content"] == "only this"


def test_an_image_becomes_a_data_uri_with_its_mime_type(run, gateway, tmp_path):
    picture = tmp_path / "pic.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    result = run("complete", "-i", picture, "-i", "https://example.com/b.jpg", "what is this?")
    assert result.exit_code == 0, result.stderr
    assert sent(gateway)["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64," + base64.b64encode(picture.read_bytes()).decode()},
                },
                {"type": "image_url", "image_url": {"url": "https://example.com/b.jpg"}},
            ],
        }
    ]


# --- chat ------------------------------------------------------------------------------------


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_chat_list_form(run, gateway, tmp_path):
    talk = write(
        tmp_path / "talk.yaml", "- role: system\n  content: Be brief.\n- user: hi\n- assistant: hello\n- user: again\n"
    )
    result = run("chat", "-f", talk)
    assert (result.exit_code, result.stdout) == (0, "echo: again\n")
    assert sent(gateway)["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"},
    ]


def test_chat_mapping_form(run, gateway, tmp_path):
    talk = write(
        tmp_path / "talk.yaml",
        (
            f"model: {OTHER_MODEL}\nsystem: You are terse.\nparams:\n  temperature: 0.2\n  reasoning_effort: low\n"
            "messages:\n  - user: first\n  - assistant: answer\n"
        ),
    )
    result = run("chat", "-f", talk, "next?")
    assert result.exit_code == 0, result.stderr
    body = sent(gateway)
    assert body["model"] == OTHER_MODEL
    assert body["temperature"] == 0.2 and body["reasoning_effort"] == "low"
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer"},
        {"role": "user", "content": "next?"},
    ]


def test_chat_shorthand_json_on_stdin(run, gateway):
    result = run("chat", "-f", "-", input='[{"system": "S"}, {"user": "hi"}, {"assistant": "yo"}, {"user": "and?"}]')
    assert (result.exit_code, result.stdout) == (0, "echo: and?\n")
    assert [m["role"] for m in sent(gateway)["messages"]] == ["system", "user", "assistant", "user"]


@pytest.mark.parametrize(
    "flag, env, expected",
    [
        (["-m", "flag-model"], {"ANYFAST_MODEL": "env-model"}, "flag-model"),
        ([], {"ANYFAST_MODEL": "env-model"}, "file-model"),
        ([], {}, "file-model"),
    ],
)
def test_chat_file_model_ranks_between_flag_and_env(run, gateway, tmp_path, flag, env, expected):
    talk = write(tmp_path / "talk.yaml", "model: file-model\nmessages: [{user: hi}]\n")
    result = run("chat", "-f", talk, *flag, **env)
    assert result.exit_code == 0, result.stderr
    assert sent(gateway)["model"] == expected


def test_chat_flags_win_over_file_params(run, gateway, tmp_path):
    talk = write(
        tmp_path / "talk.yaml", "params: {temperature: 0.2, top_p: 0.5}\nsystem: file system\nmessages: [{user: hi}]\n"
    )
    run("chat", "-f", talk, "-t", "1.0", "-s", "flag system")
    body = sent(gateway)
    assert (body["temperature"], body["top_p"]) == (1.0, 0.5)
    assert body["messages"][0] == {"role": "system", "content": "flag system"}


def test_chat_save_then_continue(run, gateway, tmp_path):
    talk = tmp_path / "talk.yaml"
    first = run("chat", "--save", talk, "first question")
    assert (first.exit_code, first.stdout) == (0, "echo: first question\n")
    assert yaml.safe_load(talk.read_text()) == {
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "echo: first question"},
        ]
    }

    second = run("chat", "-f", talk, "--save", talk, "second")
    assert (second.exit_code, second.stdout) == (0, "echo: second\n")
    assert sent(gateway)["messages"] == [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "echo: first question"},
        {"role": "user", "content": "second"},
    ]
    assert yaml.safe_load(talk.read_text())["messages"][2:] == [
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "echo: second"},
    ]
    assert [name for name in os.listdir(tmp_path) if name.startswith(".anyfast-")] == []  # no temporary left


def test_chat_save_keeps_model_system_and_params(run, gateway, tmp_path):
    talk = write(
        tmp_path / "talk.yaml",
        f"model: {OTHER_MODEL}\nsystem: Be brief.\nparams: {{temperature: 0.3}}\nmessages:\n  - user: hi\n",
    )
    saved = tmp_path / "saved.yaml"
    result = run("chat", "-f", talk, "--save", saved)
    assert result.exit_code == 0, result.stderr
    assert yaml.safe_load(saved.read_text()) == {
        "model": OTHER_MODEL,
        "system": "Be brief.",
        "params": {"temperature": 0.3},
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "echo: hi"}],
    }


@pytest.mark.parametrize("flags", [["--json"], ["--json", "--stream"], ["--no-stream"]])
def test_chat_save_in_other_output_modes(run, gateway, tmp_path, flags):
    talk = tmp_path / "talk.yaml"
    run("chat", *flags, "--save", talk, "hi")
    assert yaml.safe_load(talk.read_text())["messages"][-1] == {"role": "assistant", "content": "echo: hi"}


def test_a_failed_request_leaves_the_saved_conversation_alone(run, gateway, tmp_path):
    talk = write(tmp_path / "talk.yaml", "- user: hi\n- assistant: hello\n")
    before = talk.read_text()
    gateway.script(Json(error_body("boom"), status=500))
    result = run("chat", "--retries", "0", "-f", talk, "--save", talk, "more")
    assert result.exit_code == 1
    assert talk.read_text() == before


def test_dry_run_does_not_save(run, gateway, tmp_path):
    talk = tmp_path / "talk.yaml"
    assert run("chat", "--dry-run", "--save", talk, "hi").exit_code == 0
    assert not talk.exists()


def test_chat_images_are_relative_to_the_file(run, gateway, tmp_path, monkeypatch):
    folder = tmp_path / "talks"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(b"\xff\xd8\xffjpeg")
    talk = write(folder / "talk.yaml", "- user: what is this?\n  images: [photo.jpg, https://example.com/a.png]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    saved = elsewhere / "saved.yaml"
    result = run("chat", "-f", talk, "--save", saved)
    assert result.exit_code == 0, result.stderr
    assert sent(gateway)["messages"][0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {
            "type": "image_url",
            "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xffjpeg").decode()},
        },
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
    ]
    first = yaml.safe_load(saved.read_text())["messages"][0]
    assert first["images"] == [os.path.join("..", "talks", "photo.jpg"), "https://example.com/a.png"]


def test_chat_image_flag_attaches_to_the_prompt(run, gateway, tmp_path):
    (tmp_path / "p.webp").write_bytes(b"RIFFwebp")
    result = run("chat", "-i", tmp_path / "p.webp", "look")
    assert result.exit_code == 0, result.stderr
    parts = sent(gateway)["messages"][-1]["content"]
    assert parts[1]["image_url"]["url"].startswith("data:image/webp;base64,")


@pytest.mark.parametrize(
    "text, words",
    [
        ("- user: hi\n\tbad\n", "talk.yaml:2"),
        ("- {role: robot, content: x}\n", "unknown role"),
        ("42\n", "expected a list"),
    ],
)
def test_chat_bad_file_is_a_usage_error(run, gateway, tmp_path, text, words):
    talk = write(tmp_path / "talk.yaml", text)
    result = run("chat", "-f", talk)
    assert result.exit_code == 2
    assert_one_error(result, words)
    assert gateway.requests == []


# --- config file and profiles ----------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path, gateway):
    """Writes the default config file (XDG_CONFIG_HOME is tmp_path/xdg) with a given mode."""

    def make(text: str, mode: int = 0o600):
        path = tmp_path / "xdg" / "anyfast" / "config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("GATEWAY", gateway.url))
        path.chmod(mode)
        return path

    return make


PROFILES = """\
profile: default
profiles:
  default:
    base_url: GATEWAY
    model: profile-model
    api_key: sk-from-profile
    temperature: 0.3
  other:
    base_url: GATEWAY
    model: other-model
    api_key_env: OTHER_KEY
"""


def test_profile_supplies_url_key_model_and_body_defaults(run, gateway, config_file):
    config_file(PROFILES)
    result = run("complete", "hi", key=None, ANYFAST_BASE_URL=None)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "echo: hi\n", "")
    request = gateway.requests[-1]
    assert request.headers["authorization"] == "Bearer sk-from-profile"
    assert request.body["model"] == "profile-model"
    assert request.body["temperature"] == 0.3


@pytest.mark.parametrize("how", ["flag", "env"])
def test_named_profile(run, gateway, config_file, how):
    config_file(PROFILES)
    env = {"ANYFAST_PROFILE": "other"} if how == "env" else {}
    args = ["--profile", "other"] if how == "flag" else []
    result = run("complete", *args, "hi", key=None, ANYFAST_BASE_URL=None, OTHER_KEY="sk-other", **env)
    assert result.exit_code == 0, result.stderr
    request = gateway.requests[-1]
    assert request.headers["authorization"] == "Bearer sk-other"
    assert request.body["model"] == "other-model"
    assert "temperature" not in request.body


@pytest.mark.parametrize(
    "args, env, expected",
    [
        (["-m", "flag-model"], {"ANYFAST_MODEL": "env-model"}, "flag-model"),
        ([], {"ANYFAST_MODEL": "env-model"}, "env-model"),
        ([], {}, "profile-model"),
    ],
)
def test_flags_beat_env_beat_profile(run, gateway, config_file, args, env, expected):
    config_file(PROFILES)
    result = run("complete", *args, "hi", **env)
    assert result.exit_code == 0, result.stderr
    assert sent(gateway)["model"] == expected
    assert gateway.requests[-1].headers["authorization"] == f"Bearer {KEY}"  # env key beats profile key


def test_missing_named_profile_is_a_usage_error(run, gateway, config_file):
    config_file(PROFILES)
    result = run("complete", "--profile", "nope", "hi")
    assert result.exit_code == 2
    assert_one_error(result, "no profile 'nope'")
    assert gateway.requests == []


def test_broken_config_names_file_and_line(run, gateway, config_file):
    path = config_file("profiles:\n  default:\n    model: [oops\n  other: {}\n")
    result = run("complete", "hi")
    assert result.exit_code == 2
    assert_one_error(result, f"{path}:4")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_config_named_by_flag_or_env(run, gateway, tmp_path, how):
    path = write(tmp_path / "mine.yaml", "profiles:\n  default:\n    model: named-config-model\n")
    args = ["--config", path] if how == "flag" else []
    env = {"ANYFAST_CONFIG": str(path)} if how == "env" else {}
    result = run("complete", *args, "hi", **env)
    assert result.exit_code == 0, result.stderr
    assert sent(gateway)["model"] == "named-config-model"


@pytest.mark.parametrize(
    "mode, warned",
    [(0o600, False), (0o400, False), (0o640, True), (0o644, True), (0o604, True)],
    ids=oct,
)
def test_a_readable_config_holding_a_key_gets_a_warning(run, gateway, config_file, mode, warned):
    path = config_file(PROFILES, mode)
    result = run("complete", "hi")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "echo: hi\n"
    warnings = [line for line in result.stderr.splitlines() if line.startswith("anyfast: warning:")]
    if warned:
        assert len(warnings) == 1 and str(path) in warnings[0] and "chmod 600" in warnings[0]
    else:
        assert warnings == []
    assert "sk-from-profile" not in result.stderr


def test_a_readable_config_without_a_key_is_not_warned_about(run, gateway, config_file):
    config_file("profiles:\n  default:\n    api_key_env: OTHER_KEY\n    model: m\n", 0o644)
    result = run("complete", "hi")
    assert result.stderr == ""
