"""Rendering: answer text, JSON, JSONL chunks, reasoning and usage. Never imports the client.

Text goes to stdout and is flushed per delta; everything that is not the answer
(reasoning, usage) goes to stderr.

Text from the server never drives a terminal: the printer neutralises control characters
in the answer when stdout is a terminal, and in the reasoning when stderr is one (in a pipe
or a file the answer is byte-exact: it is data there); JSON shown on a terminal has DEL and
C1 controls escaped too (json.dumps escapes the C0 ones). What else reaches stderr goes
through Streams.note, which always neutralises.

Markdown at a terminal (markdown.py) is a second way to show the same text: the printer hands
the neutralised text to a MarkdownWriter instead of writing it. Whether to render is decided
once per command (wants_markdown); tool calls, other JSON and reasoning are never rendered.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TextIO

from anyfast_cli.errors import OutputError
from anyfast_cli.exchange import Reply, choice_index
from anyfast_cli.prices import render_cost
from anyfast_cli.settings import color_allowed
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


def wants_markdown(flag: bool | None, mode: str, *, stdout_isatty: bool, env: Mapping[str, str]) -> bool:
    """Whether answer text is rendered as Markdown: NO_COLOR and TERM=dumb always say no;
    then --markdown / --raw (`flag`); then the config's `markdown` mode: always, never, or
    auto (only when stdout is a terminal). Text output only: the caller leaves --json out."""
    if not color_allowed(env):
        return False
    if flag is not None:
        return flag
    if mode in ("always", "never"):
        return mode == "always"
    return stdout_isatty


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


# Chunks held back at most while a text in them may be the start of the key. A key comes in a
# few chunks; one still open after this many other chunks is let go (each line is still masked).
MAX_HELD_CHUNKS = 1024


class ChunkLines:
    """--json --stream: each chunk object as a line, the key masked across chunks. A model that
    echoes the key streams it in pieces, a few characters per chunk, so no one line holds it
    for the writer to mask, yet the deltas join to it. So each streamed text (a choice's
    content or reasoning, a tool call's arguments, ...) is masked as one text across chunks
    (Redactor.mask_pieces): a chunk whose text ends in what may be the start of the key is
    held, with every chunk after it (lines keep their order), until a later chunk settles it;
    chunks in which no key is found are written as they came."""

    def __init__(self, out: TextIO, redactor, *, terminal: bool) -> None:
        self._out = out
        self._redactor = redactor
        self._terminal = terminal
        self._held: list[tuple[int, dict]] = []  # (number, chunk) not written yet, in order
        self._open: dict = {}  # a streamed text -> [(chunk number, its container, key)] not settled
        self._count = 0

    def feed(self, chunk) -> None:
        """Take one chunk (after the printer has read it: masking may rewrite its texts)."""
        texts = _streamed_texts(chunk) if self._redactor else ()
        if not self._held and not any(self._redactor.holds_part(place[key]) for _, place, key in texts):
            self._write(chunk)  # nearly every chunk: nothing held, and no part of a key in it
            return
        number = self._count
        self._count += 1
        self._held.append((number, chunk))
        for stream, container, key in texts:
            if not container[key]:
                continue  # holds no part of a key
            places = self._open.setdefault(stream, [])
            places.append((number, container, key))
            pieces, settled = self._redactor.mask_pieces([place[name] for _, place, name in places])
            for (_, place, name), piece in zip(places, pieces):
                place[name] = piece
            del places[:settled]
            if not places:
                del self._open[stream]
        if len(self._held) > MAX_HELD_CHUNKS:  # memory stays bounded, whatever a server sends
            self.finish()
        waiting = min((places[0][0] for places in self._open.values()), default=self._count)
        while self._held and self._held[0][0] < waiting:
            self._write(self._held.pop(0)[1])

    def finish(self) -> None:
        """The stream has ended (or failed): what was held goes out; its open ends were not the key."""
        self._open.clear()
        while self._held:
            self._write(self._held.pop(0)[1])

    def _write(self, chunk) -> None:
        write_flushed(self._out, render_json(chunk, terminal=self._terminal) + "\n")


def _streamed_texts(chunk) -> list:
    """(which streamed text, the dict holding it, its key) for each string a chunk's choices
    carry: (choice, field) for a delta's fields, (choice, "tool_calls", call, field) for a
    tool call's function fields."""
    found: list = []
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    for position, choice in enumerate(choices if isinstance(choices, list) else ()):
        part = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(part, dict):
            continue
        index = choice_index(choice, position)
        for key, value in part.items():
            if isinstance(value, str):
                found.append(((index, key), part, key))
            elif key == "tool_calls" and isinstance(value, list):
                for place, call in enumerate(value):
                    function = call.get("function") if isinstance(call, dict) else None
                    if not isinstance(function, dict):
                        continue
                    number = call.get("index", place)
                    number = number if isinstance(number, (int, str)) else place
                    found += [
                        ((index, key, number, name), function, name)
                        for name, text in function.items()
                        if isinstance(text, str)
                    ]
    return found


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


def print_usage(usage: dict | None, note, result=None) -> None:
    """The usage line, with the cost when the model has a price (`result`: the request's
    RequestResult), through `note` (Streams.note: the one writer for diagnostics). A cache
    hit shows the usage its answer once had, and that this time nothing was spent."""
    cost = ""
    if result is not None and result.cache == "hit":
        cost = "; from the cache, nothing spent"
    elif result is not None and result.cost is not None:
        cost = f"; cost {render_cost(result.cost)}" + (f" {result.currency}" if result.currency else "")
    note(render_usage(usage) + cost + "\n")


class TextPrinter:
    """Collects an answer into a Reply as its deltas arrive, writing the text to stdout
    (unless `echo` is off: --json prints the objects instead) and, if asked, the
    reasoning to stderr. On a terminal (`out_terminal`, `err_terminal`) the server's
    control characters are made visible; elsewhere the text is written as it came.
    With `markdown` (markdown.py's writer_opener: live -> MarkdownWriter) the text is
    rendered: live as it streams, or whole when it is held to the end."""

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
        markdown: Callable | None = None,
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
        self._open_markdown = markdown if echo else None
        self._markdown = markdown(live=not hold) if self._open_markdown else None
        self._carriage_return = ""  # a CR that ended a chunk: its LF may come next (CRLF, not ^M)

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
            self._touch_terminal()
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
        if self._markdown is not None:
            self._markdown.write(self._markdown_text(text))
            self._out_ends_line = self._markdown.ends_line
        elif self._echo:
            self._out_ends_line = False  # a signal may land during the write: the line is then open
            write_flushed(self._out, neutralise(text) if self._out_terminal else text)
            self._out_ends_line = text.endswith("\n")

    def _markdown_text(self, text: str) -> str:
        """The text as the renderer gets it: escapes neutralised (as on a terminal, even in a
        pipe to `less -R`), and a CR at a chunk's end kept for the next, so that a CRLF split
        between two chunks is a line end whatever the chunk sizes."""
        text, self._carriage_return = self._carriage_return + text, ""
        if text.endswith("\r"):
            text, self._carriage_return = text[:-1], "\r"
        return neutralise(text)

    def _touch_terminal(self) -> None:
        """stderr is about to be written: on the terminal stdout shares, the rows move."""
        if self._markdown is not None and self._err_terminal:
            self._markdown.touched()

    def end_reasoning(self) -> None:
        if not self._err_ends_line:
            self._touch_terminal()
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
        if self._markdown is not None:
            if self._carriage_return:  # the answer ended on a CR: shown as any lone CR is
                self._markdown.write(neutralise(self._carriage_return))
                self._carriage_return = ""
            self._markdown.finish(cut=not complete)
            self._out_ends_line = self._markdown.ends_line
        if self._echo and (not self._out_ends_line or (complete and not self.reply.said and not calls)):
            write_flushed(self._out, "\n")
            self._out_ends_line = True

    def write_aside(self, text: str) -> None:
        """Text that came with tool calls: on stderr, its line ended."""
        if not text:
            return
        self.end_reasoning()
        self._touch_terminal()
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
            if self._open_markdown is not None and text:
                writer = self._open_markdown(live=False)  # known whole: rendered, never drawn raw first
                writer.write(neutralise(text))
                writer.finish()
                if not writer.ends_line:
                    write_flushed(self._out, "\n")
                continue
            if self._out_terminal:
                text = neutralise(text)
            write_flushed(self._out, text if text.endswith("\n") else text + "\n")
