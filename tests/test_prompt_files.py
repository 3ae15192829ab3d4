"""Prompt files (contract §3 "Prompt files and variables"): placeholders at every position, errors
naming the file and line, --var and {input}, lookup by name in its order, `anyfast prompts`, and
`batch -f`, whose records are rendered and validated before anything is sent."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from anyfast_cli.errors import UsageError
from anyfast_cli.inputs import parse_conversation
from anyfast_cli.prompt_lookup import list_prompts, resolve_prompt_ref
from anyfast_cli.templating import RENDERED_MAX_CHARS, check_used, compile_template, parse_var, render_or_explain

REVIEW = """\
description: Review a diff
vars: {lang: Python}
messages:
  - system: You review {lang} code. Literal {{braces}}.
  - user: "Review this:\\n{input}"
"""


def template_of(text: str, source: str = "p.yaml"):
    return compile_template(parse_conversation(text, source), source, text)


def rendered(text: str, **values) -> dict:
    """The rendered conversation as --save would write it (a mapping)."""
    from anyfast_cli.inputs import render_conversation

    template = template_of(text)
    return yaml.safe_load(render_conversation(render_or_explain(template, {**template.defaults, **values})))


# --- which texts are templates --------------------------------------------------------------


def test_placeholders_are_filled_in_system_and_in_system_developer_and_user_messages():
    text = """\
vars: {}
system: top {v}
messages:
  - system: sys {v}
  - role: developer
    content: dev {v}
  - user: user {v}
  - role: user
    content: [{type: text, text: "part {v}"}, {type: image_url, image_url: {url: "https://x/{v}.png"}}]
  - assistant: "kept {v} {not.a.placeholder}"
  - role: tool
    tool_call_id: c1
    content: "kept {v}"
