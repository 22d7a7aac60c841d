"""Candidate dumps (DESIGN §4) → padded torch batches, streamed, with every bad request accounted for.

A dump is Parquet (a file or a directory of shards) or JSON Lines, one row per candidate, rows of a
request contiguous. Reading never holds more than one batch of requests (plus the request that
straddles two Arrow chunks), and the ids of the requests read so far. A problem with the whole dump
is a `DumpError` that names the file and, where it has one, the column, row (Parquet, counted from 0
within the file) or line (JSON Lines, counted from 1): a missing, mistyped or duplicated column, a
column whose type differs between files (or JSON blocks), an id that is not UTF-8, a damaged page
(Parquet page checksums are verified where the writer stored them), a line that is not JSON.

A problem with one request is a `BadRequest`. Every check looks at every request of a batch: a row
that cannot be laid out as a matrix (a missing or short list) is left out of the later checks of
its column, never the rest of the batch, so one request's problem cannot hide another's. A request
with several problems is one `BadRequest` (the first problem in check order, the others in
``also``), which the caller either raises or writes to the rejects file — never dropped silently.
`BadRequest.row` and the rows in its reasons count from 0 over the whole dump.

Rows of a request must be contiguous. A request id that comes back after another request is found
where it comes back (:meth:`DumpReader.requests` remembers the first row of every id), and its
earlier rows may already be blended by then. So a caller that skips bad requests starts over: it
asks :meth:`DumpReader.scattered_runs` for every scattered request (a scan of the `request_id`
column alone) and reads the dump again with ``DumpReader(..., scattered=runs)``, which rejects each
scattered request whole, once, at its first row, with all of its runs in the reason, and drops its
later runs (see `blendspec.engine.blend.blend_source`).

Candidates already in memory (a pyarrow Table, a stream of record batches, or any dataframe
that speaks the Arrow C stream interface) are an :class:`ArrowDump`: read like a one-file dump,
with the same checks and the same messages, the dump's name standing for the file's.
"""

from __future__ import annotations

import io
import re
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq
import torch
from torch import Tensor

from blendspec.sim.shards import SHARD_MANIFEST
from blendspec.spec.model import Input, Spec

REQUEST_ID = "request_id"
CANDIDATE_ID = "candidate_id"
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
JSON_BLOCK_BYTES = 1 << 20
"""pyarrow's JSON block (its default); a block grows to hold the longest line of a chunk."""

Runs = tuple[tuple[int, int], ...]
"""A scattered request's runs of rows: (first row, number of rows) each, in dump order."""


class DumpError(Exception):
    """The dump as a whole cannot be read against the spec (missing column, wrong type, no file)."""


@dataclass(frozen=True)
class BadRequest:
    """One request that cannot be blended: its first problem in check order, and the others."""

    request_id: str
    row: int
    column: str | None
    reason: str
    check: str = "request"
    also: tuple[BadRequest, ...] = ()

    def __str__(self) -> str:
        where = f", column `{self.column}`" if self.column else ""
        return f"request `{self.request_id}` (row {self.row}{where}): {self.reasons}"

    @property
    def reasons(self) -> str:
        """Every reason, the further ones with their own row and column (the rejects' `reason`)."""
        more = [
            f"row {p.row}{f', column `{p.column}`' if p.column else ''}: {p.reason}"
            for p in self.also
        ]
        return "; ".join([self.reason, *more])

    @property
    def checks(self) -> tuple[str, ...]:
        return (self.check, *(p.check for p in self.also))

    @classmethod
    def merged(cls, problems: list[BadRequest]) -> BadRequest:
        first, *rest = problems
        return cls(
            first.request_id, first.row, first.column, first.reason, first.check, tuple(rest)
        )


@dataclass
class RequestBatch:
    """B requests padded to N candidates: what the compiled module consumes, plus the ids."""

    request_ids: list[str]
    candidate_ids: pa.Array
    offsets: np.ndarray
    mask: Tensor
    inputs: dict[str, Tensor]
    rejected: list[BadRequest] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.request_ids)


