"""Writing files so that a crash never leaves half of one, and a save never turns the
user's link, device or file into something else.

A file is replaced atomically: written to a temporary file beside it, then renamed over
it. A symlink's target is what gets replaced (the link stays), with the old file's mode and
owner; a target that is not a regular file (a directory, a device such as /dev/stdout, a
FIFO) is refused, as is a place where the rename cannot happen. `replacement_problem` finds
all of that before a request is paid for; `write_atomic_lines` checks the file type again.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

# /dev/stdout, /dev/fd/3, /proc/self/fd/1: paths that stand for an open stream, not for a file.
DESCRIPTOR_PATH = re.compile(r"/dev/std(?:in|out|err)|/(?:dev|proc/(?:self|thread-self|\d+))/fd/\d+")
MAX_LINK_HOPS = 40  # as the kernel's own limit on following symlinks (ELOOP)
TEMPORARY_PREFIX = ".anyfast-"
TEMPORARY_SUFFIX = ".tmp"
# Signals held back while a temporary file is created, so that no signal can land between its
# creation and the `try` that removes it (SIGTERM and SIGHUP raise as Ctrl-C does: cli.py).
DEFERRED_SIGNALS = frozenset(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def write_atomic(path: str, text: str) -> None:
    """Write `text` as UTF-8 to a temporary file beside `path`'s file, then rename it over that file."""
    write_atomic_lines(path, [text.encode("utf-8")])


def write_atomic_lines(path: str, chunks: Iterable[bytes], *, hold: bool = False) -> int | None:
    """Stream byte chunks into a temporary file beside the file `path` names (a symlink's
    target: the link stays), then rename it over that file, keeping its mode and owner.

    With hold=True the new file is returned open (for appending) and locked with flock,
    locked before it takes the name, so no other process ever finds it unlocked there
    (batch --resume). Raises OSError; for a target that is not a regular file, before
    anything is written."""
    with replacing(path) as replacement:
        with open(replacement.fd, "wb", closefd=False) as handle:
            handle.writelines(chunks)
        return replacement.commit(hold=hold)


class Replacement:
    """A temporary file beside the file it is to replace (`target`), open as `fd`, until
    commit() renames it over the target; see `replacing`."""

    def __init__(self, fd: int, temporary: str, target: str, existing: os.stat_result | None) -> None:
        self.fd = fd
        self.temporary = temporary
        self.target = target
        self._existing = existing
        self.committed = False

    def commit(self, *, hold: bool = False) -> int | None:
        """Flush it to disk, give it the target's mode and owner, and rename it over the target.
        With hold=True it stays open, locked and appending, and its descriptor is returned."""
        os.fsync(self.fd)
        _take_mode_and_owner(self.fd, self._existing)
        if hold:
            lock_file(self.fd)  # a fresh file: nobody else can hold it yet
            _append_only(self.fd)
        os.replace(self.temporary, self.target)
        self.committed = True
        if hold:
            return self.fd
        os.close(self.fd)
        return None

    def discard(self) -> None:
        """Close and remove the temporary file; the target was never touched."""
        with _signals_deferred():  # a second Ctrl-C must not leave the file behind
            try:
                os.close(self.fd)
            except OSError:
                pass
            try:
                os.unlink(self.temporary)
            except FileNotFoundError:
                pass


@contextmanager
def replacing(path: str) -> Iterator[Replacement]:
    """A Replacement for the file `path` names (a symlink's target): written through its `fd`,
    it replaces that file only when commit() is called; leaving the block otherwise, by an
    exception or a signal included, removes it. Raises OSError; for a target that is not a
    regular file, before anything is created."""
    target = resolve_target(path)
    existing = _stat_or_none(target)
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        raise OSError(errno.EINVAL, not_regular(existing.st_mode))
    with _signals_deferred() as release:
        fd, temporary = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, suffix=TEMPORARY_SUFFIX, dir=os.path.dirname(target))
        replacement = Replacement(fd, temporary, target, existing)
        try:
            release()  # a signal held back until now is raised here, where the file is removed
            yield replacement
        finally:
            if not replacement.committed:
                replacement.discard()


