"""The request, built from values (pure): its body (the one place body fields live),
its URL and its headers."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from anyfast_cli import __version__
from anyfast_cli.errors import AuthError, UsageError
from anyfast_cli.settings import DEFAULT_MODEL
from anyfast_cli.structured import ValueProblem, check_value, json_writer

# field -> (low, high), both inclusive (§1)
RANGES = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "frequency_penalty": (-2.0, 2.0),
    "presence_penalty": (-2.0, 2.0),
}
DEFAULT_MODEL_MAX_TOKENS = 8192
RESERVED_HINTS = {
    "model": "use -m/--model, or model: in the profile or conversation file",
    "messages": "give the prompt as arguments, on stdin, or in a conversation file",
    "stream": "complete and chat take --stream/--no-stream; batch never streams",
}
USER_AGENT = f"anyfast/{__version__}"
THINKING_TYPES = ("enabled", "disabled", "auto")


@dataclass(frozen=True)
class RequestFlags:
    """The request options of §3 as the user gave them; None/empty means not given."""

    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stop: tuple[str, ...] = ()
    params: tuple[str, ...] = ()  # KEY=VALUE
    images: tuple[str, ...] = ()
    videos: tuple[str, ...] = field(default=())
    fps: float | None = None
    tools: str | None = None  # --tools FILE: a JSON or YAML list of tool definitions
    tool_choice: str | None = None  # auto, none, required, or a function's name


def flag_fields(flags: RequestFlags, params: dict) -> dict:
    """Body fields from `-p` and the dedicated flags (a dedicated flag wins over `-p`)."""
    fields = dict(params)
    for name in ("max_tokens", "temperature", "top_p", "frequency_penalty", "presence_penalty"):
        value = getattr(flags, name)
        if value is not None:
            fields[name] = value
    if flags.stop:
        fields["stop"] = flags.stop[0] if len(flags.stop) == 1 else list(flags.stop)
    return fields


def check_fields(fields: dict, model: str) -> None:
    """Reject out-of-range values before anything is sent (exit 2)."""
    for name, (low, high) in RANGES.items():
        if name in fields:
            value = fields[name]
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or math.isnan(value)
                or not low <= value <= high
            ):
                raise UsageError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")
    for name in ("max_tokens", "max_completion_tokens"):  # the newer name for the same bound
        if name not in fields:
            continue
        value = fields[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{name} must be a whole number, 1 or more, got {value!r}")
        if model == DEFAULT_MODEL and value > DEFAULT_MODEL_MAX_TOKENS:
            raise UsageError(f"{name} must be at most {DEFAULT_MODEL_MAX_TOKENS} for {model}, got {value}")
    if "stop" in fields:
        stop = fields["stop"]
        if not isinstance(stop, str) and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
            raise UsageError(f"stop must be a string or a list of strings, got {stop!r}")
    if "stream_options" in fields and not isinstance(fields["stream_options"], dict):
        raise UsageError(
            f'stream_options must be an object like {{"include_usage": true}}, got {fields["stream_options"]!r}'
        )
    for name in ("model", "messages", "stream"):
        if name in fields:
            raise UsageError(f"'{name}' is set by anyfast itself, not as a body field", hint=RESERVED_HINTS[name])
    thinking = fields.get("thinking")
    if thinking is not None and not (isinstance(thinking, dict) and thinking.get("type") in THINKING_TYPES):
        raise UsageError(f'thinking must look like {{"type": "enabled"}} or {{"type": "disabled"}}, got {thinking!r}')


def build_body(
    model: str, messages: list[dict], fields: dict, *, stream: bool, include_usage: bool = False, check: bool = True
) -> dict:
    """The JSON body: model, messages, the fields the user set, and stream. Every body passes
    here, so here is where anything JSON cannot carry is refused, whatever input it came from:
    NaN, text that is not UTF-8 (an argument's stray bytes), nesting too deep (exit 2).
    `check=False` is for batch records, whose values are checked as each line is parsed
    (and the command's options once, batch/jobs.JobOptions)."""
    if not messages:
        raise UsageError("nothing to send: the conversation has no messages")
    body = {"model": model, "messages": messages, **fields, "stream": stream}
    if stream and include_usage:
        body["stream_options"] = {**fields.get("stream_options", {}), "include_usage": True}
    if not check:
        return body
    try:
        check_value(body)
    except ValueProblem as exc:
        raise UsageError(f"the request cannot be sent: {exc.describe()}") from None
    return body


# json.dumps(ensure_ascii=False, separators=(",", ":")) from a writer made once (structured.json_writer):
# a batch writes one body per record.
_write_json = json_writer()


def encode_body(body: dict) -> bytes:
    """The body's bytes as both transports send them (and as the usage log's body_sha256 hashes them)."""
    return _write_json(body).encode("utf-8")


def with_media(message: dict, image_urls=(), video_parts=()) -> dict:
    """The message with image and video parts after its text (content becomes a list of parts)."""
    if not image_urls and not video_parts:
        return message
    content = message.get("content")
    parts = list(content) if isinstance(content, list) else ([{"type": "text", "text": content}] if content else [])
    parts += [image_part(url) for url in image_urls]
    parts += list(video_parts)
    return {**message, "content": parts}


def user_message(text: str, image_urls=(), video_parts=()) -> dict:
    """A user message: plain text, or text followed by image/video parts."""
    return with_media({"role": "user", "content": text}, image_urls, video_parts)


def auth_headers(api_key: str) -> dict:
    # A key pasted with its newline still works; a key that cannot be a header value is
    # refused here, because httpx's own error would quote the whole header, key included.
    key = api_key.strip()
    if not key or not key.isascii() or not key.isprintable():
        raise AuthError("the API key holds characters that cannot be sent in a header (the key is not shown)")
    return {"Authorization": f"Bearer {key}", "User-Agent": USER_AGENT}


def endpoint_url(base_url: str) -> str:
    return f"{base_url.rstrip('/')}/chat/completions"


def describe_request(base_url: str, body: dict) -> dict:
    """What `--dry-run` prints: the request as it would be sent, the key redacted."""
    return {
        "method": "POST",
        "url": endpoint_url(base_url),
        "headers": {"Authorization": "Bearer ***", "Content-Type": "application/json"},
        "body": body,
    }


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def video_part(url: str, fps: float | None = None) -> dict:
    video = {"url": url}
    if fps is not None:
        video["fps"] = fps
    return {"type": "video_url", "video_url": video}


# Fields a batch record may carry to override the command's settings for itself.
BODY_FIELDS = frozenset(
    {
        "model",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "frequency_penalty",
        "presence_penalty",
        "stop",
        "seed",
        "n",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "user",
        "thinking",
        "reasoning_effort",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
    }
)


def estimate_tokens(body: dict) -> int:
    """A rough token count for client-side --tpm pacing: ~4 characters a token, plus max_tokens."""

    prompt = len(json.dumps(body.get("messages", ()), ensure_ascii=False)) // 4 + 1
    return prompt + int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)