class ArrowDump:
    """Candidates held by an Arrow producer instead of a file, read like a one-file dump.

    `blendspec.blend` hands its in-memory candidates to the same reader as `blend run` through
    this, so both check, pad and blend alike. A pyarrow Table can be read as often as asked (a
    skipping run reads twice when a request's rows are scattered); a `RecordBatchReader` is a
    stream, read once. `name` stands where a file's path would in every message.
    """

    def __init__(self, data: pa.Table | pa.RecordBatchReader, name: str = "candidates") -> None:
        self.data = data
        self.name = name

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"ArrowDump({self.name!r})"

    @property
    def schema(self) -> pa.Schema:
        return self.data.schema

    @property
    def reusable(self) -> bool:
        """Whether it can be read again (a Table), or only once (a stream)."""
        return isinstance(self.data, pa.Table)

    def materialized(self) -> ArrowDump:
        """A dump that can be read again: the stream read whole into a Table (itself if it is
        one already)."""
        if self.reusable:
            return self
        return ArrowDump(pa.Table.from_batches(self.batches(None), self.schema), self.name)

    def batches(self, rows: int | None) -> Iterator[pa.RecordBatch]:
        """The record batches, at most `rows` rows each (zero-copy slices)."""
        if isinstance(self.data, pa.Table):
            yield from self.data.to_batches(max_chunksize=rows)
            return
        if self.data in _STREAMS_READ:
            # An exhausted reader yields nothing: blending it again would give empty slates.
            raise DumpError(
                f"{self.name}: an Arrow stream can be read only once and was read already; "
                "pass a pyarrow Table (or a DataFrame) to read the candidates again"
            )
        _STREAMS_READ.add(self.data)
        stream = iter(self.data)
        while True:
            try:
                batch = next(stream)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as error:
                raise DumpError(f"{self.name}: the Arrow stream failed ({error})") from None
            if rows is None or batch.num_rows <= rows:
                yield batch
                continue
            for start in range(0, batch.num_rows, rows):
                yield batch.slice(start, rows)


_STREAMS_READ: weakref.WeakSet[pa.RecordBatchReader] = weakref.WeakSet()
"""The streams an `ArrowDump` has begun to read (whichever dump wrapped them)."""

DumpSource = Path | ArrowDump
"""What a `DumpReader` reads: a dump's path (file or folder), or candidates in memory."""


def _is_data_file(file: Path) -> bool:
    """A dump's data file inside a folder: a .parquet or JSON Lines file, except the manifest
    `blend simulate --shard-rows` writes beside its shards (a .json file, but no rows). Every
    other file with those suffixes is read, so no request is left out unnoticed."""
    return file.suffix in (".parquet", *JSONL_SUFFIXES) and file.name != SHARD_MANIFEST


def dump_files(path: DumpSource) -> list[DumpSource]:
    if isinstance(path, ArrowDump):
        return [path]
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if _is_data_file(p))
        if not files:
            raise DumpError(f"{path}: the folder holds no .parquet or .jsonl files")
        return files
    if not path.exists():
        raise DumpError(f"{path}: no such file or folder")
    return [path]


@dataclass
class _Chunk:
    """Rows read from one file, and where they are in it (for messages that name a place)."""

    file: DumpSource
    table: pa.Table
    file_row: int
    lines: np.ndarray | None = None
    """JSON Lines: the line number (from 1) of each row; blank lines hold no row."""

    def where(self, index: int = 0) -> str:
        """The place of one row: ``file:line``, or ``file, row N`` (from 0 within the file)."""
        if self.lines is not None:
            return f"{self.file}:{int(self.lines[index])}"
        return f"{self.file}, row {self.file_row + index}"

    @property
    def place(self) -> str:
        """The place of the whole chunk: the Parquet file, or the JSON file at its first line."""
        return str(self.file) if self.lines is None else self.where()


def _check_columns(where: str, columns: list[str], names: list[str]) -> None:
    """Every column the spec needs is there, once."""
    missing = [c for c in columns if c not in names]
    if missing:
        raise DumpError(_missing_message(where, missing, names))
    for column in columns:
        if names.count(column) > 1:
            raise DumpError(
                f"{where}: column `{column}` appears {names.count(column)} times; "
                "a dump's column names must be unique"
            )


def _arrow_chunks(files: list[DumpSource], columns: list[str], rows: int) -> Iterator[_Chunk]:
    for file in files:
        if isinstance(file, ArrowDump):
            yield from _in_memory_chunks(file, columns, rows)
            continue
        if file.suffix in JSONL_SUFFIXES:
            yield from _jsonl_chunks(file, rows)
            continue
        try:
            # pre_buffer would cache every column chunk of the file: memory would grow with the dump.
            parquet = pq.ParquetFile(
                file, pre_buffer=False, buffer_size=1 << 22, page_checksum_verification=True
            )
        except (pa.ArrowException, OSError) as error:
            raise DumpError(f"{file}: not a readable Parquet file ({error})") from None
        _check_columns(str(file), columns, parquet.schema_arrow.names)
        batches = parquet.iter_batches(batch_size=rows, columns=columns)
        file_row = 0
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (pa.ArrowException, OSError) as error:
                # A page whose checksum fails, a truncated file, a page that does not decode.
                raise DumpError(f"{file}: damaged Parquet data ({error})") from None
            yield _Chunk(file, pa.Table.from_batches([batch]), file_row)
            file_row += batch.num_rows


def _in_memory_chunks(dump: ArrowDump, columns: list[str], rows: int) -> Iterator[_Chunk]:
    """The columns the spec reads, in chunks of at most `rows` rows; Arrow's view layouts
    (polars hands out `string_view`) as the plain types the checks and the padding know."""
    _check_columns(dump.name, columns, dump.schema.names)
    file_row = 0
    for batch in dump.batches(rows):
        table = _plain_layouts(pa.Table.from_batches([batch]).select(columns))
        yield _Chunk(dump, table, file_row)
        file_row += batch.num_rows


