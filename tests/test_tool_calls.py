"""Tool calls and several choices (issue 11, parts 2 and 3), against the loopback gateway:
one JSON line per call on stdout, byte-exact, exit 8; --tools/--tool-choice in the body;
chat --save and --tool-result; n > 1 printed in full; batch's --fail-on-tool-calls."""

from __future__ import annotations

import json
import re

import pytest
from gateway import Json, Sse, sse_events
from helpers import parse_lines

from anyfast_cli.exchange import Reply

ARGS_A = '{"city": "Oslo", "unit": "c\\u00e9lsius"}'  # the escape must reach stdout as it was sent
ARGS_B = '{"q":"naïve \\"quoted\\""}'
CALL_A = {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ARGS_A}}
CALL_B = {"id": "call_b", "type": "function", "function": {"name": "search", "arguments": ARGS_B}}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}},
]


def delta_chunk(delta: dict, finish=None, index: int = 0) -> dict:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }


def whole(message: dict, finish="tool_calls", index=0, more=()) -> dict:
    choices = [{"index": index, "message": {"role": "assistant", **message}, "finish_reason": finish}, *more]
    return {"id": "c", "object": "chat.completion", "model": "m", "choices": choices}


def streamed_calls(finish, *, indexes=(0, 1), interleave=False, text=None) -> list[dict]:
    """Two calls, each in pieces: first id/type/name, then the arguments in three pieces."""
    chunks = [delta_chunk({"role": "assistant", "content": None})]
    if text:
        chunks.append(delta_chunk({"content": text}))

    def piece(i, **fields):
        p = dict(fields)
        if indexes[i] is not None:
            p["index"] = indexes[i]
        return delta_chunk({"tool_calls": [p]})

    def opening(i, call):
        return piece(i, id=call["id"], type="function", function={"name": call["function"]["name"], "arguments": ""})

    def args(i, call):
        a = call["function"]["arguments"]
        return [piece(i, function={"arguments": a[k : k + 7]}) for k in range(0, len(a), 7)]

    a, b = args(0, CALL_A), args(1, CALL_B)
    if interleave:
        chunks += [opening(0, CALL_A), opening(1, CALL_B)]
        assert indexes[0] != indexes[1] or None in indexes  # interleaving needs told-apart indexes
        for x, y in zip(a, b):
            chunks += [x, y]
        chunks += a[len(b) :] + b[len(a) :]
    else:
        chunks += [opening(0, CALL_A), *a, opening(1, CALL_B), *b]
    chunks.append(delta_chunk({}, finish=finish))
    return chunks


def call_lines(stdout: str) -> list:
    return parse_lines(stdout)


def expected_stdout() -> str:
    return "".join(json.dumps(c, ensure_ascii=False, separators=(",", ":")) + "\n" for c in (CALL_A, CALL_B))


@pytest.mark.parametrize("finish", ["tool_calls", "stop", None])
@pytest.mark.parametrize(
    "indexes,interleave", [((0, 1), False), ((0, 1), True), ((0, 0), False), ((None, None), False)]
)
def test_streamed_tool_calls_are_one_exact_line_each_and_exit_8(run, gateway, finish, indexes, interleave):
    gateway.script(Sse(sse_events(*streamed_calls(finish, indexes=indexes, interleave=interleave))))
    result = run("complete", "-n", "weather?")
    assert result.exit_code == 8, result.stderr
    assert result.stdout == expected_stdout()
    assert call_lines(result.stdout)[0]["function"]["arguments"] == ARGS_A
    assert "tools" not in gateway.requests[-1].body  # nothing tool-related unless declared


@pytest.mark.parametrize("finish", ["tool_calls", "stop", None])
def test_whole_tool_calls_print_the_same_lines(run, gateway, finish):
    gateway.script(Json(whole({"content": None, "tool_calls": [CALL_A, CALL_B]}, finish)))
    result = run("complete", "-n", "--no-stream", "weather?")
    assert result.exit_code == 8, result.stderr
    assert result.stdout == expected_stdout()


