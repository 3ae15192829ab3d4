"""Request bodies: only the fields the user set, -p parsing, --stop, range checks."""

from __future__ import annotations

import pytest
from helpers import OTHER_MODEL

from anyfast_cli.commands.common import body_fields
from anyfast_cli.errors import ExitCode, UsageError
from anyfast_cli.inputs import parse_param
from anyfast_cli.request import (
    RequestFlags,
    build_body,
    check_fields,
    describe_request,
    endpoint_url,
    user_message,
    video_part,
)
from anyfast_cli.settings import DEFAULT_MODEL, Settings

HI = [{"role": "user", "content": "hi"}]


def settings(model: str = DEFAULT_MODEL, **body_defaults) -> Settings:
    return Settings(base_url="http://x/v1", model=model, timeout=None, retries=2, key=None, body_defaults=body_defaults)


def test_nothing_set_sends_only_model_messages_stream():
    fields = body_fields(settings(), RequestFlags())
    assert fields == {}
    assert build_body(DEFAULT_MODEL, HI, fields, stream=True) == {
        "model": DEFAULT_MODEL,
        "messages": HI,
        "stream": True,
    }


@pytest.mark.parametrize(
    "flags, expected",
    [
        (RequestFlags(max_tokens=100), {"max_tokens": 100}),
        (RequestFlags(temperature=0.0), {"temperature": 0.0}),  # zero is a value, not "unset"
        (
            RequestFlags(top_p=0.9, frequency_penalty=-1.5, presence_penalty=2.0),
            {"top_p": 0.9, "frequency_penalty": -1.5, "presence_penalty": 2.0},
        ),
        (RequestFlags(stop=("END",)), {"stop": "END"}),
        (RequestFlags(stop=("a", "b")), {"stop": ["a", "b"]}),
        (RequestFlags(params=("reasoning_effort=low",)), {"reasoning_effort": "low"}),
        (RequestFlags(params=('thinking={"type":"disabled"}',)), {"thinking": {"type": "disabled"}}),
        (RequestFlags(params=("max_tokens=50",), max_tokens=60), {"max_tokens": 60}),  # the dedicated flag wins
        (RequestFlags(system="be terse", images=("x.png",)), {}),  # not body fields
    ],
)
def test_flag_fields(flags, expected):
    assert body_fields(settings(), flags) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("reasoning_effort=low", ("reasoning_effort", "low")),
        ("n=3", ("n", 3)),
        ("temperature=0.5", ("temperature", 0.5)),
        ("logprobs=true", ("logprobs", True)),
        ("seed=null", ("seed", None)),
        ('thinking={"type": "enabled"}', ("thinking", {"type": "enabled"})),
        ('stop=["a","b"]', ("stop", ["a", "b"])),
        ('user="42"', ("user", "42")),  # JSON string: quoted numbers stay text
        ("text=a=b", ("text", "a=b")),  # only the first = splits
        ("empty=", ("empty", "")),
        (" key =x", ("key", "x")),
        ("response_format={broken", ("response_format", "{broken")),  # not JSON: a string
    ],
)
def test_parse_param(text, expected):
    assert parse_param(text) == expected


@pytest.mark.parametrize("text", ["novalue", "=x", ""])
def test_parse_param_needs_key_and_equals(text):
    with pytest.raises(UsageError) as raised:
        parse_param(text)
    assert raised.value.exit_code == ExitCode.USAGE


def test_rank_profile_then_file_then_param_then_flag():
    fields = body_fields(
        settings(temperature=0.1, top_p=0.1, presence_penalty=0.1, max_tokens=10),
        RequestFlags(params=("top_p=0.3", "presence_penalty=0.3"), presence_penalty=0.4),
        {"top_p": 0.2, "presence_penalty": 0.2, "max_tokens": 20},
    )
    assert fields == {"temperature": 0.1, "top_p": 0.3, "presence_penalty": 0.4, "max_tokens": 20}


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 0},
        {"temperature": 2},
        {"temperature": 1.3},
        {"top_p": 0},
        {"top_p": 1},
        {"frequency_penalty": -2},
        {"frequency_penalty": 2},
        {"presence_penalty": -2},
        {"presence_penalty": 2},
        {"max_tokens": 1},
        {"max_tokens": 8192},
        {"stop": "x"},
        {"stop": ["x", "y"]},
        {"stop": []},
        {"thinking": {"type": "enabled"}},
        {"thinking": {"type": "disabled"}},
        {"reasoning_effort": "low", "tools": [], "response_format": {"type": "json_object"}},
    ],
    ids=repr,
)
def test_values_in_range_pass(fields):
    check_fields(fields, DEFAULT_MODEL)


