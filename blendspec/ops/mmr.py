"""Maximal Marginal Relevance (Carbonell & Goldstein 1998; DESIGN §3.7) with a running max.

Per step: one ``phi_j^T Phi`` product (in float64, rounded to float32) and an elementwise max,
O(N d).
"""

from __future__ import annotations

import torch
from torch import Tensor

from blendspec.ops import _native, loop
from blendspec.ops._common import batch_chunks, row_product, workspace
from blendspec.ops._greedy import Selection, Selector, empty_selection, run_chunks
from blendspec.ops._inputs import RowGather, load_transposed, prepare
from blendspec.ops.constraints import ConstraintState, GreedyConstraints, PreparedConstraints
from blendspec.ops.loop import State


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
        # The product runs in float64 and is rounded to float32 (the score's dtype): MKL's float32
        # batched product returns other bits for the same request at another padded width
        # (found by test_invariance at small d), and rounding a float64 sum hides its last bits.
        phi_t = workspace("buf", (b, d, width), torch.float64)
        load_transposed(phi_t, features[sl], valid)
        f64 = workspace("rows", tuple(features[sl].shape), torch.float64)
        rows = RowGather(f64.copy_(features[sl]), torch.float64)
        rel_raw = r * lam_f
        first_raw = r if lam_f == 0.0 else rel_raw
        if loop.wanted(trace):
            return _mmr_loop(valid, rel_raw, first_raw, lam_f == 0.0, sim_coef, phi_t, rows,
                             cons, slate_length)  # fmt: skip
        sel = Selector(valid, torch.float32, p.trace_names(trace), cons.has_caps)
        rel = sel.track(rel_raw)
        max_sim = torch.zeros_like(rel_raw)
        state = ConstraintState(cons, slate_length, torch.float32)
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
            sim = _similarity(rows, j, phi_t)
            if t == 0:
                max_sim = sim
            else:
                torch.maximum(max_sim, sim, out=max_sim)
        return sel.finish()

    bytes_per_request = d * p.width * 8
    return run_chunks(batch_chunks(p.batch, bytes_per_request, p.width), run)


def _similarity(rows: RowGather, j: Tensor, phi_t: Tensor) -> Tensor:
    """``<phi_j, phi_i>`` for every candidate i, in float64 rounded to float32."""
    return row_product(rows(j), phi_t).squeeze(1).to(torch.float32)


def _mmr_loop(
    valid: Tensor,
    rel_raw: Tensor,
    first_raw: Tensor,
    by_relevance: bool,
    sim_coef: float,
    phi_t: Tensor,
    rows: RowGather,
    cons: PreparedConstraints,
    slate_length: int,
) -> Selection:
    """MMR's loop as one ``torch.while_loop`` (``ops/loop.py``): the running max is carried
    (it is the first similarity after step 0, as in the eager loop)."""
    bias = loop.initial_bias(valid, torch.float32)
    rel = rel_raw + bias
    first = first_raw + bias if by_relevance else None

    def score(
        t: Tensor, tracked: State, state: State, pens: list[Tensor], extra: Tensor | None
    ) -> tuple[Tensor, State]:
        later = torch.add(tracked[0], state[0], alpha=-sim_coef)
        return torch.where(t == 0, tracked[0] if first is None else first, later), state

    def update(t: Tensor, j: Tensor, tracked: State, state: State) -> State:
        sim = _similarity(rows, j, phi_t)
        return (torch.where(t == 0, sim, torch.maximum(state[0], sim)),)

    state = (torch.zeros_like(rel_raw),)
    return loop.greedy_loop(valid, torch.float32, slate_length, cons, (rel,), state, score,
                            update)[0]  # fmt: skip