def test_text_with_tool_calls_goes_to_stderr(run, gateway, tmp_path):
    tools = tmp_path / "tools.yaml"
    tools.write_text(
        "- type: function\n  function: {name: get_weather, parameters: {type: object}}\n"
        "- {name: search, parameters: {type: object}}\n"
    )  # a bare function is wrapped
    gateway.script(
        Sse(sse_events(*streamed_calls("tool_calls", text="Let me look that up."))),
        Json(whole({"content": "Checking.", "tool_calls": [CALL_A, CALL_B]})),
    )
    result = run("complete", "-n", "--tools", tools, "--tool-choice", "required", "weather?")
    assert result.exit_code == 8, result.stderr
    assert result.stdout == expected_stdout()
    assert "Let me look that up.\n" in result.stderr
    body = gateway.requests[-1].body
    assert body["tools"] == TOOLS and body["tool_choice"] == "required"
    result = run("complete", "-n", "--no-stream", "--tools", tools, "--tool-choice", "search", "weather?")
    assert result.exit_code == 8 and result.stdout == expected_stdout()
    assert "Checking.\n" in result.stderr
    assert gateway.requests[-1].body["tool_choice"] == {"type": "function", "function": {"name": "search"}}


def test_tools_declared_but_a_plain_answer_is_printed_on_stdout(run, gateway, tmp_path):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(TOOLS))
    gateway.script(Sse(sse_events(delta_chunk({"content": "It is "}), delta_chunk({"content": "sunny."}, "stop"))))
    result = run("complete", "-n", "--tools", tools, "weather?")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "It is sunny.\n"


