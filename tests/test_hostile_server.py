"""A hostile or broken gateway (issue 10): surrogate halves, deep JSON, endless and huge
answers, gzip bombs, giant SSE lines, drips, escape sequences, echoed keys, non-UTF-8
headers. Every mode goes through `complete` (text, --json, --json --stream) and a
one-record batch: never an internal error, always one clear line and a sensible status.

The size limits are made small here (`small_limits`) so that each case takes a moment;
the real limits, and the memory they keep, are measured by tests/benchmarks/bench_hostile.py.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pexpect
import pytest
from gateway import ESCAPES, HOSTILE_MODES, MIB, Hostile, Json, Sse, chunk, completion, sse_events
from helpers import KEY, WAIT, parse_lines, pty_end

from anyfast_cli.errors import ApiError
from anyfast_cli.exchange import ERROR_BODY_BYTES, AnswerStream, Body, Reply
from anyfast_cli.output import TextPrinter, render_json
from anyfast_cli.sse import EventTooLarge, SSEDecoder

VARIANTS = {
    "text": ["complete", "-n", "hi"],
    "json": ["complete", "-n", "--json", "hi"],
    "json-stream": ["complete", "-n", "--json", "--stream", "hi"],
    "batch": ["batch", "--retries", "0"],
}
# mode -> exit status of complete, of a one-record batch
STATUS = {
    "surrogates": (0, 0),
    "deep_json": (1, 6),
    "endless": (1, 6),
    "gzip_bomb": (1, 6),
    "giant_line": (1, 6),
    "big_answer": (1, 6),
    "drip": (0, 0),
    "escapes": (0, 0),
    "escapes_error": (1, 6),
    "echoed_key": (0, 0),
    "echoed_key_error": (1, 6),
    "non_utf8_header": (0, 0),
}
SIZE = 8 * MIB  # of the large modes' answers: past every small limit


@pytest.fixture
def small_limits(monkeypatch):
    """Limits small enough for the large modes to reach them in a moment."""
    import anyfast_cli.exchange
    import anyfast_cli.sse

    monkeypatch.setattr(anyfast_cli.exchange, "MAX_BODY_BYTES", 1 * MIB)
    monkeypatch.setattr(anyfast_cli.exchange, "MAX_STREAM_BYTES", 4 * MIB)
    monkeypatch.setattr(anyfast_cli.sse, "MAX_EVENT_BYTES", 1 * MIB)


def hostile(mode: str) -> Hostile:
    return Hostile(mode, size=SIZE, delay=0.0005)


def assert_handled(result) -> None:
    """One clean ending: no internal error, no traceback, no exception escaping the CLI."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.splitlines()) <= 3, result.stderr[-2000:]  # one error line (and a hint, a summary)


def test_the_gateway_has_every_mode_in_the_table():
    assert set(STATUS) == set(HOSTILE_MODES)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mode", HOSTILE_MODES)
def test_every_hostile_mode_is_handled(run, gateway, small_limits, mode, variant):
    gateway.script(hostile(mode))
    argv = VARIANTS[variant]
    result = run(*argv, input='"hi"\n' if variant == "batch" else None)
    assert_handled(result)
    complete_status, batch_status = STATUS[mode]
    assert result.exit_code == (batch_status if variant == "batch" else complete_status), result.stderr
    assert KEY not in result.stdout + result.stderr
    if variant == "batch":
        [line] = parse_lines(result.stdout)  # the record has its line, whatever happened to it
        assert (line["error"] is None) == (batch_status == 0), line
    elif variant != "text" and result.exit_code == 0:
        parse_lines(result.stdout)  # whole JSON lines
    if result.exit_code != 0 and variant != "batch":
        assert result.stderr.startswith("anyfast: error: ")


@pytest.mark.parametrize("mode", ["endless", "gzip_bomb", "giant_line", "big_answer"])
@pytest.mark.parametrize("variant", ["text", "json", "json-stream"])
def test_past_a_limit_is_one_clear_error_and_no_retry(run, gateway, small_limits, mode, variant):
    gateway.script(hostile(mode))
    result = run(*VARIANTS[variant], "--retries", "2")
    assert result.exit_code == 1
    assert "is larger than 1 MiB" in result.stderr or "is larger than 4 MiB" in result.stderr, result.stderr
    assert "anyfast stopped reading it" in result.stderr
    gateway.settle(0.02)  # a retry would have been answered, so counted, before run() returned
    assert len(gateway.requests) == 1  # too large is final: never asked again


