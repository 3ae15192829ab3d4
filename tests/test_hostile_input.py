"""Hostile and careless input (issue 10, the input side): every case is exit 2 (3 for the key)
with one clear line, nothing is sent, and no case reaches "internal error" or a traceback.

Class 1, bytes: nesting 100,000 deep, NaN and Infinity, text that is not UTF-8, non-text
profile names and keys, template misuse. Class 2, bounds: endless or huge stdin, files,
devices, sparse files, alias bombs, an endless key command. Class 7: an api_key_command
config others can write, the key command's children, output and stderr, and --template as
plain substitution.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest
from helpers import KEY, WAIT, pty_end

from anyfast_cli.batch.jobs import (
    LINE_MAX_BYTES,
    JobOptions,
    RecordError,
    check_template,
    fill_template,
    parse_record,
    read_lines,
    spool_lines,
)
from anyfast_cli.documents import allowed_alias_ratio, load_yaml
from anyfast_cli.errors import AuthError, ExitCode, UsageError
from anyfast_cli.keycommand import KeyCommandFailed, run_key_command
from anyfast_cli.reading import DOCUMENT_MAX_BYTES, read_document
from anyfast_cli.settings import untrusted_command_problem
from anyfast_cli.structured import MAX_NESTING, ValueProblem, check_value, parse_json

DEEP = 100_000
DEEP_JSON = "[" * DEEP + "]" * DEEP
LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip([None, *"abcdefgh"], "abcdefghi")
)  # a billion laughs: 9 levels of 9 aliases, 9^9 strings once expanded


def write(path: Path, text: str | bytes, mode: int = 0o600) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    path.chmod(mode)
    return path


def config(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    return write(tmp_path / "config.yaml", text, mode)


def sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(size)  # no real disk use
    return path


def assert_refused(result, gateway, code: int = 2, words: str | None = None) -> None:
    """Exit `code`, one clear error line, nothing sent, no crash."""
    assert result.exit_code == code, (result.exit_code, result.stderr[-2000:])
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.startswith("anyfast: error: "), result.stderr[-2000:]
    assert len(result.stderr) < 2000  # a line (and a hint), not a dump
    if words:
        assert words in result.stderr, result.stderr
    assert not gateway.requests


# --- class 1: bytes that must never crash -------------------------------------------------------
# Each case: tmp_path -> (arguments, stdin, environment, words the error must hold).

CLASS_1 = {
    # nesting 100,000 deep
    "chat -f deep JSON": lambda d: (
        ["chat", "-f", write(d / "t.json", DEEP_JSON), "hi"],
        None,
        {},
        "t.json:1: nested deeper",
    ),
    "chat -f deep JSON messages": lambda d: (
        ["chat", "-f", write(d / "t.json", '{"messages": [{"user": "hi", "x": ' + DEEP_JSON + "}]}")],
        None,
        {},
        "nested deeper",
    ),
    "chat -f deep YAML": lambda d: (
        ["chat", "-f", write(d / "t.yaml", "messages: " + DEEP_JSON), "hi"],
        None,
        {},
        "t.yaml:1: ",
    ),  # libyaml's words or ours
    "chat -f deep YAML block": lambda d: (
        ["chat", "-f", write(d / "t.yaml", "".join(f"{' ' * i}- \n" for i in range(300)) + " " * 300 + "- x\n")],
        None,
        {},
        "nested deeper",
    ),
    "chat -f - deep": lambda d: (["chat", "-f", "-"], DEEP_JSON, {}, "standard input:1: nested deeper"),
    "batch deep line": lambda d: (
        ["batch", write(d / "in.jsonl", '"ok"\n' + DEEP_JSON + "\n")],
        None,
        {},
        "line 2: nested deeper",
    ),
    "batch deep line on stdin": lambda d: (
        ["batch"],
        '{"prompt": "x", "logit_bias": ' + DEEP_JSON + "}\n",
        {},
        "line 1: nested deeper",
    ),
    "batch 900 deep": lambda d: (
        ["batch"],
        json.dumps({"prompt": "x", "seed": [[[[]]]]}).replace("[[[[]]]]", "[" * 900 + "]" * 900) + "\n",
        {},
        "line 1: seed",
    ),
    "-p deep": lambda d: (["complete", "-p", "x=" + DEEP_JSON, "hi"], None, {}, "-p/--param x: nested deeper"),
    "config deep": lambda d: (
        ["complete", "--config", config(d, "profiles:\n  default:\n    x: " + DEEP_JSON), "hi"],
        None,
        {},
        "config.yaml:3: ",
    ),
    # NaN and Infinity, wherever input carries numbers
    "-p seed=NaN": lambda d: (["complete", "-p", "seed=NaN", "hi"], None, {}, "NaN"),
    "-p x=Infinity": lambda d: (["complete", "-p", "x=Infinity", "hi"], None, {}, "Infinity"),
    "-p x=-Infinity": lambda d: (["complete", "-p", "x=-Infinity", "hi"], None, {}, "Infinity"),
    "-p x=1e999": lambda d: (["complete", "-p", "x=1e999", "hi"], None, {}, "too large"),
    "-p nested NaN": lambda d: (["complete", "-p", 'response_format={"a": [NaN]}', "hi"], None, {}, "NaN"),
    "-p 5000 digits": lambda d: (["complete", "-p", "seed=" + "9" * 5000, "hi"], None, {}, "too long"),
    "--temperature nan": lambda d: (["complete", "--temperature", "nan", "hi"], None, {}, "temperature"),
    "--temperature inf": lambda d: (["complete", "-t", "inf", "hi"], None, {}, "temperature"),
    "--top-p nan": lambda d: (["complete", "--top-p", "nan", "hi"], None, {}, "top_p"),
    "--frequency-penalty inf": lambda d: (
        ["complete", "--frequency-penalty", "inf", "hi"],
        None,
        {},
        "frequency_penalty",
    ),
    "--presence-penalty -inf": lambda d: (
        ["complete", "--presence-penalty", "-inf", "hi"],
        None,
        {},
        "presence_penalty",
    ),
    "--timeout nan": lambda d: (["complete", "--timeout", "nan", "hi"], None, {}, "timeout"),
    "--timeout inf": lambda d: (["complete", "--timeout", "inf", "hi"], None, {}, "timeout"),
    "--max-time nan": lambda d: (["complete", "--max-time", "nan", "hi"], None, {}, "max-time"),
    "--fps nan": lambda d: (["complete", "--video", "https://e.com/v.mp4", "--fps", "nan", "hi"], None, {}, "--fps"),
    "--fps inf": lambda d: (["complete", "--video", "https://e.com/v.mp4", "--fps", "inf", "hi"], None, {}, "--fps"),
    "chat -f YAML .nan": lambda d: (
        ["chat", "-f", write(d / "t.yaml", "params: {seed: .nan}\nmessages: [{user: hi}]\n")],
        None,
        {},
        "t.yaml:1: NaN",
    ),
    "chat -f YAML .inf": lambda d: (
        ["chat", "-f", write(d / "t.yaml", "messages:\n- user: hi\n  fps: -.inf\n")],
        None,
        {},
        "t.yaml:3",
    ),
    "chat -f YAML 1e999": lambda d: (
        ["chat", "-f", write(d / "t.yaml", "params:\n  x: 1.0e+999\nmessages: [{user: hi}]\n")],
        None,
        {},
        "t.yaml:2",
    ),
    "chat -f YAML !!float nan": lambda d: (
        ["chat", "-f", write(d / "t.yaml", "params: {x: !!float nan}\nmessages: [{user: hi}]\n")],
        None,
        {},
        "NaN",
    ),
    "chat -f JSON NaN": lambda d: (
        ["chat", "-f", write(d / "t.json", '{"params":\n {"seed": NaN},\n "messages": [{"user": "hi"}]}')],
        None,
        {},
        "t.json:2: NaN",
    ),
    "chat -f JSON -Infinity": lambda d: (
        ["chat", "-f", write(d / "t.json", '[{"user": "hi", "fps": -Infinity}]')],
        None,
        {},
        "Infinity",
    ),
    "config profile .nan": lambda d: (
        ["complete", "--config", config(d, "profiles:\n  default:\n    seed: .nan\n"), "hi"],
        None,
        {},
        "config.yaml:3: NaN",
    ),
    "config timeout .inf": lambda d: (
        ["complete", "--config", config(d, "profiles:\n  default:\n    timeout: .inf\n"), "hi"],
        None,
        {},
        "config.yaml:3",
    ),
    "config temperature .nan": lambda d: (
        ["complete", "--config", config(d, "profiles:\n  default:\n    temperature: .NaN\n"), "hi"],
        None,
        {},
        "NaN",
    ),
    "batch NaN": lambda d: (["batch"], '{"prompt": "hi", "seed": NaN}\n', {}, "line 1: NaN"),
    "batch Infinity": lambda d: (
        ["batch"],
        '"ok"\n{"prompt": "hi", "temperature": Infinity}\n',
        {},
        "line 2: Infinity",
    ),
    "batch 1e999": lambda d: (["batch"], '{"prompt": "hi", "seed": 1e999}\n', {}, "too large"),
    "batch body NaN": lambda d: (
        ["batch"],
        json.dumps(
            {
                "custom_id": "a",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"messages": [{"role": "user", "content": "q"}], "top_p": 0.5},
            }
        ).replace("0.5", "NaN")
        + "\n",
        {},
        "NaN",
    ),
    "batch 5000 digits": lambda d: (["batch"], '{"prompt": "hi", "seed": ' + "1" * 5000 + "}\n", {}, "too long"),
    # text that is not UTF-8 (an argument's stray bytes arrive as lone surrogates), or a lone surrogate escape
    "prompt not UTF-8": lambda d: (["complete", "caf\udce9"], None, {}, "not valid UTF-8"),
    "-s not UTF-8": lambda d: (["complete", "-s", "\udcff", "hi"], None, {}, "not valid UTF-8"),
    "-p value not UTF-8": lambda d: (["complete", "-p", "user=\udcff", "hi"], None, {}, "argument is not valid UTF-8"),
    "-p key not UTF-8": lambda d: (["complete", "-p", "\udcff=1", "hi"], None, {}, "not valid UTF-8"),
    "--stop not UTF-8": lambda d: (["complete", "--stop", "\udcfe", "hi"], None, {}, "not valid UTF-8"),
    "-i path not UTF-8": lambda d: (
        ["complete", "-i", str(write(d / "a.png", b"\x89PNG")).replace("a.png", "\udcff.png"), "hi"],
        None,
        {},
        "not valid UTF-8",
    ),
    "--video URL not UTF-8": lambda d: (
        ["complete", "--video", "https://e.com/\udcff.mp4", "hi"],
        None,
        {},
        "not valid UTF-8",
    ),
    "-m not UTF-8": lambda d: (["complete", "-m", "m\udcff", "hi"], None, {}, "argument is not valid UTF-8: m\\udcff"),
    "ANYFAST_MODEL not UTF-8": lambda d: (["complete", "hi"], None, {"ANYFAST_MODEL": "m\udcff"}, "model"),
    "--base-url not UTF-8": lambda d: (
        ["complete", "--base-url", "http://\udcff/v1", "hi"],
        None,
        {},
        "argument is not valid UTF-8",
    ),
    "--template not UTF-8": lambda d: (["batch", "--template", "{text}\udcff"], '"hi"\n', {}, "argument is not valid"),
    "chat prompt not UTF-8": lambda d: (["chat", "\udcff"], None, {}, "not valid UTF-8"),
    "chat -f JSON lone surrogate": lambda d: (
        ["chat", "-f", write(d / "t.json", '[{"user": "\\ud800"}]')],
        None,
        {},
        "\\ud800",
    ),
    "chat -f JSON surrogate image": lambda d: (
        ["chat", "-f", write(d / "t.json", '[{"user": "hi", "images": ["\\udfff.png"]}]')],
        None,
        {},
        "not valid UTF-8",
    ),
    "chat -f YAML lone surrogate": lambda d: (
        ["chat", "-f", write(d / "t.yaml", 'messages:\n- user: "\\ud800"\n')],
        None,
        {},
        "t.yaml:2",
    ),
    "chat -f not UTF-8 bytes": lambda d: (
        ["chat", "-f", write(d / "t.yaml", b"messages:\n- user: caf\xe9\n")],
        None,
        {},
        "t.yaml:2",
    ),
    "batch lone surrogate": lambda d: (["batch"], '"\\ud800"\n', {}, "line 1"),
    "batch custom_id surrogate": lambda d: (["batch"], '{"custom_id": "\\udc00", "prompt": "x"}\n', {}, "line 1"),
    "config not UTF-8 bytes": lambda d: (
        ["complete", "--config", config(d, b"profiles:\n  default:\n    model: \xff\n"), "hi"],
        None,
        {},
        "config.yaml:3",
    ),
    # non-text profile names and keys; YAML types JSON has not
    "numeric profile name": lambda d: (
        ["complete", "--config", config(d, "profiles:\n  1: {model: m}\n"), "hi"],
        None,
        {},
        "profile name 1",
    ),
    "numeric profile chosen": lambda d: (
        ["complete", "--profile", "1", "--config", config(d, "profiles:\n  1: {}\n  a: {}\n"), "hi"],
        None,
        {},
        "profile name",
    ),
    "null profile name": lambda d: (
        ["complete", "--config", config(d, "profiles:\n  ~: {model: m}\n  x: {}\n"), "hi"],
        None,
        {},
        "profiles: the key None must be text",
    ),
    "numeric profile key": lambda d: (
        ["complete", "--config", config(d, "profiles:\n  default: {1: x}\n"), "hi"],
        None,
        {},
        "profile 'default': the key 1",
    ),
    "numeric top-level key": lambda d: (
        ["complete", "--config", config(d, "1: x\nfoo: y\n"), "hi"],
        None,
        {},
        "unknown top-level",
    ),
    "boolean key in params": lambda d: (
        ["chat", "-f", write(d / "t.yaml", "params: {yes: 1}\nmessages: [{user: hi}]\n")],
        None,
        {},
        "must be text",
    ),
    "!!binary": lambda d: (
        ["chat", "-f", write(d / "t.yaml", "params: {x: !!binary aGk=}\nmessages: [{user: hi}]\n")],
        None,
        {},
        "!!binary",
    ),
    "!!timestamp": lambda d: (
        ["chat", "-f", write(d / "t.yaml", "params: {x: !!timestamp 2024-01-01}\nmessages: [{user: hi}]\n")],
        None,
        {},
        "!!timestamp",
    ),
    "!!set": lambda d: (
        ["chat", "-f", write(d / "t.yaml", "params: {x: !!set {a}}\nmessages: [{user: hi}]\n")],
        None,
        {},
        "!!set",
    ),
    "python tag": lambda d: (
        ["chat", "-f", write(d / "t.yaml", "params: {x: !!python/object:os.system {}}\nmessages: [{user: hi}]\n")],
        None,
        {},
        "t.yaml:1",
    ),
    "recursive alias": lambda d: (
        ["chat", "-f", write(d / "t.yaml", "params: &p {x: *p}\nmessages: [{user: hi}]\n")],
        None,
        {},
        "alias",
    ),
    # --template misuse: only {name}; {{ and }} are braces
    "template {n[0]}": lambda d: (["batch", "--template", "{n[0]}"], '{"n": [1]}\n', {}, "{n[0]}"),
    "template attribute": lambda d: (
        ["batch", "--template", "{text.__class__.__mro__}"],
        '"hi"\n',
        {},
        "is not a field",
    ),
    "template format spec": lambda d: (["batch", "--template", "{text:>999999999}"], '"hi"\n', {}, "is not a field"),
    "template conversion": lambda d: (["batch", "--lines", "--template", "{text!r}"], "hi\n", {}, "is not a field"),
    "template positional": lambda d: (["batch", "--template", "{}"], '"hi"\n', {}, "is not a field"),
    "template lone {": lambda d: (["batch", "--template", "x {text"], '"hi"\n', {}, "lone '{'"),
    "template lone }": lambda d: (["batch", "--template", "{text} }"], '"hi"\n', {}, "lone '}'"),
    "template {{x}": lambda d: (["batch", "--template", "{{text} {text}"], '"hi"\n', {}, "lone '}'"),
    "template nested": lambda d: (["batch", "--template", "{a{b}}"], '"hi"\n', {}, "--template"),
    "template missing field": lambda d: (
        ["batch", "--template", "{0}"],
        '"hi"\n',
        {},
        "line 1: --template needs field '0'",
    ),
    "template no field": lambda d: (["batch", "--template", "{{text}}"], '"hi"\n', {}, "has no {field}"),
}


@pytest.mark.parametrize("case", CLASS_1, ids=list(CLASS_1))
def test_class_1_bytes_are_input_errors_never_crashes(run, gateway, tmp_path, case):
    args, stdin, env, words = CLASS_1[case](tmp_path)
    assert_refused(run(*args, input=stdin, **env), gateway, words=words)


# Whole numbers read from text (issue 15, class 7): "²" passes str.isdigit() but not int(), and
# int() refuses a number past 4,300 digits with advice for Python programmers. Each is one line
# in the user's words, never an internal error or sys.set_int_max_str_digits.
LONG = "1" * 5000
WHOLE_NUMBERS = {
    "shard K/N": lambda d: (["batch", "--shard", f"{LONG}/{LONG}"], "", {}, "--shard expects K/N"),
    "shard auto/N": lambda d: (["batch", "--shard", f"auto/{LONG}"], "", {}, "--shard auto/N expects a count"),
    "shard superscript": lambda d: (["batch", "--shard", "\u00b2/3"], "", {}, "--shard expects K/N"),
    "shard from the environment": lambda d: (
        ["batch", "--shard", "auto"],
        "",
        {"CI_NODE_INDEX": LONG, "CI_NODE_TOTAL": "2"},
        "CI_NODE_INDEX='11111",
    ),
    "slurm superscript": lambda d: (
        ["batch", "--shard", "auto"],
        "",
        {"SLURM_ARRAY_TASK_ID": "\u00b2", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2"},
        "SLURM_ARRAY_TASK_ID='\u00b2' is not a whole number",
    ),
    "max_completion_tokens under --tpm": lambda d: (
        ["batch", "--tpm", "1000"],
        '{"prompt": "x", "max_completion_tokens": "lots"}\n',
        {},
        "max_completion_tokens must be a whole number",
    ),
    "config retries": lambda d: (
        ["complete", "--config", config(d, "profiles:\n  default: {retries: '\u00b2'}\n"), "hi"],
        None,
        {},
        "retries must be a whole number",
    ),
}


@pytest.mark.parametrize("case", WHOLE_NUMBERS, ids=list(WHOLE_NUMBERS))
def test_whole_numbers_from_text_are_input_errors_in_our_words(run, gateway, tmp_path, case):
    args, stdin, env, words = WHOLE_NUMBERS[case](tmp_path)
    result = run(*args, input=stdin, **env)
    assert_refused(result, gateway, words=words)
    assert "sys." not in result.stderr and "int()" not in result.stderr and len(result.stderr) < 300


def test_a_no_proxy_port_that_is_no_number_is_no_match(run, gateway, tmp_path):
    for port in ("\u00b2", LONG):
        result = run("complete", "-n", "hi", NO_PROXY=f"127.0.0.1:{port}", HTTP_PROXY="http://127.0.0.1:9")
        assert "internal error" not in result.stderr and result.exit_code in (0, 4), result.stderr


def test_dry_run_refuses_as_a_real_run_does(run, gateway, tmp_path):
    """NaN in a batch line used to be printed (and sent) as NaN, which is not JSON."""
    result = run("batch", "--dry-run", input='{"prompt": "hi", "seed": NaN}\n')
    assert_refused(result, gateway, words="NaN")
    assert result.stdout == ""


def test_what_looks_like_a_date_stays_the_text_written(run, gateway, tmp_path):
    talk = write(tmp_path / "t.yaml", "params: {stop: 2024-01-01}\nmessages:\n- user: 2001-12-14t21:59:43.10-05:00\n")
    result = run("chat", "-f", talk)
    assert result.exit_code == 0, result.stderr
    body = gateway.requests[-1].body
    assert body["stop"] == "2024-01-01" and body["messages"][0]["content"] == "2001-12-14t21:59:43.10-05:00"


def test_yaml_integer_keys_still_reach_logit_bias(run, gateway, tmp_path):
    talk = write(tmp_path / "t.yaml", "params: {logit_bias: {50256: -100}}\nmessages: [{user: hi}]\n")
    assert run("chat", "-f", talk).exit_code == 0
    assert gateway.requests[-1].body["logit_bias"] == {"50256": -100}


def test_nesting_up_to_the_limit_is_sent(run, gateway):
    value = "[" * (MAX_NESTING - 2) + "1" + "]" * (MAX_NESTING - 2)  # the body adds one level around it
    result = run("complete", "-p", f"x={value}", "hi")
    assert result.exit_code == 0, result.stderr
    assert "x" in gateway.requests[-1].body


def test_quoted_nan_is_text(run, gateway):
    assert run("complete", "-p", 'user="NaN"', "-p", "tag=NaNa", "hi").exit_code == 0
    assert gateway.requests[-1].body["user"] == "NaN" and gateway.requests[-1].body["tag"] == "NaNa"


# --- the checks themselves ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, words",
    [
        (float("nan"), "NaN"),
        ({"a": [1, float("-inf")]}, "a[1]: infinity"),
        ({"messages": [{"content": "x\udcff"}]}, "messages[0].content: the text is not valid UTF-8"),
        ({"\ud800": 1}, "the key"),
        ({True: 1}, "must be text"),
        ({"when": __import__("datetime").date(2024, 1, 1)}, "when: a date is not a JSON value"),
        (b"bytes", "a bytes is not"),
        ([[[]]], None),
    ],
)
def test_check_value(value, words):
    if words is None:
        check_value(value)
        return
    with pytest.raises(ValueProblem) as raised:
        check_value(value)
    assert words in raised.value.describe()


def test_check_value_ends_a_cycle_as_too_deep():
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueProblem, match="nested deeper"):
        check_value(loop)


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}', "1e400", DEEP_JSON, "[" * 500 + "]" * 500])
def test_parse_json_refuses(text):
    with pytest.raises(ValueProblem):
        parse_json(text)


def test_yaml_alias_rule_is_yaml_v3s():
    assert allowed_alias_ratio(1_000) == 0.99 and allowed_alias_ratio(10_000_000) == 0.10
    assert 0.10 < allowed_alias_ratio(2_000_000) < 0.99
    # anchors for shared defaults, used a few times each, are fine
    text = "base: &b {model: m, temperature: 0.3}\n" + "".join(f"p{i}: {{<<: *b, seed: {i}}}\n" for i in range(200))
    assert load_yaml(text, "c.yaml")["p7"] == {"model": "m", "temperature": 0.3, "seed": 7}


def test_a_yaml_document_has_a_bounded_number_of_values(monkeypatch):
    from anyfast_cli import documents

    monkeypatch.setattr(documents, "MAX_YAML_NODES", 1000)
    assert len(load_yaml("x: [" + "1, " * 990 + "1]", "t.yaml")["x"]) == 991
    with pytest.raises(UsageError, match=r"t.yaml:1: more than 1,000 values .*JSON"):
        load_yaml("x: [" + "1, " * 1000 + "1]", "t.yaml")


def test_an_alias_bomb_is_refused_while_composing(tmp_path):
    started = time.monotonic()
    with pytest.raises(UsageError, match="excessive aliasing"):
        load_yaml(LAUGHS, "laughs.yaml")
    assert time.monotonic() - started < WAIT  # (it takes milliseconds; a slow machine is no failure)


# --- class 2: every read has a bound ----------------------------------------------------------------

DEV_ZERO = "/dev/zero"


CLASS_2 = {
    "chat -f /dev/zero": lambda d: (["chat", "-f", DEV_ZERO, "--dry-run"], None, "/dev/zero: over the 16 MiB limit"),
    "chat -f a 2 GB sparse file": lambda d: (
        ["chat", "-f", sparse(d / "big.yaml", 2 << 30), "--dry-run"],
        None,
        "16 MiB limit",
    ),
    "chat -f a link to /dev/zero": lambda d: (["chat", "-f", _link(d / "t.yaml", DEV_ZERO)], None, "16 MiB limit"),
    "config a 2 GB sparse file": lambda d: (
        ["complete", "--config", sparse(d / "c.yaml", 2 << 30), "hi"],
        None,
        "16 MiB limit for a config",
    ),
    "config /dev/zero": lambda d: (["complete", "--config", DEV_ZERO, "hi"], None, "16 MiB limit for a config"),
    "image a link to /dev/zero": lambda d: (
        ["complete", "-i", _link(d / "a.png", DEV_ZERO), "hi"],
        None,
        "10 MiB limit for an image",
    ),
    "video a link to /dev/zero": lambda d: (
        ["complete", "--video", _link(d / "a.mp4", DEV_ZERO), "hi"],
        None,
        "50 MiB limit for a video",
    ),
    "image sparse": lambda d: (["complete", "-i", sparse(d / "a.png", 2 << 30), "hi"], None, "10 MiB limit"),
    "image in a chat file links to a device": lambda d: (
        ["chat", "-f", write(d / "t.yaml", f"- user: look\n  images: [{_link(d / 'a.png', DEV_ZERO)}]\n")],
        None,
        "10 MiB limit",
    ),
    "chat -f alias bomb": lambda d: (
        ["chat", "-f", write(d / "laughs.yaml", LAUGHS + "messages: [{user: hi}]\n"), "--dry-run"],
        None,
        "excessive aliasing",
    ),
    "chat -f alias bomb in params": lambda d: (
        [
            "chat",
            "-f",
            write(
                d / "l.yaml",
                "params:\n"
                + "".join(f"  {line}\n" for line in LAUGHS.splitlines())
                + "  x: *i\nmessages: [{user: hi}]\n",
            ),
        ],
        None,
        "excessive aliasing",
    ),
    "config alias bomb": lambda d: (
        [
            "complete",
            "--config",
            config(
                d, "profiles:\n  default:\n    x:\n" + "".join("      " + line + "\n" for line in LAUGHS.splitlines())
            ),
            "hi",
        ],
        None,
        "excessive aliasing",
    ),
}


def _link(path: Path, target: str) -> Path:
    path.symlink_to(target)
    return path


@pytest.mark.parametrize("case", CLASS_2, ids=list(CLASS_2))
def test_class_2_reads_stop_at_their_limit(run, gateway, tmp_path, case):
    args, stdin, words = CLASS_2[case](tmp_path)
    assert_refused(run(*args, input=stdin), gateway, words=words)


@pytest.mark.parametrize(
    "args, what",
    [
        (["complete"], "a prompt"),
        (["complete", "hi"], "a prompt"),
        (["complete", "-"], "a prompt"),
        (["chat", "hi"], "a prompt"),
        (["chat", "-f", "-"], "a conversation file"),
    ],
)
def test_stdin_past_the_limit_is_refused(run, gateway, args, what):
    from anyfast_cli.streams import STDIN_PROMPT_MAX_BYTES

    result = run(*args, input=b"\0" * (max(STDIN_PROMPT_MAX_BYTES, DOCUMENT_MAX_BYTES) + 1))
    assert_refused(result, gateway, words=f"standard input is over the 16 MiB limit for {what}")


def test_a_prompt_just_under_the_limit_is_read(run, gateway):
    from anyfast_cli.streams import STDIN_PROMPT_MAX_BYTES

    result = run("complete", "--dry-run", input="x" * STDIN_PROMPT_MAX_BYTES)
    assert result.exit_code == 0, result.stderr[:500]


def test_a_document_at_the_limit_is_read_and_past_it_refused(tmp_path):
    path = write(tmp_path / "t.yaml", b"#" * DOCUMENT_MAX_BYTES)
    assert len(read_document(str(path), "a conversation file")[0]) == DOCUMENT_MAX_BYTES
    with open(path, "ab") as handle:
        handle.write(b"#")
    with pytest.raises(UsageError, match="over the 16 MiB limit for a conversation file"):
        read_document(str(path), "a conversation file")


def test_batch_lines_are_read_with_a_bound():
    import io

    ok = b"x" * LINE_MAX_BYTES
    assert list(read_lines(io.BytesIO(b'"a"\n' + ok + b"\n" + ok))) == [b'"a"\n', ok + b"\n", ok]
    with pytest.raises(UsageError, match="line 2 is over the 32 MiB limit for a batch line"):
        list(read_lines(io.BytesIO(b'"a"\n' + ok + b"x\n"), "in.jsonl"))
    with open(DEV_ZERO, "rb") as zero, pytest.raises(UsageError, match="line 1 is over"):
        next(read_lines(zero))


def test_a_piped_batch_input_is_spooled_with_a_bound(tmp_path):
    import io

    spool = io.BytesIO()
    data = b'"a"\n' + b"y" * LINE_MAX_BYTES + b'\n\n"b"'
    spool_lines(io.BytesIO(data), spool)
    assert spool.getvalue() == data
    with open(DEV_ZERO, "rb") as zero, pytest.raises(UsageError, match="line 1 is over"):
        spool_lines(zero, io.BytesIO())
    with pytest.raises(UsageError, match="line 3 is over"):
        spool_lines(io.BytesIO(b"a\nb\n" + b"z" * (LINE_MAX_BYTES + 1)), io.BytesIO())


def _limited(seconds: int = WAIT):
    """For a child that could run away (a bound that regressed): 2 GiB of address space,
    files of 256 MiB (a spool of /dev/zero), and a CPU bound. Not a measurement."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 20, 256 << 20))
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))

    return limit


