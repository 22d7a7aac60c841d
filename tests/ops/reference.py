"""Plain per-request numpy references of the DESIGN §3 operators, straight from the formulas.

One function per operator, one request at a time, float64, no batching and no incremental tricks:
residual vectors are updated explicitly (SSD), conditional variances are solved from the kernel
(DPP), the max is recomputed over the selected set (MMR), the sum of distances and the coverage
from the slate (MSD, COVER), penalties are summed term by term.
Sums use ``math.fsum`` (correctly rounded), so two candidates whose scores are mathematically
equal get bitwise equal scores: exact ties stay exact ties, and the tie rule (lower index) can be
checked exactly.

Every greedy reference can *follow* a given pick sequence instead of its own argmax. The tests
replay the torch operator's picks and check, step by step, that each pick is an argmax of the
reference scores: equal to the reference's own pick whenever the best score is separated from the
rest by more than float32 resolution (``slack``), and never a higher index on an exact tie.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# --------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True)
class RefSpacing:
    flags: np.ndarray  # [N] bool
    window: int
    coefficient: float


@dataclass(frozen=True)
class RefSemanticId:
    codes: np.ndarray  # [N, L] int
    window: int
    min_prefix: int
    coefficient: float


@dataclass(frozen=True)
class RefCap:
    categories: np.ndarray  # [N] int
    max_count: int
    window: int


@dataclass(frozen=True)
class RefConstraints:
    spacing: tuple[RefSpacing, ...] = ()
    semantic_id: RefSemanticId | None = None
    caps: tuple[RefCap, ...] = ()


@dataclass
class RefStep:
    scores: np.ndarray  # [N] float64, -inf where the step may not take the candidate
    slack: np.ndarray  # [N] float64 >= 0: how far a float32 implementation may be off
    pick: int
    own_pick: int  # the reference's own argmax (lowest index among exact ties)
    forced: bool  # every eligible candidate violated a cap


@dataclass
class RefResult:
    picks: list[int] = field(default_factory=list)
    steps: list[RefStep] = field(default_factory=list)
    cap_violations: int = 0
    early_stop: bool = False


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """Correctly rounded dot product (products of float32 inputs are exact in float64)."""
    return math.fsum((np.asarray(a, np.float64) * np.asarray(b, np.float64)).tolist())


# --------------------------------------------------------------------------------------------
# §3.1 relevance


def normalize_relevance(u: np.ndarray, valid: np.ndarray, method: str) -> np.ndarray:
    """zscore (population std) / minmax / raw over the valid candidates; constant -> 0."""
    u = np.asarray(u, np.float64)
    out = np.zeros(len(u))
    x = u[valid]
    if len(x) == 0:
        return out
    if method == "raw":
        out[valid] = x
    elif method == "zscore":
        mean = math.fsum(x.tolist()) / len(x)
        std = math.sqrt(math.fsum(((x - mean) ** 2).tolist()) / len(x))
        if std > 0:
            out[valid] = (x - mean) / std
    elif method == "minmax":
        lo, hi = x.min(), x.max()
        if hi > lo:
            out[valid] = (x - lo) / (hi - lo)
    else:
        raise ValueError(method)
    return out


# --------------------------------------------------------------------------------------------
# §3.2 similarity


def lcp(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the common prefix of two code tuples."""
    n = 0
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        if x != y:
            break
        n += 1
    return n


def similarity_kernel(
    embeddings: list[tuple[np.ndarray, float]],
    categories: list[tuple[np.ndarray, float]],
    semantic_ids: list[tuple[np.ndarray, float]],
    valid: np.ndarray,
    bias: bool,
) -> np.ndarray:
    """S_ij = sum beta cos(e_i, e_j) + beta [c_i = c_j] + beta lcp / L (+ 1), valid rows only."""
    n = len(valid)
    s = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if not (valid[i] and valid[j]):
                continue
            terms = []
            for e, beta in embeddings:
                ni, nj = math.sqrt(dot(e[i], e[i])), math.sqrt(dot(e[j], e[j]))
                if ni > 0 and nj > 0:
                    terms.append(beta * dot(e[i], e[j]) / (ni * nj))
            for c, beta in categories:
                terms.append(beta * float(c[i] == c[j]))
            for codes, beta in semantic_ids:
                terms.append(beta * lcp(codes[i], codes[j]) / codes.shape[1])
            if bias:
                terms.append(1.0)
            s[i, j] = math.fsum(terms)
    return s


