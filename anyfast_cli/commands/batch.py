"""`anyfast batch`: validate the whole input, then run its records concurrently,
writing one result line per record as each completes.

The input is read twice, to validate it and then to send it; only what the first pass
checked is sent (CheckedRecords), however the file changes in between. The -o file is
locked for the run (batch/journal.py) and is never the input.
"""

from __future__ import annotations

import os
import signal
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from anyfast_cli.attachments import load_attachments
from anyfast_cli.batch.jobs import (
    MAX_REPORTED_ERRORS,
    JobOptions,
    Record,
    Scan,
    Shard,
    batch_input_line,
    check_template,
    line_digest,
    numbered_lines,
    parse_record,
    parse_shard,
    read_lines,
    scan_input,
    spool_lines,
)
from anyfast_cli.batch.progress import ProgressBar, Tally, render_summary
from anyfast_cli.commands.batch_prompt import (
    prompt_file_job,
    prompt_file_schema,
    read_batch_prompt_file,
    refuse_output_as_prompt_file,
)
from anyfast_cli.commands.common import body_fields, load_settings, open_meter, resolve_api_key
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
    messages_file: str | None = None  # -f FILE|NAME: the prompt file each record is rendered through
    variables: tuple = ()  # --var NAME=VALUE|NAME=@FILE: defaults under each record's fields
    ordered: bool = False
    concurrency: int = 8
    rpm: float | None = None
    tpm: float | None = None
    resume: bool = False
    shard: str | None = None
    progress: bool = True
    dry_run: bool = False
    verbose: bool = False
    fail_on_tool_calls: bool = False  # a record answered with tool calls is a failed record


def run_batch(
    flags: BatchFlags, *, settings_flags: SettingFlags, request: RequestFlags, streams: Streams, schema_flags=None
) -> ExitCode:
    from anyfast_cli.commands.schema_answer import schema_mode, schema_of
    from anyfast_cli.schema import DEFAULT_REPAIR

    schema = schema_of(schema_flags)  # --schema: a bad SPEC is exit 2 before the input is read
    shard, shard_origin = parse_shard(flags.shard, streams.env)
    if shard_origin and flags.verbose:
        streams.say(f"shard {shard.k}/{shard.n} from {shard_origin}")
    check_flags(flags)
    prompt_file = None
    if flags.messages_file is not None:
        prompt_file = read_batch_prompt_file(
            flags.messages_file, input_path=flags.input, settings_flags=settings_flags, streams=streams
        )
        refuse_output_as_prompt_file(flags.output, prompt_file)
        if schema is None:
            schema = prompt_file_schema(prompt_file)
    settings = load_settings(
        settings_flags, streams, default_retries=5, file_model=prompt_file.model if prompt_file else None
    )
    image_urls, video_parts = load_attachments(request.images, request.videos, request.fps)
    options = JobOptions(
        model=settings.model,
        fields=body_fields(settings, request, prompt_file.params if prompt_file else None),
        system=request.system if prompt_file is None else None,  # -f: it replaces the file's system
        template=flags.template,
        plain_lines=flags.plain_lines,
        image_urls=tuple(image_urls),
        video_parts=tuple(video_parts),
        schema=schema,
        prompt_file=prompt_file_job(
            prompt_file, flags.variables, system=request.system, settings=settings, streams=streams
        )
        if prompt_file
        else None,
    )
    mode = schema_mode(schema_flags, settings)
    repair = DEFAULT_REPAIR if schema_flags is None or schema_flags.repair is None else schema_flags.repair
    with input_lines(flags.input, streams) as lines:
        refuse_output_as_input(flags.output, lines)  # before the output is opened, let alone emptied
        scan = scan_input(lines, options, shard)
        if scan.error_count:
            report_invalid(scan, streams)
        if not scan.records:
            streams.warn("the input holds no records; nothing to do")
        checked = CheckedRecords(scan, lines.name)  # the ids, fingerprints and lines of what was validated
        models = scan.models
        del scan
        if flags.dry_run:
            return dry_run(checked, lines, options, shard, flags, streams, schema_mode=mode)
        # Before anything is sent or the output touched: a log that cannot be written, or a money
        # budget with a model that has no price, is exit 2; a budget already reached is exit 9.
        meter = open_meter(settings, streams, "batch", models)
        cache = open_cache(settings, streams)
        # With a cache that may answer every record, the key is resolved only once one must be sent.
        key = KeyOnDemand(settings, streams)
        if cache is None or cache.mode == "refresh":
            key.get()  # before the output file is touched
        from anyfast_cli.batch.journal import ResultSink

        sink = ResultSink(flags.output, streams.stdout, append=flags.resume)  # locked from here to the end
        try:
            answered = 0
            if flags.resume:
                resumed = sink.resume(checked.pending)
                report_dropped(resumed, flags.output, streams)
                answered = checked.mark_answered(resumed.kept)
            tally = Tally(total=checked.to_send, skipped=answered, spent=meter.totals)
            try:
                run_records(
                    checked,
                    lines,
                    options,
                    shard,
                    sink,
                    flags,
                    settings,
                    key,
                    tally,
                    streams,
                    cache=cache,
                    meter=meter,
                    schema_mode=mode,
                    repair=repair,
                )
            finally:
                checked.report(streams, resumable=flags.output is not None)
        finally:
            sink.close()
            meter.close()
    return batch_exit_code(tally, checked.unchecked)


