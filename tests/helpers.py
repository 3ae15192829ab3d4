"""Plain helpers shared by the test files: constants and functions (fixtures live in conftest.py).

conftest.py puts this folder on sys.path, so a test file imports them as `from helpers import KEY`.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the checkout: README.md, tools/, completions/, man/
KEY = "sk-test-0123456789abcdef"  # the API key the tests send; it must never be echoed back
OTHER_MODEL = "doubao-seed-1-6-251015"  # a model that is not the default one
NOW = 1_700_000_000.0  # the fixed clock time given to code that asks what time it is
WAIT = 30  # seconds a real process may take; only reached when something hangs


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pty_end(child) -> str:
    """Read a pexpect child to its end, reap it, close it; returns what it showed since the
    last expect. pexpect's close() sleeps 0.1 s and then signals a child it finds still
    alive; reaped first (within WAIT), the child has nothing left to wait for or signal."""
    import pexpect

    child.expect(pexpect.EOF)
    deadline = time.monotonic() + WAIT
    while child.isalive() and time.monotonic() < deadline:
        time.sleep(0.005)
    child.ptyproc.delayafterclose = 0  # a child still alive after WAIT is still terminated by close()
    child.close()
    return child.before


def load_gen_docs(reuse: bool = False):
    """tools/gen_docs.py as the module `gen_docs`: loaded afresh, or with reuse=True the one
    already in sys.modules if another test file has loaded it."""
    if reuse and sys.modules.get("gen_docs"):
        return sys.modules["gen_docs"]
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "tools" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it is executed
    spec.loader.exec_module(module)
    return module


def parse_lines(data: str | bytes) -> list:
    """JSON lines, each of which must be whole JSON (the text ends with a newline, or is empty)."""
    newline = "\n" if isinstance(data, str) else b"\n"
    assert not data or data.endswith(newline), data[-200:]
    return [json.loads(line) for line in data.splitlines()]


def whole_lines(path) -> list:
    """Every line of a JSON Lines file, each of which must be whole JSON (the file ends with a newline)."""
    return parse_lines(Path(path).read_bytes())


LOG_KEYS = [  # the usage log's line, §3, in the contract's order
    "ts",
    "command",
    "profile",
    "model",
    "request_id",
    "status",
    "exit",
    "attempts",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "cost",
    "currency",
    "cache",
    "custom_id",
    "body_sha256",
]


_EVENTS_VALIDATOR = None


def parse_events(text: str) -> list[dict]:
    """--events output: every line validated against the shipped schema (anyfast_cli/events.schema.json)
    and the stream's shape checked: `start` first, exactly one `result`, and it last. The `cli`
    fixture calls this for every in-process run with --events, and the subprocess tests for
    theirs, so every event line the suite produces is validated."""
    global _EVENTS_VALIDATOR
    if _EVENTS_VALIDATOR is None:
        from jsonschema import Draft202012Validator

        schema = json.loads((ROOT / "anyfast_cli" / "events.schema.json").read_text("utf-8"))
        Draft202012Validator.check_schema(schema)
        _EVENTS_VALIDATOR = Draft202012Validator(schema)
    events = parse_lines(text)
    for event in events:
        errors = sorted(_EVENTS_VALIDATOR.iter_errors(event), key=str)
        assert not errors, f"{event} does not follow events.schema.json: {errors[0].message}"
    assert events, "--events wrote nothing"
    assert events[0]["event"] == "start", events[0]
    assert [e["event"] for e in events].count("result") == 1 and events[-1]["event"] == "result", events
    return events


def spawn_cli(env, *args) -> subprocess.Popen:
    """`python -m anyfast_cli ARGS` as a real process (for signals), stdin closed, text pipes."""
    return subprocess.Popen(
        [sys.executable, "-m", "anyfast_cli", *map(str, args)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
