"""`blend run`: a compiled spec over a candidate dump → slates, rejects and metrics.

Every request read ends up in exactly one place: the slates file (a request with nothing to show
gets one row with position -1) or the rejects file, one row per request with all of its problems;
a request whose rows are not contiguous is rejected whole, every run of it, and counted once
(`blend_source` starts over when it finds one). Both files appear atomically: they are written
to a temporary name beside the target and renamed only when the run completes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq

from blendspec import ops
from blendspec.engine.blend import (
    BadRequestError,
    BadRequestPolicy,
    Runner,
    RunSummary,
    blend_source,
    rejects_table,
)
from blendspec.io.dump import DumpReader
from blendspec.io.outputs import atomic_path, default_rejects_path
from blendspec.spec.loader import LoadedSpec

__all__ = ["BadRequestError", "BadRequestPolicy", "Engine", "RunSummary", "run", "write_metrics"]


Engine = Literal["local", "ray"]


def run(
    loaded: LoadedSpec,
    candidates: Path,
    out: Path,
    *,
    batch_size: int = 64,
    limit: int | None = None,
    on_bad_request: BadRequestPolicy = "error",
    rejects: Path | None = None,
    progress: Callable[[int], None] | None = None,
    engine: Engine = "local",
    report: Path | None = None,
    kernels: ops.Kernels = "native",
) -> RunSummary:
    """Blend every request of `candidates` into `out`; see the module docstring for guarantees.

    ``kernels="torch"`` runs the operators' torch path, which an exported artifact reproduces
    bit for bit; the default compiled loops pick the same slates (see ``ops/_native.py``).
    """
    if report is not None and engine != "local":
        raise ValueError("--report is only supported by the local engine")
    with ops.kernels(kernels):
        started = time.perf_counter()
        rejects_path = rejects or default_rejects_path(out)
        runner = Runner(loaded)
        collector = None
        with atomic_path(out) as slates_tmp, atomic_path(rejects_path) as rejects_tmp:
            writer = pq.ParquetWriter(slates_tmp, runner.schema)

            def restart() -> None:
                """Blending starts over (a scattered request): empty slates, a new report."""
                nonlocal writer, collector
                writer.close()
                writer = pq.ParquetWriter(slates_tmp, runner.schema)
                collector = _collector(runner) if collector is not None else None

            try:
                if engine == "ray":
                    from blendspec.engine.ray_engine import blend_with_ray

                    tally = blend_with_ray(
                        loaded, candidates, batch_size=batch_size, limit=limit,
                        on_bad_request=on_bad_request, emit=writer.write_table, progress=progress,
                        kernels=kernels,
                    )  # fmt: skip
                else:
                    if report is not None:
                        collector = _collector(runner)
                    tally = blend_source(
                        runner, DumpReader(candidates, loaded.spec), batch_size=batch_size,
                        limit=limit, on_bad_request=on_bad_request,
                        emit=lambda table: writer.write_table(table), restart=restart,
                        progress=progress,
                        observe=(lambda *seen: collector.add(*seen)) if collector else None,
                    )  # fmt: skip
            finally:
                writer.close()
            pq.write_table(rejects_table(tally.rejects), rejects_tmp)
        if not tally.rejects:
            Path(rejects_path).unlink(missing_ok=True)
        summary = tally.summary(time.perf_counter() - started)
        summary.slates_path = str(out)
        summary.rejects_path = str(rejects_path) if tally.rejects else None
        if report is not None and collector is not None:
            from blendspec.engine.report import render_report

            with atomic_path(report) as temporary:
                temporary.write_text(render_report(loaded.spec.name, summary.to_json(), collector))
        return summary


def _collector(runner: Runner):  # type: ignore[no-untyped-def]
    from blendspec.engine.report import ReportCollector

    return ReportCollector.for_runner(runner)  # with each set's spacing window, for the charts


def write_metrics(path: Path, summary: RunSummary) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(summary.to_json(), indent=2) + "\n")
