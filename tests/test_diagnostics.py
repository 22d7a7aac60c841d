"""Diagnostic data and its rendering."""

from __future__ import annotations

import json

import pytest

from blendspec.spec.diagnostics import (
    Diagnostic,
    Source,
    Span,
    did_you_mean,
    render_json,
    render_text,
)
from blendspec.spec.loader import load_text


def test_caret_spans_the_token_and_help_follows() -> None:
    source = Source("f.blend", "objective click = p_clik\n")
    text = render_text(
        source, [Diagnostic("E200", "unknown input `p_clik`", Span(1, 19, 1, 25), "hint")]
    )
    assert text.splitlines() == [
        "error[E200]: unknown input `p_clik`",
        "  --> f.blend:1:19",
        "  |",
        "1 | objective click = p_clik",
        "  |                   ^^^^^^",
        "  = help: hint",
    ]


def test_many_errors_are_capped() -> None:
    source = Source("f.blend", "x\n" * 30)
    diagnostics = [Diagnostic("E100", f"problem {i}", Span.point(i + 1, 1)) for i in range(27)]
    text = render_text(source, diagnostics)
    assert text.count("error[E100]") == 20
    assert text.endswith("… and 7 more")


def test_semantic_errors_are_all_collected() -> None:
    spec = "spec s\nslate 5\ninput a: score\nweight w = 9 in [0, 1]\nutility = w * b + v * a\n"
    with pytest.raises(Exception) as caught:
        load_text(spec, "dsl")
    codes = sorted(d.code for d in caught.value.diagnostics)
    assert codes == ["E200", "E200", "E300"]


def test_json_rendering_is_data() -> None:
    source = Source("f.yaml", "a: 1\n")
    data = json.loads(
        render_json(source, [Diagnostic("E102", "unknown field `a`", Span(1, 1, 1, 2))])
    )
    assert data[0] | {"message": None} == {
        "code": "E102", "severity": "error", "message": None, "file": "f.yaml", "line": 1,
        "column": 1, "end_line": 1, "end_column": 2, "help": None, "notes": [],
    }  # fmt: skip


def test_did_you_mean_only_for_near_names() -> None:
    assert did_you_mean("p_clik", ["p_click", "p_save"]) == "did you mean `p_click`?"
    assert did_you_mean("zzz", ["p_click"]) is None


def test_unregistered_code_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        Diagnostic("E999", "nope")
