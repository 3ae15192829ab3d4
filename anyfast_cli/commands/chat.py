"""`anyfast chat`: a conversation from a file, continued by a prompt, optionally saved;
or, at a terminal with nothing to send, an interactive session (commands/session.py)."""

from __future__ import annotations

from anyfast_cli.commands.common import (
    OutputFlags,
    body_fields,
    check_output_flags,
    exchange,
    load_settings,
    observed,
)
from anyfast_cli.commands.conversation import (
    add_tool_results,
    api_messages,
    assistant_message,
    check_tool_calls_answered,
    check_writable,
    new_turn,
    read_conversation,
    save_conversation,
    set_system,
    tool_fields,
)
from anyfast_cli.errors import ExitCode, UsageError
from anyfast_cli.inputs import Conversation, build_prompt
from anyfast_cli.request import RequestFlags
from anyfast_cli.settings import SettingFlags
from anyfast_cli.streams import Streams


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
) -> ExitCode:
    check_output_flags(out)
    with observed(out, streams):  # --events: one `result` event however this ends
        return _chat(
            prompt_args,
            messages_file=messages_file,
            save=save,
            no_stdin=no_stdin,
            interactive=interactive,
            tool_results=tool_results,
            settings_flags=settings_flags,
            request=request,
            out=out,
            streams=streams,
            schema_flags=schema_flags,
        )


def _chat(
    prompt_args,
    *,
    messages_file,
    save,
    no_stdin,
    interactive,
    tool_results,
    settings_flags,
    request,
    out,
    streams,
    schema_flags,
) -> ExitCode:
    from anyfast_cli.commands.schema_answer import schema_of

    schema = schema_of(schema_flags)  # a bad SPEC is exit 2 before anything is read or sent
    conversation = read_conversation(messages_file, streams) if messages_file else Conversation()
    if save:
        check_writable(save)
    stdin_text = None if no_stdin or messages_file == "-" else streams.read_stdin()
    prompt = build_prompt(prompt_args, stdin_text) if prompt_args or (stdin_text or "").strip() else None
    at_terminal = streams.stdin_isatty and streams.stdout_isatty
    if interactive or (prompt is None and not messages_file and at_terminal):
        if not at_terminal:
            raise UsageError("an interactive session needs a terminal on stdin and stdout")
        if prompt is not None:
            raise UsageError("an interactive session takes no prompt; type it at the prompt")
        if schema is not None:
            raise UsageError("--schema is for one answer, not an interactive session")
        if out.events:
            raise UsageError("--events is for a program that runs one exchange, not an interactive session")
        from anyfast_cli.commands.session import run_session

        return run_session(
            conversation, save=save, settings_flags=settings_flags, request=request, out=out, streams=streams
        )
    if prompt is None and not conversation.messages:
        if messages_file:
            raise UsageError(f"nothing to send: {messages_file} holds no messages and no prompt was given")
        raise UsageError("nothing to send: give -f FILE, a prompt, or text on standard input")
    if (request.images or request.videos) and prompt is None:
        raise UsageError("-i/--image and --video need a prompt to attach to")
    if tool_results:
        add_tool_results(conversation, tool_results)
    if prompt is not None:
        conversation.messages.append(new_turn(prompt, request))
    if request.system is not None:
        set_system(conversation, request.system)

    settings = load_settings(settings_flags, streams, file_model=conversation.model)
    fields = body_fields(settings, request, {**conversation.params, **tool_fields(conversation)})
    check_tool_calls_answered(conversation.messages)  # before anything is sent
    if request.tools is not None:
        conversation.tools = fields["tools"]  # --save keeps the tools the flag declared
    if request.tool_choice is not None:
        conversation.tool_choice = fields["tool_choice"]
    if schema is not None:
        from anyfast_cli.commands.schema_answer import exchange_structured

        reply = exchange_structured(
            settings,
            api_messages(conversation),
            fields,
            out,
            streams,
            schema=schema,
            flags=schema_flags,
            command="chat",
        )
    else:
        reply = exchange(
            settings, api_messages(conversation), fields, out, streams, keep_text=bool(save), command="chat"
        )  # the text only for --save
    if save and reply is not None:
        conversation.messages.append(assistant_message(reply))
        if reply.choice_count > 1:
            streams.warn(f"--save keeps choice 0 of the {reply.choice_count} the answer holds")
        save_conversation(conversation, save)
    if reply is not None and reply.asks_for_tools:
        return ExitCode.TOOL_CALLS
    return ExitCode.OK
