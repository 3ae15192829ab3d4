"""What complete and chat share for -a and -o: the attachment reader (its URLs fetched under the
API's network policy), and the files a command reads or writes, which -o FILE may not be."""

from __future__ import annotations

from collections.abc import Iterable

from anyfast_cli.attachments import STDIN, Attachment, AttachmentReader, is_url, with_attachments
from anyfast_cli.errors import UsageError
from anyfast_cli.output_file import check_output_target
from anyfast_cli.request import RequestFlags
from anyfast_cli.settings import SettingFlags, Settings
from anyfast_cli.sniff import TEXT, VIDEO
from anyfast_cli.streams import Streams


def attachment_reader(settings: Settings, streams: Streams, *, verbose: bool = False) -> AttachmentReader:
    """The reader for this command's -a: stdin as bytes, URLs through one UrlFetch."""
    fetch = UrlFetch(settings, streams, verbose=verbose)
    return AttachmentReader(
        read_stdin=lambda limit: streams.read_stdin_bytes(limit, "an attachment"),
        fetch=fetch,
        fetch_deadline=lambda: fetch.deadline,
    )


class UrlFetch:
    """fetch(url, limit) for an AttachmentReader: one Fetcher for the command, made (and httpx
    imported) only when a URL is attached."""

    def __init__(self, settings: Settings, streams: Streams, *, verbose: bool) -> None:
        self._settings = settings
        self._streams = streams
        self._verbose = verbose
        self._fetcher = None

    def __call__(self, url: str, limit: int) -> bytes:
        if self._fetcher is None:
            from anyfast_cli.fetch import Fetcher

            self._fetcher = Fetcher(
                env=self._streams.env,
                timeout=self._settings.timeout,
                max_time=self._settings.max_time,
                log=self._streams.say if self._verbose else None,
            )
        return self._fetcher.fetch(url, limit)

    @property
    def deadline(self) -> float | None:
        """The --max-time deadline the fetches started (None if nothing was fetched)."""
        return self._fetcher.deadline if self._fetcher is not None else None


def check_attach_flags(attach: Iterable[str], *, no_stdin: bool, stdin_taken_by: str | None = None) -> None:
    """`-a -` makes stdin the attachment: once, and never with -n or another reader of stdin."""
    stdin_refs = [ref for ref in attach if ref == STDIN]
    if not stdin_refs:
        return
    if no_stdin:
        raise UsageError("-a - attaches standard input, and -n turns it off")
    if len(stdin_refs) > 1:
        raise UsageError("-a - is given twice; standard input can be read once")
    if stdin_taken_by:
        raise UsageError(f"-a - and {stdin_taken_by} both read standard input; give it to one")


def join_attachments(message: dict, attachments: list[Attachment], reader: AttachmentReader, fps=None) -> dict:
    """A conversation's message with -a's attachments, as --save keeps it: text blocks written
    into its text (what was sent stays what is saved, whatever the file holds later), images and
    videos as `attach` references (read again when the conversation is continued)."""
    texts = [a for a in attachments if a.kind == TEXT]
    media = [a for a in attachments if a.kind != TEXT]
    joined = with_attachments(message, texts) if texts else dict(message)
    if media:
        joined["attach"] = [*joined.get("attach", ()), *(reader.saved_ref(a) for a in media)]
        if fps is not None and any(a.kind == VIDEO for a in media):
            joined["fps"] = fps
    return joined


def schema_files(*specs: str | None) -> list[str]:
    """The files --schema/--schema-multi SPECs read (schema.parse_spec's rules)."""
    from anyfast_cli.schema import names_a_file

    files = []
    for spec in specs:
        text = (spec or "").strip()
        if text.startswith("@"):
            files.append(text[1:])
        elif text and not text.startswith("{") and names_a_file(text):
            files.append(text)
    return files


def local_refs(refs: Iterable[str]) -> list[str]:
    return [ref for ref in refs if ref != STDIN and not is_url(ref)]


def command_files(
    settings: Settings,
    settings_flags: SettingFlags,
    request: RequestFlags,
    *,
    attach: Iterable[str] = (),
    schema_flags=None,
    more: Iterable[tuple[str, str]] = (),
) -> list[tuple[str, str]]:
    """(flag, path) for every file the command reads or writes besides -o: -a, -i, --video,
    --schema, --tools, the config, --prices, the usage log, and `more` (chat's -f, --save, ...)."""
    files = [("-a", ref) for ref in local_refs(attach)]
    files += [("-i", ref) for ref in local_refs(request.images)]
    files += [("--video", ref) for ref in local_refs(request.videos)]
    if schema_flags is not None:
        files += [("--schema", path) for path in schema_files(schema_flags.schema, schema_flags.schema_multi)]
    if request.tools:
        files.append(("--tools", request.tools))
    files.append(("the config file", settings.config_path))
    if settings_flags.prices:
        files.append(("--prices", settings_flags.prices))
    if settings.usage_log:
        files.append(("the usage log", settings.usage_log))
    return [*files, *more]


def check_output(output: str | None, files: list[tuple[str, str]], streams: Streams, *, reads_stdin: bool) -> None:
    """-o FILE: exit 2 when it cannot be written, or is one of `files` or the stdin being read."""
    if output is None or output == STDIN:
        return
    stdin_fd = None
    if reads_stdin and streams.stdin is not None:
        try:
            stdin_fd = streams.stdin.fileno()
        except (OSError, ValueError, AttributeError):  # a test's BytesIO has no descriptor
            stdin_fd = None
    check_output_target(output, files, stdin_fd)
