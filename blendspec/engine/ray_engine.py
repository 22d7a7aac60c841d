"""`blend run --engine ray`: blend a folder of Parquet shards with Ray Data.

A shard is the unit of work: each Ray actor (a callable class, so the spec is compiled once per
actor, not once per shard) streams one whole shard through the same `blend_source` as the local
engine, so the slates (and the dump rows that rejects name) are identical. Requests must not
straddle shards; the driver checks that and writes the shards' slates in shard order, so the
output does not depend on scheduling.

Accounting is the local engine's: within a shard, a request whose rows are not contiguous is an
error, or (skipping) rejected whole and counted once, as `blend_source` does it (the actor holds
its shard's slates, so starting over just empties them). A request found in two shards —
blended or rejected in either — is a `DumpError` naming both shards in either mode, since the
other shard's part is blended elsewhere; the local engine reads the files as one stream instead
(a request that runs on from one file into the next is one request there).
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from blendspec.engine.blend import BadRequestError, BadRequestPolicy, Runner, Tally, blend_source
from blendspec.io.dump import DumpError, DumpReader, dump_files
from blendspec.ops import Kernels
from blendspec.ops import kernels as use_kernels
from blendspec.spec.loader import LoadedSpec, load_source

ACTOR_CPUS = 0.5
"""Fractional CPUs per blending actor, so Ray's own readers and the driver are not starved."""


class ShardBlender:
    """A Ray Data callable class: compiles the spec once, then blends whole shards."""

    def __init__(
        self,
        text: str,
        syntax: str,
        name: str,
        base_dir: str | None,
        batch_size: int,
        on_bad: str,
        kernels: Kernels,
    ) -> None:
        import torch

        from blendspec.spec.diagnostics import Source

        torch.set_num_threads(1)  # one core per actor; Ray runs several actors side by side
        loaded = load_source(
            Source(name, text),
            syntax,
            base_dir=Path(base_dir) if base_dir else None,  # type: ignore[arg-type]
        )
        self.runner = Runner(loaded)
        self.batch_size = batch_size
        self.on_bad = on_bad
        self.kernels = kernels

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        payloads = []
        for shard, path, first_row in zip(
            batch["shard"], batch["path"], batch["first_row"], strict=True
        ):
            payloads.append(pickle.dumps(self._blend(int(shard), str(path), int(first_row))))
        return {"shard": batch["shard"], "payload": np.array(payloads, dtype=object)}

    def _blend(self, shard: int, path: str, first_row: int) -> dict[str, Any]:
        tables: list[pa.Table] = []
        try:
            with use_kernels(self.kernels):
                tally = blend_source(
                    self.runner, DumpReader(Path(path), self.runner.spec, first_row=first_row),
                    batch_size=self.batch_size, limit=None, on_bad_request=self.on_bad,  # type: ignore[arg-type]
                    emit=tables.append, restart=tables.clear,
                )  # fmt: skip
        except BadRequestError as error:
            return {"shard": shard, "bad_request": error.problem}
        except DumpError as error:
            return {"shard": shard, "dump_error": str(error)}
        sink = io.BytesIO()
        schema = tables[0].schema if tables else None
        if schema is not None:
            with pa.ipc.new_stream(sink, schema) as stream:
                for table in tables:
                    stream.write_table(table)
        return {"shard": shard, "slates": sink.getvalue(), "tally": tally}


def _row_count(file: Path) -> int:
    """A shard's rows, from its footer: each actor numbers its rows from the shard's first row
    in the whole dump, so that rejects name the same rows as the local engine's."""
    try:
        return int(pq.ParquetFile(file).metadata.num_rows)
    except (pa.ArrowException, OSError) as error:
        raise DumpError(f"{file}: not a readable Parquet file ({error})") from None


def blend_with_ray(
    loaded: LoadedSpec,
    candidates: Path,
    *,
    batch_size: int,
    limit: int | None,
    on_bad_request: BadRequestPolicy,
    emit: Callable[[pa.Table], None],
    progress: Callable[[int], None] | None = None,
    kernels: Kernels = "native",
) -> Tally:
    import ray

    if limit is not None:
        raise ValueError("--limit is only supported by the local engine")
    files = dump_files(candidates)
    if any(f.suffix != ".parquet" for f in files):
        raise DumpError(f"{candidates}: the ray engine reads Parquet shards only")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            num_cpus=os.cpu_count() or 1,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        source = loaded.document.source
        first_rows = np.concatenate(([0], np.cumsum([_row_count(f) for f in files])))
        shards = ray.data.from_items(
            [
                {"shard": i, "path": str(f), "first_row": int(first_rows[i])}
                for i, f in enumerate(files)
            ]
        )
        blended = shards.map_batches(
            ShardBlender,
            fn_constructor_args=(
                source.text, loaded.document.syntax, source.name,
                str(loaded.base_dir) if loaded.base_dir else None, batch_size, on_bad_request,
                kernels,
            ),
            batch_size=1,
            num_cpus=ACTOR_CPUS,
            concurrency=max(1, min(len(files), os.cpu_count() or 1)),
        )  # fmt: skip
        has_policy = loaded.spec.policy is not None and bool(loaded.spec.policy_weights)
        total = Tally(policy_fallbacks=0 if has_policy else None)
        owner: dict[str, int] = {}
        for row in blended.iter_rows():
            result = pickle.loads(row["payload"])
            shard = result["shard"]
            if "bad_request" in result:
                raise BadRequestError(result["bad_request"])
            if "dump_error" in result:
                raise DumpError(result["dump_error"])
            tables: list[pa.Table] = []
            if result["slates"]:
                with pa.ipc.open_stream(result["slates"]) as stream:
                    tables = [pa.Table.from_batches([batch]) for batch in stream]
            # Every request of the shard, blended or rejected, belongs to this shard alone.
            requests = {r.request_id for r in result["tally"].rejects}
            for table in tables:
                requests.update(table.column("request_id").to_pylist())
            for request in sorted(requests):
                if owner.setdefault(request, shard) != shard:
                    raise DumpError(
                        f"request `{request}` appears in shards {files[owner[request]]} "
                        f"and {files[shard]}; a request's rows must stay in one shard"
                    )
            for table in tables:
                emit(table)
            total.merge(result["tally"])
            if progress is not None:
                progress(result["tally"].requests_in)
        return total
    finally:
        if started_here:
            ray.shutdown()