def anyfast_shell(script: str, env: dict) -> subprocess.CompletedProcess:
    prelude = f'anyfast() {{ {shlex.quote(sys.executable)} -m anyfast_cli "$@"; }}\n'
    return subprocess.run(
        ["bash", "-c", prelude + script], env=env, capture_output=True, text=True, timeout=WAIT, preexec_fn=_limited()
    )


@pytest.mark.parametrize(
    "script, words",
    [
        ("anyfast complete < /dev/zero", "standard input is over the 16 MiB limit for a prompt"),
        ("anyfast complete hi < /dev/zero", "standard input is over the 16 MiB limit for a prompt"),
        ("cat /dev/zero | anyfast complete hi", "standard input is over"),
        ("yes | anyfast complete", "standard input is over"),
        ("anyfast chat -f /dev/zero", "/dev/zero: over the 16 MiB limit for a conversation file"),
        ("anyfast chat -f - < /dev/zero", "standard input is over the 16 MiB limit for a conversation file"),
        ("yes '#' | anyfast chat -f -", "standard input is over the 16 MiB limit for a conversation file"),
        ("anyfast chat -f <(yes '#')", "over the 16 MiB limit for a conversation file"),
        ("anyfast chat hi < /dev/zero", "standard input is over the 16 MiB limit for a prompt"),
        ("anyfast complete --config /dev/zero hi", "/dev/zero: over the 16 MiB limit for a config file"),
    ],
)
def test_endless_input_in_a_real_process(proc_env, gateway, script, words):
    done = anyfast_shell(f"{script}; echo status=$?", proc_env)
    assert "status=2" in done.stdout, done.stderr[-2000:]
    assert words in done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    assert not gateway.requests


