"""--shard auto: K/N from the scheduler that started the process (pure, then one CLI run)."""

from __future__ import annotations

import pytest

from anyfast_cli.batch.jobs import Shard, parse_shard
from anyfast_cli.errors import UsageError


def slurm(**values) -> dict:
    """A Slurm array task's environment: slurm(ID=1, MAX=4) -> SLURM_ARRAY_TASK_ID=1, ..._MAX=4."""
    return {f"SLURM_ARRAY_TASK_{name}": str(value) for name, value in values.items()}


@pytest.mark.parametrize(
    ("text", "env", "shard", "origin"),
    [
        ("auto", {"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "4"}, Shard(2, 4), "GitLab CI"),  # GitLab counts from 1
        ("auto", {"CIRCLE_NODE_INDEX": "0", "CIRCLE_NODE_TOTAL": "3"}, Shard(1, 3), "CircleCI"),
        ("auto", {"BUILDKITE_PARALLEL_JOB": "4", "BUILDKITE_PARALLEL_JOB_COUNT": "5"}, Shard(5, 5), "Buildkite"),
        (
            "auto",
            {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "8"},
            Shard(4, 8),
            "Slurm",
        ),
        (
            "auto",
            {
                "SLURM_ARRAY_TASK_ID": "12",
                "SLURM_ARRAY_TASK_MIN": "0",
                "SLURM_ARRAY_TASK_STEP": "4",
                "SLURM_ARRAY_TASK_COUNT": "4",
            },
            Shard(4, 4),
            "Slurm",
        ),  # --array=0-15:4
        (
            "auto",
            {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_COUNT": "3"},
            Shard(3, 3),
            "Slurm",
        ),
        # No MIN: worked out from MAX, STEP and COUNT (a 1-based array is not shifted by one).
        ("auto", slurm(ID=1, MAX=4, COUNT=4), Shard(1, 4), "SLURM_ARRAY_TASK_MIN worked out"),
        ("auto", slurm(ID=4, MAX=4, COUNT=4), Shard(4, 4), "SLURM_ARRAY_TASK_MIN=1"),
        ("auto", slurm(ID=3, MAX=7, STEP=2, COUNT=4), Shard(2, 4), "SLURM_ARRAY_TASK_MIN=1"),  # --array=1-7:2
        ("auto", slurm(ID=5, MIN=5, MAX=5, COUNT=1), Shard(1, 1), "Slurm"),
        # No STEP: from MIN, MAX and COUNT; no COUNT: from MIN, MAX and STEP.
        ("auto", slurm(ID=5, MIN=1, MAX=7, COUNT=4), Shard(3, 4), "SLURM_ARRAY_TASK_STEP=2"),
        ("auto", slurm(ID=7, MIN=1, MAX=7, STEP=2), Shard(4, 4), "SLURM_ARRAY_TASK_COUNT=4"),
        ("auto", slurm(ID=2, MIN=0, MAX=3, STEP=1, COUNT=4), Shard(3, 4), "Slurm"),  # all four, agreeing
        ("auto", {"CI_NODE_INDEX": "1", **slurm(ID=1, MIN=1, COUNT=2)}, Shard(1, 2), "Slurm"),  # GitLab half set
        ("auto/10", {"JOB_COMPLETION_INDEX": "0"}, Shard(1, 10), "Kubernetes"),
        ("auto/4", {"CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "4"}, Shard(1, 4), "GitLab CI"),  # a count that agrees
        (
            "3/4",
            {"CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "4"},
            Shard(3, 4),
            None,
        ),  # K/N given: the environment is not read
    ],
)
def test_auto_shards(text, env, shard, origin):
    found, where = parse_shard(text, env)
    assert found == shard
    assert (where is None) if origin is None else origin in where


@pytest.mark.parametrize(
    ("text", "env", "words"),
    [
        ("auto", {}, "no scheduler says which job this is"),
        ("auto", {"JOB_COMPLETION_INDEX": "1"}, "does not say how many jobs there are"),
        ("auto/0", {}, "count N ≥ 1"),
        ("auto/x", {}, "count N ≥ 1"),
        ("auto/3", {"CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "4"}, "says there are 4 jobs"),
        ("auto", {"CI_NODE_INDEX": "5", "CI_NODE_TOTAL": "4"}, "gives job 5 of 4"),
        ("auto", {"CI_NODE_INDEX": "one", "CI_NODE_TOTAL": "4"}, "is not a whole number"),
        (
            "auto",
            {
                "SLURM_ARRAY_TASK_ID": "5",
                "SLURM_ARRAY_TASK_MIN": "0",
                "SLURM_ARRAY_TASK_STEP": "4",
                "SLURM_ARRAY_TASK_COUNT": "4",
            },
            "not on the array's steps",
        ),
        ("auto/2", {"JOB_COMPLETION_INDEX": "2"}, "gives job 3 of 2"),
        ("auto", slurm(ID=1, COUNT=4), "neither SLURM_ARRAY_TASK_MIN nor SLURM_ARRAY_TASK_MAX"),
        ("auto", slurm(ID=1), "SLURM_ARRAY_TASK_COUNT (how many jobs there are) is not"),
        ("auto", slurm(ID=1, MIN=1, STEP=2), "SLURM_ARRAY_TASK_COUNT (how many jobs there are) is not"),
        ("auto", slurm(ID=5, MIN=1, MAX=5, STEP=1, COUNT=3), "not evenly spaced"),  # --array=1,2,5
        ("auto", slurm(ID=2, MIN=1, MAX=5, COUNT=3), "not on the array's steps"),  # STEP 2 worked out
        ("auto", slurm(ID=5, MIN=1, MAX=6, COUNT=3), "not evenly spaced"),
        ("auto", slurm(ID=1, MIN=1, STEP=0, COUNT=2), "SLURM_ARRAY_TASK_STEP=0 is not a whole number"),
        ("auto", slurm(ID=1, MAX=4, COUNT=0), "SLURM_ARRAY_TASK_COUNT=0 is not a whole number"),
        ("auto", {"CI_NODE_INDEX": "1"}, "CI_NODE_INDEX is set, but CI_NODE_TOTAL"),
        ("auto", {"CIRCLE_NODE_TOTAL": "3"}, "none of"),  # a count alone says nothing
    ],
)
def test_auto_shard_errors_are_usage_errors(text, env, words):
    with pytest.raises(UsageError) as raised:
        parse_shard(text, env)
    assert words in raised.value.message


@pytest.mark.parametrize(
    "name", ["CI_NODE_INDEX", "CIRCLE_NODE_INDEX", "BUILDKITE_PARALLEL_JOB", "SLURM_ARRAY_TASK_ID"]
)
def test_a_refusal_never_says_a_set_variable_is_not_set(name):
    with pytest.raises(UsageError) as raised:
        parse_shard("auto", {name: "1"})
    assert "none of" not in raised.value.message and f"{name} is set" in raised.value.message


def test_a_one_based_slurm_array_without_min_runs_every_record_once(env, gateway):
    """--array=1-3 on a Slurm that exports no SLURM_ARRAY_TASK_MIN: the three tasks together
    send every record once (MIN taken as 0 had shifted them: shard 1 never ran)."""
    from typer.testing import CliRunner

    from anyfast_cli.cli import app

    sent = []
    for task in (1, 2, 3):
        gateway.reset()
        array = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MAX": "3", "SLURM_ARRAY_TASK_COUNT": "3"}
        result = CliRunner().invoke(app, ["batch", "--lines", "--shard", "auto"], input="a\nb\nc\nd\ne\n", env=array)
        assert result.exit_code == 0, result.stderr
        sent += [r.body["messages"][-1]["content"] for r in gateway.requests]
    assert sorted(sent) == ["a", "b", "c", "d", "e"]


def test_batch_says_which_scheduler_it_used(env, gateway, monkeypatch):
    from typer.testing import CliRunner

    from anyfast_cli.cli import app

    monkeypatch.setenv("CI_NODE_INDEX", "2")
    monkeypatch.setenv("CI_NODE_TOTAL", "2")
    result = CliRunner().invoke(app, ["batch", "--lines", "--shard", "auto", "-v"], input="a\nb\nc\nd\n")
    assert result.exit_code == 0, result.stderr
    assert "shard 2/2 from GitLab CI (CI_NODE_INDEX=2, CI_NODE_TOTAL=2)" in result.stderr
    assert sorted(r.body["messages"][-1]["content"] for r in gateway.requests) == ["b", "d"]
