"""`anyfast complete`: one prompt (arguments and/or stdin, and -a attachments), one answer."""

from __future__ import annotations

from anyfast_cli.attachments import load_attachments, with_attachments
from anyfast_cli.commands.answer import answer
from anyfast_cli.commands.attach import attachment_reader, check_attach_flags, check_output, command_files
from anyfast_cli.commands.common import OutputFlags, body_fields, load_settings, observed_command
from anyfast_cli.errors import ExitCode
from anyfast_cli.inputs import build_prompt, with_system
from anyfast_cli.output_file import run_with_output, said_unchanged_on_failure
from anyfast_cli.request import RequestFlags, user_message
from anyfast_cli.settings import SettingFlags
from anyfast_cli.sniff import VIDEO
from anyfast_cli.streams import Streams


@observed_command  # --events: checked against the other flags, and one `result` event however this ends
def run_complete(
    prompt_args: list[str],
    *,
    no_stdin: bool,
    settings_flags: SettingFlags,
    request: RequestFlags,
    out: OutputFlags,
    streams: Streams,
    schema_flags=None,
    attach: list[str] = (),
    output: str | None = None,
) -> ExitCode:
    with said_unchanged_on_failure(output, streams):  # -o FILE: stderr says it was left alone
        schema = None
        if schema_flags is not None:  # --schema: its modules (and jsonschema) load only then
            from anyfast_cli.commands.schema_answer import schema_of

            schema = schema_of(schema_flags)  # a bad SPEC is exit 2 before stdin is read
        check_attach_flags(attach, no_stdin=no_stdin, stdin_taken_by="the prompt '-'" if "-" in prompt_args else None)
        stdin_is_attached = "-" in attach
        stdin_text = None if no_stdin or stdin_is_attached else streams.read_stdin()
        # With attachments the prompt may be left out: they are the message.
        prompt = (
            build_prompt(prompt_args, stdin_text) if prompt_args or not attach or (stdin_text or "").strip() else ""
        )
        settings = load_settings(settings_flags, streams)
        fields = body_fields(settings, request)
        files = command_files(settings, settings_flags, request, attach=attach, schema_flags=schema_flags)
        check_output(output, files, streams, reads_stdin=not no_stdin)  # before any URL is fetched
        reader = attachment_reader(settings, streams, verbose=out.verbose)
        attached = reader.read(attach)
        image_urls, video_parts = load_attachments(
            request.images, request.videos, request.fps, other_videos=any(a.kind == VIDEO for a in attached)
        )
        message = with_attachments(user_message(prompt, image_urls, video_parts), attached, request.fps)
        messages = with_system([message], request.system)

        def send(streams: Streams) -> ExitCode:
            reply = answer(  # a plain answer is printed as it comes, not kept
                settings,
                messages,
                fields,
                out,
                streams,
                schema=schema,
                schema_flags=schema_flags,
                command="complete",
                keep_text=False,
                deadline=reader.deadline,
            )
            return ExitCode.TOOL_CALLS if reply is not None and reply.asks_for_tools else ExitCode.OK

        return run_with_output(output, streams, send)
