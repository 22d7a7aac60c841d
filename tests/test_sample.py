"""The bundled sample and `blend simulate`: `blend run SPEC` works with no other input."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from blendspec.cli import app
from tests.conftest import SPECS

runner = CliRunner()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_run_without_candidates_uses_the_sample(cache: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BLENDSPEC_CACHE", str(cache))
    out = tmp_path / "slates.parquet"
    result = runner.invoke(app, ["run", str(SPECS / "homefeed.blend"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "bundled sample" in result.output
    slates = pq.read_table(out)
    assert slates.num_rows == 48 * 50
    # The cache also holds the parser and the compiled loops (when this process built them).
    assert len([p for p in cache.iterdir() if p.name.startswith("sample")]) == 1
    again = runner.invoke(app, ["run", str(SPECS / "discovery.yaml"), "-o", str(out)])
    assert again.exit_code == 0, again.output
    assert "making the bundled sample" not in again.output, "the sample is made once"


def test_sample_needs_the_specs_columns(cache: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BLENDSPEC_CACHE", str(cache))
    spec = tmp_path / "other.blend"
    spec.write_text(
        "spec other\nslate 3\ninput p_buy: score\nweight w = 1 in [0, 1]\nutility = w * p_buy\n"
    )
    result = runner.invoke(app, ["run", str(spec), "-o", str(tmp_path / "s.parquet")])
    assert result.exit_code == 1
    assert "no column `p_buy`" in result.output and "--candidates" in result.output


def test_simulate_writes_a_dump_that_validates(tmp_path: Path) -> None:
    out = tmp_path / "dump.jsonl"
    result = runner.invoke(
        app,
        ["simulate", "-o", str(out), "--requests", "6", "--candidates", "40", "--format", "jsonl"],
    )
    assert result.exit_code == 0, result.output
    check = runner.invoke(
        app, ["validate", str(SPECS / "homefeed.blend"), "--candidates", str(out)]
    )
    assert check.exit_code == 0, check.output
    assert check.output.count("PASS") == 7
