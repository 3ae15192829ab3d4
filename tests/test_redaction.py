"""The API key is never written anywhere (issue 10, class 5): redaction is structural. Every
string bound for stdout, stderr or batch's output file passes one Redactor (streams.py),
whoever made it: an error message, the ANYFAST_DEBUG traceback, a -v line, an answer that
echoes the key (in pieces, when streamed), a successful batch line as well as a failed one."""

from __future__ import annotations

import io
import json

import pytest
import typer
import yaml
from gateway import Hostile, Json, error_body
from helpers import KEY, parse_lines

from anyfast_cli.cli import guarded
from anyfast_cli.streams import MASK, Redactor, SafeWriter


def test_debug_traceback_masks_an_echoed_key(run, gateway):
    gateway.script(Json(error_body(f"Incorrect API key provided: {KEY}"), status=401))
    result = run("complete", "hi", ANYFAST_DEBUG="1")
    assert result.exit_code == 3
    assert "Traceback" in result.stderr  # the traceback is there, and the message in it is masked
    assert KEY not in result.stderr + result.stdout
    assert "Incorrect API key provided: ***" in result.stderr


def test_an_internal_error_never_shows_the_key(capsys, monkeypatch):
    monkeypatch.setenv("ANYFAST_DEBUG", "1")

    def run(streams):
        streams.hide(KEY)
        raise RuntimeError(f"a bug holding {KEY}")

    with pytest.raises(typer.Exit) as caught:
        guarded(run)
    assert caught.value.exit_code == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: a bug holding ***" in err and "Traceback" in err
    assert KEY not in err


def test_verbose_masks_a_key_echoed_in_the_request_id(run, gateway):
    gateway.script(Hostile("echoed_key"))
    result = run("complete", "-v", "hi")
    assert result.exit_code == 0
    assert "request id req-***" in result.stderr
    assert KEY not in result.stderr + result.stdout


@pytest.mark.parametrize("args", [["complete", "hi"], ["complete", "--no-stream", "hi"], ["complete", "--json", "hi"]])
def test_an_answer_echoing_the_key_is_masked(run, gateway, args):
    gateway.script(Hostile("echoed_key"))  # streamed, the key comes in two pieces
    result = run(*args)
    assert result.exit_code == 0
    assert KEY not in result.stdout
    assert "your key is ***." in result.stdout


def test_chat_save_does_not_keep_an_echoed_key(run, gateway, tmp_path):
    gateway.script(Hostile("echoed_key"))
    saved = tmp_path / "talk.yaml"
    assert run("chat", "--save", saved, "hi").exit_code == 0
    assert KEY not in saved.read_text()
    assert yaml.safe_load(saved.read_text())["messages"][-1]["content"] == "your key is ***."


@pytest.mark.parametrize("to_file", [False, True])
def test_batch_masks_the_key_in_successful_and_failed_lines(run, gateway, tmp_path, to_file):
    out = tmp_path / "out.jsonl"
    gateway.script(Hostile("echoed_key"), Hostile("echoed_key_error"))
    result = run("batch", "-j", "1", "--retries", "0", *(["-o", out] if to_file else []), input='"a"\n"b"\n')
    assert result.exit_code == 6
    text = out.read_text() if to_file else result.stdout
    assert KEY not in text + result.stderr
    ok, failed = parse_lines(text)
    assert ok["response"]["body"]["choices"][0]["message"]["content"] == "your key is ***."
    assert ok["response"]["request_id"] == "req-***"
    assert failed["error"]["message"].endswith("Incorrect API key provided: ***")


def test_batch_debug_traceback_masks_the_key(run, gateway):
    gateway.script(Json(error_body(f"Incorrect API key provided: {KEY}"), status=401))
    result = run("batch", input='"a"\n', ANYFAST_DEBUG="1")
    assert result.exit_code == 3
    assert KEY not in result.stderr + result.stdout


# --- the Redactor and the writer --------------------------------------------------------------


def test_a_key_split_across_writes_is_masked():
    out = io.StringIO()
    redactor = Redactor()
    redactor.hide(KEY)
    writer = SafeWriter(out, redactor)
    for piece in ("key: ", KEY[:3], KEY[3:10], KEY[10:], " ok; ask", "ed"):
        writer.write(piece)
    writer.finish()
    assert out.getvalue() == f"key: {MASK} ok; asked"


def test_a_possible_start_of_the_key_waits_only_for_the_next_write():
    out = io.StringIO()
    redactor = Redactor()
    redactor.hide(KEY)
    writer = SafeWriter(out, redactor)
    writer.write("task sk")
    assert out.getvalue() == "task "  # "sk" may be the key's beginning
    writer.write("ip\n")
    assert out.getvalue() == "task skip\n"
    writer.write("s")
    writer.finish()
    assert out.getvalue() == "task skip\ns"


