"""`blend validate`: the github and sarif formats, per-code ignores (`--ignore`, and
`# blend: ignore[…]` comments), standard input, and the plain (typer-free) way in answering as
the typer command does for all of them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from blendspec.cli import app
from blendspec.spec.diagnostics import CODES, Diagnostic, Severity, Source, Span, render_github
from blendspec.spec.loader import load_text
from blendspec.spec.sarif import explanations
from tests.conftest import GOLDEN, REPO, SPECS

runner = CliRunner()
ERRORS = GOLDEN / "errors"
MISSPELLED = ERRORS / "misspelled_input.blend"  # E200 at 12:19, W001 at 5:7
WARNINGS = ERRORS / "warnings_only.yaml"  # W001 at 10:3, W002 at 21:3


def blend(*args: object, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input)


# ---------------------------------------------------------------- github


def test_github_annotations() -> None:
    result = blend("validate", "--format", "github", MISSPELLED, WARNINGS)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[1] == (
        f"::error file={MISSPELLED},line=12,col=19,endLine=12,endColumn=25,title=E200"
        "::unknown input `p_clik`%0Ahelp: did you mean `p_click`?"
    )
    assert [line.split(" ", 1)[0] for line in lines] == ["::warning", "::error"] + ["::warning"] * 2
    assert all(f"file={WARNINGS}" in line for line in lines[2:])
    assert blend("validate", "--format", "github", SPECS / "ads.blend").stdout == ""


def test_github_escapes_what_would_end_a_field() -> None:
    diagnostic = Diagnostic(
        "W001", "100% of\nit", Span(1, 2, 1, 3), "a, b: c", Severity.WARNING, notes=("n",)
    )
    text = render_github(Source("a,b:c.blend", "x"), [diagnostic])
    assert text == (
        "::warning file=a%2Cb%3Ac.blend,line=1,col=2,endLine=1,endColumn=3,title=W001"
        "::100%25 of%0Ait%0Anote: n%0Ahelp: a, b: c\n"
    )
    unplaced = Diagnostic("E002", "cannot read", None, severity=Severity.ERROR)
    assert render_github(Source("x.blend", ""), [unplaced]) == (
        "::error file=x.blend,title=E002::cannot read\n"
    )


# ---------------------------------------------------------------- sarif

# What SARIF 2.1.0 requires of the parts blendspec writes (sarif-schema-2.1.0.json, cut down to
# them): a log with a version and runs; a run with a tool whose driver has a name; rules with
# ids; results with a message and, where placed, 1-based regions.
SARIF_SUBSET = {
    "type": "object",
    "required": ["version", "runs"],
    "properties": {
        "$schema": {"type": "string", "format": "uri"},
        "version": {"const": "2.1.0"},
        "runs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["tool"],
                "properties": {
                    "tool": {
                        "type": "object",
                        "required": ["driver"],
                        "properties": {
                            "driver": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "version": {"type": "string"},
                                    "rules": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["id"],
                                            "properties": {
                                                "id": {"type": "string"},
                                                "shortDescription": {"$ref": "#/$defs/text"},
                                                "fullDescription": {"$ref": "#/$defs/text"},
                                                "help": {"$ref": "#/$defs/text"},
                                                "defaultConfiguration": {
                                                    "type": "object",
                                                    "properties": {
                                                        "level": {"$ref": "#/$defs/level"}
                                                    },
                                                },
                                            },
                                        },
                                    },
                                },
                            }
                        },
                    },
                    "columnKind": {"enum": ["utf16CodeUnits", "unicodeCodePoints"]},
                    "results": {"type": "array", "items": {"$ref": "#/$defs/result"}},
                },
            },
        },
    },
    "$defs": {
        "text": {
            "type": "object",
            "required": ["text"],
            "properties": {"text": {"type": "string"}},
        },
        "level": {"enum": ["none", "note", "warning", "error"]},
        "result": {
            "type": "object",
            "required": ["message"],
            "properties": {
                "ruleId": {"type": "string"},
                "ruleIndex": {"type": "integer", "minimum": -1},
                "level": {"$ref": "#/$defs/level"},
                "message": {"$ref": "#/$defs/text"},
                "locations": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "physicalLocation": {
                                "type": "object",
                                "required": ["artifactLocation"],
                                "properties": {
                                    "artifactLocation": {
                                        "type": "object",
                                        "required": ["uri"],
                                        "properties": {"uri": {"type": "string"}},
                                    },
                                    "region": {
                                        "type": "object",
                                        "required": ["startLine"],
                                        "properties": {
                                            k: {"type": "integer", "minimum": 1}
                                            for k in (
                                                "startLine",
                                                "startColumn",
                                                "endLine",
                                                "endColumn",
                                            )
                                        },
                                    },
                                },
                            }
                        },
                    },
                },
            },
        },
    },
}


def test_sarif_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # a relative name, as CI passes them, beside absolute ones
    result = blend(
        "validate", "--format", "sarif", MISSPELLED.relative_to(REPO), WARNINGS,
        tmp_path / "missing.blend",
    )  # fmt: skip
    assert result.exit_code == 1
    log = json.loads(result.stdout)
    jsonschema.validate(log, SARIF_SUBSET)
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == sorted(CODES)
    assert rules[[r["id"] for r in rules].index("E200")]["fullDescription"]["text"] == (
        "A reference to a name that is not declared."
    )
    results = run["results"]
    assert [(r["ruleId"], r["level"]) for r in results] == [
        ("W001", "warning"), ("E200", "error"), ("W001", "warning"), ("W002", "warning"),
        ("E002", "error"),
    ]  # fmt: skip
    for r in results:
        assert rules[r["ruleIndex"]]["id"] == r["ruleId"]
    e200 = results[1]["locations"][0]["physicalLocation"]
    assert e200["artifactLocation"]["uri"] == "tests/golden/errors/misspelled_input.blend"
    assert e200["region"] == {"startLine": 12, "startColumn": 19, "endLine": 12, "endColumn": 25}
    assert results[2]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        WARNINGS.as_uri()
    )
    assert "region" not in results[4]["locations"][0]["physicalLocation"]
    assert "help: did you mean `p_click`?" in results[1]["message"]["text"]


def test_rule_help_is_the_first_paragraph_of_docs_errors() -> None:
    """Every code has its section in docs/errors.md, under its title; the rules' descriptions
    are the sections' first paragraphs (read from the page, which the wheel ships)."""
    text = (REPO / "docs" / "errors.md").read_text()
    found = {}
    for part in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        head, _, body = part.partition("\n")
        match = re.fullmatch(r"([EW][0-9]{3}) — (.*)", head.strip())
        if match:
            assert match.group(2) == CODES[match.group(1)], head
            found[match.group(1)] = " ".join(body.strip().split("\n\n")[0].split())
    assert found == explanations()
    assert set(found) == set(CODES)


