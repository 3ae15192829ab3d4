"""--schema for complete and chat: ask for JSON, step down on a 400, validate, repair.

The request is sent whole (never streamed), so nothing reaches stdout until the answer
is validated; then stdout gets the value as one compact JSON line (or, with --json, the
response as received). With `n` > 1 every choice must be valid and each gets its line, in
choice order; one invalid choice re-asks the whole request. A failure is exit 7
(SchemaMismatchError), stdout empty. The check ends by its deadline (schema.check_deadline)
and, run on a thread of its own, leaves this (the main) thread free to take Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import time

from anyfast_cli.commands.common import OutputFlags, answer_printer, open_client, print_request, show_whole
from anyfast_cli.errors import ApiError, SchemaMismatchError
from anyfast_cli.exchange import Reply, tool_calls_in
from anyfast_cli.output import print_json, print_usage, render_json, write_flushed
from anyfast_cli.reading import read_text_file
from anyfast_cli.request import build_body
from anyfast_cli.schema import (
    DEFAULT_REPAIR,
    REPAIRABLE,
    AnswerMismatch,
    SchemaFlags,
    apply_mode,
    check_deadline,
    check_mode,
    check_reply,
    load_schema,
    mode_ladder,
    repair_turns,
    step_down_note,
)
from anyfast_cli.settings import Settings
from anyfast_cli.streams import Streams


def read_schema_file(path: str) -> str:
    return read_text_file(path, "a schema file", "--schema: ")


def schema_of(flags: SchemaFlags | None) -> dict | None:
    """The schema asked for, checked (exit 2 before anything is sent); None without --schema."""
    return load_schema(flags, read_schema_file) if flags is not None else None


def schema_mode(flags: SchemaFlags | None, settings: Settings) -> str:
    """--schema-mode, else the profile's schema_mode, else auto."""
    given = flags.schema_mode if flags is not None else None
    return check_mode(given or settings.schema_mode)


def exchange_structured(
    settings: Settings,
    messages: list[dict],
    fields: dict,
    out: OutputFlags,
    streams: Streams,
    *,
    schema: dict,
    flags: SchemaFlags | None,
    command: str = "complete",
    deadline: float | None = None,
) -> Reply | None:
    """Send until an answer is valid for `schema` (stepping down the response_format ladder on
    a 400, re-asking `--repair` times); print it; the Reply holds the answer's text for --save."""
    ladder = mode_ladder(schema_mode(flags, settings))
    repairs = flags.repair if flags is not None and flags.repair is not None else DEFAULT_REPAIR
    base = build_body(settings.model, messages, fields, stream=False)
    if out.dry_run:
        print_request(settings, apply_mode(base, schema, ladder[0]), streams)
        return None
    level = 0
    conversation = list(base["messages"])
    with open_client(settings, out, streams, command=command, deadline=deadline) as client:
        # With a cache, the command's answer is looked up and stored by its first request;
        # the step-downs and repairs on the way are sent whatever the cache holds (§3 "Cache").
        first = apply_mode(base, schema, ladder[0])
        cached = settings.cache is not None
        if cached:
            checked: dict = {}

            def still_valid(response: dict) -> bool:  # a hit that is not (a schema file changed) is a miss
                if tool_calls_in(response):
                    return False
                try:
                    checked["parsed"] = check_reply(
                        response, schema, check_deadline(time.monotonic(), settings.max_time)
                    )
                except AnswerMismatch:
                    return False
                return True

            data = client.recall(first, accept=still_valid, prompt=base)
            if data is not None:
                return _answer(data, checked["parsed"], out, streams, result=client.last_result)
        send = client.send_uncached if cached else client.send
        while True:
            body = apply_mode({**base, "messages": conversation}, schema, ladder[level])
            sent = time.monotonic()
            try:
                data = send(body)
            except ApiError as error:
                if error.status == 400 and level + 1 < len(ladder):
                    streams.warn(step_down_note(ladder[level], ladder[level + 1], settings.model, error.message))
                    level += 1
                    continue
                raise
            if tool_calls_in(data):  # the model asks to act first: its calls, exit 8 (not a schema failure)
                reply = _kept_reply(streams)
                show_whole(data, answer_printer(reply, out, streams, hold=True), out, streams)
                return reply
            try:
                parsed = check_reply(data, schema, check_deadline(sent, settings.max_time))
            except AnswerMismatch as mismatch:
                if mismatch.code in REPAIRABLE and repairs > 0:
                    repairs -= 1
                    streams.observer.detail(
                        f"the answer is not valid for the schema ({mismatch.message}); asking again"
                    )
                    conversation = conversation + repair_turns(mismatch)
                    continue
                _show(data, out, streams, result=client.last_result)
                raise SchemaMismatchError(_failure_text(mismatch), code=mismatch.code) from None
            if cached:
                client.keep(first, data)  # only an answer valid for the schema is stored
            return _answer(data, parsed, out, streams, result=client.last_result)


