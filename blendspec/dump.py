"""Candidate dumps (DESIGN §4) → padded torch batches, streamed, with every bad request accounted for.

A dump is Parquet (a file or a directory of shards) or JSON Lines, one row per candidate, rows of a
request contiguous. Reading never holds more than one batch of requests (plus the request that
straddles two Arrow chunks). A problem with the whole dump (a missing or mistyped column) is a
`DumpError`; a problem with one request (NaN score, wrong embedding size, rows not contiguous,
duplicate candidate ids…) is a `BadRequest` naming the request, row and column, which the caller
either raises or writes to the rejects file — never dropped silently.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq
import torch
from torch import Tensor

from blendspec.model import Input, Spec

REQUEST_ID = "request_id"
CANDIDATE_ID = "candidate_id"
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


class DumpError(Exception):
    """The dump as a whole cannot be read against the spec (missing column, wrong type, no file)."""


@dataclass(frozen=True)
class BadRequest:
    """One request that cannot be blended, and the first reason found."""

    request_id: str
    row: int
    column: str | None
    reason: str
    check: str = "request"

    def __str__(self) -> str:
        where = f", column `{self.column}`" if self.column else ""
        return f"request `{self.request_id}` (row {self.row}{where}): {self.reason}"


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


def dump_files(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".parquet", *JSONL_SUFFIXES))
        if not files:
            raise DumpError(f"{path}: the folder holds no .parquet or .jsonl files")
        return files
    if not path.exists():
        raise DumpError(f"{path}: no such file or folder")
    return [path]


def _arrow_chunks(
    files: list[Path], columns: list[str], rows: int
) -> Iterator[tuple[Path, pa.Table]]:
    for file in files:
        if file.suffix in JSONL_SUFFIXES:
            yield from ((file, t) for t in _jsonl_chunks(file, rows))
            continue
        try:
            # pre_buffer would cache every column chunk of the file: memory would grow with the dump.
            parquet = pq.ParquetFile(file, pre_buffer=False, buffer_size=1 << 22)
        except (pa.ArrowInvalid, OSError) as error:
            raise DumpError(f"{file}: not a readable Parquet file ({error})") from None
        missing = [c for c in columns if c not in parquet.schema_arrow.names]
        if missing:
            raise DumpError(_missing_message(file, missing, parquet.schema_arrow.names))
        for batch in parquet.iter_batches(batch_size=rows, columns=columns):
            yield file, pa.Table.from_batches([batch])


def _jsonl_chunks(file: Path, rows: int) -> Iterator[pa.Table]:
    block: list[bytes] = []
    with file.open("rb") as stream:
        for line in stream:
            if line.strip():
                block.append(line)
            if len(block) >= rows:
                yield _parse_jsonl(file, block)
                block = []
    if block:
        yield _parse_jsonl(file, block)


def _parse_jsonl(file: Path, lines: list[bytes]) -> pa.Table:
    try:
        return pa_json.read_json(io.BytesIO(b"".join(lines)))
    except pa.ArrowInvalid as error:
        raise DumpError(f"{file}: not valid JSON Lines ({error})") from None


def _missing_message(file: Path, missing: list[str], present: list[str]) -> str:
    from blendspec.diagnostics import did_you_mean

    hints = [h for h in (did_you_mean(m, present) for m in missing) if h]
    hint = f" ({'; '.join(hints)})" if hints else ""
    return f"{file}: missing column{'s' * (len(missing) > 1)} {', '.join(f'`{m}`' for m in missing)}{hint}"


class DumpReader:
    """Streams a dump as `RequestBatch`es of at most `batch_size` requests."""

    def __init__(self, path: Path, spec: Spec, *, chunk_rows: int = 16_384) -> None:
        self.path = Path(path)
        self.spec = spec
        self.files = dump_files(self.path)
        self.columns = [REQUEST_ID, CANDIDATE_ID, *spec.inputs]
        self.chunk_rows = chunk_rows
        self.rows_read = 0
        self._seen: set[str] = set()

    def requests(self) -> Iterator[tuple[pa.Table, int]]:
        """Each request's rows as one table, with the dump row number of its first row."""
        carry: pa.Table | None = None
        carry_row = 0
        for file, chunk in _arrow_chunks(self.files, self.columns, self.chunk_rows):
            missing = [c for c in self.columns if c not in chunk.column_names]
            if missing:
                raise DumpError(_missing_message(file, missing, chunk.column_names))
            chunk = chunk.select(self.columns)
            start_row = self.rows_read
            self.rows_read += chunk.num_rows
            if carry is not None:
                chunk = pa.concat_tables([carry, chunk], promote_options="permissive")
                start_row = carry_row
            ids = chunk.column(REQUEST_ID).combine_chunks().cast(pa.string())
            if ids.null_count:
                first = int(pc.index(pc.is_null(ids), True).as_py())
                raise DumpError(f"{file}: row {start_row + first} has no `request_id`")
            ids_np = ids.to_numpy(zero_copy_only=False)
            starts = np.flatnonzero(np.concatenate(([True], ids_np[1:] != ids_np[:-1])))
            ends = np.append(starts[1:], len(ids_np))
            for begin, end in zip(starts[:-1], ends[:-1], strict=True):
                yield chunk.slice(begin, end - begin), start_row + int(begin)
            carry = chunk.slice(starts[-1], ends[-1] - starts[-1])
            carry_row = start_row + int(starts[-1])
        if carry is not None and carry.num_rows:
            yield carry, carry_row

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[RequestBatch]:
        pending: list[tuple[pa.Table, int]] = []
        for count, (table, first_row) in enumerate(self.requests()):
            if limit is not None and count >= limit:
                break
            pending.append((table, first_row))
            if len(pending) >= batch_size:
                yield self.batch_of(pending)
                pending = []
        if pending:
            yield self.batch_of(pending)

    # ------------------------------------------------------------------ building a batch

    def batch_of(self, requests: list[tuple[pa.Table, int]]) -> RequestBatch:
        """Check and pad requests taken from :meth:`requests` into one batch (bad ones go to
        ``rejected``): what :meth:`batches` does per batch, for callers that pick requests."""
        group = _Group.of(requests)
        first: dict[int, BadRequest] = {}
        for index, problem in self.problems(group):
            first.setdefault(index, problem)
        for index, request_id in enumerate(group.request_ids):
            if index not in first:
                self._seen.add(request_id)
        if first:
            group = _Group.of([r for i, r in enumerate(requests) if i not in first])
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
            [first[i] for i in sorted(first)],
        )

    def problems(self, group: _Group) -> list[tuple[int, BadRequest]]:
        """Every failed check of every request in a group (the first bad row of each), in check
        order, computed over the whole group at once; each with the request's index in the group."""
        found: list[tuple[int, BadRequest]] = []

        def report(check: str, column: str | None, bad_rows: np.ndarray, reason) -> None:  # type: ignore[no-untyped-def]
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

        earlier: set[str] = set()
        seen = np.zeros(group.size, dtype=bool)
        for index, request_id in enumerate(group.request_ids):
            seen[index] = request_id in self._seen or request_id in earlier
            earlier.add(request_id)
        report(
            CHECK_CONTIGUOUS, REQUEST_ID, group.offsets[:-1][seen],
            lambda _: "its rows are not contiguous (the request appeared earlier)",
        )  # fmt: skip
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
    same = keys[order][1:] == keys[order][:-1]
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


