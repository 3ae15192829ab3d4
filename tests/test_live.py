"""One request to the real API; skipped unless ANYFAST_API_KEY is set in the environment."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from anyfast_cli.cli import app

pytestmark = pytest.mark.skipif(not os.environ.get("ANYFAST_API_KEY"), reason="ANYFAST_API_KEY is not set")


def test_one_real_completion():
    key = os.environ["ANYFAST_API_KEY"]
    result = CliRunner().invoke(app, ["complete", "-n", "--json", "--max-tokens", "64", "Reply with one word: pong"])
    assert result.exit_code == 0, result.stderr
    response = json.loads(result.stdout)
    assert response["choices"][0]["message"]["role"] == "assistant"
    assert response["usage"]["total_tokens"] > 0
    assert key not in result.stdout + result.stderr
