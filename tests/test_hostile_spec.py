"""Hostile specs (issue 18): each ends in a located diagnostic (exit 1) or a one-line usage error
(exit 2), never a traceback, an "internal error", or a spec that validates and then runs wrong.

Classes: non-finite and out-of-range numbers (5), deep nesting (6), fmt/convert losses (10), and
Trojan-source look-alikes — bidi controls, Unicode digits, a byte-order mark (11).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from blendspec.cli import app
from blendspec.spec.diagnostics import Diagnostic, SpecError
from blendspec.spec.emit import format_number, to_dsl, to_yaml
from blendspec.spec.loader import LoadedSpec, load_text
from blendspec.spec.model import MAX_WINDOW
from blendspec.spec.syntax import MAX_NESTING

runner = CliRunner()

DSL = """\
spec t

slate 10

input p_click: score
input p_hide: score
input visual: embedding[8]
input sid: semantic_id[4]
input topic: category
input risky: flag

objective click = p_click
objective hide = p_hide

weight w_click = 1 in [0, 5]
weight w_hide = -1 in [-5, 0] {sign = negative}

utility = w_click * click + w_hide * hide

diversity ssd {
  similarity = cosine(visual) + 0.5 * category(topic)
  theta = 0.5
  gamma = 1
  window = 5
}

spacing risky {window = 3, coefficient = 1}
semantic_id_penalty {input = sid, window = 3, min_prefix = 2, coefficient = 0.5}
"""

YAML = """\
name: t
slate: {length: 10}
inputs:
  p_click: score
  p_hide: score
  visual: embedding[8]
  sid: semantic_id[4]
  topic: category
  risky: flag
objectives:
  click: p_click
  hide: p_hide
weights:
  w_click: {default: 1, bounds: [0, 5]}
  w_hide: {default: -1, bounds: [-5, 0], sign: negative}
utility: w_click * click + w_hide * hide
diversity:
  algorithm: ssd
  similarity: cosine(visual) + 0.5 * category(topic)
  theta: 0.5
  gamma: 1
  window: 5
spacing:
  risky: {window: 3, coefficient: 1}