def batch_exit_code(tally: Tally, unchecked: int = 0) -> ExitCode:
    """0 when every record was answered (none failed, none left unrun, the input unchanged);
    10 when --cache-mode replay had no answer for some; 5 when none was answered and the rate
    limit is why; else 6. (2 and 3 end a batch as errors, before this is asked.)"""
    if tally.failed == 0 and tally.done >= tally.total and not unchecked:
        return ExitCode.OK
    if tally.not_in_cache:
        return ExitCode.NOT_IN_CACHE
    if tally.ok == 0 and tally.failed and tally.rate_limited == tally.failed:
        return ExitCode.RATE_LIMITED
    return ExitCode.BATCH_PARTIAL


def dry_run(
    checked: "CheckedRecords",
    lines: Iterable[bytes],
    options: JobOptions,
    shard: Shard | None,
    flags: BatchFlags,
    streams: Streams,
    *,
    schema_mode: str = "auto",
) -> ExitCode:
    """--dry-run: each request as an OpenAI Batch input line. It never writes over results:
    with --resume (whose -o FILE holds them) it prints on stdout what --resume would send,
    leaving FILE alone; otherwise -o FILE is written only if it does not exist or is empty."""
    from anyfast_cli.batch.journal import ResultSink, read_answered

    path = flags.output
    if flags.resume:
        resumed = read_answered(path, checked.pending)
        report_dropped(resumed, path, streams, dry_run=True)
        checked.mark_answered(resumed.kept)
        path = None
    sink = ResultSink(path, streams.stdout, append=True)  # nothing is emptied: a file holding data is refused
    try:
        if sink.holds_data():
            raise UsageError(
                f"--dry-run would write over {path}, which is not empty",
                hint="leave out -o to print the requests on stdout, or name a new file",
            )
        for record in checked.records(lines, options, shard):
            sink.write(batch_input_line(record, "json_schema" if schema_mode == "auto" else schema_mode))
    finally:
        sink.close()
    checked.report(streams, resumable=False)
    return ExitCode.USAGE if checked.unchecked else ExitCode.OK


def report_dropped(resumed, path: str, streams: Streams, *, dry_run: bool = False) -> None:
    """--resume takes answers out of FILE that no longer fit the input: say how many, and where they went."""
    if not resumed.dropped:
        return
    reasons = []
    if resumed.gone:
        reasons.append(f"{resumed.gone:,} to ids that are not among this run's records")
    if resumed.changed:
        reasons.append(f"{resumed.changed:,} to requests that have changed since (they are sent again)")
    verb = "would drop" if dry_run else "drops"
    kept = f"; they are kept in {resumed.dropped_to}" if resumed.dropped_to else ""
    streams.warn(f"--resume {verb} {resumed.dropped:,} answer(s) in {path}: {' and '.join(reasons)}{kept}")


def check_flags(flags: BatchFlags) -> None:
    check_template(flags.template)
    if flags.messages_file is not None and flags.template is not None:
        raise UsageError("-f and --template both say how to build each prompt; give one")
    if flags.variables and flags.messages_file is None:
        raise UsageError("--var sets a prompt file's placeholders; give the prompt file with -f")
    if not 1 <= flags.concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"--concurrency must be from 1 to {MAX_CONCURRENCY}, got {flags.concurrency}")
    for name, value in (("--rpm", flags.rpm), ("--tpm", flags.tpm)):
        if value is not None and not value > 0:
            raise UsageError(f"{name} must be a positive number, got {value}")
    if flags.resume and not flags.output:
        raise UsageError("--resume needs -o FILE: it continues the results already in that file")


