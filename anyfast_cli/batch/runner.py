"""Many requests at once: a bounded pool of workers over one aiohttp session.

aiohttp rather than httpx here, by measurement on these machines (200 ms per
request, 2,000 requests): httpx.AsyncClient reached 5% of the concurrency limit at
200 in flight, httpx with the aiohttp transport 78%, plain aiohttp 90% (96% at 50).

Records are read lazily, each by the worker that will send it, and at most a bounded
number are in flight or waiting to be written, so memory stays flat however long the
input is.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace

import aiohttp

from anyfast_cli.batch.jobs import TOOL_CALLS_ERROR, Record, parsed_value, result_line
from anyfast_cli.batch.limiter import LIMITED_GIVE_UP, Limiter
from anyfast_cli.errors import AnyfastError, ApiAuthError, BudgetError, ExitCode, NetworkError
from anyfast_cli.exchange import (
    Attempts,
    Body,
    NetFailure,
    failure_kind_from_chain,
    is_answer_status,
    is_rate_limit,
    read_answer,
    request_id_of,
    status_failure,
    tool_calls_in,
)
from anyfast_cli.fallback import fallback_reason, model_chain
from anyfast_cli.meter import Meter
from anyfast_cli.request import auth_headers, encode_body, endpoint_url, estimate_tokens
from anyfast_cli.result import Trace, build_result
from anyfast_cli.retry import parse_retry_after
from anyfast_cli.schema import DEFAULT_REPAIR
from anyfast_cli.transport import NetworkPolicy, network_policy

REORDER_WINDOW_PER_WORKER = 8  # --ordered: how far past the oldest unwritten record work may run
# --schema: how long an answer is checked on the event loop before its check moves to a thread of
# its own. Real answers take well under a millisecond; a check still running past this is one that
# may run to its deadline (a backtracking pattern), which must not stall the batch or its signals.
INLINE_CHECK_SECONDS = 0.05


@dataclass
class Outcome:
    line: dict  # the OpenAI Batch output line
    ok: bool
    rate_limited: bool = False  # failed on 429
    model: str | None = None  # the model that answered (--fallback: maybe not the record's)
    error: AnyfastError | None = None  # why it failed (the request's result; fallback.fallback_reason reads it)
    answer: dict | None = None  # the response object, when one was read (for the request's result)
    deadline: float | None = None  # the record's --max-time deadline, once its first attempt set it


@dataclass(frozen=True)
class RunConfig:
    base_url: str
    api_key: str
    concurrency: int = 8
    retries: int = 5
    timeout: float | None = None
    max_time: float | None = None  # --max-time, for each record: its attempts and the waits between them
    ordered: bool = False
    env: Mapping[str, str] = field(default_factory=dict)  # for the proxy and trust store (transport.py)
    schema_mode: str = "auto"  # --schema: how to ask for JSON (auto steps down on a 400, per model)
    repair: int = DEFAULT_REPAIR  # --schema: re-asks of an answer that is not valid
    fail_on_tool_calls: bool = False  # --fail-on-tool-calls: an answer that asks for tool calls fails its record
    meter: Meter | None = None  # usage log, run totals and budget: every request's result goes to it
    fallback: tuple = ()  # --fallback: models to try, in order, for a record whose model cannot answer


class BatchRunner:
    def __init__(
        self,
        config: RunConfig,
        limiter: Limiter,
        emit: Callable[[Outcome], None],
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        log: Callable[[str], None] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self._warn = warn or (lambda message: None)
        self._modes: dict = {}  # --schema: model -> _ModeState, learned once for the whole batch
        self.limiter = limiter
        self._emit = emit
        self._sleep = sleep
        self._clock = clock  # wall time, for Retry-After given as a date
        self._rng = rng or random.Random()
        self._url = endpoint_url(config.base_url)
        self.policy = network_policy(self._url, config.env, config.timeout)
        self._log = log or (lambda message: None)
        self._answered = 0
        self.stopped: BudgetError | None = None  # the budget was reached: no more records are started

    async def run(self, records: Iterator[Record]) -> None:
        """Send every record; returns when all are written. Stops at once on 401/403
        (AnyfastError), or on a network failure before anything has been answered."""
        concurrency = self.config.concurrency
        # The key goes with each request, never in the session's defaults: aiohttp copies those
        # into a plain-HTTP proxy's request too, as Proxy-Authorization.
        self._headers = {**auth_headers(self.config.api_key), "Content-Type": "application/json"}
        output = _Reorderer(self._emit, concurrency * REORDER_WINDOW_PER_WORKER) if self.config.ordered else None
        # One iterator shared by the workers: each takes the next record when it is free. Taking
        # one never awaits, so no two workers are ever inside it at once.
        numbered = enumerate(records)

        async with open_session(self.policy, concurrency) as session:

            async def work() -> None:
                while self.stopped is None:  # a budget reached: the records not taken stay for --resume
                    try:
                        seq, record = next(numbered)
                    except StopIteration:
                        return
                    if output is not None:
                        await output.wait_for_room(seq)
                    try:
                        outcome = None if self.stopped is not None else await self._send(session, record)
                    except BudgetError as reached:  # requests in flight go on; no new one starts
                        self.stopped = self.stopped or reached
                        outcome = None
                    if outcome is None:  # not run (not written): --resume runs it
                        if output is not None:
                            output.put(seq, None)
                        return
                    if output is not None:
                        output.put(seq, outcome)
                    else:
                        self._emit(outcome)

            meter = self.config.meter
            if meter is not None:  # a turn's usage lines in one write (meter.defer_writes)
                meter.defer_writes(asyncio.get_running_loop().call_soon)
            tasks = [asyncio.ensure_future(work()) for _ in range(concurrency)]
            try:
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                if meter is not None:
                    meter.defer_writes(None)  # what is still pending is written now
        if self.stopped is not None:
            raise self.stopped

    async def _send(self, session: aiohttp.ClientSession, record: Record) -> Outcome:
        """A record over its fallback chain (§3 "fallback models", per record): a model that
        cannot answer (fallback.fallback_reason) hands the record to the next, within the
        record's --max-time. Only the last model's outcome is written: a result line per record."""
        asked = record.body.get("model")
        chain = model_chain(asked, self.config.fallback)
        deadline = None
        for position, model in enumerate(chain):
            sent = record if model == asked else replace(record, body={**record.body, "model": model})
            if sent.schema is not None:
                outcome = await self._send_structured(session, sent, deadline)
            else:
                outcome = await self._request(session, sent, sent.body, deadline)
            reason = None
            if not outcome.ok and outcome.error is not None and position + 1 < len(chain):
                reason = fallback_reason(outcome.error, model)
            if reason is None or (outcome.deadline is not None and time.monotonic() >= outcome.deadline):
                outcome.model = model
                return outcome
            self._log(
                f"record {record.id}: {model} did not answer ({outcome.error.message}); falling back to {chain[position + 1]}"
            )
            deadline = outcome.deadline
        raise AssertionError("unreachable: the last model's outcome is returned")  # pragma: no cover

    # --- --schema: the response_format ladder, learned per model; validation and repair ---

    async def _send_structured(
        self, session: aiohttp.ClientSession, record: Record, deadline: float | None = None
    ) -> Outcome:
        """Ask in the mode the record's model is on now. Learning that mode holds no record back:
        a 400 to a mode no answer has shown to work steps the model down and the record goes
        again; records that were in flight in that mode go again in the new one. `deadline`:
        a fallback's keeps the record's first one."""
        from anyfast_cli.schema import (
            REPAIRABLE,
            AnswerMismatch,
            apply_mode,
            check_deadline,
            mode_ladder,
            repair_turns,
            step_down_note,
        )

        model = record.body.get("model")
        state = self._modes.get(model)
        if state is None:
            state = self._modes[model] = _ModeState(mode_ladder(self.config.schema_mode))
        repairs = self.config.repair
        messages = list(record.body["messages"])
        tried: set[int] = set()  # levels this record was refused at: never asked twice in one mode
        while True:
            level = state.level
            mode = state.ladder[level]
            sent = time.monotonic()
            outcome = await self._request(
                session, record, apply_mode({**record.body, "messages": messages}, record.schema, mode), deadline
            )
            response = outcome.line.get("response") or {}
            status = response.get("status_code")
            if status == 400 and not outcome.ok:
                tried.add(level)
                if level == state.level and not state.works and level + 1 < len(state.ladder):
                    message = (outcome.line.get("error") or {}).get("message", "HTTP 400")
                    self._warn(step_down_note(mode, state.ladder[level + 1], model, message))
                    state.level = level + 1
                if state.level not in tried:
                    continue  # the model is on another mode now: this record goes again in it
                return outcome  # the mode works for other records (or none is left): the 400 is this record's
            if status is not None and is_answer_status(status):
                state.took(level, self._log, model)
            if not outcome.ok:
                return outcome
            body = response.get("body") or {}
            try:
                parsed = await check_answer(body, record.schema, check_deadline(sent, self.config.max_time))
            except AnswerMismatch as mismatch:
                if mismatch.code in REPAIRABLE and repairs > 0:
                    repairs -= 1
                    self._log(f"record {record.id}: not valid for the schema ({mismatch.message}); asking again")
                    messages = messages + repair_turns(mismatch)
                    continue
                outcome.line["error"] = {"code": mismatch.code, "message": mismatch.message}
                outcome.ok = False
                return outcome
            outcome.line["parsed"] = parsed_value(record, parsed)
            return outcome

    async def _request(
        self, session: aiohttp.ClientSession, record: Record, request_body: dict, deadline: float | None = None
    ) -> Outcome:
        """One request of a record, metered: the budget is checked before it is sent (BudgetError:
        not sent), and its result, however it ends, is built once and handed to the meter.
        `deadline`: a fallback's request keeps the record's first one."""
        meter = self.config.meter
        if meter is not None:
            meter.before_request()
        payload = encode_body(request_body)
        attempts = self._attempts(record, deadline)
        trace = Trace(str(request_body.get("model")), time.monotonic(), payload, custom_id=record.id)
        outcome = error = None
        try:
            outcome = await self._exchange(session, record, request_body, payload, attempts)
            outcome.deadline = attempts.deadline
            return outcome
        except BaseException as exc:
            error = exc
            raise
        finally:
            if meter is not None:
                if outcome is not None:
                    error = outcome.error
                    response = outcome.line.get("response") or {}
                    trace.request_id = response.get("request_id")
                    if outcome.answer is not None:
                        trace.note_answer(outcome.answer)
                meter.record(
                    build_result(
                        meter.context,
                        trace,
                        ended=time.monotonic(),
                        now=self._clock(),
                        attempts=attempts.number + 1,
                        error=error,
                    )
                )

    def _attempts(self, record: Record, deadline: float | None = None) -> Attempts:
        policy = self.policy
        return Attempts(
            retries=self.config.retries,
            target=policy.target,
            model=record.body.get("model"),
            read_timeout=policy.read_timeout,
            proxy=policy.proxy_target,
            rng=self._rng,
            clock=self._clock,
            max_time=self.config.max_time,
            deadline=deadline,
        )

    async def _exchange(
        self, session: aiohttp.ClientSession, record: Record, request_body: dict, payload: bytes, attempts: Attempts
    ) -> Outcome:
        """Send until an answer, a final failure or --max-time (retries and 429 waits included)."""
        tokens = estimate_tokens(request_body) if self.limiter.pacer.counts_tokens else 0  # only --tpm counts them
        policy = self.policy
        model = record.body.get("model")
        controller = self.limiter.controller
        while True:
            sent = await self.limiter.acquire(tokens)
            try:
                timeout = attempt_timeout(policy, attempts)  # the record's clock starts with its first attempt
            except AnyfastError as error:  # --max-time ran out while this retry waited for its turn
                return self._failed(record, error, status=None, request_id=None)
            try:
                async with session.post(
                    self._url,
                    data=payload,
                    headers=self._headers,
                    proxy=policy.proxy,
                    allow_redirects=False,
                    timeout=timeout,
                ) as response:
                    status, headers, reason = response.status, response.headers, response.reason or ""
                    content = await read_body(response)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                try:
                    retry = attempts.after_network(net_failure(exc, policy))
                except AnyfastError as error:
                    # --max-time is each record's own: a record that needs longer says nothing of
                    # the server, so it fails alone (code timeout) and the rest of the batch runs.
                    out_of_time = not attempts.leaves_time_for(0)
                    if isinstance(error, NetworkError) and not self._answered and not out_of_time:
                        raise  # nothing has worked yet: every record would wait out its retries the same way
                    return self._failed(record, error, status=None, request_id=None)
            except AnyfastError as error:  # an answer past its size limit: this record fails, not retried
                return self._failed(record, error, status=status, request_id=request_id_of(headers))
            else:
                request_id = request_id_of(headers)
                # A status that is not an answer: its body read once, for the rate limit and the retry.
                error = (
                    None if is_answer_status(status) else status_failure(status, headers, content, reason, model=model)
                )
                if controller is not None and error is not None and is_rate_limit(error):
                    # The adaptive rate's signal: the record waits its Retry-After and goes again,
                    # without using up --retries, until the limit has let nothing through for long.
                    retry_at = controller.on_rate_limited(
                        self.limiter.clock(), sent, parse_retry_after(headers, self._clock()), headers
                    )
                    if retry_at is not None and attempts.leaves_time_for(retry_at - self.limiter.clock()):
                        await self._sleep(max(0.0, retry_at - self.limiter.clock()))
                        continue
                    error.message += (
                        f" (the rate limit let nothing through for {LIMITED_GIVE_UP / 60:.0f} minutes)"
                        if retry_at is None
                        else attempts.no_time_note()
                    )
                    return self._failed(
                        record, error, status=status, request_id=request_id, body=error.body, rate_limited=True
                    )
                if controller is not None:
                    controller.on_answer(self.limiter.clock(), sent, headers)
                if error is None:
                    return self._answer(record, content, status, reason, request_id)
                try:
                    retry = attempts.after_error(error, headers)
                except ApiAuthError:
                    raise  # every other record would fail the same way
                except AnyfastError as error:
                    if error.code == "redirect":
                        raise  # the base URL is wrong for every record
                    return self._failed(
                        record,
                        error,
                        status=status,
                        request_id=request_id,
                        body=getattr(error, "body", None),
                        rate_limited=error.exit_code == ExitCode.RATE_LIMITED,
                    )
            self._log(f"{retry.note} (record {record.id})")
            await self._sleep(retry.delay)

    def _failed(
        self,
        record: Record,
        error: AnyfastError,
        *,
        status: int | None,
        request_id: str | None,
        body=None,
        rate_limited: bool = False,
    ) -> Outcome:
        """A failed record's line (the ResultSink masks the key, in this line as in every other)."""
        code = error.code or (f"http_{status}" if status else "error")
        line = result_line(
            record, status=status, request_id=request_id, body=body, error={"code": code, "message": error.message}
        )
        answer = body if isinstance(body, dict) and "choices" in body else None
        return Outcome(line, ok=False, rate_limited=rate_limited, error=error, answer=answer)

    def _answer(self, record: Record, content: bytes, status: int, reason: str, request_id: str | None) -> Outcome:
        try:
            body = read_answer(content, status, reason)
        except AnyfastError as problem:
            return self._failed(
                record, problem, status=status, request_id=request_id, body=getattr(problem, "body", None)
            )
        if self.config.fail_on_tool_calls and tool_calls_in(body):
            error = AnyfastError(TOOL_CALLS_ERROR, code="tool_calls")
            return self._failed(record, error, status=status, request_id=request_id or body.get("id"), body=body)
        self._answered += 1
        line = result_line(record, status=status, request_id=request_id or body.get("id"), body=body, error=None)
        return Outcome(line, ok=True, answer=body)


