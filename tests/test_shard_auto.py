"""--shard auto: K/N from the scheduler that started the process (pure, then one CLI run)."""

from __future__ import annotations

import pytest

from anyfast_cli.batch.jobs import Shard, parse_shard
from anyfast_cli.errors import UsageError


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
    ],
)
def test_auto_shard_errors_are_usage_errors(text, env, words):
    with pytest.raises(UsageError) as raised:
        parse_shard(text, env)
    assert words in raised.value.message


def test_batch_says_which_scheduler_it_used(env, gateway, monkeypatch):
    from typer.testing import CliRunner

    from anyfast_cli.cli import app

    monkeypatch.setenv("CI_NODE_INDEX", "2")
    monkeypatch.setenv("CI_NODE_TOTAL", "2")
    result = CliRunner().invoke(app, ["batch", "--lines", "--shard", "auto", "-v"], input="a\nb\nc\nd\n")
    assert result.exit_code == 0, result.stderr
    assert "shard 2/2 from GitLab CI (CI_NODE_INDEX=2, CI_NODE_TOTAL=2)" in result.stderr
    assert sorted(r.body["messages"][-1]["content"] for r in gateway.requests) == ["b", "d"]
