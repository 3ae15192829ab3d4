"""What an answer means, sans-I/O: the protocol both transport shells share.

client.py (httpx, for complete and chat) and batch/runner.py (aiohttp, for batch) do the
I/O and hand this module what came back: a status with headers and body bytes, a
stream's bytes, or a neutral description of a network failure (`NetFailure`, to which
each shell maps its library's exceptions). It answers with what follows: an answer and
its parts (`read_answer`, `AnswerStream`, `Reply`), a retry and when (`Attempts`), or a
failure as the user sees it (an AnyfastError: exit code, one line, a code for batch lines).
So the two paths cannot drift apart: they have nothing of their own to decide.

The status decides, never the Content-Type: gateways running new-api send an error with
`Content-Type: text/event-stream` when the request asked for a stream.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from anyfast_cli.errors import (
    MESSAGE_LIMIT,
    AnyfastError,
    ApiError,
    NetworkError,
    StreamError,
    api_error_for_status,
    one_line,
)
from anyfast_cli.retry import MAX_RETRY_AFTER, plan_retry
from anyfast_cli.sse import EventTooLarge, SSEDecoder
from anyfast_cli.structured import load_json
from anyfast_cli.text import fix_surrogates, is_high_surrogate, parse_whole

NETWORK_HINT = "check the network and the base URL"
NO_ANSWER_STATUSES = (204, 205)  # success, by definition without a body
REQUEST_ID_HEADERS = ("x-request-id", "x-oneapi-request-id", "x-tt-logid")
MODEL_NOT_FOUND = "model_not_found"  # new-api: no channel serves this model (configuration, not load)
INSUFFICIENT_QUOTA = "insufficient_quota"  # a 429 for billing, not for rate


def header_text(value) -> str:
    """A header value or reason phrase as safe text: bytes that are not UTF-8 (or that a
    library decoded with surrogate escapes) become U+FFFD instead of crashing a write later."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    try:
        return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that no byte could have made
        return str(value).encode("utf-8", "replace").decode("utf-8")


def request_id_of(headers: Mapping[str, str]) -> str | None:
    for name in REQUEST_ID_HEADERS:
        value = headers.get(name)
        if value:
            return header_text(value)
    return None


def is_answer_status(status: int) -> bool:
    """Whether a response's body should hold the answer (any 2xx that may have a body)."""
    return 200 <= status < 300 and status not in NO_ANSWER_STATUSES


# --- how much of a body is read ----------------------------------------------------------------
# Sizes are of the decoded body (after gzip or deflate), so a small compressed body that
# inflates to gigabytes stops at the same bound. Parsing a whole answer takes a few times its
# size (the bytes, the decoded text, the objects), and batch holds one per request in flight.

MIB = 1024 * 1024
# A whole (non-streamed) answer. 128k tokens of text are about 0.5 MB; logprobs or several
# choices make a few MB. Past 32 MiB it is not an answer anyone asked for.
MAX_BODY_BYTES = 32 * MIB
# A streamed answer, all its events together. Each token comes in a chunk object of ~200 bytes,
# so 128k tokens of answer and as many of reasoning are ~50 MB; an endless stream stops here.
MAX_STREAM_BYTES = 256 * MIB
# An error response: its message is in the first few KB; the rest is not read.
ERROR_BODY_BYTES = 64 * 1024


def too_large(what: str, limit: int) -> ApiError:
    """A body past its limit: a final failure, never retried."""
    size = f"{limit // MIB} MiB" if limit >= MIB else f"{limit // 1024} KiB"
    return ApiError(f"the server's {what} is larger than {size}; anyfast stopped reading it", code="too_large")


def declared_length(headers: Mapping[str, str]) -> int | None:
    return parse_whole(header_text(headers.get("content-length")).strip())


class Body:
    """A response body read up to a bound, bytes in (sans-I/O): the shell feeds each piece it
    reads, and stops early when `full`. An answer past MAX_BODY_BYTES (decoded, or as
    Content-Length declares it) is an error; of an error response only the first
    ERROR_BODY_BYTES are kept, which hold its message."""

    def __init__(self, status: int, headers: Mapping[str, str]) -> None:
        self.answer = is_answer_status(status)
        self.limit = MAX_BODY_BYTES if self.answer else ERROR_BODY_BYTES
        self.full = False
        self._buffer = bytearray()
        length = declared_length(headers)
        if self.answer and length is not None and length > self.limit:
            raise too_large("answer", self.limit)  # said in advance: not one byte needs reading

    def feed(self, data: bytes) -> None:
        room = self.limit - len(self._buffer)
        if len(data) > room:
            if self.answer:
                raise too_large("answer", self.limit)
            data = data[:room]
        self._buffer += data
        if not self.answer and len(self._buffer) >= self.limit:
            self.full = True  # an error's message is in what was kept; the rest need not be read

    @property
    def content(self) -> bytearray:
        """What was read (a bytearray, not copied: json.loads takes it as it is)."""
        return self._buffer


# --- failures an HTTP status means -----------------------------------------------------------


