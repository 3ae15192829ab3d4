"""The response cache (§3 "Cache", §5 exit 10) for complete and chat, against the loopback
gateway, which counts the requests that reach it: hits in every output mode, one entry for a
question asked streamed or whole, only complete answers stored, entries that are not whole
are misses, replay with the server down and no key, and what hits cost (nothing)."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest
from gateway import Json, Sse, chunk, completion, error_body, hidden_cut, sse_events
from helpers import KEY, ROOT, closed_port, whole_lines
from test_tool_calls import CALL_A, TOOLS, whole

from anyfast_cli.cache import MAX_ENTRY_BYTES, ResponseCache, cache_key, request_text

DEFAULT_MODEL = "doubao-seed-1-6-vision-250815"
PROMPT = "Write a haiku about pipes, please"


def chunks_text(stdout: str, field: str = "content") -> str:
    return "".join(
        (choice.get("delta") or {}).get(field) or ""
        for line in stdout.splitlines()
        for choice in json.loads(line).get("choices") or ()
    )


def entries(directory) -> list:
    return sorted(p for p in directory.rglob("*.json") if not p.name.startswith(".tmp-"))


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


# --- the key ---------------------------------------------------------------------------------


def test_the_key_is_the_request_as_sent_without_how_it_travels():
    body = {"model": "m", "messages": [{"role": "user", "content": "héllo"}], "temperature": 0.2}
    key = cache_key("https://x/v1", body)
    assert key == cache_key("https://x/v1/", {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert key == cache_key("https://x/v1", dict(reversed(list(body.items()))))  # keys sorted
    assert key != cache_key("https://y/v1", body)
    assert key != cache_key("https://x/v1", {**body, "temperature": 0.3})
    # The formula README.md documents, in plain hashlib and json.
    text = "https://x/v1\n" + json.dumps(
        {"messages": [{"content": "héllo", "role": "user"}], "model": "m", "temperature": 0.2},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    assert request_text("https://x/v1", body) == text
    assert key == hashlib.sha256(text.encode()).hexdigest()


def test_the_readme_documents_the_key_and_a_ci_example():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Cache and offline rehearsal") :]
    assert "sort_keys=True" in section and "stream_options" in section
    assert "--cache-mode replay" in section and "actions/cache" in section


# --- hits in every output mode -----------------------------------------------------------------

# (flags, what stdout must be, given the fresh answer "echo: PROMPT")
MODES = {
    "text": ([], "text"),
    "text whole": (["--no-stream"], "text"),
    "reasoning": (["--reasoning"], "text"),
    "json": (["--json"], "json"),
    "json stream": (["--json", "--stream"], "jsonl"),
}


def check_output(result, kind: str) -> None:
    assert result.exit_code == 0, result.stderr
    answer = f"echo: {PROMPT}"
    if kind == "text":
        assert result.stdout == answer + "\n"
    elif kind == "json":
        message = json.loads(result.stdout)["choices"][0]["message"]
        assert (message["content"], message["reasoning_content"]) == (answer, "thinking about it")
    else:
        assert chunks_text(result.stdout) == answer
        assert chunks_text(result.stdout, "reasoning_content") == "thinking about it"


@pytest.mark.parametrize("command", ["complete", "chat"])
@pytest.mark.parametrize("filled_by", ["--stream", "--no-stream"])
def test_a_hit_answers_every_output_mode_as_a_fresh_answer_and_sends_nothing(run, gateway, cache, command, filled_by):
    """One entry, stored from a stream or from a whole answer, serves every mode."""
    first = run(command, "--cache", cache, filled_by, PROMPT)
    assert first.exit_code == 0 and len(gateway.requests) == 1
    assert len(entries(cache)) == 1
    for name, (flags, kind) in MODES.items():
        result = run(command, "--cache", cache, *flags, PROMPT)
        check_output(result, kind)
        if name == "reasoning":
            assert "thinking about it" in result.stderr
    assert len(gateway.requests) == 1  # every one of them was a hit
    assert len(entries(cache)) == 1


def test_a_whole_answer_replays_byte_for_byte_with_json(run, gateway, cache):
    fresh = run("complete", "--cache", cache, "--json", PROMPT)
    hit = run("complete", "--cache", cache, "--json", PROMPT)
    assert hit.stdout == fresh.stdout and len(gateway.requests) == 1


def test_a_streamed_answer_is_stored_in_the_whole_response_shape(run, gateway, cache):
    gateway.script(
        Sse(
            sse_events(
                chunk(reasoning="hm"),
                chunk("Hel"),
                chunk("lo", finish="stop"),
                {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": {"total_tokens": 9}},
            )
        )
    )
    assert run("complete", "--cache", cache, "--usage", "hi").exit_code == 0
    [path] = entries(cache)
    response = json.loads(path.read_text())["response"]
    assert response == {
        "id": "chatcmpl-1",
        "model": "m",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello", "reasoning_content": "hm"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"total_tokens": 9},
    }


@pytest.mark.parametrize("filled_by", ["--stream", "--no-stream"])
def test_a_hit_with_tool_calls_prints_them_and_exits_8(run, gateway, cache, tmp_path, filled_by):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(TOOLS))
    answer = whole({"content": "let me look", "tool_calls": [CALL_A, {**CALL_A, "id": "call_b"}]})
    if filled_by == "--stream":
        gateway.script(Json({**answer, "object": "chat.completion"}))  # a whole answer to a stream request
    else:
        gateway.script(Json(answer))
    fresh = run("complete", "--cache", cache, "--tools", tools, filled_by, "weather?")
    assert fresh.exit_code == 8, fresh.stderr
    for flags in ([], ["--no-stream"]):
        hit = run("complete", "--cache", cache, "--tools", tools, *flags, "weather?")
        assert hit.exit_code == 8, hit.stderr
        assert hit.stdout == fresh.stdout  # one JSON line per call, byte-exact
        assert [json.loads(line)["id"] for line in hit.stdout.splitlines()] == ["call_a", "call_b"]
        assert "let me look" in hit.stderr
    assert len(gateway.requests) == 1


def test_a_hit_prints_every_choice(run, gateway, cache):
    events = [
        {"id": "c", "model": "m", "choices": [{"index": i, "delta": {"content": f"answer {i}"}, "finish_reason": None}]}
        for i in (0, 1)
    ] + [{"id": "c", "model": "m", "choices": [{"index": i, "delta": {}, "finish_reason": "stop"}]} for i in (0, 1)]
    gateway.script(Sse(sse_events(*events)))
    fresh = run("complete", "--cache", cache, "-p", "n=2", "hi")
    hit = run("complete", "--cache", cache, "-p", "n=2", "hi")
    assert fresh.exit_code == hit.exit_code == 0
    assert hit.stdout == fresh.stdout and "answer 1" in hit.stdout
    assert len(gateway.requests) == 1


def test_with_a_schema_the_key_is_the_first_request_and_the_entry_the_valid_answer(run, gateway, cache):
    gateway.script(Json(completion("not json")), Json(completion('{"name": "Ada", "year": 1815}')))
    fresh = run("complete", "--cache", cache, "--schema", "name, year int", "who?")
    assert fresh.exit_code == 0, fresh.stderr
    assert fresh.stdout == '{"name":"Ada","year":1815}\n' and len(gateway.requests) == 2  # a repair
    hit = run("complete", "--cache", cache, "--schema", "name, year int", "who?")
    assert hit.stdout == fresh.stdout and len(gateway.requests) == 2
    json_hit = run("complete", "--cache", cache, "--schema", "name, year int", "--json", "who?")
    assert json.loads(json_hit.stdout)["choices"][0]["message"]["content"] == '{"name": "Ada", "year": 1815}'
    assert len(gateway.requests) == 2


def test_with_a_schema_an_answer_that_is_not_valid_is_not_stored(run, gateway, cache):
    gateway.script(Json(completion("no")), Json(completion("still no")))
    assert run("complete", "--cache", cache, "--schema", "name", "who?").exit_code == 7
    assert entries(cache) == []


# --- only complete answers are stored ------------------------------------------------------------

INCOMPLETE = {
    "no finish_reason (a hidden cut)": lambda: hidden_cut("Hel", "lo"),
    "one choice of two unfinished": lambda: Sse(
        sse_events(
            {"id": "c", "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"}]},
            {"id": "c", "choices": [{"index": 1, "delta": {"content": "b"}, "finish_reason": None}]},
        )
    ),
    "an error": lambda: Json(error_body("bad"), status=400),
    "a cut stream": lambda: Sse(sse_events(chunk("Hel"), done=False), cut=True),
}


@pytest.mark.parametrize("reply", INCOMPLETE.values(), ids=INCOMPLETE.keys())
def test_an_answer_that_is_not_complete_is_not_stored(run, gateway, cache, reply):
    gateway.script(reply())
    run("complete", "--cache", cache, "--retries", "0", "hi")
    assert entries(cache) == []
    assert run("complete", "--cache", cache, "hi").exit_code == 0  # asked again, and now stored
    assert len(gateway.requests) == 2 and len(entries(cache)) == 1


def test_a_whole_answer_without_a_finish_reason_is_not_stored(run, gateway, cache):
    answer = completion("hi")
    answer["choices"][0]["finish_reason"] = None
    gateway.script(Json(answer))
    assert run("complete", "--cache", cache, "--json", "hi").exit_code == 0
    assert entries(cache) == []


# --- modes ---------------------------------------------------------------------------------------


def test_refresh_always_asks_and_replaces_the_entry(run, gateway, cache):
    gateway.script(Json(completion("old")), Json(completion("new")))
    assert run("complete", "--cache", cache, "--no-stream", "q").stdout == "old\n"
    refreshed = run("complete", "--cache", cache, "--cache-mode", "refresh", "--no-stream", "q")
    assert refreshed.stdout == "new\n" and len(gateway.requests) == 2
    assert run("complete", "--cache", cache, "q").stdout == "new\n" and len(gateway.requests) == 2


def test_replay_answers_with_the_server_down_and_no_key(run, gateway, cache, tmp_path):
    assert run("complete", "--cache", cache, PROMPT).exit_code == 0
    # A key command that would leave a mark: a hit-only replay must never run it.
    marker = tmp_path / "key-command-ran"
    config = tmp_path / "config.yaml"
    config.write_text(f"profiles:\n  default:\n    api_key_command: touch {marker}; echo sk-from-command-123\n")
    config.chmod(0o600)
    down = f"http://127.0.0.1:{closed_port()}/v1"
    for env in ({"key": None}, {"key": None, "ANYFAST_CONFIG": str(config)}):
        # The key is the base URL's too: the server that answered is named by the key, not reached.
        result = run("complete", "--cache", cache, "--cache-mode", "replay", PROMPT, **env)
        check_output(result, "text")
    assert not marker.exists()
    moved = run("complete", "--cache", cache, "--cache-mode", "replay", "--base-url", down, PROMPT, key=None)
    assert moved.exit_code == 10  # another server is another question
    assert len(gateway.requests) == 1


def test_a_replay_miss_is_exit_10_naming_the_model_and_the_prompt(run, gateway, cache):
    cache.mkdir()
    result = run("chat", "--cache", cache, "--cache-mode", "replay", "-m", "glm-4-7", "one two " * 20, key=None)
    assert result.exit_code == 10
    lines = result.stderr.splitlines()
    assert lines[0].startswith("anyfast: error: not in the cache")
    assert "glm-4-7" in lines[0] and '"one two one two one two one two…"' in lines[0]
    assert len(lines) == 2 and lines[1].startswith("anyfast: hint:")
    assert gateway.requests == [] and result.stdout == ""
    missing = run("complete", "--cache", cache / "nope", "--cache-mode", "replay", "hi", key=None)
    assert missing.exit_code == 10 and "does not exist" in missing.stderr


def test_verbose_says_an_answer_came_from_the_cache(run, gateway, cache):
    miss = run("complete", "--cache", cache, "-v", "hi")
    [path] = entries(cache)
    assert f"anyfast: cache miss: a complete answer will be stored in {path}\n" in miss.stderr
    result = run("complete", "--cache", cache, "-v", "hi")
    assert f"anyfast: cache hit: {path} (stored " in result.stderr and "nothing sent" in result.stderr
    assert "POST" not in result.stderr and result.stdout == "echo: hi\n"


# --- what a hit costs ----------------------------------------------------------------------------


def test_a_hit_is_logged_at_no_cost_and_no_budget_stops_it(run, gateway, cache, tmp_path):
    log = tmp_path / "usage.jsonl"
    prices = tmp_path / "prices.yaml"
    prices.write_text("currency: USD\ndoubao-*: {input: 1000, output: 2000}\n")
    common = ["--cache", cache, "--usage-log", log, "--prices", prices]
    assert run("complete", *common, "--budget", "1000", PROMPT).exit_code == 0
    miss = whole_lines(log)[-1]
    assert miss["cache"] == "miss" and miss["cost"] > 0
    # The log now holds more than the cap: a new question is refused, a cached one answered.
    assert run("complete", *common, "--budget", "0.0001", "a new question").exit_code == 9
    hit = run("complete", *common, "--budget", "0.0001", "--budget-tokens", "1", "--usage", PROMPT)
    assert hit.exit_code == 0, hit.stderr
    assert hit.stdout == f"echo: {PROMPT}\n" and "from the cache, nothing spent" in hit.stderr
    line = whole_lines(log)[-1]
    assert line["cache"] == "hit" and line["status"] == "ok" and line["cost"] == 0
    assert [line[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")] == [0, 0, 0]
    assert line["request_id"] is None and line["model"] == DEFAULT_MODEL
    assert len(gateway.requests) == 1


def test_without_a_cache_a_request_logs_cache_null(run, gateway, tmp_path):
    log = tmp_path / "usage.jsonl"
    run("complete", "--usage-log", log, "hi")
    assert whole_lines(log)[-1]["cache"] is None


# --- entries on disk -----------------------------------------------------------------------------


def test_entries_are_private_and_hold_no_key_and_no_header(run, gateway, cache):
    old = os.umask(0)
    try:
        gateway.script(Json(completion(f"your key is {KEY}"), headers={"X-Secret-Header": "hdr-value-77"}))
        assert run("complete", "--cache", cache, "--no-stream", "hi").exit_code == 0
    finally:
        os.umask(old)
    [path] = entries(cache)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == stat.S_IMODE(cache.stat().st_mode) == 0o700
    text = path.read_text()
    assert KEY not in text and "your key is ***" in text and "hdr-value-77" not in text
    assert "authorization" not in text.lower()


CORRUPTIONS = {
    "empty": lambda path, data: path.write_bytes(b""),
    "truncated": lambda path, data: path.write_bytes(data[: len(data) // 2]),
    "not JSON": lambda path, data: path.write_bytes(b"\x00\xff garbage"),
    "another request's": lambda path, data: path.write_bytes(data.replace(path.stem.encode(), b"0" * 64)),
    "not complete": lambda path, data: path.write_bytes(data.replace(b'"stop"', b"null")),
    "not a completion": lambda path, data: path.write_bytes(data.replace(b'"choices"', b'"chosen"')),
    "nested too deep": lambda path, data: path.write_bytes(
        data.replace(b'"finish_reason"', b'"x":' + b"[" * 500 + b"]" * 500 + b',"finish_reason"')
    ),
    "oversized": lambda path, data: os.truncate(path, MAX_ENTRY_BYTES + 1),  # sparse: nothing written
    "a directory": lambda path, data: (path.unlink(), path.mkdir()),
    "a FIFO": lambda path, data: (path.unlink(), os.mkfifo(path)),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_an_entry_that_is_not_whole_is_a_miss_and_is_replaced(run, gateway, cache, corrupt):
    assert run("complete", "--cache", cache, "hi").exit_code == 0
    [path] = entries(cache)
    corrupt(path, path.read_bytes())
    replay = run("complete", "--cache", cache, "--cache-mode", "replay", "hi", key=None)
    assert replay.exit_code == 10, replay.stderr
    assert "Traceback" not in replay.stderr and "internal error" not in replay.stderr
    again = run("complete", "--cache", cache, "hi")
    assert again.exit_code == 0 and again.stdout == "echo: hi\n"
    assert "warning:" in again.stderr  # said once, so a broken cache does not pass unnoticed
    assert len(gateway.requests) == 2
    if path.is_file():  # replaced by a whole entry (a directory in its place cannot be)
        assert run("complete", "--cache", cache, "--cache-mode", "replay", "hi", key=None).exit_code == 0


def test_a_cache_that_cannot_be_written_warns_and_still_answers(run, gateway, cache):
    cache.mkdir()
    for number in range(256):  # a file where each entry's directory would go (root may write anywhere else)
        (cache / f"{number:02x}").write_text("")
    result = run("complete", "--cache", cache, "hi")
    assert result.exit_code == 0 and result.stdout == "echo: hi\n"
    assert "anyfast: warning: cannot store the answer in the cache" in result.stderr
    assert all(line.startswith("anyfast: warning:") for line in result.stderr.splitlines())


# --- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, words",
    [
        (["--cache-mode", "sometimes", "--cache", "d"], "--cache-mode (cache_mode) must be one of rw, refresh, replay"),
        (["--cache-mode", "replay"], "needs a cache directory"),
        (["--cache", ""], "--cache (cache) must be a directory name"),
    ],
)
def test_bad_cache_settings_are_exit_2(run, gateway, args, words):
    result = run("complete", *args, "hi")
    assert result.exit_code == 2 and words in result.stderr
    assert result.stderr.count("\n") <= 2 and "internal error" not in result.stderr
    assert gateway.requests == []


def test_a_cache_that_is_a_file_is_exit_2(run, gateway, tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    result = run("complete", "--cache", path, "hi")
    assert result.exit_code == 2 and "not a directory" in result.stderr and gateway.requests == []


def test_the_cache_comes_from_the_environment_and_the_profile(run, gateway, cache, tmp_path):
    run("complete", "hi", ANYFAST_CACHE=str(cache))
    assert len(entries(cache)) == 1
    shown = json.loads(run("config", "show", "--json", ANYFAST_CACHE=str(cache)).stdout)
    assert shown["cache"] == {"value": str(cache), "source": "environment"}
    assert shown["cache_mode"] == {"value": "rw", "source": "default"}
    config = tmp_path / "config.yaml"
    config.write_text(f"profiles:\n  default:\n    cache: {cache}\n    cache_mode: replay\n")
    result = run("complete", "hi", key=None, ANYFAST_CONFIG=str(config))
    assert result.exit_code == 0 and len(gateway.requests) == 1
    assert "cache" not in gateway.requests[0].body  # settings, not body fields


def test_nothing_cache_related_is_imported_without_a_cache(proc_env, gateway):
    import subprocess
    import sys

    code = (
        "import sys\nfrom anyfast_cli.cli import main\nsys.argv = ['anyfast', 'complete', 'hi']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('anyfast_cli.') and 'cache' in m or 'assembly' in m))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=proc_env, capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines()[-1] == "[]", done.stdout + done.stderr
    assert done.stdout.startswith("echo: hi")


def test_a_store_replaces_whatever_is_there_atomically(tmp_path):
    cache = ResponseCache(str(tmp_path / "c"))
    response = completion("x")
    key = "ab" * 32
    assert cache.store(key, response) == cache.entry_path(key)
    assert cache.store(key, completion("y")) == cache.entry_path(key)
    assert cache.lookup(key).response["choices"][0]["message"]["content"] == "y"
    assert [p.name for p in (tmp_path / "c" / "ab").iterdir()] == [key + ".json"]  # no temporary file left


# --- concurrent writers, kill -9 -----------------------------------------------------------------

WRITER = """
import sys
from anyfast_cli.cache import ResponseCache
cache, me, keys = ResponseCache(sys.argv[1]), sys.argv[2], sys.argv[3].split(",")
print("ready", flush=True)
for n in range(10**9):
    text = f"{me}:{n}:" + "x" * 2_000_000  # large, so that a kill often lands inside a write
    for key in keys:
        cache.store(key, {"id": "c", "choices": [{"index": 0, "message": {"content": text}, "finish_reason": "stop"}]})
