"""slate_metrics against the per-request definitions."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blendspec.ops import dpp, feature_map, greedy_relevance, slate_metrics

from . import reference as ref
from .helpers import Batch, batches


@settings(max_examples=120, deadline=None)
@given(batches(max_t=12), st.integers(1, 6), st.integers(0, 3))
def test_metrics_match_definitions(batch: Batch, window: int, min_prefix: int) -> None:
    sel = greedy_relevance(
        batch.relevance, batch.mask, batch.constraints, slate_length=batch.slate_length
    )
    emb = batch.embeddings[0]
    flags = {"a": batch.flags[0], "b": batch.flags[1]}
    got = slate_metrics(
        sel,
        batch.relevance,
        batch.mask,
        embeddings=emb,
        categories=batch.categories,
        semantic_ids=batch.codes,
        flags=flags,
        window=window,
        min_prefix=min_prefix,
    )
    for i in range(batch.b):
        slate = [int(x) for x in sel.indices[i] if x >= 0]
        valid = batch.mask[i].numpy()
        want = ref.slate_metrics(
            slate,
            np.where(valid, batch.relevance[i].numpy(), 0.0),
            valid,
            emb[i].numpy(),
            batch.categories[i].numpy(),
            batch.codes[i].numpy(),
            {k: v[i].numpy() for k, v in flags.items()},
            window,
            min_prefix,
        )
        for key, value in want.items():
            g = float(got[key][i])
            if math.isnan(value):
                assert math.isnan(g), (key, g)
            else:
                assert math.isclose(g, value, rel_tol=1e-6, abs_tol=1e-6), (key, g, value)
        assert bool(got["empty"][i]) == (not valid.any())
        assert int(got["cap_violations"][i]) == int(sel.cap_violations[i])


def test_early_stops_are_reported() -> None:
    e = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])
    mask = torch.ones((1, 3), dtype=torch.bool)
    r = torch.tensor([[3.0, 2.0, 1.0]])
    from blendspec.ops import SimilaritySignals

    phi = feature_map(SimilaritySignals(embeddings=((e, 1.0),)), mask, bias=False)
    sel = dpp(r, phi, mask, None, slate_length=3, alpha=1.0)
    m = slate_metrics(sel, r, mask, embeddings=e)
    assert m["early_stops"].tolist() == [True]
    assert m["ilad"].tolist() == [0.0]
    assert m["utility_retained"].tolist() == [1.0]
