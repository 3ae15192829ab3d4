"""The httpx shell for complete and chat: it sends, reads and sleeps; exchange.py decides.

Retries happen only before the first chunk has been handed to the caller, so nothing
is ever printed twice. The network policy (proxy, trust store, no redirects, timeouts)
comes from transport.py, as batch's does.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import httpx

from anyfast_cli.errors import AnyfastError, NetworkError, StreamError
from anyfast_cli.events import Observer
from anyfast_cli.exchange import (
    AnswerStream,
    Attempts,
    Body,
    NetFailure,
    StreamTruncated,
    describe_network_failure,
    failure_kind_from_chain,
    header_text,
    is_answer_status,
    read_answer,
    read_json,
    request_id_of,
    whole_as_chunk,
)
from anyfast_cli.fallback import fallback_reason, model_chain
from anyfast_cli.meter import Meter
from anyfast_cli.prices import NO_PRICES
from anyfast_cli.request import auth_headers, encode_body, endpoint_url
from anyfast_cli.result import RequestContext, RequestResult, Trace, build_result
from anyfast_cli.transport import NetworkPolicy, network_policy, redact_userinfo

UNMETERED = RequestContext("", "", NO_PRICES)  # a client without a meter still notes its last result


def build_http_client(policy: NetworkPolicy, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    # trust_env=False: the proxy and trust store come from the policy, as batch's do.
    return httpx.Client(
        timeout=httpx.Timeout(policy.read_timeout, connect=policy.connect_timeout),
        transport=transport,
        proxy=policy.proxy,
        verify=policy.ssl_context if policy.ssl_context is not None else False,
        follow_redirects=False,
        trust_env=False,
    )


def net_failure(exc: Exception, policy: NetworkPolicy) -> NetFailure:
    """httpx's exceptions in the neutral words of exchange.py."""
    if isinstance(exc, StreamTruncated):
        return NetFailure("closed")
    if isinstance(exc, httpx.ConnectTimeout):
        return NetFailure("proxy", "timed out") if policy.proxy else NetFailure("connect_timeout")
    if isinstance(exc, httpx.TimeoutException):
        return NetFailure("read_timeout")
    if isinstance(exc, httpx.ProxyError):
        return NetFailure("proxy", str(exc))
    kind, detail = failure_kind_from_chain(exc)
    if isinstance(exc, httpx.ConnectError):
        if kind == "tls":
            return NetFailure(kind, detail)
        return NetFailure("proxy" if policy.proxy else "refused", detail)
    if isinstance(exc, httpx.RemoteProtocolError) and "buffer too long" in str(exc).lower():
        return NetFailure("headers_too_large")
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.CloseError)):
        return NetFailure("closed")
    return NetFailure("other", detail or str(exc) or type(exc).__name__)


