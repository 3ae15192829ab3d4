"""Rendering: answer text, JSON, JSONL chunks, reasoning and usage. Never imports the client.

Text goes to stdout and is flushed per delta; everything that is not the answer
(reasoning, usage) goes to stderr.

Text from the server never drives a terminal: the printer neutralises control characters
in the answer when stdout is a terminal, and in the reasoning when stderr is one (in a pipe
or a file the answer is byte-exact: it is data there); JSON shown on a terminal has DEL and
C1 controls escaped too (json.dumps escapes the C0 ones). What else reaches stderr goes
through Streams.note, which always neutralises.
"""

from __future__ import annotations

import json
from typing import TextIO

from anyfast_cli.errors import OutputError
from anyfast_cli.exchange import Reply
from anyfast_cli.structured import json_writer
from anyfast_cli.text import escape_json_text, neutralise

# With n > 1, text output prints the first choice (streamed live), then each other choice in
# index order after a line of its own: `--- choice 1 ---`, `--- choice 2 ---`, ...
CHOICE_SEPARATOR = "--- choice {index} ---"
DIM = "\x1b[2m"
RESET = "\x1b[0m"
PIECE = 16384  # write big texts in pieces: a reader that has gone is then always noticed


def write_flushed(out: TextIO, text: str) -> None:
    """Write and flush. One huge write into a pipe whose reader has left can end
    without an error (the partial write is dropped); piece by piece, it raises
    BrokenPipeError, which the CLI turns into exit 141. Other write failures
    (a full disk) become one clear error."""
    try:
        if len(text) <= PIECE:  # the usual streamed delta
            out.write(text)
            out.flush()
            return
        for start in range(0, len(text), PIECE):
            out.write(text[start : start + PIECE])
            out.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write the output: {exc.strerror or exc}") from None


_compact = json_writer()


def render_json(obj, *, pretty: bool = False, terminal: bool = False) -> str:
    """JSON text that any writer takes: lone surrogate halves as `\\uXXXX` escapes (what the
    server sent, still valid JSON); with `terminal`, DEL and C1 controls escaped too."""
    try:
        if pretty:
            text = json.dumps(obj, ensure_ascii=False, indent=2)
        else:
            text = _compact(obj)
    except RecursionError:  # parsed, but our own writer goes one level deeper than the parser did
        raise OutputError("the answer is JSON nested too deep to write out") from None
    return escape_json_text(text, terminal=terminal)


def print_json(obj, out: TextIO, *, terminal: bool, color: bool) -> None:
    """Compact in a pipe; pretty on a terminal, and coloured when colour is allowed."""
    text = render_json(obj, pretty=terminal, terminal=terminal)
    if terminal and color:
        from rich.console import Console  # only paid for on a terminal
        from rich.highlighter import JSONHighlighter

        # Our text, highlighted as rich's print_json does, rather than print_json itself,
        # which would parse and write the JSON again, without our escapes.
        highlighted = JSONHighlighter()(text)
        highlighted.no_wrap = True
        highlighted.overflow = None
        Console(file=out, force_terminal=True, highlight=False, soft_wrap=True).print(highlighted, soft_wrap=True)
        out.flush()
    else:
        write_flushed(out, text + "\n")


def render_usage(usage: dict | None) -> str:
    """The usage line; the counts as the server gave them (a server's odd value is shown, short)."""
    if not isinstance(usage, dict) or not usage:
        return "usage: the server reported none"
    prompt = _count(usage.get("prompt_tokens", "?"))
    completion = _count(usage.get("completion_tokens", "?"))
    total = _count(usage.get("total_tokens", "?"))
    text = f"usage: {prompt} prompt + {completion} completion = {total} tokens"
    details = usage.get("completion_tokens_details")
    reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
    if reasoning:
        text += f" ({_count(reasoning)} reasoning)"
    return text


def _count(value) -> str:
    """A token count as the server gave it; anything else that is short, as it is; else "?"."""
    if isinstance(value, bool):
        return "?"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    return value if isinstance(value, str) and len(value) <= 20 else "?"


def print_usage(usage: dict | None, note) -> None:
    """The usage line, through `note` (Streams.note: the one writer for diagnostics)."""
    note(render_usage(usage) + "\n")


