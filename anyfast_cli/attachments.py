"""Attachments -> what a message carries (reads files; URLs through fetch.py).

-i/--image and --video: a URL (https://, http://, data:) passes through; a local file, typed
by its extension, becomes a base64 `data:` URI, within the size the gateway accepts.

-a/--attach: a file, `-` (stdin) or an http(s) URL (fetched), typed by its content alone
(sniff.py): UTF-8 text becomes a block of the message's text, a line naming it and its text in
a fence longer than any run of backticks inside (so it can never close its own fence); an image
or a video becomes a part, as -i and --video make. Anything else, a directory, or more than the
limits (each attachment, and all of them together) is exit 2 naming it, never truncated.
Local files and stdin are read first, so a bad one is found before any URL is fetched.
"""

from __future__ import annotations

import base64
import math
import mimetypes
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from anyfast_cli.errors import UsageError
from anyfast_cli.reading import MIB, TooLarge, read_file_limited, size_text
from anyfast_cli.request import image_part, video_part
from anyfast_cli.sniff import IMAGE, TEXT, VIDEO, sniff
from anyfast_cli.structured import text_problem
from anyfast_cli.text import neutralise

IMAGE_MAX_BYTES = 10 * MIB  # the gateway's limit for one image
VIDEO_MAX_BYTES = 50 * MIB  # larger clips should be passed by URL
URL_PREFIXES = ("https://", "http://", "data:")


def is_url(ref: str) -> bool:
    return ref.startswith(URL_PREFIXES)


def load_attachments(
    images, videos, fps: float | None = None, *, other_videos: bool = False
) -> tuple[list[str], list[dict]]:
    """-i/--image and --video/--fps (or a message's images/videos/fps) -> image URLs and
    video_url parts, files read and checked. `other_videos`: -a brings videos for --fps."""
    if fps is not None and not videos and not other_videos:
        raise UsageError("--fps applies to --video (or a video given with -a), and no video was given")
    if fps is not None and not 0 < fps < math.inf:
        raise UsageError(f"--fps must be a positive number of frames a second, got {fps}")
    image_urls = [load_media(ref, "image") for ref in images]
    return image_urls, [video_part(load_media(ref, "video"), fps) for ref in videos]