def refuse_output_as_input(output: str | None, lines: "Passes") -> None:
    """-o naming the file the input is read from (by path, link or `< FILE` on stdin) would
    empty the input before its records are sent."""
    if output is None or lines.source is None:
        return
    try:
        target = os.stat(output)
    except OSError:
        return  # not there yet: it cannot be the input
    if stat.S_ISREG(target.st_mode) and (target.st_dev, target.st_ino) == (lines.source.st_dev, lines.source.st_ino):
        raise UsageError(
            f"the output file {output} is the input ({lines.name}); writing it would destroy the input",
            hint="write the results to another file",
        )


def report_invalid(scan, streams: Streams) -> None:
    for message in scan.errors:
        streams.error(UsageError(message))
    shown = len(scan.errors)
    more = f" ({scan.error_count - shown:,} more not shown)" if scan.error_count > shown else ""
    raise UsageError(f"{scan.error_count:,} invalid line(s) in the input{more}; nothing was sent")


class Passes:
    """The input's lines, readable from the start as often as needed (validated whole, then
    run); `source` is the input file's stat (None when unknown), `name` how errors name it."""

    def __init__(self, handle, origin: int, name: str, source: os.stat_result | None = None) -> None:
        self._handle = handle
        self._origin = origin
        self.name = name
        self.source = source

    def __iter__(self) -> Iterator[bytes]:
        self._handle.seek(self._origin)
        return read_lines(self._handle, self.name)  # each line bounded: `batch < /dev/zero` ends


@contextmanager
def input_lines(path: str | None, streams: Streams) -> Iterator[Passes]:
    """The input (a file, or stdin when `path` is None or '-') as re-readable lines."""
    if path in (None, "-"):
        if streams.stdin is None or streams.stdin_isatty:
            raise UsageError(
                "batch reads JSONL from a file or from piped standard input", hint="anyfast batch prompts.jsonl"
            )
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
    source = _stat_of(handle)
    if handle.seekable():
        yield Passes(handle, handle.tell(), name, source)
        return
    with tempfile.TemporaryFile() as spool:
        try:
            spool_lines(handle, spool, name)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {name}: {getattr(exc, 'strerror', None) or exc}") from None
        yield Passes(spool, 0, name, source)


