"""`batch` with the response cache (§3 "Cache"): hits written as result lines before anything
is sent and without waiting on the rate limit, the summary counting them; replay misses are
failed records with code not_in_cache and exit 10; entries shared with complete."""

from __future__ import annotations

import json
import time

import pytest
from gateway import Json, completion, error_body
from helpers import closed_port, parse_lines, whole_lines
from test_batch_cli import jsonl, summary_of
from test_tool_calls import CALL_A, whole

from anyfast_cli.errors import ExitCode


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def batch(run, *args, input, **env):
    return run("batch", "--no-progress", *args, input=input, **env)


def by_id(stdout: str) -> dict:
    return {line["custom_id"]: line for line in parse_lines(stdout)}


def test_hits_are_written_first_and_only_misses_are_sent(run, gateway, cache):
    first = batch(run, "--cache", cache, input=jsonl("one", "two"))
    assert first.exit_code == 0 and len(gateway.requests) == 2
    # "three" is first in the input and yet written last: the hits went out before it was sent.
    second = batch(run, "--cache", cache, input=jsonl("three", "one", "two"))
    assert second.exit_code == 0, second.stderr
    assert len(gateway.requests) == 3 and gateway.requests[-1].body["messages"][-1]["content"] == "three"
    lines = parse_lines(second.stdout)
    assert [line["custom_id"] for line in lines] == ["2", "3", "1"]
    hits = {line["custom_id"]: line for line in lines[:2]}
    old = by_id(first.stdout)
    assert hits["2"]["response"]["body"] == old["1"]["response"]["body"]  # "one" was line 1 then
    assert hits["2"]["response"]["status_code"] == 200 and hits["2"]["error"] is None
    assert "3 ok (2 from the cache), 0 failed" in summary_of(second.stderr)


def test_hits_do_not_wait_on_the_rate_limit(run, gateway, cache):
    batch(run, "--cache", cache, input=jsonl("a", "b", "c"))
    started = time.monotonic()
    result = batch(run, "--cache", cache, "--rpm", "1", input=jsonl("a", "b", "c"))  # one request a minute
    assert result.exit_code == 0 and time.monotonic() - started < 5
    assert len(gateway.requests) == 3


def test_batch_and_complete_share_entries(run, gateway, cache):
    assert run("complete", "--cache", cache, "from complete").exit_code == 0  # streamed
    result = batch(run, "--cache", cache, input=jsonl("from complete", {"prompt": "from batch"}))
    assert result.exit_code == 0 and len(gateway.requests) == 2
    hit = by_id(result.stdout)["1"]["response"]["body"]
    assert hit["object"] == "chat.completion" and hit["choices"][0]["message"]["content"] == "echo: from complete"
    replayed = run("complete", "--cache", cache, "--cache-mode", "replay", "from batch", key=None)
    assert replayed.exit_code == 0 and replayed.stdout == "echo: from batch\n"


def test_replay_misses_are_failed_records_and_exit_10_with_no_key_and_no_server(run, gateway, cache, tmp_path):
    batch(run, "--cache", cache, input=jsonl("cached"))
    down = f"http://127.0.0.1:{closed_port()}/v1"
    out = tmp_path / "out.jsonl"
    replay = batch(
        run, "--cache", cache, "--cache-mode", "replay", "-o", out, input=jsonl("cached", "new one"), key=None
    )
    assert replay.exit_code == ExitCode.NOT_IN_CACHE, replay.stderr
    lines = {line["custom_id"]: line for line in whole_lines(out)}
    assert lines["1"]["error"] is None and lines["1"]["response"]["status_code"] == 200
    assert lines["2"]["response"] is None and lines["2"]["error"]["code"] == "not_in_cache"
    assert '"new one"' in lines["2"]["error"]["message"]
    assert "1 ok (1 from the cache), 1 failed (1 not in the cache)" in summary_of(replay.stderr)
    assert len(gateway.requests) == 1
    # The same server under another URL is another question: nothing is in the cache for it.
    moved = batch(run, "--cache", cache, "--cache-mode", "replay", "--base-url", down, input=jsonl("cached"), key=None)
    assert moved.exit_code == ExitCode.NOT_IN_CACHE
    # --resume runs the failed record, now with a key.
    resumed = batch(run, "--cache", cache, "-o", out, "--resume", input=jsonl("cached", "new one"))
    assert resumed.exit_code == 0 and len(gateway.requests) == 2
    assert all(line["error"] is None for line in whole_lines(out))


def test_a_batch_the_cache_answers_whole_needs_no_key_even_in_rw(run, gateway, cache):
    batch(run, "--cache", cache, input=jsonl("x", "y"))
    result = batch(run, "--cache", cache, input=jsonl("x", "y"), key=None)
    assert result.exit_code == 0 and len(gateway.requests) == 2
    missing = batch(run, "--cache", cache, input=jsonl("x", "z"), key=None)
    assert missing.exit_code == ExitCode.AUTH  # a record must be sent: now the key is needed
    assert [line["custom_id"] for line in parse_lines(missing.stdout)] == ["1"]  # the hit was written


def test_failed_answers_are_not_stored(run, gateway, cache):
    gateway.script(Json(error_body("bad request"), status=400))
    failed = batch(run, "--cache", cache, "--retries", "0", input=jsonl("q"))
    assert failed.exit_code == ExitCode.BATCH_PARTIAL
    assert batch(run, "--cache", cache, input=jsonl("q")).exit_code == 0
    assert len(gateway.requests) == 2  # asked again, then stored
    assert batch(run, "--cache", cache, input=jsonl("q")).exit_code == 0 and len(gateway.requests) == 2


