"""A constraint kind defined outside the package runs in every greedy loop, on the torch path.

The toy kind ``Ramp`` (a candidate of a flagged set pays ``slope * t`` at step t) is what a new
kind looks like: one class, passed in ``GreedyConstraints.extra``, with nothing edited in the
package. The compiled loop (greedy.c) does not know it, so a call that carries it must run on the
torch path (loudly with ``BLENDSPEC_DEBUG``), while the built-in kinds keep the compiled loop.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from blendspec.ops import (
    CategoryCap,
    GreedyConstraints,
    SemanticIdPenalty,
    SoftSpacing,
    _native,
    dpp,
    feature_map,
    greedy_relevance,
    kernels,
    mmr,
    ssd,
)
from blendspec.ops._inputs import prepare
from blendspec.ops.constraints import Constraint, RunningConstraint, padded

from . import reference as ref
from .helpers import Batch, assert_follows, batches, kernel_of, ref_constraints, signatures

# --------------------------------------------------------------------------------------------
# the toy kind and its reference


@dataclass(frozen=True)
class Ramp(Constraint):
    """At step t a candidate in the flagged set pays ``slope * t``."""

    flags: Tensor  # [B, N] bool
    slope: float

    name = "ramp"
    penalizes = True

    def validate(self, shape: tuple[int, int], label: str) -> None:
        if tuple(self.flags.shape) != shape:
            raise ValueError(f"{label}.flags must be {shape}, got {tuple(self.flags.shape)}")

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


def ramp_penalty(flags: np.ndarray, slope: float, slate: list[int], i: int) -> float:
    """The reference: slope * t for a flagged candidate at step t = len(slate)."""
    return slope * len(slate) if flags[i] else 0.0


def _with_ramp(batch: Batch, slope: float) -> GreedyConstraints:
    c = batch.constraints
    return GreedyConstraints(c.spacing, c.semantic_id, c.caps, (Ramp(batch.flags[1], slope),))


def _follow(
    mp: pytest.MonkeyPatch, batch: Batch, slope: float, i: int
) -> Callable[..., list[bytes]]:
    """Make the references add request i's ramp to every candidate's penalties; returns the
    duplicate signatures with the ramp's flag added (a flag makes two candidates differ)."""
    flags = batch.flags[1][i].numpy()
    total, magnitude = ref.penalty_total, ref.penalty_magnitude
    mp.setattr(
        ref,
        "penalty_total",
        lambda c, slate, k: math.fsum([total(c, slate, k), ramp_penalty(flags, slope, slate, k)]),
    )
    mp.setattr(ref, "penalty_magnitude", lambda c: magnitude(c) + abs(slope) * batch.slate_length)

    def same(phi: Tensor | None = None) -> list[bytes]:
        return [s + bytes([int(f)]) for s, f in zip(signatures(batch, i, phi), flags, strict=True)]

    return same


SLOPES = st.sampled_from([-0.5, 0.25, 1.5])

# --------------------------------------------------------------------------------------------
# the new kind follows its reference in every operator


@settings(max_examples=80, deadline=None)
@given(batches(), SLOPES)
def test_a_new_kind_in_greedy_relevance(batch: Batch, slope: float) -> None:
    sel = greedy_relevance(
        batch.relevance, batch.mask, _with_ramp(batch, slope), slate_length=batch.slate_length
    )
    for i in range(batch.b):
        valid = batch.mask[i].numpy()
        r = np.where(valid, batch.relevance[i].numpy(), 0.0)
        cons = ref_constraints(batch.constraints, i)
        with pytest.MonkeyPatch.context() as mp:
            same = _follow(mp, batch, slope, i)

            def run(follow, r=r, valid=valid, cons=cons):
                return ref.greedy_relevance(r, valid, cons, batch.slate_length, follow)

            assert_follows(sel, i, run, batch.slate_length, same())