class _ModeState:
    """--schema, for one model: the response_format modes to try (best first), the one records
    go out in now, and whether an answer has shown that it works."""

    def __init__(self, ladder: tuple) -> None:
        self.ladder = ladder
        self.level = 0
        self.works = len(ladder) == 1  # a pinned mode has nothing to learn

    def took(self, level: int, log: Callable[[str], None], model) -> None:
        """The server answered a request in the mode at `level`: it works. A 400 that stepped
        down from it was that record's own, so the model goes back up to it."""
        if level < self.level:
            log(f"{model}: response_format {self.ladder[level]} was answered after all; asking in it again")
        if level <= self.level:
            self.level = level
            self.works = True


class _Reorderer:
    """--ordered: hold finished results until all earlier ones are written; work may
    run at most `window` records ahead of the oldest unwritten one."""

    def __init__(self, emit: Callable[[Outcome], None], window: int) -> None:
        self._emit = emit
        self._window = window
        self._pending: dict[int, Outcome] = {}
        self._next = 0
        self._moved = asyncio.Event()

    async def wait_for_room(self, seq: int) -> None:
        while seq >= self._next + self._window:
            self._moved.clear()
            await self._moved.wait()

    def put(self, seq: int, outcome: Outcome | None) -> None:
        """`outcome` None: the record was not run (a budget stopped the batch): nothing to write."""
        self._pending[seq] = outcome
        while self._next in self._pending:
            outcome = self._pending.pop(self._next)
            if outcome is not None:
                self._emit(outcome)
            self._next += 1
        self._moved.set()


