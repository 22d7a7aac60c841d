"""`blend lsp` — the language server, for editors (docs/editors.md)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer


def lsp(
    stdio: Annotated[
        bool,
        typer.Option(
            "--stdio",
            help="Talk over stdin and stdout: the only transport, used with or without the flag (editors' clients pass it).",
        ),
    ] = False,
) -> None:
    """Run the language server for .blend and spec YAML files over stdin/stdout.

    Diagnostics as `blend validate` reports them, hover, completion, go-to-definition, references, the outline, and formatting as `blend fmt` does. An editor starts it: see docs/editors.md.
    """
    from blendspec.lsp.server import serve

    code = serve(sys.stdin.buffer, sys.stdout.buffer)
    # Leave at once: the thread reading stdin may be blocked in a read, and an interpreter
    # shutting down around a daemon thread that holds stdin's lock aborts (SIGABRT).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
