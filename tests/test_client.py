"""ApiClient against the loopback gateway: SSE quirks, retries, truncation, errors.

Retries never really sleep: the client gets `sleep=` that records the delays.
"""

from __future__ import annotations

import email.utils
import json
import random

import pytest
from gateway import Json, Reset, Sse, Stall, chunk, completion, error_body, sse_events
from helpers import KEY, NOW, closed_port

from anyfast_cli.client import ApiClient
from anyfast_cli.errors import (
    ApiAuthError,
    ApiError,
    AuthError,
    ExitCode,
    NetworkError,
    RateLimitError,
    StreamError,
)
from anyfast_cli.retry import INITIAL_BACKOFF, JITTER

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class Recorder:
    """What the client did instead of sleeping, and what it logged."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.logs: list[str] = []


@pytest.fixture
def rec():
    return Recorder()


@pytest.fixture
def make_client(gateway, rec):
    clients = []

    def make(base_url=None, **kwargs):
        options = dict(
            base_url=base_url or gateway.url,
            api_key=KEY,
            retries=2,
            sleep=rec.sleeps.append,
            clock=lambda: NOW,
            rng=random.Random(0),
            log=rec.logs.append,
        )
        options.update(kwargs)
        client = ApiClient(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def stream_body():
    return {**BODY, "stream": True}


def content_of(chunks) -> str:
    return "".join(
        (c.get("choices") or [{}])[0].get("delta", {}).get("content") or "" for c in chunks if c.get("choices")
    )


def collect(iterator, into: list):
    for item in iterator:
        into.append(item)
    return into


# --- streaming and SSE quirks --------------------------------------------------------------


def test_stream_default_echo(gateway, make_client):
    chunks = list(make_client().stream(stream_body()))
    assert content_of(chunks) == "echo: hi"
    request = gateway.requests[-1]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["user-agent"].startswith("anyfast/")
    assert request.body == stream_body()


def test_stream_with_every_quirk(gateway, make_client):
    text = "h\u00e9llo \u2028 w\u00f6rld \U0001f642"
    content = json.dumps(chunk(text), ensure_ascii=False).encode()
    cut = content.index("\u00e9".encode()) + 1  # inside the two bytes of é
    usage = {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}
    gateway.script(
        Sse(
            [
                b": keep-alive\r\n\r\n",
                b'data:{"id":"c","choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}\r\n\r\n',
                b"data: " + content[:cut],
                content[cut:] + b"\r\n",
                b"\r\n: keep-alive\r\n\r\n",
                b"data:" + json.dumps(chunk(finish="stop")).encode() + b"\r\n\r\n",
                b'data: {"id":"c","choices":[],"usage":' + json.dumps(usage).encode() + b"}\r\n\r\n",
                b"data: [DONE]\r\n\r\n",
            ]
        )
    )
    chunks = list(make_client().stream(stream_body()))
    assert content_of(chunks) == text
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == usage
    assert len(chunks) == 4


def test_stream_ends_at_done_even_if_more_follows(gateway, make_client):
    gateway.script(Sse(sse_events(chunk("a"), chunk(finish="stop")) + sse_events(chunk("never"), done=False)))
    assert content_of(make_client().stream(stream_body())) == "a"


def test_finish_reason_without_done_is_complete(gateway, make_client):
    gateway.script(Sse(sse_events(chunk("a"), chunk("b", finish="stop"), done=False)))
    assert content_of(make_client().stream(stream_body())) == "ab"


def test_a_200_json_answer_to_a_stream_request_becomes_one_chunk(gateway, make_client):
    gateway.script(Json(completion("whole", reasoning="why")))
    (only,) = list(make_client().stream(stream_body()))
    assert only["choices"][0]["delta"] == {"role": "assistant", "content": "whole", "reasoning_content": "why"}
    assert only["choices"][0]["finish_reason"] == "stop"
    assert only["usage"]["total_tokens"] == 8


@pytest.mark.parametrize("method", ["send", "stream"])
def test_a_200_json_error_body_is_an_api_error(gateway, make_client, rec, method):
    gateway.script(Json(error_body("quota exceeded", "insufficient_quota", "quota")))
    client = make_client()
    with pytest.raises(ApiError) as raised:
        client.send(BODY) if method == "send" else list(client.stream(stream_body()))
    assert "quota exceeded" in raised.value.message
    assert raised.value.exit_code == ExitCode.API
    assert len(gateway.requests) == 1 and rec.sleeps == []


def test_an_error_event_before_any_output(gateway, make_client, rec):
    gateway.script(Sse(sse_events({"error": {"message": "model overloaded", "type": "server_error"}})))
    with pytest.raises(ApiError) as raised:
        list(make_client().stream(stream_body()))
    assert "model overloaded" in raised.value.message
    assert raised.value.exit_code == ExitCode.API
    assert len(gateway.requests) == 1


def test_an_error_event_inside_a_200_stream_after_output(gateway, make_client, rec):
    gateway.script(Sse(sse_events(chunk("partial"), {"error": {"message": "content filtered", "code": "sensitive"}})))
    received: list = []
    with pytest.raises(StreamError) as raised:
        collect(make_client().stream(stream_body()), received)
    assert content_of(received) == "partial"
    assert "content filtered" in raised.value.message
    assert raised.value.exit_code == ExitCode.API
    assert len(gateway.requests) == 1 and rec.sleeps == []


def test_an_event_that_is_not_json(gateway, make_client):
    gateway.script(Sse(sse_events("<html>oops</html>")))
    with pytest.raises(StreamError) as raised:
        list(make_client().stream(stream_body()))
    assert "not JSON" in raised.value.message


# --- retries -------------------------------------------------------------------------------

RETRYABLE_BY_ANY_REQUEST = [
    pytest.param(Json(error_body("slow down"), status=429), id="429"),
    pytest.param(Json(error_body("boom", "server_error"), status=500), id="500"),
    pytest.param(Json(error_body("bad gateway"), status=502), id="502"),
    pytest.param(Json(error_body("unavailable"), status=503), id="503"),
    pytest.param(Json(error_body("timeout"), status=504), id="504"),
    pytest.param(Json(error_body("timeout"), status=408), id="408"),
    pytest.param(Json(error_body("conflict"), status=409), id="409"),
    pytest.param(Reset(), id="reset"),
]
RETRYABLE_STREAM_ONLY = [
    pytest.param(Sse([], cut=True), id="cut-before-output"),
    pytest.param(Sse([b": keep-alive\n\n"]), id="empty-stream"),
]
RETRY_CASES = [pytest.param("send", *p.values, id=f"send-{p.id}") for p in RETRYABLE_BY_ANY_REQUEST] + [
    pytest.param("stream", *p.values, id=f"stream-{p.id}") for p in RETRYABLE_BY_ANY_REQUEST + RETRYABLE_STREAM_ONLY
]


@pytest.mark.parametrize("method, failure", RETRY_CASES)
def test_retried_then_answered(gateway, make_client, rec, method, failure):
    gateway.script(failure)
    client = make_client()
    if method == "send":
        assert client.send(BODY)["choices"][0]["message"]["content"] == "echo: hi"
    else:
        assert content_of(client.stream(stream_body())) == "echo: hi"
    assert len(gateway.requests) == 2
    assert len(rec.sleeps) == 1
    assert INITIAL_BACKOFF * (1 - JITTER) <= rec.sleeps[0] <= INITIAL_BACKOFF
    assert any("retry 1 of 2" in line for line in rec.logs)


@pytest.mark.parametrize(
    "failure, error_type, exit_code",
    [
        (Json(error_body("boom"), status=500), ApiError, ExitCode.API),
        (Json(error_body("slow down"), status=429), RateLimitError, ExitCode.RATE_LIMITED),
        (Reset(), NetworkError, ExitCode.NETWORK),
        (Sse([], cut=True), NetworkError, ExitCode.NETWORK),
    ],
    ids=["500", "429", "reset", "cut"],
)
def test_retries_run_out(gateway, make_client, rec, failure, error_type, exit_code):
    gateway.script(failure, failure, failure)
    with pytest.raises(error_type) as raised:
        list(make_client(retries=2).stream(stream_body()))
    assert type(raised.value) is error_type
    assert raised.value.exit_code == exit_code
    assert len(gateway.requests) == 3
    assert len(rec.sleeps) == 2
    assert rec.sleeps[1] > rec.sleeps[0]  # exponential: 0.375-0.5 s, then 0.75-1 s


def test_server_message_is_kept(gateway, make_client):
    gateway.script(Json(error_body("The model `nope` does not exist", code="model_not_found"), status=404))
    with pytest.raises(ApiError) as raised:
        make_client().send(BODY)
    # model_not_found names the model that was sent, before the server's own words
    assert (
        raised.value.message == "model 'm' is not available here: HTTP 404 Not Found: The model `nope` does not exist"
    )
    assert raised.value.code == "model_not_found"
    assert raised.value.status == 404
    assert "model name" in raised.value.hint


def test_a_non_json_error_body_is_summarised(gateway, make_client):
    gateway.script(
        Json(raw=b"<html>\n  <h1>502   Bad Gateway</h1>\n</html>", status=502, headers={"Content-Type": "text/html"})
    )
    with pytest.raises(ApiError) as raised:
        make_client(retries=0).send(BODY)
    assert raised.value.message == "HTTP 502 Bad Gateway: <html> <h1>502 Bad Gateway</h1> </html>"


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "0"}, 0.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After": email.utils.formatdate(NOW + 12, usegmt=True)}, 12.0),
    ],
)
@pytest.mark.parametrize("method", ["send", "stream"])
def test_retry_after_is_honoured(gateway, make_client, rec, headers, expected, method):
    gateway.script(Json(error_body("slow down"), status=429, headers=headers))
    client = make_client()
    client.send(BODY) if method == "send" else list(client.stream(stream_body()))
    assert rec.sleeps == [pytest.approx(expected)]
    assert len(gateway.requests) == 2


def test_an_absurd_retry_after_is_not_waited_for(gateway, make_client, rec):
    gateway.script(Json(error_body("come back tomorrow"), status=429, headers={"Retry-After": "86400"}))
    with pytest.raises(RateLimitError):
        make_client(retries=5).send(BODY)
    assert rec.sleeps == [] and len(gateway.requests) == 1


@pytest.mark.parametrize(
    "status, error_type, exit_code",
    [
        (400, ApiError, ExitCode.API),
        (401, ApiAuthError, ExitCode.AUTH),
        (403, ApiAuthError, ExitCode.AUTH),
        (404, ApiError, ExitCode.API),
        (422, ApiError, ExitCode.API),
    ],
)
@pytest.mark.parametrize("method", ["send", "stream"])
def test_client_errors_are_not_retried(gateway, make_client, rec, status, error_type, exit_code, method):
    gateway.script(Json(error_body(f"status {status} says no"), status=status))
    client = make_client(retries=5)
    with pytest.raises(error_type) as raised:
        client.send(BODY) if method == "send" else list(client.stream(stream_body()))
    assert raised.value.exit_code == exit_code
    assert f"status {status} says no" in raised.value.message
    assert len(gateway.requests) == 1 and rec.sleeps == []


def test_no_retry_after_output_started_on_a_cut(gateway, make_client, rec):
    gateway.script(Sse(sse_events(chunk("partial"), done=False), cut=True))
    received: list = []
    with pytest.raises(StreamError) as raised:
        collect(make_client(retries=5).stream(stream_body()), received)
    assert content_of(received) == "partial"
    assert raised.value.exit_code == ExitCode.API
    assert "the stream broke" in raised.value.message
    assert len(gateway.requests) == 1 and rec.sleeps == []


def test_a_truncated_stream_without_done_or_finish_reason_is_an_error(gateway, make_client, rec):
    gateway.script(Sse(sse_events(chunk("half an ans"), done=False)))  # a clean end of body
    received: list = []
    with pytest.raises(StreamError) as raised:
        collect(make_client(retries=5).stream(stream_body()), received)
    assert content_of(received) == "half an ans"
    assert "closed the connection before the answer was complete" in raised.value.message
    assert len(gateway.requests) == 1 and rec.sleeps == []


@pytest.mark.parametrize("method", ["send", "stream"])
def test_connection_refused_is_a_network_error(make_client, rec, method):
    client = make_client(base_url=f"http://127.0.0.1:{closed_port()}/v1")
    with pytest.raises(NetworkError) as raised:
        client.send(BODY) if method == "send" else list(client.stream(stream_body()))
    assert raised.value.exit_code == ExitCode.NETWORK == 4
    assert "cannot connect to 127.0.0.1" in raised.value.message
    assert len(rec.sleeps) == 2


def test_a_stall_times_out_as_a_network_error(gateway, make_client):
    gateway.script(Stall(0.5))
    with pytest.raises(NetworkError) as raised:
        make_client(timeout=0.1, retries=0).send(BODY)
    assert "timed out" in raised.value.message


# --- the key -------------------------------------------------------------------------------


def test_the_key_is_never_logged(gateway, make_client, rec):
    gateway.script(Json(error_body("x"), status=500), Reset())
    list(make_client().stream(stream_body()))
    assert len(rec.logs) >= 4
    assert all(KEY not in line for line in rec.logs)
    assert any("200 OK" in line and "request id req-" in line for line in rec.logs)


def test_a_key_pasted_with_its_newline_still_works(gateway, make_client):
    make_client(api_key=f"  {KEY}\n").send(BODY)
    assert gateway.requests[-1].headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("bad", ["sk-\u00e9t\u00e9-secret", "sk-new\nline-secret", "sk-tab\tsecret", "   "])
def test_a_key_that_cannot_be_a_header_is_refused_without_showing_it(gateway, make_client, bad):
    with pytest.raises(AuthError) as raised:
        make_client(api_key=bad)
    assert raised.value.exit_code == ExitCode.AUTH
    assert "secret" not in raised.value.message
    assert gateway.requests == []


ROLE_ONLY = {
    "id": "c",
    "object": "chat.completion.chunk",
    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
}


@pytest.mark.parametrize("cut", [True, False], ids=["reset", "clean-end"])
def test_a_failure_after_only_a_role_chunk_is_still_retried(gateway, make_client, rec, cut):
    # Gateways open with a role-only delta; nothing has been shown yet, so the request can be retried.
    gateway.script(Sse(sse_events(ROLE_ONLY, done=False), cut=cut))
    chunks = list(make_client().stream(stream_body()))
    assert content_of(chunks) == "echo: hi"
    assert len(gateway.requests) == 2 and len(rec.sleeps) == 1


def test_a_held_role_chunk_is_still_delivered_first(gateway, make_client):
    gateway.script(Sse(sse_events(ROLE_ONLY, chunk("hey"), chunk(finish="stop"))))
    chunks = list(make_client().stream(stream_body()))
    assert [c["choices"][0]["delta"] for c in chunks] == [{"role": "assistant", "content": ""}, {"content": "hey"}, {}]


def test_an_empty_answer_still_yields_its_chunks(gateway, make_client):
    gateway.script(Sse(sse_events(ROLE_ONLY)))
    assert list(make_client().stream(stream_body())) == [ROLE_ONLY]


@pytest.mark.parametrize("streamed", [False, True])
def test_a_deadline_the_fetches_used_up_sends_nothing(make_client, gateway, streamed):
    """URL attachments were fetched under --max-time and left no time: the request is not sent
    (nor counted), and the error names both; the next request has --max-time of its own."""
    import time

    client = make_client(max_time=1, deadline=time.monotonic() - 0.5)
    with pytest.raises(
        NetworkError, match=r"^fetching the attachments and the request took longer than --max-time 1 s"
    ):
        list(client.stream(stream_body())) if streamed else client.send(BODY)
    assert gateway.requests == [] and client.last_result is None
    assert client.send(BODY)["choices"]
