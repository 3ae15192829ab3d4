"""--schema's pure part: SPEC forms, strict schemas, fenced answers, validation paths; schemas
unusable before anything is sent ($ref), checks that end by their deadline, numbers JSON cannot
carry, every choice."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from anyfast_cli.errors import ExitCode, UsageError
from anyfast_cli.schema import (
    CHECK_GRACE,
    CHECK_SECONDS,
    AnswerMismatch,
    check_deadline,
    check_schema,
    fields_schema,
    is_strict_compatible,
    multi_schema,
    names_a_file,
    parse_answer,
    parse_reply,
    parse_spec,
    repair_turns,
    validation_errors,
)


def no_file(path):
    raise AssertionError(f"read {path}")


@pytest.mark.parametrize(
    ("spec", "properties"),
    [
        ("name", {"name": {"type": "string"}}),
        (
            "title, year int, rating float, ok bool",
            {
                "title": {"type": "string"},
                "year": {"type": "integer"},
                "rating": {"type": "number"},
                "ok": {"type": "boolean"},
            },
        ),
        ("tags list: keywords", {"tags": {"type": "array", "items": {"type": "string"}, "description": "keywords"}}),
        ("ids list[int]", {"ids": {"type": "array", "items": {"type": "integer"}}}),
        ("ids list of float", {"ids": {"type": "array", "items": {"type": "number"}}}),
        ("flags bool[]", {"flags": {"type": "array", "items": {"type": "boolean"}}}),
        (
            "bio: a short bio\nage int",
            {"bio": {"type": "string", "description": "a short bio"}, "age": {"type": "integer"}},
        ),
        ("name str: the full name", {"name": {"type": "string", "description": "the full name"}}),
    ],
)
def test_field_lists(spec, properties):
    schema = parse_spec(spec, no_file)
    assert schema == {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    assert is_strict_compatible(schema)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("age integ", "unknown type 'integ'"),
        ("x list of dates", "unknown type"),
        ("a, a int", "given twice"),
        ("9lives", "not a field name"),
        (" , ", "names no field"),
        ("", "needs a SPEC"),
        ('{"type": "object", "properties": 3}', "not a valid JSON Schema"),
        ('{"type": "nope"}', "not a valid JSON Schema"),
        ("[1, 2]", "not a field name"),  # not JSON object text: read as a field list, and refused
    ],
)
def test_bad_specs_are_usage_errors(spec, words):
    with pytest.raises(UsageError) as raised:
        parse_spec(spec, no_file)
    assert words in raised.value.message
    assert raised.value.exit_code == ExitCode.USAGE


def test_json_text_and_files(tmp_path):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert parse_spec(json.dumps(schema), no_file) == schema
    path = tmp_path / "s.yaml"
    path.write_text("type: object\nproperties:\n  a: {type: integer}\n")
    read = lambda p: open(p).read()  # noqa: E731
    assert parse_spec(f"@{path}", read) == schema
    assert parse_spec(str(path), read) == schema
    assert not is_strict_compatible(schema)  # open and optional: strict mode would refuse it


def test_multi_wraps_a_list_of_objects():
    schema = multi_schema(fields_schema("name, email"))
    assert schema["required"] == ["items"] and schema["properties"]["items"]["type"] == "array"
    assert is_strict_compatible(schema)
    assert parse_answer('{"items": [{"name": "a", "email": "b"}]}', schema) == {"items": [{"name": "a", "email": "b"}]}


AGE = fields_schema("name, age int")


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "Ann", "age": 4}',
        '```json\n{"name": "Ann", "age": 4}\n```',
        '  ```\n{"name": "Ann", "age": 4}\n```  \n',
    ],
)
def test_good_answers_fenced_or_not(text):
    assert parse_answer(text, AGE) == {"name": "Ann", "age": 4}


@pytest.mark.parametrize(
    ("text", "code", "words"),
    [
        ('{"name": "Ann", "age": "four"}', "schema_mismatch", "$.age: 'four' is not of type 'integer'"),
        ('{"name": "Ann"}', "schema_mismatch", "$: 'age' is a required property"),
        ('{"name": "Ann", "age": 4, "x": 1}', "schema_mismatch", "Additional properties are not allowed"),
        ("Sure! Here it is: {}", "invalid_json", "the answer is not JSON"),
        ('{"name": "Ann", "age": NaN}', "invalid_json", "NaN is not a number JSON allows"),
        ('```json\n{"a": 1}\n```\n```json\n{}\n```', "invalid_json", "not JSON"),  # two fences: not one answer
        ("[" * 100_000, "invalid_json", "not JSON"),
    ],
)
def test_bad_answers_name_the_path(text, code, words):
    with pytest.raises(AnswerMismatch) as raised:
        parse_answer(text, AGE)
    assert raised.value.code == code
    assert words in raised.value.message


def test_nested_paths_and_indexes():
    schema = multi_schema(AGE)
    with pytest.raises(AnswerMismatch) as raised:
        parse_answer('{"items": [{"name": "a", "age": 1}, {"name": "b", "age": true}]}', schema)
    assert raised.value.message == "$.items[1].age: True is not of type 'integer'"


# --- SPEC: a bare word is a field list, only @FILE or a path is read -----------------------------


@pytest.mark.parametrize(
    ("spec", "is_path"),
    [
        ("name", False),
        ("schema", False),
        ("name str", False),
        ("title, year int", False),
        ("price float: in USD/EUR", False),  # a description may hold a slash
        ("note: see a.json", False),
        ("book.json", True),
        ("book.yaml", True),
        ("./book", True),
        ("schemas/book", True),
        ("/tmp/x", True),
    ],
)
def test_only_a_path_like_spec_names_a_file(spec, is_path):
    assert names_a_file(spec) is is_path


def test_a_bare_word_is_a_field_list_even_when_a_file_has_its_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "name").write_text("anything: goes\n")
    assert parse_spec("name", no_file)["required"] == ["name"]


def test_a_json_schema_file_is_read_as_json_and_a_long_enum_is_fine(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"enum": list(range(300_000))}))  # past YAML's node limit
    read = lambda p: open(p).read()  # noqa: E731
    started = time.monotonic()
    assert len(parse_spec(str(path), read)["enum"]) == 300_000
    assert time.monotonic() - started < 20  # seconds as YAML; well under one as JSON
    path.write_text('{"type": "object",}')  # YAML would take it: a .json file is JSON
    with pytest.raises(UsageError, match=r"big.json:1: invalid JSON"):
        parse_spec(f"@{path}", read)


# --- class 5: every $ref resolved when the schema is checked, nothing fetched --------------------

NODE = {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}


@pytest.mark.parametrize(
    "schema",
    [
        {"$defs": {"node": NODE}, "$ref": "#/$defs/node"},  # recursion that enters the answer
        {"$defs": {"a": {"$anchor": "word", "type": "string"}}, "properties": {"x": {"$ref": "#word"}}},
        {"$defs": {"a b": {"type": "string"}}, "$ref": "#/$defs/a%20b"},
        {"$defs": {"i": {"$id": "item.json", "type": "integer"}}, "items": {"$ref": "item.json"}},
        {"$id": "https://example.com/root.json", "$defs": {"s": {}}, "$ref": "root.json#/$defs/s"},
        {"$ref": "https://json-schema.org/draft/2020-12/schema"},  # shipped with jsonschema: not fetched
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"type": "string"}}, "$ref": "#/$defs/a"},
    ],
)
def test_schemas_whose_refs_resolve_locally(schema):
    check_schema(schema)


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"$ref": "#/$defs/missing"}, "$: $ref '#/$defs/missing' cannot be resolved"),
        ({"properties": {"a": {"$ref": "#nowhere"}}}, "$.properties.a: $ref '#nowhere' cannot be resolved"),
        ({"$ref": "https://example.com/s.json"}, "remote schemas are not fetched"),
        ({"$ref": "other.json"}, "remote schemas are not fetched"),
        ({"$id": "https://example.com/r.json", "items": {"$ref": "o.json"}}, "remote schemas are not fetched"),
        ({"$ref": "urn:example:thing"}, "cannot be resolved"),
        ({"$defs": {"unused": {"$ref": "#/$defs/gone"}}}, "$.$defs.unused: $ref"),  # used or not
        ({"$dynamicRef": "#meta"}, "$dynamicRef '#meta' cannot be resolved"),
        ({"enum": [1], "$ref": "#/enum"}, "not a schema"),
        ({"enum": [1], "$ref": "#/enum/x"}, "cannot be resolved"),
        ({"$ref": "#"}, "$ -> $: $ref leads back"),
        ({"properties": {"a": {"$ref": "#/properties/a"}}}, "$.properties.a -> $.properties.a"),
        ({"$defs": {"a": {"allOf": [{"$ref": "#/$defs/b"}]}, "b": {"anyOf": [{"$ref": "#/$defs/a"}]}}}, "leads back"),
        ({"if": {"$ref": "#"}}, "leads back"),
        ({"dependentSchemas": {"x": {"$ref": "#"}}}, "leads back"),
        ({"not": {"$ref": "#"}}, "leads back"),
    ],
)
def test_unusable_refs_are_usage_errors_before_sending(schema, words):
    with pytest.raises(UsageError) as raised:
        check_schema(schema)
    assert words in raised.value.message
    assert raised.value.exit_code == ExitCode.USAGE


def test_a_remote_ref_is_never_fetched():
    connections = []
    with socket.create_server(("127.0.0.1", 0)) as server:

        def serve() -> None:  # a fetch would connect here; each connection is counted, then closed
            while True:
                try:
                    client, _ = server.accept()
                except OSError:
                    return
                connections.append(client)
                client.close()

        threading.Thread(target=serve, daemon=True).start()
        schema = {"properties": {"a": {"$ref": f"http://127.0.0.1:{server.getsockname()[1]}/s.json"}}}
        with pytest.raises(UsageError, match="not fetched"):
            check_schema(schema)
        with pytest.raises(Exception, match="Unresolvable"):  # the validator, too, refuses
            validation_errors({"a": 1}, schema)
    assert connections == []


# --- class 3: checking an answer ends by its deadline, whatever the schema -----------------------

SLOW = "a" * 40 + "!"
FAN_OUT = {  # 2**40 paths to one string check that fails: no cycle, but no end either
    "$defs": {
        **{f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]} for i in range(40)},
        "d40": {"type": "string"},
    },
    "$ref": "#/$defs/d0",
}


@pytest.mark.parametrize(
    ("schema", "answer"),
    [
        ({"type": "string", "pattern": "^(a|a)+$"}, json.dumps(SLOW)),
        ({"type": "string", "pattern": "^(a|aa)+$"}, json.dumps("a" * 60 + "!")),
        ({"type": "array", "items": {"pattern": "^(a|a)+$"}}, json.dumps(["ok", SLOW])),
        ({"patternProperties": {"^(a|a)+$": {}}}, json.dumps({SLOW: 1})),
        ({"patternProperties": {"^(a|a)+$": {}}, "additionalProperties": False}, json.dumps({SLOW: 1})),
        ({"patternProperties": {"^(a|a)+$": {}}, "unevaluatedProperties": False}, json.dumps({SLOW: 1})),
        ({"propertyNames": {"pattern": "^(a|a)+$"}}, json.dumps({SLOW: 1})),
        (FAN_OUT, "5"),
    ],
)
def test_a_check_that_cannot_end_in_time_is_schema_timeout(schema, answer):
    check_schema(schema)
    started = time.monotonic()
    with pytest.raises(AnswerMismatch) as raised:
        parse_answer(answer, schema, deadline=started + 0.3)
    assert raised.value.code == "schema_timeout"
    assert "could not be checked" in raised.value.message
    assert time.monotonic() - started < WAIT


WAIT = 10.0  # seconds a 0.3 s deadline may overrun on a loaded machine (regex counts CPU time) before failing


def test_the_pattern_of_the_issue_is_checked_at_once():
    # ^(\w+\s?)*$ backtracks for ever in Python's re on 49 characters; regex answers at once
    schema = {"type": "string", "pattern": r"^(\w+\s?)*$"}
    answer = json.dumps("word " * 9 + "wordwordwordw!")
    with pytest.raises(AnswerMismatch, match="does not match"):
        parse_answer(answer, schema, deadline=time.monotonic() + WAIT)


def test_unique_items_is_linear_and_keeps_json_equality():
    schema = {"type": "array", "uniqueItems": True}
    many = [{"id": i, "tags": ["x", i]} for i in range(5_000)]  # jsonschema compares every pair: 45 s
    started = time.monotonic()
    assert len(parse_answer(json.dumps(many), schema, deadline=started + WAIT)) == 5_000
    assert time.monotonic() - started < WAIT
    for same in ("[1, 1.0]", '[{"a": 1, "b": [2]}, {"b": [2.0], "a": 1}]', '["x", "x"]', "[null, null]"):
        with pytest.raises(AnswerMismatch, match="non-unique"):
            parse_answer(same, schema)
    for different in ("[1, true]", "[0, false]", "[[1, 2], [2, 1]]", '[{"a": 1}, {"a": "1"}]', '["1", 1]'):
        parse_answer(different, schema)


def test_a_huge_value_is_not_quoted_whole_in_the_error():
    with pytest.raises(AnswerMismatch) as raised:
        parse_answer(json.dumps("x" * 100_000), {"type": "integer"})
    assert len(raised.value.message) < 400


@pytest.mark.parametrize(
    ("started", "max_time", "now", "deadline"),
    [
        (0.0, None, 10.0, 10.0 + CHECK_SECONDS),  # no --max-time: CHECK_SECONDS
        (0.0, 60.0, 10.0, 10.0 + CHECK_SECONDS),  # --max-time far off
        (0.0, 12.0, 10.0, 12.0),  # what --max-time leaves of the request
        (0.0, 10.0, 10.0, 10.0 + CHECK_GRACE),  # came just in time: checked all the same
    ],
)
def test_check_deadline(started, max_time, now, deadline):
    assert check_deadline(started, max_time, now) == pytest.approx(deadline)


# --- class 6: numbers JSON cannot carry, and every choice ----------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("1e400", "1e400 is too large"),
        ('{"n": -1e400}', "-1e400 is too large"),
        ('{"n": [1, NaN]}', "NaN is not a number JSON allows"),
        ("Infinity", "Infinity is not a number JSON allows"),
        ('{"n": -Infinity}', "-Infinity"),
        ("1" * 5000, "5,000 digits is too long"),
        ("1e400 and more", "Extra data"),  # not JSON at all, rather than JSON with a bad number
    ],
)
def test_numbers_json_cannot_carry_are_invalid_json(text, words):
    with pytest.raises(AnswerMismatch) as raised:
        parse_answer(text, {})
    assert raised.value.code == "invalid_json"
    assert words in raised.value.message
    assert "sys." not in raised.value.message  # no advice meant for Python programmers


def whole(*contents, indexes=None):
    indexes = indexes or range(len(contents))
    return {
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": c}, "finish_reason": "stop"}
            for i, c in zip(indexes, contents)
        ]
    }


def test_every_choice_is_checked_in_index_order():
    parsed = parse_reply(whole('{"name": "b", "age": 2}', '{"name": "a", "age": 1}', indexes=[1, 0]), AGE)
    assert [value["name"] for value, _ in parsed] == ["a", "b"]
    with pytest.raises(AnswerMismatch) as raised:
        parse_reply(whole('{"name": "a", "age": 1}', '{"name": "b", "age": "two"}'), AGE)
    assert raised.value.message.startswith("choice 1: $.age")
    assert raised.value.answer == '{"name": "b", "age": "two"}'  # what the re-ask quotes
    assert repair_turns(raised.value)[0] == {"role": "assistant", "content": '{"name": "b", "age": "two"}'}
    (one,) = parse_reply(whole('{"name": "a", "age": 1}'), AGE)
    assert one[0] == {"name": "a", "age": 1}
    with pytest.raises(AnswerMismatch, match="^the answer is not JSON"):  # one choice: not named
        parse_reply(whole("nope"), AGE)
    with pytest.raises(AnswerMismatch, match="not JSON"):  # no choices at all: an empty answer
        parse_reply({"choices": None}, AGE)


def test_multiple_of_an_integer_too_large_for_a_float_is_exact():
    big = "1" + "0" * 400  # jsonschema divides it as a float first: OverflowError, an internal error
    assert parse_answer(big, {"multipleOf": 0.5}) == 10**400
    with pytest.raises(AnswerMismatch, match="is not a multiple of 0.3"):
        parse_answer(big, {"multipleOf": 0.3})  # 0.3 as a float is not 3/10


def test_schema_multi_moves_local_refs_with_the_schema():
    tree = {
        "type": "object",
        "$defs": {"n": {"type": "integer"}},
        "properties": {"a": {"$ref": "#/$defs/n"}, "kids": {"type": "array", "items": {"$ref": "#"}}},
    }
    own_base = {"$id": "urn:x", "$defs": {"n": {}}, "properties": {"a": {"$ref": "#/$defs/n"}}}
    schema = multi_schema(tree)
    check_schema(schema)
    assert parse_answer('{"items": [{"a": 1, "kids": [{"a": 2}]}]}', schema)
    with pytest.raises(AnswerMismatch, match=r"\$.items\[0\].kids\[0\].a: 'x' is not of type 'integer'"):
        parse_answer('{"items": [{"a": 1, "kids": [{"a": "x"}]}]}', schema)
    assert multi_schema(own_base)["properties"]["items"]["items"] == own_base  # its refs are its own
    check_schema(multi_schema(own_base))
    assert tree["properties"]["a"] == {"$ref": "#/$defs/n"}  # a copy: the schema itself unchanged
