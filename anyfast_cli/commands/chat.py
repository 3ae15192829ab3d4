"""`anyfast chat`: a conversation from a file (a prompt file's placeholders filled), continued by
a prompt and attachments, optionally saved; or, at a terminal with nothing to send, an
interactive session (commands/session.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from anyfast_cli.commands.answer import answer
from anyfast_cli.commands.attach import (
    attachment_reader,
    check_attach_flags,
    check_output,
    command_files,
    join_attachments,
    schema_files,
)
from anyfast_cli.commands.common import OutputFlags, body_fields, load_settings, observed_command
from anyfast_cli.commands.conversation import (
    add_tool_results,
    api_messages,
    assistant_message,
    check_tool_calls_answered,
    check_writable,
    file_schema,
    new_turn,
    read_conversation_text,
    read_var_file,
    save_conversation,
    set_system,
    tool_fields,
)
from anyfast_cli.errors import ExitCode, UsageError
from anyfast_cli.inputs import Conversation, build_prompt
from anyfast_cli.output_file import run_with_output, said_unchanged_on_failure
from anyfast_cli.prompt_lookup import resolve_prompt_ref
from anyfast_cli.request import RequestFlags
from anyfast_cli.settings import SettingFlags, prompt_dirs
from anyfast_cli.streams import Streams
from anyfast_cli.templating import prompt_file_values, render_or_explain


@dataclass
class PromptFileUse:
    """How the -f file was used: where it is, and (for a prompt file) the message that holds
    {input} after rendering, which attachments join."""

    path: str | None = None
    input_message: int | None = None
    schema: object = None  # the file's `schema:`, before rendering removed it
    var_files: tuple = ()  # the files --var NAME=@FILE read


@observed_command  # --events: checked against the other flags, and one `result` event however this ends
def run_chat(
    prompt_args: list[str],
    *,
    messages_file: str | None,
    save: str | None,
    no_stdin: bool,
    interactive: bool = False,
    tool_results: list[str] = (),
    settings_flags: SettingFlags,
    request: RequestFlags,
    out: OutputFlags,
    streams: Streams,
    schema_flags=None,
    variables: list[str] = (),
    attach: list[str] = (),
    output: str | None = None,
) -> ExitCode:
    with said_unchanged_on_failure(output, streams):  # -o FILE: stderr says it was left alone
        schema = None
        if schema_flags is not None:  # --schema: its modules (and jsonschema) load only then
            from anyfast_cli.commands.schema_answer import schema_of

            schema = schema_of(schema_flags)  # a bad SPEC is exit 2 before anything is read or sent
        path = (
            resolve_prompt_ref(messages_file, prompt_dirs(settings_flags.config, streams.env))
            if messages_file
            else None
        )
        check_attach_flags(attach, no_stdin=no_stdin, stdin_taken_by="-f -" if path == "-" else None)
        conversation, text = read_conversation_text(path, streams) if path else (Conversation(), "")
        if save:
            check_writable(save)
        stdin_text = None if no_stdin or path == "-" or "-" in attach else streams.read_stdin()
        prompt = build_prompt(prompt_args, stdin_text) if prompt_args or (stdin_text or "").strip() else None
        at_terminal = streams.stdin_isatty and streams.stdout_isatty
        if interactive or (prompt is None and not path and not attach and at_terminal):
            if not at_terminal:
                raise UsageError("an interactive session needs a terminal on stdin and stdout")
            if prompt is not None:
                raise UsageError("an interactive session takes no prompt; type it at the prompt")
            for flag, given in (("--schema", schema), ("-o", output), ("-a", attach), ("--events", out.events)):
                if given:
                    raise UsageError(f"{flag} is for one answer, not an interactive session")
            from anyfast_cli.commands.session import run_session

            conversation, _ = _fill_prompt_file(conversation, text, None, variables, PromptFileUse(path=path))
            return run_session(
                conversation, save=save, settings_flags=settings_flags, request=request, out=out, streams=streams
            )
        use = PromptFileUse(path=path, schema=conversation.schema)
        conversation, prompt = _fill_prompt_file(conversation, text, prompt, variables, use)
        if prompt is None and not conversation.messages and not attach:
            if path:
                raise UsageError(f"nothing to send: {path} holds no messages and no prompt was given")
            raise UsageError("nothing to send: give -f FILE, a prompt, or text on standard input")
        if tool_results:
            add_tool_results(conversation, tool_results)
        if prompt is not None:
            conversation.messages.append(new_turn(prompt, request))
            use.input_message = len(conversation.messages) - 1
        elif request.images or request.videos:
            _media_into_input_message(conversation, use, request)
        if request.system is not None:
            set_system(conversation, request.system)
        if schema is None and use.schema is not None:
            schema = file_schema(use.schema, path)

        settings = load_settings(settings_flags, streams, file_model=conversation.model)
        fields = body_fields(settings, request, {**conversation.params, **tool_fields(conversation)})
        check_tool_calls_answered(conversation.messages)  # before anything is sent
        if request.tools is not None:
            conversation.tools = fields["tools"]  # --save keeps the tools the flag declared
        if request.tool_choice is not None:
            conversation.tool_choice = fields["tool_choice"]
        files = command_files(
            settings,
            settings_flags,
            request,
            attach=attach,
            schema_flags=schema_flags,
            more=_chat_files(use, save, tool_results),
        )
        check_output(output, files, streams, reads_stdin=not no_stdin and path != "-")  # before any URL is fetched
        reader = attachment_reader(settings, streams, verbose=out.verbose)
        if attach:
            _join(conversation, use, reader.read(attach), reader, request.fps)
        messages = api_messages(conversation, reader)

        def send(streams: Streams) -> ExitCode:
            reply = answer(
                settings,
                messages,
                fields,
                out,
                streams,
                schema=schema,
                schema_flags=schema_flags,
                command="chat",
                keep_text=bool(save),
                deadline=reader.deadline,
            )
            if save and reply is not None:
                conversation.messages.append(assistant_message(reply))
                if reply.choice_count > 1:
                    streams.warn(f"--save keeps choice 0 of the {reply.choice_count} the answer holds")
                save_conversation(conversation, save)
            if reply is not None and reply.asks_for_tools:
                return ExitCode.TOOL_CALLS
            return ExitCode.OK

        return run_with_output(output, streams, send)


def _fill_prompt_file(conversation: Conversation, text: str, prompt: str | None, variables, use: PromptFileUse):
    """A prompt file rendered with its defaults, --var and {input} (the prompt, then used up);
    any other file as it is. Returns the conversation and the prompt still to be appended."""
    template, values = prompt_file_values(conversation, use.path, text, variables, _var_file_reader(use))
    if template is None:
        return conversation, prompt
    if template.uses_input and prompt is not None:
        values["input"] = prompt
        prompt = None  # it is in the file's message, not a message of its own
    rendered = render_or_explain(template, values)
    use.input_message = template.input_message
    return rendered, prompt


def _var_file_reader(use: PromptFileUse):
    """read_var_file, noting each file read (-o may not be one)."""

    def read(path: str) -> str:
        use.var_files += (path,)
        return read_var_file(path)

    return read


def _chat_files(use: PromptFileUse, save: str | None, tool_results) -> list[tuple[str, str]]:
    """The files only chat reads or writes (for -o's check)."""
    files = []
    if use.path and use.path != "-":
        files.append(("-f", use.path))
    if save:
        files.append(("--save", save))
    files += [("--var", name) for name in use.var_files]
    if isinstance(use.schema, str) and use.path and use.path != "-":
        base = os.path.dirname(os.path.abspath(use.path))
        files += [("the prompt file's schema", os.path.join(base, name)) for name in schema_files(use.schema)]
    for result in tool_results:
        _, _, value = result.partition("=")
        if value.startswith("@"):
            files.append(("--tool-result", value[1:]))
    return files


def _media_into_input_message(conversation: Conversation, use: PromptFileUse, request: RequestFlags) -> None:
    """-i/--video when the prompt went into the message holding {input}: they join that message."""
    if use.input_message is None:
        raise UsageError("-i/--image and --video need a prompt to attach to")
    media = new_turn("", request)  # the references as a new turn would keep them
    message = conversation.messages[use.input_message]
    for key in ("images", "videos"):
        if key in media:
            message[key] = [*message.get(key, ()), *media[key]]
    if "fps" in media:
        message["fps"] = media["fps"]


def _join(conversation: Conversation, use: PromptFileUse, attached, reader, fps) -> None:
    """-a's attachments join the final user message: the prompt's, the one holding {input},
    or a new one."""
    index = use.input_message
    if index is None:
        conversation.messages.append({"role": "user", "content": ""})
        index = len(conversation.messages) - 1
    conversation.messages[index] = join_attachments(conversation.messages[index], attached, reader, fps)
