"""Budgets and the usage log in `batch` (issue 16): every request is a log line, dispatch stops at
the cap with the overshoot bounded by what was in flight, records not run stay for --resume,
and the summary gives the spend. Through the loopback gateway, in-process."""

from __future__ import annotations

import json

import pytest
from helpers import KEY, whole_lines

from anyfast_cli.errors import ExitCode

PRICES = "currency: USD\n'*': {input: 1000, output: 2000}\n"  # large, so each record costs ~0.01


@pytest.fixture
def files(tmp_path):
    prices = tmp_path / "prices.yaml"
    prices.write_text(PRICES)
    return tmp_path, prices


def write_records(path, count, **extra):
    path.write_text("".join(json.dumps({"id": str(i), "prompt": f"p{i}", **extra}) + "\n" for i in range(count)))
    return path


def batch(run, *args):
    return run("batch", *args, "--no-progress")


@pytest.mark.parametrize("ordered", [[], ["--ordered"]], ids=["completion order", "--ordered"])
def test_a_budget_stops_dispatch_and_resume_finishes_every_record_once(run, gateway, files, ordered):
    tmp, prices = files
    gateway.latency = 0.02
    records, out, log = write_records(tmp / "in.jsonl", 120), tmp / "out.jsonl", tmp / "usage.jsonl"
    common = ["-o", out, "-j", "4", "--usage-log", log, "--prices", prices, *ordered]
    first = batch(run, records, *common, "--budget", "0.2")
    assert first.exit_code == ExitCode.BUDGET, first.stderr
    assert "budget reached" in first.stderr and "cost " in first.stderr
    written, logged = whole_lines(out), whole_lines(log)
    assert 0 < len(written) < 120
    assert len(logged) == len(written) == len(gateway.requests)  # every request written and logged
    spent = sum(line["cost"] for line in logged)
    per_record = max(line["cost"] for line in logged)
    assert 0.2 <= spent <= 0.2 + 4 * per_record + 1e-9  # past the cap by at most what was in flight
    second = batch(run, records, *common, "--resume", "--budget", "100")
    assert second.exit_code == 0, second.stderr
    ids = [line["custom_id"] for line in whole_lines(out)]
    assert sorted(ids, key=int) == [str(i) for i in range(120)]  # each record exactly once
    assert len(gateway.requests) == 120


def test_a_budget_already_reached_sends_nothing(run, gateway, files):
    tmp, prices = files
    log = tmp / "usage.jsonl"
    log.write_text(json.dumps({"cost": 5, "total_tokens": 10, "currency": "USD"}) + "\n")
    result = batch(run, write_records(tmp / "in.jsonl", 3), "--usage-log", log, "--prices", prices, "--budget", "5")
    assert result.exit_code == ExitCode.BUDGET, result.stderr
    assert not gateway.requests and result.stdout == ""


def test_a_token_budget_counts_other_processes_lines(run, gateway, files):
    tmp, _ = files
    log = tmp / "usage.jsonl"
    log.write_text("".join(json.dumps({"total_tokens": 40, "cost": None}) + "\n" for _ in range(3)))
    result = batch(run, write_records(tmp / "in.jsonl", 5), "--usage-log", log, "--budget-tokens", "100")
    assert result.exit_code == ExitCode.BUDGET, result.stderr
    assert not gateway.requests


def test_a_money_budget_needs_a_price_for_every_model_the_records_name(run, gateway, files):
    tmp, _ = files
    prices = tmp / "only.yaml"
    prices.write_text("doubao-*: {input: 1, output: 2}\n")
    records = tmp / "in.jsonl"
    records.write_text(json.dumps({"prompt": "a"}) + "\n" + json.dumps({"prompt": "b", "model": "glm-4"}) + "\n")
    result = batch(run, records, "--prices", prices, "--budget", "1")
    assert result.exit_code == ExitCode.USAGE, result.stderr
    assert "glm-4" in result.stderr and not gateway.requests


def test_every_request_of_a_batch_is_one_log_line_and_the_summary_adds_them(run, gateway, files):
    tmp, prices = files
    log = tmp / "usage.jsonl"
    result = batch(run, write_records(tmp / "in.jsonl", 6), "--usage-log", log, "--prices", prices)
    assert result.exit_code == 0, result.stderr
    lines = whole_lines(log)
    assert sorted(line["custom_id"] for line in lines) == [str(i) for i in range(6)]
    assert {line["command"] for line in lines} == {"batch"} and {line["status"] for line in lines} == {"ok"}
    assert all(line["request_id"].startswith("req-") for line in lines)  # the gateway's x-request-id
    tokens, cost = sum(line["total_tokens"] for line in lines), sum(line["cost"] for line in lines)
    summary = [line for line in result.stderr.splitlines() if line.startswith("anyfast: batch:")][0]
    assert f"{tokens:,} tokens" in summary and f"cost {cost:.6f}".rstrip("0") in summary
    assert KEY not in log.read_text() and "p0" not in log.read_text()  # never the key, the prompt or the answer


def test_a_failed_record_is_logged_with_its_status_and_attempts(run, gateway, files, quick_backoff):
    from gateway import Json, error_body

    tmp, _ = files
    log = tmp / "usage.jsonl"
    gateway.script(*[Json(error_body("busy", "server_error"), status=503)] * 2)
    result = batch(run, write_records(tmp / "in.jsonl", 1), "--usage-log", log, "--retries", "1")
    assert result.exit_code == ExitCode.BATCH_PARTIAL, result.stderr
    [line] = whole_lines(log)
    assert (line["status"], line["exit"], line["attempts"]) == ("server_error", 1, 2)


def test_a_batch_stopped_by_its_budget_exits_9_even_when_records_failed(run, gateway, files):
    from gateway import Json, error_body

    tmp, prices = files
    log = tmp / "usage.jsonl"
    gateway.script(Json(error_body("bad", "invalid_request_error"), status=400))
    records = write_records(tmp / "in.jsonl", 30)
    result = batch(run, records, "-j", "1", "--usage-log", log, "--prices", prices, "--budget", "0.03")
    assert result.exit_code == ExitCode.BUDGET, result.stderr
    lines = whole_lines(log)
    assert lines[0]["status"] == "invalid_request_error" and len(lines) < 30
