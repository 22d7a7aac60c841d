"""`blend validate`'s work, without typer — and its way in without the typer app.

An editor or a pre-commit hook runs `blend validate` on every save, so its wall time is mostly
start-up (benchmarks/bench_validate.py: target ≤ 2× `python -c "import lark, yaml, pydantic"`).
Importing typer and building the app for all twelve commands costs about as much as the
validation itself, so `blendspec.cli.main` (the `blend` entry point) first offers the command
line to :func:`run_plain`: a plain `blend validate [--format F] [--strict] [--ignore CODES]
[--exclude GLOB] [--stdin-filename NAME] SPEC…` (SPEC a file, a folder or `-`) is run here,
with the exit codes, output and errors the typer command gives; anything else (help, other
commands, other options, any doubt about how click would read it) goes to the typer app,
unchanged. `blend validate` in the typer app (blendspec.cli.spec) runs :func:`validate_specs`
too, so there is one implementation of the command.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterable, Sequence
from enum import StrEnum
from pathlib import Path

from blendspec.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    fail,
    load,
    print_marked,
)
from blendspec.spec.diagnostics import CODES, Diagnostic, Source, SpecError, render_text, to_json
from blendspec.spec.loader import LoadedSpec


class ValidateFormat(StrEnum):
    text = "text"
    json = "json"
    github = "github"
    sarif = "sarif"


STDIN = Path("-")
"""The spec argument that reads standard input."""


# ---------------------------------------------------------------- which files


def expand_specs(paths: Sequence[Path], exclude: Sequence[str] = ()) -> list[Path]:
    """The spec files `paths` name: a file as given (whatever its name: a wrong one is E003),
    `-` as is, and a folder walked recursively for the files `blend diff --git` takes as specs
    — every `*.blend`, and the YAML files with a top-level `inputs` or `utility` (so workflow and
    compose files beside them are left alone) — skipping what git ignores and what `exclude`
    names (:func:`excluded`), in path order."""
    files: list[Path] = []
    for path in paths:
        if path != STDIN and path.is_dir():
            found = [
                p for p in spec_files_under(path) if not excluded(p.relative_to(path), exclude)
            ]
            if not found:
                print_marked("warning", "yellow", f": no spec files under {path}")
            files += found
        else:
            files.append(path)
    return files


def excluded(relative: Path, patterns: Sequence[str]) -> bool:
    """Whether a file found in a folder walk is left out by `--exclude`: a glob with a `/`
    matches the path below the folder given or one of its parent folders (`tests/golden`); one
    without matches a file or folder name anywhere (`fixtures`, `*.draft.blend`)."""
    if not patterns:
        return False
    from fnmatch import fnmatchcase

    parts = relative.as_posix().split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        pattern = pattern.strip("/")
        candidates = prefixes if "/" in pattern else parts
        if pattern and any(fnmatchcase(c, pattern) for c in candidates):
            return True
    return False


def spec_files_under(folder: Path) -> list[Path]:
    """Spec files below `folder` (see :func:`expand_specs`)."""
    from blendspec.review.git import looks_like_spec  # the one rule, shared with diff --git
    from blendspec.spec.syntax import syntax_of

    found = []
    for path in _candidate_files(folder):
        if syntax_of(path) is None:
            continue
        try:
            text = "" if syntax_of(path) == "dsl" else path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            text = "inputs:"  # unreadable: let validation report it (E002) rather than skip it
        if looks_like_spec(str(path), text):
            found.append(path)
    return sorted(found)


def _candidate_files(folder: Path) -> Iterable[Path]:
    """Every file below `folder` that git does not ignore: in a work tree, those git lists as
    tracked or untracked-and-not-ignored (what `diff --git` compares); elsewhere, or in a folder
    git ignores as a whole, a walk that skips hidden folders (`.git`, `.venv`, …)."""
    import subprocess

    try:
        done = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "."],
            cwd=folder,
            capture_output=True,
            check=False,
        )
    except OSError:
        done = None
    if done is not None and done.returncode == 0:
        names = sorted({n for n in done.stdout.decode("utf-8", "surrogateescape").split("\0") if n})
        if names or not _ignored_by_git(folder):
            return [folder / n for n in names if (folder / n).is_file()]
        # A folder git ignores, named on the command line: its files are what was asked for.
    files = []
    for root, folders, names in os.walk(folder):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        files += [Path(root) / n for n in names]
    return files


def _ignored_by_git(folder: Path) -> bool:
    import subprocess

    try:
        done = subprocess.run(
            ["git", "check-ignore", "-q", "."], cwd=folder, capture_output=True, check=False
        )
    except OSError:
        return False
    return done.returncode == 0


# ---------------------------------------------------------------- reading stdin


def stdin_source(stdin_filename: Path | None) -> tuple[Source, str, Path]:
    """Standard input as a spec: its source (named by --stdin-filename, else `<stdin>`), its
    syntax (the name's, else guessed from the text) and the folder the spec's relative paths
    are resolved from (the name's, else the current one)."""
    from blendspec.spec.syntax import guess_syntax, syntax_of

    text = sys.stdin.read()
    name = str(stdin_filename) if stdin_filename is not None else "<stdin>"
    syntax = (syntax_of(stdin_filename) if stdin_filename is not None else None) or guess_syntax(
        text
    )
    base_dir = stdin_filename.parent if stdin_filename is not None else Path.cwd()
    return Source(name, text), syntax, base_dir


def load_any(path: Path, stdin_filename: Path | None) -> LoadedSpec:
    """A spec file, or standard input for `-`; raises SpecError."""
    if path != STDIN:
        return load(path)
    from blendspec.spec.loader import load_source

    source, syntax, base_dir = stdin_source(stdin_filename)
    return load_source(source, syntax, base_dir=base_dir)  # type: ignore[arg-type]


# ---------------------------------------------------------------- ignores


def ignored_codes(values: Iterable[str]) -> frozenset[str]:
    """The codes of `--ignore` (repeated, or comma-separated); exit 2 for an unknown code or an
    error's (errors cannot be ignored: docs/errors.md)."""
    codes = {c.strip().upper() for v in values for c in v.split(",") if c.strip()}
    unknown = sorted(c for c in codes if c not in CODES)
    if unknown:
        from blendspec.spec.diagnostics import did_you_mean

        hint = did_you_mean(unknown[0], CODES)
        fail(f"--ignore: unknown code {', '.join(unknown)}", EXIT_USAGE, hint)
    errors = sorted(c for c in codes if c.startswith("E"))
    if errors:
        fail(
            f"--ignore: {', '.join(errors)} {'is an error' if len(errors) == 1 else 'are errors'}"
            ", and errors cannot be ignored",
            EXIT_USAGE,
            "only warnings (W…) can be ignored; an error means the spec cannot run",
        )
    return frozenset(codes)


# ---------------------------------------------------------------- the command


def validate_specs(
    specs: Sequence[Path],
    output: ValidateFormat | str,
    strict: bool,
    candidates: Path | None,
    ignore: Iterable[str] = (),
    stdin_filename: Path | None = None,
    exclude: Sequence[str] = (),
) -> int:
    """Parse, type-check and lint `specs` (and check a dump against the one spec): the exit code."""
    output = ValidateFormat(output)
    ignored = ignored_codes(ignore)
    if candidates is not None and output in (ValidateFormat.github, ValidateFormat.sarif):
        fail(f"--candidates reports in text or json, not {output}", EXIT_USAGE)
    files = expand_specs(specs, exclude)
    if sum(p == STDIN for p in files) > 1:
        fail("`-` (standard input) can be given once", EXIT_USAGE)
    if stdin_filename is not None and STDIN not in files:
        fail("--stdin-filename names standard input: give `-` as the spec", EXIT_USAGE)
    if candidates is not None and len(files) != 1:
        fail("--candidates checks a dump against exactly one spec", EXIT_USAGE)
    failed = False
    found: list[tuple[Source, list[Diagnostic]]] = []
    report: list[dict[str, object]] = []
    loaded_one: LoadedSpec | None = None
    for path in files:
        shown = (stdin_filename or "<stdin>") if path == STDIN else path
        try:
            loaded = load_any(path, stdin_filename)
        except SpecError as error:
            source = error.source
            diagnostics = [d for d in error.diagnostics if d.code not in ignored]
            errors = True
        else:
            loaded_one = loaded
            source = loaded.document.source
            diagnostics = [d for d in loaded.warnings if d.code not in ignored]
            errors = False
        ok = not errors and not (strict and diagnostics)
        failed = failed or not ok
        found.append((source, diagnostics))
        report.append(
            {
                "file": str(shown),
                "ok": ok,
                "diagnostics": [to_json(source, d) for d in diagnostics],
            }
        )
        if output is ValidateFormat.text:
            if diagnostics:
                from blendspec.io.console import stderr_console

                stderr_console().print(render_text(source, diagnostics, color=True))
            if not errors:
                count = len(diagnostics)
                suffix = f" ({count} warning{'s' * (count != 1)})" if count else ""
                print_marked("ok", "green", f" {shown}{suffix}")
    if candidates is not None and loaded_one is not None and not failed:
        dump_ok, dump_json = _validate_dump(loaded_one, candidates, output)
        report.append(dump_json)
        failed = not dump_ok
    if output is ValidateFormat.json:
        import json

        print(json.dumps(report, indent=2))
    elif output is ValidateFormat.github:
        from blendspec.spec.diagnostics import render_github

        sys.stdout.write("".join(render_github(s, d) for s, d in found))
    elif output is ValidateFormat.sarif:
        import json

        from blendspec.spec.sarif import sarif_log

        print(json.dumps(sarif_log(found), indent=2))
    return EXIT_FAILED if failed else EXIT_OK


def _validate_dump(
    loaded: LoadedSpec, candidates: Path, output: ValidateFormat
) -> tuple[bool, dict[str, object]]:
    from rich.markup import escape

    from blendspec.io.console import stderr_console, stdout_console
    from blendspec.io.dump import DumpError, validate_dump

    try:
        report = validate_dump(candidates, loaded.spec)
    except DumpError as error:
        stderr_console().print(f"[bold red]error[/bold red]: {escape(str(error))}")
        return False, {"dump": str(candidates), "ok": False, "error": str(error)}
    if output is ValidateFormat.text:
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

_FORMATS = {f.value: f for f in ValidateFormat}


def plain_arguments(args: list[str]) -> dict[str, object] | None:
    """:func:`validate_specs`'s arguments from a command line that click would read the same
    way — or None: anything but `validate` followed by spec paths (files, folders, `-`),
    `--strict`, `--no-strict`, one valid `--format X`, any number of `--ignore X` and
    `--exclude X`, and one `--stdin-filename X` (also as `--option=X`, in any order). A path that starts with `-` (but
    `-` itself), a repeated `--format` or `--stdin-filename`, a missing value, `--` and every
    other option are left to click, which also owns their errors and help."""
    if len(args) < 2 or args[0] != "validate":
        return None
    specs: list[Path] = []
    output: ValidateFormat | None = None
    strict = False
    ignore: list[str] = []
    exclude: list[str] = []
    stdin_filename: Path | None = None
    rest = iter(args[1:])
    for arg in rest:
        name, equals, inline = arg.partition("=")
        if arg in ("--strict", "--no-strict"):
            strict = arg == "--strict"
        elif name in ("--format", "--ignore", "--exclude", "--stdin-filename"):
            value = inline if equals else next(rest, None)
            if value is None or (value.startswith("-") and not equals):
                return None  # click's error (or an option read as a value): leave it to click
            if name == "--format":
                if output is not None or value not in _FORMATS:
                    return None
                output = _FORMATS[value]
            elif name == "--ignore":
                ignore.append(value)
            elif name == "--exclude":
                exclude.append(value)
            else:
                if stdin_filename is not None or not value:
                    return None
                stdin_filename = Path(value)
        elif arg == "-" or (arg and not arg.startswith("-")):
            specs.append(Path(arg))
        else:
            return None
    if not specs:
        return None
    return {
        "specs": specs,
        "output": output or ValidateFormat.text,
        "strict": strict,
        "candidates": None,
        "ignore": ignore,
        "stdin_filename": stdin_filename,
        "exclude": exclude,
    }


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
    # What click's standalone mode does around a command (typer.core._main), for what
    # validate can raise: an interrupt exits 130, a closed pipe exits 1 quietly, and a usage
    # error of validate's own (typer.Exit from `fail`) its code.
    try:
        return validate_specs(**parsed)  # type: ignore[arg-type]
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
    except RuntimeError as error:
        typer = sys.modules.get("typer")  # `fail` imported it to raise typer.Exit
        if typer is not None and isinstance(error, typer.Exit):
            return error.exit_code
        raise
