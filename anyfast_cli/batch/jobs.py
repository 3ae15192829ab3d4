"""Batch input lines -> request bodies (pure: lines in, records and errors out).

A line is a JSON string (a prompt), {"prompt", "system"?}, {"messages"}, or an
OpenAI Batch line {"custom_id", "method", "url", "body"}; with --lines it is plain
text. Body fields on a record override the command's settings for that record.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from anyfast_cli.attachments import with_attachments
from anyfast_cli.errors import UsageError, one_line
from anyfast_cli.inputs import INPUT_VAR, Conversation, parse_messages, to_api_message, with_system
from anyfast_cli.reading import CHUNK_BYTES, MIB, size_text
from anyfast_cli.request import BODY_FIELDS, build_body, check_fields, user_message, with_media
from anyfast_cli.settings import K8S_INDEX_VAR, SHARD_SCHEDULERS, SLURM_ARRAY_VARS
from anyfast_cli.structured import JsonSyntaxError, ValueProblem, check_value, json_writer, parse_json, text_problem
from anyfast_cli.template import RULES, MissingValue, Template, TemplateSyntaxError
from anyfast_cli.template import parse_template as parse_engine_template
from anyfast_cli.templating import PromptTemplate, render
from anyfast_cli.text import parse_whole

BATCH_URL = "/v1/chat/completions"
MAX_REPORTED_ERRORS = 20
# One input line, and so one record's request. A request with two images at the gateway's
# 10 MiB limit, base64-encoded (13.4 MiB each), fits; a line needs a few times its size while
# it is parsed, so the lines in flight stay well inside batch's memory bound. `< /dev/zero`
# (one endless line) stops here. A prompt made by --template is bounded by the same number.
LINE_MAX_BYTES = 32 * MIB


@dataclass(frozen=True)
class PromptFileJob:
    """batch -f: the file every record is rendered through. Its attachments are read once, by
    the command, into `media`: for each of its messages, (image URLs, video parts, -a-style
    attachments)."""

    conversation: Conversation  # the file's, --system applied
    template: PromptTemplate | None = None  # None: a conversation file without vars:, sent as it is
    defaults: Mapping = field(default_factory=dict)  # the file's vars: defaults, then --var
    media: tuple = ()


@dataclass(frozen=True)
class JobOptions:
    model: str
    fields: dict = field(default_factory=dict)  # defaults for every record: profile, flags
    system: str | None = None
    template: str | None = None
    plain_lines: bool = False  # --lines
    image_urls: tuple = ()
    video_parts: tuple = ()
    schema: dict | None = None  # --schema: every record's answer is checked against it
    prompt_file: PromptFileJob | None = None  # -f

    def __post_init__(self) -> None:
        # Checked once here, so that a record's body, made of these and of its line's own
        # values (checked as the line is parsed), needs no check of its own.
        try:
            check_value([self.model, self.fields, self.system, self.image_urls, self.video_parts, self.schema])
        except ValueProblem as exc:
            raise UsageError(f"the request cannot be sent: {exc.problem}") from None


@dataclass
class Record:
    index: int  # 0-based among the input's records (blank lines are not records)
    line_no: int
    id: str
    body: dict
    fingerprint: str = ""  # of id, body and schema: --resume keeps an answer only for the same request
    schema: dict | None = None  # --schema, or the record's own `schema`: the answer must be valid for it


_CANONICAL = json_writer(sort_keys=True)


def fingerprint(record_id: str, body: dict, schema: dict | None = None) -> str:
    """16 hex digits naming this exact request, so a changed input line is not taken as answered."""
    parts = [record_id, body] if schema is None else [record_id, body, schema]
    return hashlib.blake2b(_CANONICAL(parts).encode("utf-8"), digest_size=8).hexdigest()


def line_digest(raw: bytes) -> int:
    """8 bytes naming an input line exactly, as a number (an array of them costs 8 bytes a line)."""
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little")


class RecordError(ValueError):
    pass


@dataclass(frozen=True)
class Shard:
    """--shard K/N: records whose index i has i mod N = K-1."""

    k: int
    n: int

    def __contains__(self, index: int) -> bool:
        return index % self.n == self.k - 1


def parse_shard(text: str | None, env: Mapping[str, str] | None = None) -> tuple[Shard | None, str | None]:
    """--shard K/N, or `auto` (`auto/N`) read from the scheduler that started us; the shard and,
    for auto, where it came from (for -v)."""
    if text is None:
        return None, None
    head, slash, count = text.partition("/")
    k, n = parse_whole(head), parse_whole(count)
    if head == "auto":
        if slash and not (n is not None and n >= 1):
            raise UsageError(f"--shard auto/N expects a count N ≥ 1, got {_shown(text)}")
        return shard_from_scheduler(env or {}, n if slash else None)
    if not slash or k is None or n is None or not 1 <= k <= n:
        raise UsageError(f"--shard expects K/N with 1 ≤ K ≤ N, or auto, got {_shown(text)}")
    return Shard(k, n), None


def shard_from_scheduler(env: Mapping[str, str], count: int | None) -> tuple[Shard, str]:
    """K/N from CI parallel jobs (GitLab, CircleCI, Buildkite), a Slurm job array (stepped
    arrays too: K = (ID - MIN) / STEP + 1) or a Kubernetes Indexed Job (N from auto/N)."""
    found = None
    half_set = []  # (index variable set, count variable missing): named if nothing else is found
    for name, index_var, count_var, from_one in SHARD_SCHEDULERS:
        if env.get(index_var) is None:
            continue
        if env.get(count_var) is None:
            half_set.append((index_var, count_var))
            continue
        index, total = _whole(env, index_var), _whole(env, count_var)
        found = (index if from_one else index + 1, total, f"{name} ({index_var}={index}, {count_var}={total})")
        break
    task = SLURM_ARRAY_VARS[0]
    if found is None and env.get(task) is not None:
        found = _slurm_array_task(env)
    if found is None and env.get(K8S_INDEX_VAR) is not None:
        if count is None:
            raise UsageError(
                f"--shard auto: {K8S_INDEX_VAR} is set, but Kubernetes does not say how many jobs there are",
                hint="give the count: --shard auto/N (the Job's completions)",
            )
        index = _whole(env, K8S_INDEX_VAR)
        found = (index + 1, count, f"a Kubernetes Indexed Job ({K8S_INDEX_VAR}={index})")
    if found is None and half_set:
        index_var, count_var = half_set[0]
        raise UsageError(
            f"--shard auto: {index_var} is set, but {count_var} (how many jobs there are) is not",
            hint="give the shard yourself: --shard K/N",
        )
    if found is None:
        names = ", ".join([v for _, v, _, _ in SHARD_SCHEDULERS] + [task, K8S_INDEX_VAR])
        raise UsageError(
            f"--shard auto: no scheduler says which job this is (none of {names} is set)",
            hint="give the shard yourself: --shard K/N",
        )
    k, n, origin = found
    if count is not None and count != n:
        raise UsageError(f"--shard auto/{count}: {origin} says there are {n} jobs")
    if not 1 <= k <= n:
        raise UsageError(f"--shard auto: {origin} gives job {k} of {n}")
    return Shard(k, n), origin


def _slurm_array_task(env: Mapping[str, str]) -> tuple[int, int, str]:
    """K, N and where they came from, for a Slurm array task. The array's indexes are MIN,
    MIN+STEP, ..., MAX, COUNT of them; one of these missing is worked out from the others,
    never assumed (a MIN taken as 0 would shift a 1-based array by one: job 1 never runs).
    Only STEP has a default, 1, as `--array=A-B` has. Arrays that are not evenly spaced
    (`--array=1,2,5`) cannot be split so and are refused."""
    task, low, high, step_var, count_var = SLURM_ARRAY_VARS
    index = _whole(env, task)
    first, last, step, count = (
        _whole(env, name) if env.get(name) is not None else None for name in SLURM_ARRAY_VARS[1:]
    )
    for name, value in ((step_var, step), (count_var, count)):
        if value is not None and value < 1:
            raise UsageError(f"--shard auto: {name}={value} is not a whole number ≥ 1")
    worked_out = []
    if step is None:
        step = 1
        if first is not None and last is not None and count is not None and count > 1:
            step = max((last - first) // (count - 1), 1)  # checked against the others below
            worked_out.append(step_var)
    if count is None:
        if first is None or last is None:
            raise UsageError(
                f"--shard auto: {task} is set, but {count_var} (how many jobs there are) is not",
                hint="give the shard yourself: --shard K/N",
            )
        count = (last - first) // step + 1
        worked_out.append(count_var)
    if first is None:
        if last is None:
            raise UsageError(
                f"--shard auto: {task} is set, but neither {low} nor {high}, so where the array starts is unknown",
                hint="give the shard yourself: --shard K/N",
            )
        first = last - (count - 1) * step
        worked_out.append(low)
    values = f"{task}={index}, {low}={first}" + (f", {high}={last}" if last is not None else "")
    values += f", {step_var}={step}, {count_var}={count}"
    if worked_out:
        values += f"; {' and '.join(worked_out)} worked out from the others"
    if count < 1 or (last is not None and last != first + (count - 1) * step):
        raise UsageError(
            f"--shard auto: the Slurm array's indexes are not evenly spaced ({values})",
            hint="submit it as --array=MIN-MAX[:STEP], or give the shard yourself: --shard K/N",
        )
    if (index - first) % step:
        raise UsageError(f"--shard auto: {task}={index} is not on the array's steps ({low}={first}, {step_var}={step})")
    return (index - first) // step + 1, count, f"a Slurm job array ({values})"


def _whole(env: Mapping[str, str], name: str) -> int:
    number = parse_whole((env.get(name) or "").strip())
    if number is None:
        raise UsageError(f"--shard auto: {name}={_shown(env.get(name))} is not a whole number")
    return number


def _shown(value) -> str:
    """A value as an error shows it: quoted, and cut short (one may hold thousands of digits)."""
    return one_line(repr(value), 60)


# --- --template: plain substitution (template.py, the engine prompt files share) -------------

TEMPLATE_RULES = f"{RULES} (a field of the record; {{text}} for a plain line)"


def parse_template(template: str) -> Template:
    """--template as a Template; UsageError naming the character for anything else in braces."""
    problem = text_problem(template)
    if problem:
        raise UsageError(f"--template {problem}")
    try:
        return parse_engine_template(template)
    except TemplateSyntaxError as exc:
        where = f"at character {exc.offset + 1}"
        raise UsageError(f"--template: {exc.describe('field', where)}; {TEMPLATE_RULES}") from None


def check_template(template: str | None) -> None:
    if template is None:
        return
    if not parse_template(template).names:
        raise UsageError("--template has no {field}; every record would get the same prompt")


def template_values(names, data: Mapping, what: str = "--template") -> dict[str, str]:
    """The record's fields that `names` use, as text (text as it is, anything else as JSON)."""
    values: dict[str, str] = {}
    for name in names:
        if name not in data:
            raise RecordError(f"{what} needs field {name!r}, which this record lacks")
        value = data[name]
        values[name] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return values


