"""Hostile candidate dumps (issue 18, "nothing lost, nothing wrong with exit 0").

Every request of a dump ends up in the slates or the rejects, exactly once and whole; a dump the
reader cannot use is a `DumpError` that names the file (and the column, row or line), never an
internal error; a damaged Parquet page is caught by its checksum instead of being blended.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import Result
from typer.testing import CliRunner

from blendspec.cli import app
from blendspec.engine.run import BadRequestError, run
from blendspec.io.dump import (
    CHECK_CONTIGUOUS,
    CHECK_FEATURES,
    CHECK_FINITE,
    CHECK_MISSING,
    CHECK_SIZES,
    DumpError,
    DumpReader,
    validate_dump,
)
from tests.test_run import SPEC, loaded, read_slates, to_table, write_jsonl

# ---------------------------------------------------------------------------------------- helpers


def blend(*args: object) -> Result:
    """The CLI in-process; a user error must be an exit code, never an escaped exception."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception}")
    assert "Traceback" not in result.output and "internal error" not in result.output
    return result


def write_parquet(rows: list[dict], path: Path) -> Path:
    """Plain Arrow types from the rows (embeddings as variable lists, which the reader casts)."""
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.blend"
    path.write_text(SPEC)
    return path


def request(request_id: str, candidates: int = 3, **overrides: object) -> list[dict]:
    """A good request with `candidates` rows; overrides apply to its first row."""
    rows = [
        {
            "request_id": request_id,
            "candidate_id": f"{request_id}-c{c}",
            "p_click": 0.5 + c / 16,
            "p_hide": 0.0,
            "visual": [0.1, 0.2, 0.3, float(c)],
            "sid": [1, c],
            "topic": f"t{c % 2}",
            "blocked": False,
            "user_state": [1.0, 2.0, 3.0],
        }
        for c in range(candidates)
    ]
    rows[0].update(overrides)
    return rows


def rejects_of(summary) -> list[dict]:  # type: ignore[no-untyped-def]
    return pq.read_table(summary.rejects_path).to_pylist() if summary.rejects_path else []


def run_skip(dump: Path, tmp_path: Path, batch_size: int = 64):  # type: ignore[no-untyped-def]
    out = tmp_path / "slates.parquet"
    summary = run(loaded(), dump, out, batch_size=batch_size, on_bad_request="skip")
    return summary, read_slates(out), rejects_of(summary)


def assert_accounted(summary, slates: dict, rejects: list[dict], ids: set[str]) -> None:  # type: ignore[no-untyped-def]
    """Every request once: in the slates or in the rejects, never both, never twice."""
    rejected = [r["request_id"] for r in rejects]
    assert len(rejected) == len(set(rejected)), f"a request rejected twice: {rejected}"
    assert not set(slates) & set(rejected), "a request both blended and rejected"
    assert set(slates) | set(rejected) == ids
    assert summary.requests_in == len(ids)
    assert summary.requests_blended == len(slates)
    assert summary.requests_rejected == len(rejected)


# -------------------------------------------- 1. every check evaluates every request of a batch

NAN_EMBEDDING = [math.nan, 1.0, 1.0, 1.0]


def nan_and_short() -> list[dict]:
    """`a` has a NaN inside an embedding, `b` (later, same batch) a short embedding."""
    return [
        *request("ok0"),
        *request("a", visual=NAN_EMBEDDING),
        *request("b", visual=[1.0, 2.0]),
        *request("ok1"),
    ]


def test_nan_embedding_is_rejected_when_another_request_has_a_short_one(tmp_path: Path) -> None:
    rows = nan_and_short()
    summary, slates, rejects = run_skip(write_parquet(rows, tmp_path / "d.parquet"), tmp_path)
    assert [(r["request_id"], r["column"]) for r in rejects] == [("a", "visual"), ("b", "visual")]
    assert "NaN" in rejects[0]["reason"] and "has 2 values" in rejects[1]["reason"]
    assert_accounted(summary, slates, rejects, {"ok0", "a", "b", "ok1"})