def _plain_layouts(table: pa.Table) -> pa.Table:
    """View types cast to their plain equivalents (the same values in other buffers), wherever
    they sit: a column, a list's values, a dictionary's values (polars' categoricals)."""
    schema = pa.schema(
        [f.with_type(_plain_type(f.type)) for f in table.schema], table.schema.metadata
    )
    return table if schema.equals(table.schema) else table.cast(schema)


def _is(kind: pa.DataType, name: str) -> bool:
    """``pa.types.is_<name>``; False for a type this pyarrow predates (views came with 16)."""
    test = getattr(pa.types, f"is_{name}", None)
    return bool(test(kind)) if test is not None else False


def _plain_type(kind: pa.DataType) -> pa.DataType:
    if _is(kind, "string_view"):
        return pa.large_string()
    if _is(kind, "binary_view"):
        return pa.large_binary()
    if pa.types.is_dictionary(kind):
        return pa.dictionary(kind.index_type, _plain_type(kind.value_type), kind.ordered)
    if _is(kind, "list_view") or pa.types.is_list(kind):
        return pa.list_(kind.value_field.with_type(_plain_type(kind.value_type)))
    if _is(kind, "large_list_view") or pa.types.is_large_list(kind):
        return pa.large_list(kind.value_field.with_type(_plain_type(kind.value_type)))
    if pa.types.is_fixed_size_list(kind):
        field = kind.value_field.with_type(_plain_type(kind.value_type))
        return pa.list_(field, kind.list_size)
    return kind


def _jsonl_chunks(file: Path, rows: int) -> Iterator[_Chunk]:
    block: list[bytes] = []
    numbers: list[int] = []
    longest = 0
    file_row = 0
    with file.open("rb") as stream:
        for number, line in enumerate(stream, start=1):
            if line.strip():
                block.append(line)
                numbers.append(number)
                longest = max(longest, len(line))
            if len(block) >= rows:
                yield _parse_jsonl(file, block, numbers, longest, file_row)
                file_row += len(block)
                block, numbers, longest = [], [], 0
    if block:
        yield _parse_jsonl(file, block, numbers, longest, file_row)


_PYARROW_ROW = re.compile(r"\s*in row (\d+)\s*$")


def _parse_jsonl(
    file: Path, lines: list[bytes], numbers: list[int], longest: int, file_row: int
) -> _Chunk:
    """Lines of one chunk as a table. pyarrow parses in blocks that must hold a whole line (so
    the block grows with the longest line) and numbers the rows of its error messages from the
    start of a block; on an error the chunk is parsed again as one block, so that the row it
    names maps to the file's line."""
    data = b"".join(lines)
    block = max(JSON_BLOCK_BYTES, 2 * longest)
    where = np.asarray(numbers, dtype=np.int64)
    try:
        table = pa_json.read_json(
            io.BytesIO(data), read_options=pa_json.ReadOptions(block_size=block)
        )
        return _Chunk(
            file, _valid_json_table(file, data, block, table, numbers[0]), file_row, where
        )
    except pa.ArrowInvalid as error:
        message = str(error)
    if block < len(data):
        try:
            table = pa_json.read_json(
                io.BytesIO(data), read_options=pa_json.ReadOptions(block_size=len(data) + 1)
            )
            return _Chunk(file, table, file_row, where)
        except pa.ArrowInvalid as error:
            message = str(error)
    message = message.removeprefix("JSON parse error: ")
    place = str(file)
    found = _PYARROW_ROW.search(message)
    if found and int(found.group(1)) < len(numbers):
        place = f"{file}:{numbers[int(found.group(1))]}"
        message = message[: found.start()]
    raise DumpError(f"{place}: not valid JSON Lines ({message})")


def _valid_json_table(file: Path, data: bytes, block: int, table: pa.Table, line: int) -> pa.Table:
    """pyarrow 26 can infer a list column it then builds wrong (offsets past the values) when
    a list's first values are null and a later value widens the type (``[null, 3]`` then
    ``[1.5]``), or when every value is null; read again with the inferred schema as an explicit
    one (lists of nulls as lists of doubles), which builds it right."""
    try:
        table.validate()
        return table
    except pa.ArrowInvalid:
        pass
    fields = [
        f.with_type(pa.list_(pa.float64()))
        if pa.types.is_list(f.type) and pa.types.is_null(f.type.value_type)
        else f
        for f in table.schema
    ]
    options = pa_json.ParseOptions(explicit_schema=pa.schema(fields))
    again = pa_json.read_json(
        io.BytesIO(data), read_options=pa_json.ReadOptions(block_size=block), parse_options=options
    )
    try:
        again.validate()
    except pa.ArrowInvalid as error:
        raise DumpError(f"{file}:{line}: pyarrow misread these lines ({error})") from None
    return again


