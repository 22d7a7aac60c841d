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
from collections.abc import Iterator
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
            parquet = pq.ParquetFile(file)
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

    def __init__(self, path: Path, spec: Spec, *, chunk_rows: int = 65_536) -> None:
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
                yield self._build(pending)
                pending = []
        if pending:
            yield self._build(pending)

    # ------------------------------------------------------------------ building a batch

    def _build(self, requests: list[tuple[pa.Table, int]]) -> RequestBatch:
        rejected: list[BadRequest] = []
        good: list[tuple[pa.Table, int]] = []
        for table, first_row in requests:
            request_id = str(table.column(REQUEST_ID)[0].as_py())
            problem = self._check_request(table, request_id, first_row)
            if problem is None:
                self._seen.add(request_id)
                good.append((table, first_row))
            else:
                rejected.append(problem)
        sizes = np.array([t.num_rows for t, _ in good], dtype=np.int64)
        offsets = np.concatenate(([0], np.cumsum(sizes)))
        width = int(sizes.max()) if len(sizes) else 0
        batch = len(good)
        mask = torch.zeros((batch, width), dtype=torch.bool)
        if batch:
            positions = np.arange(offsets[-1]) - np.repeat(offsets[:-1], sizes)
            owners = np.repeat(np.arange(batch), sizes)
            mask[torch.from_numpy(owners), torch.from_numpy(positions)] = True
            table = pa.concat_tables([t for t, _ in good], promote_options="permissive")
        else:
            positions = owners = np.zeros(0, dtype=np.int64)
            table = None
        inputs: dict[str, Tensor] = {}
        for name, declared in self.spec.inputs.items():
            column = table.column(name).combine_chunks() if table is not None else None
            inputs[name] = _tensor(column, declared, batch, width, owners, positions, offsets)
        candidate_ids = (
            table.column(CANDIDATE_ID).combine_chunks() if table is not None else pa.array([])
        )
        request_ids = [str(t.column(REQUEST_ID)[0].as_py()) for t, _ in good]
        return RequestBatch(request_ids, candidate_ids, offsets, mask, inputs, rejected)

    def _check_request(self, table: pa.Table, request_id: str, first_row: int) -> BadRequest | None:
        problems = self.request_problems(table, request_id, first_row, first_only=True)
        return problems[0] if problems else None

    def request_problems(
        self, table: pa.Table, request_id: str, first_row: int, *, first_only: bool = False
    ) -> list[BadRequest]:
        """Everything wrong with one request (or just the first thing), each under its check."""
        problems: list[BadRequest] = []

        def bad(check: str, offset: int, column: str | None, reason: str) -> bool:
            problems.append(BadRequest(request_id, first_row + offset, column, reason, check))
            return first_only

        if request_id in self._seen and bad(
            CHECK_CONTIGUOUS,
            0,
            REQUEST_ID,
            "its rows are not contiguous (the request appeared earlier)",
        ):
            return problems
        candidates = table.column(CANDIDATE_ID).combine_chunks()
        if candidates.null_count:
            if bad(
                CHECK_MISSING, _first(pc.is_null(candidates)), CANDIDATE_ID, "missing candidate id"
            ):
                return problems
        else:
            counts = pc.value_counts(candidates)
            if len(counts) != len(candidates):
                duplicate = counts.filter(pc.greater(counts.field("counts"), 1))[0][
                    "values"
                ].as_py()
                at = _first(pc.equal(candidates, pa.scalar(duplicate, candidates.type)))
                if bad(CHECK_UNIQUE, at, CANDIDATE_ID, f"candidate id `{duplicate}` appears twice"):
                    return problems
        for name, declared in self.spec.inputs.items():
            for check, offset, reason in _column_problems(
                table.column(name).combine_chunks(), declared
            ):
                if bad(check, offset, name, reason):
                    return problems
        return problems


CHECK_TYPES = "columns present with the declared types"
CHECK_MISSING = "no missing values"
CHECK_FINITE = "no NaN or Inf"
CHECK_SIZES = "list sizes match the spec"
CHECK_FEATURES = "request features constant within a request"
CHECK_CONTIGUOUS = "rows of a request contiguous"
CHECK_UNIQUE = "candidate ids unique within a request"
CHECKS = (CHECK_TYPES, CHECK_MISSING, CHECK_FINITE, CHECK_SIZES, CHECK_FEATURES, CHECK_CONTIGUOUS,
          CHECK_UNIQUE)  # fmt: skip


