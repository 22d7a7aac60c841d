"""Policy network, safe policy files and training on small synthetic logs with known truth."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from blendspec.policy.grid import ActionGrid, spec_hash, state_inputs
from blendspec.policy.network import PolicyNet
from blendspec.policy.rewards import log_data, reward_values
from blendspec.policy.runtime import LearnedPolicy, apply_exploration, load_policy
from blendspec.policy.store import PolicyFileError
from blendspec.policy.train import train_policy
from blendspec.spec.loader import load_spec, load_text
from blendspec.spec.model import EpsilonExploration, Spec, UniformExploration

TINY = """spec tiny

slate 5

input p_click: score
input p_long: score
input state: features[4]

objective ctr = p_click
objective long_ctr = p_long

weight w_a = 1 in [0, 2] {source = policy, grid = [0, 1, 2]}
weight w_b = 0 in [0, 2] {source = policy, grid = [0, 1, 2]}

utility = w_a * ctr + w_b * long_ctr

outcome click, long_click
reward engaged = click + 2 * long_click
reward clicks = click

policy {
  state = [state]
  exploration = {kind = uniform}
  reward = engaged
}
"""


@pytest.fixture(scope="module")
def tiny() -> Spec:
    return load_text(TINY, "dsl").spec


def mean_reward(states: np.ndarray) -> np.ndarray:
    """True expected reward ``[n, 9]``: the sign of state[0] decides which action is best."""
    base = np.full((states.shape[0], 9), 0.2)
    pos = states[:, 0] > 0
    base[pos, 2] = 0.8  # w_a 0, w_b 2
    base[~pos, 6] = 0.7  # w_a 2, w_b 0
    return base


def synthetic_logs(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    states = rng.normal(size=(n, 4)).astype(np.float32)
    actions = rng.integers(0, 9, n)
    p = mean_reward(states)[np.arange(n), actions]
    click = (rng.random(n) < p).astype(np.int8)
    return {
        "request_id": np.array([f"r{i}" for i in range(n)]),
        "state": states,
        "action": actions,
        "propensity": np.full(n, 1 / 9),
        "click": click,
        "long_click": np.zeros(n, np.int8),
    }


def true_value(policy: LearnedPolicy, n: int = 4000) -> float:
    states = np.random.default_rng(99).normal(size=(n, 4)).astype(np.float32)
    return float((policy.probs(states) * mean_reward(states)).sum(axis=1).mean())


def test_grid_is_row_major_in_declaration_order(tiny: Spec) -> None:
    grid = ActionGrid.from_spec(tiny)
    assert grid.names == ("w_a", "w_b") and grid.size == tiny.action_count == 9
    assert grid.decode(np.array([0, 1, 3, 8])).tolist() == [[0, 0], [0, 1], [1, 0], [2, 2]]
    assert grid.encode(np.array([[1.1, 1.9]])).tolist() == [5]
    assert grid.default_action(tiny) == 3
    with pytest.raises(ValueError):
        grid.decode(np.array([9]))


def test_ads_grid_has_a_thousand_actions() -> None:
    spec = load_spec("specs/ads.blend").spec
    grid = ActionGrid.from_spec(spec)
    assert grid.size == 1000 and grid.decode(np.array([123]))[0].tolist() == [0.5, 1.0, 0.75]
    assert state_inputs(spec) == (("user_state", 32),)


def test_factorised_heads_give_a_distribution_over_the_grid() -> None:
    net = PolicyNet(4, (3, 3, 2), heads="factorised")
    logp = net(torch.randn(5, 4))
    assert logp.shape == (5, 18)
    assert torch.allclose(logp.exp().sum(dim=1), torch.ones(5), atol=1e-5)


def test_reward_expressions_over_outcomes(tiny: Spec) -> None:
    cols = {"click": np.array([1, 0, 1]), "long_click": np.array([1, 0, 0])}
    assert reward_values(tiny, None, cols).tolist() == [3.0, 0.0, 1.0]
    assert reward_values(tiny, "clicks", cols).tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(KeyError, match="unknown reward"):
        reward_values(tiny, "nope", cols)


def test_exploration_mixes_the_greedy_distribution() -> None:
    base = np.eye(4)[[0, 2]]
    eps = apply_exploration(base, EpsilonExploration(kind="epsilon", epsilon=0.2))
    assert eps[0].tolist() == pytest.approx([0.85, 0.05, 0.05, 0.05])
    assert apply_exploration(base, UniformExploration(kind="uniform"))[1].tolist() == [0.25] * 4


@pytest.mark.parametrize("method", ["pg", "value"])
def test_training_recovers_the_personalised_best_action(tiny: Spec, method: str) -> None:
    logs = synthetic_logs(3000, seed=1)
    result = train_policy(tiny, logs, method=method, epochs=30, seed=0)
    policy = result.policy
    uniform = float(mean_reward(np.zeros((1, 4))).mean())  # same for both halves: 0.2 + 0.6/9
    oracle = 0.75
    value = true_value(policy)
    assert value > uniform + 0.7 * (oracle - uniform), (method, value)
    assert result.validation["snips"]["value"] > uniform
    assert result.history and 0 <= result.best_epoch < len(result.history)


def test_factorised_training_also_learns(tiny: Spec) -> None:
    logs = synthetic_logs(3000, seed=2)
    result = train_policy(tiny, logs, heads="factorised", epochs=30, seed=0)
    assert true_value(result.policy) > 0.45


def test_training_is_seeded(tiny: Spec) -> None:
    logs = synthetic_logs(600, seed=3)
    one = train_policy(tiny, logs, epochs=3, seed=5).policy
    two = train_policy(tiny, logs, epochs=3, seed=5).policy
    states = logs["state"][:20]
    np.testing.assert_array_equal(one.probs(states), two.probs(states))


def test_save_load_round_trip_is_tensors_and_json(tiny: Spec, tmp_path) -> None:
    policy = train_policy(tiny, synthetic_logs(400, seed=4), epochs=2).policy
    path = policy.save(tmp_path / "p.pt")
    payload = torch.load(path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for k, v in payload.items() if k != "metadata")
    assert isinstance(payload["metadata"], str)
    loaded = load_policy(path, tiny)
    states = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    np.testing.assert_allclose(loaded.probs(states), policy.probs(states), rtol=1e-6)
    assert loaded.spec_hash == spec_hash(tiny) and loaded.info["spec_hash_matches"]
    actions, props = loaded.act(states, exploration=EpsilonExploration(kind="epsilon", epsilon=0.1))
    assert actions.shape == (10,) and np.all(props >= 0.1 / 9)


def test_loading_checks_grid_and_state_against_the_spec(tiny: Spec, tmp_path) -> None:
    path = train_policy(tiny, synthetic_logs(200, seed=5), epochs=1).policy.save(tmp_path / "p.pt")
    other_grid = load_text(TINY.replace("grid = [0, 1, 2]}", "grid = [0, 1, 1.5, 2]}"), "dsl").spec
    with pytest.raises(PolicyFileError, match="grid"):
        load_policy(path, other_grid)
    other_state = load_text(TINY.replace("features[4]", "features[6]"), "dsl").spec
    with pytest.raises(PolicyFileError, match=r"state\[4\].*state\[6\]"):
        load_policy(path, other_state)


class _Boom:
    def __reduce__(self):
        return (print, ("executed!",))


def test_a_pickle_with_code_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"metadata": "{}", "x": _Boom()}, fh, protocol=2)
    with pytest.raises(PolicyFileError, match="not a blendspec policy file"):
        load_policy(path)
    with pytest.raises(PolicyFileError):
        load_policy(tmp_path / "missing.pt")


def test_logs_from_parquet(tiny: Spec, tmp_path) -> None:
    logs = synthetic_logs(50, seed=6)
    table = pa.table(
        {
            "request_id": logs["request_id"],
            "state": pa.FixedSizeListArray.from_arrays(pa.array(logs["state"].ravel()), 4),
            "action": logs["action"],
            "propensity": logs["propensity"],
            "click": logs["click"],
            "long_click": logs["long_click"],
        }
    )
    pq.write_table(table, tmp_path / "logs.parquet")
    data = log_data(tiny, tmp_path / "logs.parquet")
    assert data.states.shape == (50, 4)
    np.testing.assert_array_equal(data.states, logs["state"])
    assert data.rewards.tolist() == logs["click"].astype(float).tolist()