@pytest.mark.parametrize(
    "script",
    [
        "anyfast batch --dry-run < /dev/zero",
        "cat /dev/zero | anyfast batch --dry-run",
        "head -c 40000000 /dev/zero | tr '\\0' x | anyfast batch --lines --dry-run",
    ],
)
def test_batch_input_without_an_end_of_line(proc_env, gateway, script):
    done = anyfast_shell(f"{script}; echo status=$?", proc_env)
    assert "status=2" in done.stdout, done.stderr[-2000:]
    assert "line 1 is over the 32 MiB limit for a batch line" in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["chat", "-f", "\udcff.yaml", "--dry-run"],
        ["chat", "--save", "\udcfe.yaml", "--dry-run", "hi"],
        ["batch", "\udcfd.jsonl", "--dry-run"],
        ["config", "show", "--config", "\udcfc.yaml"],
    ],
)
def test_a_path_that_is_not_utf8_is_refused(proc_env, gateway, tmp_path, args):
    """Existing files whose names are not UTF-8: reading them would work, but the contract
    refuses every argument that is not UTF-8 alike (exit 2), and a name is saved as text."""
    for name in (b"\xff.yaml", b"\xfd.jsonl", b"\xfc.yaml"):
        with open(os.path.join(os.fsencode(tmp_path), name), "wb") as handle:
            handle.write(b"messages: [{user: hi}]\n" if b"yaml" in name else b'"hi"\n')
    argv = [os.fsencode(a) for a in [sys.executable, "-m", "anyfast_cli", *args]]
    done = subprocess.run(argv, env=proc_env, cwd=tmp_path, capture_output=True, timeout=WAIT)
    assert done.returncode == 2, done.stderr
    assert b"UTF-8" in done.stderr and b"internal error" not in done.stderr


