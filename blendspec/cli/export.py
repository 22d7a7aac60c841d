"""`blend export`: the command; building and tracing the artifact live in blendspec.serve."""

from __future__ import annotations

import os
import time
from enum import StrEnum
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
from blendspec.cli.options import Quiet
from blendspec.io.console import stderr_console, stdout_console


class Isa(StrEnum):
    native = "native"
    avx2 = "avx2"


def export_command(
    spec: Annotated[Path, typer.Argument(help="Spec file.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Artifact to write (a .pt2 file).")
    ],
    aot: Annotated[
        bool,
        typer.Option(
            "--aot",
            help="Compile the program with AOTInductor into a .pt2 package that runs on torch's "
            "libraries alone (Python or C++), no compiler on the serving host. Needs a C++ "
            "compiler here; tied to this platform, torch version and --isa.",
        ),
    ] = False,
    isa: Annotated[
        Isa | None,
        typer.Option(
            "--isa",
            help="With --aot: the instruction set to compile for: native (this CPU) or avx2 "
            "(any x86-64 with AVX2/FMA). Default native.",
            case_sensitive=False,
        ),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Export the compiled spec as one torch.export artifact a model server loads with torch alone
    (with --aot: an AOTInductor package)."""
    from rich.markup import escape
    from rich.table import Table

    from blendspec.serve.export import ExportError, export_spec

    if isa is not None and not aot:
        fail("--isa applies to an AOTInductor package: add --aot", EXIT_USAGE)
    guard_outputs([("spec", spec)], [("--output", output)])
    loaded = load_or_exit(spec)
    guard_outputs([("spec", spec), policy_input(loaded)], [("--output", output)])
    target = (isa or Isa.native).value
    try:
        stages_total = len(_AOT_STAGES) if aot else len(_PLAIN_STAGES)
        with _Stages(stderr_console(quiet=quiet), escape(spec.name), stages_total) as tell:
            result = export_spec(loaded, output, aot=aot, isa=target, progress=tell)
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
    stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.stages.items())
    kind = "torch.export program"
    if meta.target is not None:
        t = meta.target
        kind = (
            f"AOTInductor package for {t['system']}/{t['machine']}, torch {meta.torch_version}, "
            f"--isa {t['isa']} ({t['vec_isa']} vectors, -march={t['march']})"
        )
    stdout_console().print(
        f"outputs: {', '.join(meta.outputs)}\n"
        f"slate {meta.slate_length}; N a multiple of {meta.candidate_multiple}, B and N dynamic; "
        f"spec hash {meta.spec_hash}\n"
        f"{escape(kind)}: {result.bytes / 1e6:.1f} MB in {result.seconds:.1f} s ({stages})"
    )


_PLAIN_STAGES = ("exporting",)
_AOT_STAGES = ("exporting", "compiling with AOTInductor", "packaging")
"""The stages `export_spec` tells, in order: each is one opaque call into torch (tracing, the
C++ compile), so the display counts stages and times the one in progress instead of a rate."""


class _Stages:
    """A spinner on stderr naming the stage in progress and its place among the stages, with the
    time spent in it (hidden when stderr is not a terminal or with --quiet, like the other
    progress displays); the summary line gives every stage's time at the end."""

    def __init__(self, console, spec: str, total: int) -> None:  # type: ignore[no-untyped-def]
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        from blendspec.io.console import shows_progress

        self.spec = spec
        self.total = total
        self.done = 0
        self.progress = Progress(
            SpinnerColumn(),
            TimeElapsedColumn(),  # before the text, which a narrow terminal cuts
            TextColumn("{task.description}"),
            console=console,
            transient=True,
            disable=not shows_progress(console),
        )
        self.task = None
        self.started = time.perf_counter()

    def __enter__(self):  # type: ignore[no-untyped-def]
        self.progress.__enter__()
        return self.tell

    def tell(self, stage: str) -> None:
        hints = {
            "exporting": "tracing the graph",
            "compiling with AOTInductor": "C++, tens of seconds",
            "packaging": "writing the .pt2",
        }
        self.done += 1
        hint = hints.get(stage)
        place = f"stage {self.done}/{max(self.total, self.done)}"
        text = f"{place}: {stage} {self.spec}{f' ({hint})' if hint else ''} …"
        if self.task is not None:
            self.progress.update(self.task, completed=1, visible=False)
        self.task = self.progress.add_task(text, total=1)

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]
