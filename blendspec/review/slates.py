"""How two slates of the same request differ, and how sure a mean difference is.

Pure arithmetic on batches of slates — overlap@k, Kendall's τ-b and Spearman's ρ over the union of
both slates, the mean position shift — and the seeded bootstrap interval of a paired mean. The
impact run (`review/impact.py`) feeds them; they know nothing of specs or dumps, so they are
tested on hand-made slates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def overlap_ks(length: int) -> tuple[int, ...]:
    """k of overlap@k: 5, 10 and the slate length T, without duplicates or k > T."""
    return tuple(sorted({k for k in (5, 10) if k < length} | {length}))


def compare_slates(a: torch.Tensor, b: torch.Tensor, ks: Sequence[int]) -> dict[str, torch.Tensor]:
    """Per-request comparison of two batches of slates (`[B, Ta]`, `[B, Tb]` candidate indices,
    -1 past the end). Definitions, for slates A (old) and B (new):

    * `changed`: the slates differ as sequences; `first_difference`: first differing slot (-1);
    * `shift`: mean |pos_A(i) - pos_B(i)| over the items in both (NaN when none);
    * `overlap@k`: |A[:k] ∩ B[:k]| / max(|A[:k]|, |B[:k]|) (NaN when both are empty);
    * `kendall` (τ-b) and `spearman` (ρ) over the union U = A ∪ B: an item's rank in a slate is
      its position, and the items of U missing from a slate share the ranks after its end (all
      tied at their average), so dropping an item counts as moving it to the bottom. NaN when U
      has fewer than two items or either ranking is constant.
    """
    import torch

    bsz, ta = a.shape
    tb = b.shape[1]
    in_a, in_b = a >= 0, b >= 0
    len_a, len_b = in_a.sum(1), in_b.sum(1)
    width = max(ta, tb)
    pad_a = torch.full((bsz, width), -1, dtype=torch.int64)
    pad_b = torch.full((bsz, width), -1, dtype=torch.int64)
    pad_a[:, :ta], pad_b[:, :tb] = a, b
    differs = pad_a != pad_b
    changed = differs.any(1)
    first = torch.where(changed, differs.to(torch.int64).argmax(1), torch.full_like(len_a, -1))

    eq = (a[:, :, None] == b[:, None, :]) & in_a[:, :, None]  # [B, Ta, Tb]
    a_in_b = eq.any(2)  # [B, Ta]
    b_in_a = eq.any(1)  # [B, Tb]
    pos_a = torch.arange(ta, dtype=torch.float64)
    pos_b = torch.arange(tb, dtype=torch.float64)
    where_in_b = eq.to(torch.int64).argmax(2).to(torch.float64)  # position in B of A's items
    common = a_in_b.sum(1)
    moved = ((pos_a[None, :] - where_in_b).abs() * a_in_b).sum(1)
    shift = torch.where(common > 0, moved / common.clamp_min(1), float("nan"))

    out: dict[str, torch.Tensor] = {
        "changed": changed,
        "first_difference": first,
        "shift": shift,
        "old_length": len_a,
        "new_length": len_b,
    }
    for k in ks:
        top = eq[:, :k, :k].any(2).sum(1).to(torch.float64)
        denominator = torch.maximum(len_a.clamp(max=k), len_b.clamp(max=k)).to(torch.float64)
        out[f"overlap@{k}"] = torch.where(
            denominator > 0, top / denominator.clamp_min(1), float("nan")
        )

    # The union: A's items, then B's items that are not in A.
    n = (len_a + len_b - common).to(torch.float64)  # |U|
    missing_a = (len_a.to(torch.float64) + n - 1) / 2  # average rank of the ranks after A's end
    missing_b = (len_b.to(torch.float64) + n - 1) / 2
    rank_a = torch.cat(
        [pos_a.expand(bsz, ta), missing_a[:, None].expand(bsz, tb)], dim=1
    )  # [B, Ta + Tb]
    rank_b = torch.cat(
        [torch.where(a_in_b, where_in_b, missing_b[:, None]), pos_b.expand(bsz, tb)], dim=1
    )
    valid = torch.cat([in_a, in_b & ~b_in_a], dim=1)
    pair = valid[:, :, None] & valid[:, None, :]
    sign_a = torch.sign(rank_a[:, :, None] - rank_a[:, None, :])
    sign_b = torch.sign(rank_b[:, :, None] - rank_b[:, None, :])
    concordance = (sign_a * sign_b * pair).sum((1, 2)) / 2
    pairs = n * (n - 1) / 2
    tied_a = ((sign_a == 0) & pair).sum((1, 2)).to(torch.float64) - n  # minus the diagonal
    tied_b = ((sign_b == 0) & pair).sum((1, 2)).to(torch.float64) - n
    denominator = torch.sqrt((pairs - tied_a / 2) * (pairs - tied_b / 2))
    out["kendall"] = torch.where(
        denominator > 0, concordance / denominator.clamp_min(1e-300), float("nan")
    )
    weights = valid.to(torch.float64)
    count = weights.sum(1, keepdim=True).clamp_min(1)
    mean_a = (rank_a * weights).sum(1, keepdim=True) / count
    mean_b = (rank_b * weights).sum(1, keepdim=True) / count
    da, db = (rank_a - mean_a) * weights, (rank_b - mean_b) * weights
    spread = torch.sqrt((da * da).sum(1) * (db * db).sum(1))
    out["spearman"] = torch.where(
        spread > 0, (da * db).sum(1) / spread.clamp_min(1e-300), float("nan")
    )
    return out


def bootstrap_interval(
    differences: np.ndarray, *, resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of the mean of paired differences, by a seeded bootstrap over
    requests (the same resamples for every metric, so intervals are comparable)."""
    n = len(differences)
    if n == 0:
        return float("nan"), float("nan")
    if np.all(differences == differences[0]):
        return float(differences[0]), float(differences[0])
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 4_000_000 // n)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        picks = rng.integers(0, n, size=(size, n))
        means[start : start + size] = differences[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    # A mean of exactly-zero differences can come out as ±1e-20: that is 0, not a signal.
    scale = float(np.abs(differences).max())
    return _snap(float(low), scale), _snap(float(high), scale)


def _snap(value: float, scale: float) -> float:
    return 0.0 if abs(value) <= 1e-12 * scale else value
