"""`blend diff`: the command. The semantic diff, the impact on a dump, the estimated outcome
from logs and git pairing live in blendspec.review; this module turns their errors into messages
and exit codes.

Without --candidates or --logs nothing here imports torch or the operators (they do, lazily).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from blendspec.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from blendspec.cli.options import Quiet
from blendspec.io.console import stderr_console
from blendspec.spec.diagnostics import Source, SpecError, render_text
from blendspec.spec.loader import LoadedSpec, load_source, load_spec
from blendspec.spec.syntax import syntax_of

if TYPE_CHECKING:
    from blendspec.review.changes import Change, DiffReport, Impact, Outcome, SpecDiff
    from blendspec.review.outcome import RequestLogs


class DiffFormat(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"
    github = "github"


class FailOn(StrEnum):
    breaking = "breaking"
    behavioural = "behavioural"
    worse = "worse"


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
    quiet: bool = False,
) -> Impact:
    from blendspec.compiler.lower import MissingLowering
    from blendspec.io.console import dump_requests, progress_bar, shows_progress
    from blendspec.io.dump import DumpError
    from blendspec.policy.store import PolicyFileError
    from blendspec.review.impact import compute_impact

    console = stderr_console()
    if not candidates.exists():
        console.print(f"[bold red]error[/bold red]: no candidate dump at {candidates}")
        raise _Failure
    bar_console = stderr_console(quiet=quiet)
    # The total from the dump's ids (or its shard manifest), as `blend run` counts it; only when
    # a bar is drawn.
    total = dump_requests(candidates, limit) if shows_progress(bar_console) else limit
    with progress_bar(bar_console) as bar:
        task = bar.add_task(f"blending {new.spec.name} old and new", total=total)
        try:
            return compute_impact(
                old, new, candidates, renames=renames, limit=limit, batch_size=batch_size,
                top=top, seed=seed, progress=lambda n: bar.advance(task, n),
            )  # fmt: skip
        except (DumpError, MissingLowering, PolicyFileError) as error:
            console.print(f"[bold red]error[/bold red]: {error}")
            raise _Failure from None


class _Outcomes:
    """`--logs`: the logs read once for every pair, each pair's outcome estimated with a
    progress bar on stderr (hidden when stderr is not a terminal)."""

    def __init__(
        self,
        path: Path,
        reward: str | None,
        estimators: Sequence[str],
        min_effective: float,
        seed: int,
        quiet: bool = False,
    ) -> None:
        self.path, self.reward, self.estimators = path, reward, estimators
        self.min_effective, self.seed, self.quiet = min_effective, seed, quiet
        self.logs: RequestLogs | None = None
        self.models: dict[Any, Any] = {}  # DR models, shared by the pairs of a --git diff

    def __call__(self, old: LoadedSpec, new: LoadedSpec, diff: SpecDiff) -> Outcome:
        from blendspec.io.console import progress_bar
        from blendspec.review.outcome import (
            LogsError,
            OutcomeUsageError,
            compute_outcome,
            read_logs,
        )

        console = stderr_console()
        try:
            if self.logs is None:
                self.logs = read_logs(self.path)
            with progress_bar(stderr_console(quiet=self.quiet)) as bar:
                tasks: dict[str, Any] = {}

                def progress(stage: str, done: int, total: int) -> None:
                    if stage not in tasks:
                        unit = "folds" if "model" in stage else "requests"
                        unit = "steps" if "bootstrap" in stage else unit
                        tasks[stage] = bar.add_task(stage, total=total, unit=unit)
                    bar.update(tasks[stage], completed=done, total=total)

                return compute_outcome(
                    old, new, diff.changes, self.logs, reward=self.reward,
                    estimators=self.estimators, min_effective=self.min_effective,
                    seed=self.seed, progress=progress, cache=self.models,
                )  # fmt: skip
        except (LogsError, OutcomeUsageError) as error:
            from rich.markup import escape

            console.print(f"[bold red]error[/bold red]: {escape(str(error))}")
            raise _Failure from None


def _estimator_list(text: str) -> list[str]:
    return [part.strip().lower() for part in text.split(",") if part.strip()]


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
        list[FailOn] | None,
        typer.Option(
            "--fail-on",
            help="Exit 1 only for changes this serious: breaking, or behavioural (which "
            "includes breaking); worse: when the estimated outcome (--logs) is worse at 95%. "
            "Repeatable.",
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
    logs: Annotated[
        Path | None,
        typer.Option(
            help="Request-level logs (Parquet: action, propensity, state and outcome columns): "
            "estimate the change's effect on the reward off-policy."
        ),
    ] = None,
    reward: Annotated[
        str | None,
        typer.Option(help="With --logs: the reward to estimate (default: the policy's)."),
    ] = None,
    estimators: Annotated[
        str,
        typer.Option(
            help="With --logs: comma-separated estimators, the first one primary (snips, dr, ips)."
        ),
    ] = "snips,dr",
    min_effective_n: Annotated[
        float,
        typer.Option(
            "--min-effective-n",
            min=1,
            help="With --logs: refuse an estimate resting on fewer effective requests.",
        ),
    ] = 30,
    quiet: Quiet = False,
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
    levels = [Severity(f.value) for f in fail_on or [] if f is not FailOn.worse]
    fail = min(levels, key=lambda s: s.rank) if levels else None
    fail_worse = FailOn.worse in (fail_on or [])
    if fail_worse and logs is None:
        console.print("error: --fail-on worse needs --logs (the estimated outcome)")
        raise typer.Exit(EXIT_USAGE)
    outcome_for = (
        _Outcomes(logs, reward, _estimator_list(estimators), min_effective_n, seed, quiet)
        if logs is not None
        else None
    )

    def impact_for(a: LoadedSpec, b: LoadedSpec, renames: Mapping[str, str]) -> Impact:
        assert candidates is not None
        return _impact(a, b, renames, candidates, limit, batch_size, top, seed, quiet)

    try:
        if git is None:
            if len(given) != 2:
                console.print(
                    "error: give two specs, OLD NEW, or --git REV [PATHS]... "
                    f"(got {len(given)} path{'s' * (len(given) != 1)})"
                )
                raise typer.Exit(EXIT_USAGE)
            loaded = (_load(given[0]), _load(given[1]))
            report = build_report(
                [loaded], impact_for=impact_for if candidates else None, outcome_for=outcome_for
            )
        else:
            report = _git_report(git, given, candidates, impact_for, outcome_for)
    except _Failure:
        raise typer.Exit(EXIT_USAGE) from None
    except GitError as error:
        console.print(f"[bold red]error[/bold red]: git: {error}")
        raise typer.Exit(EXIT_USAGE) from None
    color = output is DiffFormat.text and _stdout_is_colored()
    sys.stdout.write(render(report, output.value, color=color))
    sys.stdout.flush()
    failed = report.fails(exit_code=exit_code, fail_on=fail) or (fail_worse and report.worse())
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def _stdout_is_colored() -> bool:
    from rich.console import Console

    console = Console()
    return console.is_terminal and not console.no_color


def _git_report(
    rev: str,
    paths: Sequence[Path],
    candidates: Path | None,
    impact_for: Callable[[LoadedSpec, LoadedSpec, Mapping[str, str]], Impact],
    outcome_for: Callable[[LoadedSpec, LoadedSpec, SpecDiff], Outcome] | None = None,
) -> DiffReport:
    import tempfile

    from blendspec.review.git import display_path, file_event, git_pairs
    from blendspec.review.report import build_report

    items: list[tuple[LoadedSpec, LoadedSpec] | SpecDiff] = []
    files = tempfile.TemporaryDirectory(prefix="blend-diff-")
    for pair in git_pairs(rev, paths):
        label = f"{rev}:{pair.path}"
        if pair.status == "modified":
            assert pair.old_text is not None and pair.new_path is not None
            new = _load(Path(display_path(pair.new_path)))
            before = _load_revision(pair.old_text, label, pair.new_path)
            if outcome_for is not None or candidates is not None:
                before = _revision_policy(before, rev, pair.path, Path(files.name))
            items.append((before, new))
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
    if outcome_for is not None:
        retrained = _retrained_policies(rev, paths, Path(files.name))
        items += [(old, new) for old, new, _ in retrained]
        outcome_for = _noting_retrained(outcome_for, retrained)
    with files:
        return build_report(
            items, impact_for=impact_for if candidates else None, outcome_for=outcome_for
        )


def _retrained_policies(
    rev: str, paths: Sequence[Path], folder: Path
) -> list[tuple[LoadedSpec, LoadedSpec, Change]]:
    """Specs that did not change since `rev` but whose policy file did (a retrained policy at
    the same path): `--logs` compares them too, with one behavioural change saying why."""
    import posixpath

    from blendspec.review.changes import Change, Location, Severity
    from blendspec.review.git import changed_paths, display_path, unchanged_specs

    changed = changed_paths(rev)
    found = []
    for pair in unchanged_specs(rev, paths):
        try:
            new = _load_revision_quietly(pair.location.read_text(encoding="utf-8"), "", pair.path)
        except SpecError:
            continue  # not compared, so not this command's business
        policy = new.spec.policy
        if policy is None or policy.file is None or Path(policy.file).is_absolute():
            continue
        tracked = posixpath.normpath(posixpath.join(posixpath.dirname(pair.path), policy.file))
        if tracked not in changed:
            continue
        shown = Path(display_path(pair.location))
        new = _load(shown)
        assert pair.old_text is not None
        old = _revision_policy(
            _load_revision(pair.old_text, f"{rev}:{pair.path}", shown), rev, pair.path, folder
        )
        span = new.document.span_of(("policy", "file"))
        where = Location(span.line, span.column) if span is not None else None
        change = Change(
            "policy.file_content",
            "policy.file",
            Severity.behavioural,
            f"policy file `{policy.file}` differs from {rev} (retrained): the same spec may now "
            "choose other weights",
            old=policy.file,
            new=policy.file,
            old_at=where,
            new_at=where,
            anchor=where,
        )
        found.append((old, new, change))
    return found


def _noting_retrained(
    outcome_for: Callable[[LoadedSpec, LoadedSpec, SpecDiff], Outcome],
    retrained: Sequence[tuple[LoadedSpec, LoadedSpec, Change]],
) -> Callable[[LoadedSpec, LoadedSpec, SpecDiff], Outcome]:
    """`outcome_for` that first records, on a retrained pair's diff, the change that put it in
    the report (the semantic diff of its two identical specs finds none)."""
    changes = {id(new): change for _, new, change in retrained}

    def estimate(old: LoadedSpec, new: LoadedSpec, diff: SpecDiff) -> Outcome:
        if id(new) in changes:
            diff.changes.append(changes[id(new)])
        return outcome_for(old, new, diff)

    return estimate


def _revision_policy(loaded: LoadedSpec, rev: str, spec_path: str, folder: Path) -> LoadedSpec:
    """The spec at `rev` with the policy file it names as it was at `rev` (a retrained policy
    at the same path is what a pull request changes), copied under `folder`. A file git does
    not have at `rev` stays missing there, so using it fails with a message naming it."""
    import dataclasses
    import posixpath

    from blendspec.review.git import revision_bytes

    policy = loaded.spec.policy
    where = folder / f"{len(list(folder.iterdir()))}" / Path(spec_path).name
    where.parent.mkdir(parents=True)
    if policy is not None and policy.file is not None and not Path(policy.file).is_absolute():
        tracked = posixpath.normpath(posixpath.join(posixpath.dirname(spec_path), policy.file))
        data = revision_bytes(rev, tracked)
        target = (where.parent / policy.file).resolve()
        if data is not None and target.is_relative_to(where.parent.resolve()):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return dataclasses.replace(loaded, path=where)


def _load_revision_quietly(text: str, name: str, path: str) -> LoadedSpec:
    syntax = syntax_of(Path(path))
    assert syntax is not None
    return load_source(Source(name, text), syntax, base_dir=None)
