"""--fallback MODEL (§3 "fallback models"): the rule (fallback.py), the chain through the
loopback gateway's new-api shapes, the never-cases, --max-time over the chain, budgets, and
batch per record."""

from __future__ import annotations

import json

import pytest
from gateway import Drip, Json, Sse, Stall, chunk, completion, error_body, model_not_found
from helpers import whole_lines

from anyfast_cli.errors import ApiAuthError, ApiError, NetworkError, RateLimitError
from anyfast_cli.fallback import fallback_reason, model_chain

# --- the rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ApiError("no channel", status=503, code="model_not_found"), "model_not_found"),
        (ApiError("HTTP 404: The model `x` does not exist", status=404), "model_not_found"),
        (ApiError("HTTP 404: no route", status=404), None),  # a 404 that does not name the model
        (RateLimitError("slow down", status=429), "rate_limited"),
        (ApiError("bad gateway", status=502), "http_502"),
        (ApiError("bad request", status=400), None),
        (ApiAuthError("no key", status=401), None),
        (ApiAuthError("forbidden", status=403), None),
        (ApiError("redirect", status=301, code="redirect"), None),
        (NetworkError("cannot connect", code="network_error"), "network"),
        (NetworkError("timed out", code="timeout"), "timeout"),
        (NetworkError("certificate", code="tls_error"), None),
        (KeyboardInterrupt(), None),
    ],
)
def test_which_failures_fall_back(error, reason):
    assert fallback_reason(error, "x") == reason


def test_the_chain_tries_each_model_once_in_order():
    assert model_chain("a", ("b", "a", "c", "b")) == ("a", "b", "c")


# --- complete and chat ---------------------------------------------------------------------------


def test_a_chain_of_unserved_models_reaches_the_one_served(run, gateway, tmp_path):
    gateway.served = ["m"]
    log = tmp_path / "usage.jsonl"
    result = run("complete", "--events", "-m", "x", "--fallback", "y", "--fallback", "m", "--usage-log", log, "hi")
    assert result.exit_code == 0, result.stderr
    hops = [(e["from"], e["to"], e["reason"]) for e in result.events if e["event"] == "fallback"]
    assert hops == [("x", "y", "model_not_found"), ("y", "m", "model_not_found")]
    assert [e["model"] for e in result.events if e["event"] == "start"] == ["x", "y", "m"]
    assert result.events[-1]["model"] == "m" and result.events[-1]["attempts"] == 3
    # each model's request is its own usage-log line; the last names the model that answered
    assert [(line["model"], line["status"]) for line in whole_lines(log)] == [
        ("x", "model_not_found"),
        ("y", "model_not_found"),
        ("m", "ok"),
    ]
    # without -v: exactly one stderr line, naming the model that answered
    assert result.stderr.splitlines() == ["anyfast: answered by m (fallback for x)"]


def test_verbose_tells_each_hop(run, gateway):
    gateway.served = ["m"]
    result = run("complete", "-v", "-m", "x", "--fallback", "m", "hi")
    assert result.exit_code == 0 and result.stdout == "echo: hi\n"
    assert "x did not answer" in result.stderr and "falling back to m" in result.stderr


def test_the_config_names_fallbacks_per_profile(run, gateway, tmp_path):
    gateway.served = ["m"]
    config = tmp_path / "config.yaml"
    config.write_text("profiles:\n  default:\n    model: x\n    fallback: [m]\n")
    result = run("chat", "--config", config, "hi")
    assert result.exit_code == 0 and result.stdout == "echo: hi\n"
    assert [r.body["model"] for r in gateway.requests] == ["x", "m"]


@pytest.mark.parametrize("value", ["5", "[x, '']", "{a: b}"])
def test_a_bad_fallback_in_the_config_is_one_clear_line(run, gateway, tmp_path, value):
    config = tmp_path / "config.yaml"
    config.write_text(f"profiles:\n  default:\n    fallback: {value}\n")
    result = run("complete", "--config", config, "hi")
    assert result.exit_code == 2 and "fallback" in result.stderr and "internal error" not in result.stderr
    assert gateway.requests == []


def test_429s_left_after_the_retries_fall_back(run, gateway, quick_backoff):
    limited = Json(status=429, raw=b"", headers={"Content-Type": None})
    gateway.script(limited, limited, limited)
    result = run("complete", "--events", "-m", "x", "--fallback", "m", "hi")
    assert result.exit_code == 0
    assert [e["event"] for e in result.events if e["event"] in ("retry", "fallback")] == ["retry", "retry", "fallback"]
    assert result.events[-1]["attempts"] == 4


def test_a_404_naming_the_model_falls_back(run, gateway):
    gateway.script(
        Json(error_body("The model `x` does not exist", "invalid_request_error", "model_not_found"), status=404)
    )
    result = run("complete", "-m", "x", "--fallback", "m", "hi")
    assert result.exit_code == 0 and result.stdout == "echo: hi\n"


@pytest.mark.parametrize(("status", "exit_code"), [(400, 1), (401, 3), (403, 3)])
def test_never_on_400_401_403(run, gateway, status, exit_code):
    gateway.script(Json(error_body("no"), status=status))
    result = run("complete", "--events", "-m", "x", "--fallback", "m", "hi")
    assert result.exit_code == exit_code
    assert len(gateway.requests) == 1 and "fallback" not in [e["event"] for e in result.events]