class ApiClient:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeout: float | None = None,
        retries: int = 2,
        max_time: float | None = None,
        transport: httpx.BaseTransport | None = None,
        env: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        log: Callable[[str], None] | None = None,
        meter: Meter | None = None,
        observer: Observer | None = None,
        fallback: tuple[str, ...] = (),
        cache: str | None = None,
        deadline: float | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = endpoint_url(base_url)
        self.retries = retries
        self.max_time = max_time
        self.policy = network_policy(self.url, env if env is not None else {}, timeout)
        self._headers = auth_headers(api_key)
        self._post_headers = {**self._headers, "Content-Type": "application/json"}
        self._http = build_http_client(self.policy, transport)
        self._deadline = Deadline()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        # Retries, fallbacks and -v details are told to the observer (prose, and --events);
        # `log` alone (tests, tools) is a verbose observer that writes prose to it.
        self.observer = observer or Observer(log or (lambda message: None), verbose=log is not None)
        self._log = self.observer.detail
        self.meter = meter
        self.fallback = tuple(fallback)
        self._failed_models: set[str] = set()  # models this command already fell back from
        self.cache = cache  # what each request's result says of the cache: "miss" when one is in use
        self.last_result: RequestResult | None = None  # of the latest chat request
        # A --max-time deadline already running (a monotonic reading): URL attachments were
        # fetched under it, and the first request keeps it (§3: one deadline covers both).
        self._running_deadline = deadline

    def __enter__(self) -> "ApiClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self._http.close()

    def _attempts(
        self, body: dict, request_line: str | None = None, deadline: float | None = None, began: str | None = None
    ) -> Attempts:
        self._log(
            (request_line or f"POST {self.url} model={body.get('model')} stream={str(body.get('stream')).lower()}")
            + (f" via proxy {redact_userinfo(self.policy.proxy)}" if self.policy.proxy else "")
        )
        return Attempts(
            retries=self.retries,
            target=self.policy.target,
            model=body.get("model"),
            read_timeout=self.policy.read_timeout,
            proxy=self.policy.proxy_target,
            rng=self._rng,
            clock=self._clock,
            max_time=self.max_time,
            deadline=deadline,
            began=began,
        )

    def _request_options(self, attempts: Attempts) -> dict:
        """This attempt's timeouts (--timeout's, cut to what --max-time leaves), and the trace
        that hands the deadline each connection's socket."""
        connect, read = attempts.timeouts(self.policy.connect_timeout, self.policy.read_timeout)
        return {"timeout": httpx.Timeout(read, connect=connect), "extensions": self._deadline.options(attempts)}

    def send(self, body: dict) -> dict:
        """One whole (non-streamed) response object, from the first model of the fallback
        chain that answers."""
        asked, chain, (deadline, began) = body.get("model"), self._models(body), self._take_deadline()
        for position, model in enumerate(chain):
            request = body if model == asked else {**body, "model": model}
            attempts = self._attempts(request, deadline=deadline, began=began)
            try:
                with self._metered(request, attempts) as trace:
                    data = read_answer(*self._whole("POST", self.url, attempts, trace))
                    trace.note_answer(data)
            except AnyfastError as error:
                deadline = self._fall_back(error, chain, position, attempts)
                continue
            if model != asked:
                self.observer.answered_by(model, asked)
            return data
        raise AssertionError("unreachable: the last model's failure is raised")  # pragma: no cover

    def stream(self, body: dict) -> Iterator[dict]:
        """Chunk objects as they arrive; ends at [DONE] (or a finish_reason and end of body).
        The chunks that came before a failure are all yielded before it is raised. A model
        falls back to the next only before its first chunk (never once output began)."""
        asked, chain, (deadline, began) = body.get("model"), self._models(body), self._take_deadline()
        for position, model in enumerate(chain):
            request = body if model == asked else {**body, "model": model}
            attempts = self._attempts(request, deadline=deadline, began=began)
            answered = False
            try:
                with self._metered(request, attempts) as trace:
                    chunks = self._stream(request, attempts, trace)
                    for chunk in chunks:  # the first chunk only: output begins, no fallback after it
                        answered = True
                        if model != asked:
                            self.observer.answered_by(model, asked)
                        yield chunk
                        break
                    yield from chunks  # the rest at yield-from speed: nothing per chunk here
            except AnyfastError as error:
                if answered:
                    raise
                deadline = self._fall_back(error, chain, position, attempts)
                continue
            return

    def _take_deadline(self) -> tuple[float | None, str | None]:
        """The running deadline and what began it, for the first request only (later ones, a
        --schema repair or the session's next turn, each have --max-time of their own)."""
        deadline, self._running_deadline = self._running_deadline, None
        return deadline, ("fetching the attachments" if deadline is not None else None)

    def _models(self, body: dict) -> tuple[str, ...]:
        """The fallback chain for this request (§3 "fallback models"): the body's model, then
        --fallback's. A model this command already fell back from is skipped (a --schema repair
        asks the model that answered, not the one known to fail), but the last is always tried."""
        chain = model_chain(body.get("model"), self.fallback)
        return tuple(model for model in chain if model not in self._failed_models) or chain[-1:]

    def _fall_back(self, error: AnyfastError, chain: tuple, position: int, attempts: Attempts) -> float | None:
        """After chain[position] failed for good: raise the error, unless fallback.fallback_reason
        sends the request on, a next model exists and --max-time has time left (it covers the
        whole chain); then tell it, and return the deadline the next model's attempts keep."""
        model = chain[position]
        reason = fallback_reason(error, model) if position + 1 < len(chain) else None
        if reason is None or attempts.expired():
            raise error
        self._failed_models.add(model)
        self.observer.fallback(model, chain[position + 1], reason, error.message)
        return attempts.deadline

    def get_json(self, path: str) -> object:
        """GET {base_url}/{path} (`models`): the JSON it answers, with send()'s retries and bounds."""
        url = f"{self.base_url}/{path}"
        content, _, _ = self._whole("GET", url, self._attempts({}, f"GET {url}"))
        return read_json(content)

    def _whole(self, method: str, url: str, attempts: Attempts, trace: Trace | None = None) -> tuple:
        """Send until an answer status comes (retrying as `attempts` says); its whole body,
        status and reason. A POST sends the trace's payload."""
        headers = self._post_headers if trace is not None else self._headers
        content = trace.payload if trace is not None else None
        while True:
            started = time.monotonic()
            try:
                with (
                    self._deadline.watch(attempts),
                    self._http.stream(
                        method, url, content=content, headers=headers, **self._request_options(attempts)
                    ) as response,
                ):
                    self._log_response(response, started, trace)
                    body = read_body(response)
            except httpx.TransportError as exc:
                retry = attempts.after_network(net_failure(exc, self.policy))
            else:
                if is_answer_status(response.status_code):
                    return body, response.status_code, response.reason_phrase
                retry = attempts.after_status(response.status_code, response.headers, body, response.reason_phrase)
            self.observer.retry(retry)
            self._sleep(retry.delay)

    @contextmanager
    def _metered(self, body: dict, attempts: Attempts) -> Iterator[Trace]:
        """One chat request from start to end: the budget is checked before it is sent, and its
        result, however it ends, is built once (result.build_result) and handed to the meter
        and the observer (the usage log, the budget and --events read that one object). A
        request whose deadline has already run out (the -a fetches used it all) is not begun."""
        if attempts.expired():
            raise attempts.out_of_time()
        self.observer.request_started(str(body.get("model")))
        if self.meter is not None:
            self.meter.before_request()
        trace = Trace(str(body.get("model")), time.monotonic(), encode_body(body), cache=self.cache)
        error = None
        try:
            yield trace
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.last_result = build_result(
                self.meter.context if self.meter is not None else UNMETERED,
                trace,
                ended=time.monotonic(),
                now=self._clock(),
                attempts=attempts.number + 1,
                error=error,
            )
            if self.meter is not None:
                self.meter.record(self.last_result)
            self.observer.request_ended(self.last_result)

    def _stream(self, body: dict, attempts: Attempts, trace: Trace) -> Iterator[dict]:
        headers = {**self._post_headers, "Accept": "text/event-stream"}
        while True:
            started = time.monotonic()
            answer = AnswerStream()
            try:
                with (
                    self._deadline.watch(attempts),
                    self._http.stream(
                        "POST", self.url, content=trace.payload, headers=headers, **self._request_options(attempts)
                    ) as response,
                ):
                    self._log_response(response, started, trace)
                    if not is_answer_status(response.status_code):
                        content = read_body(response)
                        retry = attempts.after_status(
                            response.status_code, response.headers, content, response.reason_phrase
                        )
                    elif "json" in response.headers.get("content-type", ""):
                        # Some gateways answer a stream request with one whole JSON object.
                        data = read_answer(read_body(response), response.status_code, response.reason_phrase)
                        trace.note_answer(data)
                        yield whole_as_chunk(data)
                        return
                    else:
                        for data in response.iter_bytes():  # decoded: a gzip bomb counts at its inflated size
                            yield from answer.feed(data)
                            if answer.ended:
                                break  # whatever follows [DONE] (or a bad event) is not read
                        yield from answer.close()
                        trace.usage, trace.finish_reason = answer.usage, answer.finish_reason
                        trace.tool_calls = answer.finish_reason == "tool_calls"
                        return
            except (httpx.TransportError, StreamTruncated) as exc:
                failure = net_failure(exc, self.policy)
                if answer.emitted:
                    broke = f"the stream broke: {describe_network_failure(failure, self.policy.target)}"
                    if failure.kind == "read_timeout":  # a timeout is exit 4 at every stage, as before output
                        raise NetworkError(broke, code="timeout") from None
                    raise StreamError(broke) from None
                retry = attempts.after_network(failure)
            self.observer.retry(retry)
            self._sleep(retry.delay)

    def _log_response(self, response: httpx.Response, started: float, trace: Trace | None = None) -> None:
        """-v: the status and request id, when the headers have come; the id is noted for the result."""
        request_id = request_id_of(response.headers)
        if trace is not None:
            trace.request_id = request_id
        elapsed = time.monotonic() - started
        self._log(
            f"{response.status_code} {header_text(response.reason_phrase)} in {elapsed:.3f} s, "
            f"request id {request_id or '-'}"
        )


