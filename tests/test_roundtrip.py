"""Property: printing a spec in either syntax and reading it back gives the same spec and text."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from pydantic import TypeAdapter
from pydantic_core import PydanticCustomError

from blendspec.spec import model as m
from blendspec.spec.diagnostics import Source
from blendspec.spec.emit import format_expr, to_dsl, to_yaml
from blendspec.spec.loader import build_model
from blendspec.spec.syntax import parse_dsl, parse_expression, parse_yaml
from tests.strategies import expressions, specs

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _read(text: str, syntax: str) -> m.Spec:
    source = Source(f"<{syntax}>", text)
    document = parse_dsl(source) if syntax == "dsl" else parse_yaml(source)
    return build_model(document)


@SETTINGS
@given(expressions)
def test_expression_print_parse_identity(expr: m.Expr) -> None:
    text = format_expr(expr)
    again = m.Spec.model_validate(
        {"name": "x", "slate": {"length": 1}, "inputs": {"a": "score"}, "utility": text}
    ).utility
    assert again == expr, text
    assert format_expr(TypeAdapter(m.Expr).validate_python(parse_expression(text))) == text


@SETTINGS
@given(specs)
def test_dsl_round_trip(spec: m.Spec) -> None:
    text = to_dsl(spec)
    again = _read(text, "dsl")
    assert again == spec, text
    assert to_dsl(again) == text


@SETTINGS
@given(specs)
def test_yaml_round_trip_and_conversion(spec: m.Spec) -> None:
    text = to_yaml(spec)
    again = _read(text, "yaml")
    assert again == spec, text
    assert to_yaml(again) == text
    assert _read(to_dsl(again), "dsl") == spec


def test_text_with_a_trailing_newline_is_quoted_not_a_bare_name() -> None:
    """`$` also matches before a final newline: names and bare DSL words must match whole."""
    from blendspec.spec.emit import _dsl_value

    assert _dsl_value("A\n") == '"A\\n"'
    assert _dsl_value("A") == "A"
    with pytest.raises(PydanticCustomError, match="not a valid name"):
        m._check_name("p\n")