HALF = b"data: " + json.dumps(chunk("half")).encode() + b"\n\n"


@pytest.mark.parametrize(
    ("reply", "exit_code"),
    [
        (Sse([HALF], cut=True), 1),  # the connection closes mid-answer
        # a read timeout mid-answer: a network failure that before output would fall back
        (Drip(b"\n", head=b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + HALF, delay=2), 4),
    ],
    ids=["cut", "timeout"],
)
def test_never_after_output_began(run, gateway, reply, exit_code):
    gateway.script(reply)
    result = run("complete", "-m", "x", "--fallback", "m", "--timeout", "0.3", "hi")
    assert result.exit_code == exit_code, result.stderr
    assert result.stdout == "half\n" and len(gateway.requests) == 1


def test_when_every_model_fails_the_status_is_the_last_ones(run, gateway, quick_backoff):
    limited = Json(status=429, raw=b"", headers={"Content-Type": None})
    gateway.script(model_not_found("x"), limited, limited, limited)
    result = run("complete", "--events", "-m", "x", "--fallback", "y", "hi")
    assert result.exit_code == 5  # y's 429, not x's model_not_found (1)
    assert result.events[-1]["model"] == "y" and result.events[-1]["exit"] == 5


def test_max_time_covers_the_whole_chain(run, gateway):
    gateway.script(Stall(5), Stall(5))
    result = run("complete", "--events", "-m", "x", "--fallback", "m", "--max-time", "0.5", "hi")
    assert result.exit_code == 4
    assert "fallback" not in [e["event"] for e in result.events] and len(gateway.requests) == 1


def test_a_money_budget_needs_a_price_for_every_fallback(run, gateway, tmp_path):
    prices = tmp_path / "prices.yaml"
    prices.write_text("x: {input: 1, output: 1}\n")
    result = run("complete", "-m", "x", "--fallback", "m", "--prices", prices, "--budget", "1", "hi")
    assert result.exit_code == 2 and "none for m" in result.stderr
    assert gateway.requests == []


def test_a_budget_prices_the_model_that_answered(run, gateway, tmp_path):
    gateway.served = ["m"]
    prices = tmp_path / "prices.yaml"
    prices.write_text("x: {input: 0, output: 0}\nm: {input: 1000000, output: 1000000}\n")
    result = run("complete", "--events", "-m", "x", "--fallback", "m", "--prices", prices, "--budget", "100", "hi")
    assert result.exit_code == 0
    final = result.events[-1]
    assert final["model"] == "m" and final["cost"] == final["total_tokens"] * 1.0


def test_schema_checks_the_fallbacks_answer(run, gateway):
    gateway.script(model_not_found("x"), Json(completion('{"name": "Ada"}')))
    result = run("complete", "-m", "x", "--fallback", "m", "--schema", "name", "who?")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"name": "Ada"}
    assert [r.body["model"] for r in gateway.requests] == ["x", "m"]


def test_a_repair_asks_the_model_that_answered(run, gateway):
    gateway.script(model_not_found("x"), Json(completion("not json")), Json(completion('{"name": "Ada"}')))
    result = run("complete", "-m", "x", "--fallback", "m", "--schema", "name", "who?")
    assert result.exit_code == 0, result.stderr
    assert [r.body["model"] for r in gateway.requests] == ["x", "m", "m"]


# --- batch, per record --------------------------------------------------------------------------


def test_batch_falls_back_per_record_and_counts_models(run, gateway, tmp_path):
    gateway.served = ["m", "y"]
    source = tmp_path / "in.jsonl"
    records = [{"custom_id": "a", "prompt": "one"}, {"custom_id": "b", "prompt": "two", "model": "y"}]
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out.jsonl"
    result = run("batch", source, "-o", out, "-m", "x", "--fallback", "m")
    assert result.exit_code == 0, result.stderr
    lines = {line["custom_id"]: line for line in whole_lines(out)}
    assert lines["a"]["response"]["body"]["model"] == "m" and lines["a"]["error"] is None
    assert lines["b"]["response"]["body"]["model"] == "y"  # its own model answered: no fallback
    assert "answered by" in result.stderr and "m 1" in result.stderr and "y 1" in result.stderr


def test_batch_never_falls_back_on_a_400(run, gateway, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"custom_id": "a", "prompt": "one"}) + "\n")
    gateway.script(Json(error_body("bad"), status=400))
    out = tmp_path / "out.jsonl"
    result = run("batch", source, "-o", out, "-m", "x", "--fallback", "m")
    assert result.exit_code == 6
    assert len(gateway.requests) == 1 and whole_lines(out)[0]["error"]["code"]


def test_config_show_names_the_fallbacks_and_where_they_came_from(cli):
    result = cli("config", "show", "--fallback", "m", "--fallback", "y")
    assert result.exit_code == 0
    row = next(line for line in result.stdout.splitlines() if line.startswith("fallback"))
    assert "m, y" in row and "flag" in row