def _type_error(declared: Input, array: pa.Array) -> str:
    return f"declared `{declared}` but the dump holds {array.type}"


def _column_problems(
    array: pa.Array, declared: Input, group: _Group
) -> Iterator[tuple[str, np.ndarray, Callable[[int], str]]]:
    """Rows of one column that the spec cannot use: (check, bad rows, reason for a row)."""
    nulls = _null_rows(array)
    yield CHECK_MISSING, nulls, lambda _: "missing value"
    kind = declared.kind
    if kind == "score":
        if not (pa.types.is_floating(array.type) or pa.types.is_integer(array.type)):
            raise DumpError(_type_error(declared, array))
        values = array.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
        yield (
            CHECK_FINITE,
            np.flatnonzero(~np.isfinite(values)),
            lambda row: f"score is {values[row]}",
        )
        return
    if kind == "flag":
        if not pa.types.is_boolean(array.type):
            raise DumpError(_type_error(declared, array))
        return
    if kind == "category":
        if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
                or pa.types.is_integer(array.type) or pa.types.is_dictionary(array.type)):  # fmt: skip
            raise DumpError(_type_error(declared, array))
        return
    # embedding, semantic_id, features: lists of the declared size
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)
            or pa.types.is_fixed_size_list(array.type)):  # fmt: skip
        raise DumpError(_type_error(declared, array))
    values = array.flatten()
    if kind == "semantic_id" and not pa.types.is_integer(values.type):
        raise DumpError(_type_error(declared, array))
    if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        raise DumpError(_type_error(declared, array))
    size = declared.size or 0
    lengths = pc.list_value_length(array).fill_null(size).to_numpy(zero_copy_only=False)
    wrong = np.flatnonzero(lengths != size)
    yield (
        CHECK_SIZES, wrong,
        lambda row: f"has {lengths[row]} values, the spec declares `{declared}`",
    )  # fmt: skip
    if len(wrong) or len(nulls):
        return  # the rows cannot be laid out as a matrix; the request is rejected already
    if values.null_count:
        inner = np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False)) // max(size, 1)
        yield CHECK_MISSING, np.unique(inner), lambda _: "missing value in the list"
        return
    if kind == "semantic_id":
        return
    numbers = values.to_numpy(zero_copy_only=False).reshape(len(array), size)
    finite = np.isfinite(numbers).all(axis=1)
    yield CHECK_FINITE, np.flatnonzero(~finite), lambda _: "holds NaN or Inf"
    if kind == "features":
        firsts = numbers[group.offsets[:-1]][group.owners]
        same = ((numbers == firsts) | ~finite[:, None]).all(axis=1)
        yield (
            CHECK_FEATURES, np.flatnonzero(~same),
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
    path: Path, spec: Spec, *, examples: int = 3, group_size: int = 256
) -> DumpReport:
    """Every check over every request of the dump, for `blend validate --candidates`."""
    results = {name: CheckResult(name) for name in CHECKS}
    reader = DumpReader(path, spec)
    requests = 0

    def check(pending: list[tuple[pa.Table, int]]) -> None:
        group = _Group.of(pending)
        problems = reader.problems(group)
        reader._seen.update(group.request_ids)
        counted: set[tuple[str, str]] = set()
        for index, problem in problems:
            key = (str(index), problem.check)
            if key in counted:
                continue
            counted.add(key)
            result = results[problem.check]
            result.failed_requests += 1
            if len(result.examples) < examples:
                result.examples.append(str(problem))

    try:
        pending: list[tuple[pa.Table, int]] = []
        for request in reader.requests():
            requests += 1
            pending.append(request)
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
