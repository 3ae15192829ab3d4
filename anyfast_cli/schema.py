"""--schema: a SPEC becomes a JSON Schema, and an answer is checked against it (pure).

A SPEC is `@FILE` or the name of an existing file (JSON Schema as JSON or YAML), a JSON
object's text, or a concise field list: `'title, year int, rating float, tags list: keywords'`,
each field `name [type][: description]`, separated by commas or newlines. Types: str (the
default), int, float, bool, and lists of them (`list` alone is a list of str; `list[int]`,
`list of int` and `int[]` say of what). Every field is required and no other is allowed,
so the schema a field list makes is accepted by OpenAI's `strict` mode.

jsonschema (the reference implementation, Draft 2020-12) is imported only here, and only
when a schema is checked or an answer validated: other commands never load it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from anyfast_cli.errors import UsageError

SCALARS = {
    "str": "string",
    "string": "string",
    "int": "integer",
    "integer": "integer",
    "float": "number",
    "number": "number",
    "bool": "boolean",
    "boolean": "boolean",
}
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*\Z")
MULTI_KEY = "items"  # --schema-multi: the answer is {"items": [...]}
MAX_ERRORS_SHOWN = 3  # validation errors named in the one error line (and in a repair request)


def parse_spec(spec: str, read_text: Callable[[str], str]) -> dict:
    """The JSON Schema a SPEC stands for. `read_text(path)` reads a file (the caller's
    I/O, bounded and with its own errors); a path is tried when the SPEC names one."""
    text = spec.strip()
    if not text:
        raise UsageError("--schema needs a SPEC: a field list ('name, age int'), JSON Schema text, or @FILE")
    if text.startswith("@"):
        return _schema_document(read_text(text[1:]), text[1:])
    if text.startswith("{"):
        return _schema_document(text, "--schema")
    path = _existing_file(text)
    if path:
        return _schema_document(read_text(path), path)
    return fields_schema(text)


def _existing_file(text: str) -> str | None:
    return text if "\n" not in text and os.path.isfile(text) else None


def _schema_document(text: str, source: str) -> dict:
    from anyfast_cli.settings import load_yaml  # YAML is a superset of JSON

    data = load_yaml(text, source, "JSON or YAML")
    if not isinstance(data, dict):
        raise UsageError(f"{source}: a JSON Schema must be an object, not {type(data).__name__}")
    check_schema(data, source)
    return data


def fields_schema(text: str) -> dict:
    """A field list as a strict object schema."""
    properties: dict[str, dict] = {}
    for item in filter(None, (part.strip() for part in re.split(r"[,\n]", text))):
        head, colon, description = item.partition(":")
        words = head.split()
        if not words:
            raise UsageError(f"--schema: field '{item}' has no name")
        name, type_words = words[0], words[1:]
        if not NAME.match(name):
            raise UsageError(f"--schema: '{name}' is not a field name (letters, digits, _ and -)")
        if name in properties:
            raise UsageError(f"--schema: field '{name}' is given twice")
        prop = _field_type(" ".join(type_words), name)
        if colon and description.strip():
            prop["description"] = description.strip()
        properties[name] = prop
    if not properties:
        raise UsageError("--schema: the field list names no field")
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _field_type(words: str, name: str) -> dict:
    words = words.strip().lower()
    if not words:
        return {"type": "string"}
    if words in SCALARS:
        return {"type": SCALARS[words]}
    inner = None
    if words == "list":
        inner = "str"
    elif words.startswith("list of "):
        inner = words[len("list of ") :].strip()
    elif words.startswith("list[") and words.endswith("]"):
        inner = words[5:-1].strip()
    elif words.endswith("[]"):
        inner = words[:-2].strip()
    if inner in SCALARS:
        return {"type": "array", "items": {"type": SCALARS[inner]}}
    known = "str, int, float, bool, or a list of one (list, list[int], list of int, int[])"
    raise UsageError(f"--schema: field '{name}' has unknown type '{words}'", hint=f"types: {known}")


def multi_schema(schema: dict) -> dict:
    """--schema-multi: a list of objects of `schema`, for extraction."""
    return {
        "type": "object",
        "properties": {MULTI_KEY: {"type": "array", "items": schema}},
        "required": [MULTI_KEY],
        "additionalProperties": False,
    }


def check_schema(schema: dict, source: str = "--schema") -> None:
    """An invalid JSON Schema is a usage error, before anything is sent."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = _path(exc.absolute_path)
        raise UsageError(f"{source}: not a valid JSON Schema: {where}: {exc.message}") from None
    except RecursionError:
        raise UsageError(f"{source}: not a valid JSON Schema: nested too deep") from None