def _answer(data: dict, parsed: list, out: OutputFlags, streams: Streams, *, result) -> Reply:
    """Print an answer whose every choice is valid (`parsed`: each one's value and text);
    the Reply holds the first one's text for --save."""
    _show(data, out, streams, values=[value for value, _ in parsed], result=result)
    reply = _kept_reply(streams)
    reply.absorb(data)
    reply.content_parts = [parsed[0][1]]  # what the model said, as said (fenced or not)
    return reply


def _kept_reply(streams: Streams) -> Reply:
    """A Reply that keeps the answer's text (for --save), masked as everything written is."""
    reply = Reply(keep_text=True)
    reply.mask = streams.redactor.mask
    return reply


def _failure_text(mismatch: AnswerMismatch) -> str:
    if mismatch.code not in REPAIRABLE:  # cut short, refused, or not checkable in time
        return f"--schema: {mismatch.message}"
    return f"the answer is not valid for --schema: {mismatch.message}"


def _show(data: dict, out: OutputFlags, streams: Streams, *, values: list | None = None, result=None) -> None:
    """--json: the response as received (whatever validation says); else each choice's valid
    value as one compact line, and nothing at all when not all are valid (values None).
    Reasoning and usage (with the cost, from the request's `result`) on stderr."""
    if out.reasoning:
        choices = data.get("choices") or [{}]
        message = (choices[0].get("message") or {}) if isinstance(choices[0], dict) else {}
        reasoning = message.get("reasoning_content") if isinstance(message, dict) else None
        if isinstance(reasoning, str) and reasoning:
            streams.note(reasoning.rstrip("\n") + "\n")
    if out.events:  # the answer's text as events; the value(s) go in the result event's `parsed`
        show_whole(data, answer_printer(_kept_reply(streams), out, streams, hold=True), out, streams)
        # Each choice's value (n > 1: every choice is valid, or none is given), as batch's `parsed`.
        streams.observer.parsed = None if values is None else values if len(values) > 1 else values[0]
    elif out.json:
        print_json(data, streams.stdout, terminal=streams.stdout_isatty, color=streams.stdout_color)
    elif values is not None:
        write_flushed(streams.stdout, "".join(render_json(v, terminal=streams.stdout_isatty) + "\n" for v in values))
    if out.usage:
        print_usage(data.get("usage"), streams.note, result)


def run_schema(spec: str | None, *, multi: bool, streams: Streams, events: bool = False):
    """`anyfast schema SPEC`: the JSON Schema, indented, on stdout; `--events` (no SPEC): the
    schema of --events lines, as shipped in the package."""
    from anyfast_cli.errors import ExitCode, UsageError
    from anyfast_cli.schema import render_schema

    if events:
        if spec is not None or multi:
            raise UsageError("anyfast schema --events takes no SPEC and no --multi")
        from importlib.resources import files

        write_flushed(streams.stdout, files("anyfast_cli").joinpath("events.schema.json").read_text("utf-8"))
        return ExitCode.OK
    if spec is None:
        raise UsageError("give a SPEC (a field list, JSON Schema text or @FILE), or --events")
    flags = SchemaFlags(schema_multi=spec) if multi else SchemaFlags(schema=spec)
    write_flushed(streams.stdout, render_schema(schema_of(flags)) + "\n")
    return ExitCode.OK
