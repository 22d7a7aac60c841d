"""`blend validate`'s work, without typer — and its way in without the typer app.

An editor or a pre-commit hook runs `blend validate` on every save, so its wall time is mostly
start-up (benchmarks/bench_validate.py: target ≤ 2× `python -c "import lark, yaml, pydantic"`).
Importing typer and building the app for all twelve commands costs about as much as the
validation itself, so `blendspec.cli.main` (the `blend` entry point) first offers the command
line to :func:`run_plain`: a plain `blend validate [--format text|json] [--strict] SPEC…` is run
here, with the exit codes, output and errors the typer command gives; anything else (help, other
commands, other options, any doubt about how click would read it) goes to the typer app,
unchanged. `blend validate` in the typer app (blendspec.cli.spec) runs :func:`validate_specs`
too, so there is one implementation of the command.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

from blendspec.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    OutputFormat,
    fail,
    load,
    print_marked,
    show_diagnostics,
)
from blendspec.spec.diagnostics import SpecError, render_text, to_json
from blendspec.spec.loader import LoadedSpec


def validate_specs(
    specs: list[Path], output: OutputFormat, strict: bool, candidates: Path | None
) -> int:
    """Parse, type-check and lint `specs` (and check a dump against the one spec): the exit code."""
    if candidates is not None and len(specs) != 1:
        fail("--candidates checks a dump against exactly one spec", EXIT_USAGE)
    failed = False
    report: list[dict[str, object]] = []
    for path in specs:
        try:
            loaded = load(path)
        except SpecError as error:
            failed = True
            report.append(
                {
                    "file": str(path),
                    "ok": False,
                    "diagnostics": [to_json(error.source, d) for d in error.diagnostics],
                }
            )
            show_diagnostics(error, output)
            continue
        warnings = loaded.warnings
        if strict and warnings:
            failed = True
        report.append(
            {
                "file": str(path),
                "ok": not (strict and warnings),
                "diagnostics": [to_json(loaded.document.source, d) for d in warnings],
            }
        )
        if output is OutputFormat.text:
            if warnings:
                from blendspec.io.console import stderr_console

                stderr_console().print(render_text(loaded.document.source, warnings, color=True))
            count = len(warnings)
            suffix = f" ({count} warning{'s' * (count != 1)})" if count else ""
            print_marked("ok", "green", f" {path}{suffix}")
    if candidates is not None and not failed:
        dump_ok, dump_json = _validate_dump(load(specs[0]), candidates, output)
        report.append(dump_json)
        failed = not dump_ok
    if output is OutputFormat.json:
        import json

        print(json.dumps(report, indent=2))
    return EXIT_FAILED if failed else EXIT_OK


def _validate_dump(
    loaded: LoadedSpec, candidates: Path, output: OutputFormat
) -> tuple[bool, dict[str, object]]:
    from rich.markup import escape

    from blendspec.io.console import stderr_console, stdout_console
    from blendspec.io.dump import DumpError, validate_dump

    try:
        report = validate_dump(candidates, loaded.spec)
    except DumpError as error:
        stderr_console().print(f"[bold red]error[/bold red]: {escape(str(error))}")
        return False, {"dump": str(candidates), "ok": False, "error": str(error)}
    if output is OutputFormat.text:
        out = stdout_console()
        out.print(
            f"dump {candidates} against {loaded.document.source.name}: "
            f"{report.requests:,} requests, {report.rows:,} rows"
        )
        for check in report.checks:
            mark = "[green]PASS[/green]" if check.ok else "[bold red]FAIL[/bold red]"
            line = f"  {mark}  {check.name}"
            if check.failed_requests:
                line += f" — {check.failed_requests:,} request{'s' * (check.failed_requests > 1)}"
            out.print(line)
            for example in ([check.detail] if check.detail else []) + check.examples:
                out.print(f"        {example}")
    return report.ok, {
        "dump": str(candidates),
        "ok": report.ok,
        "requests": report.requests,
        "rows": report.rows,
        "checks": [
            {"name": c.name, "ok": c.ok, "failed_requests": c.failed_requests,
             "examples": c.examples, "detail": c.detail}
            for c in report.checks
        ],
    }  # fmt: skip


# ---------------------------------------------------------------- the way in without typer

_FORMATS = {f.value: f for f in OutputFormat}


def plain_arguments(args: list[str]) -> tuple[list[Path], OutputFormat, bool] | None:
    """`validate`'s specs, format and strictness from a command line that click would read the
    same way — or None: anything but `validate` followed by spec paths, `--strict`, `--no-strict`
    and one valid `--format X` / `--format=X` (in any order). A path that starts with `-`, a
    repeated `--format`, `--` and every other option are left to click, which also owns their
    errors and help."""
    if len(args) < 2 or args[0] != "validate":
        return None
    specs: list[Path] = []
    output: OutputFormat | None = None
    strict = False
    rest = iter(args[1:])
    for arg in rest:
        if arg in ("--strict", "--no-strict"):
            strict = arg == "--strict"
        elif arg == "--format" or arg.startswith("--format="):
            value = arg.partition("=")[2] if "=" in arg else next(rest, None)
            if output is not None or value not in _FORMATS:
                return None
            output = _FORMATS[value]
        elif arg and not arg.startswith("-"):
            specs.append(Path(arg))
        else:
            return None
    if not specs:
        return None
    return specs, output or OutputFormat.text, strict


def _completion_requested() -> bool:
    """Click answers shell completion when `_<PROG>_COMPLETE` is set (whatever the program is
    called): leave that to it."""
    return any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ)


def run_plain(args: list[str]) -> int | None:
    """Run a plain `blend validate` command line as the typer app would, returning its exit
    code; None (having done nothing) for any other command line."""
    parsed = plain_arguments(args)
    if parsed is None or os.environ.get("BLENDSPEC_DEBUG") or _completion_requested():
        return None  # BLENDSPEC_DEBUG: tracebacks as typer shows them
    specs, output, strict = parsed
    # What click's standalone mode does around a command (typer.core._main), for what
    # validate can raise: an interrupt exits 130, a closed pipe exits 1 quietly.
    try:
        return validate_specs(specs, output, strict, None)
    except KeyboardInterrupt:
        return 130
    except EOFError:
        from typer._click import echo
        from typer.rich_utils import rich_abort_error

        echo(file=sys.stderr)
        rich_abort_error()
        return 1
    except OSError as error:
        if error.errno != errno.EPIPE:
            raise
        from typer._click.utils import PacifyFlushWrapper

        sys.stdout = PacifyFlushWrapper(sys.stdout)  # type: ignore[assignment]
        sys.stderr = PacifyFlushWrapper(sys.stderr)  # type: ignore[assignment]
        return 1
