"""Exploration logs through the real blending graph, on-policy truth, and a tiny end-to-end run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from blendspec.policy.explore import (
    WEIGHTS_KEY,
    Blender,
    evaluate_on_policy,
    exploration_logs,
    write_logs,
)
from blendspec.policy.grid import ActionGrid
from blendspec.policy.ope import evaluate
from blendspec.policy.rewards import log_data
from blendspec.policy.runtime import load_policy
from blendspec.policy.train import train_policy
from blendspec.sim.world import World, WorldConfig
from blendspec.spec.loader import LoadedSpec, load_spec, load_text

SMALL = """spec small_ads

slate 10

input p_click: score
input p_longclick: score
input p_hide: score
input topic: category
input user_state: features[32]

objective ctr = p_click
objective long_ctr = p_longclick
objective hide = p_hide

weight w_ctr = 1 in [0, 2] {source = policy, grid = [0, 1, 2]}
weight w_long_ctr = 1 in [0, 4] {source = policy, grid = [0, 1, 4]}
weight w_hide = -2 in [-40, 0] {sign = negative, source = policy, grid = [0, -5, -40]}

utility = w_ctr * ctr + w_long_ctr * long_ctr + w_hide * hide

cap topic {max = 2, window = 5}

outcome click, long_click, hide
reward engaged = click + 2 * long_click - 5 * hide
reward clicks = click

policy {
  state = [user_state]
  exploration = {kind = uniform}
  reward = engaged
}
"""


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(n_items=1500, n_users=400))


@pytest.fixture(scope="module")
def small() -> LoadedSpec:
    return load_text(SMALL, "dsl")


def test_per_request_weights_reach_the_graph(world: World, small: LoadedSpec) -> None:
    blender = Blender(small, world)
    requests = list(world.requests(4, candidates=40))
    weights = np.array([[2, 0, 0], [0, 4, 0], [2, 0, 0], [0, 4, 0]], dtype=np.float64)
    mask, inputs = blender.inputs(requests)
    inputs[WEIGHTS_KEY] = torch.as_tensor(weights, dtype=torch.float32)
    with torch.inference_mode():
        out = blender.module(mask, inputs)
    np.testing.assert_array_equal(out["weights"].numpy(), weights)
    slates = blender.slates(requests, weights)
    swapped = blender.slates(requests, weights[[1, 0, 3, 2]])
    assert all(s.size == 10 for s in slates)
    assert any(not np.array_equal(a, b) for a, b in zip(slates, swapped, strict=True))
    # Pure click weight: the first pick is the candidate with the highest predicted click.
    first = requests[0]
    assert slates[0][0] == first.candidate_ids[np.argmax(first.predicted.click)]


def test_the_ads_spec_with_epsilon_exploration_blends(world: World) -> None:
    loaded = load_spec("specs/ads.blend")
    table = exploration_logs(loaded, world, 6, behaviour="epsilon", epsilon=0.5, candidates=30)
    assert table.num_rows == 6 and table.column("user_state").type.list_size == 32


def test_uniform_logs_have_known_propensities_and_are_seeded(
    world: World, small: LoadedSpec
) -> None:
    table = exploration_logs(small, world, 40, candidates=30, seed=3)
    k = small.spec.action_count
    assert np.allclose(table.column("propensity").to_numpy(), 1 / k)
    actions = table.column("action").to_numpy()
    grid = ActionGrid.from_spec(small.spec)
    decoded = grid.decode(actions)
    for j, name in enumerate(grid.names):
        np.testing.assert_allclose(table.column(f"weight_{name}").to_numpy(), decoded[:, j])
    for column in ("request_id", "user_state", "click", "long_click", "hide", "expected_click"):
        assert column in table.column_names
    again = exploration_logs(small, world, 40, candidates=30, seed=3)
    assert table.equals(again)


def test_epsilon_logs_stay_near_the_fallback(world: World, small: LoadedSpec) -> None:
    eps = 0.2
    table = exploration_logs(small, world, 60, behaviour="epsilon", epsilon=eps, candidates=30)
    k = small.spec.action_count
    fallback = ActionGrid.from_spec(small.spec).default_action(small.spec)
    actions = table.column("action").to_numpy()
    props = table.column("propensity").to_numpy()
    expected = np.where(actions == fallback, 1 - eps + eps / k, eps / k)
    np.testing.assert_allclose(props, expected)
    assert (actions == fallback).mean() > 0.6


def test_logs_are_written_atomically_and_read_back(
    world: World, small: LoadedSpec, tmp_path: Path
) -> None:
    table = exploration_logs(small, world, 20, candidates=30)
    path = write_logs(table, tmp_path / "logs.parquet")
    assert [p.name for p in tmp_path.iterdir()] == ["logs.parquet"]
    data = log_data(small.spec, path, "engaged")
    back = pq.read_table(path)
    assert len(data) == 20 and data.states.shape == (20, 32)
    expected = back.column("click").to_numpy() + 2 * back.column("long_click").to_numpy()
    expected = expected - 5 * back.column("hide").to_numpy()
    np.testing.assert_allclose(data.rewards, expected)


def test_on_policy_evaluation_of_fixed_weights(world: World, small: LoadedSpec) -> None:
    result = evaluate_on_policy(small, world, 13, 30, candidates=30)
    assert result.requests == 30 and np.all(result.actions == 13)
    assert np.isfinite(result.value) and result.std_error > 0
    assert set(result.by_segment) <= set(world.segment_names)


def test_a_policy_learned_from_logs_beats_uniform_random(
    world: World, small: LoadedSpec, tmp_path: Path
) -> None:
    logs = exploration_logs(small, world, 2000, candidates=40, seed=0)
    result = train_policy(small.spec, logs, heads="factorised", seed=0)
    path = result.policy.save(tmp_path / "policy.pt")
    policy = load_policy(path, small.spec)
    held_out = 200
    rng = np.random.default_rng(0)
    uniform = rng.integers(0, small.spec.action_count, held_out)
    random_value = evaluate_on_policy(small, world, uniform, held_out, candidates=40, seed=1)
    learned = evaluate_on_policy(small, world, policy, held_out, candidates=40, seed=1)
    assert learned.value > random_value.value + 0.1, (learned.value, random_value.value)
    # The off-policy estimate from fresh logs brackets the policy's on-policy value on the very
    # requests of those logs (same stream), up to a small slack for an 800-request log.
    table = exploration_logs(small, world, 800, candidates=40, seed=2)
    fresh = log_data(small.spec, table)
    truth = evaluate_on_policy(small, world, policy, 800, candidates=40, seed=2).value
    est = evaluate(
        fresh.actions,
        fresh.rewards,
        fresh.propensities,
        policy.probs(fresh.states, greedy=True),
        bootstrap=300,
    )
    for name in ("snips", "dr"):
        assert est[name].low - 0.1 < truth < est[name].high + 0.1, (name, est[name], truth)


def test_logged_expectations_match_on_policy_truth(world: World, small: LoadedSpec) -> None:
    table = exploration_logs(small, world, 30, candidates=30, seed=5)
    expected = (
        table.column("expected_click").to_numpy()
        + 2 * table.column("expected_long_click").to_numpy()
        - 5 * table.column("expected_hide").to_numpy()
    )
    actions = table.column("action").to_numpy()
    truth = evaluate_on_policy(small, world, actions, 30, candidates=30, seed=5)
    assert truth.value == pytest.approx(expected.mean())
