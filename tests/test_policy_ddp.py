"""DistributedDataParallel training (gloo on CPU, two local processes) matches one process."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist

from blendspec.loader import load_text
from blendspec.policy import train_policy
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
