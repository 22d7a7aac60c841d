"""Penalties and caps applied inside every greedy loop (DESIGN §3.5, §3.6, §3.8).

The public dataclasses are what the compiler lowers a spec into. ``_ConstraintState`` is their
per-chunk runtime: it keeps O(N) or O(N*w) state per request so that each step costs a few
vectorised ops, independent of the step index, with no Python work per request.

Arithmetic is organised so that two candidates with identical inputs always get bitwise identical
penalties (ties must go to the lower index), and so that nothing depends on the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from blendspec.ops._common import dense_ranks, pad_candidates, prefix_ranks, sanitize

if TYPE_CHECKING:
    from blendspec.ops._greedy import Selector


@dataclass(frozen=True)
class SoftSpacing:
    """Soft spacing for one sensitive set R (§3.5).

    At position t a candidate in R pays ``coefficient * sum_{d=1..window} (1/d) [s_{t-d} in R]``.
    ``flags`` is ``[B, N]`` bool (True = in R).
    """

    flags: Tensor
    window: int
    coefficient: float


@dataclass(frozen=True)
class SemanticIdPenalty:
    """Semantic-ID prefix-overlap penalty (§3.6).

    ``pen_i(t) = coefficient * sum_{d=1..window} (1/d) [lcp(i, s_{t-d}) >= min_prefix] lcp / L``
    with ``codes`` ``[B, N, L]`` int64, coarse to fine.
    """

    codes: Tensor
    window: int
    min_prefix: int
    coefficient: float


@dataclass(frozen=True)
class CategoryCap:
    """At most ``max_count`` of one category in any ``window`` consecutive slate positions (§3.8).

    A violating candidate is excluded from a step's argmax unless every remaining candidate
    violates, in which case the best violating one is taken and the step is counted.
    """

    categories: Tensor
    max_count: int
    window: int


@dataclass(frozen=True)
class GreedyConstraints:
    """Everything that acts inside the greedy loop besides the algorithm's own score."""

    spacing: tuple[SoftSpacing, ...] = ()
    semantic_id: SemanticIdPenalty | None = None
    caps: tuple[CategoryCap, ...] = ()


NO_CONSTRAINTS = GreedyConstraints()

_SID_TABLE_MAX = 1 << 20
"""Up to this many T·W entries (8 MiB) the semantic-ID weight rows are built once; beyond, per step."""


def _harmonic_unit(window: int, levels: int) -> tuple[float, float]:
    """Integer unit for the 1/d weights: (lcm(1..w), 1/lcm) when sums stay exact in float64.

    With weights lcm/d, sum_d (1/d) x_d = (sum_d (lcm/d) x_d) / lcm, and the numerator is an
    exact integer as long as it stays below 2**53; beyond that (windows of ~40+) fall back to
    plain 1/d weights.

    The lcm and the harmonic sum only grow with d, so the loop stops as soon as the bound passes
    2**52: lcm(1..w) itself has ~0.43 w digits, overflows a float from w ≈ 709 and would take
    seconds (w = 10**5) or all memory (w = 10**9) to compute.
    """
    scale = max(levels, 1)
    unit = 1
    harmonic = 0.0
    for d in range(1, window + 1):
        unit = math.lcm(unit, d)
        harmonic += 1.0 / d
        if unit * scale * harmonic >= 2.0**52:
            return 1.0, 1.0
    return float(unit), 1.0 / unit


