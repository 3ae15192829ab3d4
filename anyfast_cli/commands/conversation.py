"""A conversation's life outside the API: reading a `-f` file, adding turns, turning it
into API messages, saving it. Shared by one-shot `chat` and the interactive session."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable

from anyfast_cli.attachments import AttachmentReader, is_url, load_attachments, with_attachments
from anyfast_cli.errors import UsageError
from anyfast_cli.files import replacement_problem, write_atomic
from anyfast_cli.inputs import Conversation, parse_conversation, render_conversation, to_api_message, with_system
from anyfast_cli.reading import DOCUMENT_MAX_BYTES, read_document, read_text_file
from anyfast_cli.request import RequestFlags
from anyfast_cli.sniff import VIDEO
from anyfast_cli.streams import Streams

ATTACHMENT_KEYS = ("images", "videos", "attach")


def read_conversation(path: str, streams: Streams) -> Conversation:
    """A `-f` file; its local attachment paths become absolute, as they are relative to the file."""
    return read_conversation_text(path, streams)[0]


def read_conversation_text(path: str, streams: Streams) -> tuple[Conversation, str]:
    """read_conversation, and the file's text (a prompt file's errors name its lines)."""
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
    return conversation, text


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


def api_message(message: dict, reader: AttachmentReader | None = None) -> dict:
    """One message as the API takes it, its attachments loaded: `images`/`videos` by -i's rules,
    `attach` (what -a attached, as --save keeps it) by content, through `reader`."""
    image_urls, video_parts, attached = message_media(message, reader)
    api = to_api_message(message, image_urls, video_parts)
    return with_attachments(api, attached, message.get("fps")) if attached else api


def message_media(message: dict, reader: AttachmentReader | None) -> tuple[list, list, list]:
    """A message's media loaded: (image URLs and video parts by -i's rules, the `attach` list's
    attachments by content, through `reader`)."""
    attached = _read_attach(message, reader)
    image_urls, video_parts = load_attachments(
        message.get("images", ()),
        message.get("videos", ()),
        message.get("fps"),
        other_videos=any(a.kind == VIDEO for a in attached),
    )
    return image_urls, video_parts, attached


def _read_attach(message: dict, reader: AttachmentReader | None) -> list:
    refs = message.get("attach")
    if not refs:
        return []
    if reader is None:
        raise UsageError("attachments (attach:) cannot be read here")
    return reader.read(refs)


def api_messages(conversation: Conversation, reader: AttachmentReader | None = None) -> list[dict]:
    return with_system([api_message(m, reader) for m in conversation.messages], conversation.system)


def file_schema(spec, path: str | None) -> dict:
    """The file's `schema:`: a JSON Schema mapping, or a SPEC as --schema takes it, whose file
    is relative to the prompt file (as its images are)."""
    from anyfast_cli.commands.schema_answer import read_schema_file
    from anyfast_cli.schema import check_schema, parse_spec

    source = f"{path or 'the conversation'}: schema"
    if isinstance(spec, dict):
        check_schema(spec, source)
        return spec
    base = os.path.dirname(os.path.abspath(path)) if path and path != "-" else os.getcwd()
    try:
        return parse_spec(spec, lambda name: read_schema_file(os.path.join(base, name)))
    except UsageError as exc:
        if exc.message.startswith("--schema"):  # the SPEC came from the file, not the flag
            exc.message = source + exc.message.removeprefix("--schema")
        raise


def read_var_file(path: str) -> str:
    """--var NAME=@FILE: the file's text, as it is."""
    return read_text_file(path, "a --var file", "--var: ")


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


# --- tool calls and their results ------------------------------------------------------------


def tool_fields(conversation: Conversation) -> dict:
    """The file's `tools:`/`tool_choice:` as body fields (flags win over them, as over params)."""
    from anyfast_cli.commands.common import check_tools, tool_choice_value

    fields: dict = {}
    if conversation.tools:
        fields["tools"] = check_tools(conversation.tools, "the conversation file's tools")
    if conversation.tool_choice is not None:
        choice = conversation.tool_choice
        fields["tool_choice"] = choice if isinstance(choice, dict) else tool_choice_value(choice, fields.get("tools"))
    return fields


def parse_tool_result(text: str) -> tuple[str, str]:
    """--tool-result ID=TEXT or ID=@FILE (the file's text, as it is)."""
    call_id, eq, value = text.partition("=")
    call_id = call_id.strip()
    if not eq or not call_id:
        raise UsageError(f"--tool-result expects ID=TEXT or ID=@FILE, got {text[:60]!r}")
    if value.startswith("@"):
        path = value[1:]
        value = read_text_file(path, "a tool result file", f"--tool-result {call_id}: ")
    return call_id, value


def add_tool_results(conversation: Conversation, results: list[str]) -> None:
    """Each result as a `role: tool` message after the file's messages; its ID must be a call
    the conversation left unanswered (two calls that share an id take a result each)."""
    waiting = unanswered_calls(conversation.messages)
    for text in results:
        call_id, content = parse_tool_result(text)
        if not _answer(waiting, call_id):
            known = ", ".join(dict.fromkeys(i for i, _ in waiting)) or "none"
            raise UsageError(f"--tool-result {call_id}: no unanswered tool call has this id (waiting: {known})")
        conversation.messages.append({"role": "tool", "tool_call_id": call_id, "content": content})


def unanswered_calls(messages: list[dict]) -> list[tuple[str, str]]:
    """The tool calls of the last assistant message that asked for them and that no `tool`
    message after it answers: (id, function name), in order."""
    waiting: list = []
    for message in messages:
        role = message.get("role")
        if role == "assistant":
            waiting = _calls_of(message)
        elif role == "tool":
            _answer(waiting, str(message.get("tool_call_id")))
        elif role == "user":
            if waiting:
                break  # a user turn after unanswered calls: checked below
    return waiting


def _calls_of(message: dict) -> list[tuple[str, str]]:
    """An assistant message's tool calls: (id, function name), in order. Ids are kept as the
    server sent them, and some servers give two calls one id: each is a call to answer."""
    calls = []
    for call in message.get("tool_calls") or ():
        if isinstance(call, dict) and call.get("id"):
            function = call.get("function") if isinstance(call.get("function"), dict) else {}
            calls.append((str(call["id"]), function.get("name") or "?"))
    return calls


def _answer(waiting: list[tuple[str, str]], call_id: str) -> bool:
    """Strike the first waiting call with this id; False when none waits."""
    for position, (waiting_id, _) in enumerate(waiting):
        if waiting_id == call_id:
            del waiting[position]
            return True
    return False


def check_tool_calls_answered(messages: list[dict]) -> None:
    """A request whose conversation leaves a tool call unanswered is refused (exit 2), as the
    API would refuse it after the request was paid for."""
    waiting: list = []
    for message in messages:
        role = message.get("role")
        if role == "tool":
            _answer(waiting, str(message.get("tool_call_id")))
            continue
        if waiting:
            break
        if role == "assistant":
            waiting = _calls_of(message)
    if waiting:
        call_id, name = waiting[0]
        raise UsageError(
            f"tool call {call_id} ({name}) has no result; nothing was sent",
            hint=f"answer it with --tool-result {call_id}=TEXT (or {call_id}=@FILE)",
        )


def assistant_message(reply) -> dict:
    """The reply as the conversation keeps it: its text, and its tool calls in order."""
    calls = reply.calls(0)
    if not calls:
        return {"role": "assistant", "content": reply.content}
    return {"role": "assistant", "content": reply.content or None, "tool_calls": calls}