def fill_template(template: str, data: Mapping) -> str:
    """The prompt: each {name} replaced by that field (text as it is, anything else as JSON)."""
    parsed = parse_template(template)
    values = template_values(parsed.names, data)
    size = parsed.size(values)
    if size > LINE_MAX_BYTES:
        raise RecordError(f"the prompt --template makes is {size:,} characters, over the limit of {LINE_MAX_BYTES:,}")
    return parsed.fill(values)


def parse_record(raw: bytes, line_no: int, index: int, options: JobOptions, *, check: bool = True) -> Record:
    """One input line -> Record; a RecordError says what is wrong with it.

    `check=False` is for a line known to be byte for byte one that was checked (batch's second
    pass): the checks of its values (NaN, surrogates, depth, ranges, a record's own schema) and
    its fingerprint, which cost more than building the record, are left to that first time."""
    record, data = _parse_record(raw, line_no, index, options, check)
    own = data.get("schema") if isinstance(data, dict) and not options.plain_lines else None
    record.schema = record_schema(own, check) if own is not None else options.schema
    if check:
        record.fingerprint = fingerprint(record.id, record.body, record.schema)
    return record


def record_schema(value, check: bool = True) -> dict:
    """A record's own `schema`: a JSON Schema object, or a field list ('name, age int').
    Records that carry the same schema share one checked object (and so one validator), so
    each distinct schema is checked once. `check=False` (a line checked before, byte for byte)
    leaves check_schema out even for a schema no longer remembered."""
    from anyfast_cli.schema import check_schema, fields_schema

    if not isinstance(value, (dict, str)):
        raise RecordError("'schema' must be a JSON Schema object or a field list string")
    key = value if isinstance(value, str) else _CANONICAL(value)
    known = _RECORD_SCHEMAS.get(key)
    if known is not None:
        return known
    try:
        if isinstance(value, dict):
            if check:
                check_schema(value, "'schema'")
            schema = value
        else:
            schema = fields_schema(value)
    except UsageError as exc:
        raise RecordError(exc.message.replace("--schema: ", "'schema': ")) from None
    if len(_RECORD_SCHEMAS) >= MAX_RECORD_SCHEMAS:
        _RECORD_SCHEMAS.clear()
    _RECORD_SCHEMAS[key] = schema
    return schema


