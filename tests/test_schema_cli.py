"""--schema end to end against the loopback gateway: `anyfast schema`, complete/chat/batch
asking for JSON, the json_schema -> json_object -> prompt step-down, validation, repair, exit 7."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from gateway import Json, completion, error_body

SPEC = "title, year int, rating float, tags list: keywords"
GOOD = '{"title":"Dune","year":1965,"rating":4.5,"tags":["sf"]}'
WRONG = '{"title":"Dune","year":"four","rating":4.5,"tags":["sf"]}'


def bad_request(message="response_format json_schema is not supported"):
    return Json(error_body(message), status=400)


def cut(content: str) -> Json:
    data = completion(content)
    data["choices"][0]["finish_reason"] = "length"
    return Json(data)


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("anyfast: error:")]


# --- anyfast schema SPEC ----------------------------------------------------------------------


def test_schema_command_prints_a_strict_schema_for_a_field_list(cli):
    result = cli("schema", SPEC)
    assert result.exit_code == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema == {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "year": {"type": "integer"},
            "rating": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string"}, "description": "keywords"},
        },
        "required": ["title", "year", "rating", "tags"],
        "additionalProperties": False,
    }


@pytest.mark.parametrize("form", ["text", "at_file", "file", "yaml_file"])
def test_schema_command_takes_each_spec_form(cli, tmp_path, form):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(schema))
    yaml_path = tmp_path / "s.yaml"
    yaml_path.write_text("type: object\nproperties:\n  n: {type: integer}\nrequired: [n]\n")
    spec = {"text": json.dumps(schema), "at_file": f"@{path}", "file": str(path), "yaml_file": str(yaml_path)}[form]
    result = cli("schema", spec)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == schema


def test_schema_command_multi_wraps_in_items(cli):
    result = cli("schema", "--multi", "name, email")
    assert json.loads(result.stdout)["properties"]["items"]["items"]["required"] == ["name", "email"]


@pytest.mark.parametrize(
    "spec, words",
    [
        ("age integerish", "unknown type"),
        ('{"type": "nope"}', "not a valid JSON Schema"),
        ("@/nonexistent/s.json", "s.json"),
        ("", "needs a SPEC"),
    ],
)
def test_a_bad_spec_is_exit_2_with_nothing_sent(run, gateway, spec, words):
    for args in (["schema", spec], ["complete", "--schema", spec, "hi"]):
        result = run(*args)
        assert result.exit_code == 2, result.stderr
        assert result.stdout == ""
        assert words in result.stderr
    assert gateway.requests == []


# --- complete / chat ---------------------------------------------------------------------------


def test_the_request_asks_for_json_schema_strict_and_the_value_is_one_line(run, gateway):
    gateway.script(Json(completion(GOOD)))
    result = run("complete", "--schema", SPEC, "a book")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == GOOD + "\n"
    body = gateway.requests[0].body
    assert body["stream"] is False  # nothing reaches stdout before it is validated
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "answer"
    assert body["response_format"]["json_schema"]["strict"] is True
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["title", "year", "rating", "tags"]


def test_a_schema_that_is_not_strict_compatible_is_sent_without_strict(run, gateway):
    gateway.script(Json(completion('{"n": 1}')))
    result = run("complete", "--schema", '{"type":"object","properties":{"n":{"type":"integer"}}}', "x")
    assert result.exit_code == 0, result.stderr
    assert gateway.requests[0].body["response_format"]["json_schema"]["strict"] is False


def test_fenced_answer_is_accepted(run, gateway):
    gateway.script(Json(completion("```json\n" + GOOD + "\n```")))
    result = run("complete", "--schema", SPEC, "a book")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["year"] == 1965
    assert len(gateway.requests) == 1


def test_a_400_on_json_schema_steps_down_to_json_object_then_prompt(run, gateway):
    gateway.script(bad_request(), bad_request("json_object neither"), Json(completion(GOOD)))
    result = run("complete", "--schema", SPEC, "a book")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == GOOD + "\n"
    first, second, third = (r.body for r in gateway.requests)
    assert first["response_format"]["type"] == "json_schema"
    assert second["response_format"] == {"type": "json_object"}
    assert second["messages"][0]["role"] == "system" and '"year"' in second["messages"][0]["content"]
    assert "response_format" not in third
    assert '"year"' in third["messages"][-1]["content"] and third["messages"][-1]["role"] == "user"
    assert result.stderr.count("warning") == 2  # one note for each step down


def test_a_400_on_the_last_step_is_the_error(run, gateway):
    gateway.script(bad_request(), bad_request(), bad_request("still no"))
    result = run("complete", "--schema", SPEC, "a book")
    assert result.exit_code == 1
    assert "still no" in error_lines(result)[0]
    assert len(gateway.requests) == 3


@pytest.mark.parametrize("mode", ["json_schema", "json_object", "prompt"])
def test_schema_mode_pins_the_request_and_a_400_is_the_error(run, gateway, mode):
    gateway.script(bad_request())
    result = run("complete", "--schema", SPEC, "--schema-mode", mode, "a book")
    assert result.exit_code == 1
    assert len(gateway.requests) == 1
    body = gateway.requests[0].body
    kind = (body.get("response_format") or {}).get("type", "prompt")
    assert kind == mode


def test_schema_mode_from_the_config(run, gateway, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("profiles:\n  default:\n    schema_mode: json_object\n")
    gateway.script(Json(completion(GOOD)))
    result = run("complete", "--config", config, "--schema", SPEC, "a book")
    assert result.exit_code == 0, result.stderr
    assert gateway.requests[0].body["response_format"] == {"type": "json_object"}
    assert "schema_mode" not in gateway.requests[0].body


def test_a_wrong_answer_then_a_good_repair_takes_exactly_two_requests(run, gateway):
    gateway.script(Json(completion(WRONG)), Json(completion(GOOD)))
    result = run("complete", "--schema", SPEC, "a book")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == GOOD + "\n"
    assert len(gateway.requests) == 2
    messages = gateway.requests[1].body["messages"]
    assert messages[-2] == {"role": "assistant", "content": WRONG}
    assert messages[-1]["role"] == "user" and "$.year: 'four' is not of type 'integer'" in messages[-1]["content"]


def test_two_wrong_answers_are_exit_7_naming_the_path_with_empty_stdout(run, gateway):
    gateway.script(Json(completion(WRONG)), Json(completion(WRONG)))
    result = run("complete", "--schema", SPEC, "a book")
    assert result.exit_code == 7
    assert result.stdout == ""
    (line,) = error_lines(result)
    assert "$.year: 'four' is not of type 'integer'" in line
    assert len(gateway.requests) == 2


def test_repair_0_fails_at_once_and_repair_2_asks_twice(run, gateway):
    gateway.script(Json(completion("not json")))
    assert run("complete", "--schema", SPEC, "--repair", "0", "x").exit_code == 7
    assert len(gateway.requests) == 1
    gateway.reset()
    gateway.script(Json(completion("nope")), Json(completion(WRONG)), Json(completion(GOOD)))
    result = run("complete", "--schema", SPEC, "--repair", "2", "x")
    assert result.exit_code == 0, result.stderr
    assert len(gateway.requests) == 3


@pytest.mark.parametrize(
    "answer",
    [
        cut('{"title": "Du'),
        Json(
            {
                **completion(""),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": None, "refusal": "I can't"},
                        "finish_reason": "stop",
                    }
                ],
            }
        ),
    ],
)
def test_a_truncated_or_refused_answer_is_exit_7_after_one_request(run, gateway, answer):
    gateway.script(answer)
    result = run("complete", "--schema", SPEC, "a book")
    assert result.exit_code == 7
    assert result.stdout == ""
    assert len(gateway.requests) == 1
    assert len(error_lines(result)) == 1


def test_json_prints_the_response_but_validation_decides_the_exit(run, gateway):
    gateway.script(Json(completion(WRONG)), Json(completion(WRONG)))
    result = run("complete", "--json", "--schema", SPEC, "a book")
    assert result.exit_code == 7
    assert json.loads(result.stdout)["choices"][0]["message"]["content"] == WRONG
    gateway.reset()
    gateway.script(Json(completion(GOOD)))
    result = run("complete", "--json", "--schema", SPEC, "a book")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["object"] == "chat.completion"


def test_stream_flag_still_validates_before_printing(run, gateway):
    gateway.script(Json(completion(WRONG)), Json(completion(WRONG)))
    result = run("complete", "--stream", "--schema", SPEC, "a book")
    assert result.exit_code == 7 and result.stdout == ""
    assert gateway.requests[0].body["stream"] is False


def test_schema_multi_asks_for_items(run, gateway):
    gateway.script(Json(completion('{"items": [{"name": "a", "email": "a@x"}, {"name": "b", "email": "b@x"}]}')))
    result = run("complete", "--schema-multi", "name, email", "extract")
    assert result.exit_code == 0, result.stderr
    assert [item["email"] for item in json.loads(result.stdout)["items"]] == ["a@x", "b@x"]


def test_dry_run_shows_the_response_format(run, gateway):
    result = run("complete", "--dry-run", "--schema", "name", "x", key=None)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["body"]["response_format"]["type"] == "json_schema"
    assert gateway.requests == []


def test_chat_schema_and_save_keep_the_answer(run, gateway, tmp_path):
    save = tmp_path / "talk.yaml"
    gateway.script(Json(completion(GOOD)))
    result = run("chat", "--schema", SPEC, "--save", save, "a book")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == GOOD + "\n"
    assert "Dune" in save.read_text()
    assert gateway.requests[0].body["response_format"]["type"] == "json_schema"


def test_schema_mode_and_repair_need_schema(run, gateway):
    assert run("complete", "--repair", "2", "x").exit_code == 2
    assert run("complete", "--schema-mode", "nope", "--schema", "a", "x").exit_code == 2
    assert gateway.requests == []


# --- batch -------------------------------------------------------------------------------------


def batch_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_batch_fallback_is_learned_once_per_model(run, gateway, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "prompt": f"book {i}"}) + "\n" for i in range(20)))
    out = tmp_path / "out.jsonl"
    gateway.script(bad_request())  # the first request: a 400 to json_schema
    gateway.script(*[Json(completion(GOOD)) for _ in range(20)])
    result = run("batch", source, "-o", out, "-j", "1", "--schema", SPEC)
    assert result.exit_code == 0, result.stderr
    assert len(gateway.requests) == 21  # one extra request for the model, not one per record
    kinds = [r.body.get("response_format", {}).get("type") for r in gateway.requests]
    assert kinds[0] == "json_schema" and kinds[1:] == ["json_object"] * 20
    lines = batch_lines(out)
    assert len(lines) == 20 and all(line["parsed"]["year"] == 1965 and line["error"] is None for line in lines)
    assert result.stderr.count("refused response_format") == 1
    # With -j > 1 the records in flight in json_schema step down too (test_batch_slow.py).


def test_batch_failed_validation_is_a_failed_record_and_resume_resends_it(run, gateway, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(
        json.dumps({"id": "a", "prompt": "first"}) + "\n" + json.dumps({"id": "b", "prompt": "second"}) + "\n"
    )
    out = tmp_path / "out.jsonl"

    gateway.script(Json(completion(GOOD)), Json(completion("not json")), Json(completion(WRONG)))
    result = run("batch", source, "-o", out, "-j", "1", "--schema", SPEC, "--repair", "1")
    assert result.exit_code == 6, result.stderr
    by_id = {line["custom_id"]: line for line in batch_lines(out)}
    assert by_id["a"]["parsed"]["title"] == "Dune" and by_id["a"]["error"] is None
    assert by_id["b"]["error"]["code"] == "schema_mismatch"
    assert "$.year" in by_id["b"]["error"]["message"]
    assert "parsed" not in by_id["b"]
    assert by_id["b"]["response"]["body"]["choices"][0]["message"]["content"] == WRONG

    gateway.reset()
    gateway.script(Json(completion(GOOD)))
    result = run("batch", source, "-o", out, "--resume", "--schema", SPEC)
    assert result.exit_code == 0, result.stderr
    assert len(gateway.requests) == 1
    assert "second" in json.dumps(gateway.requests[0].body["messages"])
    by_id = {line["custom_id"]: line for line in batch_lines(out)}
    assert by_id["b"]["parsed"]["year"] == 1965


@pytest.mark.parametrize(
    "reply, code",
    [
        (cut('{"ti'), "truncated"),
        (
            Json(
                {
                    **completion(""),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "", "refusal": "no"},
                            "finish_reason": "stop",
                        }
                    ],
                }
            ),
            "refused",
        ),
    ],
)
def test_batch_error_codes_for_answers_not_repaired(run, gateway, tmp_path, reply, code):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps("a book") + "\n")
    out = tmp_path / "out.jsonl"
    gateway.script(reply)
    result = run("batch", source, "-o", out, "--schema", SPEC)
    assert result.exit_code == 6
    assert batch_lines(out)[0]["error"]["code"] == code
    assert len(gateway.requests) == 1


def test_batch_invalid_json_code_and_a_record_with_its_own_schema(run, gateway, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "x", "prompt": "p", "schema": "n int"}) + "\n")
    out = tmp_path / "out.jsonl"
    gateway.script(Json(completion("nope")), Json(completion("still nope")))
    result = run("batch", source, "-o", out)
    assert result.exit_code == 6
    assert batch_lines(out)[0]["error"]["code"] == "invalid_json"
    sent = gateway.requests[0].body
    assert sent["response_format"]["json_schema"]["schema"]["required"] == ["n"]
    assert "schema" not in sent


def test_batch_record_with_a_bad_schema_is_an_invalid_line(run, gateway, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"prompt": "p", "schema": "n weird"}) + "\n")
    result = run("batch", source)
    assert result.exit_code == 2
    assert "unknown type" in result.stderr
    assert gateway.requests == []


def test_batch_dry_run_shows_json_schema(run, gateway, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps("hi") + "\n")
    result = run("batch", source, "--dry-run", "--schema", "n int", key=None)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["body"]["response_format"]["type"] == "json_schema"


# --- start-up cost ------------------------------------------------------------------------------


def test_complete_without_schema_never_imports_jsonschema(proc_env, gateway):
    code = (
        "import sys, runpy\n"
        "sys.argv = ['anyfast', 'complete', '-n', '--no-stream', 'hi']\n"
        "try:\n    runpy.run_module('anyfast_cli', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "sys.stderr.write('JSONSCHEMA=' + str('jsonschema' in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=proc_env, timeout=60)
    assert "echo: hi" in done.stdout
    assert "JSONSCHEMA=False" in done.stderr