semantic_id_penalty: {input: sid, window: 3, min_prefix: 2, coefficient: 0.5}
"""

POLICY_DSL = DSL.replace(
    "weight w_click = 1 in [0, 5]",
    "weight w_click = 1 in [0, 5] {source = policy, grid = [0, 1, 2]}",
) + (
    "\ninput user: features[4]\noutcome click_o\nreward r = click_o\n"
    "policy {state = [user], exploration = {kind = softmax, temperature = 1}}\n"
)


def _write(tmp_path: Path, text: str | bytes, name: str) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def blend(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def _no_crash(result) -> None:
    assert "Traceback" not in result.output
    assert "internal error" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def _errors(text: str, syntax: str) -> tuple[Diagnostic, ...]:
    with pytest.raises(SpecError) as caught:
        load_text(text, syntax)  # type: ignore[arg-type]
    errors = tuple(d for d in caught.value.diagnostics if d.is_error)
    assert errors
    return errors


def _located(text: str, syntax: str, code: str, needle: str) -> Diagnostic:
    """The error with `code` points at the line that holds `needle`."""
    errors = _errors(text, syntax)
    found = [d for d in errors if d.code == code]
    assert found, [(d.code, d.message) for d in errors]
    diagnostic = found[0]
    assert diagnostic.span is not None
    line = text.split("\n")[diagnostic.span.line - 1]
    assert needle in line, (diagnostic, line)
    return diagnostic


# ---------------------------------------------------------------- 5: every number finite, in range


DSL_NUMBERS = [
    ("theta = 0.5", "theta = {}"),
    ("gamma = 1", "gamma = {}"),
    ("window = 5\n}", "window = 5\n  epsilon = {}\n}}"),
    (
        "spacing risky {window = 3, coefficient = 1}",
        "spacing risky {{window = 3, coefficient = {}}}",
    ),
    ("weight w_click = 1 in [0, 5]", "weight w_click = {} in [0, 5]"),
    ("objective click = p_click", "objective click = {} * p_click"),
]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400", "Infinity"])
@pytest.mark.parametrize(("old", "new"), DSL_NUMBERS)
def test_dsl_non_finite_numbers_are_located_errors(old: str, new: str, value: str) -> None:
    text = DSL.replace(old, new.format(value))
    assert text != DSL
    line = new.format(value).split("\n")[-2 if "\n" in new else 0]
    errors = _errors(text, "dsl")
    assert {d.code for d in errors} <= {"E001", "E100", "E200", "E202"}, errors
    assert any(d.span and text.split("\n")[d.span.line - 1].strip() == line.strip() for d in errors)


YAML_NUMBERS = [
    ("theta: 0.5", "theta: {}", "theta"),
    ("gamma: 1", "gamma: {}", "gamma"),
    ("window: 5\n", "window: 5\n  epsilon: {}\n", "epsilon"),
    ("risky: {window: 3, coefficient: 1}", "risky: {{window: 3, coefficient: {}}}", "risky"),
    ("w_click: {default: 1, bounds: [0, 5]}", "w_click: {{default: {}, bounds: [0, 5]}}", "w_"),
    ("click: p_click", "click: {}", "click"),
]


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e400", '"Infinity"', "1e309"])
@pytest.mark.parametrize(("old", "new", "needle"), YAML_NUMBERS)
def test_yaml_non_finite_numbers_are_located_errors(
    old: str, new: str, needle: str, value: str
) -> None:
    text = YAML.replace(old, new.format(value))
    assert text != YAML
    errors = _errors(text, "yaml")
    assert {d.code for d in errors} <= {"E100", "E200", "E202"}, errors
    assert any(d.span and needle in text.split("\n")[d.span.line - 1] for d in errors), errors


def test_exploration_parameters_are_finite_and_in_range() -> None:
    assert load_text(POLICY_DSL, "dsl")  # the base is valid
    for bad in ("inf", "nan", "0.0000000001", "1e400", "10000000"):
        text = POLICY_DSL.replace("temperature = 1", f"temperature = {bad}")
        _located(text, "dsl", "E100", "temperature")


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("slate 10", "slate 1000000000", "slate"),
        ("window = 5", "window = 1000000000", "window"),
        ("{window = 3, coefficient = 1}", "{window = 100000, coefficient = 1}", "spacing"),
        ("{input = sid, window = 3", "{input = sid, window = 709", None),
        ("coefficient = 0.5}", "coefficient = 1e300}", "semantic_id_penalty"),
        ("weight w_click = 1 in [0, 5]", "weight w_click = 1 in [0, 1e300]", "w_click"),
        ("slate 10", "slate " + "9" * 5000, "slate"),
        ("input visual: embedding[8]", "input visual: embedding[" + "9" * 5000 + "]", "visual"),
        ("input visual: embedding[8]", "input visual: embedding[100000000]", "visual"),
        ("objective click = p_click", "objective click = " + "9" * 400 + " * p_click", "click"),
        ("objective click = p_click", "objective click = " + "9" * 5000 + " * p_click", "click"),
    ],
)
def test_dsl_out_of_range_numbers(old: str, new: str, needle: str | None) -> None:
    text = DSL.replace(old, new)
    assert text != DSL
    if needle is None:  # a window of 709 is in range: it validates, and must then run (below)
        load_text(text, "dsl")
        return
    errors = _errors(text, "dsl")
    assert {d.code for d in errors} <= {"E100", "E104"}, errors
    assert any(d.span and needle in text.split("\n")[d.span.line - 1] for d in errors), errors


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("slate: {length: 10}", "slate: {length: true}", "slate"),
        ("slate: {length: 10}", "slate: {length: 1000000000}", "slate"),
        ("slate: {length: 10}", "slate: {length: " + "9" * 5000 + "}", "slate"),
        ("slate: {length: 10}", "slate: {length: 1e400}", "slate"),
        ("window: 5", "window: true", "window"),
        ("theta: 0.5", "theta: false", "theta"),
        ("w_click: {default: 1,", "w_click: {default: true,", "w_click"),
        ("bounds: [0, 5]}", "bounds: [0, true]}", "w_click"),
        ("click: p_click", "click: " + "9" * 400, "click"),
        ("click: p_click", "click: " + "9" * 5000, "click"),
        ("w_click: {default: 1,", "w_click: {default: 10000000000000001,", "w_click"),
        ("visual: embedding[8]", "visual: embedding[٨]", "visual"),
    ],
)
def test_yaml_out_of_range_numbers(old: str, new: str, needle: str) -> None:
    text = YAML.replace(old, new)
    assert text != YAML
    errors = _errors(text, "yaml")
    assert {d.code for d in errors} <= {"E100", "E104"}, errors
    assert any(d.span and needle in text.split("\n")[d.span.line - 1] for d in errors), errors


def test_cli_hostile_numbers_exit_1_with_location(tmp_path: Path) -> None:
    cases = {
        "inf.blend": DSL.replace("gamma = 1", "gamma = inf"),
        "big.blend": DSL.replace("slate 10", "slate 1000000000"),
        "digits.blend": DSL.replace("slate 10", "slate " + "9" * 5000),
        "bool.yaml": YAML.replace("slate: {length: 10}", "slate: {length: true}"),
        "e400.yaml": YAML.replace("gamma: 1", "gamma: 1e400"),
        "digits.yaml": YAML.replace("click: p_click", "click: " + "9" * 5000),
    }
    for name, text in cases.items():
        path = _write(tmp_path, text, name)
        result = blend("validate", path)
        _no_crash(result)
        assert result.exit_code == 1, (name, result.output)
        assert f"{path}:" in result.output, (name, result.output)  # --> file:line:col


def test_harmonic_unit_never_computes_a_huge_lcm() -> None:
    from blendspec.ops.constraints import _harmonic_unit

    start = time.perf_counter()
    for window in (709, 10_000, 100_000, 10**9):
        assert _harmonic_unit(window, 4) == (1.0, 1.0)
    assert time.perf_counter() - start < 1.0
    # Small windows keep their exact integer unit lcm(1..w).
    assert _harmonic_unit(5, 1) == (60.0, 1.0 / 60)
    assert _harmonic_unit(10, 4) == (2520.0, 1.0 / 2520)
    assert _harmonic_unit(0, 1) == (1.0, 1.0)


def _tiny_module_spec(window: int, slate: int, diversity: str) -> LoadedSpec:
    block = {
        "none": "none",
        "ssd": f"ssd {{similarity = cosine(e), window = {window}}}",
        "dpp": f"dpp {{similarity = cosine(e), window = {window}}}",
    }[diversity]
    text = f"""\
