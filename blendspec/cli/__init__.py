"""The `blend` command line (DESIGN §6). Exit codes: 0 success, 1 the check failed, 2 usage or
internal error. Diagnostics go to stderr; no user error ever shows a traceback.

One module per command group: ``spec`` (validate, fmt, graph, schema), ``run`` (run, simulate),
``policy`` (policy train | eval | report), ``diff``, ``explain``, ``export``; ``common`` holds
what they share. Each imports the library it drives inside the command, so `blend --help` and the
spec commands never import torch (tests/test_layers.py).

Importing this package is cheap: the typer app (``blendspec.cli.app``) is built on first use,
and :func:`main` imports what it runs. A plain `blend validate …` runs without typer at all
(``validating.run_plain``): an editor or a pre-commit hook runs it on every save, and typer's
import and app cost about as much as the validation (benchmarks/bench_validate.py).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import typer

    from blendspec.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "app", "main"]

# torch's allocator puts large tensors on transparent huge pages when asked: a batch's padded
# inputs and feature map are ~100 MB each, allocated afresh per batch, and with 4 KiB pages
# their first touch costs a page fault per page (`blend run` measured ~8% faster with it).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

_COMMAND_MODULES = (
    "common",
    "diff",
    "explain",
    "export",
    "lsp",
    "policy",
    "run",
    "spec",
    "validating",
)


def _build_app() -> typer.Typer:
    import typer

    from blendspec.cli import diff, explain, export, lsp, policy, run, spec
    from blendspec.cli.common import writes_files
    from blendspec.cli.options import root_options

    app = typer.Typer(
        name="blend",
        help="Declare, validate, compile and run the blending layer of a recommender.",
        no_args_is_help=True,
        # --install-completion / --show-completion: typer's, for bash, zsh, fish, PowerShell.
        add_completion=True,
        pretty_exceptions_enable=False,
        # -h as well as --help, on every command (click hands it down to subcommands).
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(root_options)
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
    app.command("lsp")(lsp.lsp)
    _reflow_help(app)
    return app


def _reflow_help(app: typer.Typer) -> None:
    """Help texts that wrap where the terminal ends, not where the docstring's lines did.

    Typer's rich help keeps a docstring's single line breaks in a command's line of its group's
    list and in every paragraph after the first of its own help, so a sentence written over two
    source lines broke in the middle there. Each command's help becomes its docstring with the
    lines of each paragraph joined (paragraphs stay apart; a paragraph marked ``\\b``, click's
    "keep as is", is kept), and its line in the list the first paragraph.
    """
    import inspect

    for info in app.registered_commands:
        text = info.help or inspect.getdoc(info.callback) or ""
        paragraphs = [p if p.startswith("\b") else " ".join(p.split()) for p in text.split("\n\n")]
        if text:
            info.help = "\n\n".join(paragraphs)
        if info.short_help is None and text:
            info.short_help = paragraphs[0]
    for group in app.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


def _app() -> typer.Typer:
    """The typer app, built once."""
    app = globals().get("app")
    if app is None:
        app = globals()["app"] = _build_app()
    return app


def __getattr__(name: str) -> Any:
    """`blendspec.cli.app` (built on first access), the exit codes and the command modules."""
    if name == "app":
        return _app()
    if name in ("EXIT_OK", "EXIT_FAILED", "EXIT_USAGE"):
        return getattr(importlib.import_module(f"{__name__}.common"), name)
    if name in _COMMAND_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _start(args: list[str]) -> int | typer.Typer:
    """A plain `blend validate …` run without typer (its exit code), or else the typer app.

    The cyclic garbage collector is paused meanwhile. Start-up allocates a few hundred thousand
    objects (modules, the spec model's classes, the parser) and frees almost none, so the
    collections it would trigger find no garbage, yet they cost `blend validate` 2% of its time;
    what start-up allocated then goes to the oldest generation unexamined (`gc.freeze()` then
    `gc.unfreeze()`, documented to do just that), where collecting it would have sent it, and the
    command runs with the collector as it found it. After a plain validate, the process ends with
    the heap frozen (:func:`_freeze_at_exit`).
    """
    if args in (["--version"], ["-V"]):  # scripts ask; no need to build the app to answer
        from blendspec.cli.version import version_line

        sys.stdout.write(version_line())
        return 0
    collecting = gc.isenabled()
    gc.disable()
    try:
        from blendspec.cli.validating import run_plain

        code = run_plain(args)
        if code is None:
            return _app()
        _freeze_at_exit()
        return code
    finally:
        if collecting:
            gc.freeze()
            gc.unfreeze()
            gc.enable()


_freezing_at_exit = False


def _freeze_at_exit() -> None:
    """At interpreter exit, before its last collections, freeze the heap: they would examine every
    object left (7% of `blend validate`'s time) to finalise garbage that a process about to end
    does not need finalised (Python never promises to). Registered once; when `main` is called
    in-process, it runs when that process ends."""
    global _freezing_at_exit
    if not _freezing_at_exit:
        atexit.register(gc.freeze)
        _freezing_at_exit = True


_interrupted = False


def _on_interrupt(signum: int, frame: object) -> None:
    """Ctrl-C: remember it, then interrupt as Python does (KeyboardInterrupt), so the work in
    progress unwinds: atomic writes drop their temporary files, bars clear."""
    global _interrupted
    _interrupted = True
    signal.default_int_handler(signum, frame)  # type: ignore[arg-type]


def _interrupt() -> NoReturn:
    # Not through rich: the interrupted work may have left a live display's lock taken.
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
    sys.exit(130)


def main() -> None:
    """Console-script entry: user errors are diagnostics, anything else an internal error (exit 2).

    Ctrl-C prints "interrupted" and exits 130 (128 + SIGINT, what a shell reports for a command
    the signal stopped), from the typer app too: click would end it silently with 130, or
    "Aborted!" and 1.
    """
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        # Only Python's own handler is replaced: a SIGINT ignored by the launcher stays ignored.
        # (Off the main thread, where signals cannot be handled, Python's stays.)
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGINT, _on_interrupt)
    try:
        app = _start(sys.argv[1:])
        if isinstance(app, int):
            sys.exit(app)
        app()  # standalone: click turns usage errors into exit 2 and typer.Exit into its code
    except SystemExit:
        if _interrupted:
            _interrupt()
        raise
    except KeyboardInterrupt:
        _interrupt()
    except Exception as error:  # the last line of defence against a traceback
        if _interrupted:  # a library turned the KeyboardInterrupt into an error of its own
            _interrupt()
        if os.environ.get("BLENDSPEC_DEBUG"):
            raise
        from rich.markup import escape

        from blendspec.cli.common import EXIT_USAGE
        from blendspec.io.console import stderr_console
        from blendspec.io.outputs import environment_message

        message = environment_message(error)  # a full disk is not a bug in blendspec
        if message is not None:
            stderr_console().print(f"[bold red]error[/bold red]: {escape(message)}")
            sys.exit(EXIT_USAGE)
        stderr_console().print(
            f"internal error: {type(error).__name__}: {error}\n"
            "this is a bug in blendspec; set BLENDSPEC_DEBUG=1 to see the traceback"
        )
        sys.exit(EXIT_USAGE)
