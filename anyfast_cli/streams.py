"""One object for stdin/stdout/stderr, their terminal flags and the environment.

Commands and printers take a Streams instead of touching `sys`, so tests can say
"stdout is a terminal" without a pseudo-terminal.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO, TextIO

from anyfast_cli.settings import color_allowed


@dataclass
class Streams:
    stdin: BinaryIO | None  # None when standard input is closed
    stdout: TextIO
    stderr: TextIO
    stdin_isatty: bool
    stdout_isatty: bool
    stderr_isatty: bool
    env: Mapping[str, str]

    @classmethod
    def from_sys(cls) -> "Streams":
        stdin = getattr(sys.stdin, "buffer", None)
        return cls(
            stdin=stdin,
            stdout=sys.stdout,
            stderr=sys.stderr,
            stdin_isatty=_isatty(sys.stdin),
            stdout_isatty=_isatty(sys.stdout),
            stderr_isatty=_isatty(sys.stderr),
            env=os.environ,
        )

    @property
    def stdout_color(self) -> bool:
        return self.stdout_isatty and color_allowed(self.env)

    @property
    def stderr_color(self) -> bool:
        return self.stderr_isatty and color_allowed(self.env)

    def read_stdin(self) -> str | None:
        """All of stdin when it is piped; None for a terminal or a closed stdin (never blocks on a tty)."""
        if self.stdin is None or self.stdin_isatty:
            return None
        try:
            data = self.stdin.read()
        except (OSError, ValueError):  # closed (`<&-`) or unreadable
            return None
        return data.decode("utf-8", "replace") if data else None

    def say(self, message: str) -> None:
        """A line for the person watching: progress, verbose details, session notes."""
        self.stderr.write(f"anyfast: {message}\n")
        self.stderr.flush()

    def warn(self, message: str) -> None:
        self.say(f"warning: {message}")

    def error(self, error) -> None:
        """An AnyfastError's one line (and hint), for a failure the program survives."""
        self.stderr.write(error.render())
        self.stderr.flush()


def _isatty(stream) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):
        return False
