"""`python -m anyfast_cli batch` as a real process: Ctrl-C, kill -9 and --resume,
a closed stdout, and the progress bar on a real terminal (a pseudo-terminal)."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time

import pytest
from helpers import WAIT, whole_lines


def command(*args) -> list[str]:
    return [sys.executable, "-m", "anyfast_cli", "batch", *map(str, args)]


def write_records(tmp_path, count: int):
    path = tmp_path / "in.jsonl"
    path.write_text(
        "".join(json.dumps({"custom_id": f"r{i:03d}", "prompt": f"prompt {i}"}) + "\n" for i in range(count))
    )
    return path, {f"r{i:03d}" for i in range(count)}


def wait_for_lines(path, proc, at_least: int) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= at_least:
            return
        if proc.poll() is not None:
            pytest.fail(f"the batch ended (status {proc.returncode}) before it was interrupted")
        time.sleep(0.01)
    proc.kill()
    pytest.fail("no output lines appeared")


def check_complete(path, ids: set) -> list[dict]:
    lines = whole_lines(path)
    got = [l["custom_id"] for l in lines]
    assert sorted(got) == sorted(ids)  # each id exactly once
    assert all(l["error"] is None and l["response"]["status_code"] == 200 for l in lines)
    for line in lines:
        index = int(line["custom_id"][1:])
        assert line["response"]["body"]["choices"][0]["message"]["content"] == f"echo: prompt {index}"
    return lines


def test_ctrl_c_then_resume(gateway, proc_env, tmp_path):
    gateway.latency = 0.1
    path, ids = write_records(tmp_path, 40)
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        command(path, "-o", out, "-j", "4", "--retries", "0"),
        env=proc_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_for_lines(out, proc, 1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=WAIT)
    assert proc.returncode == 130, stderr.decode()
    assert b"Traceback" not in stderr
    assert stdout == b""
    assert b"interrupted" in stderr  # the summary says the rest was not run
    partial = whole_lines(out)
    assert 1 <= len(partial) < len(ids)
    assert all(l["error"] is None for l in partial)

    gateway.settle()
    gateway.requests.clear()
    gateway.latency = 0  # only the interrupted run needed slow answers
    done = subprocess.run(
        command(path, "-o", out, "--resume", "-j", "8", "--retries", "0"),
        env=proc_env,
        capture_output=True,
        timeout=WAIT,
    )
    assert done.returncode == 0, done.stderr.decode()
    check_complete(out, ids)
    assert len(gateway.requests) == len(ids) - len(partial)  # the answered ones were not sent again
    assert {r.body["messages"][0]["content"] for r in gateway.requests}.isdisjoint(
        {f"prompt {int(l['custom_id'][1:])}" for l in partial}
    )


def test_kill_9_then_resume(gateway, proc_env, tmp_path):
    gateway.latency = 0.1
    path, ids = write_records(tmp_path, 40)
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        command(path, "-o", out, "-j", "4", "--retries", "0"),
        env=proc_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_lines(out, proc, 3)
    proc.kill()
    proc.wait(timeout=WAIT)
    assert proc.returncode == -signal.SIGKILL
    before = out.read_bytes().count(b"\n")
    assert before < len(ids)
    gateway.latency = 0  # only the killed run needed slow answers

    done = subprocess.run(
        command(path, "-o", out, "--resume", "-j", "8", "--retries", "0"),
        env=proc_env,
        capture_output=True,
        timeout=WAIT,
    )
    assert done.returncode == 0, done.stderr.decode()
    check_complete(out, ids)


def test_kill_9_leaving_a_torn_line_then_resume(gateway, proc_env, tmp_path):
    """What kill -9 in the middle of a write could leave: a last line cut short."""
    path, ids = write_records(tmp_path, 6)
    out = tmp_path / "out.jsonl"
    first = subprocess.run(command(path, "-o", out, "--shard", "1/2"), env=proc_env, capture_output=True, timeout=WAIT)
    assert first.returncode == 0, first.stderr.decode()
    data = out.read_bytes()
    out.write_bytes(data[: len(data) - 25])  # the last line torn
    gateway.requests.clear()
    done = subprocess.run(command(path, "-o", out, "--resume"), env=proc_env, capture_output=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr.decode()
    check_complete(out, ids)
    assert len(gateway.requests) == len(ids) - 2  # shard 1/2 ran 3; two of them survived


def test_stdin_pipe_and_exit_status(gateway, proc_env):
    lines = "".join(json.dumps(f"prompt {i}") + "\n" for i in range(5))
    done = subprocess.run(command("-j", "2"), input=lines.encode(), env=proc_env, capture_output=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr.decode()
    answers = [json.loads(l) for l in done.stdout.splitlines()]
    assert sorted(a["custom_id"] for a in answers) == ["1", "2", "3", "4", "5"]
    assert done.stderr.decode().startswith("anyfast: batch: 5 ok, 0 failed")


def test_input_from_a_pipe_path(gateway, proc_env):
    """`anyfast batch /dev/stdin` or `anyfast batch <(jq …)`: a path that can be read only once."""
    lines = "".join(json.dumps(f"prompt {i}") + "\n" for i in range(3)) + "{bad\n"
    done = subprocess.run(command("/dev/stdin"), input=lines.encode(), env=proc_env, capture_output=True, timeout=WAIT)
    assert done.returncode == 2, done.stderr.decode()  # validated as a whole first, as for a file
    assert "line 4" in done.stderr.decode()
    assert gateway.requests == []
    done = subprocess.run(
        command("/dev/stdin"), input=lines.rsplit("{", 1)[0].encode(), env=proc_env, capture_output=True, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr.decode()
    assert sorted(json.loads(l)["custom_id"] for l in done.stdout.splitlines()) == ["1", "2", "3"]


def test_stdin_redirected_from_a_file_is_read_from_where_it_stands(gateway, proc_env, tmp_path):
    """`(read -r header; anyfast batch) < prompts.jsonl`: stdin is a seekable file already partly read."""
    path = tmp_path / "in.jsonl"
    first = json.dumps("skipped header") + "\n"
    path.write_text(first + "".join(json.dumps(f"prompt {i}") + "\n" for i in range(3)))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, len(first.encode()), os.SEEK_SET)
        done = subprocess.run(command(), stdin=fd, env=proc_env, capture_output=True, timeout=WAIT)
    finally:
        os.close(fd)
    assert done.returncode == 0, done.stderr.decode()
    assert sorted(prompt["messages"][0]["content"] for prompt in (r.body for r in gateway.requests)) == [
        "prompt 0",
        "prompt 1",
        "prompt 2",
    ]
    assert len(done.stdout.splitlines()) == 3


def test_input_from_a_fifo(gateway, proc_env, tmp_path):
    fifo = tmp_path / "prompts.fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen(command(fifo, "--dry-run"), env=proc_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with open(fifo, "w") as writer:  # blocks until the batch opens it
        writer.write('"one"\n"two"\n')
    stdout, stderr = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, stderr.decode()
    assert [json.loads(l)["custom_id"] for l in stdout.splitlines()] == ["1", "2"]


def test_invalid_input_exits_2_in_a_real_process(gateway, proc_env):
    done = subprocess.run(command(), input=b'"ok"\n{oops\n', env=proc_env, capture_output=True, timeout=WAIT)
    assert done.returncode == 2
    assert gateway.requests == []
    assert done.stderr.decode().startswith("anyfast: error: line 2:")


def test_closed_stdout_exits_141_quietly(gateway, proc_env, tmp_path):
    gateway.latency = 0.02
    path, _ = write_records(tmp_path, 300)
    proc = subprocess.Popen(
        command(path, "-j", "4", "--retries", "0"), env=proc_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    first = proc.stdout.readline()
    assert json.loads(first)["error"] is None
    proc.stdout.close()  # like `| head -1`
    stderr = proc.stderr.read()
    proc.wait(timeout=WAIT)
    gateway.settle()
    assert proc.returncode == 141, stderr.decode()
    assert b"Traceback" not in stderr and b"Exception ignored" not in stderr
    assert len(gateway.requests) < 300


def run_on_a_terminal(args, env) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal; return the status and what the terminal showed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(command(*args), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    shown = b""
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the process has closed its end
            break
        if not data:
            break
        shown += data
    os.close(master)
    return proc.wait(timeout=WAIT), shown.decode("utf-8", "replace")


def test_progress_bar_on_a_terminal(gateway, proc_env, tmp_path):
    gateway.latency = 0.05
    path, ids = write_records(tmp_path, 6)
    status, shown = run_on_a_terminal([path, "-j", "2", "-o", tmp_path / "out.jsonl"], {**proc_env, "TERM": "xterm"})
    assert status == 0, shown
    assert "6/6" in shown  # the bar's done/total
    assert "anyfast: batch: 6 ok, 0 failed" in shown


def test_no_progress_hides_the_bar_on_a_terminal(gateway, proc_env, tmp_path):
    path, ids = write_records(tmp_path, 6)
    status, shown = run_on_a_terminal(
        [path, "--no-progress", "-o", tmp_path / "out.jsonl"], {**proc_env, "TERM": "xterm"}
    )
    assert status == 0, shown
    assert "6/6" not in shown
    assert "\x1b" not in shown
    assert [l for l in shown.splitlines() if l.strip()] == [
        l for l in shown.splitlines() if l.startswith("anyfast: batch: 6 ok")
    ]