class TextPrinter:
    """Collects an answer into a Reply as its deltas arrive, writing the text to stdout
    (unless `echo` is off: --json prints the objects instead) and, if asked, the
    reasoning to stderr. On a terminal (`out_terminal`, `err_terminal`) the server's
    control characters are made visible; elsewhere the text is written as it came."""

    def __init__(
        self,
        out: TextIO,
        err: TextIO,
        reply: Reply,
        *,
        show_reasoning: bool,
        dim: bool,
        echo: bool = True,
        out_terminal: bool = False,
        err_terminal: bool = False,
        hold: bool = False,
    ) -> None:
        # With `hold`, the first choice's text is kept until the answer ends: if it ends in tool
        # calls, the text goes to stderr and stdout holds only the calls (output.md: Tool calls).
        self._held: list | None = [] if hold and echo else None
        self._out = out
        self._err = err
        self.reply = reply
        self._show_reasoning = show_reasoning
        self._dim = dim
        self._echo = echo
        self._out_terminal = out_terminal
        self._err_terminal = err_terminal
        self._out_ends_line = True
        self._err_ends_line = True

    def feed_chunk(self, chunk: dict) -> None:
        """A stream chunk, or a whole response: collected into the Reply, its text shown."""
        reasoning, content = self.reply.absorb(chunk)
        if reasoning:  # (a call less for the chunks that carry none: nearly all of them)
            self.write_reasoning(reasoning)
        self.write_content(content)

    def write_reasoning(self, text: str | None) -> None:
        if not text:
            return
        if self._show_reasoning:
            if self._err_terminal:
                text = neutralise(text)
            self._err_ends_line = False  # a signal may land during the write: the line is then open
            self._err.write(f"{DIM}{text}{RESET}" if self._dim else text)
            self._err.flush()
            self._err_ends_line = text.endswith("\n")

    def write_content(self, text: str | None) -> None:
        if not text:
            return
        if not self._err_ends_line:
            self.end_reasoning()  # the reasoning block ends before the answer starts
        if self._held is not None:
            self._held.append(text)
            return
        if self._echo:
            self._out_ends_line = False  # a signal may land during the write: the line is then open
            write_flushed(self._out, neutralise(text) if self._out_terminal else text)
            self._out_ends_line = text.endswith("\n")

    def end_reasoning(self) -> None:
        if not self._err_ends_line:
            self._err.write("\n")
            self._err.flush()
            self._err_ends_line = True

    def end_lines(self, *, complete: bool = True) -> None:
        """A complete answer ends with a newline, even an empty one; a cut one
        has its open line ended, and nothing is printed if nothing was."""
        reasoning, content = self.reply.end()  # a surrogate half still held: U+FFFD
        self.write_reasoning(reasoning)
        self.write_content(content)
        self.end_reasoning()
        calls = complete and bool(self.reply.calls(0))
        if self._held is not None:
            text, self._held = "".join(self._held), None
            if calls:
                self.write_aside(text)
            else:
                self.write_content(text)
        if self._echo and (not self._out_ends_line or (complete and not self.reply.said and not calls)):
            write_flushed(self._out, "\n")
            self._out_ends_line = True

    def write_aside(self, text: str) -> None:
        """Text that came with tool calls: on stderr, its line ended."""
        if not text:
            return
        self.end_reasoning()
        self._err.write(neutralise(text) if self._err_terminal else text)
        if not text.endswith("\n"):
            self._err.write("\n")
        self._err.flush()

    def write_calls(self, calls: list[dict]) -> None:
        """One compact JSON line per tool call, OpenAI-shaped, on stdout."""
        for call in calls:
            write_flushed(self._out, render_json(call, terminal=self._out_terminal) + "\n")
        self._out_ends_line = True

    def end_choices(self) -> None:
        """After a complete answer: the first choice's tool calls, then every other choice in
        index order, each after a line `--- choice N ---` (its text, or its tool calls with
        their text on stderr). Called only for text output."""
        if not self._echo:
            return
        self.write_calls(self.reply.calls(0))
        for index in sorted(self.reply.others):
            choice = self.reply.others[index]
            write_flushed(self._out, f"{CHOICE_SEPARATOR.format(index=index)}\n")
            if self._show_reasoning and choice.reasoning:
                self.write_reasoning(choice.reasoning)
                self.end_reasoning()
            calls = self.reply.calls(index)
            text = choice.content
            if calls:
                self.write_aside(text)
                self.write_calls(calls)
                continue
            if self._out_terminal:
                text = neutralise(text)
            write_flushed(self._out, text if text.endswith("\n") else text + "\n")
