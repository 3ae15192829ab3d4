"""Nothing of the user's is destroyed (issue 10, class 4): batch's input and results,
saved conversations, links and devices; and SIGTERM/SIGHUP end a run as Ctrl-C does.

Real processes where the case needs them (stdin that is a file, a second batch at the
same time, signals); the Typer app in-process for the rest.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest
import yaml
from gateway import Sse, chunk, sse_events
from helpers import WAIT, whole_lines
from typer.testing import CliRunner

from anyfast_cli.batch.jobs import JobOptions, scan_input
from anyfast_cli.batch.progress import Tally
from anyfast_cli.cli import app, ending_signals_interrupt
from anyfast_cli.commands.batch import CheckedRecords, batch_exit_code
from anyfast_cli.errors import ExitCode, Terminated
from anyfast_cli.files import replacement_problem, write_atomic_lines

# --- helpers --------------------------------------------------------------------------------


def anyfast(*args) -> list[str]:
    return [sys.executable, "-m", "anyfast_cli", *map(str, args)]


def write_records(path, count: int, prefix: str = "prompt"):
    path.write_text(
        "".join(json.dumps({"custom_id": f"r{i:03d}", "prompt": f"{prefix} {i}"}) + "\n" for i in range(count))
    )
    return path


def invoke(*args, input=None):
    return CliRunner().invoke(app, [*map(str, args)], input=input)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("anyfast: error: ")]


def temporary_files(directory) -> list[str]:
    return [name for name in os.listdir(directory) if name.startswith(".anyfast-")]


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


# --- batch: the output is never the input ------------------------------------------------------


def test_stdin_that_is_the_output_file_is_refused_and_left_whole(gateway, proc_env, tmp_path):
    data = write_records(tmp_path / "x.jsonl", 3)
    before = data.read_bytes()
    with open(data, "rb") as stdin:  # `anyfast batch -o x.jsonl < x.jsonl`
        done = subprocess.run(
            anyfast("batch", "-o", data), stdin=stdin, env=proc_env, capture_output=True, timeout=WAIT
        )
    assert done.returncode == ExitCode.USAGE, done.stderr.decode()
    assert "is the input" in done.stderr.decode()
    assert data.read_bytes() == before
    assert gateway.requests == []


@pytest.mark.parametrize("how", ["path", "symlink", "hardlink"])
def test_an_output_that_is_the_input_by_any_name_is_refused(env, gateway, tmp_path, how):
    data = write_records(tmp_path / "in.jsonl", 3)
    before = data.read_bytes()
    output = tmp_path / "out.jsonl"
    if how == "path":
        output = tmp_path / "." / "in.jsonl"
    elif how == "symlink":
        output.symlink_to(data)
    else:
        os.link(data, output)
    for extra in ([], ["--resume"], ["--dry-run"]):
        result = invoke("batch", data, "-o", output, *extra)
        assert result.exit_code == ExitCode.USAGE, result.stderr
        assert "is the input" in result.stderr
    assert data.read_bytes() == before
    assert gateway.requests == []


def test_dev_null_as_input_and_output_is_not_the_same_file(env, gateway, tmp_path):
    result = invoke("batch", os.devnull, "-o", os.devnull)
    assert result.exit_code == 0, result.stderr


# --- batch --dry-run never writes over results -------------------------------------------------------


def test_resume_dry_run_leaves_the_results_alone_and_prints_what_resume_would_send(env, gateway, tmp_path):
    data = write_records(tmp_path / "in.jsonl", 4)
    results = tmp_path / "results.jsonl"
    assert invoke("batch", data, "-o", results, "--shard", "1/2").exit_code == 0  # r000 and r002 answered
    before = results.read_bytes()
    gateway.requests.clear()

    result = invoke("batch", data, "--resume", "--dry-run", "-o", results)
    assert result.exit_code == 0, result.stderr
    assert results.read_bytes() == before
    assert [json.loads(line)["custom_id"] for line in result.stdout.splitlines()] == ["r001", "r003"]
    assert gateway.requests == []


def test_dry_run_refuses_to_write_over_a_results_file(env, gateway, tmp_path):
    data = write_records(tmp_path / "in.jsonl", 2)
    results = tmp_path / "results.jsonl"
    assert invoke("batch", data, "-o", results).exit_code == 0
    before = results.read_bytes()
    result = invoke("batch", data, "--dry-run", "-o", results)
    assert result.exit_code == ExitCode.USAGE
    assert error_lines(result.stderr) == [f"anyfast: error: --dry-run would write over {results}, which is not empty"]
    assert "anyfast: hint: leave out -o" in result.stderr
    assert results.read_bytes() == before


@pytest.mark.parametrize("exists", [False, True], ids=["new", "empty"])
def test_dry_run_writes_a_new_or_empty_file(env, gateway, tmp_path, exists):
    data = write_records(tmp_path / "in.jsonl", 2)
    output = tmp_path / "requests.jsonl"
    if exists:
        output.write_bytes(b"")
    result = invoke("batch", data, "--dry-run", "-o", output)
    assert result.exit_code == 0, result.stderr
    assert [line["custom_id"] for line in whole_lines(output)] == ["r000", "r001"]


# --- batch holds a lock on its output ---------------------------------------------------------------


def hold_lock(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


@pytest.mark.parametrize("resume", [False, True], ids=["new run", "resume"])
def test_an_output_another_batch_holds_is_refused_before_anything_is_sent(env, gateway, tmp_path, resume):
    data = write_records(tmp_path / "in.jsonl", 3)
    results = tmp_path / "results.jsonl"
    assert invoke("batch", data, "-o", results, "--shard", "1/3").exit_code == 0
    before = results.read_bytes()
    gateway.requests.clear()
    fd = hold_lock(results)
    try:
        result = invoke("batch", data, "-o", results, *(["--resume"] if resume else []))
    finally:
        os.close(fd)
    assert result.exit_code == ExitCode.USAGE
    assert error_lines(result.stderr) == [
        f"anyfast: error: {results} is in use: another anyfast batch is writing to it"
    ]
    assert results.read_bytes() == before  # not emptied, not rewritten
    assert gateway.requests == []
    assert temporary_files(tmp_path) == []


def test_two_resumes_at_once_the_second_stops_and_the_first_finishes_exactly_once(gateway, proc_env, tmp_path, behave):
    """Overlapping cron runs: the lock is held from before the --resume rewrite (which
    replaces the file) to the end, so the second run meets it whenever it starts."""
    release = threading.Event()  # the gateway holds the first run's later answers until the second run is done
    answered = itertools.count(1)

    async def held(prompt):
        if next(answered) > 12:  # the first run's 10, then 2 of the resume's
            while not release.is_set():
                await asyncio.sleep(0.01)

    behave(held)
    data = write_records(tmp_path / "in.jsonl", 30)
    results = tmp_path / "results.jsonl"
    first = subprocess.run(
        anyfast("batch", data, "-o", results, "--shard", "1/3"), env=proc_env, capture_output=True, timeout=WAIT
    )
    assert first.returncode == 0, first.stderr.decode()
    one = subprocess.Popen(
        anyfast("batch", data, "-o", results, "--resume", "-j", "2"),
        env=proc_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(
            lambda: results.read_bytes().count(b"\n") > 11, "the first run to write answers"
        )  # after its rewrite
        sent = len(gateway.requests)
        two = subprocess.run(
            anyfast("batch", data, "-o", results, "--resume"), env=proc_env, capture_output=True, timeout=WAIT
        )
        assert two.returncode == ExitCode.USAGE, two.stderr.decode()
        assert len(error_lines(two.stderr.decode())) == 1 and "is in use" in two.stderr.decode()
        assert one.poll() is None  # the first run was still going, holding the lock, all along
        release.set()
        assert one.wait(timeout=WAIT) == 0, one.stderr.read().decode()
    finally:
        release.set()
        one.kill()
        one.wait()
        one.stderr.close()
    assert len(gateway.requests) - sent <= 30  # the second run sent nothing: only the first's remaining records
    lines = whole_lines(results)
    assert sorted(line["custom_id"] for line in lines) == [f"r{i:03d}" for i in range(30)]
    assert len(gateway.requests) == 30


def test_the_lock_goes_with_the_run(env, gateway, tmp_path):
    data = write_records(tmp_path / "in.jsonl", 2)
    results = tmp_path / "results.jsonl"
    assert invoke("batch", data, "-o", results).exit_code == 0
    os.close(hold_lock(results))  # free again once the batch has ended
    assert invoke("batch", data, "-o", results, "--resume").exit_code == 0


def test_an_output_that_is_a_device_is_written_unlocked(env, gateway, tmp_path):
    data = write_records(tmp_path / "in.jsonl", 2)
    fd = hold_lock(os.devnull)  # another process writing to /dev/null must not stop us
    try:
        assert invoke("batch", data, "-o", os.devnull).exit_code == 0
    finally:
        os.close(fd)


# --- batch sends only what it validated -----------------------------------------------------------


def lines_of(*items) -> list[bytes]:
    return [(json.dumps(item) + "\n").encode() for item in items]


def checked(first: list[bytes], second: list[bytes]) -> tuple[list[str], CheckedRecords]:
    options = JobOptions(model="m")
    scan = scan_input(first, options)
    records = CheckedRecords(scan, "in.jsonl")
    return [record.id for record in records.records(second, options, None)], records


def test_a_line_changed_after_validation_is_not_sent():
    first = lines_of({"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"}, {"id": "c", "prompt": "three"})
    second = lines_of({"id": "a", "prompt": "one"}, {"id": "b", "prompt": "EDITED"}, {"id": "c", "prompt": "three"})
    sent, records = checked(first, second)
    assert sent == ["a", "c"]
    assert records.unchecked == 1 and list(records.pending) == ["b"]  # b's checked request was not run


@pytest.mark.parametrize(
    "second",
    [
        lines_of({"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"}, {"id": "z", "prompt": "appended"}),
        lines_of({"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"}, {"id": "a", "prompt": "one"}),
        lines_of({"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"}) + [b"{not json\n"],
        lines_of(
            {"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"}, {"id": "b", "prompt": "two", "temperature": 9}
        ),
    ],
    ids=["appended", "duplicated", "broken", "invalid"],
)
def test_lines_added_after_validation_are_never_sent(second):
    sent, records = checked(lines_of({"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"}), second)
    assert sent == ["a", "b"]
    assert records.unchecked == 1


DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize(
    "changed",
    [
        b'{"id": "b", "prompt": "\\ud800"}\n',  # a lone surrogate
        b'{"id": "b", "prompt": "two", "seed": NaN}\n',
        b'{"id": "b", "prompt": "two", "seed": 1e999}\n',
        b'{"id": "b", "prompt": "two", "seed": ' + b"1" * 5000 + b"}\n",
        b'{"id": "b", "prompt": "two", "user": ' + DEEP.encode() + b"}\n",
        b'{"id": "b", "messages": [{"role": "user", "content": ' + DEEP.encode() + b"}]}\n",
        b'{"id": "b", "prompt": "two", "schema": {"type": 5}}\n',
        b'{"id": "\\udc00", "prompt": "two"}\n',
    ],
    ids=["surrogate", "NaN", "1e999", "5000 digits", "deep field", "deep content", "bad schema", "surrogate id"],
)
def test_a_line_changed_into_what_validation_refuses_is_never_sent(changed):
    # The second pass does not repeat the value checks: the fingerprint is what stops these.
    first = lines_of({"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"})
    sent, records = checked(first, [first[0], changed])
    assert sent == ["a"]
    assert records.unchecked == 1


def test_records_not_run_are_never_exit_0():
    assert batch_exit_code(Tally(total=3, ok=3)) == ExitCode.OK
    assert batch_exit_code(Tally(total=3, ok=2)) == ExitCode.BATCH_PARTIAL
    assert batch_exit_code(Tally(total=2, ok=2), unchecked=1) == ExitCode.BATCH_PARTIAL
    assert batch_exit_code(Tally(total=2, failed=2, rate_limited=2)) == ExitCode.RATE_LIMITED


def test_an_input_rewritten_during_the_run_sends_only_validated_records(env, gateway, tmp_path, behave):
    data = write_records(tmp_path / "in.jsonl", 600)  # more than the reader buffers at once
    changed = threading.Event()

    def rewrite(prompt):
        if not changed.is_set():  # the first request: rewrite the whole input, as an editor saving it would
            changed.set()
            write_records(data, 650, prefix="edited")
        return None

    behave(rewrite)
    result = invoke("batch", data, "-o", tmp_path / "out.jsonl", "-j", "1")
    assert result.exit_code == ExitCode.BATCH_PARTIAL, result.stderr
    assert all(r.body["messages"][-1]["content"].startswith("prompt ") for r in gateway.requests)
    assert " not run" in result.stderr
    [error] = error_lines(result.stderr)
    assert "changed while batch read it" in error and "were not sent" in error
    assert "--resume" in result.stderr  # the hint


# --- batch --resume says what it drops ------------------------------------------------------------


def test_resume_with_another_input_says_how_many_answers_it_drops_and_keeps_them(env, gateway, tmp_path):
    first = write_records(tmp_path / "first.jsonl", 5)
    results = tmp_path / "results.jsonl"
    assert invoke("batch", first, "-o", results).exit_code == 0
    answers = results.read_bytes()
    other = tmp_path / "other.jsonl"
    other.write_text(
        json.dumps({"custom_id": "r000", "prompt": "prompt 0"})
        + "\n"
        + json.dumps({"custom_id": "r001", "prompt": "a new prompt"})
        + "\n"
    )
    result = invoke("batch", other, "-o", results, "--resume")
    assert result.exit_code == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warning == [
        f"anyfast: warning: --resume drops 4 answer(s) in {results}: 3 to ids that are not among this run's "
        f"records and 1 to requests that have changed since (they are sent again); "
        f"they are kept in {results}.dropped"
    ]
    dropped = whole_lines(f"{results}.dropped")
    assert sorted(line["custom_id"] for line in dropped) == ["r001", "r002", "r003", "r004"]
    assert {json.dumps(line, separators=(",", ":")).encode() for line in dropped} <= set(answers.splitlines())
    assert sorted(line["custom_id"] for line in whole_lines(results)) == ["r000", "r001"]


def test_resume_that_drops_nothing_says_nothing(env, gateway, tmp_path):
    data = write_records(tmp_path / "in.jsonl", 3)
    results = tmp_path / "results.jsonl"
    assert invoke("batch", data, "-o", results, "--shard", "1/2").exit_code == 0
    result = invoke("batch", data, "-o", results, "--resume")
    assert result.exit_code == 0 and "warning" not in result.stderr
    assert not os.path.exists(f"{results}.dropped")


# --- the --resume rewrite keeps links and leaves no temporary file -------------------------------------


def test_resume_through_a_symlink_rewrites_the_target_and_keeps_the_link(env, gateway, tmp_path):
    data = write_records(tmp_path / "in.jsonl", 4)
    real = tmp_path / "store" / "results.jsonl"
    real.parent.mkdir()
    link = tmp_path / "results.jsonl"
    link.symlink_to(real)
    assert invoke("batch", data, "-o", link, "--shard", "1/2").exit_code == 0
    assert invoke("batch", data, "-o", link, "--resume").exit_code == 0
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert sorted(line["custom_id"] for line in whole_lines(real)) == ["r000", "r001", "r002", "r003"]


def test_a_signal_during_an_atomic_write_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b"old\n")

    def chunks():
        yield b"new\n"
        os.kill(os.getpid(), signal.SIGTERM)  # as timeout(1) would, in the middle of the rewrite
        yield b"more\n"

    with ending_signals_interrupt(), pytest.raises(Terminated) as raised:
        write_atomic_lines(str(path), chunks())
    assert raised.value.signum == signal.SIGTERM
    assert path.read_bytes() == b"old\n"
    assert temporary_files(tmp_path) == []


# --- SIGTERM and SIGHUP end a run as Ctrl-C does ------------------------------------------------------


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["TERM", "HUP"])
def test_a_batch_ended_by_a_signal_prints_its_summary_and_leaves_whole_lines(
    gateway, proc_env, tmp_path, signum, status
):
    gateway.latency = 0.1
    data = write_records(tmp_path / "in.jsonl", 40)
    results = tmp_path / "results.jsonl"
    process = subprocess.Popen(
        anyfast("batch", data, "-o", results, "-j", "4"), env=proc_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    wait_until(lambda: results.exists() and results.read_bytes().count(b"\n") >= 2, "answers")
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=WAIT)
    assert process.returncode == status, stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert "not run (interrupted)" in stderr.decode()  # the summary
    assert stdout == b""
    partial = whole_lines(results)
    assert 2 <= len(partial) < 40
    gateway.latency = 0  # only the interrupted run needed slow answers
    done = subprocess.run(
        anyfast("batch", data, "-o", results, "--resume"), env=proc_env, capture_output=True, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr.decode()
    assert sorted(line["custom_id"] for line in whole_lines(results)) == [f"r{i:03d}" for i in range(40)]
    assert temporary_files(tmp_path) == []


def slow_stream(pieces: int = 400) -> Sse:
    return Sse(sse_events(*[chunk(f"word{i} ") for i in range(pieces)], chunk(finish="stop")), delay=0.02)


@pytest.mark.parametrize("command", [["complete", "hi"], ["chat", "hi"]])
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["TERM", "HUP"])
def test_a_stream_ended_by_a_signal_ends_its_line(gateway, proc_env, command, signum, status):
    gateway.script(slow_stream())
    process = subprocess.Popen(
        anyfast(*command), env=proc_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout.read(1)
        time.sleep(0.1)  # into the stream, where a process waiting for words spends its time
        process.send_signal(signum)
        assert process.wait(timeout=WAIT) == status
        stdout = process.stdout.read()
        stderr = process.stderr.read().decode()
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()
    assert stdout.endswith(b"\n") and b"word" in stdout
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr


def test_a_hangup_that_was_ignored_stays_ignored(gateway, proc_env):
    """`nohup anyfast …`: SIGHUP was ignored before we started, and so it stays."""
    gateway.script(Sse(sse_events(*[chunk(f"w{i} ") for i in range(20)], chunk(finish="stop")), delay=0.02))
    process = subprocess.Popen(
        anyfast("complete", "hi"),
        env=proc_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    assert process.stdout.read(1)
    process.send_signal(signal.SIGHUP)
    stdout, stderr = process.communicate(timeout=WAIT)
    assert process.returncode == 0, stderr.decode()
    assert b"w19" in stdout


# --- chat --save keeps links, owners and devices ------------------------------------------------------


def chat_save(run, target, *extra):
    return run("chat", "-n", "--save", target, *extra, "hello")


def test_save_onto_a_symlink_writes_the_target_and_keeps_the_link(run, gateway, tmp_path):
    real = tmp_path / "kept" / "talk.yaml"
    real.parent.mkdir()
    real.write_text("- user: earlier\n- assistant: sure\n")
    link = tmp_path / "talk.yaml"
    link.symlink_to(real)
    result = run("chat", "-n", "-f", link, "--save", link, "hello")
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    messages = yaml.safe_load(real.read_text())["messages"]
    assert [m["content"] for m in messages] == ["earlier", "sure", "hello", "echo: hello"]
    assert temporary_files(real.parent) == [] and temporary_files(tmp_path) == []


def test_save_onto_a_dangling_symlink_creates_its_target(run, gateway, tmp_path):
    link = tmp_path / "talk.yaml"
    link.symlink_to(tmp_path / "new.yaml")
    assert chat_save(run, link).exit_code == 0
    assert link.is_symlink() and (tmp_path / "new.yaml").exists()


def test_save_keeps_the_mode_and_owner(run, gateway, tmp_path):
    target = tmp_path / "talk.yaml"
    target.write_text("- user: earlier\n")
    target.chmod(0o640)
    owner = (os.getuid(), os.getgid())
    if os.geteuid() == 0:  # root may give the file away, and a save must give it back
        owner = (65534, 65534)
        os.chown(target, *owner)
    assert chat_save(run, target).exit_code == 0
    info = os.stat(target)
    assert stat.S_IMODE(info.st_mode) == 0o640
    assert (info.st_uid, info.st_gid) == owner


@pytest.mark.parametrize("kind", ["stdout", "device", "fifo", "directory"])
def test_save_onto_something_that_is_not_a_regular_file_is_refused_before_sending(run, gateway, tmp_path, kind):
    if kind == "stdout":  # whatever stdout is (here: pytest's capture file), it is a stream, not a file to replace
        target = "/dev/stdout"
        words = "open stream"
    elif kind == "device":
        target = tmp_path / "null"
        target.symlink_to(os.devnull)
        words = "device"
    elif kind == "fifo":
        target = tmp_path / "pipe"
        os.mkfifo(target)
        words = "FIFO"
    else:
        target = tmp_path / "folder"
        target.mkdir()
        words = "it is a directory"
    result = chat_save(run, target)
    assert result.exit_code == ExitCode.USAGE
    [error] = error_lines(result.stderr)
    assert error.startswith(f"anyfast: error: cannot save to {target}: ") and words in error
    assert gateway.requests == []
    assert kind == "stdout" or (os.path.exists(target) and not os.path.isfile(target))  # still what it was


def test_batch_output_to_dev_stdout_appended_to_a_log_does_not_empty_it(gateway, proc_env, tmp_path):
    data = write_records(tmp_path / "in.jsonl", 2)
    log = tmp_path / "log.jsonl"
    log.write_text('{"earlier": true}\n')
    with open(log, "ab") as stdout:  # anyfast batch in.jsonl -o /dev/stdout >> log.jsonl
        done = subprocess.run(
            anyfast("batch", data, "-o", "/dev/stdout"),
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=proc_env,
            timeout=WAIT,
        )
    assert done.returncode == 0, done.stderr.decode()
    lines = whole_lines(log)
    assert lines[0] == {"earlier": True} and len(lines) == 3


def test_save_where_no_temporary_file_can_be_made_is_refused_before_sending(run, gateway):
    if replacement_problem("/sys/anyfast-test.yaml") is None:
        pytest.skip("/sys is writable here")
    result = chat_save(run, "/sys/anyfast-test.yaml")
    assert result.exit_code == ExitCode.USAGE
    assert "cannot create a file in /sys" in result.stderr
    assert gateway.requests == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_save_into_a_read_only_directory_is_refused_before_sending(run, gateway, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "talk.yaml").write_text("- user: hi\n")
    (folder / "talk.yaml").chmod(0o666)
    folder.chmod(0o555)
    try:
        result = chat_save(run, folder / "talk.yaml")
    finally:
        folder.chmod(0o755)
    assert result.exit_code == ExitCode.USAGE
    assert gateway.requests == []


def test_a_sticky_directory_holding_another_users_file_is_found_before_sending(tmp_path):
    """As in /tmp: the file is writable by all, its directory too, but only its owner may
    rename over it, so the atomic save would fail after the answer was paid for."""
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o1777)
    target = folder / "talk.yaml"
    target.write_text("- user: hi\n")
    target.chmod(0o666)
    someone_else = os.stat(target).st_uid + 4242
    problem = replacement_problem(str(target), euid=someone_else)
    assert problem is not None and "sticky" in problem
    assert replacement_problem(str(target)) is None  # its owner may
    assert replacement_problem(str(folder / "new.yaml"), euid=someone_else) is None  # a new file is fine


def test_save_still_fails_cleanly_when_the_target_turns_into_a_directory(tmp_path):
    target = tmp_path / "talk.yaml"
    target.mkdir()
    with pytest.raises(OSError) as raised:
        write_atomic_lines(str(target), [b"x"])
    assert raised.value.strerror == "it is a directory"
    assert temporary_files(tmp_path) == []