def validate_constraints(c: GreedyConstraints, shape: tuple[int, int]) -> None:
    """Reject malformed constraints with a message naming the field."""
    for k, s in enumerate(c.spacing):
        if tuple(s.flags.shape) != shape:
            raise ValueError(f"spacing[{k}].flags must be {shape}, got {tuple(s.flags.shape)}")
        if not isinstance(s.window, int) or s.window < 0:
            raise ValueError(f"spacing[{k}].window must be an int >= 0, got {s.window!r}")
    if c.semantic_id is not None:
        p = c.semantic_id
        if p.codes.dim() != 3 or tuple(p.codes.shape[:2]) != shape:
            raise ValueError(f"semantic_id.codes must be [B, N, L], got {tuple(p.codes.shape)}")
        if not isinstance(p.window, int) or p.window < 0:
            raise ValueError(f"semantic_id.window must be an int >= 0, got {p.window!r}")
        if not isinstance(p.min_prefix, int) or p.min_prefix < 0:
            raise ValueError(f"semantic_id.min_prefix must be an int >= 0, got {p.min_prefix!r}")
    for k, cap in enumerate(c.caps):
        if tuple(cap.categories.shape) != shape:
            raise ValueError(
                f"caps[{k}].categories must be {shape}, got {tuple(cap.categories.shape)}"
            )
        if not isinstance(cap.window, int) or cap.window < 1:
            raise ValueError(f"caps[{k}].window must be an int >= 1, got {cap.window!r}")
        if not isinstance(cap.max_count, int) or cap.max_count < 0:
            raise ValueError(f"caps[{k}].max_count must be an int >= 0, got {cap.max_count!r}")


@dataclass(frozen=True)
class PreparedConstraints:
    """Constraints padded to the aligned candidate width, ready to be sliced into chunks.

    Categorical inputs are turned into dense in-request ranks once, so that per-step equality
    tests are cheap gathers and comparisons of small floats rather than int64 tensor compares.
    """

    spacing_flags: tuple[Tensor, ...]  # [B, Np] float32 0/1
    spacing: tuple[SoftSpacing, ...]
    sid_prefix: Tensor | None  # [B, L, Np] float32 prefix ranks
    sid: SemanticIdPenalty | None
    cap_ranks: tuple[Tensor, ...]  # [B, Np] int64
    caps: tuple[CategoryCap, ...]

    def slice(self, sl: slice) -> PreparedConstraints:
        return PreparedConstraints(
            tuple(f[sl] for f in self.spacing_flags),
            self.spacing,
            None if self.sid_prefix is None else self.sid_prefix[sl],
            self.sid,
            tuple(r[sl] for r in self.cap_ranks),
            self.caps,
        )

    @property
    def has_caps(self) -> bool:
        return bool(self.caps)


def clamp_windows(c: GreedyConstraints, slate_length: int) -> GreedyConstraints:
    """The constraints with every window past the slate clamped to its length T (0 stays 0).

    A window of w >= T acts exactly as one of T: spacing and semantic-ID sums run over the
    min(w, t) previous positions, t < T, and a cap's count never loses a position within T
    steps either way. Clamping where the operators receive the windows keeps every buffer and
    weight table sized by min(w, T) (a spec allows windows up to 1,000) and makes w and T the
    very same input, bits included (the integer unit of the 1/d weights follows the window).
    """
    top = max(slate_length, 1)
    sid = c.semantic_id
    if (
        all(s.window <= top for s in c.spacing)
        and all(k.window <= top for k in c.caps)
        and (sid is None or sid.window <= top)
    ):
        return c
    return GreedyConstraints(
        tuple(replace(s, window=min(s.window, top)) for s in c.spacing),
        None if sid is None else replace(sid, window=min(sid.window, top)),
        tuple(replace(k, window=min(k.window, top)) for k in c.caps),
    )


def prepare_constraints(
    c: GreedyConstraints | None, mask: Tensor, width: int, slate_length: int
) -> PreparedConstraints:
    """Validate, sanitise padding, pad every constraint tensor to ``width`` candidates and clamp
    the windows to the slate (``clamp_windows``): every window prepared is at most T."""
    c = c or NO_CONSTRAINTS
    validate_constraints(c, tuple(mask.shape))
    c = clamp_windows(c, slate_length)
    flags = tuple(
        pad_candidates(sanitize(s.flags.bool(), mask, False).to(torch.float32), width)
        for s in c.spacing
    )
    sid_prefix = None
    if c.semantic_id is not None:
        codes = sanitize(c.semantic_id.codes.long(), mask)
        ranks = prefix_ranks(codes, mask).to(torch.float32)  # ranks < N < 2**24: exact
        sid_prefix = pad_candidates(ranks.transpose(1, 2), width, -1.0).transpose(1, 2)
        sid_prefix = sid_prefix.contiguous()
    cap_ranks = tuple(
        pad_candidates(dense_ranks(sanitize(cap.categories.long(), mask), mask)[0], width)
        for cap in c.caps
    )
    return PreparedConstraints(flags, c.spacing, sid_prefix, c.semantic_id, cap_ranks, c.caps)


