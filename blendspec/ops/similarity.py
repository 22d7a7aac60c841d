"""The similarity feature map of DESIGN §3.2: one PSD kernel shared by SSD, DPP and MMR.

Every signal becomes a block of coordinates of phi so that <phi_i, phi_j> is the weighted sum of
the signals; the algorithms only ever see phi. Categorical blocks are one-hot over the request's
own distinct values, in sorted value order, so a request's coordinates (and therefore its floating
point results) never depend on the other requests of the batch: other requests can only append
trailing zero columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from blendspec.ops import _native
from blendspec.ops._common import dense_ranks, prefix_ranks, sanitize


@dataclass(frozen=True)
class SimilaritySignals:
    """The declared similarity signals, each paired with its weight beta >= 0.

    embeddings: ``[B, N, D]`` float, compared by cosine (zero vectors are orthogonal to all).
    categories: ``[B, N]`` int64 ids, contributing ``beta * [same id]``.
    semantic_ids: ``[B, N, L]`` int64 codes, coarse to fine, contributing ``beta * lcp / L``.
    """

    embeddings: tuple[tuple[Tensor, float], ...] = ()
    categories: tuple[tuple[Tensor, float], ...] = ()
    semantic_ids: tuple[tuple[Tensor, float], ...] = ()


def normalize_rows(
    x: Tensor, mask: Tensor, *, scale: float = 1.0, out: Tensor | None = None
) -> Tensor:
    """L2-normalise the last dim (times ``scale``); zero (and padding) rows stay zero, not NaN.

    Rows are first divided by their max-abs entry so that the squared norm can neither underflow
    (tiny embeddings) nor overflow (huge ones) in float32. With ``out`` (a ``[B, N, D]`` view, e.g.
    a slice of the feature map) the result is written there: at N=500 and 768 embedding columns
    every full pass is ~100 MB per 64 requests, and fresh allocations of that size also pay a page
    fault per 4 KiB on first touch, so the passes happen in place, one buffer in all. With the
    compiled loops (ops/_native.py) one pass per row, in cache, does all of it.
    """
    if x.dim() == 3 and x.numel() and _native.available(x):
        target = torch.empty(x.shape, dtype=torch.float32) if out is None else out
        if _native.normalize_rows(x, mask, scale, target):
            return target
    y = sanitize(x.to(torch.float32), mask)
    # The max-abs entry by the inf-norm: the same value as abs().amax() without a temporary.
    top = torch.linalg.vector_norm(y, ord=float("inf"), dim=-1, keepdim=True)
    nonzero = top > 0
    y.div_(torch.where(nonzero, top, 1.0))
    norm = torch.linalg.vector_norm(y, dim=-1, keepdim=True)
    y.div_(torch.where(nonzero, norm, 1.0)).masked_fill_(~nonzero, 0.0)
    if out is None:
        return y.mul_(scale) if scale != 1.0 else y
    return torch.mul(y, scale, out=out)


def _packed_one_hot(blocks: list[tuple[Tensor, Tensor, float]], mask: Tensor) -> Tensor:
    """One-hot of several categorical blocks, packed per request.

    Each request's blocks sit back to back from column 0 at offsets given by its *own* distinct
    counts, so its non-zero columns never move when other requests widen the batch: they only add
    trailing zero columns, which leave the matrix-vector products bitwise unchanged.
    """
    b, n = mask.shape
    if not blocks or n == 0:
        return torch.zeros((b, n, 0), dtype=torch.float32, device=mask.device)
    offset = torch.zeros((b,), dtype=torch.int64, device=mask.device)
    cols, vals = [], []
    for ranks, counts, value in blocks:
        cols.append(ranks + offset.unsqueeze(1))
        vals.append(value)
        offset = offset + counts
    if torch.compiler.is_compiling():
        return _packed_one_hot_traced(cols, vals, offset, mask)
    width = int(offset.max().item())
    out = torch.zeros((b, n, max(width, 1)), dtype=torch.float32, device=mask.device)
    for col, value in zip(cols, vals, strict=True):
        src = torch.where(mask, value, 0.0).to(torch.float32).unsqueeze(-1)
        out.scatter_(2, col.clamp_max(max(width, 1) - 1).unsqueeze(-1), src)
    return out[:, :, :width]


def _packed_one_hot_traced(
    cols: list[Tensor], vals: list[float], offset: Tensor, mask: Tensor
) -> Tensor:
    """``_packed_one_hot`` for torch.export: the width is data-dependent (the batch's largest
    number of distinct values), so it becomes an unbacked size bounded by ``N * blocks``; the
    clamp is a tensor op rather than a Python int so that nothing guards on the data. Same
    columns, same values, so the same bits as the eager path."""
    b, n = mask.shape
    top = offset.max()
    width = top.item()
    torch._check(width >= 0)
    torch._check(width <= n * len(cols))
    out = torch.zeros((b, n, torch.sym_max(width, 1)), dtype=torch.float32, device=mask.device)
    last = (top - 1).clamp_min(0)
    for col, value in zip(cols, vals, strict=True):
        src = torch.where(mask, value, 0.0).to(torch.float32).unsqueeze(-1)
        out.scatter_(2, torch.minimum(col, last).unsqueeze(-1), src)
    return out[:, :, :width]


def _distinct(ranks: Tensor, mask: Tensor) -> Tensor:
    if ranks.shape[1] == 0:
        return ranks.new_zeros((ranks.shape[0],))
    return (ranks * mask).amax(1) + mask.any(1).long()


def _check_weight(kind: str, beta: float) -> float:
    beta = float(beta)
    if not math.isfinite(beta) or beta < 0:
        raise ValueError(f"{kind} similarity weight must be finite and >= 0, got {beta}")
    return beta


def feature_map(signals: SimilaritySignals, mask: Tensor, *, bias: bool) -> Tensor:
    """Build phi ``[B, N, D]`` float32 with <phi_i, phi_j> = sum of the weighted signals.

    Column order: the embedding blocks, the constant 1 (``bias=True``, for SSD, which makes every
    similarity non-negative), then the one-hot blocks of the semantic-ID prefix levels and the
    categories, packed per request. Padding rows are all zero. The fixed-width blocks come first
    and the batch-dependent one-hot width last, so a request's products stay bitwise independent
    of its batch.
    """
    b, n = mask.shape
    embeddings: list[tuple[Tensor, float]] = []
    onehot: list[tuple[Tensor, Tensor, float]] = []
    for emb, beta in signals.embeddings:
        beta = _check_weight("embedding", beta)
        if emb.dim() != 3 or tuple(emb.shape[:2]) != (b, n):
            raise ValueError(f"embedding must be [B, N, D] = [{b}, {n}, D], got {tuple(emb.shape)}")
        if beta > 0:
            embeddings.append((emb, math.sqrt(beta)))
    for codes, beta in signals.semantic_ids:
        beta = _check_weight("semantic_id", beta)
        if codes.dim() != 3 or tuple(codes.shape[:2]) != (b, n):
            raise ValueError(f"semantic_id must be [B, N, L], got {tuple(codes.shape)}")
        levels = codes.shape[2]
        if beta > 0 and levels > 0:
            ranks = prefix_ranks(sanitize(codes.long(), mask), mask)
            value = math.sqrt(beta / levels)
            for lv in range(levels):
                onehot.append((ranks[:, lv], _distinct(ranks[:, lv], mask), value))
    for cats, beta in signals.categories:
        beta = _check_weight("category", beta)
        if tuple(cats.shape) != (b, n):
            raise ValueError(f"category must be [B, N] = [{b}, {n}], got {tuple(cats.shape)}")
        if beta > 0:
            ranks, counts = dense_ranks(sanitize(cats.long(), mask), mask)
            onehot.append((ranks, counts, math.sqrt(beta)))
    packed = _packed_one_hot(onehot, mask)
    dense_width = sum(emb.shape[2] for emb, _ in embeddings) + int(bias)
    phi = torch.empty((b, n, dense_width + packed.shape[2]), dtype=torch.float32)
    start = 0
    for emb, factor in embeddings:
        width = emb.shape[2]
        normalize_rows(emb, mask, scale=factor, out=phi[:, :, start : start + width])
        start += width
    if bias:
        phi[:, :, start] = mask
        start += 1
    phi[:, :, start:] = packed
    return phi
