"""Progress on the long commands: a bar with a total and a rate on a terminal, nothing off one,
nothing with --quiet; and the library's progress callbacks that feed the bars.

A terminal is forced with rich's own switch (``TTY_COMPATIBLE=1``): the bar is drawn on the
runner's captured stderr as it would be on a terminal. Small sizes throughout (the whole file
runs in about 40 s on a shared 2-core machine).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from blendspec.cli import app
from blendspec.io.console import dump_requests, progress_bar, stderr_console
from blendspec.sim.core import World
from blendspec.sim.dumps import write_dump
from tests.conftest import SPECS

runner = CliRunner()
ADS = str(SPECS / "ads.blend")
HOMEFEED = str(SPECS / "homefeed.blend")


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("TTY_COMPATIBLE", "1")


@pytest.fixture
def no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)


def plain(text: str) -> str:
    """What a terminal shows, without the colour codes."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def bar_lines(stderr: str, what: str) -> list[str]:
    """The bar's renderings (each refresh rewrites the line) that name `what`."""
    return [line for line in re.split(r"[\r\n]", plain(stderr)) if what in line]


def assert_bar(stderr: str, what: str, total: int, unit: str, eta: bool = True) -> None:
    """A bar for `what` with its total and its rate's unit; with `eta`, a refresh that had a
    time left to show (a step of a few milliseconds may end before rich's first refresh, and
    its only rendering, cut at 80 columns, can lose the time left)."""
    lines = bar_lines(stderr, what)
    assert lines, f"no bar for {what!r} in {plain(stderr)!r}"
    assert any(re.search(rf"\b\d+/{total}\b", line) for line in lines), lines
    assert any(f"{unit}/s" in line for line in lines), lines
    if eta:
        assert any(re.search(r"eta \d+:\d\d:\d\d", line) for line in lines), lines


def invoke(*args: object):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("logs") / "logs.parquet"
    made = invoke("simulate", "--exploration", "uniform", "--spec", ADS, "-o", path,
                  "--requests", "120", "--candidates", "20")  # fmt: skip
    assert made.exit_code == 0, made.output
    return path


@pytest.fixture(scope="module")
def world() -> World:
    return World.default()  # seconds to build: once for the file


@pytest.fixture(scope="module")
def dump(tmp_path_factory: pytest.TempPathFactory, world: World) -> Path:
    path = tmp_path_factory.mktemp("dump") / "dump.parquet"
    # Small row groups: several per file, so counting crosses their boundaries.
    write_dump(world, path, requests=30, candidates=(5, 40), chunk_rows=64)
    return path


# --------------------------------------------------------------------------------------------
# The commands
# --------------------------------------------------------------------------------------------


def test_simulate_shows_a_bar_with_total_and_rate(tmp_path: Path, terminal: None) -> None:
    result = invoke("simulate", "-o", tmp_path / "d.parquet", "--requests", "40",
                    "--candidates", "20")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert_bar(result.stderr, "simulating", 40, "requests")
    assert "wrote 40 requests" in result.stdout


def test_simulate_shows_no_bar_off_a_terminal_or_with_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_terminal: None
) -> None:
    off = invoke("simulate", "-o", tmp_path / "a.parquet", "--requests", "40",
                 "--candidates", "20")  # fmt: skip
    assert off.exit_code == 0, off.output
    assert off.stderr == ""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    quiet = invoke("simulate", "-o", tmp_path / "b.parquet", "--requests", "40",
                   "--candidates", "20", "--quiet")  # fmt: skip
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == ""
    assert "wrote 40 requests" in quiet.stdout  # the result still prints


def test_exploration_logs_show_a_bar(tmp_path: Path, terminal: None) -> None:
    result = invoke("simulate", "--exploration", "uniform", "--spec", ADS, "-o",
                    tmp_path / "l.parquet", "--requests", "20", "--candidates", "10")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert_bar(result.stderr, "exploring ads", 20, "requests")