@settings(max_examples=60, deadline=None)
@given(batches(), SLOPES, st.sampled_from([0.0, 0.6]), st.integers(1, 4))
def test_a_new_kind_in_ssd(batch: Batch, slope: float, theta: float, window: int) -> None:
    phi = feature_map(batch.signals(cat_beta=0.5), batch.mask, bias=True)
    sel = ssd(
        batch.relevance, phi, batch.mask, _with_ramp(batch, slope),
        slate_length=batch.slate_length, window=window, theta=theta, gamma=1.0,
    )  # fmt: skip
    for i in range(batch.b):
        valid = batch.mask[i].numpy()
        r = np.where(valid, batch.relevance[i].numpy(), 0.0)
        cons, x = ref_constraints(batch.constraints, i), phi[i].double().numpy()
        with pytest.MonkeyPatch.context() as mp:
            same = _follow(mp, batch, slope, i)

            def run(follow, r=r, valid=valid, cons=cons, x=x):
                return ref.ssd(
                    r, x, valid, cons, batch.slate_length, window, theta, 1.0, follow=follow
                )

            assert_follows(sel, i, run, batch.slate_length, same(phi))


@settings(max_examples=60, deadline=None)
@given(batches(), SLOPES, st.sampled_from([None, 2]))
def test_a_new_kind_in_dpp(batch: Batch, slope: float, window: int | None) -> None:
    phi = feature_map(batch.signals(cat_beta=1.0), batch.mask, bias=False)
    sel = dpp(
        batch.relevance, phi, batch.mask, _with_ramp(batch, slope),
        slate_length=batch.slate_length, alpha=1.0, window=window, epsilon=1e-3,
    )  # fmt: skip
    for i in range(batch.b):
        valid = batch.mask[i].numpy()
        r = np.where(valid, batch.relevance[i].numpy(), 0.0)
        cons, s = ref_constraints(batch.constraints, i), kernel_of(phi[i], valid)
        result = {}
        with pytest.MonkeyPatch.context() as mp:
            same = _follow(mp, batch, slope, i)

            def run(follow, r=r, valid=valid, cons=cons, s=s, result=result):
                result["r"] = ref.dpp(
                    r, s, valid, cons, batch.slate_length, 1.0, window, 1e-3, follow
                )
                return result["r"]

            assert_follows(sel, i, run, batch.slate_length, same(phi))
        assert bool(sel.early_stops[i]) == result["r"].early_stop


@settings(max_examples=60, deadline=None)
@given(batches(), SLOPES, st.sampled_from([0.0, 0.7]))
def test_a_new_kind_in_mmr(batch: Batch, slope: float, lam: float) -> None:
    phi = feature_map(batch.signals(cat_beta=0.7), batch.mask, bias=False)
    sel = mmr(
        batch.relevance, phi, batch.mask, _with_ramp(batch, slope),
        slate_length=batch.slate_length, lam=lam,
    )  # fmt: skip
    for i in range(batch.b):
        valid = batch.mask[i].numpy()
        r = np.where(valid, batch.relevance[i].numpy(), 0.0)
        cons, s = ref_constraints(batch.constraints, i), kernel_of(phi[i], valid)
        with pytest.MonkeyPatch.context() as mp:
            same = _follow(mp, batch, slope, i)

            def run(follow, r=r, valid=valid, cons=cons, s=s):
                return ref.mmr(r, s, valid, cons, batch.slate_length, lam, follow)

            assert_follows(sel, i, run, batch.slate_length, same(phi))