def test_a_chunked_answer_is_counted_as_it_comes(run, gateway, small_limits):
    gateway.script(Hostile("big_answer", size=SIZE, sized=False))  # no Content-Length to refuse it by
    result = run("batch", "--retries", "0", input='"hi"\n')
    assert result.exit_code == 6
    [line] = parse_lines(result.stdout)
    assert line["error"]["code"] == "too_large"
    assert "larger than 1 MiB" in line["error"]["message"]


# --- surrogate halves ------------------------------------------------------------------------


def test_surrogate_halves_are_joined_across_chunks(run, gateway):
    gateway.script(hostile("surrogates"))
    result = run("complete", "hi")
    assert result.stdout == "\U0001f600 lone \ufffd end\n"


def test_json_keeps_surrogate_halves_as_escapes(run, gateway):
    gateway.script(hostile("surrogates"))
    lines = parse_lines(run("complete", "--json", "--stream", "hi").stdout_bytes)
    contents = [line["choices"][0]["delta"].get("content") for line in lines]
    assert contents[:4] == ["\ud83d", "\ude00", " lone \ud800", " end"]  # what the server sent, halves and all
    gateway.script(hostile("surrogates"))
    [whole] = parse_lines(run("complete", "--json", "hi").stdout_bytes)
    assert whole["choices"][0]["message"]["content"] == "\U0001f600 lone \ud800 end"


def test_chat_save_keeps_the_joined_text(run, gateway, tmp_path):
    import yaml

    gateway.script(hostile("surrogates"))
    saved = tmp_path / "talk.yaml"
    result = run("chat", "--save", saved, "hi")
    assert result.exit_code == 0, result.stderr
    assert yaml.safe_load(saved.read_text(encoding="utf-8"))["messages"][-1]["content"] == "\U0001f600 lone \ufffd end"


def test_batch_writes_surrogates_and_resume_gets_past_them(run, gateway, tmp_path):
    out = tmp_path / "out.jsonl"
    gateway.script(hostile("surrogates"))
    assert run("batch", "-o", out, input='"a"\n"b"\n').exit_code == 0
    lines = parse_lines(out.read_bytes())
    assert len(lines) == 2
    result = run("batch", "-o", out, "--resume", input='"a"\n"b"\n')
    assert result.exit_code == 0, result.stderr
    gateway.settle(0.1)
    assert len(gateway.requests) == 2  # nothing asked again
    assert len(parse_lines(out.read_bytes())) == 2


def test_a_lone_half_at_the_end_of_a_stream_becomes_a_replacement_character():
    reply = Reply()
    out, err = io.StringIO(), io.StringIO()
    printer = TextPrinter(out, err, reply, show_reasoning=True, dim=False)
    printer.feed_chunk(chunk("ok \ud83d", reasoning="r\udbff"))
    printer.end_lines()
    assert out.getvalue() == "ok \ufffd\n"
    assert err.getvalue() == "r\ufffd\n"
    assert reply.content == "ok \ufffd" and reply.reasoning == "r\ufffd"


def test_odd_content_types_are_text_not_a_crash():
    reply = Reply()
    assert reply.absorb({"choices": [{"index": 0, "delta": {"content": 5}}]}) == (None, "5")
    assert reply.absorb({"choices": [{"index": 0, "delta": {"content": [{"type": "text", "text": "a"}, 3]}}]}) == (
        None,
        "a",
    )
    assert reply.absorb({"choices": [{"index": 0, "delta": {"content": {"x": 1}}}], "usage": [1]}) == (None, None)
    assert reply.content == "5a" and reply.usage is None


def test_a_reply_that_keeps_no_text_still_knows_what_it_said():
    reply = Reply(keep_text=False)
    reply.absorb(chunk("hello"))
    assert reply.said and reply.content == "" and reply.content_parts == []


