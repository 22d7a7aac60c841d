"""The bundled example specs: valid, canonical, and the same spec in both syntaxes."""

from __future__ import annotations

from pathlib import Path

import pytest

from blendspec.compiler.compile import compile_graph
from blendspec.spec.emit import to_dsl, to_yaml
from blendspec.spec.loader import load_spec, load_text
from tests.conftest import EXAMPLE_SPECS, GOLDEN, SPECS, assert_golden

PAIRS = sorted({p.stem for p in EXAMPLE_SPECS})


def test_there_are_examples_in_both_syntaxes() -> None:
    assert {"homefeed", "ads"} <= set(PAIRS)
    for stem in PAIRS:
        assert (SPECS / f"{stem}.blend").exists() and (SPECS / f"{stem}.yaml").exists()


@pytest.mark.parametrize("path", EXAMPLE_SPECS, ids=lambda p: p.name)
def test_example_is_valid_and_canonical(path: Path) -> None:
    loaded = load_spec(path)
    assert loaded.warnings == ()
    emit = to_yaml if path.suffix == ".yaml" else to_dsl
    assert emit(loaded.spec, loaded.document) == path.read_text(), "not in canonical form"


@pytest.mark.parametrize("stem", PAIRS)
def test_yaml_and_dsl_mean_the_same(stem: str) -> None:
    dsl = load_spec(SPECS / f"{stem}.blend")
    yaml = load_spec(SPECS / f"{stem}.yaml")
    assert dsl.spec == yaml.spec
    dsl_graph, yaml_graph = compile_graph(dsl), compile_graph(yaml)
    strip = _without_positions
    assert strip(dsl_graph.to_text()) == strip(yaml_graph.to_text())


def _without_positions(dump: str) -> str:
    return "\n".join(line.split("  #")[0] for line in dump.splitlines()[1:])


@pytest.mark.parametrize("stem", PAIRS)
def test_conversion_round_trip_is_the_identity(stem: str) -> None:
    source = (SPECS / f"{stem}.blend").read_text()
    loaded = load_text(source, "dsl", f"{stem}.blend")
    as_yaml = to_yaml(loaded.spec, loaded.document)
    back = load_text(as_yaml, "yaml", f"{stem}.yaml")
    assert back.spec == loaded.spec
    assert to_dsl(back.spec, back.document) == source


@pytest.mark.parametrize("path", EXAMPLE_SPECS, ids=lambda p: p.name)
def test_graph_dump_golden(path: Path) -> None:
    syntax = "yaml" if path.suffix == ".yaml" else "dsl"
    graph = compile_graph(load_text(path.read_text(), syntax, f"specs/{path.name}"))
    assert graph.lint() == []
    assert_golden(GOLDEN / "graphs" / f"{path.name}.txt", graph.to_text())


@pytest.mark.parametrize("path", EXAMPLE_SPECS, ids=lambda p: p.name)
def test_fmt_is_idempotent(path: Path) -> None:
    loaded = load_spec(path)
    emit = to_yaml if path.suffix == ".yaml" else to_dsl
    once = emit(loaded.spec, loaded.document)
    again = load_text(once, loaded.document.syntax)
    assert emit(again.spec, again.document) == once


def test_readme_spec_is_valid() -> None:
    readme = (SPECS.parent / "README.md").read_text()
    block = readme.split("```\nspec homefeed", 1)[1].split("```", 1)[0]
    loaded = load_text("spec homefeed" + block, "dsl", "README.md")
    assert loaded.warnings == ()


def test_every_diagnostic_code_is_documented() -> None:
    from blendspec.spec.diagnostics import CODES

    documented = (SPECS.parent / "docs" / "errors.md").read_text()
    for code, title in CODES.items():
        assert f"## {code} — {title}" in documented, code


def test_every_error_code_is_produced_somewhere() -> None:
    """No dead codes: each registered code is raised by some module of the package."""
    from blendspec.spec.diagnostics import CODES

    package = SPECS.parent / "blendspec"
    source = "".join(p.read_text() for p in package.rglob("*.py") if p.name != "diagnostics.py")
    for code in CODES:
        assert f'"{code}"' in source, code