def _stat_of(handle) -> os.stat_result | None:
    try:
        return os.fstat(handle.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (a test's BytesIO)
        return None


_MISSING = object()
_MET = object()  # answer_first(): answered, and its line met in this pass


class CheckedRecords:
    """The records to send, read in a second pass over the input, sending only what the
    first pass validated: each record from a line byte for byte as it was checked (by its
    digest), each once. A file can change in between (edited, appended to, rewritten): a
    line that is not as checked is not sent but counted, and so are the validated records
    it replaced, which are then not run, so the batch cannot exit 0."""

    def __init__(self, scan: Scan, name: str) -> None:
        # id -> fingerprint of each validated record not sent yet; None once answered (--resume)
        self.pending = scan.ids
        self._digests = scan.digests  # line_digest of each record's line, by index
        self._name = name
        self.unchecked = 0  # lines met in the second pass that the first did not validate
        self._first_lines: list[int] = []

    def mark_answered(self, ids) -> int:
        """--resume: these are answered already and are not sent; returns how many."""
        for record_id in ids:
            self.pending[record_id] = None
        return len(ids)

    @property
    def to_send(self) -> int:
        return sum(1 for fingerprint in self.pending.values() if fingerprint is not None)

    def records(self, lines: Iterable[bytes], options: JobOptions, shard: Shard | None) -> Iterator[Record]:
        for index, line_no, raw in numbered_lines(lines):
            if shard is not None and index not in shard:
                continue
            record = self._as_checked(index, line_no, raw, options)
            expected = _MISSING if record is None else self.pending.pop(record.id, _MISSING)
            if expected is None:
                continue  # answered already (--resume)
            if expected is _MISSING:
                self._unchecked_line(line_no)
                continue
            record.fingerprint = expected
            yield record

    def _as_checked(self, index: int, line_no: int, raw: bytes, options: JobOptions) -> Record | None:
        """The record of a line byte for byte as the first pass checked it (by its digest),
        built without repeating its checks or its fingerprint; None for any other line."""
        if index < len(self._digests) and line_digest(raw) == self._digests[index]:
            return parse_record(raw, line_no, index, options, check=False)
        return None

    def _unchecked_line(self, line_no: int) -> None:
        self.unchecked += 1
        if len(self._first_lines) < MAX_REPORTED_ERRORS:
            self._first_lines.append(line_no)

    def forget_unchecked(self) -> None:
        """records() is about to read every line again, and count them itself."""
        self.unchecked = 0
        self._first_lines = []

    def answer_first(
        self, lines: Iterable[bytes], options: JobOptions, shard: Shard | None, answer: Callable[[Record], bool]
    ) -> None:
        """Offer each validated record not answered yet, exactly as checked, to `answer` (the
        cache), which says whether it answered it (wrote its line); those are not sent. Lines
        that changed since validation (a duplicated one included) are counted as records()
        counts them, so that when nothing is left to send the input need not be read again
        (when something is, records() reads every line again: forget_unchecked)."""
        try:
            for index, line_no, raw in numbered_lines(lines):
                if shard is not None and index not in shard:
                    continue
                record = self._as_checked(index, line_no, raw, options)
                expected = _MISSING if record is None else self.pending.get(record.id, _MISSING)
                if expected is None:  # answered already (--resume): met now
                    self.pending[record.id] = _MET
                elif not isinstance(expected, str):  # missing, or met before (_MET or a tuple)
                    self._unchecked_line(line_no)
                else:  # met now: answered, or still to send (its fingerprint, wrapped until the end)
                    record.fingerprint = expected
                    self.pending[record.id] = _MET if answer(record) else (expected,)
        finally:
            for record_id, state in self.pending.items():
                if state is _MET:
                    self.pending[record_id] = None
                elif type(state) is tuple:
                    self.pending[record_id] = state[0]

    def report(self, streams: Streams, *, resumable: bool) -> None:
        if not self.unchecked:
            return
        lines = ", ".join(map(str, self._first_lines)) + (", …" if self.unchecked > len(self._first_lines) else "")
        hint = (
            "once it has stopped changing, run the same command with --resume to finish"
            if resumable
            else "run batch again once it has stopped changing"
        )
        streams.error(
            UsageError(
                f"{self._name} changed while batch read it: {self.unchecked:,} line(s) were not as "
                f"validated and were not sent (line {lines})",
                hint=hint,
            )
        )


class KeyOnDemand:
    """The API key, resolved (and masked in every line and message from then on: the sink
    shares stdout's redactor) the first time it is asked for."""

    def __init__(self, settings, streams: Streams) -> None:
        self._settings = settings
        self._streams = streams
        self._key: str | None = None

    def get(self) -> str:
        if self._key is None:
            self._key = resolve_api_key(self._settings.key, self._streams.env)
            self._streams.hide(self._key)
        return self._key


def open_cache(settings, streams: Streams):
    """The response cache, when one is configured (nothing cache-related is imported otherwise)."""
    if settings.cache is None:
        return None
    from anyfast_cli.cache import ResponseCache

    return ResponseCache.open(settings.cache, settings.cache_mode, warn=streams.warn)


def run_records(
    checked: CheckedRecords,
    lines,
    options: JobOptions,
    shard: Shard | None,
    sink,
    flags: BatchFlags,
    settings,
    key: KeyOnDemand,
    tally: Tally,
    streams: Streams,
    *,
    cache=None,
    meter=None,
    schema_mode: str = "auto",
    repair: int,
) -> None:
    """Answer the records: from the cache first (when there is one), then by sending the rest;
    a progress bar meanwhile, and the summary line at the end, however it ends."""
    bar = ProgressBar(
        tally, streams.stderr, enabled=flags.progress and streams.stderr_isatty, color=streams.stderr_color
    )

    def emit(line: dict, ok: bool, *, rate_limited: bool = False, cached: bool = False) -> None:
        sink.write(line)
        tally.add(ok, rate_limited)
        tally.cached += cached and ok
        tally.not_in_cache += (line.get("error") or {}).get("code") == "not_in_cache"
        bar.update()

    store = None
    if cache is not None:
        from anyfast_cli.batch.cached import AnswerStore, CacheAnswers

        store = AnswerStore(cache, base_url=settings.base_url, schema_mode=schema_mode, mask=streams.redactor.mask)
    controller = None
    interrupted = False
    tally.started = time.monotonic()  # the summary's rate covers the requests, not imports and set-up
    try:
        if cache is not None:  # every hit is written before anything is sent
            answers = CacheAnswers(
                cache,
                base_url=settings.base_url,
                schema_mode=schema_mode,
                fail_on_tool_calls=flags.fail_on_tool_calls,
                max_time=settings.max_time,
                emit=lambda line, ok, cached: emit(line, ok, cached=cached),
                meter=meter,
            )
            if cache.mode != "refresh":  # refresh looks nothing up
                checked.answer_first(lines, options, shard, answers)
            if not checked.to_send:
                return  # answered whole (its pass counted the lines that changed since validation)
            checked.forget_unchecked()  # records() reads every line again
        records = checked.records(lines, options, shard)
        if store is not None:
            records = store.track(records)

        def finished(outcome) -> None:
            emit(outcome.line, outcome.ok, rate_limited=outcome.rate_limited)
            if outcome.ok:
                tally.answered_by(outcome.model)  # --fallback: the summary counts records per model
            if store is not None:
                store.finished(outcome.line, outcome.ok)

        from anyfast_cli.batch.limiter import RateController

        # The adaptive rate finds the server's limit; --rpm/--tpm stay ceilings above it.
        controller = RateController(log=streams.say if flags.verbose else None)
        send_all(
            records,
            finished,
            flags,
            settings,
            checked.to_send,
            key.get(),
            controller,
            streams,
            meter=meter,
            schema_mode=schema_mode,
            repair=repair,
        )
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        bar.close()
        streams.say(
            render_summary(
                tally,
                time.monotonic() - tally.started,
                interrupted=interrupted,
                rate=controller.achieved() if controller is not None else None,
                answered_429=controller.limited if controller is not None else 0,
                per_model=bool(settings.fallback),
            )
        )


def send_all(
    records,
    emit,
    flags: BatchFlags,
    settings,
    to_send: int,
    api_key: str,
    controller,
    streams: Streams,
    *,
    meter=None,
    schema_mode: str = "auto",
    repair: int,
) -> None:
    """Send the records through the runner (aiohttp), passing each outcome to `emit`, under
    the adaptive rate of `controller`. Ctrl-C, SIGTERM and SIGHUP end it at an await; a
    budget reached ends it once the requests in flight are written (BudgetError, exit 9)."""
    import asyncio

    from anyfast_cli.batch.limiter import Limiter, Pacer
    from anyfast_cli.batch.runner import BatchRunner, RunConfig

    config = RunConfig(
        base_url=settings.base_url,
        api_key=api_key,
        concurrency=max(1, min(flags.concurrency, to_send)),
        retries=settings.retries,
        timeout=settings.timeout,
        max_time=settings.max_time,
        ordered=flags.ordered,
        env=streams.env,
        fail_on_tool_calls=flags.fail_on_tool_calls,
        schema_mode=schema_mode,
        repair=repair,
        meter=meter,
        fallback=settings.fallback,
    )
    log = streams.say if flags.verbose else None
    runner = BatchRunner(config, Limiter(Pacer(flags.rpm, flags.tpm), controller), emit, log=log, warn=streams.warn)
    signum = asyncio.run(until_signalled(runner.run(records)))
    if signum is not None:
        signal.raise_signal(signum)  # now, outside the loop: its handler raises as Ctrl-C would (cli.py)


ENDING_SIGNALS = ("SIGTERM", "SIGHUP")


async def until_signalled(coroutine) -> int | None:
    """Await `coroutine`; SIGTERM or SIGHUP cancels it, as asyncio.run does for Ctrl-C, so every
    worker ends at an await (whole result lines, no task left half-done) instead of wherever
    the signal's exception would land. Returns the signal's number to raise again once the
    loop has stopped, or None. Only signals with a Python handler are taken over (cli.py
    installs one; an ignored SIGHUP stays ignored), and their handlers are put back."""
    import asyncio

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    received: list[int] = []
    previous = {}

    def cancel(signum: int) -> None:
        if not received:  # a second signal must not cut the workers' clean-up short
            received.append(signum)
            task.cancel()

    for name in ENDING_SIGNALS:
        signum = getattr(signal, name, None)
        handler = signal.getsignal(signum) if signum is not None else None
        if callable(handler):
            try:
                loop.add_signal_handler(signum, cancel, signum)
            except (RuntimeError, ValueError):  # not the main thread
                continue
            previous[signum] = handler
    try:
        await coroutine
    except asyncio.CancelledError:
        if not received:
            raise
    finally:
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, handler)  # asyncio would leave the default (death) in its place
    return received[0] if received else None