def test_candidates_reports_in_text_or_json_only() -> None:
    result = blend(
        "validate", "--format", "sarif", SPECS / "ads.blend", "--candidates", "x.parquet"
    )
    assert result.exit_code == 2


# ---------------------------------------------------------------- ignores


def test_ignore_option() -> None:
    assert "W001" in blend("validate", MISSPELLED).output
    result = blend("validate", "--format", "json", "--ignore", "W001,W003", MISSPELLED, WARNINGS)
    codes = [[d["code"] for d in entry["diagnostics"]] for entry in json.loads(result.stdout)]
    assert codes == [["E200"], ["W002"]]
    strict = blend("validate", "--strict", "--ignore", "W001", "--ignore", "w002", WARNINGS)
    assert strict.exit_code == 0, strict.output  # nothing left to be strict about
    assert blend("validate", "--strict", "--ignore", "W001", WARNINGS).exit_code == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [("E200", "E200 is an error"), ("W001,E100,E200", "E100, E200 are errors"),
     ("W01", "unknown code W01")],
)  # fmt: skip
def test_errors_and_unknown_codes_cannot_be_ignored(value: str, message: str) -> None:
    result = blend("validate", "--ignore", value, MISSPELLED)
    assert result.exit_code == 2
    assert message in result.output


SPEC = """spec s
slate 5
input a: score
input spare: score{comment}
weight w = 1 in [0, 1]
objective o = a
utility = w * o
"""


def _warnings(comment: str, syntax: str = "dsl") -> list[tuple[str, int]]:
    text = SPEC.format(comment=comment)
    if syntax == "yaml":
        from blendspec.spec.emit import to_yaml

        loaded = load_text(text, "dsl")
        text = to_yaml(loaded.spec, loaded.document)
    loaded = load_text(text, syntax)  # type: ignore[arg-type]
    return [(d.code, d.span.line if d.span else 0) for d in loaded.warnings]


@pytest.mark.parametrize("syntax", ["dsl", "yaml"])
def test_inline_ignores(syntax: str) -> None:
    line = 4 if syntax == "dsl" else 5  # where `spare` is declared
    assert _warnings("", syntax) == [("W001", line)]
    assert _warnings("  # blend: ignore[W001]", syntax) == []
    assert _warnings("  # spare column · blend: ignore[W003, W001]", syntax) == []
    assert _warnings("  # blend: ignore", syntax) == []  # every warning on the line
    assert _warnings("  # blend: ignore[W003]", syntax) == [("W001", line)]


