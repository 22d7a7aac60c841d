"""Sliding Spectrum Decomposition (DESIGN §3.3), computed in kernel space.

The design states SSD on explicit residual vectors v_i = phi_i - sum_k c_k[i] b_k. Updating those
costs O(N*d) per step three times over (project, restore on eviction, norms). Here every quantity
the step needs is kept as an inner product instead, exactly (no orthogonality assumption, so the
epsilon regulariser keeps its meaning):

* ``P[k, i] = <phi_i, b_k>`` and ``C[k, i] = c_k[i]`` for the (at most w) bases in the window,
* ``G[k, m] = <b_k, b_m>``, and ``nv2[i] = ||v_i||^2``.

With ``b = v_j = phi_j - sum_k C[k, j] b_k`` and o the basis evicted by this push (if any):

* ``<b_k, b> = P[k, j] - sum_m C[m, j] G[k, m]`` (``g``, with g[o] := 0),
* ``<v_i, b> = K[i, j] - sum_k C[k, j] P[k, i] - sum_k g[k] C[k, i]`` for v_i restored, which is
  the only O(N*d) work: one product of ``[g, -c_j, phi_j]`` with the buffer ``[-C; P; phi^T]``,
* ``<phi_i, b> = <v_i, b> + sum_k g[k] C[k, i]`` and ``<v_i, b_o> = P[o, i] - sum_k C[k, i] G[k, o]``,
  both O(N*w), from one small product with ``[-C; P]``,

and ``nv2`` follows ``||v + c b||^2 = ||v||^2 + 2 c <v, b> + c^2 ||b||^2``. Two MKL calls per step
read the buffer once; everything else is a handful of elementwise passes over N.

The state is float64 (issue 14). Once the window spans phi (rank <= w: low-dimensional features,
category one-hots, duplicates) the residuals shrink to nothing, and ``<v_i, b>`` and ``||v_i||^2``
become differences of nearly equal inner products of size ``||phi||^2``: in float32 that leaves
an absolute error of ~1e-7 in ``||v_i||^2``, ~3e-4 in ``||v_i||`` after the square root, and
eviction can no longer restore what was projected out. In float64 the same algebra follows the
explicit-residual recurrence to ~1e-8 in the score. Scores stay float32 (the operator's dtype).
"""

from __future__ import annotations

import torch
from torch import Tensor

from blendspec.ops import _native
from blendspec.ops._common import batch_chunks, workspace
from blendspec.ops._greedy import Selection, Selector, empty_selection, run_chunks
from blendspec.ops._inputs import RowGather, load_transposed, prepare
from blendspec.ops.constraints import ConstraintState, GreedyConstraints

VARIANTS = ("stabilized", "volume")
_NORM2_FLOOR = 1e-30
_DT = torch.float64