def test_bad_tool_flags_are_exit_2_with_nothing_sent(run, gateway, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tools: 3\n")
    assert run("complete", "-n", "--tools", bad, "hi").exit_code == 2
    assert run("complete", "-n", "--tool-choice", "auto", "hi").exit_code == 2  # no tools declared
    good = tmp_path / "tools.json"
    good.write_text(json.dumps(TOOLS))
    assert run("complete", "-n", "--tools", good, "--tool-choice", "nosuch", "hi").exit_code == 2
    assert gateway.requests == []


def test_json_output_keeps_the_response_and_still_exits_8(run, gateway):
    gateway.script(Json(whole({"content": None, "tool_calls": [CALL_A]})))
    result = run("complete", "-n", "--json", "weather?")
    assert result.exit_code == 8
    assert json.loads(result.stdout)["choices"][0]["message"]["tool_calls"] == [CALL_A]


def test_save_and_tool_result_round_trip(run, gateway, tmp_path):
    import yaml

    tools = tmp_path / "tools.yaml"
    tools.write_text(yaml.safe_dump(TOOLS))
    talk = tmp_path / "t.yaml"
    gateway.script(Sse(sse_events(*streamed_calls("tool_calls"))))
    result = run("chat", "-n", "--tools", tools, "--save", talk, "weather in Oslo?")
    assert result.exit_code == 8, result.stderr
    saved = yaml.safe_load(talk.read_text())
    assert saved["tools"] == TOOLS
    assert saved["messages"][-1] == {"role": "assistant", "content": None, "tool_calls": [CALL_A, CALL_B]}

    # An unanswered call: exit 2, nothing sent.
    before = len(gateway.requests)
    result = run("chat", "-n", "-f", talk, "--save", talk, "--tool-result", "call_a=sunny")
    assert result.exit_code == 2 and "call_b" in result.stderr
    assert run("chat", "-n", "-f", talk, "--tool-result", "call_zz=x").exit_code == 2
    assert len(gateway.requests) == before

    out = tmp_path / "out.json"
    out.write_text('{"hits": 3}\n')
    gateway.script(Json(whole({"content": "Sunny, 3 hits."}, "stop")))
    result = run(
        "chat",
        "-n",
        "-f",
        talk,
        "--save",
        talk,
        "--tool-result",
        "call_a=sunny, 21 C",
        "--tool-result",
        "call_b=@" + str(out),
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Sunny, 3 hits.\n"
    sent = gateway.requests[-1].body
    assert sent["tools"] == TOOLS
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool", "tool"]
    assert sent["messages"][1]["tool_calls"] == [CALL_A, CALL_B]
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "call_a", "content": "sunny, 21 C"}
    assert sent["messages"][3] == {"role": "tool", "tool_call_id": "call_b", "content": '{"hits": 3}\n'}
    saved = yaml.safe_load(talk.read_text())
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant", "tool", "tool", "assistant"]
    assert saved["messages"][-1]["content"] == "Sunny, 3 hits."


def test_a_file_with_an_unanswered_call_and_a_prompt_is_refused(run, gateway, tmp_path):
    talk = tmp_path / "t.json"
    talk.write_text(
        json.dumps(
            {
                "tools": TOOLS,
                "messages": [
                    {"role": "user", "content": "weather?"},
                    {"role": "assistant", "content": None, "tool_calls": [CALL_A]},
                ],
            }
        )
    )
    result = run("chat", "-n", "-f", talk, "never mind")
    assert result.exit_code == 2 and "call_a" in result.stderr
    assert gateway.requests == []


def two_choices_streamed() -> list[dict]:
    return [
        delta_chunk({"role": "assistant"}),
        delta_chunk({"role": "assistant"}, index=1),
        delta_chunk({"content": "answer "}),
        delta_chunk({"content": "one "}, index=1),
        delta_chunk({"content": "zero"}),
        delta_chunk({"content": "one"}, index=1),
        delta_chunk({}, "stop"),
        delta_chunk({}, "stop", index=1),
    ]


def test_two_choices_streamed_and_whole_are_both_printed(run, gateway, tmp_path):
    gateway.script(Sse(sse_events(*two_choices_streamed())))
    result = run("complete", "-n", "-p", "n=2", "hi")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "answer zero\n--- choice 1 ---\none one\n"
    more = [{"index": 1, "message": {"role": "assistant", "content": "answer one\n"}, "finish_reason": "stop"}]
    gateway.script(Json(whole({"content": "answer zero"}, "stop", more=more)))
    result = run("complete", "-n", "--no-stream", "-p", "n=2", "hi")
    assert result.stdout == "answer zero\n--- choice 1 ---\nanswer one\n"
    # --json --stream keeps every chunk
    gateway.script(Sse(sse_events(*two_choices_streamed())))
    result = run("complete", "-n", "--json", "--stream", "-p", "n=2", "hi")
    assert len(parse_lines(result.stdout)) == len(two_choices_streamed())
    # --save keeps choice 0 and says so
    gateway.script(Sse(sse_events(*two_choices_streamed())))
    talk = tmp_path / "t.yaml"
    result = run("chat", "-n", "--save", talk, "-p", "n=2", "hi")
    assert result.exit_code == 0 and "keeps choice 0" in result.stderr
    assert "answer zero" in talk.read_text() and "one one" not in talk.read_text()


def test_reply_tolerates_repeated_ids_and_whole_lists():
    reply = Reply()
    for piece in (
        {"index": 0, "id": "x", "type": "function", "function": {"name": "f", "arguments": "{"}},
        {"index": 0, "id": "x", "function": {"name": "f", "arguments": "}"}},
        {"index": 0, "id": "y", "function": {"name": "g", "arguments": "[]"}},
    ):
        reply.absorb(delta_chunk({"tool_calls": [piece]}))
    assert reply.calls() == [
        {"id": "x", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "y", "type": "function", "function": {"name": "g", "arguments": "[]"}},
    ]
    other = Reply()
    other.absorb(
        whole({"content": None, "tool_calls": [{"id": "z", "function": {"name": "h", "arguments": {"a": 1}}}]})
    )
    assert other.calls() == [{"id": "z", "type": "function", "function": {"name": "h", "arguments": '{"a":1}'}}]


def batch_input(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"custom_id": "a", "prompt": "weather?"}\n{"custom_id": "b", "prompt": "hi"}\n')
    return path


@pytest.mark.parametrize("fail", [False, True])
def test_batch_tool_calls_are_answers_or_with_the_flag_failures(run, gateway, tmp_path, fail):
    gateway.script(Json(whole({"content": None, "tool_calls": [CALL_A]})), Json(whole({"content": "hello"}, "stop")))
    out = tmp_path / "out.jsonl"
    args = ["batch", batch_input(tmp_path), "-o", out, "-j", "1", "--no-progress"]
    result = run(*args, *(["--fail-on-tool-calls"] if fail else []))
    lines = {line["custom_id"]: line for line in parse_lines(out.read_text())}
    assert lines["a"]["response"]["body"]["choices"][0]["message"]["tool_calls"] == [CALL_A]
    assert lines["b"]["error"] is None
    if fail:
        assert result.exit_code == 6, result.stderr
        assert lines["a"]["error"]["code"] == "tool_calls"
    else:
        assert result.exit_code == 0, result.stderr
        assert lines["a"]["error"] is None


@pytest.mark.parametrize("mode", ["auto", "json_object"])
def test_schema_and_tools_an_answer_of_tool_calls_is_exit_8_not_a_schema_failure(run, gateway, tmp_path, mode):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(TOOLS))
    gateway.script(Json(whole({"content": "Checking.", "tool_calls": [CALL_A]}, "tool_calls")))
    result = run("complete", "-n", "--tools", tools, "--schema", "temp float", "--schema-mode", mode, "weather?")
    assert result.exit_code == 8, result.stderr
    assert result.stdout == json.dumps(CALL_A, ensure_ascii=False, separators=(",", ":")) + "\n"
    assert "Checking." in result.stderr and "anyfast: error" not in result.stderr
    assert len(gateway.requests) == 1  # not re-asked as a wrong answer
    assert gateway.requests[0].body["tools"] == TOOLS and "response_format" in gateway.requests[0].body


