"""The `blend` command line (DESIGN §6). Exit codes: 0 success, 1 the check failed, 2 usage or
internal error. Diagnostics go to stderr; no user error ever shows a traceback.

One module per command group: ``spec`` (validate, fmt, graph, schema), ``run`` (run, simulate),
``policy`` (policy train | eval | report), ``diff``, ``explain``, ``export``; ``common`` holds
what they share. Each imports the library it drives inside the command, so `blend --help` and the
spec commands never import torch (tests/test_layers.py).
"""

from __future__ import annotations

import os
import sys

import typer
from rich.markup import escape

from blendspec.cli import diff, explain, export, policy, run, spec
from blendspec.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, writes_files
from blendspec.io.console import stderr_console
from blendspec.io.outputs import environment_message

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "app", "main"]

app = typer.Typer(
    name="blend",
    help="Declare, validate, compile and run the blending layer of a recommender.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# torch's allocator puts large tensors on transparent huge pages when asked: a batch's padded
# inputs and feature map are ~100 MB each, allocated afresh per batch, and with 4 KiB pages
# their first touch costs a page fault per page (`blend run` measured ~8% faster with it).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

# The order here is the order of `blend --help`.
app.command()(spec.validate)
app.command()(spec.fmt)
app.command()(spec.graph)
app.command()(spec.schema)
app.command("run")(run.run_command)
app.command()(run.simulate)
app.add_typer(policy.app, name="policy")
# diff and explain write nothing but stdout: no output path to guard.
app.command("diff")(diff.diff_command)
app.command("explain")(explain.explain_command)
app.command("export")(writes_files(export.export_command))


def main() -> None:
    """Console-script entry: user errors are diagnostics, anything else an internal error (exit 2)."""
    try:
        app()  # standalone: click turns usage errors into exit 2 and typer.Exit into its code
    except SystemExit:
        raise
    except KeyboardInterrupt:
        stderr_console().print("interrupted")
        sys.exit(130)
    except Exception as error:  # the last line of defence against a traceback
        if os.environ.get("BLENDSPEC_DEBUG"):
            raise
        message = environment_message(error)  # a full disk is not a bug in blendspec
        if message is not None:
            stderr_console().print(f"[bold red]error[/bold red]: {escape(message)}")
            sys.exit(EXIT_USAGE)
        stderr_console().print(
            f"internal error: {type(error).__name__}: {error}\n"
            "this is a bug in blendspec; set BLENDSPEC_DEBUG=1 to see the traceback"
        )
        sys.exit(EXIT_USAGE)
