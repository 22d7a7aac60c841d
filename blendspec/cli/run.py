"""The blending commands — `blend run` and `blend simulate`: torch is imported inside them."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from blendspec.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    fail,
    guard_outputs,
    load_or_exit,
    policy_input,
    writes_files,
)
from blendspec.cli.options import Quiet
from blendspec.io.console import (
    advancer,
    dump_requests,
    progress_bar,
    shows_progress,
    stderr_console,
    stdout_console,
)
from blendspec.io.outputs import default_rejects_path


class Engine(StrEnum):
    local = "local"
    ray = "ray"


class KernelChoice(StrEnum):
    native = "native"
    torch = "torch"


class OnBadRequest(StrEnum):
    error = "error"
    skip = "skip"


@writes_files
def run_command(
    spec: Annotated[Path, typer.Argument(help="Spec file.")],
    candidates: Annotated[
        Path | None, typer.Option(help="Candidate dump: Parquet file or folder, or JSON Lines.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Slates file (Parquet). Default: runs/<spec name>/slates.parquet in the cache "
            "folder ($BLENDSPEC_CACHE, else ~/.cache/blendspec), replaced by the next run.",
        ),
    ] = None,
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
    quiet: Quiet = False,
) -> None:
    """Blend a candidate dump with a spec: slates, rejects and a metrics summary.

    Without --candidates it blends the bundled sample (made once in the cache folder); without
    -o the slates go to the cache folder too, and the summary says where.
    """
    import torch

    from blendspec.compiler.lower import MissingLowering
    from blendspec.engine.run import BadRequestError, run, write_metrics
    from blendspec.io.dump import DumpError
    from blendspec.policy.store import PolicyFileError

    inputs = [("spec", spec), ("--candidates", candidates)]

    def outputs_for(out: Path | None) -> list[tuple[str, Path | None]]:
        default_rejects = None if out is None else default_rejects_path(out)
        return [
            ("--out", out),
            ("--rejects" if rejects is not None else "the rejects file", rejects or
             default_rejects),
            ("--metrics", metrics),
            ("--report", report),
        ]  # fmt: skip

    guard_outputs(inputs, outputs_for(out))
    loaded = load_or_exit(spec)
    if out is None:
        out = default_slates_path(loaded.spec.name)
    outputs = outputs_for(out)
    read = [*inputs, policy_input(loaded)]
    guard_outputs(read, outputs)
    if threads is not None:
        torch.set_num_threads(threads)
    console = stderr_console(quiet=quiet)
    if kernels is KernelChoice.native:
        from blendspec.ops import _native

        if _native.library() is None and _native.build_error:
            console.print(
                f"[yellow]note:[/] the compiled loops are unavailable ({_native.build_error}); "
                "blending with the torch operators"
            )
    if candidates is None:
        from blendspec.io.dump import DumpError
        from blendspec.io.sample import sample_dump

        try:
            candidates = sample_dump(loaded.spec, progress=console.print)
        except DumpError as error:
            fail(str(error))
        console.print(f"no --candidates given: blending the bundled sample {candidates}")
        guard_outputs([*read, ("the bundled sample", candidates)], outputs)
    total = dump_requests(candidates, limit) if shows_progress(console) else limit
    with progress_bar(console) as bar:
        task = bar.add_task(f"blending {escape(loaded.spec.name)}", total=total)
        try:
            summary = run(
                loaded,
                candidates,
                out,
                batch_size=batch_size,
                limit=limit,
                on_bad_request=on_bad_request.value,
                rejects=rejects,
                progress=advancer(bar, task),
                engine=engine.value,
                report=report,
                kernels=kernels.value,
            )
        except BadRequestError as error:
            fail(
                f"bad {error}",
                help="pass --on-bad-request skip to write such requests to a rejects file",
            )
        except (DumpError, MissingLowering, PolicyFileError) as error:
            fail(str(error))
        except ValueError as error:
            fail(str(error), EXIT_USAGE)
        except ModuleNotFoundError as error:
            fail(f"{error.name} is not installed (pip install 'blendspec[ray]')", EXIT_USAGE)
    if metrics is not None:
        write_metrics(metrics, summary)
    _print_summary(summary)
    if report is not None:
        stdout_console().print(f"report → {report}")


def default_slates_path(spec_name: str) -> Path:
    """Where `blend run` writes slates without -o: the cache folder, not the working folder (a
    first run from a checkout must not leave files in it), one folder per spec, so that runs of
    different specs do not replace each other's slates."""
    from blendspec.io.cache import cache_dir

    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", spec_name).lstrip(".") or "spec"
    folder = cache_dir() / "runs" / safe
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "slates.parquet"


class Exploration(StrEnum):
    uniform = "uniform"
    epsilon = "epsilon"


class DumpFormat(StrEnum):
    parquet = "parquet"
    jsonl = "jsonl"


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
            "--overwrite",
            help="With --shard-rows: write into a folder that holds other files too (only its "
            "shard files are replaced), or over a file.",
        ),
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Write a candidate dump from the simulator, or (with --exploration) request-level logs of
    blended slates whose weights a known behaviour policy drew, with propensities and outcomes."""
    from blendspec.sim.core import World
    from blendspec.sim.dumps import write_dump

    if exploration is not None:
        if spec is None:
            fail("--exploration needs --spec (the spec whose policy grid is explored)", EXIT_USAGE)
        from blendspec.policy.explore import exploration_logs, write_logs

        guard_outputs([("--spec", spec)], [("--out", out)])
        loaded = load_or_exit(spec)
        guard_outputs([("--spec", spec), policy_input(loaded)], [("--out", out)])
        if not loaded.spec.policy_weights:
            fail(f"{spec} has no policy weights to explore", EXIT_FAILED)
        size_: int | tuple[int, int] = (
            candidates if min_candidates is None else (min_candidates, candidates)
        )
        with progress_bar(stderr_console(quiet=quiet)) as bar:
            task = bar.add_task(f"exploring {escape(loaded.spec.name)}", total=requests)
            logs = exploration_logs(
                loaded, World.default(seed=world_seed), requests, behaviour=exploration.value,
                epsilon=epsilon, seed=seed, candidates=size_, progress=advancer(bar, task),
            )  # fmt: skip
            write_logs(logs, out)
        stdout_console().print(f"wrote exploration logs of {logs.num_rows:,} requests → {out}")
        return

    if min_candidates is not None and min_candidates > candidates:
        fail("--min-candidates is larger than --candidates", EXIT_USAGE)
    guard_outputs([("--spec", spec)], [("--out", out)], folders=["--out"] * bool(shard_rows))
    world = World.default(seed=world_seed)
    size: int | tuple[int, int] = (
        candidates if min_candidates is None else (min_candidates, candidates)
    )
    with progress_bar(stderr_console(quiet=quiet)) as bar:
        task = bar.add_task("simulating", total=requests)
        info = write_dump(
            world, out, requests=requests, candidates=size, seed=seed, format=format.value,
            shard_rows=shard_rows, overwrite=overwrite, progress=advancer(bar, task),
        )  # fmt: skip
    stdout_console().print(
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
    stdout_console().print(table)
    stdout_console().print(f"slates → {summary.slates_path}")
    if summary.rejects_path:
        stdout_console().print(f"rejects → {summary.rejects_path}")
