"""`anyfast chat`: a conversation from a file, continued by a prompt, optionally saved."""

from __future__ import annotations

import os

from anyfast_cli.attachments import is_url, load_media
from anyfast_cli.commands.common import OutputFlags, body_fields, exchange, load_settings
from anyfast_cli.errors import ExitCode, UsageError
from anyfast_cli.files import write_atomic
from anyfast_cli.inputs import Conversation, build_prompt, parse_conversation, render_conversation, to_api_message, with_system
from anyfast_cli.request import RequestFlags
from anyfast_cli.settings import SettingFlags
from anyfast_cli.streams import Streams


def run_chat(
    prompt_args: list[str],
    *,
    messages_file: str | None,
    save: str | None,
    no_stdin: bool,
    settings_flags: SettingFlags,
    request: RequestFlags,
    out: OutputFlags,
    streams: Streams,
) -> ExitCode:
    conversation = read_conversation(messages_file, streams) if messages_file else Conversation()
    stdin_text = None if no_stdin or messages_file == "-" else streams.read_stdin()
    prompt = build_prompt(prompt_args, stdin_text) if prompt_args or (stdin_text or "").strip() else None
    if prompt is None and not conversation.messages:
        if streams.stdin_isatty and streams.stdout_isatty and not messages_file:
            raise UsageError("the interactive chat session is not available yet", hint="give a prompt or -f FILE")
        raise UsageError("nothing to send: give -f FILE, a prompt, or text on standard input")
    if request.images and prompt is None:
        raise UsageError("-i/--image needs a prompt to attach to")
    if prompt is not None:
        turn = {"role": "user", "content": prompt}
        if request.images:
            turn["images"] = [ref if is_url(ref) else os.path.abspath(ref) for ref in request.images]
        conversation.messages.append(turn)
    if request.system is not None:
        conversation.system = request.system
        if conversation.messages and conversation.messages[0]["role"] == "system":
            conversation.messages.pop(0)

    settings = load_settings(settings_flags, streams, file_model=conversation.model)
    fields = body_fields(settings, request, conversation.params)
    api_messages = [to_api_message(m, [load_media(ref, "image") for ref in m.get("images", ())]) for m in conversation.messages]
    reply = exchange(settings, with_system(api_messages, conversation.system), fields, out, streams)
    if save and reply is not None:
        conversation.messages.append({"role": "assistant", "content": reply.content})
        save_conversation(conversation, save)
    return ExitCode.OK


def read_conversation(path: str, streams: Streams) -> Conversation:
    """A `-f` file; its local image paths become absolute, as they are relative to the file."""
    if path == "-":
        text = streams.read_stdin() or ""
        base_dir = os.getcwd()
    else:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
        base_dir = os.path.dirname(os.path.abspath(path))
    conversation = parse_conversation(text, "standard input" if path == "-" else path)
    for message in conversation.messages:
        if "images" in message:
            message["images"] = [ref if is_url(ref) else os.path.join(base_dir, ref) for ref in message["images"]]
    return conversation


def save_conversation(conversation: Conversation, path: str) -> None:
    """Atomically, with image paths relative to the saved file so it can move with them."""
    save_dir = os.path.dirname(os.path.abspath(path))
    for message in conversation.messages:
        if "images" in message:
            message["images"] = [ref if is_url(ref) else os.path.relpath(ref, save_dir) for ref in message["images"]]
    try:
        write_atomic(path, render_conversation(conversation))
    except OSError as exc:
        raise UsageError(f"cannot save the conversation to {path}: {exc.strerror or exc}") from None
