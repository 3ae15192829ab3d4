"""`anyfast chat`: a conversation from a file, continued by a prompt, optionally saved;
or, at a terminal with nothing to send, an interactive session (commands/session.py)."""

from __future__ import annotations

import copy
import os

from anyfast_cli.attachments import is_url, load_media, load_video_parts
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
    interactive: bool = False,
    settings_flags: SettingFlags,
    request: RequestFlags,
    out: OutputFlags,
    streams: Streams,
) -> ExitCode:
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
        from anyfast_cli.commands.session import run_session

        return run_session(conversation, save=save, settings_flags=settings_flags, request=request, out=out, streams=streams)
    if prompt is None and not conversation.messages:
        if messages_file:
            raise UsageError(f"nothing to send: {messages_file} holds no messages and no prompt was given")
        raise UsageError("nothing to send: give -f FILE, a prompt, or text on standard input")
    if (request.images or request.videos) and prompt is None:
        raise UsageError("-i/--image and --video need a prompt to attach to")
    if prompt is not None:
        conversation.messages.append(new_turn(prompt, request))
    if request.system is not None:
        set_system(conversation, request.system)

    settings = load_settings(settings_flags, streams, file_model=conversation.model)
    fields = body_fields(settings, request, conversation.params)
    reply = exchange(settings, api_messages(conversation), fields, out, streams)
    if save and reply is not None:
        conversation.messages.append({"role": "assistant", "content": reply.content})
        save_conversation(conversation, save)
    return ExitCode.OK


def new_turn(text: str, request: RequestFlags) -> dict:
    """A user message; attachments are kept as references (absolute paths or URLs)."""
    turn: dict = {"role": "user", "content": text}
    for key, refs in (("images", request.images), ("videos", request.videos)):
        if refs:
            turn[key] = [ref if is_url(ref) else os.path.abspath(ref) for ref in refs]
    if request.videos and request.fps is not None:
        turn["fps"] = request.fps
    return turn


def set_system(conversation: Conversation, system: str | None) -> None:
    conversation.system = system
    if conversation.messages and conversation.messages[0]["role"] == "system":
        conversation.messages.pop(0)


def api_messages(conversation: Conversation) -> list[dict]:
    """The conversation as the API takes it, attachments loaded."""
    messages = [
        to_api_message(
            m,
            [load_media(ref, "image") for ref in m.get("images", ())],
            load_video_parts(m.get("videos", ()), m.get("fps")),
        )
        for m in conversation.messages
    ]
    return with_system(messages, conversation.system)


def read_conversation(path: str, streams: Streams) -> Conversation:
    """A `-f` file; its local attachment paths become absolute, as they are relative to the file."""
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
        for key in ("images", "videos"):
            if key in message:
                message[key] = [ref if is_url(ref) else os.path.join(base_dir, ref) for ref in message[key]]
    return conversation


def check_writable(path: str) -> None:
    """Fail before sending, not after the answer has been paid for."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"cannot save to {path}: it is a directory")
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise UsageError(f"cannot save to {path}: its directory does not exist or is not writable")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UsageError(f"cannot save to {path}: the file is not writable")


def save_conversation(conversation: Conversation, path: str) -> None:
    """Atomically, with attachment paths relative to the saved file so it can move with them."""
    save_dir = os.path.dirname(os.path.abspath(path))
    saved = copy.deepcopy(conversation)
    for message in saved.messages:
        for key in ("images", "videos"):
            if key in message:
                message[key] = [ref if is_url(ref) else os.path.relpath(ref, save_dir) for ref in message[key]]
    try:
        write_atomic(path, render_conversation(saved, as_json=path.lower().endswith(".json")))
    except OSError as exc:
        raise UsageError(f"cannot save the conversation to {path}: {exc.strerror or exc}") from None
