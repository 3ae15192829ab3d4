"""The interactive `anyfast chat` session: type, the reply streams in, type again.

Only reached when stdin and stdout are terminals. A failed turn prints its one-line
error and leaves the history as it was; Ctrl-C during a reply keeps what arrived
(marked as cut) and returns to the prompt; Ctrl-C at an empty prompt leaves (130).
"""

from __future__ import annotations

import dataclasses

from anyfast_cli.commands.chat import api_messages, new_turn, save_conversation, set_system
from anyfast_cli.commands.common import OutputFlags, body_fields, exchange, load_settings
from anyfast_cli.errors import AnyfastError, ExitCode
from anyfast_cli.inputs import Conversation
from anyfast_cli.output import Reply
from anyfast_cli.request import RequestFlags
from anyfast_cli.settings import SettingFlags
from anyfast_cli.streams import Streams

PROMPT = "> "
HELP = """commands:
  /save FILE    write the conversation (the --save YAML form)
  /reset        forget the conversation so far
  /system TEXT  set the system prompt (/system alone shows it)
  /help         this list
  /exit         leave (or Ctrl-D); Ctrl-C stops a reply, or leaves at an empty prompt
"""


def run_session(
    conversation: Conversation,
    *,
    save: str | None,
    settings_flags: SettingFlags,
    request: RequestFlags,
    out: OutputFlags,
    streams: Streams,
) -> ExitCode:
    settings = load_settings(settings_flags, streams, file_model=conversation.model)
    fields = body_fields(settings, request, conversation.params)
    if request.system is not None:
        set_system(conversation, request.system)
    out = dataclasses.replace(out, stream=True, json=False, dry_run=False)
    attachments = request  # -i/--video attach to the first message typed
    line_editor = _enable_line_editing()
    _say(streams, f"chatting with {settings.model}; /help lists commands, Ctrl-D leaves")
    while True:
        try:
            line = input(PROMPT)
        except EOFError:
            streams.stdout.write("\n")
            return ExitCode.OK
        except KeyboardInterrupt:
            streams.stdout.write("\n")
            if not (line_editor and line_editor.get_line_buffer()):
                return ExitCode.INTERRUPTED
            continue
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            if _command(text, conversation, streams) == "exit":
                return ExitCode.OK
            continue
        turn = new_turn(line, attachments)
        attachments = RequestFlags()
        reply = Reply()
        try:
            history = dataclasses.replace(conversation, messages=[*conversation.messages, turn])
            exchange(settings, api_messages(history), fields, out, streams, reply=reply)
        except KeyboardInterrupt:
            conversation.messages += [turn, {"role": "assistant", "content": reply.content, "cut": True}]
            _say(streams, "reply cut short")
            continue
        except AnyfastError as exc:  # the session goes on; the failed turn is not kept
            streams.stderr.write(exc.render())
            continue
        conversation.messages += [turn, {"role": "assistant", "content": reply.content}]
        if save:
            save_conversation(conversation, save)


def _command(text: str, conversation: Conversation, streams: Streams) -> str | None:
    name, _, argument = text.partition(" ")
    argument = argument.strip()
    if name in ("/exit", "/quit"):
        return "exit"
    if name == "/help":
        streams.stderr.write(HELP)
    elif name == "/reset":
        conversation.messages.clear()
        _say(streams, "conversation cleared")
    elif name == "/system":
        if argument:
            set_system(conversation, argument)
            _say(streams, "system prompt set")
        else:
            _say(streams, f"system prompt: {conversation.system or '(none)'}")
    elif name == "/save":
        if not argument:
            _say(streams, "usage: /save FILE")
        else:
            try:
                save_conversation(conversation, argument)
                _say(streams, f"saved {len(conversation.messages)} messages to {argument}")
            except AnyfastError as exc:
                streams.stderr.write(exc.render())
    else:
        _say(streams, f"unknown command {name}; /help lists them")
    streams.stderr.flush()
    return None


def _say(streams: Streams, message: str) -> None:
    streams.stderr.write(f"anyfast: {message}\n")
    streams.stderr.flush()


def _enable_line_editing():
    """readline gives input() editing and history; it is absent on some builds."""
    try:
        import readline
    except ImportError:
        return None
    return readline
