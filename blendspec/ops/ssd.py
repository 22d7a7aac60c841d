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
  the only O(N*d) work: the kernel row ``phi_j^T Phi`` plus the product of ``[g, -c_j]`` with the
  window's rows ``[-C; P]`` (two products, so that the loop form torch.export traces,
  ``_ssd_loop``, carries ``[-C; P]`` without copying phi^T at every step),
* ``<phi_i, b> = <v_i, b> + sum_k g[k] C[k, i]`` and ``<v_i, b_o> = P[o, i] - sum_k C[k, i] G[k, o]``,
  both O(N*w), from one small product with ``[-C; P]``,

and ``nv2`` follows ``||v + c b||^2 = ||v||^2 + 2 c <v, b> + c^2 ||b||^2``. The MKL calls per
step read phi^T once; everything else is a handful of elementwise passes over N.

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

from blendspec.ops import _native, loop
from blendspec.ops._common import batch_chunks, row_product, workspace
from blendspec.ops._greedy import Selection, Selector, empty_selection, run_chunks
from blendspec.ops._inputs import RowGather, load_transposed, prepare
from blendspec.ops.constraints import ConstraintState, GreedyConstraints, PreparedConstraints
from blendspec.ops.loop import State

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
        phi_t = workspace("buf", (b, d, width), _DT)
        load_transposed(phi_t, features[sl], valid)
        squares = torch.mul(phi_t, phi_t, out=workspace("scratch", phi_t.shape, _DT))
        # ||v_i||^2 = ||phi_i||^2 before any pick. Reduced over the outer (feature) axis: the
        # bits do not depend on the padded width.
        nv2s = squares.sum(1).mul_(scale)
        f64 = workspace("rows", tuple(features[sl].shape), _DT)
        rows_of = RowGather(f64.copy_(features[sl]), _DT)
        rel_raw = r * theta_f
        # The first pick at theta = 0 is by relevance itself, not theta r_i = 0 (a tie of all).
        first_raw = r if theta_f == 0.0 else rel_raw
        window = _Window(phi_t, rows_of, w, eps, scale)
        if loop.wanted(trace):
            return _ssd_loop(valid, rel_raw, first_raw, theta_f == 0.0, div_coef, volume, nv2s,
                             window, cons, slate_length)  # fmt: skip
        state = ConstraintState(cons, slate_length, torch.float32)
        sel = Selector(valid, torch.float32, p.trace_names(trace), cons.has_caps)
        step = _Step(window, workspace("cp", (b, 2 * w, width), _DT))
        rel = sel.track(rel_raw)
        for t in range(slate_length):
            pens = state.penalties(t)
            if t == 0 or div_coef == 0.0:
                div = None
                score = first_raw + sel.bias if t == 0 and theta_f == 0.0 else rel
            else:
                div = _diversity(nv2s, step.gram if volume else None, t)
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

    bytes_per_request = (2 * w + d) * p.width * 8
    return run_chunks(batch_chunks(p.batch, bytes_per_request, p.width), run)


def _diversity(nv2s: Tensor, gram: Tensor | None, t: Tensor | int) -> Tensor:
    """The diversity term before its sign: ``(1 - theta) gamma ||v_i||`` (times the window's
    volume with ``gram``), float32."""
    # sqrt(0) takes a slow path in this build; a floor of 1e-30 (a norm of 1e-15) is
    # indistinguishable and keeps equal inputs equal.
    div64 = nv2s.clamp_min(_NORM2_FLOOR).sqrt_()
    if gram is not None:
        div64.mul_(_volume(gram, t))
    return div64.to(torch.float32)


def _volume(gram: Tensor, t: Tensor | int) -> Tensor:
    """Product of the window's basis norms, ``[b, 1]``: the slots filled before step t are the
    first min(t, w); the product runs over all w with 1 for the others (a fixed order for the
    loop form and the eager loop alike)."""
    w = gram.shape[1]
    norms = gram.diagonal(dim1=1, dim2=2).clamp_min(0.0).sqrt()
    filled = torch.arange(w, device=gram.device) < t
    return torch.where(filled, norms, 1.0).prod(1, keepdim=True)


