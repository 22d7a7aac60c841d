"""Per-request normalisation: the diversifiers' relevance (DESIGN §3.1) and the formula
transforms that need a whole request (``zscore(x)``, ``rank(x)``), one implementation each."""

from __future__ import annotations

import torch
from torch import Tensor

from blendspec.ops._common import sanitize

METHODS = ("zscore", "minmax", "raw")


def normalize_relevance(utility: Tensor, mask: Tensor, method: str) -> Tensor:
    """Normalise ``utility`` [B, N] over each request's valid candidates; padding becomes 0.

    ``zscore`` uses the population standard deviation, ``minmax`` maps to [0, 1]; a request whose
    values are all equal (zero std or range) maps to 0. Statistics are accumulated in float64 so
    that the float32 result does not depend on the order of the sum, i.e. on the padding width or
    the batch the request arrives in. Returns float32.
    """
    if method not in METHODS:
        raise ValueError(f"unknown relevance normalisation {method!r}; expected one of {METHODS}")
    if utility.shape != mask.shape:
        raise ValueError(f"utility {tuple(utility.shape)} and mask {tuple(mask.shape)} differ")
    u = sanitize(utility.to(torch.float64), mask)
    if method == "raw" or u.shape[1] == 0:
        return u.to(torch.float32)
    m = mask.to(torch.float64)
    if method == "zscore":
        return _zscore(u, m)
    inf = torch.tensor(float("inf"), dtype=torch.float64)
    lo = torch.where(mask, u, inf).amin(1, keepdim=True)
    hi = torch.where(mask, u, -inf).amax(1, keepdim=True)
    span = hi - lo
    ok = torch.isfinite(span) & (span > 0)
    scaled = torch.where(ok, (u - torch.where(ok, lo, 0.0)) / torch.where(ok, span, 1.0), 0.0)
    return (scaled * m).to(torch.float32)


def masked_zscore(values: Tensor, mask: Tensor) -> Tensor:
    """Population z-score over each request's real candidates (float32; 0 on padding and for a
    constant request): the ``zscore`` transform of formulas, and the ``zscore`` relevance.

    One function for both, so that ``zscore(x)`` in a formula and ``relevance = zscore`` give the
    same bits, and with float64 statistics both are batch-invariant (a float32 sum's rounding
    depends on the padded width and on the batch the request arrives in).
    """
    if values.shape != mask.shape:
        raise ValueError(f"values {tuple(values.shape)} and mask {tuple(mask.shape)} differ")
    return _zscore(sanitize(values.to(torch.float64), mask), mask.to(torch.float64))


def _zscore(u: Tensor, m: Tensor) -> Tensor:
    # A sum of float32 values of similar magnitude is exact in float64, so an all-equal request
    # gets a mean equal to its value and a std of exactly 0.
    count = m.sum(1, keepdim=True).clamp_min(1)
    mean = u.sum(1, keepdim=True) / count
    dev = (u - mean) * m
    std = torch.sqrt((dev * dev).sum(1, keepdim=True) / count)
    z = torch.where(std > 0, dev / torch.where(std > 0, std, 1.0), 0.0)
    return (z * m).to(torch.float32)


def masked_rank(values: Tensor, mask: Tensor) -> Tensor:
    """Share of the request's real candidates strictly below each value, in [0, 1]; ties share a
    rank; 0 on padding."""
    padded = torch.where(mask, values, torch.full_like(values, float("inf")))
    ordered, _ = torch.sort(padded, dim=1)
    below = torch.searchsorted(ordered, padded.contiguous(), right=False).to(values.dtype)
    count = mask.sum(dim=1, keepdim=True).to(values.dtype)
    ranks = below / (count - 1).clamp(min=1)
    return torch.where(mask, ranks, torch.zeros_like(values))