_RECORD_SCHEMAS: dict[str, dict] = {}  # a record's schema (its text, keys sorted) -> the schema, checked
MAX_RECORD_SCHEMAS = 64


def _parse_record(raw: bytes, line_no: int, index: int, options: JobOptions, check: bool) -> tuple[Record, object]:
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
        if line_no == 1:
            text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    except UnicodeDecodeError:
        raise RecordError("not valid UTF-8") from None
    if options.plain_lines:
        if options.prompt_file is not None:
            messages = _rendered_messages(None, text, options)
        else:
            messages = _prompt_messages({"text": text}, text, options)
        return _record(str(line_no), line_no, index, messages, {}, options, check), None
    try:
        data = parse_json(text, check=check)  # refuses NaN and Infinity (json.loads would send them), deep nesting, …
    except JsonSyntaxError as exc:
        raise RecordError(f"not valid JSON: {exc.msg}, column {exc.colno}") from None
    except ValueProblem as exc:
        raise RecordError(exc.describe()) from None
    if isinstance(data, str):
        messages = (
            _rendered_messages(None, data, options)
            if options.prompt_file is not None
            else _prompt_messages({"text": data}, data, options)
        )
        return _record(str(line_no), line_no, index, messages, {}, options, check), data
    if not isinstance(data, dict):
        raise RecordError("expected a JSON string or object")
    record_id = _record_id(data, line_no)
    if options.prompt_file is not None:
        return _prompt_file_record(data, record_id, line_no, index, options, check), data
    if "body" in data and "custom_id" in data:
        return _openai_batch_record(data, record_id, line_no, index, options, check), data
    overrides = {k: v for k, v in data.items() if k in BODY_FIELDS}
    if options.template is not None:
        messages = _prompt_messages(data, None, options)
        if "system" in data:
            messages = with_system(messages, _string(data, "system"))
    elif "messages" in data:
        messages = _messages(data["messages"])
    elif "prompt" in data:
        if "images" in data:
            raise RecordError("'images' is not supported in batch records; use image_url content parts")
        messages = _prompt_messages(
            data, _string(data, "prompt"), options
        )  # refuses an empty prompt, as for a string line
        if "system" in data:
            messages = with_system(messages, _string(data, "system"))
    else:
        raise RecordError("an object needs 'prompt', 'messages', or custom_id+body (or use --template)")
    return _record(record_id, line_no, index, messages, overrides, options, check), data


