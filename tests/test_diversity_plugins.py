"""The diversifier registry: every plugin is wired into every stage through it, once."""

from __future__ import annotations

import typing

import pytest
import torch

from blendspec import ops
from blendspec.compiler.graph import REGISTRY
from blendspec.compiler.lower import TorchLowering
from blendspec.diversity import BY_OP, DIVERSIFIERS, PLUGINS, Diversifier, Diversity
from blendspec.ops import _native
from blendspec.spec.model import Spec


def _instance(plugin: type[Diversifier]) -> Diversifier:
    """The plugin's block with its defaults (a similarity where it takes one)."""
    data: dict[str, object] = {"algorithm": plugin.name()}
    if plugin.uses_features:
        data["similarity"] = "cosine(visual)"
    return plugin.model_validate(data)


def test_names_and_operators_are_unique_and_registered() -> None:
    assert len(DIVERSIFIERS) == len(PLUGINS) == len(BY_OP)
    for plugin in PLUGINS:
        assert DIVERSIFIERS[plugin.name()] is plugin
        assert BY_OP[plugin.op] is plugin
        assert REGISTRY[plugin.op].doc == plugin.summary
        assert ("FeatureMap" in REGISTRY[plugin.op].ports) == plugin.uses_features


def test_the_spec_model_accepts_every_plugin_and_nothing_else() -> None:
    (union, _) = typing.get_args(Diversity)
    assert set(typing.get_args(union)) == set(PLUGINS)
    spec_field = Spec.model_fields["diversity"]
    assert spec_field.annotation == union
    for plugin in PLUGINS:
        assert type(_instance(plugin)) is plugin


def test_a_similarity_plugin_says_so_at_every_hook() -> None:
    for plugin in PLUGINS:
        block = _instance(plugin)
        has_similarity = block.similarity_formula() is not None
        assert has_similarity == plugin.uses_features
        assert (block.relevance_method() is not None) == plugin.uses_features
        attrs = block.node_attrs()
        assert "length" not in attrs
        for key, window in block.windows():
            assert getattr(block, key) == window


def _batch(b: int = 3, n: int = 24, d: int = 8) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(5)
    relevance = torch.randn((b, n), generator=g)
    features = torch.nn.functional.normalize(torch.randn((b, n, d), generator=g), dim=2)
    mask = torch.ones((b, n), dtype=torch.bool)
    mask[1, 20:] = False
    return relevance, features, mask


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name())
def test_select_runs_the_operator_on_both_paths(
    plugin: type[Diversifier], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`select` lowers the block to its operator; a plugin that claims a compiled loop takes it
    on CPU (and only then), and both paths pick the same slates."""
    if not _native.library():
        pytest.skip(f"no compiled loops here: {_native.build_error}")
    relevance, features, mask = _batch()
    attrs = {"length": 6, **_instance(plugin).node_attrs()}
    phi = features if plugin.uses_features else None
    calls: list[str] = []
    real = _native.run_loop

    def counting(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(_native, "run_loop", counting)
    spacing = ops.GreedyConstraints(spacing=(ops.SoftSpacing(relevance > 0.5, 3, 0.2),))
    native = plugin.select(attrs, relevance, phi, mask, spacing, trace=False)
    assert (len(calls) > 0) == plugin.compiled_loop
    with ops.kernels("torch"):
        calls.clear()
        torch_path = plugin.select(attrs, relevance, phi, mask, spacing, trace=False)
        assert calls == []
    assert torch.equal(native.indices, torch_path.indices)
    torch.testing.assert_close(native.scores, torch_path.scores, rtol=1e-5, atol=1e-5)
    assert native.indices.shape == (3, 6)
    assert (native.indices[1] < 20).all()


def test_the_lowering_dispatches_every_plugin_operator() -> None:
    lowering = TorchLowering(slate_length=4)
    for plugin in PLUGINS:
        assert not hasattr(lowering, f"visit_{plugin.op}")  # one generic visitor, no per-op copy
    assert callable(lowering.visit_selection)