def status_summary(status: int, reason="") -> str:
    """ "HTTP 503 Service Unavailable", as errors begin."""
    return f"HTTP {status}" + (f" {header_text(reason)}" if reason else "")


def status_failure(
    status: int, headers: Mapping[str, str], content: bytes, reason: str = "", *, model: str | None = None
) -> ApiError:
    """The error a non-answer status means: a redirect (never followed), a bodiless
    success, or the server's own error object."""
    summary = status_summary(status, reason)
    if 300 <= status < 400:
        location = header_text(headers.get("location"))
        where = f"redirects to {one_line(location, 200)}" if location else "redirects without saying where"
        return ApiError(
            f"{summary}: the server {where}; anyfast does not follow redirects",
            status=status,
            code="redirect",
            hint="set --base-url (or ANYFAST_BASE_URL) to the new address",
        )
    if status < 300:
        return ApiError(f"{summary}: the server sent no answer", status=status, code="invalid_response")
    return error_from_response(status, content, reason, model=model)


def error_from_response(status: int, content: bytes, reason: str = "", *, model: str | None = None) -> ApiError:
    """The server's own message when the body is an error object (OpenAI's shape, or
    other frameworks' `message`/`detail`); else the start of the body."""
    message, code, body = None, None, None
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        message = content.decode("utf-8", "replace")
    else:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message = error.get("message")
            code = error.get("code") or error.get("type")
        elif isinstance(error, str):
            message = error
        elif isinstance(body, dict) and isinstance(body.get("message") or body.get("detail"), str):
            message = body.get("message") or body["detail"]
        else:
            message = content.decode("utf-8", "replace")
    summary = status_summary(status, reason)
    message = one_line(message) if isinstance(message, str) and message.strip() else ""
    text = f"{summary}: {message}" if message else summary
    code = str(code) if code is not None else None
    hint = _hint(status)
    if code == MODEL_NOT_FOUND:
        text = f"model '{model}' is not available here: {text}" if model else text
        hint = "check the model name (-m); the gateway has no channel that serves it"
    return api_error_for_status(status, text, code=code, hint=hint, body=body)


def _hint(status: int) -> str | None:
    if status in (401, 403):
        return "check ANYFAST_API_KEY, --api-key or the config's api_key"
    if status == 404:
        return "check the model name (-m) and the base URL"
    return None


def is_final(error: ApiError) -> bool:
    """Failures that a retry cannot mend, whatever their status says."""
    return error.code in (MODEL_NOT_FOUND, INSUFFICIENT_QUOTA, "redirect", "invalid_response")


def is_rate_limit(error: ApiError) -> bool:
    """A 429 (read by status_failure) that asks to slow down (batch paces itself by these), not
    one that says the account's credit is gone (OpenAI's `insufficient_quota`), which no waiting mends."""
    return error.status == 429 and error.code != INSUFFICIENT_QUOTA


# --- network failures: one wording for both transports -----------------------------------------


@dataclass(frozen=True)
class NetFailure:
    """A network failure, described without any HTTP library's types. `kind` is one of:
    refused (cannot connect), connect_timeout, read_timeout, closed (the connection ended
    before the answer did), tls (the certificate is not trusted), proxy (the proxy cannot
    be reached), headers_too_large, other."""

    kind: str
    detail: str = ""


RETRIED_NETWORK_KINDS = frozenset({"refused", "connect_timeout", "read_timeout", "closed", "proxy", "other"})


def failure_kind_from_chain(exc: BaseException) -> tuple[str | None, str]:
    """What an HTTP library's exception wraps: ("tls", why) for a certificate that is not
    trusted, else (None, the OS's words such as "connection refused") when there are any."""
    seen: set[int] = set()
    detail = ""
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ == "SSLCertVerificationError":
            return "tls", getattr(exc, "verify_message", "") or str(exc)
        if isinstance(exc, OSError) and not detail and (exc.errno or exc.strerror):
            # The OS's own words for the errno: asyncio's strerror is "Connect call failed (…)".
            words = exc.strerror or ""
            if words.startswith("Connect call failed") and isinstance(exc.errno, int) and exc.errno > 0:
                words = os.strerror(exc.errno)
            detail = words[:1].lower() + words[1:]
        exc = exc.__cause__ or exc.__context__
    return None, detail


def describe_network_failure(
    failure: NetFailure, target: str, *, read_timeout: float | None = None, proxy: str | None = None
) -> str:
    detail = failure.detail
    if failure.kind == "refused":
        return f"cannot connect to {target}" + (f": {detail}" if detail else "")
    if failure.kind == "connect_timeout":
        return f"timed out connecting to {target}"
    if failure.kind == "read_timeout":
        return f"timed out waiting for {target}" + (f" (no data for {read_timeout:g} s)" if read_timeout else "")
    if failure.kind == "closed":
        return f"{target} closed the connection before the answer was complete"
    if failure.kind == "tls":
        return f"cannot verify the TLS certificate of {target}" + (f": {detail}" if detail else "")
    if failure.kind == "proxy":
        return f"cannot connect to the proxy {proxy or 'server'}" + (f": {detail}" if detail else "")
    return f"connection to {target} failed" + (f": {detail}" if detail else "")