def test_an_ignore_comment_covers_its_own_line_only() -> None:
    text = SPEC.format(comment="").replace("input a: score", "input a: score  # blend: ignore")
    assert [d.code for d in load_text(text, "dsl").warnings] == ["W001"]


def test_an_ignore_comment_cannot_silence_an_error() -> None:
    text = SPEC.format(comment="").replace(
        "objective o = a", "objective o = b  # blend: ignore[E200]"
    )
    with pytest.raises(Exception) as caught:
        load_text(text, "dsl")
    found = sorted((d.code, d.message) for d in caught.value.diagnostics)  # type: ignore[attr-defined]
    assert ("E200", "unknown input `b`") in found
    assert ("W005", "`E200` is an error, and errors cannot be ignored") in found


def test_an_unknown_code_in_an_ignore_comment_is_named() -> None:
    warnings = load_text(SPEC.format(comment="  # blend: ignore[W01]"), "dsl").warnings
    w005 = next(d for d in warnings if d.code == "W005")
    assert w005.message == "unknown code `W01` in an ignore comment"
    assert w005.help == "did you mean `W001`?"
    assert w005.span == Span(4, 37, 4, 40)
    assert "W001" in [d.code for d in warnings]


# ---------------------------------------------------------------- stdin


def test_stdin() -> None:
    text = MISSPELLED.read_text()
    result = blend("validate", "-", "--stdin-filename", "specs/feed.blend", input=text)
    assert result.exit_code == 1
    assert "--> specs/feed.blend:12:19" in result.output
    anonymous = blend("validate", "--format", "json", "-", input=WARNINGS.read_text())
    assert anonymous.exit_code == 0  # YAML, guessed from the text
    assert json.loads(anonymous.stdout)[0]["file"] == "<stdin>"
    assert blend("validate", "-", "-", input=text).exit_code == 2
    assert blend("validate", MISSPELLED, "--stdin-filename", "x.blend").exit_code == 2


# ---------------------------------------------------------------- the plain way in


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BLENDSPEC_DEBUG", "FORCE_COLOR")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def test_plain_validate_answers_as_the_typer_command(tmp_path: Path) -> None:
    """The new options run without typer too (cli/validating.plain_arguments); BLENDSPEC_DEBUG
    sends every command line to the typer app, so with and without it the answers match."""
    lines = [
        ["validate", "--format", "github", str(MISSPELLED), str(WARNINGS)],
        ["validate", "--format=sarif", "--ignore", "W001", str(MISSPELLED)],
        ["validate", "--ignore=W001,W002", "--strict", str(WARNINGS)],
        ["validate", "--ignore", "E200", str(MISSPELLED)],
        ["validate", "-", "--stdin-filename", "feed.blend"],
        ["validate", str(SPECS)],
        ["validate", str(REPO / "tests" / "golden"), "--exclude", "errors", "--exclude=diff"],
    ]
    for line in lines:
        answers = []
        for debug in ({}, {"BLENDSPEC_DEBUG": "1"}):
            done = subprocess.run(
                [sys.executable, "-m", "blendspec", *line],
                input=MISSPELLED.read_bytes(),
                capture_output=True,
                cwd=tmp_path,
                env={**_env(), **debug},
                timeout=120,
            )
            answers.append((done.returncode, done.stdout, done.stderr))
        assert answers[0] == answers[1], line


def test_plain_arguments() -> None:
    from blendspec.cli.validating import ValidateFormat, plain_arguments

    parsed = plain_arguments(
        ["validate", "-", "--ignore", "W001", "--ignore=W002", "--stdin-filename=a.blend",
         "specs", "--exclude", "x", "--exclude=y/z"]
    )  # fmt: skip
    assert parsed == {
        "specs": [Path("-"), Path("specs")], "output": ValidateFormat.text, "strict": False,
        "candidates": None, "ignore": ["W001", "W002"], "stdin_filename": Path("a.blend"),
        "exclude": ["x", "y/z"],
    }  # fmt: skip
    for odd in (
        ["validate", "a.blend", "--stdin-filename", "x", "--stdin-filename", "y"],
        ["validate", "a.blend", "--ignore"],
        ["validate", "a.blend", "--ignore", "--strict"],
        ["validate", "a.blend", "--format", "xml"],
        ["validate", "-h"],
    ):
        assert plain_arguments(odd) is None, odd
