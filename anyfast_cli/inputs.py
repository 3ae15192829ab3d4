"""What the user typed or piped, turned into messages (pure parsing, no I/O).

Covers the prompt rules of `complete`, `-p KEY=VALUE`, and the conversation files of
`chat -f` (a list of messages, or a mapping with model/system/params/messages).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from anyfast_cli.documents import dump_yaml, load_structured
from anyfast_cli.errors import UsageError
from anyfast_cli.request import with_media
from anyfast_cli.structured import JsonSyntaxError, ValueProblem, parse_json

ROLES = ("system", "user", "assistant", "tool", "developer")
SHORTHAND_ROLES = ("user", "assistant", "system")


def build_prompt(args: list[str], stdin_text: str | None) -> str:
    """The arguments joined by spaces, then stdin after a blank line; `-` is stdin alone."""
    piped = stdin_text.removeprefix("\ufeff").rstrip("\r\n") if stdin_text and stdin_text.strip() else ""
    if "-" in args:
        if args != ["-"]:
            raise UsageError(
                "'-' means standard input alone; give it without other words",
                hint="echo text | anyfast complete 'instruction'",
            )
        if stdin_text is None:
            raise UsageError("no prompt: '-' reads standard input, but it is a terminal, closed, or turned off by -n")
        prompt = piped
    else:
        prompt = " ".join(args)
        if piped:
            prompt = f"{prompt}\n\n{piped}" if prompt else piped
    if not prompt.strip():
        raise UsageError(
            "no prompt: give it as arguments or on standard input", hint="try: echo 'hi' | anyfast complete"
        )
    return prompt


def parse_param(text: str) -> tuple[str, object]:
    """`-p KEY=VALUE`: VALUE as JSON when it parses, else as a plain string. JSON that no
    request may carry (NaN, Infinity, nested too deep) is refused, not sent as text."""
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise UsageError(f"--param expects KEY=VALUE, got {text!r}")
    try:
        return key, parse_json(raw)
    except JsonSyntaxError:
        return key, raw
    except ValueProblem as exc:
        hint = f"for the text, quote it as JSON: -p '{key}=\"{raw.strip()}\"'" if len(raw) < 40 else None
        raise UsageError(f"-p/--param {key}: {exc.describe()}", hint=hint) from None


@dataclass
class Conversation:
    """A `chat -f` file. Messages keep an `images` list of references (paths or URLs)."""

    messages: list[dict] = field(default_factory=list)
    model: str | None = None
    system: str | None = None
    params: dict = field(default_factory=dict)
    tools: list | None = None  # tool definitions, sent with every request (and kept by --save)
    tool_choice: object = None
    description: str | None = None  # one line, for `anyfast prompts`
    # A prompt file's variables and their defaults (None: no default). None when the file has no
    # `vars:` key, and so is not a template: it is sent as it is, braces and all.
    vars: dict | None = None
    schema: object = None  # a SPEC, as --schema takes it, or a JSON Schema mapping

    @property
    def is_template(self) -> bool:
        return self.vars is not None


def parse_conversation(text: str, source: str) -> Conversation:
    data = load_structured(text, source)
    if data is None:
        return Conversation()
    if isinstance(data, list):
        return Conversation(messages=parse_messages(data, source))
    if not isinstance(data, dict):
        raise UsageError(f"{source}: expected a list of messages or a mapping with 'messages'")
    unknown = set(data) - set(FILE_KEYS)
    if unknown:
        raise UsageError(
            f"{source}: unknown key(s) {', '.join(sorted(map(str, unknown)))} (expected {', '.join(FILE_KEYS)})"
        )
    tools = data.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        raise UsageError(f"{source}: 'tools' must be a list of tool definitions")
    tool_choice = data.get("tool_choice")
    if tool_choice is not None and not isinstance(tool_choice, (str, dict)):
        raise UsageError(f"{source}: 'tool_choice' must be auto, none, required, a function's name or an object")
    params = data.get("params") or {}
    if not isinstance(params, dict):
        raise UsageError(f"{source}: 'params' must be a mapping of body fields")
    for key in ("model", "system", "description"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise UsageError(f"{source}: '{key}' must be a string")
    schema = data.get("schema")
    if schema is not None and not isinstance(schema, (str, dict)):
        raise UsageError(f"{source}: 'schema' must be a SPEC as --schema takes it, or a JSON Schema mapping")
    return Conversation(
        messages=parse_messages(data.get("messages") or [], source),
        model=data.get("model"),
        system=data.get("system"),
        params=params,
        tools=tools or None,
        tool_choice=tool_choice,
        description=data.get("description"),
        vars=parse_vars(data["vars"], source) if "vars" in data else None,
        schema=schema,
    )


# The keys of a conversation file's mapping form, in the order --save writes them.
FILE_KEYS = ("description", "vars", "schema", "model", "system", "params", "tools", "tool_choice", "messages")
INPUT_VAR = "input"  # {input}: the prompt from the arguments and stdin, never a file's default


def parse_vars(data, source: str) -> dict:
    """A prompt file's `vars:`: names -> default text (None: no default). An empty `vars:` is a
    prompt file without defaults. Numbers and true/false are text, as in a batch record's fields."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{source}: 'vars' must be a mapping of names to default values")
    from anyfast_cli.template import NAME as PLACEHOLDER_NAME  # prompt files only: a plain prompt never loads it

    defaults = {}
    for name, value in data.items():
        if not isinstance(name, str) or not PLACEHOLDER_NAME.fullmatch(name):
            raise UsageError(f"{source}: vars: {name!r} is not a placeholder name (letters, digits, _ and -)")
        if name == INPUT_VAR:
            raise UsageError(f"{source}: vars: {{input}} is the prompt (arguments and stdin); it takes no default")
        if isinstance(value, (list, dict)):
            raise UsageError(f"{source}: vars: {name}'s default must be text, not a {type(value).__name__}")
        defaults[name] = value if value is None or isinstance(value, str) else json.dumps(value)
    return defaults