spec t
slate {slate}
input p: score
input e: embedding[4]
input risky: flag
input sid: semantic_id[3]
input topic: category
objective o = p
weight w = 1 in [0, 5]
utility = w * o
diversity {block}
spacing risky {{window = {window}, coefficient = 1}}
semantic_id_penalty {{input = sid, window = {window}, min_prefix = 1, coefficient = 0.5}}
cap topic {{max = 100, window = {window}}}
"""
    return load_text(text, "dsl")


def _run_tiny(loaded: LoadedSpec, slate: int) -> dict[str, torch.Tensor]:
    from blendspec.compiler.lower import module_for

    module = module_for(loaded)
    b, n = 2, slate + 4
    generator = torch.Generator().manual_seed(0)
    mask = torch.ones((b, n), dtype=torch.bool)
    inputs = {
        "p": torch.rand((b, n), generator=generator),
        "e": torch.randn((b, n, 4), generator=generator),
        "risky": torch.rand((b, n), generator=generator) < 0.5,
        "sid": torch.randint(0, 3, (b, n, 3), generator=generator),
        "topic": torch.randint(0, 3, (b, n), generator=generator),
    }
    return module(mask, inputs)


UPPER_BOUND_CASES = [(709, 6), (MAX_WINDOW, 6), (MAX_WINDOW, 80)]  # T > 64 too


@pytest.mark.parametrize("diversity", ["none", "ssd", "dpp"])
@pytest.mark.parametrize(("window", "slate"), UPPER_BOUND_CASES)
def test_windows_at_the_upper_bound_run(window: int, slate: int, diversity: str) -> None:
    """`blend run` with a window ≥ 709 used to overflow `math.lcm(1..w)`. The operators clamp
    every window to the slate's length T where they receive it (a window of w ≥ T acts exactly
    as one of T), so the longest window runs as, and gives bit for bit what, a window of T gives:
    its cost is that of T (benchmarks time it; a wall-clock limit here only measured the load
    of the machine)."""
    from blendspec.ops._native import kernels

    with kernels("torch"):
        out = _run_tiny(_tiny_module_spec(window, slate, diversity), slate)
        as_t = _run_tiny(_tiny_module_spec(slate, slate, diversity), slate)
    assert (out["indices"] >= 0).all()  # a full slate: N > T
    assert torch.isfinite(out["scores"]).all()
    assert torch.equal(out["indices"], as_t["indices"])
    assert torch.equal(out["scores"], as_t["scores"])


_NATIVE_CHECK = """
import sys, torch
from tests.test_hostile_spec import UPPER_BOUND_CASES, _run_tiny, _tiny_module_spec
for window, slate in UPPER_BOUND_CASES:
    for diversity in ("ssd", "dpp"):
        out = _run_tiny(_tiny_module_spec(window, slate, diversity), slate)
        ok = bool((out["indices"] >= 0).all()) and bool(torch.isfinite(out["scores"]).all())
        print(window, slate, diversity, "ok" if ok else "BAD", flush=True)
