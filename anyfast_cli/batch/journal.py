"""The batch output file: one whole line per record, resumable after any crash.

Each result is written with a single write() on an unbuffered file, so `kill -9`
can at worst leave one torn last line; `--resume` drops it along with failed
records and ids that are no longer in the input, then the run appends the rest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TextIO

from anyfast_cli.errors import OutputError, UsageError
from anyfast_cli.files import write_atomic_lines
from anyfast_cli.output import write_flushed


def keep_answered(path: str, wanted: Mapping[str, str]) -> set:
    """Rewrite `path` to hold only the answered records still wanted, each once, and
    return their ids. `wanted` maps each input id to its request's fingerprint: an
    answer to a request that has since changed is dropped and run again. A missing
    file means nothing is answered yet; a file that is not batch output is refused."""
    kept: set = set()

    def answered_lines(handle):
        for line_no, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                result = json.loads(raw)
                record_id = result["custom_id"]
                is_result = "response" in result or "error" in result
            except (ValueError, KeyError, TypeError):
                is_result = False
            if not is_result:
                if raw.endswith(b"\n"):
                    raise UsageError(f"{path} does not look like anyfast batch output (line {line_no}); not resuming into it")
                continue  # the torn last line of a run that was killed
            fingerprint = wanted.get(record_id)
            answered = result.get("error") is None and fingerprint is not None and result.get("id") == f"batch_req_{fingerprint}"
            if answered and record_id not in kept:
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
        self._path = path
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
            write_flushed(self._stdout, line)
            return
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