"""
    data = rendered(text, v="V")
    assert data["system"] == "top V"
    contents = [m.get("content") for m in data["messages"]]
    assert contents[:3] == ["sys V", "dev V", "user V"]
    assert contents[3] == [
        {"type": "text", "text": "part V"},
        {"type": "image_url", "image_url": {"url": "https://x/{v}.png"}},  # only text is a template
    ]
    assert contents[4:] == ["kept {v} {not.a.placeholder}", "kept {v}"]  # never rendered


def test_a_file_without_vars_is_sent_as_it_is_braces_and_all(run, gateway, tmp_path):
    talk = tmp_path / "talk.yaml"
    talk.write_text("messages:\n  - user: 'keep {this} and {that.one} and }'\n")
    result = run("chat", "-f", talk, "--no-stream")
    assert result.exit_code == 0, result.stderr
    assert gateway.requests[-1].body["messages"][0]["content"] == "keep {this} and {that.one} and }"


def test_a_saved_conversation_never_becomes_a_template(run, gateway, tmp_path):
    """The reply holds braces; --save writes no vars:, so the next run sends them as they are."""
    prompt = tmp_path / "p.yaml"
    prompt.write_text("vars: {}\nmessages:\n  - user: '{input}'\n")
    saved = tmp_path / "saved.yaml"
    assert run("chat", "-f", prompt, "--save", saved, "--no-stream", "say {x.y}").exit_code == 0
    assert "vars" not in yaml.safe_load(saved.read_text())
    result = run("chat", "-f", saved, "--save", saved, "--no-stream", "again {")
    assert result.exit_code == 0, result.stderr
    assert [m["content"] for m in gateway.requests[-1].body["messages"]] == ["say {x.y}", "echo: say {x.y}", "again {"]


# --- errors name the file and the line --------------------------------------------------------


@pytest.mark.parametrize(
    "text, line, where",
    [
        ("vars: {}\nsystem: 'a {x.y}'\nmessages: [{user: hi}]\n", 2, "in system"),
        ("vars: {}\nmessages:\n  - user: hi\n  - user: 'a {}'\n", 4, "in message 2"),
        (
            "vars: {}\nmessages:\n  - role: user\n    content: 'fine {a}'\n  - role: system\n    content: x {\n",
            6,
            "message 2",
        ),
        (
            "vars: {}\nmessages:\n  - user: |\n      line one {a}\n      line two\n      line {b:>9} three\n",
            6,
            "message 1",
        ),
        (
            "vars: {}\nmessages:\n  - role: user\n    content:\n      - {type: text, text: 'ok'}\n      - {type: text, text: 'b {!}'}\n",
            6,
            "part 2",
        ),
        ('{"vars": {},\n "messages": [\n  {"user": "fine"},\n  {"user": "x {a.b}"}]}\n', 4, "message 2"),
        ("- user: fine\n", None, None),  # a bare list has no vars: never a template
    ],
)
def test_a_placeholder_error_names_the_file_and_line(text, line, where):
    conversation = parse_conversation(text, "p.yaml")
    if line is None:
        assert not conversation.is_template
        return
    with pytest.raises(UsageError) as caught:
        compile_template(conversation, "p.yaml", text)
    message = caught.value.message
    assert message.startswith(f"p.yaml:{line}: ") and where in message and "{{ and }}" in message, message


@pytest.mark.parametrize(
    "vars_text, problem",
    [
        ("vars: [a, b]", "must be a mapping"),
        ("vars: {'a.b': x}", "not a placeholder name"),
        ("vars: {input: x}", "{input} is the prompt"),
        ("vars: {a: [1]}", "must be text"),
    ],
)
def test_bad_vars_are_exit_2_naming_the_file(vars_text, problem):
    with pytest.raises(UsageError, match=problem) as caught:
        parse_conversation(vars_text + "\nmessages: [{user: hi}]\n", "p.yaml")
    assert caught.value.message.startswith("p.yaml: ")


# --- values -------------------------------------------------------------------------------------


def test_defaults_flags_and_values_inserted_once():
    text = "vars: {a: file, n: 3, none: null}\nmessages:\n  - user: '{a} {n} {b}'\n"
    assert rendered(text, b="{a}")["messages"][0]["content"] == "file 3 {a}"  # the value's {a} stays text
    template = template_of(text)
    assert template.defaults == {"a": "file", "n": "3"}  # null: declared, no default


def test_a_placeholder_without_a_value_and_an_unused_var_are_errors():
    template = template_of("vars: {}\nmessages:\n  - user: 'hi {name}'\n")
    with pytest.raises(UsageError, match=r"p.yaml: no value for \{name\}") as caught:
        render_or_explain(template, {})
    assert "--var name=VALUE" in caught.value.hint
    with pytest.raises(UsageError, match=r"--var nmae: p.yaml has no \{nmae\} placeholder \(its placeholders: name\)"):
        check_used(template, {"nmae": "x"})


def test_var_forms(tmp_path):
    assert parse_var("a=b=c", None) == ("a", "b=c")
    assert parse_var("a=", None) == ("a", "")
    assert parse_var("a=@notes.txt", lambda path: f"text of {path}") == ("a", "text of notes.txt")
    for bad, problem in (
        ("novalue", "NAME=VALUE"),
        ("=x", "NAME=VALUE"),
        ("a.b=x", "not a placeholder"),
        ("input=x", "the prompt"),
    ):
        with pytest.raises(UsageError, match=problem):
            parse_var(bad, None)


def test_the_rendered_prompt_is_bounded():
    template = template_of("vars: {}\nmessages:\n  - user: '" + "{v}" * 40 + "'\n")
    with pytest.raises(UsageError, match="over the limit"):
        render_or_explain(template, {"v": "x" * (RENDERED_MAX_CHARS // 39)})


# --- chat -f ----------------------------------------------------------------------------------


@pytest.fixture
def prompts_dir(tmp_path, monkeypatch):
    """./.anyfast/prompts in a fresh current directory, holding review.yaml."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / ".anyfast" / "prompts"
    folder.mkdir(parents=True)
    (folder / "review.yaml").write_text(REVIEW)
    return folder


def test_chat_f_name_with_var_and_input_from_stdin(run, gateway, prompts_dir):
    result = run("chat", "-f", "review", "--var", "lang=Go", "--no-stream", input="the diff\n")
    assert result.exit_code == 0, result.stderr
    assert gateway.requests[-1].body["messages"] == [
        {"role": "system", "content": "You review Go code. Literal {braces}."},
        {"role": "user", "content": "Review this:\nthe diff"},  # the prompt in {input}, not a message of its own
    ]
    assert result.stdout == "echo: Review this:\nthe diff\n"


def test_var_at_file_inserts_the_files_text_as_it_is(run, gateway, prompts_dir, tmp_path):
    (tmp_path / "lang.txt").write_text("{input} and Rust")
    assert run("chat", "-f", "review", "--var", "lang=@lang.txt", "--no-stream", "x").exit_code == 0
    assert gateway.requests[-1].body["messages"][0]["content"] == "You review {input} and Rust code. Literal {braces}."


