"""A real HTTP/1.1 server on 127.0.0.1 that behaves like an OpenAI-compatible gateway.

It runs an asyncio loop in a background thread, so it carries hundreds of
concurrent keep-alive connections (for batch) as easily as one. By default it
answers every chat request with "echo: <last user text>" (streamed as SSE when
asked, with reasoning for doubao models); tests queue scripted replies with
`gateway.script(...)` to inject statuses, SSE quirks, resets and stalls.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           408: "Request Timeout", 409: "Conflict", 429: "Too Many Requests", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


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
    """A whole response with a JSON (or raw) body."""

    body: object = None
    status: int = 200
    headers: dict = field(default_factory=dict)
    raw: bytes | None = None


@dataclass
class Sse:
    """An SSE body sent as HTTP chunks, exactly these byte pieces, `delay` apart.
    `cut=True` drops the connection before the terminating chunk."""

    pieces: list
    delay: float = 0.0
    cut: bool = False
    headers: dict = field(default_factory=dict)


@dataclass
class Reset:
    """Close the connection with a TCP reset instead of answering."""


@dataclass
class Stall:
    """Say nothing for `seconds`, then close."""

    seconds: float


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
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


def completion(content: str, reasoning: str | None = None, model: str = "m", usage: dict | None = None) -> dict:
    message = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": usage or {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}


# --- the server ---------------------------------------------------------------------------


class Gateway:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.latency = 0.0  # seconds before each default answer
        self.chunks = 3  # pieces a default streamed answer is cut into
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
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=2048)
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
        return f"http://127.0.0.1:{self.port}/v1"

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
        reply = self._next_scripted()
        if reply is None:
            reply = await self._default_reply(request)
        if isinstance(reply, Reset):
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if isinstance(reply, Stall):
            await asyncio.sleep(reply.seconds)
            return False
        request_id = f"req-{next(self._ids)}"
        if isinstance(reply, Json):
            payload = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
            headers = {"Content-Type": "application/json", "Content-Length": str(len(payload)), **reply.headers}
            writer.write(_head(reply.status, headers, request_id) + payload)
            await writer.drain()
            return True
        headers = {"Content-Type": "text/event-stream", "Transfer-Encoding": "chunked", "Cache-Control": "no-cache", **reply.headers}
        writer.write(_head(200, headers, request_id))
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

    async def _default_reply(self, request: Received):
        if self.latency:
            await asyncio.sleep(self.latency)
        body = request.body or {}
        if request.path.rstrip("/") != "/v1/chat/completions":
            return Json(error_body(f"no route {request.path}"), status=404)
        if not request.headers.get("authorization", "").startswith("Bearer ") or request.headers["authorization"] == "Bearer ":
            return Json(error_body("missing API key", "authentication_error"), status=401)
        messages = body.get("messages") or []
        text = _last_user_text(messages)
        answer = f"echo: {text}"
        model = body.get("model", "m")
        reasoning = "thinking about it" if str(model).startswith("doubao") else None
        usage = {"prompt_tokens": len(json.dumps(messages)) // 4, "completion_tokens": len(answer) // 4 + 1}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if not body.get("stream"):
            return Json(completion(answer, reasoning, model, usage))
        step = max(1, -(-len(answer) // self.chunks))
        events = [chunk(reasoning=reasoning)] if reasoning else []
        events += [chunk(answer[i : i + step]) for i in range(0, len(answer), step)]
        events.append(chunk(finish="stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": usage})
        return Sse(sse_events(*events))


def _head(status: int, headers: dict, request_id: str) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", f"x-request-id: {request_id}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _last_user_text(messages: list) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", f"[{p.get('type')}]") for p in content)
            return str(content)
    return ""
