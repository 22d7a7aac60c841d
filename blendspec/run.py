"""`blend run`: a compiled spec over a candidate dump → slates, rejects and metrics.

Every request read ends up in exactly one place: the slates file (a request with nothing to show
gets one row with position -1) or the rejects file. Both files appear atomically: they are written
to a temporary name beside the target and renamed only when the run completes.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from blendspec import ops
from blendspec.compile import compile_graph
from blendspec.dump import BadRequest, DumpReader, RequestBatch
from blendspec.loader import LoadedSpec
from blendspec.lower import BlendModule
from blendspec.model import Dpp, Mmr, Ssd

BadRequestPolicy = Literal["error", "skip"]


class BadRequestError(Exception):
    """A request could not be blended and the run was told to stop on it."""

    def __init__(self, problem: BadRequest) -> None:
        self.problem = problem
        super().__init__(str(problem))


@dataclass
class RunSummary:
    requests_in: int = 0
    requests_blended: int = 0
    requests_rejected: int = 0
    empty_slates: int = 0
    slots: int = 0
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    slates_path: str | None = None
    rejects_path: str | None = None

    @property
    def requests_per_second(self) -> float:
        return self.requests_in / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "requests_in": self.requests_in,
            "requests_blended": self.requests_blended,
            "requests_rejected": self.requests_rejected,
            "empty_slates": self.empty_slates,
            "slots": self.slots,
            "seconds": round(self.seconds, 3),
            "requests_per_second": round(self.requests_per_second, 1),
            "metrics": self.metrics,
            "slates": self.slates_path,
            "rejects": self.rejects_path,
        }


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path beside `target`, renamed onto it only if the block completes."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
    )
    os.close(handle)
    os.chmod(temporary, _default_mode(target))
    try:
        yield Path(temporary)
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)


def _default_mode(target: Path) -> int:
    """Keep an existing file's mode; a new file gets what the umask allows (mkstemp says 0600)."""
    if target.exists():
        return target.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _slate_schema(weight_names: tuple[str, ...]) -> pa.Schema:
    fields = [
        pa.field("request_id", pa.string()),
        pa.field("position", pa.int32()),
        pa.field("candidate_id", pa.string()),
        pa.field("utility", pa.float32()),
        pa.field("score", pa.float32()),
    ]
    fields += [pa.field(f"weight_{name}", pa.float32()) for name in weight_names]
    return pa.schema(fields)


REJECT_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string()),
        pa.field("row", pa.int64()),
        pa.field("column", pa.string()),
        pa.field("reason", pa.string()),
    ]
)


