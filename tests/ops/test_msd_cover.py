"""MSD and COVER (DESIGN §3.7b) against their float64 references, on both paths; their batch
invariance, trace and torch.export; and agreement with pyversity 0.2, whose formulas they follow.

Every test runs on the compiled loop and on the torch path (tests/ops/conftest.py), except those
of ``TestPaths``, which compare the two themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blendspec.ops import (
    CategoryCap,
    GreedyConstraints,
    Selection,
    SemanticIdPenalty,
    SimilaritySignals,
    SoftSpacing,
    _common,
    _native,
    feature_map,
    kernels,
)
from blendspec.ops.cover import cover
from blendspec.ops.msd import msd

from . import reference as ref
from .helpers import Batch, assert_follows, batches, kernel_of, ref_constraints, signatures
from .test_exact import Problem, check_exact, hard_problems
from .test_invariance import _assert_same, _float_batch, _signals, _take

_SETTINGS = settings(max_examples=40, deadline=None)
THETAS = [0.0, 0.3, 0.5, 0.8, 1.0]
GAMMAS = [0.25, 0.5, 0.7, 1.0]


def _kernel(phi: torch.Tensor, valid: np.ndarray, i: int) -> np.ndarray:
    return kernel_of(phi[i], valid)


def _check_reference(batch: Batch, sel: Selection, phi: torch.Tensor, run_ref) -> None:  # type: ignore[no-untyped-def]
    """Every request of ``sel`` replayed step by step against the reference (helpers)."""
    for i in range(batch.b):
        valid = batch.mask[i].numpy()
        r = np.where(valid, batch.relevance[i].numpy(), 0.0)
        cons = ref_constraints(batch.constraints, i)
        s = _kernel(phi, valid, i)

        def run(follow, valid=valid, r=r, cons=cons, s=s):  # type: ignore[no-untyped-def]
            return run_ref(r, s, valid, cons, follow)

        assert_follows(sel, i, run, batch.slate_length, signatures(batch, i, phi))
        assert not bool(sel.early_stops[i])


# ----------------------------------------------------------------------------------------------
# against the references


@_SETTINGS
@given(batches(), st.sampled_from(THETAS), st.sampled_from([0.0, 0.7]), st.booleans())
def test_msd_matches_reference(batch: Batch, theta: float, cat_beta: float, cons: bool) -> None:
    phi = feature_map(batch.signals(cat_beta=cat_beta, sid_beta=0.5), batch.mask, bias=False)
    constraints = batch.constraints if cons else None
    sel = msd(batch.relevance, phi, batch.mask, constraints,
              slate_length=batch.slate_length, theta=theta)  # fmt: skip
    if not cons:
        batch = Batch(**{**batch.__dict__, "constraints": GreedyConstraints()})
    _check_reference(
        batch, sel, phi,
        lambda r, s, v, c, f: ref.msd(r, s, v, c, batch.slate_length, theta, f),
    )  # fmt: skip


@_SETTINGS
@given(
    batches(),
    st.sampled_from(THETAS),
    st.sampled_from(GAMMAS),
    st.sampled_from([0.0, 0.7]),
    st.booleans(),
)
def test_cover_matches_reference(
    batch: Batch, theta: float, gamma: float, cat_beta: float, cons: bool
) -> None:
    phi = feature_map(batch.signals(cat_beta=cat_beta, sid_beta=0.5), batch.mask, bias=False)
    constraints = batch.constraints if cons else None
    sel = cover(batch.relevance, phi, batch.mask, constraints,
                slate_length=batch.slate_length, theta=theta, gamma=gamma)  # fmt: skip
    if not cons:
        batch = Batch(**{**batch.__dict__, "constraints": GreedyConstraints()})
    _check_reference(
        batch, sel, phi,
        lambda r, s, v, c, f: ref.cover(r, s, v, c, batch.slate_length, theta, gamma, f),
    )  # fmt: skip


def _exact(name: str, p: Problem, sel: Selection, run_ref) -> None:  # type: ignore[no-untyped-def]
    phi = feature_map(p.signals, p.mask, bias=False)
    for i in range(p.b):
        valid = p.mask[i].numpy()
        r = np.where(valid, p.relevance[i].double().numpy(), 0.0)
        x = phi[i].double().numpy()
        s = np.where(np.outer(valid, valid), x @ x.T, 0.0)
        check_exact(f"{name}[{_native._choice.get()}]", sel, i, run_ref(r, s, valid),
                    int(valid.sum()))  # fmt: skip


@settings(max_examples=25, deadline=None)
@given(hard_problems(), st.sampled_from(THETAS))
def test_msd_is_exact(p: Problem, theta: float) -> None:
    """Continuous, category-only, mixed and low-rank features with duplicates, N up to 4 T."""
    phi = feature_map(p.signals, p.mask, bias=False)
    sel = msd(p.relevance, phi, p.mask, slate_length=p.slate_length, theta=theta)
    _exact("msd", p, sel,
           lambda r, s, v: ref.msd(r, s, v, ref.RefConstraints(), p.slate_length, theta))  # fmt: skip


@settings(max_examples=15, deadline=None)
@given(hard_problems(max_t=8), st.sampled_from(THETAS), st.sampled_from(GAMMAS))
def test_cover_is_exact(p: Problem, theta: float, gamma: float) -> None:
    phi = feature_map(p.signals, p.mask, bias=False)
    sel = cover(p.relevance, phi, p.mask, slate_length=p.slate_length, theta=theta, gamma=gamma)
    _exact("cover", p, sel,
           lambda r, s, v: ref.cover(r, s, v, ref.RefConstraints(), p.slate_length, theta,
                                     gamma))  # fmt: skip


# ----------------------------------------------------------------------------------------------
# semantics


def _one_hot_request() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r = torch.tensor([[0.1, -0.3, 0.9, 0.2]])
    mask = torch.ones((1, 4), dtype=torch.bool)
    emb = torch.eye(4).unsqueeze(0)
    return r, feature_map(SimilaritySignals(embeddings=((emb, 1.0),)), mask, bias=False), mask


def test_msd_zero_theta_first_pick_is_the_most_relevant() -> None:
    """At theta = 0 the first step's theta r_i ties every candidate: the first pick is by
    relevance itself (MMR's and SSD's rule), then by distance alone."""
    r, phi, mask = _one_hot_request()
    sel = msd(r, phi, mask, slate_length=2, theta=0.0, trace=True)
    assert sel.indices[0, 0] == 2
    assert sel.trace is not None
    assert float(sel.trace["relevance"][0, 0]) == pytest.approx(0.9)
    assert float(sel.scores[0, 0]) == pytest.approx(0.9)
    # Orthogonal features: every other candidate is at distance 1; the tie goes to index 0.
    assert sel.indices[0, 1] == 0
    assert float(sel.trace["relevance"][0, 1]) == 0.0
    assert float(sel.scores[0, 1]) == 1.0


def test_cover_zero_theta_first_pick_covers_the_most() -> None:
    """No theta = 0 rule for COVER: the first gain sum_j (S+_ij)^gamma already ranks, so the
    first pick is the best single coverer, not the most relevant."""
    mask = torch.ones((1, 4), dtype=torch.bool)
    r = torch.tensor([[0.9, 0.1, 0.2, 0.3]])
    emb = torch.tensor([[[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]]])
    phi = feature_map(SimilaritySignals(embeddings=((emb, 1.0),)), mask, bias=False)
    sel = cover(r, phi, mask, slate_length=1, theta=0.0, gamma=0.5)
    assert sel.indices.tolist() == [[1]]  # ties with 2 on coverage; the lower index
    x = phi[0].double().numpy()
    want = np.sqrt(np.maximum(x @ x.T, 0.0)).sum(1)[1]
    assert float(sel.scores[0, 0]) == pytest.approx(want, rel=1e-6)


def test_cover_zero_rows_cover_nothing() -> None:
    """0^gamma = 0: a zero feature row has gain 0 and adds no coverage; nothing is NaN."""
    mask = torch.ones((1, 3), dtype=torch.bool)
    r = torch.tensor([[5.0, 0.0, 0.0]])
    emb = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    phi = feature_map(SimilaritySignals(embeddings=((emb, 1.0),)), mask, bias=False)
    sel = cover(r, phi, mask, slate_length=3, theta=0.0, gamma=0.3, trace=True)
    assert sel.indices.tolist() == [[1, 2, 0]]
    assert sel.scores.tolist() == [[1.0, 1.0, 0.0]]
    assert sel.steps is not None
    assert bool(torch.isfinite(sel.steps["diversity"]).all())


@pytest.mark.parametrize("op", ["msd", "cover-0.3", "cover-0.5", "cover-1"])
def test_never_nan_never_short(op: str) -> None:
    """Duplicates, zero rows and rank-1 features, every theta: full slates, finite scores."""
    g = torch.Generator().manual_seed(7)
    b, n, t = 6, 10, 10
    emb = torch.randn((b, n, 1), generator=g) * torch.randn((1, 1, 3), generator=g)  # rank 1
    emb[:, 5:] = emb[:, :5]
    emb[:, 3] = 0.0
    mask = torch.ones((b, n), dtype=torch.bool)
    r = torch.randn((b, n), generator=g)
    r[:, 5:] = r[:, :5]
    phi = feature_map(SimilaritySignals(embeddings=((emb, 1.0),)), mask, bias=False)
    for theta in THETAS:
        if op == "msd":
            sel = msd(r, phi, mask, slate_length=t, theta=theta, trace=True)
        else:
            gamma = float(op.split("-")[1])
            sel = cover(r, phi, mask, slate_length=t, theta=theta, gamma=gamma, trace=True)
        assert bool((sel.indices >= 0).all()), (op, theta, sel.indices.tolist())
        assert bool(torch.isfinite(sel.scores).all()), (op, theta, sel.scores.tolist())
        assert all(len(set(row)) == t for row in sel.indices.tolist()), op
        assert sel.steps is not None
        live = sel.steps["score"] > float("-inf")
        assert not bool(sel.steps["score"].isnan().any())
        assert bool(torch.isfinite(sel.steps["diversity"][live]).all())


def test_argument_checks() -> None:
    mask = torch.ones((1, 3), dtype=torch.bool)
    r, phi = torch.zeros((1, 3)), torch.zeros((1, 3, 2))
    for gamma in (0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match="gamma"):
            cover(r, phi, mask, slate_length=2, theta=0.5, gamma=gamma)
    with pytest.raises(ValueError, match="features"):
        msd(r, torch.zeros((1, 4, 2)), mask, slate_length=2, theta=0.5)
    empty = cover(r, phi, torch.zeros((1, 3), dtype=torch.bool), slate_length=2, theta=0.5,
                  gamma=0.5)  # fmt: skip
    assert empty.indices.tolist() == [[-1, -1]]


# ----------------------------------------------------------------------------------------------
# batch invariance and the trace

Op = Callable[[Batch], Selection]


def _phi(b: Batch) -> torch.Tensor:
    return feature_map(_signals(b), b.mask, bias=False)


OPS: dict[str, Op] = {
    "msd": lambda b: msd(b.relevance, _phi(b), b.mask, b.constraints,
                         slate_length=b.slate_length, theta=0.6),
    "cover-0.5": lambda b: cover(b.relevance, _phi(b), b.mask, b.constraints,
                                 slate_length=b.slate_length, theta=0.6, gamma=0.5),
    "cover-0.3": lambda b: cover(b.relevance, _phi(b), b.mask, b.constraints,
                                 slate_length=b.slate_length, theta=0.4, gamma=0.3),
}  # fmt: skip


def _check_invariance(batch: Batch, extra: int) -> None:
    """Each request alone (cut to its own width) and inside the reversed batch padded ``extra``
    columns wider: the same slate, bit for bit."""
    n = batch.mask.shape[1]
    for name, op in OPS.items():
        whole = op(batch)
        rev = op(_take(batch, list(range(batch.b))[::-1], n + extra))
        for i in range(batch.b):
            valid = batch.mask[i].nonzero()
            width = int(valid.max()) + 1 if len(valid) else 0
            alone = op(_take(batch, [i], width))
            _assert_same(whole, i, alone, 0, f"{name}: request {i} alone")
            _assert_same(whole, i, rev, batch.b - 1 - i, f"{name}: request {i} reversed+padded")


@settings(max_examples=15, deadline=None)
@given(batches(max_b=4, max_n=20), st.integers(1, 40))
def test_quantised_batches_are_invariant(batch: Batch, extra: int) -> None:
    _check_invariance(batch, extra)


def test_float_batches_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Float inputs, wider than one alignment quantum, a batch split over several chunks."""
    monkeypatch.setattr(_common, "CACHE_BUDGET_BYTES", 300_000)
    _check_invariance(_float_batch(b=4, n=70, d=37, t=12, seed=3), extra=45)


