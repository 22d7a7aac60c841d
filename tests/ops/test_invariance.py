"""A request gives bitwise the same selection alone, inside any batch, and under any padding."""

from __future__ import annotations

from collections.abc import Callable

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blendspec.ops import (
    CategoryCap,
    GreedyConstraints,
    Selection,
    SemanticIdPenalty,
    SimilaritySignals,
    SoftSpacing,
    _common,
    dpp,
    feature_map,
    greedy_relevance,
    mmr,
    ssd,
)

from .helpers import Batch, batches


def _take(batch: Batch, rows: list[int], width: int) -> Batch:
    """Requests ``rows`` of ``batch``, with the candidate axis cut or padded to ``width``."""
    n = batch.mask.shape[1]

    def fit(x: torch.Tensor, fill) -> torch.Tensor:
        x = x[rows]
        if width <= n:
            return x[:, :width].clone()
        pad = torch.full((x.shape[0], width - n, *x.shape[2:]), fill, dtype=x.dtype)
        return torch.cat([x, pad], 1)

    c = batch.constraints
    cons = GreedyConstraints(
        tuple(SoftSpacing(fit(s.flags, True), s.window, s.coefficient) for s in c.spacing),
        None
        if c.semantic_id is None
        else SemanticIdPenalty(
            fit(c.semantic_id.codes, 5),
            c.semantic_id.window,
            c.semantic_id.min_prefix,
            c.semantic_id.coefficient,
        ),
        tuple(CategoryCap(fit(k.categories, 7), k.max_count, k.window) for k in c.caps),
    )
    return Batch(
        mask=fit(batch.mask, False),
        relevance=fit(batch.relevance, float("nan")),
        embeddings=[fit(e, 3.0) for e in batch.embeddings],
        categories=fit(batch.categories, 11),
        codes=fit(batch.codes, 5),
        flags=[fit(f, True) for f in batch.flags],
        constraints=cons,
        slate_length=batch.slate_length,
        mode=batch.mode,
    )


def _signals(batch: Batch) -> SimilaritySignals:
    return SimilaritySignals(
        embeddings=tuple((e, 1.0 + k) for k, e in enumerate(batch.embeddings)),
        categories=((batch.categories, 0.5),),
        semantic_ids=((batch.codes, 0.7),),
    )


Op = Callable[[Batch], Selection]

OPS: dict[str, Op] = {
    "none": lambda b: greedy_relevance(
        b.relevance, b.mask, b.constraints, slate_length=b.slate_length
    ),
    "ssd": lambda b: ssd(
        b.relevance,
        feature_map(_signals(b), b.mask, bias=True),
        b.mask,
        b.constraints,
        slate_length=b.slate_length,
        window=3,
        theta=0.6,
        gamma=1.3,
    ),
    "ssd_volume": lambda b: ssd(
        b.relevance,
        feature_map(_signals(b), b.mask, bias=True),
        b.mask,
        b.constraints,
        slate_length=b.slate_length,
        window=4,
        theta=0.6,
        gamma=1.3,
        variant="volume",
    ),
    "dpp": lambda b: dpp(
        b.relevance,
        feature_map(_signals(b), b.mask, bias=False),
        b.mask,
        b.constraints,
        slate_length=b.slate_length,
        alpha=0.8,
    ),
    "dpp_window": lambda b: dpp(
        b.relevance,
        feature_map(_signals(b), b.mask, bias=False),
        b.mask,
        b.constraints,
        slate_length=b.slate_length,
        alpha=0.8,
        window=3,
    ),
    "mmr": lambda b: mmr(
        b.relevance,
        feature_map(_signals(b), b.mask, bias=False),
        b.mask,
        b.constraints,
        slate_length=b.slate_length,
        lam=0.6,
    ),
}


def _assert_same(whole: Selection, row: int, part: Selection, prow: int, what: str) -> None:
    assert torch.equal(whole.indices[row], part.indices[prow]), what
    assert torch.equal(whole.scores[row], part.scores[prow]), what
    assert torch.equal(whole.cap_violations[row], part.cap_violations[prow]), what
    assert torch.equal(whole.early_stops[row], part.early_stops[prow]), what


def _check_invariance(batch: Batch, extra: int) -> None:
    n = batch.mask.shape[1]
    for name, op in OPS.items():
        whole = op(batch)
        reversed_rows = list(range(batch.b))[::-1]
        rev = op(_take(batch, reversed_rows, n + extra))
        for i in range(batch.b):
            valid = batch.mask[i].nonzero()
            width = int(valid.max()) + 1 if len(valid) else 0
            alone = op(_take(batch, [i], width))
            _assert_same(whole, i, alone, 0, f"{name}: request {i} alone")
            _assert_same(whole, i, rev, batch.b - 1 - i, f"{name}: request {i} reversed+padded")


@settings(max_examples=80, deadline=None)
@given(batches(max_b=4, max_n=20), st.integers(1, 40))
def test_quantised_batches_are_invariant(batch: Batch, extra: int) -> None:
    _check_invariance(batch, extra)


def _float_batch(b: int, n: int, d: int, t: int, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, n + 1, (b,), generator=g)
    counts[0] = n
    mask = torch.arange(n)[None, :] < counts[:, None]
    flags = torch.rand((b, n), generator=g) < 0.3
    cats = torch.randint(0, 6, (b, n), generator=g)
    codes = torch.randint(0, 3, (b, n, 3), generator=g)
    cons = GreedyConstraints(
        (SoftSpacing(flags, 4, 0.4),),
        SemanticIdPenalty(codes, 5, 1, 0.3),
        (CategoryCap(cats, 2, 5),),
    )
    return Batch(
        mask=mask,
        relevance=torch.randn((b, n), generator=g),
        embeddings=[torch.randn((b, n, d), generator=g), torch.randn((b, n, 5), generator=g)],
        categories=cats,
        codes=codes,
        flags=[flags, flags],
        constraints=cons,
        slate_length=t,
        mode="float",
    )


def test_float_batches_across_chunks(monkeypatch) -> None:
    """Realistic float inputs, a batch split over several cache chunks, and odd widths."""
    monkeypatch.setattr(_common, "CACHE_BUDGET_BYTES", 300_000)  # force several chunks
    batch = _float_batch(b=9, n=203, d=37, t=25, seed=3)
    _check_invariance(batch, extra=45)


def test_large_requests_alone_vs_batch() -> None:
    batch = _float_batch(b=5, n=700, d=64, t=30, seed=5)
    for name, op in OPS.items():
        whole = op(batch)
        for i in (0, 3):
            valid = batch.mask[i].nonzero()
            width = int(valid.max()) + 1 if len(valid) else 0
            alone = op(_take(batch, [i], width))
            _assert_same(whole, i, alone, 0, f"{name}: request {i} alone")
