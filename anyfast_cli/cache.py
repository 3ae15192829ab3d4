"""The response cache (§3 "Cache"): one file per answer, named by the request it answers.

The key is a pure function of the request as sent (`cache_key`), so a user can reproduce it.
An entry holds the whole response object (a streamed answer assembled into that shape,
assembly.py): every choice's text, reasoning and tool calls, the finish reasons and the
usage, which is all any output mode needs to answer again as a fresh answer would. No header
and no key: the request is not stored, and the key is masked in the answer as everywhere.

An entry is written to a temporary file in its own directory and renamed into place, so a
reader sees a whole entry or none, whatever concurrent writers and `kill -9` do; anything
at an entry's path that is not a whole, valid, complete entry is a miss (and a store
replaces it). Layout: DIR/ab/abcdef….json, the key's first two hex digits fanning the
entries out as git's objects are; directories 0700, entries 0600. An entry's age is its
modification time, which `find`, `rsync` and CI caches see too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from anyfast_cli.errors import NotInCacheError, UsageError
from anyfast_cli.exchange import MAX_BODY_BYTES, MAX_NESTING, answer_problem, nested_deeper

ENTRY_FORMAT = 1  # an entry of another format (an older or newer anyfast's) is a miss
LEFT_OUT_OF_KEY = ("stream", "stream_options")  # how an answer travels, not what was asked
# An entry is a whole answer (at most MAX_BODY_BYTES, as received) in a small wrapper.
MAX_ENTRY_BYTES = MAX_BODY_BYTES + 64 * 1024
TEMP_PREFIX = ".tmp-"  # a write in progress, or one that kill -9 cut short: never read
ENTRY_NAME = re.compile(r"[0-9a-f]{64}\.json")
FAN_OUT_NAME = re.compile(r"[0-9a-f]{2}")
PROMPT_WORDS = 8  # of the prompt, in the error that names a request not in the cache
PROMPT_CHARS = 60


def request_text(base_url: str, body: dict) -> str:
    """What the key hashes: the base URL (as configured, no trailing slash), a newline, and the
    body as compact JSON with keys sorted, non-ASCII as it is, `stream` and `stream_options`
    left out (README.md, "Cache and offline rehearsal", shows this in a line of Python)."""
    kept = {name: value for name, value in body.items() if name not in LEFT_OUT_OF_KEY}
    return base_url.rstrip("/") + "\n" + json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cache_key(base_url: str, body: dict) -> str:
    """The entry's name: SHA-256 (hex) of request_text, UTF-8."""
    return hashlib.sha256(request_text(base_url, body).encode("utf-8", "surrogatepass")).hexdigest()


def is_complete(response) -> bool:
    """Whether an answer may be stored: it has choices, and every one has its finish_reason."""
    choices = response.get("choices") if isinstance(response, dict) else None
    return bool(choices) and all(isinstance(c, dict) and c.get("finish_reason") for c in choices)


class CorruptEntry(Exception):
    """What is at an entry's path is not a whole, valid entry (the reason is the message)."""


def parse_entry(data: bytes, key: str) -> dict:
    """The response an entry's bytes hold, or CorruptEntry."""
    try:
        entry = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise CorruptEntry("not JSON (cut short?)") from None
    if not isinstance(entry, dict) or entry.get("anyfast_cache") != ENTRY_FORMAT:
        raise CorruptEntry(f"not an anyfast cache entry of format {ENTRY_FORMAT}")
    if entry.get("digest") != key:
        raise CorruptEntry("it names another request (a file renamed or copied?)")
    response = entry.get("response")
    brackets = data.count(b"[") + data.count(b"{")  # too few to nest too deep: no walk (as read_answer does)
    if (brackets > MAX_NESTING and nested_deeper(response, MAX_NESTING)) or answer_problem(response) is not None:
        raise CorruptEntry("its response is not a chat completion")
    if not is_complete(response):
        raise CorruptEntry("its answer is not complete")
    return response


