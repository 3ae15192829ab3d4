"""Markdown split into units that can be shown for good as soon as they are complete. Pure,
line by line, standard library only.

A streamed answer is rendered a unit at a time (markdown.py): a unit, once emitted, never
changes, so it is drawn once and never again. Units, in source order, cover every line once:

- `fence_open`, `code`, `fence_close`: a top-level fenced code block, one line per unit, so code
  is never held back; an unclosed fence runs to the end of the answer (CommonMark), as code.
- `block`: the lines of one prose block: paragraphs, headings, lists (loose and nested ones
  whole, with the fences inside their items), quotes, tables, setext headings, indented code.
- `blank`: a blank line between blocks, so the source's spacing is the spacing shown.

The splitter is conservative: when a cut is in doubt it does not cut (a later cut only delays
styling; a wrong one changes what a block means, e.g. a nested item shown as a top-level one).
Whatever the chunk sizes, the same lines give the same units.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BLOCK = "block"
BLANK = "blank"
FENCE_OPEN = "fence_open"
CODE = "code"
FENCE_CLOSE = "fence_close"

_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")
_CLOSING_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*$")
_LOOSE_FENCE = re.compile(r"^[ \t]*(?:(?:[-+*]|\d{1,9}[.)])[ \t]+)?(`{3,}|~{3,})(.*)$")  # in a list item
_LOOSE_CLOSING = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*$")
_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]|$)")
_THEMATIC_BREAK = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_LIST_ITEM = re.compile(r"^ {0,3}(?:[-+*]|\d{1,9}[.)])(?:[ \t]|$)")


@dataclass(frozen=True)
class Unit:
    kind: str  # BLOCK, BLANK, FENCE_OPEN, CODE or FENCE_CLOSE
    lines: tuple[str, ...]  # the source lines, without their line ends
    language: str = ""  # a fence's info word, for its code lines


@dataclass(frozen=True)
class Fence:
    char: str
    length: int
    language: str = ""

    def closed_by(self, line: str, pattern: re.Pattern = _CLOSING_FENCE) -> bool:
        match = pattern.match(line)
        return bool(match) and match.group(1)[0] == self.char and len(match.group(1)) >= self.length


def opening_fence(line: str, pattern: re.Pattern = _FENCE) -> Fence | None:
    """The fence `line` opens, if it opens one: a backtick fence's info string has no backtick."""
    match = pattern.match(line)
    if not match:
        return None
    marks, info = match.group(match.re.groups - 1), match.group(match.re.groups)
    if marks[0] == "`" and "`" in info:
        return None
    return Fence(marks[0], len(marks), info.strip().split(" ")[0] if info.strip() else "")


def is_blank(line: str) -> bool:
    return not line.strip(" \t")


def indent(line: str) -> int:
    """Leading columns, a tab to the next multiple of 4 (CommonMark's tab stop)."""
    columns = 0
    for char in line:
        if char == " ":
            columns += 1
        elif char == "\t":
            columns += 4 - columns % 4
        else:
            break
    return columns


class Splitter:
    """Feed complete lines (feed_line), then the answer's last, unfinished line (finish);
    each returns the units that line completed, in order."""

    def __init__(self) -> None:
        self._fence: Fence | None = None  # inside a top-level fence
        self._lines: list[str] = []  # the open block's lines
        self._kind = ""  # the open block: "paragraph", "list" or "indented" ("" when none is open)
        self._blanks: list[str] = []  # blank lines after a list or indented block, not yet placed
        self._inner_fence: Fence | None = None  # a fence inside the open list

    def feed_line(self, line: str) -> list[Unit]:
        line = line[:-1] if line.endswith("\r") else line  # CRLF: the CR is part of the line end
        units: list[Unit] = []
        if self._fence is not None:
            if self._fence.closed_by(line):
                units.append(Unit(FENCE_CLOSE, (line,)))
                self._fence = None
            else:
                units.append(Unit(CODE, (line,), self._fence.language))
            return units
        if self._kind and self._continue_block(line, units):
            return units
        self._start(line, units)
        return units

    def finish(self, partial: str = "") -> list[Unit]:
        """The end of the answer: its unfinished last line (if any) and the open block."""
        units = self.feed_line(partial) if partial else []
        units += self._close_block()
        self._fence = None
        return units

    # -- between blocks --------------------------------------------------------------------

    def _start(self, line: str, units: list[Unit]) -> None:
        if is_blank(line):
            units.append(Unit(BLANK, (line,)))
            return
        fence = opening_fence(line)
        if fence is not None:
            self._fence = fence
            units.append(Unit(FENCE_OPEN, (line,), fence.language))
            return
        if _HEADING.match(line) or _THEMATIC_BREAK.match(line):
            units.append(Unit(BLOCK, (line,)))  # nothing after them can change them
            return
        if _LIST_ITEM.match(line):
            self._kind = "list"
            self._inner_fence = opening_fence(line, _LOOSE_FENCE)
        else:
            self._kind = "indented" if indent(line) >= 4 else "paragraph"
        self._lines = [line]

    # -- inside a block --------------------------------------------------------------------

    def _continue_block(self, line: str, units: list[Unit]) -> bool:
        """Add `line` to the open block and say True; or close the block (its units into
        `units`) and say False, so the line starts what comes next."""
        if self._inner_fence is not None:  # blank lines and fence-like lines alike are its code
            self._lines.append(line)
            if self._inner_fence.closed_by(line, _LOOSE_CLOSING):
                self._inner_fence = None
            return True
        if is_blank(line):
            if self._kind == "paragraph":  # nothing after a blank line changes a paragraph or table
                units += self._close_block()
                units.append(Unit(BLANK, (line,)))
            else:  # a list or indented code may go on after it: wait for the next line
                self._blanks.append(line)
            return True
        if self._blanks:
            if not self._goes_on_after_blank(line):
                units += self._close_block()
                return False
            self._lines += self._blanks
            self._blanks = []
        elif self._interrupts(line):
            units += self._close_block()
            return False
        if self._kind == "paragraph" and _LIST_ITEM.match(line):
            self._kind = "list"  # a list may interrupt a paragraph; blank lines then wait
        if self._kind == "list":
            self._inner_fence = opening_fence(line, _LOOSE_FENCE)
        self._lines.append(line)
        return True

    def _goes_on_after_blank(self, line: str) -> bool:
        """After blank lines, a list goes on with an indented line (a nested item, a continuation
        paragraph, an item's fence) or another item; indented code with an indented line."""
        if indent(line) > 0:
            return True
        return self._kind == "list" and bool(_LIST_ITEM.match(line)) and not _THEMATIC_BREAK.match(line)

    def _interrupts(self, line: str) -> bool:
        """A heading or a fence ends the block before it without a blank line; in a list, only
        at the left margin (an indented one may belong to an item)."""
        if self._kind == "list":
            return indent(line) == 0 and bool(_HEADING.match(line) or opening_fence(line))
        if self._kind == "paragraph":
            return bool(_HEADING.match(line) or opening_fence(line))
        return indent(line) < 4 and bool(opening_fence(line))

    def _close_block(self) -> list[Unit]:
        units = [Unit(BLOCK, tuple(self._lines))] if self._lines else []
        units += [Unit(BLANK, (blank,)) for blank in self._blanks]
        self._lines, self._blanks, self._kind, self._inner_fence = [], [], "", None
        return units
