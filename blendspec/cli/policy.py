"""`blend policy train | eval | report`: DRL-PUT from the command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from blendspec.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    OutputFormat,
    fail,
    guard_outputs,
    load_or_exit,
    policy_input,
    write_atomic,
    writes_files,
)
from blendspec.cli.options import Quiet
from blendspec.io.console import advancer, progress_bar, stderr_console, stdout_console

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

app = typer.Typer(help="DRL-PUT: learn per-request utility weights from logs.")


class Method(StrEnum):
    pg = "pg"
    value = "value"
    model = "model"


@app.command("train")
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
    epochs: Annotated[
        int, typer.Option(min=1, help="Most epochs (training stops early when it stalls).")
    ] = 40,
    seed: Annotated[
        int, typer.Option(help="Seed of the split, the batches and the weights' start.")
    ] = 0,
    nproc: Annotated[
        int, typer.Option(min=1, help="Train with DistributedDataParallel in N local processes.")
    ] = 1,
    quiet: Quiet = False,
) -> None:
    """Train a policy from logs; prints its off-policy validation estimates.

    Under torchrun (`torchrun --nproc-per-node 2 -m blendspec -- policy train ...`) the
    processes train together and only rank 0 writes the policy file and prints.
    """
    from blendspec.policy.ddp import torchrun_rank
    from blendspec.policy.train import TrainConfig, train_policy

    # Not the spec's own policy file: training reads only the logs, and writing the file the
    # spec serves is how a policy is retrained.
    guard_outputs([("--spec", spec), ("--logs", logs)], [("--out", out)])
    loaded = load_or_exit(spec)
    if not loaded.spec.policy_weights:
        fail(f"{spec} has no policy weights to learn", EXIT_FAILED)
    launched = torchrun_rank()
    # Under torchrun every rank runs this command; rank 0 speaks for them.
    console = stderr_console(quiet=quiet or (launched is not None and launched[0] != 0))
    in_workers = nproc > 1 or launched is not None  # the epochs run where no callback reaches
    try:
        config = TrainConfig(method=method.value, epochs=epochs, seed=seed, nproc=nproc)
        with progress_bar(console) as bar:
            what = f"training {escape(loaded.spec.name)} ({method.value})"
            if in_workers:
                what += f" in {launched[1] if launched is not None else nproc} processes"
            task = bar.add_task(what, total=None if in_workers else epochs, unit="epochs")
            result = train_policy(
                loaded.spec,
                str(logs),
                reward,
                config=config,
                progress=None if in_workers else _epoch_progress(bar, task, what),
            )
    except (ValueError, KeyError, OSError) as error:
        fail(f"cannot train from {logs}: {error}")
    if launched is not None and launched[0] != 0:
        return  # every rank holds the same policy; rank 0 writes it
    result.policy.save(out)
    _estimates_table(
        f"validation ({result.validation_rows:,} requests, best epoch {result.best_epoch})",
        result.validation,
    )
    stdout_console().print(f"policy → {out}")


@app.command("eval")
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
    quiet: Quiet = False,
) -> None:
    """Off-policy estimates (replay, IPS, SNIPS, DR) of the policy's greedy action on logs."""
    from blendspec.policy.ope import evaluate
    from blendspec.policy.rewards import log_data
    from blendspec.policy.runtime import load_policy
    from blendspec.policy.store import PolicyFileError

    loaded = load_or_exit(spec)
    try:
        learned = load_policy(policy, loaded.spec)
        data = log_data(loaded.spec, str(logs), reward)
    except PolicyFileError as error:
        fail(str(error))
    except (ValueError, KeyError, OSError) as error:
        fail(f"cannot read {logs}: {error}")
    bootstrap = 1000  # evaluate's default: the intervals' replicates
    with progress_bar(stderr_console(quiet=quiet)) as bar:
        task = bar.add_task("bootstrap intervals", total=bootstrap, unit="replicates")
        estimates = evaluate(
            data.actions, data.rewards, data.propensities,
            learned.probs(data.states, greedy=True), bootstrap=bootstrap,
            progress=advancer(bar, task),
        )  # fmt: skip
    if output is OutputFormat.json:
        sys.stdout.write(
            json.dumps({k: e.to_json() for k, e in estimates.items()}, indent=2) + "\n"
        )
    else:
        _estimates_table(f"{policy} on {len(data.rewards):,} logged requests", estimates)


def _epoch_progress(bar: Progress, task: TaskID, what: str) -> Callable[[dict[str, float]], None]:
    """An epoch's record on the bar: one more epoch, and the score early stopping watches."""

    def show(record: dict[str, float]) -> None:
        score = next(
            (
                f", {k.removeprefix('val_')} {v:.4g}"
                for k, v in record.items()
                if k.startswith("val")
            ),
            "",
        )
        bar.update(task, advance=1, description=f"{what}: loss {record['loss']:.4g}{score}")

    return show


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
    stdout_console().print(table)


