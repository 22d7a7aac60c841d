"""`blend explain`: the command; the tracing and the breakdown live in blendspec.explain."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from blendspec.cli.common import EXIT_FAILED, EXIT_USAGE, fail, load_or_exit
from blendspec.cli.options import Quiet
from blendspec.io.console import stderr_console, stdout_console


class ExplainFormat(StrEnum):
    text = "text"
    json = "json"


def explain_command(
    spec: Annotated[Path, typer.Argument(help="Spec file.")],
    request: Annotated[str, typer.Option("--request", help="The request id to explain.")],
    candidates: Annotated[
        Path | None,
        typer.Option(help="Candidate dump (Parquet or JSON Lines); default: the bundled sample."),
    ] = None,
    top: Annotated[
        int | None, typer.Option(min=1, help="Show the first K positions (default: all).")
    ] = None,
    why_id: Annotated[
        str | None,
        typer.Option(
            "--why",
            metavar="CANDIDATE_ID",
            help="Explain one candidate instead: where utility alone would put it, and what "
            "beat it at each step before it was placed.",
        ),
    ] = None,
    output: Annotated[
        ExplainFormat, typer.Option("--format", help="text (a table) or json")
    ] = ExplainFormat.text,
    quiet: Quiet = False,
) -> None:
    """Why each item of one request's slate landed where it did: every position's score split
    into relevance (and the utility's weight × objective parts), diversity and penalties, caps,
    and the runner-up with its margin."""
    from blendspec.compiler.lower import MissingLowering
    from blendspec.explain.breakdown import (
        TEXT_WIDTH,
        ExplainError,
        Explanation,
        Why,
        explain,
        render_json,
        render_text,
        render_why_text,
        trace_request,
        why,
    )
    from blendspec.io.dump import DumpError

    loaded = load_or_exit(spec)
    try:
        if candidates is None:
            from blendspec.io.sample import sample_dump

            console = stderr_console(quiet=quiet)
            candidates = sample_dump(loaded.spec, progress=console.print)
        traced = trace_request(loaded, candidates, request)
        result: Explanation | Why = explain(traced, top) if why_id is None else why(traced, why_id)
    except ExplainError as error:
        fail(str(error), EXIT_FAILED, error.help)
    except (DumpError, MissingLowering) as error:
        fail(str(error), EXIT_FAILED)
    except ValueError as error:
        fail(str(error), EXIT_USAGE)
    if output is ExplainFormat.json:
        text = render_json(result)
    else:
        out = stdout_console()
        width = max(out.width, 100) if out.is_terminal else TEXT_WIDTH
        text = (
            render_text(result, width)
            if isinstance(result, Explanation)
            else render_why_text(result, width)
        )
    sys.stdout.write(text)
    sys.stdout.flush()