def _prompt_file_record(
    data: dict, record_id: str, line_no: int, index: int, options: JobOptions, check: bool
) -> Record:
    """-f: the record's fields fill the file's placeholders; its `prompt` is {input}."""
    if "messages" in data or "body" in data:
        raise RecordError("with -f, a record gives fields for the prompt file, not its own 'messages' or 'body'")
    prompt = _string(data, "prompt") if "prompt" in data else None
    messages = _rendered_messages(data, prompt, options)
    if "system" in data:
        messages = with_system(messages, _string(data, "system"))
    overrides = {k: v for k, v in data.items() if k in BODY_FIELDS}
    return _record(record_id, line_no, index, messages, overrides, options, check)


def _rendered_messages(data: dict | None, prompt: str | None, options: JobOptions) -> list[dict]:
    """The prompt file rendered for one record: defaults and --var under the record's fields,
    the prompt in {input} (or, in a file without it, a user message of its own after the
    file's); -i/--video join the last user message."""
    job = options.prompt_file
    conversation = job.conversation
    if prompt is not None and not prompt.strip():
        raise RecordError("the prompt is empty")
    if job.template is not None:
        used = [name for name in job.template.names if name != INPUT_VAR and data is not None and name in data]
        values = {**job.defaults, **template_values(used, data or {})}
        if prompt is not None and job.template.uses_input:
            values[INPUT_VAR] = prompt
            prompt = None
        try:
            conversation = render(job.template, values)
        except MissingValue as missing:
            if missing.name == INPUT_VAR:
                raise RecordError("the prompt file uses {input}, and this record has no prompt") from None
            raise RecordError(
                f"no value for {{{missing.name}}}: not a field of this record, a --var, or a default in vars:"
            ) from None
        except UsageError as exc:
            raise RecordError(exc.message) from None
    messages = [
        with_attachments(to_api_message(message, images, videos), attached, message.get("fps"))
        for message, (images, videos, attached) in zip(conversation.messages, job.media)
    ]
    if prompt is not None:
        messages.append({"role": "user", "content": prompt})
    if options.image_urls or options.video_parts:
        last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
        if last is None:
            raise RecordError("-i/--image and --video need a user message to attach to")
        messages[last] = with_media(messages[last], list(options.image_urls), list(options.video_parts))
    return with_system(messages, conversation.system)


