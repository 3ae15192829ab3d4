"""Batch input lines -> records (pure): record forms, overrides, ids, validation, shards."""

from __future__ import annotations

import json

import pytest

from anyfast_cli.batch.jobs import (
    BATCH_URL,
    MAX_REPORTED_ERRORS,
    JobOptions,
    RecordError,
    Shard,
    batch_input_line,
    check_template,
    parse_record,
    parse_shard,
    result_line,
    scan_input,
)
from anyfast_cli.commands.batch import CheckedRecords
from anyfast_cli.errors import ExitCode, UsageError

MODEL = "doubao-seed-1-6-251015"


def opts(**kwargs) -> JobOptions:
    return JobOptions(model=kwargs.pop("model", MODEL), **kwargs)


def parse(line, options=None, line_no=1, index=0):
    raw = line if isinstance(line, bytes) else (line if isinstance(line, str) else json.dumps(line)).encode()
    return parse_record(raw + b"\n", line_no, index, options or opts())


def lines_of(*items) -> list[bytes]:
    out = []
    for item in items:
        text = item if isinstance(item, str) else json.dumps(item)
        out.append(text.encode() + b"\n")
    return out


# --- record forms -------------------------------------------------------------------------


def test_json_string_is_a_prompt():
    record = parse('"What is 2+2?"')
    assert record.body == {"model": MODEL, "messages": [{"role": "user", "content": "What is 2+2?"}], "stream": False}
    assert record.id == "1"


def test_prompt_object_with_system():
    record = parse({"prompt": "hi", "system": "be brief"})
    assert record.body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]


def test_messages_object_passes_messages_through():
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": [{"type": "text", "text": "x"}]}]
    record = parse({"messages": messages})
    assert record.body["messages"] == messages
    assert record.body["stream"] is False


def test_messages_object_accepts_shorthand():
    record = parse({"messages": [{"user": "hello"}]})
    assert record.body["messages"] == [{"role": "user", "content": "hello"}]


def test_openai_batch_line():
    line = {
        "custom_id": "req-7",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "glm-4-7-251222", "messages": [{"role": "user", "content": "q"}], "max_tokens": 50},
    }
    record = parse(line, opts(fields={"temperature": 0.3}))
    assert record.id == "req-7"
    assert record.body == {
        "model": "glm-4-7-251222",
        "messages": [{"role": "user", "content": "q"}],
        "temperature": 0.3,
        "max_tokens": 50,
        "stream": False,
    }


def test_openai_batch_line_cannot_turn_on_streaming():
    line = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "messages": [{"role": "user", "content": "q"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    }
    record = parse(line)
    assert record.body["stream"] is False
    assert "stream_options" not in record.body
    assert record.body["model"] == MODEL


@pytest.mark.parametrize(
    "line",
    [
        {
            "custom_id": "a",
            "method": "GET",
            "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": "q"}]},
        },
        {
            "custom_id": "a",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"messages": [{"role": "user", "content": "q"}]},
        },
        {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}},
        {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": "not a body"},
    ],
)
def test_bad_openai_batch_lines(line):
    with pytest.raises(RecordError):
        parse(line)


# --- settings and per-record overrides ---------------------------------------------------


def test_record_body_fields_override_the_command_settings():
    options = opts(fields={"temperature": 0.2, "max_tokens": 100})
    record = parse({"prompt": "hi", "temperature": 1.5, "model": "glm-4-7-251222"}, options)
    assert record.body["temperature"] == 1.5
    assert record.body["max_tokens"] == 100
    assert record.body["model"] == "glm-4-7-251222"


def test_settings_apply_when_the_record_has_none():
    record = parse({"prompt": "hi"}, opts(fields={"temperature": 0.2}))
    assert record.body["temperature"] == 0.2


def test_non_body_keys_are_not_sent():
    record = parse({"prompt": "hi", "id": "x", "note": "for me", "stream": True})
    assert set(record.body) == {"model", "messages", "stream"}
    assert record.body["stream"] is False


def test_record_override_is_range_checked():
    with pytest.raises(RecordError, match="temperature"):
        parse({"prompt": "hi", "temperature": 3})


