"""The greedy loops as one `torch.while_loop` when exported (issue 15, part 1).

Under torch.export every selector runs `blendspec/ops/loop.py`'s loop form: one while_loop node
whose body holds one step, so the exported graph does not grow with the slate. The checks:

* the loop form follows the eager torch path bit for bit (indices, scores, cap violations, early
  stops) on the adversarial batches of tests/ops (exact ties, duplicates, NaN padding) for every
  operator and every mix of constraint kinds; run in eager mode (`loop.loop_form()`, the same body
  in a Python loop), so hundreds of cases cost no export;
* the exported program gives the eager torch path's bits for every operator, with no constraint
  and with every kind, on batches and widths other than the traced ones;
* the exported graph of a spec has as many nodes at T=5 as at T=40 (top graph and loop bodies);
* a constraint kind without a loop form fails with `NoLoopForm`, naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from blendspec.ops import (
    CategoryCap,
    GreedyConstraints,
    Selection,
    SemanticIdPenalty,
    SimilaritySignals,
    SoftSpacing,
    dpp,
    feature_map,
    greedy_relevance,
    kernels,
    loop,
    mmr,
    ssd,
)
from blendspec.ops.constraints import (
    CarriedConstraint,
    Constraint,
    NoLoopForm,
    RunningConstraint,
    padded,
)
from blendspec.ops.cover import cover
from blendspec.ops.msd import msd

from .ops.helpers import Batch, batches

Op = Callable[[Tensor, Tensor, Tensor, GreedyConstraints | None, int], Selection]
"""(relevance, embeddings [B, N, D], mask, constraints, slate_length) -> Selection"""


def _phi(emb: Tensor, mask: Tensor, bias: bool) -> Tensor:
    return feature_map(SimilaritySignals(embeddings=((emb, 1.0),)), mask, bias=bias)


OPS: dict[str, Op] = {
    "none": lambda r, e, m, c, t: greedy_relevance(r, m, c, slate_length=t),
    "ssd": lambda r, e, m, c, t: ssd(
        r, _phi(e, m, True), m, c, slate_length=t, window=3, theta=0.6, gamma=1.3
    ),
    "ssd_theta0": lambda r, e, m, c, t: ssd(
        r, _phi(e, m, True), m, c, slate_length=t, window=20, theta=0.0, gamma=1.0
    ),
    "ssd_volume": lambda r, e, m, c, t: ssd(
        r,
        _phi(e, m, True),
        m,
        c,
        slate_length=t,
        window=2,
        theta=0.6,
        gamma=1.3,
        variant="volume",
        epsilon=0.0,
    ),
    "ssd_relevance": lambda r, e, m, c, t: ssd(
        r, _phi(e, m, True), m, c, slate_length=t, window=3, theta=1.0, gamma=1.0
    ),
    "dpp": lambda r, e, m, c, t: dpp(r, _phi(e, m, False), m, c, slate_length=t, alpha=0.8),
    "dpp_stop": lambda r, e, m, c, t: dpp(
        r, _phi(e, m, False), m, c, slate_length=t, alpha=0.8, epsilon=0.2
    ),
    "dpp_window": lambda r, e, m, c, t: dpp(
        r, _phi(e, m, False), m, c, slate_length=t, alpha=0.8, window=3, epsilon=0.05
    ),
    "dpp_window12": lambda r, e, m, c, t: dpp(
        r, _phi(e, m, False), m, c, slate_length=t, alpha=0.8, window=12
    ),
    "mmr": lambda r, e, m, c, t: mmr(r, _phi(e, m, False), m, c, slate_length=t, lam=0.6),
    "mmr_lam0": lambda r, e, m, c, t: mmr(r, _phi(e, m, False), m, c, slate_length=t, lam=0.0),
    "msd": lambda r, e, m, c, t: msd(r, _phi(e, m, False), m, c, slate_length=t, theta=0.4),
    "cover": lambda r, e, m, c, t: cover(
        r, _phi(e, m, False), m, c, slate_length=t, theta=0.3, gamma=0.5
    ),
    "cover_modular": lambda r, e, m, c, t: cover(
        r, _phi(e, m, False), m, c, slate_length=t, theta=0.3, gamma=1.0
    ),
}


def _assert_same(got: Selection, want: Selection, what: str) -> None:
    for field in ("indices", "scores", "cap_violations", "early_stops"):
        a, b = getattr(got, field), getattr(want, field)
        assert a.shape == b.shape and a.dtype == b.dtype, (what, field)
        assert torch.equal(a, b), (what, field)
    # Bit for bit, signed zeros included.
    assert torch.equal(got.scores.view(torch.int32), want.scores.view(torch.int32)), what


def _eager_and_loop(op: Op, *args: object) -> tuple[Selection, Selection]:
    with kernels("torch"), torch.no_grad():
        eager = op(*args)  # type: ignore[arg-type]
        with loop.loop_form():
            looped = op(*args)  # type: ignore[arg-type]
    return eager, looped


# ----------------------------------------------------------------------------------------------
# the loop form, in eager mode, against the eager loops


@settings(max_examples=40, deadline=None)
@given(batches(max_b=3, max_n=20, max_t=12), st.sampled_from(sorted(OPS)))
def test_loop_form_is_the_eager_path(batch: Batch, name: str) -> None:
    emb = batch.embeddings[0]
    eager, looped = _eager_and_loop(
        OPS[name], batch.relevance, emb, batch.mask, batch.constraints, batch.slate_length
    )
    _assert_same(looped, eager, name)


def _float_inputs(seed: int, b: int, n: int, d: int = 6) -> tuple[Tensor, ...]:
    """Realistic float inputs (no exact ties): relevance, embeddings, mask and constraint
    inputs, with requests of several sizes."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, n + 1, (b,), generator=g)
    counts[0] = n
    mask = torch.arange(n)[None, :] < counts[:, None]
    return (
        torch.randn((b, n), generator=g),
        torch.randn((b, n, d), generator=g),
        mask,
        torch.rand((b, n), generator=g) < 0.3,
        torch.randint(0, 4, (b, n), generator=g),
        torch.randint(0, 3, (b, n, 3), generator=g),
    )


