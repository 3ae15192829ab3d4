"""Reading input with a bound: never more than a limit, whatever the file claims to be.

st_size says nothing for a device, a FIFO or /proc (0), and a sparse file says 2 GB it does
not hold; so a size is trusted only to refuse early, and every read stops one byte past its
limit. Each kind of input has its limit where it is read: the conversation or config file
here, a prompt on stdin in streams.py, a batch line in batch/jobs.py, an attachment in
attachments.py, api_key_command's output in keycommand.py.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from anyfast_cli.errors import UsageError

MIB = 1024 * 1024
# A conversation (`chat -f`, also from stdin) or config file. --save writes attachments as
# paths, so 16 MiB is some 4 million tokens of text, past any model's context; reading that
# much YAML takes about a second with libyaml (over ten in pure-Python PyYAML).
DOCUMENT_MAX_BYTES = 16 * MIB
CHUNK_BYTES = MIB  # one read: small enough to stop soon after a limit, large enough to be fast


class TooLarge(Exception):
    """The input holds more than its limit allows."""


def size_text(limit: int) -> str:
    """A limit as people read it: "16 MiB", "64 KiB"."""
    if limit >= MIB and limit % MIB == 0:
        return f"{limit // MIB} MiB"
    if limit >= 1024 and limit % 1024 == 0:
        return f"{limit // 1024} KiB"
    return f"{limit:,} bytes"


def read_limited(handle: BinaryIO, limit: int) -> bytes:
    """All of `handle`, or TooLarge as soon as it has given more than `limit` bytes."""
    chunks, total = [], 0
    while True:
        chunk = handle.read(min(CHUNK_BYTES, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise TooLarge


def read_file_limited(path: str, limit: int) -> tuple[bytes, os.stat_result]:
    """A file's bytes and what fstat says of the file read (its mode and owner), or TooLarge;
    OSError as open() and read() raise it. A regular file's size refuses it before reading;
    anything else (a device, a FIFO) is read up to the limit."""
    with open(path, "rb") as handle:
        info = os.fstat(handle.fileno())
        if stat.S_ISREG(info.st_mode) and info.st_size > limit:
            raise TooLarge
        return read_limited(handle, limit), info


def read_document(path: str, what: str, limit: int = DOCUMENT_MAX_BYTES) -> tuple[str, os.stat_result]:
    """A UTF-8 text file (a conversation or config file) within `limit`, and its fstat;
    UsageError naming the file (and the limit, or the line that is not UTF-8); OSError as it comes."""
    try:
        data, info = read_file_limited(path, limit)
    except TooLarge:
        raise UsageError(f"{path}: over the {size_text(limit)} limit for {what}") from None
    return decode_document(data, path), info


def read_text_file(path: str, what: str, label: str = "") -> str:
    """A file a flag names (`@FILE`, --prices, --tools, …), as read_document reads it; one
    that cannot be opened is a UsageError, "{label}cannot read {path}: {why}"."""
    try:
        text, _ = read_document(path, what)
    except OSError as exc:
        raise UsageError(f"{label}cannot read {path}: {exc.strerror or exc}") from None
    return text


def decode_document(data: bytes, source: str) -> str:
    """UTF-8 text; bytes that are not UTF-8 are a UsageError naming the line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UsageError(f"{source}:{line}: not UTF-8 text (byte {data[exc.start]:#04x})") from None