class ConstraintState:
    """Per-chunk running state of penalties and caps for a lock-step greedy loop."""

    @staticmethod
    def names_of(prep: PreparedConstraints) -> list[str]:
        """Trace names of the penalty terms, in the order ``penalties`` returns them."""
        names = [f"spacing[{k}]" for k in range(len(prep.spacing))]
        return [*names, "semantic_id"] if prep.sid is not None else names

    def __init__(self, prep: PreparedConstraints, slate_length: int, dtype: torch.dtype) -> None:
        self.prep = prep
        self.dtype = dtype
        self.names = self.names_of(prep)
        t_len = max(slate_length, 1)
        ref = (
            prep.spacing_flags[0]
            if prep.spacing_flags
            else prep.sid_prefix[:, 0]
            if prep.sid_prefix is not None
            else prep.cap_ranks[0]
            if prep.cap_ranks
            else None
        )
        self.enabled = ref is not None
        if ref is None:
            return
        b, width = ref.shape
        dev = ref.device
        # Soft spacing: the picked items' flags; the per-request penalty scale is a short dot.
        # Weights are the integers lcm(1..w)/d, so the sums are exact integers and a penalty is
        # one scaling of an exact value: mathematically equal penalties are bitwise equal, and
        # the tie rule (lower index) holds for them too.
        self.flags = [f.to(dtype) for f in prep.spacing_flags]
        self.flag_hist = [
            torch.zeros((b, t_len), dtype=torch.float64, device=dev) for _ in prep.spacing
        ]
        # One table per set, [unit/W, …, unit/1] (oldest first) with W = min(window, T): step t
        # uses its last min(window, t) entries, a view. O(W) memory, not O(T·W).
        self.spacing_weights: list[Tensor] = []
        self.spacing_scale: list[float] = []
        for s in prep.spacing:
            unit, scale = _harmonic_unit(s.window, 1)  # the window as prepared (<= T)
            self.spacing_scale.append(s.coefficient * scale)
            w = [unit / d for d in range(s.window, 0, -1)]  # oldest first
            self.spacing_weights.append(torch.tensor(w, dtype=torch.float64, device=dev))
        # Semantic IDs: a ring of the last `window` picks' [lcp >= l*] * lcp (small integers),
        # combined with the same integer weights in float64, then scaled once.
        # The ring holds W = min(window, T) picks: older ones are never read within T steps, and
        # for t < T, t % W is the slot t % window would give. Weight rows are built by index
        # arithmetic (row t puts unit/d at slot (t - d) % W for d = 1..min(W, t)): a full table
        # for small T·W, one row per step beyond that, so memory stays O(T + W).
        self.sid_reach = 0
        if prep.sid is not None and prep.sid.window > 0:
            sid = prep.sid
            levels = prep.sid_prefix.shape[1]
            reach = sid.window  # prepared: at most T
            self.sid_reach = reach
            unit, scale = _harmonic_unit(sid.window, levels)
            self.sid_scale = sid.coefficient * scale / levels
            self.sid_ring = torch.zeros((b, reach, width), dtype=torch.float64, device=dev)
            self.sid_unit = torch.tensor(
                [unit / d for d in range(1, reach + 1)], dtype=torch.float64, device=dev
            )
            self.sid_steps = torch.arange(t_len, device=dev)
            small = t_len * reach <= _SID_TABLE_MAX
            self.sid_weights = self._sid_rows(self.sid_steps) if small else None
        # Caps: counts per (request, category rank) over the trailing window.
        self.cap_counts = [torch.zeros((b, width), dtype=dtype, device=dev) for _ in prep.caps]
        self.cap_hist = [torch.zeros((b, t_len), dtype=torch.int64, device=dev) for _ in prep.caps]
        self.cap_inc = [torch.zeros((b, t_len), dtype=dtype, device=dev) for _ in prep.caps]

    def _sid_rows(self, steps: Tensor) -> Tensor:
        """Weight rows ``[len(steps), 1, W]`` of the semantic-ID ring for the given steps."""
        reach = self.sid_reach
        slots = torch.arange(reach, device=steps.device)
        d = torch.remainder(steps[:, None] - slots[None, :], reach)
        d = torch.where(d == 0, torch.full_like(d, reach), d)  # distance 1..W back
        rows = self.sid_unit[d - 1]
        rows = torch.where(d <= steps[:, None], rows, torch.zeros_like(rows))
        return rows.unsqueeze(1)

    def penalties(self, t: int) -> list[Tensor]:
        """Penalty terms at step t, in ``names`` order, each ``[b, Np]`` (subtracted from score)."""
        if not self.enabled:
            return []
        out: list[Tensor] = []
        prep = self.prep
        for k, flags in enumerate(self.flags):
            table = self.spacing_weights[k]
            w = table[table.numel() - min(self.prep.spacing[k].window, t) :]
            if w.numel() == 0:
                out.append(torch.zeros_like(flags))
                continue
            hist = self.flag_hist[k][:, t - w.numel() : t]
            scale = (hist * w).sum(1, keepdim=True) * self.spacing_scale[k]
            out.append(flags * scale.to(self.dtype))
        if prep.sid is not None:
            if prep.sid.window == 0 or t == 0:
                out.append(torch.zeros_like(prep.sid_prefix[:, 0], dtype=self.dtype))
            else:
                b = self.sid_ring.shape[0]
                if self.sid_weights is not None:
                    row = self.sid_weights[t]
                else:
                    row = self._sid_rows(self.sid_steps[t : t + 1])[0]  # no host-to-device copy
                w = row.expand(b, 1, -1)
                num = torch.bmm(w, self.sid_ring).squeeze(1)
                out.append((num * self.sid_scale).to(self.dtype))
        return out

    def cap_violations(self) -> Tensor | None:
        """Number of caps each candidate would violate if taken now, as a float ``[b, Np]``."""
        if not self.prep.caps:
            return None
        total: Tensor | None = None
        for cap, ranks, counts in zip(
            self.prep.caps, self.prep.cap_ranks, self.cap_counts, strict=True
        ):
            n_same = counts.gather(1, ranks)
            v = (n_same - (cap.max_count - 1)).clamp_(0, 1)
            total = v if total is None else total + v
        return total

    def update(self, t: int, j: Tensor, selector: Selector) -> None:
        """Record the pick ``j`` [b, 1] of step t (the selector knows whether it was real)."""
        if not self.enabled:
            return
        prep = self.prep
        for k, flags in enumerate(self.flags):
            self.flag_hist[k][:, t : t + 1] = flags.gather(1, j).to(torch.float64)
        sid = prep.sid
        if sid is not None and sid.window > 0:
            prefix = prep.sid_prefix  # [b, L, Np]
            levels = prefix.shape[1]
            picked = prefix.gather(2, j.unsqueeze(1).expand(-1, levels, 1))  # [b, L, 1]
            # Prefix ranks are nested: equal at level l implies equal at every coarser level, so
            # lcp is the number of equal levels. All values are small integers: exact arithmetic.
            eq = 1.0 - (prefix - picked).abs_().clamp_(max=1.0)
            lcp = eq.sum(1)
            keep = (lcp - (sid.min_prefix - 1)).clamp_(0, 1)
            self.sid_ring[:, t % self.sid_reach] = (lcp * keep).to(torch.float64)
        active = selector.last_active() if prep.caps else None
        for k, cap in enumerate(prep.caps):
            rj = prep.cap_ranks[k].gather(1, j)
            self.cap_hist[k][:, t : t + 1] = rj
            self.cap_inc[k][:, t : t + 1] = active
            self.cap_counts[k].scatter_add_(1, rj, active)
            leaving = t - cap.window + 1  # position that leaves the window before step t+1
            if leaving >= 0:
                old = self.cap_hist[k][:, leaving : leaving + 1]
                self.cap_counts[k].scatter_add_(1, old, -self.cap_inc[k][:, leaving : leaving + 1])
