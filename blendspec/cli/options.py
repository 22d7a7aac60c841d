"""Options several commands share, declared once so their flags and help read the same everywhere.

Its own module, not :mod:`blendspec.cli.common`: that one must stay importable without typer
(`blend validate`'s plain path), and these are typer declarations.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

Quiet = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="No progress bars or notes on stderr; errors and results still print.",
    ),
]
"""``--quiet``/``-q``: for scripts and logs that run on a terminal (off a terminal there are no bars
anyway)."""


def root_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            help="Print blendspec's version and exit.",
            is_eager=True,
            callback=_print_version,
        ),
    ] = False,
) -> None:
    """`blend`'s own options (before the command)."""


def _print_version(value: bool) -> None:
    if value:
        from blendspec.cli.version import version_line

        sys.stdout.write(version_line())
        raise typer.Exit()
