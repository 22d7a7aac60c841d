"""DPP greedy MAP inference by incremental Cholesky (Chen, Zhang, Zhou 2018; DESIGN §3.4).

Works on S = phi phi^T rather than L = Diag(q) S Diag(q): the conditional variances satisfy
d_i^2(L) = q_i^2 d_i^2(S), so ``log d_i^2(L) = 2 alpha r_i + log d_i^2(S)`` without ever forming
exp(alpha r) (which overflows for large alpha r). The state is float64: the epsilon early stop
compares d_i^2 with 1e-6 while float32 kernel rows carry absolute errors of ~1e-7 * q_i^2, which
would make "has the rank been exhausted?" a coin flip.

Kernel rows are computed on demand: one ``phi_j^T Phi`` product per step, never the N x N kernel.
The Cholesky rows c_m (one per pick) live in the same buffer as phi^T, above it and in reverse
order, so that Chen's ``L_ji - <c_j, c_i>`` is a single product over ``[c_{t-1} .. c_0; phi^T]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from blendspec.ops import _native
from blendspec.ops._common import batch_chunks, workspace
from blendspec.ops._greedy import Selection, Selector, empty_selection, run_chunks
from blendspec.ops._inputs import RowGather, load_transposed, prepare
from blendspec.ops.constraints import ConstraintState, GreedyConstraints

_TINY = 1e-300
_NEG_INF = float("-inf")  # floor of d^2 before the log: keeps exhausted candidates finite (~ -690)
_DT = torch.float64
_NOISE = 1e-13  # a conditional variance below this fraction of S_jj is float64 rounding noise


def dpp(
    relevance: Tensor,
    features: Tensor,
    mask: Tensor,
    constraints: GreedyConstraints | None = None,
    *,
    slate_length: int,
    alpha: float,
    window: int | None = None,
    epsilon: float = 1e-6,
    trace: bool = False,
) -> Selection:
    """Greedy DPP: argmax of ``log d_i^2 - penalties`` with q_i = exp(alpha r_i).

    ``features`` is phi ``[B, N, D]`` (``feature_map(..., bias=False)``). With ``window`` w, d_i^2
    is the conditional variance given the last w picks only (the paper's sliding-window variant).
    When the best d_i^2 among the candidates a step may take (caps applied) falls below
    ``epsilon`` the request stops diversifying for good: that and every later step take the
    argmax of ``relevance - penalties`` and ``early_stops`` reports it.
    """
    if window is not None and (not isinstance(window, int) or window < 1):
        raise ValueError(f"DPP window must be None or an int >= 1, got {window!r}")
    if not epsilon > 0:
        raise ValueError(f"DPP epsilon must be > 0, got {epsilon!r}")
    p = prepare(relevance, mask, constraints, slate_length, features)
    if window is not None:
        # w >= T never evicts (T - 1 picks): the same as T, with kernel columns kept by min(w, T).
        window = min(window, max(slate_length, 1))
    if p.n == 0:
        return empty_selection(p.batch, slate_length, mask.device, p.trace_names(trace))
    d = features.shape[2]
    two_alpha = 2.0 * float(alpha)
    log_eps = math.log(float(epsilon))
    if _native.usable(relevance, features, constraints=p.constraints):
        return _native.dpp(
            p.valid,
            p.relevance,
            features,
            p.constraints,
            slate_length,
            window=window,
            two_alpha=two_alpha,
            log_epsilon=log_eps,
            names=p.trace_names(trace),
        )
    n_rows = max(slate_length - 1, 0) if window is None else min(window, max(slate_length - 1, 0))

    def run(sl: slice) -> Selection:
        valid, r, cons = p.chunk(sl)
        b, width = valid.shape
        state = ConstraintState(cons, slate_length, _DT)
        sel = Selector(valid, _DT, p.trace_names(trace), cons.has_caps)
        buf = workspace("buf", (b, n_rows + d, width), _DT)  # [c_{T-2} .. c_0; phi^T]
        buf[:, :n_rows] = 0.0
        phi_t = buf[:, n_rows:]
        load_transposed(phi_t, features[sl], valid)
        f64 = workspace("rows", tuple(features[sl].shape), _DT)
        rows = RowGather(f64.copy_(features[sl]), _DT)  # converted once, not per step
        squares = torch.mul(phi_t, phi_t, out=workspace("scratch", phi_t.shape, _DT))
        diag = squares.sum(1)  # S_ii, summed in feature order (see ssd.py)
        d2 = diag.clone()
        r64 = r.to(_DT)
        log_q2 = sel.track(r64 * two_alpha)  # -inf exactly where taken or padding
        fill: Tensor | None = None  # relevance for stopped requests, tracked once one stops
        stopped = torch.zeros((b, 1), dtype=torch.bool)
        c_index = torch.arange(b)[:, None] * ((n_rows + d) * width) + torch.arange(n_rows) * width
        window_cols: list[Tensor] = []  # windowed variant: kernel rows of the window's picks
        window_picks: list[Tensor] = []
        for t in range(slate_length):
            pens = state.penalties(t)
            caps = sel.cap_bias(state.cap_violations())
            log_d2 = d2.clamp_min(_TINY).log_()
            log_l = log_q2 + log_d2  # log d_i^2 of L; -inf where taken
            allowed = log_l if caps[0] is None else log_l + caps[0]
            below = allowed.amax(1, keepdim=True) < log_eps
            if torch.compiler.is_compiling() or bool(below.any()):
                # A request with nothing left (best = -inf) is exhausted, not stopped.
                stopped |= below & (log_q2 > _NEG_INF).any(1, keepdim=True)
            score = log_l
            for pen in pens:
                score = score - pen
            if torch.compiler.is_compiling() or bool(stopped.any()):
                if fill is None:
                    fill = sel.track(torch.where(log_q2 == _NEG_INF, _NEG_INF, r64), biased=True)
                fill_score = fill
                for pen in pens:
                    fill_score = fill_score - pen
                score = torch.where(stopped, fill_score, score)

            def parts(
                pens: list[Tensor] = pens, log_d2: Tensor = log_d2, stopped: Tensor = stopped
            ) -> dict[str, Tensor]:
                return {
                    "relevance": torch.where(stopped, r64, r64 * two_alpha),
                    "diversity": torch.where(stopped, 0.0, log_d2),
                    **dict(zip(state.names, pens, strict=True)),
                }

            j = sel.step(score, caps, parts)
            state.update(t, j, sel)
            if t == slate_length - 1:
                break
            if window is None:
                _chen_step(buf, rows, c_index, d2, diag, j, t, n_rows)
            else:
                _window_step(buf, rows, d2, diag, j, n_rows, window, window_cols, window_picks)
        return sel.finish(stopped)

    bytes_per_request = (n_rows + d) * p.width * 8
    return run_chunks(batch_chunks(p.batch, bytes_per_request, p.width), run)


def _pivot(d2: Tensor, diag: Tensor, j: Tensor) -> Tensor:
    """d_j, or +inf (e = 0: the pick adds no direction) where d_j^2 is float64 rounding noise.

    With an epsilon below that noise (1e-300, say) the early stop never comes, and dividing by
    the square root of noise blows the factor up to inf and then NaN within a few steps.
    """
    d2_j = d2.gather(1, j)
    d_j = d2_j.clamp_min(_TINY).sqrt_()
    return d_j.masked_fill_(d2_j <= diag.gather(1, j) * _NOISE, float("inf"))


def _chen_step(
    buf: Tensor,
    rows: RowGather,
    c_index: Tensor,
    d2: Tensor,
    diag: Tensor,
    j: Tensor,
    t: int,
    n_rows: int,
) -> None:
    """Append pick j: e_i = (S_ji - <c_j, c_i>) / d_j, c_i <- [c_i, e_i], d_i^2 -= e_i^2."""
    lo = n_rows - t  # rows lo .. n_rows-1 hold c_{t-1} .. c_0
    c_j = torch.take(buf, c_index[:, lo:] + j)
    coef = torch.cat([c_j.neg_(), rows(j)], 1).unsqueeze(1)
    num = torch.bmm(coef, buf[:, lo:]).squeeze(1)  # S_ji - <c_j, c_i>
    d_j = _pivot(d2, diag, j)
    e = buf.select(1, lo - 1)
    torch.div(num, d_j, out=e)
    d2.addcmul_(e, e, value=-1.0)


def _window_step(
    buf: Tensor,
    rows: RowGather,
    d2: Tensor,
    diag: Tensor,
    j: Tensor,
    n_rows: int,
    window: int,
    cols: list[Tensor],
    picks: list[Tensor],
) -> None:
    """Sliding window: keep the last ``window`` picks and recondition d^2 on them only.

    Eviction changes the Cholesky factor of every later row, so the window's rows are rebuilt by
    Chen's recursion from the stored kernel rows: O(N w^2) per step, in float64.
    """
    b = buf.shape[0]
    phi_j = rows(j).unsqueeze(1)
    cols.append(torch.bmm(phi_j, buf[:, n_rows:]).squeeze(1))  # S[:, j]
    picks.append(j)
    if len(cols) > window:
        cols.pop(0)
        picks.pop(0)
    d2.copy_(diag)
    c_rows = buf[:, :n_rows]
    for k, (kcol, pk) in enumerate(zip(cols, picks, strict=True)):
        num = kcol
        if k:
            c_prev = c_rows[:, n_rows - k :]  # c_{k-1} .. c_0 (reverse order)
            c_pk = c_prev.gather(2, pk.view(b, 1, 1).expand(b, k, 1)).transpose(1, 2)
            num = kcol - torch.bmm(c_pk, c_prev).squeeze(1)
        d_k = _pivot(d2, diag, pk)
        e = num / d_k
        buf[:, n_rows - 1 - k] = e
        d2.addcmul_(e, e, value=-1.0)
