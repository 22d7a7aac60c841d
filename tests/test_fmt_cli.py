"""`blend fmt`: formats whatever parses (semantic and model errors are validate's), rewrites in
place or checks, reads `-` (to stdout), walks folders with `diff --git`'s spec rule; the
pre-commit hooks that run it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from blendspec.cli import app
from blendspec.spec.diagnostics import Source, SpecError
from blendspec.spec.emit import format_document
from blendspec.spec.loader import load_text
from blendspec.spec.syntax import parse_document
from tests.conftest import EXAMPLE_SPECS, GOLDEN, REPO, SPECS, assert_golden

runner = CliRunner()
BROKEN = [GOLDEN / "fmt" / "broken.blend", GOLDEN / "fmt" / "broken.yaml"]


def blend(*args: object, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def _codes(text: str, syntax: str) -> list[tuple[str, str]]:
    try:
        loaded = load_text(text, syntax)  # type: ignore[arg-type]
    except SpecError as error:
        return sorted((d.code, d.message) for d in error.diagnostics)
    return sorted((d.code, d.message) for d in loaded.warnings)


# ---------------------------------------------------------------- whatever parses


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.name)
def test_a_spec_that_does_not_validate_is_formatted(path: Path, tmp_path: Path) -> None:
    """Model errors (a range, a misspelt type and field, an unknown section, no utility) and
    semantic ones (an unknown name): the valid parts are canonical (defaults dropped, spacing),
    the broken ones kept as written, every comment kept."""
    assert blend("validate", path).exit_code == 1
    spec = tmp_path / path.name
    shutil.copy(path, spec)
    result = blend("fmt", spec)
    assert result.exit_code == 0, result.output
    assert f"reformatted {spec}" in result.output
    formatted = spec.read_text()
    assert_golden(path.with_name(path.name + ".formatted"), formatted)
    syntax = "dsl" if path.suffix == ".blend" else "yaml"
    assert _codes(formatted, syntax) == _codes(path.read_text(), syntax)
    assert blend("fmt", "--check", spec).exit_code == 0  # a fixed point


@pytest.mark.parametrize("syntax", ["dsl", "yaml"])
def test_semantic_errors_format_like_a_valid_spec(syntax: str) -> None:
    """A spec whose model validates but whose checks fail prints exactly as the same spec with
    the error fixed: the formatter never asks the checker."""
    good = (SPECS / ("homefeed.blend" if syntax == "dsl" else "homefeed.yaml")).read_text()
    bad = good.replace("click = p_click", "click = p_clik").replace(
        "click: p_click", "click: p_clik"
    )  # an unknown input (E200)
    assert bad != good
    with pytest.raises(SpecError):
        load_text(bad, syntax)  # type: ignore[arg-type]
    messy = bad.replace(" * ", "*")
    formatted = format_document(parse_document(Source("<spec>", messy), syntax))  # type: ignore[arg-type]
    assert formatted == bad


def test_values_that_do_not_validate_keep_their_type() -> None:
    """In what does not validate, a float stays a float (`1.0`), an infinite number reads back
    infinite, YAML's own scalars (`true`, `null`, a date) stay what they were; what validates
    (the slate) is canonical. Validation says the same of the result."""
    text = (
        "name: t\nslate: {length: 1.0}\nweights:\n  w: {default: 1, 1.0: [0, 3]}\n"
        "  2.0: {default: 1, bounds: [0, 1]}\nutility: .inf\nextra: [true, null, 2024-05-01, 1e400]\n"
    )
    formatted = format_document(parse_document(Source("<spec>", text), "yaml"))
    assert formatted == (
        "name: t\nslate: {length: 1}\nweights:\n  w: {default: 1, 1.0: [0, 3]}\n"
        "  2.0: {default: 1, bounds: [0, 1]}\nutility: 1e999\ndiversity:\n  algorithm: none\nextra: [true, null, 2024-05-01, 1e400]\n"
    )
    assert _codes(formatted, "yaml") == _codes(text, "yaml")


def test_a_spec_that_does_not_parse_is_left_alone(tmp_path: Path) -> None:
    spec = tmp_path / "truncated.blend"
    text = (GOLDEN / "errors" / "syntax_truncated.blend").read_text()
    spec.write_text(text)
    result = blend("fmt", spec)
    assert result.exit_code == 1
    assert "error[E001]: spec ended unexpectedly" in result.output
    assert spec.read_text() == text


def test_convert_needs_the_model_but_not_the_checks(tmp_path: Path) -> None:
    """--to keeps working on a spec with an unknown name; a spec whose model fails is refused
    with its errors (the other syntax cannot say `windw`)."""
    semantic = tmp_path / "semantic.blend"
    semantic.write_text((SPECS / "homefeed.blend").read_text().replace("p_click", "p_clik"))
    result = blend("fmt", semantic, "--to", "yaml")
    assert result.exit_code == 0, result.output
    assert "p_clik" in result.stdout
    result = blend("fmt", GOLDEN / "fmt" / "broken.blend", "--to", "yaml")
    assert result.exit_code == 1
    assert "error[E102]: unknown field `sgn`" in result.output
    assert blend("fmt", *EXAMPLE_SPECS[:2], "--to", "yaml").exit_code == 2  # one spec only


# ---------------------------------------------------------------- stdin


def test_stdin_is_formatted_to_stdout() -> None:
    text = (GOLDEN / "fmt" / "broken.blend").read_text()
    result = blend("fmt", "-", input=text)
    assert result.exit_code == 0, result.output
    assert result.stdout == (GOLDEN / "fmt" / "broken.blend.formatted").read_text()
    canonical = (SPECS / "ads.yaml").read_text()
    same = blend("fmt", "-", input=canonical)  # YAML guessed from the text
    assert (same.exit_code, same.stdout) == (0, canonical)


def test_stdin_check_and_filename() -> None:
    text = (SPECS / "ads.yaml").read_text().replace("  w_", "  w_", 1).replace(": {", ":  {", 1)
    result = blend("fmt", "--check", "-", "--stdin-filename", "specs/ads.yaml", input=text)
    assert result.exit_code == 1
    assert "would reformat specs/ads.yaml" in result.output
    assert result.stdout == ""
    broken = blend("fmt", "-", "--stdin-filename", "x.blend", input="spec t\npolicy {\n  a = 1\n")
    assert broken.exit_code == 1
    assert "--> x.blend:2:8" in broken.output and "unclosed `{`" in broken.output
    # The name's suffix gives the syntax: this YAML read as the DSL does not parse.
    as_dsl = blend("fmt", "-", "--stdin-filename", "x.blend", input="name: t\n")
    assert as_dsl.exit_code == 1 and "E001" in as_dsl.output


def test_stdin_usage_errors() -> None:
    assert blend("fmt", "-", "-", input="").exit_code == 2
    assert blend("fmt", SPECS / "ads.blend", "--stdin-filename", "x.blend").exit_code == 2


# ---------------------------------------------------------------- folders


def _tree(root: Path) -> None:
    """Specs and non-specs, in folders git keeps and one it ignores."""
    (root / "specs" / "nested").mkdir(parents=True)
    (root / ".github" / "workflows").mkdir(parents=True)
    (root / "build").mkdir()
    messy = (SPECS / "ads.blend").read_text().replace("slate 20", "slate   20")
    (root / "specs" / "a.blend").write_text(messy)
    (root / "specs" / "nested" / "b.yaml").write_text(
        (SPECS / "ads.yaml").read_text().replace("slate: {length: 20}", "slate:  {length: 20}")
    )
    (root / "specs" / "compose.yaml").write_text("services: {web: {image: x}}\n")
    (root / ".github" / "workflows" / "ci.yml").write_text("on: push\n")
    (root / "build" / "c.blend").write_text("not a spec at all {")
    (root / ".gitignore").write_text("build/\n")


def test_folders_are_walked_with_the_diff_git_rule(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    _tree(tmp_path)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    check = blend("fmt", "--check", tmp_path)
    assert check.exit_code == 1
    named = sorted(
        line.split()[-1] for line in check.output.splitlines() if "would reformat" in line
    )
    assert named == [str(tmp_path / "specs" / "a.blend"), str(tmp_path / "specs/nested/b.yaml")]
    assert blend("fmt", tmp_path).exit_code == 0  # build/ is ignored: its junk never parsed
    assert blend("fmt", "--check", tmp_path).exit_code == 0
    assert "slate 20" in (tmp_path / "specs" / "a.blend").read_text()
    validated = blend("validate", tmp_path / "specs")
    assert validated.exit_code == 0, validated.output
    assert validated.output.count("ok ") == 2
    # A folder git ignores is read when it is named itself.
    asked = blend("validate", tmp_path / "build")
    assert asked.exit_code == 1 and "E001" in asked.output


def test_folders_outside_git_skip_hidden_folders(tmp_path: Path) -> None:
    _tree(tmp_path)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "d.blend").write_text("junk {")
    shutil.rmtree(tmp_path / "build")
    result = blend("validate", tmp_path)
    assert result.exit_code == 0, result.output
    assert result.output.count("ok ") == 2


def test_exclude(tmp_path: Path) -> None:
    _tree(tmp_path)
    shutil.rmtree(tmp_path / "build")
    names = lambda out: sorted(Path(x.split()[1]).name for x in out.splitlines() if x[:3] == "ok ")  # noqa: E731
    assert names(blend("validate", tmp_path).output) == ["a.blend", "b.yaml"]
    assert names(blend("validate", tmp_path, "--exclude", "specs/nested").output) == ["a.blend"]
    assert names(blend("validate", tmp_path, "--exclude", "nested/").output) == ["a.blend"]
    assert names(blend("validate", tmp_path, "--exclude", "*.blend").output) == ["b.yaml"]
    assert names(blend("validate", tmp_path, "--exclude", "nested/b.yaml").output) == [
        "a.blend",
        "b.yaml",
    ]  # a path with a `/` starts at the folder given: specs/nested/b.yaml would match
    kept = blend("fmt", "--check", tmp_path, "--exclude", "specs")
    assert (kept.exit_code, kept.output.strip()) == (0, f"warning: no spec files under {tmp_path}")
    named = blend("validate", tmp_path / "specs" / "a.blend", "--exclude", "*.blend")
    assert named.output.count("ok ") == 1  # a file named on the command line is always read


def test_an_empty_folder_warns(tmp_path: Path) -> None:
    result = blend("validate", tmp_path)
    assert result.exit_code == 0
    assert f"no spec files under {tmp_path}" in result.output


# ---------------------------------------------------------------- pre-commit


HOOKS = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())


def test_hook_ids() -> None:
    entries = {hook["id"]: hook["entry"] for hook in HOOKS}
    assert entries == {
        "blend-validate": "blend validate",
        "blend-fmt": "blend fmt",
        "blend-fmt-check": "blend fmt --check",
    }


@pytest.mark.parametrize("hook_id", ["blend-fmt", "blend-fmt-check"])
def test_hooks_run_as_pre_commit_runs_them(hook_id: str, tmp_path: Path) -> None:
    """pre-commit runs `entry` with the staged files matching `files` appended: blend-fmt fixes
    them (pre-commit then fails the commit on the change), blend-fmt-check only reports."""
    import re

    hook = next(h for h in HOOKS if h["id"] == hook_id)
    _tree(tmp_path)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    matched = [n for n in names if re.search(hook["files"], n) and not n.startswith("build/")]
    assert matched == ["specs/a.blend", "specs/compose.yaml", "specs/nested/b.yaml"]
    matched.remove("specs/compose.yaml")  # a specs/ YAML that is no spec: pre-commit's `exclude`
    before = {n: (tmp_path / n).read_text() for n in matched}
    executable = shutil.which("blend")
    command = [executable] if executable else [sys.executable, "-m", "blendspec"]
    entry = hook["entry"].split()[1:]
    done = subprocess.run(
        [*command, *entry, *matched], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    after = {n: (tmp_path / n).read_text() for n in matched}
    if hook_id == "blend-fmt":
        assert done.returncode == 0, done.stderr
        assert all(after[n] != before[n] for n in matched)
        assert "slate 20" in after["specs/a.blend"]
    else:
        assert done.returncode == 1
        assert after == before
        assert "would reformat specs/a.blend" in done.stderr


# ---------------------------------------------------------------- help


@pytest.mark.parametrize("name", ["validate", "fmt", "graph", "schema"])
def test_spec_commands_have_help_on_every_option_and_unbroken_paragraphs(name: str) -> None:
    """Typer's help keeps a docstring's line breaks, so a paragraph wrapped in the source would
    break mid-sentence on the screen: each paragraph is one line."""
    import inspect

    import typer.main

    from blendspec.cli import spec as commands

    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    for param in command.params:
        if param.name != "help":
            assert getattr(param, "help", None), (name, param.name)
    doc = inspect.getdoc(getattr(commands, name)) or ""
    assert doc and all("\n" not in paragraph for paragraph in doc.split("\n\n")), doc