def _missing_message(where: str, missing: list[str], present: list[str]) -> str:
    from blendspec.spec.diagnostics import did_you_mean

    hints = [h for h in (did_you_mean(m, present) for m in missing) if h]
    hint = f" ({'; '.join(hints)})" if hints else ""
    return f"{where}: missing column{'s' * (len(missing) > 1)} {', '.join(f'`{m}`' for m in missing)}{hint}"


def _is_id_type(kind: pa.DataType) -> bool:
    """What a `request_id` or `candidate_id` may be: text (UTF-8), bytes that are UTF-8, or
    numbers; never a list or a struct, which have no id to print."""
    if pa.types.is_dictionary(kind):
        return _is_id_type(kind.value_type)
    return (
        pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind) or pa.types.is_integer(kind)
        or pa.types.is_floating(kind) or pa.types.is_null(kind)
    )  # fmt: skip


def _utf8_ids(chunk: _Chunk, name: str) -> pa.Array:
    """An id column whose strings are valid UTF-8 (bytes are viewed as strings); else a DumpError
    naming the first bad row. Later steps print ids and cast them to strings."""
    array = chunk.table.column(name).combine_chunks()
    kind = array.type
    if pa.types.is_binary(kind):
        array = array.view(pa.string())
    elif pa.types.is_large_binary(kind):
        array = array.view(pa.large_string())
    elif not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return array
    try:
        array.validate(full=True)
    except pa.ArrowInvalid as error:
        found = re.search(r"index (\d+)", str(error))
        where = chunk.where(int(found.group(1))) if found else str(chunk.file)
        raise DumpError(f"{where}: `{name}` is not valid UTF-8 text") from None
    return array


def _type_problem(declared: Input, kind: pa.DataType) -> str | None:
    """Why a column of Arrow type `kind` cannot feed the declared input (None: it can). A column
    of nulls only (JSON infers that for a block where every value is null) is every value
    missing, a per-request problem."""
    if pa.types.is_null(kind):
        return None
    ok = True
    if declared.kind == "score":
        ok = pa.types.is_floating(kind) or pa.types.is_integer(kind)
    elif declared.kind == "flag":
        ok = pa.types.is_boolean(kind)
    elif declared.kind == "category":
        ok = (pa.types.is_string(kind) or pa.types.is_large_string(kind)
              or pa.types.is_integer(kind) or pa.types.is_dictionary(kind))  # fmt: skip
    elif not (pa.types.is_list(kind) or pa.types.is_large_list(kind)
              or pa.types.is_fixed_size_list(kind)):  # fmt: skip
        ok = False
    else:
        values = kind.value_type
        ok = (
            pa.types.is_integer(values)
            or pa.types.is_null(values)
            or (declared.kind != "semantic_id" and pa.types.is_floating(values))
        )
    return None if ok else f"declared `{declared}` but the dump holds {kind}"


def _runs_text(runs: Runs, shown: int = 6) -> str:
    parts = [f"{first}" if count == 1 else f"{first}-{first + count - 1}" for first, count in runs]
    more = f", … and {len(parts) - shown} more" if len(parts) > shown else ""
    return ", ".join(parts[:shown]) + more