def network_error(failure: NetFailure, target: str, *, read_timeout: float | None = None, proxy: str | None = None):
    """The error a user sees for a network failure that is not retried (again)."""
    if failure.kind == "headers_too_large":
        from anyfast_cli.transport import MAX_HEADER_BYTES

        return ApiError(
            f"the server's response headers are larger than {MAX_HEADER_BYTES // 1024} KiB", code="invalid_response"
        )
    message = describe_network_failure(failure, target, read_timeout=read_timeout, proxy=proxy)
    if failure.kind == "tls":
        return NetworkError(
            message, hint="for a private CA, set SSL_CERT_FILE (or SSL_CERT_DIR) to its certificate", code="tls_error"
        )
    return NetworkError(
        message, hint=NETWORK_HINT, code="timeout" if failure.kind.endswith("timeout") else "network_error"
    )


# --- retries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retry:
    delay: float  # seconds to wait before the next attempt
    note: str  # for -v: "retry 1 of 2 in 0.50 s after HTTP 503"
    retry_after: float | None = None  # what the server asked for, if it said
    # For --events (events.py), the same retry told as fields: which retry this is (1 = the
    # first), the status or the network failure that caused it, and the error's own words.
    number: int = 1
    status: int | None = None
    failure: str | None = None  # NetFailure.kind
    reason: str = ""


DEADLINE_SLACK = 0.01  # seconds: a timer may fire a clock tick before the deadline it was set for


class Attempts:
    """One request's attempts: after each failure, a Retry, or the final error raised.
    The shells' loops only do the I/O, the sleeping and the logging around it.

    --max-time (`max_time`) bounds them all: the clock starts with the first attempt (the
    first `time_left()`); each attempt gets what is left (`timeouts()`, checked again between
    reads with `time_left()`); a failure once it has run out is the --max-time error, never
    retried, and a retry whose wait would outlast it is not made."""

    def __init__(
        self,
        *,
        retries: int,
        target: str,
        model: str | None = None,
        read_timeout: float | None = None,
        proxy: str | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
        max_time: float | None = None,
        timer: Callable[[], float] = time.monotonic,
        deadline: float | None = None,
        began: str | None = None,
    ) -> None:
        self.retries = retries
        self.number = 0  # attempts that failed so far
        self._target = target
        self._model = model
        self._read_timeout = read_timeout
        self._proxy = proxy
        self._rng = rng or random.Random()
        self._clock = clock or (lambda: 0.0)  # wall time, for a Retry-After given as a date
        self.max_time = max_time
        self._timer = timer  # monotonic, for the deadline
        # Set by the first time_left(), or given: a fallback's request keeps the deadline of the
        # chain's first (--max-time covers the whole chain).
        self._deadline: float | None = deadline
        self._began = began  # what the given deadline covered before this request, named if it runs out

    # --- the deadline (--max-time) ---

    def time_left(self) -> float | None:
        """Seconds the request may still take (None: no --max-time). The first call starts
        the clock; once no time is left it raises the --max-time error."""
        if self.max_time is None:
            return None
        now = self._timer()
        if self._deadline is None:
            self._deadline = now + self.max_time
        left = self._deadline - now
        if left <= DEADLINE_SLACK:
            raise self.out_of_time()
        return left

    def timeouts(self, connect: float | None, read: float | None) -> tuple[float | None, float | None]:
        """The next attempt's (connect, read) timeouts: the configured ones, cut to the time left."""
        left = self.time_left()
        if left is None:
            return connect, read
        return (left if connect is None else min(connect, left)), (left if read is None else min(read, left))

    def leaves_time_for(self, delay: float) -> bool:
        """Whether waiting `delay` seconds before another attempt still ends inside --max-time."""
        return self._deadline is None or self._timer() + delay < self._deadline - DEADLINE_SLACK

    def out_of_time(self) -> NetworkError:
        what = f"{self._began} and the request" if self._began else "the request"
        return NetworkError(
            f"{what} took longer than --max-time {self.max_time:g} s",
            code="timeout",
            hint="raise --max-time (or the config's max_time) if the answer needs longer",
        )

    def _expired(self) -> bool:
        return self._deadline is not None and self._timer() >= self._deadline - DEADLINE_SLACK

    def expired(self) -> bool:
        """--max-time has run out (a fallback is then not tried)."""
        return self._expired()

    @property
    def deadline(self) -> float | None:
        """The --max-time deadline (a monotonic reading), once the first attempt has started it."""
        return self._deadline

    def no_time_note(self) -> str:
        """Added to an error that was not retried because --max-time would run out first."""
        return f" (not retried: --max-time {self.max_time:g} s would run out first)"

    def too_late_to_retry(self, error: Exception, delay: float) -> bool:
        """A retry that the deadline would cut short is not made; the error says why."""
        if self.leaves_time_for(delay):
            return False
        error.message += self.no_time_note()
        return True

    # --- after a failed attempt ---

    def after_status(self, status: int, headers: Mapping[str, str], content: bytes, reason: str = "") -> Retry:
        return self.after_error(status_failure(status, headers, content, reason, model=self._model), headers)

    def after_error(self, error: ApiError, headers: Mapping[str, str]) -> Retry:
        """after_status, for a status whose body the shell has already read (status_failure)."""
        if is_final(error):
            raise error
        status = error.status
        plan = plan_retry(self.number, self.retries, self._rng, status=status, headers=headers, now=self._clock())
        if plan.delay is None:
            if plan.wait_too_long:  # the wait was why
                error.message += f" (the server asks to wait {plan.retry_after:.0f} s; anyfast waits at most {MAX_RETRY_AFTER:.0f} s)"
            raise error
        if self.too_late_to_retry(error, plan.delay):
            raise error
        return self._next(plan.delay, f"HTTP {status}", error, plan.retry_after, status=status)

    def after_network(self, failure: NetFailure) -> Retry:
        if self._expired():  # the timeout that ended this attempt was the deadline's
            raise self.out_of_time()
        error = network_error(failure, self._target, read_timeout=self._read_timeout, proxy=self._proxy)
        if failure.kind not in RETRIED_NETWORK_KINDS:
            raise error
        plan = plan_retry(self.number, self.retries, self._rng)
        if plan.delay is None or self.too_late_to_retry(error, plan.delay):
            raise error
        return self._next(plan.delay, error.message, error, failure=failure.kind)

    def _next(
        self,
        delay: float,
        after: str,
        error: Exception,
        retry_after: float | None = None,
        *,
        status: int | None = None,
        failure: str | None = None,
    ) -> Retry:
        self.number += 1
        return Retry(
            delay,
            f"retry {self.number} of {self.retries} in {delay:.2f} s after {after}",
            retry_after,
            number=self.number,
            status=status,
            failure=failure,
            reason=getattr(error, "message", "") or str(error),
        )


