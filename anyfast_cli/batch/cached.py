"""batch with a response cache (§3 "Cache"): the records the cache answers are written as
result lines before anything is sent, without waiting on the rate limit; in replay the others
fail with code `not_in_cache`; the answers that are sent are stored.

A record is keyed as complete's request is, by its first request (with --schema, asked in
the ladder's first mode), and its entry holds the answer its result line holds. Nothing here
sends anything: aiohttp is not imported, and a batch the cache answers whole needs no key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from anyfast_cli.batch.jobs import TOOL_CALLS_ERROR, Record, parsed_value, result_line
from anyfast_cli.cache import ResponseCache, cache_key, not_in_cache
from anyfast_cli.cached import hit_result
from anyfast_cli.exchange import tool_calls_in

# emit(line, ok, cached): a result line for the sink, whether the record is answered, and
# whether the cache answered it.
Emit = Callable[[dict, bool, bool], None]


def first_request(record: Record, schema_mode: str) -> dict:
    if record.schema is None:
        return record.body
    from anyfast_cli.schema import apply_mode, mode_ladder

    return apply_mode(record.body, record.schema, mode_ladder(schema_mode)[0])


def record_key(record: Record, base_url: str, schema_mode: str) -> str:
    return cache_key(base_url, first_request(record, schema_mode))


def cached_line(record: Record, response: dict, *, fail_on_tool_calls: bool, max_time: float | None):
    """(the result line, answered?) that `response` makes for `record`, as a fresh answer's
    would be (batch/runner.py); None when it no longer will do (not valid for the record's
    schema, which may have changed), which makes it a miss."""
    request_id = response.get("id")  # as for a fresh answer whose response named no request id
    if record.schema is not None:
        from anyfast_cli.schema import AnswerMismatch, check_deadline, parse_reply

        if tool_calls_in(response):
            return None
        try:
            parsed = parse_reply(response, record.schema, check_deadline(time.monotonic(), max_time))
        except AnswerMismatch:
            return None
        line = result_line(record, status=200, request_id=request_id, body=response, error=None)
        line["parsed"] = parsed_value(record, parsed)
        return line, True
    if fail_on_tool_calls and tool_calls_in(response):
        error = {"code": "tool_calls", "message": TOOL_CALLS_ERROR}
        return result_line(record, status=200, request_id=request_id, body=response, error=error), False
    return result_line(record, status=200, request_id=request_id, body=response, error=None), True


class CacheAnswers:
    """Answers a record from the cache when it can: writes its line (in replay, a failed line
    when it cannot) and says whether the record is answered, so that it is not sent."""

    def __init__(
        self,
        cache: ResponseCache,
        *,
        base_url: str,
        schema_mode: str,
        fail_on_tool_calls: bool,
        max_time: float | None,
        emit: Emit,
        meter=None,
    ) -> None:
        self._meter = meter  # a hit is a request answered for nothing: the usage log notes it
        self._cache = cache
        self._base_url = base_url
        self._schema_mode = schema_mode
        self._fail_on_tool_calls = fail_on_tool_calls
        self._max_time = max_time
        self._emit = emit

    def __call__(self, record: Record) -> bool:
        started = time.monotonic()
        hit = self._cache.lookup(record_key(record, self._base_url, self._schema_mode))
        if hit is not None:
            line = cached_line(
                record, hit.response, fail_on_tool_calls=self._fail_on_tool_calls, max_time=self._max_time
            )
            if line is not None:  # a hit counts only when it answers (as CachedClient.recall: accept, then meter)
                if self._meter is not None:
                    body = first_request(record, self._schema_mode)
                    context = self._meter.context
                    self._meter.record(
                        hit_result(context, body, hit.response, started=started, now=time.time(), custom_id=record.id)
                    )
                self._emit(line[0], line[1], True)
                return True
        if self._cache.replay:
            missing = not_in_cache(first_request(record, self._schema_mode), self._cache.directory)
            error = {"code": missing.code, "message": missing.message}
            self._emit(result_line(record, status=None, request_id=None, body=None, error=error), False, False)
            return True
        return False


class AnswerStore:
    """Stores the answers of the records that are sent: each record's key is kept from when the
    runner takes it until its result line comes back (at most the records in flight or waiting
    to be written, so memory stays flat)."""

    def __init__(self, cache: ResponseCache, *, base_url: str, schema_mode: str, mask=None) -> None:
        self._cache = cache
        self._base_url = base_url
        self._schema_mode = schema_mode
        self._mask = mask
        self._keys: dict[str, str] = {}

    def track(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            self._keys[record.id] = record_key(record, self._base_url, self._schema_mode)
            yield record

    def finished(self, line: dict, ok: bool) -> None:
        """A record's line is written: an answered record's answer is stored (when complete)."""
        key = self._keys.pop(line.get("custom_id"), None)
        response = line.get("response") or {}
        if ok and key is not None and line.get("error") is None and isinstance(response.get("body"), dict):
            self._cache.store(key, response["body"], mask=self._mask)