"""


def test_windows_at_the_upper_bound_run_native() -> None:
    """The compiled loops at the same bounds, in a child process: a crash must not take pytest."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", _NATIVE_CHECK], cwd=repo, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-2000:])
    assert "BAD" not in done.stdout, done.stdout


# ---------------------------------------------------------------- 6: deep nesting


def _deep_cases() -> dict[str, tuple[str, str]]:
    deep = 1100
    return {
        "yaml_flow": (YAML + "extra: " + "[" * deep + "]" * deep + "\n", "yaml"),
        "yaml_block": (YAML + "".join("  " * i + "a:\n" for i in range(deep)), "yaml"),
        "yaml_dashes": (YAML + "extra:\n" + "- " * deep + "1\n", "yaml"),
        "yaml_mapping_flow": (YAML + "extra: " + "{a: " * deep + "1" + "}" * deep + "\n", "yaml"),
        "dsl_lists": (DSL.replace("gamma = 1", "gamma = " + "[" * deep + "]" * deep), "dsl"),
        "dsl_blocks": (
            DSL.replace("gamma = 1", "gamma = " + "{a = " * deep + "1" + "}" * deep),
            "dsl",
        ),
        "dsl_policy": (DSL + "policy {state = " + "[" * 600 + "s" + "]" * 600 + "}\n", "dsl"),
        # Text the scan could misread: a quote inside a plain scalar, a block scalar, `#` in a
        # string; the last one is caught by the composer's RecursionError fallback.
        "yaml_quote_in_plain": (YAML + "x: a '\ny: " + "[" * deep + "]" * deep + "\n", "yaml"),
        "yaml_block_scalar": (YAML + "x: |\n  'a\ny: " + "[" * deep + "]" * deep + "\n", "yaml"),
        "yaml_hash_in_string": (YAML + 'x: ["a #", ' + "[" * deep + "]" * deep + "]\n", "yaml"),
        "yaml_continuation": (YAML + "x: a\n  'b\ny: " + "[" * deep + "]" * deep + "\n", "yaml"),
    }


@pytest.mark.parametrize("case", list(_deep_cases()))
def test_deep_nesting_is_a_located_error(case: str) -> None:
    text, syntax = _deep_cases()[case]
    errors = _errors(text, syntax)
    assert [d.code for d in errors] == ["E004"]
    assert errors[0].span is not None and errors[0].span.line > 1


def test_deep_nesting_through_the_cli(tmp_path: Path) -> None:
    for name, (text, syntax) in _deep_cases().items():
        path = _write(tmp_path, text, f"{name}.{'yaml' if syntax == 'yaml' else 'blend'}")
        for command in (("validate",), ("fmt", "--check")):
            result = blend(*command, path)
            _no_crash(result)
            assert result.exit_code == 1, (name, result.output)
            assert "E004" in result.output


def test_yaml_aliases_cannot_stack_past_the_limit() -> None:
    levels = ["a0: &a0 " + "[" * 40 + "1" + "]" * 40]
    for i in range(1, 8):
        levels.append(f"a{i}: &a{i} " + "[" * 40 + f"*a{i - 1}" + "]" * 40)
    text = YAML + "\n".join(levels) + "\n"
    errors = _errors(text, "yaml")
    assert "E004" in [d.code for d in errors]


def test_nesting_at_the_limit_is_not_refused() -> None:
    """Just inside the limit the spec is judged on its merits (here: an unknown field)."""
    inside = MAX_NESTING - 4
    text = DSL.replace("gamma = 1", "gamma = 1\n  extra = " + "[" * inside + "]" * inside)
    assert [d.code for d in _errors(text, "dsl")] == ["E102"]


# ---------------------------------------------------------------- 10: fmt / convert


