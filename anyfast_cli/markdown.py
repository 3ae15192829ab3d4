"""Markdown at a terminal while the answer streams: append-only, O(answer).

Each chunk is written raw at once (the first byte as early as without rendering). When units
complete (mdblocks: a code line, a prose block, a blank line), their raw rows are replaced by
the rendered units in one write: carriage return, cursor up to the first raw row, erase to the
end of the screen, the rendered units, then the raw text that is still open. Nothing older is
ever redrawn, and nothing is rendered twice.

A redraw happens only when it is certainly safe, else the unit stays raw (unstyled, never
garbled): every raw row is still on the screen, the number of rows is certain (cells.py), no
resize (SIGWINCH, or a size that changed) and no other writer on the terminal (reasoning on
stderr) since the first raw character of the tail. The writer never queries the terminal, never
hides the cursor, never switches screens or tty modes, and assumes only that the answer starts
at the left margin (after a prompt's Enter, or a line ended on stderr).

Where stdout is not a terminal (`--markdown` into `less -R`), and for an answer that arrives
whole, nothing is written raw: each unit is written once, rendered, when it completes.

This module loads only the standard library; the renderer (rich, markdown-it-py, pygments) is
imported on a thread started right after the first raw write: the first byte never waits for it
(started with the request instead, its 200 ms of imports held the first byte back 60-70 ms).
"""

from __future__ import annotations

import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import TextIO

from anyfast_cli.cells import rows
from anyfast_cli.mdblocks import Splitter, Unit
from anyfast_cli.output import write_flushed

RESET = "\x1b[0m"
DEFAULT_COLUMNS = 80  # rendering width when stdout is no terminal and COLUMNS is not set
SPARE_ROWS = 1  # a redraw leaves this many rows of the screen unused above the tail: a margin for error
_COMMIT_SIGNALS = (
    tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
    if hasattr(signal, "pthread_sigmask")
    else ()
)


def terminal_size(fd: int) -> tuple[int, int] | None:
    """(columns, rows) of the terminal on `fd`, or None when it cannot be known."""
    try:
        size = os.get_terminal_size(fd)
    except (OSError, ValueError):
        return None
    return (size.columns, size.lines) if size.columns > 0 and size.lines > 0 else None