# --- class 7: the key command ---------------------------------------------------------------------


def key_config(tmp_path: Path, command: str, mode: int = 0o600) -> Path:
    return config(tmp_path, f"profiles:\n  default:\n    api_key_command: {json.dumps(command)}\n", mode)


@pytest.mark.parametrize(
    "mode, words",
    [(0o620, "its group can write to it (mode 620)"), (0o602, "others can write to it"), (0o666, "others can write")],
)
def test_a_key_command_config_others_can_write_is_refused(run, gateway, tmp_path, mode, words):
    path = key_config(tmp_path, "echo sk-from-command", mode)
    result = run("complete", "--config", path, "hi", key=None)
    assert_refused(result, gateway, code=2, words=words)
    assert "refusing to run it" in result.stderr and "chmod go-w" in result.stderr


def test_a_key_command_config_another_user_owns_is_refused(run, gateway, tmp_path):
    path = key_config(tmp_path, "echo sk-from-command")
    try:
        os.chown(path, 65534, -1)  # nobody
    except PermissionError:
        pytest.skip("needs root to give a file away")
    if os.geteuid() == 65534:
        pytest.skip("runs as nobody")
    assert_refused(
        run("complete", "--config", path, "hi", key=None), gateway, code=2, words="belongs to another user (uid 65534)"
    )


