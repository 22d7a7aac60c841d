"""Mutated example specs only ever produce blendspec diagnostics, and what validates passes the
oracles: finite numbers, exact conversion both ways, a clean forward pass (see tests/fuzz_specs.py).
"""

from __future__ import annotations

from collections import Counter

from blendspec.spec.loader import load_spec
from tests.fuzz_specs import SPECS, non_finite_numbers, run


def test_mutation_fuzz_only_diagnostics_escape() -> None:
    outcomes: Counter[str] = Counter()
    failures = run(cases=3000, seed=20261124, outcomes=outcomes)
    assert not failures, f"{len(failures)} escaped; first:\n{failures[0][2]}\n{failures[0][1]!r}"
    # The oracles only mean something if enough mutants get past validation and run.
    assert outcomes["validated"] + outcomes["ran"] >= 100, outcomes
    assert outcomes["ran"] >= 10, outcomes


def test_the_finite_oracle_sees_a_non_finite_number() -> None:
    spec = load_spec(SPECS / "homefeed.blend").spec
    assert non_finite_numbers(spec) == []
    diversity = spec.diversity.model_copy(update={"gamma": float("inf")})  # not validated
    assert non_finite_numbers(spec.model_copy(update={"diversity": diversity})) == [
        "spec.diversity.gamma"
    ]