class Runner:
    """Holds the compiled module and the metric settings for one spec."""

    def __init__(self, loaded: LoadedSpec) -> None:
        self.loaded = loaded
        self.spec = loaded.spec
        self.graph = compile_graph(loaded)
        self.module = BlendModule(self.graph)
        self.weight_names = tuple(self.spec.weights)

    def blend(self, batch: RequestBatch) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            return self.module(batch.mask, batch.inputs)

    def slate_table(self, batch: RequestBatch, out: dict[str, torch.Tensor]) -> pa.Table:
        indices = out["indices"].numpy()
        valid = indices >= 0
        counts = valid.sum(axis=1)
        empty = counts == 0
        rows_per_request = np.where(empty, 1, counts)
        owners = np.repeat(np.arange(batch.size), rows_per_request)
        positions = (
            np.concatenate([np.arange(c) if c else np.array([-1]) for c in counts])
            if batch.size
            else np.zeros(0, np.int64)
        )
        picked = np.where(valid, indices, 0)
        flat_rows = (batch.offsets[:-1, None] + picked)[valid]
        # Rows of the candidate table, in slate order, with a null for empty slates.
        take = np.full(len(owners), -1, dtype=np.int64)
        take[np.repeat(~empty, rows_per_request)] = flat_rows
        ids = batch.candidate_ids.cast(pa.string()).take(pa.array(np.where(take >= 0, take, 0)))
        ids = pa.array(
            [value if row >= 0 else None for value, row in zip(ids.to_pylist(), take, strict=True)],
            pa.string(),
        ) if empty.any() else ids  # fmt: skip
        utility = _per_slot(out["utility"].numpy(), valid, empty)
        score = _per_slot(out["scores"].numpy(), valid, empty)
        columns = {
            "request_id": pa.array([batch.request_ids[i] for i in owners], pa.string()),
            "position": pa.array(positions, pa.int32()),
            "candidate_id": ids,
            "utility": utility,
            "score": score,
        }
        weights = out["weights"].numpy()
        for k, name in enumerate(self.weight_names):
            columns[f"weight_{name}"] = pa.array(weights[owners, k], pa.float32())
        return pa.table(columns, schema=_slate_schema(self.weight_names))

    def metrics(self, batch: RequestBatch, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        spec = self.spec
        selection = ops.Selection(
            indices=out["indices"],
            scores=out["scores"],
            cap_violations=out["cap_violations"],
            early_stops=out["early_stops"],
        )
        embeddings = None
        diversity = spec.diversity
        if isinstance(diversity, Ssd | Dpp | Mmr):
            from blendspec.forms import split_similarity

            signals, _ = split_similarity(diversity.similarity, ())
            cosine = [s.input for s in signals if s.signal == "cosine"]
            if cosine:
                embeddings = batch.inputs[cosine[0]]
        if embeddings is None:
            embedding_inputs = [n for n, i in spec.inputs.items() if i.kind == "embedding"]
            embeddings = batch.inputs[embedding_inputs[0]] if embedding_inputs else None
        categories = [n for n, i in spec.inputs.items() if i.kind == "category"]
        sids = [n for n, i in spec.inputs.items() if i.kind == "semantic_id"]
        penalty = spec.semantic_id_penalty
        return ops.slate_metrics(
            selection,
            out["candidate_utility"],
            batch.mask,
            embeddings=embeddings,
            categories=batch.inputs[categories[0]] if categories else None,
            semantic_ids=batch.inputs[penalty.input if penalty else sids[0]]
            if (penalty or sids)
            else None,
            flags={name: batch.inputs[name] for name in spec.spacing},
            window=max([s.window for s in spec.spacing.values()] + [5]),
            min_prefix=penalty.min_prefix if penalty else 1,
        )


def _per_slot(values: np.ndarray, valid: np.ndarray, empty: np.ndarray) -> pa.Array:
    rows: list[float | None] = []
    for request in range(values.shape[0]):
        if empty[request]:
            rows.append(None)
        else:
            rows.extend(values[request][valid[request]].tolist())
    return pa.array(rows, pa.float32())


@dataclass
class Tally:
    """What blending one source (a dump, or one shard of it) adds up to; tallies merge."""

    requests_in: int = 0
    requests_blended: int = 0
    empty_slates: int = 0
    slots: int = 0
    rejects: list[BadRequest] = field(default_factory=list)
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def merge(self, other: Tally) -> None:
        self.requests_in += other.requests_in
        self.requests_blended += other.requests_blended
        self.empty_slates += other.empty_slates
        self.slots += other.slots
        self.rejects += other.rejects
        for name, value in other.sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + other.counts[name]

    def summary(self, seconds: float) -> RunSummary:
        return RunSummary(
            requests_in=self.requests_in,
            requests_blended=self.requests_blended,
            requests_rejected=len(self.rejects),
            empty_slates=self.empty_slates,
            slots=self.slots,
            seconds=seconds,
            metrics={n: self.sums[n] / self.counts[n] for n in self.sums if self.counts[n]},
        )


def blend_source(
    runner: Runner,
    reader: DumpReader,
    *,
    batch_size: int,
    limit: int | None,
    on_bad_request: BadRequestPolicy,
    emit: Callable[[pa.Table], None],
    progress: Callable[[int], None] | None = None,
    observe: Callable[[RequestBatch, dict[str, torch.Tensor], dict[str, torch.Tensor]], None]
    | None = None,
) -> Tally:
    """Blend every request a reader yields, handing each batch's slate rows to `emit`."""
    tally = Tally()
    for batch in reader.batches(batch_size, limit):
        tally.requests_in += batch.size + len(batch.rejected)
        if batch.rejected:
            if on_bad_request == "error":
                raise BadRequestError(batch.rejected[0])
            tally.rejects += batch.rejected
        if batch.size:
            result = runner.blend(batch)
            emit(runner.slate_table(batch, result))
            tally.requests_blended += batch.size
            valid = (result["indices"] >= 0).sum(dim=1)
            tally.empty_slates += int((valid == 0).sum())
            tally.slots += int(valid.sum())
            metrics = runner.metrics(batch, result)
            if observe is not None:
                observe(batch, result, metrics)
            for name, values in metrics.items():
                finite = values[torch.isfinite(values.double())].double()
                tally.sums[name] = tally.sums.get(name, 0.0) + float(finite.sum())
                tally.counts[name] = tally.counts.get(name, 0) + int(finite.numel())
        if progress is not None:
            progress(batch.size + len(batch.rejected))
    return tally


def rejects_table(rejects: list[BadRequest]) -> pa.Table:
    return pa.table(
        {
            "request_id": [r.request_id for r in rejects],
            "row": [r.row for r in rejects],
            "column": [r.column for r in rejects],
            "reason": [r.reason for r in rejects],
        },
        schema=REJECT_SCHEMA,
    )


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
) -> RunSummary:
    """Blend every request of `candidates` into `out`; see the module docstring for guarantees."""
    if report is not None and engine != "local":
        raise ValueError("--report is only supported by the local engine")
    started = time.perf_counter()
    rejects_path = rejects or out.with_name(out.stem + ".rejects.parquet")
    runner = Runner(loaded)
    collector = None
    with atomic_path(out) as slates_tmp, atomic_path(rejects_path) as rejects_tmp:
        writer = pq.ParquetWriter(slates_tmp, _slate_schema(runner.weight_names))
        try:
            if engine == "ray":
                from blendspec.ray_engine import blend_with_ray

                tally = blend_with_ray(
                    loaded, candidates, batch_size=batch_size, limit=limit,
                    on_bad_request=on_bad_request, emit=writer.write_table, progress=progress,
                )  # fmt: skip
            else:
                if report is not None:
                    collector = _collector(loaded)
                tally = blend_source(
                    runner, DumpReader(candidates, loaded.spec), batch_size=batch_size,
                    limit=limit, on_bad_request=on_bad_request, emit=writer.write_table,
                    progress=progress, observe=collector.add if collector else None,
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
        from blendspec.report import render_report

        with atomic_path(report) as temporary:
            temporary.write_text(render_report(loaded.spec.name, summary.to_json(), collector))
    return summary


def _collector(loaded: LoadedSpec):  # type: ignore[no-untyped-def]
    from blendspec.forms import split_similarity
    from blendspec.report import ReportCollector

    spec = loaded.spec
    embedding = next((n for n, i in spec.inputs.items() if i.kind == "embedding"), None)
    if isinstance(spec.diversity, Ssd | Dpp | Mmr):
        signals, _ = split_similarity(spec.diversity.similarity, ())
        embedding = next((s.input for s in signals if s.signal == "cosine"), embedding)
    return ReportCollector(spec.slate.length, tuple(spec.spacing), embedding)


def write_metrics(path: Path, summary: RunSummary) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(summary.to_json(), indent=2) + "\n")