def test_a_schema_record_hit_carries_parsed(run, gateway, cache):
    gateway.script(Json(completion('{"name": "Ada"}')))
    first = batch(run, "--cache", cache, "--schema", "name", input=jsonl("who?"))
    assert first.exit_code == 0 and by_id(first.stdout)["1"]["parsed"] == {"name": "Ada"}
    hit = batch(run, "--cache", cache, "--schema", "name", input=jsonl("who?"))
    assert by_id(hit.stdout)["1"]["parsed"] == {"name": "Ada"} and len(gateway.requests) == 1
    other = batch(run, "--cache", cache, "--schema", "title", "--cache-mode", "replay", input=jsonl("who?"))
    assert other.exit_code == ExitCode.NOT_IN_CACHE  # another schema is another request


def test_a_tool_call_hit_fails_its_record_with_fail_on_tool_calls(run, gateway, cache):
    gateway.script(Json(whole({"content": None, "tool_calls": [CALL_A]})))
    assert batch(run, "--cache", cache, input=jsonl("weather?")).exit_code == 0
    failed = batch(run, "--cache", cache, "--fail-on-tool-calls", input=jsonl("weather?"))
    assert failed.exit_code == ExitCode.BATCH_PARTIAL and len(gateway.requests) == 1
    assert by_id(failed.stdout)["1"]["error"]["code"] == "tool_calls"


def test_refresh_sends_every_record_and_stores_it(run, gateway, cache):
    gateway.script(Json(completion("old")), Json(completion("new")))
    batch(run, "--cache", cache, input=jsonl("q"))
    refreshed = batch(run, "--cache", cache, "--cache-mode", "refresh", input=jsonl("q"))
    assert json.loads(refreshed.stdout)["response"]["body"]["choices"][0]["message"]["content"] == "new"
    hit = batch(run, "--cache", cache, input=jsonl("q"))
    assert json.loads(hit.stdout)["response"]["body"]["choices"][0]["message"]["content"] == "new"
    assert len(gateway.requests) == 2


# --- the cache's pass over the input counts changed lines as the sending pass does -----------------

CHANGED = {
    "appended": [{"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"}, {"id": "z", "prompt": "appended"}],
    "duplicated": [{"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"}, {"id": "a", "prompt": "one"}],
    "edited": [{"id": "a", "prompt": "one"}, {"id": "b", "prompt": "EDITED"}],
    "unchanged": [{"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"}],
}


@pytest.mark.parametrize("answered", [{"a", "b"}, {"a"}, set()], ids=["all", "some", "none"])
@pytest.mark.parametrize("second", CHANGED.values(), ids=CHANGED.keys())
def test_the_cache_pass_offers_each_validated_record_once_and_counts_changed_lines(second, answered):
    from anyfast_cli.batch.jobs import JobOptions, scan_input
    from anyfast_cli.commands.batch import CheckedRecords

    def lines(items):
        return [(json.dumps(item) + "\n").encode() for item in items]

    options = JobOptions(model="m")
    first = lines([{"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"}])
    sending_pass = CheckedRecords(scan_input(first, options), "in.jsonl")
    expected = [record.id for record in sending_pass.records(lines(second), options, None)]
    checked = CheckedRecords(scan_input(first, options), "in.jsonl")
    offered = []
    checked.answer_first(lines(second), options, None, lambda r: offered.append(r.id) or r.id in answered)
    assert sorted(set(offered)) == offered == sorted(expected)  # each once, and only as validated
    if checked.to_send == 0:  # nothing left to send: this pass's count is the one reported
        assert checked.unchecked == sending_pass.unchecked
    checked.forget_unchecked()
    assert [r.id for r in checked.records(lines(second), options, None)] == [i for i in expected if i not in answered]
    assert checked.unchecked == sending_pass.unchecked


@pytest.mark.parametrize("replay", [False, True], ids=["rw", "replay"])
def test_a_hit_that_no_longer_answers_its_record_is_a_miss_and_never_counted(tmp_path, replay):
    """A stored answer the record's schema refuses (an entry another version or command wrote)
    is a miss: it is not noted in the usage log as a hit (nor, in replay, beside its failure)."""
    from anyfast_cli.batch.cached import CacheAnswers, record_key
    from anyfast_cli.batch.jobs import JobOptions, parse_record
    from anyfast_cli.cache import ResponseCache
    from anyfast_cli.prices import NO_PRICES
    from anyfast_cli.result import RequestContext

    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    record = parse_record(b'"who?"\n', 1, 0, JobOptions(model="m", schema=schema))
    store = ResponseCache.open(str(tmp_path / "cache"), "rw")
    store.store(record_key(record, "http://gw/v1", "auto"), completion('{"title": 1}'))
    recorded, emitted = [], []

    class Meter:
        context = RequestContext("batch", "default", NO_PRICES)

        def record(self, result):
            recorded.append(result)

    answers = CacheAnswers(
        ResponseCache.open(str(tmp_path / "cache"), "replay" if replay else "rw"),
        base_url="http://gw/v1",
        schema_mode="auto",
        fail_on_tool_calls=False,
        max_time=None,
        emit=lambda line, ok, hit: emitted.append((line.get("error") or {}).get("code")),
        meter=Meter(),
    )
    assert answers(record) is replay  # replay: answered, as a failed line; rw: left to be sent
    assert recorded == [] and emitted == (["not_in_cache"] if replay else [])