def test_a_writable_config_without_a_key_command_is_used(run, gateway, tmp_path):
    path = config(tmp_path, "profiles:\n  default:\n    model: m\n", 0o666)
    assert run("complete", "--config", path, "hi").exit_code == 0


@pytest.mark.parametrize(
    "config_, mode, user, owner, refused",
    [
        ({"profiles": {"a": {"api_key_command": "x"}}}, 0o600, 1000, 1000, None),
        ({"profiles": {"a": {"api_key_command": "x"}}}, 0o644, 1000, 0, None),  # root's file: as ssh allows
        ({"profiles": {"a": {"api_key_command": "x"}}}, 0o640, 1000, 1001, "another user"),
        ({"profiles": {"a": {"api_key_command": "x"}}}, 0o660, 1000, 1000, "its group"),
        ({"profiles": {"a": {}, "b": {"api_key_command": "x"}}}, 0o606, 1000, 1000, "others"),  # any profile's command
        ({"profiles": {"a": {"api_key": "k"}}}, 0o666, 1000, 1001, None),  # nothing to run
    ],
)
def test_untrusted_command_problem(config_, mode, user, owner, refused):
    problem = untrusted_command_problem(config_, mode, owner, user)
    assert (problem is None) if refused is None else (refused in problem)


@pytest.mark.parametrize(
    "command, code, words",
    [
        ("cat /dev/zero", 3, "printed over the 64 KiB limit"),
        ("yes sk-key", 3, "64 KiB limit"),
        ("printf '\\377\\376\\n'", 3, "not UTF-8"),
        ("echo 'enter PIN' >&2; exit 1", 3, "exit status 1"),
        ("kill -9 $$", 3, "killed by signal 9"),
        ("true", 3, "it printed nothing"),
        ("printf 'sk-\\001x\\n'", 3, "cannot be sent in a header"),
    ],
)
def test_key_command_failures_are_one_clear_line(run, gateway, tmp_path, command, code, words):
    result = run("complete", "--config", key_config(tmp_path, command), "hi", key=None)
    assert_refused(result, gateway, code=code, words=words)


