"""One slow record never stops a batch (issue 15, class 4).

--max-time is each record's own: a record that runs out of it is a failed line with code
`timeout`, whatever was answered before it, and the rest of the batch runs (`--resume` runs
it again). Only a network failure that says the server cannot be reached, before anything was
answered, still stops the batch.

--schema learns which response_format a model takes without holding any record back: every
record goes out in the best mode not yet refused; a 400 to a mode no answer has shown to work
steps the model down, and records already in flight in that mode go again in the new one; an
answer in a mode shows it works (a 400 there is then that record's own).

In-process through the loopback gateway (tests/gateway.py), whose answers a test scripts per
request with `serve`.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from gateway import Json, Sse, completion, error_body
from helpers import parse_lines

from anyfast_cli.errors import ExitCode

MAX_TIME = "0.3"
SLOW = 5.0  # seconds a slow answer would take: every run below ends long before it
TIMEOUT_MESSAGE = f"the request took longer than --max-time {MAX_TIME} s"
SPEC = "title, year int"
GOOD = '{"title":"Dune","year":1965}'


def records(*names: str) -> str:
    return "".join(json.dumps({"id": name, "prompt": name}) + "\n" for name in names)


def prompt_of(body: dict) -> str:
    """The record's own prompt (a --schema mode may add a user turn after it)."""
    return next(m["content"] for m in body.get("messages", []) if m.get("role") == "user")


def mode_of(body: dict) -> str:
    return (body.get("response_format") or {}).get("type", "prompt")


def by_id(stdout: str) -> dict:
    return {line["custom_id"]: line for line in parse_lines(stdout)}


def drip(body: dict) -> Sse:
    """A whole answer that sends its status and headers, then a byte every 0.05 s."""
    text = json.dumps(completion("late"))
    return Sse(
        [text[i : i + 1].encode() for i in range(len(text))], delay=0.05, headers={"Content-Type": "application/json"}
    )


# --- --max-time: the record's, never the server's ---------------------------------------------------

SLOW_WAYS = {
    "silent before the status line": lambda body: SLOW,
    "dripping its body": drip,
}


@pytest.mark.parametrize("way", SLOW_WAYS)
@pytest.mark.parametrize(
    "names, slow, concurrency",
    [
        (["s1", "s2", "a", "b", "c"], {"s1", "s2"}, 2),  # the first records, as many as -j
        (["s1", "a", "s2", "b"], {"s1", "s2"}, 1),  # one at a time: the first outcome is a timeout
        (["s1", "s2", "s3"], {"s1", "s2", "s3"}, 2),  # none answered at all
    ],
    ids=["first records", "one at a time", "all of them"],
)
def test_records_past_max_time_fail_alone_and_the_rest_run(run, serve, way, names, slow, concurrency):
    serve(lambda body: SLOW_WAYS[way](body) if prompt_of(body) in slow else None)
    started = time.monotonic()
    result = run("batch", "--max-time", MAX_TIME, "-j", concurrency, "--retries", "2", input=records(*names))
    assert time.monotonic() - started < SLOW
    assert result.exit_code == ExitCode.BATCH_PARTIAL, result.stderr
    lines = by_id(result.stdout)
    assert set(lines) == set(names)  # every record has its line: none is "not run"
    for name in names:
        if name in slow:
            assert lines[name]["error"] == {"code": "timeout", "message": TIMEOUT_MESSAGE}
        else:
            assert lines[name]["error"] is None
    assert "not run" not in result.stderr