def _all_kinds(flags: Tensor, cats: Tensor, codes: Tensor) -> GreedyConstraints:
    """Every built-in kind, twice where a spec may have several: one spacing with weights that
    are not exact (window 45 > 37) and caps that force steps."""
    return GreedyConstraints(
        (SoftSpacing(flags, 4, 0.4), SoftSpacing(~flags, 45, 0.2)),
        SemanticIdPenalty(codes, 5, 1, 0.3),
        (CategoryCap(cats, 1, 3), CategoryCap(flags.long(), 1, 4)),
    )


KINDS: dict[str, Callable[[Tensor, Tensor, Tensor], GreedyConstraints | None]] = {
    "no constraint": lambda f, c, k: None,
    "spacing": lambda f, c, k: GreedyConstraints((SoftSpacing(f, 4, 0.4),)),
    "semantic_id": lambda f, c, k: GreedyConstraints(semantic_id=SemanticIdPenalty(k, 5, 1, 0.3)),
    "caps": lambda f, c, k: GreedyConstraints(caps=(CategoryCap(c, 1, 3),)),
    "every kind": _all_kinds,
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("name", sorted(OPS))
def test_loop_form_on_float_inputs(name: str, kind: str) -> None:
    """Long windows (inexact spacing weights), slates past every window, forced cap steps."""
    r, emb, mask, flags, cats, codes = _float_inputs(3, b=4, n=40)
    cons = KINDS[kind](flags, cats, codes)
    for t in (1, 2, 17):
        eager, looped = _eager_and_loop(OPS[name], r, emb, mask, cons, t)
        _assert_same(looped, eager, f"{name}, {kind}, T={t}")
    if kind == "every kind":
        assert bool(eager.cap_violations.any())  # the forced steps are exercised


def test_dpp_early_stop_is_carried() -> None:
    r, emb, mask, *_ = _float_inputs(5, b=4, n=40, d=3)
    eager, looped = _eager_and_loop(OPS["dpp_stop"], r, emb, mask, None, 12)
    _assert_same(looped, eager, "dpp stop")
    assert bool(eager.early_stops.any())


def test_trace_is_eager_only() -> None:
    r, _, mask, *_ = _float_inputs(1, b=2, n=8)
    with loop.loop_form(), pytest.raises(ValueError, match="eager-only"):
        greedy_relevance(r, mask, slate_length=2, trace=True)


# ----------------------------------------------------------------------------------------------
# exported programs against the eager torch path


class _Op(torch.nn.Module):
    def __init__(self, name: str, kind: str, slate_length: int) -> None:
        super().__init__()
        self.op, self.kinds, self.slate_length = OPS[name], KINDS[kind], slate_length

    def forward(self, r, emb, mask, flags, cats, codes):  # type: ignore[no-untyped-def]
        sel = self.op(r, emb, mask, self.kinds(flags, cats, codes), self.slate_length)
        return sel.indices, sel.scores, sel.cap_violations, sel.early_stops


def _export(module: torch.nn.Module, example: tuple[Tensor, ...]) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1, max=64)
    cands = 32 * torch.export.Dim("blocks", min=1, max=16)
    with torch.no_grad(), kernels("torch"):
        return torch.export.export(
            module, example, dynamic_shapes=({0: batch, 1: cands},) * len(example), strict=False
        )


