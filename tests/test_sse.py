"""The SSE decoder, bytes in and events out, at every chunk split point."""

from __future__ import annotations

import json
import random
import re

import pytest

from anyfast_cli.sse import SSEDecoder, iter_events

BOM = b"\xef\xbb\xbf"
UNICODE_TEXT = "h\u00e9llo \u4e16\u754c \U0001f642"  # 2-, 3- and 4-byte UTF-8 characters
SEPARATORS_TEXT = "a\u2028b\u2029c\u0085d"  # str.splitlines() would cut JSON here


def ev(data: str) -> str:
    """An event as the decoder gives it: its data."""
    return data


def json_data(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


# (id, raw stream, expected events)
CASES = [
    ("lf", b'data: {"a":1}\n\ndata: [DONE]\n\n', [ev('{"a":1}'), ev("[DONE]")]),
    ("crlf", b'data: {"a":1}\r\n\r\ndata: [DONE]\r\n\r\n', [ev('{"a":1}'), ev("[DONE]")]),
    ("cr", b'data: {"a":1}\r\rdata: [DONE]\r\r', [ev('{"a":1}'), ev("[DONE]")]),
    ("mixed endings", b"data: a\r\rdata: b\n\ndata: c\r\n\r\ndata: d\r\n\n", [ev("a"), ev("b"), ev("c"), ev("d")]),
    ("cr then lf-only event", b"data: a\r\rdata: b\n\ndata: c\n\n", [ev("a"), ev("b"), ev("c")]),
    ("bom lf", BOM + b"data: x\n\n", [ev("x")]),
    ("bom crlf", BOM + b"data: x\r\n\r\ndata: y\r\n\r\n", [ev("x"), ev("y")]),
    ("bom only at the start", BOM + b"data: x\n\n" + BOM + b"data: y\n\n", [ev("x")]),
    (
        "multi-byte characters",
        ("data: " + json_data({"c": UNICODE_TEXT}) + "\n\n").encode(),
        [ev(json_data({"c": UNICODE_TEXT}))],
    ),
    (
        "raw U+2028 U+2029 U+0085 in a JSON string",
        ("data: " + json_data({"c": SEPARATORS_TEXT}) + "\r\n\r\n").encode(),
        [ev(json_data({"c": SEPARATORS_TEXT}))],
    ),
    ("comments", b": keep-alive\n\ndata: x\n: ping\ndata: y\n\n:\n\n", [ev("x\ny")]),
    ("data without a space", b'data:x\n\ndata:{"a":1}\n\n', [ev("x"), ev('{"a":1}')]),
    ("only one space is taken", b"data:  x\n\n", [ev(" x")]),
    ("multi-line data", b"data: a\ndata: b\ndata:\ndata: c\n\n", [ev("a\nb\n\nc")]),
    (
        "id and event lines are read past",
        b"id: 7\nevent: ping\ndata: p\n\ndata: q\n\nevent: error\nid: 8\ndata: e\n\n",
        [ev("p"), ev("q"), ev("e")],
    ),
    ("an event of id and event lines only", b"id: 1\nevent: x\n\ndata: b\n\n", [ev("b")]),
    ("extra blank lines between events", b"data: a\n\n\n\ndata: b\n\n\ndata: c\n\n", [ev("a"), ev("b"), ev("c")]),
    ("empty data is no event", b"data: \n\ndata:\n\ndata: x\n\n", [ev("x")]),
    ("a comment opens an event", b": c\ndata: x\n\n: only a comment\n\n", [ev("x")]),
    ("a field after the data", b"data: x\nid: 1\n\ndata: y\n\n", [ev("x"), ev("y")]),
    ("an event left open across blank-line events", b"data: a\n\ndata: b\ndata: c\n\n", [ev("a"), ev("b\nc")]),
    ("retry and unknown fields ignored", b"retry: 100\nfoo: bar\ndata: x\n\n", [ev("x")]),
    ("done at eof without blank line", b"data: x\n\ndata: [DONE]", [ev("x"), ev("[DONE]")]),
    ("done at eof with one newline", b"data: x\n\ndata: [DONE]\n", [ev("x"), ev("[DONE]")]),
    ("done at eof with one cr", b"data: x\r\rdata: [DONE]\r", [ev("x"), ev("[DONE]")]),
    ("empty stream", b"", []),
    ("blank lines only", b"\n\r\n\r\n", []),
]
IDS = [case[0] for case in CASES]


def decode_in_pieces(pieces) -> tuple[list[str], list[str]]:
    """Events returned by feed() as the pieces arrive, and those only close() gives."""
    decoder = SSEDecoder()
    fed = [event for piece in pieces for event in decoder.feed(piece)]
    return fed, decoder.close()


def ends_with_blank_line(raw: bytes) -> bool:
    return raw.endswith((b"\n\n", b"\r\r", b"\r\n\r\n", b"\r\n\n")) or not raw.strip()


@pytest.mark.parametrize("name, raw, expected", CASES, ids=IDS)
def test_whole_stream(name, raw, expected):
    assert list(iter_events([raw])) == expected


@pytest.mark.parametrize("name, raw, expected", CASES, ids=IDS)
def test_every_split_point(name, raw, expected):
    for index in range(len(raw) + 1):
        fed, closed = decode_in_pieces([raw[:index], raw[index:]])
        assert fed + closed == expected, f"split at byte {index}: {raw[:index]!r} | {raw[index:]!r}"
        if ends_with_blank_line(raw):
            assert closed == [], f"split at byte {index}: events held back until close()"


@pytest.mark.parametrize("name, raw, expected", CASES, ids=IDS)
def test_every_pair_of_split_points(name, raw, expected):
    for first in range(len(raw) + 1):
        for second in range(first, len(raw) + 1):
            pieces = [raw[:first], raw[first:second], raw[second:]]
            fed, closed = decode_in_pieces(pieces)
            assert fed + closed == expected, f"pieces {pieces!r}"


@pytest.mark.parametrize("name, raw, expected", CASES, ids=IDS)
def test_byte_by_byte_with_empty_feeds(name, raw, expected):
    pieces = []
    for byte in raw:
        pieces += [bytes([byte]), b""]
    fed, closed = decode_in_pieces(pieces)
    assert fed + closed == expected
    if ends_with_blank_line(raw):
        assert closed == []


def test_events_are_returned_as_soon_as_their_blank_line_arrives():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"\n") == [ev("a")]
    assert decoder.feed(b"data: b\r") == []
    assert decoder.feed(b"\r") == [ev("b")]
    assert decoder.close() == []


