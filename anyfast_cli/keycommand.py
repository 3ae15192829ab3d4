"""Running the config's `api_key_command` (I/O): its output bounded, its time bounded,
and nothing it started left behind.

- stdout is the key: read up to KEY_COMMAND_MAX_BYTES (`cat /dev/zero` stops there).
- stderr is the user's: it goes to our stderr, so a password manager's prompt or message
  is seen, not swallowed.
- stdin is /dev/null: in `while read q; do anyfast complete -n …` our stdin is the loop's file.
- The command runs in a process group of its own, and when it runs out of time (or prints too
  much) the whole group is killed: a child it started cannot outlive it. At a terminal, that
  group is made the terminal's foreground group while it runs, as a shell does for a job, so
  a command that asks on /dev/tty (sudo, ssh, `read -s`) can still be answered; the terminal
  is handed back afterwards.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

from anyfast_cli.reading import size_text

KEY_COMMAND_TIMEOUT = 30.0  # seconds (a password manager may wait for a PIN)
# A key is one short line; `pass show` may add a few lines after it. 64 KiB is far past any
# real key command's output and small enough to hold.
KEY_COMMAND_MAX_BYTES = 64 * 1024
_POLL = 0.05  # seconds between checks that the command itself has ended


class KeyCommandFailed(Exception):
    """The command could not give a key: `reason` says why, in words for the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def run_key_command(
    command: str, *, timeout: float = KEY_COMMAND_TIMEOUT, max_bytes: int = KEY_COMMAND_MAX_BYTES
) -> tuple[bytes, int]:
    """(stdout, exit status) of `command` run by the shell; KeyCommandFailed past the time or
    size; KeyboardInterrupt when Ctrl-C at the terminal it was lent ended it."""
    deadline = time.monotonic() + timeout
    terminal = _foreground_terminal()
    group = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
    try:
        proc = subprocess.Popen(command, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, **group)
    except OSError as exc:
        if terminal is not None:
            os.close(terminal)
        raise KeyCommandFailed(f"could not be started: {exc.strerror or exc}") from None
    try:
        if terminal is not None:
            _set_foreground(terminal, proc.pid)
            # As `fg` does: had it read the terminal before it was its own (a race), it was stopped.
            _signal_group(proc.pid, signal.SIGCONT)
        output = _read_bounded(proc, deadline, max_bytes)
        try:
            status = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            output = None
        if output is None:
            raise KeyCommandFailed(f"took longer than {timeout:g} s")
        if status == -signal.SIGINT:  # Ctrl-C at its prompt reached it (it had the terminal), not us
            raise KeyboardInterrupt
        return output, status
    finally:
        if terminal is not None:
            _set_foreground(terminal, os.getpgrp())
            os.close(terminal)
        proc.stdout.close()
        if proc.poll() is None:  # ran out of time or printed too much: end it and all it started
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()


def _read_bounded(proc: subprocess.Popen, deadline: float, max_bytes: int) -> bytes | None:
    """stdout until it closes, or until the command has ended and nothing more is waiting
    (a child it left running may hold the pipe open); None when the deadline passes first."""
    fd = proc.stdout.fileno()
    output = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ended = proc.poll() is not None
        ready, _, _ = select.select([fd], [], [], 0 if ended else min(left, _POLL))
        if not ready:
            if ended:
                return bytes(output)
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return bytes(output)
        output += chunk
        if len(output) > max_bytes:
            raise KeyCommandFailed(
                f"printed over the {size_text(max_bytes)} limit for its output; it should print only the key"
            )


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def _foreground_terminal() -> int | None:
    """Our controlling terminal, open, when our process group is in its foreground (so we may
    lend it); None otherwise (no terminal, or we run in the background)."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return None
    try:
        if os.tcgetpgrp(fd) == os.getpgrp():
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _set_foreground(fd: int, pgid: int) -> None:
    """Make `pgid` the terminal's foreground group. Taking it back from the background needs
    SIGTTOU ignored for the moment, as shells do."""
    try:
        previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    except ValueError:  # not the main thread: leave the terminal as it is
        return
    try:
        os.tcsetpgrp(fd, pgid)
    except OSError:
        pass  # the command has already ended, or the terminal is gone
    finally:
        signal.signal(signal.SIGTTOU, previous)
