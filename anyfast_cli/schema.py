"""--schema: a SPEC becomes a JSON Schema, and an answer is checked against it (pure).

A SPEC is `@FILE` or a path (it holds a `/` or ends in an extension such as `.json`), whose
JSON Schema is JSON or YAML; a JSON object's text; or a concise field list:
`'title, year int, rating float, tags list: keywords'`, each field `name [type][: description]`,
separated by commas or newlines. A bare word is a field name, never a file. Types: str (the
default), int, float, bool, and lists of them (`list` alone is a list of str; `list[int]`,
`list of int` and `int[]` say of what). Every field is required and no other is allowed,
so the schema a field list makes is accepted by OpenAI's `strict` mode.

A schema is usable or refused before anything is sent (check_schema): every `$ref` resolves
inside it (a remote one is refused, never fetched), none leads back to itself without entering
the answer, every pattern compiles. Checking an answer always ends: it runs against a deadline
(CHECK_SECONDS, or what --max-time leaves), patterns are matched by `regex` (Python's `re`
syntax, but with a timeout, and it lets Ctrl-C and SIGTERM in), and no keyword costs more than
linear time; an answer that cannot be checked in time is code schema_timeout (exit 7).

jsonschema (the reference implementation, Draft 2020-12) is imported only here, and only
when a schema is checked or an answer validated: other commands never load it.
"""

from __future__ import annotations

import functools
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from anyfast_cli.errors import UsageError
from anyfast_cli.structured import _DECODER, ValueProblem, line_of, syntax_error

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
    I/O, bounded and with its own errors); only `@FILE` or a path-like SPEC is read."""
    text = spec.strip()
    if not text:
        raise UsageError("--schema needs a SPEC: a field list ('name, age int'), JSON Schema text, or @FILE")
    if text.startswith("@"):
        return _schema_document(read_text(text[1:]), text[1:])
    if text.startswith("{"):
        return _schema_document(text, "--schema")
    if names_a_file(text):
        return _schema_document(read_text(text), text)
    return fields_schema(text)


EXTENSION = re.compile(r"\.[A-Za-z0-9]+\Z")


def names_a_file(text: str) -> bool:
    """Whether a SPEC is a path: one line with no comma or colon (which a field list of two
    fields, or with a description, has), holding a `/` or ending in an extension. A field
    name has neither, so `--schema name` is the field list it looks like, whatever files
    the current directory holds."""
    return not any(mark in text for mark in ",:\n") and ("/" in text or EXTENSION.search(text) is not None)


def _schema_document(text: str, source: str) -> dict:
    from anyfast_cli.documents import load_json, load_structured

    # JSON is read as JSON: a large schema (a long enum) would take seconds as YAML, past its node limit.
    data = load_json(text, source) if source.lower().endswith(".json") else load_structured(text, source)
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
    """--schema-multi: a list of objects of `schema`, for extraction. Its local $refs ("#",
    "#/$defs/…") are moved to where it now sits, so they mean what they meant."""
    return {
        "type": "object",
        "properties": {MULTI_KEY: {"type": "array", "items": _moved_refs(schema, f"#/properties/{MULTI_KEY}/items")}},
        "required": [MULTI_KEY],
        "additionalProperties": False,
    }


def _moved_refs(node, prefix: str):
    """A copy of schema `node` whose JSON-pointer $refs start at `prefix`. A subschema with
    its own $id is its own base for the refs within it: left as it is."""
    if not isinstance(node, dict) or "$id" in node:
        return node
    moved = dict(node)
    for keyword in REFS:
        ref = node.get(keyword)
        if isinstance(ref, str) and (ref == "#" or ref.startswith("#/")):
            moved[keyword] = prefix + ref[1:]
    for keyword in IN_PLACE_ONE + PARTS_ONE:
        if keyword in node:
            moved[keyword] = _moved_refs(node[keyword], prefix)
    for keyword in IN_PLACE_LIST + PARTS_LIST:
        if isinstance(node.get(keyword), list):
            moved[keyword] = [_moved_refs(sub, prefix) for sub in node[keyword]]
    for keyword in IN_PLACE_MAP + PARTS_MAP:
        if isinstance(node.get(keyword), dict):
            moved[keyword] = {name: _moved_refs(sub, prefix) for name, sub in node[keyword].items()}
    return moved


def check_schema(schema: dict, source: str = "--schema") -> None:
    """An invalid or unusable JSON Schema is a usage error, before anything is sent."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = _path(exc.absolute_path)
        raise UsageError(f"{source}: not a valid JSON Schema: {where}: {exc.message}") from None
    except RecursionError:
        raise UsageError(f"{source}: not a valid JSON Schema: nested too deep") from None
    problem = unusable(schema)
    if problem:
        raise UsageError(f"{source}: {problem}")


