"""The compiled loops (ops/_native.py): chosen when asked, the same slates as the torch path on
realistic sizes, and a clean fall-back when no compiler is available."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from blendspec.ops import (
    CategoryCap,
    GreedyConstraints,
    SemanticIdPenalty,
    SoftSpacing,
    _native,
    dpp,
    kernels,
    mmr,
    ssd,
)

pytestmark = pytest.mark.skipif(
    _native.library() is None, reason=f"compiled loops unavailable: {_native.build_error}"
)


@pytest.fixture(autouse=True)
def kernel() -> Iterator[str]:
    """Overrides the package's both-paths fixture: these tests pick the path themselves."""
    yield "each test chooses"


def _batch(b: int = 6, n: int = 300, d: int = 48, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    counts = [n, n // 2, 7, 0, n - 13, 60][:b]
    mask = torch.zeros((b, n), dtype=torch.bool)
    for i, c in enumerate(counts):
        mask[i, :c] = True
    relevance = torch.randn((b, n), generator=gen)
    topics = torch.randn((8, d), generator=gen)
    members = torch.randint(0, 8, (b, n), generator=gen)
    members[min(2, b - 1)] = 0  # one topic only: the cap must force steps
    phi = topics[members] + 0.3 * torch.randn((b, n, d), generator=gen)
    phi = phi / phi.norm(dim=2, keepdim=True)
    codes = torch.stack([members, torch.randint(0, 3, (b, n), generator=gen)], 2)
    constraints = GreedyConstraints(
        (SoftSpacing(torch.rand((b, n), generator=gen) < 0.2, 4, 0.7),),
        SemanticIdPenalty(codes, 5, 1, 0.3),
        (CategoryCap(members, 3, 6),),
    )
    return relevance, phi, mask, constraints


OPERATORS = {
    "ssd": lambda r, phi, m, c, trace=False: ssd(
        r, torch.cat([phi, torch.ones_like(phi[..., :1])], 2), m, c, slate_length=40,
        window=8, theta=0.6, gamma=1.0, trace=trace,
    ),
    "ssd-volume": lambda r, phi, m, c, trace=False: ssd(
        r, torch.cat([phi, torch.ones_like(phi[..., :1])], 2), m, c, slate_length=40,
        window=5, theta=0.5, gamma=1.0, variant="volume", trace=trace,
    ),
    "dpp": lambda r, phi, m, c, trace=False: dpp(
        r, phi, m, c, slate_length=40, alpha=1.0, trace=trace
    ),
    "dpp-window": lambda r, phi, m, c, trace=False: dpp(
        r, phi, m, c, slate_length=40, alpha=1.0, window=6, trace=trace
    ),
    "dpp-stop": lambda r, phi, m, c, trace=False: dpp(
        r, phi[..., :4], m, c, slate_length=40, alpha=0.5, epsilon=1e-3, trace=trace
    ),
    "mmr": lambda r, phi, m, c, trace=False: mmr(r, phi, m, c, slate_length=40, lam=0.7, trace=trace),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_native_and_torch_pick_the_same_slates(name: str) -> None:
    inputs = _batch()
    with kernels("torch"):
        expected = OPERATORS[name](*inputs)
    with kernels("native"):
        got = OPERATORS[name](*inputs)
    assert torch.equal(got.indices, expected.indices)
    assert torch.equal(got.cap_violations, expected.cap_violations)
    assert torch.equal(got.early_stops, expected.early_stops)
    torch.testing.assert_close(got.scores, expected.scores, rtol=1e-5, atol=1e-5)
    if name == "dpp-stop":
        assert bool(got.early_stops.any())
    assert bool(got.cap_violations.any())


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_native_trace_matches_the_torch_trace(name: str) -> None:
    inputs = _batch(b=3, n=90)
    with kernels("torch"):
        expected = OPERATORS[name](*inputs, trace=True)
    with kernels("native"):
        got = OPERATORS[name](*inputs, trace=True)
    assert got.trace is not None and expected.trace is not None
    assert got.steps is not None and expected.steps is not None
    assert got.trace.keys() == expected.trace.keys()
    assert got.steps.keys() == expected.steps.keys()
    for key in got.trace:
        torch.testing.assert_close(got.trace[key], expected.trace[key], rtol=1e-5, atol=1e-5)
    # Every candidate a step could take, at every step that took one (a taken candidate's
    # conditional variance is rounding noise, and past the end of a slate nothing is compared).
    live = (expected.steps["score"] > float("-inf")) & (expected.indices >= 0).unsqueeze(2)
    for key in got.steps:
        assert got.steps[key].dtype == expected.steps[key].dtype, key
        torch.testing.assert_close(
            got.steps[key][live], expected.steps[key][live], rtol=1e-5, atol=1e-5
        )
    assert torch.equal(got.steps["score"] > float("-inf"), expected.steps["score"] > float("-inf"))


def test_the_choice_routes_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = _native.run_loop

    def counting(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(_native, "run_loop", counting)
    inputs = _batch(b=2, n=40)
    with kernels("torch"):
        for op in ("ssd", "dpp", "mmr"):
            OPERATORS[op](*inputs)
    assert calls == []
    with kernels("native"):
        for op in ("ssd", "dpp", "mmr"):
            OPERATORS[op](*inputs)
    assert calls == ["ssd", "dpp", "mmr"]
    with pytest.raises(ValueError, match="unknown kernels 'gpu'"), kernels("gpu"):  # type: ignore[arg-type]
        pass


def test_without_a_compiler_the_torch_path_runs(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    inputs = _batch(b=2, n=40)
    with kernels("torch"):
        expected = OPERATORS["ssd"](*inputs)
    monkeypatch.setenv("BLENDSPEC_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(_native, "_library", None)
    monkeypatch.setattr(_native, "_tried", False)
    monkeypatch.setattr(_native, "build_error", None)
    got = OPERATORS["ssd"](*inputs)
    assert _native.library() is None
    assert "no-such-compiler" in (_native.build_error or "")
    assert torch.equal(got.indices, expected.indices)
    assert torch.equal(got.scores, expected.scores)  # the torch path itself, bit for bit


def test_a_compiler_without_openmp_still_builds_the_loops(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """Apple's clang has no -fopenmp: the build retries without it (one request at a time)."""
    import shutil

    real = shutil.which("cc") or shutil.which("gcc")
    fake = tmp_path / "cc-without-openmp"
    fake.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do [ "$a" = -fopenmp ] && { echo "unsupported: -fopenmp" >&2; exit 1; }; done\n'
        f'exec {real} "$@"\n'
    )
    fake.chmod(0o755)
    inputs = _batch(b=3, n=60)
    with kernels("native"):
        expected = OPERATORS["dpp"](*inputs)
    monkeypatch.setenv("BLENDSPEC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.setattr(_native, "_library", None)
    monkeypatch.setattr(_native, "_tried", False)
    monkeypatch.setattr(_native, "build_error", None)
    assert _native.library() is not None, _native.build_error
    with kernels("native"):
        got = OPERATORS["dpp"](*inputs)
    assert torch.equal(got.indices, expected.indices)
    assert torch.equal(got.scores, expected.scores)  # the same code, one thread