@pytest.mark.parametrize(
    "args, problem",
    [
        (["--var", "lnag=Go", "x"], "--var lnag: .anyfast/prompts/review.yaml has no {lnag} placeholder"),
        (["-n"], "uses {input}, and no prompt was given"),
        (["--var", "lang=@missing.txt", "x"], "--var: cannot read missing.txt"),
        (["--var", "input=x", "y"], "--var input: {input} is the prompt"),
    ],
)
def test_chat_prompt_file_mistakes_are_exit_2_before_anything_is_sent(run, gateway, prompts_dir, args, problem):
    result = run("chat", "-f", "review", *args)
    assert result.exit_code == 2 and problem in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) <= 2 and "internal error" not in result.stderr
    assert gateway.requests == []


def test_a_file_without_input_gets_the_prompt_as_a_final_message_and_var_needs_a_prompt_file(run, gateway, tmp_path):
    prompt = tmp_path / "p.json"
    prompt.write_text(json.dumps({"vars": {"who": "you"}, "messages": [{"system": "Be {who}."}]}))
    assert run("chat", "-f", prompt, "--no-stream", "hi").exit_code == 0
    assert gateway.requests[-1].body["messages"] == [
        {"role": "system", "content": "Be you."},
        {"role": "user", "content": "hi"},
    ]
    plain = tmp_path / "plain.yaml"
    plain.write_text("messages: [{user: hi}]\n")
    result = run("chat", "-f", plain, "--var", "a=b")
    assert result.exit_code == 2 and "not a prompt file (it has no vars:)" in result.stderr


def test_save_writes_the_rendered_conversation_without_vars_description_schema(run, gateway, tmp_path):
    prompt = tmp_path / "p.yaml"
    prompt.write_text("description: d\nvars: {a: A}\nschema: 'answer'\nmessages:\n  - user: 'say {a}: {input}'\n")
    saved = tmp_path / "out.yaml"
    gateway.script(_json_answer({"answer": "ok"}))
    result = run("chat", "-f", prompt, "--save", saved, "now")
    assert result.exit_code == 0, result.stderr
    assert gateway.requests[-1].body["response_format"]["type"] == "json_schema"  # the file's schema: used
    data = yaml.safe_load(saved.read_text())
    assert set(data) == {"messages"}
    assert data["messages"][0] == {"role": "user", "content": "say A: now"}


def _json_answer(value) -> object:
    from gateway import Json, completion

    return Json(completion(json.dumps(value)))


def test_the_flag_schema_beats_the_files_and_dry_run_shows_the_rendered_request(run, gateway, tmp_path):
    prompt = tmp_path / "p.yaml"
    prompt.write_text(
        "vars: {a: A}\nschema: {type: object, properties: {x: {type: string}}}\nmessages: [{user: '{a}'}]\n"
    )
    result = run("chat", "-f", prompt, "--schema", "y int", "--dry-run")
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)["body"]
    assert body["messages"][0]["content"] == "A"
    assert list(body["response_format"]["json_schema"]["schema"]["properties"]) == ["y"]
    assert gateway.requests == []


# --- lookup by name ---------------------------------------------------------------------------


def write_prompt(folder, name, description):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"description: {description}\nvars: {{}}\nmessages: [{{user: hi}}]\n")
    return path


def test_lookup_order_first_found_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = tmp_path / "team", tmp_path / "mine"
    project, beside_config = tmp_path / ".anyfast" / "prompts", tmp_path / "xdg" / "anyfast" / "prompts"
    dirs = [str(first), str(second), ".anyfast/prompts", str(beside_config)]
    write_prompt(beside_config, "a.yaml", "config")
    assert resolve_prompt_ref("a", dirs) == str(beside_config / "a.yaml")
    write_prompt(project, "a.json", "project")
    assert resolve_prompt_ref("a", dirs) == ".anyfast/prompts/a.json"
    write_prompt(second, "a.yml", "mine")
    assert resolve_prompt_ref("a", dirs) == str(second / "a.yml")
    write_prompt(second, "a.yaml", "mine, yaml")  # in one directory: .yaml, then .yml, then .json
    assert resolve_prompt_ref("a", dirs) == str(second / "a.yaml")
    write_prompt(first, "a.json", "team")
    assert resolve_prompt_ref("a", dirs) == str(first / "a.json")
    (tmp_path / "a").write_text("[]")  # a file here is the file meant
    assert resolve_prompt_ref("a", dirs) == "a"
    for path in ("a.yaml", "./a", "-"):  # a path, not a name
        assert resolve_prompt_ref(path, dirs) == path
    with pytest.raises(UsageError, match="no prompt file b") as caught:
        resolve_prompt_ref("b", dirs)
    assert "anyfast prompts" in caught.value.hint
    listing = list_prompts(dirs)
    assert [(e.name, e.path, e.description) for e in listing.entries] == [("a", str(first / "a.json"), "team")]


