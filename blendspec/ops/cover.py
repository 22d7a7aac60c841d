"""Facility-location coverage (DESIGN §3.7b, as pyversity's ``cover``), exact.

With ``S+_ij = max(0, <phi_i, phi_j>)`` and the coverage ``acc_j = sum_{s in S} S+_js`` of every
candidate j by the slate S so far, a candidate's gain is what taking it adds to the concave
coverage ``sum_j acc_j^gamma``:

    gain_i = sum_j [(acc_j + S+_ij)^gamma - acc_j^gamma],

summed over every real candidate j of the request (taken ones included, as pyversity does;
padding adds exact zeros). The N x N matrix S+ is computed once per request (one product), and
every step recomputes every gain from it: N^2 powers per step, no incremental approximation. The
operator is meant for N up to a few thousand (S+ is 8 N^2 bytes: 32 MB at N = 2000).

The state and the score are float64 (like DPP's): a gain is a sum of N terms of size up to
``(T ||phi||^2)^gamma``, so float32 would round it at ~N * 6e-8 of its size while picks are
decided by differences between candidates. Each term is a difference, so that terms of columns
the candidate does not reach (``S+_ij = 0``) are exact zeros. ``0^gamma`` is 0 (gamma > 0): a
candidate covers nothing a zero feature row stands for, and a zero row covers nothing.
At gamma = 1 the gain no longer depends on the slate (``(a + s) - a = s``): it is the row sum of
S+, computed once, exactly (no ``(a + s) - a`` rounding). At gamma = 0.5 the power is a square
root (what ``torch.pow`` computes for 0.5, and the compiled loop as well).
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from blendspec.ops import _native, loop
from blendspec.ops._common import batch_chunks, workspace
from blendspec.ops._greedy import Selection, Selector, empty_selection, run_chunks
from blendspec.ops._inputs import RowGather, load_transposed, prepare
from blendspec.ops.constraints import ConstraintState, GreedyConstraints, PreparedConstraints
from blendspec.ops.loop import State

_DT = torch.float64


def cover(
    relevance: Tensor,
    features: Tensor,
    mask: Tensor,
    constraints: GreedyConstraints | None = None,
    *,
    slate_length: int,
    theta: float,
    gamma: float,
    trace: bool = False,
) -> Selection:
    """Coverage: ``theta r_i + (1 - theta) gain_i - penalties`` with the facility-location gain
    above, ``gamma`` in (0, 1] (lower: coverage saturates faster, more diversity).

    ``features`` is phi ``[B, N, D]`` (``feature_map(..., bias=False)``). ``theta`` weighs
    relevance as SSD's does (pyversity's ``1 - diversity``). The first step needs no theta = 0
    rule: its gain ``sum_j (S+_ij)^gamma`` (how much of the request i alone covers) already
    ranks the candidates, so at theta = 0 the first pick is the best single coverer (as in
    pyversity), ties to the lower index.
    """
    gamma_f = float(gamma)
    if not 0.0 < gamma_f <= 1.0:
        raise ValueError(f"cover gamma must be in (0, 1], got {gamma!r}")
    p = prepare(relevance, mask, constraints, slate_length, features)
    if p.n == 0:
        return empty_selection(p.batch, slate_length, mask.device, p.trace_names(trace))
    theta_f = float(theta)
    if _native.usable(relevance, features, constraints=p.constraints):
        params = [ctypes.c_double(theta_f), ctypes.c_double(gamma_f)]
        return _native.run_loop(
            "cover", p.valid, p.relevance, features, p.constraints, slate_length, params, _DT,
            p.trace_names(trace),
        )  # fmt: skip
    d = features.shape[2]
    div_coef = 1.0 - theta_f
    modular = gamma_f == 1.0

    def run(sl: slice) -> Selection:
        valid, r, cons = p.chunk(sl)
        b, width = valid.shape
        phi_t = workspace("buf", (b, d, width), _DT)
        load_transposed(phi_t, features[sl], valid)
        # S+[b, j, i] = max(0, <phi_j, phi_i>), zero in padding rows and columns.
        sim = workspace("scratch", (b, width, width), _DT)
        torch.bmm(phi_t.transpose(1, 2), phi_t, out=sim)
        sim.clamp_min_(0.0)
        rows = RowGather(sim, _DT)
        rel_raw = r.to(_DT) * theta_f
        # Reduced over j, the outer axis: accumulated in candidate order, so trailing padding
        # rows (exact zeros) leave the bits as they are whatever the padded width.
        fixed_gain = sim.sum(1) if modular else None
        if loop.wanted(trace):
            return _cover_loop(valid, rel_raw, fixed_gain, sim, gamma_f, div_coef, cons,
                               slate_length)  # fmt: skip
        state = ConstraintState(cons, slate_length, _DT)
        sel = Selector(valid, _DT, p.trace_names(trace), cons.has_caps)
        rel = sel.track(rel_raw)
        acc = torch.zeros_like(rel_raw)  # coverage of every candidate j by the slate
        for t in range(slate_length):
            pens = state.penalties(t)
            if fixed_gain is None:
                # phi_t is no longer needed: its buffer holds the terms.
                gain = _gain(sim, acc, gamma_f, workspace("buf", (b, width, width), _DT))
            else:
                gain = fixed_gain
            div = gain * div_coef
            score = rel + div
            for pen in pens:
                score = score - pen

            def parts(pens: list[Tensor] = pens, div: Tensor = div) -> dict[str, Tensor]:
                return {
                    "relevance": rel_raw,
                    "diversity": div,
                    **dict(zip(state.names, pens, strict=True)),
                }

            j = sel.step(score, sel.cap_bias(state.cap_violations()), parts)
            state.update(t, j, sel)
            if t == slate_length - 1:
                break
            if fixed_gain is None:
                acc.add_(rows(j))
        return sel.finish()

    bytes_per_request = (2 * p.width + d) * p.width * 8
    return run_chunks(batch_chunks(p.batch, bytes_per_request, p.width), run)


def _gain(sim: Tensor, acc: Tensor, gamma: float, terms: Tensor | None = None) -> Tensor:
    """Every candidate's coverage gain given the coverage ``acc`` (``terms``: a ``[b, Np, Np]``
    buffer to compute in, else a fresh one)."""
    terms = torch.add(sim, acc.unsqueeze(2), out=terms)
    terms.pow_(gamma)
    terms.sub_(acc.pow(gamma).unsqueeze(2))
    return terms.sum(1)


def _cover_loop(
    valid: Tensor,
    rel_raw: Tensor,
    fixed_gain: Tensor | None,
    sim: Tensor,
    gamma: float,
    div_coef: float,
    cons: PreparedConstraints,
    slate_length: int,
) -> Selection:
    """COVER's loop as one ``torch.while_loop`` (``ops/loop.py``): the coverage is carried
    (nothing at gamma = 1, where the gain does not change)."""
    rel = rel_raw + loop.initial_bias(valid, _DT)

    def score(
        t: Tensor, tracked: State, state: State, pens: list[Tensor], extra: Tensor | None
    ) -> tuple[Tensor, State]:
        gain = fixed_gain if fixed_gain is not None else _gain(sim, state[0], gamma)
        return tracked[0] + gain * div_coef, state

    def update(t: Tensor, j: Tensor, tracked: State, state: State) -> State:
        # The rows of S+ gathered from S+ itself: a view of it made outside the loop would be
        # a second input aliasing the first, which torch.while_loop refuses.
        return (state[0] + RowGather(sim, _DT)(j),)

    if fixed_gain is not None:
        return loop.greedy_loop(valid, _DT, slate_length, cons, (rel,), (), score, None)[0]
    state = (torch.zeros_like(rel_raw),)
    return loop.greedy_loop(valid, _DT, slate_length, cons, (rel,), state, score, update)[0]