def _nodes(gm: torch.nn.Module) -> int:
    """Nodes of the top graph and of every loop body (and condition) graph."""
    return sum(len(m.graph.nodes) for _, m in gm.named_modules() if hasattr(m, "graph"))


def _while_loops(gm: torch.fx.GraphModule) -> int:
    return sum(
        1
        for _, m in gm.named_modules()
        if hasattr(m, "graph")
        for node in m.graph.nodes
        if node.target is torch.ops.higher_order.while_loop
    )


EXPORTED = [
    *((name, "every kind") for name in ("none", "ssd", "ssd_theta0", "ssd_volume", "dpp_stop",
                                        "dpp_window", "mmr", "msd", "cover")),
    *((name, "no constraint") for name in ("none", "ssd_relevance", "dpp", "mmr_lam0",
                                           "cover_modular")),
]  # fmt: skip
"""Every operator with every kind; the variants that only change a branch outside the loop's
arithmetic (the first pick's rule, no diversity update) without constraints: 14 exports."""


@pytest.mark.parametrize(("name", "kind"), EXPORTED)
def test_exported_program_is_the_eager_path(name: str, kind: str) -> None:
    module = _Op(name, kind, slate_length=9)
    program = _export(module, _float_inputs(0, b=2, n=64))
    assert _while_loops(program.graph_module) >= 1
    run = program.module()
    for seed, (b, n) in enumerate([(3, 96), (1, 32), (5, 64)]):
        inputs = _float_inputs(seed + 1, b=b, n=n)
        with torch.no_grad(), kernels("torch"):
            got = run(*inputs)
            want = module(*inputs)
        for field, a, e in zip(
            ("indices", "scores", "violations", "stops"), got, want, strict=True
        ):
            assert torch.equal(a, e), (name, kind, seed, field)


@pytest.mark.parametrize("kind", ["spacing", "semantic_id", "caps"])
def test_each_kind_exports_alone(kind: str) -> None:
    module = _Op("none", kind, slate_length=7)
    run = _export(module, _float_inputs(0, b=2, n=64)).module()
    inputs = _float_inputs(4, b=3, n=64)
    with torch.no_grad(), kernels("torch"):
        for a, e in zip(run(*inputs), module(*inputs), strict=True):
            assert torch.equal(a, e), kind


# ----------------------------------------------------------------------------------------------
# a spec: the graph does not grow with T


SPEC = """\
spec loopy
slate {T}
input p_click: score
input visual: embedding[4]
input sid: semantic_id[3]
input topic: category
input risky: flag
objective click = p_click
weight w_click = 1 in [0, 5]
utility = w_click * click
diversity {diversity}
spacing risky {{window = 4, coefficient = 0.5}}
semantic_id_penalty {{input = sid, window = 12, min_prefix = 1, coefficient = 0.3}}
cap topic {{max = 1, window = 3}}
"""


def test_graph_size_does_not_grow_with_the_slate(tmp_path: Path) -> None:
    """`blend export` of a spec with SSD and every kind of constraint: at T=5 every window (12)
    is clamped to 5, at T=40 it is 12; the same graph either way, with its loop."""
    from blendspec.serve.export import export_spec
    from blendspec.spec.loader import load_text

    diversity = "ssd {similarity = cosine(visual) + 0.5 * category(topic), window = 12}"
    counts = []
    for t in (5, 40):
        path = tmp_path / f"loopy-{t}.pt2"
        export_spec(load_text(SPEC.format(T=t, diversity=diversity), "dsl", "loopy.blend"), path)
        program = torch.export.load(str(path))
        counts.append(_nodes(program.graph_module))
        assert _while_loops(program.graph_module) >= 1
    assert counts[0] == counts[1], counts