def read_body(response: httpx.Response) -> bytearray:
    """A whole body, decoded, read no further than its bound (exchange.Body): past it an
    answer is an error, never retried; of an error response, the start that holds its message."""
    body = Body(response.status_code, response.headers)
    for data in response.iter_bytes():
        body.feed(data)
        if body.full:
            break
    return body.content


# httpx's trace events that hand over a connection's network stream: TCP, then TLS (which
# takes the TCP socket over), to the server or to a proxy.
OPENED_EVENTS = ("connect_tcp.complete", "start_tls.complete")


class Deadline:
    """--max-time over each attempt, from before it connects to the end of its body.

    httpx bounds each read, never a whole request: a server that drips its status line,
    its headers or its body a byte at a time would never time out. So a timer, at the
    deadline, shuts down the sockets of this client's connections, which ends whatever read
    the attempt is blocked in. httpx's `trace` extension hands over each socket as its
    connection opens (`trace`); one client sends one request at a time, so these are the
    attempt's own and at most an idle kept-alive one, which the pool drops (it checks idle
    connections before reusing them). Once the timer has struck, the attempt's failure,
    whatever it looks like (a read error, a body cut short, a partial body that seemed
    whole or not an event stream), is the --max-time error: a partial body is never judged."""

    def __init__(self) -> None:
        self._sockets: list[socket.socket] = []
        self._struck = threading.Event()  # the attempt in progress's (each attempt has its own)

    def trace(self, name: str, info: dict) -> None:
        stream = info.get("return_value") if name.endswith(OPENED_EVENTS) else None
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is None:  # another event, or a transport without sockets
            return
        self._sockets = [s for s in self._sockets if s.fileno() != -1] + [sock]  # closed ones dropped
        if self._struck.is_set():  # opened just as the deadline struck
            _shut_down(sock)

    def _strike(self, struck: threading.Event) -> None:
        struck.set()
        for sock in list(self._sockets):
            _shut_down(sock)

    def options(self, attempts: Attempts) -> dict:
        """The request extensions an attempt needs: the trace, when there is a deadline."""
        return {} if attempts.max_time is None else {"trace": self.trace}

    @contextmanager
    def watch(self, attempts: Attempts):
        left = attempts.time_left()  # out of time already: the --max-time error
        if left is None:
            yield
            return
        struck = self._struck = threading.Event()
        timer = threading.Timer(left, self._strike, (struck,))
        timer.daemon = True
        timer.start()
        try:
            yield
        except Exception:
            if struck.is_set():
                raise attempts.out_of_time() from None
            raise
        finally:
            timer.cancel()
        if struck.is_set():  # a body without a length ends at a shut-down socket as if whole
            raise attempts.out_of_time()


def _shut_down(sock: socket.socket) -> None:
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's, under any TLS layer
    except OSError:
        pass  # already closed
