"""The usage log (usagelog.py): whole lines under a lock from many real processes, mode 0600,
torn lines ended, read back incrementally by budgets; paths that cannot be a log are exit 2
before anything is sent."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import KEY, ROOT, WAIT, whole_lines

from anyfast_cli.errors import UsageError
from anyfast_cli.usagelog import LogTally, UsageLog, read_lines

PROCESSES = 48


def line(**fields) -> dict:
    return {"ts": "2026-12-01T00:00:00.000Z", "model": "m", "cost": None, "total_tokens": None, **fields}


def raw(**fields) -> bytes:
    return (json.dumps(line(**fields)) + "\n").encode()


# --- appending ---------------------------------------------------------------------------------


def test_a_new_log_is_created_with_mode_0600(tmp_path):
    path = tmp_path / "usage.jsonl"
    old = os.umask(0)  # a permissive umask must not widen it
    try:
        log = UsageLog(str(path))
    finally:
        os.umask(old)
    log.append(line(cost=1.5))
    log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert whole_lines(path) == [line(cost=1.5)]


def test_an_existing_log_keeps_its_mode_and_lines(tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_bytes(raw(cost=1))
    path.chmod(0o640)
    log = UsageLog(str(path))
    log.append(line(cost=2))
    log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [entry["cost"] for entry in whole_lines(path)] == [1, 2]


def test_a_line_is_one_json_object_with_text_as_utf8(tmp_path):
    path = tmp_path / "usage.jsonl"
    log = UsageLog(str(path))
    log.append(line(profile="工作", custom_id="a\nb"))
    log.close()
    data = path.read_bytes()
    assert data.count(b"\n") == 1 and "工作".encode() in data
    assert json.loads(data)["custom_id"] == "a\nb"


def test_a_torn_last_line_is_ended_so_the_next_line_stays_readable(tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_bytes(raw(cost=1) + b'{"ts":"2026-12-01T00:00:00.000Z","cost":0.')  # a writer killed mid-line
    log = UsageLog(str(path))
    log.append(line(cost=2))
    log.append(line(cost=3))
    log.close()
    lines = list(read_lines(str(path)))
    assert [number for number, _ in lines] == [1, 2, 3, 4]
    assert lines[1][1] is None  # the torn one spoils only itself
    assert [entry["cost"] for _, entry in lines if entry] == [1, 2, 3]
    assert path.read_bytes().endswith(b"\n")


def test_an_empty_log_gets_no_leading_newline(tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_bytes(b"")
    log = UsageLog(str(path))
    log.append(line())
    log.close()
    assert path.read_bytes().startswith(b"{")


def test_48_real_processes_started_at_once_lose_and_interleave_nothing(gateway, proc_env, tmp_path, monkeypatch):
    """The acceptance item: 48 `anyfast complete` processes on one log, each appending its one
    line when its request ends. The gateway answers none until all 48 have asked, then all of
    them at once, so their appends meet."""
    path = tmp_path / "usage.jsonl"
    # Bytecode compiled once, by one unlogged run, not in each of the 48 (with PYTHONDONTWRITEBYTECODE
    # set, every process compiles the package again: a fifth of its start-up), and kept out of the tree.
    environment = {**proc_env, "PYTHONPYCACHEPREFIX": str(tmp_path / "pycache")}
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    warm = [sys.executable, "-m", "anyfast_cli", "complete", "-n", "--no-stream", "warm"]
    subprocess.run(warm, env=environment, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, timeout=WAIT)
    gateway.reset()
    original = gateway._default_reply

    async def together(request):
        deadline = time.monotonic() + WAIT
        while len(gateway.requests) < PROCESSES and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return await original(request)

    monkeypatch.setattr(gateway, "_default_reply", together)
    environment["ANYFAST_USAGE_LOG"] = str(path)
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "anyfast_cli", "complete", "-n", "--no-stream", f"prompt number {i}"],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        for i in range(PROCESSES)
    ]
    outcomes = [child.communicate(timeout=WAIT * 2) for child in children]
    assert [child.returncode for child in children] == [0] * PROCESSES, [err for _, err in outcomes if err][:3]
    assert sorted(out for out, _ in outcomes) == sorted(f"echo: prompt number {i}\n".encode() for i in range(PROCESSES))
    entries = whole_lines(path)  # every line whole JSON, the file ends with a newline
    assert len(entries) == PROCESSES == len(gateway.requests)
    assert all(entry["status"] == "ok" and entry["command"] == "complete" for entry in entries)
    assert len({entry["request_id"] for entry in entries}) == PROCESSES
    assert len({entry["body_sha256"] for entry in entries}) == PROCESSES  # each prompt's own body
    data = path.read_bytes()
    assert b"prompt number" not in data and KEY.encode() not in data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


HAMMER = textwrap.dedent(
    """
    import sys
    from anyfast_cli.usagelog import UsageLog
    log = UsageLog(sys.argv[1])
    me = int(sys.argv[2])
    pad = "x" * 6000  # lines past a pipe's atomic 4 KiB, as a long custom_id makes them
    for i in range(int(sys.argv[3])):
        log.append({"writer": me, "seq": i, "custom_id": pad})
    """
)


def test_long_lines_from_many_writers_never_tear_one_another(tmp_path):
    """Many appends each, of lines longer than any size a write is atomic for without the lock."""
    path = tmp_path / "usage.jsonl"
    writers, each = 12, 150
    children = [
        subprocess.Popen([sys.executable, "-c", HAMMER, str(path), str(w), str(each)], cwd=ROOT) for w in range(writers)
    ]
    assert [child.wait(timeout=WAIT) for child in children] == [0] * writers
    entries = whole_lines(path)
    assert len(entries) == writers * each
    for w in range(writers):  # each writer's lines all there, in its own order
        assert [entry["seq"] for entry in entries if entry["writer"] == w] == list(range(each))


# --- LogTally: what budgets read -----------------------------------------------------------------


def test_the_tally_reads_only_what_was_appended_since(tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_bytes(raw(cost=0.25, total_tokens=100) + raw(cost=0.5, total_tokens=50))
    tally = LogTally(str(path))
    tally.refresh()
    assert (tally.cost, tally.tokens) == (0.75, 150)
    # rewrite what was already read (same length): a tally that re-read it would count 10.75 and 957
    path.write_bytes(raw(cost=9.25, total_tokens=900) + raw(cost=0.5, total_tokens=50))
    with open(path, "ab") as file:
        file.write(raw(cost=1, total_tokens=7))
    tally.refresh()
    assert (tally.cost, tally.tokens) == (1.75, 157)
    tally.refresh()  # nothing new: nothing more
    assert (tally.cost, tally.tokens) == (1.75, 157)


def test_the_tally_waits_on_a_line_still_being_written(tmp_path):
    path = tmp_path / "usage.jsonl"
    whole = raw(cost=2, total_tokens=20)
    path.write_bytes(raw(cost=1, total_tokens=10) + whole[:25])
    tally = LogTally(str(path))
    tally.refresh()
    assert (tally.cost, tally.tokens, tally.skipped.count) == (1, 10, 0)
    with open(path, "ab") as file:
        file.write(whole[25:])
    tally.refresh()
    assert (tally.cost, tally.tokens, tally.skipped.count) == (3, 30, 0)


def test_the_tally_counts_null_and_odd_values_as_zero(tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_bytes(
        raw(cost=None, total_tokens=None)
        + raw(cost="1.5", total_tokens="10")
        + raw(cost=True, total_tokens=True)
        + raw(cost=-4, total_tokens=-4)
        + b'{"ts":"x"}\n'
        + raw(cost=0.5, total_tokens=5)
    )
    tally = LogTally(str(path))
    tally.refresh()
    assert (tally.cost, tally.tokens, tally.skipped.count) == (0.5, 5, 0)


def test_the_tally_counts_numbers_no_writer_meant_as_zero(tmp_path):
    """1e400 is JSON that reads as infinity (NaN and Infinity are Python's own): counted, they
    would stop every later run for ever, or fail as an int (once an internal error)."""
    path = tmp_path / "usage.jsonl"
    path.write_bytes(
        b'{"cost": 1e400, "total_tokens": 1e400}\n'
        b'{"cost": NaN, "total_tokens": NaN}\n'
        b'{"cost": Infinity, "total_tokens": -Infinity}\n'
        b'{"cost": 1, "total_tokens": ' + b"9" * 400 + b"}\n" + raw(cost=0.5, total_tokens=5)
    )
    tally = LogTally(str(path))
    tally.refresh()
    assert (tally.cost, tally.tokens) == (1.5, 5)


def test_the_tally_skips_unreadable_lines_and_names_the_first(tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_bytes(raw(total_tokens=1) + b"\n" + b"not json\n" + raw(total_tokens=2) + b"[1, 2]\n" + b'{"cost": 1,\n')
    tally = LogTally(str(path))
    tally.refresh()
    assert tally.tokens == 3
    assert (tally.skipped.count, tally.skipped.first) == (3, 3)  # the blank line 2 is no line at all
    with open(path, "ab") as file:
        file.write(b"\xff\xfe\n" + raw(total_tokens=4))
    tally.refresh()
    assert tally.tokens == 7 and (tally.skipped.count, tally.skipped.first) == (4, 3)


def test_the_tally_of_a_log_not_yet_written_is_zero(tmp_path):
    tally = LogTally(str(tmp_path / "not-yet.jsonl"))
    tally.refresh()
    assert (tally.cost, tally.tokens) == (0, 0)


def test_the_tally_adds_no_cost_recorded_in_another_currency(tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_bytes(
        raw(total_tokens=1, cost=1, currency="USD")
        + raw(total_tokens=2, cost=7, currency="CNY")
        + raw(total_tokens=4, cost=2, currency=None)
    )
    tally = LogTally(str(path), "USD")
    tally.refresh()
    assert (tally.cost, tally.tokens, tally.foreign) == (3, 7, 1)  # tokens know no currency


def test_the_tally_reads_across_its_block_size(tmp_path, monkeypatch):
    import anyfast_cli.usagelog

    monkeypatch.setattr(anyfast_cli.usagelog, "READ_BLOCK", 100)  # lines of ~90 bytes straddle blocks
    path = tmp_path / "usage.jsonl"
    path.write_bytes(b"".join(raw(total_tokens=i, cost=1) for i in range(1, 201)))
    tally = LogTally(str(path))
    tally.refresh()
    assert (tally.tokens, tally.cost, tally.skipped.count) == (sum(range(1, 201)), 200, 0)


def test_read_lines_streams_every_line_with_its_number(tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_bytes(raw(cost=1) + b"\n  \n" + b"oops\n" + b'"a string"\n' + raw(cost=2).rstrip(b"\n"))
    assert [(number, entry and entry["cost"]) for number, entry in read_lines(str(path))] == [
        (1, 1),
        (4, None),
        (5, None),
        (6, 2),
    ]


# --- paths that cannot be a log: exit 2, before anything is sent ---------------------------------


def unwritable(tmp_path):
    return str(tmp_path / "no-such-dir" / "usage.jsonl")


def directory(tmp_path):
    return str(tmp_path)


def fifo(tmp_path):
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return str(path)


BAD_PATHS = [unwritable, directory, fifo]


@pytest.mark.parametrize("make", BAD_PATHS)
def test_a_path_that_cannot_be_a_log_is_refused(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(UsageError) as caught:
        UsageLog(path)
    assert path in caught.value.message and caught.value.exit_code == 2


@pytest.mark.parametrize("make", BAD_PATHS)
@pytest.mark.parametrize("how", ["flag", "environment"])
@pytest.mark.parametrize("command", [["complete", "hi"], ["complete", "--no-stream", "hi"], ["chat", "hi"]])
def test_a_path_that_cannot_be_a_log_is_exit_2_before_sending(run, gateway, tmp_path, make, how, command):
    path = make(tmp_path)
    if how == "flag":
        result = run(command[0], "--usage-log", path, *command[1:])
    else:
        result = run(*command, ANYFAST_USAGE_LOG=path)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith(f"anyfast: error: usage log {path}"), result.stderr
    assert "Traceback" not in result.stderr
    assert gateway.requests == []


def test_a_log_path_from_the_config_that_is_a_directory_is_exit_2(run, gateway, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"profiles:\n  default:\n    usage_log: {tmp_path}\n")
    result = run("complete", "--config", config, "hi")
    assert result.exit_code == 2 and "is a directory" in result.stderr
    assert gateway.requests == []


def test_a_log_that_cannot_be_written_is_refused(tmp_path, monkeypatch):
    """Permission denied for reading and writing alike (as for a user other than root on a
    0444 file): exit 2, naming the path and why."""
    path = tmp_path / "usage.jsonl"
    real_open = os.open

    def denied(name, flags, *args):
        if name == str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(name, flags, *args)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(UsageError) as caught:
        UsageLog(str(path))
    assert caught.value.message == f"usage log {path}: cannot be written: Permission denied"
    assert caught.value.hint and "--usage-log" in caught.value.hint


def test_a_log_that_can_be_written_but_not_read_is_appended_to(tmp_path, monkeypatch):
    """A write-only log (O_RDWR refused): lines are appended all the same."""
    path = tmp_path / "usage.jsonl"
    real_open = os.open

    def no_read(name, flags, *args):
        if name == str(path) and flags & os.O_RDWR:
            raise PermissionError(13, "Permission denied")
        return real_open(name, flags, *args)

    monkeypatch.setattr(os, "open", no_read)
    log = UsageLog(str(path))
    log.append(line(cost=1))
    log.close()
    assert whole_lines(path) == [line(cost=1)]