# --- streamed pieces -> calls (issue 15, class 6): merged by index, split by id -----------------

MADE_ID = r"call_[0-9a-f]{24}"


def opening(index, call_id, name, arguments="") -> dict:
    piece = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    return piece if index is None else {"index": index, **piece}


def more(index, arguments) -> dict:
    piece = {"function": {"arguments": arguments}}
    return piece if index is None else {"index": index, **piece}


def call(call_id, name, arguments) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# (id, streamed pieces in order, the calls they make; None as an id: one anyfast made)
PIECES = [
    (
        "one id shared by two indexes",
        [opening(0, "call_1", "get_weather"), more(0, "{}"), opening(1, "call_1", "get_time"), more(1, "[]")],
        [call("call_1", "get_weather", "{}"), call("call_1", "get_time", "[]")],
    ),
    (
        "one id shared, interleaved",
        [opening(0, "x", "f"), opening(1, "x", "g"), more(1, "[1"), more(0, "{"), more(0, "}"), more(1, "]")],
        [call("x", "f", "{}"), call("x", "g", "[1]")],
    ),
    (
        "every call at index 0: a new id splits",
        [opening(0, "a", "f", "{"), more(0, "}"), opening(0, "b", "g", "["), more(0, "]")],
        [call("a", "f", "{}"), call("b", "g", "[]")],
    ),
    (
        "the id repeated in every piece",
        [opening(0, "a", "f", "{"), {"index": 0, "id": "a", "function": {"arguments": "}"}}],
        [call("a", "f", "{}")],
    ),
    (
        "the name repeated in every piece is kept once",
        [opening(0, "a", "f", "{"), {"index": 0, "function": {"name": "f", "arguments": "}"}}],
        [call("a", "f", "{}")],
    ),
    (
        "arguments before the id and name",
        [more(0, '{"a"'), opening(0, "a", "f", ":1}"), opening(1, "b", "g"), more(1, "{}")],
        [call("a", "f", '{"a":1}'), call("b", "g", "{}")],
    ),
    (
        "arguments before the id, no indexes",
        [more(None, "{"), opening(None, "a", "f", "}"), opening(None, "b", "g", "[]")],
        [call("a", "f", "{}"), call("b", "g", "[]")],
    ),
    (
        "no indexes: a known id continues its call",
        [opening(None, "a", "f"), opening(None, "b", "g"), {"id": "a", "function": {"arguments": "{}"}}],
        [call("a", "f", "{}"), call("b", "g", "")],
    ),
    (
        "an index as a string is the same index",
        [opening("1", "a", "f", "{"), more(1, "}")],
        [call("a", "f", "{}")],
    ),
    (
        "an index that is no number a piece continues the latest call",
        [opening(0, "a", "f", "{"), more("\u00b2", "}"), more("1" * 5000, "")],
        [call("a", "f", "{}")],
    ),
    (
        "an id that is not a string, as text",
        [opening(0, 7, "f", "{}")],
        [call("7", "f", "{}")],
    ),
    (
        "no id at all: one is made for each call",
        [opening(0, None, "f", "{"), more(0, "}"), opening(1, "", "g", "[]")],
        [call(None, "f", "{}"), call(None, "g", "[]")],
    ),
]