# --------------------------------------------------------------------------------------------
# §3.5, §3.6, §3.8 penalties and caps


def soft_spacing(sp: RefSpacing, slate: list[int], i: int) -> float:
    """q_i(t) = [i in R] sum_{d=1..w} (1/d) [s_{t-d} in R], times the coefficient."""
    if not sp.flags[i]:
        return 0.0
    t = len(slate)
    terms = [1.0 / d for d in range(1, sp.window + 1) if t - d >= 0 and sp.flags[slate[t - d]]]
    return sp.coefficient * math.fsum(terms)


def semantic_id_penalty(p: RefSemanticId, slate: list[int], i: int) -> float:
    """sum_{d=1..w} (1/d) [lcp(i, s_{t-d}) >= l*] lcp(i, s_{t-d}) / L, times the coefficient."""
    t = len(slate)
    levels = p.codes.shape[1]
    terms = []
    for d in range(1, p.window + 1):
        if t - d < 0:
            continue
        m = lcp(p.codes[i], p.codes[slate[t - d]])
        if m >= p.min_prefix:
            terms.append(m / levels / d)
    return p.coefficient * math.fsum(terms)


def violates_cap(cap: RefCap, slate: list[int], i: int) -> bool:
    """Taking i at position t would put more than k of its category in positions t-w+1..t."""
    t = len(slate)
    recent = [slate[p] for p in range(max(0, t - cap.window + 1), t)]
    same = sum(1 for s in recent if cap.categories[s] == cap.categories[i])
    return same + 1 > cap.max_count


def penalty_total(c: RefConstraints, slate: list[int], i: int) -> float:
    terms = [soft_spacing(sp, slate, i) for sp in c.spacing]
    if c.semantic_id is not None:
        terms.append(semantic_id_penalty(c.semantic_id, slate, i))
    return math.fsum(terms)


def penalty_magnitude(c: RefConstraints) -> float:
    """Upper bound of the penalty terms, for float32 tolerance."""
    h = 0.0
    for sp in c.spacing:
        h += abs(sp.coefficient) * sum(1.0 / d for d in range(1, sp.window + 1))
    if c.semantic_id is not None:
        h += abs(c.semantic_id.coefficient) * sum(
            1.0 / d for d in range(1, c.semantic_id.window + 1)
        )
    return h


def _allowed(valid: np.ndarray, slate: list[int], c: RefConstraints) -> tuple[np.ndarray, bool]:
    n = len(valid)
    eligible = np.array([bool(valid[i]) and i not in slate for i in range(n)], dtype=bool)
    ok = eligible.copy()
    for i in range(n):
        if ok[i] and any(violates_cap(cap, slate, i) for cap in c.caps):
            ok[i] = False
    if ok.any():
        return ok, False
    return eligible, bool(eligible.any()) and bool(c.caps)


def _lowest_argmax(scores: np.ndarray) -> int:
    best = max(scores.tolist())
    return int(next(i for i, s in enumerate(scores.tolist()) if s == best))


def _greedy_loop(
    valid: np.ndarray,
    c: RefConstraints,
    slate_length: int,
    base_scores,  # (t, slate) -> (base [N], slack [N])
    after_pick,  # (t, j, slate) -> None
    follow: list[int] | None,
    rel_tol: float,
) -> RefResult:
    """The greedy loop common to every selector: penalties, caps, argmax, bookkeeping."""
    res = RefResult()
    pen_mag = penalty_magnitude(c)
    for t in range(slate_length):
        allowed, forced = _allowed(valid, res.picks, c)
        if not allowed.any():
            break
        base, slack = base_scores(t, res.picks, allowed)
        scores = np.full(len(valid), -np.inf)
        for i in np.flatnonzero(allowed):
            scores[i] = math.fsum([base[i], -penalty_total(c, res.picks, i)])
        slack = slack + rel_tol * (1.0 + np.abs(np.where(np.isfinite(scores), scores, 0)) + pen_mag)
        own = _lowest_argmax(scores)
        j = own if follow is None else (follow[t] if t < len(follow) else -1)
        res.steps.append(RefStep(scores, slack, j, own, forced))
        if j < 0:
            break
        res.cap_violations += int(forced)
        res.picks.append(j)
        after_pick(t, j, res.picks)
    return res


