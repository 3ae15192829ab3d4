"""--schema's pure part: SPEC forms, strict schemas, fenced answers, validation paths."""

from __future__ import annotations

import json

import pytest

from anyfast_cli.errors import ExitCode, UsageError
from anyfast_cli.schema import (
    AnswerMismatch,
    fields_schema,
    is_strict_compatible,
    multi_schema,
    parse_answer,
    parse_spec,
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
