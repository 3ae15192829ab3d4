"""`{name}` placeholders: the one template engine, for `batch --template` and prompt files (pure).

Only `{name}` is replaced; `{{` and `}}` are literal braces. Anything else in braces is refused,
never evaluated: no attribute access, no indexing, no format spec (str.format would fill in
`{text.__class__}` and write a gigabyte for `{text:>999999999}`). A value is inserted once, as
it is: a `{…}` inside a value is text, never another placeholder. Callers say where a template
came from, so an error names the flag or the file and line; this module knows only offsets.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

# One token: an escaped brace, a {…} without braces inside, or a lone brace.
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
# Letters, digits, _ and -, with single inner spaces: {first name}, {user-id}.
NAME = re.compile(r"[\w-]+(?: [\w-]+)*")
RULES = "only {name} is replaced, and {{ and }} are literal braces"


@dataclass(frozen=True)
class Placeholder:
    name: str


class TemplateSyntaxError(ValueError):
    """A `{…}` that is not a placeholder, or a lone brace: `token` at character `offset` (0-based)."""

    def __init__(self, token: str, offset: int) -> None:
        super().__init__(token, offset)
        self.token = token
        self.offset = offset

    def describe(self, noun: str = "placeholder", where: str = "") -> str:
        """ "{x.y} is not a placeholder" or "a lone '{'", with `where` ("at character 3") after the token."""
        where = f" {where}" if where else ""
        if self.token in ("{", "}"):
            return f"a lone '{self.token}'{where}"
        return f"{self.token}{where} is not a {noun}"


class MissingValue(KeyError):
    """A placeholder that was given no value."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass(frozen=True)
class Template:
    pieces: tuple  # literal strings and Placeholders, in order

    @functools.cached_property  # asked for each batch record: worked out once
    def names(self) -> tuple[str, ...]:
        """Each placeholder's name once, in the order they first appear."""
        return tuple(dict.fromkeys(p.name for p in self.pieces if isinstance(p, Placeholder)))

    def size(self, values: Mapping[str, str]) -> int:
        """The length of the filled text (every placeholder has a value), without building it:
        a bound is checked before the text is made."""
        return sum(len(values[p.name]) if isinstance(p, Placeholder) else len(p) for p in self.pieces)

    def fill(self, values: Mapping[str, str]) -> str:
        """The text with each placeholder replaced by its value; MissingValue for the first without one."""
        for piece in self.pieces:
            if isinstance(piece, Placeholder) and piece.name not in values:
                raise MissingValue(piece.name)
        return "".join(values[p.name] if isinstance(p, Placeholder) else p for p in self.pieces)


@functools.lru_cache(maxsize=256)
def parse_template(text: str) -> Template:
    """The template as literal strings and placeholders; TemplateSyntaxError for anything else in braces."""
    pieces: list = []
    literal: list[str] = []
    position = 0
    for token in _TOKEN.finditer(text):
        literal.append(text[position : token.start()])
        position = token.end()
        whole, name = token.group(), token.group(1)
        if whole in ("{{", "}}"):
            literal.append(whole[0])
        elif name is not None and NAME.fullmatch(name):
            pieces += ["".join(literal), Placeholder(name)]
            literal = []
        else:
            raise TemplateSyntaxError(whole, token.start())
    pieces.append("".join(literal) + text[position:])
    return Template(tuple(piece for piece in pieces if piece != ""))
