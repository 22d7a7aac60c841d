"""Shared test helpers: paths, and golden files that update with BLENDSPEC_UPDATE_GOLDEN=1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "specs"
GOLDEN = Path(__file__).resolve().parent / "golden"
# `pytest --hypothesis-profile=long` for a deeper search than CI's.
settings.register_profile("default", max_examples=150)
settings.register_profile("long", max_examples=3000)
# CI must not fail on the luck of the draw: the same examples every run (explore with "long").
settings.register_profile("ci", max_examples=150, derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

EXAMPLE_SPECS = sorted(p for p in SPECS.iterdir() if p.suffix in (".blend", ".yaml"))


def assert_golden(path: Path, actual: str) -> None:
    """Compare with a checked-in expected output; regenerate with BLENDSPEC_UPDATE_GOLDEN=1."""
    if os.environ.get("BLENDSPEC_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"missing golden file {path}; run with BLENDSPEC_UPDATE_GOLDEN=1 to create it")
    assert actual == path.read_text(encoding="utf-8"), f"output differs from {path}"
