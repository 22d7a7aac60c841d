"""The compiled module runs the utility-only part of a spec on a padded batch, exactly as the
formulas say, and a request gets the same slate alone as inside a batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blendspec.compiler.compile import compile_graph
from blendspec.compiler.graph import Graph
from blendspec.compiler.lower import BlendModule, MissingLowering, NodeExecutionError, TorchLowering
from blendspec.spec.loader import load_text

SPEC = """
spec utility_only
slate 4
input p_click: score
input p_save: score
input p_hide: score
input blocked: flag
objective click = p_click
objective save = 2 * log1p(p_save) - 0.5
objective hide = clip(p_hide, 0, 0.5)
objective liked = zscore(p_click) + rank(p_save) / 2 + pow(p_save, 2)
weight w_click = 1.5 in [0, 5]
weight w_save = 0.5 in [0, 5]
weight w_hide = -2 in [-5, 0] {sign = negative}
weight w_liked = 0.25 in [0, 1]
utility = w_click * click + w_save * save + w_hide * hide + w_liked * liked + 0.1
diversity none
filter blocked
truncate 5
"""


def module() -> BlendModule:
    return BlendModule(compile_graph(load_text(SPEC, "dsl")))


def reference_utility(click: np.ndarray, save: np.ndarray, hide: np.ndarray) -> np.ndarray:
    """Straight from the spec, one request, float64."""
    if len(click) == 0:
        return np.zeros(0)
    z = (click - click.mean()) / click.std() if click.std() > 0 else np.zeros_like(click)
    rank = np.array([(save < s).sum() for s in save]) / max(len(save) - 1, 1)
    liked = z + rank / 2 + save**2
    return (
        1.5 * click
        + 0.5 * (2 * np.log1p(save) - 0.5)
        - 2 * np.clip(hide, 0, 0.5)
        + 0.25 * liked
        + 0.1
    )


def reference_slate(utility: np.ndarray, blocked: np.ndarray, length: int, keep: int) -> list[int]:
    order = sorted(range(len(utility)), key=lambda i: (-utility[i], i))
    eligible = [i for i in order if not blocked[i]][:keep]
    return eligible[:length]


def make_batch(sizes: list[int], seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], list]:
    rng = np.random.default_rng(seed)
    n = max(sizes + [1])
    mask = torch.zeros(len(sizes), n, dtype=torch.bool)
    columns = {name: torch.zeros(len(sizes), n) for name in ("p_click", "p_save", "p_hide")}
    columns["blocked"] = torch.zeros(len(sizes), n, dtype=torch.bool)
    requests = []
    for row, size in enumerate(sizes):
        # Quantised values keep ties exact: the tie rule, not float noise, must decide them.
        click = rng.integers(0, 8, size) / 8
        save = rng.integers(0, 8, size) / 8
        hide = rng.integers(0, 8, size) / 8
        blocked = rng.random(size) < 0.2
        mask[row, :size] = True
        columns["p_click"][row, :size] = torch.tensor(click)
        columns["p_save"][row, :size] = torch.tensor(save)
        columns["p_hide"][row, :size] = torch.tensor(hide)
        columns["blocked"][row, :size] = torch.tensor(blocked)
        requests.append((click, save, hide, blocked))
    return mask, columns, requests


@pytest.mark.parametrize("seed", range(5))
def test_utility_and_slates_match_the_reference(seed: int) -> None:
    sizes = [0, 1, 3, 7, 12]
    mask, columns, requests = make_batch(sizes, seed)
    out = module()(mask, columns)
    assert out["indices"].shape == (len(sizes), 4)
    for row, (click, save, hide, blocked) in enumerate(requests):
        utility = reference_utility(click, save, hide)
        expected = reference_slate(utility, blocked, length=4, keep=5)
        got = [int(i) for i in out["indices"][row] if i >= 0]
        assert got == expected
        np.testing.assert_allclose(
            out["utility"][row, : len(got)].numpy(), utility[expected], rtol=1e-5, atol=1e-5
        )
        assert torch.all(out["indices"][row, len(got) :] == -1)
    assert out["weights"].shape == (len(sizes), 4)
    assert torch.allclose(out["weights"][0], torch.tensor([1.5, 0.5, -2.0, 0.25]))


def test_same_slate_alone_and_in_a_batch() -> None:
    mask, columns, _ = make_batch([9, 3, 12, 5], seed=11)
    together = module()(mask, columns)["indices"]
    for row in range(4):
        alone_mask = mask[row : row + 1]
        alone = module()(alone_mask, {k: v[row : row + 1] for k, v in columns.items()})["indices"]
        assert torch.equal(alone[0], together[row])


def test_missing_lowering_is_named_with_its_source_position() -> None:
    class WithoutUtility(TorchLowering):
        visit_utility = None

    graph = compile_graph(load_text(SPEC, "dsl", "specs/utility_only.blend"))
    with pytest.raises(
        MissingLowering, match=r"`utility` has no torch lowering .*utility_only\.blend:16:11"
    ):
        BlendModule(graph, WithoutUtility(slate_length=4))


def test_runtime_error_names_the_executing_node() -> None:
    mask, columns, _ = make_batch([3], seed=1)
    del columns["p_hide"]
    with pytest.raises(NodeExecutionError, match=r"%\d+ = input\(…\)  # <spec>:\d+:\d+"):
        module()(mask, columns)


def test_lint_catches_a_broken_graph() -> None:
    graph: Graph = compile_graph(load_text(SPEC, "dsl"))
    assert graph.lint() == []
    graph.nodes[-1].inputs = (graph.nodes[-1].inputs[1],) + graph.nodes[-1].inputs[1:]
    assert any("must be Selection" in p for p in graph.lint())


def _homefeed_batch(sizes: list[int], seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    n = max(sizes)
    mask = torch.zeros(len(sizes), n, dtype=torch.bool)
    for row, size in enumerate(sizes):
        mask[row, :size] = True

    def quantised(*shape: int) -> torch.Tensor:
        return torch.randint(0, 16, shape, generator=generator).float() / 16

    inputs = {
        name: quantised(len(sizes), n) for name in ("p_click", "p_save", "p_longclick", "p_hide")
    }
    inputs |= {
        "visual": torch.randn(len(sizes), n, 256, generator=generator),
        "text": torch.randn(len(sizes), n, 384, generator=generator),
        "graph": torch.randn(len(sizes), n, 128, generator=generator),
        "sid": torch.randint(0, 3, (len(sizes), n, 4), generator=generator),
        "topic": torch.randint(0, 5, (len(sizes), n), generator=generator),
        "quality_risk": torch.rand(len(sizes), n, generator=generator) < 0.2,
        "beauty_filter": torch.rand(len(sizes), n, generator=generator) < 0.2,
        "blocked": torch.rand(len(sizes), n, generator=generator) < 0.05,
    }
    return mask, inputs


@pytest.mark.parametrize("stem", ["homefeed", "discovery"])
def test_compiled_example_runs_and_is_batch_invariant(stem: str) -> None:
    from tests.conftest import SPECS

    loaded = load_text((SPECS / f"{stem}.blend").read_text(), "dsl")
    blend = BlendModule(compile_graph(loaded))
    mask, inputs = _homefeed_batch([60, 7, 0, 33], seed=5)
    together = blend(mask, inputs)
    assert together["indices"].shape == (4, loaded.spec.slate.length)
    assert torch.all(together["indices"][2] == -1)
    for row, size in enumerate([60, 7, 0, 33]):
        alone = blend(mask[row : row + 1, : max(size, 1)], {
            k: v[row : row + 1, : max(size, 1)] for k, v in inputs.items()
        })  # fmt: skip
        assert torch.equal(alone["indices"][0], together["indices"][row])


def test_compiled_ssd_equals_the_operators_called_by_hand() -> None:
    from blendspec import ops
    from tests.conftest import SPECS

    loaded = load_text((SPECS / "homefeed.blend").read_text(), "dsl")
    mask, inputs = _homefeed_batch([40, 25], seed=9)
    got = BlendModule(compile_graph(loaded))(mask, inputs)
    utility = (
        inputs["p_click"]
        + 0.5 * torch.log1p(inputs["p_save"])
        + 2 * inputs["p_longclick"].clamp(0, 0.5)
        - 4 * inputs["p_hide"]
    )
    keep = mask & ~inputs["blocked"]
    order = torch.sort(
        torch.where(keep, utility, torch.tensor(float("-inf"))), dim=1, descending=True, stable=True
    )
    top = torch.zeros_like(keep).scatter_(1, order.indices[:, :300], True) & keep
    relevance = ops.normalize_relevance(utility, top, "zscore")
    phi = ops.feature_map(
        ops.SimilaritySignals(
            embeddings=((inputs["visual"], 0.5), (inputs["text"], 0.3), (inputs["graph"], 0.2)),
            categories=((inputs["topic"], 0.1),),
        ),
        top,
        bias=True,
    )
    constraints = ops.GreedyConstraints(
        spacing=(
            ops.SoftSpacing(inputs["quality_risk"], 8, 1.0),
            ops.SoftSpacing(inputs["beauty_filter"], 4, 0.5),
        ),
        semantic_id=ops.SemanticIdPenalty(inputs["sid"], 5, 2, 0.3),
        caps=(ops.CategoryCap(inputs["topic"], 3, 10),),
    )
    expected = ops.ssd(
        relevance, phi, top, constraints, slate_length=50, window=10, theta=0.7, gamma=1.0,
        variant="stabilized", epsilon=1e-6,
    )  # fmt: skip
    assert torch.equal(got["indices"], expected.indices)
