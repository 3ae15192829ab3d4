"""The streaming Markdown writer (markdown.py) in-process: what it writes, replayed into a terminal
emulator (pyte), is what a user sees. Each line of the answer appears once, in order, code rows
are the source lines, and a block is redrawn only when that is certainly safe."""

from __future__ import annotations

import io
import re

import pytest
from markdown_answers import chunked, mixed_answer, random_sizes
from terminal_replay import SGR, Terminal, onlcr, rows_with

from anyfast_cli.markdown import RESET, MarkdownWriter
from anyfast_cli.mdrender import UnitRenderer

RENDERER = UnitRenderer({"TERM": "xterm-256color"})
CURSOR_MOVES = re.compile(r"\x1b\[\d*[ABJ]")


class FakeScreen:
    """A terminal's size and resize generation, as markdown.TerminalScreen gives them."""

    def __init__(self, columns: int, lines: int) -> None:
        self.columns, self.lines, self.generation = columns, lines, 0
        self.closed = False

    def size(self):
        return self.columns, self.lines

    def resize(self, columns: int, lines: int) -> None:
        self.columns, self.lines = columns, lines
        self.generation += 1

    def close(self) -> None:
        self.closed = True


class Session:
    """A writer on a fake screen; `terminal` replays what it wrote, as it goes."""

    def __init__(self, columns: int = 80, lines: int = 24, *, screen: bool = True, mask=None) -> None:
        self.out = io.StringIO()
        self.screen = FakeScreen(columns, lines) if screen else None
        self.writer = MarkdownWriter(self.out, RENDERER.render, screen=self.screen, width=columns, mask=mask)
        self.terminal = Terminal(columns, lines)
        self._shown = 0

    def write(self, *pieces: str) -> "Session":
        for piece in pieces:
            self.writer.write(piece)
        return self

    def replay(self) -> "Session":
        text = self.out.getvalue()
        self.terminal.feed(onlcr(text[self._shown :]))
        self._shown = len(text)
        return self

    def resize(self, columns: int, lines: int) -> None:
        self.replay()
        self.terminal.resize(columns, lines)
        self.screen.resize(columns, lines)

    def finish(self, cut: bool = False) -> list[str]:
        self.writer.finish(cut=cut)
        return self.replay().terminal.rows()


def code_blocks_on_screen(rows: list[str], fences: list[list[str]]) -> None:
    """Each fence's code lines are rows of their own, exactly (no margin, no padding), in order."""
    start = 0
    for code in fences:
        while start < len(rows) and rows[start] != "```python":
            start += 1
        assert rows[start + 1 : start + 1 + len(code)] == [line.rstrip() for line in code]
        assert rows[start + 1 + len(code)] == "```"
        start += len(code) + 2


@pytest.mark.parametrize("columns, lines", [(80, 24), (200, 50)])
@pytest.mark.parametrize("sizes", [7, random_sizes(3)], ids=["7", "random"])
def test_every_line_once_in_order_code_exact_and_everything_rendered(columns, lines, sizes):
    text, markers, fences = mixed_answer(12)  # some 300 lines: many screens
    session = Session(columns, lines)
    for piece in chunked(text, sizes):
        session.write(piece)
    rows = session.finish()
    assert [rows_with(rows, marker) for marker in markers] == [1] * len(markers)
    positions = [next(i for i, row in enumerate(rows) if marker in row) for marker in markers]
    assert positions == sorted(positions)
    code_blocks_on_screen(rows, fences)
    raw = [row for row in rows if row.startswith(("- ", "|---", "## ")) or "**" in row]
    assert raw == []  # every block fitted and was certain: none was left raw


def test_what_is_seen_does_not_depend_on_the_chunk_sizes():
    text, _, _ = mixed_answer(4)
    seen = []
    for sizes in (1, 2, 3, 7, random_sizes(4)):  # (all at once, it would be too tall to redraw: raw)
        session = Session(80, 24)
        session.write(*chunked(text, sizes))
        seen.append(session.finish())
    assert all(rows == seen[0] for rows in seen)