def test_resume_runs_the_records_that_ran_out_of_time_and_only_them(run, serve, gateway, tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text(records("s1", "s2", "a", "b"))
    out = tmp_path / "out.jsonl"
    serve(lambda body: SLOW if prompt_of(body) in ("s1", "s2") else None)
    first = run("batch", data, "-o", out, "--max-time", MAX_TIME, "-j", 2)
    assert first.exit_code == ExitCode.BATCH_PARTIAL, first.stderr
    assert {k for k, line in by_id(out.read_text()).items() if line["error"]} == {"s1", "s2"}

    gateway.reset()
    serve(lambda body: None)  # the server is quick now
    second = run("batch", data, "-o", out, "--resume", "--max-time", MAX_TIME, "-j", 2)
    assert second.exit_code == ExitCode.OK, second.stderr
    assert sorted(prompt_of(r.body) for r in gateway.requests) == ["s1", "s2"]
    lines = by_id(out.read_text())
    assert set(lines) == {"s1", "s2", "a", "b"} and all(line["error"] is None for line in lines.values())


# --- --schema: learning the mode holds no record back -------------------------------------------------


def answer_in(refused: set, slow: dict | None = None, own_400: str | None = None):
    """A server that answers 400 to a request in any mode of `refused` (and to every request of
    the record `own_400`), waits slow[prompt] seconds first, and answers GOOD otherwise."""

    async def reply(body):
        prompt = prompt_of(body)
        await asyncio.sleep((slow or {}).get(prompt, 0.0))
        if mode_of(body) in refused or prompt == own_400:
            return Json(error_body(f"response_format {mode_of(body)} is not supported"), status=400)
        return Json(completion(GOOD))

    return reply


@pytest.mark.parametrize(
    "refused, final_mode, notes",
    [
        (set(), "json_schema", 0),
        ({"json_schema"}, "json_object", 1),
        ({"json_schema", "json_object"}, "prompt", 2),
    ],
    ids=["json_schema taken", "json_schema refused", "both refused"],
)
def test_the_mode_is_learned_while_every_record_is_in_flight(run, serve, gateway, refused, final_mode, notes):
    names = [f"r{i}" for i in range(20)]
    serve(answer_in(refused))
    result = run("batch", "--schema", SPEC, "-j", 8, input=records(*names))
    assert result.exit_code == ExitCode.OK, result.stderr
    lines = by_id(result.stdout)
    assert all(lines[name]["parsed"] == json.loads(GOOD) for name in names)
    assert result.stderr.count("refused response_format") == notes  # one note per step, not per record
    modes = [mode_of(r.body) for r in gateway.requests]
    assert modes.count(final_mode) == len(names)  # each record answered once, in the mode learned
    assert len(modes) - len(names) <= 8 * notes  # a refused mode costs at most the requests in flight in it


def test_a_slow_first_record_does_not_hold_the_others_back(run, serve, gateway):
    # Before, the first record went alone to learn the mode and every other record waited for it.
    names = ["slow", "a", "b", "c", "d", "e"]
    serve(answer_in(set(), slow={"slow": 0.5}))
    result = run("batch", "--schema", SPEC, "-j", 2, input=records(*names))
    assert result.exit_code == ExitCode.OK, result.stderr
    written = [line["custom_id"] for line in parse_lines(result.stdout)]
    assert written[-1] == "slow" and sorted(written) == sorted(names)


def test_a_slow_first_record_in_a_refused_mode_steps_down_with_the_rest(run, serve, gateway):
    names = ["slow", "a", "b", "c"]
    serve(answer_in({"json_schema"}, slow={"slow": 0.5}))
    result = run("batch", "--schema", SPEC, "-j", 2, input=records(*names))
    assert result.exit_code == ExitCode.OK, result.stderr
    assert [line["custom_id"] for line in parse_lines(result.stdout)][-1] == "slow"
    assert result.stderr.count("refused response_format") == 1
    assert [mode_of(r.body) for r in gateway.requests if prompt_of(r.body) == "slow"] == ["json_schema", "json_object"]


def test_a_records_own_400_does_not_step_the_batch_down_for_good(run, serve, gateway):
    # "bad" is refused in every mode; the others are answered in json_schema, a little later.
    names = ["bad"] + [f"r{i}" for i in range(11)]
    serve(answer_in(set(), slow={name: 0.2 for name in names[1:]}, own_400="bad"))
    result = run("batch", "--schema", SPEC, "-j", 4, input=records(*names))
    assert result.exit_code == ExitCode.BATCH_PARTIAL, result.stderr
    lines = by_id(result.stdout)
    assert lines["bad"]["error"]["code"] == "http_400" or "400" in lines["bad"]["error"]["message"]
    assert all(lines[name]["error"] is None for name in names[1:])
    bad_modes = [mode_of(r.body) for r in gateway.requests if prompt_of(r.body) == "bad"]
    assert len(bad_modes) == len(set(bad_modes))  # never asked twice in one mode
    assert mode_of(gateway.requests[-1].body) == "json_schema"  # back to the mode that works