def test_a_new_kind_by_hand() -> None:
    """The ramp reorders the slate, is traced under its label after the built-in penalties, and
    names its field when its input does not fit."""
    r = torch.tensor([[1.0, 0.9, 0.8, 0.7]])
    mask = torch.ones((1, 4), dtype=torch.bool)
    flags = torch.tensor([[True, True, False, False]])
    spacing = SoftSpacing(torch.zeros((1, 4), dtype=torch.bool), 2, 0.3)
    cons = GreedyConstraints(spacing=(spacing,), extra=(Ramp(flags, 0.5),))
    sel = greedy_relevance(r, mask, cons, slate_length=4, trace=True)
    # t=1: flagged pay 0.5 (1 -> 0.4 < 0.8); t=2: 1.0 (1 -> -0.1 < 0.7); t=3: 1 is all that's left.
    assert sel.indices.tolist() == [[0, 2, 3, 1]]
    assert sel.trace is not None and list(sel.trace) == ["relevance", "spacing[0]", "ramp[0]"]
    assert sel.trace["ramp[0]"].tolist() == [[0.0, 0.0, 0.0, 1.5]]
    assert greedy_relevance(r, mask, None, slate_length=4).indices.tolist() == [[0, 1, 2, 3]]
    bad = GreedyConstraints(extra=(Ramp(flags[:, :3], 0.5),))
    with pytest.raises(ValueError, match=r"ramp\[0\]\.flags must be \(1, 4\)"):
        greedy_relevance(r, mask, bad, slate_length=2)


def test_the_struct_keeps_kinds_in_their_places() -> None:
    flags = torch.ones((1, 3), dtype=torch.bool)
    spacing = SoftSpacing(flags, 2, 0.3)
    with pytest.raises(TypeError, match=r"extra\[0\] is a SoftSpacing"):
        GreedyConstraints(extra=(spacing,))
    with pytest.raises(TypeError, match=r"spacing\[0\] must be a SoftSpacing, got Ramp"):
        GreedyConstraints(spacing=(Ramp(flags, 1.0),))  # type: ignore[arg-type]

    @dataclass(frozen=True)
    class Impostor(Ramp):
        name = "spacing"

    with pytest.raises(ValueError, match="two constraints are labelled 'spacing\\[0\\]'"):
        GreedyConstraints(spacing=(spacing,), extra=(Impostor(flags, 1.0),))
    cap = CategoryCap(torch.zeros((1, 3), dtype=torch.long), 1, 2)
    ramps = (Ramp(flags, 1.0), Ramp(flags, 2.0))
    sorted_ = GreedyConstraints.of([ramps[0], cap, spacing, ramps[1]])
    assert sorted_ == GreedyConstraints((spacing,), None, (cap,), ramps)
    labels = [label for label, _ in sorted_.items]
    assert labels == ["spacing[0]", "caps[0]", "ramp[0]", "ramp[1]"]


# --------------------------------------------------------------------------------------------
# which loop runs the call

native_only = pytest.mark.skipif(
    _native.library() is None, reason=f"compiled loops unavailable: {_native.build_error}"
)


