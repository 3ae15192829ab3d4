"""-o/--output FILE for complete and chat: what stdout would get, held in a temporary file
beside FILE that replaces FILE (atomically, keeping its mode, as --save does: files.py) only
when the command ends with status 0 or 8. Any other ending, an error, Ctrl-C or SIGTERM
included, removes the temporary file and leaves FILE as it was, bytes, mode and time, and says
so on stderr: last night's good report survives tonight's failed run.

FILE may not be one of the command's inputs: writing it would destroy what the command reads
(or, for --save and the usage log, what it writes). Files are compared by device and inode,
so a link or another spelling of the same file is caught too.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from anyfast_cli.errors import ExitCode, OutputError, UsageError
from anyfast_cli.files import replacement_problem, replacing
from anyfast_cli.streams import SafeWriter, Streams

KEPT_STATUSES = (ExitCode.OK, ExitCode.TOOL_CALLS)  # an answer, or the tool calls it asked for
STDOUT = "-"  # -o - is standard output, as for curl


def check_output_target(output: str, inputs: Iterable[tuple[str, str]], stdin_fd: int | None) -> None:
    """Exit 2 unless -o FILE can be replaced and is none of `inputs` ((flag, path) pairs) nor
    the file standard input reads (`stdin_fd`, when the command reads it)."""
    problem = replacement_problem(output)
    if problem:
        raise UsageError(f"-o {output}: cannot write it: {problem}")
    target = _identity(output)
    for flag, path in inputs:
        if path is not None and path != STDOUT and _identity(path) == target:
            raise UsageError(
                f"-o {output} is the file {flag} names ({path}); writing it would destroy it",
                hint="write the output to another file",
            )
    if stdin_fd is not None and target[0] == "inode":
        try:
            info = os.fstat(stdin_fd)
        except OSError:
            return
        if stat.S_ISREG(info.st_mode) and ("inode", info.st_dev, info.st_ino) == target:
            raise UsageError(
                f"-o {output} is the file standard input reads; writing it would destroy the input",
                hint="write the output to another file",
            )


def _identity(path: str) -> tuple:
    """A file by device and inode; a file that does not exist yet (--save, the usage log, -o
    itself) by the path it would be created at."""
    try:
        info = os.stat(path)
    except OSError:
        return ("path", os.path.realpath(path))
    return ("inode", info.st_dev, info.st_ino)


@contextmanager
def said_unchanged_on_failure(output: str | None, streams: Streams) -> Iterator[None]:
    """Around the whole command: when it fails (an error, Ctrl-C, SIGTERM), stderr says -o FILE
    was not changed, whatever stage it failed at."""
    try:
        yield
    except BaseException:
        if output is not None and output != STDOUT:
            streams.say(f"{output} was not changed")
        raise


def run_with_output(output: str | None, streams: Streams, run: Callable[[Streams], ExitCode]) -> ExitCode:
    """Run the command with its stdout held for -o FILE (plain `run(streams)` without -o). The
    held text passes the same SafeWriter as stdout (the key masked); it is written as a file,
    never a terminal, so raw: no colour, no Markdown. An exception leaves FILE alone and
    propagates (said_unchanged_on_failure says so)."""
    if output is None or output == STDOUT:
        return run(streams)
    # --events would write NDJSON on stdout for a supervising program; -o with --events is exit 2
    # (contract §3 "Output file"). The check belongs beside check_output_target's, when it exists.
    started = False
    try:
        with replacing(output) as replacement:
            started = True
            handle = open(replacement.fd, "w", encoding="utf-8", newline="", closefd=False)
            writer = SafeWriter(handle, streams.redactor)
            try:
                code = run(dataclasses.replace(streams, stdout=writer, stdout_isatty=False, stdout_is_file=True))
                if code in KEPT_STATUSES:
                    _keep(writer, handle, replacement, output)
                    return code
            finally:
                _close_quietly(handle)
    except OSError as exc:
        if started:
            raise
        raise UsageError(f"-o {output}: cannot write it: {exc.strerror or exc}") from None  # nothing was run
    streams.say(f"{output} was not changed (exit status {int(code)})")
    return code


def _keep(writer: SafeWriter, handle, replacement, output: str) -> None:
    """The held output replaces FILE: flushed (what the key mask held back included), then renamed."""
    try:
        writer.finish()
        handle.close()
        replacement.commit()
    except OSError as exc:
        raise OutputError(f"cannot write the output to {output}: {exc.strerror or exc}") from None


def _close_quietly(handle) -> None:
    """Close the text layer over the temporary file's descriptor (flushing into the file that is
    about to be removed, if it is); the descriptor itself is closed by commit() or discard()."""
    try:
        handle.close()
    except (OSError, ValueError):
        pass