def test_system_flag_added_only_where_no_system_message():
    options = opts(system="FLAG")
    assert parse({"prompt": "a"}, options).body["messages"][0] == {"role": "system", "content": "FLAG"}
    assert parse('"b"', options).body["messages"][0] == {"role": "system", "content": "FLAG"}
    own = parse({"prompt": "c", "system": "OWN"}, options).body["messages"]
    assert own == [{"role": "system", "content": "OWN"}, {"role": "user", "content": "c"}]
    msgs = [{"role": "system", "content": "M"}, {"role": "user", "content": "d"}]
    assert parse({"messages": msgs}, options).body["messages"] == msgs


def test_image_flags_are_attached_to_prompts():
    record = parse('"look"', opts(image_urls=("https://x/a.png",)))
    assert record.body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://x/a.png"}},
            ],
        }
    ]


# --- --lines and --template ---------------------------------------------------------------


def test_plain_lines_are_prompts_even_if_they_look_like_json():
    options = opts(plain_lines=True)
    assert parse('{"prompt": "x"}', options, line_no=4).body["messages"] == [
        {"role": "user", "content": '{"prompt": "x"}'}
    ]
    assert parse("just text", options, line_no=4).id == "4"


def test_plain_lines_strip_crlf():
    record = parse_record(b"hello\r\n", 1, 0, opts(plain_lines=True))
    assert record.body["messages"][0]["content"] == "hello"


def test_template_with_text_for_plain_lines():
    record = parse("a review", opts(plain_lines=True, template="Summarise: {text}"))
    assert record.body["messages"] == [{"role": "user", "content": "Summarise: a review"}]


def test_template_with_text_for_json_strings():
    record = parse('"a review"', opts(template="Summarise: {text}"))
    assert record.body["messages"][0]["content"] == "Summarise: a review"


def test_template_builds_prompt_from_fields_and_wins_over_prompt_key():
    record = parse({"prompt": "IGNORED", "name": "Ada", "year": 1843}, opts(template="{name} in {year}"))
    assert record.body["messages"] == [{"role": "user", "content": "Ada in 1843"}]


def test_template_keeps_record_system_and_overrides():
    record = parse({"name": "x", "system": "S", "temperature": 0.1}, opts(template="hi {name}"))
    assert record.body["messages"] == [{"role": "system", "content": "S"}, {"role": "user", "content": "hi x"}]
    assert record.body["temperature"] == 0.1


def test_template_missing_field_is_a_record_error():
    with pytest.raises(RecordError, match="'name'"):
        parse({"prompt": "x"}, opts(template="hi {name}"))


@pytest.mark.parametrize("template", ["no fields at all", "broken {", "x {a"])
def test_bad_templates_are_usage_errors(template):
    with pytest.raises(UsageError):
        check_template(template)


def test_good_template_passes():
    check_template("Summarise {text}")
    check_template(None)


# --- ids ----------------------------------------------------------------------------------


def test_id_prefers_custom_id_then_id_then_line_number():
    assert parse({"prompt": "x", "custom_id": "c", "id": "i"}).id == "c"
    assert parse({"prompt": "x", "id": "i"}).id == "i"
    assert parse({"prompt": "x", "id": 17}).id == "17"
    assert parse({"prompt": "x"}, line_no=9).id == "9"
    assert parse('"x"', line_no=12).id == "12"


@pytest.mark.parametrize("value", [True, 1.5, ["a"], {"a": 1}])
def test_bad_id_types(value):
    with pytest.raises(RecordError):
        parse({"prompt": "x", "id": value})


# --- invalid lines ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"{not json",
        b"42",
        b"[1, 2]",
        b"null",
        b'{"text": "no prompt key"}',
        b'{"prompt": 5}',
        b'{"prompt": "   "}',
        b'""',
        b'{"messages": "hi"}',
        b'{"messages": [{"role": "robot", "content": "x"}]}',
        b'{"messages": [{"role": "user", "content": "x", "images": ["a.png"]}]}',
        b'{"prompt": "x", "max_tokens": 0}',
        b'{"prompt": "x", "model": 5}',
        b'"\xff\xfe"',
    ],
)
def test_invalid_lines(line):
    with pytest.raises(RecordError):
        parse(line)


def test_scan_reports_each_bad_line_with_its_number():
    lines = lines_of('"ok"', "{oops", "", {"prompt": "x", "temperature": 9}, '"fine"')
    scan = scan_input(lines, opts())
    assert scan.records == 4  # the blank line is not a record
    assert scan.error_count == 2
    assert [e.split(":")[0] for e in scan.errors] == ["line 2", "line 4"]
    assert "JSON" in scan.errors[0]
    assert "temperature" in scan.errors[1]


