"""`blend run`: dumps in every format give the same slates; bad requests are reported or rejected
with request, row and column; nothing is lost; outputs appear atomically."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from blendspec.cli import app
from blendspec.engine.blend import BadRequestError, Runner
from blendspec.engine.run import run
from blendspec.io.dump import DumpError, DumpReader
from blendspec.spec.loader import load_text

SPEC = """
spec small
slate 5
input p_click: score
input p_hide: score
input visual: embedding[4]
input sid: semantic_id[2]
input topic: category
input blocked: flag
input user_state: features[3]
objective click = p_click
objective hide = p_hide
weight w_click = 1 in [0, 5]
weight w_hide = -2 in [-5, 0] {sign = negative}
utility = w_click * click + w_hide * hide
diversity none
filter blocked
"""
# visual, sid, topic and user_state are unused by this utility-only spec; the dump must still
# provide them, which is what these tests exercise.


def loaded():
    return load_text(SPEC, "dsl", "small.blend")


def make_rows(requests: int = 12, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(requests):
        state = rng.standard_normal(3).round(3).tolist()
        for c in range(int(rng.integers(1, 15))):
            rows.append(
                {
                    "request_id": f"r{r}",
                    "candidate_id": f"c{c}",
                    "p_click": float(rng.integers(0, 16) / 16),
                    "p_hide": float(rng.integers(0, 4) / 16),
                    "visual": rng.standard_normal(4).round(3).tolist(),
                    "sid": rng.integers(0, 3, 2).tolist(),
                    "topic": f"t{rng.integers(0, 3)}",
                    "blocked": bool(rng.random() < 0.1),
                    "user_state": state,
                }
            )
    return rows


def to_table(rows: list[dict]) -> pa.Table:
    table = pa.Table.from_pylist(rows)
    return table.set_column(
        table.schema.get_field_index("visual"),
        "visual",
        pa.FixedSizeListArray.from_arrays(
            pa.array(np.array([r["visual"] for r in rows], np.float32).ravel()), 4
        ),
    )


def write_parquet(rows: list[dict], path: Path) -> Path:
    pq.write_table(to_table(rows), path)
    return path


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def expected_slates(rows: list[dict]) -> dict[str, list[str]]:
    """Top-5 by utility among unblocked candidates, ties to the earlier row (straight from the spec)."""
    by_request: dict[str, list[tuple[float, int, str]]] = {}
    for index, row in enumerate(rows):
        if row["blocked"]:
            by_request.setdefault(row["request_id"], [])
            continue
        utility = row["p_click"] - 2 * row["p_hide"]
        by_request.setdefault(row["request_id"], []).append((-utility, index, row["candidate_id"]))
    return {r: [c for _, _, c in sorted(items)[:5]] for r, items in by_request.items()}


def read_slates(path: Path) -> dict[str, list[str]]:
    slates: dict[str, list[str]] = {}
    for row in pq.read_table(path).to_pylist():
        slates.setdefault(row["request_id"], [])
        if row["position"] >= 0:
            slates[row["request_id"]].append(row["candidate_id"])
    return slates


@pytest.mark.parametrize("kind", ["parquet", "jsonl", "shards"])
def test_every_format_gives_the_reference_slates(tmp_path: Path, kind: str) -> None:
    rows = make_rows()
    if kind == "parquet":
        dump = write_parquet(rows, tmp_path / "dump.parquet")
    elif kind == "jsonl":
        dump = write_jsonl(rows, tmp_path / "dump.jsonl")
    else:
        dump = tmp_path / "shards"
        dump.mkdir()
        write_parquet(rows[:40], dump / "part-0.parquet")
        write_parquet(rows[40:], dump / "part-1.parquet")
    summary = run(loaded(), dump, tmp_path / "slates.parquet", batch_size=5)
    assert read_slates(tmp_path / "slates.parquet") == expected_slates(rows)
    assert summary.requests_in == summary.requests_blended == 12
    assert summary.rejects_path is None


def test_requests_straddling_chunks_are_whole(tmp_path: Path) -> None:
    rows = make_rows(requests=20, seed=3)
    dump = write_parquet(rows, tmp_path / "dump.parquet")
    reader = DumpReader(dump, loaded().spec, chunk_rows=7)
    seen = [request for batch in reader.batches(3) for request in batch.request_ids]
    assert seen == [f"r{i}" for i in range(20)]
    sizes = [
        int(m.sum())
        for batch in DumpReader(dump, loaded().spec, chunk_rows=7).batches(3)
        for m in batch.mask
    ]
    assert sizes == [sum(1 for r in rows if r["request_id"] == f"r{i}") for i in range(20)]


def _break(rows: list[dict], kind: str) -> tuple[str, str]:
    """Damage one request; return its id and the column the reader must name."""
    first_r2 = next(i for i, r in enumerate(rows) if r["request_id"] == "r2")
    target = rows[first_r2 + 0]
    if kind == "nan":
        target["p_click"] = float("nan")
        return "r2", "p_click"
    if kind == "embedding_size":
        target["visual"] = [1.0, 2.0]
        return "r2", "visual"
    if kind == "duplicate_id":
        rows[first_r2 + 1 if rows[first_r2 + 1]["request_id"] == "r2" else first_r2][
            "candidate_id"
        ] = target["candidate_id"]
        rows.insert(first_r2 + 1, dict(target))
        return "r2", "candidate_id"
    if kind == "features":
        rows.insert(first_r2 + 1, dict(target, candidate_id="extra", user_state=[9.0, 9.0, 9.0]))
        return "r2", "user_state"
    if kind == "missing_value":
        target["topic"] = None
        return "r2", "topic"
    if kind == "not_contiguous":
        rows.append(dict(target, candidate_id="late"))
        return "r2", "request_id"
    raise AssertionError(kind)


KINDS = ["nan", "embedding_size", "duplicate_id", "features", "missing_value", "not_contiguous"]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_request_is_an_error_naming_request_row_column(tmp_path: Path, kind: str) -> None:
    rows = make_rows()
    request, column = _break(rows, kind)
    dump = write_jsonl(rows, tmp_path / "dump.jsonl")
    with pytest.raises(BadRequestError) as caught:
        run(loaded(), dump, tmp_path / "slates.parquet", batch_size=4)
    problem = caught.value.problem
    assert (problem.request_id, problem.column) == (request, column)
    assert rows[problem.row]["request_id"] == request
    assert not (tmp_path / "slates.parquet").exists(), "no partial output after a failed run"
    assert list(tmp_path.iterdir()) == [dump], "no temporary files left behind"


@pytest.mark.parametrize("kind", KINDS)
def test_skipped_bad_requests_go_to_rejects_and_nothing_is_lost(tmp_path: Path, kind: str) -> None:
    rows = make_rows()
    request, column = _break(rows, kind)
    dump = write_jsonl(rows, tmp_path / "dump.jsonl")
    summary = run(loaded(), dump, tmp_path / "slates.parquet", batch_size=4, on_bad_request="skip")
    rejects = pq.read_table(summary.rejects_path).to_pylist()
    assert [(r["request_id"], r["column"]) for r in rejects] == [(request, column)]
    slates = read_slates(tmp_path / "slates.parquet")
    request_ids = {r["request_id"] for r in rows}
    assert summary.requests_in == summary.requests_blended + summary.requests_rejected
    # A request whose rows are not contiguous is rejected whole (tests/test_hostile_dump.py).
    assert set(slates) | {request} == request_ids and request not in slates


def test_missing_column_is_a_dump_error_with_a_hint(tmp_path: Path) -> None:
    rows = [{("p_clck" if k == "p_click" else k): v for k, v in r.items()} for r in make_rows()]
    dump = write_parquet(rows, tmp_path / "dump.parquet")
    with pytest.raises(DumpError, match=r"missing column `p_click` \(did you mean `p_clck`\?\)"):
        run(loaded(), dump, tmp_path / "slates.parquet")


def test_empty_slate_is_one_row_at_position_minus_one(tmp_path: Path) -> None:
    rows = make_rows(requests=3)
    for row in rows:
        if row["request_id"] == "r1":
            row["blocked"] = True
    dump = write_parquet(rows, tmp_path / "dump.parquet")
    summary = run(loaded(), dump, tmp_path / "slates.parquet")
    table = pq.read_table(tmp_path / "slates.parquet").to_pylist()
    empty = [r for r in table if r["request_id"] == "r1"]
    assert [(r["position"], r["candidate_id"]) for r in empty] == [(-1, None)]
    assert summary.empty_slates == 1


def test_interrupted_run_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dump = write_parquet(make_rows(requests=20), tmp_path / "dump.parquet")
    calls = {"n": 0}
    original = Runner.blend

    def failing(self, batch):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Runner, "blend", failing)
    with pytest.raises(KeyboardInterrupt):
        run(loaded(), dump, tmp_path / "slates.parquet", batch_size=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump.parquet"]


def test_cli_run_summary_and_exit_codes(tmp_path: Path) -> None:
    spec = tmp_path / "small.blend"
    spec.write_text(SPEC)
    rows = make_rows()
    dump = write_parquet(rows, tmp_path / "dump.parquet")
    runner = CliRunner()
    out = tmp_path / "slates.parquet"
    result = runner.invoke(
        app,
        [
            "run",
            str(spec),
            "--candidates",
            str(dump),
            "-o",
            str(out),
            "--metrics",
            str(tmp_path / "m.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "requests in" in result.output and "utility_retained" in result.output
    assert json.loads((tmp_path / "m.json").read_text())["requests_blended"] == 12
    _break(rows, "nan")
    bad = write_parquet(rows, tmp_path / "bad.parquet")
    failed = runner.invoke(app, ["run", str(spec), "--candidates", str(bad), "-o", str(out)])
    assert failed.exit_code == 1
    assert "request `r2`" in failed.output and "p_click" in failed.output
    limited = runner.invoke(
        app, ["run", str(spec), "--candidates", str(dump), "-o", str(out), "--limit", "3"]
    )
    assert limited.exit_code == 0
    assert len(read_slates(out)) == 3


def test_validate_candidates_reports_each_check_with_counts(tmp_path: Path) -> None:
    spec = tmp_path / "small.blend"
    spec.write_text(SPEC)
    rows = make_rows(requests=12)
    runner = CliRunner()
    good = write_jsonl(rows, tmp_path / "good.jsonl")
    ok = runner.invoke(app, ["validate", str(spec), "--candidates", str(good)])
    assert ok.exit_code == 0, ok.output
    assert ok.output.count("PASS") == 7
    _break(rows, "not_contiguous")
    _break(rows, "nan")
    bad = write_jsonl(rows, tmp_path / "bad.jsonl")
    result = runner.invoke(
        app, ["validate", str(spec), "--candidates", str(bad), "--format", "json"]
    )
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)[-1]["checks"]}
    assert checks["no NaN or Inf"]["failed_requests"] == 1
    assert "request `r2`" in checks["no NaN or Inf"]["examples"][0]
    assert checks["rows of a request contiguous"]["failed_requests"] == 1
    assert checks["candidate ids unique within a request"]["ok"]


def test_html_report_is_self_contained(tmp_path: Path) -> None:
    spec_text = SPEC.replace(
        "filter blocked", "filter blocked\nspacing blocked {window = 2, coefficient = 1}"
    )
    spec_text = spec_text.replace("diversity none", "diversity mmr {similarity = cosine(visual)}")
    loaded_spec = load_text(spec_text, "dsl", "small.blend")
    rows = make_rows(requests=12)
    dump = write_parquet(rows, tmp_path / "dump.parquet")
    report = tmp_path / "report.html"
    run(loaded_spec, dump, tmp_path / "slates.parquet", report=report)
    page = report.read_text()
    # Plotly charts with plotly.js inline; tests/test_report_pages.py loads the page in a browser.
    starts = page.startswith("<!doctype html>")
    charts = page.count('class="plotly-graph-div"')
    assert starts and charts >= 4, charts
    titled = "Mean utility by slate position" in page and "Gaps between consecutive" in page
    assert titled
    external = re.findall(r"<script[^>]* src=|<link ", page)
    assert not external, "no external scripts or style sheets"
    assert (report.stat().st_mode & 0o777) != 0o600, "a report is readable like any other output"


def test_non_contiguous_request_inside_one_batch_is_caught(tmp_path: Path) -> None:
    rows = make_rows(requests=6)
    stray = dict(next(r for r in rows if r["request_id"] == "r2"), candidate_id="stray")
    after_r3 = max(i for i, r in enumerate(rows) if r["request_id"] == "r3") + 1
    rows.insert(after_r3, stray)
    dump = write_parquet(rows, tmp_path / "dump.parquet")
    summary = run(loaded(), dump, tmp_path / "s.parquet", batch_size=64, on_bad_request="skip")
    rejects = pq.read_table(summary.rejects_path).to_pylist()
    first_r2 = next(i for i, r in enumerate(rows) if r["request_id"] == "r2")
    assert [(r["request_id"], r["column"], r["row"]) for r in rejects] == [
        ("r2", "request_id", first_r2)
    ]
    assert f", {after_r3}" in rejects[0]["reason"], "the reason names every run of rows"
    assert summary.requests_in == 6 and summary.requests_blended == 5


@pytest.mark.parametrize("spec_name", ["homefeed.blend", "discovery.blend", "ads.blend"])
def test_native_and_torch_kernels_give_the_same_slates(tmp_path: Path, spec_name: str) -> None:
    """`blend run`'s compiled loops against the torch operators (what `blend export` traces),
    through the whole job on the bundled sample: the same candidates in the same order, the same
    utilities and weights bit for bit, scores equal to float32 rounding."""
    from blendspec.io.sample import sample_dump
    from blendspec.spec.loader import load_spec

    from .conftest import SPECS

    spec = load_spec(SPECS / spec_name)
    dump = sample_dump(spec.spec)
    tables = {}
    for kernels in ("native", "torch"):
        out = tmp_path / f"{kernels}.parquet"
        run(spec, dump, out, limit=48, kernels=kernels)
        tables[kernels] = pq.read_table(out)
    native, torch_path = tables["native"], tables["torch"]
    assert native.schema == torch_path.schema
    for column in native.column_names:
        if column == "score":
            np.testing.assert_allclose(
                native[column].to_numpy(), torch_path[column].to_numpy(), rtol=2e-6, atol=2e-6
            )
        else:
            assert native[column].equals(torch_path[column]), column


def test_cli_kernels_option(tmp_path: Path) -> None:
    spec = tmp_path / "small.blend"
    spec.write_text(SPEC)
    dump = write_parquet(make_rows(), tmp_path / "dump.parquet")
    slates = {}
    for kernels in ("native", "torch"):
        out = tmp_path / f"{kernels}.parquet"
        args = ["run", str(spec), "--candidates", str(dump), "-o", str(out), "--kernels", kernels]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        slates[kernels] = read_slates(out)
    assert slates["native"] == slates["torch"] == expected_slates(make_rows())
    wrong = CliRunner().invoke(app, ["run", str(spec), "--kernels", "gpu"])
    assert wrong.exit_code == 2 and "gpu" in wrong.output


def test_full_width_embeddings_are_taken_without_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests of equal size: the embedding tensor is the Arrow column itself (writable, no
    warning); requests of different sizes go through the padded copy. Both give the same
    values."""
    from blendspec.io import dump

    shared: list[bool] = []
    real = dump._as_block

    def spy(*args):  # type: ignore[no-untyped-def]
        block = real(*args)
        shared.append(block is not None)
        return block

    monkeypatch.setattr(dump, "_as_block", spy)
    rows = [dict(r, candidate_id=f"{r['request_id']}-{k}") for k, r in enumerate(make_rows())]
    same_size = [
        dict(r, request_id=f"r{k // 4}", user_state=[0.0] * 3) for k, r in enumerate(rows[:40])
    ]
    spec = loaded().spec
    parquet = write_parquet(same_size, tmp_path / "same.parquet")
    (batch,) = DumpReader(parquet, spec).batches(64)
    visual = batch.inputs["visual"]
    assert visual.shape == (10, 4, 4) and bool(batch.mask.all())
    from_copy = DumpReader(write_jsonl(same_size, tmp_path / "same.jsonl"), spec)
    (copied,) = from_copy.batches(64)
    assert torch.equal(visual, copied.inputs["visual"])
    assert visual.numpy().flags.writeable
    # Parquet: visual yes, sid no (a variable-size list there); JSON Lines: doubles, copied.
    assert shared == [True, False, False, False]
    shared.clear()

    ragged = DumpReader(write_parquet(make_rows(), tmp_path / "ragged.parquet"), spec)
    (padded,) = ragged.batches(64)
    assert shared == [False, False] and not bool(padded.mask.all())
    expected = np.zeros(padded.inputs["visual"].shape, np.float32)
    for row in make_rows():
        request = int(row["request_id"][1:])
        expected[request, int(row["candidate_id"][1:])] = row["visual"]
    np.testing.assert_array_equal(padded.inputs["visual"].numpy(), expected)