def _openai_batch_record(
    data: dict, record_id: str, line_no: int, index: int, options: JobOptions, check: bool
) -> Record:
    body = data["body"]
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
        raise RecordError("'body' must be a request body with a non-empty 'messages' list")
    if data.get("method", "POST") != "POST" or not str(data.get("url", BATCH_URL)).endswith("/chat/completions"):
        raise RecordError("only POST /v1/chat/completions lines are supported")
    overrides = {k: v for k, v in body.items() if k not in ("messages", "stream", "stream_options")}
    return _record(record_id, line_no, index, _messages(body["messages"]), overrides, options, check)


def _messages(items) -> list[dict]:
    """A record's messages, checked as a conversation file's are (local attachments excepted)."""
    try:
        messages = parse_messages(items, "record")
    except UsageError as exc:
        raise RecordError(exc.message.removeprefix("record: ")) from None
    if any("images" in m or "videos" in m for m in messages):
        raise RecordError("'images' is not supported in batch records; use image_url content parts")
    return messages


def _record(
    record_id: str, line_no: int, index: int, messages: list, overrides: dict, options: JobOptions, check: bool = True
) -> Record:
    model = overrides.pop("model", None) or options.model
    if not isinstance(model, str):
        raise RecordError("'model' must be a string")
    fields = {**options.fields, **overrides}
    if options.system is not None and not any(m.get("role") == "system" for m in messages):
        messages = with_system(messages, options.system)
    try:
        if check:
            check_fields(fields, model)
        # Its values were checked already, the line's as it was parsed, the options' once; a body
        # rendered through a prompt file (-f) holds the file's text too, so it is checked whole,
        # the first time its line is read (the second pass rebuilds the same bytes).
        body = build_body(model, messages, fields, stream=False, check=check and options.prompt_file is not None)
    except UsageError as exc:
        raise RecordError(exc.message) from None
    return Record(index, line_no, record_id, body)


def _prompt_messages(data: dict, prompt: str | None, options: JobOptions) -> list[dict]:
    if options.template is not None:
        prompt = fill_template(options.template, data)
    if not prompt or not prompt.strip():
        raise RecordError("the prompt is empty")
    return [user_message(prompt, list(options.image_urls), list(options.video_parts))]


def _record_id(data: dict, line_no: int) -> str:
    for key in ("custom_id", "id"):
        value = data.get(key)
        if value is not None:
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                raise RecordError(f"'{key}' must be a string or a number")
            return str(value)
    return str(line_no)


