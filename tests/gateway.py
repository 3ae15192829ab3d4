"""A real HTTP/1.1 server on 127.0.0.1 that behaves like an OpenAI-compatible gateway.

It runs an asyncio loop in a background thread, so it carries hundreds of
concurrent keep-alive connections (for batch) as easily as one. By default it
answers every chat request with "echo: <last user text>" (streamed as SSE when
asked, with reasoning for doubao models); tests queue scripted replies with
`gateway.script(...)` to inject statuses, SSE quirks, resets and stalls.

Wire-level replies: `Json(..., reason=b"OK \xff", send=20)` (a raw reason phrase; a body
cut short), header values given as bytes go out as they are (a 200 KiB header, non-UTF-8
bytes), a header whose value is None is not sent, `Raw(bytes)` writes anything,
`Drip(bytes, head=)` writes it a byte at a time (headers, or a body with no length).
Helpers: `redirect`, `no_content`, `big_header`; what new-api (QuantumNous/new-api,
the gateway AnyFast runs) sends: `newapi_error`, `model_not_found`, `cpu_overloaded`,
`newapi_rate_limited`, `hidden_cut`, `with_request_id`, and `gateway.aliases` (a model
alias answered with the upstream's model name).
`Gateway(ssl_context=...)` serves HTTPS (see netfixtures.make_pki).

Hostile servers: `Flood(piece, head=, tail=, times=)` sends a body of any size (for ever
with times=None) without holding it, and `Hostile(mode)` is a reply built for the request
it answers (a stream or a whole answer), one for each of HOSTILE_MODES: surrogate halves
split across chunks, JSON nested deep, an endless answer, a gzip bomb, one giant SSE line,
a very large answer, a drip of one byte at a time, escape sequences in the answer and the
request id, the key echoed back, a header that is not UTF-8. See `Hostile` for each.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import random
import socket
import ssl
import string
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    205: "Reset Content",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    407: "Proxy Authentication Required",
}


@dataclass
class Received:
    method: str
    path: str
    headers: dict
    body: dict | None
    at: float


# --- scripted replies ---------------------------------------------------------------------


@dataclass
class Json:
    """A whole response with a JSON (or raw) body.

    `headers` override the defaults (Content-Type, Content-Length; a value of None
    leaves that header out; bytes values are sent as they are). `reason` is the
    reason phrase (str or raw bytes; default the standard one), `raw_headers` extra
    header bytes sent verbatim (each line ending in CRLF). `send`: send only this many
    bytes of the body (Content-Length still announces all of it), then close."""

    body: object = None
    status: int = 200
    headers: dict = field(default_factory=dict)
    raw: bytes | None = None
    reason: str | bytes | None = None
    raw_headers: bytes = b""
    send: int | None = None


@dataclass
class Sse:
    """An SSE body sent as HTTP chunks, exactly these byte pieces, `delay` apart.
    `cut=True` drops the connection before the terminating chunk."""

    pieces: list
    delay: float = 0.0
    cut: bool = False
    headers: dict = field(default_factory=dict)
    status: int = 200
    reason: str | bytes | None = None


@dataclass
class Reset:
    """Close the connection with a TCP reset instead of answering."""


@dataclass
class Stall:
    """Say nothing for `seconds`, then close."""

    seconds: float


@dataclass
class Raw:
    """Write exactly these bytes (status line, headers, body: all of it), then close
    the connection unless `keep_alive`."""

    data: bytes
    keep_alive: bool = False


@dataclass
class Drip:
    """Write `head` at once, then `data` `size` bytes at a time, `delay` apart, then close: a
    server dripping its status line and headers (in `data`), or a body with no length that
    ends when the connection does (headers in `head`, body in `data`)."""

    data: bytes
    head: bytes = b""
    delay: float = 0.05
    size: int = 1


@dataclass
class Flood:
    """A body of any size that is never held whole: `head`, then `piece` `times` times (for
    ever with None, until the client leaves), then `tail`. Chunked, or with `sized` a
    Content-Length that announces all of it. The server waits for the socket to drain
    after every piece, so it streams a 500 MB answer or an endless one in flat memory."""

    piece: bytes
    head: bytes = b""
    tail: bytes = b""
    times: int | None = None
    sized: bool = False
    status: int = 200
    headers: dict = field(default_factory=lambda: {"Content-Type": "text/event-stream"})


def error_body(message: str, type_: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "code": code}}


def sse_events(*objects, done: bool = True, newline: bytes = b"\n") -> list[bytes]:
    """Each object as one `data:` event (strings pass through as the data text)."""
    out = []
    for obj in objects:
        data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
        out.append(b"data: " + data.encode() + newline + newline)
    if done:
        out.append(b"data: [DONE]" + newline + newline)
    return out


def chunk(content: str | None = None, reasoning: str | None = None, finish: str | None = None, **extra) -> dict:
    delta = {}
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta["reasoning_content"] = reasoning
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def completion(content: str, reasoning: str | None = None, model: str = "m", usage: dict | None = None) -> dict:
    message = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": usage or {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


def redirect(status: int, location: str) -> Json:
    """A 3xx with a Location and a small HTML body, as web servers send."""
    page = f'<html><body>Moved to <a href="{location}">{location}</a></body></html>'.encode()
    return Json(status=status, raw=page, headers={"Location": location, "Content-Type": "text/html"})


def no_content(status: int = 204) -> Json:
    """A 204 (no body, no Content-Type, no Content-Length) or a 205 (`Content-Length: 0`:
    RFC 9112 ends only 1xx/204/304 at the head, so a 205 must say its body is empty)."""
    length = "0" if status == 205 else None
    return Json(status=status, raw=b"", headers={"Content-Type": None, "Content-Length": length})


def big_header(size: int, name: str = "X-Padding") -> dict:
    """One header whose value is `size` bytes (for header-size limits)."""
    return {name: b"a" * size}


# --- what new-api sends (QuantumNous/new-api, the gateway AnyFast and many resellers run) ---


def newapi_request_id() -> str:
    """new-api's request ids: a timestamp and random letters, e.g. 2025112809301245678aBcDeFgH."""
    letters = "".join(random.choices(string.ascii_letters, k=8))
    return time.strftime("%Y%m%d%H%M%S") + f"{random.randrange(10**6):06d}" + letters


