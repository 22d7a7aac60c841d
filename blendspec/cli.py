"""The `blend` command line (DESIGN §6). Exit codes: 0 success, 1 the check failed, 2 usage or
internal error. Diagnostics go to stderr; no user error ever shows a traceback."""

from __future__ import annotations

import difflib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn, ParamSpec, TypeVar

import typer
from rich.markup import escape

from blendspec.console import progress_bar, stderr_console, stdout_console
from blendspec.diagnostics import SpecError, render_text, to_json
from blendspec.loader import LoadedSpec, load_spec
from blendspec.outputs import (
    OutputError,
    check_writable,
    default_rejects_path,
    environment_message,
    guard_paths,
)

app = typer.Typer(
    name="blend",
    help="Declare, validate, compile and run the blending layer of a recommender.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# torch's allocator puts large tensors on transparent huge pages when asked: a batch's padded
# inputs and feature map are ~100 MB each, allocated afresh per batch, and with 4 KiB pages
# their first touch costs a page fault per page (`blend run` measured ~8% faster with it).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


_stderr = stderr_console
_stdout = stdout_console


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


class GraphFormat(StrEnum):
    text = "text"
    dot = "dot"
    json = "json"


class SpecSyntax(StrEnum):
    yaml = "yaml"
    dsl = "dsl"


def _report(error: SpecError, output: OutputFormat) -> None:
    if output is OutputFormat.json:
        return
    _stderr().print(render_text(error.source, error.diagnostics, color=True))


def _load(path: Path) -> LoadedSpec:
    return load_spec(path)


def _load_or_exit(path: Path) -> LoadedSpec:
    """The checked spec, or its diagnostics on stderr and exit 1."""
    try:
        return load_spec(path)
    except SpecError as error:
        _report(error, OutputFormat.text)
        raise typer.Exit(EXIT_FAILED) from None


def _fail(message: str, code: int = EXIT_FAILED, help: str | None = None) -> NoReturn:
    console = _stderr()
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
        try:
            return command(*args, **kwargs)
        except (OutputError, OSError) as error:
            message = environment_message(error)
            if message is None or os.environ.get("BLENDSPEC_DEBUG"):
                raise
            _fail(message, EXIT_USAGE)

    return wrapper


def guard_outputs(inputs: Labelled, outputs: Labelled, *, folders: Iterable[str] = ()) -> None:
    """Before any work: refuse outputs that would destroy an input or another output, and
    outputs that cannot be written at all (exit 2, one line). `folders` labels the outputs
    that are folders (a shard set), not files."""
    outputs = list(outputs)
    folder_labels = set(folders)
    try:
        guard_paths(inputs, outputs)
        for label, path in outputs:
            if path is not None:
                check_writable(label, path, folder=label in folder_labels)
    except OutputError as error:
        _fail(str(error), EXIT_USAGE)


def policy_input(loaded: LoadedSpec) -> tuple[str, Path | None]:
    """The policy file a spec names, as an input of the commands that serve it."""
    from blendspec.lower import resolve_policy_file

    policy = loaded.spec.policy
    if policy is None or policy.file is None:
        return ("the spec's policy file", None)
    try:
        return ("the spec's policy file", resolve_policy_file(policy.file, loaded.base_dir))
    except (OSError, ValueError, RuntimeError):
        return ("the spec's policy file", None)


@app.command()
def validate(
    specs: Annotated[list[Path], typer.Argument(help="Spec files (*.blend, *.yaml).")],
    output: Annotated[
        OutputFormat, typer.Option("--format", help="text or json")
    ] = OutputFormat.text,
    strict: Annotated[bool, typer.Option(help="Treat warnings as failures.")] = False,
    candidates: Annotated[
        Path | None, typer.Option(help="Also check this candidate dump against the (one) spec.")
    ] = None,
) -> None:
    """Parse, type-check and lint specs; with --candidates, check a dump against the spec."""
    if candidates is not None and len(specs) != 1:
        _fail("--candidates checks a dump against exactly one spec", EXIT_USAGE)
    failed = False
    report: list[dict[str, object]] = []
    console = _stderr()
    for path in specs:
        try:
            loaded = _load(path)
        except SpecError as error:
            failed = True
            report.append(
                {
                    "file": str(path),
                    "ok": False,
                    "diagnostics": [to_json(error.source, d) for d in error.diagnostics],
                }
            )
            _report(error, output)
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
                console.print(render_text(loaded.document.source, warnings, color=True))
            count = len(warnings)
            suffix = f" ({count} warning{'s' * (count != 1)})" if count else ""
            console.print(f"[green]ok[/green] {path}{suffix}")
    if candidates is not None and not failed:
        dump_ok, dump_json = _validate_dump(_load(specs[0]), candidates, output)
        report.append(dump_json)
        failed = not dump_ok
    if output is OutputFormat.json:
        print(json.dumps(report, indent=2))
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def _validate_dump(
    loaded: LoadedSpec, candidates: Path, output: OutputFormat
) -> tuple[bool, dict[str, object]]:
    from blendspec.dump import DumpError, validate_dump

    try:
        report = validate_dump(candidates, loaded.spec)
    except DumpError as error:
        _stderr().print(f"[bold red]error[/bold red]: {escape(str(error))}")
        return False, {"dump": str(candidates), "ok": False, "error": str(error)}
    if output is OutputFormat.text:
        out = _stdout()
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


@app.command()
@writes_files
def fmt(
    specs: Annotated[list[Path], typer.Argument(help="Spec files to format in place.")],
    check: Annotated[bool, typer.Option(help="Only report files that are not canonical.")] = False,
    to: Annotated[
        SpecSyntax | None, typer.Option(help="Convert to this syntax (to stdout or -o).")
    ] = None,
    out: Annotated[Path | None, typer.Option("-o", "--output", help="Where --to writes.")] = None,
) -> None:
    """Canonical formatting, and conversion between YAML and the DSL."""
    from blendspec.emit import to_dsl, to_yaml
    from blendspec.syntax import syntax_of

    if out is not None and (to is None or len(specs) != 1):
        _fail("-o/--output goes with --to and exactly one spec", EXIT_USAGE)
    if out is not None and to is not None and syntax_of(out) not in (None, to.value):
        # A .blend file holding YAML (or the reverse) fails every later command on it.
        _fail(
            f"-o {out} names a {syntax_of(out)} file, but --to {to.value} writes {to.value}",
            EXIT_USAGE,
        )
    guard_outputs([("spec", p) for p in specs], [("-o", out)])
    failed = False
    for path in specs:
        try:
            loaded = _load(path)
        except SpecError as error:
            _report(error, OutputFormat.text)
            failed = True
            continue
        if to is not None:
            text = (to_yaml if to is SpecSyntax.yaml else to_dsl)(loaded.spec, loaded.document)
            if out is None:
                sys.stdout.write(text)
            else:
                guard_outputs([("spec", path), policy_input(loaded)], [("-o", out)])
                write_atomic(out.resolve(), text)  # through a symlink, not over it
            continue
        emitter = to_yaml if loaded.document.syntax == "yaml" else to_dsl
        text = emitter(loaded.spec, loaded.document)
        if text == loaded.document.source.text:
            continue
        if check:
            failed = True
            _stderr().print(f"[yellow]would reformat[/yellow] {path}")
            diff = difflib.unified_diff(
                loaded.document.source.text.splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile=str(path),
                tofile=f"{path} (formatted)",
            )
            sys.stderr.write("".join(diff))
        else:
            write_atomic(path.resolve(), text)  # a symlinked spec stays a symlink
            _stderr().print(f"reformatted {path}")
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


@app.command()
def graph(
    spec: Annotated[Path, typer.Argument(help="Spec file.")],
    output: Annotated[
        GraphFormat, typer.Option("--format", help="text, dot or json")
    ] = GraphFormat.text,
) -> None:
    """Print the compiled, typed execution graph."""
    from blendspec.compile import compile_graph

    compiled = compile_graph(_load_or_exit(spec))
    if output is GraphFormat.json:
        sys.stdout.write(json.dumps(compiled.to_json(), indent=2) + "\n")
    elif output is GraphFormat.dot:
        sys.stdout.write(compiled.to_dot())
    else:
        sys.stdout.write(compiled.to_text())


@app.command()
def schema() -> None:
    """JSON Schema of the YAML form, for editors' YAML language servers."""
    from blendspec.schema import spec_json_schema

    sys.stdout.write(json.dumps(spec_json_schema(), indent=2) + "\n")


class Engine(StrEnum):
    local = "local"
    ray = "ray"


class KernelChoice(StrEnum):
    native = "native"
    torch = "torch"


class OnBadRequest(StrEnum):
    error = "error"
    skip = "skip"


@app.command("run")
@writes_files
def run_command(
    spec: Annotated[Path, typer.Argument(help="Spec file.")],
    candidates: Annotated[
        Path | None, typer.Option(help="Candidate dump: Parquet file or folder, or JSON Lines.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Slates file (Parquet).")] = Path(
        "slates.parquet"
    ),
    metrics: Annotated[Path | None, typer.Option(help="Also write the summary as JSON.")] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Blend at most this many requests.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Requests per batch.")] = 64,
    threads: Annotated[int | None, typer.Option(min=1, help="torch intra-op threads.")] = None,
    on_bad_request: Annotated[
        OnBadRequest, typer.Option(help="Stop on a bad request, or skip it to the rejects file.")
    ] = OnBadRequest.error,
    rejects: Annotated[
        Path | None, typer.Option(help="Rejects file (default: beside --out).")
    ] = None,
    engine: Annotated[
        Engine,
        typer.Option(help="local, or ray to blend a folder of Parquet shards with Ray Data."),
    ] = Engine.local,
    report: Annotated[
        Path | None, typer.Option(help="Write a self-contained HTML report with plots.")
    ] = None,
    kernels: Annotated[
        KernelChoice,
        typer.Option(
            help="native: the compiled greedy loops (fastest; built on first use); torch: the "
            "torch operators, bit for bit what a `blend export` artifact computes."
        ),
    ] = KernelChoice.native,
) -> None:
    """Blend a candidate dump with a spec: slates, rejects and a metrics summary."""
    import torch

    from blendspec.dump import DumpError
    from blendspec.lower import MissingLowering
    from blendspec.policy import PolicyFileError
    from blendspec.run import BadRequestError, run, write_metrics

    inputs = [("spec", spec), ("--candidates", candidates)]
    outputs = [
        ("--out", out),
        ("--rejects" if rejects is not None else "the rejects file", rejects or
         default_rejects_path(out)),
        ("--metrics", metrics),
        ("--report", report),
    ]  # fmt: skip
    guard_outputs(inputs, outputs)
    loaded = _load_or_exit(spec)
    read = [*inputs, policy_input(loaded)]
    guard_outputs(read, outputs)
    if threads is not None:
        torch.set_num_threads(threads)
    console = _stderr()
    if kernels is KernelChoice.native:
        from blendspec.ops import _native

        if _native.library() is None and _native.build_error:
            console.print(
                f"[yellow]note:[/] the compiled loops are unavailable ({_native.build_error}); "
                "blending with the torch operators"
            )
    if candidates is None:
        from blendspec.dump import DumpError
        from blendspec.sample import sample_dump

        try:
            candidates = sample_dump(loaded.spec, progress=console.print)
        except DumpError as error:
            _fail(str(error))
        console.print(f"no --candidates given: blending the bundled sample {candidates}")
        guard_outputs([*read, ("the bundled sample", candidates)], outputs)
    with progress_bar(console) as bar:
        task = bar.add_task("blending", total=limit)
        try:
            summary = run(
                loaded,
                candidates,
                out,
                batch_size=batch_size,
                limit=limit,
                on_bad_request=on_bad_request.value,
                rejects=rejects,
                progress=lambda n: bar.advance(task, n),
                engine=engine.value,
                report=report,
                kernels=kernels.value,
            )
        except BadRequestError as error:
            _fail(
                f"bad {error}",
                help="pass --on-bad-request skip to write such requests to a rejects file",
            )
        except (DumpError, MissingLowering, PolicyFileError) as error:
            _fail(str(error))
        except ValueError as error:
            _fail(str(error), EXIT_USAGE)
        except ModuleNotFoundError as error:
            _fail(f"{error.name} is not installed (pip install 'blendspec[ray]')", EXIT_USAGE)
    if metrics is not None:
        write_metrics(metrics, summary)
    _print_summary(summary)
    if report is not None:
        _stdout().print(f"report → {report}")


class Exploration(StrEnum):
    uniform = "uniform"
    epsilon = "epsilon"


class DumpFormat(StrEnum):
    parquet = "parquet"
    jsonl = "jsonl"


@app.command()
@writes_files
def simulate(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Dump file, or folder with --shard-rows.")
    ],
    requests: Annotated[int, typer.Option(min=0, help="Number of requests.")] = 1000,
    candidates: Annotated[int, typer.Option(min=1, help="Most candidates per request.")] = 500,
    min_candidates: Annotated[
        int | None, typer.Option(min=1, help="Fewest candidates per request (default: all equal).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Request stream seed.")] = 0,
    world_seed: Annotated[int, typer.Option(help="Seed of the simulated world.")] = 0,
    format: Annotated[
        DumpFormat, typer.Option("--format", help="parquet or jsonl")
    ] = DumpFormat.parquet,
    shard_rows: Annotated[
        int | None, typer.Option(min=1, help="Write a folder of shards of at most this many rows.")
    ] = None,
    exploration: Annotated[
        Exploration | None,
        typer.Option(help="Write exploration logs for --spec's policy instead of a dump."),
    ] = None,
    spec: Annotated[Path | None, typer.Option(help="Spec whose policy grid is explored.")] = None,
    epsilon: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="For --exploration epsilon.")
    ] = 0.1,
    overwrite: Annotated[
        bool,
        typer.Option(
            help="With --shard-rows: write into a folder that holds other files too (only its "
            "shard files are replaced), or over a file."
        ),
    ] = False,
) -> None:
    """Write a candidate dump from the simulator, or (with --exploration) request-level logs of
    blended slates whose weights a known behaviour policy drew, with propensities and outcomes."""
    from blendspec.simulate import World, write_dump

    if exploration is not None:
        if spec is None:
            _fail("--exploration needs --spec (the spec whose policy grid is explored)", EXIT_USAGE)
        from blendspec.explore import exploration_logs, write_logs

        guard_outputs([("--spec", spec)], [("--out", out)])
        loaded = _load_or_exit(spec)
        guard_outputs([("--spec", spec), policy_input(loaded)], [("--out", out)])
        if not loaded.spec.policy_weights:
            _fail(f"{spec} has no policy weights to explore", EXIT_FAILED)
        size_: int | tuple[int, int] = (
            candidates if min_candidates is None else (min_candidates, candidates)
        )
        logs = exploration_logs(
            loaded, World.default(seed=world_seed), requests, behaviour=exploration.value,
            epsilon=epsilon, seed=seed, candidates=size_,
        )  # fmt: skip
        write_logs(logs, out)
        _stdout().print(f"wrote exploration logs of {logs.num_rows:,} requests → {out}")
        return

    if min_candidates is not None and min_candidates > candidates:
        _fail("--min-candidates is larger than --candidates", EXIT_USAGE)
    guard_outputs([("--spec", spec)], [("--out", out)], folders=["--out"] * bool(shard_rows))
    world = World.default(seed=world_seed)
    size: int | tuple[int, int] = (
        candidates if min_candidates is None else (min_candidates, candidates)
    )
    info = write_dump(
        world, out, requests=requests, candidates=size, seed=seed,
        format=format.value, shard_rows=shard_rows, overwrite=overwrite,
    )  # fmt: skip
    _stdout().print(
        f"wrote {info.requests:,} requests, {info.rows:,} rows in {len(info.files)} "
        f"file{'s' * (len(info.files) != 1)} → {out}"
    )


