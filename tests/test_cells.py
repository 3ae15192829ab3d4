"""Rows a line takes at a terminal (cells.py): certain where terminals agree, a range where not."""

from __future__ import annotations

import pytest

from anyfast_cli.cells import rows, width_bounds

CASES = {
    "empty line: one row": ("", 80, (1, 1)),
    "ASCII short": ("hello", 80, (1, 1)),
    "ASCII exactly the width: pending wrap, one row": ("x" * 80, 80, (1, 1)),
    "ASCII one past the width": ("x" * 81, 80, (2, 2)),
    "CJK is two cells each, certainly": ("中" * 40, 80, (1, 1)),
    "CJK one past": ("中" * 41, 80, (2, 2)),
    "a wide character at the last column: terminals differ": ("x" + "中" * 40, 80, (1, 2)),
    "a wide character that fits": ("x" * 78 + "中", 80, (1, 1)),
    "ambiguous characters that cannot change the rows": ("… — ①", 80, (1, 1)),
    "ambiguous characters that can": ("①" * 50, 80, (1, 2)),
    "emoji with VS16 near the margin": ("x" * 79 + "\u2764\ufe0f", 80, (1, 2)),
    "a tab to the next stop": ("a\tb", 80, (1, 1)),
    "a tab near the margin": ("x" * 76 + "\ty", 80, (1, 2)),
    "a tab past the last stop, then text that wraps anyway": ("x" * 76 + "\tyyyy", 80, (2, 2)),
    "combining marks: zero or one cell": ("e\u0301" * 40, 80, (1, 1)),
    "combining marks near the margin": ("e\u0301" * 41, 80, (1, 2)),
}


@pytest.mark.parametrize("line, columns, expected", CASES.values(), ids=CASES.keys())
def test_rows(line, columns, expected):
    assert rows(line, columns) == expected


@pytest.mark.parametrize(
    "char, bounds", [("a", (1, 1)), ("中", (2, 2)), ("…", (1, 2)), ("😀", (1, 2)), ("\u200d", (0, 1))]
)
def test_width_bounds(char, bounds):
    assert width_bounds(char) == bounds
