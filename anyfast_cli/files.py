"""Writing files so that a crash never leaves half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable


def write_atomic(path: str, text: str) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`."""
    write_atomic_lines(path, [text.encode("utf-8")])


def write_atomic_lines(path: str, chunks: Iterable[bytes]) -> None:
    """Stream byte chunks into a temporary file beside `path`, then rename it over `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".anyfast-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.writelines(chunks)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.chmod(temporary, os.stat(path).st_mode & 0o777)  # keep the old file's permissions
        except FileNotFoundError:
            os.chmod(temporary, 0o666 & ~_current_umask())  # as open() would have made it
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
