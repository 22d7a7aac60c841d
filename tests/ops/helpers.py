"""Hypothesis strategies for adversarial batches, and the torch-vs-reference step checker.

Inputs are quantised (relevance in quarters, embedding entries small integers, categories and
codes from tiny alphabets) so that exact ties and exact duplicates are common and float-near ties
are rare; padding is filled with NaN and garbage to prove it is never read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st

from blendspec.ops import (
    CategoryCap,
    GreedyConstraints,
    Selection,
    SemanticIdPenalty,
    SimilaritySignals,
    SoftSpacing,
)

from . import reference as ref

MODES = ("random", "duplicates", "identical", "zero", "lowrank", "flat", "sensitive")


@dataclass
class Batch:
    mask: torch.Tensor  # [B, N] bool
    relevance: torch.Tensor  # [B, N] float32
    embeddings: list[torch.Tensor]  # each [B, N, D] float32
    categories: torch.Tensor  # [B, N] int64
    codes: torch.Tensor  # [B, N, L] int64
    flags: list[torch.Tensor]  # each [B, N] bool
    constraints: GreedyConstraints
    slate_length: int
    mode: str

    @property
    def b(self) -> int:
        return self.mask.shape[0]

    def signals(self, cat_beta: float = 0.0, sid_beta: float = 0.0) -> SimilaritySignals:
        return SimilaritySignals(
            embeddings=tuple((e, 1.0 + k) for k, e in enumerate(self.embeddings)),
            categories=((self.categories, cat_beta),) if cat_beta else (),
            semantic_ids=((self.codes, sid_beta),) if sid_beta else (),
        )


@st.composite
def batches(
    draw: st.DrawFn,
    max_b: int = 3,
    max_n: int = 14,
    max_t: int = 10,
    constraints: bool = True,
    modes: tuple[str, ...] = MODES,
) -> Batch:
    mode = draw(st.sampled_from(modes))
    b = draw(st.integers(1, max_b))
    counts = [draw(st.integers(0, max_n)) for _ in range(b)]
    if draw(st.booleans()):
        counts[0] = max(counts[0], 1)
    n = max(counts) + draw(st.integers(0, 3))
    holes = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mask = np.zeros((b, n), dtype=bool)
    for i, c in enumerate(counts):
        if holes:
            mask[i, rng.choice(n, size=c, replace=False)] = True
        else:
            mask[i, :c] = True
    dims = [draw(st.integers(1, 6)) for _ in range(draw(st.integers(1, 2)))]
    if mode == "lowrank":
        dims = [1] * len(dims)
    rel = rng.integers(-8, 9, size=(b, n)).astype(np.float32) / 4
    if mode == "flat":
        rel[:] = 0.5
    embs = [rng.integers(-2, 3, size=(b, n, d)).astype(np.float32) for d in dims]
    if mode == "identical":
        for e in embs:
            e[:] = e[:, :1]
    if mode == "zero":
        for e in embs:
            e[rng.random((b, n)) < 0.5] = 0
    cats = rng.integers(0, 3, size=(b, n)).astype(np.int64)
    levels = draw(st.integers(1, 3))
    codes = rng.integers(0, 2, size=(b, n, levels)).astype(np.int64)
    flags = [rng.random((b, n)) < (1.0 if mode == "sensitive" else 0.4) for _ in range(2)]
    if mode == "duplicates":
        for i in range(b):
            for j in range(1, n):
                if rng.random() < 0.4:
                    k = int(rng.integers(0, j))
                    rel[i, j] = rel[i, k]
                    for e in embs:
                        e[i, j] = e[i, k]
                    cats[i, j], codes[i, j] = cats[i, k], codes[i, k]
                    for f in flags:
                        f[i, j] = f[i, k]
    # Garbage in the padding: NaN relevance and embeddings, random ids.
    pad = ~mask
    rel[pad] = np.nan
    for e in embs:
        e[pad] = np.nan
    cats[pad] = 99
    codes[pad] = -7
    t = draw(st.integers(0, max_t))
    cons = GreedyConstraints()
    if constraints:
        spacing = tuple(
            SoftSpacing(
                torch.from_numpy(flags[k]),
                draw(st.integers(0, 12)),
                draw(st.sampled_from([0.25, 0.5, 1.0, 3.0])),
            )
            for k in range(draw(st.integers(0, 2)))
        )
        sid = None
        if draw(st.booleans()):
            sid = SemanticIdPenalty(
                torch.from_numpy(codes),
                draw(st.integers(0, 12)),
                draw(st.integers(0, levels)),
                draw(st.sampled_from([0.5, 1.0, 2.0])),
            )
        caps = tuple(
            CategoryCap(torch.from_numpy(cats), draw(st.integers(0, 3)), draw(st.integers(1, 12)))
            for _ in range(draw(st.integers(0, 2)))
        )
        cons = GreedyConstraints(spacing, sid, caps)
    return Batch(
        mask=torch.from_numpy(mask),
        relevance=torch.from_numpy(rel),
        embeddings=[torch.from_numpy(e) for e in embs],
        categories=torch.from_numpy(cats),
        codes=torch.from_numpy(codes),
        flags=[torch.from_numpy(f) for f in flags],
        constraints=cons,
        slate_length=t,
        mode=mode,
    )


def ref_constraints(c: GreedyConstraints, i: int) -> ref.RefConstraints:
    """Request i's slice of the torch constraints, as reference inputs."""
    return ref.RefConstraints(
        spacing=tuple(
            ref.RefSpacing(s.flags[i].numpy(), s.window, s.coefficient) for s in c.spacing
        ),
        semantic_id=None
        if c.semantic_id is None
        else ref.RefSemanticId(
            c.semantic_id.codes[i].numpy(),
            c.semantic_id.window,
            c.semantic_id.min_prefix,
            c.semantic_id.coefficient,
        ),
        caps=tuple(ref.RefCap(k.categories[i].numpy(), k.max_count, k.window) for k in c.caps),
    )