def is_strict_compatible(schema) -> bool:
    """Whether OpenAI's strict mode accepts it: every object closes its properties
    (additionalProperties false) and requires all of them."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" or "properties" in schema:
            properties = schema.get("properties") or {}
            if schema.get("additionalProperties") is not False or set(schema.get("required") or ()) != set(properties):
                return False
        return all(is_strict_compatible(value) for value in schema.values())
    if isinstance(schema, list):
        return all(is_strict_compatible(value) for value in schema)
    return True


class AnswerMismatch(Exception):
    """The answer is not JSON for the schema. `code` is batch's error code (invalid_json or
    schema_mismatch); `message` names the first problems with their JSON paths."""

    def __init__(self, code: str, message: str, errors: list[str]) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.errors = errors


FENCE = re.compile(r"\A\s*```[A-Za-z0-9_-]*[ \t]*\r?\n(.*?)\r?\n?```\s*\Z", re.S)


def parse_answer(text: str, schema: dict):
    """The answer's JSON value, valid for `schema` (one surrounding ``` fence accepted);
    AnswerMismatch when it is not JSON, or not valid."""
    fenced = FENCE.match(text)
    body = fenced.group(1) if fenced else text
    try:
        value = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, ValueError) else "nested too deep"
        raise AnswerMismatch(
            "invalid_json", f"the answer is not JSON: {reason}", [f"the answer is not JSON: {reason}"]
        ) from None
    errors = validation_errors(value, schema)
    if errors:
        shown = "; ".join(errors[:MAX_ERRORS_SHOWN]) + (
            f" (and {len(errors) - MAX_ERRORS_SHOWN} more)" if len(errors) > MAX_ERRORS_SHOWN else ""
        )
        raise AnswerMismatch("schema_mismatch", shown, errors)
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def validation_errors(value, schema: dict) -> list[str]:
    """Each problem as `$.path: message`, in a stable order (by path)."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema)
    try:
        found = sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
    except RecursionError:
        return ["$: nested too deep to check"]
    return [f"{_path(error.absolute_path)}: {error.message}" for error in found]


def _path(parts) -> str:
    text = "$"
    for part in parts:
        text += (
            f"[{part}]" if isinstance(part, int) else (f".{part}" if NAME.match(str(part)) else f"[{json.dumps(part)}]")
        )
    return text


def render_schema(schema: dict) -> str:
    return json.dumps(schema, ensure_ascii=False, indent=2)


# --- the request side: flags, response_format and its step-downs, repair turns (pure) ------------

MODES = ("json_schema", "json_object", "prompt")  # auto tries them in this order, on each 400
MODE_CHOICES = ("auto", *MODES)
DEFAULT_REPAIR = 1
MAX_REPAIR = 10
SCHEMA_NAME = "answer"
NOT_REPAIRED = {"length": "truncated", "content_filter": "refused"}  # finish_reason -> error code


@dataclass(frozen=True)
class SchemaFlags:
    """--schema and its companions as the user gave them; None means not given."""

    schema: str | None = None
    schema_multi: str | None = None
    schema_mode: str | None = None
    repair: int | None = None


def check_mode(mode: str | None, source: str = "--schema-mode") -> str:
    mode = mode or "auto"
    if mode not in MODE_CHOICES:
        raise UsageError(f"{source} must be one of {', '.join(MODE_CHOICES)}, got {mode!r}")
    return mode


def mode_ladder(mode: str) -> tuple[str, ...]:
    """The modes to try, in order: all three for auto, else the one pinned."""
    return MODES if mode == "auto" else (mode,)