def test_key_command_stderr_reaches_the_user(capfd):
    from anyfast_cli.commands.common import resolve_api_key
    from anyfast_cli.settings import KeySource

    with pytest.raises(AuthError):
        resolve_api_key(KeySource("command", "echo 'PIN for card 1234:' >&2; exit 1", "profile"), {})
    assert "PIN for card 1234:" in capfd.readouterr().err
    assert resolve_api_key(KeySource("command", "echo unlocking >&2; echo sk-ok", "profile"), {}) == "sk-ok"
    assert "unlocking" in capfd.readouterr().err


def _process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie is dead, only not reaped
    except FileNotFoundError:
        return True


def test_key_command_children_do_not_outlive_its_timeout(tmp_path):
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(KeyCommandFailed, match=r"took longer than 0\.5 s"):
        run_key_command(f"sleep 300 & echo $! > {pidfile}; sleep 300", timeout=0.5)
    assert time.monotonic() - started < WAIT
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not _process_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _process_gone(pid)


def test_key_command_children_left_holding_stdout_do_not_hold_us(tmp_path):
    started = time.monotonic()
    assert run_key_command("(sleep 20 &); echo sk-key", timeout=10) == (b"sk-key\n", 0)
    assert time.monotonic() - started < 5


def test_key_command_at_a_terminal_can_ask_on_dev_tty(gateway, proc_env, tmp_path):
    """The command gets the terminal while it runs (sudo, ssh and `read` ask on /dev/tty), and
    anyfast takes it back: the answer is printed after it."""
    path = key_config(tmp_path, "printf 'PIN: ' >&2; read -r k < /dev/tty; echo $k")
    env = {k: v for k, v in proc_env.items() if k != "ANYFAST_API_KEY"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "anyfast_cli", "complete", "-n", "--config", str(path), "hi"],
        env=env,
        encoding="utf-8",
        timeout=WAIT,
    )
    child.expect("PIN: ")
    child.sendline(KEY)
    child.expect("echo: hi")
    pty_end(child)
    assert child.exitstatus == 0
    assert gateway.requests[-1].headers["authorization"] == f"Bearer {KEY}"


