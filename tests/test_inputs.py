"""Prompt rules, conversation files and attachments -> messages."""

from __future__ import annotations

import base64
import json

import pytest

from anyfast_cli.attachments import IMAGE_MAX_BYTES, load_media
from anyfast_cli.errors import ExitCode, UsageError
from anyfast_cli.inputs import (
    Conversation,
    build_prompt,
    parse_conversation,
    render_conversation,
    to_api_message,
    with_system,
)

# --- complete's prompt ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, stdin, expected",
    [
        (["hello"], None, "hello"),
        (["hello", "world"], None, "hello world"),
        (["Write a commit message:"], "diff --git a b\n+x\n", "Write a commit message:\n\ndiff --git a b\n+x"),
        ([], "piped question\n", "piped question"),
        ([], "line one\r\nline two\r\n", "line one\r\nline two"),
        (["-"], "only stdin\n", "only stdin"),
        (["-"], "\ufeffwith a byte-order mark\n", "with a byte-order mark"),
        (["hello"], "", "hello"),  # empty stdin adds nothing
        (["hello"], "  \n\n", "hello"),  # blank stdin adds nothing
        (["hello"], None, "hello"),  # closed stdin or a terminal
        (["  spaced  "], None, "  spaced  "),
    ],
)
def test_build_prompt(args, stdin, expected):
    assert build_prompt(args, stdin) == expected


def test_dash_mixed_with_words_is_a_usage_error():
    with pytest.raises(UsageError) as raised:
        build_prompt(["translate", "-", "please"], "bonjour\n")
    assert "standard input alone" in raised.value.message


@pytest.mark.parametrize(
    "args, stdin",
    [([], None), ([], ""), ([], " \n"), (["-"], None), (["-"], ""), ([""], None), (["  "], "\n")],
)
def test_no_prompt_is_a_usage_error(args, stdin):
    with pytest.raises(UsageError) as raised:
        build_prompt(args, stdin)
    assert raised.value.exit_code == ExitCode.USAGE
    assert "no prompt" in raised.value.message


# --- chat -f files -------------------------------------------------------------------------

LIST_YAML = """\
- role: system
  content: You are terse.
- role: user
  content: hi
- role: assistant
  content: hello
- user: and now?
"""

MAPPING_YAML = """\
model: doubao-seed-1-6-251015
system: Be brief.
params:
  temperature: 0.2
  thinking: {type: disabled}
messages:
  - user: What is on this picture?
    images: [photo.jpg, https://example.com/a.png]
  - assistant: A cat.
"""


def test_list_form():
    conversation = parse_conversation(LIST_YAML, "talk.yaml")
    assert conversation == Conversation(
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "and now?"},
        ]
    )


def test_mapping_form_with_images():
    conversation = parse_conversation(MAPPING_YAML, "talk.yaml")
    assert conversation.model == "doubao-seed-1-6-251015"
    assert conversation.system == "Be brief."
    assert conversation.params == {"temperature": 0.2, "thinking": {"type": "disabled"}}
    assert conversation.messages == [
        {"role": "user", "content": "What is on this picture?", "images": ["photo.jpg", "https://example.com/a.png"]},
        {"role": "assistant", "content": "A cat."},
    ]


def test_json_is_read_as_well():
    text = json.dumps(
        {"messages": [{"user": "hi"}, {"role": "assistant", "content": [{"type": "text", "text": "yo"}]}]}
    )
    assert parse_conversation(text, "t.json").messages == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "yo"}]},
    ]


@pytest.mark.parametrize(
    "item, expected",
    [
        ({"user": "hi"}, {"role": "user", "content": "hi"}),
        ({"assistant": "yo"}, {"role": "assistant", "content": "yo"}),
        ({"system": "terse"}, {"role": "system", "content": "terse"}),
        ({"user": 42}, {"role": "user", "content": "42"}),  # a YAML number is meant as text
        ({"user": "look", "images": "a.png"}, {"role": "user", "content": "look", "images": ["a.png"]}),
        ({"user": "x", "images": []}, {"role": "user", "content": "x"}),
        (
            {"role": "tool", "content": "{}", "tool_call_id": "c1"},
            {"role": "tool", "content": "{}", "tool_call_id": "c1"},
        ),
        ({"role": "assistant", "tool_calls": [{"id": "c1"}]}, {"role": "assistant", "tool_calls": [{"id": "c1"}]}),
    ],
    ids=repr,
)
def test_message_forms(item, expected):
    assert parse_conversation(json.dumps([item]), "f").messages == [expected]


