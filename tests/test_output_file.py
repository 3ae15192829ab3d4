"""-o/--output FILE (contract §3 "Output file"): replaced only on status 0 or 8, keeping its mode;
under every other status, SIGTERM and Ctrl-C included, left exactly as it was (bytes, mode, time),
no temporary file left, and stderr says so; never one of the command's inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from gateway import Json, Sse, chunk, completion, error_body, sse_events
from helpers import KEY, WAIT, closed_port

OLD = b"last night's good report\n"
OLD_TIME = 1_600_000_000


@pytest.fixture
def report(tmp_path):
    """An existing output file, mode 0640, with an old modification time."""
    path = tmp_path / "report.md"
    path.write_bytes(OLD)
    path.chmod(0o640)
    os.utime(path, (OLD_TIME, OLD_TIME))
    return path


def state(path):
    info = os.stat(path)
    return path.read_bytes(), info.st_mode, info.st_mtime_ns


def leftovers(folder) -> list:
    return sorted(name for name in os.listdir(folder) if name.startswith(".anyfast-"))


def assert_untouched(path, result_stderr: str, before) -> None:
    assert state(path) == before
    assert leftovers(path.parent) == []
    assert f"anyfast: {path} was not changed" in result_stderr, result_stderr


def test_success_replaces_the_file_keeping_its_mode(run, gateway, report):
    result = run("complete", "-o", report, "hello")
    assert result.exit_code == 0, result.stderr
    assert (result.stdout, report.read_text()) == ("", "echo: hello\n")  # what stdout would have got
    assert oct(report.stat().st_mode & 0o777) == "0o640" and leftovers(report.parent) == []
    new = report.parent / "new.json"
    assert run("complete", "--json", "-o", new, "hi").exit_code == 0
    assert json.loads(new.read_text())["choices"][0]["message"]["content"] == "echo: hi"  # compact, not pretty


@pytest.mark.parametrize("force", [["--markdown"], ["--config", "CONFIG"]], ids=["--markdown", "markdown: always"])
def test_the_output_file_gets_raw_text_even_when_markdown_is_forced(run, gateway, report, tmp_path, force):
    config = tmp_path / "config.yaml"
    config.write_text("profiles: {default: {markdown: always}}\n")
    gateway.script(Sse(sse_events(chunk("# Title\n\n**bold** text\n"), chunk(finish="stop"))))
    result = run("complete", "-o", report, *[str(config) if a == "CONFIG" else a for a in force], "hi")
    assert result.exit_code == 0, result.stderr
    assert report.read_text() == "# Title\n\n**bold** text\n"  # as sent: no escape, no rendering


def test_tool_calls_status_8_replaces_the_file_too(run, gateway, report, tmp_path):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([{"name": "f", "parameters": {"type": "object"}}]))
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    answer = {
        "choices": [{"index": 0, "message": {"role": "assistant", "tool_calls": [call]}, "finish_reason": "tool_calls"}]
    }
    gateway.script(Json(answer))
    result = run("complete", "--tools", tools, "--no-stream", "-o", report, "call it")
    assert result.exit_code == 8, result.stderr
    assert json.loads(report.read_text()) == call


def broken_stream() -> Sse:
    return Sse(sse_events(chunk("partial "), chunk("answer"), done=False), cut=True)


@pytest.mark.parametrize(
    "status, setup",
    [
        (1, lambda g, a: g.script(Json(error_body("bad request"), status=400))),
        (1, lambda g, a: g.script(broken_stream())),  # output had begun: it is thrown away
        (2, lambda g, a: a.extend(["--temperature", "9"])),
        (3, lambda g, a: a.extend(["--api-key", " "])),
        (4, lambda g, a: a.extend(["--base-url", f"http://127.0.0.1:{closed_port()}/v1"])),
        (5, lambda g, a: g.script(Json(error_body("slow down"), status=429))),
        (7, lambda g, a: (a.extend(["--schema", "n int"]), g.script(Json(completion("no")), Json(completion("no"))))),
        (9, lambda g, a: a.extend(["--budget-tokens", "0"])),
    ],
)
@pytest.mark.parametrize("command", ["complete", "chat"])
def test_every_failure_status_leaves_the_file_as_it_was(run, gateway, report, status, setup, command):
    args = ["--retries", "0"]
    setup(gateway, args)
    before = state(report)
    result = run(command, *args, "-o", report, "hello")
    assert result.exit_code == status, result.stderr
    assert_untouched(report, result.stderr, before)


def test_a_file_that_did_not_exist_is_not_created_by_a_failure(run, gateway, tmp_path):
    gateway.script(Json(error_body("no"), status=400))
    target = tmp_path / "new.md"
    result = run("complete", "--retries", "0", "-o", target, "hello")
    assert result.exit_code == 1 and not target.exists() and leftovers(tmp_path) == []


def test_the_output_is_masked_like_stdout(run, gateway, report):
    gateway.script(Json(completion(f"the key is {KEY}!")))
    assert run("complete", "--no-stream", "-o", report, "leak it").exit_code == 0
    assert report.read_text() == "the key is ***!\n"


def test_dry_run_writes_the_request_and_dash_is_stdout(run, gateway, report):
    assert run("complete", "--dry-run", "-o", report, "hi").exit_code == 0
    assert json.loads(report.read_text())["headers"]["Authorization"] == "Bearer ***"
    result = run("complete", "-o", "-", "hi")
    assert (result.exit_code, result.stdout) == (0, "echo: hi\n")


@pytest.mark.parametrize(
    "command, args",
    [
        ("chat", ["-f", "{out}"]),
        ("chat", ["--save", "{out}"]),
        ("complete", ["-a", "{out}"]),
        ("complete", ["--schema", "@{schema}"]),
        ("complete", ["--schema", "{schema}"]),  # a path-like SPEC is read too
        ("complete", ["--tools", "{out}"]),
        ("chat", ["-f", "{prompt}", "--var", "v=@{out}"]),
        ("complete", ["-a", "{link}"]),  # the same file by another name: a hard link
        ("complete", ["-a", "{symlink}"]),
        ("complete", ["--usage-log", "{out}"]),
    ],
)
def test_the_output_may_not_be_an_input(run, gateway, tmp_path, command, args):
    out = tmp_path / "conv.json"
    out.write_text('[{"user": "hi"}]')
    prompt = tmp_path / "p.yaml"
    prompt.write_text("vars: {}\nmessages: [{user: '{v}'}]\n")
    os.link(out, tmp_path / "hard.json")
    os.symlink(out, tmp_path / "soft.json")
    if "{schema}" in " ".join(args):  # a schema read first must be one
        out.write_text('{"type": "object"}')
    names = {
        "out": out,
        "schema": out,
        "prompt": prompt,
        "link": tmp_path / "hard.json",
        "symlink": tmp_path / "soft.json",
    }
    before = out.read_bytes()
    result = run(command, *[a.format(**names) for a in args], "-o", out, "hi")
    assert result.exit_code == 2 and f"-o {out} is the file" in result.stderr, result.stderr
    assert out.read_bytes() == before and gateway.requests == [] and leftovers(tmp_path) == []


def test_a_new_save_and_output_on_the_same_new_path_are_refused(run, gateway, tmp_path):
    target = tmp_path / "new.yaml"
    result = run("chat", "--save", target, "-o", target, "hi")
    assert result.exit_code == 2 and "is the file --save names" in result.stderr
    assert not target.exists()


def test_an_output_that_cannot_be_replaced_is_exit_2(run, gateway, tmp_path):
    result = run("complete", "-o", tmp_path, "hi")
    assert result.exit_code == 2 and "it is a directory" in result.stderr and gateway.requests == []


# --- real processes: stdin, SIGTERM and Ctrl-C --------------------------------------------------


def anyfast(args, env, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "anyfast_cli", *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def test_the_output_may_not_be_the_file_stdin_reads(proc_env, gateway, report):
    with open(report, "rb") as stdin:
        child = anyfast(["complete", "-o", report, "summarise"], proc_env, stdin=stdin)
        _, err = child.communicate(timeout=WAIT)
    assert child.returncode == 2 and b"is the file standard input reads" in err
    assert report.read_bytes() == OLD and gateway.requests == []


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_answer_leaves_the_file_as_it_was(proc_env, gateway, report, signum, status):
    pieces = sse_events(*[chunk(f"part {i} ") for i in range(100)], chunk(finish="stop"))
    gateway.script(Sse(pieces, delay=0.05))
    before = state(report)
    child = anyfast(["complete", "-o", report, "-n", "long answer"], proc_env, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + WAIT
    while not (leftovers(report.parent) and os.path.getsize(report.parent / leftovers(report.parent)[0])):
        assert time.monotonic() < deadline and child.poll() is None, child.communicate()
        time.sleep(0.02)  # until the answer has begun to arrive in the temporary file
    child.send_signal(signum)
    out, err = child.communicate(timeout=WAIT)
    assert child.returncode == status, err
    assert out == b""
    assert_untouched(report, err.decode(), before)
