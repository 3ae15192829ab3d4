"""Images and videos given by path or URL -> URLs the API takes (reads files).

A URL (https://, http://, data:) passes through; a local file becomes a base64
`data:` URI with its MIME type, within the size the gateway accepts.
"""

from __future__ import annotations

import base64
import mimetypes
import os

from anyfast_cli.errors import UsageError

IMAGE_MAX_BYTES = 10 * 1024 * 1024  # the gateway's limit for one image
VIDEO_MAX_BYTES = 50 * 1024 * 1024  # larger clips should be passed by URL
URL_PREFIXES = ("https://", "http://", "data:")


def load_video_parts(refs, fps: float | None, base_dir: str | None = None) -> list[dict]:
    """`video_url` content parts for --video (Doubao models), with --fps when given."""
    from anyfast_cli.request import video_part

    if fps is not None and not refs:
        raise UsageError("--fps applies to --video, and no video was given")
    if fps is not None and not fps > 0:
        raise UsageError(f"--fps must be a positive number of frames a second, got {fps}")
    return [video_part(load_media(ref, "video", base_dir), fps) for ref in refs]


def is_url(ref: str) -> bool:
    return ref.startswith(URL_PREFIXES)


def load_media(ref: str, kind: str = "image", base_dir: str | None = None) -> str:
    """`kind` is "image" or "video"; relative paths are taken from `base_dir` when given."""
    if is_url(ref):
        return ref
    path = os.path.join(base_dir, ref) if base_dir and not os.path.isabs(ref) else ref
    mime, _ = mimetypes.guess_type(path)
    if not mime or not mime.startswith(kind + "/"):
        raise UsageError(f"{ref}: not a known {kind} type (by its extension)")
    limit = IMAGE_MAX_BYTES if kind == "image" else VIDEO_MAX_BYTES
    try:
        size = os.path.getsize(path)
        if size > limit:
            raise UsageError(
                f"{ref}: {size / 1048576:.1f} MiB is over the {limit // 1048576} MiB limit for a {kind}",
                hint="pass a smaller file, or an https:// URL",
            )
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read {kind} {ref}: {exc.strerror or exc}") from None
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
