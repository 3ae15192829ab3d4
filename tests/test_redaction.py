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
