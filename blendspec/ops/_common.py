"""Layout helpers shared by every operator: padding, dense ranks, batch chunking.

Most of this exists to make a request's result *bitwise* independent of the batch it arrives in.
Two facts about this CPU build drive the choices (both measured, see tests/ops/test_invariance.py):

* MKL's batched matrix-vector product returns different bits for the same request depending on
  the byte alignment of its rows, which depends on the padded width N of the batch. Padding the
  candidate axis to a multiple of ``ALIGN`` makes every row start on a 128-byte boundary, and the
  products are then identical for any batch size and padding width.
* ATen's vectorised elementwise loops fall back to a scalar (non-FMA) loop for a tail that is not
  a multiple of the vector width, and split work between threads at arbitrary element offsets
  once a tensor exceeds its grain size. Keeping per-step tensors tail-free (width a multiple of
  ``ALIGN``) and below the grain size (``MAX_STEP_ELEMENTS``) keeps every element on the same
  code path whatever the batch.
"""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor

ALIGN = 32
"""Candidate-axis padding quantum: 32 float32 = 128 bytes."""

MAX_STEP_ELEMENTS = 32768
"""ATen's parallel grain size; per-step [b, N] tensors stay below it so they run single-threaded."""

CACHE_BUDGET_BYTES = 20 * 1024 * 1024
"""Working set of one chunk of requests: the per-step matrix-vector products re-read each
request's feature matrix T times, so a chunk must stay resident in the (32 MiB, shared) L3.
Measured on this machine: 32 requests of 500 x 277 (18 MB) read at ~10 us per request and
step on 2 threads, 64 requests (36 MB) at ~16 us."""


