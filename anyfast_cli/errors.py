"""Exit codes and the exception tree. Imports nothing from the package.

Every failure a user can meet is an AnyfastError carrying its exit code; the CLI
boundary (cli.py) is the one place that turns it into `anyfast: error: …` and `$?`.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit status, with the words users read about it: `summary` for the one line
    in `--help`, `description` for the man page's EXIT STATUS and the README's table.
    Those are all rendered from here, so a new member shows up in each of them."""

    # value, summary, description
    OK = 0, "ok", "Success."
    API = (
        1,
        "API error",
        (
            "The API answered with an error (after retries), or with an answer that cannot be read, "
            "or a stream broke after output began, or carried an error event."
        ),
    )
    USAGE = (
        2,
        "usage or input error",
        (
            "Usage or input error, found before anything is sent: a bad flag or value, "
            "an unreadable or invalid file, no prompt."
        ),
    )
    AUTH = 3, "authentication", "Authentication: no API key, or 401/403 from the API."
    NETWORK = (
        4,
        "network",
        "Network: cannot connect, timed out, or the connection was reset before any output (after retries).",
    )
    RATE_LIMITED = 5, "rate limited", "Rate limited: 429 after retries."
    BATCH_PARTIAL = (
        6,
        "batch partly failed",
        "batch finished but some records failed (all others were written; --resume runs the failed ones again).",
    )
    SCHEMA_MISMATCH = (
        7,
        "answer not valid for --schema",
        (
            "--schema: the answer is not valid JSON for the schema (after the repair attempts), "
            "was cut short, filtered or refused, or could not be checked in time."
        ),
    )
    TOOL_CALLS = (
        8,
        "tool calls",
        "The model answered with tool calls (printed on stdout, one JSON line each), not a final answer.",
    )
    BUDGET = (
        9,
        "budget reached",
        "A budget (--budget, --budget-tokens) was reached: nothing more was sent.",
    )
    NOT_IN_CACHE = (
        10,
        "not in the cache",
        "--cache-mode replay: an answer was not in the cache, so nothing was sent (batch: some records were not).",
    )
    # Ended by a signal: 128 + its number, as a shell reports a process the signal killed.
    HANGUP = (
        129,
        "hung up (SIGHUP)",
        "Ended by SIGHUP (its terminal closed), as Ctrl-C ends it: the line in progress is ended, "
        "batch prints its summary and leaves whole lines only.",
    )
    INTERRUPTED = 130, "interrupted", "Interrupted (Ctrl-C)."
    BROKEN_PIPE = (
        141,
        "stdout closed",
        "Standard output was closed by the reader (as a C tool killed by SIGPIPE), as in anyfast complete ... | head -1.",
    )
    TERMINATED = (
        143,
        "terminated (SIGTERM)",
        "Ended by SIGTERM (timeout(1), a CI job cancelled, kill), as Ctrl-C ends it: the line in "
        "progress is ended, batch prints its summary and leaves whole lines only.",
    )

    def __new__(cls, value: int, summary: str, description: str):
        member = int.__new__(cls, value)
        member._value_ = value
        member.summary = summary
        member.description = description
        return member


class AnyfastError(Exception):
    """A failure with a one-line message, an optional hint line and an exit code."""

    exit_code = ExitCode.API

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code  # a short machine-readable name, for batch's error lines

    def render(self) -> str:
        """The one error line (and at most one hint line) a user sees on stderr."""
        return render_error(self.message, self.hint)


def render_error(message: str, hint: str | None = None) -> str:
    return f"anyfast: error: {message}\n" + (f"anyfast: hint: {hint}\n" if hint else "")


class UsageError(AnyfastError):
    exit_code = ExitCode.USAGE


class AuthError(AnyfastError):
    exit_code = ExitCode.AUTH


class NetworkError(AnyfastError):
    exit_code = ExitCode.NETWORK


class ApiError(AnyfastError):
    """The server answered with an error (HTTP status, or an error object in a 200)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        hint: str | None = None,
        body: object = None,
    ) -> None:
        super().__init__(message, hint=hint, code=code)
        self.status = status
        self.body = body


class RateLimitError(ApiError):
    exit_code = ExitCode.RATE_LIMITED


class ApiAuthError(ApiError):
    exit_code = ExitCode.AUTH


class OutputError(AnyfastError):
    """The answer could not be written (a full disk, a failing device)."""


class SchemaMismatchError(AnyfastError):
    """--schema: the answer is not valid for the schema (code: invalid_json, schema_mismatch,
    schema_timeout, truncated or refused)."""

    exit_code = ExitCode.SCHEMA_MISMATCH


class BudgetError(AnyfastError):
    """--budget or --budget-tokens is reached: nothing more is sent."""

    exit_code = ExitCode.BUDGET

    def __init__(self, message: str) -> None:
        super().__init__(message, code="budget")


class NotInCacheError(AnyfastError):
    """--cache-mode replay: the cache holds no answer for a request, and replay sends nothing."""

    exit_code = ExitCode.NOT_IN_CACHE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, code="not_in_cache")


class StreamError(AnyfastError):
    """The stream broke, or carried an error event, after it began."""


def api_error_for_status(status: int, message: str, **kwargs) -> ApiError:
    """The ApiError subclass whose exit code matches an HTTP status (§5)."""
    if status in (401, 403):
        return ApiAuthError(message, status=status, **kwargs)
    if status == 429:
        return RateLimitError(message, status=status, **kwargs)
    return ApiError(message, status=status, **kwargs)


MESSAGE_LIMIT = 300  # characters of a server's message shown in the one error line


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """A server's message as one line of bounded length (§5: each error is one line)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised wherever the program stands, so that it ends as Ctrl-C does:
    every `except KeyboardInterrupt` and `finally` on the way runs (the line in progress is
    ended, batch prints its summary, temporary files are removed)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> ExitCode:
        """128 + the signal's number, as a shell reports it: HANGUP (129) or TERMINATED (143)."""
        return ExitCode(SIGNAL_STATUS + self.signum)


SIGNAL_STATUS = 128  # a process ended by signal N exits 128 + N (130 for Ctrl-C's SIGINT)