# Where Draft 2020-12 keeps subschemas: applied to the same value (IN_PLACE_*), to its parts, or
# not applied at all ($defs). Only the in-place ones can lead a $ref back to itself for ever.
IN_PLACE_ONE = ("not", "if", "then", "else")
IN_PLACE_LIST = ("allOf", "anyOf", "oneOf")
IN_PLACE_MAP = ("dependentSchemas",)
PARTS_ONE = ("additionalProperties", "contains", "items", "propertyNames", "unevaluatedItems", "unevaluatedProperties")
PARTS_LIST = ("prefixItems",)
PARTS_MAP = ("properties", "patternProperties", "$defs", "definitions")
REFS = ("$ref", "$dynamicRef")


def unusable(schema: dict) -> str | None:
    """Why a valid schema cannot be used to check an answer, or None: a $ref that does not
    resolve inside it (remote documents are never fetched), one that leads back to where it
    started without entering the answer (validation would recurse for ever), or a pattern
    that does not compile. Every subschema is looked at, used or not; iterative throughout."""
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    root = DRAFT202012.create_resource(schema)
    seen: dict[int, tuple[object, str]] = {}  # id -> (subschema, its path); holding each keeps its id
    in_place: dict[int, list[int]] = {}  # id -> subschemas applied to the same value
    todo = [(schema, "$", _local_registry().resolver_with_root(root))]
    targets = []  # where $refs lead: walked after the schema itself, so that paths name places in it
    while todo or targets:
        node, path, resolver = (todo or targets).pop()
        if not isinstance(node, dict) or id(node) in seen:
            continue
        seen[id(node)] = (node, path)
        resolver = resolver.in_subresource(DRAFT202012.create_resource(node))  # an $id moves the base
        edges = in_place[id(node)] = []
        for keyword in REFS:
            ref = node.get(keyword)
            if not isinstance(ref, str):
                continue
            try:
                resolved = resolver.lookup(ref)
            except (Unresolvable, LookupError, ValueError, TypeError):
                where = (
                    "it is not in this schema, and remote schemas are not fetched" if _remote(ref) else "no such place"
                )
                return f"{path}: {keyword} {ref!r} cannot be resolved ({where})"
            target = resolved.contents
            if not isinstance(target, (dict, bool)):
                return f"{path}: {keyword} {ref!r} points at something that is not a schema (an object or true/false)"
            edges.append(id(target))
            targets.append((target, ref, resolved.resolver))
        problem = _pattern_problem(node, path)
        if problem:
            return problem
        for keyword, sub, sub_path in _subschemas(node, path):
            if keyword in IN_PLACE_ONE + IN_PLACE_LIST + IN_PLACE_MAP:
                edges.append(id(sub))
            todo.append((sub, sub_path, resolver))
    cycle = _cycle(in_place)
    if cycle:
        trail = " -> ".join(seen[i][1] for i in cycle)
        return f"{trail}: $ref leads back to where it started without going into any part of the answer (checking would never end)"
    return None


def _subschemas(node: dict, path: str):
    for keyword in IN_PLACE_ONE + PARTS_ONE:
        if keyword in node:
            yield keyword, node[keyword], f"{path}.{keyword}"
    for keyword in IN_PLACE_LIST + PARTS_LIST:
        if isinstance(node.get(keyword), list):
            for index, sub in enumerate(node[keyword]):
                yield keyword, sub, f"{path}.{keyword}[{index}]"
    for keyword in IN_PLACE_MAP + PARTS_MAP:
        if isinstance(node.get(keyword), dict):
            for name, sub in node[keyword].items():
                yield keyword, sub, f"{path}.{keyword}{_path([name])[1:]}"


def _remote(ref: str) -> bool:
    return not ref.startswith("#")


def _cycle(edges: dict[int, list[int]]) -> list[int] | None:
    """A cycle in the graph, as its nodes from first to last and the first again, or None
    (an iterative depth-first search: a long chain of $refs must not exhaust the stack)."""
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    for start in edges:
        if start in state:
            continue
        path = [start]
        branches = [iter(edges[start])]
        state[start] = 1
        while branches:
            following = next(branches[-1], None)
            if following is None:
                state[path.pop()] = 2
                branches.pop()
            elif state.get(following) == 1:
                return path[path.index(following) :] + [following]
            elif following not in state and following in edges:
                state[following] = 1
                path.append(following)
                branches.append(iter(edges[following]))
    return None