@dataclass(frozen=True)
class Hit:
    response: dict
    path: str
    stored: float  # the entry's modification time


class ResponseCache:
    """Entries in `directory`, used as `mode` says: rw (use a hit, store a miss), refresh
    (never use, always store), replay (hits only: nothing is sent, so nothing stored).
    Reading and storing never fail a command: an entry that cannot be read is a miss, one that
    cannot be written a warning (the first of each kind, through `warn`)."""

    def __init__(self, directory: str, mode: str = "rw", *, warn: Callable[[str], None] | None = None) -> None:
        self.directory = directory
        self.mode = mode
        self._warn = warn or (lambda message: None)
        self._warned: set[str] = set()

    @classmethod
    def open(cls, directory: str, mode: str = "rw", *, warn: Callable[[str], None] | None = None) -> ResponseCache:
        """A cache in `directory`, which need not exist yet (it is made at the first store);
        a path that is something other than a directory is exit 2, before anything is sent."""
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise UsageError(f"--cache {directory}: not a directory")
        return cls(directory, mode, warn=warn)

    @property
    def replay(self) -> bool:
        return self.mode == "replay"

    def entry_path(self, key: str) -> str:
        return os.path.join(self.directory, key[:2], key + ".json")

    def lookup(self, key: str) -> Hit | None:
        """The entry for `key`, if the mode uses hits and a whole, valid one is there."""
        if self.mode == "refresh":
            return None
        path = self.entry_path(key)
        try:
            # O_NONBLOCK: a FIFO put at an entry's path must not hang the command.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._once("read", f"cannot read the cache entry {path}: {exc.strerror or exc}; asking again")
            return None
        try:
            with os.fdopen(fd, "rb") as handle:
                info = os.fstat(handle.fileno())
                if not stat.S_ISREG(info.st_mode):
                    raise CorruptEntry("not a file")
                if info.st_size > MAX_ENTRY_BYTES:
                    raise CorruptEntry(f"larger than {MAX_ENTRY_BYTES // (1024 * 1024)} MiB")
                # Its size, not the limit: read(n) allocates n bytes first (32 MiB for each entry).
                data = handle.read(info.st_size + 1)
            if len(data) > info.st_size:  # an entry is replaced whole, never written in place
                raise CorruptEntry("it grew while it was read")
            return Hit(parse_entry(data, key), path, info.st_mtime)
        except CorruptEntry as exc:
            self._once("corrupt", f"the cache entry {path} is unusable ({exc}); it counts as a miss")
        except OSError as exc:
            self._once("read", f"cannot read the cache entry {path}: {exc.strerror or exc}; asking again")
        return None

    def store(self, key: str, response: dict, *, mask: Callable[[str], str] | None = None) -> str | None:
        """Keep a complete answer (atomically, 0600); the path written, or None when the mode
        stores nothing, the answer is not complete or too large, or the write failed (warned)."""
        if self.replay or not is_complete(response):
            return None
        try:
            text = json.dumps(
                {"anyfast_cache": ENTRY_FORMAT, "digest": key, "response": response},
                ensure_ascii=False,
                separators=(",", ":"),
            )
        except (ValueError, RecursionError):  # an answer read is always JSON; this is a safety net
            return None
        if mask is not None:
            text = mask(text)  # the key, should the answer echo it, is never stored
        data = text.encode("utf-8", "surrogatepass")  # json.loads reads lone surrogate halves back
        if len(data) > MAX_ENTRY_BYTES:
            self._once("large", f"an answer over {MAX_ENTRY_BYTES // (1024 * 1024)} MiB is not cached")
            return None
        path = self.entry_path(key)
        try:
            fd, temporary = self._temporary_file(os.path.dirname(path))
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                # No fsync: rename is what makes the entry whole for readers; a power cut that
                # leaves it empty makes it a miss, which costs one request, not a wrong answer.
                os.replace(temporary, path)
            except BaseException:
                _remove(temporary)
                raise
        except OSError as exc:
            self._once("write", f"cannot store the answer in the cache {self.directory}: {exc.strerror or exc}")
            return None
        return path

    def _temporary_file(self, fan_out: str) -> tuple[int, str]:
        """A new temporary file (mode 0600) in the entry's own directory, made (0700) if need be."""
        try:
            return tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".json", dir=fan_out)
        except FileNotFoundError:  # a new cache, or a prune has just removed this directory, emptied
            os.makedirs(self.directory, 0o700, exist_ok=True)
            try:
                os.mkdir(fan_out, 0o700)
            except FileExistsError:
                pass
            return tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".json", dir=fan_out)

    def _once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            self._warn(message)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# --- what a request not in the cache was ----------------------------------------------------


