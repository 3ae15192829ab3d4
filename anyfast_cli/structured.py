"""Values read from JSON or YAML input, checked before anything uses them (pure).

Every document (a conversation file, the config), batch record, `-p` value and request body
passes `check_value`: nested at most MAX_NESTING deep, numbers finite, text that is valid
Unicode, and only JSON's types. `parse_json` is json.loads refusing what JSON itself does not
allow (NaN, Infinity, a number too large for a float) and never raising RecursionError.
Whatever passes can be sent, printed, copied and saved without a crash: every recursive step
after it (json, yaml, copy) stays far inside Python's recursion limit.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring

from anyfast_cli.text import SURROGATE

# Levels of lists and mappings in any input value or request body. Real requests nest under 20
# (a tool's JSON schema included); 100 keeps json, yaml and copy, which recurse a few Python
# frames a level, far inside the interpreter's limit of 1,000 frames.
MAX_NESTING = 100
# Digits in a JSON integer: past 4,300 Python can neither read nor write one (its own
# int_max_str_digits default); no API field takes more than 20.
MAX_INT_DIGITS = 4300


class ValueProblem(ValueError):
    """A value no request may carry: `problem` says what, `path` where ("params.seed", or ""
    for the value itself), `pos` the character offset in the JSON text when it is known."""

    def __init__(self, problem: str, path: str = "", pos: int | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path = path
        self.pos = pos

    def describe(self) -> str:
        return f"{self.path}: {self.problem}" if self.path else self.problem


class JsonSyntaxError(ValueError):
    """Text that is not JSON at all (it may still be YAML, or a plain string for `-p`)."""

    def __init__(self, msg: str, pos: int, colno: int) -> None:
        super().__init__(f"{msg}, column {colno}")
        self.msg = msg
        self.pos = pos
        self.colno = colno


def text_problem(text: str) -> str | None:
    """Why `text` cannot be sent as UTF-8, or None. A lone surrogate is what Python makes of
    bytes that are not UTF-8 in an argument or the environment, or of a JSON "\\ud800"."""
    if text.isascii():  # constant time: the common case costs nothing
        return None
    found = SURROGATE.search(text)
    if found is None:
        return None
    return f"is not valid UTF-8 ({ascii(found.group())[1:-1]} at character {found.start() + 1})"


def number_problem(value: float) -> str | None:
    if math.isnan(value):
        return "NaN is not a number JSON allows"
    if math.isinf(value):
        return "infinity (or a number too large for a float) is not a number JSON allows"
    return None


def check_value(value, limit: int = MAX_NESTING) -> None:
    """Raise ValueProblem, naming the path, for anything a JSON request cannot carry.
    Iterative, so no depth of nesting can make it recurse; a cycle ends as too deep.
    (Every batch record passes here twice, so plain values are checked in the loop that
    finds them, and only lists and mappings go on the stack.)"""
    if not isinstance(value, _CONTAINERS):
        _check_leaf(value, None)
        return
    stack = [(value, 0, None)]  # (list or mapping, how many hold it, trail)
    while stack:
        item, depth, trail = stack.pop()
        if depth >= limit:
            raise ValueProblem(f"nested deeper than {limit} levels", _render_trail(trail))
        if isinstance(item, dict):
            for key in item:
                if type(key) is not str or not key.isascii():
                    key_problem = _key_problem(key)
                    if key_problem:
                        raise ValueProblem(key_problem, _render_trail(trail))
            members = item.items()
        else:
            members = enumerate(item)
        for key, member in members:
            kind = type(member)
            if kind is str:
                if not member.isascii():
                    _check_leaf(member, (trail, key))
            elif kind in _CONTAINERS or isinstance(member, _CONTAINERS):
                stack.append((member, depth + 1, (trail, key)))
            elif kind not in _PLAIN:
                _check_leaf(member, (trail, key))


_CONTAINERS = (dict, list, tuple)
_PLAIN = (int, bool, type(None))


def _check_leaf(item, trail) -> None:
    if isinstance(item, str):
        problem = text_problem(item)
        problem = f"the text {problem}" if problem else None
    elif isinstance(item, (bool, int)) or item is None:
        problem = None
    elif isinstance(item, float):
        problem = number_problem(item)
    else:
        problem = f"a {type(item).__name__} is not a JSON value"
    if problem:
        raise ValueProblem(problem, _render_trail(trail))


def _key_problem(key) -> str | None:
    if isinstance(key, str):
        problem = text_problem(key)
        return f"the key {ascii(key)} {problem}" if problem else None
    if isinstance(key, int) and not isinstance(key, bool):
        return None  # written as its digits, as JSON needs (YAML `logit_bias: {50256: -100}`)
    return f"the key {key!r} must be text (quote it)"


def _render_trail(trail) -> str:
    """("messages", 0, "content") as `messages[0].content`."""
    keys = []
    while trail is not None:
        trail, key = trail
        keys.append(key)
    out = ""
    for key in reversed(keys):
        if isinstance(key, int) and not isinstance(key, bool):
            out += f"[{key}]"
        else:
            out += f".{key}" if out else str(key)
    return out


def _refuse_constant(name: str):
    raise ValueProblem(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueProblem(f"{text[:40]} is too large for a number")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise ValueProblem(f"a number of {len(text):,} digits is too long (at most {MAX_INT_DIGITS:,})")
    return int(text)


# json.loads hooks that refuse what JSON itself does not allow: NaN, Infinity, a number too large
# for a float (1e400 would read as inf) or an integer too long for Python to read or write.
STRICT_NUMBERS = {"parse_constant": _refuse_constant, "parse_float": _finite_float, "parse_int": _bounded_int}

# One decoder for every parse: json.loads with hooks builds a new one each call, which costs
# as much as decoding a short batch line.
_DECODER = json.JSONDecoder(**STRICT_NUMBERS)


def parse_json(text: str, *, check: bool = True):
    """A JSON value, checked with check_value. JsonSyntaxError when the text is not JSON;
    ValueProblem when it is JSON that no request may carry (NaN, nested too deep, …).
    `check=False` leaves check_value out (the numbers are still refused as they are read),
    for text known to be byte for byte text that was checked (batch's second pass)."""
    try:
        value = _DECODER.decode(text)
    except ValueProblem as exc:
        syntax = syntax_error(text)
        if syntax is not None:
            raise syntax from None
        exc.pos = _first_problem_offset(text)
        raise
    except RecursionError:
        raise ValueProblem(f"nested deeper than {MAX_NESTING} levels", pos=_first_problem_offset(text)) from None
    except json.JSONDecodeError as exc:
        raise JsonSyntaxError(exc.msg, exc.pos, exc.colno) from None
    if not check:
        return value
    try:
        check_value(value)
    except ValueProblem as exc:
        if exc.problem.startswith("nested deeper"):
            exc.pos = _first_problem_offset(text)
        raise
    return value


_SCAN = json.JSONDecoder().scan_once


def load_json(text: str):
    """json.loads(text), for text that is one JSON value and nothing else (a stream event's
    data) without json.loads' own steps around the scanner, which cost a third of reading
    a small object. Anything else (white space around it, an error) goes to json.loads."""
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        return json.loads(text)  # white space first, or no JSON: its own error
    if end != len(text):
        return json.loads(text)  # white space after it, or more data
    return value


def json_writer(*, sort_keys: bool = False) -> Callable[[object], str]:
    """Compact JSON text, as json.dumps(value, ensure_ascii=False, separators=(",", ":"),
    sort_keys=sort_keys) writes it, from a writer made once: json.dumps makes CPython's C
    encoder anew on every call, which is a third of the cost of writing a batch line. No
    check for cycles: what it writes was read from JSON (a cycle would end in RecursionError)."""
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)
    if c_make_encoder is None:  # a Python without the C encoder
        return encoder.encode
    write = c_make_encoder(None, encoder.default, encode_basestring, None, ":", ",", sort_keys, False, True)
    return lambda value: "".join(write(value, 0))


