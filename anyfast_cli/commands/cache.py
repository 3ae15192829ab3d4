"""`anyfast cache stats [DIR]` and `anyfast cache prune [DIR] --older-than DURATION`.

DIR defaults to the configured cache (--cache, ANYFAST_CACHE, the profile's cache). An
entry is a file and its age its modification time, as `find -mtime` sees it.
"""

from __future__ import annotations

import math
import os
import time

from anyfast_cli.cache import cache_stats, prune_cache
from anyfast_cli.commands.usage import duration_seconds
from anyfast_cli.errors import ExitCode, UsageError
from anyfast_cli.output import write_flushed
from anyfast_cli.result import rfc3339
from anyfast_cli.streams import Streams


def cache_directory(given: str | None, configured: str | None) -> str:
    directory = given or configured
    if not directory:
        raise UsageError("which cache? give DIR, or --cache DIR, ANYFAST_CACHE or cache: in the profile")
    if not os.path.isdir(directory):
        raise UsageError(f"no cache at {directory}: not a directory")
    return directory


def run_cache_stats(directory: str, *, streams: Streams) -> ExitCode:
    """One `name<TAB>value` line each: entries, bytes, oldest, newest (RFC 3339 UTC, or -)."""
    stats = _listed(cache_stats, directory)
    rows = [
        ("entries", str(stats.entries)),
        ("bytes", str(stats.bytes)),
        ("oldest", _moment(stats.oldest)),
        ("newest", _moment(stats.newest)),
    ]
    write_flushed(streams.stdout, "".join(f"{name}\t{value}\n" for name, value in rows))
    return ExitCode.OK


def run_cache_prune(directory: str, *, older_than: str, streams: Streams) -> ExitCode:
    seconds = duration_seconds(older_than)
    if seconds is None or math.isinf(seconds):
        raise UsageError(f"--older-than {older_than!r}: expected a duration such as 30d, 12h, 30m or 0s")
    removed = _listed(prune_cache, directory, seconds, time.time())
    noun = "entry" if removed.entries == 1 else "entries"
    write_flushed(streams.stdout, f"removed {removed.entries} {noun} ({removed.bytes} bytes) from {directory}\n")
    return ExitCode.OK


def _listed(action, directory: str, *args):
    try:
        return action(directory, *args)
    except OSError as exc:  # the cache itself unreadable (its permissions, a disk error)
        raise UsageError(f"cannot read the cache {directory}: {exc.strerror or exc}") from None


def _moment(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    try:
        return rfc3339(epoch)
    except (OverflowError, OSError, ValueError):  # a modification time no calendar holds (touch -d @1e20)
        return f"{epoch:.0f} (seconds since 1970)"
