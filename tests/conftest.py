import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from gateway import Gateway  # noqa: E402
from helpers import KEY, parse_events  # noqa: E402


@pytest.fixture(scope="session")
def _gateway_server():
    server = Gateway().start()
    yield server
    server.stop()


@pytest.fixture
def gateway(_gateway_server):
    """The loopback gateway, with an empty script and no recorded requests."""
    _gateway_server.reset()
    yield _gateway_server
    _gateway_server.reset()


@pytest.fixture
def quick_backoff(monkeypatch):
    """Retries the server gave no Retry-After for wait ~0.01 s, not INITIAL_BACKOFF's 0.5 s: for
    tests of whether a failure is retried, not of how long the wait is (test_retry.py and
    test_client.py hold the real backoff)."""
    import anyfast_cli.retry

    monkeypatch.setattr(anyfast_cli.retry, "INITIAL_BACKOFF", 0.01)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No ANYFAST_* or colour variables from the developer's shell; config in tmp_path."""
    for name in list(os.environ):
        if name.startswith("ANYFAST_") or name in ("NO_COLOR", "XDG_CONFIG_HOME"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return monkeypatch


@pytest.fixture
def env(clean_env, gateway):
    """clean_env, with the key and the gateway's URL set in this process's environment."""
    clean_env.setenv("ANYFAST_API_KEY", KEY)
    clean_env.setenv("ANYFAST_BASE_URL", gateway.url)
    return clean_env


@pytest.fixture
def proc_env(gateway, tmp_path):
    """The environment for a real `python -m anyfast_cli` process: the test run's own, without
    ANYFAST_* or NO_COLOR; config in tmp_path; the key and the gateway's URL."""
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith("ANYFAST_") and k not in ("NO_COLOR", "XDG_CONFIG_HOME")
    }
    environment.update(ANYFAST_API_KEY=KEY, ANYFAST_BASE_URL=gateway.url, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    return environment


@pytest.fixture
def cli(clean_env):
    """cli(*args, input=None, **env) invokes the app through CliRunner with only the environment
    a test gives it (and no ANYFAST_* of ours); an argument may be any object, a str of it is passed."""
    from typer.testing import CliRunner

    from anyfast_cli.cli import app

    runner = CliRunner()

    def invoke(*args, input=None, **env):
        result = runner.invoke(app, [str(a) for a in args], input=input, env=env)
        result.events = None
        words = [str(a) for a in args]
        if words[:1] in (["complete"], ["chat"]) and "--events" in words and result.stdout:  # validated, every one
            result.events = parse_events(result.stdout)
        return result

    return invoke


@pytest.fixture
def run(cli, gateway):
    """The same, talking to the loopback gateway with a key: run(*args, input=None, key=KEY, **env).
    key=None, or a variable given as None, leaves it unset; a variable given here wins."""

    def invoke(*args, input=None, key=KEY, **env):
        return cli(*args, input=input, **{"ANYFAST_BASE_URL": gateway.url, "ANYFAST_API_KEY": key, **env})

    return invoke


@pytest.fixture
def serve(gateway, monkeypatch):
    """serve(fn): the gateway's default answer, per request: fn(request body) -> a reply
    (Json, Sse, …), a number of seconds to wait before the default echo, or None for the echo
    at once; fn may be a coroutine function."""
    import asyncio
    import inspect

    original = gateway._default_reply

    def install(fn):
        async def reply(request):
            result = fn(request.body or {})
            if inspect.isawaitable(result):
                result = await result
            if isinstance(result, (int, float)) and not isinstance(result, bool):
                await asyncio.sleep(result)
                result = None
            return result if result is not None else await original(request)

        monkeypatch.setattr(gateway, "_default_reply", reply)

    return install


@pytest.fixture
def behave(serve):
    """behave(fn): serve, with fn given the last message's text (the prompt) instead of the body."""
    return lambda fn: serve(lambda body: fn(((body.get("messages") or [{}])[-1]).get("content")))