class TerminalScreen:
    """The terminal behind stdout: its size, and a generation that each resize (SIGWINCH) moves on."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.generation = 0
        self._previous = None
        resize = getattr(signal, "SIGWINCH", None)
        if resize is not None and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(resize, self._resized)

    def _resized(self, signum, frame) -> None:
        self.generation += 1
        if callable(self._previous):
            self._previous(signum, frame)

    def size(self) -> tuple[int, int] | None:
        return terminal_size(self._fd)

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGWINCH, self._previous)
            self._previous = None


def load_renderer_in_background() -> None:
    """Import the renderer on a thread: by the time the first unit completes it is loaded."""
    threading.Thread(target=_import_renderer, name="anyfast-markdown-import", daemon=True).start()


def _import_renderer() -> None:
    try:
        import anyfast_cli.mdrender  # noqa: F401
    except Exception:  # noqa: S110 - the first render imports it again and reports what is wrong
        pass


def writer_opener(out: TextIO, *, terminal: bool, env: Mapping[str, str], mask=None, columns: int | None = None):
    """What TextPrinter calls to get a MarkdownWriter for a text: `live` when the text streams
    (redrawn at a terminal), else whole (rendered units only).
    `columns`: the width for a stdout that is no terminal (COLUMNS), else DEFAULT_COLUMNS."""
    renderer = []
    loading = []

    def warm_up() -> None:
        if not loading:
            loading.append(True)
            load_renderer_in_background()

    def render(unit: Unit, width: int) -> str:
        if not renderer:
            from anyfast_cli.mdrender import UnitRenderer

            renderer.append(UnitRenderer(env))
        return renderer[0].render(unit, width)

    try:
        fd = out.fileno() if terminal else None
    except (OSError, ValueError):  # a stream with no descriptor: rendered as for a pipe
        fd = None

    def open_writer(live: bool) -> MarkdownWriter:
        screen = TerminalScreen(fd) if fd is not None and live else None
        size = terminal_size(fd) if fd is not None else None
        width = size[0] if size else columns or DEFAULT_COLUMNS
        return MarkdownWriter(out, render, screen=screen, width=width, mask=mask, warm_up=warm_up)

    return open_writer


class MarkdownWriter:
    """Takes the answer's text (control characters already made visible) chunk by chunk.

    `screen`: the terminal to redraw on, or None to write only rendered units (a pipe, or an
    answer that came whole). `render(unit, width)` gives a unit's terminal text. `mask` (the
    key redaction) is checked on the tail: text the redaction shortened was not drawn as counted.
    """

    def __init__(
        self,
        out: TextIO,
        render: Callable[[Unit, int], str],
        *,
        screen: TerminalScreen | None,
        width: int = DEFAULT_COLUMNS,
        mask: Callable[[str], str] | None = None,
        warm_up: Callable[[], None] | None = None,
    ) -> None:
        self._warm_up = warm_up  # called once, after the first write: starts loading the renderer
        self._out = out
        self._render = render
        self._screen = screen
        self._width = width
        self._mask = mask
        self._splitter = Splitter()
        self._parts: list[str] = []  # the unfinished line, in the pieces it came in
        self._tail: deque[tuple[str, int]] = deque()  # complete lines not yet committed, each with its epoch
        self._line_epoch = 0  # the epoch the unfinished line began in
        self._others = 0  # writes by others on the terminal (see touched)
        self._size = screen.size() if screen is not None else None
        self._size_generation = screen.generation if screen is not None else 0  # the resize _size is from
        self.ends_line = True  # whether what was written ends with a newline
        self._finished = False

    # -- input ---------------------------------------------------------------------------------

    def write(self, text: str) -> None:
        if not text:
            return
        epoch = self._epoch()
        if not self._tail and not self._parts:
            self._line_epoch = epoch  # a tail begins
        if self._screen is not None:
            self.ends_line = False  # a signal may land during the write: the line is then open
            write_flushed(self._out, text)
            self.ends_line = text.endswith("\n")
        if self._warm_up is not None:
            warm_up, self._warm_up = self._warm_up, None
            warm_up()
        if "\n" not in text:
            self._parts.append(text)
            return
        first, *middle, last = text.split("\n")
        self._parts.append(first)
        units: list[Unit] = []
        for line in ("".join(self._parts), *middle):
            self._tail.append((line, self._line_epoch))
            self._line_epoch = epoch
            units += self._splitter.feed_line(line)
        self._parts = [last] if last else []
        if units:
            self._commit(units)

    def touched(self) -> None:
        """Someone else wrote on the terminal (reasoning on stderr): rows counted so far may be wrong."""
        self._others += 1

    def finish(self, *, cut: bool = False) -> None:
        """The answer ended. Complete: its last units committed, its last line ended. Cut short
        (Ctrl-C, a broken stream): at a terminal nothing more is drawn, the attributes are reset
        and the line is ended; in a pipe what was held is written."""
        if self._finished:
            return
        self._finished = True
        try:
            partial = "".join(self._parts)
            if cut and self._screen is not None:
                write_flushed(self._out, RESET + ("" if self.ends_line else "\n"))
                self.ends_line = True
                return
            units = self._splitter.finish(partial)
            if partial:
                self._tail.append((partial, self._line_epoch))
                self._parts = []
            if units:
                self._commit(units, final=True)
            if not self.ends_line:
                write_flushed(self._out, "\n")
                self.ends_line = True
        finally:
            if self._screen is not None:
                self._screen.close()

    # -- committing ----------------------------------------------------------------------------

    def _epoch(self) -> int:
        """Moves on with every resize and every write by others: a tail that began in an older
        epoch may have been re-flowed or pushed about, and is not redrawn."""
        return (self._screen.generation if self._screen is not None else 0) + self._others

    def _commit(self, units: list[Unit], *, final: bool = False) -> None:
        covered = sum(len(unit.lines) for unit in units)
        if self._screen is None:
            self._emit("".join(self._render(unit, self._width) for unit in units))
            self._drop(covered)
            return
        size = self._screen.size()
        if self._screen.generation != self._size_generation:  # a resize the epoch already counts
            self._size_generation = self._screen.generation
        elif size != self._size:  # a resize SIGWINCH did not tell of (or no handler could be set)
            self._others += 1
        self._size = size
        up = self._rows_to_redraw(size, final)
        if up is None:  # not certainly safe: the units stay as they were written, raw
            self._drop(covered)
            return
        columns = size[0]
        rendered = "".join(self._render(unit, columns) for unit in units)
        self._drop(covered)
        rest = "".join(line + "\n" for line, _ in self._tail) + "".join(self._parts)
        epoch = self._epoch()
        self._tail = deque((line, epoch) for line, _ in self._tail)  # written again, now
        self._line_epoch = epoch
        cursor = "\r" + (f"\x1b[{up}A" if up else "") + "\x1b[J"
        self._emit(cursor + rendered + rest, atomic=True)
        self.ends_line = not self._parts

    def _rows_to_redraw(self, size: tuple[int, int] | None, final: bool) -> int | None:
        """How many rows above the cursor the tail begins, when a redraw is certainly safe; else None."""
        if size is None or not self._tail:
            return None
        epoch = self._epoch()
        if self._tail[0][1] != epoch:
            return None
        columns, screen_rows = size
        limit = screen_rows - 1 - SPARE_ROWS
        low = high = 0
        texts = []
        last = len(self._tail) - 1
        for index, (line, _) in enumerate(self._tail):
            line_low, line_high = rows(line[:-1] if line.endswith("\r") else line, columns)
            if final and index == last and not self.ends_line:
                line_low, line_high = line_low - 1, line_high - 1  # the cursor is still on it
            low, high = low + line_low, high + line_high
            if low > limit:
                return None
            texts.append(line)
        partial = "".join(self._parts)
        if partial:
            part_low, part_high = rows(partial, columns)
            low, high = low + part_low - 1, high + part_high - 1
        elif not final and not self.ends_line:
            return None  # the text written does not end where the lines say: do not guess
        if low != high or high > limit:
            return None
        if self._mask is not None:
            text = "".join(line + "\n" for line in texts) + partial
            if self._mask(text) != text:
                return None
        return high

    def _drop(self, count: int) -> None:
        for _ in range(min(count, len(self._tail))):
            self._tail.popleft()

    def _emit(self, text: str, *, atomic: bool = False) -> None:
        """Write and flush; a redraw with Ctrl-C, SIGTERM and SIGHUP held off until it is all
        written, so an interrupt never leaves the tail half erased."""
        if not text:
            return
        blocked = atomic and _COMMIT_SIGNALS and threading.current_thread() is threading.main_thread()
        if blocked:
            signal.pthread_sigmask(signal.SIG_BLOCK, _COMMIT_SIGNALS)
        try:
            write_flushed(self._out, text)
        finally:
            if blocked:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _COMMIT_SIGNALS)
        if self._screen is None:
            self.ends_line = text.endswith("\n")