"""


def test_concurrent_writers_killed_mid_write_never_leave_a_half_entry_that_is_read(tmp_path):
    import random
    import subprocess
    import sys
    import time

    directory = tmp_path / "cache"
    keys = ["a" * 64, "b" * 64]
    warnings: list = []
    reader = ResponseCache(str(directory), warn=warnings.append)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(directory), str(me), ",".join(keys)], stdout=subprocess.PIPE, text=True
        )
        for me in range(4)
    ]
    try:
        for writer in writers:
            assert writer.stdout.readline() == "ready\n"
        seen = set()
        deadline = time.monotonic() + 10
        while len(seen) < 8 and time.monotonic() < deadline:  # reading while they write
            for key in keys:
                hit = reader.lookup(key)
                if hit is not None:
                    text = hit.response["choices"][0]["message"]["content"]
                    assert len(text) == len(text.split(":")[0]) + len(text.split(":")[1]) + 2 + 2_000_000
                    seen.add(text[:12])
        for writer in writers:  # kill -9, each at its own moment
            time.sleep(random.uniform(0, 0.05))
            writer.kill()
    finally:
        for writer in writers:
            writer.kill()
            writer.wait()
    assert len(seen) >= 8, "the writers did not get going"
    for key in keys:
        assert reader.lookup(key) is not None  # the last whole entry each key had
    assert warnings == []  # not one entry was read half-written
    from anyfast_cli.cache import cache_stats, prune_cache

    leftovers = [p for p in directory.rglob(".tmp-*")]
    assert cache_stats(str(directory)).entries == 2  # temporary files are not entries
    assert prune_cache(str(directory), 0, now=time.time() + 1).entries == 2
    assert list(directory.rglob("*")) == [], leftovers  # the temporary files kill -9 left went too


# --- anyfast cache stats / prune -----------------------------------------------------------------


def test_cache_stats_and_prune(run, gateway, cli, cache):
    import time

    paths = []  # in the order of the prompts: 40, 10 and 0 days old
    for prompt in ("one", "two", "three"):
        assert run("complete", "--cache", cache, prompt).exit_code == 0
        paths += sorted(set(entries(cache)) - set(paths))
    (paths[0].parent / ".tmp-abandoned.json").write_text("{")  # a write kill -9 cut short: not an entry
    now = time.time()
    for age_days, path in zip((40, 10, 0), paths):
        os.utime(path, (now - age_days * 86400, now - age_days * 86400))
    stats = cli("cache", "stats", cache)
    assert stats.exit_code == 0, stats.stderr
    rows = dict(line.split("\t") for line in stats.stdout.splitlines())
    assert list(rows) == ["entries", "bytes", "oldest", "newest"]
    assert rows["entries"] == "3" and int(rows["bytes"]) == sum(p.stat().st_size for p in paths)
    assert rows["oldest"][:10] == time.strftime("%Y-%m-%d", time.gmtime(now - 40 * 86400))
    # The configured cache is the default DIR.
    assert cli("cache", "stats", ANYFAST_CACHE=str(cache)).stdout == stats.stdout
    pruned = cli("cache", "prune", cache, "--older-than", "30d")
    assert pruned.exit_code == 0 and pruned.stdout.startswith("removed 1 entry (")
    assert entries(cache) == sorted(paths[1:])
    assert cli("cache", "prune", "--older-than", "1w", ANYFAST_CACHE=str(cache)).stdout.startswith("removed 1 entry")
    assert run("complete", "--cache", cache, "--cache-mode", "replay", "three", key=None).exit_code == 0
    assert cli("cache", "prune", cache, "--older-than", "0s").stdout.startswith("removed 1 entry")
    assert cli("cache", "stats", cache).stdout == "entries\t0\nbytes\t0\noldest\t-\nnewest\t-\n"


@pytest.mark.parametrize(
    "args, words",
    [
        (["stats"], "which cache?"),
        (["stats", "/nonexistent/cache"], "no cache at /nonexistent/cache"),
        (["prune", "DIR", "--older-than", "soon"], "--older-than 'soon': expected a duration"),
        (["prune", "DIR", "--older-than", "9" * 400 + "d"], "expected a duration"),
        (["prune", "DIR"], "Missing option '--older-than'"),
    ],
)
def test_cache_commands_refuse_bad_input_with_exit_2(cli, tmp_path, args, words):
    (tmp_path / "DIR").mkdir()
    result = cli("cache", *[str(tmp_path / a) if a == "DIR" else a for a in args])
    assert result.exit_code == 2 and words in result.stderr, result.stderr
    assert "internal error" not in result.stderr


# --- a whole answer replayed as a stream -----------------------------------------------------------


def test_a_whole_answer_as_a_chunk_keeps_choices_and_tool_calls_apart():
    """Without ids or indexes, a whole answer's choices and calls are told apart by position;
    as a chunk they must say so by index, or a stream reader joins them."""
    from anyfast_cli.exchange import Reply, whole_as_chunk

    call = {"type": "function", "function": {"name": "f", "arguments": "{}"}}
    response = {
        "choices": [
            {"message": {"content": "first", "tool_calls": [call, call]}, "finish_reason": "tool_calls"},
            {"message": {"content": "second"}, "finish_reason": "stop"},
        ]
    }
    reply = Reply()
    reply.absorb(whole_as_chunk(response))
    assert len(reply.calls(0)) == 2 and reply.content == "first"
    assert reply.others[1].content == "second"