def prompt_words(messages) -> str:
    """The first words of the request's last user message, to name it in an error."""
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
            words = str(content or "").split()
            text = " ".join(words[:PROMPT_WORDS])
            if len(text) > PROMPT_CHARS:
                text = text[: PROMPT_CHARS - 1].rstrip()
            return text + ("…" if text != " ".join(words) else "")
    return ""


def not_in_cache(body: dict, directory: str) -> NotInCacheError:
    """--cache-mode replay met a request the cache does not hold."""
    words = prompt_words(body.get("messages"))
    missing = not os.path.isdir(directory)
    return NotInCacheError(
        f"not in the cache {directory}: model {body.get('model')}, prompt {json.dumps(words, ensure_ascii=False)}",
        hint=(
            f"{directory} does not exist: restore it, or fill it by running with --cache-mode rw"
            if missing
            else "--cache-mode replay sends nothing; run once with --cache-mode rw (and a key) to store this answer"
        ),
    )


# --- anyfast cache stats / prune --------------------------------------------------------------


@dataclass
class CacheStats:
    entries: int = 0
    bytes: int = 0
    oldest: float | None = None  # modification times
    newest: float | None = None

    def add(self, info: os.stat_result) -> None:
        self.entries += 1
        self.bytes += info.st_size
        self.oldest = info.st_mtime if self.oldest is None else min(self.oldest, info.st_mtime)
        self.newest = info.st_mtime if self.newest is None else max(self.newest, info.st_mtime)


def _files(directory: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """(fan-out directory, name, stat) of every file in the cache's fan-out directories: entries and
    temporary files alike. Files that vanish while listed (a prune, a rename) are skipped."""
    with os.scandir(directory) as top:
        fan_outs = [d.path for d in top if FAN_OUT_NAME.fullmatch(d.name) and d.is_dir(follow_symlinks=False)]
    for fan_out in sorted(fan_outs):
        try:
            with os.scandir(fan_out) as inside:
                files = [(f.name, f) for f in inside if f.is_file(follow_symlinks=False)]
        except FileNotFoundError:
            continue
        for name, found in files:
            try:
                yield fan_out, name, found.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue


def cache_stats(directory: str) -> CacheStats:
    stats = CacheStats()
    for _, name, info in _files(directory):
        if ENTRY_NAME.fullmatch(name):
            stats.add(info)
    return stats


def prune_cache(directory: str, older_than: float, now: float | None = None) -> CacheStats:
    """Remove the entries last modified more than `older_than` seconds ago (and temporary files
    as old: writes that kill -9 cut short), then fan-out directories left empty; what was removed."""
    cut = (time.time() if now is None else now) - older_than
    removed = CacheStats()
    emptied = set()
    for fan_out, name, info in _files(directory):
        entry = ENTRY_NAME.fullmatch(name)
        if info.st_mtime >= cut or not (entry or name.startswith(TEMP_PREFIX)):
            continue
        try:
            os.unlink(os.path.join(fan_out, name))
        except FileNotFoundError:
            continue
        emptied.add(fan_out)
        if entry:
            removed.add(info)
    for fan_out in emptied:
        try:
            os.rmdir(fan_out)  # only when empty: a concurrent store may have just written into it
        except OSError:
            pass
    return removed