def test_error_mode_names_the_first_bad_request_in_dump_order(tmp_path: Path) -> None:
    dump = write_parquet(nan_and_short(), tmp_path / "d.parquet")
    with pytest.raises(BadRequestError) as caught:
        run(loaded(), dump, tmp_path / "s.parquet")
    assert (caught.value.problem.request_id, caught.value.problem.row) == ("a", 3)


def test_null_inside_a_list_is_rejected_when_another_request_has_a_null_list(
    tmp_path: Path,
) -> None:
    rows = [
        *request("a", visual=[1.0, None, 1.0, 1.0]),
        *request("b", visual=None),
        *request("c", sid=[1, None]),
        *request("ok"),
    ]
    summary, slates, rejects = run_skip(write_jsonl(rows, tmp_path / "d.jsonl"), tmp_path)
    assert [(r["request_id"], r["column"]) for r in rejects] == [
        ("a", "visual"),
        ("b", "visual"),
        ("c", "sid"),
    ]
    assert_accounted(summary, slates, rejects, {"a", "b", "c", "ok"})


def test_features_checked_for_every_request(tmp_path: Path) -> None:
    """One request's state changes between rows, another's state has the wrong size; a third
    holds Inf: all three are found in one batch."""
    rows = [
        *request("changes"),
        *request("short", user_state=[1.0]),
        *request("inf", user_state=[math.inf, 2.0, 3.0]),
        *request("ok"),
    ]
    rows[1]["user_state"] = [9.0, 9.0, 9.0]
    reader = DumpReader(write_parquet(rows, tmp_path / "d.parquet"), loaded().spec)
    (batch,) = reader.batches(64)
    assert batch.request_ids == ["ok"]
    assert [(r.request_id, r.check) for r in batch.rejected] == [
        ("changes", CHECK_FEATURES),
        ("short", CHECK_SIZES),
        ("inf", CHECK_FINITE),
    ]


def test_a_request_with_several_problems_is_rejected_once_with_every_reason(
    tmp_path: Path,
) -> None:
    rows = [*request("ok"), *request("worse", p_click=math.nan, visual=[1.0, 2.0], topic=None)]
    summary, slates, rejects = run_skip(write_parquet(rows, tmp_path / "d.parquet"), tmp_path)
    assert len(rejects) == 1
    (reject,) = rejects
    assert (reject["request_id"], reject["row"], reject["column"]) == ("worse", 3, "topic")
    for words in ("missing value", "score is nan", "`p_click`", "has 2 values", "`visual`"):
        assert words in reject["reason"], reject["reason"]
    assert_accounted(summary, slates, rejects, {"ok", "worse"})


def test_validate_reports_every_failed_check(tmp_path: Path) -> None:
    report = validate_dump(write_parquet(nan_and_short(), tmp_path / "d.parquet"), loaded().spec)
    checks = {c.name: c for c in report.checks}
    assert checks[CHECK_FINITE].failed_requests == 1 and "`a`" in checks[CHECK_FINITE].examples[0]
    assert checks[CHECK_SIZES].failed_requests == 1 and "`b`" in checks[CHECK_SIZES].examples[0]
    rows = [*request("a", visual=[1.0, None, 1.0, 1.0]), *request("b", visual=None)]
    report = validate_dump(write_jsonl(rows, tmp_path / "d.jsonl"), loaded().spec)
    missing = next(c for c in report.checks if c.name == CHECK_MISSING)
    assert missing.failed_requests == 2


def test_validate_cli_fails_the_nan_check(tmp_path: Path) -> None:
    dump = write_parquet(nan_and_short(), tmp_path / "d.parquet")
    result = blend("validate", spec_file(tmp_path), "--candidates", dump, "--format", "json")
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)[-1]["checks"]}
    assert not checks[CHECK_FINITE]["ok"] and not checks[CHECK_SIZES]["ok"]


# -------------------------------------------------- 2. a request whose rows are not contiguous