def parse_messages(items, source: str) -> list[dict]:
    if not isinstance(items, list):
        raise UsageError(f"{source}: 'messages' must be a list")
    return [parse_message(item, source, number) for number, item in enumerate(items, 1)]


def parse_message(item, source: str, number: int) -> dict:
    """One message, normalised to {role, content[, images][, other API keys]}."""
    where = f"{source}: message {number}"
    if not isinstance(item, dict):
        raise UsageError(f"{where}: expected a mapping like {{user: text}} or {{role: user, content: text}}")
    message = dict(item)
    if "role" not in message:
        shorthand = [r for r in SHORTHAND_ROLES if r in message]
        if len(shorthand) != 1:
            raise UsageError(f"{where}: needs 'role' and 'content', or one of user:/assistant:/system:")
        role = shorthand[0]
        message = {"role": role, "content": message.pop(role), **message}  # role first, as --save writes it
    if message["role"] not in ROLES:
        raise UsageError(f"{where}: unknown role {message['role']!r} (expected {', '.join(ROLES)})")
    content = message.get("content")
    if content is None and not message.get("tool_calls"):
        raise UsageError(f"{where}: has no content")
    if content is not None and not isinstance(content, (str, list)):
        message["content"] = str(content)  # a YAML number or date is meant as text
    for key in ("images", "videos", "attach"):
        refs = message.get(key, [])
        if isinstance(refs, str):
            refs = [refs]
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise UsageError(f"{where}: '{key}' must be a list of paths or URLs")
        if refs:
            message[key] = refs
        else:
            message.pop(key, None)
    if "fps" in message and (isinstance(message["fps"], bool) or not isinstance(message["fps"], (int, float))):
        raise UsageError(f"{where}: 'fps' must be a number")
    return message


def with_system(messages: list[dict], system: str | None) -> list[dict]:
    """Put `system` first, replacing a system message already there."""
    if system is None:
        return messages
    rest = messages[1:] if messages and messages[0].get("role") == "system" else messages
    return [{"role": "system", "content": system}, *rest]


# Keys a conversation file may carry on a message that are ours, not the API's.
LOCAL_KEYS = ("images", "videos", "attach", "fps", "cut")


def to_api_message(message: dict, image_urls: list[str], video_parts: list[dict] = ()) -> dict:
    """A message as the API takes it: `images`/`videos` become content parts after the text."""
    return with_media({k: v for k, v in message.items() if k not in LOCAL_KEYS}, image_urls, video_parts)


def render_conversation(conversation: Conversation, *, as_json: bool = False) -> str:
    """The form `chat -f` reads and `--save` writes: YAML, or JSON for a .json file."""
    data: dict = {}
    if conversation.description:
        data["description"] = conversation.description
    if conversation.vars is not None:
        data["vars"] = conversation.vars
    if conversation.schema is not None:
        data["schema"] = conversation.schema
    if conversation.model:
        data["model"] = conversation.model
    if conversation.system:
        data["system"] = conversation.system
    if conversation.params:
        data["params"] = conversation.params
    if conversation.tools:
        data["tools"] = conversation.tools
    if conversation.tool_choice is not None:
        data["tool_choice"] = conversation.tool_choice
    data["messages"] = [{"role": m["role"], **m} for m in conversation.messages]  # role first
    if as_json:
        return json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    return dump_yaml(data)
