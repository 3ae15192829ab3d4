"""Batch input lines -> request bodies (pure: lines in, records and errors out).

A line is a JSON string (a prompt), {"prompt", "system"?}, {"messages"}, or an
OpenAI Batch line {"custom_id", "method", "url", "body"}; with --lines it is plain
text. Body fields on a record override the command's settings for that record.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from anyfast_cli.errors import UsageError
from anyfast_cli.inputs import parse_messages, with_system
from anyfast_cli.request import BODY_FIELDS, build_body, check_fields, user_message

BATCH_URL = "/v1/chat/completions"
MAX_REPORTED_ERRORS = 20


@dataclass(frozen=True)
class JobOptions:
    model: str
    fields: dict = field(default_factory=dict)  # defaults for every record: profile, flags
    system: str | None = None
    template: str | None = None
    plain_lines: bool = False  # --lines
    image_urls: tuple = ()
    video_parts: tuple = ()


@dataclass(frozen=True)
class Record:
    index: int  # 0-based among the input's records (blank lines are not records)
    line_no: int
    id: str
    body: dict
    fingerprint: str = ""  # of id and body: --resume keeps an answer only for the same request


def fingerprint(record_id: str, body: dict) -> str:
    """16 hex digits naming this exact request, so a changed input line is not taken as answered."""
    canonical = json.dumps([record_id, body], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode("utf-8"), digest_size=8).hexdigest()


class RecordError(ValueError):
    pass


@dataclass(frozen=True)
class Shard:
    """--shard K/N: records whose index i has i mod N = K-1."""

    k: int
    n: int

    def __contains__(self, index: int) -> bool:
        return index % self.n == self.k - 1


def parse_shard(text: str | None) -> Shard | None:
    if text is None:
        return None
    k, slash, n = text.partition("/")
    if not slash or not k.isdigit() or not n.isdigit() or not 1 <= int(k) <= int(n):
        raise UsageError(f"--shard expects K/N with 1 ≤ K ≤ N, got {text!r}")
    return Shard(int(k), int(n))


def check_template(template: str | None) -> None:
    if template is None:
        return
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise UsageError(f"--template is not a valid template: {exc}") from None
    if not names:
        raise UsageError("--template has no {field}; every record would get the same prompt")


def parse_record(raw: bytes, line_no: int, index: int, options: JobOptions) -> Record:
    """One input line -> Record; a RecordError says what is wrong with it."""
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
        if line_no == 1:
            text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    except UnicodeDecodeError:
        raise RecordError("not valid UTF-8") from None
    if options.plain_lines:
        return _record(str(line_no), line_no, index, _prompt_messages({"text": text}, text, options), {}, options)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RecordError(f"not valid JSON: {exc.msg}, column {exc.colno}") from None
    if isinstance(data, str):
        return _record(str(line_no), line_no, index, _prompt_messages({"text": data}, data, options), {}, options)
    if not isinstance(data, dict):
        raise RecordError("expected a JSON string or object")
    record_id = _record_id(data, line_no)
    if "body" in data and "custom_id" in data:
        return _openai_batch_record(data, record_id, line_no, index, options)
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
        messages = _prompt_messages(data, _string(data, "prompt"), options)  # refuses an empty prompt, as for a string line
        if "system" in data:
            messages = with_system(messages, _string(data, "system"))
    else:
        raise RecordError("an object needs 'prompt', 'messages', or custom_id+body (or use --template)")
    return _record(record_id, line_no, index, messages, overrides, options)


def _openai_batch_record(data: dict, record_id: str, line_no: int, index: int, options: JobOptions) -> Record:
    body = data["body"]
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
        raise RecordError("'body' must be a request body with a non-empty 'messages' list")
    if data.get("method", "POST") != "POST" or not str(data.get("url", BATCH_URL)).endswith("/chat/completions"):
        raise RecordError("only POST /v1/chat/completions lines are supported")
    overrides = {k: v for k, v in body.items() if k not in ("messages", "stream", "stream_options")}
    return _record(record_id, line_no, index, _messages(body["messages"]), overrides, options)


def _messages(items) -> list[dict]:
    """A record's messages, checked as a conversation file's are (local attachments excepted)."""
    try:
        messages = parse_messages(items, "record")
    except UsageError as exc:
        raise RecordError(exc.message.removeprefix("record: ")) from None
    if any("images" in m or "videos" in m for m in messages):
        raise RecordError("'images' is not supported in batch records; use image_url content parts")
    return messages


def _record(record_id: str, line_no: int, index: int, messages: list, overrides: dict, options: JobOptions) -> Record:
    model = overrides.pop("model", None) or options.model
    if not isinstance(model, str):
        raise RecordError("'model' must be a string")
    fields = {**options.fields, **overrides}
    if options.system is not None and not any(m.get("role") == "system" for m in messages):
        messages = with_system(messages, options.system)
    try:
        check_fields(fields, model)
        body = build_body(model, messages, fields, stream=False)
    except UsageError as exc:
        raise RecordError(exc.message) from None
    return Record(index, line_no, record_id, body, fingerprint(record_id, body))


def _prompt_messages(data: dict, prompt: str | None, options: JobOptions) -> list[dict]:
    if options.template is not None:
        try:
            prompt = options.template.format_map(data)
        except KeyError as exc:
            raise RecordError(f"--template needs field {exc.args[0]!r}, which this record lacks") from None
        except (ValueError, IndexError, AttributeError) as exc:
            raise RecordError(f"--template cannot be filled from this record: {exc}") from None
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
        try:
            record = parse_record(raw, line_no, index, options)
        except RecordError as exc:
            scan.add_error(line_no, str(exc))
            continue
        if record.id in seen:
            duplicates.setdefault(record.id, []).append(line_no)
            continue
        seen[record.id] = record.fingerprint
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


def iter_records(lines: Iterable[bytes], options: JobOptions, shard: Shard | None = None, skip: set = frozenset()) -> Iterator[Record]:
    """The records to run, lazily (the input was validated by scan_input first)."""
    for index, line_no, raw in numbered_lines(lines):
        if shard is not None and index not in shard:
            continue
        record = parse_record(raw, line_no, index, options)
        if record.id not in skip:
            yield record


def batch_input_line(record: Record) -> dict:
    """The OpenAI Batch input form, for --dry-run."""
    return {"custom_id": record.id, "method": "POST", "url": BATCH_URL, "body": record.body}


def result_line(record: Record, *, status: int | None, request_id: str | None, body, error: dict | None) -> dict:
    """The OpenAI Batch output form; its `id` carries the request's fingerprint for --resume."""
    response = None if status is None else {"status_code": status, "request_id": request_id, "body": body}
    return {"id": f"batch_req_{record.fingerprint}", "custom_id": record.id, "response": response, "error": error}
