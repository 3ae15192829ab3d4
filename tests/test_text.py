"""Text on its way to a terminal (text.py): what neutralise makes visible, and what it keeps."""

from __future__ import annotations

import json
import sys
import unicodedata

import pytest

from anyfast_cli.output import render_json
from anyfast_cli.text import MAX_WHOLE_DIGITS, escape_json_text, neutralise, parse_whole

# (id, text from a server, as shown on a terminal)
SHOWN = [
    ("plain", "héllo 世界\tok\n", "héllo 世界\tok\n"),
    ("escape sequence", "a\x1b[2Jb", "a^[[2Jb"),
    ("c1 csi", "a\x9bb", "a\\233b"),
    ("lone cr", "a\rb\r\n", "a^Mb\r\n"),
    ("override", "file\u202egnp.exe", "file<U+202E>gnp.exe"),
    ("embeddings and pop", "\u202a\u202b\u202c\u202d", "<U+202A><U+202B><U+202C><U+202D>"),
    ("isolates", "\u2066a\u2067b\u2068c\u2069", "<U+2066>a<U+2067>b<U+2068>c<U+2069>"),
    ("marks", "\u200e\u200f\u061c", "<U+200E><U+200F><U+061C>"),
    ("joiners kept: an emoji family", "\U0001f468\u200d\U0001f469", "\U0001f468\u200d\U0001f469"),
    (
        "arabic and hebrew kept",
        "\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd",
        "\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd",
    ),
]


@pytest.mark.parametrize("text,shown", [c[1:] for c in SHOWN], ids=[c[0] for c in SHOWN])
def test_neutralise(text, shown):
    assert neutralise(text) == shown


# Unicode's Bidi_Control property: the explicit formatting characters (their bidirectional class
# says so) and the three marks, whose class is that of a letter.
BIDI_CLASSES = {"LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"}
MARKS = "\u200e\u200f\u061c"


def bidi_controls() -> list[str]:
    found = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.bidirectional(chr(c)) in BIDI_CLASSES]
    return found + list(MARKS)


def test_every_bidirectional_control_is_made_visible_in_text_and_escaped_in_json():
    controls = bidi_controls()
    assert len(controls) == 12  # the class as Unicode defines it today; a new one would be caught here
    for char in controls:
        shown = neutralise(f"a{char}b")
        assert char not in shown and shown == f"a<U+{ord(char):04X}>b"
        text = render_json({"t": f"a{char}b"}, terminal=True)
        assert char not in text and json.loads(text) == {"t": f"a{char}b"}
        assert char in render_json({"t": char})  # in a pipe: as it came
        assert escape_json_text(f'"{char}"') == f'"{char}"'


@pytest.mark.parametrize(
    "text,number",
    [
        ("0", 0),
        ("42", 42),
        (" 7\n", None),  # callers strip where spaces may be
        ("9" * MAX_WHOLE_DIGITS, int("9" * MAX_WHOLE_DIGITS)),
        ("9" * (MAX_WHOLE_DIGITS + 1), None),  # past it int() may refuse, with advice for Python programmers
        ("1" * 5000, None),
        ("\u00b2", None),  # str.isdigit() says yes; int() refuses
        ("\u0661\u0662", None),  # Arabic-Indic digits: int() reads them, but nobody writes a port so
        ("-1", None),
        ("+1", None),
        ("1_000", None),
        ("1.0", None),
        ("", None),
        ("0x10", None),
    ],
)
def test_parse_whole(text, number):
    assert parse_whole(text) == number