def test_the_environment_and_the_config_place_the_directories(run, gateway, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    beside = tmp_path / "conf" / "prompts"
    write_prompt(beside, "c.yaml", "beside the config")
    write_prompt(tmp_path / "p1", "p.yaml", "path one")
    write_prompt(tmp_path / "p2", "p.yaml", "path two")
    write_prompt(tmp_path / "p2", "q.yaml", "only in two")
    (tmp_path / "conf" / "c.yml").write_text("")  # a config named by ANYFAST_CONFIG must exist
    env = {
        "ANYFAST_PROMPTS_PATH": f"{tmp_path / 'p1'}::{tmp_path / 'p2'}",
        "ANYFAST_CONFIG": str(tmp_path / "conf" / "c.yml"),
    }
    result = run("prompts", **env)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "p\tpath one\nq\tonly in two\nc\tbeside the config\n"
    result = run("prompts", "--json", **env)
    assert json.loads(result.stdout)[0] == {
        "name": "p",
        "path": str(tmp_path / "p1" / "p.yaml"),
        "description": "path one",
    }
    assert run("prompts", "show", "q", **env).stdout == (tmp_path / "p2" / "q.yaml").read_text()
    assert run("chat", "-f", "c", "--no-stream", **env).exit_code == 0
    other = tmp_path / "elsewhere" / "prompts"
    write_prompt(other, "o.yaml", "o")
    assert run("prompts", "--config", tmp_path / "elsewhere" / "x.yaml", **env).stdout.endswith("o\to\n")


def test_prompts_names_what_it_cannot_read_and_goes_on(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good, broken = tmp_path / "good", tmp_path / "broken"
    write_prompt(good, "fine.yaml", "fine")
    write_prompt(good, "later.yaml", "shadowed by the broken file, which -f would take")
    broken.mkdir()
    (broken / "later.yaml").write_text("vars: {}\nmessages: [{user: 'x {a.b}'}]\n")
    (broken / "bad.yml").write_text("messages: [\n")
    (broken / "notes.txt").write_text("not a prompt file")
    loop = tmp_path / "loop"
    os.symlink(loop, loop)  # a directory that cannot be read, whoever runs the tests
    path = os.pathsep.join(map(str, (loop, broken, good, tmp_path / "missing")))
    result = run("prompts", ANYFAST_PROMPTS_PATH=path)
    assert result.exit_code == 0
    assert result.stdout == "fine\tfine\n"
    warnings = result.stderr.splitlines()
    assert len(warnings) == 3, warnings
    assert f"cannot read the prompt directory {loop}" in warnings[0]
    assert "skipped prompt bad" in warnings[1] and "bad.yml:" in warnings[1]
    assert "skipped prompt later" in warnings[2] and "later.yaml:2:" in warnings[2]


# --- batch -f ---------------------------------------------------------------------------------


def test_batch_renders_every_record_through_the_prompt_file(run, gateway, tmp_path):
    prompt = tmp_path / "p.yaml"
    prompt.write_text(
        "model: file-model\nparams: {temperature: 0.5, top_p: 0.5}\n"
        "vars: {tone: plain, lang: English}\nmessages:\n"
        "  - system: 'Answer in {lang}, {tone}.'\n  - user: 'Q: {input} ({n})'\n"
    )
    records = [
        {"custom_id": "a", "prompt": "first", "n": 1, "tone": "warm", "temperature": 0.1, "unused": True},
        {"prompt": "second", "n": {"k": [1]}, "model": "record-model"},
    ]
    lines = "".join(json.dumps(r) + "\n" for r in records)
    result = run("batch", "-f", prompt, "--var", "lang=French", "--ordered", input=lines)
    assert result.exit_code == 0, result.stderr
    bodies = sorted((r.body for r in gateway.requests), key=lambda b: b["messages"][1]["content"])
    assert bodies[0]["messages"] == [
        {"role": "system", "content": "Answer in French, warm."},
        {"role": "user", "content": "Q: first (1)"},
    ]
    assert (bodies[0]["model"], bodies[0]["temperature"], bodies[0]["top_p"]) == ("file-model", 0.1, 0.5)
    assert bodies[1]["messages"][1]["content"] == 'Q: second ({"k": [1]})'
    assert (bodies[1]["model"], bodies[1]["temperature"]) == ("record-model", 0.5)
    gateway.reset()
    result = run(
        "batch", "-f", prompt, "-m", "flag-model", "--dry-run", "--var", "lang=x", input='{"prompt": "p", "n": 2}\n'
    )
    assert json.loads(result.stdout)["body"]["model"] == "flag-model"  # -m beats the file's model:


def test_batch_lines_and_strings_are_input_and_a_file_without_input_appends_them(run, gateway, tmp_path):
    with_input = tmp_path / "in.yaml"
    with_input.write_text("vars: {}\nmessages: [{user: 'Translate: {input}'}]\n")
    result = run("batch", "-f", with_input, "--lines", "--dry-run", input="one\ntwo\n")
    assert [json.loads(line)["body"]["messages"] for line in result.stdout.splitlines()] == [
        [{"role": "user", "content": "Translate: one"}],
        [{"role": "user", "content": "Translate: two"}],
    ]
    without = tmp_path / "out.yaml"
    without.write_text("vars: {}\nsystem: Be brief.\nmessages: []\n")
    result = run("batch", "-f", without, "--dry-run", input='"a question"\n')
    assert json.loads(result.stdout)["body"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "a question"},
    ]
    assert gateway.requests == []


def test_batch_bad_records_are_reported_by_line_and_nothing_is_sent(run, gateway, tmp_path):
    prompt = tmp_path / "p.yaml"
    prompt.write_text("vars: {}\nmessages: [{user: '{input} for {who}'}]\n")
    lines = [
        {"prompt": "fine", "who": "me"},
        {"prompt": "x"},  # {who} has no value
        {"who": "me"},  # no prompt for {input}
        {"messages": [{"role": "user", "content": "own"}], "who": "me"},
        {"custom_id": "c", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}},
        {"prompt": "  ", "who": "me"},
    ]
    result = run("batch", "-f", prompt, input="".join(json.dumps(line) + "\n" for line in lines))
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("anyfast: error: line")]
    assert [e.split(":")[2].strip() for e in errors] == ["line 2", "line 3", "line 4", "line 5", "line 6"]
    assert "no value for {who}" in errors[0] and "uses {input}" in errors[1] and "'messages' or 'body'" in errors[2]
    assert "5 invalid line(s) in the input; nothing was sent" in result.stderr
    assert gateway.requests == []


