"""The spec commands — `blend validate`, `blend fmt`, `blend graph`, `blend schema`.

They read and write spec text only, so this module and what it imports at load time stay free of
torch and the operators (tests/test_layers.py checks it): an editor or a pre-commit hook runs
them on every save.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from blendspec.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    OutputFormat,
    fail,
    guard_outputs,
    load_or_exit,
    policy_input,
    show_diagnostics,
    write_atomic,
    writes_files,
)
from blendspec.cli.validating import STDIN, ValidateFormat, expand_specs, validate_specs
from blendspec.io.console import stderr_console
from blendspec.spec.diagnostics import SpecError

if TYPE_CHECKING:
    from blendspec.spec.syntax import Document


class GraphFormat(StrEnum):
    text = "text"
    dot = "dot"
    json = "json"


class SpecSyntax(StrEnum):
    yaml = "yaml"
    dsl = "dsl"


_SPECS_HELP = (
    "Spec files (*.blend, *.yaml), folders (searched recursively for the specs `blend diff --git`"
    " finds: every *.blend, and YAML files with a top-level `inputs` or `utility`, less what git"
    " ignores) or `-` for standard input."
)
_EXCLUDE_HELP = (
    "Leave out, in the folders given, what matches this glob: a path below the folder"
    " (--exclude tests/golden) or, without a `/`, a file or folder name anywhere"
    " (--exclude '*.draft.blend'). Repeatable. Files named on the command line are always read."
)
_STDIN_FILENAME_HELP = (
    "The name shown for `-` (standard input) in messages; its suffix gives the syntax (else it is"
    " guessed from the text) and its folder the base of the spec's relative paths."
)


def validate(
    specs: Annotated[list[Path], typer.Argument(help=_SPECS_HELP, show_default=False)],
    output: Annotated[
        ValidateFormat,
        typer.Option(
            "--format",
            help="How to report: text (diagnostics on stderr), json (a report on stdout), github"
            " (GitHub Actions annotations on stdout) or sarif (a SARIF 2.1.0 log on stdout).",
        ),
    ] = ValidateFormat.text,
    strict: Annotated[
        bool, typer.Option(help="Treat warnings as failures (exit 1), after --ignore.")
    ] = False,
    ignore: Annotated[
        list[str] | None,
        typer.Option(
            "--ignore",
            metavar="CODES",
            help="Leave out these warnings, comma-separated or repeated: --ignore W001,W003."
            " Errors cannot be ignored. To ignore a warning on one line only, end the line with"
            " the comment # blend: ignore[W001].",
        ),
    ] = None,
    stdin_filename: Annotated[
        Path | None, typer.Option("--stdin-filename", metavar="NAME", help=_STDIN_FILENAME_HELP)
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", metavar="GLOB", help=_EXCLUDE_HELP)
    ] = None,
    candidates: Annotated[
        Path | None,
        typer.Option(
            help="Also check this candidate dump (Parquet or JSON Lines) against the spec;"
            " takes exactly one spec."
        ),
    ] = None,
) -> None:
    """Parse, type-check and lint specs; with --candidates, check a dump against the spec.

    Exit 0 when every spec is valid (warnings allowed unless --strict), 1 when one is not, 2 on a usage error. Codes and how to ignore a warning: docs/errors.md.
    """
    raise typer.Exit(
        validate_specs(
            specs, output, strict, candidates, ignore or (), stdin_filename, exclude or ()
        )
    )


@writes_files
def fmt(
    specs: Annotated[
        list[Path],
        typer.Argument(
            help=_SPECS_HELP.replace("standard input.", "standard input (written to stdout)."),
            show_default=False,
        ),
    ],
    check: Annotated[
        bool,
        typer.Option(
            help="Change nothing: name each spec that is not canonical, with a diff, on stderr,"
            " and exit 1 if there is one."
        ),
    ] = False,
    to: Annotated[
        SpecSyntax | None,
        typer.Option(
            help="Convert one spec to this syntax, to stdout or -o. It must pass the model's"
            " checks (fields, ranges); semantic errors do not stop it."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("-o", "--output", help="The file --to writes, not stdout.")
    ] = None,
    stdin_filename: Annotated[
        Path | None, typer.Option("--stdin-filename", metavar="NAME", help=_STDIN_FILENAME_HELP)
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", metavar="GLOB", help=_EXCLUDE_HELP)
    ] = None,
) -> None:
    """Format specs in place (canonical form, comments kept), or convert one between YAML and the DSL.

    Any spec that parses is formatted, valid or not: unknown names, wrong kinds and values out of range are `blend validate`'s to report. A spec that does not parse is left alone and its syntax error shown (exit 1).
    """
    from blendspec.spec.emit import format_document

    files = expand_specs(specs, exclude or ())
    if sum(p == STDIN for p in files) > 1:
        fail("`-` (standard input) can be given once", EXIT_USAGE)
    if stdin_filename is not None and STDIN not in files:
        fail("--stdin-filename names standard input: give `-` as the spec", EXIT_USAGE)
    if out is not None and to is None:
        fail("-o/--output goes with --to", EXIT_USAGE)
    if to is not None and len(files) != 1:
        fail("--to converts exactly one spec", EXIT_USAGE)
    if out is not None and to is not None:
        from blendspec.spec.syntax import syntax_of

        if syntax_of(out) not in (None, to.value):
            # A .blend file holding YAML (or the reverse) fails every later command on it.
            fail(
                f"-o {out} names a {syntax_of(out)} file, but --to {to.value} writes {to.value}",
                EXIT_USAGE,
            )
    guard_outputs([("spec", p) for p in files if p != STDIN], [("-o", out)])
    failed = False
    for path in files:
        try:
            document = _parse(path, stdin_filename)
        except SpecError as error:
            show_diagnostics(error, OutputFormat.text)
            failed = True
            continue
        if to is not None:
            failed = not _convert(path, document, to, out, stdin_filename) or failed
            continue
        text = format_document(document)
        name = str(stdin_filename or "<stdin>") if path == STDIN else str(path)
        changed = text != document.source.text
        if check:
            if changed:
                failed = True
                _show_reformat(name, document.source.text, text)
        elif path == STDIN:
            sys.stdout.write(text)
        elif changed:
            write_atomic(path.resolve(), text)  # a symlinked spec stays a symlink
            stderr_console().print(f"reformatted {escape(name)}")
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def _parse(path: Path, stdin_filename: Path | None) -> Document:
    """The parsed spec (file, or standard input for `-`), valid or not; raises SpecError."""
    from blendspec.spec.loader import read_source
    from blendspec.spec.syntax import parse_document

    if path == STDIN:
        from blendspec.cli.validating import stdin_source

        source, syntax, _ = stdin_source(stdin_filename)
        return parse_document(source, syntax)  # type: ignore[arg-type]
    source, syntax = read_source(path)
    return parse_document(source, syntax)


def _convert(
    path: Path, document: Document, to: SpecSyntax, out: Path | None, stdin: Path | None
) -> bool:
    """`fmt --to`: the spec in the other syntax, or its model errors (False)."""
    from blendspec.spec.emit import to_dsl, to_yaml
    from blendspec.spec.loader import LoadedSpec, build_model

    try:
        spec = build_model(document)
    except SpecError as error:
        show_diagnostics(error, OutputFormat.text)
        return False
    text = (to_yaml if to is SpecSyntax.yaml else to_dsl)(spec, document)
    if out is None:
        sys.stdout.write(text)
        return True
    where = (stdin or Path.cwd() / "<stdin>") if path == STDIN else path
    loaded = LoadedSpec(spec, document, (), where)
    inputs = [("spec", path if path != STDIN else None), policy_input(loaded)]
    guard_outputs(inputs, [("-o", out)])
    write_atomic(out.resolve(), text)  # through a symlink, not over it
    return True


def _show_reformat(name: str, before: str, after: str) -> None:
    import difflib

    stderr_console().print(f"[yellow]would reformat[/yellow] {escape(name)}")
    diff = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=name,
        tofile=f"{name} (formatted)",
    )
    sys.stderr.write("".join(diff))


def graph(
    spec: Annotated[
        Path,
        typer.Argument(help="Spec file (*.blend, *.yaml); it must validate.", show_default=False),
    ],
    output: Annotated[
        GraphFormat,
        typer.Option(
            "--format",
            help="text (one typed node a line), dot (Graphviz, for `dot -Tsvg`) or json (nodes,"
            " edges and types as data).",
        ),
    ] = GraphFormat.text,
) -> None:
    """Print the compiled, typed execution graph."""
    from blendspec.compiler.compile import compile_graph

    compiled = compile_graph(load_or_exit(spec))
    if output is GraphFormat.json:
        sys.stdout.write(json.dumps(compiled.to_json(), indent=2) + "\n")
    elif output is GraphFormat.dot:
        sys.stdout.write(compiled.to_dot())
    else:
        sys.stdout.write(compiled.to_text())


def schema() -> None:
    """JSON Schema of the YAML form, for editors' YAML language servers."""
    from blendspec.spec.schema import spec_json_schema

    sys.stdout.write(json.dumps(spec_json_schema(), indent=2) + "\n")