def _traced(batch: Batch, trace: bool) -> dict[str, Selection]:
    phi = feature_map(batch.signals(cat_beta=0.5), batch.mask, bias=False)
    kw = {"slate_length": batch.slate_length, "trace": trace}
    c = batch.constraints
    return {
        "msd": msd(batch.relevance, phi, batch.mask, c, theta=0.6, **kw),
        "msd-0": msd(batch.relevance, phi, batch.mask, c, theta=0.0, **kw),
        "cover": cover(batch.relevance, phi, batch.mask, c, theta=0.5, gamma=0.5, **kw),
        "cover-0": cover(batch.relevance, phi, batch.mask, c, theta=0.0, gamma=0.3, **kw),
    }


def _cap_blocked(batch: Batch, i: int, picks: list[int], cand: int) -> bool:
    for cap in batch.constraints.caps:
        cats = cap.categories[i]
        recent = picks[max(0, len(picks) - cap.window + 1) :]
        if sum(int(cats[p] == cats[cand]) for p in recent) + 1 > cap.max_count:
            return True
    return False


@settings(max_examples=15, deadline=None)
@given(batches(max_n=10, max_t=8))
def test_trace_explains_every_step(batch: Batch) -> None:
    """Tracing changes nothing; the picked parts add up to the score; every candidate's parts
    add up to the score its step maximised, whose argmax over what no cap excluded is the pick."""
    plain = _traced(batch, trace=False)
    for name, sel in _traced(batch, trace=True).items():
        assert plain[name].trace is None
        assert torch.equal(sel.indices, plain[name].indices), name
        assert torch.equal(sel.scores, plain[name].scores), name
        assert sel.trace is not None and sel.steps is not None
        assert list(sel.trace)[:2] == ["relevance", "diversity"]
        taken = sel.indices >= 0
        total = sel.trace["relevance"] + sel.trace["diversity"]
        steps_total = sel.steps["relevance"] + sel.steps["diversity"]
        for key in list(sel.trace)[2:]:
            total = total - sel.trace[key]
            steps_total = steps_total - sel.steps[key]
        torch.testing.assert_close(total[taken], sel.scores[taken], rtol=1e-5, atol=1e-5)
        assert not total[~taken].any()
        score = sel.steps["score"]
        # float64 like DPP's (empty_selection's planes of a batch without candidates aside).
        assert score.dtype == torch.float64 or batch.mask.shape[1] == 0, name
        open_ = score > float("-inf")
        torch.testing.assert_close(steps_total[open_], score[open_], rtol=1e-12, atol=1e-12)
        for i in range(batch.b):
            picks: list[int] = []
            for t in range(sel.indices.shape[1]):
                j = int(sel.indices[i, t])
                if j < 0:
                    assert not open_[i, t].any(), name
                    continue
                excluded = sel.steps["cap_excluded"][i, t] > 0
                allowed = open_[i, t] & ~excluded
                assert int(score[i, t].masked_fill(~allowed, float("-inf")).argmax()) == j
                blocked = [_cap_blocked(batch, i, picks, c) for c in range(batch.mask.shape[1])]
                any_ok = any(open_[i, t, c] and not blocked[c] for c in range(len(blocked)))
                for c in range(len(blocked)):
                    if open_[i, t, c]:
                        assert bool(excluded[c]) == (blocked[c] and any_ok), (name, i, t, c)
                picks.append(j)