def padded_width(n: int) -> int:
    """Smallest multiple of ``ALIGN`` that holds ``n`` candidates (at least one quantum)."""
    return max(ALIGN, -(-n // ALIGN) * ALIGN)


def pad_candidates(x: Tensor, width: int, value: float | bool | int = 0) -> Tensor:
    """Pad dim 1 (candidates) of ``x`` to ``width`` with ``value``; returns ``x`` if already wide."""
    n = x.shape[1]
    if n == width:
        return x
    shape = list(x.shape)
    shape[1] = width
    out = torch.full(shape, value, dtype=x.dtype, device=x.device)
    out[:, :n] = x
    return out


def sanitize(x: Tensor, mask: Tensor, fill: float | int = 0) -> Tensor:
    """Replace padding rows (any trailing dims) by ``fill``: padding may hold NaN or garbage."""
    m = mask.reshape(mask.shape + (1,) * (x.dim() - mask.dim()))
    return torch.where(m, x, torch.as_tensor(fill, dtype=x.dtype, device=x.device))


def dense_ranks(values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Rank of each valid value among the distinct valid values of its own request.

    Ranks follow sorted value order, so they depend only on the request's own candidates (never on
    the batch). Padding gets rank 0. Returns ``(ranks [B, N] int64, distinct [B] int64)``.
    """
    b, n = values.shape
    if n == 0:
        return values.new_zeros((b, 0)), values.new_zeros((b,))
    big = torch.iinfo(torch.int64).max
    keyed = torch.where(mask, values, torch.full_like(values, big))
    sorted_vals, order = torch.sort(keyed, dim=1, stable=True)
    sorted_valid = mask.gather(1, order)
    first = torch.ones_like(sorted_valid[:, :1])
    new = torch.cat([first, sorted_vals[:, 1:] != sorted_vals[:, :-1]], 1) & sorted_valid
    rank_sorted = torch.cumsum(new.long(), dim=1) - 1
    # Out of place throughout, and back to candidate order by a gather through the inverse
    # permutation rather than a scatter: in an AOTInductor build (torch 2.13) of the exported
    # greedy loop, the mask below was fused into a kernel that ran before the scatter, so the
    # loop's caps saw every candidate as rank 0 (prefix_ranks is out of place for the same
    # reason).
    ranks = rank_sorted.gather(1, torch.argsort(order, dim=1))
    ranks = torch.where(mask, ranks, torch.zeros_like(ranks))
    return ranks, new.sum(1)


def prefix_ranks(codes: Tensor, mask: Tensor) -> Tensor:
    """Dense ranks of every code prefix: ``out[:, l, i]`` identifies (codes[i, 0..l]) in-request.

    Two candidates share a prefix of length l+1 exactly when their level-l ranks are equal, so
    ``lcp(i, j) = #levels with equal rank``; comparisons of ranks are exact, codes can be any int64.
    Returns ``[B, L, N]`` int64.
    """
    b, n, levels = codes.shape
    if levels == 0:
        return codes.new_zeros((b, 0, n))
    out = []
    prev = codes.new_zeros((b, n))
    for level in range(levels):
        # Lexicographic (prev rank, code) pair -> dense rank, via two stable sorts.
        code = codes[:, :, level]
        r_code, _ = dense_ranks(code, mask)
        combined = prev * (n + 1) + r_code  # prev < n, r_code < n: no collision, no overflow
        prev, _ = dense_ranks(combined, mask)
        out.append(prev)
    return torch.stack(out, 1)


def row_product(row: Tensor, matrix: Tensor) -> Tensor:
    """``row`` ``[b, d]`` times ``matrix`` ``[b, d, n]``: the ``[b, 1, n]`` kernel row of a
    greedy step, computed as a two-row product whose second row is zero.

    AOTInductor lowers a one-row ``bmm`` on CPU into a multiply-and-sum loop of its own,
    fused with the step's gathers, instead of calling ATen's kernel: ~300 µs a step for the
    homefeed spec's 769 x 512 float64 feature map, 55-75% of a compiled blend. With two rows it
    calls ATen's ``bmm`` (~60 µs). The eager loops and the loop form share this, so an
    exported program keeps the eager torch path's bits.
    """
    return torch.bmm(torch.stack([row, torch.zeros_like(row)], 1), matrix)[:, :1]


def batch_chunks(batch: int, bytes_per_request: int, width: int) -> list[slice]:
    """Split the batch into cache-sized chunks that are run one after the other.

    Under ``torch.compile``/``torch.export`` the batch is one chunk: the chunk loop is an eager-mode
    cache optimisation and would otherwise specialise the graph on B.
    """
    if batch == 0:
        return [slice(0, 0)]
    if torch.compiler.is_compiling():
        return [slice(0, batch)]
    by_cache = CACHE_BUDGET_BYTES // max(1, bytes_per_request)
    by_grain = MAX_STEP_ELEMENTS // max(1, width)
    size = max(1, min(by_cache, by_grain))
    count = -(-batch // size)
    size = -(-batch // count)  # even chunks: 64 requests as 2 x 32, not 36 + 28
    return [slice(i, min(batch, i + size)) for i in range(0, batch, size)]


def check_common(mask: Tensor, slate_length: int, **tensors: Tensor) -> None:
    """Fail early, with the argument's name, on shapes the operators cannot interpret."""
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a [B, N] bool tensor, got {tuple(mask.shape)} {mask.dtype}")
    if not isinstance(slate_length, int) or slate_length < 0:
        raise ValueError(f"slate_length must be a non-negative int, got {slate_length!r}")
    for name, t in tensors.items():
        if tuple(t.shape[:2]) != tuple(mask.shape):
            raise ValueError(
                f"{name} must start with the mask's shape {tuple(mask.shape)}, got {tuple(t.shape)}"
            )


_WORKSPACE = threading.local()


def workspace(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """An uninitialised per-thread buffer of ``shape``, reused across calls.

    The per-chunk buffers are several MiB: a fresh allocation of that size is served by mmap
    and pays a page fault per 4 KiB page on first touch, which costs 4-5x the copy that fills it
    (measured: 7.9 ms vs 1.6 ms for 16 requests of 500 x 257). Callers fully overwrite what they
    read and never let the buffer (or a view of it) escape the call; operators share the names
    ("buf", "scratch", "rows"), so a thread keeps at most ~3 buffers per dtype, each about
    ``CACHE_BUDGET_BYTES`` (``release_workspace`` frees them). Under torch.compile/export a plain
    allocation is returned.
    """
    if torch.compiler.is_compiling():
        return torch.empty(shape, dtype=dtype)
    cache: dict[tuple[str, torch.dtype, bool], Tensor] | None = getattr(_WORKSPACE, "buffers", None)
    if cache is None:
        cache = _WORKSPACE.buffers = {}
    numel = math.prod(shape)
    # A buffer allocated under inference_mode is an inference tensor and may not be updated in
    # place outside it (blend run uses inference_mode, library callers may not): one set per mode.
    key = (name, dtype, torch.is_inference_mode_enabled())
    buf = cache.get(key)
    if buf is None or buf.numel() < numel:
        buf = torch.empty(numel, dtype=dtype)
        cache[key] = buf
    return buf[:numel].view(shape)


def release_workspace() -> None:
    """Free this thread's reusable operator buffers (see ``workspace``)."""
    _WORKSPACE.buffers = {}
