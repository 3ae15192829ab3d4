"""Server-Sent Events, bytes in, events out (sans-I/O).

Lines end in CR, LF or CRLF; a CRLF split across two feeds is still one line
ending. Bytes are split into lines *before* decoding, so a multi-byte character
cut between feeds is never mangled and U+2028/U+2029/U+0085 inside JSON strings
are left alone (httpx's iter_lines would split on them).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

_BOM = b"\xef\xbb\xbf"


class Event(NamedTuple):
    data: str
    event: str = "message"
    id: str | None = None


class SSEDecoder:
    """Feed it bytes as they arrive; it returns the events they complete."""

    def __init__(self) -> None:
        self._buffer = b""
        self._at_start = True  # a UTF-8 BOM may open the stream
        self._skip_lf = False  # the last feed ended in CR: a leading LF belongs to it
        self._data: list[str] = []
        self._event = ""
        self._last_id: str | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buffer = self._buffer + chunk if self._buffer else chunk
        if self._at_start:
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                self._buffer = buffer  # too short to tell yet
                return []
            self._at_start = False
            if buffer.startswith(_BOM):
                buffer = buffer[len(_BOM) :]
        lines = buffer.splitlines(keepends=True)  # bytes: splits on CR, LF, CRLF only
        if lines and not lines[-1].endswith((b"\n", b"\r")):
            self._buffer = lines.pop()
        else:
            self._buffer = b""
        if buffer.endswith(b"\r"):  # only a CR that ends the feed may pair with the next LF
            self._skip_lf = True
        events: list[Event] = []
        for line in lines:
            raw = line.rstrip(b"\r\n")
            if raw[:5] == b"data:":  # nearly every line: the fast path for it
                self._data.append((raw[6:] if raw[5:6] == b" " else raw[5:]).decode("utf-8", "replace"))
            else:
                self._process_line(raw, events)
        return events

    def close(self) -> list[Event]:
        """End of stream: a last line or event without its blank line still counts."""
        events: list[Event] = []
        if self._buffer:
            self._process_line(self._buffer, events)
            self._buffer = b""
        self._dispatch(events)
        return events

    def _process_line(self, raw: bytes, events: list[Event]) -> None:
        if not raw:
            self._dispatch(events)
            return
        if raw[:1] == b":":
            return  # a comment, e.g. ": keep-alive"
        line = raw.decode("utf-8", "replace")
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        # "retry" and unknown fields are ignored, as the SSE spec says

    def _dispatch(self, events: list[Event]) -> None:
        data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
        if data:  # the spec drops events whose data is empty
            events.append(Event(data, self._event or "message", self._last_id))
        self._data = []
        self._event = ""


def iter_events(chunks: Iterable[bytes]) -> Iterator[Event]:
    """Every event in a sequence of byte chunks, including one left open at the end."""
    decoder = SSEDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
    yield from decoder.close()
