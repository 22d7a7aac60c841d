"""The DRL-PUT policy at run time: in-module action distribution, per-request deterministic
sampling, fallback on policy failure, and the action/propensity columns of `blend run`.

The reference for the distribution is :meth:`LearnedPolicy.act` / :func:`apply_exploration`
(numpy); the reference for the per-request random number is splitmix64 on Python integers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from blendspec.cli import app
from blendspec.compiler.lower import (
    REQUEST_SEED_KEY,
    PolicyRuntime,
    module_for,
    request_seed,
    request_seeds,
    uniform_from_seeds,
)
from blendspec.policy.grid import ActionGrid, spec_hash, state_inputs
from blendspec.policy.network import PolicyNet
from blendspec.policy.runtime import LearnedPolicy, apply_exploration
from blendspec.policy.store import PolicyFileError
from blendspec.spec.loader import LoadedSpec, load_spec, load_text
from blendspec.spec.model import (
    EpsilonExploration,
    NoExploration,
    SoftmaxExploration,
    UniformExploration,
)
from tests.conftest import SPECS

ADS_TEXT = (SPECS / "ads.blend").read_text()
ADS_EXPLORATION = "exploration = {kind = epsilon, epsilon = 0.05}"
EXPLORATIONS = {
    "none": ("{kind = none}", NoExploration(kind="none")),
    "epsilon": ("{kind = epsilon, epsilon = 0.2}", EpsilonExploration(kind="epsilon", epsilon=0.2)),
    "uniform": ("{kind = uniform}", UniformExploration(kind="uniform")),
    "softmax": (
        "{kind = softmax, temperature = 0.5}",
        SoftmaxExploration(kind="softmax", temperature=0.5),
    ),
}
TINY = """spec tiny
slate 3
input p_click: score
input p_long: score
input state: features[2]
objective ctr = p_click
objective long_ctr = p_long
weight w_a = 1 in [0, 2] {source = policy, grid = [0, 1, 2]}
weight w_b = 0 in [0, 2] {source = policy, grid = [0, 1, 2]}
utility = w_a * ctr + w_b * long_ctr
outcome click
reward clicks = click
policy {
  state = [state]
  %s
  exploration = %s
}
"""


def ads_text(exploration: str = "epsilon", file: str | None = None, fallback: str = "") -> str:
    policy = f"exploration = {EXPLORATIONS[exploration][0]}"
    if file is not None:
        policy = f'file = "{file}"\n  ' + policy
    if fallback:
        policy += f"\n  fallback = {fallback}"
    assert ADS_EXPLORATION in ADS_TEXT
    return ADS_TEXT.replace(ADS_EXPLORATION, policy)


def write_spec(folder: Path, text: str, name: str = "ads.blend") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def random_policy(
    spec_text: str, *, heads: str = "joint", kind: str = "policy_gradient", seed: int = 0
) -> LearnedPolicy:
    """A randomly initialised policy, sharpened so that its softmax is far from uniform."""
    spec = load_text(spec_text, "dsl").spec
    torch.manual_seed(seed)
    grid = ActionGrid.from_spec(spec)
    state = state_inputs(spec)
    net = PolicyNet(sum(s for _, s in state), grid.shape, (16,), heads)  # type: ignore[arg-type]
    with torch.no_grad():
        net.out.weight.mul_(4.0)
    net.eval()
    return LearnedPolicy(net, grid, state, kind, (16,), spec_hash(spec))  # type: ignore[arg-type]


def saved_runtime(
    tmp_path: Path, exploration: str, *, heads: str = "joint", kind: str = "policy_gradient"
) -> tuple[LearnedPolicy, PolicyRuntime, LoadedSpec]:
    """A policy saved beside a copy of the ads spec, and the runtime loaded from that spec."""
    policy = random_policy(ads_text(exploration), heads=heads, kind=kind)
    policy.save(tmp_path / "ads.pt")
    loaded = load_spec(write_spec(tmp_path, ads_text(exploration, "ads.pt")))
    runtime = PolicyRuntime.from_spec(loaded.spec, loaded.base_dir)
    assert runtime is not None and runtime.net is not None
    return policy, runtime, loaded


def states(n: int, seed: int = 1, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, size)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# The per-request random number
# --------------------------------------------------------------------------------------------

MASK = (1 << 64) - 1


def splitmix_reference(seed: int) -> float:
    z = (seed + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    z ^= z >> 31
    return (z >> 11) / float(1 << 53)


@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=1, max_size=20))
def test_uniform_from_seeds_is_splitmix64_with_wraparound(seeds: list[int]) -> None:
    got = uniform_from_seeds(torch.tensor(seeds, dtype=torch.int64)).tolist()
    assert got == [splitmix_reference(s % (1 << 64)) for s in seeds]
    assert all(0.0 <= u < 1.0 for u in got)


def test_request_seeds_are_stable_int63() -> None:
    ids = ["r0-00000000", "r0-00000001", "", "ü"]
    seeds = request_seeds(ids)
    assert seeds.dtype == torch.int64 and bool((seeds >= 0).all())
    assert seeds.tolist() == [request_seed(r) for r in ids] == request_seeds(ids).tolist()
    assert len(set(seeds.tolist())) == len(ids)
    # Pinned: the same request id draws the same number on every machine and in every release.
    assert request_seed("r0-00000000") == request_seeds(["r0-00000000"]).item()
    assert request_seed("request-42") == 8803683728352471539


# --------------------------------------------------------------------------------------------
# The distribution equals LearnedPolicy.act's
# --------------------------------------------------------------------------------------------


def reference_distribution(policy: LearnedPolicy, x: np.ndarray, exploration) -> np.ndarray:  # type: ignore[no-untyped-def]
    """What `LearnedPolicy.act` samples from; without exploration the served argmax (one-hot)."""
    if exploration.kind == "none":
        return policy.probs(x, greedy=True)
    if exploration.kind == "softmax" and policy.kind != "value":
        s = policy.scores(x).astype(np.float64) / exploration.temperature
        p = np.exp(s - s.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)
    return apply_exploration(policy.probs(x), exploration)


@pytest.mark.parametrize("exploration", list(EXPLORATIONS))
@pytest.mark.parametrize(
    ("heads", "kind"),
    [("joint", "policy_gradient"), ("factorised", "policy_gradient"), ("joint", "value")],
)
def test_distribution_equals_learned_policy(
    tmp_path: Path, exploration: str, heads: str, kind: str
) -> None:
    policy, runtime, _ = saved_runtime(tmp_path, exploration, heads=heads, kind=kind)
    x = states(16)
    spec_exploration = EXPLORATIONS[exploration][1]
    want = reference_distribution(policy, x, spec_exploration)
    got = runtime.distribution(torch.from_numpy(x)).numpy()
    assert got.shape == (16, 1000)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
    decision = runtime(torch.from_numpy(x), request_seeds([f"q{i}" for i in range(16)]))
    actions = decision.action.numpy()
    # The propensity is the probability of the chosen action under the serving distribution.
    np.testing.assert_allclose(decision.propensity.numpy(), want[np.arange(16), actions], rtol=1e-5)
    assert not decision.fallback.any()
    np.testing.assert_array_equal(
        decision.weights.numpy(), policy.grid.decode(actions).astype(np.float32)
    )
    if exploration != "none":
        # act, sampling with its own generator, reports the same probabilities for its actions.
        acted, props = policy.act(x, exploration=spec_exploration, rng=3)
        np.testing.assert_allclose(got[np.arange(16), acted], props, rtol=1e-5)


def test_greedy_is_the_argmax_with_propensity_one(tmp_path: Path) -> None:
    policy, runtime, _ = saved_runtime(tmp_path, "none")
    x = states(64, seed=7)
    decision = runtime(torch.from_numpy(x))  # deterministic: no seed needed
    np.testing.assert_array_equal(decision.action.numpy(), policy.probs(x).argmax(axis=1))
    assert decision.propensity.dtype == torch.float32
    assert bool((decision.propensity == 1.0).all())


def test_without_a_file_exploration_perturbs_the_default_action() -> None:
    loaded = load_text(ads_text("epsilon"), "dsl")
    runtime = PolicyRuntime.from_spec(loaded.spec)
    assert runtime is not None and runtime.net is None
    grid = ActionGrid.from_spec(loaded.spec)
    default = grid.default_action(loaded.spec)
    dist = runtime.distribution(torch.zeros((2, 32))).numpy()
    assert dist[0, default] == pytest.approx(0.8 + 0.2 / 1000)
    assert dist[0, (default + 1) % 1000] == pytest.approx(0.2 / 1000)
    decision = runtime(torch.zeros((400, 32)), request_seeds([f"r{i}" for i in range(400)]))
    greedy = decision.action.numpy() == default
    assert 0.7 < greedy.mean() < 0.9  # ε = 0.2
    np.testing.assert_allclose(
        decision.propensity.numpy(), np.where(greedy, 0.8 + 0.2 / 1000, 0.2 / 1000), rtol=1e-6
    )


def test_no_file_and_no_exploration_serves_the_fallback_weights() -> None:
    loaded = load_text(ads_text("none"), "dsl")
    module = module_for(loaded)
    runtime = module.policy_runtime
    assert runtime is not None and not runtime.acts
    decision = runtime(torch.zeros((3, 32)))
    assert decision.action.tolist() == [-1, -1, -1]
    assert not decision.fallback.any()  # no policy to fail: not counted as a failure
    assert decision.weights.tolist() == [[1.0, 1.0, 0.5]] * 3


# --------------------------------------------------------------------------------------------
# Per-request determinism and the sampling frequencies
# --------------------------------------------------------------------------------------------


def test_a_request_draws_the_same_action_alone_in_a_batch_and_across_runs(tmp_path: Path) -> None:
    _, runtime, loaded = saved_runtime(tmp_path, "softmax")
    x = torch.from_numpy(states(40, seed=11))
    ids = [f"req-{i}" for i in range(40)]
    together = runtime(x, request_seeds(ids))
    for i in (0, 17, 39):
        alone = runtime(x[i : i + 1], request_seeds(ids[i : i + 1]))
        assert alone.action.item() == together.action[i].item()
        # The matrix product may round differently for another batch size (BLAS blocking).
        assert alone.propensity.item() == pytest.approx(together.propensity[i].item(), rel=1e-5)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    shuffled = runtime(x[order], request_seeds([ids[i] for i in order.tolist()]))
    assert torch.equal(shuffled.action, together.action[order])
    again = PolicyRuntime.from_spec(loaded.spec, loaded.base_dir)  # a fresh load: another run
    assert again is not None
    assert torch.equal(again(x, request_seeds(ids)).action, together.action)
    assert len(set(together.action.tolist())) > 1  # it does sample


def test_sampled_frequencies_match_the_distribution(tmp_path: Path) -> None:
    text = TINY % ('file = "tiny.pt"', "{kind = softmax, temperature = 2}")
    random_policy(TINY % ("", "{kind = none}")).save(tmp_path / "tiny.pt")
    loaded = load_spec(write_spec(tmp_path, text, "tiny.blend"))
    runtime = PolicyRuntime.from_spec(loaded.spec, loaded.base_dir)
    assert runtime is not None
    n = 20_000
    x = torch.tensor([[0.3, -1.2]]).expand(n, 2)
    decision = runtime(x, torch.arange(n, dtype=torch.int64) * 7919 + 12345)
    p = runtime.distribution(x[:1]).numpy()[0]
    freq = np.bincount(decision.action.numpy(), minlength=9) / n
    # Within 4 standard errors for each action, and a chi-square far below its 0.999 quantile
    # (26.1 for 8 degrees of freedom).
    assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-12)
    chi2 = float((((freq - p) * n) ** 2 / (p * n)).sum())
    assert chi2 < 26.1, (chi2, freq, p)


# --------------------------------------------------------------------------------------------
# Fallback
# --------------------------------------------------------------------------------------------


def ads_batch(b: int, n: int = 12, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones((b, n), dtype=torch.bool)
    inputs = {
        "p_click": torch.rand(b, n, generator=g),
        "p_longclick": torch.rand(b, n, generator=g),
        "p_hide": torch.rand(b, n, generator=g) * 0.1,
        "bid": torch.rand(b, n, generator=g),
        "visual": torch.randn(b, n, 256, generator=g),
        "topic": torch.randint(0, 4, (b, n), generator=g),
        "user_state": torch.randn(b, 32, generator=g),
    }
    return mask, inputs


@pytest.mark.parametrize(("fallback", "weights"), [("", [1.0, 1.0, 0.5]), ("nearest", None)])
def test_non_finite_state_falls_back_to_the_fixed_weights(
    tmp_path: Path, fallback: str, weights: list[float] | None
) -> None:
    random_policy(ads_text()).save(tmp_path / "ads.pt")
    loaded = load_spec(write_spec(tmp_path, ads_text("epsilon", "ads.pt", fallback)))
    module = module_for(loaded)
    assert module.policy_runtime is not None
    assert any(n.startswith("policy_runtime.net.") for n, _ in module.named_parameters())
    mask, inputs = ads_batch(4)
    inputs["user_state"][1, 3] = float("nan")
    inputs["user_state"][2, 0] = float("inf")
    inputs[REQUEST_SEED_KEY] = request_seeds(["a", "b", "c", "d"])
    with torch.inference_mode():  # as `blend run` calls it
        out = module(mask, inputs)
    assert out["policy_fallback"].tolist() == [False, True, True, False]
    assert out["action"][1].item() == out["action"][2].item() == -1
    assert bool((out["action"][[0, 3]] >= 0).all())
    assert out["propensity"][1].item() == 1.0
    grid = ActionGrid.from_spec(loaded.spec)
    if weights is None:  # the grid action nearest the defaults
        weights = grid.decode([grid.default_action(loaded.spec)])[0].tolist()
    assert out["weights"][1, :3].tolist() == weights
    assert out["weights"][1, 3].item() == -2.0  # the fixed weight is untouched
    np.testing.assert_array_equal(
        out["weights"][[0, 3], :3].numpy(),
        grid.decode(out["action"][[0, 3]].numpy()).astype(np.float32),
    )
    assert torch.isfinite(out["scores"]).all()


# --------------------------------------------------------------------------------------------
# blend run, blend diff
# --------------------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture(scope="module")
def ads_dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from blendspec.sim.world import World, write_dump

    path = tmp_path_factory.mktemp("dump") / "ads.parquet"
    world = World.default(seed=0)  # the world `blend simulate` writes from
    write_dump(world, path, requests=24, candidates=(10, 40), seed=3)
    return path


def test_blend_run_writes_actions_consistent_with_the_weights(
    tmp_path: Path, ads_dump: Path
) -> None:
    out, metrics = tmp_path / "slates.parquet", tmp_path / "m.json"
    result = runner.invoke(
        app,
        ["run", str(SPECS / "ads.blend"), "--candidates", str(ads_dump), "-o", str(out),
         "--metrics", str(metrics), "--batch-size", "5"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "policy fallbacks" in result.output
    assert json.loads(metrics.read_text())["policy_fallbacks"] == 0
    table = pq.read_table(out)
    assert str(table.schema.field("action").type) == "int64"
    assert str(table.schema.field("propensity").type) == "float"
    spec = load_spec(SPECS / "ads.blend").spec
    grid = ActionGrid.from_spec(spec)
    actions = table.column("action").to_numpy()
    assert actions.min() >= 0
    weights = np.stack([table.column(f"weight_{n}").to_numpy() for n in grid.names], axis=1)
    np.testing.assert_array_equal(grid.decode(actions).astype(np.float32), weights)
    k, default = grid.size, grid.default_action(spec)
    expected = np.where(actions == default, 0.95 + 0.05 / k, 0.05 / k).astype(np.float32)
    np.testing.assert_allclose(table.column("propensity").to_numpy(), expected, rtol=1e-6)
    # One action per request, repeated on its slots; the same in another batch size.
    per_request = {}
    for rid, action in zip(table.column("request_id").to_pylist(), actions, strict=True):
        assert per_request.setdefault(rid, action) == action
    again = tmp_path / "again.parquet"
    result = runner.invoke(
        app,
        ["run", str(SPECS / "ads.blend"), "--candidates", str(ads_dump), "-o", str(again),
         "--batch-size", "7"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert pq.read_table(again).equals(table)


def test_blend_run_with_a_policy_file_beside_the_spec(tmp_path: Path, ads_dump: Path) -> None:
    policy = random_policy(ads_text())
    policy.save(tmp_path / "specs" / "policies" / "ads.pt")
    spec = write_spec(tmp_path / "specs", ads_text("none", "policies/ads.pt"))
    out = tmp_path / "slates.parquet"
    result = runner.invoke(app, ["run", str(spec), "--candidates", str(ads_dump), "-o", str(out)])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert set(table.column("propensity").to_pylist()) == {1.0}
    first = table.filter(table.column("position").to_numpy() == 0)
    from blendspec.io.dump import DumpReader

    reader = DumpReader(ads_dump, load_spec(spec).spec)
    state = np.concatenate([b.inputs["user_state"].numpy() for b in reader.batches(64)])
    np.testing.assert_array_equal(
        first.column("action").to_numpy(), policy.probs(state).argmax(axis=1)
    )


def test_a_failing_policy_is_counted_and_gets_the_fallback(tmp_path: Path, ads_dump: Path) -> None:
    policy = random_policy(ads_text())
    with torch.no_grad():
        policy.net.out.bias.fill_(float("nan"))  # a broken file: every output is NaN
    policy.save(tmp_path / "ads.pt")
    spec = write_spec(tmp_path, ads_text("epsilon", "ads.pt"))
    out, metrics = tmp_path / "slates.parquet", tmp_path / "m.json"
    result = runner.invoke(
        app,
        ["run", str(spec), "--candidates", str(ads_dump), "-o", str(out), "--metrics",
         str(metrics)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(metrics.read_text())["policy_fallbacks"] == 24
    table = pq.read_table(out)
    assert set(table.column("action").to_pylist()) == {-1}
    assert all(table.column("policy_fallback").to_pylist())
    assert set(table.column("weight_w_ctr").to_pylist()) == {1.0}
    assert set(table.column("weight_w_value").to_pylist()) == {0.5}


def test_a_policy_file_for_another_grid_is_a_clear_error(tmp_path: Path, ads_dump: Path) -> None:
    random_policy(TINY % ("", "{kind = none}")).save(tmp_path / "tiny.pt")
    spec = write_spec(tmp_path, ads_text("none", "tiny.pt"))
    out = tmp_path / "slates.parquet"
    result = runner.invoke(app, ["run", str(spec), "--candidates", str(ads_dump), "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert "tiny.pt" in result.stderr and "grid" in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()
    with pytest.raises(PolicyFileError, match=r"tiny\.pt"):
        PolicyRuntime.from_spec(load_spec(spec).spec, tmp_path)


def test_diff_impact_with_policy_weights(tmp_path: Path, ads_dump: Path) -> None:
    old = write_spec(tmp_path, ADS_TEXT, "old.blend")
    new = write_spec(tmp_path, ADS_TEXT.replace("lambda = 0.8", "lambda = 0.5"), "new.blend")
    result = runner.invoke(
        app,
        ["diff", str(old), str(new), "--candidates", str(ads_dump), "--format", "json"],
    )  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    impact = json.loads(result.stdout)["files"][0]["impact"]
    assert impact["requests"] == 24
    # Both sides draw the same action per request (common random numbers), so a spec compared
    # with itself does not change a slate.
    same = runner.invoke(
        app,
        ["diff", str(old), str(shutil.copy(old, tmp_path / "same.blend")), "--candidates",
         str(ads_dump), "--format", "json"],
    )  # fmt: skip
    assert same.exit_code == 0, same.output
    assert json.loads(same.stdout)["files"][0]["impact"]["slates_changed"]["count"] == 0


def test_ray_engine_draws_the_same_actions_as_the_local_engine(
    tmp_path: Path, ads_dump: Path
) -> None:
    pytest.importorskip("ray")
    from blendspec.engine.run import run

    table = pq.read_table(ads_dump)
    ids = table.column("request_id").to_pylist()
    cut = next(i for i in range(len(ids) // 2, len(ids)) if ids[i] != ids[i - 1])
    shards = tmp_path / "shards"
    shards.mkdir()
    pq.write_table(table.slice(0, cut), shards / "part-0.parquet")
    pq.write_table(table.slice(cut), shards / "part-1.parquet")
    loaded = load_spec(SPECS / "ads.blend")
    local = run(loaded, shards, tmp_path / "local.parquet", batch_size=5)
    distributed = run(loaded, shards, tmp_path / "ray.parquet", batch_size=8, engine="ray")
    assert pq.read_table(tmp_path / "ray.parquet").equals(pq.read_table(tmp_path / "local.parquet"))
    assert distributed.policy_fallbacks == local.policy_fallbacks == 0