def load_schema(flags: SchemaFlags, read_text: Callable[[str], str]) -> dict | None:
    """The schema --schema/--schema-multi ask for (None without either); exit 2 when bad."""
    if flags.schema is not None and flags.schema_multi is not None:
        raise UsageError("give --schema or --schema-multi, not both")
    if flags.repair is not None and not 0 <= flags.repair <= MAX_REPAIR:
        raise UsageError(f"--repair must be from 0 to {MAX_REPAIR}, got {flags.repair}")
    check_mode(flags.schema_mode)
    if flags.schema_multi is not None:
        return multi_schema(parse_spec(flags.schema_multi, read_text))
    if flags.schema is not None:
        return parse_spec(flags.schema, read_text)
    if flags.schema_mode is not None or flags.repair is not None:
        raise UsageError("--schema-mode and --repair need --schema (or --schema-multi)")
    return None


def schema_instruction(schema: dict) -> str:
    return (
        "Answer with one JSON value only (no prose, no code fence) that is valid for this JSON Schema:\n"
        + json.dumps(schema, ensure_ascii=False)
    )


def apply_mode(body: dict, schema: dict, mode: str) -> dict:
    """The request body asking for JSON in `mode`: json_schema (strict when the schema allows),
    json_object with the schema in a system message, or the schema in the prompt alone."""
    body = {k: v for k, v in body.items() if k != "response_format"}
    messages = list(body["messages"])
    if mode == "json_schema":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": is_strict_compatible(schema)},
        }
    elif mode == "json_object":
        body["response_format"] = {"type": "json_object"}
        messages.insert(_after_system(messages), {"role": "system", "content": schema_instruction(schema)})
    else:  # prompt: the schema after the last user turn's text, nothing else asked of the server
        messages.append({"role": "user", "content": schema_instruction(schema)})
    body["messages"] = messages
    return body


def _after_system(messages: list) -> int:
    index = 0
    while index < len(messages) and messages[index].get("role") == "system":
        index += 1
    return index


def step_down_note(mode: str, next_mode: str, model, detail: str) -> str:
    how = {"json_object": "json_object with the schema in a system message", "prompt": "the schema in the prompt alone"}
    return f"{model}: the server refused response_format {mode} ({detail}); asking for {how[next_mode]}"


def answer_parts(data: dict) -> tuple[str, str | None, str | None]:
    """A whole response's first choice: (content text, finish_reason, refusal)."""
    choices = data.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    refusal = message.get("refusal")
    finish = choice.get("finish_reason")
    return (
        content if isinstance(content, str) else "",
        finish if isinstance(finish, str) else None,
        refusal if isinstance(refusal, str) and refusal else None,
    )


def unrepairable(finish: str | None, refusal: str | None) -> AnswerMismatch | None:
    """An answer cut short by the token limit, filtered or refused: not re-asked."""
    if refusal:
        return AnswerMismatch("refused", f"the model refused: {refusal[:200]}", [])
    code = NOT_REPAIRED.get(finish or "")
    if code == "truncated":
        return AnswerMismatch(code, "the answer was cut off at the token limit (finish_reason: length)", [])
    if code == "refused":
        return AnswerMismatch(code, "the answer was filtered (finish_reason: content_filter)", [])
    return None


def repair_turns(answer: str, mismatch: AnswerMismatch) -> list[dict]:
    """The re-ask: the wrong answer as an assistant turn, its validation errors as a user turn."""
    problems = "\n".join(f"- {e}" for e in (mismatch.errors or [mismatch.message])[:10])
    return [
        {"role": "assistant", "content": answer},
        {
            "role": "user",
            "content": "That answer is not valid for the JSON Schema:\n"
            + problems
            + "\nAnswer again with the corrected JSON only.",
        },
    ]


def parse_reply(data: dict, schema: dict):
    """(value, text) of a whole response valid for `schema`; AnswerMismatch otherwise."""
    text, finish, refusal = answer_parts(data)
    problem = unrepairable(finish, refusal)
    if problem:
        raise problem
    return parse_answer(text, schema), text
