"""Rendered diagnostics for broken specs, pinned as golden files, and the same mistake reported
with the same code at the same token in YAML and in the DSL."""

from __future__ import annotations

from pathlib import Path

import pytest

from blendspec.spec.diagnostics import Diagnostic, Source, SpecError, render_text
from blendspec.spec.loader import load_source, read_source
from tests.conftest import GOLDEN, REPO, assert_golden

CASES = sorted(p for p in (GOLDEN / "errors").iterdir() if p.suffix in (".blend", ".yaml"))
PAIRED = sorted(
    {p.stem for p in CASES if p.with_suffix(".blend").exists() and p.with_suffix(".yaml").exists()}
)


def diagnose(path: Path) -> tuple[Source, tuple[Diagnostic, ...]]:
    """Everything validation says about a file, under a stable, repo-relative name."""
    source, syntax = read_source(path)
    source = Source(str(path.relative_to(REPO)), source.text)
    try:
        loaded = load_source(source, syntax, base_dir=path.parent)
    except SpecError as error:
        return error.source, error.diagnostics
    return source, loaded.warnings


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.name)
def test_rendering_golden(path: Path) -> None:
    source, diagnostics = diagnose(path)
    assert diagnostics, "a broken spec must produce a diagnostic"
    rendered = render_text(source, diagnostics) + "\n"
    assert_golden(path.with_name(path.name + ".txt"), rendered)


def _underlined(source: Source, diagnostic: Diagnostic) -> str:
    span = diagnostic.span
    assert span is not None
    return source.line(span.line)[span.column - 1 : span.end_column - 1]


@pytest.mark.parametrize("stem", PAIRED)
def test_same_mistake_same_code_same_token(stem: str) -> None:
    errors = GOLDEN / "errors"
    dsl_source, dsl = diagnose(errors / f"{stem}.blend")
    yaml_source, yaml = diagnose(errors / f"{stem}.yaml")
    assert [d.code for d in dsl] == [d.code for d in yaml]
    assert [d.message for d in dsl if d.code != "E103"] == [
        d.message for d in yaml if d.code != "E103"
    ]
    for left, right in zip(dsl, yaml, strict=True):
        assert _underlined(dsl_source, left) == _underlined(yaml_source, right), left.code


def test_every_case_has_an_error_or_a_warning_with_a_position() -> None:
    for path in CASES:
        _, diagnostics = diagnose(path)
        assert all(d.span is not None for d in diagnostics), path.name