def test_scan_reports_duplicate_ids_with_both_line_numbers():
    lines = lines_of({"id": "a", "prompt": "1"}, {"id": "b", "prompt": "2"}, {"custom_id": "a", "prompt": "3"})
    scan = scan_input(lines, opts())
    assert scan.error_count == 1
    assert scan.errors[0].startswith("line 3:")
    assert "'a'" in scan.errors[0] and "line 1" in scan.errors[0]


def test_line_number_ids_can_collide_with_explicit_ids():
    lines = lines_of({"id": "2", "prompt": "x"}, '"second line gets id 2"')
    scan = scan_input(lines, opts())
    assert scan.error_count == 1 and scan.errors[0].startswith("line 2:")


def test_scan_keeps_only_the_first_twenty_messages_but_counts_all():
    lines = lines_of(*(["{bad"] * 25))
    scan = scan_input(lines, opts())
    assert scan.error_count == 25
    assert len(scan.errors) == MAX_REPORTED_ERRORS == 20
    assert scan.errors[-1].startswith("line 20:")


def test_scan_ids_are_this_shards():
    lines = lines_of(*({"id": f"r{i}", "prompt": "x"} for i in range(7)))
    assert set(scan_input(lines, opts(), Shard(2, 3)).ids) == {"r1", "r4"}
    assert set(scan_input(lines, opts()).ids) == {f"r{i}" for i in range(7)}


def test_scan_checks_lines_outside_the_shard_too():
    lines = lines_of('"a"', "{bad", '"c"')
    assert scan_input(lines, opts(), Shard(1, 2)).error_count == 1


# --- the second pass: iterating and shards (commands/batch.py's CheckedRecords) -----------------


def second_pass(lines, shard=None, answered=(), scanned=None) -> list:
    """The records the run sends: those the first pass checked (`scanned`, else `lines`)."""
    scan = scan_input(scanned if scanned is not None else lines, opts(), shard)
    checked = CheckedRecords(scan, "in.jsonl")
    checked.mark_answered(answered)
    return checked.records(lines, opts(), shard)


def test_records_indexes_skip_blank_lines():
    lines = lines_of('"a"', "", "   ", '"b"', '"c"')
    records = list(second_pass(lines))
    assert [(r.index, r.line_no, r.id) for r in records] == [(0, 1, "1"), (1, 4, "4"), (2, 5, "5")]


def test_records_shard_and_skip():
    lines = lines_of(*(f'"p{i}"' for i in range(10)))
    picked = [r.index for r in second_pass(lines, Shard(1, 4))]
    assert picked == [0, 4, 8]
    picked = [r.index for r in second_pass(lines, Shard(4, 4))]
    assert picked == [3, 7]
    skipped = [r.id for r in second_pass(lines, answered={"1", "3"})]
    assert skipped == [str(n) for n in range(2, 11) if n != 3]


def test_records_are_read_lazily():
    def endless():
        n = 0
        while True:
            n += 1
            yield f'"p{n}"\n'.encode()

    records = second_pass(endless(), scanned=lines_of('"p1"', '"p2"'))
    assert next(records).id == "1"
    assert next(records).id == "2"


def test_the_second_pass_builds_the_records_the_first_checked():
    # It leaves the checks and fingerprints out (check=False); what it builds must be the same.
    lines = lines_of(
        '"hello"',
        {"id": "a", "prompt": "p", "system": "s", "temperature": 0.5},
        {
            "custom_id": "b",
            "method": "POST",
            "url": BATCH_URL,
            "body": {"messages": [{"role": "user", "content": "q"}]},
        },
        {"id": "c", "messages": [{"role": "user", "content": [{"type": "text", "text": "t"}]}]},
        {"id": "d", "prompt": "p", "schema": "name, year int"},
        {"id": "e", "prompt": "p", "schema": {"type": "object"}},
    )
    checked = [parse_record(raw, n, n - 1, opts()) for n, raw in enumerate(lines, 1)]
    assert list(second_pass(lines)) == checked