def with_request_id(message: str, request_id: str | None = None) -> str:
    """new-api ends its error messages with `(request id: …)`."""
    return f"{message} (request id: {request_id or newapi_request_id()})"


def newapi_error(
    status: int,
    message: str,
    code: str | None,
    type_: str = "new_api_error",
    event_stream: bool = False,
    request_id: str | None = None,
    **headers,
) -> Json:
    """An error as new-api sends it: the message ends in `(request id: …)`. With
    `event_stream=True` it comes with `Content-Type: text/event-stream` and a plain
    JSON body, as new-api answers a request that asked for a stream."""
    body = error_body(with_request_id(message, request_id), type_, code)
    extra = {"Content-Type": "text/event-stream"} if event_stream else {}
    return Json(body, status=status, headers={**extra, **headers})


def model_not_found(model: str, event_stream: bool = False, request_id: str = "20251128093012456789aBcDeFgH") -> Json:
    """new-api's unknown model: a 503 that is configuration, not load."""
    message = f"No available channel for model {model} under group default (distributor)"
    return newapi_error(503, message, "model_not_found", event_stream=event_stream, request_id=request_id)


def cpu_overloaded(event_stream: bool = False) -> Json:
    """new-api's own load shedding: a 503 that is load (retry it)."""
    return newapi_error(503, "system cpu overloaded", "system_cpu_overloaded", event_stream=event_stream)


def newapi_rate_limited(chinese: bool = False) -> Json:
    """new-api's own rate limit: a 429 with an empty body and no Retry-After (no
    Content-Type either); with Redis, a JSON body whose message is Chinese."""
    if chinese:
        message = "您已达到请求数限制：1分钟内最多请求60次"
        return Json(error_body(message, "new_api_error", "rate_limit_exceeded"), status=429)
    return Json(status=429, raw=b"", headers={"Content-Type": None})