# --------------------------------------------------------------------------------------------
# algorithms


def greedy_relevance(
    r: np.ndarray, valid: np.ndarray, c: RefConstraints, slate_length: int, follow=None
) -> RefResult:
    """argmax of r_i - penalties under the caps."""
    r = np.asarray(r, np.float64)

    def base(t, slate, allowed):
        return r.copy(), np.zeros(len(r))

    return _greedy_loop(valid, c, slate_length, base, lambda *a: None, follow, 1e-6)


def ssd(
    r: np.ndarray,
    phi: np.ndarray,
    valid: np.ndarray,
    c: RefConstraints,
    slate_length: int,
    window: int,
    theta: float,
    gamma: float,
    variant: str = "stabilized",
    epsilon: float = 1e-6,
    follow=None,
) -> RefResult:
    """SSD exactly as DESIGN §3.3, on explicit residual vectors v_i."""
    r = np.asarray(r, np.float64)
    v = np.asarray(phi, np.float64).copy()
    n = len(r)
    win: list[tuple[np.ndarray, np.ndarray]] = []  # (b_k, c_k)
    # float32 kernel-space implementations carry ~1e-7 relative error on <phi_i, phi_j>, which
    # accumulates in ||v_i||^2 over the steps; sqrt amplifies it for near-zero residuals.
    scale = max([dot(phi[i], phi[i]) for i in range(n) if valid[i]] + [1.0])
    delta = 2e-5 * scale
    div_coef = (1.0 - theta) * gamma

    def base(t, slate, allowed):
        if not win:
            # The empty window: theta r_i, or r_i itself at theta = 0 (§3.3's first pick).
            return (r.copy() if theta == 0 else theta * r), np.zeros(n)
        norms2 = np.array([dot(v[i], v[i]) for i in range(n)])
        norms = np.sqrt(np.maximum(norms2, 0.0))
        hi = np.sqrt(norms2 + delta)
        lo = np.sqrt(np.maximum(norms2 - delta, 0.0))
        if variant == "stabilized":
            vol = vol_hi = vol_lo = 1.0
        else:
            nb2 = [dot(b, b) for b, _ in win]
            vol = math.prod(math.sqrt(x) for x in nb2)
            vol_hi = math.prod(math.sqrt(x + delta) for x in nb2)
            vol_lo = math.prod(math.sqrt(max(x - delta, 0.0)) for x in nb2)
        out = np.array([math.fsum([theta * r[i], div_coef * vol * norms[i]]) for i in range(n)])
        slack = abs(div_coef) * np.maximum(vol_hi * hi - vol * norms, vol * norms - vol_lo * lo)
        return out, slack

    def after(t, j, slate):
        unselected = [i for i in range(n) if valid[i] and i not in slate]
        b = v[j].copy()
        if len(win) == window:
            b_old, c_old = win.pop(0)
            for i in unselected:
                v[i] = v[i] + c_old[i] * b_old
        cvec = np.zeros(n)
        denom = dot(b, b) + epsilon
        for i in unselected:
            # A zero basis (a zero residual picked with epsilon = 0) projects nothing out.
            cvec[i] = dot(v[i], b) / denom if denom > 0 else 0.0
        for i in unselected:
            v[i] = v[i] - cvec[i] * b
        win.append((b, cvec))

    return _greedy_loop(valid, c, slate_length, base, after, follow, 2e-6)


