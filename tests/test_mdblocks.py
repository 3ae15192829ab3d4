"""The block splitter (mdblocks.py), pure: which lines make one unit, and the same units (so the
same committed output) whatever the chunk sizes the answer streams in."""

from __future__ import annotations

import pytest
from markdown_answers import chunked, mixed_answer, random_sizes

from anyfast_cli.markdown import MarkdownWriter
from anyfast_cli.mdblocks import BLANK, BLOCK, CODE, FENCE_CLOSE, FENCE_OPEN, Splitter, Unit

B, E, O, C, X = BLOCK, BLANK, FENCE_OPEN, CODE, FENCE_CLOSE


def split(text: str) -> list[tuple]:
    """The units of `text`, as (kind, lines...) tuples; the last line may be unfinished."""
    splitter = Splitter()
    *lines, last = text.split("\n")
    units: list[Unit] = []
    for line in lines:
        units += splitter.feed_line(line)
    units += splitter.finish(last)
    return [(unit.kind, *unit.lines) for unit in units]


CASES = {
    "paragraphs are cut at a blank line": (
        "one\ntwo\n\nthree",
        [(B, "one", "two"), (E, ""), (B, "three")],
    ),
    "a heading is a unit at once, and cuts the paragraph before it": (
        "# Title\ntext\n## Sub\nmore",
        [(B, "# Title"), (B, "text"), (B, "## Sub"), (B, "more")],
    ),
    "a setext heading stays with its text": (
        "Title\n=====\n\nSub\n---\n\n---",
        [(B, "Title", "====="), (E, ""), (B, "Sub", "---"), (E, ""), (B, "---")],
    ),
    "a table is one block, with what follows it up to a blank line": (
        "| a | b |\n|---|---|\n| 1 | 2 |\nafter\n\nnext",
        [(B, "| a | b |", "|---|---|", "| 1 | 2 |", "after"), (E, ""), (B, "next")],
    ),
    "a fence is one unit a line; blank lines inside it never cut": (
        "```python\nx = 1\n\ny = 2\n```\nafter",
        [(O, "```python"), (C, "x = 1"), (C, ""), (C, "y = 2"), (X, "```"), (B, "after")],
    ),
    "a tilde fence": ("~~~\ncode\n~~~", [(O, "~~~"), (C, "code"), (X, "~~~")]),
    "a 4-backtick fence holds a 3-backtick line": (
        "````md\n```\ninner\n```\n````",
        [(O, "````md"), (C, "```"), (C, "inner"), (C, "```"), (X, "````")],
    ),
    "a tilde line does not close a backtick fence, nor a shorter run": (
        "````\n~~~~\n```\n`````",
        [(O, "````"), (C, "~~~~"), (C, "```"), (X, "`````")],
    ),
    "a closing fence takes only blanks after it": (
        "```\n``` x\n```  ",
        [(O, "```"), (C, "``` x"), (X, "```  ")],
    ),
    "backticks in a backtick fence's info string: not a fence": ("``` a`b\ntext", [(B, "``` a`b", "text")]),
    "a fence interrupts a paragraph": ("text\n```\ncode\n```", [(B, "text"), (O, "```"), (C, "code"), (X, "```")]),
    "a fence indented 4 is not one (indented code)": (
        "    ```\n    code\n\n    more\nend",
        [(B, "    ```", "    code", "", "    more", "end")],
    ),
    "an unclosed fence runs to the end, the last line unfinished": (
        "```sh\necho 1\necho 2",
        [(O, "```sh"), (C, "echo 1"), (C, "echo 2")],
    ),
    "a loose list stays whole across blank lines": (
        "- a\n\n- b\n\nafter",
        [(B, "- a", "", "- b"), (E, ""), (B, "after")],
    ),
    "a nested list and a continuation paragraph stay with their item": (
        "1. a\n   - nested\n\n   more of a\n2. b\n\nend",
        [(B, "1. a", "   - nested", "", "   more of a", "2. b"), (E, ""), (B, "end")],
    ),
    "a fence inside a list item, blank lines and all, stays in the list": (
        "- step:\n  ```sh\n  one\n\n  # two\n  ```\n- next\n\ntext",
        [(B, "- step:", "  ```sh", "  one", "", "  # two", "  ```", "- next"), (E, ""), (B, "text")],
    ),
    "a fence on the item's own line": (
        "- ```\n  x\n\n  ```\n\nok",
        [(B, "- ```", "  x", "", "  ```"), (E, ""), (B, "ok")],
    ),
    "a fence at the margin after a list is top-level": (
        "1. run:\n```bash\nls\n```",
        [(B, "1. run:"), (O, "```bash"), (C, "ls"), (X, "```")],
    ),
    "a list interrupting a paragraph waits at blank lines as a list": (
        "Steps:\n- a\n\n- b\n\nend",
        [(B, "Steps:", "- a", "", "- b"), (E, ""), (B, "end")],
    ),
    "a thematic break after a list's blank line ends it": (
        "- a\n\n***\n",
        [(B, "- a"), (E, ""), (B, "***")],
    ),
    "a heading at the margin ends a list": ("- a\n# H", [(B, "- a"), (B, "# H")]),
    "CRLF line ends are line ends": (
        "# T\r\ntext\r\n\r\n```\r\nx\r\n```\r\n",
        [(B, "# T"), (B, "text"), (E, ""), (O, "```"), (C, "x"), (X, "```")],
    ),
    "blank lines between blocks are units of their own": (
        "a\n\n\n\nb",
        [(B, "a"), (E, ""), (E, ""), (E, ""), (B, "b")],
    ),
    "nothing at all": ("", []),
}


@pytest.mark.parametrize("text, expected", CASES.values(), ids=CASES.keys())
def test_units(text, expected):
    assert split(text) == expected


@pytest.mark.parametrize("text", [text for text, _ in CASES.values()], ids=CASES.keys())
def test_units_cover_every_line_once_in_order(text):
    covered = [line for unit in split(text) for line in unit[1:]]
    assert covered == [line.rstrip("\r") for line in text.split("\n")][: len(covered)]
    assert len(covered) == len(text.split("\n")) - (0 if text.split("\n")[-1] else 1)


def committed(text: str, pieces: list[str]) -> str:
    """What a writer with no terminal commits for `text` streamed in `pieces`: each unit, tagged."""
    import io

    out = io.StringIO()
    writer = MarkdownWriter(out, lambda unit, width: f"<{unit.kind}:{'|'.join(unit.lines)}>\n", screen=None)
    for piece in pieces:
        writer.write(piece)
    writer.finish()
    assert "".join(pieces) == text
    return out.getvalue()


CHUNK_SIZES = [1, 2, 3, 7, random_sizes(1), random_sizes(2, largest=200)]


@pytest.mark.parametrize("sizes", CHUNK_SIZES, ids=["1", "2", "3", "7", "random", "random-large"])
def test_the_same_units_whatever_the_chunk_sizes(sizes):
    texts = [text for text, _ in CASES.values()] + [mixed_answer(3)[0]]
    for text in texts:
        assert committed(text, chunked(text, sizes)) == committed(text, [text] if text else [])