# --- answers -----------------------------------------------------------------------------------


def read_answer(content: bytes, status: int = 200, reason: str = "OK") -> dict:
    """A whole response's object; an error object or a malformed answer raises ApiError."""
    if not content or content.isspace():  # not .strip(): that would copy a large body
        raise ApiError(
            f"{status_summary(status, reason)}: the server sent no answer", status=status, code="invalid_response"
        )
    try:
        data = json.loads(content)
    except (ValueError, RecursionError):
        raise ApiError("the server's answer is not JSON", code="invalid_response") from None
    if content.count(b"[") + content.count(b"{") > MAX_NESTING and nested_deeper(data, MAX_NESTING):
        raise ApiError(f"the server's answer is JSON nested more than {MAX_NESTING} deep", code="invalid_response")
    problem = answer_problem(data)
    if problem:
        raise problem
    return data


def read_json(content: bytes) -> object:
    """A whole JSON body that is not a chat completion (`GET /models`)."""
    try:
        data = json.loads(content)
    except (ValueError, RecursionError):
        raise ApiError("the server's answer is not JSON", code="invalid_response") from None
    if nested_deeper(data, MAX_NESTING):
        raise ApiError(f"the server's answer is JSON nested more than {MAX_NESTING} deep", code="invalid_response")
    return data


# How deep a whole answer may nest. A chat completion nests about 6 deep (tool arguments and
# structured output are strings inside it); an answer that parsed may still be too deep for
# the writer, which sits deeper in the stack (a batch line wraps the body in two more levels).
MAX_NESTING = 200


