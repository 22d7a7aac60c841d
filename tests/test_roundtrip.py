"""Property: printing a spec in either syntax and reading it back gives the same spec and text;
formatting a spec that does not validate is a fixed point that keeps its comments and meaning."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from pydantic_core import PydanticCustomError

from blendspec.spec import model as m
from blendspec.spec.diagnostics import Source, SpecError
from blendspec.spec.emit import format_document, format_expr, to_dsl, to_yaml
from blendspec.spec.loader import build_model, load_text
from blendspec.spec.syntax import parse_document, parse_dsl, parse_expression, parse_yaml
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


# ---------------------------------------------------------------- specs that do not validate

_DSL_BREAKS: dict[str, Callable[[str], str]] = {
    "slate out of range": lambda t: re.sub(r"(?m)^slate \d+$", "slate 0", t),
    "unknown input type": lambda t: t + "input broken_input1: embeding[3]\n",
    "unknown field in an item": lambda t: t + "cap broken_cap1 {max = 2, window = 3, bogus = 1}\n",
    "broken weight": lambda t: t + "weight broken_weight1 = 1 in [0, 1] {sgn = positive}\n",
    "infinite number": lambda t: t + "objective broken_obj1 = 1e400 * broken_ref1\n",
    "no utility": lambda t: re.sub(r"(?m)^utility = .*\n", "", t),
    "unknown algorithm": lambda t: re.sub(r"(?m)^diversity \w+", "diversity ssdx", t),
}
_YAML_BREAKS: dict[str, Callable[[str], str]] = {
    "slate out of range": lambda t: re.sub(r"(?m)^slate: .*$", "slate: {length: 0}", t),
    "unknown input type": lambda t: t.replace(
        "inputs:\n", "inputs:\n  broken_input1: embeding[3]\n"
    ),
    "unknown section": lambda t: t + "broken_section1: {a: 1, b: [x, true, null]}\n",
    "infinite number": lambda t: re.sub(r"(?m)^utility: .*$", "utility: 1e400 * broken_ref1", t),
    "no utility": lambda t: re.sub(r"(?m)^utility: .*\n", "", t),
    "unknown algorithm": lambda t: re.sub(r"(?m)^  algorithm: \w+", "  algorithm: ssdx", t),
}


def _commented(text: str) -> str:
    """Every line with a comment after it, and every third line with one before it."""
    out = []
    for i, line in enumerate(text.splitlines()):
        if i % 3 == 0:
            out.append(f"# lead {i}")
        out.append(f"{line}  # tail {i}" if line.strip() else line)
    return "\n".join(out) + "\n"


def _comments(text: str, syntax: str) -> list[str]:
    from blendspec.spec.comments import scan_comments

    return sorted(p for c in scan_comments(text, syntax) for p in c.text.split(" · "))


def _said(text: str, syntax: str) -> list[tuple[str, str]]:
    """What validation says about a spec, less where: (code, message) of each diagnostic."""
    try:
        loaded = load_text(text, syntax)  # type: ignore[arg-type]
    except SpecError as error:
        return sorted((d.code, d.message) for d in error.diagnostics)
    return sorted((d.code, d.message) for d in loaded.warnings)


@SETTINGS
@given(specs, st.sampled_from(["dsl", "yaml"]), st.data())
def test_fmt_formats_specs_that_do_not_validate(spec: m.Spec, syntax: str, data: st.DataObject):
    """`blend fmt` formats whatever parses: semantic errors (the generated specs' names are
    random) and model errors (below) alike. The result is a fixed point, keeps every comment,
    and validates to exactly what the original did."""
    breaks = _DSL_BREAKS if syntax == "dsl" else _YAML_BREAKS
    chosen = data.draw(st.lists(st.sampled_from(sorted(breaks)), unique=True, max_size=3))
    text = to_dsl(spec) if syntax == "dsl" else to_yaml(spec)
    for name in chosen:
        text = breaks[name](text)
    text = _commented(text)
    formatted = format_document(parse_document(Source("<spec>", text), syntax))  # type: ignore[arg-type]
    again = format_document(parse_document(Source("<spec>", formatted), syntax))  # type: ignore[arg-type]
    assert again == formatted, formatted
    assert _comments(formatted, syntax) == _comments(text, syntax)
    assert _said(formatted, syntax) == _said(text, syntax), (text, formatted)