def test_empty_file_is_an_empty_conversation():
    assert parse_conversation("", "f") == Conversation()


@pytest.mark.parametrize(
    "text, words",
    [
        ("just a string", "expected a list of messages"),
        ("[hi]", "message 1"),
        ("- {user: a, assistant: b}", "message 1"),
        ("- {content: hi}", "message 1"),
        ("- {user: a}\n- {role: robot, content: x}", "message 2: unknown role"),
        ("- {role: user}", "has no content"),
        ("- {user: a, images: [1, 2]}", "images"),
        ("messages: {user: hi}", "'messages' must be a list"),
        ("model: m\nmesages: []", "unknown key"),
        ("params: [1]\nmessages: []", "params"),
        ("model: 5\nmessages: []", "'model' must be a string"),
        ("- user: a\n- user: b: c\n- user: d\n", "talk.yaml:2:"),
        ("- user: a\n- user: b\n  role: x\n - bad\n", "talk.yaml:4:"),
    ],
)
def test_bad_conversation_files(text, words):
    with pytest.raises(UsageError) as raised:
        parse_conversation(text, "talk.yaml")
    assert raised.value.exit_code == ExitCode.USAGE
    assert "talk.yaml" in raised.value.message
    assert words in raised.value.message


def test_broken_yaml_names_file_and_line():
    with pytest.raises(UsageError) as raised:
        parse_conversation("- user: a\n\tbad\n", "talk.yaml")
    assert raised.value.message.startswith("talk.yaml:2: invalid YAML")


@pytest.mark.parametrize(
    "messages, system, expected",
    [
        ([{"role": "user", "content": "q"}], None, [{"role": "user", "content": "q"}]),
        (
            [{"role": "user", "content": "q"}],
            "S",
            [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}],
        ),
        (
            [{"role": "system", "content": "old"}, {"role": "user", "content": "q"}],
            "new",
            [{"role": "system", "content": "new"}, {"role": "user", "content": "q"}],
        ),
    ],
)
def test_with_system(messages, system, expected):
    assert with_system(messages, system) == expected


def test_to_api_message_turns_images_into_parts():
    message = {"role": "user", "content": "what?", "images": ["a.png"]}
    assert to_api_message(message, ["data:image/png;base64,AA"]) == {
        "role": "user",
        "content": [
            {"type": "text", "text": "what?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
        ],
    }
    assert to_api_message({"role": "user", "content": "plain"}, []) == {"role": "user", "content": "plain"}


def test_render_conversation_round_trips():
    conversation = parse_conversation(MAPPING_YAML, "talk.yaml")
    conversation.messages.append({"role": "user", "content": "multi\nline \u00e9 \u2028"})
    again = parse_conversation(render_conversation(conversation), "saved.yaml")
    assert again == conversation


# --- attachments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, mime",
    [
        ("a.png", "image/png"),
        ("b.jpg", "image/jpeg"),
        ("c.JPEG", "image/jpeg"),
        ("d.webp", "image/webp"),
        ("e.gif", "image/gif"),
    ],
)
def test_image_files_become_data_uris_with_their_mime_type(tmp_path, name, mime):
    data = bytes(range(256))
    (tmp_path / name).write_bytes(data)
    uri = load_media(str(tmp_path / name), "image")
    prefix = f"data:{mime};base64,"
    assert uri.startswith(prefix)
    assert base64.b64decode(uri[len(prefix) :]) == data


@pytest.mark.parametrize("url", ["https://example.com/a.png", "http://example.com/x", "data:image/png;base64,AAAA"])
def test_urls_pass_through(url):
    assert load_media(url, "image") == url


def test_attachment_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    big = tmp_path / "big.png"
    with open(big, "wb") as handle:
        handle.truncate(IMAGE_MAX_BYTES + 1)
    for ref, words in [
        (str(tmp_path / "notes.txt"), "not a known image type"),
        (str(tmp_path / "missing.png"), "cannot read image"),
        (str(big), "MiB limit"),
    ]:
        with pytest.raises(UsageError) as raised:
            load_media(ref, "image")
        assert words in raised.value.message
        assert raised.value.exit_code == ExitCode.USAGE
