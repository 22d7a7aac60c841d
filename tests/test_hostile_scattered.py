"""A request whose rows are not contiguous, in the commands that read a dump besides `blend run`
(issue 18, "nothing lost, nothing wrong with exit 0").

`blend explain` and `blend diff --candidates` must never blend or compare a request from part of
its rows: explain fails naming the request and its runs of rows; diff counts it as rejected by
both specs, once, and compares the other requests exactly as if it were not in the dump.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from blendspec.cli import app
from blendspec.io.dump import DumpReader
from tests.test_hostile_dump import request, scattered, write_parquet
from tests.test_run import SPEC, write_jsonl

IDS = {f"r{i}" for i in range(5)}


def blend(*args: object) -> Result:
    """The CLI in-process; a user error must be an exit code, never an escaped exception."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception}")
    assert "Traceback" not in result.output and "internal error" not in result.output
    return result


def write(rows: list[dict], path: Path) -> Path:
    return write_jsonl(rows, path) if path.suffix == ".jsonl" else write_parquet(rows, path)


def distinctive() -> list[dict]:
    """`scattered()` with r2's first part unlike the other requests (its own utilities), so that
    comparing it, even in part, would move the diff's measures."""
    rows = scattered()
    for i, row in enumerate(r for r in rows if r["request_id"] == "r2"):
        row["p_click"] = 0.9 - i / 5
        row["p_hide"] = i / 3
    return rows


def spec_files(tmp_path: Path) -> tuple[Path, Path]:
    """Two specs whose slates differ (the new one weighs hides more and has shorter slates)."""
    old, new = tmp_path / "old.blend", tmp_path / "new.blend"
    old.write_text(SPEC)
    new.write_text(
        SPEC.replace("slate 5", "slate 2").replace("weight w_hide = -2", "weight w_hide = -4")
    )
    return old, new


# ------------------------------------------------------------------------------ blend explain


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_explain_of_a_scattered_request_names_it_and_its_runs(tmp_path: Path, suffix: str) -> None:
    dump = write(scattered(), tmp_path / f"d{suffix}")
    old, _ = spec_files(tmp_path)
    result = blend("explain", old, "--candidates", dump, "--request", "r2")
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "request `r2`" in lines[0] and "not contiguous" in lines[0]
    assert "rows 6-8, 12" in lines[0]


def test_explain_of_a_scattered_request_with_a_bad_first_part_gives_every_reason(
    tmp_path: Path,
) -> None:
    dump = write(scattered({"p_click": math.nan}), tmp_path / "d.parquet")
    old, _ = spec_files(tmp_path)
    result = blend("explain", old, "--candidates", dump, "--request", "r2", "--format", "json")
    assert result.exit_code == 1 and result.stdout == ""
    assert "score is nan" in result.output and "rows 6-8, 12" in result.output


@pytest.mark.parametrize("request_id", ["r0", "r3", "r4"])
def test_explain_of_another_request_is_unchanged_by_the_scattered_one(
    tmp_path: Path, request_id: str
) -> None:
    """Requests before, between and after the scattered one's runs explain as in a clean dump."""
    rows = scattered()
    dump = write(rows, tmp_path / "d.parquet")
    clean = write([r for r in rows if r["request_id"] != "r2"], tmp_path / "clean.parquet")
    old, _ = spec_files(tmp_path)
    got = blend("explain", old, "--candidates", dump, "--request", request_id, "--format", "json")
    want = blend("explain", old, "--candidates", clean, "--request", request_id, "--format", "json")
    assert got.exit_code == want.exit_code == 0, got.output
    assert got.stdout == want.stdout


# --------------------------------------------------------------------- blend diff --candidates


def impact_json(old: Path, new: Path, dump: Path, *more: object) -> dict:
    result = blend("diff", old, new, "--candidates", dump, "--format", "json", *more)
    assert result.exit_code == 0, result.output
    impact = json.loads(result.stdout)["files"][0]["impact"]
    impact.pop("candidates")
    return impact


@pytest.mark.parametrize("batch_size", [1, 2, 64])
@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_diff_rejects_a_scattered_request_whole_once_and_compares_the_rest(
    tmp_path: Path, batch_size: int, suffix: str
) -> None:
    rows = distinctive()
    dump = write(rows, tmp_path / f"d{suffix}")
    clean = write([r for r in rows if r["request_id"] != "r2"], tmp_path / f"clean{suffix}")
    old, new = spec_files(tmp_path)
    got = impact_json(old, new, dump, "--batch-size", batch_size)
    want = impact_json(old, new, clean, "--batch-size", batch_size)
    assert got["requests"] == len(IDS) - 1
    assert got["rejected"] == {"by_old_only": 0, "by_new_only": 0, "by_both": 1}
    assert want["rejected"] == {"by_old_only": 0, "by_new_only": 0, "by_both": 0}
    got.pop("rejected"), want.pop("rejected")
    assert got == want, "r2's first part was compared"


def test_diff_text_reports_the_scattered_request_as_rejected_by_both(tmp_path: Path) -> None:
    dump = write(distinctive(), tmp_path / "d.parquet")
    old, new = spec_files(tmp_path)
    result = blend("diff", old, new, "--candidates", dump)
    assert result.exit_code == 0, result.output
    assert f"impact on 4 requests of {dump}\n  (1 rejected by both)\n" in result.stdout
    assert "\n  r2 " not in result.stdout, "r2 listed among the requests that changed most"


def test_diff_scattered_request_with_a_bad_first_part_for_one_spec_is_rejected_by_both(
    tmp_path: Path,
) -> None:
    """A problem only one spec sees (a NaN in p_hide, which the new spec does not read) does not
    make the scattered request "rejected by the new spec only", nor count it twice."""
    dump = write(scattered({"p_hide": math.nan}), tmp_path / "d.parquet")
    old, new = spec_files(tmp_path)
    no_hide = (
        SPEC.replace("input p_hide: score\n", "")
        .replace("objective hide = p_hide\n", "")
        .replace("weight w_hide = -2 in [-5, 0] {sign = negative}\n", "")
        .replace(" + w_hide * hide", "")
    )
    new.write_text(no_hide)
    got = impact_json(old, new, dump)
    assert got["requests"] == 4
    assert got["rejected"] == {"by_old_only": 0, "by_new_only": 0, "by_both": 1}


def test_diff_with_limit_counts_requests_and_keeps_the_scattered_one_whole(
    tmp_path: Path,
) -> None:
    rows = distinctive()
    dump = write(rows, tmp_path / "d.parquet")
    old, new = spec_files(tmp_path)
    got = impact_json(old, new, dump, "--limit", 4, "--batch-size", 2)
    assert got["requests"] == 3, "r0, r1 and r3: r2's stray row lies before r4"
    assert got["rejected"]["by_both"] == 1
    assert impact_json(old, new, dump, "--limit", 2)["requests"] == 2


def test_diff_without_a_scattered_request_reads_the_dump_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The common path never scans for scattered requests (nor starts over)."""
    rows = [*request("a"), *request("b"), *request("c")]
    dump = write(rows, tmp_path / "d.parquet")
    old, new = spec_files(tmp_path)

    def forbidden(*_: object, **__: object) -> None:
        raise AssertionError("scanned a dump that has no scattered request")

    monkeypatch.setattr(DumpReader, "scattered_runs", forbidden)
    got = impact_json(old, new, dump)
    assert got["requests"] == 3 and got["rejected"]["by_both"] == 0
