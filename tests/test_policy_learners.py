"""The training section's learners: state baseline, the reward-model learner, option checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from blendspec.policy.network import PolicyNet, RewardModel
from blendspec.policy.train import state_baseline, train_policy
from blendspec.spec.loader import load_text
from tests.test_policy import TINY, mean_reward, synthetic_logs, true_value


@given(
    st.integers(min_value=8, max_value=60),
    st.integers(min_value=1, max_value=5),
    st.integers(min_value=0, max_value=2**31 - 1),
)
def test_state_baseline_without_ridge_is_least_squares(n: int, d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, d) + rng.normal(size=d)
    r = rng.normal(size=n) + x @ rng.normal(size=d)
    design = np.concatenate([x, np.ones((n, 1))], axis=1)
    reference = design @ np.linalg.lstsq(design, r, rcond=None)[0]
    np.testing.assert_allclose(
        state_baseline(x, r, ridge=0.0), reference, atol=1e-6 * (1 + abs(r).max())
    )


def test_state_baseline_tracks_who_the_user_is() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 3))
    r = 2.0 * x[:, 0] + rng.normal(size=4000)
    residual = r - state_baseline(x, r)
    assert residual.std() < 0.6 * (r - r.mean()).std()


@pytest.mark.parametrize("baseline", ["mean", "state"])
def test_both_baselines_learn(baseline: str) -> None:
    spec = load_text(TINY, "dsl").spec
    result = train_policy(spec, synthetic_logs(3000, seed=1), baseline=baseline, epochs=15, seed=0)
    assert true_value(result.policy) > 0.5, baseline
    assert result.policy.info["baseline"] == baseline


def test_reward_model_learner_recovers_the_personalised_best_action() -> None:
    spec = load_text(TINY, "dsl").spec
    result = train_policy(spec, synthetic_logs(3000, seed=1), method="model", epochs=20, seed=0)
    policy = result.policy
    assert policy.kind == "value" and policy.info["method"] == "model"
    uniform = float(mean_reward(np.zeros((1, 4))).mean())
    assert true_value(policy) > uniform + 0.7 * (0.75 - uniform)


def test_reward_model_folds_exactly_into_the_value_network() -> None:
    """The saved network *is* the reward model: q(x, a) for every action, not an approximation."""
    torch.manual_seed(0)
    grid_shape = (3, 4, 5)
    model = RewardModel(6, grid_shape, (16, 8), rank=5, action_hidden=12)
    for param in model.parameters():
        torch.nn.init.normal_(param, std=0.5)
    net = PolicyNet(6, grid_shape, (16, 8))
    x = torch.randn(40, 6)
    with torch.no_grad():
        net.mean.copy_(x.mean(0))
        net.std.copy_(x.std(0))
        model.fold_into(net)
        z = (x - net.mean) / net.std
        expected = model.all(z)
        torch.testing.assert_close(net(x, log_softmax=False), expected, atol=1e-4, rtol=1e-4)
        actions = torch.randint(0, 60, (40,))
        torch.testing.assert_close(model(z, actions), expected[torch.arange(40), actions])


def test_option_checks() -> None:
    spec = load_text(TINY, "dsl").spec
    logs = synthetic_logs(50, seed=1)
    with pytest.raises(ValueError, match="baseline"):
        train_policy(spec, logs, baseline="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one process"):
        train_policy(spec, logs, method="model", nproc=2)
    with pytest.raises(ValueError, match="method"):
        train_policy(spec, logs, method="sarsa")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="joint"):
        train_policy(spec, logs, method="model", heads="factorised")


def test_without_a_validation_split_early_stopping_watches_the_training_loss() -> None:
    spec = load_text(TINY, "dsl").spec
    result = train_policy(
        spec, synthetic_logs(600, seed=4), validation=0.0, epochs=6, patience=10, seed=0
    )
    assert result.validation_rows == 0 and len(result.history) == 6
    losses = [h["loss"] for h in result.history]
    assert result.best_epoch == int(np.argmax([-x for x in losses]))
