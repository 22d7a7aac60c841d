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
        "dpp_window": dpp(*args, phi, batch.mask, c, alpha=1.5, window=2, epsilon=0.5, **kw),
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


def _cap_blocked(batch: Batch, i: int, picks: list[int], cand: int) -> bool:
    """Would taking ``cand`` after ``picks`` break a cap of request i (independent recount)?"""
    for cap in batch.constraints.caps:
        cats = cap.categories[i]
        recent = picks[max(0, len(picks) - cap.window + 1) :]
        same = sum(int(cats[p] == cats[cand]) for p in recent)
        if same + 1 > cap.max_count:
            return True
    return False


@settings(max_examples=40, deadline=None)
@given(batches(max_n=10, max_t=8))
def test_full_steps_explain_every_candidate(batch: Batch) -> None:
    """Every candidate's terms at every step add up to the score the step maximised; the pick is
    that score's argmax over the candidates no cap excluded; exclusions are exactly the caps'."""
    for name, sel in _run(batch, trace=True).items():
        steps = sel.steps
        assert steps is not None and sel.trace is not None
        b, t_len = sel.indices.shape
        for key in ("score", "cap_excluded", *sel.trace):
            assert steps[key].shape[:2] == (b, t_len), (name, key)
            assert steps[key].shape[2] >= batch.mask.shape[1], (name, key)
        total = steps["relevance"] + steps.get("diversity", torch.zeros_like(steps["score"]))
        for key, value in steps.items():
            if key.startswith(("spacing", "semantic_id")):
                total = total - value
        score = steps["score"]
        open_ = score > float("-inf")
        assert torch.allclose(total[open_], score[open_], atol=1e-4, rtol=1e-5), name
        for i in range(b):
            picks: list[int] = []
            for t in range(t_len):
                j = int(sel.indices[i, t])
                if j < 0:
                    assert not open_[i, t].any(), name
                    continue
                excluded = steps["cap_excluded"][i, t] > 0
                allowed = open_[i, t] & ~excluded
                assert allowed[j], (name, i, t)
                best = score[i, t].masked_fill(~allowed, float("-inf")).argmax()
                assert int(best) == j, (name, i, t)
                for key in sel.trace:
                    got = steps[key][i, t, j].to(torch.float32)
                    assert torch.equal(got, sel.trace[key][i, t]), (name, key)
                blocked = [_cap_blocked(batch, i, picks, c) for c in range(batch.mask.shape[1])]
                any_ok = any(open_[i, t, c] and not blocked[c] for c in range(len(blocked)))
                for c in range(len(blocked)):
                    if open_[i, t, c]:
                        assert bool(excluded[c]) == (blocked[c] and any_ok), (name, i, t, c)
                picks.append(j)