def test_ctrl_c_at_the_key_command_s_prompt_is_130(gateway, proc_env, tmp_path):
    path = key_config(tmp_path, "printf 'PIN: ' >&2; read -r k < /dev/tty; echo $k")
    env = {k: v for k, v in proc_env.items() if k != "ANYFAST_API_KEY"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "anyfast_cli", "complete", "-n", "--config", str(path), "hi"],
        env=env,
        encoding="utf-8",
        timeout=WAIT,
    )
    child.expect("PIN: ")
    child.sendintr()
    pty_end(child)
    assert child.exitstatus == 130, child.before
    assert "internal error" not in child.before and not gateway.requests


# --- class 7: --template is plain substitution ---------------------------------------------------------


def opts(**kw) -> JobOptions:
    return JobOptions(model="m", **kw)


@pytest.mark.parametrize(
    "template, record, prompt",
    [
        ("Summarise: {text}", {"text": "a"}, "Summarise: a"),
        ("{{text}} is {text}", {"text": "a"}, "{text} is a"),
        ("{{{text}}}", {"text": "a"}, "{a}"),
        ("}}{{", {"x": 1}, None),  # no field: refused by check_template, below
        ("{n} items, {ok}, {none}", {"n": 3, "ok": True, "none": None}, "3 items, true, null"),
        ("data: {d}", {"d": {"a": [1, "é"]}}, 'data: {"a": [1, "é"]}'),
        ("{first name}/{user-id}", {"first name": "Ada", "user-id": 7}, "Ada/7"),
        ("{text}{text}", {"text": "{other}"}, "{other}{other}"),  # a value is never a template
    ],
)
def test_template_fills_only_names(template, record, prompt):
    if prompt is None:
        with pytest.raises(UsageError):
            check_template(template)
        return
    check_template(template)
    assert fill_template(template, record) == prompt