def scattered(first_part: dict | None = None) -> list[dict]:
    """r0 r1 r2 r3 (r2 again: one more row) r4; r2's first part optionally damaged."""
    rows = [*request("r0"), *request("r1"), *request("r2", **(first_part or {})), *request("r3")]
    rows.append(dict(request("r2")[0], candidate_id="stray"))
    return [*rows, *request("r4")]


@pytest.mark.parametrize("batch_size", [1, 2, 64])
def test_scattered_request_is_rejected_whole_and_counted_once(
    tmp_path: Path, batch_size: int
) -> None:
    dump = write_parquet(scattered(), tmp_path / "d.parquet")
    summary, slates, rejects = run_skip(dump, tmp_path, batch_size)
    assert [(r["request_id"], r["column"], r["row"]) for r in rejects] == [("r2", "request_id", 6)]
    assert "rows 6-8, 12" in rejects[0]["reason"]
    assert_accounted(summary, slates, rejects, {f"r{i}" for i in range(5)})
    assert "r2" not in pq.read_table(tmp_path / "slates.parquet")["request_id"].to_pylist()


@pytest.mark.parametrize("batch_size", [1, 64])
def test_scattered_request_with_a_bad_first_part_is_not_blended(
    tmp_path: Path, batch_size: int
) -> None:
    dump = write_parquet(scattered({"p_click": math.nan}), tmp_path / "d.parquet")
    summary, slates, rejects = run_skip(dump, tmp_path, batch_size)
    assert [r["request_id"] for r in rejects] == ["r2"]
    assert "not contiguous" in rejects[0]["reason"] and "score is nan" in rejects[0]["reason"]
    assert_accounted(summary, slates, rejects, {f"r{i}" for i in range(5)})


def test_scattered_request_in_error_mode_names_the_request_and_rows(tmp_path: Path) -> None:
    dump = write_jsonl(scattered(), tmp_path / "d.jsonl")
    with pytest.raises(BadRequestError) as caught:
        run(loaded(), dump, tmp_path / "s.parquet", batch_size=1)
    problem = caught.value.problem
    assert (problem.request_id, problem.row, problem.column) == ("r2", 12, "request_id")
    assert "row 6" in problem.reason
    result = blend("run", spec_file(tmp_path), "--candidates", dump, "-o", tmp_path / "s.parquet")
    assert result.exit_code == 1 and "request `r2` (row 12" in result.output


