"""normalize_relevance and feature_map against their definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blendspec.ops import SimilaritySignals, feature_map, normalize_relevance
from blendspec.ops.relevance import masked_zscore

from . import reference as ref
from .helpers import Batch, batches


@settings(max_examples=80, deadline=None)
@given(
    batches(constraints=False),
    st.sampled_from(["zscore", "minmax", "raw"]),
    st.sampled_from([1.0, 1e-3, 1e4]),
)
def test_normalize_matches_reference(batch: Batch, method: str, scale: float) -> None:
    u = batch.relevance * scale + 0.1
    got = normalize_relevance(u, batch.mask, method)
    assert got.dtype == torch.float32
    for i in range(batch.b):
        valid = batch.mask[i].numpy()
        want = ref.normalize_relevance(np.where(valid, u[i].numpy(), 0.0), valid, method)
        np.testing.assert_allclose(got[i].numpy(), want, rtol=1e-6, atol=1e-6 * scale)
        assert np.all(got[i].numpy()[~valid] == 0)
        if method != "raw" and valid.any() and np.ptp(u[i].numpy()[valid]) == 0:
            assert np.all(got[i].numpy() == 0)  # constant request: exactly 0, not noise
        alone = normalize_relevance(u[i : i + 1], batch.mask[i : i + 1], method)
        assert torch.equal(alone[0], got[i])


@settings(max_examples=60, deadline=None)
@given(batches(constraints=False), st.sampled_from([1.0, 1e-3, 1e4]), st.integers(1, 40))
def test_the_zscore_transform_is_the_relevance_zscore_and_batch_invariant(
    batch: Batch, scale: float, extra: int
) -> None:
    """`zscore(x)` in a formula and `relevance = zscore` are one function: the same bits, and
    each request's bits do not depend on its batch, its padded width or its padding's values."""
    u = batch.relevance * scale + 0.1
    got = masked_zscore(u, batch.mask)
    assert torch.equal(got, normalize_relevance(u, batch.mask, "zscore"))
    wide_mask = torch.cat([batch.mask, torch.zeros((batch.b, extra), dtype=torch.bool)], 1)
    garbage = torch.full((batch.b, extra), float("nan"))
    wide = torch.cat([torch.where(batch.mask, u, float("nan")), garbage], 1)
    got_wide = masked_zscore(wide, wide_mask)
    assert torch.equal(got_wide[:, : batch.mask.shape[1]], got)
    assert torch.all(got_wide[:, batch.mask.shape[1] :] == 0)
    for i in range(batch.b):
        alone = masked_zscore(u[i : i + 1], batch.mask[i : i + 1])
        assert torch.equal(alone[0], got[i])
        valid = batch.mask[i].numpy()
        want = ref.normalize_relevance(np.where(valid, u[i].numpy(), 0.0), valid, "zscore")
        np.testing.assert_allclose(got[i].numpy(), want, rtol=1e-6, atol=1e-6)


def test_normalize_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="zscore"):
        normalize_relevance(torch.zeros((1, 2)), torch.ones((1, 2), dtype=torch.bool), "rank")


@settings(max_examples=60, deadline=None)
@given(
    batches(constraints=False),
    st.booleans(),
    st.sampled_from([0.0, 0.5]),
    st.sampled_from([0.0, 2.0]),
)
def test_feature_map_inner_products(
    batch: Batch, bias: bool, cat_beta: float, sid_beta: float
) -> None:
    signals = batch.signals(cat_beta=cat_beta, sid_beta=sid_beta)
    phi = feature_map(signals, batch.mask, bias=bias)
    assert phi.dtype == torch.float32 and not torch.isnan(phi).any()
    for i in range(batch.b):
        valid = batch.mask[i].numpy()
        want = ref.similarity_kernel(
            [(e[i].numpy(), beta) for e, beta in signals.embeddings],
            [(c[i].numpy(), beta) for c, beta in signals.categories],
            [(c[i].numpy(), beta) for c, beta in signals.semantic_ids],
            valid,
            bias,
        )
        x = phi[i].double().numpy()
        np.testing.assert_allclose(x @ x.T, want, atol=2e-6)
        assert np.all(x[~valid] == 0)
        # Alone, the request has the same coordinates; a batch only appends zero columns.
        one = Batch(
            batch.mask[i : i + 1],
            batch.relevance[i : i + 1],
            [e[i : i + 1] for e in batch.embeddings],
            batch.categories[i : i + 1],
            batch.codes[i : i + 1],
            batch.flags,
            batch.constraints,
            batch.slate_length,
            batch.mode,
        )
        alone = feature_map(one.signals(cat_beta=cat_beta, sid_beta=sid_beta), one.mask, bias=bias)[
            0
        ]
        width = alone.shape[1]
        assert torch.equal(phi[i, :, :width], alone)
        assert not phi[i, :, width:].any()


def test_zero_tiny_and_huge_embeddings() -> None:
    e = torch.tensor([[[0.0, 0.0], [1e-30, 0.0], [3e30, 4e30], [3.0, 4.0]]])
    mask = torch.ones((1, 4), dtype=torch.bool)
    phi = feature_map(SimilaritySignals(embeddings=((e, 1.0),)), mask, bias=True)
    assert torch.allclose(
        phi[0, :, :2], torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.6, 0.8], [0.6, 0.8]])
    )
    assert phi[0, :, 2].tolist() == [1.0] * 4


def test_negative_weight_rejected() -> None:
    mask = torch.ones((1, 2), dtype=torch.bool)
    with pytest.raises(ValueError, match=">= 0"):
        feature_map(
            SimilaritySignals(embeddings=((torch.ones((1, 2, 2)), -1.0),)), mask, bias=False
        )