def replacement_problem(path: str, *, euid: int | None = None) -> str | None:
    """Why `path` could not be replaced atomically, or None: checked before a request is
    paid for (--save), so that the answer is not lost after it. Finds a target that is not
    a regular file, a file that is not writable, a directory where no temporary file can be
    made (missing, read-only, full of someone else's rules), and a sticky directory (as
    /tmp is) holding another user's file, which cannot be renamed over. `euid`: whose save
    this is (default: this process's effective user)."""
    try:
        target = resolve_target(path)
        existing = _stat_or_none(target)
    except OSError as exc:  # a symlink loop, a path through a file, no permission to look
        return exc.strerror or str(exc)
    directory = os.path.dirname(target)
    if existing is not None:
        if not stat.S_ISREG(existing.st_mode):
            return not_regular(existing.st_mode)
        if not os.access(target, os.W_OK):
            return "the file is not writable"
    if not os.path.isdir(directory):
        return "its directory does not exist"
    try:
        with _signals_deferred():
            fd, trial = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, suffix=TEMPORARY_SUFFIX, dir=directory)
            os.close(fd)
            os.unlink(trial)
    except OSError as exc:
        return f"cannot create a file in {directory}: {exc.strerror or exc}"
    if existing is not None and _sticky_forbids_rename(directory, existing, os.geteuid() if euid is None else euid):
        return f"{directory} is a sticky directory and the file belongs to another user, so it cannot be replaced"
    return None


def names_descriptor(path: str) -> bool:
    """Whether `path`, or a symlink on the way to its file, names an open file descriptor
    (/dev/stdout, /dev/fd/N, /proc/self/fd/N): a stream such as a shell's redirection."""
    hop = os.path.abspath(path)
    for _ in range(MAX_LINK_HOPS):
        if DESCRIPTOR_PATH.fullmatch(hop):
            return True
        if not os.path.islink(hop):
            return False
        hop = os.path.normpath(os.path.join(os.path.dirname(hop), os.readlink(hop)))
    return False


def resolve_target(path: str) -> str:
    """The file that writing `path` replaces: a symlink's target, so the link stays. A path
    naming a file descriptor is refused: replacing the file behind `> out.yaml` would leave
    the stream writing to a file that no longer has a name."""
    if names_descriptor(path):
        raise OSError(errno.EINVAL, "it names an open stream (such as standard output), not a file")
    return os.path.realpath(path)


def not_regular(mode: int) -> str:
    """What a target that is not a regular file is, in a few words."""
    if stat.S_ISDIR(mode):
        return "it is a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "it is a device, not a regular file"
    if stat.S_ISFIFO(mode):
        return "it is a FIFO (named pipe), not a regular file"
    return "it is not a regular file"


def lock_file(fd: int) -> bool:
    """An exclusive flock on `fd`, without waiting: False when another process holds one.
    Where the file system cannot lock (some network file systems), the file goes unlocked."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK, EOPNOTSUPP: no locks here; better unlocked than unusable
        return True
    return True


def _stat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _take_mode_and_owner(fd: int, existing: os.stat_result | None) -> None:
    """The replaced file's permissions and, where we may set them, its owner and group;
    a new file gets what open() would have given it."""
    if existing is None:
        os.fchmod(fd, 0o666 & ~_current_umask())
        return
    mine = os.fstat(fd)
    if (mine.st_uid, mine.st_gid) != (existing.st_uid, existing.st_gid):
        try:
            os.fchown(fd, existing.st_uid, existing.st_gid)  # root can; so can the owner for a group of theirs
        except PermissionError:
            try:
                os.fchown(fd, -1, existing.st_gid)
            except PermissionError:
                pass  # another user's group-writable file: it becomes ours, as any editor's save would make it
    os.fchmod(fd, stat.S_IMODE(existing.st_mode) & 0o777)  # after chown, which may clear set-id bits anyway


def _append_only(fd: int) -> None:
    import fcntl

    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)


def _sticky_forbids_rename(directory: str, existing: os.stat_result, me: int) -> bool:
    """In a sticky directory only the file's owner, the directory's owner or root may replace it."""
    try:
        folder = os.stat(directory)
    except OSError:
        return False
    return bool(folder.st_mode & stat.S_ISVTX) and me != 0 and me not in (existing.st_uid, folder.st_uid)


@contextmanager
def _signals_deferred() -> Iterator:
    """Hold SIGINT/SIGTERM/SIGHUP back until `release()` is called (or the block ends)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield lambda: None
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, DEFERRED_SIGNALS)
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a pending handler runs (and may raise) here

    try:
        yield release
    finally:
        release()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
