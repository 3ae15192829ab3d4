"""What a user sees at a terminal: bytes a program wrote, replayed into pyte (a VT100 terminal
emulator), read back as rows of text: the scrollback, then the screen. Plain helpers, no fixtures.

Bytes read from a pseudo-terminal have had `\\n` turned into `\\r\\n` by the tty (ONLCR); text
captured in-process has not, so `onlcr()` does that first (else pyte shows false duplicates).
"""

from __future__ import annotations

import re

import pyte

SGR = re.compile(r"\x1b\[[0-9;]*m")


def onlcr(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


class ScrollbackScreen(pyte.Screen):
    """A pyte screen that keeps each row scrolled off its top (pyte's HistoryScreen does too, at
    three times the cost: it wraps every attribute access)."""

    def __init__(self, columns: int, lines: int) -> None:
        super().__init__(columns, lines)
        self.scrollback: list = []

    def index(self) -> None:
        top, bottom = self.margins or pyte.screens.Margins(0, self.lines - 1)
        if self.cursor.y == bottom and top == 0:
            self.scrollback.append(self.buffer[top])  # index() replaces the row object; it is ours now
        super().index()


class Terminal:
    def __init__(self, columns: int, lines: int) -> None:
        self.screen = ScrollbackScreen(columns, lines)
        self.stream = pyte.Stream(self.screen)

    def feed(self, text: str) -> "Terminal":
        self.stream.feed(text)
        return self

    def resize(self, columns: int, lines: int) -> None:
        self.screen.resize(lines, columns)

    def rows(self, trim: bool = True) -> list[str]:
        """Every row, scrollback first, right-trimmed (or not); blank rows at the very end dropped."""
        rows = [_text(line, trim) for line in self.screen.scrollback]
        rows += [_text(self.screen.buffer[y], trim) for y in range(self.screen.lines)]
        while rows and not rows[-1].strip():
            rows.pop()
        return rows


def _text(line, trim: bool = True) -> str:
    width = max(line.keys(), default=-1) + 1
    text = "".join(line[x].data for x in range(width))
    return text.rstrip() if trim else text


def rows_with(rows: list[str], marker: str) -> int:
    """How many rows hold `marker` as a word of its own."""
    pattern = re.compile(rf"(?<![\w]){re.escape(marker)}(?![\w])")
    return sum(1 for row in rows if pattern.search(row))
