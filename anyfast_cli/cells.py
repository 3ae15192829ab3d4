"""How many terminal rows a line of text takes, and whether that is certain. Pure, standard
library only.

Terminals agree on the width of ASCII and of CJK ideographs, kana, Hangul and full-width forms;
they disagree on East Asian "ambiguous" characters (…, —, ①, Greek and Cyrillic in a CJK
setup), emoji (1 or 2 cells with the terminal's Unicode version), combining marks, joiners and
variation selectors. Each character therefore has a least and a greatest width, and a line's
rows are counted twice, once with each. Rows grow with widths (a character never lands earlier
because one before it got wider), so the terminal's own count lies between the two: when they
agree, it is certain. Redrawing (markdown.py) needs only that. Terminals also differ on a wide
character that reaches the last column (most move it to the next row, some cut it there): the
least count takes the one, the greatest the other.
"""

from __future__ import annotations

import unicodedata

TAB_STOP = 8  # the terminals' default tab stops

# Wide (W/F) characters every terminal draws in 2 cells: CJK, kana, Hangul, full-width forms.
# Other wide characters (mostly emoji) are 1 or 2 cells depending on the terminal's age.
_CERTAINLY_WIDE = (
    (0x1100, 0x115F),
    (0x2E80, 0x303E),
    (0x3041, 0x33FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xA000, 0xA4CF),
    (0xA960, 0xA97F),
    (0xAC00, 0xD7A3),
    (0xF900, 0xFAFF),
    (0xFE10, 0xFE19),
    (0xFE30, 0xFE6F),
    (0xFF00, 0xFF60),
    (0xFFE0, 0xFFE6),
    (0x20000, 0x3FFFD),
)
_ZERO_WIDTH_CATEGORIES = ("Mn", "Me", "Mc", "Cf")  # combining marks, joiners, selectors: 0 or 1
_SYMBOL_RANGES = ((0x2190, 0x2BFF), (0x1F000, 0x1FAFF))  # arrows, dingbats, emoji: some drawn wide

_bounds_cache: dict[str, tuple[int, int]] = {}


def width_bounds(char: str) -> tuple[int, int]:
    """The least and greatest number of cells terminals give one character (not a tab)."""
    bounds = _bounds_cache.get(char)
    if bounds is None:
        bounds = _bounds_cache[char] = _width_bounds(char)
    return bounds


def _width_bounds(char: str) -> tuple[int, int]:
    code = ord(char)
    if 0x20 <= code < 0x7F:
        return 1, 1
    category = unicodedata.category(char)
    if category in _ZERO_WIDTH_CATEGORIES:
        return 0, 1
    if category in ("Cc", "Co", "Cn", "Cs", "Zl", "Zp"):
        return 0, 2
    east_asian = unicodedata.east_asian_width(char)
    if east_asian in ("W", "F"):
        return (2, 2) if any(low <= code <= high for low, high in _CERTAINLY_WIDE) else (1, 2)
    if east_asian == "A" or any(low <= code <= high for low, high in _SYMBOL_RANGES):
        return 1, 2
    return 1, 1


def rows(line: str, columns: int) -> tuple[int, int]:
    """The least and greatest number of rows `line` (no line end) takes from the left margin
    at `columns` wide: at least 1. A line that fills its last row exactly leaves the cursor
    waiting at the margin (pending wrap) and takes no extra row."""
    if columns <= 0:
        return 1, 2**31
    if line.isascii() and "\t" not in line:  # the usual case, at C speed
        if not line.isprintable():
            return _rows(line, columns, 0), _rows(line, columns, 1)
        return (max(1, -(-len(line) // columns)),) * 2
    return _rows(line, columns, 0), _rows(line, columns, 1)


def _rows(line: str, columns: int, which: int) -> int:
    """Rows as a terminal fills them: a character that does not fit on the row starts the next."""
    row, column = 0, 0
    for char in line:
        if char == "\t":
            if column >= columns:  # a tab at the margin: terminals differ; count the worst
                if which:
                    row, column = row + 1, 0
                continue
            column = min(columns - 1 if not which else columns, (column // TAB_STOP + 1) * TAB_STOP)
            continue
        width = width_bounds(char)[which]
        if width == 0:
            continue
        if column + width > columns:
            if which == 0 and column == columns - 1:  # a wide character at the last column:
                column = columns  # some terminals (pyte) draw it there, cut; most start the next row
                continue
            row, column = row + 1, 0
        column += width
    return row + 1
