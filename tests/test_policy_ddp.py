"""DistributedDataParallel training (gloo on CPU, two local processes) matches one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from blendspec.policy.train import train_policy
from blendspec.spec.loader import load_spec, load_text
from tests.test_policy import TINY, synthetic_logs

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="torch without gloo"
)


@pytest.mark.parametrize("method", ["pg", "value"])
def test_two_processes_match_one(method: str) -> None:
    spec = load_text(TINY, "dsl").spec
    # 800 training rows in batches of 97: the last batch (24 rows) is short, and the odd batch
    # size splits rows unevenly between the two ranks.
    logs = synthetic_logs(1000, seed=7)
    kwargs = {"method": method, "epochs": 3, "batch_size": 97, "seed": 3, "patience": 10}
    one = train_policy(spec, logs, **kwargs)
    two = train_policy(spec, logs, nproc=2, **kwargs)
    assert two.policy.info["nproc"] == 2 and one.policy.info["nproc"] == 1
    assert [h["epoch"] for h in two.history] == [h["epoch"] for h in one.history]
    assert two.best_epoch == one.best_epoch
    # Same gradients up to the order of floating-point sums: parameters agree closely, and the
    # policies choose the same actions.
    for (name, a), b in zip(
        one.policy.net.state_dict().items(), two.policy.net.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3, msg=name)
    states = logs["state"][:300]
    np.testing.assert_array_equal(
        one.policy.probs(states, greedy=True), two.policy.probs(states, greedy=True)
    )
    for h1, h2 in zip(one.history, two.history, strict=True):
        assert h1["val_snips"] == pytest.approx(h2["val_snips"], abs=1e-4)
        assert h1["loss"] == pytest.approx(h2["loss"], rel=1e-3, abs=1e-5)


def test_nproc_must_be_positive() -> None:
    spec = load_text(TINY, "dsl").spec
    with pytest.raises(ValueError, match="nproc"):
        train_policy(spec, synthetic_logs(50, seed=1), nproc=0)


def test_torchrun_launch_matches_spawn(tmp_path: Path) -> None:
    """`torchrun -m blendspec policy train` (two processes, env:// rendezvous on loopback) trains
    the same policy as `--nproc 2`; only rank 0 writes the file."""
    from typer.testing import CliRunner

    from blendspec.cli import app
    from blendspec.policy.ddp import _free_port
    from blendspec.policy.runtime import load_policy
    from tests.conftest import SPECS

    ads = str(SPECS / "ads.blend")
    logs = tmp_path / "logs.parquet"
    made = CliRunner().invoke(
        app,
        ["simulate", "--exploration", "uniform", "--spec", ads, "-o", str(logs),
         "--requests", "200", "--candidates", "30"],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    out = tmp_path / "torchrun.pt"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
         "-m", "blendspec", "--", "policy", "train", "--spec", ads, "--logs", str(logs),
         "-o", str(out), "--epochs", "2", "--seed", "5"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("policy →") == 1  # rank 1 neither writes nor prints
    launched = load_policy(out)
    assert launched.info["nproc"] == 2 and launched.info["launcher"] == "torchrun"

    spec = load_spec(SPECS / "ads.blend").spec
    spawned = train_policy(spec, str(logs), epochs=2, seed=5, nproc=2).policy
    assert spawned.info["launcher"] == "spawn"
    for (name, a), b in zip(
        spawned.net.state_dict().items(), launched.net.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3, msg=name)


def test_torchrun_and_nproc_do_not_mix(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_text(TINY, "dsl").spec
    for key, value in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MASTER_PORT", "1")
    with pytest.raises(ValueError, match="torchrun"):
        train_policy(spec, synthetic_logs(50, seed=1), nproc=2)
    with pytest.raises(ValueError, match="model"):
        train_policy(spec, synthetic_logs(50, seed=1), method="model")
