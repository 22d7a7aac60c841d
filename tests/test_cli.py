"""The `blend` command line: exit codes 0/1/2, stderr diagnostics, formats, no tracebacks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from blendspec.cli import app
from tests.conftest import EXAMPLE_SPECS, GOLDEN, SPECS

runner = CliRunner()
BROKEN = GOLDEN / "errors" / "misspelled_input.blend"


def blend(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_validate_examples_ok() -> None:
    result = blend("validate", *EXAMPLE_SPECS)
    assert result.exit_code == 0, result.output
    assert result.output.count("ok ") == len(EXAMPLE_SPECS)


def test_validate_broken_exits_1_with_rendered_diagnostic() -> None:
    result = blend("validate", BROKEN)
    assert result.exit_code == 1
    assert "error[E200]: unknown input `p_clik`" in result.output
    assert "did you mean `p_click`?" in result.output
    assert "Traceback" not in result.output


def test_validate_json_format() -> None:
    result = blend("validate", "--format", "json", BROKEN, SPECS / "ads.yaml")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert [entry["ok"] for entry in report] == [False, True]
    first = next(d for d in report[0]["diagnostics"] if d["severity"] == "error")
    assert (first["code"], first["line"], first["column"]) == ("E200", 12, 19)


def test_strict_turns_warnings_into_failure() -> None:
    warned = GOLDEN / "errors" / "warnings_only.blend"
    assert blend("validate", warned).exit_code == 0
    assert blend("validate", "--strict", warned).exit_code == 1


def test_usage_error_exits_2() -> None:
    assert blend("validate").exit_code == 2
    assert blend("graph", SPECS / "ads.blend", "--format", "svg").exit_code == 2
    assert blend("no-such-command").exit_code == 2


def test_missing_and_unknown_files_exit_1() -> None:
    assert blend("validate", "does-not-exist.blend").exit_code == 1
    assert blend("validate", "spec.txt").exit_code == 1


def test_fmt_check_and_rewrite(tmp_path: Path) -> None:
    assert blend("fmt", "--check", *EXAMPLE_SPECS).exit_code == 0
    messy = tmp_path / "messy.blend"
    canonical = (SPECS / "homefeed.blend").read_text()
    messy.write_text(
        canonical.replace("slate 50", "slate    50  # T").replace("input p_save", "input  p_save")
    )
    check = blend("fmt", "--check", messy)
    assert check.exit_code == 1
    assert "would reformat" in check.output
    assert blend("fmt", messy).exit_code == 0
    assert "slate 50  # T" in messy.read_text()
    assert blend("fmt", "--check", messy).exit_code == 0


def test_fmt_conversion_both_ways(tmp_path: Path) -> None:
    out = tmp_path / "homefeed.yaml"
    assert blend("fmt", SPECS / "homefeed.blend", "--to", "yaml", "-o", out).exit_code == 0
    assert out.read_text() == (SPECS / "homefeed.yaml").read_text()
    to_dsl = blend("fmt", out, "--to", "dsl")
    assert to_dsl.exit_code == 0
    assert to_dsl.stdout == (SPECS / "homefeed.blend").read_text()


def test_fmt_output_needs_to() -> None:
    assert blend("fmt", SPECS / "ads.blend", "-o", "x.yaml").exit_code == 2


@pytest.mark.parametrize("fmt", ["text", "dot", "json"])
def test_graph_formats(fmt: str) -> None:
    result = blend("graph", SPECS / "homefeed.blend", "--format", fmt)
    assert result.exit_code == 0, result.output
    if fmt == "json":
        graph = json.loads(result.stdout)
        assert graph["nodes"][graph["output"]]["op"] == "slate"
        assert any(node["op"] == "ssd" for node in graph["nodes"])
    elif fmt == "dot":
        assert result.stdout.startswith('digraph "homefeed"')
    else:
        assert "ssd(" in result.stdout and ": Selection[B,50]" in result.stdout


def test_schema_validates_the_yaml_examples() -> None:
    result = blend("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    for path in SPECS.glob("*.yaml"):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    broken = yaml.safe_load((GOLDEN / "errors" / "unknown_field.yaml").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_console_script_never_shows_a_traceback(tmp_path: Path) -> None:
    executable = shutil.which("blend")
    command = [executable] if executable else [sys.executable, "-m", "blendspec.cli"]
    unreadable = tmp_path / "binary.blend"
    unreadable.write_bytes(b"\xff\xfe\x00garbage")
    result = subprocess.run([*command, "validate", str(unreadable)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "E002" in result.stderr and "Traceback" not in result.stderr
