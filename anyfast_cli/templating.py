"""A prompt file as a template (pure): its placeholders found, `--var` values read, the
conversation rendered.

A conversation file is a prompt file only when it has a `vars:` key (inputs.Conversation.
is_template); then `system` and the system, developer and user messages are templates of
template.py's rules. Assistant and tool messages are never rendered, nor are `params`, `model`
or attachments: a reply saved with --save holds whatever braces the model wrote. Values are
inserted once, as they are. A placeholder without a value, and a `--var` that nothing uses, are
errors: a typo must not send a prompt with a hole in it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from anyfast_cli.documents import value_span
from anyfast_cli.errors import UsageError
from anyfast_cli.inputs import INPUT_VAR, Conversation
from anyfast_cli.reading import MIB
from anyfast_cli.template import NAME, RULES, MissingValue, Template, TemplateSyntaxError, parse_template

RENDERED_ROLES = ("system", "developer", "user")
# The text a rendered conversation may hold, in characters: a 16 MiB --var file used twice fits;
# `{x}` written a thousand times with such a value (16 GB) is refused before it is built.
# The same bound as one batch line (batch/jobs.py LINE_MAX_BYTES).
RENDERED_MAX_CHARS = 32 * MIB


@dataclass(frozen=True)
class Slot:
    """One text of the file that is a template: `("system",)`, `(message,)` for a message's
    string content, or `(message, part)` for a text part of a list of parts."""

    where: tuple
    template: Template


@dataclass(frozen=True)
class PromptTemplate:
    conversation: Conversation  # as the file holds it (local paths made absolute)
    source: str  # how errors name the file
    slots: tuple[Slot, ...]

    @functools.cached_property  # these are asked for each batch record: worked out once
    def names(self) -> frozenset[str]:
        return frozenset(name for slot in self.slots for name in slot.template.names)

    @functools.cached_property
    def defaults(self) -> dict[str, str]:
        return {name: value for name, value in (self.conversation.vars or {}).items() if value is not None}

    @functools.cached_property
    def uses_input(self) -> bool:
        return INPUT_VAR in self.names

    @property
    def input_message(self) -> int | None:
        """The index of the last user message holding {input}: attachments join it."""
        found = [
            slot.where[0]
            for slot in self.slots
            if slot.where[0] != "system"
            and INPUT_VAR in slot.template.names
            and self.conversation.messages[slot.where[0]]["role"] == "user"
        ]
        return max(found) if found else None


def compile_template(conversation: Conversation, source: str, text: str = "") -> PromptTemplate:
    """The templates of a prompt file; a placeholder error names the file and the line (found
    in `text`, the file as read)."""
    slots = []
    for where, value in _template_texts(conversation):
        try:
            slots.append(Slot(where, parse_template(value)))
        except TemplateSyntaxError as exc:
            line = _line_of(text, where, value, exc.token)
            place = f"{source}:{line}" if line else source
            raise UsageError(
                f"{place}: {exc.describe()} ({_describe_place(where)}); {RULES}",
                hint="write {{ and }} for literal braces",
            ) from None
    return PromptTemplate(conversation, source, tuple(slots))


def _template_texts(conversation: Conversation) -> Iterable[tuple[tuple, str]]:
    if conversation.system is not None:
        yield ("system",), conversation.system
    for index, message in enumerate(conversation.messages):
        if message.get("role") not in RENDERED_ROLES:
            continue
        content = message.get("content")
        if isinstance(content, str):
            yield (index,), content
        elif isinstance(content, list):
            for part_index, part in enumerate(content):
                if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                    yield (index, part_index), part["text"]


def _describe_place(where: tuple) -> str:
    if where == ("system",):
        return "in system"
    return f"in message {where[0] + 1}" + (f", part {where[1] + 1}" if len(where) > 1 else "")


def _line_of(text: str, where: tuple, value: str, token: str) -> int | None:
    """The file's line that holds `token` inside the value at `where`: the value is found in the
    document (either form a message may take), then the token inside it."""
    if not text:
        return None
    for path in _document_paths(where):
        span = value_span(text, path)
        if span is None:
            continue
        start, end = span
        found = text.find(token, start, end)
        return text.count("\n", 0, found if found != -1 else start) + 1
    return None


def _document_paths(where: tuple) -> Iterable[tuple]:
    if where == ("system",):
        yield ("system",)
        return
    index, *part = where
    tail = ("content", part[0], "text") if part else None
    for prefix in (("messages", index), (index,)):  # the mapping form, or a bare list of messages
        if tail:
            yield (*prefix, *tail)
            continue
        yield (*prefix, "content")
        for role in RENDERED_ROLES:  # the shorthand {user: text}
            yield (*prefix, role)


# --- values ------------------------------------------------------------------------------------


def parse_var(text: str, read_text: Callable[[str], str]) -> tuple[str, str]:
    """--var NAME=VALUE, or NAME=@FILE (the file's text, read by the caller's `read_text`)."""
    name, eq, value = text.partition("=")
    name = name.strip()
    if not eq or not name:
        raise UsageError(f"--var expects NAME=VALUE or NAME=@FILE, got {text[:60]!r}")
    if not NAME.fullmatch(name):
        raise UsageError(f"--var {name[:60]!r}: not a placeholder name (letters, digits, _ and -)")
    if name == INPUT_VAR:
        raise UsageError("--var input: {input} is the prompt; give it as arguments or on standard input")
    if value.startswith("@"):
        value = read_text(value[1:])
    return name, value


def read_vars(texts: Iterable[str], read_text: Callable[[str], str]) -> dict[str, str]:
    """Every --var, in order (a later one for the same name wins, as with -p)."""
    return dict(parse_var(text, read_text) for text in texts)


def prompt_file_values(
    conversation: Conversation, path: str | None, text: str, variables: Iterable[str], read_text: Callable[[str], str]
) -> tuple[PromptTemplate | None, dict[str, str]]:
    """A prompt file's template and the values it starts from: its vars: defaults, then --var
    (each must name a placeholder). (None, {}) for a file without vars:, which takes no --var."""
    source = "standard input" if path == "-" else (path or "the conversation")
    if not conversation.is_template:
        if variables:
            raise UsageError(
                f"--var: {source} is not a prompt file (it has no vars:), so it has no placeholders",
                hint="add a vars: mapping (an empty one is fine) to make it a template",
            )
        return None, {}
    template = compile_template(conversation, source, text)
    given = read_vars(variables, read_text)
    check_used(template, given)
    return template, {**template.defaults, **given}


def check_used(template: PromptTemplate, given: Mapping[str, str], what: str = "--var") -> None:
    """A value that no placeholder takes is a typo until shown otherwise."""
    unused = [name for name in given if name not in template.names]
    if unused:
        known = ", ".join(sorted(template.names)) or "none"
        raise UsageError(
            f"{what} {unused[0]}: {template.source} has no {{{unused[0]}}} placeholder (its placeholders: {known})"
        )


def render(template: PromptTemplate, values: Mapping[str, str]) -> Conversation:
    """The conversation with every placeholder filled: a prompt file no longer (no vars, no
    description, no schema: --save writes what was sent). MissingValue for a placeholder
    without a value; UsageError past RENDERED_MAX_CHARS."""
    size = 0
    for slot in template.slots:
        for name in slot.template.names:
            if name not in values:
                raise MissingValue(name)
        size += slot.template.size(values)
    if size > RENDERED_MAX_CHARS:
        raise UsageError(
            f"{template.source}: the rendered prompt is {size:,} characters, over the limit of {RENDERED_MAX_CHARS:,}"
        )
    conversation = template.conversation
    messages = list(conversation.messages)
    system = conversation.system
    for slot in template.slots:
        text = slot.template.fill(values)
        if slot.where == ("system",):
            system = text
            continue
        index, *part = slot.where
        message = dict(messages[index])
        if part:
            parts = list(message["content"])
            parts[part[0]] = {**parts[part[0]], "text": text}
            message["content"] = parts
        else:
            message["content"] = text
        messages[index] = message
    return dataclasses.replace(conversation, messages=messages, system=system, vars=None, description=None, schema=None)


def render_or_explain(template: PromptTemplate, values: Mapping[str, str]) -> Conversation:
    """render(), with a placeholder left without a value as the one error line (exit 2)."""
    try:
        return render(template, values)
    except MissingValue as missing:
        if missing.name == INPUT_VAR:
            raise UsageError(
                f"{template.source} uses {{input}}, and no prompt was given",
                hint="give the prompt as arguments or on standard input",
            ) from None
        raise UsageError(
            f"{template.source}: no value for {{{missing.name}}}",
            hint=f"give it with --var {missing.name}=VALUE (or --var {missing.name}=@FILE), or a default under vars:",
        ) from None
