"""One request's result: the facts every reader of a finished request takes from one object.

Both transport shells (client.py, batch/runner.py) build it, through `build_result`, when
a request ends, however it ends; the usage log writes it as a line, the budget adds it up,
and batch's summary totals it. Pure: the caller passes the clock's readings in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from anyfast_cli.errors import AnyfastError, ExitCode, Terminated
from anyfast_cli.prices import PriceTable, cost

USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "reasoning_tokens", "cached_tokens")
MAX_TOKENS_COUNTED = 10**15  # a count past this is not one a server meant


# Not frozen, and with slots: batch makes one of each per record, and a frozen dataclass sets
# each field through object.__setattr__ (a third of the cost of building a result).
@dataclass(slots=True)
class Usage:
    """The server's token counts; None where it did not say (or said something that is not a count)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None

    @classmethod
    def of(cls, usage) -> Usage:
        """From a response's `usage` object (`prompt_tokens_details.cached_tokens`,
        `completion_tokens_details.reasoning_tokens`)."""
        if not isinstance(usage, dict):
            return NO_USAGE
        prompt_details = usage.get("prompt_tokens_details")
        completion_details = usage.get("completion_tokens_details")
        return cls(
            _count(usage.get("prompt_tokens")),
            _count(usage.get("completion_tokens")),
            _count(usage.get("total_tokens")),
            _count(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else None,
            _count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else None,
        )

    @property
    def tokens(self) -> int:
        """Tokens a budget counts: the total, else prompt + completion (None counts 0)."""
        if self.total_tokens is not None:
            return self.total_tokens
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)


NO_USAGE = Usage()
NOTHING_USED = Usage(0, 0, 0, 0, 0)  # a cache hit's: no request, so no tokens


def _count(value) -> int | None:
    if type(value) is int:  # nearly every count: the fast path
        return value if 0 <= value <= MAX_TOKENS_COUNTED else None
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and 0 <= value <= MAX_TOKENS_COUNTED else None


@dataclass(slots=True)
class RequestResult:
    """What one request came to. `model` is the one that answered (the one the request named);
    `status` is "ok" or a name for the failure, never empty; `exit` the status the request
    alone would have (§5). Its time and body hash are worked out when asked for (`ts`,
    `body_sha256`): only the usage log and --events read them, and batch makes one per record."""

    ended_at: float  # the wall clock when it ended
    command: str
    profile: str
    model: str
    request_id: str | None
    status: str
    exit: int
    attempts: int
    latency_ms: int
    usage: Usage
    cost: float | None
    currency: str | None
    cache: str | None = None
    custom_id: str | None = None
    payload: bytes | None = None  # the body as sent
    finish_reason: str | None = None
    error: AnyfastError | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def ts(self) -> str:
        return rfc3339(self.ended_at)

    @property
    def body_sha256(self) -> str | None:
        return body_digest(self.payload) if self.payload is not None else None

    def log_line(self) -> dict:
        """The usage log's line (§3): never prompt or answer text, never the key."""
        return {
            "ts": self.ts,
            "command": self.command,
            "profile": self.profile,
            "model": self.model,
            "request_id": self.request_id,
            "status": self.status,
            "exit": self.exit,
            "attempts": self.attempts,
            "latency_ms": self.latency_ms,
            **{name: getattr(self.usage, name) for name in USAGE_FIELDS},
            "cost": self.cost,
            "currency": self.currency,
            "cache": self.cache,
            "custom_id": self.custom_id,
            "body_sha256": self.body_sha256,
        }


@dataclass(frozen=True)
class RequestContext:
    """What the command knows of its requests before any is sent."""

    command: str
    profile: str
    prices: PriceTable


def body_digest(payload: bytes) -> str:
    import hashlib  # loaded only once a request has been sent

    return hashlib.sha256(payload).hexdigest()


def rfc3339(epoch: float) -> str:
    """2026-12-07T03:31:23.123Z (UTC, milliseconds)."""
    seconds = int(epoch)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((epoch - seconds) * 1000):03d}Z"


def status_name(error: BaseException | None) -> str:
    """ "ok", else the server's error code (or type), else a name anyfast gives the failure."""
    if error is None:
        return "ok"
    if isinstance(error, Terminated):
        return "terminated"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if isinstance(error, GeneratorExit):  # the reader stopped reading (stdout closed)
        return "closed"
    code = getattr(error, "code", None)
    if code == "network_error":
        return "network"
    if code:
        return str(code)
    status = getattr(error, "status", None)
    if status:
        return f"http_{status}"
    if isinstance(error, AnyfastError) and error.exit_code == ExitCode.NETWORK:
        return "network"
    return "error"


def exit_of(error: BaseException | None, *, tool_calls: bool = False) -> int:
    if error is None:
        return int(ExitCode.TOOL_CALLS if tool_calls else ExitCode.OK)
    if isinstance(error, Terminated):
        return 128 + error.signum
    if isinstance(error, KeyboardInterrupt):
        return int(ExitCode.INTERRUPTED)
    if isinstance(error, GeneratorExit):
        return int(ExitCode.BROKEN_PIPE)
    return int(getattr(error, "exit_code", ExitCode.API))


@dataclass(slots=True)
class Trace:
    """What a transport shell notes of one request while it runs, for build_result."""

    model: str
    started: float  # monotonic
    payload: bytes | None = None  # the body as sent
    custom_id: str | None = None
    request_id: str | None = None
    usage: object = None  # the response's usage object, as received
    finish_reason: str | None = None
    tool_calls: bool = False
    cache: str | None = None

    def note_answer(self, data: dict) -> None:
        """A whole answer, or a stream chunk that carries usage or a finish_reason."""
        usage = data.get("usage")
        if usage:
            self.usage = usage
        for choice in data.get("choices") or ():
            if isinstance(choice, dict) and choice.get("finish_reason"):
                if self.finish_reason is None:
                    self.finish_reason = str(choice["finish_reason"])
                if choice["finish_reason"] == "tool_calls" or (choice.get("message") or {}).get("tool_calls"):
                    self.tool_calls = True


def build_result(
    context: RequestContext,
    trace: Trace,
    *,
    ended: float,
    now: float,
    attempts: int,
    error: BaseException | None = None,
) -> RequestResult:
    """The one way a RequestResult is made: `ended` is a monotonic reading, `now` the wall clock.
    A cache hit sent nothing: it used no tokens and cost nothing, whatever the answer it replays
    once used (§3: budgets and the usage log count it as 0)."""
    price = context.prices.price_for(trace.model)
    if trace.cache == "hit":
        counts, spent = NOTHING_USED, 0.0
    else:
        counts = Usage.of(trace.usage)
        spent = cost(price, counts.prompt_tokens, counts.completion_tokens, counts.cached_tokens)
    return RequestResult(
        ended_at=now,
        command=context.command,
        profile=context.profile,
        model=trace.model,
        request_id=trace.request_id,
        status=status_name(error),
        exit=exit_of(error, tool_calls=trace.tool_calls),
        attempts=max(attempts, 1),
        latency_ms=max(0, round((ended - trace.started) * 1000)),
        usage=counts,
        cost=spent,
        currency=context.prices.currency if price is not None else None,
        cache=trace.cache,
        custom_id=trace.custom_id,
        payload=trace.payload,
        finish_reason=trace.finish_reason,
        error=error if isinstance(error, AnyfastError) else None,
    )
