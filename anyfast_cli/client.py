"""The only module that imports httpx: send, stream, and the retry loop of complete/chat.

Retries follow retry.py; they happen only before the first chunk has been handed
to the caller, so nothing is ever printed twice.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator, Mapping

import httpx

from anyfast_cli.errors import ApiError, NetworkError, StreamError, answer_problem, error_from_response, masking_key, one_line
from anyfast_cli.request import auth_headers, endpoint_url
from anyfast_cli.retry import MAX_RETRY_AFTER, plan_retry
from anyfast_cli.settings import timeouts
from anyfast_cli.sse import iter_events



class _Truncated(Exception):
    """The body ended before [DONE] or a finish_reason."""


def build_timeout(timeout: float | None) -> httpx.Timeout:
    connect, read = timeouts(timeout)
    return httpx.Timeout(read, connect=connect)


def build_http_client(base_url: str, timeout: float | None, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    # Plain http:// (a local gateway) never uses TLS: skip loading the CA bundle at start-up.
    verify = not base_url.startswith("http://")
    return httpx.Client(timeout=build_timeout(timeout), transport=transport, verify=verify)


def describe_transport_error(exc: Exception, url: str) -> str:
    host = httpx.URL(url).host
    if isinstance(exc, httpx.ConnectTimeout):
        return f"timed out connecting to {host}"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out waiting for {host}"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {host}: {exc}"
    if isinstance(exc, _Truncated):
        return f"{host} ended the response before it was complete"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"{host} closed the connection before the answer was complete"
    return f"connection to {host} failed: {exc or type(exc).__name__}"


class ApiClient:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeout: float | None = None,
        retries: int = 2,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.url = endpoint_url(base_url)
        self.retries = retries
        self._headers = auth_headers(api_key)
        self._secret = api_key.strip()
        self._http = build_http_client(base_url, timeout, transport)
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._log = log or (lambda message: None)

    def __enter__(self) -> "ApiClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self._http.close()

    def send(self, body: dict) -> dict:
        """One whole (non-streamed) response object."""
        with masking_key(self._secret):
            return self._send(body)

    def stream(self, body: dict) -> Iterator[dict]:
        """Chunk objects as they arrive; ends at [DONE] (or a finish_reason and end of body)."""
        with masking_key(self._secret):
            yield from self._stream(body)

    def _send(self, body: dict) -> dict:
        attempt = 0
        while True:
            started = self._log_request(body, attempt)
            try:
                response = self._http.post(self.url, json=body, headers=self._headers)
            except httpx.TransportError as exc:
                attempt = self._retry_or_raise(attempt, exc, None, None)
                continue
            self._log_response(response, started)
            if response.status_code >= 400:
                error = error_from_response(response.status_code, response.content, response.reason_phrase)
                attempt = self._retry_or_raise(attempt, error, response.status_code, response.headers)
                continue
            return _answer_of(response)

    def _stream(self, body: dict) -> Iterator[dict]:
        attempt = 0
        while True:
            yielded = False
            started = self._log_request(body, attempt)
            try:
                headers = {**self._headers, "Accept": "text/event-stream"}
                with self._http.stream("POST", self.url, json=body, headers=headers) as response:
                    self._log_response(response, started)
                    if response.status_code >= 400:
                        response.read()
                        error = error_from_response(response.status_code, response.content, response.reason_phrase)
                        attempt = self._retry_or_raise(attempt, error, response.status_code, response.headers)
                        continue
                    content_type = response.headers.get("content-type", "")
                    if "json" in content_type:
                        # Some gateways answer a stream request with one JSON object (often an error).
                        yield self._whole_response_as_chunk(response)
                        return
                    if "text/html" in content_type:  # a proxy's or captive portal's page
                        response.read()
                        raise _not_a_stream(response.content)
                    finished = False
                    held: list[dict] = []  # opening role-only deltas: nothing shown yet, so a failure still retries
                    body_head = _Head(response.iter_bytes())
                    for event in iter_events(body_head):
                        chunk = _chunk_from_event(event.data, yielded)
                        if chunk is None:
                            finished = True
                            break
                        finished = finished or _has_finish_reason(chunk)
                        if not yielded and not _says_something(chunk):
                            held.append(chunk)
                            continue
                        yielded = True
                        yield from held
                        held = []
                        yield chunk
                    if not finished:
                        if not yielded and not held and not _looks_like_sse(body_head.text):
                            raise _not_a_stream(body_head.text)  # text, but not SSE at all: retrying won't help
                        raise _Truncated()
                    yield from held
                    return
            except (httpx.TransportError, _Truncated) as exc:
                if yielded:
                    raise StreamError(f"the stream broke: {describe_transport_error(exc, self.url)}") from None
                attempt = self._retry_or_raise(attempt, exc, None, None)

    def _whole_response_as_chunk(self, response: httpx.Response) -> dict:
        response.read()
        data = _answer_of(response)
        choices = [
            {"index": c.get("index", 0), "delta": c.get("message", {}), "finish_reason": c.get("finish_reason")}
            for c in data.get("choices") or []
        ]
        return {**data, "choices": choices}

    def _retry_or_raise(self, attempt: int, failure: Exception, status: int | None, headers: Mapping | None) -> int:
        """Sleep and return the next attempt number, or raise the failure as the user should see it."""
        plan = plan_retry(attempt, self.retries, self._rng, status=status, headers=headers, now=self._clock())
        if plan.delay is None:
            if not isinstance(failure, ApiError):
                raise NetworkError(describe_transport_error(failure, self.url), hint="check the network and the base URL") from None
            if plan.wait_too_long:
                failure.message += f" (the server asks to wait {plan.retry_after:.0f} s; anyfast waits at most {MAX_RETRY_AFTER:.0f} s)"
            raise failure
        reason = f"HTTP {status}" if status else type(failure).__name__
        self._log(f"retry {attempt + 1} of {self.retries} in {plan.delay:.2f} s after {reason}")
        self._sleep(plan.delay)
        return attempt + 1

    def _log_request(self, body: dict, attempt: int) -> float:
        if attempt == 0:
            self._log(f"POST {self.url} model={body.get('model')} stream={str(body.get('stream')).lower()}")
        return time.monotonic()

    def _log_response(self, response: httpx.Response, started: float) -> None:
        request_id = response.headers.get("x-request-id") or response.headers.get("x-tt-logid") or "-"
        elapsed = time.monotonic() - started
        self._log(f"{response.status_code} {response.reason_phrase} in {elapsed:.3f} s, request id {request_id}")


class _Head:
    """Passes a body's chunks through, keeping its first bytes for an error message."""

    SIZE = 200

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self.text = b""

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            if len(self.text) < self.SIZE:
                self.text += chunk[: self.SIZE - len(self.text)]
            yield chunk