def _pattern_problem(node: dict, path: str) -> str | None:
    """A pattern (or patternProperties name) that `regex`, which matches them, cannot compile."""
    patterns = [(f"{path}.pattern", node["pattern"])] if isinstance(node.get("pattern"), str) else []
    if isinstance(node.get("patternProperties"), dict):
        patterns += [(f"{path}.patternProperties", name) for name in node["patternProperties"]]
    if not patterns:
        return None
    import regex

    for where, pattern in patterns:
        try:
            regex.compile(pattern)
        except (regex.error, ValueError, OverflowError, RecursionError) as exc:
            return f"{where}: {pattern[:100]!r} is not a regular expression anyfast can use ({exc})"
    return None


def _refuse_to_fetch(uri: str):
    """A $ref to a document outside the schema: never fetched (a schema must not make
    anyfast send a request to whatever URL it names)."""
    from referencing.exceptions import NoSuchResource

    raise NoSuchResource(ref=uri)


@functools.lru_cache(maxsize=None)
def _local_registry():
    """The schemas a $ref may name beyond the schema itself: the JSON Schema meta-schemas
    jsonschema ships (known offline), and nothing to be retrieved."""
    from jsonschema_specifications import REGISTRY
    from referencing import Registry

    return Registry(retrieve=_refuse_to_fetch).combine(REGISTRY)


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
    """The answer is not JSON for the schema. `code` is batch's error code (invalid_json,
    schema_mismatch, schema_timeout, truncated or refused); `message` names the first problems
    with their JSON paths; `answer` is the text that failed (for the repair turn)."""

    def __init__(self, code: str, message: str, errors: list[str]) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.errors = errors
        self.answer = ""  # set by parse_reply


REPAIRABLE = ("invalid_json", "schema_mismatch")  # codes a re-ask may mend
# How long checking one answer may take, --max-time or not. A real answer takes milliseconds
# (a 500 KB one, well past any model's output, well under a second); past this it is a pattern
# that backtracks, or a schema whose alternatives multiply, and the answer is judged uncheckable.
CHECK_SECONDS = 5.0
# An answer that arrives just inside --max-time is still checked: this long, at the least.
CHECK_GRACE = 0.1
MAX_ERROR_CHARS = 300  # of each validation message: jsonschema quotes the whole value, whatever its size


def check_deadline(started: float, max_time: float | None, now: float | None = None) -> float:
    """When checking an answer must end (time.monotonic): CHECK_SECONDS from now, or sooner
    when --max-time, counted from `started` (the request's start), runs out first."""
    now = time.monotonic() if now is None else now
    deadline = now + CHECK_SECONDS
    if max_time is not None:
        deadline = min(deadline, max(started + max_time, now + CHECK_GRACE))
    return deadline


FENCE = re.compile(r"\A\s*```[A-Za-z0-9_-]*[ \t]*\r?\n(.*?)\r?\n?```\s*\Z", re.S)


def parse_answer(text: str, schema: dict, deadline: float | None = None):
    """The answer's JSON value, valid for `schema` (one surrounding ``` fence accepted);
    AnswerMismatch when it is not JSON, holds a number JSON cannot carry (1e400, NaN), is
    not valid, or cannot be checked before `deadline` (time.monotonic; None: CHECK_SECONDS)."""
    fenced = FENCE.match(text)
    body = fenced.group(1) if fenced else text
    value = _answer_value(body)
    errors = validation_errors(value, schema, time.monotonic() + CHECK_SECONDS if deadline is None else deadline)
    if errors:
        shown = "; ".join(errors[:MAX_ERRORS_SHOWN]) + (
            f" (and {len(errors) - MAX_ERRORS_SHOWN} more)" if len(errors) > MAX_ERRORS_SHOWN else ""
        )
        raise AnswerMismatch("schema_mismatch", shown, errors)
    return value


def _answer_value(body: str):
    try:
        return _DECODER.decode(body)  # the STRICT_NUMBERS decoder parse_json uses, made once
    except ValueProblem as exc:  # NaN, 1e400, 5,000 digits: no JSON we can print or pass on
        syntax = syntax_error(body)
        reason = f"{syntax.msg}: line {line_of(body, syntax.pos)} column {syntax.colno}" if syntax else exc.problem
    except json.JSONDecodeError as exc:
        reason = str(exc)
    except RecursionError:
        reason = "nested too deep"
    problem = f"the answer is not JSON: {reason}"
    raise AnswerMismatch("invalid_json", problem, [problem])


