"""Max sum of distances (DESIGN §3.7b, as pyversity's ``msd``) with a running sum.

Per step: one ``phi_j^T Phi`` product and one elementwise add, O(N d), like MMR's running max.

The state and the score are float64 (like DPP's): the diversity term is a sum of up to T - 1
distances, so it grows with the slate (to ~2 T for unit features) while the differences that
decide a pick stay those of the relevance; in float32 its rounding would reach ~T * 6e-8 of its
size, above the near-tie resolution the exactness tests ask of every operator. Products of the
float32 features are exact in float64, so the distances are correct to the last bits of a
float64 sum. Scores are returned as float32 (``Selection``), the per-step trace in float64.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from blendspec.ops import _native, loop
from blendspec.ops._common import batch_chunks, row_product, workspace
from blendspec.ops._greedy import Selection, Selector, empty_selection, run_chunks
from blendspec.ops._inputs import RowGather, load_transposed, prepare
from blendspec.ops.constraints import ConstraintState, GreedyConstraints, PreparedConstraints
from blendspec.ops.loop import State

_DT = torch.float64


def msd(
    relevance: Tensor,
    features: Tensor,
    mask: Tensor,
    constraints: GreedyConstraints | None = None,
    *,
    slate_length: int,
    theta: float,
    trace: bool = False,
) -> Selection:
    """MSD: ``theta r_i + (1 - theta) sum_{s in S} (1 - <phi_i, phi_s>) - penalties``.

    ``features`` is phi ``[B, N, D]`` (``feature_map(..., bias=False)``); S is the slate so far.
    ``theta`` weighs relevance as SSD's does (pyversity's ``1 - diversity``). The sum over the
    empty set of the first step is 0, so the first pick is the argmax of ``theta r_i -
    penalties``, and of ``r_i - penalties`` at theta = 0, where ``theta r_i`` would tie every
    candidate (MMR's and SSD's rule; pyversity's first pick is the argmax of r_i at any theta).
    The distance is ``1 - <phi_i, phi_s>`` as is, not clipped: with one L2-normalised embedding
    it is ``1 - cos`` in [0, 2] (pyversity's cosine distance); with several signals (DESIGN §3.2)
    the kernel is a weighted sum of cosines and the distance can be negative. A zero feature row
    is at distance 1 from everything (orthogonal, DESIGN §3.8).
    """
    p = prepare(relevance, mask, constraints, slate_length, features)
    if p.n == 0:
        return empty_selection(p.batch, slate_length, mask.device, p.trace_names(trace))
    theta_f = float(theta)
    if _native.usable(relevance, features, constraints=p.constraints):
        params = [ctypes.c_double(theta_f)]
        return _native.run_loop(
            "msd", p.valid, p.relevance, features, p.constraints, slate_length, params, _DT,
            p.trace_names(trace),
        )  # fmt: skip
    d = features.shape[2]
    div_coef = 1.0 - theta_f

    def run(sl: slice) -> Selection:
        valid, r, cons = p.chunk(sl)
        b, width = valid.shape
        phi_t = workspace("buf", (b, d, width), _DT)
        load_transposed(phi_t, features[sl], valid)
        f64 = workspace("rows", tuple(features[sl].shape), _DT)
        rows = RowGather(f64.copy_(features[sl]), _DT)
        r64 = r.to(_DT)
        rel_raw = r64 * theta_f
        # The first pick at theta = 0 is by relevance itself, not theta r_i = 0 (a tie of all).
        first_raw = r64 if theta_f == 0.0 else rel_raw
        if loop.wanted(trace):
            return _msd_loop(valid, rel_raw, first_raw, theta_f == 0.0, div_coef, phi_t, rows,
                             cons, slate_length)  # fmt: skip
        state = ConstraintState(cons, slate_length, _DT)
        sel = Selector(valid, _DT, p.trace_names(trace), cons.has_caps)
        rel = sel.track(rel_raw)
        distance = torch.zeros_like(rel_raw)  # sum over the slate of 1 - <phi_i, phi_s>
        for t in range(slate_length):
            pens = state.penalties(t)
            if t == 0:
                div = torch.zeros_like(rel_raw)
                score = first_raw + sel.bias if theta_f == 0.0 else rel
            else:
                div = distance * div_coef
                score = rel + div
            for pen in pens:
                score = score - pen

            def parts(
                pens: list[Tensor] = pens, t: int = t, div: Tensor = div
            ) -> dict[str, Tensor]:
                return {
                    "relevance": first_raw if t == 0 else rel_raw,
                    "diversity": div,
                    **dict(zip(state.names, pens, strict=True)),
                }

            j = sel.step(score, sel.cap_bias(state.cap_violations()), parts)
            state.update(t, j, sel)
            if t == slate_length - 1:
                break
            distance.add_(_distances(rows, j, phi_t))
        return sel.finish()

    bytes_per_request = d * p.width * 8
    return run_chunks(batch_chunks(p.batch, bytes_per_request, p.width), run)


def _distances(rows: RowGather, j: Tensor, phi_t: Tensor) -> Tensor:
    """``1 - <phi_j, phi_i>`` for every candidate i."""
    return torch.rsub(row_product(rows(j), phi_t).squeeze(1), 1.0)


def _msd_loop(
    valid: Tensor,
    rel_raw: Tensor,
    first_raw: Tensor,
    by_relevance: bool,
    div_coef: float,
    phi_t: Tensor,
    rows: RowGather,
    cons: PreparedConstraints,
    slate_length: int,
) -> Selection:
    """MSD's loop as one ``torch.while_loop`` (``ops/loop.py``): the distance sum is carried."""
    bias = loop.initial_bias(valid, _DT)
    rel = rel_raw + bias
    first = first_raw + bias if by_relevance else None

    def score(
        t: Tensor, tracked: State, state: State, pens: list[Tensor], extra: Tensor | None
    ) -> tuple[Tensor, State]:
        later = tracked[0] + state[0] * div_coef
        return torch.where(t == 0, tracked[0] if first is None else first, later), state

    def update(t: Tensor, j: Tensor, tracked: State, state: State) -> State:
        return (state[0] + _distances(rows, j, phi_t),)

    state = (torch.zeros_like(rel_raw),)
    return loop.greedy_loop(valid, _DT, slate_length, cons, (rel,), state, score, update)[0]
