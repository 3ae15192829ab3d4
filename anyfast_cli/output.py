"""Rendering: answer text, JSON, JSONL chunks, reasoning and usage. Never imports the client.

Text goes to stdout and is flushed per delta; everything that is not the answer
(reasoning, usage) goes to stderr.
"""

from __future__ import annotations

import json
from typing import TextIO

from anyfast_cli.errors import OutputError
from anyfast_cli.exchange import Reply

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


def render_json(obj, *, pretty: bool = False) -> str:
    if pretty:
        return json.dumps(obj, ensure_ascii=False, indent=2)
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def print_json(obj, out: TextIO, *, terminal: bool, color: bool) -> None:
    """Compact in a pipe; pretty on a terminal, and coloured when colour is allowed."""
    if terminal and color:
        from rich.console import Console  # only paid for on a terminal

        Console(file=out, force_terminal=True, highlight=False, soft_wrap=True).print_json(render_json(obj))
        out.flush()
    else:
        write_flushed(out, render_json(obj, pretty=terminal) + "\n")


def render_usage(usage: dict) -> str:
    prompt = usage.get("prompt_tokens", "?")
    completion = usage.get("completion_tokens", "?")
    total = usage.get("total_tokens", "?")
    text = f"usage: {prompt} prompt + {completion} completion = {total} tokens"
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
    if reasoning:
        text += f" ({reasoning} reasoning)"
    return text


def print_usage(usage: dict | None, err: TextIO) -> None:
    err.write((render_usage(usage) if usage else "usage: the server reported none") + "\n")
    err.flush()


class TextPrinter:
    """Collects an answer into a Reply as its deltas arrive, writing the text to stdout
    (unless `echo` is off: --json prints the objects instead) and, if asked, the
    reasoning to stderr."""

    def __init__(self, out: TextIO, err: TextIO, reply: Reply, *, show_reasoning: bool, dim: bool, echo: bool = True) -> None:
        self._out = out
        self._err = err
        self.reply = reply
        self._show_reasoning = show_reasoning
        self._dim = dim
        self._echo = echo
        self._out_ends_line = True
        self._err_ends_line = True

    def feed_chunk(self, chunk: dict) -> None:
        """A stream chunk, or a whole response: collected into the Reply, its text shown."""
        reasoning, content = self.reply.absorb(chunk)
        self.write_reasoning(reasoning)
        self.write_content(content)

    def write_reasoning(self, text: str | None) -> None:
        if not text:
            return
        if self._show_reasoning:
            self._err.write(f"{DIM}{text}{RESET}" if self._dim else text)
            self._err.flush()
            self._err_ends_line = text.endswith("\n")

    def write_content(self, text: str | None) -> None:
        if not text:
            return
        self.end_reasoning()  # the reasoning block ends before the answer starts
        if self._echo:
            write_flushed(self._out, text)
            self._out_ends_line = text.endswith("\n")

    def end_reasoning(self) -> None:
        if not self._err_ends_line:
            self._err.write("\n")
            self._err.flush()
            self._err_ends_line = True

    def end_lines(self, *, complete: bool = True) -> None:
        """A complete answer ends with a newline, even an empty one; a cut one
        has its open line ended, and nothing is printed if nothing was."""
        self.end_reasoning()
        if self._echo and (not self._out_ends_line or (complete and not self.reply.content_parts)):
            write_flushed(self._out, "\n")
            self._out_ends_line = True