def test_a_line_not_byte_for_byte_as_checked_is_not_sent():
    first = lines_of({"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"})
    spaced = [first[0], b'{"id": "b",  "prompt": "two"}\n']  # the same request, other bytes
    assert [r.id for r in second_pass(spaced, scanned=first)] == ["a"]
    swapped = [first[1], first[0]]
    assert list(second_pass(swapped, scanned=first)) == []


def test_shards_partition_the_input():
    indexes = range(23)
    n = 4
    owners = [[k for k in range(1, n + 1) if i in Shard(k, n)] for i in indexes]
    assert all(len(o) == 1 for o in owners)
    assert [o[0] for o in owners] == [i % n + 1 for i in indexes]


@pytest.mark.parametrize(
    "text,expected", [("1/1", Shard(1, 1)), ("2/4", Shard(2, 4)), ("4/4", Shard(4, 4)), (None, None)]
)
def test_parse_shard(text, expected):
    assert parse_shard(text)[0] == expected


@pytest.mark.parametrize(
    "text", ["0/4", "5/4", "1/0", "0/0", "-1/3", "a/b", "2", "2/", "/2", "1/2/3", "1.0/2", " 1/2", ""]
)
def test_parse_shard_rejects(text):
    with pytest.raises(UsageError) as info:
        parse_shard(text)
    assert info.value.exit_code == ExitCode.USAGE


# --- output forms ---------------------------------------------------------------------------


def test_batch_input_line_is_the_openai_batch_form():
    record = parse({"custom_id": "x", "prompt": "hi"})
    assert batch_input_line(record) == {"custom_id": "x", "method": "POST", "url": BATCH_URL, "body": record.body}
    assert BATCH_URL == "/v1/chat/completions"


def test_result_line_answered():
    record = parse({"custom_id": "x", "prompt": "hi"})
    line = result_line(record, status=200, request_id="req-9", body={"choices": []}, error=None)
    assert line == {
        "id": f"batch_req_{record.fingerprint}",
        "custom_id": "x",
        "response": {"status_code": 200, "request_id": "req-9", "body": {"choices": []}},
        "error": None,
    }


def test_the_fingerprint_names_the_exact_request():
    same = parse({"custom_id": "x", "prompt": "hi"}).fingerprint
    assert same == parse({"custom_id": "x", "prompt": "hi"}).fingerprint and len(same) == 16
    assert same != parse({"custom_id": "x", "prompt": "hi!"}).fingerprint  # the prompt changed
    assert same != parse({"custom_id": "y", "prompt": "hi"}).fingerprint  # another record
    assert same != parse({"custom_id": "x", "prompt": "hi", "temperature": 0.5}).fingerprint


def test_scan_ids_carry_fingerprints():
    lines = lines_of({"id": "a", "prompt": "1"})
    assert scan_input(lines, opts()).ids == {"a": parse({"id": "a", "prompt": "1"}).fingerprint}


def test_result_line_failed_without_response():
    line = result_line(
        parse({"custom_id": "x", "prompt": "hi"}),
        status=None,
        request_id=None,
        body=None,
        error={"code": "network_error", "message": "m"},
    )
    assert line["response"] is None
    assert line["error"] == {"code": "network_error", "message": "m"}
    assert line["custom_id"] == "x" and line["id"]


@pytest.mark.parametrize(
    "options",
    [
        {"system": "\udcff"},
        {"fields": {"seed": float("nan")}},
        {"fields": {"user": "\ud800"}},
        {"image_urls": ("data:image/png;base64,\udcff",)},
        {"schema": {"type": "object", "description": float("inf")}},
    ],
    ids=["system", "NaN field", "surrogate field", "image", "schema"],
)
def test_the_options_every_record_takes_are_checked_once_up_front(options):
    # A record's body is not checked as a whole: its line's values are, and these once.
    with pytest.raises(UsageError, match="the request cannot be sent"):
        opts(**options)


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b'{"id": "q1", "prompt": "caf\\u00e9 \\ud83d\\ude00", "temperature": 0.5}\n', "9a2243a0595e477b"),
        (b'"hello"\n', "6df1e4a1c6972b8e"),
        (b'{"id": 3, "prompt": "x", "schema": "name, year int"}\n', "67f50cfb9a2da5f0"),
    ],
)
def test_fingerprints_stay_what_earlier_versions_wrote(raw, expected):
    # --resume keeps an answer in an output file only when its id carries the same fingerprint.
    assert parse_record(raw, 1, 0, JobOptions(model="m")).fingerprint == expected
