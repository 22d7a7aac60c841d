"""`blend diff`: the command. The semantic diff, the impact on a dump and git pairing live in
blendspec.review; this module turns their errors into messages and exit codes.

Without --candidates nothing here imports torch or the operators (the impact does, lazily).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from blendspec.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from blendspec.io.console import stderr_console
from blendspec.spec.diagnostics import Source, SpecError, render_text
from blendspec.spec.loader import LoadedSpec, load_source, load_spec
from blendspec.spec.syntax import syntax_of

if TYPE_CHECKING:
    from blendspec.review.changes import DiffReport, Impact, SpecDiff


class DiffFormat(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"
    github = "github"


class FailOn(StrEnum):
    breaking = "breaking"
    behavioural = "behavioural"


class _Failure(Exception):
    """A user error already reported on stderr: exit 2."""


def _load(path: Path) -> LoadedSpec:
    try:
        return load_spec(path)
    except SpecError as error:
        stderr_console().print(render_text(error.source, error.diagnostics, color=True))
        raise _Failure from None


def _load_revision(text: str, name: str, path: Path) -> LoadedSpec:
    """A spec as it was at a revision; files it names are not checked (they are not on disk)."""
    syntax = syntax_of(path)
    assert syntax is not None
    try:
        return load_source(Source(name, text), syntax, base_dir=None)
    except SpecError as error:
        stderr_console().print(render_text(error.source, error.diagnostics, color=True))
        raise _Failure from None


def _impact(
    old: LoadedSpec,
    new: LoadedSpec,
    renames: Mapping[str, str],
    candidates: Path,
    limit: int | None,
    batch_size: int,
    top: int,
    seed: int,
) -> Impact:
    from blendspec.compiler.lower import MissingLowering
    from blendspec.io.console import progress_bar
    from blendspec.io.dump import DumpError
    from blendspec.policy.store import PolicyFileError
    from blendspec.review.impact import compute_impact

    console = stderr_console()
    if not candidates.exists():
        console.print(f"[bold red]error[/bold red]: no candidate dump at {candidates}")
        raise _Failure
    with progress_bar(console) as bar:
        task = bar.add_task(f"blending {new.spec.name} old and new", total=limit)
        try:
            return compute_impact(
                old, new, candidates, renames=renames, limit=limit, batch_size=batch_size,
                top=top, seed=seed, progress=lambda n: bar.advance(task, n),
            )  # fmt: skip
        except (DumpError, MissingLowering, PolicyFileError) as error:
            console.print(f"[bold red]error[/bold red]: {error}")
            raise _Failure from None


def diff_command(
    old: Annotated[
        Path | None,
        typer.Argument(help="The old spec (*.blend, *.yaml); with --git, a path to compare."),
    ] = None,
    new: Annotated[
        Path | None,
        typer.Argument(help="The new spec; with --git, another path to compare."),
    ] = None,
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="With --git: more files or folders to compare.", metavar="[PATHS]..."),
    ] = None,
    candidates: Annotated[
        Path | None,
        typer.Option(help="Candidate dump: blend it with both specs and report the impact."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Compare at most this many requests.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Requests per batch.")] = 64,
    output: Annotated[
        DiffFormat, typer.Option("--format", help="text, json, markdown or github")
    ] = DiffFormat.text,
    exit_code: Annotated[
        bool, typer.Option("--exit-code", help="Exit 1 if there is any change at all.")
    ] = False,
    fail_on: Annotated[
        FailOn | None,
        typer.Option(
            "--fail-on",
            help="Exit 1 only for changes this serious: breaking, or behavioural (which "
            "includes breaking).",
        ),
    ] = None,
    git: Annotated[
        str | None,
        typer.Option(
            "--git",
            metavar="REV",
            help="Compare the working tree's spec files with the same files at revision REV.",
        ),
    ] = None,
    top: Annotated[
        int, typer.Option(min=0, help="How many of the most-changed requests to list.")
    ] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap intervals.")] = 0,
) -> None:
    """Semantic diff of two specs (or of the working tree against a git revision): what changed
    in meaning, how serious it is, and, with --candidates, what it does to real slates."""
    # The diff itself is imported only when a diff is asked for, not by every `blend` command
    # that starts the application (and the impact, numpy and torch, only with --candidates).
    from blendspec.review.changes import Severity
    from blendspec.review.git import GitError
    from blendspec.review.render import render
    from blendspec.review.report import build_report

    console = stderr_console()
    given = [p for p in (old, new, *(paths or [])) if p is not None]
    fail = Severity(fail_on.value) if fail_on is not None else None

    def impact_for(a: LoadedSpec, b: LoadedSpec, renames: Mapping[str, str]) -> Impact:
        assert candidates is not None
        return _impact(a, b, renames, candidates, limit, batch_size, top, seed)

    try:
        if git is None:
            if len(given) != 2:
                console.print(
                    "error: give two specs, OLD NEW, or --git REV [PATHS]... "
                    f"(got {len(given)} path{'s' * (len(given) != 1)})"
                )
                raise typer.Exit(EXIT_USAGE)
            loaded = (_load(given[0]), _load(given[1]))
            report = build_report([loaded], impact_for=impact_for if candidates else None)
        else:
            report = _git_report(git, given, candidates, impact_for)
    except _Failure:
        raise typer.Exit(EXIT_USAGE) from None
    except GitError as error:
        console.print(f"[bold red]error[/bold red]: git: {error}")
        raise typer.Exit(EXIT_USAGE) from None
    color = output is DiffFormat.text and _stdout_is_colored()
    sys.stdout.write(render(report, output.value, color=color))
    sys.stdout.flush()
    raise typer.Exit(EXIT_FAILED if report.fails(exit_code=exit_code, fail_on=fail) else EXIT_OK)


def _stdout_is_colored() -> bool:
    from rich.console import Console

    console = Console()
    return console.is_terminal and not console.no_color


def _git_report(
    rev: str,
    paths: Sequence[Path],
    candidates: Path | None,
    impact_for: Callable[[LoadedSpec, LoadedSpec, Mapping[str, str]], Impact],
) -> DiffReport:
    from blendspec.review.git import display_path, file_event, git_pairs
    from blendspec.review.report import build_report

    items: list[tuple[LoadedSpec, LoadedSpec] | SpecDiff] = []
    for pair in git_pairs(rev, paths):
        label = f"{rev}:{pair.path}"
        if pair.status == "modified":
            assert pair.old_text is not None and pair.new_path is not None
            new = _load(Path(display_path(pair.new_path)))
            items.append((_load_revision(pair.old_text, label, pair.new_path), new))
        elif pair.status == "added":
            assert pair.new_path is not None
            items.append(file_event(pair, rev, _load(Path(display_path(pair.new_path)))))
        else:
            assert pair.old_text is not None
            try:
                before: LoadedSpec | None = _load_revision_quietly(pair.old_text, label, pair.path)
            except SpecError:
                before = None  # a deleted spec is reported even if it no longer loads
            items.append(file_event(pair, rev, before))
    return build_report(items, impact_for=impact_for if candidates else None)


def _load_revision_quietly(text: str, name: str, path: str) -> LoadedSpec:
    syntax = syntax_of(Path(path))
    assert syntax is not None
    return load_source(Source(name, text), syntax, base_dir=None)