def test_fmt_writes_through_a_symlink(tmp_path: Path) -> None:
    target = _write(tmp_path, DSL.replace("gamma = 1", "gamma    = 1"), "real.blend")
    link = tmp_path / "link.blend"
    os.symlink(target.name, link)
    result = blend("fmt", link)
    _no_crash(result)
    assert result.exit_code == 0, result.output
    assert link.is_symlink(), "fmt replaced the symlink with a file"
    assert "gamma = 1" in target.read_text()


def test_fmt_to_output_through_a_symlink(tmp_path: Path) -> None:
    source = _write(tmp_path, DSL, "spec.blend")
    target = _write(tmp_path, "old\n", "real.yaml")
    link = tmp_path / "link.yaml"
    os.symlink(target.name, link)
    result = blend("fmt", source, "--to", "yaml", "-o", link)
    _no_crash(result)
    assert result.exit_code == 0, result.output
    assert link.is_symlink()
    assert target.read_text() == to_yaml(load_text(DSL, "dsl").spec, load_text(DSL, "dsl").document)


@pytest.mark.parametrize(
    ("source_name", "to", "out_name"),
    [("a.blend", "yaml", "b.blend"), ("a.yaml", "dsl", "b.yaml"), ("a.blend", "yaml", "a.blend")],
)
def test_fmt_refuses_an_output_suffix_that_contradicts_to(
    tmp_path: Path, source_name: str, to: str, out_name: str
) -> None:
    source = _write(tmp_path, DSL if source_name.endswith(".blend") else YAML, source_name)
    before = source.read_text()
    result = blend("fmt", source, "--to", to, "-o", tmp_path / out_name)
    _no_crash(result)
    assert result.exit_code == 2, result.output
    assert source.read_text() == before
    if out_name != source_name:
        assert not (tmp_path / out_name).exists()


@pytest.mark.parametrize("char", ["\x00", "\x7f", "\x1b", "\x85", "\u2028", "\r"])
def test_control_characters_in_a_dsl_comment_are_refused(tmp_path: Path, char: str) -> None:
    text = DSL.replace("gamma = 1", f"gamma = 1  # odd{char}comment")
    diagnostic = _located(text, "dsl", "E001", "gamma")
    assert f"U+{ord(char):04X}" in diagnostic.message
    path = _write(tmp_path, text, "c.blend")
    result = blend("fmt", path, "--to", "yaml")
    _no_crash(result)
    assert result.exit_code == 1


def test_control_characters_in_yaml_are_located() -> None:
    text = YAML.replace("gamma: 1", "gamma: 1  # odd\x7fcomment")
    diagnostic = _located(text, "yaml", "E001", "gamma")
    assert "U+007F" in diagnostic.message


def test_escaped_control_characters_in_strings_convert_both_ways() -> None:
    text = POLICY_DSL.replace(
        "state = [user]", 'state = [user], file = "p\\u0000\\u007f\\u202e.pt"'
    )
    loaded = load_text(text, "dsl")
    yaml_text = to_yaml(loaded.spec, loaded.document)
    again = load_text(yaml_text, "yaml")
    assert again.spec == loaded.spec
    assert "\u202e" not in yaml_text  # escaped, not raw
    assert load_text(to_dsl(again.spec, again.document), "dsl").spec == loaded.spec


def test_integers_keep_every_digit() -> None:
    assert format_number(10000000000000001) == "10000000000000001"
    assert format_number(10**20) == "100000000000000000000"
    assert format_number(1e16) == "1e+16"
    assert format_number(0.1) == "0.1"


def _numbers_spec(values: list[float]) -> str:
    grid = ", ".join(repr(v) for v in values)
    weight = (
        "w_click: {default: 0, bounds: [-1000000000.0, 1000000000.0], sign: any,"
        f" source: policy, grid: [{grid}]}}"
    )
    text = YAML.replace("w_click: {default: 1, bounds: [0, 5]}", weight)
    text = text.replace("  risky: flag\n", "  risky: flag\n  u: features[2]\n")
    return text + "outcomes: [c]\nrewards:\n  r: c\npolicy: {state: [u]}\n"


