"""The usage log: one JSON line per request, appended whole under a lock, and read back
line by line (by `anyfast usage`, and by budgets, which read only what was appended since
they last looked). Many processes may share one log: each append takes an exclusive
`flock` for the one write of its line, so lines never interleave or tear one another.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from anyfast_cli.errors import UsageError
from anyfast_cli.structured import json_writer

_write_json = json_writer()  # made once: json.dumps builds its encoder on every call
READ_BLOCK = 1024 * 1024
MAX_LINE_BYTES = 64 * 1024  # a usage line is ~400 bytes; a longer "line" is not one of ours
MAX_RECORDED = 10**15  # a cost or token count past this is not one anyfast wrote (result.MAX_TOKENS_COUNTED)


def _refuse(path: str, why: str) -> UsageError:
    return UsageError(f"usage log {path}: {why}", hint="--usage-log (ANYFAST_USAGE_LOG, usage_log) names a file")


class UsageLog:
    """A log opened for appending (created with mode 0600); opened before anything is sent,
    so a path that cannot be a log is exit 2 then, not after a request was paid for."""

    def __init__(self, path: str) -> None:
        self.path = path
        flags = os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._readable = True  # to see whether the last line has its newline
        self._end = -1  # where this process's last write ended
        try:
            try:
                self._fd = os.open(path, os.O_RDWR | flags, 0o600)
            except PermissionError:  # a log we may append to but not read: appended all the same
                self._fd = os.open(path, os.O_WRONLY | flags, 0o600)
                self._readable = False
        except IsADirectoryError:
            raise _refuse(path, "is a directory") from None
        except OSError as exc:
            raise _refuse(path, f"cannot be written: {exc.strerror or exc}") from None
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            os.close(self._fd)
            raise _refuse(path, "is not a regular file")

    def append(self, line: dict) -> None:
        self.append_all([line])

    def append_all(self, lines: list) -> None:
        """Lines, each whole, in one write under the lock. A line a killed writer left without
        its newline is ended first, so it spoils only itself, never the lines written after it."""
        data = "".join([_write_json(line) + "\n" for line in lines]).encode("utf-8")
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(self._fd).st_size
            # Unless the file still ends where this process's last write did (no one wrote since).
            if size and size != self._end and self._readable and os.pread(self._fd, 1, size - 1) != b"\n":
                data = b"\n" + data
            view = memoryview(data)
            while view:  # a regular file takes it in one write; a short write is finished, not lost
                view = view[os.write(self._fd, view) :]
            self._end = size + len(data)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


def parse_line(raw: bytes) -> dict | None:
    """A usage line, or None for one that cannot be read (torn, edited by hand, not ours)."""
    try:
        line = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return line if isinstance(line, dict) else None


def number(value) -> float:
    """A recorded cost or token count; null (or anything that is not a number from 0 to
    MAX_RECORDED) counts 0. JSON's 1e400 reads as infinity, as do Python's NaN and Infinity:
    summed, such a value would make every total infinite, or fail to become an int."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_RECORDED:
        return 0
    return value


@dataclass
class Skipped:
    """Lines that could not be read: how many, and the first one's place."""

    count: int = 0
    first: int | None = None

    def add(self, line_number: int) -> None:
        self.count += 1
        if self.first is None:
            self.first = line_number


def read_lines(path: str) -> Iterator[tuple[int, dict | None]]:
    """(line number, line) for every line of a log, streamed (flat memory whatever its
    length); the line is None when it cannot be read. Blank lines are passed over."""
    with open(path, "rb") as file:
        for line_number, raw in enumerate(file, 1):
            if raw.strip():
                yield line_number, parse_line(raw) if len(raw) <= MAX_LINE_BYTES else None


@dataclass
class LogTally:
    """What a shared log holds so far, kept current by reading only what others appended
    since the last look (`refresh`). A line still being written (no newline yet) waits.
    With a `currency`, a cost recorded in another currency is not added (it is counted in
    `foreign`): a USD budget is not spent by CNY amounts."""

    path: str
    currency: str | None = None
    cost: float = 0.0
    tokens: int = 0
    foreign: int = 0
    skipped: Skipped = field(default_factory=Skipped)
    _offset: int = 0
    _lines: int = 0

    def refresh(self) -> None:
        try:
            with open(self.path, "rb") as file:
                file.seek(self._offset)
                while True:
                    block = file.read(READ_BLOCK)
                    if not block:
                        break
                    end = block.rfind(b"\n")
                    if end < 0:
                        if len(block) > MAX_LINE_BYTES:  # no newline in sight: not a log line; skip it
                            self._offset += len(block)
                            self._lines += 1
                            self.skipped.add(self._lines)
                            continue
                        break
                    for raw in block[: end + 1].splitlines():
                        self._add(raw)
                    self._offset += end + 1
                    file.seek(self._offset)
        except FileNotFoundError:
            return  # not written yet: nothing spent
        except OSError as exc:
            raise _refuse(self.path, f"cannot be read: {exc.strerror or exc}") from None

    def _add(self, raw: bytes) -> None:
        self._lines += 1
        if not raw.strip():
            return
        line = parse_line(raw)
        if line is None:
            self.skipped.add(self._lines)
            return
        currency = line.get("currency")
        if self.currency is not None and isinstance(currency, str) and currency != self.currency:
            self.foreign += 1
        else:
            self.cost += number(line.get("cost"))
        self.tokens += int(number(line.get("total_tokens")))