async def check_answer(body: dict, schema: dict, deadline: float) -> list:
    """schema.parse_reply, without holding up the batch: on the event loop for the first
    INLINE_CHECK_SECONDS, then (a check that may run to its deadline) on a daemon thread,
    awaited until the deadline by the wall clock (see schema.check_reply), so that other
    records go on meanwhile and SIGTERM or Ctrl-C ends the run at once, as §5 says."""
    from anyfast_cli.schema import AnswerMismatch, parse_reply, timed_out

    started = time.monotonic()
    inline_until = started + INLINE_CHECK_SECONDS
    try:
        return parse_reply(body, schema, min(deadline, inline_until))
    except AnswerMismatch as mismatch:
        if mismatch.code != "schema_timeout" or inline_until >= deadline:
            raise
    try:
        return await asyncio.wait_for(
            on_daemon_thread(parse_reply, body, schema, deadline), deadline - time.monotonic()
        )
    except asyncio.TimeoutError:
        raise timed_out(deadline - started) from None


async def on_daemon_thread(function, *args):
    """function(*args) on a new daemon thread. Unlike asyncio.to_thread, nothing waits for it:
    a run cancelled by a signal (or a check given up at its deadline) ends while it goes on to
    its own end, and exit ends it."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(result, error) -> None:
        if future.done():  # cancelled
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def run() -> None:
        result = error = None
        try:
            result = function(*args)
        except Exception as exc:  # raised where it is awaited
            error = exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:
            pass  # the loop has closed: the run ended while this went on

    threading.Thread(target=run, name="anyfast-check", daemon=True).start()
    return await future


async def read_body(response: aiohttp.ClientResponse) -> bytearray:
    """A whole body, decoded, read no further than its bound (exchange.Body), as client.py
    reads one: past it an answer is an error; of an error response, the start."""
    body = Body(response.status, response.headers)
    async for data in response.content.iter_any():
        body.feed(data)
        if body.full:
            break
    return body.content


def attempt_timeout(policy: NetworkPolicy, attempts: Attempts) -> aiohttp.ClientTimeout:
    """One attempt's timeouts: --timeout's for connecting and each read, and as its total
    whatever --max-time leaves of the record's time (aiohttp's total covers the body too)."""
    return aiohttp.ClientTimeout(
        total=attempts.time_left(), sock_connect=policy.connect_timeout, sock_read=policy.read_timeout
    )


def open_session(policy: NetworkPolicy, concurrency: int) -> aiohttp.ClientSession:
    """One session for the whole batch, on the shared network policy. trust_env stays off:
    the proxy is given per request, and ~/.netrc must not add Basic auth beside the key.
    It has no timeouts of its own: each request brings its attempt's (attempt_timeout)."""
    connector = aiohttp.TCPConnector(
        limit=concurrency,
        limit_per_host=concurrency,
        ssl=policy.ssl_context if policy.ssl_context is not None else True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=False,
        max_line_size=policy.max_header_bytes,
        max_field_size=policy.max_header_bytes,
    )


def net_failure(exc: Exception, policy: NetworkPolicy) -> NetFailure:
    """aiohttp's exceptions in the neutral words of exchange.py (as client.py maps httpx's)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return NetFailure("proxy", "timed out") if policy.proxy else NetFailure("connect_timeout")
    if isinstance(exc, asyncio.TimeoutError):
        return NetFailure("read_timeout")
    kind, detail = failure_kind_from_chain(exc)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return NetFailure("tls", getattr(exc.certificate_error, "verify_message", "") or detail)
    if isinstance(exc, (aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError)):
        return NetFailure("proxy", detail or getattr(exc, "message", "") or str(exc))
    if isinstance(exc, aiohttp.ClientConnectorError):
        if kind == "tls":
            return NetFailure(kind, detail)
        return NetFailure("proxy" if policy.proxy else "refused", detail)
    if isinstance(exc, aiohttp.ClientResponseError) and "got more than" in str(exc).lower():
        return NetFailure("headers_too_large")
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError)):
        return NetFailure("closed")
    if isinstance(exc, aiohttp.ClientResponseError):
        return NetFailure("closed") if exc.status == 0 else NetFailure("other", exc.message)
    return NetFailure("other", detail or str(exc) or type(exc).__name__)
