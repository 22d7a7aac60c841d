"""Blending a stream of requests: the runner (spec → module → slates table and metrics), the
tally of what was blended or rejected, and `blend_source`, the loop both engines share.

Every request read ends up in exactly one place: the slates (a request with nothing to show gets
one row with position -1) or the rejects, one row per request with all of its problems; a request
whose rows are not contiguous is rejected whole, every run of it, and counted once
(`blend_source` starts over when it finds one). `engine.run` drives it locally and writes the
files; `engine.ray_engine` drives it over Ray Data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from blendspec import ops
from blendspec.compiler.lower import REQUEST_SEED_KEY, PolicyRuntime, module_for, request_seeds
from blendspec.io.dump import CHECK_CONTIGUOUS, BadRequest, DumpReader, RequestBatch
from blendspec.spec.forms import split_similarity
from blendspec.spec.loader import LoadedSpec
from blendspec.spec.model import Spec

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
    policy_fallbacks: int | None = None
    """Requests whose policy failed (non-finite state or network output) and that got the
    fixed fallback weights; None when no weight comes from a policy."""

    @property
    def requests_per_second(self) -> float:
        return self.requests_in / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
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
        if self.policy_fallbacks is not None:
            data["policy_fallbacks"] = self.policy_fallbacks
        return data


def _slate_schema(weight_names: tuple[str, ...], policy: bool = False) -> pa.Schema:
    """The slates' columns; with a policy weight source also the request's action id (-1: the
    fixed fallback weights), its propensity and whether the policy failed (DESIGN §4)."""
    fields = [
        pa.field("request_id", pa.string()),
        pa.field("position", pa.int32()),
        pa.field("candidate_id", pa.string()),
        pa.field("utility", pa.float32()),
        pa.field("score", pa.float32()),
    ]
    fields += [pa.field(f"weight_{name}", pa.float32()) for name in weight_names]
    if policy:
        fields += [
            pa.field("action", pa.int64()),
            pa.field("propensity", pa.float32()),
            pa.field("policy_fallback", pa.bool_()),
        ]
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
        # Loads the spec's policy file (beside the spec); a PolicyFileError names the file.
        self.module = module_for(loaded)
        self.graph = self.module.graph
        self.policy: PolicyRuntime | None = self.module.policy_runtime
        self.weight_names = tuple(self.spec.weights)
        self.metric_columns = MetricColumns.of(self.spec)

    @property
    def schema(self) -> pa.Schema:
        return _slate_schema(self.weight_names, policy=self.policy is not None)

    def blend(self, batch: RequestBatch) -> dict[str, torch.Tensor]:
        inputs = batch.inputs
        if self.policy is not None:
            # The policy draws each request's action from its id: the same action alone or in
            # any batch, in any run, on any engine.
            inputs = {**inputs, REQUEST_SEED_KEY: request_seeds(batch.request_ids)}
        with torch.inference_mode():
            return self.module(batch.mask, inputs)

    def slate_table(self, batch: RequestBatch, out: dict[str, torch.Tensor]) -> pa.Table:
        """One row per filled slot; a request with nothing to show gets one row at position -1."""
        indices = out["indices"].numpy()
        valid = indices >= 0  # filled slots are a prefix of each slate
        counts = valid.sum(axis=1)
        rows = np.maximum(counts, 1)
        owners = np.repeat(np.arange(batch.size), rows)
        placeholder = np.repeat(counts == 0, rows)
        positions = np.arange(len(owners)) - np.repeat(np.cumsum(rows) - rows, rows)
        positions[placeholder] = -1
        take = np.zeros(len(owners), dtype=np.int64)
        take[~placeholder] = (batch.offsets[:-1, None] + np.where(valid, indices, 0))[valid]
        ids = batch.candidate_ids.cast(pa.string()).take(pa.array(take))
        if placeholder.any():
            ids = pc.if_else(pa.array(placeholder), pa.scalar(None, pa.string()), ids)

        def per_slot(values: torch.Tensor) -> pa.Array:
            slots = np.zeros(len(owners), dtype=np.float32)
            slots[~placeholder] = values.numpy()[valid]
            return pa.array(slots, pa.float32(), mask=placeholder)

        columns = {
            "request_id": pa.array(
                np.asarray(batch.request_ids, dtype=object)[owners], pa.string()
            ),
            "position": pa.array(positions, pa.int32()),
            "candidate_id": ids,
            "utility": per_slot(out["utility"]),
            "score": per_slot(out["scores"]),
        }
        weights = out["weights"].numpy()
        for k, name in enumerate(self.weight_names):
            columns[f"weight_{name}"] = pa.array(weights[owners, k], pa.float32())
        if self.policy is not None:
            columns["action"] = pa.array(out["action"].numpy()[owners], pa.int64())
            columns["propensity"] = pa.array(out["propensity"].numpy()[owners], pa.float32())
            columns["policy_fallback"] = pa.array(
                out["policy_fallback"].numpy()[owners], pa.bool_()
            )
        return pa.table(columns, schema=self.schema)

    def metrics(self, batch: RequestBatch, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        columns = self.metric_columns
        selection = ops.Selection(
            indices=out["indices"],
            scores=out["scores"],
            cap_violations=out["cap_violations"],
            early_stops=out["early_stops"],
        )

        def column(name: str | None) -> torch.Tensor | None:
            return batch.inputs[name] if name is not None else None

        return ops.slate_metrics(
            selection,
            out["candidate_utility"],
            batch.mask,
            embeddings=column(columns.embedding),
            categories=column(columns.category),
            semantic_ids=column(columns.semantic_id),
            flags={name: batch.inputs[name] for name in columns.flags},
            window=columns.window,
            min_prefix=columns.min_prefix,
        )


@dataclass(frozen=True)
class MetricColumns:
    """Which of a spec's inputs the slate metrics read: the similarity's first embedding (else the
    first declared one), the first category, the penalised (else first) semantic ID, the spacing
    sets; and the window the windowed metrics use."""

    embedding: str | None
    category: str | None
    semantic_id: str | None
    flags: tuple[str, ...]
    window: int
    min_prefix: int

    @classmethod
    def of(cls, spec: Spec) -> MetricColumns:
        def first(kind: str) -> str | None:
            return next((n for n, i in spec.inputs.items() if i.kind == kind), None)

        embedding = first("embedding")
        similarity = spec.diversity.similarity_formula()
        if similarity is not None:
            signals, _ = split_similarity(similarity, ())
            embedding = next((t.input for t in signals if t.signal == "cosine"), embedding)
        penalty = spec.semantic_id_penalty
        return cls(
            embedding=embedding,
            category=first("category"),
            semantic_id=penalty.input if penalty else first("semantic_id"),
            flags=tuple(spec.spacing),
            window=max([s.window for s in spec.spacing.values()] + [5]),
            min_prefix=penalty.min_prefix if penalty else 1,
        )


@dataclass
class Tally:
    """What blending one source (a dump, or one shard of it) adds up to; tallies merge."""

    requests_in: int = 0
    requests_blended: int = 0
    empty_slates: int = 0
    slots: int = 0
    policy_fallbacks: int | None = None
    rejects: list[BadRequest] = field(default_factory=list)
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def merge(self, other: Tally) -> None:
        self.requests_in += other.requests_in
        self.requests_blended += other.requests_blended
        self.empty_slates += other.empty_slates
        self.slots += other.slots
        if other.policy_fallbacks is not None:
            self.policy_fallbacks = (self.policy_fallbacks or 0) + other.policy_fallbacks
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
            policy_fallbacks=self.policy_fallbacks,
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
    restart: Callable[[], None],
    progress: Callable[[int], None] | None = None,
    observe: Callable[[RequestBatch, dict[str, torch.Tensor], dict[str, torch.Tensor]], None]
    | None = None,
) -> Tally:
    """Blend every request a reader yields, handing each batch's slate rows to `emit`.

    A request whose rows are not contiguous is found where it comes back, after its first run
    may have been blended. In error mode that is the error. When skipping, the pass stops: the
    reader scans the dump's ids for every such request, `restart` throws away what `emit` and
    `observe` were handed, and a second pass rejects each of them whole, once (so the slates,
    the counts and the metrics hold no part of them, and "requests in" counts requests, not
    runs of rows). A dump without such a request is read once.
    """
    try:
        return _blend_pass(
            runner, reader, batch_size=batch_size, limit=limit, on_bad_request=on_bad_request,
            emit=emit, progress=progress, observe=observe, restartable=True,
        )  # fmt: skip
    except _Scattered as stopped:
        scattered = reader.scattered_runs(limit)
        restart()
        if progress is not None:
            progress(-stopped.progressed)
        again = DumpReader(
            reader.path, reader.spec, chunk_rows=reader.chunk_rows, scattered=scattered,
            first_row=reader.first_row,
        )  # fmt: skip
        return _blend_pass(
            runner, again, batch_size=batch_size, limit=limit, on_bad_request=on_bad_request,
            emit=emit, progress=progress, observe=observe, restartable=False,
        )  # fmt: skip


def blend_to_table(
    runner: Runner,
    reader: DumpReader,
    *,
    batch_size: int,
    limit: int | None,
    on_bad_request: BadRequestPolicy,
    progress: Callable[[int], None] | None = None,
) -> tuple[pa.Table, Tally]:
    """`blend_source` with the slates gathered in memory (`blendspec.blend`), where `blend run`
    streams them to its Parquet file: the same batches give the same rows in the same order."""
    tables: list[pa.Table] = []
    tally = blend_source(
        runner, reader, batch_size=batch_size, limit=limit, on_bad_request=on_bad_request,
        emit=tables.append, restart=tables.clear, progress=progress,
    )  # fmt: skip
    if not tables:
        return runner.schema.empty_table(), tally
    return pa.concat_tables(tables), tally


class _Scattered(Exception):
    """A request came back after another one (skip mode): blending starts over."""

    def __init__(self, progressed: int) -> None:
        self.progressed = progressed


def _blend_pass(
    runner: Runner,
    reader: DumpReader,
    *,
    batch_size: int,
    limit: int | None,
    on_bad_request: BadRequestPolicy,
    emit: Callable[[pa.Table], None],
    progress: Callable[[int], None] | None,
    observe: Callable[[RequestBatch, dict[str, torch.Tensor], dict[str, torch.Tensor]], None]
    | None,
    restartable: bool,
) -> Tally:
    tally = Tally(policy_fallbacks=0 if runner.policy is not None else None)
    progressed = 0
    for batch in reader.batches(batch_size, limit):
        tally.requests_in += batch.size + len(batch.rejected)
        if batch.rejected:
            if on_bad_request == "error":
                raise BadRequestError(batch.rejected[0])
            if restartable and any(
                CHECK_CONTIGUOUS in problem.checks for problem in batch.rejected
            ):
                raise _Scattered(progressed)
            tally.rejects += batch.rejected
        if batch.size:
            result = runner.blend(batch)
            emit(runner.slate_table(batch, result))
            tally.requests_blended += batch.size
            valid = (result["indices"] >= 0).sum(dim=1)
            tally.empty_slates += int((valid == 0).sum())
            tally.slots += int(valid.sum())
            if "policy_fallback" in result and tally.policy_fallbacks is not None:
                tally.policy_fallbacks += int(result["policy_fallback"].sum())
            metrics = runner.metrics(batch, result)
            if observe is not None:
                observe(batch, result, metrics)
            for name, values in metrics.items():
                finite = values[torch.isfinite(values.double())].double()
                tally.sums[name] = tally.sums.get(name, 0.0) + float(finite.sum())
                tally.counts[name] = tally.counts.get(name, 0) + int(finite.numel())
        if progress is not None:
            progress(batch.size + len(batch.rejected))
            progressed += batch.size + len(batch.rejected)
    return tally


def rejects_table(rejects: list[BadRequest]) -> pa.Table:
    return pa.table(
        {
            "request_id": [r.request_id for r in rejects],
            "row": [r.row for r in rejects],
            "column": [r.column for r in rejects],
            "reason": [r.reasons for r in rejects],  # every problem of the request
        },
        schema=REJECT_SCHEMA,
    )