def ssd(
    relevance: Tensor,
    features: Tensor,
    mask: Tensor,
    constraints: GreedyConstraints | None = None,
    *,
    slate_length: int,
    window: int,
    theta: float,
    gamma: float,
    variant: str = "stabilized",
    epsilon: float = 1e-6,
    trace: bool = False,
) -> Selection:
    """SSD greedy selection: ``theta r_i + (1 - theta) gamma ||v_i|| - penalties`` per step.

    ``features`` is phi ``[B, N, D]`` (``feature_map(..., bias=True)``). The first pick uses
    ``theta r_i - penalties`` (``r_i - penalties`` at theta = 0, where ``theta r_i`` would tie
    every candidate, DESIGN §3.3). ``variant="volume"`` multiplies the residual norm by the
    product of the window's basis norms (the volume of the window extended by i), the paper's
    original form.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown SSD variant {variant!r}; expected one of {VARIANTS}")
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"SSD window must be an int >= 1, got {window!r}")
    if not float(epsilon) >= 0.0:
        raise ValueError(f"SSD epsilon must be >= 0, got {epsilon!r}")
    p = prepare(relevance, mask, constraints, slate_length, features)
    if p.n == 0:
        return empty_selection(p.batch, slate_length, mask.device, trace_names=p.trace_names(trace))
    d = features.shape[2]
    # A window of w >= T never evicts (T - 1 pushes): the same as one of T, with the Gram
    # matrix and the [-C; P] rows sized by min(w, T).
    w = min(window, max(slate_length, 1))
    rows = 2 * w + d
    theta_f, eps = float(theta), float(epsilon)
    div_coef = (1.0 - theta_f) * float(gamma)
    # nv2 is kept multiplied by div_coef^2, so that sqrt gives the diversity term directly.
    scale = div_coef * div_coef if div_coef != 0.0 else 1.0
    sign = 1.0 if div_coef >= 0 else -1.0
    volume = variant == "volume"
    if _native.usable(relevance, features, constraints=p.constraints):
        return _native.ssd(
            p.valid,
            p.relevance,
            features,
            p.constraints,
            slate_length,
            window=w,
            theta=theta_f,
            div_coef=div_coef,
            epsilon=eps,
            volume=volume,
            names=p.trace_names(trace),
        )

    def run(sl: slice) -> Selection:
        valid, r, cons = p.chunk(sl)
        b, width = valid.shape
        state = ConstraintState(cons, slate_length, torch.float32)
        sel = Selector(valid, torch.float32, p.trace_names(trace), cons.has_caps)
        buf = workspace("buf", (b, rows, width), _DT)  # [-C; P; phi^T]
        buf[:, : 2 * w] = 0.0
        phi_t = buf[:, 2 * w :]
        load_transposed(phi_t, features[sl], valid)
        squares = torch.mul(phi_t, phi_t, out=workspace("scratch", phi_t.shape, _DT))
        # ||v_i||^2 = ||phi_i||^2 before any pick. Reduced over the outer (feature) axis, which
        # accumulates in feature order: trailing zero columns (a wider one-hot block in a bigger
        # batch) cannot change the bits, unlike a vectorised reduction along a row.
        nv2s = squares.sum(1).mul_(scale)
        f64 = workspace("rows", tuple(features[sl].shape), _DT)
        step = _Step(buf, RowGather(f64.copy_(features[sl]), _DT), w, eps, scale)
        rel_raw = r * theta_f
        rel = sel.track(rel_raw)
        # The first pick at theta = 0 is by relevance itself, not theta r_i = 0 (a tie of all).
        first_raw = r if theta_f == 0.0 else rel_raw
        for t in range(slate_length):
            pens = state.penalties(t)
            if t == 0 or div_coef == 0.0:
                div = None
                score = first_raw + sel.bias if t == 0 and theta_f == 0.0 else rel
            else:
                # sqrt(0) takes a slow path in this build; a floor of 1e-30 (a norm of 1e-15) is
                # indistinguishable and keeps equal inputs equal.
                div64 = nv2s.clamp_min(_NORM2_FLOOR).sqrt_()
                if volume:
                    div64.mul_(step.volume(min(t, w)))
                div = div64.to(torch.float32)
                score = torch.add(rel, div, alpha=sign)
            for pen in pens:
                score = score - pen

            def parts(
                pens: list[Tensor] = pens, div: Tensor | None = div, t: int = t
            ) -> dict[str, Tensor]:
                diversity = torch.zeros_like(rel_raw) if div is None else div * sign
                return {
                    "relevance": first_raw if t == 0 else rel_raw,
                    "diversity": diversity,
                    **dict(zip(state.names, pens, strict=True)),
                }

            j = sel.step(score, sel.cap_bias(state.cap_violations()), parts)
            state.update(t, j, sel)
            if t == slate_length - 1 or div_coef == 0.0:
                continue
            step.push(nv2s, j, t)
        return sel.finish()

    bytes_per_request = rows * p.width * 8
    return run_chunks(batch_chunks(p.batch, bytes_per_request, p.width), run)


class _Step:
    """The window state of one chunk (everything but nv2) and the push of a new basis.

    Views of every slot's rows are made once: per-step Python indexing costs as much as the
    small tensor ops themselves at these sizes.
    """

    def __init__(self, buf: Tensor, rows: RowGather, w: int, eps: float, scale: float) -> None:
        b, n_rows, width = buf.shape
        self.buf, self.rows, self.w, self.eps, self.scale = buf, rows, w, eps, scale
        self.inv_scale = 1.0 / scale
        self.gram = torch.zeros((b, w, w), dtype=buf.dtype)
        # Flat offsets of the -C and P entries of every request, to gather column j in one take.
        self.cp_index = (
            torch.arange(b)[:, None] * (n_rows * width) + torch.arange(2 * w)[None, :] * width
        )
        coef = torch.zeros((b, 2, 2 * w), dtype=buf.dtype)
        self.coef_b, self.coef_b0 = coef, coef[:, :1]
        self.coef_g = coef[:, 0, :w]
        self.coef_row1_c = coef[:, 1, :w]
        self.coef_row1_c_slot = [coef[:, 1, k] for k in range(w)]
        self.coef_row1_p_slot = [coef[:, 1, w + k] for k in range(w)]
        self.neg_c_rows = [buf[:, k] for k in range(w)]
        self.p_rows = [buf[:, w + k] for k in range(w)]
        self.gram_rows = [self.gram[:, k] for k in range(w)]
        self.gram_cols = [self.gram[:, :, k] for k in range(w)]
        self.gram_diag = [self.gram[:, k, k] for k in range(w)]
        self.c_part = buf[:, : 2 * w]

    def volume(self, filled: int) -> Tensor:
        """Product of the window's basis norms, ``[b, 1]``."""
        nb2 = self.gram.diagonal(dim1=1, dim2=2)[:, :filled]
        return nb2.clamp_min(0.0).sqrt().prod(1, keepdim=True)

    def push(self, nv2s: Tensor, j: Tensor, t: int) -> None:
        """Push b = v_j (evicting the oldest basis first when the window is full), in place.

        Selected candidates keep stale C entries: only their own columns are affected and those
        are never read again.
        """
        buf, gram, w, scale = self.buf, self.gram, self.w, self.scale
        cp = torch.take(buf, self.cp_index + j)
        neg_c_j, p_j = cp.split(w, 1)  # -c_k[j], <phi_j, b_k>
        nbb = nv2s.gather(1, j).mul_(self.inv_scale).clamp_min_(0.0)  # ||b||^2 = ||v_j||^2
        slot = t % w
        evict = t >= w
        # <b_k, b> = P[k, j] - sum_m G[k, m] c_m[j]  (tiny: ATen's serial small-bmm kernel)
        g = torch.baddbmm(p_j.unsqueeze(2), gram, neg_c_j.unsqueeze(2)).squeeze(2)
        g_slot = g.select(1, slot)
        if evict:
            g_slot.zero_()  # the evicted basis no longer projects anything out
        coef_a = torch.cat([g, neg_c_j, self.rows(j)], 1).unsqueeze(1)
        vb = torch.bmm(coef_a, buf).squeeze(1)
        self.coef_g.copy_(g)  # row 0: sum_k g_k (-C_k), so that <phi_i, b> = vb - row 0
        if evict:
            # row 1: u = -C_o ||b_o||^2 - 2 <v_i, b_o>; then ||v||^2 += (-C_o) u
            torch.mul(self.gram_cols[slot], -2.0, out=self.coef_row1_c)
            self.coef_row1_c_slot[slot].add_(self.gram_diag[slot])
            self.coef_row1_p_slot[slot].fill_(-2.0)
            small = torch.bmm(self.coef_b, self.c_part)
            nv2s.addcmul_(self.neg_c_rows[slot], small.select(1, 1), value=scale)
            self.coef_row1_p_slot[slot].zero_()
        else:
            small = torch.bmm(self.coef_b0, self.c_part)
        torch.sub(vb, small.select(1, 0), out=self.p_rows[slot])  # P row of the new basis
        neg_denom = nbb.neg().sub_(self.eps)  # -(||b||^2 + eps)
        if self.eps == 0.0:
            # A zero basis (a zero residual picked with eps = 0) projects nothing out: c = -0.
            neg_denom.masked_fill_(neg_denom == 0.0, float("-inf"))
        neg_c = torch.div(vb, neg_denom, out=self.neg_c_rows[slot])  # -c
        # ||v - c b||^2 = ||v||^2 - c (2 <v, b> - c ||b||^2) (= ||v||^2 - c^2 (||b||^2 + 2 eps))
        nv2s.addcmul_(neg_c, torch.addcmul(vb, neg_c, nbb, value=0.5), value=2.0 * scale)
        g_slot.copy_(nbb.view(-1))
        self.gram_rows[slot].copy_(g)
        self.gram_cols[slot].copy_(g)
