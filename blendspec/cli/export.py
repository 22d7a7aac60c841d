"""`blend export`: the command; building and tracing the artifact live in blendspec.serve."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from blendspec.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    fail,
    guard_outputs,
    load_or_exit,
    policy_input,
)
from blendspec.io.console import stderr_console, stdout_console


def export_command(
    spec: Annotated[Path, typer.Argument(help="Spec file.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Artifact to write (a torch.export .pt2 file).")
    ],
) -> None:
    """Export the compiled spec as one torch.export artifact a model server loads with torch alone."""
    from rich.markup import escape
    from rich.table import Table

    from blendspec.serve.export import ExportError, export_spec

    guard_outputs([("spec", spec)], [("--output", output)])
    loaded = load_or_exit(spec)
    guard_outputs([("spec", spec), policy_input(loaded)], [("--output", output)])
    with stderr_console().status(f"exporting {escape(str(spec))} (tracing the graph) …"):
        try:
            result = export_spec(loaded, output)
        except ExportError as error:
            if error.internal and os.environ.get("BLENDSPEC_DEBUG"):
                raise
            fail(str(error), EXIT_USAGE if error.internal else EXIT_FAILED)
    meta = result.metadata
    table = Table(
        title=f"{escape(str(output))}: the program's inputs, in order", title_justify="left"
    )
    for column in ("input", "kind", "dtype", "shape"):
        table.add_column(column)
    for c in meta.inputs:
        table.add_row(escape(c.name), c.kind, c.dtype, escape(str(c.shape)))
    stdout_console().print(table)
    stdout_console().print(
        f"outputs: {', '.join(meta.outputs)}\n"
        f"slate {meta.slate_length}; N a multiple of {meta.candidate_multiple}, B and N dynamic; "
        f"spec hash {meta.spec_hash}; {result.bytes / 1e6:.1f} MB in {result.seconds:.1f} s"
    )
