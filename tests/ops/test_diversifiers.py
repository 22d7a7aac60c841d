"""SSD, DPP and MMR against the per-request references, on random and adversarial batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blendspec.ops import dpp, feature_map, mmr, ssd

from . import reference as ref
from .helpers import Batch, assert_follows, batches, kernel_of, ref_constraints, signatures

_SETTINGS = settings(max_examples=250, deadline=None)


def _inputs(batch: Batch, i: int, phi: torch.Tensor):
    valid = batch.mask[i].numpy()
    r = np.where(valid, batch.relevance[i].numpy(), 0.0)
    return valid, r, ref_constraints(batch.constraints, i), phi[i]


@_SETTINGS
@given(
    batches(),
    st.integers(1, 12),
    st.sampled_from([0.0, 0.3, 0.5, 0.9, 1.0]),
    st.sampled_from([0.5, 1.0, 2.5]),
    st.sampled_from(["stabilized", "volume"]),
    st.sampled_from([0.0, 0.5]),
    st.sampled_from([1e-6, 0.05, 1.0]),
)
def test_ssd_matches_reference(batch, window, theta, gamma, variant, sid_beta, epsilon) -> None:
    phi = feature_map(batch.signals(cat_beta=0.5, sid_beta=sid_beta), batch.mask, bias=True)
    sel = ssd(
        batch.relevance,
        phi,
        batch.mask,
        batch.constraints,
        slate_length=batch.slate_length,
        window=window,
        theta=theta,
        gamma=gamma,
        variant=variant,
        epsilon=epsilon,
    )
    for i in range(batch.b):
        valid, r, cons, ph = _inputs(batch, i, phi)
        x = ph.double().numpy()

        def run(follow, valid=valid, r=r, cons=cons, x=x):
            return ref.ssd(
                r,
                x,
                valid,
                cons,
                batch.slate_length,
                window,
                theta,
                gamma,
                variant,
                epsilon,
                follow,
            )

        assert_follows(sel, i, run, batch.slate_length, signatures(batch, i, phi))
        assert not bool(sel.early_stops[i])


@_SETTINGS
@given(
    batches(),
    st.sampled_from([None, 1, 2, 3, 20]),
    st.sampled_from([0.0, 0.5, 1.0, 2.0]),
    st.sampled_from([0.0, 1.0]),
    st.sampled_from([1e-6, 1e-3, 0.3]),
)
def test_dpp_matches_reference(batch, window, alpha, cat_beta, epsilon) -> None:
    phi = feature_map(batch.signals(cat_beta=cat_beta), batch.mask, bias=False)
    sel = dpp(
        batch.relevance,
        phi,
        batch.mask,
        batch.constraints,
        slate_length=batch.slate_length,
        alpha=alpha,
        window=window,
        epsilon=epsilon,
    )
    for i in range(batch.b):
        valid, r, cons, ph = _inputs(batch, i, phi)
        s = kernel_of(ph, valid)
        result = {}

        def run(follow, valid=valid, r=r, cons=cons, s=s, result=result):
            result["r"] = ref.dpp(
                r, s, valid, cons, batch.slate_length, alpha, window, epsilon, follow
            )
            return result["r"]

        assert_follows(sel, i, run, batch.slate_length, signatures(batch, i, phi))
        assert bool(sel.early_stops[i]) == result["r"].early_stop


@_SETTINGS
@given(batches(), st.sampled_from([0.0, 0.25, 0.5, 0.8, 1.0]), st.sampled_from([0.0, 0.7]))
def test_mmr_matches_reference(batch, lam, cat_beta) -> None:
    phi = feature_map(batch.signals(cat_beta=cat_beta, sid_beta=0.5), batch.mask, bias=False)
    sel = mmr(
        batch.relevance,
        phi,
        batch.mask,
        batch.constraints,
        slate_length=batch.slate_length,
        lam=lam,
    )
    for i in range(batch.b):
        valid, r, cons, ph = _inputs(batch, i, phi)
        s = kernel_of(ph, valid)

        def run(follow, valid=valid, r=r, cons=cons, s=s):
            return ref.mmr(r, s, valid, cons, batch.slate_length, lam, follow)

        assert_follows(sel, i, run, batch.slate_length, signatures(batch, i, phi))


def test_dpp_exhausts_rank_and_fills_by_relevance() -> None:
    # Rank 2 (two orthogonal directions, duplicated): after two picks every d_i^2 is 0.
    e = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]])
    r = torch.tensor([[0.5, 0.4, 0.3, 0.2, 0.1]])
    mask = torch.ones((1, 5), dtype=torch.bool)
    phi = feature_map(_signals(e), mask, bias=False)
    sel = dpp(r, phi, mask, None, slate_length=5, alpha=1.0)
    assert sel.indices.tolist() == [[0, 2, 1, 3, 4]]
    assert sel.early_stops.tolist() == [True]
    assert torch.allclose(sel.scores[0, 2:], r[0, [1, 3, 4]])


def test_ssd_duplicates_tie_to_lower_index() -> None:
    e = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]])
    r = torch.tensor([[1.0, 0.5, 0.5, 0.5]])
    mask = torch.ones((1, 4), dtype=torch.bool)
    phi = feature_map(_signals(e), mask, bias=True)
    sel = ssd(r, phi, mask, None, slate_length=4, window=2, theta=0.5, gamma=1.0)
    assert sel.indices.tolist() == [[0, 1, 2, 3]]


def _signals(e: torch.Tensor):
    from blendspec.ops import SimilaritySignals

    return SimilaritySignals(embeddings=((e, 1.0),))


def test_argument_checks() -> None:
    mask = torch.ones((1, 3), dtype=torch.bool)
    r, phi = torch.zeros((1, 3)), torch.zeros((1, 3, 2))
    with pytest.raises(ValueError, match="variant"):
        ssd(r, phi, mask, None, slate_length=2, window=2, theta=0.5, gamma=1.0, variant="x")
    with pytest.raises(ValueError, match="window"):
        ssd(r, phi, mask, None, slate_length=2, window=0, theta=0.5, gamma=1.0)
    with pytest.raises(ValueError, match="window"):
        dpp(r, phi, mask, None, slate_length=2, alpha=1.0, window=0)
    with pytest.raises(ValueError, match="features"):
        mmr(r, torch.zeros((1, 4, 2)), mask, None, slate_length=2, lam=0.5)