def test_scattered_request_cli_counts_distinct_requests(tmp_path: Path) -> None:
    dump = write_parquet(scattered(), tmp_path / "d.parquet")
    out = tmp_path / "s.parquet"
    result = blend(
        "run", spec_file(tmp_path), "--candidates", dump, "-o", out,
        "--on-bad-request", "skip", "--metrics", tmp_path / "m.json", "--batch-size", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert (metrics["requests_in"], metrics["requests_blended"], metrics["requests_rejected"]) == (
        5,
        4,
        1,
    )


def test_scattered_request_with_limit(tmp_path: Path) -> None:
    """--limit counts distinct requests; a request scattered within the limit is still whole."""
    dump = write_parquet(scattered(), tmp_path / "d.parquet")
    out = tmp_path / "s.parquet"
    summary = run(loaded(), dump, out, batch_size=2, limit=4, on_bad_request="skip")
    rejects = rejects_of(summary)
    assert [r["request_id"] for r in rejects] == ["r2"], "its stray row lies before r4"
    assert_accounted(summary, read_slates(out), rejects, {"r0", "r1", "r2", "r3"})
    with pytest.raises(BadRequestError, match="r2"):
        run(loaded(), dump, out, batch_size=2, limit=4)
    assert run(loaded(), dump, out, limit=2).requests_blended == 2


def test_scattered_metrics_equal_a_run_without_the_request(tmp_path: Path) -> None:
    """The restart leaves no trace of the scattered request's first part in the metrics."""
    rows = scattered({"visual": [5.0, -1.0, 0.0, 2.0], "p_click": 0.99})
    summary, _, _ = run_skip(write_parquet(rows, tmp_path / "d.parquet"), tmp_path)
    clean = [r for r in rows if r["request_id"] != "r2"]
    (tmp_path / "clean").mkdir()
    reference, _, _ = run_skip(write_parquet(clean, tmp_path / "c.parquet"), tmp_path / "clean")
    assert summary.metrics == pytest.approx(reference.metrics, rel=1e-12)
    assert summary.slots == reference.slots


def test_validate_counts_distinct_requests_and_the_scattered_one_once(tmp_path: Path) -> None:
    rows = scattered()
    rows.append(dict(request("r2")[0], candidate_id="stray2"))
    report = validate_dump(write_parquet(rows, tmp_path / "d.parquet"), loaded().spec)
    assert report.requests == 5
    contiguous = next(c for c in report.checks if c.name == CHECK_CONTIGUOUS)
    assert contiguous.failed_requests == 1


def test_ray_engine_accounts_scattered_requests_like_the_local_engine(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    folder = tmp_path / "shards"
    folder.mkdir()
    write_parquet(request("s0") + request("s1"), folder / "part-000.parquet")
    write_parquet(scattered({"p_click": math.nan}), folder / "part-001.parquet")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        local = run(loaded(), folder, tmp_path / "l.parquet", on_bad_request="skip")
        remote = run(loaded(), folder, tmp_path / "r.parquet", on_bad_request="skip", engine="ray")
        assert pq.read_table(tmp_path / "r.parquet").equals(pq.read_table(tmp_path / "l.parquet"))
        assert rejects_of(remote) == rejects_of(local)
        counts = ("requests_in", "requests_blended", "requests_rejected", "empty_slates", "slots")
        assert [getattr(remote, c) for c in counts] == [getattr(local, c) for c in counts]
        assert remote.metrics == pytest.approx(local.metrics)
        assert (remote.requests_in, remote.requests_rejected) == (7, 1)
        # A request in two shards, rejected in one of them: the ray engine refuses the dump.
        write_parquet(request("r2", p_click=math.nan), folder / "part-002.parquet")
        with pytest.raises(DumpError, match=r"`r2` appears in shards .*part-001.*part-002"):
            run(loaded(), folder, tmp_path / "r2.parquet", on_bad_request="skip", engine="ray")
    finally:
        if started:
            ray.shutdown()


# ------------------------------------------------------ 9. dump errors that name what is wrong


def assert_dump_error(tmp_path: Path, dump: Path, *words: str) -> str:
    """`blend run` and `blend validate --candidates` both exit 1 naming the file and `words`."""
    spec = spec_file(tmp_path)
    result = blend("run", spec, "--candidates", dump, "-o", tmp_path / "s.parquet")
    assert result.exit_code == 1, result.output
    output = " ".join(result.output.split())
    for word in (dump.name, *words):
        assert word in output, (word, output)
    checked = blend("validate", spec, "--candidates", dump)
    assert checked.exit_code == 1
    assert dump.name in " ".join(checked.output.split())
    assert not (tmp_path / "s.parquet").exists()
    return output


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_score_of_strings_names_the_column_and_the_file(tmp_path: Path, suffix: str) -> None:
    rows = [dict(r, p_click=str(r["p_click"])) for r in request("a") + request("b")]
    write = write_parquet if suffix == "parquet" else write_jsonl
    dump = write(rows, tmp_path / f"d.{suffix}")
    assert_dump_error(tmp_path, dump, "`p_click`", "declared `score`", "string")


def test_shards_whose_column_types_differ_name_both_files_and_the_column(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    write_parquet(request("a"), folder / "part-0.parquet")
    write_parquet([dict(r, topic=7) for r in request("b")], folder / "part-1.parquet")
    output = assert_dump_error(tmp_path, folder, "part-0.parquet", "part-1.parquet", "`topic`")
    assert "string" in output and "int64" in output


def test_jsonl_types_that_change_between_blocks_name_the_line(tmp_path: Path) -> None:
    rows = request("a") + [dict(r, topic=7) for r in request("b")]
    dump = write_jsonl(rows, tmp_path / "d.jsonl")
    with pytest.raises(DumpError, match=r"d\.jsonl:4: .*`topic`"):
        list(DumpReader(dump, loaded().spec, chunk_rows=3).batches(64))


def test_non_utf8_request_id_names_the_file_and_row(tmp_path: Path) -> None:
    table = to_table(request("a") + request("b"))
    ids = pa.array([b"a"] * 3 + [b"\xff\xfeb"] * 3, pa.binary())
    table = table.set_column(0, "request_id", ids)
    pq.write_table(table, tmp_path / "d.parquet")
    assert_dump_error(tmp_path, tmp_path / "d.parquet", "`request_id`", "row 3", "UTF-8")


def test_non_utf8_candidate_id_in_jsonl_names_the_line(tmp_path: Path) -> None:
    dump = tmp_path / "d.jsonl"
    lines = [json.dumps(r).encode() for r in request("a")]
    lines[1] = lines[1].replace(b'"a-c1"', b'"a-\xff"')
    dump.write_bytes(b"\n".join(lines) + b"\n")
    assert_dump_error(tmp_path, dump, "`candidate_id`", "d.jsonl:2", "UTF-8")


def test_candidate_id_of_list_type_names_the_column(tmp_path: Path) -> None:
    rows = [dict(r, candidate_id=[1, 2]) for r in request("a")]
    dump = write_parquet(rows, tmp_path / "d.parquet")
    assert_dump_error(tmp_path, dump, "`candidate_id`", "list")


def test_duplicate_column_names_in_parquet(tmp_path: Path) -> None:
    table = to_table(request("a"))
    table = table.append_column("p_click", table.column("p_click"))
    pq.write_table(table, tmp_path / "d.parquet")
    assert_dump_error(tmp_path, tmp_path / "d.parquet", "`p_click`", "appears 2 times")


def test_duplicate_keys_in_jsonl_name_the_line(tmp_path: Path) -> None:
    dump = tmp_path / "d.jsonl"
    lines = [json.dumps(r) for r in request("a")]
    lines[2] = lines[2][:-1] + ', "p_click": 0.5}'
    dump.write_text("\n".join(lines) + "\n")
    assert_dump_error(tmp_path, dump, "d.jsonl:3", "p_click")


def test_jsonl_error_names_the_line_of_the_file_not_of_a_block(tmp_path: Path) -> None:
    """Past pyarrow's 1 MB block the row it reports is within its block: the line is the file's."""
    rows = [request(f"r{k // 3}", candidates=3)[k % 3] for k in range(30_000)]
    rows[20_005]["p_hide"] = "oops"  # line 20,006
    dump = write_jsonl(rows, tmp_path / "d.jsonl")
    assert dump.stat().st_size > 2 << 20
    with pytest.raises(DumpError, match=r"d\.jsonl:20006: "):
        list(DumpReader(dump, loaded().spec).batches(64))


def test_jsonl_line_over_a_megabyte_is_read(tmp_path: Path) -> None:
    long_id = "x" * (3 << 20)
    rows = request("a") + request(long_id, candidates=1) + request("b")
    out = tmp_path / "s.parquet"
    summary = run(loaded(), write_jsonl(rows, tmp_path / "d.jsonl"), out)
    assert summary.requests_blended == 3
    assert set(read_slates(out)) == {"a", long_id, "b"}


def test_missing_file_column_is_named_for_each_shard(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    write_parquet(request("a"), folder / "part-0.parquet")
    write_parquet(
        [{k: v for k, v in r.items() if k != "sid"} for r in request("b")],
        folder / "part-1.parquet",
    )
    assert_dump_error(tmp_path, folder, "part-1.parquet", "`sid`")


# ------------------------------------------------------------------------- Parquet page checksums


def _flip_in_data_page(path: Path, column: str) -> None:
    """Flip one byte near the end of `column`'s first column chunk (inside its last data page)."""
    metadata = pq.ParquetFile(path).metadata
    index = metadata.schema.to_arrow_schema().get_field_index(column)
    chunk = metadata.row_group(0).column(index)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    offset = start + chunk.total_compressed_size - 8
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x55
    path.write_bytes(bytes(data))


def test_simulated_dump_has_page_checksums_and_a_flipped_byte_is_caught(tmp_path: Path) -> None:
    dump = tmp_path / "d.parquet"
    result = blend("simulate", "-o", dump, "--requests", "4", "--candidates", "30")
    assert result.exit_code == 0, result.output
    spec = Path(__file__).resolve().parent.parent / "specs" / "homefeed.blend"
    assert blend("run", spec, "--candidates", dump, "-o", tmp_path / "ok.parquet").exit_code == 0
    _flip_in_data_page(dump, "p_click")
    result = blend("run", spec, "--candidates", dump, "-o", tmp_path / "s.parquet")
    assert result.exit_code == 1, result.output
    assert "d.parquet" in result.output and "checksum" in result.output
    assert not (tmp_path / "s.parquet").exists()


def test_reader_verifies_page_checksums(tmp_path: Path) -> None:
    dump = tmp_path / "d.parquet"
    rows = [r for k in range(40) for r in request(f"r{k}", candidates=5)]
    rows = [dict(r, p_click=float(np.float64(k) / 7)) for k, r in enumerate(rows)]
    pq.write_table(to_table(rows), dump, write_page_checksum=True, compression="none")
    _flip_in_data_page(dump, "p_click")
    with pytest.raises(DumpError, match=r"d\.parquet.*checksum"):
        list(DumpReader(dump, loaded().spec).batches(64))
    report = validate_dump(dump, loaded().spec)
    assert not report.ok and "checksum" in (report.checks[0].detail or "")


@pytest.mark.parametrize("chunk_rows", [2, 16_384])
def test_jsonl_lists_that_begin_with_nulls_are_read(tmp_path: Path, chunk_rows: int) -> None:
    """pyarrow builds a broken list column from `[null, 3]` before `[1.5, …]` (or from lists of
    nulls alone); the reader reads such lines again and judges the requests instead of crashing."""
    rows = [
        *request("a", sid=[None, 1], visual=[None, None, None, None]),
        *[dict(r, visual=[None] * 4) for r in request("b")],
        *request("c"),
    ]
    rows[1]["visual"] = [None, 3, 1, 1]
    dump = write_jsonl(rows, tmp_path / "d.jsonl")
    reader = DumpReader(dump, loaded().spec, chunk_rows=chunk_rows)
    batches = list(reader.batches(64))
    assert [r for b in batches for r in b.request_ids] == ["c"]
    rejected = [(r.request_id, r.column) for b in batches for r in b.rejected]
    assert rejected == [("a", "visual"), ("b", "visual")]


def test_missing_candidate_ids_are_missing_not_duplicates(tmp_path: Path) -> None:
    rows = [dict(r, candidate_id=None) for r in request("a")] + request("b")
    summary, slates, rejects = run_skip(write_jsonl(rows, tmp_path / "d.jsonl"), tmp_path)
    assert [r["reason"] for r in rejects] == ["missing candidate id"]
    assert_accounted(summary, slates, rejects, {"a", "b"})


def test_report_after_a_restart_counts_no_part_of_the_scattered_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blendspec.engine import run as run_module

    made = []
    real = run_module._collector

    def spy(runner):  # type: ignore[no-untyped-def]
        made.append(real(runner))
        return made[-1]

    monkeypatch.setattr(run_module, "_collector", spy)
    dump = write_parquet(scattered(), tmp_path / "d.parquet")
    report = tmp_path / "report.html"
    summary = run(
        loaded(), dump, tmp_path / "s.parquet", on_bad_request="skip", report=report, batch_size=1
    )
    assert len(made) == 2, "the report starts over with the blending"
    assert made[-1].filled.sum() == summary.slots
    assert report.read_text().startswith("<!doctype html>")
