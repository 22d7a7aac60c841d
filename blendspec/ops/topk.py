"""Ordering candidates by a score: the truncation's order and the greedy selector's sort path."""

from __future__ import annotations

import torch
from torch import Tensor

from blendspec.ops._greedy import Selection


def stable_order(values: Tensor, mask: Tensor) -> Tensor:
    """Candidate indices by value descending, ties to the lower index, padding last."""
    key = torch.where(mask, values, torch.full_like(values, float("-inf")))
    return torch.sort(key, dim=1, descending=True, stable=True).indices


def top_by_relevance(relevance: Tensor, mask: Tensor, length: int) -> Selection:
    """The greedy selector without penalties or caps: the stable top-T by relevance, by one
    sort instead of T steps (equal values keep index order; -1 past a request's candidates)."""
    if torch.compiler.is_compiling():
        # N is symbolic in torch.export: append `length` padding columns (they sort last and come
        # out as -1, as the eager path's padding does) so that no branch depends on N < length.
        b = relevance.shape[0]
        relevance = torch.cat([relevance, relevance.new_zeros((b, length))], dim=1)
        mask = torch.cat([mask, mask.new_zeros((b, length))], dim=1)
    order = stable_order(relevance, mask)
    take = min(length, relevance.shape[1])
    indices = order[:, :take]
    valid = torch.gather(mask, 1, indices)
    scores = torch.gather(relevance, 1, indices)
    indices = torch.where(valid, indices, torch.full_like(indices, -1))
    scores = torch.where(valid, scores, torch.zeros_like(scores))
    if take < length:
        pad = (relevance.shape[0], length - take)
        indices = torch.cat([indices, torch.full(pad, -1, dtype=indices.dtype)], dim=1)
        scores = torch.cat([scores, torch.zeros(pad, dtype=scores.dtype)], dim=1)
    batch = indices.shape[0]
    return Selection(
        indices=indices,
        scores=scores,
        cap_violations=torch.zeros((batch,), dtype=torch.int64, device=indices.device),
        early_stops=torch.zeros((batch,), dtype=torch.bool, device=indices.device),
    )