def load_media(ref: str, kind: str = "image") -> str:
    """`kind` is "image" or "video". A file is read up to its limit whatever its size claims:
    a link to a device or a FIFO reports 0 bytes. `ref` is UTF-8 text: an argument (cli.py
    refuses one that is not) or a file's value (their loaders refuse one that is not)."""
    if is_url(ref):
        return ref
    mime, _ = mimetypes.guess_type(ref)
    if not mime or not mime.startswith(kind + "/"):
        raise UsageError(f"{ref}: not a known {kind} type (by its extension)")
    limit = IMAGE_MAX_BYTES if kind == "image" else VIDEO_MAX_BYTES
    try:
        data, _ = read_file_limited(ref, limit)
    except TooLarge:
        raise UsageError(
            f"{ref}: over the {size_text(limit)} limit for {'an' if kind == 'image' else 'a'} {kind}",
            hint="pass a smaller file, or an https:// URL",
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read {kind} {ref}: {exc.strerror or exc}") from None
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# --- -a/--attach ---------------------------------------------------------------------------------

# A text attachment: as much as a prompt on stdin may hold (streams.STDIN_PROMPT_MAX_BYTES), some
# 4 million tokens, past any model's context.
TEXT_MAX_BYTES = 16 * MIB
ATTACHMENT_MAX_BYTES = max(TEXT_MAX_BYTES, IMAGE_MAX_BYTES, VIDEO_MAX_BYTES)  # what one read may take
# All attachments of one command together: a request body, base64 included, stays under 100 MB.
ATTACHMENTS_MAX_BYTES = 64 * MIB
KIND_LIMITS = {
    TEXT: (TEXT_MAX_BYTES, "a text"),
    IMAGE: (IMAGE_MAX_BYTES, "an image"),
    VIDEO: (VIDEO_MAX_BYTES, "a video"),
}
STDIN = "-"
FETCHED_PREFIXES = ("https://", "http://")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_BACKTICKS = re.compile(r"`+")


@dataclass(frozen=True)
class Attachment:
    ref: str  # as given: a path, a URL, "-" for stdin
    kind: str  # sniff.TEXT, IMAGE or VIDEO
    text: str | None = None  # TEXT: the file's text
    url: str | None = None  # IMAGE or VIDEO: a data: URI of its bytes

    @property
    def label(self) -> str:
        """How the text block names it: the path or URL as given, `stdin` for -."""
        return label_of(self.ref)


def label_of(ref: str) -> str:
    """An attachment's name in its text block and in errors: `stdin` for -, a data: URI by its
    head (not megabytes of base64), anything else as given."""
    if ref == STDIN:
        return "stdin"
    if ref.startswith("data:"):
        return ref.partition(",")[0] + ",…"
    return ref


def is_fetched(ref: str) -> bool:
    return ref.startswith(FETCHED_PREFIXES)


def typed_attachment(ref: str, data: bytes) -> Attachment:
    """An attachment of `data`, typed by its content; UsageError naming `ref` when it is not
    UTF-8 text, an image or a video, or is past its kind's limit."""
    kind = sniff(data)
    label = label_of(ref)
    if kind.kind not in KIND_LIMITS:
        raise UsageError(
            f"-a {label}: not UTF-8 text, an image or a video (by its content)",
            hint="attach text files, images and videos; convert other formats to text first",
        )
    limit, what = KIND_LIMITS[kind.kind]
    if len(data) > limit:
        raise UsageError(f"-a {label}: over the {size_text(limit)} limit for {what} attachment")
    if kind.kind == TEXT:
        return Attachment(ref, TEXT, text=data.decode("utf-8").removeprefix("\ufeff"))
    return Attachment(ref, kind.kind, url=f"data:{kind.mime};base64,{base64.b64encode(data).decode('ascii')}")


def data_uri_bytes(ref: str) -> bytes:
    """The bytes of a base64 `data:` URI (as --save writes an attachment read from stdin)."""
    head, comma, payload = ref.partition(",")
    if not comma or not head.endswith(";base64"):
        raise UsageError(f"-a {label_of(ref)}: only base64 data: URIs are read")
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError:
        raise UsageError(f"-a {label_of(ref)}: not valid base64") from None


class AttachmentReader:
    """Reads -a attachments for one command, each once (by its reference): local files, stdin
    and data: URIs first, then URLs through `fetch(url, limit)`, keeping the total in bounds."""

    def __init__(
        self,
        *,
        read_stdin: Callable[[int], bytes | None],  # at most `limit` bytes (else UsageError); None: no stdin
        fetch: Callable[[str, int], bytes] | None = None,
        fetch_deadline: Callable[[], float | None] = lambda: None,  # the --max-time deadline fetching began
    ) -> None:
        self._read_stdin = read_stdin
        self._fetch = fetch
        self._fetch_deadline = fetch_deadline
        self._loaded: dict[str, Attachment] = {}  # by _key: a file by its absolute path
        self._total = 0

    def read(self, refs: Iterable[str]) -> list[Attachment]:
        """The attachments `refs` name, in their order; each is read once however often it is named."""
        refs = list(refs)
        for ref in refs:
            check_ref(ref)
        for ref in refs:
            if not is_fetched(ref) and _key(ref) not in self._loaded:
                self._add(ref, self._read_local(ref))
        for ref in refs:
            if is_fetched(ref) and _key(ref) not in self._loaded:
                self._add(ref, self._read_url(ref))
        return [self._loaded[_key(ref)] for ref in refs]

    @property
    def deadline(self) -> float | None:
        """The --max-time deadline that fetching URLs began, which the request keeps; None when
        nothing was fetched (or there is no --max-time)."""
        return self._fetch_deadline()

    def saved_ref(self, attachment: Attachment) -> str:
        """How a conversation saved with --save refers to an attachment: as given (a path made
        absolute), or, for stdin, which cannot be read again, a data: URI of its bytes."""
        if attachment.ref != STDIN:
            return attachment.ref if is_url(attachment.ref) else os.path.abspath(attachment.ref)
        self._loaded.setdefault(attachment.url, attachment)
        return attachment.url

    def _add(self, ref: str, data: bytes) -> None:
        attachment = typed_attachment(ref, data)
        self._total += len(data)
        if self._total > ATTACHMENTS_MAX_BYTES:
            raise UsageError(
                f"-a {attachment.label}: the attachments together are over the {size_text(ATTACHMENTS_MAX_BYTES)} limit"
            )
        self._loaded[_key(ref)] = attachment

    def _room(self) -> int:
        """What the next read may take: its kind's largest limit, and what the total leaves."""
        return min(ATTACHMENT_MAX_BYTES, ATTACHMENTS_MAX_BYTES - self._total)

    def _read_local(self, ref: str) -> bytes:
        if ref == STDIN:
            data = self._read_stdin(self._room())  # past the limit: its own error, naming stdin
            if data is None:
                raise UsageError("-a -: standard input is a terminal, closed, or turned off by -n")
            return data
        if ref.startswith("data:"):
            return self._bounded(label_of(ref), data_uri_bytes(ref))
        if os.path.isdir(ref):
            raise UsageError(f"-a {ref}: a directory; attach its files one by one")
        try:
            data, _ = read_file_limited(ref, self._room())
        except TooLarge:
            raise self._too_large(ref) from None
        except OSError as exc:
            raise UsageError(f"-a {ref}: cannot read it: {exc.strerror or exc}") from None
        return data

    def _read_url(self, ref: str) -> bytes:
        if self._fetch is None:
            raise UsageError(f"-a {ref}: URLs are not fetched here")
        try:
            return self._fetch(ref, self._room())
        except TooLarge:
            raise self._too_large(ref) from None

    def _bounded(self, label: str, data: bytes) -> bytes:
        if len(data) > self._room():
            raise self._too_large(label)
        return data

    def _too_large(self, label: str) -> UsageError:
        if self._room() < ATTACHMENT_MAX_BYTES:
            return UsageError(
                f"-a {label}: the attachments together are over the {size_text(ATTACHMENTS_MAX_BYTES)} limit"
            )
        return UsageError(f"-a {label}: over the {size_text(ATTACHMENT_MAX_BYTES)} limit for an attachment")


def _key(ref: str) -> str:
    """A reference as the reader keeps it: a local file by its absolute path, so a conversation's
    saved reference finds what the prompt's -a read."""
    return ref if ref == STDIN or is_url(ref) else os.path.abspath(ref)


def check_ref(ref: str) -> None:
    """What -a takes: a path, `-`, an http(s) URL or a base64 data: URI; never another scheme."""
    problem = text_problem(ref)
    if problem:
        raise UsageError(f"-a {ascii(ref)[:80]} {problem}")
    if _SCHEME.match(ref) and not is_fetched(ref):
        raise UsageError(f"-a {ref[:200]}: only http:// and https:// URLs are fetched")


def fence_for(text: str) -> str:
    """A code fence longer than any run of backticks in `text`, so nothing inside can close it."""
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    return "`" * max(3, longest + 1)


def text_block(label: str, text: str) -> str:
    """A text attachment as the model reads it: a line naming it, then its text in a fence.
    The name is one line: control characters in it (a newline in a file name) are made visible."""
    fence = fence_for(text)
    body = text if not text or text.endswith("\n") else text + "\n"
    name = neutralise(label.replace("\r", "^M").replace("\n", "^J"))  # neutralise keeps line ends
    return f"{name}\n{fence}\n{body}{fence}"


def with_attachments(message: dict, attachments: list[Attachment], fps: float | None = None) -> dict:
    """The message with its attachments: text blocks, in order, before its text; images and
    videos as parts after it."""
    blocks = "\n\n".join(text_block(a.label, a.text) for a in attachments if a.kind == TEXT)
    media = [image_part(a.url) if a.kind == IMAGE else video_part(a.url, fps) for a in attachments if a.kind != TEXT]
    if not blocks and not media:
        return message
    content = message.get("content")
    if blocks:
        if isinstance(content, list):
            content = [{"type": "text", "text": blocks}, *content]
        else:
            content = f"{blocks}\n\n{content}" if content else blocks
    if media:
        parts = list(content) if isinstance(content, list) else ([{"type": "text", "text": content}] if content else [])
        content = parts + media
    return {**message, "content": content}
