"""The sans-I/O protocol (exchange.py): statuses, answers, streams, retries, network wording.

Pure tables: no sockets, no sleeping. The shells (client.py, batch/runner.py) only do the
I/O around these decisions, so each decision is pinned down here once.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import random
import socket
import ssl
import sys

import httpx
import pytest
from helpers import NOW

from anyfast_cli import exchange
from anyfast_cli.errors import (
    ApiAuthError,
    ApiError,
    ExitCode,
    NetworkError,
    RateLimitError,
    StreamError,
)
from anyfast_cli.exchange import (
    NETWORK_HINT,
    RETRIED_NETWORK_KINDS,
    AnswerStream,
    Attempts,
    NetFailure,
    Reply,
    StreamTruncated,
    declared_length,
    describe_network_failure,
    error_from_response,
    failure_kind_from_chain,
    header_text,
    is_answer_status,
    network_error,
    read_answer,
    request_id_of,
    status_failure,
    whole_as_chunk,
)
from anyfast_cli.retry import MAX_RETRY_AFTER

TARGET = "api.example.com:443"
NEW_API_MESSAGE = "No available channel for model X under group default (distributor) (request id: 2025\u2026)"
NEW_API_BODY = json.dumps(
    {"error": {"code": "model_not_found", "message": NEW_API_MESSAGE, "type": "new_api_error"}}
).encode()


class NoJitter(random.Random):
    """Backoff without its random part: 0.5, 1, 2, 4, 8, 8, … seconds."""

    def random(self):
        return 0.0


def openai_error(message: str, code: str | None = None, type: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type, "code": code}}).encode()


def nested(depth: int, inner: bytes = b"1") -> bytes:
    return b"[" * depth + inner + b"]" * depth


# --- header_text, request_id_of, is_answer_status ---------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, ""),
        ("", ""),
        ("OK", "OK"),
        ("caf\u00e9 \u4e16\u754c", "caf\u00e9 \u4e16\u754c"),  # real text stays as it is
        (b"Too Many Requests", "Too Many Requests"),
        (b"caf\xc3\xa9", "caf\u00e9"),  # UTF-8 bytes
        (b"caf\xe9", "caf\ufffd"),  # Latin-1 bytes: not UTF-8
        (b"\xff\xfe", "\ufffd\ufffd"),
        ("caf\udce9", "caf\ufffd"),  # what bytes.decode("utf-8", "surrogateescape") gives
        ("\udcff\udcfe ok", "\ufffd\ufffd ok"),
        (429, "429"),
    ],
    ids=repr,
)
def test_header_text(value, expected):
    text = header_text(value)
    assert text == expected
    text.encode("utf-8")  # always writable


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({}, None),
        ({"x-request-id": "req-1"}, "req-1"),
        ({"x-oneapi-request-id": "2025abc"}, "2025abc"),
        ({"x-tt-logid": "log-9"}, "log-9"),
        ({"x-request-id": "req-1", "x-oneapi-request-id": "2025abc", "x-tt-logid": "log-9"}, "req-1"),
        ({"x-oneapi-request-id": "2025abc", "x-tt-logid": "log-9"}, "2025abc"),
        ({"x-request-id": "", "x-tt-logid": "log-9"}, "log-9"),  # an empty one is skipped
        ({"x-request-id": b"id-\xff"}, "id-\ufffd"),
        ({"x-request-id": "id-\udcff"}, "id-\ufffd"),
        ({"other": "x"}, None),
    ],
    ids=repr,
)
def test_request_id_of(headers, expected):
    assert request_id_of(headers) == expected


def test_request_id_of_real_headers_is_case_insensitive():
    assert request_id_of(httpx.Headers({"X-Request-Id": "req-7"})) == "req-7"


@pytest.mark.parametrize(
    "status, expected",
    [
        (200, True),
        (201, True),
        (203, True),
        (206, True),
        (299, True),
        (204, False),
        (205, False),
        (199, False),
        (101, False),
        (301, False),
        (404, False),
        (500, False),
    ],
)
def test_is_answer_status(status, expected):
    assert is_answer_status(status) is expected


# --- status_failure: redirects, bodiless successes, error bodies --------------------------------


@pytest.mark.parametrize(
    "status, headers, reason, expected_message",
    [
        (
            301,
            {"location": "https://new.example.com/v1/chat/completions"},
            "Moved Permanently",
            (
                "HTTP 301 Moved Permanently: the server redirects to https://new.example.com/v1/chat/completions; "
                "anyfast does not follow redirects"
            ),
        ),
        (302, {}, "", "HTTP 302: the server redirects without saying where; anyfast does not follow redirects"),
        (
            307,
            {"location": ""},
            "",
            "HTTP 307: the server redirects without saying where; anyfast does not follow redirects",
        ),
        (
            308,
            httpx.Headers({"Location": "/v2"}),
            "Permanent Redirect",
            "HTTP 308 Permanent Redirect: the server redirects to /v2; anyfast does not follow redirects",
        ),
        (
            303,
            {"location": b"https://x.example/caf\xe9"},
            "",
            "HTTP 303: the server redirects to https://x.example/caf\ufffd; anyfast does not follow redirects",
        ),
    ],
    ids=["301 with location", "302 without", "307 empty location", "308 real headers", "location not utf-8"],
)
def test_redirects_are_reported_not_followed(status, headers, reason, expected_message):
    error = status_failure(status, headers, b"<html>moved</html>", reason)
    assert type(error) is ApiError
    assert error.message == expected_message
    assert error.status == status
    assert error.code == "redirect"
    assert "--base-url" in error.hint and "ANYFAST_BASE_URL" in error.hint
    assert error.exit_code == ExitCode.API


def test_a_long_location_is_cut_to_one_line():
    error = status_failure(301, {"location": "https://x.example/" + "a" * 1000 + "\n\tb"}, b"")
    assert "\n" not in error.message and len(error.message) < 300


@pytest.mark.parametrize("status, reason", [(204, "No Content"), (205, "Reset Content"), (204, "")])
def test_bodiless_success_is_an_invalid_response(status, reason):
    error = status_failure(status, {}, b"", reason)
    assert type(error) is ApiError
    assert error.message == f"HTTP {status}" + (f" {reason}" if reason else "") + ": the server sent no answer"
    assert error.code == "invalid_response"
    assert error.status == status


# (status, body, reason, error class, message, code, hint contains)
ERROR_BODIES = [
    (
        "openai 400",
        400,
        openai_error("Invalid 'messages': empty array.", "invalid_value", "invalid_request_error"),
        "Bad Request",
        ApiError,
        "HTTP 400 Bad Request: Invalid 'messages': empty array.",
        "invalid_value",
        None,
    ),
    (
        "openai code null uses type",
        400,
        openai_error("bad temperature", None, "invalid_request_error"),
        "",
        ApiError,
        "HTTP 400: bad temperature",
        "invalid_request_error",
        None,
    ),
    (
        "openai 401",
        401,
        openai_error("Incorrect API key provided: sk-...abcd.", "invalid_api_key"),
        "Unauthorized",
        ApiAuthError,
        "HTTP 401 Unauthorized: Incorrect API key provided: sk-...abcd.",
        "invalid_api_key",
        "ANYFAST_API_KEY",
    ),
    ("403", 403, openai_error("forbidden"), "", ApiAuthError, "HTTP 403: forbidden", None, "--api-key"),
    (
        "404",
        404,
        openai_error("The model `gpt-9` does not exist", "model_not_found"),
        "",
        ApiError,
        "HTTP 404: The model `gpt-9` does not exist",
        "model_not_found",
        "check the model name (-m)",
    ),
    (
        "openai 429",
        429,
        openai_error("Rate limit reached", "rate_limit_exceeded", "requests"),
        "Too Many Requests",
        RateLimitError,
        "HTTP 429 Too Many Requests: Rate limit reached",
        "rate_limit_exceeded",
        None,
    ),
    ("empty 429", 429, b"", "Too Many Requests", RateLimitError, "HTTP 429 Too Many Requests", None, None),
    ("empty 429 no reason", 429, b"", "", RateLimitError, "HTTP 429", None, None),
    ("whitespace body", 500, b"  \r\n ", "", ApiError, "HTTP 500", None, None),
    (
        "new-api cpu overloaded",
        503,
        openai_error(
            "\u5f53\u524d\u5206\u7ec4\u8d1f\u8f7d\u5df2\u9971\u548c", "system_cpu_overloaded", "new_api_error"
        ),
        "Service Unavailable",
        ApiError,
        "HTTP 503 Service Unavailable: \u5f53\u524d\u5206\u7ec4\u8d1f\u8f7d\u5df2\u9971\u548c",
        "system_cpu_overloaded",
        None,
    ),
    (
        "error is a string",
        500,
        b'{"error": "upstream exploded"}',
        "",
        ApiError,
        "HTTP 500: upstream exploded",
        None,
        None,
    ),
    (
        "message shape",
        422,
        b'{"message": "max_tokens too large", "status": 422}',
        "",
        ApiError,
        "HTTP 422: max_tokens too large",
        None,
        None,
    ),
    (
        "detail shape",
        404,
        b'{"detail": "Not Found"}',
        "Not Found",
        ApiError,
        "HTTP 404 Not Found: Not Found",
        None,
        "base URL",
    ),
    (
        "detail list shows the body",
        422,
        b'{"detail": [{"loc": ["body"], "msg": "field required"}]}',
        "",
        ApiError,
        'HTTP 422: {"detail": [{"loc": ["body"], "msg": "field required"}]}',
        None,
        None,
    ),
    ("message wins over detail", 400, b'{"message": "m", "detail": "d"}', "", ApiError, "HTTP 400: m", None, None),
    ("error object without message", 500, b'{"error": {"code": "boom"}}', "", ApiError, "HTTP 500", "boom", None),
    ("message not a string", 500, b'{"error": {"message": {"x": 1}, "code": 7}}', "", ApiError, "HTTP 500", "7", None),
    ("json list", 500, b"[1, 2]", "", ApiError, "HTTP 500: [1, 2]", None, None),
    ("json string", 502, b'"bad gateway"', "", ApiError, 'HTTP 502: "bad gateway"', None, None),
    (
        "html",
        502,
        b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n</html>",
        "Bad Gateway",
        ApiError,
        "HTTP 502 Bad Gateway: <html> <head><title>502 Bad Gateway</title></head> </html>",
        None,
        None,
    ),
    (
        "plain text",
        500,
        b"upstream connect error or disconnect/reset before headers",
        "",
        ApiError,
        "HTTP 500: upstream connect error or disconnect/reset before headers",
        None,
        None,
    ),
    ("not utf-8 body", 500, b"caf\xe9 \xff", "", ApiError, "HTTP 500: caf\ufffd \ufffd", None, None),
    (
        "multi-line message",
        400,
        openai_error("line one\nline two\r\n\tthree"),
        "",
        ApiError,
        "HTTP 400: line one line two three",
        None,
        None,
    ),
    (
        "reason not utf-8 bytes",
        500,
        b"",
        b"Erreur interne du serveur \xe9",
        ApiError,
        "HTTP 500 Erreur interne du serveur \ufffd",
        None,
        None,
    ),
    ("reason surrogate-escaped", 503, b"", "Indisponible \udce9", ApiError, "HTTP 503 Indisponible \ufffd", None, None),
]


@pytest.mark.parametrize(
    "status, body, reason, cls, message, code, hint",
    [case[1:] for case in ERROR_BODIES],
    ids=[c[0] for c in ERROR_BODIES],
)
def test_error_bodies(status, body, reason, cls, message, code, hint):
    for error in (status_failure(status, {}, body, reason), error_from_response(status, body, reason)):
        assert type(error) is cls
        assert error.message == message
        assert error.code == code
        assert error.status == status
        if hint is None:
            assert error.hint is None
        else:
            assert hint in error.hint
        error.message.encode("utf-8")
        assert "\n" not in error.message


def test_error_body_is_kept_for_batch_lines():
    body = {"error": {"message": "m", "code": "c"}}
    assert status_failure(400, {}, json.dumps(body).encode()).body == body
    assert status_failure(500, {}, b"<html>").body is None


def test_a_long_error_message_is_cut():
    error = status_failure(500, {}, openai_error("x" * 5000))
    assert len(error.message) <= len("HTTP 500: ") + 300
    assert error.message.endswith("\u2026")


@pytest.mark.parametrize("model, prefix", [("X", "model 'X' is not available here: "), (None, "")])
@pytest.mark.parametrize("status", [503, 404, 400])
def test_new_api_model_not_found_names_the_model(status, model, prefix):
    error = status_failure(status, {}, NEW_API_BODY, "", model=model)
    assert error.message == f"{prefix}HTTP {status}: {NEW_API_MESSAGE}"
    assert error.code == "model_not_found"
    assert error.hint == "check the model name (-m); the gateway has no channel that serves it"


@pytest.mark.parametrize(
    "body",
    [
        nested(100_000),
        nested(100_000, b"{}"),
        b'{"error": ' + nested(50_000) + b"}",
        b'{"error": {"message": ' + nested(50_000) + b"}}",
        b"{" * 100_000,
    ],
    ids=["list", "list of objects", "error list", "error message", "unclosed objects"],
)
def test_deeply_nested_bodies_do_not_recurse_out(body):
    error = status_failure(500, {}, body)
    assert isinstance(error, ApiError)
    assert error.message.startswith("HTTP 500")
    assert len(error.message) < 400


def test_error_bodies_at_every_depth_near_the_recursion_limit():
    # json.loads succeeds just below the limit: whatever follows must not recurse either.
    for depth in range(1, sys.getrecursionlimit() + 50):
        error = status_failure(500, {}, b'{"error": ' + nested(depth) + b"}")
        assert isinstance(error, ApiError), depth


# --- Attempts: after a status ------------------------------------------------------------------


def attempts(retries: int = 2, **kwargs) -> Attempts:
    return Attempts(retries=retries, target=TARGET, rng=NoJitter(), clock=lambda: NOW, **kwargs)


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 599])
@pytest.mark.parametrize("retries", [0, 1, 3])
def test_retryable_statuses_are_retried_as_often_as_asked(status, retries):
    trier = attempts(retries)
    plans = []
    with pytest.raises(ApiError) as caught:
        for _ in range(retries + 1):
            plans.append(trier.after_status(status, {}, openai_error("busy")))
    assert [plan.delay for plan in plans] == [0.5, 1.0, 2.0][:retries]
    assert [plan.note for plan in plans] == [
        f"retry {n} of {retries} in {delay:.2f} s after HTTP {status}" for n, delay in zip((1, 2, 3), (0.5, 1.0, 2.0))
    ][:retries]
    assert all(plan.retry_after is None for plan in plans)
    assert caught.value.status == status
    assert caught.value.message == f"HTTP {status}: busy"
    assert trier.number == retries


def test_jittered_delays_stay_within_the_backoff():
    trier = Attempts(retries=6, target=TARGET, rng=random.Random(3))
    delays = [trier.after_status(503, {}, b"").delay for _ in range(6)]
    for delay, base in zip(delays, (0.5, 1, 2, 4, 8, 8)):
        assert base * 0.75 <= delay <= base


@pytest.mark.parametrize(
    "status, body, code",
    [
        (400, openai_error("bad"), "error"),
        (401, openai_error("bad key", "invalid_api_key"), "invalid_api_key"),
        (403, b"", None),
        (404, b'{"detail": "Not Found"}', None),
        (422, b"{}", None),
        (301, b"", "redirect"),
        (204, b"", "invalid_response"),
        (503, NEW_API_BODY, "model_not_found"),  # configuration, not load: 503 or not
        (500, NEW_API_BODY, "model_not_found"),
        (429, NEW_API_BODY, "model_not_found"),
    ],
)
def test_final_statuses_raise_at_once(status, body, code):
    trier = attempts(5, model="X")
    with pytest.raises(ApiError) as caught:
        trier.after_status(status, {"location": "https://elsewhere/", "retry-after": "1"}, body)
    assert caught.value.status == status
    if code not in (None, "error"):
        assert caught.value.code == code
    assert trier.number == 0


def test_new_api_model_not_found_is_not_retried_and_names_the_model():
    with pytest.raises(ApiError) as caught:
        attempts(3, model="X").after_status(503, {}, NEW_API_BODY, "Service Unavailable")
    assert caught.value.message.startswith(
        "model 'X' is not available here: HTTP 503 Service Unavailable: No available channel"
    )
    assert caught.value.code == "model_not_found"


def test_new_api_cpu_overloaded_is_retried():
    body = openai_error("\u8d1f\u8f7d\u5df2\u9971\u548c", "system_cpu_overloaded", "new_api_error")
    trier = attempts(2, model="X")
    assert trier.after_status(503, {}, body).note == "retry 1 of 2 in 0.50 s after HTTP 503"
    assert trier.after_status(503, {}, body).delay == 1.0
    with pytest.raises(ApiError) as caught:
        trier.after_status(503, {}, body)
    assert caught.value.code == "system_cpu_overloaded"


def test_empty_body_429_is_retried_then_rate_limited():
    trier = attempts(1)
    assert trier.after_status(429, {}, b"", "Too Many Requests").delay == 0.5
    with pytest.raises(RateLimitError) as caught:
        trier.after_status(429, {}, b"", "Too Many Requests")
    assert caught.value.message == "HTTP 429 Too Many Requests"
    assert caught.value.exit_code == ExitCode.RATE_LIMITED


@pytest.mark.parametrize(
    "headers, delay",
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "12.5"}, 12.5),
        ({"retry-after": str(int(MAX_RETRY_AFTER))}, MAX_RETRY_AFTER),
        ({"retry-after": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"retry-after": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        (httpx.Headers({"Retry-After": "7"}), 7.0),
    ],
    ids=repr,
)
@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(status, headers, delay):
    plan = attempts(3).after_status(status, headers, b"")
    assert plan.delay == pytest.approx(delay)
    assert plan.retry_after == pytest.approx(delay)
    assert plan.note == f"retry 1 of 3 in {delay:.2f} s after HTTP {status}"


def test_a_retry_after_date_uses_the_injected_clock():
    date = email.utils.formatdate(NOW + 45, usegmt=True)
    early = Attempts(retries=1, target=TARGET, rng=NoJitter(), clock=lambda: NOW)
    late = Attempts(retries=1, target=TARGET, rng=NoJitter(), clock=lambda: NOW + 40)
    assert early.after_status(503, {"retry-after": date}, b"").delay == pytest.approx(45)
    assert late.after_status(503, {"retry-after": date}, b"").delay == pytest.approx(5)


@pytest.mark.parametrize(
    "headers, asked",
    [
        ({"retry-after": "120"}, "120"),
        ({"retry-after": "60.5"}, "60"),
        ({"retry-after-ms": "3600000"}, "3600"),
        ({"retry-after": email.utils.formatdate(NOW + 3600, usegmt=True)}, "3600"),
    ],
    ids=repr,
)
@pytest.mark.parametrize("status, cls", [(429, RateLimitError), (503, ApiError)])
def test_a_too_long_retry_after_is_final_and_said(status, cls, headers, asked):
    trier = attempts(5)
    with pytest.raises(ApiError) as caught:
        trier.after_status(status, headers, openai_error("slow down"))
    assert type(caught.value) is cls
    assert caught.value.message == (
        f"HTTP {status}: slow down (the server asks to wait {asked} s; anyfast waits at most {MAX_RETRY_AFTER:.0f} s)"
    )
    assert trier.number == 0


@pytest.mark.parametrize("headers", [{"retry-after": "soon"}, {"retry-after": ""}, {"retry-after-ms": "x"}], ids=repr)
def test_an_unreadable_retry_after_falls_back_to_backoff(headers):
    plan = attempts(2).after_status(503, headers, b"")
    assert plan.delay == 0.5
    assert plan.retry_after is None


def test_a_retry_after_on_the_last_attempt_is_not_waited_for():
    trier = attempts(1)
    trier.after_status(503, {"retry-after": "2"}, b"")
    with pytest.raises(ApiError) as caught:
        trier.after_status(503, {"retry-after": "2"}, b"")
    assert caught.value.message == "HTTP 503"


# --- network failures ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure, kwargs, expected",
    [
        (NetFailure("refused"), {}, f"cannot connect to {TARGET}"),
        (NetFailure("refused", "connection refused"), {}, f"cannot connect to {TARGET}: connection refused"),
        (NetFailure("connect_timeout"), {}, f"timed out connecting to {TARGET}"),
        (NetFailure("connect_timeout", "ignored"), {}, f"timed out connecting to {TARGET}"),
        (NetFailure("read_timeout"), {}, f"timed out waiting for {TARGET}"),
        (NetFailure("read_timeout"), {"read_timeout": 600.0}, f"timed out waiting for {TARGET} (no data for 600 s)"),
        (NetFailure("read_timeout"), {"read_timeout": 2.5}, f"timed out waiting for {TARGET} (no data for 2.5 s)"),
        (NetFailure("closed"), {}, f"{TARGET} closed the connection before the answer was complete"),
        (NetFailure("tls"), {}, f"cannot verify the TLS certificate of {TARGET}"),
        (
            NetFailure("tls", "self-signed certificate"),
            {},
            f"cannot verify the TLS certificate of {TARGET}: self-signed certificate",
        ),
        (NetFailure("proxy"), {}, "cannot connect to the proxy server"),
        (
            NetFailure("proxy", "timed out"),
            {"proxy": "proxy.corp:3128"},
            "cannot connect to the proxy proxy.corp:3128: timed out",
        ),
        (NetFailure("headers_too_large"), {}, f"connection to {TARGET} failed"),
        (NetFailure("other"), {}, f"connection to {TARGET} failed"),
        (
            NetFailure("other", "name or service not known"),
            {},
            f"connection to {TARGET} failed: name or service not known",
        ),
        (NetFailure("something new", "x"), {}, f"connection to {TARGET} failed: x"),
    ],
    ids=repr,
)
def test_describe_network_failure(failure, kwargs, expected):
    assert describe_network_failure(failure, TARGET, **kwargs) == expected


# (kind, error class, code, hint contains)
NETWORK_ERRORS = [
    ("refused", NetworkError, "network_error", NETWORK_HINT),
    ("connect_timeout", NetworkError, "timeout", NETWORK_HINT),
    ("read_timeout", NetworkError, "timeout", NETWORK_HINT),
    ("closed", NetworkError, "network_error", NETWORK_HINT),
    ("proxy", NetworkError, "network_error", NETWORK_HINT),
    ("other", NetworkError, "network_error", NETWORK_HINT),
    ("tls", NetworkError, "tls_error", "SSL_CERT_FILE"),
    ("headers_too_large", ApiError, "invalid_response", None),
]


@pytest.mark.parametrize("kind, cls, code, hint", NETWORK_ERRORS)
def test_network_error(kind, cls, code, hint):
    error = network_error(NetFailure(kind), TARGET)
    assert type(error) is cls
    assert error.code == code
    assert error.hint == hint if hint is None else hint in error.hint
    if kind == "headers_too_large":
        assert error.message == "the server's response headers are larger than 100 KiB"
    else:
        assert error.exit_code == ExitCode.NETWORK


@pytest.mark.parametrize("kind", sorted(RETRIED_NETWORK_KINDS))
def test_transient_network_failures_are_retried(kind):
    trier = Attempts(retries=2, target=TARGET, read_timeout=30.0, proxy="proxy.corp:3128", rng=NoJitter())
    failure = NetFailure(kind, "connection reset by peer")
    expected = describe_network_failure(failure, TARGET, read_timeout=30.0, proxy="proxy.corp:3128")
    first, second = trier.after_network(failure), trier.after_network(failure)
    assert (first.delay, second.delay) == (0.5, 1.0)
    assert first.note == f"retry 1 of 2 in 0.50 s after {expected}"
    assert second.note == f"retry 2 of 2 in 1.00 s after {expected}"
    assert first.retry_after is None
    with pytest.raises(NetworkError) as caught:
        trier.after_network(failure)
    assert caught.value.message == expected


def test_the_network_note_reads_well():
    trier = attempts(2)
    note = trier.after_network(NetFailure("refused", "connection refused")).note
    assert note == f"retry 1 of 2 in 0.50 s after cannot connect to {TARGET}: connection refused"


@pytest.mark.parametrize(
    "kind, cls, code",
    [
        ("tls", NetworkError, "tls_error"),
        ("headers_too_large", ApiError, "invalid_response"),
        ("something new", NetworkError, "network_error"),
    ],
)
def test_final_network_failures_raise_at_once(kind, cls, code):
    trier = attempts(5)
    with pytest.raises(cls) as caught:
        trier.after_network(NetFailure(kind, "unable to get local issuer certificate"))
    assert caught.value.code == code
    assert trier.number == 0


def test_statuses_and_network_failures_share_one_count():
    trier = attempts(3)
    assert trier.after_status(503, {}, b"").note.startswith("retry 1 of 3 in 0.50 s")
    assert trier.after_network(NetFailure("closed")).note.startswith("retry 2 of 3 in 1.00 s")
    assert trier.after_status(429, {}, b"").note.startswith("retry 3 of 3 in 2.00 s")
    with pytest.raises(NetworkError):
        trier.after_network(NetFailure("closed"))


# --- failure_kind_from_chain --------------------------------------------------------------------


def chain(*excs: BaseException) -> BaseException:
    """The first exception, caused by the second, caused by the third…"""
    for outer, inner in itertools.pairwise(excs):
        outer.__cause__ = inner
    return excs[0]


def cert_error(verify_message: str | None) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    if verify_message is not None:
        exc.verify_message = verify_message  # set by the ssl module on a real handshake failure
    return exc


def implicitly_chained() -> BaseException:
    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except OSError:
            raise RuntimeError("read failed")  # noqa: B904 -- implicitly: __context__, not __cause__
    except RuntimeError as exc:
        return exc


def cycle() -> BaseException:
    first, second = RuntimeError("a"), RuntimeError("b")
    first.__context__, second.__context__ = second, first
    return first


@pytest.mark.parametrize(
    "exc, expected",
    [
        (ConnectionRefusedError(111, "Connection refused"), (None, "connection refused")),
        (
            chain(RuntimeError("ConnectError"), OSError("x"), ConnectionRefusedError(111, "Connection refused")),
            (None, "connection refused"),
        ),
        (
            chain(RuntimeError("wrap"), socket.gaierror(-2, "Name or service not known")),
            (None, "name or service not known"),
        ),
        (
            chain(
                RuntimeError("a"),
                OSError(101, "Network is unreachable"),
                ConnectionRefusedError(111, "Connection refused"),
            ),
            (None, "network is unreachable"),
        ),  # the outermost words win
        (implicitly_chained(), (None, "connection reset by peer")),
        (
            chain(RuntimeError("ConnectError"), cert_error("self-signed certificate")),
            ("tls", "self-signed certificate"),
        ),
        (
            chain(RuntimeError("x"), cert_error(None)),
            ("tls", "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
        ),
        (
            chain(RuntimeError("x"), OSError(104, "Connection reset"), cert_error("certificate has expired")),
            ("tls", "certificate has expired"),
        ),  # tls wins over words met earlier
        (cert_error("hostname mismatch"), ("tls", "hostname mismatch")),
        (chain(RuntimeError("x"), ssl.SSLError(1, "wrong version number")), (None, "wrong version number")),
        (RuntimeError("plain"), (None, "")),
        (OSError("no strerror"), (None, "")),
        (TimeoutError(), (None, "")),
        (cycle(), (None, "")),
    ],
    ids=[
        "refused",
        "refused deep",
        "dns",
        "outermost words",
        "context",
        "tls",
        "tls without verify_message",
        "tls deep",
        "tls itself",
        "other ssl error",
        "plain",
        "no strerror",
        "bare timeout",
        "cycle",
    ],
)
def test_failure_kind_from_chain(exc, expected):
    assert failure_kind_from_chain(exc) == expected


# --- read_answer -------------------------------------------------------------------------------

GOOD = {
    "id": "c1",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


@pytest.mark.parametrize(
    "content, message, code",
    [
        (b"", "HTTP 200 OK: the server sent no answer", "invalid_response"),
        (b" \r\n\t", "HTTP 200 OK: the server sent no answer", "invalid_response"),
        (b"not json", "the server's answer is not JSON", "invalid_response"),
        (b"<html>ok</html>", "the server's answer is not JSON", "invalid_response"),
        (b'{"choices": [', "the server's answer is not JSON", "invalid_response"),
        (b"\xff\xfe\x00", "the server's answer is not JSON", "invalid_response"),
        (nested(100_000), "the server's answer is not JSON", "invalid_response"),
        (b'data: {"choices": []}\n\n', "the server's answer is not JSON", "invalid_response"),
        (
            b'{"error": {"message": "quota exceeded", "code": "insufficient_quota"}}',
            "the server reported an error: quota exceeded",
            "insufficient_quota",
        ),
        (b'{"error": {"message": "x\\ny", "code": 500}}', "the server reported an error: x y", "500"),
        (b'{"error": {"type": "server_error"}}', 'the server reported an error: {"type": "server_error"}', "error"),
        (b'{"error": "boom"}', 'the server reported an error: "boom"', "error"),
        (b'{"error": "boom", "choices": []}', 'the server reported an error: "boom"', "error"),
        (b'{"id": "x"}', "the server's answer is not a chat completion", "invalid_response"),
        (b'{"choices": null}', "the server's answer is not a chat completion", "invalid_response"),
        (b'{"choices": []}', "the server's answer is not a chat completion", "invalid_response"),
        (b'{"choices": {}}', "the server's answer is not a chat completion", "invalid_response"),
        (b'{"choices": [1]}', "the server's answer is not a chat completion", "invalid_response"),
        (b'{"choices": [{"message": "Hi"}]}', "the server's answer is not a chat completion", "invalid_response"),
        (b"[1, 2]", "the server's answer is not a chat completion", "invalid_response"),
        (b"null", "the server's answer is not a chat completion", "invalid_response"),
        (b'"text"', "the server's answer is not a chat completion", "invalid_response"),
        (b'{"error": null}', "the server's answer is not a chat completion", "invalid_response"),
    ],
    ids=repr,
)
def test_read_answer_refuses(content, message, code):
    with pytest.raises(ApiError) as caught:
        read_answer(content)
    assert type(caught.value) is ApiError
    assert caught.value.message == message
    assert caught.value.code == code
    assert caught.value.exit_code == ExitCode.API


@pytest.mark.parametrize(
    "data",
    [
        GOOD,
        {"choices": [{"message": {"content": "Hi"}}]},
        {"choices": [{"index": 0, "message": None, "finish_reason": "length"}]},
        {"error": None, "choices": [{"message": {"content": "Hi"}}]},
        {"error": {"message": "ignored"}, "choices": [{"message": {"content": "Hi"}}]},  # choices win
        {"choices": [{"message": {"content": "a"}}, {"message": {"content": "b"}, "index": 1}]},
    ],
    ids=repr,
)
def test_read_answer_accepts(data):
    assert read_answer(json.dumps(data).encode()) == data
    assert read_answer(b"\n  " + json.dumps(data, ensure_ascii=False).encode() + b"\n") == data


def test_read_answer_error_keeps_the_body():
    body = {"error": {"message": "quota exceeded", "code": "insufficient_quota"}}
    with pytest.raises(ApiError) as caught:
        read_answer(json.dumps(body).encode())
    assert caught.value.body == body


def test_read_answer_never_recurses_out_at_any_depth():
    for depth in range(1, sys.getrecursionlimit() + 50):
        with pytest.raises(ApiError):
            read_answer(b'{"error": ' + nested(depth) + b"}")


@pytest.mark.parametrize(
    "data, expected",
    [
        (
            GOOD,
            {
                **GOOD,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
            },
        ),
        ({"choices": [{"message": None}]}, {"choices": [{"index": 0, "delta": {}, "finish_reason": None}]}),
        ({"id": "x"}, {"id": "x", "choices": []}),
    ],
    ids=["good", "null message", "no choices"],
)
def test_whole_as_chunk(data, expected):
    assert whole_as_chunk(data) == expected


# --- AnswerStream ------------------------------------------------------------------------------


def delta(index: int = 0, finish: str | None = None, **fields) -> dict:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [{"index": index, "delta": fields, "finish_reason": finish}],
    }


ROLE = delta(role="assistant")
ROLE_EMPTY = delta(role="assistant", content="")
HI = delta(content="H\u00e9 \u4e16\u754c \U0001f642")  # multi-byte characters to split
THINK = delta(reasoning_content="hmm")
TOOL = delta(tool_calls=[{"index": 0, "id": "t1", "function": {"name": "f", "arguments": ""}}])
END = delta(finish="stop")
USAGE = {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}
ERROR = {"error": {"message": "upstream overloaded", "code": "upstream_error", "type": "new_api_error"}}
OTHER_END = delta(index=1, finish="stop")


def sse(*events, newline: bytes = b"\n") -> bytes:
    out = b""
    for event in events:
        data = event if isinstance(event, (str, bytes)) else json.dumps(event, ensure_ascii=False)
        data = data if isinstance(data, bytes) else data.encode()
        out += b"data: " + data + newline * 2
    return out


DONE = "[DONE]"
NULL_CHOICES = {"id": "", "choices": None, "usage": USAGE["usage"]}  # Go servers (new-api) write null for []
EOF_ERROR = b"data: " + json.dumps(ERROR).encode()  # the last event, without its blank line


# (id, body, the chunks it yields, then None or the failure close() raises: a class, or the
# class and words its message holds). The chunks come out, all of them, before the failure.
STREAMS = [
    ("done", sse(ROLE, HI, END, USAGE, DONE), [ROLE, HI, END, USAGE], None),
    ("crlf", sse(ROLE, HI, END, DONE, newline=b"\r\n"), [ROLE, HI, END], None),
    ("bom and comments", b"\xef\xbb\xbf: keep-alive\n\n" + sse(ROLE, HI, END, DONE), [ROLE, HI, END], None),
    ("done without blank line", sse(ROLE, HI, END) + b"data: [DONE]", [ROLE, HI, END], None),
    ("finish without done", sse(ROLE, HI, END), [ROLE, HI, END], None),
    ("finish at eof without blank line", sse(ROLE, HI) + b"data: " + json.dumps(END).encode(), [ROLE, HI, END], None),
    ("usage after finish without done", sse(HI, END, USAGE), [HI, END, USAGE], None),
    ("reasoning first", sse(ROLE, THINK, HI, END, DONE), [ROLE, THINK, HI, END], None),
    ("tool call", sse(ROLE, TOOL, END, DONE), [ROLE, TOOL, END], None),
    ("several role-only chunks", sse(ROLE, ROLE_EMPTY, HI, DONE), [ROLE, ROLE_EMPTY, HI], None),
    ("role only then done", sse(ROLE, DONE), [ROLE], None),
    ("role only then finish", sse(ROLE, END), [ROLE, END], None),
    ("usage-only stream", sse(USAGE, DONE), [USAGE], None),
    ("only done", sse(DONE), [], None),
    ("events after done are ignored", sse(HI, DONE, "not json", ERROR), [HI], None),
    ("event and id fields", b"id: 1\nevent: message\n" + sse(HI, END), [HI, END], None),
    ("null choices after finish", sse(HI, END, NULL_CHOICES, DONE), [HI, END, NULL_CHOICES], None),
    ("null choices, then finish", sse(HI, NULL_CHOICES, END, DONE), [HI, NULL_CHOICES, END], None),
    ("null choices only", sse(NULL_CHOICES, DONE), [NULL_CHOICES], None),
    ("truncated after content", sse(ROLE, HI), [ROLE, HI], StreamTruncated),
    ("truncated after null choices", sse(HI, NULL_CHOICES), [HI, NULL_CHOICES], StreamTruncated),
    ("truncated role only", sse(ROLE), [], StreamTruncated),
    ("empty body", b"", [], StreamTruncated),
    ("blank lines only", b"\n\n\r\n", [], StreamTruncated),
    ("comment only", b": keep-alive\n\n", [], StreamTruncated),
    (
        "html",
        b"<!DOCTYPE html>\n<html><body>502 Bad Gateway</body></html>\n",
        [],
        (ApiError, "not an event stream: <!DOCTYPE html>"),
    ),
    ("whole json", json.dumps(ERROR).encode(), [], (ApiError, 'not an event stream: {"error"')),
    ("plain text", b"Bad gateway\n", [], (ApiError, "not an event stream: Bad gateway")),
    ("error before anything", sse(ERROR), [], (ApiError, "the server reported an error: upstream overloaded")),
    ("error after role only", sse(ROLE, ERROR), [], (ApiError, "the server reported an error: upstream overloaded")),
    (
        "error after content",
        sse(ROLE, HI, ERROR),
        [ROLE, HI],
        (StreamError, "the server reported an error: upstream overloaded"),
    ),
    ("error after contents", sse(HI, HI, HI, ERROR), [HI, HI, HI], (StreamError, "upstream overloaded")),
    ("error after reasoning", sse(THINK, ERROR), [THINK], (StreamError, "upstream overloaded")),
    ("error after a tool call", sse(TOOL, ERROR), [TOOL], (StreamError, "upstream overloaded")),
    ("nothing after an error is read", sse(HI, ERROR, HI, END, DONE), [HI], (StreamError, "upstream overloaded")),
    ("error at eof without blank line", sse(HI) + EOF_ERROR, [HI], (StreamError, "upstream overloaded")),
    ("error after finish", sse(HI, END, ERROR), [HI, END], (StreamError, "upstream overloaded")),
    ("chunk without choices is tolerated", sse({"id": "x"}, HI, END), [{"id": "x"}, HI, END], None),
    ("not a chunk before anything", sse({"choices": "x"}), [], (ApiError, "stream event is not a chat completion")),
    ("a list event before anything", sse([1]), [], (ApiError, "stream event is not a chat completion")),
    (
        "delta not an object",
        sse(ROLE, {"choices": [{"delta": "Hi"}]}),
        [],
        (ApiError, "stream event is not a chat completion"),
    ),
    (
        "not a chunk after content",
        sse(HI, {"choices": [1]}),
        [HI],
        (StreamError, "stream event is not a chat completion"),
    ),
    ("not json", sse(ROLE, "{oops"), [], (StreamError, "not JSON: '{oops'")),
    ("not json after content", sse(HI, "{oops", END), [HI], (StreamError, "not JSON: '{oops'")),
]
STREAM_IDS = [case[0] for case in STREAMS]


def run_stream(pieces) -> tuple[list[list[dict]], list[dict] | BaseException, AnswerStream]:
    """What each feed() gave, and what close() gave (or the exception either raised), read
    as the shell reads: it stops feeding once the stream has `ended`."""
    answer = AnswerStream()
    fed: list[list[dict]] = []
    try:
        for piece in pieces:
            fed.append(answer.feed(piece))
            # nothing has gone out until something was said, and then emitted says so
            assert answer.emitted == any(fed)
            if answer.ended:
                break
        closed = answer.close()
    except (StreamTruncated, ApiError, StreamError) as exc:
        return fed, exc, answer
    return fed, closed, answer


def check_stream(pieces, chunks, failure):
    """Wherever the bytes were split: these chunks, all of them, then this failure."""
    fed, closed, _ = run_stream(pieces)
    got = [chunk for out in fed for chunk in out]
    if failure is None:
        assert not isinstance(closed, BaseException), f"{pieces!r}: {closed!r}"
        assert got + closed == chunks, pieces
        return
    assert got == chunks, pieces
    cls, words = failure if isinstance(failure, tuple) else (failure, "")
    assert type(closed) is cls, f"{pieces!r}: {closed!r}"
    assert words in str(closed)
    if isinstance(closed, (ApiError, StreamError)):
        assert closed.exit_code == ExitCode.API
        assert "\n" not in closed.message


@pytest.mark.parametrize("name, body, chunks, failure", STREAMS, ids=STREAM_IDS)
def test_stream_whole(name, body, chunks, failure):
    check_stream([body], chunks, failure)


@pytest.mark.parametrize("name, body, chunks, failure", STREAMS, ids=STREAM_IDS)
def test_stream_at_every_split_point(name, body, chunks, failure):
    for index in range(len(body) + 1):
        check_stream([body[:index], body[index:]], chunks, failure)


@pytest.mark.parametrize("name, body, chunks, failure", STREAMS, ids=STREAM_IDS)
def test_stream_at_every_pair_of_split_points(name, body, chunks, failure):
    step = max(1, len(body) // 20)  # ~230 ways to cut a body in three: a bad event in a middle read too
    for first in range(0, len(body) + 1, step):
        for second in range(first, len(body) + 1, step):
            check_stream([body[:first], body[first:second], body[second:]], chunks, failure)


@pytest.mark.parametrize("name, body, chunks, failure", STREAMS, ids=STREAM_IDS)
def test_stream_byte_by_byte(name, body, chunks, failure):
    check_stream([body[i : i + 1] for i in range(len(body))], chunks, failure)


def test_two_hundred_chunks_then_an_error_in_one_read_are_all_yielded_first():
    answer = AnswerStream()
    assert answer.feed(sse(*[HI] * 200, ERROR, HI)) == [HI] * 200
    assert answer.ended and isinstance(answer.failure, StreamError)
    with pytest.raises(StreamError, match="upstream overloaded"):
        answer.close()


def test_a_failure_held_is_raised_by_the_next_feed_too():
    answer = AnswerStream()
    assert answer.feed(sse(HI, ERROR)) == [HI]
    with pytest.raises(StreamError):
        answer.feed(sse(HI))


def test_role_only_chunks_are_held_until_something_is_said():
    answer = AnswerStream()
    assert answer.feed(sse(ROLE, ROLE_EMPTY)) == []
    assert not answer.emitted
    assert answer.feed(sse(HI)) == [ROLE, ROLE_EMPTY, HI]
    assert answer.emitted
    assert answer.feed(sse(END)) == [END]
    assert answer.finished and not answer.done
    assert answer.feed(sse(DONE)) == []
    assert answer.done
    assert answer.close() == []


def test_held_chunks_are_dropped_when_the_stream_is_cut():
    answer = AnswerStream()
    assert answer.feed(sse(ROLE)) == []
    with pytest.raises(StreamTruncated):
        answer.close()
    assert not answer.emitted  # so the shell may retry


def test_a_stream_keeps_only_the_head_of_its_body():
    answer = AnswerStream()
    for _ in range(10):
        answer.feed(b": " + b"x" * 50 + b"\n")
    assert len(answer.head) == 200
    assert answer.head.startswith(b": xxx")


@pytest.mark.parametrize(
    "body",
    [sse(ROLE, HI) + b'data: {"choices": [{"ind', sse(ROLE) + b'data: {"choices": [{"ind', b'data: {"id": "c1", "obj'],
    ids=["after content", "after role only", "first event"],
)
def test_a_body_cut_inside_an_event_is_truncated(body):
    _, closed, _ = run_stream([body])
    assert isinstance(closed, StreamTruncated), closed


@pytest.mark.parametrize("tail", [b"data: [DO", b"data: [DONE", b'data: {"choices": []'])
def test_a_cut_after_the_finish_still_completes(tail):
    fed, closed, _ = run_stream([sse(HI, END) + tail])
    assert not isinstance(closed, BaseException), closed
    assert [chunk for out in fed for chunk in out] + closed == [HI, END]


def test_a_finish_on_another_choice_does_not_complete_the_stream():
    _, closed, _ = run_stream([sse(HI, OTHER_END)])
    assert isinstance(closed, StreamTruncated), closed


def test_stream_error_events_never_recurse_out_at_any_depth():
    for depth in range(1, sys.getrecursionlimit() + 50):
        answer = AnswerStream()
        assert answer.feed(b'data: {"error": ' + nested(depth) + b"}\n\n") == []
        with pytest.raises((ApiError, StreamError)):
            answer.close()


# --- Reply ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chunks, returns, content, reasoning, usage, finish, cut",
    [
        ([], [], "", "", None, None, False),
        (
            [ROLE, delta(content="He"), delta(content="llo"), delta(finish="stop")],
            [(None, None), (None, "He"), (None, "llo"), (None, None)],
            "Hello",
            "",
            None,
            "stop",
            False,
        ),
        (
            [delta(reasoning_content="think"), delta(reasoning_content=" more", content="A")],
            [("think", None), (" more", "A")],
            "A",
            "think more",
            None,
            None,
            False,
        ),
        (
            [delta(content="a"), delta(index=1, content="IGNORED"), delta(content="b")],
            [(None, "a"), (None, None), (None, "b")],
            "ab",
            "",
            None,
            None,
            False,
        ),
        (
            [
                {
                    "choices": [
                        {"index": 1, "delta": {"content": "x"}, "finish_reason": "stop"},
                        {"index": 0, "delta": {"content": "y"}, "finish_reason": None},
                    ]
                }
            ],
            [(None, "y")],
            "y",
            "",
            None,
            None,
            False,
        ),  # choice 0 wherever it sits
        (
            [delta(index=1, finish="length"), delta(finish="stop")],
            [(None, None), (None, None)],
            "",
            "",
            None,
            "stop",
            False,
        ),
        (
            [delta(content="cut"), delta(finish="length")],
            [(None, "cut"), (None, None)],
            "cut",
            "",
            None,
            "length",
            True,
        ),
        ([delta(content=""), delta(content=None)], [(None, ""), (None, None)], "", "", None, None, False),
        (
            [HI, USAGE],
            [(None, HI["choices"][0]["delta"]["content"]), (None, None)],
            HI["choices"][0]["delta"]["content"],
            "",
            USAGE["usage"],
            None,
            False,
        ),
        ([USAGE, {"choices": [], "usage": None}], [(None, None), (None, None)], "", "", USAGE["usage"], None, False),
        ([GOOD], [(None, "Hi")], "Hi", "", GOOD["usage"], "stop", False),  # a whole response
        (
            [{"choices": [{"message": {"content": "whole", "reasoning_content": "r"}, "finish_reason": "length"}]}],
            [("r", "whole")],
            "whole",
            "r",
            None,
            "length",
            True,
        ),
        ([{"choices": None}, {"id": "x"}], [(None, None), (None, None)], "", "", None, None, False),
    ],
    ids=[
        "nothing",
        "content",
        "reasoning",
        "choice 1 skipped",
        "choice 0 second",
        "finish of choice 1 ignored",
        "cut at limit",
        "empty content",
        "usage",
        "null usage kept",
        "whole response",
        "whole cut",
        "no choices",
    ],
)
def test_reply_absorb(chunks, returns, content, reasoning, usage, finish, cut):
    reply = Reply()
    assert [reply.absorb(chunk) for chunk in chunks] == returns
    assert reply.content == content
    assert reply.reasoning == reasoning
    assert reply.usage == usage
    assert reply.finish_reason == finish
    assert reply.cut_at_limit is cut


@pytest.mark.parametrize("index", ["\u00b2", "1" * 5000, "-1", [1]])
def test_a_choice_index_that_is_no_whole_number_is_choice_0(index):
    reply = Reply()
    reply.absorb({"choices": [{"index": index, "delta": {"content": "x"}}]})
    assert reply.content == "x" and not reply.others
    assert declared_length({"content-length": "1" * 5000}) is None


# Random streams: pieces of chunk objects, plain and not, and broken events, in random reads.
EVENT_DATA = [
    json.dumps({"choices": [{"index": 0, "delta": {"content": "ok "}}]}),
    json.dumps(HI),
    json.dumps({"choices": [{"index": 0, "delta": {"content": "h\u00e9"}}]}),
    json.dumps({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}),
    json.dumps({"choices": [{"index": 0, "delta": {"reasoning_content": "r"}}]}),
    json.dumps({"choices": [{"index": 1, "delta": {"content": "b"}}]}),
    json.dumps({"choices": [{"index": "0", "delta": {"content": "s"}}]}),
    json.dumps({"choices": [{"index": True, "delta": {"content": "t"}}]}),
    json.dumps({"choices": [{"delta": {"content": "x"}, "finish_reason": "stop"}]}),
    json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}),
    json.dumps({"choices": [], "usage": {"prompt_tokens": 1}}),
    json.dumps({"choices": None, "usage": {"total_tokens": 2}}),
    json.dumps({"choices": [{"index": 0, "delta": None}]}),
    json.dumps({"choices": [{"index": 0, "delta": "text"}]}),
    json.dumps({"choices": [{"index": 0, "delta": {"content": 7}}]}),
    json.dumps({"choices": "many"}),
    json.dumps({"error": {"message": "upstream overloaded"}}),
    json.dumps({"error": {"message": "quota"}, "choices": [{"index": 0, "delta": {"content": "x"}}]}),
    json.dumps({"choices": [{"index": 0, "delta": {"content": "u"}}], "usage": {"completion_tokens": 3}}),
    json.dumps([1, 2]),
    '{"choices": [',
    "not json",
    "[DONE]",
]


def stream_outcome(pieces) -> tuple[list, str]:
    fed, closed, answer = run_stream(pieces)
    got = [chunk for out in fed for chunk in out]
    state = f"finished={answer.finished} finish_reason={answer.finish_reason} usage={answer.usage}"
    if isinstance(closed, BaseException):
        return got, f"{type(closed).__name__}: {closed}; {state}"
    return got + closed, state


@pytest.mark.parametrize("seed", range(300))
def test_random_streams_need_no_fast_path_and_no_particular_reads(seed, monkeypatch):
    """Whatever the events and wherever the reads split them: the same chunks and the same
    end (a failure only of the contract's kinds, never an internal error), with the plain
    fast path (_is_plain) as without it."""
    generator = random.Random(seed)
    weights = [15 if data.startswith('{"choices"') else 1 for data in EVENT_DATA]  # broken events end it: fewer
    events = generator.choices(EVENT_DATA, weights=weights, k=generator.randint(1, 30))
    body = b"".join(b"data: " + data.encode() + b"\n\n" for data in events)
    cuts = sorted(generator.sample(range(len(body) + 1), min(len(body) + 1, 4)))
    pieces = [body[start:end] for start, end in zip([0, *cuts], [*cuts, len(body)])]
    expected = stream_outcome([body])
    assert stream_outcome(pieces) == expected, pieces
    monkeypatch.setattr(exchange, "_is_plain", lambda chunk: False)
    assert stream_outcome(pieces) == expected, pieces