def _string(data: dict, key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise RecordError(f"'{key}' must be a string")
    return value


def read_lines(handle: BinaryIO, source: str = "the input") -> Iterator[bytes]:
    """The lines of a binary file, each read with a bound: a line past LINE_MAX_BYTES
    (`< /dev/zero`, a huge file without a newline) is a UsageError naming it, read no further."""
    line_no = 0
    while True:
        line = handle.readline(LINE_MAX_BYTES + 1)
        if not line:
            return
        line_no += 1
        if len(line) - line.endswith(b"\n") > LINE_MAX_BYTES:
            raise UsageError(f"{source}: line {line_no} is over the {size_text(LINE_MAX_BYTES)} limit for a batch line")
        yield line


def spool_lines(source: BinaryIO, target: BinaryIO, name: str = "the input") -> None:
    """Copy `source` (a pipe) into `target`, refusing a line past LINE_MAX_BYTES as soon as
    it is seen: `cat /dev/zero | anyfast batch` fills no disk."""
    run = 0  # bytes since the last newline
    newlines = 0
    while True:
        chunk = source.read(CHUNK_BYTES)
        if not chunk:
            return
        first = chunk.find(b"\n")
        if first == -1:
            run += len(chunk)
        elif run + first > LINE_MAX_BYTES:
            run += first
        else:
            newlines += chunk.count(b"\n")
            run = len(chunk) - chunk.rfind(b"\n") - 1
        if run > LINE_MAX_BYTES:
            raise UsageError(
                f"{name}: line {newlines + 1} is over the {size_text(LINE_MAX_BYTES)} limit for a batch line"
            )
        target.write(chunk)


def numbered_lines(lines: Iterable[bytes]) -> Iterator[tuple[int, int, bytes]]:
    """(record index, line number, line) for each non-blank line."""
    index = 0
    for line_no, raw in enumerate(lines, 1):
        if raw.strip():
            yield index, line_no, raw
            index += 1


@dataclass
class Scan:
    """What a validation pass over the whole input found."""

    records: int = 0
    error_count: int = 0
    ids: Mapping = field(default_factory=dict)  # id -> fingerprint of the records this shard runs
    digests: array = field(default_factory=lambda: array("Q"))  # line_digest of each record's line, by index
    models: set = field(default_factory=set)  # the models the records name (a budget prices each)
    _first_errors: list = field(default_factory=list)  # (line, message): the first few by line

    def add_error(self, line_no: int, message: str) -> None:
        self.error_count += 1
        self._first_errors = sorted([*self._first_errors, (line_no, message)])[:MAX_REPORTED_ERRORS]

    @property
    def errors(self) -> list[str]:
        """The first MAX_REPORTED_ERRORS problems, in line order: "line N: …"."""
        return [f"line {line_no}: {message}" for line_no, message in self._first_errors]


def scan_input(lines: Iterable[bytes], options: JobOptions, shard: Shard | None = None) -> Scan:
    """Validate every line and find duplicate ids, keeping one id (and its request's
    fingerprint) per record. `lines` is read twice only if there are duplicates."""
    scan = Scan()
    seen: dict[str, str] = {}  # id -> fingerprint, every record
    duplicates: dict[str, list[int]] = {}  # id -> the lines that repeat it
    shard_ids: dict[str, str] = {}
    for index, line_no, raw in numbered_lines(lines):
        scan.records += 1
        scan.digests.append(line_digest(raw))
        try:
            record = parse_record(raw, line_no, index, options)
        except RecordError as exc:
            scan.add_error(line_no, str(exc))
            continue
        if record.id in seen:
            duplicates.setdefault(record.id, []).append(line_no)
            continue
        seen[record.id] = record.fingerprint
        if shard is None or index in shard:
            scan.models.add(record.body.get("model"))
        if shard is not None and index in shard:
            shard_ids[record.id] = record.fingerprint
    if duplicates:
        first = _first_lines(lines, options, set(duplicates))
        for record_id, repeats in duplicates.items():
            for line_no in repeats:
                scan.add_error(line_no, f"duplicate id {record_id!r} (first on line {first[record_id]})")
    scan.ids = seen if shard is None else shard_ids
    return scan


def _first_lines(lines: Iterable[bytes], options: JobOptions, ids: set) -> dict[str, int]:
    """Where each of `ids` first appears (a second pass, taken only to report duplicates)."""
    first: dict[str, int] = {}
    for index, line_no, raw in numbered_lines(lines):
        try:
            record_id = parse_record(raw, line_no, index, options).id
        except RecordError:
            continue
        if record_id in ids and record_id not in first:
            first[record_id] = line_no
    return first


def batch_input_line(record: Record, schema_mode: str = "json_schema") -> dict:
    """The OpenAI Batch input form, for --dry-run (with --schema, asking for JSON as the first
    request would)."""
    body = record.body
    if record.schema is not None:
        from anyfast_cli.schema import apply_mode

        body = apply_mode(body, record.schema, schema_mode)
    return {"custom_id": record.id, "method": "POST", "url": BATCH_URL, "body": body}


TOOL_CALLS_ERROR = "the model answered with tool calls, not a final answer"  # --fail-on-tool-calls


def parsed_value(record: Record, parsed: list):
    """A result line's `parsed` (--schema): the answer's value, or with n > 1 (asked for, or
    answered) every choice's value. `parsed` is schema.parse_reply's (value, text) per choice."""
    values = [value for value, _ in parsed]
    asked = record.body.get("n")
    several = len(values) > 1 or (isinstance(asked, int) and not isinstance(asked, bool) and asked > 1)
    return values if several else values[0]


def result_line(record: Record, *, status: int | None, request_id: str | None, body, error: dict | None) -> dict:
    """The OpenAI Batch output form; its `id` carries the request's fingerprint for --resume."""
    response = None if status is None else {"status_code": status, "request_id": request_id, "body": body}
    return {"id": f"batch_req_{record.fingerprint}", "custom_id": record.id, "response": response, "error": error}