def test_run_counts_its_total_from_the_dump(dump: Path, tmp_path: Path, terminal: None) -> None:
    result = invoke("run", HOMEFEED, "--candidates", dump, "-o", tmp_path / "s.parquet",
                    "--batch-size", "8")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert_bar(result.stderr, "blending homefeed", 30, "requests")
    limited = invoke("run", HOMEFEED, "--candidates", dump, "-o", tmp_path / "t.parquet",
                     "--limit", "12", "--batch-size", "4")  # fmt: skip
    assert limited.exit_code == 0, limited.output
    assert_bar(limited.stderr, "blending homefeed", 12, "requests")
    quiet = invoke("run", HOMEFEED, "--candidates", dump, "-o", tmp_path / "u.parquet", "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert "requests in" in quiet.stdout


def test_diff_candidates_counts_its_total_from_the_dump(
    dump: Path, tmp_path: Path, terminal: None
) -> None:
    new = tmp_path / "new.blend"
    new.write_text(Path(HOMEFEED).read_text().replace("slate 50", "slate 40"))
    result = invoke("diff", HOMEFEED, new, "--candidates", dump, "--batch-size", "8")
    assert result.exit_code in (0, 1), result.output
    # The description is long, so at 80 columns the rate is cut: the total is what this adds.
    lines = bar_lines(result.stderr, "blending homefeed old and new")
    assert any(re.search(r"\b\d+/30\b", line) for line in lines), lines


def test_run_shows_no_bar_off_a_terminal(dump: Path, tmp_path: Path, no_terminal: None) -> None:
    result = invoke("run", HOMEFEED, "--candidates", dump, "-o", tmp_path / "s.parquet")
    assert result.exit_code == 0, result.output
    assert "requests/s" not in result.stderr and "blending" not in result.stderr


def test_policy_commands_show_bars(logs: Path, tmp_path: Path, terminal: None) -> None:
    policy = tmp_path / "ads.pt"
    trained = invoke("policy", "train", "--spec", ADS, "--logs", logs, "-o", policy,
                     "--epochs", "3", "--method", "value")  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert_bar(trained.stderr, "training ads (value)", 3, "epochs")
    assert any("snips" in line for line in bar_lines(trained.stderr, "training ads")), (
        "the bar shows the score early stopping watches"
    )

    evaluated = invoke("policy", "eval", "--spec", ADS, "--logs", logs, "--policy", policy)
    assert evaluated.exit_code == 0, evaluated.output
    assert_bar(evaluated.stderr, "bootstrap intervals", 1000, "replicates")

    reported = invoke("policy", "report", "--spec", ADS, "--logs", logs, "--held-out", logs,
                      "--epochs", "2", "--format", "json")  # fmt: skip
    assert reported.exit_code == 0, reported.output
    json.loads(reported.stdout)
    # One training per declared reward (clicks, engaged): steps 1/2 and 2/2, epochs each.
    assert_bar(reported.stderr, "1/2 training clicks/pg", 2, "epochs", eta=False)
    assert_bar(reported.stderr, "2/2 training engaged/pg", 2, "epochs", eta=False)

    for args in (
        ["policy", "train", "--spec", ADS, "--logs", logs, "-o", tmp_path / "q.pt",
         "--epochs", "2"],
        ["policy", "eval", "--spec", ADS, "--logs", logs, "--policy", policy],
    ):  # fmt: skip
        quiet = invoke(*args, "--quiet")
        assert quiet.exit_code == 0, quiet.output
        assert quiet.stderr == ""


def test_export_counts_its_stages(tmp_path: Path, terminal: None) -> None:
    small = tmp_path / "small.blend"
    small.write_text(
        "spec small\nslate 3\ninput p_click: score\nobjective click = p_click\n"
        "weight w = 1 in [0, 2]\nutility = w * click\n"
    )
    result = invoke("export", small, "-o", tmp_path / "a.pt2")
    assert result.exit_code == 0, result.output
    lines = bar_lines(result.stderr, "stage 1/1: exporting")
    assert lines and any(re.search(r"\d+:\d\d:\d\d", line) for line in lines), plain(result.stderr)
    quiet = invoke("export", small, "-o", tmp_path / "b.pt2", "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""


# --------------------------------------------------------------------------------------------
# The totals
# --------------------------------------------------------------------------------------------


def test_dump_requests_counts_runs_of_ids_across_row_groups(tmp_path: Path, dump: Path) -> None:
    assert pq.ParquetFile(dump).metadata.num_row_groups > 2
    assert dump_requests(dump) == 30
    assert dump_requests(dump, limit=7) == 7
    assert dump_requests(dump, limit=700) == 30
    # A request cut by a row-group boundary is one request; ids that come back are a new run
    # (what the reader reports), and plain string ids count the same as dictionary ones.
    ids = ["a"] * 5 + ["b"] * 3 + ["c"] * 4 + ["a"] * 2
    cut = tmp_path / "cut.parquet"
    pq.write_table(pa.table({"request_id": ids, "x": np.arange(14)}), cut, row_group_size=4,
                   use_dictionary=False)  # fmt: skip
    assert dump_requests(cut) == 4


def test_dump_requests_trusts_a_matching_shard_manifest(tmp_path: Path, world: World) -> None:
    shards = tmp_path / "shards"
    write_dump(world, shards, requests=9, candidates=8, shard_rows=30)
    assert len(list(shards.glob("*.parquet"))) > 1
    manifest = json.loads((shards / "_blendspec_shards.json").read_text())
    assert manifest["requests"] == 9
    # The manifest is read, not the shards: what it says is the total.
    (shards / "_blendspec_shards.json").write_text(json.dumps({**manifest, "requests": 1000}))
    assert dump_requests(shards) == 1000
    # A folder with a file the manifest does not list: the manifest is not believed, the ids
    # of every file are counted.
    write_dump(world, shards / "part-99999.parquet", requests=2, candidates=8, seed=5)
    assert dump_requests(shards) == 11


def test_dump_requests_is_unknown_without_a_cheap_count(tmp_path: Path, world: World) -> None:
    jsonl = tmp_path / "d.jsonl"
    write_dump(world, jsonl, requests=3, candidates=4, format="jsonl")
    assert dump_requests(jsonl) is None
    assert dump_requests(jsonl, limit=2) == 2
    assert dump_requests(tmp_path / "missing.parquet") is None
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    assert dump_requests(tmp_path / "junk.parquet", limit=5) == 5


def test_the_bar_is_off_off_a_terminal_and_when_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    assert not progress_bar(stderr_console()).disable
    assert progress_bar(stderr_console(quiet=True)).disable
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    assert progress_bar(stderr_console()).disable


# --------------------------------------------------------------------------------------------
# The library's callbacks
# --------------------------------------------------------------------------------------------


def test_write_dump_reports_every_request(tmp_path: Path, world: World) -> None:
    seen: list[int] = []
    info = write_dump(world, tmp_path / "d.parquet", requests=25, candidates=10,
                      chunk_rows=30, progress=seen.append)  # fmt: skip
    assert sum(seen) == info.requests == 25 and len(seen) > 1


def test_policy_callbacks_add_up(logs: Path) -> None:
    from blendspec.policy.ope import evaluate
    from blendspec.policy.rewards import log_data
    from blendspec.policy.train import train_policy
    from blendspec.spec.loader import load_spec

    spec = load_spec(ADS).spec
    records: list[dict[str, float]] = []
    result = train_policy(spec, str(logs), epochs=4, method="value", progress=records.append)
    assert records == result.history and [r["epoch"] for r in records] == list(range(4))

    data = log_data(spec, str(logs), None)
    replicates: list[int] = []
    probs = result.policy.probs(data.states, greedy=True)
    evaluate(data.actions, data.rewards, data.propensities, probs, bootstrap=300,
             progress=replicates.append)  # fmt: skip
    assert sum(replicates) == 300


def test_exploration_and_on_policy_callbacks_add_up(world: World) -> None:
    from blendspec.policy.explore import evaluate_on_policy, exploration_logs
    from blendspec.spec.loader import load_spec

    loaded = load_spec(ADS)
    seen: list[int] = []
    table = exploration_logs(loaded, world, 21, candidates=8, batch_size=8,
                             progress=seen.append)  # fmt: skip
    assert seen == [8, 8, 5] and table.num_rows == 21
    served: list[int] = []
    evaluate_on_policy(loaded, world, 0, 10, candidates=8, batch_size=4,
                       progress=served.append)  # fmt: skip
    assert served == [4, 4, 2]


def test_reward_ablation_reports_each_step(logs: Path, world: World) -> None:
    from blendspec.policy.report import reward_ablation
    from blendspec.spec.loader import load_spec

    calls: list[tuple[str, str, int, int]] = []
    reward_ablation(load_spec(ADS), pq.read_table(logs), world=world,
                    on_policy_requests=6, candidates=8, train_options={"epochs": 2},
                    progress=lambda *call: calls.append(call))  # fmt: skip
    steps = list(dict.fromkeys((step, unit, total) for step, unit, _, total in calls))
    assert steps == [
        ("1/5 training clicks/pg", "epochs", 2),
        ("2/5 training engaged/pg", "epochs", 2),
        ("3/5 judging defaults (fixed)", "requests", 6),
        ("4/5 judging clicks/pg", "requests", 6),
        ("5/5 judging engaged/pg", "requests", 6),
    ]
    last = {step: done for step, _, done, _ in calls}
    assert [last[s] for s, _, _ in steps] == [2, 2, 6, 6, 6]