def _print_summary(summary) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    table = Table(title="blend run", show_header=True, header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("requests in", f"{summary.requests_in:,}")
    table.add_row("blended", f"{summary.requests_blended:,}")
    table.add_row("rejected", f"{summary.requests_rejected:,}")
    table.add_row("empty slates", f"{summary.empty_slates:,}")
    table.add_row("slots filled", f"{summary.slots:,}")
    if summary.policy_fallbacks is not None:
        table.add_row("policy fallbacks", f"{summary.policy_fallbacks:,}")
    table.add_row("requests/s", f"{summary.requests_per_second:,.1f}")
    for name, value in summary.metrics.items():
        table.add_row(escape(name), f"{value:.4g}")
    _stdout().print(table)
    _stdout().print(f"slates → {summary.slates_path}")
    if summary.rejects_path:
        _stdout().print(f"rejects → {summary.rejects_path}")


policy_app = typer.Typer(help="DRL-PUT: learn per-request utility weights from logs.")
app.add_typer(policy_app, name="policy")


class Method(StrEnum):
    pg = "pg"
    value = "value"
    model = "model"


@policy_app.command("train")
@writes_files
def policy_train(
    spec: Annotated[Path, typer.Option(help="Spec with a policy weight source.")],
    logs: Annotated[Path, typer.Option(help="Request-level logs (Parquet).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Policy file to write.")],
    method: Annotated[
        Method, typer.Option(help="pg (policy gradient), value, or model (reward model).")
    ] = Method.pg,
    reward: Annotated[
        str | None, typer.Option(help="Reward to learn (default: the policy's).")
    ] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 40,
    seed: Annotated[int, typer.Option()] = 0,
    nproc: Annotated[
        int, typer.Option(min=1, help="Train with DistributedDataParallel in N local processes.")
    ] = 1,
) -> None:
    """Train a policy from logs; prints its off-policy validation estimates.

    Under torchrun (``torchrun --nproc-per-node 2 -m blendspec -- policy train ...``) the
    processes train together and only rank 0 writes the policy file and prints.
    """
    from blendspec.policy import torchrun_rank, train_policy

    # Not the spec's own policy file: training reads only the logs, and writing the file the
    # spec serves is how a policy is retrained.
    guard_outputs([("--spec", spec), ("--logs", logs)], [("--out", out)])
    loaded = _load_or_exit(spec)
    if not loaded.spec.policy_weights:
        _fail(f"{spec} has no policy weights to learn", EXIT_FAILED)
    try:
        result = train_policy(
            loaded.spec, str(logs), reward, method=method.value, epochs=epochs, seed=seed,
            nproc=nproc,
        )  # fmt: skip
    except (ValueError, KeyError, OSError) as error:
        _fail(f"cannot train from {logs}: {error}")
    launched = torchrun_rank()
    if launched is not None and launched[0] != 0:
        return  # every rank holds the same policy; rank 0 writes it
    result.policy.save(out)
    _estimates_table(
        f"validation ({result.validation_rows:,} requests, best epoch {result.best_epoch})",
        result.validation,
    )
    _stdout().print(f"policy → {out}")


@policy_app.command("eval")
def policy_eval(
    spec: Annotated[Path, typer.Option(help="Spec the policy belongs to.")],
    logs: Annotated[Path, typer.Option(help="Request-level logs (Parquet).")],
    policy: Annotated[Path, typer.Option(help="Policy file.")],
    reward: Annotated[
        str | None, typer.Option(help="Reward to evaluate (default: the policy's).")
    ] = None,
    output: Annotated[
        OutputFormat, typer.Option("--format", help="text or json")
    ] = OutputFormat.text,
) -> None:
    """Off-policy estimates (replay, IPS, SNIPS, DR) of the policy's greedy action on logs."""
    from blendspec.ope import evaluate
    from blendspec.policy import PolicyFileError, load_policy, log_data

    loaded = _load_or_exit(spec)
    try:
        learned = load_policy(policy, loaded.spec)
        data = log_data(loaded.spec, str(logs), reward)
    except PolicyFileError as error:
        _fail(str(error))
    except (ValueError, KeyError, OSError) as error:
        _fail(f"cannot read {logs}: {error}")
    estimates = evaluate(
        data.actions, data.rewards, data.propensities, learned.probs(data.states, greedy=True)
    )
    if output is OutputFormat.json:
        sys.stdout.write(
            json.dumps({k: e.to_json() for k, e in estimates.items()}, indent=2) + "\n"
        )
    else:
        _estimates_table(f"{policy} on {len(data.rewards):,} logged requests", estimates)


def _estimates_table(title: str, estimates: dict) -> None:  # type: ignore[type-arg]
    from rich.table import Table

    table = Table(title=escape(title), header_style="bold")
    for column in ("estimator", "value", "95% interval", "effective n", "note"):
        table.add_column(column, justify="left" if column in ("estimator", "note") else "right")
    for name, estimate in estimates.items():
        # Training reports estimates as plain data (Estimate.to_json()); evaluation as Estimates.
        e = estimate if isinstance(estimate, dict) else estimate.to_json()
        table.add_row(
            name,
            f"{e['value']:.4g}",
            f"[{e['low']:.4g}, {e['high']:.4g}]",
            f"{e['n_effective']:,.0f}",
            escape(str(e["warning"] or e["flag"] or "")),
        )
    _stdout().print(table)


def _register_commands() -> None:
    """Commands implemented in their own modules; imported once `app` exists, since they use
    this module's helpers."""
    from blendspec.diff import diff_command
    from blendspec.explain import explain_command
    from blendspec.export import export_command
    from blendspec.policy_report import report_command

    # diff and explain write nothing but stdout: no output path to guard.
    policy_app.command("report")(writes_files(report_command))
    app.command("diff")(diff_command)
    app.command("explain")(explain_command)
    app.command("export")(writes_files(export_command))


_register_commands()


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and a rename: never a half-written file."""
    from blendspec.outputs import atomic_path

    with atomic_path(Path(path)) as temporary:
        temporary.write_text(text, encoding="utf-8", newline="")


def main() -> None:
    """Console-script entry: user errors are diagnostics, anything else an internal error (exit 2)."""
    try:
        app()  # standalone: click turns usage errors into exit 2 and typer.Exit into its code
    except SystemExit:
        raise
    except KeyboardInterrupt:
        _stderr().print("interrupted")
        sys.exit(130)
    except Exception as error:  # the last line of defence against a traceback
        if os.environ.get("BLENDSPEC_DEBUG"):
            raise
        message = environment_message(error)  # a full disk is not a bug in blendspec
        if message is not None:
            _stderr().print(f"[bold red]error[/bold red]: {escape(message)}")
            sys.exit(EXIT_USAGE)
        _stderr().print(
            f"internal error: {type(error).__name__}: {error}\n"
            "this is a bug in blendspec; set BLENDSPEC_DEBUG=1 to see the traceback"
        )
        sys.exit(EXIT_USAGE)
