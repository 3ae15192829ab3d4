"""`anyfast models [PATTERN] [--json]` and `anyfast models --check MODEL` against the loopback
gateway (§3 "Models"): a CI job learns before it starts that a model is not served, where a
chat request would meet new-api's 503 model_not_found only when it is sent."""

from __future__ import annotations

import json

import pytest
from gateway import Json, error_body
from helpers import KEY

# exchange.read_json (GET /models) walks a top-level null, number or boolean as if it were a
# list: TypeError, "internal error" (exchange.nested_deeper iterates any value that is not a dict).
SERVED = ["zeta-1", "doubao-seed-1-6-251015", "glm-4-7-251222", "doubao-seed-1-6-vision-250815", "Alpha"]


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("anyfast: error:")]


@pytest.fixture
def served(gateway):
    gateway.served = list(SERVED)
    return gateway


def test_models_prints_the_served_ids_sorted_one_per_line(run, served):
    result = run("models")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == sorted(SERVED)
    assert result.stdout.endswith("\n") and result.stderr == ""
    [request] = served.requests
    assert (request.method, request.path) == ("GET", "/v1/models")
    assert request.headers["authorization"] == f"Bearer {KEY}"


def test_models_lists_each_id_once_and_passes_over_entries_without_one(run, gateway):
    body = {
        "object": "list",
        "data": [{"id": "b"}, {"id": "a"}, {"id": "b"}, {"name": "no id"}, {"id": 7}, "c", None, {"id": ""}],
    }
    gateway.script(Json(body))
    result = run("models")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["", "a", "b"]


@pytest.mark.parametrize(
    "pattern, expected",
    [
        pytest.param("doubao-*", ["doubao-seed-1-6-251015", "doubao-seed-1-6-vision-250815"], id="glob"),
        pytest.param("*-25????", ["doubao-seed-1-6-251015", "doubao-seed-1-6-vision-250815", "glm-4-7-251222"], id="?"),
        pytest.param("glm-4-[0-9]-*", ["glm-4-7-251222"], id="brackets"),
        pytest.param("vision", ["doubao-seed-1-6-vision-250815"], id="substring"),
        pytest.param("25", ["doubao-seed-1-6-251015", "doubao-seed-1-6-vision-250815", "glm-4-7-251222"], id="digits"),
        pytest.param("doubao", ["doubao-seed-1-6-251015", "doubao-seed-1-6-vision-250815"], id="prefix substring"),
        pytest.param("seed-*", [], id="a glob matches the whole id"),
        pytest.param("alpha", [], id="case-sensitive"),
        pytest.param("nothing", [], id="no match"),
    ],
)
def test_models_pattern_is_a_glob_or_a_substring(run, served, pattern, expected):
    result = run("models", pattern)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == expected


def test_models_json_prints_the_response_object_as_received(run, gateway):
    body = {
        "success": True,
        "object": "list",
        "data": [
            {"id": "z", "object": "model", "owned_by": "custom", "supported_endpoint_types": ["openai"]},
            {"id": "a", "object": "model", "created": 1626777600},
        ],
    }
    gateway.script(Json(body))
    result = run("models", "--json")
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed == body
    assert list(printed) == list(body) and [entry["id"] for entry in printed["data"]] == ["z", "a"]  # not sorted


def test_models_check_every_model_served_is_exit_0_and_quiet(run, served):
    result = run("models", "--check", "glm-4-7-251222", "--check", "Alpha")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert len(served.requests) == 1


def test_models_check_names_each_missing_model_with_close_served_names(run, served):
    result = run(
        "models",
        "--check",
        "doubao-seed-1-6-251016",  # a typo of a served name
        "--check",
        "glm-4-7-251222",  # served
        "--check",
        "qwen-max",  # nothing like it
        "--check",
        "doubao-seed-1-6-251016",  # named twice, reported once
    )
    assert result.exit_code == 1
    assert result.stdout == ""
    errors = error_lines(result)
    assert len(errors) == 2, result.stderr
    assert "'doubao-seed-1-6-251016'" in errors[0] and "'qwen-max'" in errors[1]
    assert all("glm-4-7-251222" not in line for line in errors)
    lines = result.stderr.splitlines()
    hint = lines[lines.index(errors[0]) + 1]
    assert hint.startswith("anyfast: hint:") and "doubao-seed-1-6-251015" in hint
    after_qwen = lines[lines.index(errors[1]) + 1 :]
    assert not any("hint" in line for line in after_qwen)  # no served name is close to it
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr


def test_models_check_offers_at_most_three_names(run, gateway):
    gateway.served = [f"doubao-seed-{i}" for i in range(10)]
    result = run("models", "--check", "doubao-seed-x")
    assert result.exit_code == 1
    [hint] = [line for line in result.stderr.splitlines() if line.startswith("anyfast: hint:")]
    assert hint.count("doubao-seed-") == 3


def test_models_check_knows_what_a_chat_request_would_meet(run, served):
    """new-api answers a chat request for a model it does not serve with a 503 model_not_found;
    `models --check` says so before anything is spent, and agrees with it both ways."""
    missing, present = "doubao-seed-1-6-flash-250715", "doubao-seed-1-6-251015"
    check = run("models", "--check", missing)
    assert check.exit_code == 1 and missing in error_lines(check)[0]
    chat = run("complete", "-m", missing, "hi")
    assert chat.exit_code == 1 and missing in chat.stderr
    assert sum(r.path == "/v1/chat/completions" for r in served.requests) == 1  # a model_not_found is not retried
    assert run("models", "--check", present).exit_code == 0
    answered = run("complete", "-m", present, "hi")
    assert answered.exit_code == 0 and answered.stdout == "echo: hi\n"


def test_models_check_takes_no_pattern_or_json(run, served):
    for args in (["doubao-*", "--check", "m"], ["--json", "--check", "m"]):
        result = run("models", *args)
        assert result.exit_code == 2, result.stderr
    assert served.requests == []


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Json(error_body("invalid token", "new_api_error", "invalid_api_key"), status=401), id="401"),
        pytest.param(Json(error_body("forbidden", "authentication_error"), status=403), id="403"),
        pytest.param(Json(status=401, raw=b"", headers={"Content-Type": None}), id="401 without a body"),
    ],
)
@pytest.mark.parametrize("args", [[], ["--check", "m"], ["--json"]])
def test_models_with_a_bad_key_is_exit_3(run, gateway, reply, args):
    gateway.script(reply)
    result = run("models", *args, key="sk-wrong-key-000000")
    assert result.exit_code == 3, result.stderr
    assert len(error_lines(result)) == 1 and result.stdout == ""
    assert "sk-wrong-key-000000" not in result.stderr


def test_models_without_a_key_is_exit_3_before_sending(run, gateway):
    result = run("models", key=None)
    assert result.exit_code == 3 and "no API key" in result.stderr
    assert gateway.requests == []


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Json(raw=b"<html>models</html>", headers={"Content-Type": "text/html"}), id="html"),
        pytest.param(Json(raw=b'{"data": [', headers={}), id="cut JSON"),
        pytest.param(Json(raw=b"", headers={}), id="empty"),
        pytest.param(Json({"object": "list"}), id="no data"),
        pytest.param(Json({"data": {"id": "m"}}), id="data an object"),
        pytest.param(Json({"data": "m"}), id="data a string"),
        pytest.param(Json([{"id": "m"}]), id="a list"),
        pytest.param(Json("models"), id="a string"),
        pytest.param(Json(raw=b"[" * 100_000 + b"]" * 100_000), id="nested deep"),
        pytest.param(Json(raw=b"[" * 300 + b"]" * 300), id="nested past the limit"),
        *(pytest.param(Json(raw=raw), id=raw.decode()) for raw in (b"null", b"5", b"true")),
        pytest.param(Json(error_body("no route /v1/models"), status=404), id="404"),
    ],
)
@pytest.mark.parametrize("args", [[], ["--check", "m"]])
def test_models_with_an_answer_that_is_not_a_model_list_is_exit_1(run, gateway, reply, args):
    gateway.script(reply)
    result = run("models", "--retries", "0", *args)
    assert result.exit_code == 1, result.stderr
    assert len(error_lines(result)) == 1, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_models_is_not_logged_or_capped(run, gateway, tmp_path):
    """GET /models is no chat request: it costs nothing, writes no usage line, meets no budget."""
    log = tmp_path / "usage.jsonl"
    result = run("models", ANYFAST_USAGE_LOG=str(log))
    assert result.exit_code == 0
    assert not log.exists() or log.read_bytes() == b""


def test_models_retries_a_server_error(run, gateway, quick_backoff):
    gateway.script(Json(error_body("upstream hiccup", "server_error"), status=502))
    result = run("models")
    assert result.exit_code == 0 and result.stdout.splitlines() == ["doubao-seed-1-6-vision-250815", "m"]
    assert len(gateway.requests) == 2


def test_models_goes_to_the_configured_base_url(run, gateway, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"profiles:\n  local:\n    base_url: {gateway.url}/\n")
    result = run("models", "--config", config, "--profile", "local", ANYFAST_BASE_URL=None)
    assert result.exit_code == 0, result.stderr
    assert gateway.requests[0].path == "/v1/models"
