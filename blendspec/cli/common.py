"""What every `blend` command shares: exit codes, loading a spec or exiting with its
diagnostics, one-line errors, and the guards on output paths.

Library modules never import this (nor typer): they raise their own errors, and the command
modules beside this one render them. That keeps the import graph one-way, cli → library.

Typer, rich and the output guards are imported where they are used, not here: `blend validate`
runs on this module without the typer app (blendspec.cli.validating), and on a clean spec with
stderr not a terminal it never needs rich either (:func:`print_marked`).
"""

from __future__ import annotations

import builtins
import functools
import os
import sys
from collections.abc import Callable, Iterable
from enum import StrEnum
from pathlib import Path
from typing import NoReturn, ParamSpec, TypeVar

from blendspec.spec.diagnostics import SpecError, render_text
from blendspec.spec.loader import LoadedSpec, load_spec

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


def show_diagnostics(error: SpecError, output: OutputFormat) -> None:
    """A spec's diagnostics on stderr (text); with --format json they go into the report."""
    if output is OutputFormat.json:
        return
    from blendspec.io.console import stderr_console

    stderr_console().print(render_text(error.source, error.diagnostics, color=True))


_MARKUP_FREE = frozenset("[]:\\")
"""Characters rich reads as markup (`[tag]`, `\\[`) or emoji codes (`:name:`) in printed text."""


def print_marked(mark: str, style: str, text: str) -> None:
    """``stderr_console().print(f"[{style}]{mark}[/{style}]{text}")``: a styled word, then text.

    When rich would write ``mark + text`` unchanged — stderr is not a terminal and nothing forces
    colour (so rich writes no styles), and the line is printable ASCII with none of rich's markup
    or emoji characters (so rich changes none of it) — the line is written directly, byte for
    byte what rich writes, without importing rich (8% of `blend validate`'s time).
    Otherwise rich prints it, as before.
    """
    plain = mark + text
    stream = sys.stderr
    simple = plain.isascii() and plain.isprintable() and _MARKUP_FREE.isdisjoint(plain)
    if simple and _rich_writes_plain(stream):
        try:
            stream.write(plain + "\n")
            stream.flush()
        except BrokenPipeError:
            _broken_pipe()
        return
    from blendspec.io.console import stderr_console

    stderr_console().print(f"[{style}]{mark}[/{style}]{text}")


def _rich_writes_plain(stream: object) -> bool:
    """Whether a rich Console on `stream` would find no terminal, hence no colour system: the
    conditions of rich's `Console.is_terminal`, taken conservatively (any doubt: False)."""
    if stream is None or sys.platform == "win32" or hasattr(stream, "rich_proxied_file"):
        return False
    if "TTY_COMPATIBLE" in os.environ or "FORCE_COLOR" in os.environ:
        return False
    if hasattr(builtins, "get_ipython"):  # rich's Jupyter check
        return False
    isatty = getattr(stream, "isatty", None)
    if isatty is None:
        return False
    try:
        return not isatty()
    except ValueError:
        return False


def _broken_pipe() -> NoReturn:
    """What rich's `Console.on_broken_pipe` does when stderr's reader has gone."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(1)


def load(path: Path) -> LoadedSpec:
    """Load a spec; looked up through this module so a test can substitute the loader."""
    return load_spec(path)


def load_or_exit(path: Path) -> LoadedSpec:
    """The checked spec, or its diagnostics on stderr and exit 1."""
    try:
        return load(path)
    except SpecError as error:
        show_diagnostics(error, OutputFormat.text)
        import typer

        raise typer.Exit(EXIT_FAILED) from None


def fail(message: str, code: int = EXIT_FAILED, help: str | None = None) -> NoReturn:
    """One error line (and an optional help line) on stderr, then exit with `code`."""
    import typer
    from rich.markup import escape

    from blendspec.io.console import stderr_console

    console = stderr_console()
    console.print(f"[bold red]error[/bold red]: {escape(message)}")
    if help:
        console.print(f"  = help: {escape(help)}")
    raise typer.Exit(code)


_P = ParamSpec("_P")
_R = TypeVar("_R")
Labelled = Iterable[tuple[str, Path | None]]


def writes_files(command: Callable[_P, _R]) -> Callable[_P, _R]:
    """Wrap a command that writes: an :class:`OutputError` (an output onto an input, a folder
    where a file goes, a full disk or read-only folder met while writing) is the user's problem
    — one line, exit 2 — wherever in the command it surfaces."""

    @functools.wraps(command)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        from blendspec.io.outputs import OutputError, environment_message

        try:
            return command(*args, **kwargs)
        except (OutputError, OSError) as error:
            message = environment_message(error)
            if message is None or os.environ.get("BLENDSPEC_DEBUG"):
                raise
            fail(message, EXIT_USAGE)

    return wrapper


def guard_outputs(inputs: Labelled, outputs: Labelled, *, folders: Iterable[str] = ()) -> None:
    """Before any work: refuse outputs that would destroy an input or another output, and
    outputs that cannot be written at all (exit 2, one line). `folders` labels the outputs
    that are folders (a shard set), not files."""
    from blendspec.io.outputs import OutputError, check_writable, guard_paths

    outputs = list(outputs)
    folder_labels = set(folders)
    try:
        guard_paths(inputs, outputs)
        for label, path in outputs:
            if path is not None:
                check_writable(label, path, folder=label in folder_labels)
    except OutputError as error:
        fail(str(error), EXIT_USAGE)


def policy_input(loaded: LoadedSpec) -> tuple[str, Path | None]:
    """The policy file a spec names, as an input of the commands that serve it."""
    from blendspec.policy.files import resolve_policy_file

    policy = loaded.spec.policy
    if policy is None or policy.file is None:
        return ("the spec's policy file", None)
    try:
        return ("the spec's policy file", resolve_policy_file(policy.file, loaded.base_dir))
    except (OSError, ValueError, RuntimeError):
        return ("the spec's policy file", None)


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and a rename: never a half-written file."""
    from blendspec.io.outputs import atomic_path

    with atomic_path(Path(path)) as temporary:
        temporary.write_text(text, encoding="utf-8", newline="")