def test_the_key_as_it_appears_inside_json_is_masked_too():
    redactor = Redactor()
    redactor.hide('key"with\\quotes')
    assert redactor.mask('{"k":"key\\"with\\\\quotes"}') == '{"k":"***"}'


def test_a_short_key_is_not_masked():
    redactor = Redactor()
    redactor.hide("abc")
    assert not redactor and redactor.mask("abc abc") == "abc abc"


def test_lone_surrogates_and_unencodable_characters_never_fail_a_write():
    raw = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    writer = SafeWriter(raw, Redactor())
    writer.write("a\ud800 \u00e9 \U0001f600")
    writer.finish()
    assert raw.buffer.getvalue() == b"a\\ufffd \\u00e9 \\ud83d\\ude00"


# --- a base URL with user:password@ ------------------------------------------------------------

PASSWORD = "hunter2-secret"


@pytest.mark.parametrize("args", [["config", "show"], ["complete", "--dry-run", "hi"], ["complete", "-v", "hi"]])
def test_a_base_url_with_a_password_is_refused(run, gateway, args):
    url = gateway.url.replace("http://", f"http://user:{PASSWORD}@")
    result = run(*args, ANYFAST_BASE_URL=url)
    assert result.exit_code == 2
    assert PASSWORD not in result.stdout + result.stderr
    assert not gateway.requests


# --- a key split across --json --stream chunk objects (issue 15, class 7) -------------------------


def key_redactor() -> Redactor:
    redactor = Redactor()
    redactor.hide(KEY)
    return redactor


# (id, pieces of one streamed text, the masked pieces, how many are settled)
PIECES = [
    ("no key", ["yes ", "no"], ["yes ", "no"], 2),
    ("a whole key", [f"a {KEY} b"], ["a *** b"], 1),
    ("in two", ["is " + KEY[:5], KEY[5:] + "."], ["is ***", "."], 2),
    ("one character a piece", ["is ", *KEY, "."], ["is ", MASK, *[""] * (len(KEY) - 1), "."], len(KEY) + 2),
    ("a possible start waits", ["is " + KEY[:5]], ["is " + KEY[:5]], 0),
    ("a start that was not the key", ["is " + KEY[:5], "x"], ["is " + KEY[:5], "x"], 2),
    ("the start of the next piece", ["ok", "sk"], ["ok", "sk"], 1),
    ("two keys and a start", [KEY[:3], KEY[3:] + KEY, KEY[:2]], ["***", "***", KEY[:2]], 2),
    ("empty pieces", ["", KEY[:4], "", KEY[4:], ""], ["", "***", "", "", ""], 5),
    ("as JSON writes it", ['"' + KEY.replace("-", "\\-")], ['"' + KEY.replace("-", "\\-")], 1),
]


@pytest.mark.parametrize("pieces,masked,settled", [c[1:] for c in PIECES], ids=[c[0] for c in PIECES])
def test_mask_pieces(pieces, masked, settled):
    assert key_redactor().mask_pieces(pieces) == (masked, settled)
    assert "".join(masked) == key_redactor().mask("".join(pieces)) or settled < len(pieces)


@pytest.mark.parametrize("text", sorted({p for case in PIECES for p in case[1]} | {"dogs ", "s", "task sk-x"}))
def test_holds_part_says_when_mask_pieces_has_work(text):
    assert key_redactor().holds_part(text) == (key_redactor().mask_pieces([text]) != ([text], 1))


def content(text, index=0) -> dict:
    return {"id": "c", "choices": [{"index": index, "delta": {"content": text}, "finish_reason": None}]}