def kernel_of(phi: torch.Tensor, valid: np.ndarray) -> np.ndarray:
    """S = phi phi^T by correctly rounded dot products (one request, [N, D] phi)."""
    x = phi.double().numpy()
    n = len(valid)
    s = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if valid[i] and valid[j]:
                s[i, j] = ref.dot(x[i], x[j])
    return s


def signatures(batch: Batch, i: int, phi: torch.Tensor | None = None) -> list[bytes]:
    """Per candidate of request i, the bytes of every input the operator reads: equal bytes mean
    duplicates, which any implementation must score identically."""
    c = batch.constraints
    arrays = [batch.relevance[i]]
    arrays += [s.flags[i] for s in c.spacing]
    arrays += [] if c.semantic_id is None else [c.semantic_id.codes[i]]
    arrays += [k.categories[i] for k in c.caps]
    arrays += [] if phi is None else [phi[i]]
    n = batch.mask.shape[1]
    return [b"|".join(a[k].numpy().tobytes() for a in arrays) for k in range(n)]


def assert_follows(
    sel: Selection, i: int, run_ref, slate_length: int, same: list[bytes] | None = None
) -> int:
    """Check request i's torch slate step by step against the reference replaying it.

    At every step the torch pick must be a candidate the step may take, and must be the
    reference's own pick unless the two scores are within float32 slack (a float-near tie). Between
    duplicates (equal ``same`` signatures, i.e. identical inputs, whose scores any implementation
    computes identically) the lower index must win. Returns the number of float-near deviations.
    """
    idx = sel.indices[i].tolist()
    picks = [x for x in idx if x >= 0]
    assert idx[len(picks) :] == [-1] * (len(idx) - len(picks)), f"-1 not only at the end: {idx}"
    assert len(idx) == slate_length
    res = run_ref(picks)
    assert res.picks == picks[: len(res.picks)]
    assert len(res.picks) == len(picks), (
        f"torch took {len(picks)} items, the reference could take only {len(res.picks)}"
    )
    if len(res.steps) > len(picks):
        raise AssertionError(f"torch stopped after {len(picks)} picks, candidates remain: {idx}")
    near = 0
    for t, step in enumerate(res.steps):
        j, own = step.pick, step.own_pick
        sj, so = step.scores[j], step.scores[own]
        assert sj > -np.inf or step.slack[j] == np.inf, f"step {t}: took {j}, which is not allowed"
        if j != own:
            assert same is None or same[j] != same[own] or j < own, (
                f"step {t}: duplicates {own} and {j} tied and the higher index won"
            )
            upper = np.inf if step.slack[j] == np.inf else sj + step.slack[j]
            lower = so - step.slack[own]
            assert upper >= lower, (
                f"step {t}: torch took {j} (ref score {sj!r}) over {own} ({so!r}); "
                f"slack {step.slack[j]:.2e}/{step.slack[own]:.2e}; picks {picks}"
            )
            near += 1
        got = float(sel.scores[i, t])
        if np.isfinite(sj) and np.isfinite(step.slack[j]):
            assert abs(got - sj) <= step.slack[j] + 1e-5 * (1 + abs(sj)), (
                f"step {t}: torch score {got} vs reference {sj} for candidate {j}"
            )
    assert int(sel.cap_violations[i]) == res.cap_violations
    return near
