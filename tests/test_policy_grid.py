"""Exhaustive on-policy evaluation: the fast path must equal the slate-by-slate ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from blendspec.policy.explore import Blender, evaluate_on_policy, expected_outcomes, grid_values
from blendspec.policy.grid import ActionGrid
from blendspec.sim.world import OUTCOMES, World, WorldConfig
from blendspec.spec.loader import LoadedSpec, load_spec
from tests.conftest import SPECS


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(n_items=1500, n_users=400))


@pytest.fixture(scope="module")
def ads() -> LoadedSpec:
    return load_spec(SPECS / "ads.blend")


def test_vectorised_expectations_equal_the_world_slate_by_slate(
    world: World, ads: LoadedSpec
) -> None:
    requests = list(world.requests(12, candidates=(5, 60), seed=3))  # some slates are short
    blender = Blender(ads, world)
    grid = ActionGrid.from_spec(ads.spec)
    rng = np.random.default_rng(0)
    weights = blender.full_weights(grid.decode(rng.integers(0, grid.size, len(requests))))
    slates = blender.slates(requests, weights)
    width = max(s.size for s in slates)
    positions = np.full((len(requests), width), -1, dtype=np.int64)
    for i, (r, s) in enumerate(zip(requests, slates, strict=True)):
        at = {int(c): j for j, c in enumerate(r.candidate_ids)}
        positions[i, : s.size] = [at[int(c)] for c in s]
    fast = expected_outcomes(world, requests, positions)
    for i, (r, s) in enumerate(zip(requests, slates, strict=True)):
        slow = world.expected(r, s)
        for o in OUTCOMES:
            assert fast[o][i] == pytest.approx(float(slow[o].sum()), rel=1e-9, abs=1e-12)


def test_grid_values_equal_on_policy_evaluation_of_each_action(
    world: World, ads: LoadedSpec
) -> None:
    actions = np.array([0, 17, 345, 999])
    gv = grid_values(ads, world, 10, actions=actions, candidates=50, request_chunk=4)
    assert gv.outcomes["click"].shape == (10, 4) and gv.requests == 10
    rewards = gv.rewards(ads.spec)
    for j, a in enumerate(actions):
        truth = evaluate_on_policy(ads, world, int(a), 10, candidates=50)
        assert rewards[:, j].mean() == pytest.approx(truth.value, rel=1e-9)
        assert gv.outcomes["hide"][:, j].mean() == pytest.approx(truth.outcomes["hide"])
    # Serving a per-request choice is a lookup into the same matrix.
    choice = np.array([0, 17, 345, 999, 0, 17, 345, 999, 0, 0])
    served = gv.serve(choice)
    mixed = evaluate_on_policy(ads, world, choice, 10, candidates=50)
    assert served["click"].mean() == pytest.approx(mixed.outcomes["click"])
    with pytest.raises(ValueError, match="not evaluated"):
        gv.serve(np.full(10, 5))