def nested_deeper(data, limit: int) -> bool:
    """Whether lists and objects in `data` nest more than `limit` deep (without recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def whole_as_chunk(data: dict) -> dict:
    """A whole response shaped as one stream chunk (some gateways answer a stream request so;
    a cache hit is replayed so). What a whole answer tells by position, a stream must say by
    index: each choice keeps its place, and each tool call gets the `index` that keeps it
    apart from the others (pieces without one are joined to the call before them)."""
    choices = []
    for position, choice in enumerate(data.get("choices") or []):
        delta = choice.get("message") or {}
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            delta = {
                **delta,
                "tool_calls": [
                    {**call, "index": number} if isinstance(call, dict) else call for number, call in enumerate(calls)
                ],
            }
        choices.append(
            {"index": choice.get("index", position), "delta": delta, "finish_reason": choice.get("finish_reason")}
        )
    return {**data, "choices": choices}


def error_in_body(data) -> ApiError | None:
    """An `{"error": …}` object in a 200 response or stream event."""
    if isinstance(data, dict) and data.get("error") and not data.get("choices"):
        error = data["error"]
        message = error.get("message") if isinstance(error, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        return ApiError(
            f"the server reported an error: {one_line(message or _shown(error))}",
            code=str(code) if code is not None else "error",
            body=data,
        )
    return None


def _shown(value) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)[:MESSAGE_LIMIT]
    except (ValueError, RecursionError):  # nested too deep to write back out
        return "an error object"


def answer_problem(data, *, chunk: bool = False) -> ApiError | None:
    """Why a 200 body (or, with chunk=True, a stream event) is not a usable answer:
    an error object, or not the shape of a chat completion."""
    # Runs once per stream event: plain loops, no generators.
    if isinstance(data, dict):
        if "error" in data:
            error = error_in_body(data)
            if error is not None:
                return error
        part = "delta" if chunk else "message"
        choices = data.get("choices")
        if choices is None and chunk:  # none: absent, or null (Go servers such as new-api write null for [])
            return None
        if isinstance(choices, list) and (chunk or choices):  # a whole answer has at least one choice
            for choice in choices:
                if not isinstance(choice, dict) or not isinstance(choice.get(part) or {}, dict):
                    break
            else:
                return None
    what = "stream event" if chunk else "answer"
    return ApiError(f"the server's {what} is not a chat completion", code="invalid_response", body=data)


SSE_LINE_STARTS = (b"data:", b"event:", b"id:", b"retry:", b":")
HEAD_SIZE = 200  # bytes of a body kept to show in an error


class StreamTruncated(Exception):
    """The body ended before [DONE] or a finish_reason: the connection was cut."""


HELD_CHUNKS = 16  # silent opening chunks held back at most; past them they go out (no retry after that)
MAX_CHOICES = 128  # choice indexes a stream may open: OpenAI's largest `n`


class AnswerStream:
    """A streamed answer, bytes in, chunk objects out. Opening role-only chunks are held
    back until something is said, so a failure before then can still be retried
    (`emitted` tells the shell whether anything has gone out). Past `limit` bytes
    (MAX_STREAM_BYTES, decoded) or an event past the SSE decoder's limit, the stream is an
    ApiError: its memory stays bounded, whatever it sends.

    What a user sees must not depend on where TCP split the bytes: when a read holds good
    chunks and then a bad event (an error event, a chunk that is not a chat completion, the
    size limit), feed() returns the good ones and holds the failure in `failure`; the shell
    stops reading at `ended` and close() raises it, after the caller has shown the rest."""

    def __init__(self, limit: int | None = None) -> None:
        self._decoder = SSEDecoder()
        self._limit = limit if limit is not None else MAX_STREAM_BYTES
        self.received = 0  # bytes fed so far
        self._held: list[dict] = []
        self.head = b""
        self.emitted = False
        self.done = False  # [DONE] arrived
        self.failure: AnyfastError | None = None  # found after the chunks feed() last returned
        self._open_choices: set = set()  # choice indexes seen without a finish_reason yet
        self._finished_any = False
        self._closing = False
        self.usage = None  # the last usage object the stream carried (for the request's result)
        self.finish_reason: str | None = None  # the first finish_reason sent

    @property
    def ended(self) -> bool:
        """Nothing more need be read: [DONE] arrived, or a failure waits for close()."""
        return self.done or self.failure is not None

    def feed(self, data: bytes) -> list[dict]:
        if self.failure is not None:
            raise self.failure
        failure = None
        self.received += len(data)
        if self.received > self._limit:
            failure = too_large("streamed answer", self._limit)
            data = data[: len(data) - (self.received - self._limit)]  # the bytes within the limit still count
        if len(self.head) < HEAD_SIZE:
            self.head += data[: HEAD_SIZE - len(self.head)]
        try:
            events = self._decoder.feed(data)
        except EventTooLarge as exc:
            events, failure = exc.events, too_large("stream event", exc.limit)
        out = self._chunks(events)
        # A bad event before it comes first; after [DONE] nothing counts, as in a later read.
        if failure is not None and self.failure is None and not self.done:
            self.failure = failure
        return out

    @property
    def finished(self) -> bool:
        """Every choice that began has sent its finish_reason."""
        return self._finished_any and not self._open_choices

    def close(self) -> list[dict]:
        """The body has ended (or `ended` stopped the reading): the last chunks, or the
        failure held, StreamTruncated or an ApiError if it ended badly."""
        if self.failure is not None:
            raise self.failure
        self._closing = True  # an event left open at the end may have been cut in the middle
        try:
            # The decoder's last event, if any: it is one event, so a failure in it loses nothing.
            out = [] if self.done else self._chunks(self._decoder.close())
        except EventTooLarge as exc:
            raise too_large("stream event", exc.limit) from None
        if self.failure is not None:
            raise self.failure
        if not (self.done or self.finished):
            if not self.emitted and not self._held and not _looks_like_sse(self.head):
                raise _not_a_stream(self.head)  # text, but not SSE at all: retrying won't help
            raise StreamTruncated()
        out += self._held
        self._held = []
        return out

    def _chunks(self, events: list[str]) -> list[dict]:
        """The chunks these events (their data) make; a bad one ends them, and is held in
        `failure`. The per-chunk hot path of every stream: a plain chunk (_is_plain) is
        parsed, shape-checked once and passed on."""
        out: list[dict] = []
        if self.done:
            return out
        try:
            for data in events:
                if data == "[DONE]":
                    self.done = True
                    break
                try:
                    chunk = load_json(data)
                except (ValueError, RecursionError):
                    self._unreadable(data)  # raises, unless it is a finished answer's cut tail
                    continue
                if _is_plain(chunk):  # what answer_problem and _note_choices would conclude, without their work
                    self._open_choices.add(0)
                    if self.emitted:
                        out.append(chunk)
                        continue
                else:
                    self._check(chunk)
                if not self.emitted and not _says_something(chunk) and len(self._held) < HELD_CHUNKS:
                    self._held.append(chunk)
                    continue
                if self._held:
                    out += self._held
                    self._held = []
                self.emitted = True
                out.append(chunk)
        except AnyfastError as failure:
            self.failure = failure
        return out

    def _unreadable(self, data: str) -> None:
        """An event that is not JSON: the stream's failure, unless it is the last event, cut
        short after every choice finished (nothing is lost then)."""
        if self._closing:  # the last event, cut short: the connection broke (or a finished answer's tail)
            if self.finished:
                return
            raise StreamTruncated() from None
        raise StreamError(f"the stream carried an event that is not JSON: {data[:80]!r}") from None

    def _check(self, chunk) -> None:
        """A chunk off the plain path: a problem in it ends the stream; its choices are noted."""
        problem = answer_problem(chunk, chunk=True)
        if problem:
            if self.emitted:
                raise StreamError(problem.message)
            raise problem
        self._note_choices(chunk)

    def _note_choices(self, chunk: dict) -> None:
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            if not isinstance(index, (int, str)):
                index = None  # a list or an object cannot be a set member; one odd index stands for all
            if choice.get("finish_reason"):
                if self.finish_reason is None:
                    self.finish_reason = str(choice["finish_reason"])
                self._open_choices.discard(index)
                self._finished_any = True
            else:
                self._open_choices.add(index)
                if len(self._open_choices) > MAX_CHOICES:
                    raise ApiError(
                        f"the server's stream opened more than {MAX_CHOICES} choices", code="invalid_response"
                    )


def _is_plain(chunk) -> bool:
    """Nearly every chunk of a stream: choice 0's delta alone, not finished, no usage, no error.
    Such a chunk is a valid event (answer_problem would find nothing) whose only news for
    _note_choices is that choice 0 is open; the hot path checks this shape and skips both."""
    if type(chunk) is not dict or "error" in chunk or chunk.get("usage"):
        return False
    choices = chunk.get("choices")
    if type(choices) is not list or len(choices) != 1:
        return False
    choice = choices[0]
    if type(choice) is not dict or choice.get("finish_reason") or type(choice.get("delta")) is not dict:
        return False
    index = choice.get("index", 0)
    return type(index) is int and index == 0


def _looks_like_sse(head: bytes) -> bool:
    """Whether a body begins as Server-Sent Events do (an empty body counts: it was cut)."""
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    return not head or head.startswith(SSE_LINE_STARTS)


def _not_a_stream(content: bytes) -> ApiError:
    excerpt = one_line(content.decode("utf-8", "replace"), 120)
    return ApiError(f"the server's answer is not an event stream: {excerpt}", code="invalid_response")


def _says_something(chunk: dict) -> bool:
    """More than a role: text, reasoning, tool calls, a finish_reason or usage."""
    if chunk.get("usage"):
        return True
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if choice.get("finish_reason") or any(value for key, value in delta.items() if key != "role"):
            return True
    return False


# --- an answer's parts -----------------------------------------------------------------------


@dataclass
class Reply:
    """What an answer has delivered so far; kept when a stream is cut short.

    Its text is kept only with `keep_text` (chat --save and the interactive session need it;
    a `complete` prints each delta and forgets it, so its memory does not grow with the
    answer). Deltas come out clean: a UTF-16 surrogate half that ends one delta is held and
    joined with the half that opens the next (relays split an emoji so), and a lone half
    becomes U+FFFD; `end()` gives what is still held when the answer stops. `mask`, if given,
    is applied to the kept text (the key, should the answer echo it, is not saved)."""

    content_parts: list = field(default_factory=list)
    reasoning_parts: list = field(default_factory=list)
    usage: dict | None = None
    finish_reason: str | None = None  # of the first choice; None until one arrives
    keep_text: bool = True
    said: bool = False  # some content arrived (kept or not)
    mask: Callable[[str], str] | None = None
    _halves: dict = field(default_factory=dict)  # "content"/"reasoning" -> a high surrogate held
    # Tool calls, by choice index: each a ToolCalls (kept whatever keep_text says: they are printed at the end).
    tool_calls: dict = field(default_factory=dict)
    # Choices other than the first (n > 1), by index: kept whole, printed after the first (output.py).
    others: dict = field(default_factory=dict)

    def absorb(self, chunk: dict) -> tuple[str | None, str | None]:
        """Take in a stream chunk (or a whole response); returns the first choice's new
        (reasoning, content) text, for the printer. Tool calls and other choices are collected."""
        # Nearly every chunk of a stream is plain (_is_plain), its delta only ASCII content (no
        # reasoning or tool calls): the fast path takes its text and needs none of the work below
        # (ASCII holds no surrogate half).
        if not self._halves and _is_plain(chunk):
            delta = chunk["choices"][0]["delta"]
            text = delta.get("content")
            if type(text) is str and text and text.isascii() and (len(delta) == 1 or _only_content(delta)):
                self.said = True
                if self.keep_text:
                    self.content_parts.append(text)
                return None, text
        usage = chunk.get("usage")
        if usage and isinstance(usage, dict):
            self.usage = usage
        reasoning = content = None
        for position, choice in enumerate(chunk.get("choices") or ()):
            index = choice_index(choice, position if "message" in choice else 0)
            part = choice.get("delta") or choice.get("message") or {}
            calls = part.get("tool_calls")
            if calls:
                self.tool_calls_of(index).absorb(calls, whole="message" in choice and "delta" not in choice)
            if index != 0:
                self._other(index).absorb(choice, part)
                continue
            reasoning = self._clean("reasoning", part.get("reasoning_content"))
            content = self._clean("content", part.get("content"))
            if content and self._halves.pop("reasoning", None):  # the reasoning has ended on half a character
                reasoning = (reasoning or "") + "\ufffd"
            self._keep(reasoning, content)
            finish = choice.get("finish_reason")
            if finish:
                self.finish_reason = finish if isinstance(finish, str) else str(finish)[:100]
        return reasoning, content

    def end(self) -> tuple[str | None, str | None]:
        """The answer stopped: a surrogate half still held is lone, U+FFFD; returns the
        (reasoning, content) text that this adds, for the printer."""
        reasoning, content = self._halves.pop("reasoning", None), self._halves.pop("content", None)
        reasoning, content = reasoning and "\ufffd", content and "\ufffd"
        self._keep(reasoning, content)
        return reasoning, content

    def _keep(self, reasoning: str | None, content: str | None) -> None:
        """Note what the first choice said; keep its text only when --save needs it."""
        if reasoning and self.keep_text:
            self.reasoning_parts.append(reasoning)
        if content:
            self.said = True
            if self.keep_text:
                self.content_parts.append(content)

    def _clean(self, name: str, value) -> str | None:
        if not value:
            return value if isinstance(value, str) else None
        if not isinstance(value, str):
            value = _as_text(value)
            if not value:
                return None
        held = self._halves.pop(name, None)
        if held:
            value = held + value
        if is_high_surrogate(value[-1]):  # its other half may open the next delta
            self._halves[name] = value[-1]
            value = value[:-1]
        return fix_surrogates(value) or None

    def tool_calls_of(self, index: int) -> ToolCalls:
        if index not in self.tool_calls:
            if len(self.tool_calls) >= MAX_CHOICES:
                raise ApiError(f"the server's answer holds more than {MAX_CHOICES} choices", code="invalid_response")
            self.tool_calls[index] = ToolCalls()
        return self.tool_calls[index]

    def _other(self, index: int) -> Choice:
        if index not in self.others:
            if len(self.others) >= MAX_CHOICES:
                raise ApiError(f"the server's answer holds more than {MAX_CHOICES} choices", code="invalid_response")
            self.others[index] = Choice(index)
        return self.others[index]

    @property
    def asks_for_tools(self) -> bool:
        """Some choice ended in tool calls (whatever its finish_reason says)."""
        return any(calls.calls for calls in self.tool_calls.values())

    def calls(self, index: int = 0) -> list[dict]:
        """A choice's tool calls, OpenAI-shaped, in the order they opened; with `mask`, the
        key masked in them, as in the text (chat --save keeps them)."""
        calls = self.tool_calls.get(index)
        shaped = calls.shaped() if calls else []
        if self.mask:
            for call in shaped:
                call["id"] = self.mask(call["id"])
                call["function"] = {name: self.mask(text) for name, text in call["function"].items()}
        return shaped

    @property
    def choice_count(self) -> int:
        return 1 + len(self.others)

    @property
    def cut_at_limit(self) -> bool:
        """finish_reason "length": the model ran out of max_tokens."""
        return self.finish_reason == "length"

    @property
    def content(self) -> str:
        text = "".join(self.content_parts)
        return self.mask(text) if self.mask else text

    @property
    def reasoning(self) -> str:
        text = "".join(self.reasoning_parts)
        return self.mask(text) if self.mask else text


def _as_text(value) -> str:
    """Content that is not a string: the text parts of a list of parts, a number as written."""
    if isinstance(value, list):
        return "".join(p["text"] for p in value if isinstance(p, dict) and isinstance(p.get("text"), str))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    return ""


def _only_content(delta: dict) -> bool:
    """A delta that says nothing but its content (a role, or empty fields, may come with it)."""
    return not any(value for key, value in delta.items() if key not in ("content", "role"))


def choice_index(choice: dict, default: int = 0) -> int:
    """A choice's index as a number; missing or odd, `default` (a whole answer's position)."""
    index = choice.get("index", default)
    if isinstance(index, bool):
        return default
    if isinstance(index, int):
        return index
    number = parse_whole(index.strip()) if isinstance(index, str) else None
    return default if number is None else number


MAX_TOOL_CALLS = 1024  # calls one choice may open: far past any model's parallel calls
MAX_ODD_PIECES = 100  # characters of a non-string name or id kept


def make_call_id() -> str:
    """An id for a call the server sent without one: a call without an id can never be
    answered (a `tool` message names the id it answers). Shaped like OpenAI's ids: "call_"
    and 24 characters (random hex, so two made in one conversation never collide)."""
    return "call_" + secrets.token_hex(12)


@dataclass
class ToolCall:
    id: str | None = None  # as the server sent it; None until a piece carries one
    type: str | None = None
    name_parts: list = field(default_factory=list)
    argument_parts: list = field(default_factory=list)
    made_id: str | None = None  # made once, when shaped without an id: stdout and --save show the same

    def shaped(self) -> dict:
        """OpenAI's shape: id, type, function {name, arguments}; arguments byte-exact as sent."""
        if self.id is None and self.made_id is None:
            self.made_id = make_call_id()
        return {
            "id": self.id or self.made_id,
            "type": self.type or "function",
            "function": {"name": "".join(self.name_parts), "arguments": "".join(self.argument_parts)},
        }