class DumpReader:
    """Streams a dump as `RequestBatch`es of at most `batch_size` requests.

    ``scattered`` (from :meth:`scattered_runs`) names requests whose rows are not contiguous:
    each is rejected whole at its first run, and its later runs are not yielded. ``first_row``
    is the dump row number of the path's first row, for a reader of one shard of a dump.
    """

    def __init__(
        self,
        path: DumpSource,
        spec: Spec,
        *,
        chunk_rows: int = 16_384,
        scattered: Mapping[str, Runs] | None = None,
        first_row: int = 0,
    ) -> None:
        self.path: DumpSource = path if isinstance(path, ArrowDump) else Path(path)
        self.spec = spec
        self.files = dump_files(self.path)
        self.columns = [REQUEST_ID, CANDIDATE_ID, *spec.inputs]
        self.chunk_rows = chunk_rows
        self.rows_read = 0
        self.first_row = first_row
        self.scattered: Mapping[str, Runs] = scattered or {}
        self._first_rows: dict[str, int] = {}
        """Every request id read so far → the first row of its first run."""
        self._types: dict[str, tuple[pa.DataType, str]] = {}
        """Each column's type so far, and where it was first seen (file, or file:line)."""

    def requests(self) -> Iterator[tuple[pa.Table, int]]:
        """Each run of a request's rows as one table, with the dump row number of its first row;
        a request that comes back after another request comes as a second run (see
        :meth:`is_first_run`), unless it is one of ``scattered``."""
        for table, first_row, _ in self._runs():
            yield table, first_row

    def is_first_run(self, request_id: str, first_row: int) -> bool:
        return self._first_rows.get(request_id, first_row) == first_row

    def _runs(self) -> Iterator[tuple[pa.Table, int, str]]:
        for table, first_row, request_id in self._raw_runs(self.columns):
            first = self._first_rows.setdefault(request_id, first_row)
            if first != first_row and request_id in self.scattered:
                continue  # rejected whole with its first run
            yield table, first_row, request_id

    def _raw_runs(self, columns: list[str]) -> Iterator[tuple[pa.Table, int, str]]:
        carry: pa.Table | None = None
        carry_row = 0
        carry_id = ""
        for chunk in _arrow_chunks(self.files, columns, self.chunk_rows):
            table = self._checked(chunk, columns)
            start_row = self.first_row + self.rows_read
            self.rows_read += table.num_rows
            ids = table.column(REQUEST_ID).combine_chunks()
            if ids.null_count:
                first = int(pc.index(pc.is_null(ids), True).as_py())
                raise DumpError(f"{chunk.where(first)}: no `request_id`")
            if carry is not None:
                try:
                    table = pa.concat_tables([carry, table], promote_options="permissive")
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
                    raise DumpError(f"{chunk.where()}: {error}") from None
                ids = table.column(REQUEST_ID).combine_chunks()
                start_row = carry_row
            keys = _id_strings(ids)
            starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
            ends = np.append(starts[1:], len(keys))
            for begin, end in zip(starts[:-1], ends[:-1], strict=True):
                yield table.slice(begin, end - begin), start_row + int(begin), str(keys[begin])
            carry = table.slice(starts[-1], ends[-1] - starts[-1])
            carry_row = start_row + int(starts[-1])
            carry_id = str(keys[starts[-1]])
        if carry is not None and carry.num_rows:
            yield carry, carry_row, carry_id

    def _checked(self, chunk: _Chunk, columns: list[str]) -> pa.Table:
        """The chunk's columns in order, once their types fit the spec and agree with the
        chunks before (the files of a dump, the blocks of a JSON file); ids as UTF-8 text."""
        table = chunk.table
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise DumpError(_missing_message(chunk.place, missing, table.column_names))
        table = table.select(columns)
        for name in (REQUEST_ID, CANDIDATE_ID):
            if name not in columns:
                continue
            kind = table.schema.field(name).type
            if not _is_id_type(kind):
                raise DumpError(
                    f"{chunk.place}: `{name}` must be text or integers, the dump holds {kind}"
                )
            if not pa.types.is_dictionary(kind):
                table = table.set_column(
                    table.schema.get_field_index(name), name, _utf8_ids(chunk, name)
                )
        for name in columns:
            declared = self.spec.inputs.get(name)
            kind = table.schema.field(name).type
            problem = _type_problem(declared, kind) if declared is not None else None
            if problem is not None:
                raise DumpError(f"{chunk.place}: column `{name}`: {problem}")
            self._agree(chunk, name, kind)
        return table

    def _agree(self, chunk: _Chunk, name: str, kind: pa.DataType) -> None:
        before = self._types.get(name)
        if before is None or before[0] == kind:
            if before is None:
                self._types[name] = (kind, chunk.place)
            return
        first, where = before
        try:
            unified = (
                pa.unify_schemas(
                    [pa.schema([(name, first)]), pa.schema([(name, kind)])],
                    promote_options="permissive",
                )
                .field(name)
                .type
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            raise DumpError(
                f"{chunk.place}: column `{name}` holds {kind}, but {first} in {where}; "
                "the files of a dump (and the lines of a JSON Lines file) must agree on a "
                "column's type"
            ) from None
        if pa.types.is_null(first):
            where = chunk.place
        self._types[name] = (unified, where)

    def scattered_runs(self, limit: int | None = None) -> dict[str, Runs]:
        """Every request whose rows are not contiguous, with its runs: a scan of the
        `request_id` column alone (Parquet reads nothing else). With `limit`, the scan covers
        what reading `limit` requests covers: up to the first row of the next new request."""
        scan = DumpReader(
            self.path, self.spec, chunk_rows=self.chunk_rows, first_row=self.first_row
        )
        first: dict[str, tuple[int, int]] = {}
        runs: dict[str, list[tuple[int, int]]] = {}
        for table, row, request_id in scan._raw_runs([REQUEST_ID]):
            if request_id in first:
                runs.setdefault(request_id, [first[request_id]]).append((row, table.num_rows))
                continue
            if limit is not None and len(first) >= limit:
                break
            first[request_id] = (row, table.num_rows)
        return {request_id: tuple(found) for request_id, found in runs.items()}

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[RequestBatch]:
        """Batches of `batch_size` runs; `limit` counts requests (a request's later runs are
        read with it, up to the first row of the request after the last one)."""
        pending: list[tuple[pa.Table, int]] = []
        count = 0
        for table, first_row, request_id in self._runs():
            if self.is_first_run(request_id, first_row):
                if limit is not None and count >= limit:
                    break
                count += 1
            pending.append((table, first_row))
            if len(pending) >= batch_size:
                yield self.batch_of(pending)
                pending = []
        if pending:
            yield self.batch_of(pending)

    # ------------------------------------------------------------------ building a batch

    def batch_of(self, requests: list[tuple[pa.Table, int]]) -> RequestBatch:
        """Check and pad requests taken from :meth:`requests` into one batch (bad ones go to
        ``rejected``, one `BadRequest` each with all of its problems): what :meth:`batches`
        does per batch, for callers that pick requests."""
        group = _Group.of(requests)
        found: dict[int, list[BadRequest]] = {}
        for index, problem in self.problems(group):
            found.setdefault(index, []).append(problem)
        if found:
            group = _Group.of([r for i, r in enumerate(requests) if i not in found])
        inputs = {
            name: _tensor(group.column(name) if group.size else None, declared, group)
            for name, declared in self.spec.inputs.items()
        }
        mask = torch.zeros((group.size, group.width), dtype=torch.bool)
        for request, size in enumerate(group.sizes):
            mask[request, :size] = True
        return RequestBatch(
            group.request_ids,
            group.column(CANDIDATE_ID) if group.size else pa.array([], pa.string()),
            group.offsets,
            mask,
            inputs,
            [BadRequest.merged(found[i]) for i in sorted(found)],
        )

    def problems(self, group: _Group) -> list[tuple[int, BadRequest]]:
        """Every failed check of every request in a group (the first bad row of each check and
        column), in check order, computed over the whole group at once; each with the request's
        index in the group."""
        found: list[tuple[int, BadRequest]] = []

        def report(
            check: str, column: str | None, bad_rows: np.ndarray, reason: Callable[[int], str]
        ) -> None:
            if not len(bad_rows):
                return
            owners = group.owners[bad_rows]
            firsts = np.unique(owners, return_index=True)[1]
            for row in bad_rows[firsts]:
                request = int(group.owners[row])
                found.append(
                    (
                        request,
                        BadRequest(
                            group.request_ids[request],
                            group.first_rows[request] + int(row - group.offsets[request]),
                            column,
                            reason(int(row)),
                            check,
                        ),
                    )
                )

        def contiguity(row: int) -> str:
            request = int(group.owners[row])
            request_id = group.request_ids[request]
            if request_id in self.scattered:
                return f"its rows are not contiguous: rows {_runs_text(self.scattered[request_id])}"
            return (
                "its rows are not contiguous: the request began at row "
                f"{self._first_rows[request_id]}, and other requests came between"
            )

        broken = np.array(
            [
                request_id in self.scattered or not self.is_first_run(request_id, first_row)
                for request_id, first_row in zip(group.request_ids, group.first_rows, strict=True)
            ],
            dtype=bool,
        )
        report(CHECK_CONTIGUOUS, REQUEST_ID, group.offsets[:-1][broken], contiguity)
        if group.size:
            candidates = group.column(CANDIDATE_ID)
            nulls = _null_rows(candidates)
            report(CHECK_MISSING, CANDIDATE_ID, nulls, lambda _: "missing candidate id")
            report(
                CHECK_UNIQUE, CANDIDATE_ID, _duplicate_rows(candidates, group.owners),
                lambda row: f"candidate id `{candidates[row].as_py()}` appears twice",
            )  # fmt: skip
            for name, declared in self.spec.inputs.items():
                for check, rows, reason in _column_problems(group.column(name), declared, group):
                    report(check, name, rows, reason)
        order = {check: i for i, check in enumerate(CHECKS)}
        found.sort(key=lambda found: (found[0], order[found[1].check]))
        return found


def _id_strings(ids: pa.Array) -> np.ndarray:
    """Request ids as the strings that name them everywhere (what ``str(value)`` gives, as
    `_Group` names its requests), for finding where one request ends."""
    if pa.types.is_dictionary(ids.type):
        ids = ids.dictionary_decode()
    if pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type):
        return ids.to_numpy(zero_copy_only=False)
    if pa.types.is_integer(ids.type):
        return ids.cast(pa.string()).to_numpy(zero_copy_only=False)
    return np.array([str(value) for value in ids.to_pylist()], dtype=object)


