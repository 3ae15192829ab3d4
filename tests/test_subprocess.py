"""Real processes: stdin that is closed, /dev/null or empty; -n with a pipe held open;
a reader that closes the pipe; Ctrl-C; exit status and stderr without tracebacks."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys

import pytest
from gateway import Json, Sse, chunk, error_body, sse_events
from helpers import KEY, WAIT, closed_port

from anyfast_cli import __version__


def anyfast(*args) -> list[str]:
    return [sys.executable, "-m", "anyfast_cli", *args]


def with_closed_stdin(*args) -> list[str]:
    return ["sh", "-c", 'exec "$0" -m anyfast_cli "$@" <&-', sys.executable, *args]


def run(command, env, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, capture_output=True, timeout=WAIT, **kwargs)


def assert_one_error_line(stderr: bytes) -> None:
    text = stderr.decode()
    lines = text.splitlines()
    assert lines and lines[0].startswith("anyfast: error: "), text
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("anyfast: hint: ")), text
    assert "Traceback" not in text and "Exception ignored" not in text


STDIN_KINDS = {
    "closed": dict(command=with_closed_stdin),
    "devnull": dict(command=anyfast, stdin=subprocess.DEVNULL),
    "empty": dict(command=anyfast, input=b""),
}


@pytest.mark.parametrize("kind", STDIN_KINDS)
def test_stdin_that_gives_nothing_adds_nothing(proc_env, gateway, kind):
    options = dict(STDIN_KINDS[kind])
    command = options.pop("command")
    done = run(command("complete", "hello"), proc_env, **options)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"echo: hello\n", b"")
    assert gateway.requests[-1].body["messages"] == [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize("kind", STDIN_KINDS)
@pytest.mark.parametrize("command_name", ["complete", "chat"])
def test_no_prompt_and_no_stdin_is_a_usage_error(proc_env, gateway, kind, command_name):
    options = dict(STDIN_KINDS[kind])
    command = options.pop("command")
    done = run(command(command_name), proc_env, **options)
    assert done.returncode == 2
    assert done.stdout == b""
    assert_one_error_line(done.stderr)
    assert gateway.requests == []


def test_piped_stdin_follows_the_prompt(proc_env, gateway):
    done = run(anyfast("complete", "Summarise:"), proc_env, input="some text\n".encode())
    assert done.returncode == 0
    assert gateway.requests[-1].body["messages"][0]["content"] == "Summarise:\n\nsome text"


@pytest.mark.parametrize("command_name", ["complete", "chat"])
def test_no_stdin_never_reads_a_pipe_held_open(proc_env, gateway, command_name):
    process = subprocess.Popen(
        anyfast(command_name, "-n", "question"),
        env=proc_env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        returncode = process.wait(timeout=WAIT)  # would hang if it read stdin: nobody writes or closes it
        assert returncode == 0
        assert process.stdout.read() == b"echo: question\n"
        assert process.stderr.read() == b""
    finally:
        process.kill()
        process.wait()
        for pipe in (process.stdin, process.stdout, process.stderr):
            pipe.close()


def slow_stream(pieces: int = 400) -> Sse:
    return Sse(sse_events(*[chunk(f"word{i} ") for i in range(pieces)], chunk(finish="stop")), delay=0.02)


@contextlib.contextmanager
def spawned(env, *args):
    """anyfast running with piped stdout and stderr; killed and cleaned up afterwards."""
    process = subprocess.Popen(
        anyfast(*args), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()


@pytest.mark.parametrize("flags", [[], ["--json", "--stream"]], ids=["text", "jsonl"])
def test_a_reader_that_closes_the_pipe_ends_it_quietly_with_141(proc_env, gateway, flags):
    gateway.script(slow_stream())
    with spawned(proc_env, "complete", *flags, "hi") as process:
        assert process.stdout.read(1)  # like `| head -c1`: the stream has begun ...
        process.stdout.close()  # ... and the reader goes away while it goes on
        assert process.wait(timeout=WAIT) == 141
        assert process.stderr.read() == b""


def test_a_pipe_closed_before_a_whole_answer_arrives_exits_141(proc_env, gateway):
    gateway.latency = 0.15  # the reader is gone (as the process starts) before the answer is written
    with spawned(proc_env, "complete", "--json", "hi") as process:
        process.stdout.close()
        assert process.wait(timeout=WAIT) == 141
        assert process.stderr.read() == b""


def test_ctrl_c_during_a_stream_exits_130_without_a_traceback(proc_env, gateway):
    gateway.script(slow_stream())
    with spawned(proc_env, "complete", "hi") as process:
        assert process.stdout.read(1)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=WAIT) == 130
        stderr = process.stderr.read().decode()
        assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr


CLOSED_PORT_URL = "a URL whose port nobody listens on"

FAILURES = [
    ("usage", ["complete", "-t", "5", "hi"], [], {}, 2),
    ("bad flag", ["complete", "--no-such-flag"], [], {}, 2),
    ("no key", ["complete", "hi"], [], {"ANYFAST_API_KEY": ""}, 3),
    ("401", ["complete", "hi"], [Json(error_body("bad key"), status=401)], {}, 3),
    ("network", ["complete", "--retries", "0", "hi"], [], {"ANYFAST_BASE_URL": CLOSED_PORT_URL}, 4),
    ("429", ["complete", "--retries", "0", "hi"], [Json(error_body("slow down"), status=429)], {}, 5),
    ("500", ["complete", "--retries", "0", "hi"], [Json(error_body("boom"), status=500)], {}, 1),
    ("broken stream", ["complete", "hi"], [Sse(sse_events(chunk("part"), done=False), cut=True)], {}, 1),
]


@pytest.mark.parametrize("args, script, extra_env, status", [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES])
def test_failures_exit_with_their_status_and_one_line_no_traceback(proc_env, gateway, args, script, extra_env, status):
    gateway.script(*script)
    if extra_env.get("ANYFAST_BASE_URL") == CLOSED_PORT_URL:
        extra_env = {"ANYFAST_BASE_URL": f"http://127.0.0.1:{closed_port()}/v1"}
    done = run(anyfast(*args), {**proc_env, **extra_env}, stdin=subprocess.DEVNULL)
    assert done.returncode == status
    assert_one_error_line(done.stderr)
    assert KEY.encode() not in done.stdout + done.stderr


def test_python_m_version(proc_env):
    done = run(anyfast("--version"), proc_env, stdin=subprocess.DEVNULL)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"anyfast {__version__}\n".encode(), b"")


def test_python_m_help(proc_env):
    done = run(anyfast("--help"), proc_env, stdin=subprocess.DEVNULL)
    assert done.returncode == 0
    assert b"complete" in done.stdout and b"chat" in done.stdout