class ToolCalls:
    """One choice's tool calls, from whole messages or streamed pieces. A streamed piece
    carries `index` (the call's place), and its first piece `id`, `type` and the function's
    name; `function.arguments` arrive in pieces to be joined.

    Pieces are merged by index; the id only splits. Ids are not unique on every gateway (two
    calls may share one, and they are kept as sent), so an id never joins pieces of different
    indexes. But some gateways number every call 0: a piece whose id differs from the one its
    index's call already has opens a new call. A piece with an id for a call that has none yet
    (its arguments came first) fills that call in. A piece without an index continues the
    call its id names, else the latest call."""

    def __init__(self) -> None:
        self.calls: list[ToolCall] = []
        self._by_id: dict = {}  # id -> the latest call that has it (for pieces without an index)
        self._by_index: dict = {}  # index -> the call it last opened

    def absorb(self, pieces, *, whole: bool = False) -> None:
        if isinstance(pieces, dict):
            pieces = [pieces]
        if not isinstance(pieces, list):
            return
        for piece in pieces:
            if not isinstance(piece, dict):
                continue
            call_id = _piece_text(piece.get("id"))
            if whole:  # each call of a whole message is whole: no merging
                call = self._open(call_id)
            else:
                call = self._call_for(call_id, _call_index(piece.get("index")))
            self._extend(call, piece)

    def _call_for(self, call_id: str | None, index: int | None) -> ToolCall:
        """The call a streamed piece belongs to, opened or filled in as the piece says."""
        if index is not None:
            call = self._by_index.get(index)
        elif call_id is not None and call_id in self._by_id:
            call = self._by_id[call_id]
        else:
            call = self.calls[-1] if self.calls else None
        if call is None or (call_id is not None and call.id is not None and call_id != call.id):
            call = self._open(call_id)
        elif call_id is not None and call.id is None:
            call.id = call_id
            self._by_id[call_id] = call
        if index is not None:
            self._by_index[index] = call
        return call

    def _open(self, call_id: str | None) -> ToolCall:
        if len(self.calls) >= MAX_TOOL_CALLS:
            raise ApiError(f"the server's answer holds more than {MAX_TOOL_CALLS} tool calls", code="invalid_response")
        call = ToolCall(id=call_id)
        self.calls.append(call)
        if call_id is not None:
            self._by_id[call_id] = call
        return call

    @staticmethod
    def _extend(call: ToolCall, piece: dict) -> None:
        kind = _piece_text(piece.get("type"))
        if kind and not call.type:
            call.type = kind
        function = piece.get("function")
        if not isinstance(function, dict):
            return
        name = function.get("name")
        if isinstance(name, str) and name and "".join(call.name_parts) != name:
            call.name_parts.append(name)  # a name repeated in every piece is kept once
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            if arguments:
                call.argument_parts.append(arguments)
        elif arguments is not None:  # an object where a string belongs: as compact JSON
            call.argument_parts.append(json.dumps(arguments, ensure_ascii=False, separators=(",", ":")))

    def shaped(self) -> list[dict]:
        return [call.shaped() for call in self.calls]