def syntax_error(text: str) -> JsonSyntaxError | None:
    """The JsonSyntaxError of text that STRICT_NUMBERS refused: a hook is called before the
    parser has seen the rest of the text, and `NaNa` or `1e999 x` is no JSON at all, rather
    than JSON holding a number it does not allow."""
    try:
        json.loads(text, parse_int=len)  # len: no digit limit, and no work
    except json.JSONDecodeError as syntax:
        return JsonSyntaxError(syntax.msg, syntax.pos, syntax.colno)
    except (ValueError, RecursionError):
        pass
    return None


# One JSON token a scan cares about: a string (skipped whole), a bracket, or a bare word/number.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]|-?Infinity|NaN|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?', re.DOTALL)


def _first_problem_offset(text: str) -> int | None:
    """Where, in JSON text, it first nests too deep or holds a number JSON refuses: the
    offset for an error's line number. Only run when parsing has already failed."""
    depth = 0
    for token in _TOKEN.finditer(text):
        word = token.group()
        first = word[0]
        if first in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return token.start()
        elif first in "]}":
            depth -= 1
        elif first == '"':
            continue
        elif word.endswith(("NaN", "Infinity")):
            return token.start()
        elif ("." in word or "e" in word or "E" in word) and math.isinf(float(word)):
            return token.start()
        elif word.lstrip("-").isdigit() and len(word.lstrip("-")) > MAX_INT_DIGITS:
            return token.start()
    return None


def line_of(text: str, pos: int | None) -> int | None:
    """The 1-based line of character offset `pos` in `text`."""
    return None if pos is None else text.count("\n", 0, pos) + 1
