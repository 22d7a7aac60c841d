"""Mutated example specs only ever produce blendspec diagnostics (see tests/fuzz_specs.py)."""

from __future__ import annotations

from tests.fuzz_specs import run


def test_mutation_fuzz_only_diagnostics_escape() -> None:
    failures = run(cases=3000, seed=20261124)
    assert not failures, f"{len(failures)} escaped; first:\n{failures[0][2]}\n{failures[0][1]!r}"