def _call_index(value) -> int | None:
    """A streamed piece's index as a number (0 and "0" are one call); missing or odd, None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return parse_whole(value.strip()) if isinstance(value, str) else None


def _piece_text(value) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)[:MAX_ODD_PIECES]


@dataclass
class Choice:
    """One choice's text kept whole: a choice other than the first (n > 1), printed at the end,
    or any choice of a stream assembled into a whole response (assembly.py)."""

    index: int
    content_parts: list = field(default_factory=list)
    reasoning_parts: list = field(default_factory=list)
    finish_reason: str | None = None

    def absorb(self, choice: dict, part: dict) -> None:
        for name, parts in (("content", self.content_parts), ("reasoning_content", self.reasoning_parts)):
            value = part.get(name)
            if value and not isinstance(value, str):
                value = _as_text(value)
            if value:
                parts.append(value)
        finish = choice.get("finish_reason")
        if finish:
            self.finish_reason = finish if isinstance(finish, str) else str(finish)[:100]

    @property
    def content(self) -> str:
        return fix_surrogates("".join(self.content_parts))

    @property
    def reasoning(self) -> str:
        return fix_surrogates("".join(self.reasoning_parts))


def tool_calls_in(data: dict) -> bool:
    """Whether a whole answer asks for tool calls (in any choice, whatever its finish_reason)."""
    for choice in data.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and message.get("tool_calls"):
            return True
    return False