class _Window:
    """What both forms of the loop share: phi^T ``[b, d, Np]`` and the rows phi_j, the window
    size, epsilon and the scale of nv2 (``nv2s`` is ``||v||^2`` times ``scale``).

    The window's own state is ``C`` and ``P`` as one ``[b, 2w, Np]`` tensor ``cp`` (rows
    ``[-C_0 .. -C_{w-1}; P_0 .. P_{w-1}]``) and the Gram matrix ``[b, w, w]``. ``<v_i, b>`` is
    ``phi_j . phi_i`` (one product over the features) plus ``[g, -c_j] . cp`` (one over the
    window's 2w rows), so that the loop form never concatenates phi^T with its state.
    """

    def __init__(self, phi_t: Tensor, rows: RowGather, w: int, eps: float, scale: float) -> None:
        self.phi_t, self.rows, self.w, self.eps, self.scale = phi_t, rows, w, eps, scale
        self.inv_scale = 1.0 / scale
        b, _, width = phi_t.shape
        # Flat offsets of the -C and P entries of every request, to gather column j in one take.
        self.cp_index = (
            torch.arange(b)[:, None] * (2 * w * width) + torch.arange(2 * w)[None, :] * width
        )

    def column(self, cp: Tensor, nv2s: Tensor, gram: Tensor, j: Tensor) -> tuple[Tensor, ...]:
        """(-c_k[j], <b_k, b>, ||b||^2) of the new basis b = v_j, before any eviction."""
        neg_c_j, p_j = torch.take(cp, self.cp_index + j).split(self.w, 1)
        nbb = nv2s.gather(1, j).mul_(self.inv_scale).clamp_min_(0.0)  # ||b||^2 = ||v_j||^2
        # <b_k, b> = P[k, j] - sum_m G[k, m] c_m[j]  (tiny: ATen's serial small-bmm kernel)
        g = torch.baddbmm(p_j.unsqueeze(2), gram, neg_c_j.unsqueeze(2)).squeeze(2)
        return neg_c_j, g, nbb

    def inner(self, cp: Tensor, g: Tensor, neg_c_j: Tensor, j: Tensor) -> Tensor:
        """``<v_i, b>`` for v_i with the evicted basis restored (``g`` is 0 at its slot)."""
        kernel = row_product(self.rows(j), self.phi_t)
        coef = torch.cat([g, neg_c_j], 1).unsqueeze(1)
        return torch.baddbmm(kernel, coef, cp).squeeze(1)

    def new_rows(
        self, vb: Tensor, small0: Tensor, nbb: Tensor, nv2s: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The new basis's P row and -C row, and nv2 after projecting it out."""
        p_row = vb - small0
        neg_denom = nbb.neg().sub_(self.eps)  # -(||b||^2 + eps)
        if self.eps == 0.0:
            # A zero basis (a zero residual picked with eps = 0) projects nothing out: c = -0.
            neg_denom.masked_fill_(neg_denom == 0.0, float("-inf"))
        neg_c = torch.div(vb, neg_denom)  # -c
        # ||v - c b||^2 = ||v||^2 - c (2 <v, b> - c ||b||^2) (= ||v||^2 - c^2 (||b||^2 + 2 eps))
        inner = torch.addcmul(vb, neg_c, nbb, value=0.5)
        nv2s = torch.addcmul(nv2s, neg_c, inner, value=2.0 * self.scale)
        return p_row, neg_c, nv2s


class _Step:
    """The eager loop's window state (everything but nv2) and the push of a new basis, in place.

    Views of every slot's rows are made once: per-step Python indexing costs as much as the
    small tensor ops themselves at these sizes. The arithmetic is ``_Window``'s, as in the loop
    form (``_push_carried``): the coefficients of the small product always have two rows, the
    second zero until the window is full.
    """

    def __init__(self, window: _Window, cp: Tensor) -> None:
        b = cp.shape[0]
        w = window.w
        self.window, self.cp, self.w = window, cp, w
        cp.zero_()
        self.gram = torch.zeros((b, w, w), dtype=cp.dtype)
        coef = torch.zeros((b, 2, 2 * w), dtype=cp.dtype)
        self.coef = coef
        self.coef_g = coef[:, 0, :w]
        self.coef_row1_c = coef[:, 1, :w]
        self.coef_row1_c_slot = [coef[:, 1, k] for k in range(w)]
        self.coef_row1_p_slot = [coef[:, 1, w + k] for k in range(w)]
        self.neg_c_rows = [cp[:, k] for k in range(w)]
        self.p_rows = [cp[:, w + k] for k in range(w)]
        self.gram_rows = [self.gram[:, k] for k in range(w)]
        self.gram_cols = [self.gram[:, :, k] for k in range(w)]
        self.gram_diag = [self.gram[:, k, k] for k in range(w)]

    def push(self, nv2s: Tensor, j: Tensor, t: int) -> None:
        """Push b = v_j (evicting the oldest basis first when the window is full), in place.

        Selected candidates keep stale C entries: only their own columns are affected and those
        are never read again.
        """
        window, cp, gram, w = self.window, self.cp, self.gram, self.w
        neg_c_j, g, nbb = window.column(cp, nv2s, gram, j)
        slot = t % w
        evict = t >= w
        g_slot = g.select(1, slot)
        if evict:
            g_slot.zero_()  # the evicted basis no longer projects anything out
        vb = window.inner(cp, g, neg_c_j, j)
        self.coef_g.copy_(g)  # row 0: sum_k g_k (-C_k), so that <phi_i, b> = vb - row 0
        if evict:
            # row 1: u = -C_o ||b_o||^2 - 2 <v_i, b_o>; then ||v||^2 += (-C_o) u
            torch.mul(self.gram_cols[slot], -2.0, out=self.coef_row1_c)
            self.coef_row1_c_slot[slot].add_(self.gram_diag[slot])
            self.coef_row1_p_slot[slot].fill_(-2.0)
        small = torch.bmm(self.coef, cp)
        if evict:
            nv2s.addcmul_(self.neg_c_rows[slot], small.select(1, 1), value=window.scale)
            self.coef_row1_p_slot[slot].zero_()
        p_row, neg_c, after = window.new_rows(vb, small.select(1, 0), nbb, nv2s)
        self.p_rows[slot].copy_(p_row)  # P row of the new basis
        self.neg_c_rows[slot].copy_(neg_c)
        nv2s.copy_(after)
        g_slot.copy_(nbb.view(-1))
        self.gram_rows[slot].copy_(g)
        self.gram_cols[slot].copy_(g)


def _push_carried(
    window: _Window, t: Tensor, j: Tensor, nv2s: Tensor, cp: Tensor, gram: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``_Step.push`` without writing into its inputs (the loop form): (nv2s, cp, gram)."""
    w = window.w
    neg_c_j, g, nbb = window.column(cp, nv2s, gram, j)
    slot = torch.remainder(t, w)
    evict = t >= w
    at_slot = torch.arange(w, device=t.device) == slot  # [w]
    g = torch.where(at_slot & evict, 0.0, g)
    vb = window.inner(cp, g, neg_c_j, j)
    col = gram.index_select(2, slot.reshape(1)).squeeze(2)  # G[:, k, slot]
    doubled = col * -2.0
    row1_c = torch.where(at_slot, doubled + gram.diagonal(dim1=1, dim2=2), doubled)
    row1_p = torch.where(at_slot, -2.0, 0.0).expand_as(row1_c)
    row1 = torch.where(evict, torch.cat([row1_c, row1_p], 1), 0.0)
    row0 = torch.cat([g, torch.zeros_like(g)], 1)
    small = torch.bmm(torch.stack([row0, row1], 1), cp)
    restored = torch.addcmul(nv2s, cp.index_select(1, slot.reshape(1)).squeeze(1),
                             small.select(1, 1), value=window.scale)  # fmt: skip
    nv2s = torch.where(evict, restored, nv2s)
    p_row, neg_c, nv2s = window.new_rows(vb, small.select(1, 0), nbb, nv2s)
    cp = cp.index_copy(1, torch.stack([slot, slot + w]), torch.stack([neg_c, p_row], 1))
    g = torch.where(at_slot, nbb, g)
    gram = torch.where(at_slot[:, None], g.unsqueeze(1), gram)  # row slot
    gram = torch.where(at_slot[None, :], g.unsqueeze(2), gram)  # column slot
    return nv2s, cp, gram


def _ssd_loop(
    valid: Tensor,
    rel_raw: Tensor,
    first_raw: Tensor,
    by_relevance: bool,
    div_coef: float,
    volume: bool,
    nv2s: Tensor,
    window: _Window,
    cons: PreparedConstraints,
    slate_length: int,
) -> Selection:
    """SSD's loop as one ``torch.while_loop`` (``ops/loop.py``): nv2, the window's C and P rows
    and its Gram matrix are carried; phi^T is read from the closure."""
    bias = loop.initial_bias(valid, torch.float32)
    rel = rel_raw + bias
    first = first_raw + bias if by_relevance else None
    sign = 1.0 if div_coef >= 0 else -1.0
    diversify = div_coef != 0.0

    def score(
        t: Tensor, tracked: State, state: State, pens: list[Tensor], extra: Tensor | None
    ) -> tuple[Tensor, State]:
        start = tracked[0] if first is None else first
        if not diversify:
            return torch.where(t == 0, start, tracked[0]), state
        div = _diversity(state[0], state[2] if volume else None, t)
        return torch.where(t == 0, start, torch.add(tracked[0], div, alpha=sign)), state

    def update(t: Tensor, j: Tensor, tracked: State, state: State) -> State:
        return _push_carried(window, t, j, *state)

    b, width = valid.shape
    w = window.w
    cp = torch.zeros((b, 2 * w, width), dtype=_DT, device=valid.device)
    gram = torch.zeros((b, w, w), dtype=_DT, device=valid.device)
    state = (nv2s, cp, gram) if diversify else ()
    push = update if diversify else None
    return loop.greedy_loop(valid, torch.float32, slate_length, cons, (rel,), state, score,
                            push)[0]  # fmt: skip
