"""Maximal Marginal Relevance (Carbonell & Goldstein 1998; DESIGN §3.7) with a running max.

Per step: one ``phi_j^T Phi`` product (in float64, rounded to float32) and an elementwise max,
O(N d).
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
    set of the first step counts as 0 (the first pick is the argmax of ``lam r_i - penalties``,
    of ``r_i - penalties`` at lam = 0, where ``lam r_i`` would tie every candidate).
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
    if _native.usable(relevance, features, constraints=p.constraints):
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
        # The product runs in float64 and is rounded to float32 (the score's dtype): MKL's float32
        # batched product returns other bits for the same request at another padded width
        # (found by test_invariance at small d), and rounding a float64 sum hides its last bits.
        phi_t = workspace("buf", (b, d, width), torch.float64)
        load_transposed(phi_t, features[sl], valid)
        f64 = workspace("rows", tuple(features[sl].shape), torch.float64)
        rows = RowGather(f64.copy_(features[sl]), torch.float64)
        rel_raw = r * lam_f
        rel = sel.track(rel_raw)
        first_raw = r if lam_f == 0.0 else rel_raw
        max_sim = torch.zeros_like(rel_raw)
        for t in range(slate_length):
            pens = state.penalties(t)
            if t == 0:
                score = first_raw + sel.bias if lam_f == 0.0 else rel
            else:
                score = torch.add(rel, max_sim, alpha=-sim_coef)
            for pen in pens:
                score = score - pen

            def parts(
                pens: list[Tensor] = pens, t: int = t, max_sim: Tensor = max_sim
            ) -> dict[str, Tensor]:
                div = max_sim * -sim_coef if t else torch.zeros_like(rel_raw)
                return {
                    "relevance": first_raw if t == 0 else rel_raw,
                    "diversity": div,
                    **dict(zip(state.names, pens, strict=True)),
                }

            j = sel.step(score, sel.cap_bias(state.cap_violations()), parts)
            state.update(t, j, sel)
            if t == slate_length - 1:
                break
            sim = torch.bmm(rows(j).unsqueeze(1), phi_t).squeeze(1).to(torch.float32)
            if t == 0:
                max_sim = sim
            else:
                torch.maximum(max_sim, sim, out=max_sim)
        return sel.finish()

    bytes_per_request = d * p.width * 8
    return run_chunks(batch_chunks(p.batch, bytes_per_request, p.width), run)