def test_yaml_dsl_yaml_keeps_every_value_exact() -> None:
    values = [0.1, 1e-07, 123456.789, 2.5e-300, 999999999.9999999, 1 / 3, -7.000000000000001]
    values += [987654321.0, 5e-324, 1e9, -1e9, 0.30000000000000004, -0.0]
    loaded = load_text(_numbers_spec(values), "yaml")
    dsl_text = to_dsl(loaded.spec, loaded.document)
    via_dsl = load_text(dsl_text, "dsl")
    back = load_text(to_yaml(via_dsl.spec, via_dsl.document), "yaml")
    grid = back.spec.weights["w_click"].grid
    assert grid is not None
    assert [v.hex() for v in grid] == [float(v).hex() for v in values]
    assert back.spec == loaded.spec
    assert to_dsl(back.spec, back.document) == dsl_text


# ---------------------------------------------------------------- 11: look-alikes, Trojan source


@pytest.mark.parametrize("char", ["\u202e", "\u2066", "\u200f", "\u061c"])
def test_bidi_controls_warn_with_a_location(tmp_path: Path, char: str) -> None:
    text = DSL.replace("gamma = 1", f"gamma = 1  # {char}looks harmless")
    loaded = load_text(text, "dsl")
    warnings = [d for d in loaded.warnings if d.code == "W004"]
    assert len(warnings) == 1
    span = warnings[0].span
    assert span is not None and "gamma" in text.split("\n")[span.line - 1]
    assert text.split("\n")[span.line - 1][span.column - 1] == char
    path = _write(tmp_path, text, "bidi.blend")
    result = blend("validate", path)
    _no_crash(result)
    assert result.exit_code == 0
    assert "W004" in result.output
    assert char not in result.output  # the shown source line has it replaced, not raw
    assert blend("validate", "--strict", path).exit_code == 1


def test_bidi_controls_in_yaml_strings_warn() -> None:
    text = YAML + "outcomes: [c]\nrewards: {r: c}\n"
    text = text.replace("similarity: cosine", 'similarity: "cosine').replace(
        "category(topic)\n", 'category(topic)"  # \u2067x\u2069\n'
    )
    loaded = load_text(text, "yaml")
    assert [d.code for d in loaded.warnings].count("W004") == 1


@pytest.mark.parametrize("digits", ["5\u0660", "\u0665\u0660", "\uff15\uff10", "5\u09e6"])
def test_unicode_digits_are_not_numbers(digits: str) -> None:
    _located(DSL.replace("slate 10", f"slate {digits}"), "dsl", "E001", "slate")
    _located(DSL.replace("theta = 0.5", f"theta = 0.{digits}"), "dsl", "E001", "theta")
    _located(YAML.replace("click: p_click", f"click: {digits} * p_click"), "yaml", "E001", "click")
    text = YAML.replace("visual: embedding[8]", f"visual: embedding[{digits}]")
    _located(text, "yaml", "E104", "visual")


@pytest.mark.parametrize(("text", "name"), [(DSL, "bom.blend"), (YAML, "bom.yaml")])
def test_a_byte_order_mark_is_accepted_in_both_syntaxes(
    tmp_path: Path, text: str, name: str
) -> None:
    path = _write(tmp_path, "\ufeff".encode() + text.encode(), name)
    result = blend("validate", path)
    _no_crash(result)
    assert result.exit_code == 0, result.output
    # An error on line 1 is still located at the right column (the mark is not a column).
    broken = text.replace("spec t", "spec 1t").replace("name: t", "name: 1t")
    path.write_bytes("\ufeff".encode() + broken.encode())
    result = blend("validate", path)
    _no_crash(result)
    assert result.exit_code == 1
    assert f"{path}:1:" in result.output
    assert "\ufeff" not in result.output


def test_a_byte_order_mark_elsewhere_is_named() -> None:
    diagnostic = _located(DSL.replace("gamma = 1", "gamma = \ufeff1"), "dsl", "E001", "gamma")
    assert "U+FEFF" in diagnostic.message


def test_every_hostile_number_is_finite_after_validation() -> None:
    """What validates holds only finite numbers (the fuzz oracle checks the same on mutants)."""
    from tests.fuzz_specs import non_finite_numbers

    for text, syntax in ((DSL, "dsl"), (YAML, "yaml"), (POLICY_DSL, "dsl")):
        assert non_finite_numbers(load_text(text, syntax).spec) == []  # type: ignore[arg-type]
    assert math.isfinite(1.0)