def test_template_prompt_is_bounded():
    line = json.dumps({"t": "x" * 1_000_000}).encode()
    with pytest.raises(RecordError, match="over the limit"):
        parse_record(line, 1, 0, opts(template="{t}" * 40))


def test_template_values_are_never_evaluated():
    record = parse_record(b'{"text": "{text.__class__}", "n": 5}', 1, 0, opts(template="{text} {n}"))
    assert record.body["messages"][0]["content"] == "{text.__class__} 5"


def test_exit_codes_are_what_the_contract_says():
    assert ExitCode.USAGE == 2 and ExitCode.AUTH == 3


@pytest.mark.parametrize("sort_keys", [False, True])
def test_json_writer_writes_what_json_dumps_does(sort_keys):
    # batch writes its lines, requests and fingerprints with it: the same text as json.dumps
    from anyfast_cli.structured import json_writer

    values = [
        "plain",
        'caf\u00e9 \u2028 \U0001f600 \ud800 \x00\x1f"\\',
        {"b": 1, "a": [1.5, -0.0, 1e300, 12345678901234567890, True, None, float("nan")], "c": {"z": {}, "y": []}},
        [{"role": "user", "content": "x"}, {"\u00e9": "\ud83d"}],
        {1: "int key", "": ""} if not sort_keys else {"1": "", "": ""},  # int keys cannot be sorted among str
    ]
    write = json_writer(sort_keys=sort_keys)
    for value in values:
        assert write(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)


@pytest.mark.parametrize(
    "text",
    [
        '{"a":[1,2.5,"\\u00e9"],"b":null}',
        '"text"',
        "12",
        ' {"a":1}',
        '{"a":1} ',
        '{"a":1} x',
        '{"a":1}{"b":2}',
        "\ufeff{}",
        "",
        "{",
        '{"a":}',
        "NaN",
        "[" * 5000,
    ],
)
def test_load_json_reads_what_json_loads_does(text):
    # stream events are read with it: the same value, or the same error
    from anyfast_cli.structured import load_json

    def outcome(load):
        try:
            return "value", load(text)
        except RecursionError:
            return "error", "RecursionError"
        except ValueError as exc:
            return "error", f"{type(exc).__name__}: {exc}"

    expected = outcome(json.loads)
    got = outcome(load_json)
    if expected[0] == "value" and expected[1] != expected[1]:  # NaN
        assert got[0] == "value" and got[1] != got[1]
    else:
        assert got == expected
