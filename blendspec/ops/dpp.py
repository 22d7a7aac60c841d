"""DPP greedy MAP inference by incremental Cholesky (Chen, Zhang, Zhou 2018; DESIGN §3.4).

Works on S = phi phi^T rather than L = Diag(q) S Diag(q): the conditional variances satisfy
d_i^2(L) = q_i^2 d_i^2(S), so ``log d_i^2(L) = 2 alpha r_i + log d_i^2(S)`` without ever forming
exp(alpha r) (which overflows for large alpha r). The state is float64: the epsilon early stop
compares d_i^2 with 1e-6 while float32 kernel rows carry absolute errors of ~1e-7 * q_i^2, which
would make "has the rank been exhausted?" a coin flip.

Kernel rows are computed on demand: one ``phi_j^T Phi`` product per step, never the N x N kernel.
The Cholesky rows c_m (one per pick) have a tensor of their own, T - 1 rows (or the window's w),
zero until filled: Chen's ``L_ji - <c_j, c_i>`` is the kernel row plus one product of ``-c_j``
with all of them. Fixed extents keep one order of the sums in the eager loop and in the loop form
that torch.export traces (``_dpp_loop``, ``ops/loop.py``), whose state cannot share phi^T's
buffer.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor

from blendspec.ops import _native, loop
from blendspec.ops._common import batch_chunks, row_product, workspace
from blendspec.ops._greedy import Selection, Selector, empty_selection, run_chunks
from blendspec.ops._inputs import RowGather, load_transposed, prepare
from blendspec.ops.constraints import ConstraintState, GreedyConstraints, PreparedConstraints
from blendspec.ops.loop import State

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
    n_rows = max(slate_length - 1, 0) if window is None else window

    def run(sl: slice) -> Selection:
        valid, r, cons = p.chunk(sl)
        b, width = valid.shape
        phi_t = workspace("buf", (b, d, width), _DT)
        load_transposed(phi_t, features[sl], valid)
        f64 = workspace("rows", tuple(features[sl].shape), _DT)
        rows = RowGather(f64.copy_(features[sl]), _DT)  # converted once, not per step
        squares = torch.mul(phi_t, phi_t, out=workspace("scratch", phi_t.shape, _DT))
        diag = squares.sum(1)  # S_ii, summed over the outer axis (see ssd.py)
        r64 = r.to(_DT)
        kernel = _Kernel(phi_t, rows, diag, n_rows)
        if loop.wanted(trace):
            return _dpp_loop(valid, r64, two_alpha, log_eps, kernel, window, cons, slate_length)
        state = ConstraintState(cons, slate_length, _DT)
        sel = Selector(valid, _DT, p.trace_names(trace), cons.has_caps)
        d2 = diag.clone()
        log_q2 = sel.track(r64 * two_alpha)  # -inf exactly where taken or padding
        fill: Tensor | None = None  # relevance for stopped requests, tracked once one stops
        stopped = torch.zeros((b, 1), dtype=torch.bool)
        # Full: the Cholesky rows c_0 .. c_{T-2}. Windowed: the window's kernel rows and picks,
        # oldest first, and its Cholesky rows, rebuilt at every step.
        c_rows = workspace("cp", (b, n_rows, width), _DT).zero_()
        if window is not None:
            win = _EagerWindow(kernel, b, width, c_rows)
        for t in range(slate_length):
            pens = state.penalties(t)
            caps = sel.cap_bias(state.cap_violations())
            log_d2 = d2.clamp_min(_TINY).log_()
            log_l = log_q2 + log_d2  # log d_i^2 of L; -inf where taken
            allowed = log_l if caps[0] is None else log_l + caps[0]
            below = allowed.amax(1, keepdim=True) < log_eps
            if bool(below.any()):
                # A request with nothing left (best = -inf) is exhausted, not stopped.
                stopped |= below & (log_q2 > _NEG_INF).any(1, keepdim=True)
            score = log_l
            for pen in pens:
                score = score - pen
            if bool(stopped.any()):
                if fill is None:
                    fill = sel.track(_fill(log_q2, r64), biased=True)
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
                e = kernel.chen(c_rows, d2, j)
                c_rows[:, t] = e
                d2.addcmul_(e, e, value=-1.0)
            else:
                d2.copy_(win.push(j, t))
        return sel.finish(stopped)

    bytes_per_request = (n_rows + d) * p.width * 8
    return run_chunks(batch_chunks(p.batch, bytes_per_request, p.width), run)


def _fill(log_q2: Tensor, r64: Tensor) -> Tensor:
    """The relevance a stopped request is filled by: -inf where taken or padding."""
    return torch.where(log_q2 == _NEG_INF, _NEG_INF, r64)


def _pivot(d2: Tensor, diag: Tensor, j: Tensor) -> Tensor:
    """d_j, or +inf (e = 0: the pick adds no direction) where d_j^2 is float64 rounding noise.

    With an epsilon below that noise (1e-300, say) the early stop never comes, and dividing by
    the square root of noise blows the factor up to inf and then NaN within a few steps.
    """
    d2_j = d2.gather(1, j)
    d_j = d2_j.clamp_min(_TINY).sqrt_()
    return d_j.masked_fill_(d2_j <= diag.gather(1, j) * _NOISE, float("inf"))


class _Kernel:
    """phi^T ``[b, d, Np]``, the rows phi_j and S_ii: the kernel rows and Chen's recursion,
    shared by the eager loop and the loop form.

    The Cholesky rows sit in their own ``[b, R, Np]`` tensor, R fixed for the call (T - 1, or
    the window): ``S_ji - <c_j, c_i>`` is the kernel row (one product over the features) plus
    ``-c_j`` times all R rows, unfilled rows being zeros. A fixed R keeps one order of the sums
    in both forms; the loop form never concatenates phi^T with its state.
    """

    def __init__(self, phi_t: Tensor, rows: RowGather, diag: Tensor, n_rows: int) -> None:
        self.phi_t, self.rows, self.diag = phi_t, rows, diag
        b, _, width = phi_t.shape
        self.c_index = (
            torch.arange(b, device=phi_t.device)[:, None] * (n_rows * width)
            + torch.arange(n_rows, device=phi_t.device) * width
        )

    def row(self, j: Tensor) -> Tensor:
        """``S_j.`` ``[b, 1, Np]``."""
        return row_product(self.rows(j), self.phi_t)

    def chen(
        self, c_rows: Tensor, d2: Tensor, j: Tensor, kernel_row: Tensor | None = None
    ) -> Tensor:
        """The new Cholesky row for pick j: ``e_i = (S_ji - <c_j, c_i>) / d_j``."""
        c_j = torch.take(c_rows, self.c_index + j)
        kernel_row = self.row(j) if kernel_row is None else kernel_row
        num = torch.baddbmm(kernel_row, c_j.neg_().unsqueeze(1), c_rows).squeeze(1)
        return num / _pivot(d2, self.diag, j)


def _rebuild(kernel: _Kernel, cols: Tensor, picks: Tensor, filled: int, c_rows: Tensor) -> Tensor:
    """Sliding window: d^2 conditioned on the window's picks only, by Chen's recursion over its
    first ``filled`` (oldest first) kernel rows ``cols`` ``[b, w, Np]``. Returns d^2;
    ``c_rows`` (zeros on entry) receives the window's Cholesky rows."""
    d2 = kernel.diag
    for k in range(filled):
        e = kernel.chen(c_rows, d2, picks[:, k : k + 1], cols[:, k : k + 1])
        c_rows[:, k] = e
        d2 = torch.addcmul(d2, e, e, value=-1.0)
    return d2


