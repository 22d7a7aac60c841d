"""The optional per-step trace: components add up to the score, and it changes nothing else."""

from __future__ import annotations

import torch
from hypothesis import given, settings

from blendspec.ops import Selection, dpp, feature_map, greedy_relevance, mmr, ssd

from .helpers import Batch, batches


def _run(batch: Batch, trace: bool) -> dict[str, Selection]:
    sig = batch.signals(cat_beta=0.5)
    phi_b = feature_map(sig, batch.mask, bias=True)
    phi = feature_map(sig, batch.mask, bias=False)
    args = (batch.relevance,)
    kw = {"slate_length": batch.slate_length, "trace": trace}
    c = batch.constraints
    return {
        "none": greedy_relevance(*args, batch.mask, c, **kw),
        "ssd": ssd(*args, phi_b, batch.mask, c, window=3, theta=0.6, gamma=1.5, **kw),
        "ssd_volume": ssd(
            *args, phi_b, batch.mask, c, window=3, theta=0.6, gamma=1.5, variant="volume", **kw
        ),
        "dpp": dpp(*args, phi, batch.mask, c, alpha=0.7, epsilon=1e-3, **kw),
        "mmr": mmr(*args, phi, batch.mask, c, lam=0.6, **kw),
    }


@settings(max_examples=40, deadline=None)
@given(batches(max_n=10, max_t=8))
def test_trace_components_sum_to_score(batch: Batch) -> None:
    plain = _run(batch, trace=False)
    traced = _run(batch, trace=True)
    for name, sel in traced.items():
        assert plain[name].trace is None
        assert torch.equal(sel.indices, plain[name].indices), name
        assert torch.equal(sel.scores, plain[name].scores), name
        tr = sel.trace
        assert tr is not None and "relevance" in tr
        total = tr["relevance"] + tr.get("diversity", torch.zeros_like(sel.scores))
        for key, value in tr.items():
            if key.startswith(("spacing", "semantic_id")):
                total = total - value
            assert value.shape == sel.scores.shape, (name, key)
        taken = sel.indices >= 0
        assert torch.allclose(total[taken], sel.scores[taken], atol=1e-4, rtol=1e-5), name
        assert not total[~taken].any()
