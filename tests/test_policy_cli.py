"""`blend simulate --exploration`, `blend policy train` and `blend policy eval` end to end, small."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from blendspec.cli import app
from blendspec.policy.runtime import load_policy
from tests.conftest import SPECS

runner = CliRunner()
ADS = str(SPECS / "ads.blend")


def test_logs_train_eval(tmp_path: Path) -> None:
    logs = tmp_path / "logs.parquet"
    made = runner.invoke(
        app,
        ["simulate", "--exploration", "uniform", "--spec", ADS, "-o", str(logs),
         "--requests", "120", "--candidates", "30"],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    table = pq.read_table(logs)
    assert table.num_rows == 120
    assert {"action", "propensity", "click", "long_click", "hide"} <= set(table.column_names)
    assert all(abs(p - 1 / 1000) < 1e-9 for p in table.column("propensity").to_pylist())

    policy = tmp_path / "ads.pt"
    trained = runner.invoke(
        app,
        ["policy", "train", "--spec", ADS, "--logs", str(logs), "-o", str(policy),
         "--epochs", "3", "--method", "value"],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert policy.exists() and "snips" in trained.output

    # The same command on two local processes (DistributedDataParallel, gloo on loopback).
    distributed = tmp_path / "ads_ddp.pt"
    trained_ddp = runner.invoke(
        app,
        ["policy", "train", "--spec", ADS, "--logs", str(logs), "-o", str(distributed),
         "--epochs", "2", "--nproc", "2"],
    )  # fmt: skip
    assert trained_ddp.exit_code == 0, trained_ddp.output
    assert load_policy(distributed).info["nproc"] == 2

    evaluated = runner.invoke(
        app,
        ["policy", "eval", "--spec", ADS, "--logs", str(logs), "--policy", str(policy),
         "--format", "json"],
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    estimates = json.loads(evaluated.stdout)
    assert set(estimates) == {"replay", "ips", "snips", "dr"}

    wrong = runner.invoke(
        app,
        ["policy", "eval", "--spec", str(SPECS / "homefeed.blend"), "--logs", str(logs),
         "--policy", str(policy)],
    )  # fmt: skip
    assert wrong.exit_code == 1
    assert "error" in wrong.output


def test_exploration_needs_a_spec_with_policy_weights(tmp_path: Path) -> None:
    no_spec = runner.invoke(
        app, ["simulate", "--exploration", "uniform", "-o", str(tmp_path / "l")]
    )
    assert no_spec.exit_code == 2
    fixed = runner.invoke(
        app,
        ["simulate", "--exploration", "uniform", "--spec", str(SPECS / "homefeed.blend"),
         "-o", str(tmp_path / "l")],
    )  # fmt: skip
    assert fixed.exit_code == 1 and "no policy weights" in fixed.output