@dataclass
class _Group:
    """Consecutive whole requests as one table, with where each request's rows start."""

    table: pa.Table | None
    request_ids: list[str]
    first_rows: list[int]
    sizes: np.ndarray
    offsets: np.ndarray
    owners: np.ndarray
    _columns: dict[str, pa.Array] = field(default_factory=dict)

    @classmethod
    def of(cls, requests: list[tuple[pa.Table, int]]) -> _Group:
        sizes = np.array([t.num_rows for t, _ in requests], dtype=np.int64)
        offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        table = (
            pa.concat_tables([t for t, _ in requests], promote_options="permissive")
            if requests
            else None
        )
        return cls(
            table,
            [str(t.column(REQUEST_ID)[0].as_py()) for t, _ in requests],
            [row for _, row in requests],
            sizes,
            offsets,
            np.repeat(np.arange(len(requests)), sizes),
        )

    @property
    def size(self) -> int:
        return len(self.request_ids)

    @property
    def width(self) -> int:
        return int(self.sizes.max()) if self.size else 0

    def column(self, name: str) -> pa.Array:
        if name not in self._columns:
            assert self.table is not None
            self._columns[name] = self.table.column(name).combine_chunks()
        return self._columns[name]


def _null_rows(array: pa.Array) -> np.ndarray:
    if not array.null_count:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))


