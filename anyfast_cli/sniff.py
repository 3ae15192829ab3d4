"""What a file is, from its bytes alone (pure): UTF-8 text, an image, a video, or other binary.

`-a` types an attachment by its content, never its name: a screenshot saved without an
extension is an image, and `notes.png` that holds text is text. The signatures are the
formats' own magic numbers (the WHATWG MIME Sniffing standard's image and video patterns);
text is what decodes as UTF-8 and holds no NUL, the test git and grep use for "binary".
"""

from __future__ import annotations

from dataclasses import dataclass

TEXT, IMAGE, VIDEO, BINARY = "text", "image", "video", "binary"

# (prefix at offset 0, MIME type); checked in order.
_PREFIXES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"\x00\x00\x01\x00", "image/x-icon"),
    (b"\x1a\x45\xdf\xa3", "video/webm"),  # EBML: WebM and Matroska
)
# RIFF containers: the form type at offset 8.
_RIFF_FORMS = {b"WEBP": "image/webp", b"AVI ": "video/x-msvideo"}
# ISO base media files (MP4, QuickTime, HEIF, AVIF): the major brand of the `ftyp` box at 8.
_IMAGE_BRANDS = {b"heic": "image/heic", b"heix": "image/heic", b"mif1": "image/heif", b"avif": "image/avif"}
_QUICKTIME_BRAND = b"qt  "
ISO_SIZE_MIN = 12  # an `ftyp` box: size (4), "ftyp" (4), major brand (4)
HEAD_BYTES = 512  # bytes a signature is looked for in


@dataclass(frozen=True)
class Kind:
    kind: str  # TEXT, IMAGE, VIDEO or BINARY
    mime: str  # "text/plain" for text, "application/octet-stream" for other binary


def sniff(data: bytes) -> Kind:
    """The kind of `data`: text when it is UTF-8 with no NUL byte (a byte-order mark allowed;
    empty data is empty text), else an image or video by its signature, else binary. Text is
    tried first: some signatures ("BM", "GIF89a") can begin a line of text, but no real image
    or video is valid UTF-8 throughout."""
    if b"\x00" not in data:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return Kind(TEXT, "text/plain")
    media = media_type(data[:HEAD_BYTES])
    if media is not None:
        return Kind(media.split("/", 1)[0], media)
    return Kind(BINARY, "application/octet-stream")


def media_type(head: bytes) -> str | None:
    """The image or video MIME type the first bytes of a file announce, or None."""
    for prefix, mime in _PREFIXES:
        if head.startswith(prefix):
            return mime
    if head[:4] == b"RIFF" and head[8:12] in _RIFF_FORMS:
        return _RIFF_FORMS[head[8:12]]
    if len(head) >= ISO_SIZE_MIN and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _IMAGE_BRANDS:
            return _IMAGE_BRANDS[brand]
        return "video/quicktime" if brand == _QUICKTIME_BRAND else "video/mp4"
    return None