class CheckTimeout(Exception):
    """Checking an answer ran past its deadline."""


class _CheckClock(threading.local):
    """The deadline of the check running on this thread (checks run on threads of their own:
    check_reply, and batch's slow ones), read by every keyword check and every pattern match."""

    deadline = math.inf  # none set
    started = 0.0


_check = _CheckClock()


def validation_errors(value, schema: dict, deadline: float = math.inf) -> list[str]:
    """Each problem as `$.path: message`, in a stable order (by path); AnswerMismatch
    (schema_timeout) when the check is still running at `deadline` (time.monotonic)."""
    validator = _validator(schema)
    _check.started, _check.deadline = time.monotonic(), deadline
    try:
        found = sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
    except RecursionError:
        return ["$: nested too deep to check"]
    except CheckTimeout:
        raise timed_out(deadline - _check.started) from None
    finally:
        _check.deadline = math.inf
    return [f"{_path(error.absolute_path)}: {_clip(error.message)}" for error in found]


def timed_out(seconds: float) -> AnswerMismatch:
    return AnswerMismatch(
        "schema_timeout",
        f"the answer could not be checked against the schema in {max(0.0, seconds):.1f} s "
        "(a pattern that backtracks on it, or alternatives that multiply?)",
        [],
    )


def _clip(message: str) -> str:
    """At most MAX_ERROR_CHARS, cut in the middle: the quoted value starts a message, and what
    is wrong with it ends one."""
    if len(message) <= MAX_ERROR_CHARS:
        return message
    half = (MAX_ERROR_CHARS - 1) // 2
    return message[:half] + "…" + message[-half:]


_VALIDATORS: dict[int, tuple[dict, object]] = {}  # id(schema) -> (schema, its validator)
MAX_VALIDATORS = 64  # schemas whose validators are kept (batch: the --schema one, or records' own)


def _validator(schema: dict):
    """The validator of `schema`, built once: batch checks every record's answer with the same
    one. Each entry holds its schema, so its id cannot be reused while it is kept."""
    entry = _VALIDATORS.get(id(schema))
    if entry is None or entry[0] is not schema:
        if len(_VALIDATORS) >= MAX_VALIDATORS:
            _VALIDATORS.clear()
        entry = _VALIDATORS[id(schema)] = (schema, _validator_class()(schema, registry=_local_registry()))
    return entry[1]


@functools.lru_cache(maxsize=None)
def _validator_class():
    """Draft 2020-12, each keyword check first looking at the clock, uniqueItems in linear
    time (jsonschema's compares every pair of objects), multipleOf exact where a float
    cannot hold the value, and patterns matched with `regex`."""
    from jsonschema import Draft202012Validator, validators

    _match_patterns_with_regex()
    checks = dict(Draft202012Validator.VALIDATORS)
    checks["uniqueItems"] = _unique_items
    checks["multipleOf"] = functools.partial(_multiple_of, checks["multipleOf"])
    return validators.extend(Draft202012Validator, {name: _on_time(check) for name, check in checks.items()})


def _on_time(check):
    def checked(validator, value, instance, schema):
        if time.monotonic() > _check.deadline:
            raise CheckTimeout
        return check(validator, value, instance, schema)

    return checked


def _unique_items(validator, unique, instance, schema):
    from jsonschema.exceptions import ValidationError

    if unique and validator.is_type(instance, "array"):
        seen = set()
        for item in instance:
            key = _json_identity(item)
            if key in seen:
                yield ValidationError(f"{_clip(repr(instance))} has non-unique elements")
                return
            seen.add(key)


def _multiple_of(check, validator, step, instance, schema):
    """jsonschema's multipleOf divides as floats first, and an integer past a float's range
    (an answer may hold 4,300 digits) raises OverflowError there: such a one is divided exactly."""
    from fractions import Fraction

    from jsonschema.exceptions import ValidationError

    try:
        yield from check(validator, step, instance, schema)
    except OverflowError:
        if (Fraction(instance) / Fraction(step)).denominator != 1:
            yield ValidationError(f"{_clip(repr(instance))} is not a multiple of {step}")


def _json_identity(value):
    """A hashable key equal for values JSON calls equal: 1 and 1.0 alike, true and 1 not,
    objects whatever their key order."""
    if value is None or isinstance(value, bool):
        return ("literal", value)
    if isinstance(value, (int, float)):
        return ("number", value)  # 1 == 1.0, and Python hashes them alike
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ("array", tuple(_json_identity(item) for item in value))
    if isinstance(value, dict):
        return ("object", frozenset((key, _json_identity(item)) for key, item in value.items()))
    return ("other", id(value))


