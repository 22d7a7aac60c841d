"""Input preparation shared by the selectors: validation, sanitising and aligned padding."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from blendspec.ops._common import check_common, pad_candidates, padded_width, sanitize
from blendspec.ops.constraints import (
    GreedyConstraints,
    PreparedConstraints,
    prepare_constraints,
)


@dataclass(frozen=True)
class Prepared:
    """A batch ready for a lock-step greedy loop: everything padded to ``width`` candidates."""

    batch: int
    n: int
    width: int
    valid: Tensor  # [B, Np] bool
    relevance: Tensor  # [B, Np] float32, 0 on padding
    constraints: PreparedConstraints

    def chunk(self, sl: slice) -> tuple[Tensor, Tensor, PreparedConstraints]:
        return self.valid[sl], self.relevance[sl], self.constraints.slice(sl)

    def trace_names(self, trace: bool) -> list[str] | None:
        """A diversifier's trace components (None without a trace): relevance, diversity, then
        the penalties in the order ``ConstraintState.penalties`` returns them."""
        if not trace:
            return None
        return ["relevance", "diversity", *self.constraints.names]


def prepare(
    relevance: Tensor,
    mask: Tensor,
    constraints: GreedyConstraints | None,
    slate_length: int,
    features: Tensor | None = None,
) -> Prepared:
    """Check shapes, replace padding garbage by zeros, pad the candidate axis to an aligned width."""
    extra = {} if features is None else {"features": features}
    check_common(mask, slate_length, relevance=relevance, **extra)
    if features is not None and features.dim() != 3:
        raise ValueError(f"features must be [B, N, D], got {tuple(features.shape)}")
    if relevance.dim() != 2:
        raise ValueError(f"relevance must be [B, N], got {tuple(relevance.shape)}")
    b, n = mask.shape
    width = padded_width(n)
    valid = pad_candidates(mask, width, False)
    r = pad_candidates(sanitize(relevance.to(torch.float32), mask), width, 0.0)
    cons = prepare_constraints(constraints, mask, width, slate_length)
    return Prepared(b, n, width, valid, r, cons)


def load_transposed(out: Tensor, features: Tensor, valid: Tensor) -> None:
    """Copy phi ``[b, N, D]`` into ``out`` ``[b, D, Np]`` and zero every padding column.

    Candidates go on the contiguous axis so that the per-step product ``phi_j^T Phi`` is a
    row-vector-times-matrix, which MKL runs at memory speed (the ``[N, D] x [D]`` form is ~10x
    slower in batched mode on this build). Padding may hold NaN: it is overwritten, not
    multiplied, and only when there is padding inside the first N columns.
    """
    n = features.shape[1]
    out[:, :, :n] = features.transpose(1, 2)
    out[:, :, n:] = 0.0
    if torch.compiler.is_compiling() or not bool(valid[:, :n].all()):
        out.masked_fill_(~valid.unsqueeze(1), 0.0)


class RowGather:
    """phi_j for one pick per request, gathered as contiguous rows of the original features.

    Picks are always valid candidates, except for a request with nothing left, whose state no
    longer matters (it is never selected from again), so garbage there is harmless.
    """

    def __init__(self, features: Tensor, dtype: torch.dtype) -> None:
        b, n, d = features.shape
        self.flat = features.reshape(b * n, d)
        self.base = torch.arange(b, device=features.device) * n
        self.last = n - 1
        self.dtype = dtype

    def __call__(self, j: Tensor) -> Tensor:
        # An exhausted request's argmax may land on a padding column (its scores can be NaN
        # once its state degenerates): clamp so the gather stays in bounds.
        rows = torch.index_select(self.flat, 0, j.view(-1).clamp_max(self.last) + self.base)
        return rows if rows.dtype == self.dtype else rows.to(self.dtype)
