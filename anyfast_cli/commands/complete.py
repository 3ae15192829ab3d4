"""`anyfast complete`: one prompt (arguments and/or stdin), one answer."""

from __future__ import annotations

from anyfast_cli.attachments import load_attachments
from anyfast_cli.commands.common import (
    OutputFlags,
    body_fields,
    check_output_flags,
    exchange,
    load_settings,
    observed,
)
from anyfast_cli.errors import ExitCode
from anyfast_cli.inputs import build_prompt, with_system
from anyfast_cli.request import RequestFlags, user_message
from anyfast_cli.settings import SettingFlags
from anyfast_cli.streams import Streams


def run_complete(
    prompt_args: list[str],
    *,
    no_stdin: bool,
    settings_flags: SettingFlags,
    request: RequestFlags,
    out: OutputFlags,
    streams: Streams,
    schema_flags=None,
) -> ExitCode:
    check_output_flags(out)
    with observed(out, streams):  # --events: one `result` event however this ends
        return _complete(
            prompt_args,
            no_stdin=no_stdin,
            settings_flags=settings_flags,
            request=request,
            out=out,
            streams=streams,
            schema_flags=schema_flags,
        )


def _complete(prompt_args, *, no_stdin, settings_flags, request, out, streams, schema_flags) -> ExitCode:
    from anyfast_cli.commands.schema_answer import schema_of  # --schema: jsonschema loads only then

    schema = schema_of(schema_flags)  # a bad SPEC is exit 2 before stdin is read
    stdin_text = None if no_stdin else streams.read_stdin()
    prompt = build_prompt(prompt_args, stdin_text)
    settings = load_settings(settings_flags, streams)
    fields = body_fields(settings, request)
    image_urls, video_parts = load_attachments(request.images, request.videos, request.fps)
    messages = with_system([user_message(prompt, image_urls, video_parts)], request.system)
    if schema is not None:
        from anyfast_cli.commands.schema_answer import exchange_structured

        reply = exchange_structured(settings, messages, fields, out, streams, schema=schema, flags=schema_flags)
    else:
        reply = exchange(settings, messages, fields, out, streams, keep_text=False)  # printed as it comes, not kept
    return ExitCode.TOOL_CALLS if reply is not None and reply.asks_for_tools else ExitCode.OK
