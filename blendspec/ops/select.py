"""Greedy selectors: relevance only (algorithm ``none``), SSD, DPP and MMR.

All share one contract: a batch of requests padded to N candidates with a bool mask, selected in
lock step for ``slate_length`` steps; ties go to the lower candidate index; a request gives the
same slate (bitwise the same scores) alone as inside any batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from blendspec.ops import loop
from blendspec.ops._common import batch_chunks
from blendspec.ops._greedy import Selection, Selector, run_chunks
from blendspec.ops._inputs import prepare
from blendspec.ops.constraints import ConstraintState, GreedyConstraints, PreparedConstraints
from blendspec.ops.dpp import dpp
from blendspec.ops.loop import State
from blendspec.ops.mmr import mmr
from blendspec.ops.ssd import ssd

__all__ = ["Selection", "dpp", "greedy_relevance", "mmr", "ssd"]


def greedy_relevance(
    relevance: Tensor,
    mask: Tensor,
    constraints: GreedyConstraints | None = None,
    *,
    slate_length: int,
    trace: bool = False,
) -> Selection:
    """Algorithm ``none``: at each step the argmax of ``relevance - penalties`` under the caps.

    Without constraints this is the stable top-T by relevance (equal values keep index order).
    """
    p = prepare(relevance, mask, constraints, slate_length)

    def run(sl: slice) -> Selection:
        valid, r, cons = p.chunk(sl)
        if loop.wanted(trace):
            return _relevance_loop(valid, r, cons, slate_length)
        state = ConstraintState(cons, slate_length, torch.float32)
        names = ["relevance", *state.names] if trace else None
        sel = Selector(valid, torch.float32, names)
        rel = sel.track(r)
        for t in range(slate_length):
            pens = state.penalties(t)
            score = rel
            for pen in pens:
                score = score - pen

            def parts(pens: list[Tensor] = pens) -> dict[str, Tensor]:
                return {"relevance": r, **dict(zip(state.names, pens, strict=True))}

            j = sel.step(score, sel.cap_bias(state.cap_violations()), parts)
            state.update(t, j, sel)
        return sel.finish()

    return run_chunks(batch_chunks(p.batch, 0, p.width), run)


def _relevance_loop(
    valid: Tensor, r: Tensor, cons: PreparedConstraints, slate_length: int
) -> Selection:
    """``greedy_relevance``'s loop as one ``torch.while_loop`` (``ops/loop.py``)."""

    def score(
        t: Tensor, tracked: State, state: State, pens: list[Tensor], extra: Tensor | None
    ) -> tuple[Tensor, State]:
        return tracked[0], state

    rel = r + loop.initial_bias(valid, torch.float32)
    return loop.greedy_loop(valid, torch.float32, slate_length, cons, (rel,), (), score, None)[0]
