"""Per-request slate metrics for ``blend run`` summaries and ``blend diff`` impact reports.

All metrics are computed batched from the ``Selection`` and the request's inputs, one value per
request. Metrics that are undefined for a request (a diversity over fewer than two items, a ratio
over an empty slate) are NaN rather than 0, so that an aggregate (``nanmean``) is not biased by
short or empty slates; ``empty`` says which requests got no slate at all.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from blendspec.ops._common import dense_ranks, sanitize
from blendspec.ops._greedy import Selection
from blendspec.ops.similarity import normalize_rows

_NAN = float("nan")


def slate_metrics(
    selection: Selection,
    utility: Tensor,
    mask: Tensor,
    *,
    embeddings: Tensor | None = None,
    categories: Tensor | None = None,
    semantic_ids: Tensor | None = None,
    flags: Mapping[str, Tensor] | None = None,
    window: int = 5,
    min_prefix: int = 1,
) -> dict[str, Tensor]:
    """Metrics of each request's slate; every value is a ``[B]`` tensor.

    Args:
        selection: the slates (``indices`` -1 past each slate's end).
        utility: ``[B, N]`` the utility u_i the slate was built from (before normalisation).
        mask: ``[B, N]`` bool, True for real candidates.
        embeddings: ``[B, N, D]`` any embedding (or the feature map phi); distances are
            ``1 - cos``, zero vectors orthogonal to everything.
        categories: ``[B, N]`` int64 category ids.
        semantic_ids: ``[B, N, L]`` int64 codes, coarse to fine.
        flags: sensitive sets by name, each ``[B, N]`` bool.
        window: w of the windowed metrics: pairs of slate positions p < q with q - p < w, i.e.
            pairs that share a window of w consecutive positions.
        min_prefix: a semantic-ID pair collides when its common prefix has at least this length.

    Returns, per request:
        ``slate_length`` (int64), ``empty`` (bool, no candidates at all), ``utility_retained``
        (sum of u over the slate / sum of u over the top-|slate| candidates by utility),
        ``cap_violations`` (int64) and ``early_stops`` (bool) from the selection; with
        embeddings: ``ilad``, ``ilmd`` (mean / min pairwise distance), ``ilald@w``, ``ilmld@w``
        (the same over pairs within a window); with categories: ``category_entropy`` (nats) and
        ``category_coverage`` (distinct categories in the slate / among the candidates); with
        semantic IDs: ``sid_collisions@w`` (pairs within a window whose prefix overlap is at least
        ``min_prefix``); per flag set ``name``: ``exposure[name]`` (share of slate items in the
        set) and ``adjacency[name]@w`` (set items with another set item at distance 1..w).
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if mask.shape[1] == 0:  # no candidates anywhere: give gathers one (invalid) column to read
        utility, embeddings, categories, semantic_ids, mask = (
            None if x is None else _one_column(x)
            for x in (utility, embeddings, categories, semantic_ids, mask)
        )
        flags = {k: _one_column(v) for k, v in (flags or {}).items()}
    idx = selection.indices
    b, t = idx.shape
    in_slate = idx >= 0
    safe = idx.clamp_min(0)
    length = in_slate.sum(1)
    n_items = length.to(torch.float64)
    out: dict[str, Tensor] = {
        "slate_length": length,
        "empty": ~mask.any(1),
        "cap_violations": selection.cap_violations,
        "early_stops": selection.early_stops,
    }
    u = sanitize(utility.to(torch.float64), mask)
    got = (u.gather(1, safe) * in_slate).sum(1)
    best = _top_sum(u, mask, length)
    ratio = torch.where(
        best != 0, got / torch.where(best != 0, best, 1.0), torch.where(got == 0, 1.0, _NAN)
    )
    out["utility_retained"] = torch.where(length > 0, ratio, _NAN)

    pos = torch.arange(t, device=idx.device)
    gap = pos[None, :] - pos[:, None]  # q - p
    both = in_slate[:, :, None] & in_slate[:, None, :]
    upper = both & (gap > 0)
    near = upper & (gap < window)

    if embeddings is not None:
        # Only the slate's rows: normalising is per row, so this is the same value for T rows
        # instead of N.
        raw = embeddings.gather(1, safe[:, :, None].expand(b, t, embeddings.shape[2]))
        picked = normalize_rows(raw, in_slate).to(torch.float64)
        dist = 1.0 - torch.bmm(picked, picked.transpose(1, 2))
        out["ilad"], out["ilmd"] = _mean_min(dist, upper)
        out[f"ilald@{window}"], out[f"ilmld@{window}"] = _mean_min(dist, near)

    if categories is not None:
        ranks, distinct = dense_ranks(sanitize(categories.long(), mask), mask)
        c = ranks.gather(1, safe)
        same = (c[:, :, None] == c[:, None, :]) & both
        count = same.sum(2).to(torch.float64)  # items of my category in the slate
        frac = torch.where(in_slate, count / n_items.clamp_min(1)[:, None], 1.0)
        entropy = -(torch.log(frac) * in_slate).sum(1) / n_items.clamp_min(1)
        out["category_entropy"] = torch.where(length > 0, entropy, _NAN)
        seen_before = (same & (gap < 0)).any(2)  # an earlier slate item has my category
        covered = (in_slate & ~seen_before).sum(1).to(torch.float64)
        out["category_coverage"] = torch.where(
            distinct > 0, covered / distinct.clamp_min(1).to(torch.float64), _NAN
        )

    if semantic_ids is not None:
        codes = sanitize(semantic_ids.long(), mask)
        sc = codes.gather(1, safe[:, :, None].expand(b, t, codes.shape[2]))
        eq = (sc[:, :, None, :] == sc[:, None, :, :]).long()
        lcp = eq.cumprod(3).sum(3)
        out[f"sid_collisions@{window}"] = ((lcp >= min_prefix) & near).sum((1, 2))

    for name, f in (flags or {}).items():
        fl = sanitize(f.bool(), mask, False).gather(1, safe) & in_slate
        out[f"exposure[{name}]"] = torch.where(
            length > 0, fl.sum(1).to(torch.float64) / n_items.clamp_min(1), _NAN
        )
        dist_ok = (gap.abs() > 0) & (gap.abs() <= window)
        pair = fl[:, :, None] & fl[:, None, :] & dist_ok
        out[f"adjacency[{name}]@{window}"] = pair.any(2).sum(1)
    return out


def _one_column(x: Tensor) -> Tensor:
    shape = list(x.shape)
    shape[1] = 1
    return torch.zeros(shape, dtype=x.dtype, device=x.device)


def _mean_min(dist: Tensor, pairs: Tensor) -> tuple[Tensor, Tensor]:
    if dist.shape[1] == 0:  # T == 0: no pairs anywhere
        nan = torch.full(dist.shape[:1], _NAN, dtype=dist.dtype, device=dist.device)
        return nan, nan
    n = pairs.sum((1, 2))
    total = (dist * pairs).sum((1, 2))
    mean = torch.where(n > 0, total / n.clamp_min(1), _NAN)
    low = torch.where(pairs, dist, float("inf")).amin((1, 2))
    return mean, torch.where(n > 0, low, _NAN)


def _top_sum(u: Tensor, mask: Tensor, k: Tensor) -> Tensor:
    """Sum of the k[b] largest valid utilities of each request."""
    ordered = torch.where(mask, u, float("-inf")).sort(1, descending=True).values
    take = torch.arange(u.shape[1], device=u.device)[None, :] < k[:, None]
    return torch.where(take, ordered, 0.0).sum(1)
