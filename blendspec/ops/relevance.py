"""Per-request relevance normalisation (DESIGN §3.1) feeding the diversifiers."""

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
    count = m.sum(1, keepdim=True)
    if method == "zscore":
        # A sum of float32 values of similar magnitude is exact in float64, so an all-equal request
        # gets a mean equal to its value and a std of exactly 0.
        mean = u.sum(1, keepdim=True) / count.clamp_min(1)
        dev = (u - mean) * m
        std = torch.sqrt((dev * dev).sum(1, keepdim=True) / count.clamp_min(1))
        z = torch.where(std > 0, dev / torch.where(std > 0, std, 1.0), 0.0)
        return (z * m).to(torch.float32)
    inf = torch.tensor(float("inf"), dtype=torch.float64)
    lo = torch.where(mask, u, inf).amin(1, keepdim=True)
    hi = torch.where(mask, u, -inf).amax(1, keepdim=True)
    span = hi - lo
    ok = torch.isfinite(span) & (span > 0)
    scaled = torch.where(ok, (u - torch.where(ok, lo, 0.0)) / torch.where(ok, span, 1.0), 0.0)
    return (scaled * m).to(torch.float32)
