"""A conversation's life outside the API: reading a `-f` file, adding turns, turning it
into API messages, saving it. Shared by one-shot `chat` and the interactive session."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable

from anyfast_cli.attachments import is_url, load_attachments
from anyfast_cli.errors import UsageError
from anyfast_cli.files import replacement_problem, write_atomic
from anyfast_cli.inputs import Conversation, parse_conversation, render_conversation, to_api_message, with_system
from anyfast_cli.reading import DOCUMENT_MAX_BYTES, read_document
from anyfast_cli.request import RequestFlags
from anyfast_cli.streams import Streams

ATTACHMENT_KEYS = ("images", "videos")


def read_conversation(path: str, streams: Streams) -> Conversation:
    """A `-f` file; its local attachment paths become absolute, as they are relative to the file."""
    if path == "-":
        text = streams.read_stdin(DOCUMENT_MAX_BYTES, "a conversation file") or ""
        base_dir = os.getcwd()
    else:
        try:
            text, _ = read_document(path, "a conversation file")  # bounded: `chat -f /dev/zero` stops at the limit
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
        base_dir = os.path.dirname(os.path.abspath(path))
    conversation = parse_conversation(text, "standard input" if path == "-" else path)
    for message in conversation.messages:
        _map_local_refs(message, lambda ref: os.path.join(base_dir, ref))
    return conversation


def new_turn(text: str, request: RequestFlags) -> dict:
    """A user message; attachments are kept as references (absolute paths or URLs)."""
    turn: dict = {"role": "user", "content": text, "images": list(request.images), "videos": list(request.videos)}
    _map_local_refs(turn, os.path.abspath)
    if request.videos and request.fps is not None:
        turn["fps"] = request.fps
    return {k: v for k, v in turn.items() if v != []}


def set_system(conversation: Conversation, system: str | None) -> None:
    conversation.system = system
    if conversation.messages and conversation.messages[0]["role"] == "system":
        conversation.messages.pop(0)


def api_message(message: dict) -> dict:
    """One message as the API takes it, its attachments loaded."""
    image_urls, video_parts = load_attachments(message.get("images", ()), message.get("videos", ()), message.get("fps"))
    return to_api_message(message, image_urls, video_parts)


def api_messages(conversation: Conversation) -> list[dict]:
    return with_system([api_message(m) for m in conversation.messages], conversation.system)


def check_writable(path: str) -> None:
    """Fail before sending, not after the answer has been paid for: everything that would
    stop the atomic save (files.py) is tried now, short of replacing the file."""
    problem = replacement_problem(path)
    if problem:
        raise UsageError(f"cannot save to {path}: {problem}")


def save_conversation(conversation: Conversation, path: str) -> None:
    """Atomically, with attachment paths relative to the saved file so it can move with them."""
    save_dir = os.path.dirname(os.path.abspath(path))
    saved = copy.deepcopy(conversation)
    for message in saved.messages:
        _map_local_refs(message, lambda ref: os.path.relpath(ref, save_dir))
    try:
        write_atomic(path, render_conversation(saved, as_json=path.lower().endswith(".json")))
    except OSError as exc:
        raise UsageError(f"cannot save the conversation to {path}: {exc.strerror or exc}") from None


def _map_local_refs(message: dict, change: Callable[[str], str]) -> None:
    """Apply `change` to the local file references among a message's attachments (not URLs)."""
    for key in ATTACHMENT_KEYS:
        if key in message:
            message[key] = [ref if is_url(ref) else change(ref) for ref in message[key]]
