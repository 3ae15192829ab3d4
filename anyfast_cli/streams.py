"""One object for stdin/stdout/stderr, their terminal flags and the environment.

Commands and printers take a Streams instead of touching `sys`, so tests can say
"stdout is a terminal" without a pseudo-terminal.

Every string bound for stdout or stderr passes through a SafeWriter (`from_sys` wraps
both): the API key is masked there (`hide` it once it is known; batch's ResultSink masks
its file with the same Redactor), a lone UTF-16 surrogate half becomes U+FFFD, and a
character the stream's encoding cannot hold is written as a `\\uXXXX` escape. Diagnostics
(`say`, `warn`, `error`, `note`: messages, -v lines, anything a server said in them) also
have their control characters made visible, whatever stderr is (text.neutralise).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

from anyfast_cli.errors import UsageError
from anyfast_cli.events import Observer
from anyfast_cli.reading import MIB, TooLarge, read_limited, size_text
from anyfast_cli.settings import color_allowed
from anyfast_cli.text import escape_unencodable, fix_surrogates, neutralise

# A prompt piped to complete or chat: 16 MiB is some 4 million tokens, past any model's
# context, and far below what would strain memory; `< /dev/zero` stops here.
STDIN_PROMPT_MAX_BYTES = 16 * MIB

MASK = "***"
# A key shorter than this is not masked: masking a 3-letter "key" would mangle every answer
# that happens to contain those letters, and no real key is that short (sk-… keys are 40+).
MIN_SECRET_CHARS = 8


def _holds_nothing(text: str) -> bool:
    return False


class Redactor:
    """The secrets masked in everything written out (the API key, as it is and as it
    appears inside JSON text). Empty until the key is known."""

    def __init__(self) -> None:
        self._forms: list[str] = []
        self.may_hold = _holds_nothing

    def hide(self, secret: str | None) -> None:
        secret = (secret or "").strip()
        if len(secret) < MIN_SECRET_CHARS:
            return
        for form in (secret, json.dumps(secret)[1:-1]):
            if form not in self._forms:
                self._forms.append(form)
        self._forms.sort(key=len, reverse=True)
        # may_hold(text): whether `text` may hold a form, or the start of one, told by a search
        # for any form's first character, in C (every streamed delta is asked; few hold one).
        firsts = sorted({form[0] for form in self._forms})
        self.may_hold = re.compile("[" + "".join(map(re.escape, firsts)) + "]").search

    def __bool__(self) -> bool:
        return bool(self._forms)

    def mask(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def holds_part(self, text: str) -> bool:
        """Whether `text` holds a secret, or ends in what may be the start of one: a piece that
        mask_pieces must see. Cheap when it does not (a few searches per form, in C)."""
        for form in self._forms:
            if form in text:
                return True
            start = text.find(form[0], max(0, len(text) - len(form) + 1))
            while start != -1:
                if form.startswith(text[start:]):
                    return True
                start = text.find(form[0], start + 1)
        return False

    def mask_pieces(self, pieces: list[str]) -> tuple[list[str], int]:
        """Pieces of one text that arrive apart (a streamed field in successive chunk objects,
        each written as a line of its own), masked as their joined text would be: a secret is
        replaced where it starts and taken out of the pieces it runs on into, so the pieces
        still join to the masked text. Also returns how many leading pieces are settled: the
        rest end in what may be the start of a secret and must wait for the next piece."""
        text = "".join(pieces)
        spans = []  # (start, end) of each secret in `text`, left to right
        position = 0
        while True:
            hits = [(at, -len(form)) for form in self._forms if (at := text.find(form, position)) != -1]
            if not hits:
                break
            at, minus_length = min(hits)  # the leftmost, and of those the longest form
            spans.append((at, at - minus_length))
            position = at - minus_length
        open_at = position + len(self.split_tail(text[position:])[0])  # where a possible secret begins
        masked, settled, start = [], len(pieces), 0
        for number, piece in enumerate(pieces):
            end = start + len(piece)
            if end > open_at and settled == len(pieces):
                settled = number
            if spans:
                kept, cursor = [], start
                for at, stop in spans:
                    if stop <= cursor or at >= end:
                        continue
                    kept.append(text[cursor:at])  # empty when the secret began in an earlier piece
                    if at >= start:
                        kept.append(MASK)
                    cursor = min(stop, end)
                kept.append(text[cursor:end])
                piece = "".join(kept)
            masked.append(piece)
            start = end
        return masked, settled

    def split_tail(self, text: str) -> tuple[str, str]:
        """(what may be written now, the end of `text` that could be the start of a secret).
        A streamed answer that echoes the key brings it in pieces; the tail waits for the next."""
        cut = len(text)
        for form in self._forms:
            start = text.find(form[0], max(0, len(text) - len(form) + 1))
            while start != -1 and start < cut:
                if form.startswith(text[start:]):
                    cut = start
                    break
                start = text.find(form[0], start + 1)
        return text[:cut], text[cut:]


class SafeWriter:
    """A text stream that every write to stdout or stderr goes through: the key masked,
    surrogate halves replaced, characters the encoding lacks escaped. Never a crash on output."""

    def __init__(self, raw: TextIO, redactor: Redactor) -> None:
        self.raw = raw
        self.redactor = redactor
        self._held = ""  # the end of the last write, if it may be the start of the key
        self.flush = raw.flush  # the stream's own: a flush after every streamed delta costs no call of ours

    @property
    def encoding(self) -> str:
        return getattr(self.raw, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        size = len(text)
        if self._held or self.redactor.may_hold(text):
            text, self._held = self.redactor.split_tail(self.redactor.mask(self._held + text))
            if not text:
                return size
        if text.isascii():
            self.raw.write(text)
            return size
        text = fix_surrogates(text)
        try:
            self.raw.write(text)  # a TextIOWrapper encodes all of it before it writes any of it
        except UnicodeEncodeError:
            self.raw.write(escape_unencodable(text, self.encoding))
        return size

    def finish(self) -> None:
        """Write what was held back (it was not the key) and flush."""
        held, self._held = self._held, ""
        if held:
            self.raw.write(held)
        self.raw.flush()

    def isatty(self) -> bool:
        return _isatty(self.raw)

    def fileno(self) -> int:
        return self.raw.fileno()


@dataclass
class Streams:
    stdin: BinaryIO | None  # None when standard input is closed
    stdout: TextIO
    stderr: TextIO
    stdin_isatty: bool
    stdout_isatty: bool
    stderr_isatty: bool
    env: Mapping[str, str]
    redactor: Redactor = field(default_factory=Redactor)
    stdout_is_file: bool = False  # -o FILE holds stdout: raw text always, whatever --markdown says
    # Where warnings, retries and -v details are told (events.py): prose on stderr, and with
    # --events also JSON lines on stdout. The commands set its verbosity and its event lines.
    # A copy (dataclasses.replace, as -o makes one with stdout held) shares its original's.
    observer: Observer | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.observer is None:
            self.observer = Observer(self.say)

    @classmethod
    def from_sys(cls) -> "Streams":
        stdin = getattr(sys.stdin, "buffer", None)
        redactor = Redactor()
        return cls(
            stdin=stdin,
            stdout=SafeWriter(sys.stdout, redactor),
            stderr=SafeWriter(sys.stderr, redactor),
            stdin_isatty=_isatty(sys.stdin),
            stdout_isatty=_isatty(sys.stdout),
            stderr_isatty=_isatty(sys.stderr),
            env=os.environ,
            redactor=redactor,
        )

    def hide(self, secret: str | None) -> None:
        """Mask `secret` (the API key) in everything written from now on."""
        self.redactor.hide(secret)

    def finish(self) -> None:
        """The program is ending: write out what the writers held back."""
        for stream in (self.stdout, self.stderr):
            try:
                if isinstance(stream, SafeWriter):
                    stream.finish()
                else:
                    stream.flush()
            except (OSError, ValueError):
                pass  # a closed or broken stream: nothing more can be said on it

    @property
    def stdout_color(self) -> bool:
        return self.stdout_isatty and color_allowed(self.env)

    @property
    def stderr_color(self) -> bool:
        return self.stderr_isatty and color_allowed(self.env)

    def read_stdin(self, limit: int = STDIN_PROMPT_MAX_BYTES, what: str = "a prompt") -> str | None:
        """All of stdin when it is piped; None for a terminal or a closed stdin (never blocks on a tty).
        Past `limit` bytes (`< /dev/zero`, an endless pipe) a UsageError, without reading the rest."""
        data = self.read_stdin_bytes(limit, what)
        return data.decode("utf-8", "replace") if data else None

    def read_stdin_bytes(self, limit: int, what: str) -> bytes | None:
        """read_stdin's bytes, as they came (for `-a -`, which types them by content); b"" when empty."""
        if self.stdin is None or self.stdin_isatty:
            return None
        try:
            return read_limited(self.stdin, limit)
        except TooLarge:
            raise UsageError(f"standard input is over the {size_text(limit)} limit for {what}") from None
        except (OSError, ValueError):  # closed (`<&-`) or unreadable
            return None

    def note(self, text: str) -> None:
        """Diagnostic text on stderr, the one way it gets there: control characters made
        visible whatever stderr is (a server's words may carry escape sequences), the key masked."""
        self.stderr.write(neutralise(text))
        self.stderr.flush()

    def say(self, message: str) -> None:
        """A line for the person watching: progress, verbose details, session notes."""
        self.note(f"anyfast: {message}\n")

    def warn(self, message: str) -> None:
        self.observer.warning(message)  # "anyfast: warning: …", and with --events a `warning` event

    def error(self, error) -> None:
        """An AnyfastError's one line (and hint), for a failure the program survives."""
        self.note(error.render())


def _isatty(stream) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):
        return False