def arguments(text) -> dict:
    call = {"index": 0, "function": {"arguments": text}}
    return {"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}


def fed_lines(chunks, redactor) -> list[dict]:
    from anyfast_cli.output import ChunkLines

    out = io.StringIO()
    lines = ChunkLines(out, redactor, terminal=False)
    for chunk in chunks:
        lines.feed(chunk)
    lines.finish()
    return parse_lines(out.getvalue())


def joined(lines, pick) -> str:
    return "".join(pick(line) for line in lines if pick(line) is not None)


def delta_text(index=0, field="content"):
    def pick(line):
        for choice in line["choices"]:
            if choice["index"] == index:
                return choice["delta"].get(field)
        return None

    return pick


def call_arguments(line):
    calls = line["choices"][0]["delta"].get("tool_calls")
    return calls[0]["function"]["arguments"] if calls else None


def split(text: str, size: int) -> list[str]:
    return [text[k : k + size] for k in range(0, len(text), size)]


@pytest.mark.parametrize("size", [1, 3, len(KEY) // 2, len(KEY)])
def test_chunk_lines_mask_a_key_across_chunks_and_keep_every_line(size):
    text = f"your key is {KEY}. task skip {KEY}"
    alone = [content(piece) for piece in split(text, size)]
    other = [content(piece, index=1) for piece in split(f"one sees {KEY[:6]}", 2)]  # n=2, interleaved
    mixed = [c for k, own in enumerate(alone) for c in ([own, other[k]] if k < len(other) else [own])]
    mixed += other[len(alone) :]
    for chunks in (alone, mixed):
        lines = fed_lines([json_copy(c) for c in chunks], key_redactor())
        assert len(lines) == len(chunks)  # no line lost, none made up
        assert KEY not in joined(lines, delta_text(0)) and KEY[:8] not in json_text(lines)
        assert joined(lines, delta_text(0)) == "your key is ***. task skip ***"
    assert joined(lines, delta_text(1)) == f"one sees {KEY[:6]}"  # a start that never completed: as sent


def test_chunk_lines_mask_tool_call_arguments_and_reasoning():
    pieces = split(f'{{"k":"{KEY}"}}', 4)
    lines = fed_lines([arguments(p) for p in pieces], key_redactor())
    assert joined(lines, call_arguments) == '{"k":"***"}'
    reasoning = [{"choices": [{"index": 0, "delta": {"reasoning_content": p}}]} for p in split(KEY, 5)]
    assert joined(fed_lines(reasoning, key_redactor()), delta_text(0, "reasoning_content")) == MASK


def test_chunk_lines_without_a_key_are_written_as_they_came():
    chunks = [content(p) for p in ("task s", "k", "ip", "s")]
    out = fed_lines([json_copy(c) for c in chunks], key_redactor())
    assert out == chunks
    assert fed_lines([content(KEY)], Redactor()) == [content(KEY)]  # no key known: nothing to mask


def json_copy(value):
    import json

    return json.loads(json.dumps(value))


def json_text(lines) -> str:
    import json

    return "".join(json.dumps(line) for line in lines)


@pytest.mark.parametrize("pieces", [2, 5, len(KEY)])
def test_json_stream_masks_a_key_split_across_chunk_objects(run, gateway, tmp_path, pieces):
    from gateway import Sse, chunk, sse_events

    size = -(-len(KEY) // pieces)
    deltas = ["your key is ", *split(KEY, size), "."]
    gateway.script(Sse(sse_events(*[chunk(d) for d in deltas], chunk(finish="stop"))))
    talk = tmp_path / "t.yaml"
    result = run("chat", "-n", "--json", "--stream", "--save", talk, "hi")
    assert result.exit_code == 0, result.stderr
    lines = parse_lines(result.stdout)
    assert len(lines) == len(deltas) + 1
    assert joined(lines, lambda line: line["choices"][0]["delta"].get("content")) == "your key is ***."
    assert KEY[:8] not in result.stdout and KEY[-8:] not in result.stdout
    assert yaml.safe_load(talk.read_text())["messages"][-1]["content"] == "your key is ***."


def test_chat_save_masks_a_key_in_tool_call_arguments(run, gateway, tmp_path):
    from gateway import Sse, sse_events

    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
    chunks = [{"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}]
    chunks += [arguments(p) for p in split(f'{{"k":"{KEY}"}}', 5)]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    gateway.script(Sse(sse_events(*chunks)))
    talk = tmp_path / "t.yaml"
    result = run("chat", "-n", "--save", talk, "hi")
    assert result.exit_code == 8, result.stderr
    assert KEY not in result.stdout + talk.read_text()
    saved = yaml.safe_load(talk.read_text())["messages"][-1]["tool_calls"][0]
    assert saved["function"]["arguments"] == '{"k":"***"}' and saved["id"] == "call_1"


@pytest.mark.parametrize("key", [KEY, '"quoted-key-1234'])
def test_the_key_is_masked_however_the_writes_split_it(key):
    # SafeWriter skips the masking for a write holding none of the forms' first characters
    # (most deltas); a form cut anywhere, in its plain or its JSON form, is still masked.
    for form in {key, json.dumps(key)[1:-1]}:
        text = f"a {form} b"
        for i in range(1, len(text)):
            for j in range(i, len(text)):
                out = io.StringIO()
                redactor = Redactor()
                redactor.hide(key)
                writer = SafeWriter(out, redactor)
                for piece in (text[:i], text[i:j], text[j:]):
                    writer.write(piece)
                writer.finish()
                assert out.getvalue() == f"a {MASK} b", (i, j)