def _duplicate_rows(candidates: pa.Array, owners: np.ndarray) -> np.ndarray:
    """Rows whose candidate id repeats within their request (both rows of each pair)."""
    indices = pc.dictionary_encode(candidates).indices.fill_null(-1)
    codes = indices.to_numpy(zero_copy_only=False).astype(np.int64)
    keys = owners.astype(np.int64) * (int(codes.max(initial=0)) + 2) + codes
    order = np.argsort(keys, kind="stable")
    same = (keys[order][1:] == keys[order][:-1]) & (codes[order][1:] >= 0)  # missing ≠ twice
    return np.unique(np.concatenate((order[1:][same], order[:-1][same])))


CHECK_TYPES = "columns present with the declared types"
CHECK_MISSING = "no missing values"
CHECK_FINITE = "no NaN or Inf"
CHECK_SIZES = "list sizes match the spec"
CHECK_FEATURES = "request features constant within a request"
CHECK_CONTIGUOUS = "rows of a request contiguous"
CHECK_UNIQUE = "candidate ids unique within a request"
CHECKS = (CHECK_TYPES, CHECK_MISSING, CHECK_FINITE, CHECK_SIZES, CHECK_FEATURES, CHECK_CONTIGUOUS,
          CHECK_UNIQUE)  # fmt: skip


def _column_problems(
    array: pa.Array, declared: Input, group: _Group
) -> Iterator[tuple[str, np.ndarray, Callable[[int], str]]]:
    """Rows of one column that the spec cannot use: (check, bad rows, reason for a row).

    Every check runs over every row it can judge: a row that fails one check is left out of a
    later check only when that check cannot read it (a missing or wrong-size list cannot be laid
    out as a matrix), so a problem of one request never hides another request's.
    """
    nulls = _null_rows(array)
    yield CHECK_MISSING, nulls, lambda _: "missing value"
    problem = _type_problem(declared, array.type)
    if problem is not None:  # `DumpReader` names the file first; this guards other callers
        raise DumpError(problem)
    kind = declared.kind
    if pa.types.is_null(array.type) or kind in ("flag", "category"):
        return
    if kind == "score":
        values = array.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
        yield (
            CHECK_FINITE,
            np.flatnonzero(~np.isfinite(values)),
            lambda row: f"score is {values[row]}",
        )
        return
    # embedding, semantic_id, features: lists of the declared size
    size = declared.size or 0
    lengths = pc.list_value_length(array).fill_null(size).to_numpy(zero_copy_only=False)
    wrong = np.flatnonzero(lengths != size)
    yield (
        CHECK_SIZES, wrong,
        lambda row: f"has {lengths[row]} values, the spec declares `{declared}`",
    )  # fmt: skip
    rows = np.arange(len(array))
    if len(wrong) or len(nulls):
        # The rows that cannot be laid out as a matrix leave the later checks; the others stay.
        keep = np.ones(len(array), dtype=bool)
        keep[wrong] = False
        keep[nulls] = False
        rows = rows[keep]
        array = array.take(pa.array(rows, pa.int64()))
    values = array.flatten()
    if pa.types.is_null(values.type):
        values = values.cast(pa.float64())
    holes = np.zeros(len(rows), dtype=bool)
    if values.null_count:
        holes = values.is_null().to_numpy(zero_copy_only=False).reshape(len(rows), size).any(axis=1)
        yield CHECK_MISSING, rows[holes], lambda _: "missing value in the list"
        values = values.fill_null(0)
    if kind == "semantic_id":
        return
    numbers = values.to_numpy(zero_copy_only=False).reshape(len(rows), size)
    finite = np.isfinite(numbers).all(axis=1)
    yield CHECK_FINITE, rows[~finite], lambda _: "holds NaN or Inf"
    if kind == "features":
        # Each row against its request's first row that holds a whole, finite state.
        comparable = finite & ~holes
        rows, numbers = rows[comparable], numbers[comparable]
        owners = group.owners[rows]
        starts = np.flatnonzero(np.concatenate(([True], owners[1:] != owners[:-1])))
        reference = np.repeat(starts, np.diff(np.append(starts, len(owners))))
        same = (numbers == numbers[reference]).all(axis=1)
        yield (
            CHECK_FEATURES, rows[~same],
            lambda _: "request features differ between rows of one request",
        )  # fmt: skip


