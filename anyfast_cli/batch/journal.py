"""The batch output file: one whole line per record, resumable after any crash, one batch at a time.

Each result is written with a single write() on an unbuffered file, so `kill -9`
can at worst leave one torn last line; `--resume` drops it along with failed
records and ids that are no longer in the input, then the run appends the rest.

The file is locked (flock) from before the --resume rewrite to the end of the run, so a
second batch on the same output stops with an error before it sends anything, instead of
both sending every record and then duplicating or losing answers. The rewrite replaces the
file (files.py: a temporary file renamed over it) and the new file is locked before it
takes the name, so the lock is never let go; a batch that opened the old file finds that
the name has moved on and looks again.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TextIO

from anyfast_cli.errors import OutputError, UsageError
from anyfast_cli.files import lock_file, names_descriptor, write_atomic_lines
from anyfast_cli.output import render_json, write_flushed

MAX_LOCK_TRIES = 10  # opens of a file that was replaced again between open and lock each time: then give up
DROPPED_SUFFIX = ".dropped"  # answers --resume takes out of FILE are kept in FILE.dropped


@dataclass
class Resumed:
    """What --resume found in the output file."""

    kept: set = field(default_factory=set)  # ids whose answer stays (each once)
    gone: int = 0  # answers to ids that are not among this run's records
    changed: int = 0  # answers to a request that has changed since (the record is sent again)
    dropped_to: str | None = None  # where the dropped answers were kept

    @property
    def dropped(self) -> int:
        return self.gone + self.changed


def _answered_lines(handle, path: str, wanted: Mapping[str, str], resumed: Resumed, drop=None) -> Iterator[bytes]:
    """The lines of `handle` (batch output) that answer a wanted record, each id once.
    `wanted` maps each input id to its request's fingerprint: an answer to a request that
    has since changed is dropped and run again. Failed records and a torn last line are left
    out; answers dropped are counted in `resumed` and handed to `drop`. A file that is not
    batch output is refused."""
    for line_no, raw in enumerate(handle, 1):
        if not raw.strip():
            continue
        try:
            result = json.loads(raw)
            record_id = result["custom_id"]
            is_result = "response" in result or "error" in result
        except (ValueError, KeyError, TypeError, RecursionError):
            is_result = False
        if not is_result:
            if raw.endswith(b"\n"):
                raise UsageError(
                    f"{path} does not look like anyfast batch output (line {line_no}); not resuming into it"
                )
            continue  # the torn last line of a run that was killed
        if result.get("error") is not None:
            continue  # failed: run again
        line = raw if raw.endswith(b"\n") else raw + b"\n"
        fingerprint = wanted.get(record_id) if isinstance(record_id, str) else None
        if fingerprint is None or result.get("id") != f"batch_req_{fingerprint}":
            if fingerprint is None:
                resumed.gone += 1
            else:
                resumed.changed += 1
            if drop is not None:
                drop(line)
            continue
        if record_id not in resumed.kept:  # a second answer to the same record adds nothing
            resumed.kept.add(record_id)
            yield line


def read_answered(path: str, wanted: Mapping[str, str]) -> Resumed:
    """What --resume would keep and drop, without changing the file (for --dry-run)."""
    resumed = Resumed()
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return resumed
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        for _ in _answered_lines(handle, path, wanted, resumed):
            pass
    return resumed


def open_locked(path: str, *, append: bool) -> int:
    """`path` opened for appending and, when it is a regular file, locked for this run;
    emptied unless `append` (only once locked: another batch's output is never truncated).
    A file another batch holds is a UsageError, raised before anything is sent."""
    for _ in range(MAX_LOCK_TRIES):
        try:
            # Read access too when resuming: the answers already there are read through this file.
            fd = os.open(path, (os.O_RDWR if append else os.O_WRONLY) | os.O_CREAT | os.O_APPEND, 0o666)
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or names_descriptor(path):
            # /dev/null, a FIFO, /dev/stdout (even `>> log`, which must not be emptied): a stream, not our file
            return fd
        if not lock_file(fd):
            os.close(fd)
            raise UsageError(
                f"{path} is in use: another anyfast batch is writing to it",
                hint="wait for that batch to finish, or give this one another -o FILE",
            )
        try:
            current = os.stat(path)
        except OSError:
            current = None
        if current is not None and (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
            if not append:
                os.ftruncate(fd, 0)
            return fd
        os.close(fd)  # replaced by another batch's --resume between our open and our lock: look again
    raise UsageError(f"cannot lock {path}: it keeps being replaced by another process")


def keep_answered(path: str, wanted: Mapping[str, str]) -> set:
    """Rewrite `path` to hold only the answered records still wanted, each once, and return
    their ids (ResultSink.resume, for a file no run appends to now). A missing file means
    nothing is answered yet, and stays missing."""
    if not os.path.lexists(path):
        return set()
    sink = ResultSink(path, None, append=True)
    try:
        return sink.resume(wanted).kept
    finally:
        sink.close()


class ResultSink:
    """Where result lines go: a file opened for appending (unbuffered) and locked, or stdout."""

    def __init__(self, path: str | None, stdout: TextIO, *, append: bool) -> None:
        self._stdout = stdout
        self._redactor = getattr(stdout, "redactor", None)  # stdout's own writes pass it already
        self._path = path
        self._fd = None
        if path is not None:
            self._fd = open_locked(path, append=append)  # before anything is sent: a usage error, not a crash

    def holds_data(self) -> bool:
        """Whether the file already holds something (--dry-run never writes over it)."""
        if self._fd is None:
            return False
        info = os.fstat(self._fd)
        return stat.S_ISREG(info.st_mode) and info.st_size > 0

    def resume(self, wanted: Mapping[str, str]) -> Resumed:
        """--resume: rewrite the file to hold only the answers still wanted, each once (see
        `_answered_lines`), and go on appending to the new file, locked all along. Answers
        that are dropped are appended to FILE.dropped, so none that was paid for is lost."""
        resumed = Resumed()
        if not self.holds_data():
            return resumed  # a new or empty file: nothing to keep, nothing to rewrite
        dropped = _DroppedAnswers(self._path + DROPPED_SUFFIX)
        try:
            with os.fdopen(os.dup(self._fd), "rb") as handle:  # the locked file itself, not whatever the name holds now
                handle.seek(0)
                try:
                    fd = write_atomic_lines(
                        self._path, _answered_lines(handle, self._path, wanted, resumed, dropped.add), hold=True
                    )
                except OSError as exc:
                    raise UsageError(f"cannot rewrite {self._path}: {exc.strerror or exc}") from None
        finally:
            dropped.close()
        os.close(self._fd)  # the old file, now nameless: its lock goes with it
        self._fd = fd
        resumed.dropped_to = dropped.path if dropped.count else None
        return resumed

    def write(self, result: dict) -> None:
        """One whole line. Like every string bound for output, it passes the redactor of the
        streams' stdout (the key masked, answers echoing it included), and surrogate halves
        are written as JSON escapes (render_json), so no answer can fail the write."""
        line = render_json(result) + "\n"
        if self._fd is None:
            write_flushed(self._stdout, line)  # masked by stdout itself (streams.SafeWriter)
            return
        if self._redactor:
            line = self._redactor.mask(line)
        data = line.encode("utf-8")
        try:
            while data:  # one write() in practice; the loop only covers a short write
                written = os.write(self._fd, data)
                data = data[written:]
        except OSError as exc:
            raise OutputError(f"cannot write {self._path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _DroppedAnswers:
    """FILE.dropped: the answers --resume takes out of FILE, appended; made only when there are some."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0
        self._fd = None

    def add(self, line: bytes) -> None:
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
            while line:
                line = line[os.write(self._fd, line) :]
        except OSError as exc:  # the results file is left as it was
            raise UsageError(
                f"cannot keep the answers --resume would drop in {self.path}: {exc.strerror or exc}; "
                "nothing was changed"
            ) from None
        self.count += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
