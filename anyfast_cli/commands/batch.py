"""`anyfast batch`: validate the whole input, then run its records concurrently,
writing one result line per record as each completes."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from anyfast_cli.attachments import load_attachments
from anyfast_cli.batch.jobs import JobOptions, batch_input_line, check_template, iter_records, parse_shard, scan_input
from anyfast_cli.batch.progress import ProgressBar, Tally, render_summary
from anyfast_cli.commands.common import body_fields, load_settings, resolve_api_key
from anyfast_cli.errors import ExitCode, UsageError
from anyfast_cli.request import RequestFlags
from anyfast_cli.settings import SettingFlags
from anyfast_cli.streams import Streams


MAX_CONCURRENCY = 1000  # far past what one gateway connection pool or rate limit allows


@dataclass(frozen=True)
class BatchFlags:
    input: str | None = None
    output: str | None = None
    plain_lines: bool = False
    template: str | None = None
    ordered: bool = False
    concurrency: int = 8
    rpm: float | None = None
    tpm: float | None = None
    resume: bool = False
    shard: str | None = None
    progress: bool = True
    dry_run: bool = False
    verbose: bool = False


def run_batch(flags: BatchFlags, *, settings_flags: SettingFlags, request: RequestFlags, streams: Streams) -> ExitCode:
    shard = parse_shard(flags.shard)
    check_flags(flags)
    settings = load_settings(settings_flags, streams, default_retries=5)
    image_urls, video_parts = load_attachments(request.images, request.videos, request.fps)
    options = JobOptions(
        model=settings.model,
        fields=body_fields(settings, request),
        system=request.system,
        template=flags.template,
        plain_lines=flags.plain_lines,
        image_urls=tuple(image_urls),
        video_parts=tuple(video_parts),
    )
    with input_lines(flags.input, streams) as lines:
        scan = scan_input(lines, options, shard)
        if scan.error_count:
            report_invalid(scan, streams)
        if not scan.records:
            streams.warn("the input holds no records; nothing to do")
        if flags.dry_run:
            write_lines(flags.output, streams, (batch_input_line(r) for r in iter_records(lines, options, shard)))
            return ExitCode.OK
        api_key = resolve_api_key(settings.key, streams.env)
        answered = set()
        if flags.resume:
            from anyfast_cli.batch.journal import keep_answered

            answered = keep_answered(flags.output, scan.ids)
        tally = Tally(total=len(scan.ids) - len(answered), skipped=len(answered))
        del scan  # its ids are no longer needed; `answered` keeps only what resume skips
        send_all(iter_records(lines, options, shard, skip=answered), flags, settings, api_key, tally, streams)
    return batch_exit_code(tally)


def batch_exit_code(tally: Tally) -> ExitCode:
    """0 when every record was answered; 5 when none was and the rate limit is why; else 6."""
    if tally.failed == 0:
        return ExitCode.OK
    if tally.ok == 0 and tally.rate_limited == tally.failed:
        return ExitCode.RATE_LIMITED
    return ExitCode.BATCH_PARTIAL


def write_lines(path: str | None, streams: Streams, objects) -> None:
    from anyfast_cli.batch.journal import ResultSink

    sink = ResultSink(path, streams.stdout, append=False)
    try:
        for obj in objects:
            sink.write(obj)
    finally:
        sink.close()


def check_flags(flags: BatchFlags) -> None:
    check_template(flags.template)
    if not 1 <= flags.concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"--concurrency must be from 1 to {MAX_CONCURRENCY}, got {flags.concurrency}")
    for name, value in (("--rpm", flags.rpm), ("--tpm", flags.tpm)):
        if value is not None and not value > 0:
            raise UsageError(f"{name} must be a positive number, got {value}")
    if flags.resume and not flags.output:
        raise UsageError("--resume needs -o FILE: it continues the results already in that file")
    if flags.output and flags.input not in (None, "-") and os.path.exists(flags.output) and os.path.exists(flags.input):
        if os.path.samefile(flags.output, flags.input):
            raise UsageError("the output file is the input file; that would overwrite the input")


def report_invalid(scan, streams: Streams) -> None:
    for message in scan.errors:
        streams.error(UsageError(message))
    shown = len(scan.errors)
    more = f" ({scan.error_count - shown:,} more not shown)" if scan.error_count > shown else ""
    raise UsageError(f"{scan.error_count:,} invalid line(s) in the input{more}; nothing was sent")


class Passes:
    """The input's lines, readable from the start as often as needed (validated whole, then run)."""

    def __init__(self, handle, origin: int) -> None:
        self._handle = handle
        self._origin = origin

    def __iter__(self) -> Iterator[bytes]:
        self._handle.seek(self._origin)
        return iter(self._handle)


@contextmanager
def input_lines(path: str | None, streams: Streams) -> Iterator[Passes]:
    """The input (a file, or stdin when `path` is None or '-') as re-readable lines."""
    if path in (None, "-"):
        if streams.stdin is None or streams.stdin_isatty:
            raise UsageError("batch reads JSONL from a file or from piped standard input", hint="anyfast batch prompts.jsonl")
        with _rereadable(streams.stdin, "standard input") as lines:
            yield lines
        return
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle, _rereadable(handle, path) as lines:
        yield lines


@contextmanager
def _rereadable(handle, name: str) -> Iterator[Passes]:
    """A seekable file is read from where it stands now; a pipe (stdin, <(jq …)) can
    be read only once, so it is spooled to a temporary file first."""
    if handle.seekable():
        yield Passes(handle, handle.tell())
        return
    with tempfile.TemporaryFile() as spool:
        try:
            shutil.copyfileobj(handle, spool)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {name}: {getattr(exc, 'strerror', None) or exc}") from None
        yield Passes(spool, 0)


def send_all(records, flags: BatchFlags, settings, api_key: str, tally: Tally, streams: Streams) -> None:
    import asyncio

    from anyfast_cli.batch.journal import ResultSink
    from anyfast_cli.batch.limiter import Limiter, Pacer, RateController
    from anyfast_cli.batch.runner import BatchRunner, RunConfig

    sink = ResultSink(flags.output, streams.stdout, append=flags.resume)
    bar = ProgressBar(tally, streams.stderr, enabled=flags.progress and streams.stderr_isatty, color=streams.stderr_color)

    def emit(outcome) -> None:
        sink.write(outcome.line)
        tally.add(outcome.ok, outcome.tokens, outcome.rate_limited)
        bar.update()

    config = RunConfig(
        base_url=settings.base_url, api_key=api_key, concurrency=max(1, min(flags.concurrency, tally.total)),
        retries=settings.retries, timeout=settings.timeout, ordered=flags.ordered, env=streams.env,
    )
    log = streams.say if flags.verbose else None
    # The adaptive rate finds the server's limit; --rpm/--tpm stay ceilings above it.
    controller = RateController(log=log)
    runner = BatchRunner(config, Limiter(Pacer(flags.rpm, flags.tpm), controller), emit, log=log)
    interrupted = False
    tally.started = time.monotonic()  # the summary's rate covers the requests, not imports and set-up
    try:
        asyncio.run(runner.run(records))
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        sink.close()
        bar.close()
        streams.say(render_summary(tally, time.monotonic() - tally.started, interrupted=interrupted,
                                   rate=controller.rate, answered_429=controller.limited))