@pytest.mark.parametrize(
    "args, problem",
    [
        (["--template", "{text}"], "-f and --template"),
        (["--var", "nobody=x"], "--var nobody"),
    ],
)
def test_batch_f_flag_mistakes_are_exit_2(run, gateway, tmp_path, args, problem):
    prompt = tmp_path / "p.yaml"
    prompt.write_text("vars: {}\nmessages: [{user: '{input}'}]\n")
    result = run("batch", "-f", prompt, *args, input='"x"\n')
    assert result.exit_code == 2 and problem in result.stderr, result.stderr
    assert run("batch", "--var", "a=b", input='"x"\n').exit_code == 2  # --var needs -f
    assert gateway.requests == []


def test_batch_output_may_not_be_the_prompt_file(run, gateway, tmp_path):
    prompt = tmp_path / "p.yaml"
    prompt.write_text("vars: {}\nmessages: [{user: '{input}'}]\n")
    before = prompt.read_bytes()
    result = run("batch", "-f", prompt, "-o", prompt, input='"x"\n')
    assert result.exit_code == 2 and "is the prompt file" in result.stderr
    assert prompt.read_bytes() == before and gateway.requests == []


def test_images_join_the_message_holding_input(run, gateway, tmp_path):
    prompt = tmp_path / "p.yaml"
    prompt.write_text("vars: {}\nmessages:\n  - user: 'Describe: {input}'\n  - assistant: ok\n")
    image = tmp_path / "photo.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    result = run("chat", "-f", prompt, "-i", image, "--no-stream", "this")
    assert result.exit_code == 0, result.stderr
    content = gateway.requests[-1].body["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "Describe: this"}
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")