@app.command("report")
@writes_files
def report_command(
    spec: Annotated[Path, typer.Option(help="Spec with policy weights and declared rewards.")],
    logs: Annotated[Path, typer.Option(help="Request-level training logs (Parquet).")],
    held_out: Annotated[
        Path | None,
        typer.Option(
            "--held-out",
            help="Held-out logs: judged off-policy (SNIPS) when not simulating, and the states "
            "the personalisation is read on.",
        ),
    ] = None,
    simulate: Annotated[
        int,
        typer.Option(
            min=0,
            help="Judge on-policy on this many held-out requests of the simulator's default "
            "world (when the logs came from `blend simulate`); 0: SNIPS on --held-out.",
        ),
    ] = 0,
    world_seed: Annotated[int, typer.Option(help="Seed of the simulated world.")] = 0,
    candidates: Annotated[int, typer.Option(min=1, help="Candidates per simulated request.")] = 200,
    method: Annotated[
        list[str] | None,
        typer.Option("--method", help="Learner(s) to compare: pg, value, model (repeatable)."),
    ] = None,
    epochs: Annotated[
        int, typer.Option(min=1, help="Most epochs of each training (early stopping).")
    ] = 40,
    seed: Annotated[
        int, typer.Option(help="Seed of the trainings and the bootstrap intervals.")
    ] = 0,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Write the plots as one HTML page.")
    ] = None,
    output: Annotated[
        OutputFormat, typer.Option("--format", help="text or json")
    ] = OutputFormat.text,
    quiet: Quiet = False,
) -> None:
    """Reward ablation (one policy per declared reward, judged by every metric) and the
    personalisation analysis (chosen weights by segment and state-feature bucket)."""
    import pyarrow.parquet as pq

    from blendspec.policy.report import (
        build_report,
        held_out_states,
        print_report,
        render_html,
        reward_ablation,
    )

    method = method or ["pg"]
    bad = [m for m in method if m not in ("pg", "value", "model")]
    if bad:
        fail(f"unknown --method {bad[0]!r}; use pg, value or model", EXIT_USAGE)
    if not simulate and held_out is None:
        fail("pass --held-out LOGS (off-policy judging) or --simulate N (on-policy)", EXIT_USAGE)
    read = [("--spec", spec), ("--logs", logs), ("--held-out", held_out)]
    guard_outputs(read, [("--html", html_out)])
    loaded = load_or_exit(spec)
    guard_outputs([*read, policy_input(loaded)], [("--html", html_out)])
    if not loaded.spec.policy_weights or loaded.spec.policy is None:
        fail(f"{spec} has no policy weights to learn", EXIT_FAILED)
    if not loaded.spec.rewards:
        fail(f"{spec} declares no reward to compare", EXIT_FAILED)
    try:
        train_table = pq.read_table(logs)
        held_table = pq.read_table(held_out) if held_out is not None else None
        world = None
        if simulate:
            from blendspec.sim.core import World

            world = World.default(seed=world_seed)
        with progress_bar(stderr_console(quiet=quiet)) as bar:
            task = bar.add_task("reward ablation", total=None)

            def show(step: str, unit: str, done: int, total: int) -> None:
                if done == 0:  # a step starts: its own count, rate and time left
                    bar.reset(task, total=total, description=escape(step), unit=unit)
                else:
                    bar.update(task, completed=done)

            rows, policies, how = reward_ablation(
                loaded,
                train_table,
                held_out=held_table,
                world=world,
                on_policy_requests=simulate,
                candidates=candidates,
                methods=tuple(dict.fromkeys(method)),
                seed=seed,
                train_options={"epochs": epochs},
                progress=show,
            )
        own = loaded.spec.policy.reward or next(iter(loaded.spec.rewards))
        key = f"{own}/{method[0]}"
        if held_table is not None:
            states, segments = held_out_states(loaded, held_table)
            names = None
            if segments is not None:
                from blendspec.sim.segments import DEFAULT_SEGMENTS

                names = [s.name for s in DEFAULT_SEGMENTS]
        else:
            from blendspec.policy.explore import simulated_states

            states, segments, names = simulated_states(
                loaded, world, simulate, seed=1, candidates=candidates
            )
        report = build_report(
            loaded, rows, how, policies[key], f"the `{key}` policy", states, segments, names
        )
    except (ValueError, KeyError, OSError) as error:
        fail(f"cannot report on {logs}: {error}")
    if html_out is not None:
        write_atomic(html_out, render_html(report))
    if output is OutputFormat.json:
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        print_report(report, stdout_console())
        if html_out is not None:
            stdout_console().print(f"plots → {html_out}")