@dataclass
class CheckResult:
    """One line of `blend validate --candidates`: a check, how many requests failed it, examples."""

    name: str
    failed_requests: int = 0
    examples: list[str] = field(default_factory=list)
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.failed_requests == 0 and self.detail is None


@dataclass
class DumpReport:
    requests: int
    rows: int
    checks: list[CheckResult]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def validate_dump(
    path: DumpSource, spec: Spec, *, examples: int = 3, group_size: int = 256
) -> DumpReport:
    """Every check over every request of the dump, for `blend validate --candidates`; a request
    counts once (however many runs its rows make), and once per check it fails."""
    results = {name: CheckResult(name) for name in CHECKS}
    reader = DumpReader(path, spec)
    requests = 0
    counted: set[tuple[str, str]] = set()

    def check(pending: list[tuple[pa.Table, int]]) -> None:
        for _, problem in reader.problems(_Group.of(pending)):
            key = (problem.request_id, problem.check)
            if key in counted:
                continue
            counted.add(key)
            result = results[problem.check]
            result.failed_requests += 1
            if len(result.examples) < examples:
                result.examples.append(str(problem))

    try:
        pending: list[tuple[pa.Table, int]] = []
        for table, first_row, request_id in reader._runs():
            requests += reader.is_first_run(request_id, first_row)
            pending.append((table, first_row))
            if len(pending) >= group_size:
                check(pending)
                pending = []
        if pending:
            check(pending)
    except DumpError as error:
        results[CHECK_TYPES].detail = str(error)
    return DumpReport(requests, reader.rows_read, list(results.values()))


def _as_block(column: pa.Array, dtype: type, group: _Group, size: int) -> np.ndarray | None:
    """The values of a fixed-size list column as ``[batch, width, size]`` without a copy, when
    every request has the full width (no padding) and the values are already ``dtype``.

    The group's columns are contiguous (``_Group.column``: a copy, or the decoded batch itself
    when the group lies in one), in buffers Arrow allocated as mutable, so torch takes the array
    as it is (nothing writes to a batch's inputs): at N=500 and 768 embedding columns that saves
    a 100 MB copy per batch of 64 requests.
    """
    if not group.size or int(group.sizes.min()) != group.width:
        return None
    if not pa.types.is_fixed_size_list(column.type) or column.type.list_size != size:
        return None
    if column.null_count or column.type.value_type != pa.from_numpy_dtype(dtype):
        return None
    values = column.flatten()
    if values.null_count or values.buffers()[1] is None or not values.buffers()[1].is_mutable:
        return None
    count = group.size * group.width * size
    item = np.dtype(dtype).itemsize
    flat = np.frombuffer(values.buffers()[1], dtype=dtype, count=count, offset=values.offset * item)
    return flat.reshape(group.size, group.width, size)


def _tensor(column: pa.Array | None, declared: Input, group: _Group) -> Tensor:
    """One input as a padded tensor: each request's rows are one contiguous copy."""
    kind, size = declared.kind, declared.size or 0
    batch, width = group.size, group.width
    if kind == "features":
        out = np.zeros((batch, size), dtype=np.float32)
        if batch and column is not None:
            out[:] = (
                column.flatten()
                .to_numpy(zero_copy_only=False)
                .reshape(-1, size)[group.offsets[:-1]]
            )
        return torch.from_numpy(out)
    if kind in ("embedding", "semantic_id"):
        dtype = np.float32 if kind == "embedding" else np.int64
        shared = _as_block(column, dtype, group, size) if column is not None else None
        if shared is not None:
            return torch.from_numpy(shared)
        out = np.zeros((batch, width, size), dtype=dtype)
        values = (
            column.flatten().to_numpy(zero_copy_only=False).reshape(-1, size)
            if batch and column is not None
            else None
        )
    elif kind == "category":
        out = np.zeros((batch, width), dtype=np.int64)
        if batch and column is not None:
            if pa.types.is_dictionary(column.type):
                column = column.dictionary_decode()
            values = pc.dictionary_encode(column).indices.to_numpy(zero_copy_only=False)
        else:
            values = None
    elif kind == "flag":
        out = np.zeros((batch, width), dtype=np.bool_)
        values = column.to_numpy(zero_copy_only=False) if batch and column is not None else None
    else:
        out = np.zeros((batch, width), dtype=np.float32)
        values = (
            column.cast(pa.float32()).to_numpy(zero_copy_only=False)
            if batch and column is not None
            else None
        )
    if values is not None:
        for request in range(batch):
            begin, end = group.offsets[request], group.offsets[request + 1]
            out[request, : end - begin] = values[begin:end]
    return torch.from_numpy(out)