def test_bidi_controls_never_reach_the_terminal_raw(tmp_path: Path) -> None:
    """A bidi control in a name (quoted in the message) or in code (a syntax error) is shown as
    U+FFFD or by its code point, never raw."""
    cases = {
        "name.yaml": YAML.replace("  p_hide: score", "  p_\u202ehide: score"),
        "code.blend": DSL.replace("gamma = 1", "gamma = \u20661"),
    }
    for name, text in cases.items():
        path = _write(tmp_path, text, name)
        result = blend("validate", path)
        _no_crash(result)
        assert result.exit_code == 1, result.output
        assert "\u202e" not in result.output and "\u2066" not in result.output
    assert "U+2066" in _located(cases["code.blend"], "dsl", "E001", "gamma").message


def test_the_json_schema_states_the_ranges() -> None:
    """`blend schema` is generated from the model: editors see the same bounds, as JSON Schema
    keywords (a raw pydantic `le` would be silently ignored by every validator)."""
    import json

    from blendspec.spec.schema import spec_json_schema

    schema = spec_json_schema()
    text = json.dumps(schema)
    assert '"le":' not in text and '"ge":' not in text and '"gt":' not in text
    definitions = schema["$defs"]
    assert definitions["Slate"]["properties"]["length"]["maximum"] == 10_000
    assert definitions["Spacing"]["properties"]["window"]["maximum"] == MAX_WINDOW
    assert definitions["Ssd"]["properties"]["gamma"]["maximum"] == 1e6


def _grid_spec(levels: int, weights: int, syntax: str) -> str:
    grid = ", ".join(str(i) for i in range(levels))
    names = [f"w{k}" for k in range(weights)]
    if syntax == "dsl":
        lines = ["spec t", "slate 3", "input p: score", "input u: features[2]"]
        lines += [
            f"weight {n} = 0 in [0, {levels}] {{source = policy, grid = [{grid}]}}" for n in names
        ]
        lines += ["utility = " + " + ".join(f"{n} * p" for n in names), "outcome o"]
        lines += ["reward r = o", "policy {state = [u], exploration = {kind = uniform}}"]
    else:
        lines = ["name: t", "slate: {length: 3}", "inputs: {p: score, u: 'features[2]'}"]
        lines += ["weights:"] + [
            f"  {n}: {{default: 0, bounds: [0, {levels}], source: policy, grid: [{grid}]}}"
            for n in names
        ]
        lines += ["utility: " + " + ".join(f"{n} * p" for n in names), "outcomes: [o]"]
        lines += ["rewards: {r: o}", "policy: {state: [u], exploration: {kind: uniform}}"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("syntax", ["dsl", "yaml"])
def test_a_policy_grid_of_astronomical_size_is_refused(syntax: str) -> None:
    """4 grids of 1,000 values validated, and the first request asked for 16 TB."""
    assert load_text(_grid_spec(10, 3, syntax), syntax)  # type: ignore[arg-type]
    text = _grid_spec(1000, 4, syntax)
    diagnostic = _located(text, syntax, "E100", "w1")
    assert "1,000,000 actions" in diagnostic.message


@pytest.mark.parametrize(
    ("text", "syntax", "message"),
    [
        (YAML.replace("click: p_click", "click: true"), "yaml", "expected a formula, not `true`"),
        (DSL.replace("slate 10", "slate " + "9" * 400), "dsl", "far out of range"),
        (DSL.replace("gamma = 1", "gamma = " + "9" * 30), "dsl", "far out of range"),
        (YAML.replace("{default: 1,", "{default: " + "9" * 400 + ","), "yaml", "far out of range"),
    ],
)
def test_hostile_numbers_get_messages_that_say_what_is_wrong(
    text: str, syntax: str, message: str
) -> None:
    errors = _errors(text, syntax)
    assert any(message in d.message and d.span is not None for d in errors), errors


def test_blend_run_with_windows_past_708(tmp_path: Path) -> None:
    """The reported crash: `math.lcm(1..w)` overflowed a float from w = 709 and `blend run` ended
    in an internal error."""
    from tests.test_run import SPEC, make_rows, write_jsonl

    spec = tmp_path / "w.blend"
    spec.write_text(
        SPEC
        + "spacing blocked {window = 709, coefficient = 1}\n"
        + f"semantic_id_penalty {{input = sid, window = {MAX_WINDOW}, coefficient = 0.5}}\n"
    )
    dump = write_jsonl(make_rows(), tmp_path / "dump.jsonl")
    out = tmp_path / "slates.parquet"
    result = blend("run", spec, "--candidates", dump, "-o", out)
    _no_crash(result)
    assert result.exit_code == 0, result.output
    assert out.exists()