def test_separators_survive_into_json():
    raw = ("data: " + json_data({"choices": [{"delta": {"content": SEPARATORS_TEXT}}]}) + "\n\n").encode()
    (event,) = iter_events([raw[i : i + 1] for i in range(len(raw))])
    assert json.loads(event)["choices"][0]["delta"]["content"] == SEPARATORS_TEXT


@pytest.mark.parametrize(
    "pieces", [[b"\xef", b"\xbb\xbfdata: 1"], [b"", BOM + b"data: 1"], [b"\xef\xbb", b"\xbf", b"data: 1"]]
)
def test_a_bom_split_from_a_last_line_left_open_is_still_no_part_of_it(pieces):
    decoder = SSEDecoder()
    assert [event for piece in pieces for event in decoder.feed(piece)] + decoder.close() == ["1"]


def test_invalid_utf8_is_replaced_not_raised():
    assert list(iter_events([b"data: \xff\xfe\n\n"])) == [ev("\ufffd\ufffd")]


def reference_decode(raw: bytes) -> list[str]:
    """The SSE spec's reading of a whole stream, written plainly: the oracle for the decoder."""
    events, data = [], []
    for line in re.split(rb"\r\n|\r|\n", raw.removeprefix(BOM)) + [b""]:
        if not line:
            if data and "\n".join(data):
                events.append("\n".join(data))
            data = []
        elif not line.startswith(b":"):
            name, _, value = line.partition(b":")
            if name == b"data":
                data.append(value.removeprefix(b" ").decode("utf-8", "replace"))
    return events


TOKENS = [b"data: ", b"data:", b'data: {"a":1}', b"x", b"\xc3\xa9", b": ping", b"id: 1", b"event: e", b"\n", b"\n\n"]
TOKENS += [b"\r", b"\r\n", b"\n\n\n"]


@pytest.mark.parametrize("seed", range(300))
def test_random_streams_in_random_pieces_read_as_the_spec_says(seed):
    generator = random.Random(seed)
    raw = (BOM if generator.random() < 0.3 else b"") + b"".join(
        generator.choice(TOKENS) for _ in range(generator.randint(1, 40))
    )
    cuts = sorted(generator.choices(range(len(raw) + 1), k=generator.randint(0, 6)))  # repeated: empty feeds
    pieces = [raw[start:end] for start, end in zip([0, *cuts], [*cuts, len(raw)])]
    fed, closed = decode_in_pieces(pieces)
    assert fed + closed == reference_decode(raw), pieces