def usage_chunk(usage: dict | None = None) -> dict:
    """new-api's closing usage chunk when it hides an upstream cut: empty id and
    model, created 0, no choices."""
    usage = usage or {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    return {"id": "", "object": "chat.completion.chunk", "created": 0, "model": "", "choices": [], "usage": usage}


def hidden_cut_events(*texts: str, usage: dict | None = None) -> list[dict]:
    """The chunk objects of a hidden cut, in order (for comparing with --json --stream)."""
    return [chunk(text) for text in texts] + [usage_chunk(usage)]


def hidden_cut(*texts: str, usage: dict | None = None) -> Sse:
    """The upstream broke mid-stream and new-api hid it: content chunks, a usage chunk,
    `data: [DONE]`, and never a finish_reason."""
    return Sse(sse_events(*hidden_cut_events(*texts, usage=usage)))


# --- hostile servers ----------------------------------------------------------------------

MIB = 1024 * 1024
# clipboard, title, clear, colour, C1 CSI, BEL, BS, DEL; then bidirectional controls (an override
# that reverses what follows, an isolate, a right-to-left mark) that reorder what a terminal shows
ESCAPES = "\x1b]52;c;cHduZWQ=\x07\x1b]0;pwned\x07\x1b[2J\x1b[31m\x9b1;1H\x07\x08\x7f" + "\u202egnp.exe\u2066x\u200f"
HOSTILE_MODES = (
    "surrogates",
    "deep_json",
    "endless",
    "gzip_bomb",
    "giant_line",
    "big_answer",
    "drip",
    "escapes",
    "escapes_error",
    "echoed_key",
    "echoed_key_error",
    "non_utf8_header",
)


@dataclass
class Hostile:
    """A hostile reply, built for the request it answers (`build`): SSE when it asked for a
    stream, a whole JSON answer when not. The modes (HOSTILE_MODES):

    - surrogates: an emoji's UTF-16 halves escaped in two chunks ("\\ud83d", "\\ude00"), then a lone half;
    - deep_json: an answer carrying JSON nested `depth` deep (100,000: no parser gets through);
    - endless: an answer that never ends (`piece_size` characters a chunk, for ever);
    - gzip_bomb: `size` bytes of answer gzipped to ~1/1000 of that (Content-Encoding: gzip);
    - giant_line: one SSE line (a whole answer: one JSON body) of `size` bytes;
    - big_answer: a whole answer of `size` bytes with a Content-Length (`sized=False`: chunked);
    - drip: a short answer, one byte every `delay` seconds;
    - escapes: escape sequences in the answer, its reasoning and its request id;
    - escapes_error: an error whose message (and request id) carry escape sequences;
    - echoed_key: the key the request sent, echoed in the answer (split across two chunks)
      and in the request id;
    - echoed_key_error: the key echoed in an error message (400);
    - non_utf8_header: a request id and a reason phrase that are not UTF-8.
    """

    mode: str
    size: int = 64 * MIB
    depth: int = 100_000
    delay: float = 0.01
    piece_size: int = 16 * 1024
    sized: bool = True

    def build(self, request: Received):
        stream = bool((request.body or {}).get("stream"))
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        return getattr(self, "_" + self.mode)(stream, key)

    def _surrogates(self, stream, key):
        pieces = ["\\ud83d", "\\ude00", " lone \\ud800", " end"]
        if stream:
            return Sse(
                [b"data: " + _raw_chunk(p) + b"\n\n" for p in pieces]
                + [_sse(chunk(finish="stop")), b"data: [DONE]\n\n"]
            )
        return Json(raw=_raw_completion("".join(pieces)))

    def _deep_json(self, stream, key):
        deep = b"[" * self.depth + b"]" * self.depth
        if stream:
            event = b'{"choices":[{"index":0,"delta":{"content":"x","extra":' + deep + b'},"finish_reason":"stop"}]}'
            return Sse([b"data: " + event + b"\n\n", b"data: [DONE]\n\n"])
        return Json(
            raw=b'{"choices":[{"index":0,"message":{"role":"assistant","content":"x","extra":'
            + deep
            + b'},"finish_reason":"stop"}]}'
        )

    def _endless(self, stream, key):
        text = "a" * self.piece_size
        if stream:
            return Flood(_sse(chunk(text)))
        return Flood(text.encode(), head=_COMPLETION_HEAD, headers={"Content-Type": "application/json"})

    def _gzip_bomb(self, stream, key):
        data = _bomb(stream, self.size)
        pieces = [data[i : i + 64 * 1024] for i in range(0, len(data), 64 * 1024)]
        content_type = "text/event-stream" if stream else "application/json"
        return Sse(pieces, headers={"Content-Type": content_type, "Content-Encoding": "gzip"})

    def _giant_line(self, stream, key):
        if not stream:
            return self._big_answer(stream, key)
        times = max(1, self.size // self.piece_size)
        head = b'data: {"choices":[{"index":0,"delta":{"content":"'
        return Flood(
            b"a" * self.piece_size, head=head, tail=b'"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n', times=times
        )

    def _big_answer(self, stream, key):
        times = max(1, self.size // self.piece_size)
        return Flood(
            b"a" * self.piece_size,
            head=_COMPLETION_HEAD,
            tail=_COMPLETION_TAIL,
            times=times,
            sized=self.sized,
            headers={"Content-Type": "application/json"},
        )

    def _drip(self, stream, key):
        if stream:
            body = b"".join(sse_events(chunk("dripped"), chunk(finish="stop")))
            return Sse([body[i : i + 1] for i in range(len(body))], delay=self.delay)
        body = json.dumps(completion("dripped")).encode()
        return Sse(
            [body[i : i + 1] for i in range(len(body))], delay=self.delay, headers={"Content-Type": "application/json"}
        )

    def _escapes(self, stream, key):
        headers = {"x-request-id": b"req-\x1b]0;pwned\x07-\xc2\x9b2J"}
        if stream:
            return Sse(
                sse_events(chunk(reasoning="think " + ESCAPES), chunk("say " + ESCAPES), chunk(finish="stop")),
                headers=headers,
            )
        return Json(completion("say " + ESCAPES, reasoning="think " + ESCAPES), headers=headers)

    def _escapes_error(self, stream, key):
        return Json(
            error_body("bad request " + ESCAPES, code="\x1b[2J"),
            status=400,
            headers={"x-request-id": b"req-\x1b]0;pwned\x07"},
        )

    def _echoed_key(self, stream, key):
        headers = {"x-request-id": f"req-{key}"}
        half = len(key) // 2
        if stream:
            return Sse(
                sse_events(chunk(f"your key is {key[:half]}"), chunk(f"{key[half:]}."), chunk(finish="stop")),
                headers=headers,
            )
        return Json(completion(f"your key is {key}."), headers=headers)

    def _echoed_key_error(self, stream, key):
        return Json(
            error_body(f"Incorrect API key provided: {key}"), status=400, headers={"x-request-id": f"req-{key}"}
        )

    def _non_utf8_header(self, stream, key):
        headers = {"x-request-id": b"req-\xff\xfe\xc3"}
        if stream:
            return Sse(sse_events(chunk("fine"), chunk(finish="stop")), headers=headers, reason=b"OK \xff")
        return Json(completion("fine"), headers=headers, reason=b"OK \xff")


_COMPLETION_HEAD = (
    b'{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"'
)
_COMPLETION_TAIL = b'"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'


def _sse(obj) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _raw_chunk(content_json: str) -> bytes:
    """A chunk whose content is given as JSON string text (escapes and all)."""
    return (
        '{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"'
        + content_json
        + '"},"finish_reason":null}]}'
    ).encode()


def _raw_completion(content_json: str) -> bytes:
    return _COMPLETION_HEAD + content_json.encode() + _COMPLETION_TAIL


@functools.lru_cache(maxsize=8)
def _bomb(stream: bool, size: int) -> bytes:
    """`size` bytes of answer (SSE events of 64 KiB of text each, or one JSON answer), gzipped."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    if stream:
        event = _sse(chunk("a" * 64 * 1024))
        parts = [compressor.compress(event) for _ in range(max(1, size // len(event)))]
    else:
        block = b"a" * MIB
        parts = [compressor.compress(_COMPLETION_HEAD)]
        parts += [compressor.compress(block) for _ in range(max(1, size // MIB))]
        parts.append(compressor.compress(_COMPLETION_TAIL))
    parts.append(compressor.flush())
    return b"".join(parts)


# --- the server ---------------------------------------------------------------------------


class Gateway:
    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.requests: list[Received] = []
        self.latency = 0.0  # seconds before each default answer
        self.chunks = 3  # pieces a default streamed answer is cut into
        self.aliases: dict[str, str] = {}  # model sent -> model named in the answer (new-api's aliases)
        self.limiter = None  # a rate limiter from gateway_limits.py, asked before each default answer
        # The models this key is served (GET /v1/models); a chat request for another is new-api's 503.
        self.served: list[str] | None = None
        self.ssl_context = ssl_context  # serve HTTPS with this context
        self.handshakes = 0  # TLS handshakes attempted (failed ones included)
        self.handshake_errors: list[str] = []
        self._script: list = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.connections = 0

    # lifecycle
    def start(self) -> "Gateway":
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = future.result(10)
        return self

    async def _start(self) -> int:
        # TLS: the handshake is done in _serve (StreamWriter.start_tls, Python 3.11+), so
        # failed handshakes are counted; on 3.10 the server does it (uncounted).
        handshake_here = self.ssl_context is not None and hasattr(asyncio.StreamWriter, "start_tls")
        server_ssl = self.ssl_context if not handshake_here else None
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", 0, backlog=2048, ssl=server_ssl, limit=1 << 20
        )
        return self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close():
            self._server.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/v1"

    @property
    def origin(self) -> str:
        """host:port, as error messages name it."""
        return f"127.0.0.1:{self.port}"

    def script(self, *replies) -> None:
        """Queue replies for the next requests, in order; after them the default echo answers."""
        with self._lock:
            self._script.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
        self.latency = 0.0
        self.chunks = 3
        self.aliases = {}
        self.served = None
        self.limiter = None
        self.handshakes = 0
        self.handshake_errors = []

    def settle(self, quiet: float = 0.25, limit: float = 5.0) -> None:
        """Wait until requests a stopped client had already sent have all arrived, so
        they are not counted by the next step or test."""
        deadline = time.monotonic() + limit
        seen = len(self.requests)
        while time.monotonic() < deadline:
            time.sleep(quiet)
            if len(self.requests) == seen:
                return
            seen = len(self.requests)

    def _next_scripted(self):
        with self._lock:
            return self._script.pop(0) if self._script else None

    # HTTP/1.1
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.ssl_context is not None and hasattr(writer, "start_tls"):
            self.handshakes += 1
            try:
                await writer.start_tls(self.ssl_context)
            except (ssl.SSLError, OSError, asyncio.IncompleteReadError) as exc:
                self.handshake_errors.append(str(exc))
                writer.transport.abort()
                return
            except asyncio.CancelledError:
                return
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    break
                self.requests.append(request)
                keep_alive = await self._respond(request, writer)
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client left, or the server is stopping
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def _read_request(self, reader) -> Received | None:
        line = await reader.readline()
        if not line:
            return None
        method, path, _ = line.decode("latin-1").split(" ", 2)
        headers = {}
        while True:
            header = await reader.readline()
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return Received(method, path, headers, body, time.monotonic())

    async def _respond(self, request: Received, writer) -> bool:
        reply, extra = self._next_scripted(), {}
        if reply is None and self.limiter is not None:
            reply, extra = self.limiter.gate(time.monotonic())  # a 429, or headers for the answer
        if reply is None:
            reply = await self._default_reply(request)
            if extra and hasattr(reply, "headers"):  # a wrapped _default_reply (`behave`) may give a Stall or Reset
                reply.headers.update(extra)
        if isinstance(reply, Hostile):
            reply = reply.build(request)
        if isinstance(reply, Reset):
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if isinstance(reply, Stall):
            await asyncio.sleep(reply.seconds)
            return False
        if isinstance(reply, Drip):
            writer.write(reply.head)
            for start in range(0, len(reply.data), reply.size):
                await writer.drain()
                await asyncio.sleep(reply.delay)
                writer.write(reply.data[start : start + reply.size])
            await writer.drain()
            writer.close()
            return False
        if isinstance(reply, Raw):
            writer.write(reply.data)
            await writer.drain()
            if not reply.keep_alive:
                writer.close()
            return reply.keep_alive
        request_id = f"req-{next(self._ids)}"
        if isinstance(reply, Flood):
            return await self._flood(reply, writer, request_id)
        if isinstance(reply, Json):
            payload = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
            headers = {"Content-Type": "application/json", "Content-Length": str(len(payload)), **reply.headers}
            head = _head(reply.status, headers, request_id, reply.reason, reply.raw_headers)
            if reply.send is not None:  # a body cut short: less than Content-Length, then close
                writer.write(head + payload[: reply.send])
                await writer.drain()
                writer.close()
                return False
            writer.write(head + payload)
            await writer.drain()
            return True
        headers = {
            "Content-Type": "text/event-stream",
            "Transfer-Encoding": "chunked",
            "Cache-Control": "no-cache",
            **reply.headers,
        }
        writer.write(_head(reply.status, headers, request_id, reply.reason))
        for piece in reply.pieces:
            if reply.delay:
                await writer.drain()
                await asyncio.sleep(reply.delay)
            if piece:
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        if reply.cut:
            await writer.drain()
            writer.transport.abort()
            return False
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _flood(self, reply: Flood, writer, request_id: str) -> bool:
        if reply.sized:
            if reply.times is None:
                raise ValueError("a Flood with a Content-Length needs `times`")
            length = len(reply.head) + len(reply.piece) * reply.times + len(reply.tail)
            headers = {**reply.headers, "Content-Length": str(length)}
            frame = lambda data: data  # noqa: E731
        else:
            headers = {**reply.headers, "Transfer-Encoding": "chunked"}
            frame = lambda data: b"%x\r\n%s\r\n" % (len(data), data) if data else b""  # noqa: E731
        writer.write(_head(reply.status, headers, request_id))
        writer.write(frame(reply.head))
        piece = frame(reply.piece)
        sent = 0
        while reply.times is None or sent < reply.times:
            writer.write(piece)
            sent += 1
            await writer.drain()  # wait for the client: never more than a socket buffer held
        writer.write(frame(reply.tail) + (b"" if reply.sized else b"0\r\n\r\n"))
        await writer.drain()
        return True

    async def _default_reply(self, request: Received):
        if self.latency:
            await asyncio.sleep(self.latency)
        body = request.body or {}
        if request.method == "GET" and request.path.rstrip("/") == "/v1/models":
            served = self.served if self.served is not None else ["doubao-seed-1-6-vision-250815", "m"]
            return Json({"object": "list", "data": [{"id": m, "object": "model", "owned_by": "x"} for m in served]})
        if request.path.rstrip("/") != "/v1/chat/completions":
            return Json(error_body(f"no route {request.path}"), status=404)
        if self.served is not None and body.get("model") not in self.served:
            return model_not_found(str(body.get("model")), event_stream=bool(body.get("stream")))
        if (
            not request.headers.get("authorization", "").startswith("Bearer ")
            or request.headers["authorization"] == "Bearer "
        ):
            return Json(error_body("missing API key", "authentication_error"), status=401)
        messages = body.get("messages") or []
        text = _last_user_text(messages)
        answer = f"echo: {text}"
        model = body.get("model", "m")
        reasoning = "thinking about it" if str(model).startswith("doubao") else None
        if isinstance(model, str) and model in self.aliases:  # new-api answers with the upstream's name
            served = {"model": self.aliases[model]}
            model = self.aliases[model]
        else:
            served = {}
        usage = {"prompt_tokens": len(json.dumps(messages)) // 4, "completion_tokens": len(answer) // 4 + 1}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if not body.get("stream"):
            return Json(completion(answer, reasoning, model, usage))
        step = max(1, -(-len(answer) // self.chunks))
        events = [chunk(reasoning=reasoning, **served)] if reasoning else []
        events += [chunk(answer[i : i + step], **served) for i in range(0, len(answer), step)]
        events.append(chunk(finish="stop", **served))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": usage})
        return Sse(sse_events(*events))


def _head(
    status: int, headers: dict, request_id: str | None, reason: str | bytes | None = None, raw: bytes = b""
) -> bytes:
    """The status line and headers. `reason` (str, or bytes sent as they are) replaces
    the standard reason phrase; header values may be bytes (sent as they are) or None
    (not sent); an x-request-id in `headers` replaces the generated one; `raw` is
    extra header bytes, each line ending in CRLF."""
    if reason is None:
        reason = REASONS.get(status, "Status")
    lines = [b"HTTP/1.1 %d %s" % (status, _bytes(reason))]
    if request_id is not None and not any(str(k).lower() == "x-request-id" for k in headers):
        lines.append(b"x-request-id: " + request_id.encode())
    lines += [_bytes(k) + b": " + _bytes(v) for k, v in headers.items() if v is not None]
    return b"\r\n".join(lines) + b"\r\n" + raw + b"\r\n"


def _bytes(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _last_user_text(messages: list) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", f"[{p.get('type')}]") for p in content)
            return str(content)
    return ""
