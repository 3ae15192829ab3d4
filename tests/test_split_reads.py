"""What a user sees does not depend on where TCP split the bytes (issue 15, class 1).

The same answer bytes go out through the loopback gateway in one piece and in several (each
an HTTP chunk, which the client reads as a read of its own), and every command must show the
same: what came before a bad event is printed and flushed (text, reasoning, `--json --stream`
lines), then the failure. The exchange's own table (every split point) is in test_exchange.py.
"""

from __future__ import annotations

import json

import pytest
import yaml
from gateway import Sse, chunk, completion, sse_events
from helpers import parse_lines

ERROR = {"error": {"message": "upstream overloaded", "type": "new_api_error", "code": "upstream_error"}}
USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
NULL_CHOICES = {"id": "", "object": "chat.completion.chunk", "created": 0, "model": "", "choices": None, "usage": USAGE}
TOOL = chunk()
TOOL["choices"][0]["delta"] = {
    "tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{}"}}]
}

WORDS = [f"w{i} " for i in range(200)]

# name -> (the stream's events, what `complete` prints, its exit status)
STREAMS = {
    "content then an error event": ([chunk("Hello"), ERROR], "Hello\n", 1),
    "200 contents then an error event": ([chunk(word) for word in WORDS] + [ERROR], "".join(WORDS) + "\n", 1),
    "reasoning, content, a tool call, an error": (
        [chunk(reasoning="thinking"), chunk("Hello"), TOOL, ERROR],
        "Hello\n",
        1,
    ),
    "a null-choices usage chunk (new-api)": (
        [chunk("Hello"), chunk(finish="stop"), NULL_CHOICES, "[DONE]"],
        "Hello\n",
        0,
    ),
    "content then a chunk that is not one": ([chunk("Hello"), {"choices": [1]}], "Hello\n", 1),
}


def body_of(events) -> bytes:
    return b"".join(sse_events(*events, done=False))


def splits(events) -> dict:
    """The same bytes: in one write, one event a write, and cut every 7 bytes."""
    body = body_of(events)
    return {
        "one write": [body],
        "an event a write": [body_of([event]) for event in events],
        "every 7 bytes": [body[i : i + 7] for i in range(0, len(body), 7)],
    }


def outcomes(run, gateway, events, *args, check=None) -> dict:
    """For each way of splitting the bytes: (exit status, stdout, stderr, and what `check` says)."""
    seen = {}
    for way, pieces in splits(events).items():
        gateway.script(Sse(pieces))
        result = run(*args)
        assert "internal error" not in result.stderr, result.stderr
        seen[way] = (result.exit_code, result.stdout, result.stderr, check() if check else None)
    return seen


def assert_all_the_same(seen: dict):
    first = next(iter(seen.values()))
    for way, outcome in seen.items():
        assert outcome == first, f"{way}: {outcome!r} != {first!r}"
    return first


@pytest.mark.parametrize("name", STREAMS)
def test_complete_prints_the_same_however_the_bytes_were_split(run, gateway, name):
    events, printed, status = STREAMS[name]
    code, stdout, stderr, _ = assert_all_the_same(outcomes(run, gateway, events, "complete", "-n", "--reasoning", "hi"))
    assert (code, stdout) == (status, printed), stderr
    if status:
        assert stderr.splitlines()[-1].startswith("anyfast: error: ")
    if "reasoning" in name:
        assert stderr.startswith("thinking\n")


@pytest.mark.parametrize("name", STREAMS)
def test_json_stream_lines_are_the_same_however_the_bytes_were_split(run, gateway, name):
    events, _, status = STREAMS[name]
    code, stdout, stderr, _ = assert_all_the_same(
        outcomes(run, gateway, events, "complete", "-n", "--json", "--stream", "hi")
    )
    assert code == status, stderr
    good = [
        event for event in events if isinstance(event, dict) and "error" not in event and event.get("choices") != [1]
    ]
    assert parse_lines(stdout) == good  # every chunk before the bad event, as received


@pytest.mark.parametrize("name", ["content then an error event", "a null-choices usage chunk (new-api)"])
def test_chat_save_is_the_same_however_the_bytes_were_split(run, gateway, tmp_path, name):
    events, printed, status = STREAMS[name]
    talk = tmp_path / "talk.yaml"
    talk.write_text("messages:\n  - user: earlier\n  - assistant: fine\n")
    saved = tmp_path / "saved.yaml"

    def saved_text():
        text = saved.read_text() if saved.exists() else None
        saved.unlink(missing_ok=True)
        return text

    code, stdout, stderr, text = assert_all_the_same(
        outcomes(run, gateway, events, "chat", "-n", "-f", talk, "--save", saved, "hi", check=saved_text)
    )
    assert (code, stdout) == (status, printed), stderr
    if status == 0:
        assert yaml.safe_load(text)["messages"][-1] == {"role": "assistant", "content": "Hello"}
    else:
        assert text is None  # a failed answer is not saved, however it was split


# --- a one-record batch: its answers are whole, read the same way however they were split ---------


def whole(body: dict) -> bytes:
    return json.dumps(body).encode()


NULL_ANSWER = {"id": "c", "object": "chat.completion", "choices": None, "usage": USAGE}
ANSWERS = {
    "an answer": (whole(completion("Hello")), None),
    "an error object in a 200": (whole(ERROR), "upstream_error"),
    "choices null (new-api)": (whole(NULL_ANSWER), "invalid_response"),
}


@pytest.mark.parametrize("name", ANSWERS)
def test_a_batch_line_is_the_same_however_the_bytes_were_split(run, gateway, name):
    body, code = ANSWERS[name]
    headers = {"Content-Type": "application/json", "x-request-id": "req-fixed"}
    seen = {}
    for way, pieces in {
        "one write": [body],
        "every 7 bytes": [body[i : i + 7] for i in range(0, len(body), 7)],
    }.items():
        gateway.script(Sse(pieces, headers=headers))
        result = run("batch", "--retries", "0", input='"hi"\n')
        assert "internal error" not in result.stderr, result.stderr
        seen[way] = (result.exit_code, parse_lines(result.stdout))
    status, [line] = assert_all_the_same(seen)
    assert status == (0 if code is None else 6)
    assert (line["error"] or {}).get("code") == code