def _batch(b: int = 3, n: int = 40, d: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones((b, n), dtype=torch.bool)
    mask[1, n // 2 :] = False
    relevance = torch.randn((b, n), generator=gen)
    phi = torch.nn.functional.normalize(torch.randn((b, n, d), generator=gen), dim=2)
    cats = torch.randint(0, 4, (b, n), generator=gen)
    codes = torch.stack([cats, torch.randint(0, 3, (b, n), generator=gen)], 2)
    flags = torch.rand((b, n), generator=gen) < 0.3
    built_in = GreedyConstraints(
        (SoftSpacing(flags, 3, 0.5),),
        SemanticIdPenalty(codes, 4, 1, 0.3),
        (CategoryCap(cats, 2, 5),),
    )
    return relevance, phi, mask, built_in, flags


OPERATORS = {
    "ssd": lambda r, phi, m, c: ssd(
        r, torch.cat([phi, torch.ones_like(phi[..., :1])], 2), m, c, slate_length=12,
        window=4, theta=0.6, gamma=1.0, trace=True,
    ),
    "dpp": lambda r, phi, m, c: dpp(r, phi, m, c, slate_length=12, alpha=1.0, trace=True),
    "mmr": lambda r, phi, m, c: mmr(r, phi, m, c, slate_length=12, lam=0.7, trace=True),
}  # fmt: skip


@pytest.fixture
def loops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the compiled loops called (``run_loop`` counts them, as in test_native)."""
    calls: list[str] = []
    real = _native.run_loop

    def counting(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(_native, "run_loop", counting)
    return calls


@native_only
def test_a_new_kind_takes_the_torch_path(loops: list[str], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    r, phi, mask, built_in, flags = _batch()
    with_ramp = GreedyConstraints(
        built_in.spacing, built_in.semantic_id, built_in.caps, (Ramp(flags, 0.25),)
    )
    monkeypatch.delenv("BLENDSPEC_DEBUG", raising=False)
    with kernels("native"):
        for op in OPERATORS.values():
            op(r, phi, mask, built_in)
    assert loops == ["ssd", "dpp", "mmr"]  # the built-in kinds keep the compiled loop
    loops.clear()
    for name, op in OPERATORS.items():
        with kernels("torch"):
            expected = op(r, phi, mask, with_ramp)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # quiet without BLENDSPEC_DEBUG
            with kernels("native"):
                got = op(r, phi, mask, with_ramp)
        # The torch path itself, bit for bit, ramp included.
        assert torch.equal(got.indices, expected.indices), name
        assert torch.equal(got.scores, expected.scores), name
        assert got.trace is not None and expected.trace is not None
        assert list(got.trace)[-1] == "ramp[0]", name
        assert torch.equal(got.trace["ramp[0]"], expected.trace["ramp[0]"]), name
    assert loops == []


@native_only
def test_the_fallback_warns_in_debug(loops: list[str], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    r, phi, mask, built_in, flags = _batch()
    monkeypatch.setenv("BLENDSPEC_DEBUG", "1")
    with kernels("native"):
        for op in OPERATORS.values():
            with pytest.warns(RuntimeWarning, match="Ramp.*torch path"):
                op(r, phi, mask, GreedyConstraints(extra=(Ramp(flags, 1.0),)))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the built-in kinds: the compiled loop, no warning
            for op in OPERATORS.values():
                op(r, phi, mask, built_in)
    assert loops == ["ssd", "dpp", "mmr"]


@native_only
def test_a_subclass_of_a_built_in_kind_is_not_native(loops: list[str]) -> None:
    """greedy.c computes the parent's formula: a subclass must say ``native = True`` itself."""

    @dataclass(frozen=True)
    class Stronger(SoftSpacing):
        def start(self, tensors, slate_length, dtype):  # type: ignore[no-untyped-def]
            return super().start(tensors, slate_length, dtype)

    assert SoftSpacing.native and not Stronger.native
    r, phi, mask, _, flags = _batch()
    cons = GreedyConstraints((Stronger(flags, 3, 0.5),))
    with kernels("native"):
        OPERATORS["mmr"](r, phi, mask, cons)
    assert loops == []


@native_only
def test_the_compiled_loop_refuses_an_unknown_kind_it_is_handed() -> None:
    """An operator that skipped ``usable`` still cannot run a kind greedy.c would ignore."""
    r, phi, mask, _, flags = _batch()
    p = prepare(r, mask, GreedyConstraints(extra=(Ramp(flags, 1.0),)), 5, phi)
    with pytest.raises(TypeError, match="constraints"):
        _native.usable(r, phi)  # type: ignore[call-arg]
    assert not _native.usable(r, phi, constraints=p.constraints)
    with pytest.raises(AssertionError, match=r"does not know ramp\[0\] \(Ramp\)"):
        _native.mmr(p.valid, p.relevance, phi, p.constraints, 5, 0.7)


def test_the_built_in_kinds_are_the_ones_the_compiled_loop_lays_out() -> None:
    native = {k for k in (SoftSpacing, SemanticIdPenalty, CategoryCap, Ramp) if k.native}
    assert native == set(_native._KINDS)