def _first(flags: pa.Array) -> int:
    return int(pc.index(flags, True).as_py())


def _type_error(declared: Input, array: pa.Array) -> str:
    return f"declared `{declared}` but the dump holds {array.type}"


def _column_problems(array: pa.Array, declared: Input) -> Iterator[tuple[str, int, str]]:
    """Rows of one request's column that the spec cannot use: (check, row offset, reason)."""
    if array.null_count:
        yield CHECK_MISSING, _first(pc.is_null(array)), "missing value"
        return
    kind = declared.kind
    if kind == "score":
        if not (pa.types.is_floating(array.type) or pa.types.is_integer(array.type)):
            raise DumpError(_type_error(declared, array))
        values = array.cast(pa.float64()).to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(values)
        if bad.any():
            yield CHECK_FINITE, int(np.argmax(bad)), f"score is {values[bad][0]}"
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
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    wrong = lengths != declared.size
    if wrong.any():
        at = int(np.argmax(wrong))
        yield CHECK_SIZES, at, f"has {lengths[at]} values, the spec declares `{declared}`"
        return
    if values.null_count:
        yield (
            CHECK_MISSING,
            _first(pc.is_null(values)) // (declared.size or 1),
            "missing value in the list",
        )
        return
    if kind == "semantic_id":
        return
    numbers = values.to_numpy(zero_copy_only=False).reshape(len(array), -1)
    finite = np.isfinite(numbers).all(axis=1)
    if not finite.all():
        yield CHECK_FINITE, int(np.argmin(finite)), "holds NaN or Inf"
        return
    same = (numbers == numbers[0]).all(axis=1)
    if kind == "features" and not same.all():
        yield (
            CHECK_FEATURES,
            int(np.argmin(same)),
            "request features differ between rows of one request",
        )


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


def validate_dump(path: Path, spec: Spec, *, examples: int = 3) -> DumpReport:
    """Every check over every request of the dump, for `blend validate --candidates`."""
    results = {name: CheckResult(name) for name in CHECKS}
    reader = DumpReader(path, spec)
    requests = 0
    try:
        for table, first_row in reader.requests():
            requests += 1
            request_id = str(table.column(REQUEST_ID)[0].as_py())
            problems = reader.request_problems(table, request_id, first_row)
            reader._seen.add(request_id)
            for check in {p.check for p in problems}:
                result = results[check]
                result.failed_requests += 1
                if len(result.examples) < examples:
                    first = next(p for p in problems if p.check == check)
                    result.examples.append(str(first))
    except DumpError as error:
        results[CHECK_TYPES].detail = str(error)
    return DumpReport(requests, reader.rows_read, list(results.values()))


def _tensor(
    column: pa.Array | None,
    declared: Input,
    batch: int,
    width: int,
    owners: np.ndarray,
    positions: np.ndarray,
    offsets: np.ndarray,
) -> Tensor:
    kind = declared.kind
    size = declared.size or 0
    if kind == "features":
        out = np.zeros((batch, size), dtype=np.float32)
        if column is not None and batch:
            values = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, size)
            out[:] = values[offsets[:-1]]
        return torch.from_numpy(out)
    if kind in ("embedding", "semantic_id"):
        dtype = np.float32 if kind == "embedding" else np.int64
        out = np.zeros((batch, width, size), dtype=dtype)
        if column is not None and batch:
            values = column.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
            out[owners, positions] = values.reshape(-1, size)
        return torch.from_numpy(out)
    if kind == "category":
        out = np.zeros((batch, width), dtype=np.int64)
        if column is not None and batch:
            if pa.types.is_dictionary(column.type):
                column = column.dictionary_decode()
            codes = pc.dictionary_encode(column).indices.to_numpy(zero_copy_only=False)
            out[owners, positions] = codes
        return torch.from_numpy(out)
    if kind == "flag":
        out = np.zeros((batch, width), dtype=np.bool_)
        if column is not None and batch:
            out[owners, positions] = column.to_numpy(zero_copy_only=False)
        return torch.from_numpy(out)
    out = np.zeros((batch, width), dtype=np.float32)
    if column is not None and batch:
        out[owners, positions] = column.cast(pa.float32()).to_numpy(zero_copy_only=False)
    return torch.from_numpy(out)