@pytest.mark.parametrize("pieces,expected", [case[1:] for case in PIECES], ids=[case[0] for case in PIECES])
def test_streamed_pieces_make_these_calls(pieces, expected):
    reply = Reply()
    for piece in pieces:
        reply.absorb(delta_chunk({"tool_calls": [piece]}))
    calls = reply.calls()
    made = [c["id"] for c, e in zip(calls, expected) if e["id"] is None]
    assert all(re.fullmatch(MADE_ID, i) for i in made) and len(set(made)) == len(made)
    assert [c | {"id": None} if e["id"] is None else c for c, e in zip(calls, expected)] == expected
    assert len(calls) == len(expected)
    assert reply.calls() == calls  # a made id is made once: stdout and --save show the same


def test_whole_calls_keep_duplicate_ids_and_get_made_ids():
    reply = Reply()
    reply.absorb(whole({"content": None, "tool_calls": [CALL_A, {**CALL_B, "id": "call_a"}, {**CALL_B, "id": None}]}))
    calls = reply.calls()
    assert calls[:2] == [CALL_A, {**CALL_B, "id": "call_a"}]
    assert re.fullmatch(MADE_ID, calls[2]["id"]) and calls[2]["function"] == CALL_B["function"]


def pieces_of(body: bytes, how: str) -> list[bytes]:
    if how == "one write":
        return [body]
    if how == "each event":
        return [event + b"\n\n" for event in body.split(b"\n\n") if event]
    return [body[k : k + 3] for k in range(0, len(body), 3)]  # every event torn, ids and names included


@pytest.mark.parametrize("how", ["one write", "each event", "3 bytes"])
def test_streamed_calls_sharing_an_id_or_without_one_print_save_and_answer(run, gateway, tmp_path, how):
    """Two calls that share an id at indexes 0 and 1 (the second's arguments before its name),
    and one without an id: three calls, ids as sent or made, the same on stdout and in --save,
    and each answered by --tool-result."""
    pieces = [
        opening(0, "call_1", "get_weather", '{"city":'),
        more(1, '{"tz":"UTC"}'),
        opening(1, "call_1", "get_time"),
        more(0, '"Oslo"}'),
        opening(2, None, "search", "{}"),
    ]
    chunks = [delta_chunk({"role": "assistant"})] + [delta_chunk({"tool_calls": [p]}) for p in pieces]
    body = b"".join(sse_events(*chunks, delta_chunk({}, finish="tool_calls")))
    gateway.script(Sse(pieces_of(body, how)))
    talk = tmp_path / "t.yaml"
    result = run("chat", "-n", "--save", talk, "weather and time?")
    assert result.exit_code == 8, result.stderr
    printed = call_lines(result.stdout)
    made = printed[2]["id"]
    assert re.fullmatch(MADE_ID, made)
    assert printed == [
        call("call_1", "get_weather", '{"city":"Oslo"}'),
        call("call_1", "get_time", '{"tz":"UTC"}'),
        call(made, "search", "{}"),
    ]
    import yaml

    assert yaml.safe_load(talk.read_text())["messages"][-1]["tool_calls"] == printed

    gateway.script(Json(whole({"content": "Sunny at noon."}, "stop")))
    args = ["chat", "-n", "-f", talk, "--tool-result", "call_1=sunny", "--tool-result", f"{made}=none"]
    assert run(*args).exit_code == 2  # one call_1 still waits
    result = run(*args, "--tool-result", "call_1=12:00")
    assert result.exit_code == 0, result.stderr
    sent = gateway.requests[-1].body["messages"]
    assert [(m.get("tool_call_id"), m["content"]) for m in sent[2:]] == [
        ("call_1", "sunny"),
        (made, "none"),
        ("call_1", "12:00"),
    ]
