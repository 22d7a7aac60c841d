"""Writing candidate dumps: one Parquet or JSON Lines file, or a shard set, atomically.

Why its own module: the writers stream a world's requests in chunks of whole requests, so that
memory does not grow with the dump, and publish through the one atomic writer
(:func:`blendspec.io.outputs.atomic_path`); the world itself stays pure numpy, and pyarrow is
imported only here and in :mod:`blendspec.sim.columns`, only when a dump is written.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from blendspec.io.outputs import atomic_path
from blendspec.sim.candidates import Request
from blendspec.sim.columns import DUMP_COLUMNS, dump_schema
from blendspec.sim.shards import merge_shards, prepare_shard_folder, write_manifest

if TYPE_CHECKING:
    import pyarrow as pa

    from blendspec.sim.core import World

__all__ = ["DumpInfo", "write_dump"]


@dataclass(frozen=True)
class DumpInfo:
    """What :func:`write_dump` wrote."""

    path: Path
    files: tuple[Path, ...]
    requests: int
    rows: int


class _Sink(Protocol):
    """One output file being written (Parquet or JSON Lines)."""

    def write(self, world: World, requests: Sequence[Request]) -> None: ...

    def close(self) -> None: ...


class _ParquetSink:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        import pyarrow.parquet as pq

        # Dictionary encoding only pays for the repeated strings; on embeddings it is tried and
        # abandoned for every page, which costs time for nothing.
        # Page checksums let a reader catch a damaged page instead of blending its values.
        self._writer = pq.ParquetWriter(
            str(path),
            schema,
            use_dictionary=["request_id", "topic"],
            compression="snappy",
            write_page_checksum=True,
        )

    def write(self, world: World, requests: Sequence[Request]) -> None:
        import pyarrow as pa

        batch = world.record_batch(requests)
        self._writer.write_table(pa.Table.from_batches([batch]))

    def close(self) -> None:
        self._writer.close()


class _JsonlSink:
    def __init__(self, path: Path) -> None:
        self._fh = open(path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115 - closed in close()

    def write(self, world: World, requests: Sequence[Request]) -> None:
        cols = world.columns(requests)
        # Python floats of float32 values: repr round-trips exactly back to the float32.
        lists = {k: cols[k].tolist() for k in DUMP_COLUMNS if k not in ("request_id", "topic")}
        rid, topic = cols["request_id"], cols["topic"]
        lines = []
        for i in range(rid.size):
            row = {"request_id": rid[i]}
            for k in DUMP_COLUMNS[1:]:
                row[k] = topic[i] if k == "topic" else lists[k][i]
            lines.append(json.dumps(row, separators=(",", ":")))
        if lines:
            self._fh.write("\n".join(lines) + "\n")

    def close(self) -> None:
        self._fh.close()


def _chunks(
    stream: Iterable[Request], chunk_rows: int, shard_rows: int | None
) -> Iterator[tuple[bool, list[Request]]]:
    """Group requests into write chunks; ``True`` marks the first chunk of a new shard.

    A request is never split: shards start at request boundaries so each shard is a valid dump
    by itself (the Ray engine reads shards independently).
    """
    chunk: list[Request] = []
    chunk_n = 0
    shard_n = 0
    new_shard = True
    for r in stream:
        if shard_rows is not None and shard_n > 0 and shard_n + r.n > shard_rows:
            if chunk:
                yield new_shard, chunk
            chunk, chunk_n, shard_n, new_shard = [], 0, 0, True
        chunk.append(r)
        chunk_n += r.n
        shard_n += r.n
        if chunk_n >= chunk_rows:
            yield new_shard, chunk
            chunk, chunk_n, new_shard = [], 0, False
    if chunk:
        yield new_shard, chunk


def write_dump(
    world: World,
    path: str | os.PathLike[str],
    *,
    requests: int,
    candidates: int | tuple[int, int] = 500,
    seed: int = 0,
    format: Literal["parquet", "jsonl"] = "parquet",
    shard_rows: int | None = None,
    chunk_rows: int = 8192,
    start: int = 0,
    segments: Sequence[int] | None = None,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> DumpInfo:
    """Write a candidate dump of ``requests`` requests of stream ``seed`` to ``path``.

    Streams in chunks of whole requests, about ``chunk_rows`` rows each (one Parquet row group
    each, so no row group splits a request), and memory does not grow with the dump. Without
    ``shard_rows`` ``path`` is one file; with it, ``path`` is a directory of
    ``part-NNNNN.parquet`` (or ``.jsonl``) files of at most ``shard_rows`` rows each, cut at
    request boundaries so that every shard is a valid dump by itself (a single request larger
    than that gets a shard of its own). The output appears atomically: everything is written
    under a temporary name next to ``path`` and renamed at the end; an existing dump at ``path``
    is replaced, and a failed write leaves the old one untouched.

    A shard folder gets a manifest (:data:`~blendspec.sim.shards.SHARD_MANIFEST`) listing its shards, so that nothing
    blendspec did not write is ever deleted: an existing folder is replaced only when it is
    empty or a previous shard set. A folder holding anything else (or a file where the folder
    goes) is an :class:`~blendspec.io.outputs.OutputError` unless ``overwrite``; then only its shard
    files (and those its manifest lists) are replaced, and the other files stay.

    Sizes: a row of the default world is about 3.3 KB in Parquet (embeddings are incompressible
    floats), so 1,000 requests of 500 candidates take about 1.7 GB. JSON Lines is for
    interoperability and small samples: it is ~5x larger and ~40x slower to write.

    ``progress(n)`` is called as each chunk's ``n`` requests are written (a minute or more for
    large dumps, which a command shows as a bar out of ``requests``).
    """
    if format not in ("parquet", "jsonl"):
        raise ValueError(f"format must be 'parquet' or 'jsonl', not {format!r}")
    if requests < 0:
        raise ValueError("requests must be >= 0")
    if shard_rows is not None and shard_rows < 1:
        raise ValueError("shard_rows must be >= 1")
    path = Path(path)
    ext = ".parquet" if format == "parquet" else ".jsonl"
    sharded = shard_rows is not None
    how = prepare_shard_folder(path, overwrite) if sharded else "swap"
    files: list[Path] = []
    n_requests = n_rows = 0
    sink: _Sink | None = None

    def open_sink(target: Path) -> _Sink:
        if format == "parquet":
            return _ParquetSink(target, dump_schema(world.config))
        return _JsonlSink(target)

    publish = merge_shards if how == "merge" else None
    with atomic_path(path, folder=sharded, publish=publish) as tmp:
        try:
            stream = world.requests(
                requests, candidates=candidates, seed=seed, start=start, segments=segments
            )
            for first, chunk in _chunks(stream, chunk_rows, shard_rows):
                if sink is None or (sharded and first):
                    if sink is not None:
                        sink.close()
                    target = tmp / f"part-{len(files):05d}{ext}" if sharded else tmp
                    files.append(target)
                    sink = open_sink(target)
                sink.write(world, chunk)
                n_requests += len(chunk)
                n_rows += sum(r.n for r in chunk)
                if progress is not None:
                    progress(len(chunk))
            if sink is None:  # no requests: still a valid, empty dump with the schema
                target = tmp / f"part-00000{ext}" if sharded else tmp
                files.append(target)
                sink = open_sink(target)
            sink.close()
            sink = None
            if sharded:
                write_manifest(tmp, [f.name for f in files], n_requests, n_rows)
        except BaseException:
            if sink is not None:
                # The original error matters more than a failure to close.
                with contextlib.suppress(Exception):
                    sink.close()
            raise
    final = tuple(path / f.name for f in files) if sharded else (path,)
    return DumpInfo(path=path, files=final, requests=n_requests, rows=n_rows)