@functools.lru_cache(maxsize=None)
def _match_patterns_with_regex() -> None:
    """jsonschema matches `pattern` and `patternProperties` (also where additionalProperties
    and unevaluatedProperties consult them) with `re.search`, read from its modules' globals.
    Python's `re` can backtrack for ever on a short answer (`^(a|a)+$`, `^(\\w+\\s?)*$`) and
    lets no signal in while it does; so those globals get an `re` whose search is `regex`'s
    (the same syntax), bounded by the check's deadline, interruptible, and without the GIL
    (batch's event loop keeps running while a thread matches). jsonschema has no hook for
    this yet (python-jsonschema/jsonschema#1142)."""
    import types

    from jsonschema import _keywords, _utils

    bounded = types.ModuleType("re", "re, whose search is bounded by the check's deadline")
    bounded.__dict__.update(vars(re))
    bounded.search = _bounded_search
    _keywords.re = _utils.re = bounded


def _bounded_search(pattern, string, flags=0):
    import regex

    left = _check.deadline - time.monotonic()
    if left <= 0:
        raise CheckTimeout
    try:
        return regex.search(pattern, string, flags, timeout=None if left == math.inf else left, concurrent=True)
    except TimeoutError:
        raise CheckTimeout from None


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
        schema = multi_schema(parse_spec(flags.schema_multi, read_text))
        check_schema(schema, "--schema-multi")  # its refs moved with it: still all resolved
        return schema
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


def answer_choices(data: dict) -> list[tuple[str, str | None, str | None]]:
    """A whole response's choices in index order, each (content text, finish_reason, refusal);
    one empty choice when it has none."""
    choices = data.get("choices")
    choices = [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []
    ordered = sorted(enumerate(choices), key=lambda pair: _choice_index(*pair))
    return [_choice_parts(choice) for _, choice in ordered] or [("", None, None)]


def _choice_index(position: int, choice: dict) -> int:
    index = choice.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else position


def _choice_parts(choice: dict) -> tuple[str, str | None, str | None]:
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
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


def repair_turns(mismatch: AnswerMismatch) -> list[dict]:
    """The re-ask: the wrong answer as an assistant turn, its validation errors as a user turn."""
    problems = "\n".join(f"- {e}" for e in (mismatch.errors or [mismatch.message])[:10])
    return [
        {"role": "assistant", "content": mismatch.answer},
        {
            "role": "user",
            "content": "That answer is not valid for the JSON Schema:\n"
            + problems
            + "\nAnswer again with the corrected JSON only.",
        },
    ]


def parse_reply(data: dict, schema: dict, deadline: float | None = None) -> list[tuple[object, str]]:
    """(value, text) of every choice of a whole response, in choice order, each value valid for
    `schema` (no choice is dropped: with `n` > 1 all must be valid). AnswerMismatch at the first
    that is not, naming it when there are several, with its text in `answer` for the re-ask.
    The check of them all ends by `deadline` (time.monotonic; None: CHECK_SECONDS from now)."""
    choices = answer_choices(data)
    deadline = time.monotonic() + CHECK_SECONDS if deadline is None else deadline
    parsed = []
    for number, (text, finish, refusal) in enumerate(choices):
        try:
            problem = unrepairable(finish, refusal)
            if problem:
                raise problem
            parsed.append((parse_answer(text, schema, deadline), text))
        except AnswerMismatch as mismatch:
            mismatch.answer = text
            if len(choices) > 1:
                mismatch.message = f"choice {number}: {mismatch.message}"
            raise
    return parsed


def check_reply(data: dict, schema: dict, deadline: float) -> list[tuple[object, str]]:
    """parse_reply on a daemon thread, waited for until `deadline` by the wall clock. The
    check's own deadline is enforced from inside (the clock before every keyword, regex's
    timeout), but regex counts CPU time, and a loaded machine gives less of it than the
    wall clock passes; waiting here keeps the bound exact, and keeps the caller (the main
    thread) free to take Ctrl-C and SIGTERM, which only the main thread hears. A thread
    still running when the process ends is ended with it."""
    started = time.monotonic()
    outcome: dict = {}
    finished = threading.Event()

    def check() -> None:
        try:
            outcome["parsed"] = parse_reply(data, schema, deadline)
        except Exception as exc:  # raised below, in the caller
            outcome["error"] = exc
        finished.set()

    threading.Thread(target=check, name="anyfast-check", daemon=True).start()
    if not finished.wait(max(0.0, deadline - time.monotonic())):
        raise timed_out(deadline - started)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["parsed"]
