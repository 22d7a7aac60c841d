"""The spec commands — `blend validate`, `blend fmt`, `blend graph`, `blend schema`.

They read and write spec text only, so this module and what it imports at load time stay free of
torch and the operators (tests/test_layers.py checks it): an editor or a pre-commit hook runs
them on every save.
"""

from __future__ import annotations

import difflib
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from blendspec.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    OutputFormat,
    fail,
    guard_outputs,
    load,
    load_or_exit,
    policy_input,
    show_diagnostics,
    write_atomic,
    writes_files,
)
from blendspec.cli.validating import validate_specs
from blendspec.io.console import stderr_console
from blendspec.spec.diagnostics import SpecError


class GraphFormat(StrEnum):
    text = "text"
    dot = "dot"
    json = "json"


class SpecSyntax(StrEnum):
    yaml = "yaml"
    dsl = "dsl"


def validate(
    specs: Annotated[list[Path], typer.Argument(help="Spec files (*.blend, *.yaml).")],
    output: Annotated[
        OutputFormat, typer.Option("--format", help="text or json")
    ] = OutputFormat.text,
    strict: Annotated[bool, typer.Option(help="Treat warnings as failures.")] = False,
    candidates: Annotated[
        Path | None, typer.Option(help="Also check this candidate dump against the (one) spec.")
    ] = None,
) -> None:
    """Parse, type-check and lint specs; with --candidates, check a dump against the spec."""
    raise typer.Exit(validate_specs(specs, output, strict, candidates))


@writes_files
def fmt(
    specs: Annotated[list[Path], typer.Argument(help="Spec files to format in place.")],
    check: Annotated[bool, typer.Option(help="Only report files that are not canonical.")] = False,
    to: Annotated[
        SpecSyntax | None, typer.Option(help="Convert to this syntax (to stdout or -o).")
    ] = None,
    out: Annotated[Path | None, typer.Option("-o", "--output", help="Where --to writes.")] = None,
) -> None:
    """Canonical formatting, and conversion between YAML and the DSL."""
    from blendspec.spec.emit import to_dsl, to_yaml
    from blendspec.spec.syntax import syntax_of

    if out is not None and (to is None or len(specs) != 1):
        fail("-o/--output goes with --to and exactly one spec", EXIT_USAGE)
    if out is not None and to is not None and syntax_of(out) not in (None, to.value):
        # A .blend file holding YAML (or the reverse) fails every later command on it.
        fail(
            f"-o {out} names a {syntax_of(out)} file, but --to {to.value} writes {to.value}",
            EXIT_USAGE,
        )
    guard_outputs([("spec", p) for p in specs], [("-o", out)])
    failed = False
    for path in specs:
        try:
            loaded = load(path)
        except SpecError as error:
            show_diagnostics(error, OutputFormat.text)
            failed = True
            continue
        if to is not None:
            text = (to_yaml if to is SpecSyntax.yaml else to_dsl)(loaded.spec, loaded.document)
            if out is None:
                sys.stdout.write(text)
            else:
                guard_outputs([("spec", path), policy_input(loaded)], [("-o", out)])
                write_atomic(out.resolve(), text)  # through a symlink, not over it
            continue
        emitter = to_yaml if loaded.document.syntax == "yaml" else to_dsl
        text = emitter(loaded.spec, loaded.document)
        if text == loaded.document.source.text:
            continue
        if check:
            failed = True
            stderr_console().print(f"[yellow]would reformat[/yellow] {path}")
            diff = difflib.unified_diff(
                loaded.document.source.text.splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile=str(path),
                tofile=f"{path} (formatted)",
            )
            sys.stderr.write("".join(diff))
        else:
            write_atomic(path.resolve(), text)  # a symlinked spec stays a symlink
            stderr_console().print(f"reformatted {path}")
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def graph(
    spec: Annotated[Path, typer.Argument(help="Spec file.")],
    output: Annotated[
        GraphFormat, typer.Option("--format", help="text, dot or json")
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
