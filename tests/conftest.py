import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from gateway import Gateway  # noqa: E402


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
def clean_env(monkeypatch, tmp_path):
    """No ANYFAST_* or colour variables from the developer's shell; config in tmp_path."""
    for name in list(os.environ):
        if name.startswith("ANYFAST_") or name in ("NO_COLOR", "XDG_CONFIG_HOME"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return monkeypatch
