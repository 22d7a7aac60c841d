"""Maximal Marginal Relevance (Carbonell & Goldstein 1998; DESIGN §3.7) with a running max.

Per step: one ``phi_j^T Phi`` product and an elementwise max, O(N d).
"""

from __future__ import annotations

import torch
from torch import Tensor

from blendspec.ops import _native
from blendspec.ops._common import batch_chunks, workspace
from blendspec.ops._greedy import Selection, Selector, empty_selection, run_chunks
from blendspec.ops._inputs import RowGather, load_transposed, prepare
from blendspec.ops.constraints import ConstraintState, GreedyConstraints


def mmr(
    relevance: Tensor,
    features: Tensor,
    mask: Tensor,
    constraints: GreedyConstraints | None = None,
    *,
    slate_length: int,
    lam: float,
    trace: bool = False,
) -> Selection:
    """MMR: ``lam r_i - (1 - lam) max_{j in S} <phi_i, phi_j> - penalties``.

    ``features`` is phi ``[B, N, D]`` (``feature_map(..., bias=False)``). The max over the empty
    set of the first step counts as 0 (the first pick is the argmax of ``lam r_i - penalties``).
    """
    p = prepare(relevance, mask, constraints, slate_length, features)
    if p.n == 0:
        return empty_selection(
            p.batch,
            slate_length,
            mask.device,
            p.trace_names(trace),
        )
    lam_f = float(lam)
    if _native.usable(relevance, features):
        return _native.mmr(
            p.valid,
            p.relevance,
            features,
            p.constraints,
            slate_length,
            lam_f,
            p.trace_names(trace),
        )
    d = features.shape[2]
    sim_coef = 1.0 - lam_f

    def run(sl: slice) -> Selection:
        valid, r, cons = p.chunk(sl)
        b, width = valid.shape
        state = ConstraintState(cons, slate_length, torch.float32)
        sel = Selector(valid, torch.float32, p.trace_names(trace), cons.has_caps)
        phi_t = workspace("buf", (b, d, width), torch.float32)
        load_transposed(phi_t, features[sl], valid)
        rows = RowGather(features[sl], torch.float32)
        rel_raw = r * lam_f
        rel = sel.track(rel_raw)
        max_sim = torch.zeros_like(rel_raw)
        for t in range(slate_length):
            pens = state.penalties(t)
            score = rel if t == 0 else torch.add(rel, max_sim, alpha=-sim_coef)
            for pen in pens:
                score = score - pen

            def parts(
                pens: list[Tensor] = pens, t: int = t, max_sim: Tensor = max_sim
            ) -> dict[str, Tensor]:
                div = max_sim * -sim_coef if t else torch.zeros_like(rel_raw)
                return {
                    "relevance": rel_raw,
                    "diversity": div,
                    **dict(zip(state.names, pens, strict=True)),
                }

            j = sel.step(score, sel.cap_bias(state.cap_violations()), parts)
            state.update(t, j, sel)
            if t == slate_length - 1:
                break
            sim = torch.bmm(rows(j).unsqueeze(1), phi_t).squeeze(1)
            if t == 0:
                max_sim = sim
            else:
                torch.maximum(max_sim, sim, out=max_sim)
        return sel.finish()

    bytes_per_request = d * p.width * 4
    return run_chunks(batch_chunks(p.batch, bytes_per_request, p.width), run)