def _rebuild_carried(kernel: _Kernel, cols: Tensor, picks: Tensor, filled: Tensor) -> Tensor:
    """``_rebuild`` as an inner ``torch.while_loop`` over the window (the loop form: its graph
    holds one step of the recursion, whatever the window)."""

    def cond(k: Tensor, d2: Tensor, c_rows: Tensor) -> Tensor:
        return k < filled

    def body(k: Tensor, d2: Tensor, c_rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        at = k.reshape(1)
        pk = picks.index_select(1, at)
        e = kernel.chen(c_rows, d2, pk, cols.index_select(1, at))
        c_rows = c_rows.index_copy(1, at, e.unsqueeze(1))
        return k + 1, torch.addcmul(d2, e, e, value=-1.0), c_rows

    k0 = torch.zeros((), dtype=torch.int64, device=cols.device)
    start = (k0, kernel.diag.clone(), torch.zeros_like(cols))
    return loop.while_loop(cond, body, start)[1]


class _EagerWindow:
    """The windowed variant's state in the eager loop: the window's kernel rows and picks,
    oldest first (shifted down once full)."""

    def __init__(self, kernel: _Kernel, b: int, width: int, c_rows: Tensor) -> None:
        w = c_rows.shape[1]
        self.kernel, self.c_rows, self.w = kernel, c_rows, w
        self.cols = torch.zeros((b, w, width), dtype=_DT)
        self.picks = torch.zeros((b, w), dtype=torch.int64)

    def push(self, j: Tensor, t: int) -> Tensor:
        w = self.w
        at = min(t, w - 1)
        if t >= w:
            self.cols[:, :-1] = self.cols[:, 1:].clone()
            self.picks[:, :-1] = self.picks[:, 1:].clone()
        self.cols[:, at] = self.kernel.row(j).squeeze(1)
        self.picks[:, at] = j.squeeze(1)
        self.c_rows.zero_()
        return _rebuild(self.kernel, self.cols, self.picks, at + 1, self.c_rows)


def _dpp_loop(
    valid: Tensor,
    r64: Tensor,
    two_alpha: float,
    log_eps: float,
    kernel: _Kernel,
    window: int | None,
    cons: PreparedConstraints,
    slate_length: int,
) -> Selection:
    """DPP's loop as one ``torch.while_loop`` (``ops/loop.py``): d^2, the stop flags and the
    Cholesky rows (full) or the window's kernel rows and picks (windowed) are carried."""
    b, width = valid.shape
    dev = valid.device
    log_q2 = r64 * two_alpha + loop.initial_bias(valid, _DT)

    def score(
        t: Tensor, tracked: State, state: State, pens: list[Tensor], extra: Tensor | None
    ) -> tuple[Tensor, State]:
        d2, stopped = state[0], state[1]
        log_d2 = d2.clamp_min(_TINY).log_()
        log_l = tracked[0] + log_d2
        allowed = log_l if extra is None else log_l + extra
        below = allowed.amax(1, keepdim=True) < log_eps
        stopped = stopped | (below & (tracked[0] > _NEG_INF).any(1, keepdim=True))
        return torch.where(stopped, _fill(tracked[0], r64), log_l), (d2, stopped, *state[2:])

    def full(t: Tensor, j: Tensor, tracked: State, state: State) -> State:
        d2, stopped, c_rows = state
        e = kernel.chen(c_rows, d2, j)
        c_rows = c_rows.index_copy(1, t.reshape(1), e.unsqueeze(1))
        return torch.addcmul(d2, e, e, value=-1.0), stopped, c_rows

    def windowed(t: Tensor, j: Tensor, tracked: State, state: State) -> State:
        _, stopped, cols, picks = state
        w = cols.shape[1]
        full_window = t >= w
        at = torch.clamp(t, max=w - 1).reshape(1)
        shifted = (
            torch.cat([cols[:, 1:], cols[:, :1]], 1),
            torch.cat([picks[:, 1:], picks[:, :1]], 1),
        )
        cols = torch.where(full_window, shifted[0], cols)
        picks = torch.where(full_window, shifted[1], picks)
        cols = cols.index_copy(1, at, kernel.row(j))
        picks = picks.index_copy(1, at, j)
        return _rebuild_carried(kernel, cols, picks, (at + 1).reshape(())), stopped, cols, picks

    stopped = torch.zeros((b, 1), dtype=torch.bool, device=dev)
    d2 = kernel.diag.clone()
    if window is None:
        c_rows = torch.zeros((b, max(slate_length - 1, 0), width), dtype=_DT, device=dev)
        state, update = (d2, stopped, c_rows), full
    else:
        w = min(window, max(slate_length, 1))
        cols = torch.zeros((b, w, width), dtype=_DT, device=dev)
        picks = torch.zeros((b, w), dtype=torch.int64, device=dev)
        state, update = (d2, stopped, cols, picks), windowed
    sel, state = loop.greedy_loop(valid, _DT, slate_length, cons, (log_q2,), state, score, update)
    return replace(sel, early_stops=state[1].reshape(b))