# ----------------------------------------------------------------------------------------------
# the two paths, compared


def _realistic(b: int = 5, n: int = 160, d: int = 32, seed: int = 0):  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(seed)
    counts = [n, n // 2, 7, 0, n - 13][:b]
    mask = torch.zeros((b, n), dtype=torch.bool)
    for i, c in enumerate(counts):
        mask[i, :c] = True
    relevance = torch.randn((b, n), generator=gen)
    topics = torch.randn((6, d), generator=gen)
    members = torch.randint(0, 6, (b, n), generator=gen)
    members[min(2, b - 1)] = 0  # one topic only: the cap must force steps
    emb = topics[members] + 0.5 * torch.randn((b, n, d), generator=gen)
    phi = feature_map(SimilaritySignals(embeddings=((emb, 1.0),)), mask, bias=False)
    codes = torch.stack([members, torch.randint(0, 3, (b, n), generator=gen)], 2)
    constraints = GreedyConstraints(
        (SoftSpacing(torch.rand((b, n), generator=gen) < 0.2, 4, 0.7),),
        SemanticIdPenalty(codes, 5, 1, 0.3),
        (CategoryCap(members, 3, 6),),
    )
    return relevance, phi, mask, constraints


PATH_OPS = {
    "msd": lambda r, phi, m, c, trace=False: msd(r, phi, m, c, slate_length=30, theta=0.7,
                                                 trace=trace),
    "msd-0": lambda r, phi, m, c, trace=False: msd(r, phi, m, c, slate_length=30, theta=0.0,
                                                   trace=trace),
    "cover-0.5": lambda r, phi, m, c, trace=False: cover(r, phi, m, c, slate_length=30,
                                                         theta=0.7, gamma=0.5, trace=trace),
    "cover-0.3": lambda r, phi, m, c, trace=False: cover(r, phi, m, c, slate_length=30,
                                                         theta=0.3, gamma=0.3, trace=trace),
    "cover-1": lambda r, phi, m, c, trace=False: cover(r, phi, m, c, slate_length=30,
                                                       theta=0.7, gamma=1.0, trace=trace),
}  # fmt: skip


@pytest.mark.skipif(
    _native.library() is None, reason=f"compiled loops unavailable: {_native.build_error}"
)
class TestPaths:
    @pytest.fixture(autouse=True)
    def kernel(self) -> Iterator[str]:
        """Overrides the package's both-paths fixture: these tests pick the path themselves."""
        yield "each test chooses"

    @pytest.mark.parametrize("name", sorted(PATH_OPS))
    def test_native_and_torch_agree(self, name: str) -> None:
        inputs = _realistic()
        with kernels("torch"):
            expected = PATH_OPS[name](*inputs, trace=True)
        with kernels("native"):
            got = PATH_OPS[name](*inputs, trace=True)
            plain = PATH_OPS[name](*inputs)
        assert torch.equal(got.indices, expected.indices)
        assert torch.equal(plain.indices, got.indices) and torch.equal(plain.scores, got.scores)
        assert torch.equal(got.cap_violations, expected.cap_violations)
        assert bool(got.cap_violations.any())
        torch.testing.assert_close(got.scores, expected.scores, rtol=1e-5, atol=1e-5)
        assert got.trace is not None and expected.trace is not None
        assert got.steps is not None and expected.steps is not None
        assert got.trace.keys() == expected.trace.keys()
        assert got.steps.keys() == expected.steps.keys()
        for key in got.trace:
            torch.testing.assert_close(got.trace[key], expected.trace[key], rtol=1e-5, atol=1e-5)
        live = (expected.steps["score"] > float("-inf")) & (expected.indices >= 0).unsqueeze(2)
        for key in got.steps:
            assert got.steps[key].dtype == expected.steps[key].dtype == torch.float64, key
            torch.testing.assert_close(
                got.steps[key][live], expected.steps[key][live], rtol=1e-9, atol=1e-9
            )

    def test_the_choice_routes_the_call(self, monkeypatch: pytest.MonkeyPatch) -> None:
        calls: list[str] = []
        real = _native.run_loop

        def counting(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(name)
            return real(name, *args, **kwargs)

        monkeypatch.setattr(_native, "run_loop", counting)
        inputs = _realistic(b=2, n=40)
        with kernels("torch"):
            PATH_OPS["msd"](*inputs)
            PATH_OPS["cover-0.5"](*inputs)
        assert calls == []
        with kernels("native"):
            PATH_OPS["msd"](*inputs)
            PATH_OPS["cover-0.5"](*inputs)
        assert calls == ["msd", "cover"]


# ----------------------------------------------------------------------------------------------
# torch.export


class _Exported(torch.nn.Module):
    def forward(self, relevance: torch.Tensor, phi: torch.Tensor, mask: torch.Tensor):  # type: ignore[no-untyped-def]
        a = msd(relevance, phi, mask, slate_length=3, theta=0.0)
        b = cover(relevance, phi, mask, slate_length=3, theta=0.5, gamma=0.3)
        c = cover(relevance, phi, mask, slate_length=2, theta=0.5, gamma=1.0)
        return a.indices, a.scores, b.indices, b.scores, c.indices, c.scores


def test_torch_export_traces_the_torch_path(kernel: str) -> None:
    """What `blend export` does: dynamic batch and candidate blocks; the program then gives
    the eager torch path's slates, bit for bit, on another batch and width."""
    if kernel == "native":
        pytest.skip("export traces the torch path only")
    g = torch.Generator().manual_seed(1)

    def inputs(b: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask = torch.ones((b, n), dtype=torch.bool)
        mask[0, n - 5 :] = False
        emb = torch.randn((b, n, 4), generator=g)
        phi = feature_map(SimilaritySignals(embeddings=((emb, 1.0),)), mask, bias=False)
        return torch.randn((b, n), generator=g), phi, mask

    batch = torch.export.Dim("batch", min=1, max=64)
    cands = 32 * torch.export.Dim("blocks", min=1, max=16)
    with torch.no_grad(), kernels("torch"):
        program = torch.export.export(
            _Exported(), inputs(2, 64), dynamic_shapes=({0: batch, 1: cands},) * 3, strict=False
        )
        x = inputs(3, 96)
        got = program.module()(*x)
        want = _Exported()(*x)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------
# pyversity


def _peer_inputs(seed: int, b: int = 8, n: int = 40, d: int = 16):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn((b, n, d), generator=g)
    r = torch.randn((b, n), generator=g)
    mask = torch.ones((b, n), dtype=torch.bool)
    return emb, r, mask


@pytest.mark.parametrize("theta", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("op", ["msd", "cover-0.3", "cover-0.5", "cover-1"])
def test_same_slates_as_pyversity(op: str, theta: float) -> None:
    """pyversity's msd and cover (cosine, normalising) pick our slates from the same raw
    embeddings and relevance, with diversity = 1 - theta. It computes in float32 where we
    compute in float64, so a slate may part at a near-tie; none does on these inputs."""
    pyversity = pytest.importorskip("pyversity")
    emb, r, mask = _peer_inputs(seed=int(theta * 10) + 3)
    phi = feature_map(SimilaritySignals(embeddings=((emb, 1.0),)), mask, bias=False)
    t = 12
    if op == "msd":
        ours = msd(r, phi, mask, slate_length=t, theta=theta)
    else:
        gamma = float(op.split("-")[1])
        ours = cover(r, phi, mask, slate_length=t, theta=theta, gamma=gamma)
    for i in range(emb.shape[0]):
        if op == "msd":
            peer = pyversity.msd(emb[i].numpy(), r[i].numpy(), t, diversity=1.0 - theta)
        else:
            peer = pyversity.cover(emb[i].numpy(), r[i].numpy(), t, diversity=1.0 - theta,
                                   gamma=gamma)  # fmt: skip
        assert ours.indices[i].tolist() == peer.indices.tolist(), (op, theta, i)
        # pyversity's first MSD score is lambda r_j, 0 at theta = 0; ours is r_j there.
        skip = 1 if op == "msd" and theta == 0.0 else 0
        np.testing.assert_allclose(ours.scores[i, skip:].numpy(), peer.selection_scores[skip:],
                                   rtol=1e-4, atol=1e-4)  # fmt: skip
