"""The batch output file: one whole line per record, resumable after any crash.

Each result is written with a single write() on an unbuffered file, so `kill -9`
can at worst leave one torn last line; `--resume` drops it along with failed
records and ids that are no longer in the input, then the run appends the rest.
"""

from __future__ import annotations

import json
import os
from typing import TextIO

from anyfast_cli.errors import UsageError
from anyfast_cli.files import write_atomic_lines


def keep_answered(path: str, wanted_ids: set) -> set:
    """Rewrite `path` to hold only answered records whose ids are wanted (each once);
    return their ids. A missing file means nothing is answered yet."""
    kept: set = set()

    def answered_lines(handle):
        for raw in handle:
            try:
                result = json.loads(raw)
                record_id = result["custom_id"]
            except (ValueError, KeyError, TypeError):
                continue  # a torn or foreign line
            if result.get("error") is None and record_id in wanted_ids and record_id not in kept:
                kept.add(record_id)
                yield raw if raw.endswith(b"\n") else raw + b"\n"

    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return kept
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        try:
            write_atomic_lines(path, answered_lines(handle))
        except OSError as exc:
            raise UsageError(f"cannot rewrite {path}: {exc.strerror or exc}") from None
    return kept


class ResultSink:
    """Where result lines go: a file opened for appending (unbuffered), or stdout."""

    def __init__(self, path: str | None, stdout: TextIO, *, append: bool) -> None:
        self._stdout = stdout
        self._fd = None
        if path is not None:
            flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
            try:
                self._fd = os.open(path, flags, 0o666)
            except OSError as exc:  # before anything is sent: a usage error, not a crash
                raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None

    def write(self, result: dict) -> None:
        line = json.dumps(result, ensure_ascii=False, separators=(",", ":")) + "\n"
        if self._fd is None:
            self._stdout.write(line)
            self._stdout.flush()
            return
        data = line.encode("utf-8")
        while data:  # one write() in practice; the loop only covers a short write
            written = os.write(self._fd, data)
            data = data[written:]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