SSE_LINE_STARTS = (b"data", b"event", b"id", b"retry", b":")


def _looks_like_sse(head: bytes) -> bool:
    """Whether a body begins as Server-Sent Events do (an empty body counts: it was cut)."""
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    return not head or head.startswith(SSE_LINE_STARTS)


def _not_a_stream(content: bytes) -> ApiError:
    excerpt = one_line(content.decode("utf-8", "replace"), 120)
    return ApiError(f"the server's answer is not an event stream: {excerpt}", code="invalid_response")


def _answer_of(response: httpx.Response) -> dict:
    """A whole 200 response's object; an error object or a malformed answer raises."""
    try:
        data = response.json()
    except ValueError:
        raise ApiError("the server's answer is not JSON", status=response.status_code) from None
    problem = answer_problem(data)
    if problem:
        raise problem
    return data


def _chunk_from_event(data: str, yielded: bool) -> dict | None:
    """A chunk object, None for [DONE]; an error event or a malformed one raises."""
    if data == "[DONE]":
        return None
    try:
        chunk = json.loads(data)
    except ValueError:
        raise StreamError(f"the stream carried an event that is not JSON: {data[:80]!r}") from None
    problem = answer_problem(chunk, chunk=True)
    if problem:
        if yielded:
            raise StreamError(problem.message)
        raise problem
    return chunk


def _says_something(chunk: dict) -> bool:
    """More than a role: text, reasoning, tool calls, a finish_reason or usage."""
    if chunk.get("usage"):
        return True
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if choice.get("finish_reason") or any(value for key, value in delta.items() if key != "role"):
            return True
    return False


def _has_finish_reason(chunk: dict) -> bool:
    return any(choice.get("finish_reason") for choice in chunk.get("choices") or ())
