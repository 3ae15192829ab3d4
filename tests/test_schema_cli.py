"""--schema end to end against the loopback gateway: `anyfast schema`, complete/chat/batch
asking for JSON, the json_schema -> json_object -> prompt step-down, validation, repair, exit 7."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from gateway import Json, Sse, completion, error_body
from helpers import WAIT, spawn_cli

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


# --- checks that always end (issue 15, class 3) ---------------------------------------------------

BACKTRACKS = json.dumps({"type": "object", "properties": {"w": {"type": "string", "pattern": "^(a|a)+$"}}})
SLOW_ANSWER = json.dumps({"w": "a" * 40 + "!"})  # Python's re would match this for ever
QUICK_ANSWER = json.dumps({"w": "aaa"})


def test_a_pattern_that_backtracks_is_exit_7_when_max_time_runs_out(run, gateway):
    gateway.script(Json(completion(SLOW_ANSWER)))
    started = time.monotonic()
    result = run("complete", "--max-time", "1", "--schema", BACKTRACKS, "x")
    assert result.exit_code == 7
    assert time.monotonic() - started < WAIT
    assert result.stdout == ""
    assert "could not be checked" in error_lines(result)[0]
    assert len(gateway.requests) == 1  # not re-asked: the schema, not the answer, is the trouble


def test_a_check_is_bounded_without_max_time_too(run, gateway, monkeypatch):
    from anyfast_cli import schema

    monkeypatch.setattr(schema, "CHECK_SECONDS", 0.5)
    gateway.script(Json(completion(SLOW_ANSWER)))
    result = run("complete", "--schema", BACKTRACKS, "x")
    assert result.exit_code == 7
    assert "in 0.5 s" in error_lines(result)[0]


def wait_until(condition, process) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_complete_while_it_checks(proc_env, gateway, signum, status):
    gateway.script(Json(completion(SLOW_ANSWER)))
    process = spawn_cli(proc_env, "complete", "--schema", BACKTRACKS, "x")  # the check may take 5 s
    try:
        wait_until(lambda: gateway.requests, process)
        time.sleep(0.5)  # the answer is in, the check has begun
        signalled = time.monotonic()
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=WAIT)
        assert process.returncode == status, stderr
        assert time.monotonic() - signalled < 2.0  # not after the 5 s the check could take
        assert stdout == "" and "Traceback" not in stderr
    finally:
        process.kill()
        process.communicate()


def test_sigterm_ends_a_batch_stuck_in_a_check_with_every_answered_record_written(proc_env, gateway, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": f"r{i}", "prompt": "p"}) + "\n" for i in range(3)))
    out = tmp_path / "out.jsonl"
    gateway.script(*[Json(completion(answer)) for answer in (QUICK_ANSWER, SLOW_ANSWER, QUICK_ANSWER)])
    process = spawn_cli(
        proc_env, "batch", source, "-o", out, "-j", "2", "--schema", BACKTRACKS, "--schema-mode", "json_schema"
    )
    try:
        # one worker waits on the slow check (5 s); the other answers the rest meanwhile
        wait_until(lambda: out.exists() and out.read_text().count("\n") == 2, process)
        assert len(gateway.requests) == 3
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=WAIT)
        assert process.returncode == 143, stderr
        assert time.monotonic() - signalled < 2.0  # not when the check would have ended
    finally:
        process.kill()
        process.communicate()
    lines = batch_lines(out)
    assert len(lines) == 2 and all(line["parsed"] == {"w": "aaa"} for line in lines)
    assert "2 ok" in stderr  # the summary


def test_batch_a_record_whose_check_runs_out_of_time_fails_alone(run, gateway, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": f"r{i}", "prompt": "p"}) + "\n" for i in range(3)))
    out = tmp_path / "out.jsonl"
    gateway.script(*[Json(completion(answer)) for answer in (QUICK_ANSWER, SLOW_ANSWER, QUICK_ANSWER)])
    result = run("batch", source, "-o", out, "-j", "1", "--max-time", "1", "--schema", BACKTRACKS)
    assert result.exit_code == 6, result.stderr
    by_id = {line["custom_id"]: line for line in batch_lines(out)}
    assert by_id["r1"]["error"]["code"] == "schema_timeout" and "parsed" not in by_id["r1"]
    assert by_id["r0"]["parsed"] == by_id["r2"]["parsed"] == {"w": "aaa"}
    assert len(gateway.requests) == 3  # the record that could not be checked is not re-asked


# --- schemas that cannot be used are refused before anything is sent (class 5) -----------------


def unusable_schemas(gateway) -> list[tuple[str, str]]:
    return [
        (json.dumps({"$ref": f"{gateway.url}/schema.json"}), "remote schemas are not fetched"),
        (
            json.dumps({"properties": {"a": {"$ref": "#/$defs/a"}}}),
            "$.properties.a: $ref '#/$defs/a' cannot be resolved",
        ),
        (json.dumps({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}), "leads back"),
    ]


def test_complete_and_batch_refuse_an_unusable_schema_before_sending(run, gateway, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps("hi") + "\n")
    connections = gateway.connections
    for spec, words in unusable_schemas(gateway):
        for args in (["complete", "--schema", spec, "x"], ["batch", source, "--schema", spec], ["schema", spec]):
            result = run(*args)
            assert result.exit_code == 2, (args, result.stderr)
            assert words in error_lines(result)[0] and "internal error" not in result.stderr
    assert gateway.requests == [] and gateway.connections == connections  # no POST, and no GET either


def test_a_record_with_an_unusable_schema_is_reported_by_its_line(run, gateway, tmp_path):
    source = tmp_path / "in.jsonl"
    schemas = [json.loads(spec) for spec, _ in unusable_schemas(gateway)]
    source.write_text("".join(json.dumps({"prompt": "p", "schema": s}) + "\n" for s in [{}, *schemas]))
    connections = gateway.connections
    result = run("batch", source)
    assert result.exit_code == 2
    lines = error_lines(result)[:3]
    assert [line.split(":")[2].strip() for line in lines] == ["line 2", "line 3", "line 4"]
    for line, (_, words) in zip(lines, unusable_schemas(gateway)):
        assert words in line
    assert gateway.requests == [] and gateway.connections == connections


# --- what the contract promises on stdout (class 6) ----------------------------------------------


def test_an_out_of_range_number_is_exit_7_never_infinity(run, gateway):
    gateway.script(Json(completion('{"n": 1e400}')), Json(completion('{"n": 1e400}')))
    result = run("complete", "--schema", "n float", "x")
    assert result.exit_code == 7
    assert result.stdout == ""
    assert "1e400 is too large" in error_lines(result)[0]
    assert "1e400" in gateway.requests[1].body["messages"][-1]["content"]  # the re-ask says why


def test_batch_an_out_of_range_number_is_a_failed_record(run, gateway, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps("hi") + "\n")
    out = tmp_path / "out.jsonl"
    gateway.script(Json(completion('{"n": 1e400}')), Json(completion('{"n": -Infinity}')))
    result = run("batch", source, "-o", out, "--schema", "n float")
    assert result.exit_code == 6
    (line,) = batch_lines(out)
    assert line["error"]["code"] == "invalid_json" and "parsed" not in line
    assert "-Infinity is not a number JSON allows" in line["error"]["message"]

    def not_json(name):
        raise AssertionError(f"{name} written as a value")

    json.loads(out.read_text(), parse_constant=not_json)  # the answers' text holds them; no value does


def several(*contents: str) -> Json:
    data = completion(contents[0])
    data["choices"] = [
        {"index": i, "message": {"role": "assistant", "content": c}, "finish_reason": "stop"}
        for i, c in enumerate(contents)
    ]
    return Json(data)


BOOK2 = GOOD.replace("Dune", "Emma")


def test_every_choice_is_checked_and_printed(run, gateway):
    gateway.script(several(GOOD, BOOK2))
    result = run("complete", "-p", "n=2", "--schema", SPEC, "two books")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == GOOD + "\n" + BOOK2 + "\n"
    gateway.reset()
    gateway.script(several(GOOD, WRONG), several(BOOK2, GOOD))
    result = run("complete", "-p", "n=2", "--schema", SPEC, "two books")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == BOOK2 + "\n" + GOOD + "\n"
    assert len(gateway.requests) == 2 and gateway.requests[1].body["n"] == 2
    assert gateway.requests[1].body["messages"][-2] == {"role": "assistant", "content": WRONG}
    gateway.reset()
    gateway.script(several(GOOD, WRONG), several(GOOD, WRONG))
    result = run("complete", "-p", "n=2", "--schema", SPEC, "two books")
    assert result.exit_code == 7 and result.stdout == ""
    assert "choice 1: $.year" in error_lines(result)[0]


def test_batch_parsed_holds_every_choice(run, gateway, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"prompt": "two", "n": 2}) + "\n" + json.dumps({"prompt": "one"}) + "\n")
    out = tmp_path / "out.jsonl"
    gateway.script(several(GOOD, BOOK2), Json(completion(GOOD)))
    result = run("batch", source, "-o", out, "-j", "1", "--ordered", "--schema", SPEC)
    assert result.exit_code == 0, result.stderr
    first, second = batch_lines(out)
    assert [book["title"] for book in first["parsed"]] == ["Dune", "Emma"]
    assert second["parsed"]["title"] == "Dune"


def test_a_bare_word_spec_never_reads_a_file_of_that_name(run, gateway, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "title").write_text("type: object\n")  # read as a schema, it would accept anything
    gateway.script(Json(completion('{"title": "Dune"}')))
    result = run("complete", "--schema", "title", "x")
    assert result.exit_code == 0, result.stderr
    assert gateway.requests[0].body["response_format"]["json_schema"]["schema"]["required"] == ["title"]
    assert run("complete", "--schema", "./nope.json", "x").exit_code == 2  # a path: read, not a field list


def delivered(data: dict, split: str):
    """The same response bytes, whole or cut into HTTP chunks at different places."""
    body = json.dumps(data).encode()
    if split == "whole":
        return Json(data)
    if split == "bytes":
        pieces = [body[i : i + 1] for i in range(len(body))]
    else:  # at the number, each piece its own TCP write
        cut = body.index(b"1e400") + 2 if b"1e400" in body else len(body) // 2
        return Sse([body[:cut], body[cut:]], delay=0.01, headers={"Content-Type": "application/json"})
    return Sse(pieces, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("split", ["whole", "bytes", "two writes"])
def test_what_is_checked_does_not_depend_on_how_the_bytes_came(run, gateway, split):
    gateway.script(delivered(several(GOOD, BOOK2).body, split))
    result = run("complete", "-p", "n=2", "--schema", SPEC, "two books")
    assert (result.exit_code, result.stdout) == (0, GOOD + "\n" + BOOK2 + "\n"), result.stderr
    gateway.reset()
    out_of_range = completion('{"title": "Dune", "year": 1965, "rating": 1e400, "tags": []}')
    gateway.script(delivered(out_of_range, split), delivered(out_of_range, split))
    result = run("complete", "--schema", SPEC, "a book")
    assert (result.exit_code, result.stdout) == (7, "")
    assert "1e400 is too large" in error_lines(result)[0]
