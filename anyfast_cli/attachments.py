"""Images and videos given by path or URL -> URLs the API takes (reads files).

A URL (https://, http://, data:) passes through; a local file becomes a base64
`data:` URI with its MIME type, within the size the gateway accepts.
"""

from __future__ import annotations

import base64
import math
import mimetypes

from anyfast_cli.errors import UsageError
from anyfast_cli.reading import MIB, TooLarge, read_file_limited, size_text
from anyfast_cli.request import video_part

IMAGE_MAX_BYTES = 10 * MIB  # the gateway's limit for one image
VIDEO_MAX_BYTES = 50 * MIB  # larger clips should be passed by URL
URL_PREFIXES = ("https://", "http://", "data:")


def is_url(ref: str) -> bool:
    return ref.startswith(URL_PREFIXES)


def load_attachments(images, videos, fps: float | None = None) -> tuple[list[str], list[dict]]:
    """-i/--image and --video/--fps (or a message's images/videos/fps) -> image URLs and
    video_url parts, files read and checked."""
    if fps is not None and not videos:
        raise UsageError("--fps applies to --video, and no video was given")
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
