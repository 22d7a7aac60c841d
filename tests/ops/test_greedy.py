"""greedy_relevance (algorithm ``none``), soft spacing, semantic-ID penalty and caps vs reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings

from blendspec.ops import CategoryCap, GreedyConstraints, SoftSpacing, greedy_relevance

from . import reference as ref
from .helpers import Batch, assert_follows, batches, ref_constraints, signatures


def _check(batch: Batch, trace: bool = False) -> None:
    sel = greedy_relevance(
        batch.relevance, batch.mask, batch.constraints, slate_length=batch.slate_length, trace=trace
    )
    assert sel.indices.shape == (batch.b, batch.slate_length)
    for i in range(batch.b):
        valid = batch.mask[i].numpy()
        r = np.where(valid, batch.relevance[i].numpy(), 0.0)
        cons = ref_constraints(batch.constraints, i)

        def run(follow, r=r, valid=valid, cons=cons):
            return ref.greedy_relevance(r, valid, cons, batch.slate_length, follow)

        assert_follows(sel, i, run, batch.slate_length, signatures(batch, i))


@settings(max_examples=300, deadline=None)
@given(batches())
def test_greedy_matches_reference(batch: Batch) -> None:
    _check(batch)


@settings(max_examples=60, deadline=None)
@given(batches(constraints=False))
def test_unconstrained_is_stable_top_t(batch: Batch) -> None:
    sel = greedy_relevance(batch.relevance, batch.mask, None, slate_length=batch.slate_length)
    for i in range(batch.b):
        valid = batch.mask[i].numpy()
        r = np.where(valid, batch.relevance[i].numpy(), -np.inf)
        order = [int(k) for k in np.argsort(-r, kind="stable") if valid[k]][: batch.slate_length]
        order += [-1] * (batch.slate_length - len(order))
        assert sel.indices[i].tolist() == order


def test_spacing_formula_by_hand() -> None:
    # Candidates 0..3 flagged, 4..5 not; relevance favours flagged ones slightly.
    r = torch.tensor([[1.0, 0.99, 0.98, 0.97, 0.6, 0.5]])
    flags = torch.tensor([[True, True, True, True, False, False]])
    mask = torch.ones_like(flags)
    cons = GreedyConstraints(spacing=(SoftSpacing(flags, window=2, coefficient=0.3),))
    sel = greedy_relevance(r, mask, cons, slate_length=4, trace=True)
    # t=0: 0 (1.0). t=1: flagged pay 0.3*1 -> 0.69 vs 0.6 -> 1. t=2: flagged pay 0.3*(1+1/2)=0.45
    # -> 0.53 < 0.6 -> 4. t=3: flagged pay 0.3*(0 + 1/2) = 0.15 -> 0.83 -> 2.
    assert sel.indices.tolist() == [[0, 1, 4, 2]]
    assert torch.allclose(sel.trace["spacing[0]"], torch.tensor([[0.0, 0.3, 0.0, 0.15]]))
    assert torch.allclose(sel.scores, torch.tensor([[1.0, 0.69, 0.6, 0.83]]))


def test_cap_forced_violation_is_counted() -> None:
    cats = torch.tensor([[0, 0, 0, 1]])
    r = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    mask = torch.ones_like(cats, dtype=torch.bool)
    cons = GreedyConstraints(caps=(CategoryCap(cats, max_count=1, window=2),))
    sel = greedy_relevance(r, mask, cons, slate_length=4)
    # t0: 0; t1: 1 violates (0 within window 2) -> 3; t2: window {3} -> 1; t3: only 2 left,
    # it violates (1 in the window) -> forced.
    assert sel.indices.tolist() == [[0, 3, 1, 2]]
    assert sel.cap_violations.tolist() == [1]


def test_empty_and_short() -> None:
    mask = torch.zeros((2, 0), dtype=torch.bool)
    sel = greedy_relevance(torch.zeros((2, 0)), mask, None, slate_length=3)
    assert sel.indices.tolist() == [[-1] * 3] * 2
    assert sel.scores.tolist() == [[0.0] * 3] * 2
    sel = greedy_relevance(
        torch.zeros((0, 5)), torch.zeros((0, 5), dtype=torch.bool), None, slate_length=3
    )
    assert sel.indices.shape == (0, 3)


def test_bad_arguments() -> None:
    mask = torch.ones((1, 3), dtype=torch.bool)
    with pytest.raises(ValueError, match="slate_length"):
        greedy_relevance(torch.zeros((1, 3)), mask, None, slate_length=-1)
    with pytest.raises(ValueError, match="relevance"):
        greedy_relevance(torch.zeros((1, 4)), mask, None, slate_length=1)
    bad = GreedyConstraints(caps=(CategoryCap(torch.zeros((1, 3), dtype=torch.long), 1, 0),))
    with pytest.raises(ValueError, match=r"caps\[0\].window"):
        greedy_relevance(torch.zeros((1, 3)), mask, bad, slate_length=1)
