"""Exit codes and the exception tree. Imports nothing from the package.

Every failure a user can meet is an AnyfastError carrying its exit code; the CLI
boundary (cli.py) is the one place that turns it into `anyfast: error: …` and `$?`.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    API = 1  # the API answered with an error, or a stream broke after output began
    USAGE = 2  # bad flag, value or input file; found before anything is sent
    AUTH = 3  # no API key, or 401/403
    NETWORK = 4  # cannot connect, timed out, reset before any output
    RATE_LIMITED = 5  # 429 after retries
    BATCH_PARTIAL = 6  # batch finished but some records failed
    INTERRUPTED = 130  # Ctrl-C
    BROKEN_PIPE = 141  # stdout closed by the reader, as a C tool killed by SIGPIPE


class AnyfastError(Exception):
    """A failure with a one-line message, an optional hint line and an exit code."""

    exit_code = ExitCode.API

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

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
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code
        self.body = body


class RateLimitError(ApiError):
    exit_code = ExitCode.RATE_LIMITED


class ApiAuthError(ApiError):
    exit_code = ExitCode.AUTH


class OutputError(AnyfastError):
    """The answer could not be written (a full disk, a failing device)."""


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


def redact(text: str, secret: str | None) -> str:
    """The key is never printed, even when a server echoes it back."""
    return text.replace(secret, "***") if secret else text


@contextmanager
def masking_key(secret: str):
    """Mask `secret` in any AnyfastError leaving the block."""
    try:
        yield
    except AnyfastError as exc:
        exc.message = redact(exc.message, secret)
        raise


def error_from_response(status: int, content: bytes, reason: str = "") -> ApiError:
    """The server's own message when the body is an OpenAI-style error object."""
    message, code, body = None, None, None
    try:
        body = json.loads(content)
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message = error.get("message")
            code = error.get("code") or error.get("type")
        elif isinstance(error, str):
            message = error
        elif isinstance(body, dict) and isinstance(body.get("message") or body.get("detail"), str):
            message = body.get("message") or body["detail"]  # other frameworks' error shapes
        else:
            message = content.decode("utf-8", "replace")  # show what came, shortened
    except ValueError:
        message = content.decode("utf-8", "replace")
    summary = f"HTTP {status}" + (f" {reason}" if reason else "")
    message = one_line(message) if message else ""
    text = f"{summary}: {message}" if message else summary
    return api_error_for_status(status, text, code=str(code) if code is not None else None, hint=_hint(status), body=body)


def error_in_body(data) -> ApiError | None:
    """An `{"error": …}` object in a 200 response or stream event."""
    if isinstance(data, dict) and data.get("error") and not data.get("choices"):
        error = data["error"]
        message = error.get("message") if isinstance(error, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        return ApiError(f"the server reported an error: {one_line(message or json.dumps(error))}", code=code, body=data)
    return None


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
        choices = data.get("choices", [] if chunk else None)
        if isinstance(choices, list) and (chunk or choices):  # a whole answer has at least one choice
            for choice in choices:
                if not isinstance(choice, dict) or not isinstance(choice.get(part) or {}, dict):
                    break
            else:
                return None
    what = "stream event" if chunk else "answer"
    return ApiError(f"the server's {what} is not a chat completion", code="invalid_response", body=data)


def _hint(status: int) -> str | None:
    if status in (401, 403):
        return "check ANYFAST_API_KEY, --api-key or the config's api_key"
    if status == 404:
        return "check the model name (-m) and the base URL"
    return None