def dpp(
    r: np.ndarray,
    s: np.ndarray,
    valid: np.ndarray,
    c: RefConstraints,
    slate_length: int,
    alpha: float,
    window: int | None = None,
    epsilon: float = 1e-6,
    follow=None,
) -> RefResult:
    """Greedy DPP: d_i^2 = L_ii - L_iW L_WW^-1 L_Wi, L = Diag(q) S Diag(q), q = exp(alpha r).

    W is every pick so far, or the last ``window`` picks. Once the largest d_i^2 among the
    candidates the step may take is below epsilon, the rest is filled by r_i - penalties.
    """
    r = np.asarray(r, np.float64)
    n = len(r)
    q = np.exp(alpha * r)
    lk = q[:, None] * np.asarray(s, np.float64) * q[None, :]
    state = {"stopped": False}
    s_scale = max([s[i, i] for i in range(n) if valid[i]] + [1.0])
    delta_s = 1e-9 * s_scale  # float64 Chen recursion on float32-exact phi

    def cond_var(slate: list[int]) -> np.ndarray:
        w = slate if window is None else slate[-window:]
        d2 = np.array([lk[i, i] for i in range(n)])
        if w:
            lww = lk[np.ix_(w, w)]
            for i in range(n):
                x = np.linalg.solve(lww, lk[w, i])
                d2[i] = math.fsum([lk[i, i], -dot(lk[i, w], x)])
        return d2

    def base(t, slate, allowed):
        if not state["stopped"]:
            d2 = cond_var(slate)
            state["stopped"] = bool(max(d2[allowed]) < epsilon)
        if state["stopped"]:
            return r.copy(), np.zeros(n)
        d2s = d2 / (q * q)  # conditional variance in S units: what the float error scales with
        with np.errstate(divide="ignore"):
            out = np.where(d2 > 0, np.log(np.maximum(d2, 1e-300)), -np.inf)
            slack = np.where(d2s > delta_s, np.log1p(delta_s / np.maximum(d2s, 1e-300)), np.inf)
        return out, slack

    res = _greedy_loop(valid, c, slate_length, base, lambda *a: None, follow, 1e-9)
    res.early_stop = state["stopped"]
    return res


def mmr(
    r: np.ndarray,
    s: np.ndarray,
    valid: np.ndarray,
    c: RefConstraints,
    slate_length: int,
    lam: float,
    follow=None,
) -> RefResult:
    """lam r_i - (1 - lam) max_{j in S} S_ij; the first pick is the argmax of lam r_i (of r_i
    itself at lam = 0, where lam r_i would tie everything)."""
    r = np.asarray(r, np.float64)
    n = len(r)
    s_scale = max([abs(s[i, i]) for i in range(n) if valid[i]] + [1.0])

    def base(t, slate, allowed):
        if not slate:
            return (r.copy() if lam == 0 else lam * r), np.zeros(n)
        out = np.array(
            [math.fsum([lam * r[i], -(1.0 - lam) * max(s[i, j] for j in slate)]) for i in range(n)]
        )
        return out, np.full(n, abs(1.0 - lam) * 1e-6 * s_scale)

    return _greedy_loop(valid, c, slate_length, base, lambda *a: None, follow, 2e-6)


def msd(
    r: np.ndarray,
    s: np.ndarray,
    valid: np.ndarray,
    c: RefConstraints,
    slate_length: int,
    theta: float,
    follow=None,
) -> RefResult:
    """theta r_i + (1 - theta) sum_{j in S} (1 - S_ij); the first pick is the argmax of theta r_i
    (of r_i itself at theta = 0, where theta r_i would tie everything)."""
    r = np.asarray(r, np.float64)
    n = len(r)
    s_scale = max([abs(s[i, i]) for i in range(n) if valid[i]] + [1.0])

    def base(t, slate, allowed):
        if not slate:
            return (r.copy() if theta == 0 else theta * r), np.zeros(n)
        out = np.array(
            [
                math.fsum([theta * r[i], (1.0 - theta) * math.fsum([1.0 - s[i, j] for j in slate])])
                for i in range(n)
            ]
        )
        # float64 kernel rows summed in another order: ~1e-16 relative per pick.
        return out, np.full(n, abs(1.0 - theta) * 1e-12 * len(slate) * (1.0 + s_scale))

    return _greedy_loop(valid, c, slate_length, base, lambda *a: None, follow, 1e-9)


