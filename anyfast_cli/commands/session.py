"""The interactive `anyfast chat` session: type, the reply streams in, type again.

Only reached when stdin and stdout are terminals. One client (and one key lookup)
serves the whole session. A failed turn prints its one-line error and leaves the
history as it was; Ctrl-C during a reply keeps what arrived (marked as cut) and
returns to the prompt; Ctrl-C at an empty prompt leaves (130).
"""

from __future__ import annotations

import dataclasses

from anyfast_cli.commands.attach import attachment_reader
from anyfast_cli.commands.common import (
    OutputFlags,
    answers_in_markdown,
    body_fields,
    load_settings,
    open_client,
    render_answer,
)
from anyfast_cli.commands.conversation import api_message, new_turn, save_conversation, set_system
from anyfast_cli.errors import AnyfastError, ExitCode, Terminated
from anyfast_cli.exchange import Reply
from anyfast_cli.inputs import Conversation, with_system
from anyfast_cli.request import RequestFlags, build_body
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


class History:
    """The conversation as saved, and beside it each message as the API takes it, so
    attachments are read and encoded once, not again at every turn."""

    def __init__(self, conversation: Conversation, reader=None) -> None:
        self.conversation = conversation
        self.reader = reader  # reads a seeding file's `attach:` references
        self.api = [api_message(m, reader) for m in conversation.messages]

    def add(self, *messages: dict) -> None:
        self.conversation.messages.extend(messages)
        self.api.extend(api_message(m, self.reader) for m in messages)

    def set_system(self, text: str) -> None:
        if self.conversation.messages and self.conversation.messages[0]["role"] == "system":
            self.api.pop(0)  # set_system drops the message it replaces; keep the lists in step
        set_system(self.conversation, text)

    def clear(self) -> None:
        self.conversation.messages.clear()
        self.api.clear()

    def api_messages_with(self, turn_api: dict) -> list[dict]:
        return with_system([*self.api, turn_api], self.conversation.system)


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
    markdown = answers_in_markdown(settings, out, streams)  # replies render as complete's answers do
    history = History(conversation, attachment_reader(settings, streams))
    attachments = request  # -i/--video attach to the first message typed
    line_editor = _enable_line_editing()
    with open_client(settings, out, streams, command="chat") as client:
        streams.say(f"chatting with {settings.model}; /help lists commands, Ctrl-D leaves")
        while True:
            try:
                line = input(PROMPT)
            except EOFError:
                streams.stdout.write("\n")
                return ExitCode.OK
            except Terminated:
                raise  # SIGTERM/SIGHUP end the session, as they end any command
            except KeyboardInterrupt:
                streams.stdout.write("\n")
                if not (line_editor and line_editor.get_line_buffer()):
                    return ExitCode.INTERRUPTED
                continue
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                if _command(text, history, streams) == "exit":
                    return ExitCode.OK
                continue
            try:
                turn = new_turn(line, attachments)
                turn_api = api_message(turn)
                body = build_body(
                    settings.model, history.api_messages_with(turn_api), fields, stream=True, include_usage=out.usage
                )
            except AnyfastError as exc:  # e.g. an attachment that cannot be read, or text that is not UTF-8
                streams.error(exc)
                continue
            attachments = RequestFlags()
            reply = Reply()
            try:
                render_answer(client, body, out, streams, reply, markdown=markdown)
            except Terminated:
                raise
            except KeyboardInterrupt:
                if reply.content:  # keep what arrived, marked; a reply that never began leaves no turn
                    history.add(turn, {"role": "assistant", "content": reply.content, "cut": True})
                streams.say("reply cut short" if reply.content else "request cancelled")
                continue
            except AnyfastError as exc:  # the session goes on; the failed turn is not kept
                streams.error(exc)
                continue
            history.add(turn, {"role": "assistant", "content": reply.content})
            if save:
                save_conversation(conversation, save)


def _command(text: str, history: History, streams: Streams) -> str | None:
    name, _, argument = text.partition(" ")
    argument = argument.strip()
    conversation = history.conversation
    if name in ("/exit", "/quit"):
        return "exit"
    if name == "/help":
        streams.stderr.write(HELP)
        streams.stderr.flush()
    elif name == "/reset":
        history.clear()
        streams.say("conversation cleared")
    elif name == "/system":
        if argument:
            history.set_system(argument)
            streams.say("system prompt set")
        else:
            streams.say(f"system prompt: {conversation.system or '(none)'}")
    elif name == "/save":
        if not argument:
            streams.say("usage: /save FILE")
        else:
            try:
                save_conversation(conversation, argument)
                streams.say(f"saved {len(conversation.messages)} messages to {argument}")
            except AnyfastError as exc:
                streams.error(exc)
    else:
        streams.say(f"unknown command {name}; /help lists them")
    return None


def _enable_line_editing():
    """readline gives input() editing and history; it is absent on some builds."""
    try:
        import readline
    except ImportError:
        return None
    return readline
