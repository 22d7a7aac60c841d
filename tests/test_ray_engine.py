"""`blend run --engine ray` on a local Ray instance gives exactly the local engine's slates."""

from __future__ import annotations

import itertools
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from blendspec.engine.run import run
from blendspec.io.dump import DumpError
from tests.test_run import loaded, make_rows, write_parquet

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _shards(tmp_path: Path, rows: list[dict], cuts: list[int]) -> Path:
    folder = tmp_path / "shards"
    folder.mkdir()
    bounds = [0, *cuts, len(rows)]
    for i, (begin, end) in enumerate(itertools.pairwise(bounds)):
        write_parquet(rows[begin:end], folder / f"part-{i:03d}.parquet")
    return folder


def _request_boundaries(rows: list[dict]) -> list[int]:
    return [i for i in range(1, len(rows)) if rows[i]["request_id"] != rows[i - 1]["request_id"]]


def test_ray_engine_equals_local_engine(tmp_path: Path, local_ray: None) -> None:
    rows = make_rows(requests=30, seed=4)
    boundaries = _request_boundaries(rows)
    folder = _shards(tmp_path, rows, [boundaries[6], boundaries[15], boundaries[22]])
    local = run(loaded(), folder, tmp_path / "local.parquet", batch_size=4)
    distributed = run(loaded(), folder, tmp_path / "ray.parquet", batch_size=4, engine="ray")
    assert pq.read_table(tmp_path / "ray.parquet").equals(pq.read_table(tmp_path / "local.parquet"))
    assert distributed.requests_in == local.requests_in == 30
    assert distributed.metrics == pytest.approx(local.metrics)


def test_request_split_across_shards_is_an_error(tmp_path: Path, local_ray: None) -> None:
    rows = make_rows(requests=6, seed=1)
    inside = next(
        i for i in range(1, len(rows)) if rows[i]["request_id"] == rows[i - 1]["request_id"]
    )
    folder = _shards(tmp_path, rows, [inside])
    with pytest.raises(DumpError, match="must stay in one shard"):
        run(loaded(), folder, tmp_path / "ray.parquet", engine="ray")
    assert not (tmp_path / "ray.parquet").exists()