@pytest.mark.parametrize("usage", [[1, 2], "lots", {"prompt_tokens": "\x1b[2J", "completion_tokens_details": "x"}])
def test_an_odd_usage_is_shown_safely(run, gateway, usage):
    gateway.script(Sse(sse_events(chunk("hi"), chunk(finish="stop"), {"choices": [], "usage": usage})))
    result = run("complete", "--usage", "hi")
    assert_handled(result)
    assert result.exit_code == 0
    assert "\x1b" not in result.stderr


def test_odd_usage_in_batch_counts_no_tokens(run, gateway):
    gateway.script(
        Json({**completion("hi"), "usage": {"total_tokens": "many"}}), Json({**completion("hi"), "usage": [3]})
    )
    result = run("batch", "-j", "1", input='"a"\n"b"\n')
    assert result.exit_code == 0, result.stderr
    assert "0 tokens" in result.stderr


# --- a non-ASCII answer on an ASCII or Latin-1 stdout ------------------------------------------

ANSWER = "h\u00e9llo \u4e2d \U0001f600"


@pytest.mark.parametrize(
    "encoding, expected",
    [
        ("ascii", b"h\\u00e9llo \\u4e2d \\ud83d\\ude00\n"),
        ("latin-1", b"h\xe9llo \\u4e2d \\ud83d\\ude00\n"),
        ("utf-8", ANSWER.encode() + b"\n"),
    ],
)
def test_characters_stdout_cannot_hold_are_escaped(proc_env, gateway, encoding, expected):
    for stream in ("--stream", "--no-stream"):
        gateway.script(
            Json(completion(ANSWER))
            if stream == "--no-stream"
            else Sse(sse_events(chunk(ANSWER), chunk(finish="stop")))
        )
        done = subprocess.run(
            [sys.executable, "-m", "anyfast_cli", "complete", "-n", stream, "hi"],
            env={**proc_env, "PYTHONIOENCODING": encoding},
            capture_output=True,
            timeout=WAIT,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == expected


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_json_on_a_narrow_stdout_is_still_the_same_json(proc_env, gateway, encoding):
    gateway.script(Json(completion(ANSWER)))
    done = subprocess.run(
        [sys.executable, "-m", "anyfast_cli", "complete", "-n", "--json", "hi"],
        env={**proc_env, "PYTHONIOENCODING": encoding},
        capture_output=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.decode(encoding))["choices"][0]["message"]["content"] == ANSWER


def test_an_error_in_chinese_on_an_ascii_stderr(proc_env, gateway):
    gateway.script(Json({"error": {"message": "\u6a21\u578b\u4e0d\u5b58\u5728", "code": "x"}}, status=400))
    done = subprocess.run(
        [sys.executable, "-m", "anyfast_cli", "complete", "-n", "hi"],
        env={**proc_env, "PYTHONIOENCODING": "ascii"},
        capture_output=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 1
    assert b"internal error" not in done.stderr and done.stderr.startswith(b"anyfast: error: HTTP 400")


# --- escape sequences ---------------------------------------------------------------------------


def test_in_a_pipe_the_answer_is_byte_exact(run, gateway):
    gateway.script(hostile("escapes"))
    result = run("complete", "--reasoning", "-m", "doubao-x", "hi")
    assert result.stdout == "say " + ESCAPES + "\n"


def test_diagnostics_are_always_neutralised(run, gateway):
    gateway.script(hostile("escapes_error"))
    result = run("complete", "-v", "hi")
    assert result.exit_code == 1
    assert "\x1b" not in result.stderr and "\x9b" not in result.stderr and "\x07" not in result.stderr
    assert "bad request ^[]52;c;cHduZWQ=^G^[]0;pwned^G^[[2J^[[31m\\2331;1H^G^H^?" in result.stderr
    assert "^?<U+202E>gnp.exe<U+2066>x<U+200F>" in result.stderr
    assert "request id req-^[]0;pwned^G" in result.stderr


def test_a_request_id_with_escapes_in_verbose_lines(run, gateway):
    gateway.script(hostile("escapes"))
    result = run("complete", "-v", "hi")
    assert result.exit_code == 0
    assert "\x1b" not in result.stderr and "\x9b" not in result.stderr


def test_debug_traceback_is_neutralised(run, gateway):
    gateway.script(hostile("escapes_error"))
    result = run("complete", "hi", ANYFAST_DEBUG="1")
    assert "Traceback" in result.stderr
    assert "\x1b" not in result.stderr


def test_the_printer_neutralises_only_on_a_terminal():
    for terminal in (True, False):
        out, err = io.StringIO(), io.StringIO()
        printer = TextPrinter(
            out, err, Reply(), show_reasoning=True, dim=False, out_terminal=terminal, err_terminal=terminal
        )
        printer.feed_chunk(chunk("a\x1b[2Jb\tc\r\nd\re\x9bf", reasoning="r\x1b]0;t\x07"))
        printer.end_lines()
        if terminal:
            assert out.getvalue() == "a^[[2Jb\tc\r\nd^Me\\233f\n"
            assert err.getvalue() == "r^[]0;t^G\n"
        else:
            assert out.getvalue() == "a\x1b[2Jb\tc\r\nd\re\x9bf\n"


def test_json_for_a_terminal_escapes_c1_and_del():
    text = render_json({"a": "x\x9by\x7fz\x1b"}, terminal=True)
    assert text == '{"a":"x\\u009by\\u007fz\\u001b"}'
    assert json.loads(text) == {"a": "x\x9by\x7fz\x1b"}
    assert render_json({"a": "x\x9b"}) == '{"a":"x\x9b"}'  # in a pipe: as it came


@pytest.mark.parametrize(
    "args", [["complete", "hi"], ["complete", "--json", "hi"], ["complete", "--reasoning", "-m", "doubao-x", "hi"]]
)
def test_at_a_terminal_nothing_from_the_server_drives_it(proc_env, gateway, args):
    gateway.script(hostile("escapes"))
    child = pexpect.spawn(
        sys.executable,
        ["-m", "anyfast_cli", *args],
        env={**proc_env, "TERM": "xterm-256color"},
        encoding="utf-8",
        timeout=WAIT,
    )
    shown = pty_end(child)
    assert child.exitstatus == 0, shown
    for sequence in ("\x1b]", "\x1b[2J", "\x9b", "\x07", "\x08", "\x7f", "\u202e", "\u2066", "\u200f"):
        assert sequence not in shown, (sequence, shown)
    assert "]52;c;cHduZWQ=" in shown  # shown, but inert


# --- the pieces that bound what is read ----------------------------------------------------------


def test_a_long_line_is_joined_once_and_bounded():
    decoder = SSEDecoder(max_event_bytes=1000)
    assert decoder.feed(b"data: ") == []
    for _ in range(9):
        assert decoder.feed(b"a" * 100) == []
    [event] = decoder.feed(b"\n\n")
    assert event == "a" * 900
    with pytest.raises(EventTooLarge):
        for _ in range(11):
            decoder.feed(b"b" * 100)


def test_many_data_lines_of_one_event_are_bounded():
    decoder = SSEDecoder(max_event_bytes=1000)
    with pytest.raises(EventTooLarge):
        decoder.feed(b"data: aaaaaaaaa\n" * 200)


def test_a_line_whole_in_one_feed_is_bounded_too():
    decoder = SSEDecoder(max_event_bytes=1000)
    assert decoder.feed(b"data: " + b"a" * 900 + b"\n\n")
    with pytest.raises(EventTooLarge):
        decoder.feed(b"data: " + b"a" * 2000 + b"\n\n")


def test_an_answer_stream_counts_its_bytes():
    answer = AnswerStream(limit=100)
    answer.feed(b": " + b"x" * 90 + b"\n")
    assert answer.feed(b": more than the limit\n") == [] and answer.ended
    with pytest.raises(ApiError) as caught:
        answer.close()
    assert caught.value.code == "too_large"


def content_events(*texts: str) -> bytes:
    return b"".join(b"data: " + json.dumps(chunk(text)).encode() + b"\n\n" for text in texts)


def read_split(answer: AnswerStream, pieces) -> tuple[list[str], Exception | None]:
    """The contents an AnswerStream gives for these pieces, read as the shell reads, and its failure."""
    got = []
    try:
        for piece in pieces:
            got += answer.feed(piece)
            if answer.ended:
                break
        got += answer.close()
    except ApiError as failure:
        return [c["choices"][0]["delta"]["content"] for c in got], failure
    return [c["choices"][0]["delta"]["content"] for c in got], None


def splits(body: bytes):
    yield [body]
    for index in range(len(body) + 1):
        yield [body[:index], body[index:]]


def test_what_came_before_the_size_limit_is_given_wherever_the_bytes_were_split():
    good = content_events("a", "b")
    body = good + content_events("c", "d")
    for pieces in splits(body):
        contents, failure = read_split(AnswerStream(limit=len(good) + 5), pieces)
        assert contents == ["a", "b"], pieces
        assert failure is not None and failure.code == "too_large"


def test_nothing_after_done_counts_against_the_limits_wherever_the_bytes_were_split(monkeypatch):
    import anyfast_cli.sse

    monkeypatch.setattr(anyfast_cli.sse, "MAX_EVENT_BYTES", 500)
    done = content_events("a") + b"data: [DONE]\n\n"
    for body, limit in ((done + b"data: " + b"x" * 600 + b"\n\n", None), (done + content_events("b"), len(done) + 5)):
        for pieces in splits(body):
            assert read_split(AnswerStream(limit=limit), pieces) == (["a"], None), pieces


def test_what_came_before_a_giant_event_is_given_wherever_the_bytes_were_split(monkeypatch):
    import anyfast_cli.sse

    monkeypatch.setattr(anyfast_cli.sse, "MAX_EVENT_BYTES", 500)
    good = content_events("a", "b")
    giant = b"data: " + b"x" * 600
    for body in (good + giant + b"\n\n", good + giant):  # the giant line ended, or still open
        for pieces in splits(body):
            contents, failure = read_split(AnswerStream(), pieces)
            assert contents == ["a", "b"], pieces
            assert failure is not None and "stream event is larger than" in failure.message


@pytest.mark.parametrize(
    "body", [b"data: a\n\ndata: " + b"x" * 2000 + b"\n\n", b"data: a\n\ndata: " + b"x" * 2000], ids=["ended", "open"]
)
def test_an_event_too_large_carries_the_events_before_it(body):
    with pytest.raises(EventTooLarge) as raised:
        SSEDecoder(max_event_bytes=1000).feed(body)
    assert raised.value.events == ["a"]


def test_silent_chunks_are_held_back_only_so_long():
    answer = AnswerStream()
    out = answer.feed(b"".join(b'data: {"choices":[]}\n\n' for _ in range(40)))
    assert answer.emitted and len(out) == 40


def test_too_many_choices_is_an_error():
    answer = AnswerStream()
    events = b"".join(b'data: {"choices":[{"index":%d,"delta":{"content":"x"}}]}\n\n' % i for i in range(200))
    assert len(answer.feed(events)) == 128  # the choices within the limit
    with pytest.raises(ApiError, match="more than 128 choices"):
        answer.close()


def test_a_body_past_its_declared_length_is_refused_before_reading():
    with pytest.raises(ApiError):
        Body(200, {"content-length": str(64 * MIB)})


def test_an_error_body_keeps_its_start():
    body = Body(500, {})
    body.feed(b"x" * (ERROR_BODY_BYTES - 1))
    assert not body.full
    body.feed(b"yy")
    assert body.full and len(body.content) == ERROR_BODY_BYTES


def test_nesting_that_parses_but_is_too_deep_to_write(run, gateway):
    deep = "[" * 500 + "]" * 500
    raw = (
        '{"choices":[{"index":0,"message":{"role":"assistant","content":"x","x":' + deep + '},"finish_reason":"stop"}]}'
    ).encode()
    gateway.script(Json(raw=raw), Json(raw=raw))
    result = run("batch", "--retries", "0", input='"hi"\n')
    assert result.exit_code == 6
    assert "nested more than 200 deep" in parse_lines(result.stdout)[0]["error"]["message"]
    result = run("complete", "--json", "hi")
    assert result.exit_code == 1 and "nested more than 200 deep" in result.stderr