def cover(
    r: np.ndarray,
    s: np.ndarray,
    valid: np.ndarray,
    c: RefConstraints,
    slate_length: int,
    theta: float,
    gamma: float,
    follow=None,
) -> RefResult:
    """theta r_i + (1 - theta) gain_i with gain_i = sum_j (acc_j + S+_ij)^gamma - sum_j acc_j^gamma
    over the valid j, S+ = max(0, S), acc_j = sum_{k in S} S+_jk (recomputed from the slate at
    every step); 0^gamma = 0. No theta = 0 rule: the first step's gain already ranks."""
    r = np.asarray(r, np.float64)
    n = len(r)
    sp = np.where(np.outer(valid, valid), np.maximum(np.asarray(s, np.float64), 0.0), 0.0)
    cols = [j for j in range(n) if valid[j]]

    def base(t, slate, allowed):
        acc = [math.fsum([sp[j, k] for k in slate]) for j in range(n)]
        before = [acc[j] ** gamma for j in cols]
        out, slack = np.zeros(n), np.zeros(n)
        for i in range(n):
            after = [(acc[j] + sp[i, j]) ** gamma for j in cols]
            gain = math.fsum(after + [-x for x in before])
            out[i] = math.fsum([theta * r[i], (1.0 - theta) * gain])
            # float64 powers (1 ulp) and sums in another order, over every column.
            slack[i] = abs(1.0 - theta) * 1e-12 * math.fsum(after + before + [1.0])
        return out, slack

    return _greedy_loop(valid, c, slate_length, base, lambda *a: None, follow, 1e-9)


# --------------------------------------------------------------------------------------------
# slate metrics


def slate_metrics(
    slate: list[int],
    u: np.ndarray,
    valid: np.ndarray,
    embeddings: np.ndarray,
    categories: np.ndarray,
    codes: np.ndarray,
    flags: dict[str, np.ndarray],
    window: int,
    min_prefix: int,
) -> dict[str, float]:
    """The issue-3 metrics of one slate, by their definitions (NaN where undefined)."""
    nan = float("nan")
    n = len(slate)
    out: dict[str, float] = {"slate_length": n}
    top = sorted((float(u[i]) for i in range(len(u)) if valid[i]), reverse=True)[:n]
    got, best = math.fsum(float(u[i]) for i in slate), math.fsum(top)
    out["utility_retained"] = (
        nan if n == 0 else (got / best if best != 0 else (1.0 if got == 0 else nan))
    )

    def cos(i: int, j: int) -> float:
        ni, nj = (
            math.sqrt(dot(embeddings[i], embeddings[i])),
            math.sqrt(dot(embeddings[j], embeddings[j])),
        )
        return 0.0 if ni == 0 or nj == 0 else dot(embeddings[i], embeddings[j]) / (ni * nj)

    pairs = [(p, q) for p in range(n) for q in range(p + 1, n)]
    near = [(p, q) for p, q in pairs if q - p < window]
    for name, ps in (("", pairs), (f"@{window}", near)):
        d = [1.0 - cos(slate[p], slate[q]) for p, q in ps]
        out[f"ilad{name}" if not name else f"ilald{name}"] = sum(d) / len(d) if d else nan
        out[f"ilmd{name}" if not name else f"ilmld{name}"] = min(d) if d else nan
    cats = [int(categories[i]) for i in slate]
    if n:
        counts = {c: cats.count(c) for c in set(cats)}
        out["category_entropy"] = -sum(k / n * math.log(k / n) for k in counts.values())
    else:
        out["category_entropy"] = nan
    distinct = len({int(categories[i]) for i in range(len(valid)) if valid[i]})
    out["category_coverage"] = len(set(cats)) / distinct if distinct else nan
    out[f"sid_collisions@{window}"] = sum(
        1 for p, q in near if lcp(codes[slate[p]], codes[slate[q]]) >= min_prefix
    )
    for name, f in flags.items():
        inside = [bool(f[i]) for i in slate]
        out[f"exposure[{name}]"] = sum(inside) / n if n else nan
        out[f"adjacency[{name}]@{window}"] = sum(
            1
            for p in range(n)
            if inside[p] and any(inside[q] for q in range(n) if 0 < abs(p - q) <= window)
        )
    return out
