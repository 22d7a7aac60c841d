"""`blend policy report`: reward ablation and personalisation, their tables, plots and CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console
from typer.testing import CliRunner

from blendspec.cli import app
from blendspec.policy.report import (
    AblationRow,
    BucketRow,
    PolicyReport,
    SegmentRow,
    personalisation,
    print_report,
    render_html,
    reward_ablation,
)
from blendspec.policy.train import train_policy
from blendspec.spec.loader import load_text
from tests.conftest import GOLDEN, SPECS, assert_golden
from tests.test_policy import TINY, synthetic_logs

runner = CliRunner()


def sample_report() -> PolicyReport:
    weights = ("w_a", "w_b")
    return PolicyReport(
        spec_name="tiny",
        evaluation="on-policy in the simulator (400 held-out requests)",
        weight_names=weights,
        ablation=(
            AblationRow(
                "defaults (fixed)",
                None,
                "fixed",
                {"engaged": 0.31, "clicks": 0.22},
                {"click": 0.044, "long_click": 0.018},
            ),
            AblationRow(
                "engaged/pg",
                "engaged",
                "pg",
                {"engaged": 0.52, "clicks": 0.27},
                {"click": 0.054, "long_click": 0.05},
            ),
            AblationRow(
                "clicks/pg",
                "clicks",
                "pg",
                {"engaged": 0.41, "clicks": 0.3},
                {"click": 0.06, "long_click": 0.022},
            ),
        ),
        personalised_for="the `engaged/pg` policy",
        segments=(
            SegmentRow("clicker", 250, {"w_a": 2.0, "w_b": 0.1}, 6, 0.9),
            SegmentRow("reader", 150, {"w_a": 0.0, "w_b": 1.9}, 2, 0.95),
        ),
        buckets=(
            BucketRow("state[0]", "[-3, 0]", 200, {"w_a": 2.0, "w_b": 0.0}),
            BucketRow("state[0]", "[0, 3]", 200, {"w_a": 0.0, "w_b": 2.0}),
        ),
        distinct_actions=2,
    )


def test_tables_golden() -> None:
    console = Console(width=140, record=True, force_terminal=False, color_system=None)
    print_report(sample_report(), console)
    assert_golden(GOLDEN / "policy_report.txt", console.export_text())


def test_html_page_has_the_charts_and_tables() -> None:
    page = render_html(sample_report())
    # rewards, outcome rates, weights by segment, weights by bucket of state[0]; plotly.js inline
    # (tests/test_report_pages.py loads the page in a headless browser).
    starts, charts = page.startswith("<!doctype html>"), page.count('class="plotly-graph-div"')
    assert starts and charts == 4, charts
    captions = "Mean chosen weight by segment" in page and "bucket of state[0]" in page
    assert captions and "on-policy values are exact expectations" in page
    assert re.findall(r"<script[^>]* src=|<link ", page) == [], "no external resources"
    assert json.loads(json.dumps(sample_report().to_json()))["segments"][1]["segment"] == "reader"


def test_personalisation_finds_the_feature_the_policy_reads() -> None:
    spec = load_text(TINY, "dsl").spec
    logs = synthetic_logs(3000, seed=1)
    policy = train_policy(spec, logs, epochs=30, seed=0).policy
    states = logs["state"][:2000]
    segments = (states[:, 0] > 0).astype(int)  # the truth the synthetic reward depends on
    seg, buckets, distinct = personalisation(policy, states, segments, ["negative", "positive"])
    by = {r.segment: r for r in seg}
    # Best actions: w_a 2, w_b 0 when state[0] < 0, and w_a 0, w_b 2 otherwise.
    assert by["negative"].weights["w_a"] > 1.5 and by["positive"].weights["w_b"] > 1.5
    assert by["positive"].top_action == 2 and by["negative"].top_action == 6
    assert buckets[0].feature == "state[0]" and len({b.feature for b in buckets}) == 3
    assert distinct >= 2 and sum(b.requests for b in buckets[:4]) == 2000


def test_ablation_off_policy_judges_every_policy_by_every_reward() -> None:
    loaded = load_text(TINY, "dsl")
    train = synthetic_logs(2000, seed=2)
    held = synthetic_logs(2000, seed=3)
    rows, policies, how = reward_ablation(
        loaded, train, held_out=held, train_options={"epochs": 15}
    )
    assert "SNIPS on 2,000" in how
    assert [r.policy for r in rows] == ["defaults (fixed)", "engaged/pg", "clicks/pg"]  # spec order
    assert set(policies) == {"engaged/pg", "clicks/pg"}
    for row in rows:
        assert set(row.rewards) == {"engaged", "clicks"} and set(row.rates) == {
            "click",
            "long_click",
        }
        low, high = row.intervals["engaged"]
        assert low <= row.rewards["engaged"] <= high
    # The synthetic world rewards personalisation: the learned policies beat the defaults.
    assert rows[1].rewards["engaged"] > rows[0].rewards["engaged"] + 0.2


def test_ablation_needs_a_way_to_judge() -> None:
    loaded = load_text(TINY, "dsl")
    with pytest.raises(ValueError, match="world or held-out"):
        reward_ablation(loaded, synthetic_logs(100, seed=1))


def test_cli_report_off_policy_and_on_policy(tmp_path: Path) -> None:
    ads = str(SPECS / "ads.blend")
    paths = {}
    for name, seed in (("train", 0), ("held", 1)):
        paths[name] = tmp_path / f"{name}.parquet"
        made = runner.invoke(
            app,
            ["simulate", "--exploration", "uniform", "--spec", ads, "-o", str(paths[name]),
             "--requests", "150", "--candidates", "30", "--seed", str(seed)],
        )  # fmt: skip
        assert made.exit_code == 0, made.output
    page = tmp_path / "report.html"
    off = runner.invoke(
        app,
        ["policy", "report", "--spec", ads, "--logs", str(paths["train"]),
         "--held-out", str(paths["held"]), "--epochs", "2", "--html", str(page)],
    )  # fmt: skip
    assert off.exit_code == 0, off.output
    assert "reward ablation" in off.output and "chosen weights by segment" in off.output
    assert page.read_text().count('class="plotly-graph-div"') >= 4
    on = runner.invoke(
        app,
        ["policy", "report", "--spec", ads, "--logs", str(paths["train"]), "--simulate", "40",
         "--candidates", "30", "--epochs", "2", "--method", "pg", "--method", "value",
         "--method", "model", "--format", "json"],
    )  # fmt: skip
    assert on.exit_code == 0, on.output
    data = json.loads(on.stdout)
    assert data["evaluation"].startswith("on-policy")
    assert [r["policy"] for r in data["ablation"]] == [
        "defaults (fixed)", "clicks/pg", "clicks/value", "clicks/model",
        "engaged/pg", "engaged/value", "engaged/model",
    ]  # fmt: skip
    assert {s["segment"] for s in data["segments"]} <= {
        "clicker", "saver", "long_reader", "fatigued"
    }  # fmt: skip


def test_cli_report_usage_errors(tmp_path: Path) -> None:
    ads = str(SPECS / "ads.blend")
    logs = tmp_path / "l.parquet"
    pq.write_table(pa.table({"x": [1]}), logs)
    neither = runner.invoke(app, ["policy", "report", "--spec", ads, "--logs", str(logs)])
    assert neither.exit_code == 2 and "--held-out" in neither.output
    bad = runner.invoke(
        app,
        ["policy", "report", "--spec", ads, "--logs", str(logs), "--held-out", str(logs)],
    )
    assert bad.exit_code == 1 and "cannot report" in bad.output
    unknown = runner.invoke(
        app,
        ["policy", "report", "--spec", ads, "--logs", str(logs), "--held-out", str(logs),
         "--method", "sarsa"],
    )  # fmt: skip
    assert unknown.exit_code == 2 and "pg, value or model" in unknown.output
