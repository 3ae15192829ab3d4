"""Server-Sent Events, bytes in, each event's data out (sans-I/O).

A chat-completion stream says everything in its events' data (OpenAI's streams and
new-api's name no event types, and an `error` event carries its error in the data too),
so the decoder gives each event's data, a str, and nothing else: `event:`, `id:` and
`retry:` lines are read past, as comments are. It is the per-chunk hot path of every
streamed answer: a feed is split into whole events first where it can be (_feed_events).

Lines end in CR, LF or CRLF; a CRLF split across two feeds is still one line
ending. Bytes are split into lines *before* decoding, so a multi-byte character
cut between feeds is never mangled and U+2028/U+2029/U+0085 inside JSON strings
are left alone (httpx's iter_lines would split on them).

A line that spans many feeds is kept as a list of pieces and joined once, when it
ends, so assembling it costs time in proportion to its length (joining the buffer
at every feed made a 64 MB line take 37 s). A line, or an event's data lines
together, longer than MAX_EVENT_BYTES raises EventTooLarge, which carries the events
completed before it in the same feed: what a feed returns never depends on where the
bytes were split.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

_BOM = b"\xef\xbb\xbf"

# One SSE line or event: one chunk object of a chat completion. A real chunk is well under
# 100 KB (a delta of a few tokens; a gateway that sends a whole answer as one event sends
# at most a few MB); 16 MiB is far past any of them and keeps a hostile line's cost bounded.
MAX_EVENT_BYTES = 16 * 1024 * 1024


class EventTooLarge(ValueError):
    """A line, or one event's data, longer than the decoder's limit. `events` holds the
    events (their data) the same feed completed before it, so that none is lost to where a
    read ended."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"an event longer than {limit} bytes")
        self.limit = limit
        self.events: list[str] = []


class SSEDecoder:
    """Feed it bytes as they arrive; it returns the data of the events they complete."""

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self._limit = max_event_bytes if max_event_bytes is not None else MAX_EVENT_BYTES
        self._pending: list[bytes] = []  # the pieces of a line not ended yet
        self._pending_size = 0
        self._at_start = True  # a UTF-8 BOM may open the stream
        self._skip_lf = False  # the last feed ended in CR: a leading LF belongs to it
        self._data: list[str] = []  # the data lines of the event not ended yet
        self._data_size = 0

    def feed(self, chunk: bytes) -> list[str]:
        if not chunk:
            return []
        if self._at_start:  # a UTF-8 BOM may open the stream, split across feeds as anything may be
            chunk = b"".join(self._pending) + chunk
            self._pending = []
            self._pending_size = 0
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                self._hold(chunk)  # too short to tell yet
                return []
            self._at_start = False
            chunk = chunk.removeprefix(_BOM)
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if self._pending:
            if b"\n" not in chunk and b"\r" not in chunk:  # the line goes on: keep the piece, join later
                self._hold(chunk)
                return []
            chunk = b"".join(self._pending) + chunk
            self._pending = []
            self._pending_size = 0
        events: list[str] = []
        try:
            if self._data:
                self._feed_lines(chunk, events)
            elif b"\r" not in chunk:
                self._feed_events(chunk, events)
            elif chunk.count(b"\r") == chunk.count(b"\r\n"):  # CRLF endings only (a CR that ends it pairs later)
                self._feed_events(chunk.replace(b"\r\n", b"\n"), events)
            else:
                self._feed_lines(chunk, events)
        except EventTooLarge as exc:
            exc.events = events  # the events decoded before it are still the caller's to show
            raise
        return events

    def _feed_events(self, chunk: bytes, events: list[str]) -> None:
        """Bytes that begin outside any event and end their lines in LF only (CRLF made LF):
        nearly every feed of a stream. They are split into events at their blank lines first, and an event
        of one `data: ` line, as nearly all are, is taken whole; any other goes line by line."""
        parts = chunk.split(b"\n\n")
        tail = parts.pop()  # after the last blank line: lines of an event that goes on, if any
        check = len(chunk) > self._limit  # no line can be longer than the chunk it came in
        for part in parts:
            if part[:6] == b"data: " and b"\n" not in part:
                if check and len(part) > self._limit:
                    raise EventTooLarge(self._limit)
                if len(part) > 6:  # the spec drops events whose data is empty
                    events.append(part[6:].decode("utf-8", "replace"))
            else:
                self._lines(part.split(b"\n"), events, check)
                self._dispatch(events)
        if tail:
            self._feed_lines(tail, events)

    def _feed_lines(self, chunk: bytes, events: list[str]) -> None:
        """Any bytes, line by line."""
        lines = chunk.splitlines()  # bytes: splits on CR, LF, CRLF only, and drops them
        ending = chunk[-1:]
        # The last line goes on in the next feed; it is held after the whole lines are decoded,
        # so that a tail too long (EventTooLarge) does not cost the events before it.
        tail = lines.pop() if lines and ending != b"\n" and ending != b"\r" else None
        if ending == b"\r":  # only a CR that ends the feed may pair with the next LF
            self._skip_lf = True
        self._lines(lines, events, len(chunk) > self._limit)
        if tail is not None:
            self._hold(tail)

    def _lines(self, lines: list[bytes], events: list[str], check: bool) -> None:
        """Whole lines, in order; `check`: some may be longer than the limit."""
        for raw in lines:
            if not raw:  # the blank line that ends an event
                self._dispatch(events)
            elif check and len(raw) > self._limit:
                raise EventTooLarge(self._limit)
            elif raw[:5] == b"data:":
                self._add_data((raw[6:] if raw[5:6] == b" " else raw[5:]).decode("utf-8", "replace"))
            else:
                self._process_line(raw, events)

    def close(self) -> list[str]:
        """End of stream: a last line or event without its blank line still counts."""
        events: list[str] = []
        if self._pending:
            self._process_line(b"".join(self._pending), events)
            self._pending = []
            self._pending_size = 0
        self._dispatch(events)
        return events

    def _hold(self, piece: bytes) -> None:
        self._pending_size += len(piece)
        if self._pending_size > self._limit:
            raise EventTooLarge(self._limit)
        self._pending.append(piece)

    def _add_data(self, value: str) -> None:
        self._data_size += len(value) + 1
        if self._data_size > self._limit:  # many data lines that never end their event
            raise EventTooLarge(self._limit)
        self._data.append(value)

    def _process_line(self, raw: bytes, events: list[str]) -> None:
        if not raw:
            self._dispatch(events)
            return
        if raw[:1] == b":":
            return  # a comment, e.g. ": keep-alive"
        line = raw.decode("utf-8", "replace")
        name, colon, value = line.partition(":")
        if name == "data":
            self._add_data(value[1:] if value[:1] == " " else value)
        # "event", "id", "retry" and unknown fields: nothing a chat stream reads

    def _dispatch(self, events: list[str]) -> None:
        data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
        if data:  # the spec drops events whose data is empty
            events.append(data)
        self._data = []
        self._data_size = 0


def iter_events(chunks: Iterable[bytes]) -> Iterator[str]:
    """The data of every event in a sequence of byte chunks, including one left open at the end."""
    decoder = SSEDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
    yield from decoder.close()