@pytest.mark.parametrize(
    "fields, model, words",
    [
        ({"temperature": -0.1}, DEFAULT_MODEL, "temperature"),
        ({"temperature": 2.01}, DEFAULT_MODEL, "temperature"),
        ({"temperature": "hot"}, DEFAULT_MODEL, "temperature"),
        ({"temperature": float("nan")}, DEFAULT_MODEL, "temperature"),
        ({"temperature": True}, DEFAULT_MODEL, "temperature"),
        ({"top_p": 1.5}, DEFAULT_MODEL, "top_p"),
        ({"top_p": -0.01}, DEFAULT_MODEL, "top_p"),
        ({"frequency_penalty": -2.5}, DEFAULT_MODEL, "frequency_penalty"),
        ({"presence_penalty": 3}, DEFAULT_MODEL, "presence_penalty"),
        ({"max_tokens": 0}, DEFAULT_MODEL, "max_tokens"),
        ({"max_tokens": -5}, OTHER_MODEL, "max_tokens"),
        ({"max_tokens": 1.5}, OTHER_MODEL, "max_tokens"),
        ({"max_tokens": "100"}, OTHER_MODEL, "max_tokens"),
        ({"max_tokens": 8193}, DEFAULT_MODEL, "8192"),
        ({"max_completion_tokens": "lots"}, OTHER_MODEL, "max_completion_tokens"),  # was int()'s ValueError in --tpm
        ({"max_completion_tokens": 1e300}, OTHER_MODEL, "max_completion_tokens"),
        ({"max_completion_tokens": 8193}, DEFAULT_MODEL, "8192"),
        ({"stop": 5}, DEFAULT_MODEL, "stop"),
        ({"stop": ["a", 1]}, DEFAULT_MODEL, "stop"),
        ({"stream": False}, DEFAULT_MODEL, "stream"),
        ({"model": "x"}, DEFAULT_MODEL, "model"),
        ({"messages": []}, DEFAULT_MODEL, "messages"),
        ({"thinking": "on"}, DEFAULT_MODEL, "thinking"),
        ({"thinking": {"type": "maybe"}}, DEFAULT_MODEL, "thinking"),
    ],
    ids=repr,
)
def test_out_of_range_is_a_usage_error(fields, model, words):
    with pytest.raises(UsageError) as raised:
        check_fields(fields, model)
    assert raised.value.exit_code == ExitCode.USAGE == 2
    assert words in raised.value.message


@pytest.mark.parametrize("model", [OTHER_MODEL, "glm-4-7-251222", "doubao-seed-2.0-pro"])
def test_max_tokens_over_8192_is_fine_for_other_models(model):
    check_fields({"max_tokens": 32768}, model)


def test_range_check_runs_on_flags_params_and_profile_defaults():
    with pytest.raises(UsageError):
        body_fields(settings(), RequestFlags(max_tokens=9000))
    with pytest.raises(UsageError):
        body_fields(settings(), RequestFlags(params=("temperature=5",)))
    with pytest.raises(UsageError):
        body_fields(settings(top_p=3), RequestFlags())
    assert body_fields(settings(OTHER_MODEL), RequestFlags(max_tokens=9000)) == {"max_tokens": 9000}


def test_build_body_stream_and_usage():
    body = build_body("m", HI, {"temperature": 0.2}, stream=True, include_usage=True)
    assert body == {
        "model": "m",
        "messages": HI,
        "temperature": 0.2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    # no stream_options on a whole response, where usage always comes
    assert "stream_options" not in build_body("m", HI, {}, stream=False, include_usage=True)
    assert "stream_options" not in build_body("m", HI, {}, stream=True, include_usage=False)


def test_build_body_keeps_the_users_stream_options():
    body = build_body("m", HI, {"stream_options": {"chunk_size": 3}}, stream=True, include_usage=True)
    assert body["stream_options"] == {"chunk_size": 3, "include_usage": True}


def test_build_body_needs_messages():
    with pytest.raises(UsageError):
        build_body("m", [], {}, stream=False)


def test_user_message_forms():
    assert user_message("hi") == {"role": "user", "content": "hi"}
    assert user_message("look", ["https://x/a.png", "data:image/png;base64,AAAA"]) == {
        "role": "user",
        "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "https://x/a.png"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ],
    }
    video = video_part("https://x/v.mp4", fps=2)
    assert video == {"type": "video_url", "video_url": {"url": "https://x/v.mp4", "fps": 2}}
    assert user_message("", [], [video])["content"] == [video]


@pytest.mark.parametrize(
    "base, url",
    [
        ("https://www.anyfast.ai/v1", "https://www.anyfast.ai/v1/chat/completions"),
        ("https://www.anyfast.ai/v1/", "https://www.anyfast.ai/v1/chat/completions"),
        ("http://127.0.0.1:8000/v1//", "http://127.0.0.1:8000/v1/chat/completions"),
    ],
)
def test_endpoint_url(base, url):
    assert endpoint_url(base) == url


def test_describe_request_redacts_the_key():
    described = describe_request("https://h/v1", {"model": "m"})
    assert described == {
        "method": "POST",
        "url": "https://h/v1/chat/completions",
        "headers": {"Authorization": "Bearer ***", "Content-Type": "application/json"},
        "body": {"model": "m"},
    }
