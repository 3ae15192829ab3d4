"""What happens while a command runs, told once, in two renderings (§3 "Events").

An Observer is the one place retries, fallbacks, warnings and the -v details are told: it
writes them as prose on stderr for the person watching (as -v and warnings always have) and,
with --events, as JSON lines on stdout for a program that supervises the run (EventLines).
The transport shell tells it when each request starts and ends (with its RequestResult), so
the closing `result` event is the usage log's own line for the command's last request.

Nothing here costs anything per chunk: the answer's own events come from
answer_events.AnswerEvents, which replaces the text printer only under --events.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TextIO

from anyfast_cli.errors import AnyfastError, Terminated
from anyfast_cli.result import RequestContext, RequestResult, Trace, build_result, exit_of, status_name

EVENTS_VERSION = 1
NOT_ASKED = object()  # `parsed` before --schema has a value (absent without --schema)


class EventLines:
    """--events: each event one compact JSON line on `out` (stdout, whose writer masks the key),
    flushed as written. `start` is always the first line: anything told before it (a config
    warning) waits for it."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.started = False
        self._waiting: list[dict] = []

    def emit(self, event: str, **fields) -> None:
        line = {"v": EVENTS_VERSION, "event": event, **fields}
        if not self.started:
            if event != "start":
                self._waiting.append(line)
                return
            self.started = True
            self._write(line)
            for waiting in self._waiting:
                self._write(waiting)
            self._waiting.clear()
            return
        self._write(line)

    def _write(self, line: dict) -> None:
        self._out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._out.flush()


class Observer:
    """Told by the transport shells and the commands what happens; says it in prose on stderr
    (`say`: Streams.say) and, when `lines` is set (--events), as events. The prose is what it
    always was: -v details and retries only with `verbose`, warnings always, and after a
    fallback one line naming the model that answered."""

    def __init__(self, say: Callable[[str], None], *, verbose: bool = False, lines: EventLines | None = None) -> None:
        self._say = say
        self.verbose = verbose
        self.lines = lines
        self.attempts = 0  # attempts made by the command's finished requests
        self.last: RequestResult | None = None  # the command's latest request's result
        self.parsed = NOT_ASKED  # --schema: the validated value(s), for the result event
        self._context: RequestContext | None = None
        self._model: str | None = None
        self._finished = False

    # --- prose and events, from one call each ------------------------------------------------

    def detail(self, text: str) -> None:
        """A -v line (URL, status, request id, timings, cache): prose only."""
        if self.verbose:
            self._say(text)

    def warning(self, message: str) -> None:
        self._say(f"warning: {message}")
        self._emit("warning", message=message)

    def retry(self, retry) -> None:
        """exchange.Retry: the -v line, and the `retry` event."""
        if self.verbose:
            self._say(retry.note)
        self._emit(
            "retry",
            status=retry.status,
            failure=retry.failure,
            attempt=self.attempts + retry.number,  # the attempt that failed, counted over the command
            wait_s=round(retry.delay, 3),
            reason=retry.reason,
        )

    def fallback(self, failed: str, to: str, reason: str, message: str) -> None:
        if self.verbose:
            self._say(f"{failed} did not answer ({message}); falling back to {to}")
        self._emit("fallback", **{"from": failed, "to": to, "reason": reason})

    def answered_by(self, model: str, asked: str) -> None:
        """A fallback answered: the one line that says so even without -v."""
        self._say(f"answered by {model} (fallback for {asked})")

    # --- requests -------------------------------------------------------------------------------

    def open(self, context: RequestContext, model: str) -> None:
        """The command is about to send (its settings are known): from now on it ends with a
        `result` event (finish), and `start` comes before anything else."""
        self._context, self._model = context, model

    def request_started(self, model: str) -> None:
        self._emit("start", model=model, attempt=self.attempts + 1)

    def request_ended(self, result: RequestResult) -> None:
        self.attempts += result.attempts
        self.last = result

    def finish(self, error: BaseException | None) -> None:
        """The command has ended, with `error` or not: the one `result` event (once)."""
        if self.lines is None or self._context is None or self._finished:
            return
        self._finished = True
        if not self.lines.started:  # ended before its first request was sent
            self.lines.emit("start", model=self._model, attempt=self.attempts + 1)
        self.lines.emit("result", **self.result_fields(error))

    def result_fields(self, error: BaseException | None) -> dict:
        """The usage log's line of the command's last request, with `attempts` counting every
        attempt the command made; `status`, `exit` and `error` are the command's outcome (a
        --schema mismatch, Ctrl-C, a budget reached before sending end the command after or
        without its last request), so `exit` is always the process's exit status."""
        last = self.last
        if last is None:  # nothing was sent: a line for the request that would have been
            last = build_result(self._context, Trace(self._model or "", 0.0), ended=0.0, now=_now(), attempts=1)
        fields = last.log_line()
        fields["attempts"] = self.attempts
        fields["finish_reason"] = last.finish_reason
        if error is not None:
            fields["status"] = status_name(error)
            fields["exit"] = exit_of(error)
        fields["error"] = describe_error(error)
        if self.parsed is not NOT_ASKED:
            fields["parsed"] = self.parsed
        return fields

    def _emit(self, event: str, **fields) -> None:
        if self.lines is not None and not self._finished:
            self.lines.emit(event, **fields)


def describe_error(error: BaseException | None) -> dict | None:
    if error is None:
        return None
    code = status_name(error)
    if isinstance(error, AnyfastError):
        return {"code": code, "message": error.message}
    if isinstance(error, Terminated):
        return {"code": code, "message": f"ended by signal {error.signum}"}
    if isinstance(error, KeyboardInterrupt):
        return {"code": code, "message": "interrupted"}
    return {"code": code, "message": f"{type(error).__name__}: {error}"}


def _now() -> float:
    import time

    return time.time()