def test_windowed_dpp_graph_does_not_grow_with_the_window() -> None:
    """DPP's window is rebuilt by an inner loop: a window clamped to 5 or 12 (and T=5 or 40)
    gives the same graph."""
    counts = []
    for t in (5, 40):
        module = _Op("dpp_window12", "every kind", slate_length=t)
        program = _export(module, _float_inputs(0, b=2, n=64))
        counts.append(_nodes(program.graph_module))
        assert _while_loops(program.graph_module) == 2  # the steps, and the window inside
    assert counts[0] == counts[1], counts


# ----------------------------------------------------------------------------------------------
# a kind without a loop form


@dataclass(frozen=True)
class Ramp(Constraint):
    """A candidate of a flagged set pays ``slope * t`` at step t (eager form only)."""

    flags: Tensor
    slope: float

    name = "ramp"
    penalizes = True

    def prepare(self, mask: Tensor, width: int) -> dict[str, Tensor]:
        return {"flags": padded(self.flags.bool(), mask, width, False).to(torch.float32)}

    def start(
        self, tensors: Mapping[str, Tensor], slate_length: int, dtype: torch.dtype
    ) -> RunningConstraint:
        return _RampState(tensors["flags"].to(dtype), self.slope)


class _RampState(RunningConstraint):
    def __init__(self, flags: Tensor, slope: float) -> None:
        self.flags, self.slope = flags, slope

    def penalty(self, t: int) -> Tensor:
        return self.flags * (self.slope * t)


@dataclass(frozen=True)
class CarriedRamp(Ramp):
    """The same kind with its loop form: it exports, with the eager form's bits."""

    def start_carried(
        self, tensors: Mapping[str, Tensor], slate_length: int, dtype: torch.dtype
    ) -> CarriedConstraint:
        return _CarriedRamp(tensors["flags"].to(dtype), self.slope)


class _CarriedRamp(CarriedConstraint):
    def __init__(self, flags: Tensor, slope: float) -> None:
        self.flags, self.slope = flags, slope

    def penalty(self, t: Tensor, carry: tuple[Tensor, ...]) -> Tensor:
        # t * slope in float64 then rounded, as the eager Python float product is.
        return self.flags * (t.to(torch.float64) * self.slope).to(self.flags.dtype)


class _RampOp(torch.nn.Module):
    def __init__(self, kind: type[Ramp]) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, r: Tensor, mask: Tensor, flags: Tensor) -> tuple[Tensor, Tensor]:
        cons = GreedyConstraints(extra=(self.kind(flags, 0.25),))
        sel = greedy_relevance(r, mask, cons, slate_length=6)
        return sel.indices, sel.scores


def test_a_kind_without_a_loop_form_is_a_named_error() -> None:
    r, _, mask, flags, *_ = _float_inputs(2, b=2, n=64)
    assert not Ramp.has_loop_form() and CarriedRamp.has_loop_form()
    with pytest.raises(NoLoopForm, match=r"ramp\[0\] \(Ramp\) has no loop form"):
        _export(_RampOp(Ramp), (r, mask, flags))
    with loop.loop_form(), pytest.raises(NoLoopForm, match="cannot be exported"):
        greedy_relevance(r, mask, GreedyConstraints(extra=(Ramp(flags, 0.5),)), slate_length=3)


def test_a_new_kind_with_a_loop_form_exports() -> None:
    module = _RampOp(CarriedRamp)
    r, _, mask, flags, *_ = _float_inputs(2, b=2, n=64)
    run = _export(module, (r, mask, flags)).module()
    r, _, mask, flags, *_ = _float_inputs(6, b=3, n=64)
    with torch.no_grad(), kernels("torch"):
        for a, e in zip(run(r, mask, flags), module(r, mask, flags), strict=True):
            assert torch.equal(a, e)


def test_a_subclass_that_changes_the_eager_form_loses_the_loop_form() -> None:
    """Like ``native``: a subclass that redefines ``start`` without ``start_carried`` would
    otherwise export its parent's arithmetic."""

    @dataclass(frozen=True)
    class Steeper(CarriedRamp):
        def start(self, tensors, slate_length, dtype):  # type: ignore[no-untyped-def]
            return _RampState(tensors["flags"].to(dtype), 2 * self.slope)

    assert CarriedRamp.has_loop_form() and not Steeper.has_loop_form()