def test_a_narrow_terminal_with_cjk():
    text, markers, fences = mixed_answer(6)
    session = Session(36, 12)
    session.write(*chunked(text, random_sizes(5)))
    rows = session.finish()
    assert [rows_with(rows, marker) for marker in markers] == [1] * len(markers)
    code_blocks_on_screen(rows, fences)


def test_a_block_taller_than_the_screen_stays_raw():
    items = [f"- M{i:03d} item" for i in range(30)]
    session = Session(80, 24)
    session.write("\n".join(items) + "\n\nafter **bold**\n")
    rows = session.finish()
    assert rows[:30] == items  # untouched raw rows
    assert rows[-1] == "after bold"  # the next block fitted and was rendered
    tall = Session(200, 50).write("\n".join(items) + "\n\n")
    assert tall.finish()[0] == " • M000 item"


def test_a_resize_while_a_block_streams_leaves_it_raw_and_the_next_is_rendered():
    session = Session(80, 24)
    session.write("- one **a**\n- two\n")
    session.resize(40, 24)
    session.write("- three\n\n", "next **b**\n")
    rows = session.finish()
    assert rows == ["- one **a**", "- two", "- three", "", "next b"]


def test_a_size_that_changed_without_a_signal_counts_as_a_resize():
    session = Session(80, 24)
    session.write("- one **a**\n")
    session.replay()
    session.terminal.resize(40, 24)
    session.screen.columns = 40  # no generation: SIGWINCH never came
    rows = session.write("\n").finish()
    assert rows == ["- one **a**"]


def test_width_that_terminals_disagree_on_leaves_the_block_raw_only_when_it_matters():
    session = Session(80, 24)
    uncertain = "①" * 50 + " **x**"  # 56 cells, or 106: one row or two
    session.write(uncertain + "\n\n", "① short **y** …\n\n")
    rows = session.finish()
    assert rows == [uncertain, "", "① short y …"]


def test_others_writing_on_the_terminal_leave_the_block_raw():
    session = Session(80, 24)
    session.write("**a**")
    session.writer.touched()  # reasoning on stderr, say
    session.write(" b\n\n**c**\n")
    assert session.finish() == ["**a** b", "", "c"]


def test_an_answer_ending_inside_a_fence_is_code_and_ends_its_line():
    session = Session(80, 24)
    session.write("```python\nx = 1\n", "print(x)")
    output_before = session.out.getvalue()
    rows = session.finish()
    assert rows == ["```python", "x = 1", "print(x)"]
    assert session.out.getvalue().endswith("\n")
    assert session.terminal.screen.cursor.attrs == Terminal(1, 1).screen.cursor.attrs  # attributes reset
    assert len(session.out.getvalue()) > len(output_before)


def test_cut_short_resets_attributes_ends_the_line_and_draws_nothing_more():
    session = Session(80, 24)
    session.write("```python\nx = '", "still open")
    before = session.out.getvalue()
    session.writer.finish(cut=True)
    after = session.out.getvalue()[len(before) :]
    assert after == RESET + "\n"
    assert session.screen.closed


def test_long_code_lines_are_not_broken_and_keep_their_tabs():
    line = "values = [" + ", ".join(str(i) for i in range(60)) + "]"
    session = Session(80, 24)
    session.write(f"```python\n{line}\n\tindented()\n```\n")
    output = SGR.sub("", session.out.getvalue())
    assert line + "\n" in output and "\tindented()\n" in output
    session.finish()
    rows = session.terminal.rows(trim=False)
    joined = "".join(rows[1:4]).rstrip()  # the terminal wrapped the long line over rows of its own
    assert joined == line


def test_a_pipe_gets_rendered_units_once_and_no_cursor_movement():
    text, markers, _ = mixed_answer(3)
    session = Session(80, 24, screen=False)
    session.write(*chunked(text, 5))
    rows = session.finish()
    assert not CURSOR_MOVES.search(session.out.getvalue())
    assert [rows_with(rows, marker) for marker in markers] == [1] * len(markers)


def test_text_the_key_mask_would_change_is_not_redrawn():
    session = Session(80, 24, mask=lambda text: text.replace("sk-secret-key", "***"))
    session.write("**a** sk-secret-key\n\n**b**\n")
    assert session.finish() == ["**a** sk-secret-key", "", "b"]
