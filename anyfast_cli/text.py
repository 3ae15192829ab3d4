"""Text on its way out, pure: surrogate halves, control characters, and characters an
output encoding cannot hold. Imports only the standard library.

Text from a server is hostile until shown otherwise:
- JSON may carry UTF-16 surrogate halves (`"\\ud83d"`), alone or one per stream chunk
  (real relays split an emoji so); a str holding one cannot be encoded as UTF-8.
- Control characters drive a terminal: OSC 52 writes the clipboard, OSC 0 sets the
  title, CSI 2 J clears the screen, and C1 controls (U+0080-U+009F) do the same in one
  character on some terminals.
- Bidirectional controls (Unicode's Bidi_Control class: embeddings and overrides
  U+202A-U+202E, isolates U+2066-U+2069, marks U+200E, U+200F and U+061C) reorder what a
  terminal shows, so that shown text reads otherwise than it is ("Trojan Source"). An
  override left open also reorders what is printed after it, our own words included.
- Standard output may not hold every character (PYTHONIOENCODING=ascii, a Latin-1 terminal).
"""

from __future__ import annotations

import codecs
import re

SURROGATE = re.compile("[\ud800-\udfff]")  # also structured.text_problem
# Unicode's Bidi_Control characters, the whole class (see above).
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
# C0 controls but tab and newline (a CR only when no newline follows it), DEL, C1 controls,
# and the bidirectional controls.
_CONTROL = re.compile(f"\r(?!\n)|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{BIDI_CONTROLS}]")
# What json.dumps(ensure_ascii=False) leaves raw but must not reach a terminal or a UTF-8 encoder.
_JSON_RAW_ON_TERMINAL = re.compile(f"[\x7f-\x9f\ud800-\udfff{BIDI_CONTROLS}]")
ESCAPE_ERRORS = "anyfast.escape"  # the codec error handler `escape_unencodable` uses


# Digits a whole number read from text may have: more than any count, index, port or size we
# read, and far under what int() takes (4,300 by default; PYTHONINTMAXSTRDIGITS may lower it).
MAX_WHOLE_DIGITS = 100


def parse_whole(text: str) -> int | None:
    """A whole number written in ASCII digits, nothing else, else None. Text from
    users and servers goes through here rather than `isdigit()` then `int()`: isdigit() also
    takes "²", which int() refuses, and int() refuses a long number with advice for Python
    programmers (sys.set_int_max_str_digits) that would reach the user as an internal error."""
    if not text.isdigit() or not text.isascii() or len(text) > MAX_WHOLE_DIGITS:
        return None
    return int(text)


def is_high_surrogate(char: str) -> bool:
    return "\ud800" <= char <= "\udbff"


def fix_surrogates(text: str) -> str:
    """Surrogate pairs joined into their character; a lone half becomes U+FFFD."""
    if text.isascii() or SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def neutralise(text: str) -> str:
    """Control characters made visible, as gh and git show them, so that text cannot drive
    a terminal: C0 controls and DEL in caret notation (ESC as `^[`, BEL as `^G`), C1 controls
    as an octal escape (U+009B as `\\233`), bidirectional controls as less(1) shows them
    (U+202E as `<U+202E>`). Newlines and tabs are kept, and a CR before a newline."""
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_visible, text)


def _visible(match: re.Match) -> str:
    code = ord(match.group())
    if code < 0x20:
        return "^" + chr(code + 0x40)
    if code == 0x7F:
        return "^?"
    if code <= 0x9F:
        return f"\\{code:03o}"
    return f"<U+{code:04X}>"


def escape_json_text(text: str, *, terminal: bool = False) -> str:
    """JSON text (from json.dumps with ensure_ascii=False) that any UTF-8 writer takes: each
    lone surrogate half becomes its `\\uXXXX` escape, which says exactly what the server sent
    (a reader can still join the halves of --json --stream chunks). With `terminal`, DEL, C1
    and bidirectional controls are escaped too (json.dumps escapes only C0), so the output
    cannot drive or reorder a terminal.
    Such characters can stand only inside JSON strings, where the escape means the same."""
    pattern = _JSON_RAW_ON_TERMINAL if terminal else SURROGATE
    if (not terminal and text.isascii()) or pattern.search(text) is None:
        return text
    return pattern.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def escape_unencodable(text: str, encoding: str) -> str:
    """`text` with each character `encoding` cannot hold as a `\\uXXXX` escape (a UTF-16 pair
    of them past U+FFFF): JSON stays valid JSON and plain text stays readable, where `?` would
    lose the character. Surrogate halves must have been dealt with first (fix_surrogates)."""
    _register_escape()
    return text.encode(encoding, ESCAPE_ERRORS).decode(encoding)


def _escape_handler(error: UnicodeError):
    if not isinstance(error, UnicodeEncodeError):
        raise error
    pieces = []
    for char in error.object[error.start : error.end]:
        code = ord(char)
        if code > 0xFFFF:
            code -= 0x10000
            pieces.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            pieces.append(f"\\u{code:04x}")
    return "".join(pieces), error.end


_registered = False


def _register_escape() -> None:
    """Registered on first use, not at import: most runs never need it."""
    global _registered
    if not _registered:
        codecs.register_error(ESCAPE_ERRORS, _escape_handler)
        _registered = True
