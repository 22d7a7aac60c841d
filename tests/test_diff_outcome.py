"""`blend diff --logs`: the estimated effect of a spec change on the reward (issue 17).

Most tests use a toy spec and synthetic logs whose reward depends on the logged action alone,
so every spec's true value is known exactly and nothing is blended; the last one checks the
estimates against the simulator's on-policy truth through the real blending graph (a smaller
run of `benchmarks/bench_diff_outcome.py`).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from blendspec.cli.diff import diff_command
from blendspec.policy.ope import evaluate, evaluate_pair
from blendspec.policy.train import TrainConfig
from blendspec.review.changes import (
    Change,
    DiffReport,
    Location,
    Outcome,
    OutcomeEstimate,
    Severity,
    SpecDiff,
)
from blendspec.review.outcome import compute_outcome, read_logs
from blendspec.review.render import render
from blendspec.review.sections import diff_specs
from blendspec.spec.loader import load_spec
from tests.conftest import GOLDEN, REPO, assert_golden

app = typer.Typer()
app.command("diff")(diff_command)
runner = CliRunner()
FORMATS = {"text": "txt", "json": "json", "markdown": "md", "github": "github"}

TOY = """spec toy

slate 5

input p_click: score
input p_longclick: score
input visual: embedding[8]
input user_state: features[2]

objective ctr = p_click
objective long_ctr = p_longclick

weight w_ctr = {ctr} in [0, 2] {{source = policy, grid = {grid}}}
weight w_long_ctr = {long} in [0, 2] {{source = policy, grid = [0, 1, 2]}}
weight w_hide = {hide} in [-10, 0] {{sign = negative}}

utility = w_ctr * ctr + w_long_ctr * long_ctr + w_hide * ctr

diversity mmr {{
  similarity = cosine(visual)
  lambda = {lam}
}}

outcome click, long_click
reward clicks = click
reward engaged = click + 2 * long_click

policy {{
  state = [user_state]{file}
  exploration = {exploration}
  reward = engaged
}}
"""

# Expected clicks and long clicks of each of the 9 actions (w_ctr level * 3 + w_long_ctr level).
CLICK = np.array([0.10, 0.15, 0.40, 0.30, 0.35, 0.30, 0.50, 0.25, 0.40])
LONG = np.array([0.05, 0.10, 0.30, 0.05, 0.10, 0.15, 0.02, 0.02, 0.08])
VALUE = CLICK + 2 * LONG  # the reward `engaged` of each action


def toy(
    folder: Path,
    name: str,
    *,
    ctr: float = 1,
    long: float = 1,
    hide: float = -1,
    lam: float = 0.8,
    grid: str = "[0, 1, 2]",
    exploration: str = "{kind = none}",
    file: str | None = None,
    text: str | None = None,
) -> Path:
    path = folder / f"{name}.blend"
    path.write_text(
        text
        or TOY.format(
            ctr=ctr,
            long=long,
            hide=hide,
            lam=lam,
            grid=grid,
            exploration=exploration,
            file=f'\n  file = "{file}"' if file else "",
        )
    )
    return path


def toy_logs(
    path: Path, n: int = 3000, seed: int = 0, *, drop: tuple[str, ...] = (), **extra: object
) -> Path:
    """Uniform logs over the 9 actions; the reward depends on the action alone."""
    rng = np.random.default_rng(seed)
    action = rng.integers(0, 9, n)
    state = rng.normal(size=(n, 2)).astype(np.float32)
    columns: dict[str, pa.Array] = {
        "request_id": pa.array([f"r{i}" for i in range(n)]),
        "user_state": pa.FixedSizeListArray.from_arrays(pa.array(state.reshape(-1)), 2),
        "action": pa.array(action, pa.int64()),
        "weight_w_ctr": pa.array(np.array([0.0, 1, 2])[action // 3], pa.float32()),
        "weight_w_long_ctr": pa.array(np.array([0.0, 1, 2])[action % 3], pa.float32()),
        "propensity": pa.array(np.full(n, 1 / 9)),
        "click": pa.array((rng.random(n) < CLICK[action]).astype(np.float64)),
        "long_click": pa.array((rng.random(n) < LONG[action]).astype(np.float64)),
    }
    for name, value in extra.items():
        columns[name] = value  # type: ignore[assignment]
    table = pa.table({k: v for k, v in columns.items() if k not in drop})
    pq.write_table(table, path)
    return path


def action(ctr: int, long: int) -> int:
    """The action id of grid levels (w_ctr level, w_long_ctr level)."""
    return ctr * 3 + long


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("outcome")


@pytest.fixture(scope="module")
def logs(folder: Path) -> Path:
    return toy_logs(folder / "logs.parquet")


@pytest.fixture(scope="module")
def toy_policy(folder: Path, logs: Path) -> Path:
    """A policy file for the toy spec (`toy.pt` beside the specs), trained on the logs."""
    from blendspec.policy.train import train_policy

    base = load_spec(toy(folder, "train"))
    trained = train_policy(base.spec, pq.read_table(logs), method="model", epochs=5)
    return trained.policy.save(folder / "toy.pt")


def blend_diff(*args: object):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args])


def outcome_of(old: Path, new: Path, logs: Path, **options: object) -> Outcome:
    """`compute_outcome` of two spec files (SNIPS alone unless told: DR fits a model)."""
    options.setdefault("estimators", ("snips",))
    a, b = load_spec(old), load_spec(new)
    return compute_outcome(a, b, diff_specs(a, b).changes, read_logs(logs), **options)  # type: ignore[arg-type]


# ---------------------------------------------------------------- estimates against the truth


def test_weight_change_estimates_cover_the_truth(folder: Path, logs: Path) -> None:
    """w_ctr 1 → 2: the target moves from action (1, 1) to (2, 1); both estimators' intervals
    cover the exact difference, the verdict has its sign, and the effective n of a one-hot
    target under uniform logging is the number of requests that logged its action."""
    old, new = toy(folder, "old", ctr=1), toy(folder, "new", ctr=2)
    quick = TrainConfig(epochs=3)  # the DR model's settings; the CLI uses the defaults
    outcome = outcome_of(old, new, logs, estimators=("snips", "dr"), model_config=quick)
    assert outcome.not_estimable is None, outcome.not_estimable
    truth = VALUE[action(2, 1)] - VALUE[action(1, 1)]
    actions = read_logs(logs).actions
    assert outcome.effective_old == pytest.approx((actions == action(1, 1)).sum())
    assert outcome.effective_new == pytest.approx((actions == action(2, 1)).sum())
    for estimate in outcome.estimates:
        assert estimate.low <= truth <= estimate.high, (estimate, truth)
        assert estimate.old_low <= VALUE[action(1, 1)] <= estimate.old_high
    assert truth < 0 and outcome.verdict == "worse"
    assert any("cross-fitted on 2 folds" in note for note in outcome.notes)


def test_paired_difference_is_narrower_than_its_sides(folder: Path, logs: Path) -> None:
    """A small exploration change moves few rows' weights; on the same resamples the
    difference's interval is much narrower than either side's."""
    old = toy(folder, "eps_old", exploration="{kind = epsilon, epsilon = 0.5}")
    new = toy(folder, "eps_new", exploration="{kind = epsilon, epsilon = 0.6}")
    outcome = outcome_of(old, new, logs, estimators=("snips",))
    (e,) = outcome.estimates
    truth = 0.1 * (VALUE.mean() - VALUE[action(1, 1)])
    assert e.low <= truth <= e.high
    assert e.high - e.low < 0.5 * (e.old_high - e.old_low)


def test_identical_targets_give_exactly_zero(folder: Path, logs: Path) -> None:
    old = toy(folder, "same_old")
    new = toy(folder, "same_new", text=old.read_text().replace("spec toy", "spec toy2"))
    outcome = outcome_of(
        old, new, logs, estimators=("snips", "dr"), model_config=TrainConfig(epochs=2)
    )
    assert [e.estimator for e in outcome.estimates] == ["SNIPS", "DR"]
    for e in outcome.estimates:
        assert (e.difference, e.low, e.high) == (0.0, 0.0, 0.0)
        assert e.verdict == "no detectable change"
    assert any("same action distribution" in note for note in outcome.notes)


def test_evaluate_pair_agrees_with_evaluate() -> None:
    """Each side of the paired estimate is `ope.evaluate`'s estimate of that target."""
    rng = np.random.default_rng(3)
    n, k = 500, 4
    a = rng.integers(0, k, n)
    r = rng.random(n) + (a == 2)
    p = np.full(n, 1 / k)
    old = rng.dirichlet(np.ones(k), n)
    new = rng.dirichlet(np.ones(k), n)
    q = rng.random((n, k))
    rows = np.arange(n)
    pair = evaluate_pair(
        r, p, old[rows, a], new[rows, a], ("snips", "dr", "ips"),
        old_direct=(old * q).sum(1), new_direct=(new * q).sum(1), logged_q=q[rows, a],
        bootstrap=200, seed=1,
    )  # fmt: skip
    for side, target in (("old", old), ("new", new)):
        single = evaluate(a, r, p, target, ("snips", "dr", "ips"), q, bootstrap=0)
        for name in ("snips", "dr", "ips"):
            assert getattr(pair[name], side) == pytest.approx(single[name].value, rel=1e-12)
    assert pair["snips"].difference == pytest.approx(pair["snips"].new - pair["snips"].old)
    assert pair["snips"].low < pair["snips"].difference < pair["snips"].high


def test_policy_network_acts_as_blend_run_does(folder: Path, logs: Path, toy_policy: Path) -> None:
    """A spec with a trained policy: the target is the module's own policy on the logged
    state, so its greedy action is the action `blend run`'s compiled module takes."""
    import torch

    from blendspec.compiler.lower import module_for

    spec = load_spec(toy(folder, "with_file", file="toy.pt"))
    outcome = outcome_of(toy(folder, "plain"), folder / "with_file.blend", logs,
                         estimators=("snips",))  # fmt: skip
    assert outcome.not_estimable is None
    table = pq.read_table(logs)
    states = np.stack(table.column("user_state").to_numpy(zero_copy_only=False))
    runtime = module_for(spec).policy_runtime
    with torch.inference_mode():
        served = runtime(torch.from_numpy(states.astype(np.float32))).action.numpy()
    expected_matches = (served == table.column("action").to_numpy()).sum()
    assert outcome.effective_new == pytest.approx(expected_matches)


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("new_options", "reason"),
    [
        ({"lam": 0.5}, "`diversity.lambda` changed"),
        ({"hide": -3}, "`weights.w_hide.default` changed"),
        ({"grid": "[0, 1, 1.5]", "ctr": 1}, "not the one the logs were drawn on"),
        ({"ctr": 1.5, "grid": "[0, 1, 2]"}, "not an action of the logged grid"),
    ],
)
def test_refusals_are_one_line_and_the_diff_still_prints(
    folder: Path, logs: Path, new_options: dict[str, object], reason: str
) -> None:
    old = toy(folder, "ref_old")
    new = toy(folder, "ref_new", **new_options)  # type: ignore[arg-type]
    result = blend_diff(old, new, "--logs", logs, "--fail-on", "worse", "--estimators", "snips")
    assert result.exit_code == 0, result.output
    assert "1 change" in result.stdout  # the semantic diff is still there
    (line,) = [x for x in result.stdout.splitlines() if "not estimable" in x]
    assert reason in line, line
    assert "Δ = new - old" not in result.stdout  # no number where the logs cannot answer
    strict = blend_diff(
        old, new, "--logs", logs, "--estimators", "snips", "--fail-on", "behavioural"
    )
    assert strict.exit_code == 1  # exit codes unchanged by the refusal


def test_an_input_only_the_policy_state_reads_is_no_blending_change(
    folder: Path, logs: Path
) -> None:
    text = toy(folder, "state_old").read_text()
    more = text.replace(
        "input user_state: features[2]\n",
        "input user_state: features[2]\ninput session: features[3]\n",
    ).replace("state = [user_state]", "state = [user_state, session]")
    new = toy(folder, "state_new", text=more.replace("w_ctr = 1 in", "w_ctr = 2 in"))
    kinds = {
        c.kind for c in diff_specs(load_spec(folder / "state_old.blend"), load_spec(new)).changes
    }
    assert {"input.added", "policy.state", "weight.default"} <= kinds
    outcome = outcome_of(folder / "state_old.blend", new, logs)
    assert outcome.not_estimable is None, outcome.not_estimable


def test_reordered_policy_weights_are_refused(folder: Path, logs: Path) -> None:
    text = toy(folder, "order_old").read_text()
    lines = text.splitlines()
    i = next(k for k, x in enumerate(lines) if x.startswith("weight w_ctr"))
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    new = toy(folder, "order_new", text="\n".join(lines) + "\n")
    outcome = outcome_of(folder / "order_old.blend", new, logs)
    assert outcome.not_estimable is not None
    assert "not the one the logs were drawn on" in outcome.not_estimable
    assert "reordered policy weights" in outcome.not_estimable


def test_missing_columns_are_refused(folder: Path, logs: Path, toy_policy: Path) -> None:
    old, new = toy(folder, "col_old"), toy(folder, "col_new", ctr=2)
    no_long = toy_logs(folder / "no_long.parquet", drop=("long_click",))
    outcome = outcome_of(old, new, no_long)
    assert outcome.not_estimable == (
        "the logs have no column `long_click`, which reward `engaged` reads"
    )
    assert outcome_of(old, new, no_long, reward="clicks").not_estimable is None
    no_state = toy_logs(folder / "no_state.parquet", drop=("user_state",))
    with_file = toy(folder, "col_file", file="toy.pt")
    outcome = outcome_of(old, with_file, no_state)
    assert outcome.not_estimable is not None
    assert "no column `user_state`" in outcome.not_estimable


def test_fixed_weights_and_grids_are_checked_against_the_logged_weights(
    folder: Path, tmp_path: Path
) -> None:
    hidden = toy_logs(tmp_path / "hide.parquet", n=300, weight_w_hide=pa.array([-1.0] * 300))
    old, new = toy(folder, "fw_old", hide=-3), toy(folder, "fw_new", hide=-3, ctr=2)
    outcome = outcome_of(old, new, hidden, min_effective=1)
    assert outcome.not_estimable == (
        "the logs hold weight `w_hide` at -1 in row 0 (request `r0`), the old spec fixes it at "
        "-3: the logs were drawn under other weights"
    )
    assert outcome_of(toy(folder, "fw_same", hide=-1), toy(folder, "fw_same2", hide=-1, ctr=2),
                      hidden, min_effective=1).not_estimable is None  # fmt: skip
    bare = toy_logs(tmp_path / "bare.parquet", n=300, drop=("weight_w_ctr", "weight_w_long_ctr"))
    regrid = toy(folder, "fw_grid", grid="[0, 1, 1.5]")
    outcome = outcome_of(old, regrid, bare, min_effective=1)
    assert outcome.not_estimable is not None
    assert "at most one of them is the grid the logs were drawn on" in outcome.not_estimable
    same = outcome_of(toy(folder, "fw_a"), toy(folder, "fw_b", ctr=2), bare, min_effective=1)
    assert same.not_estimable is None
    assert any("no `weight_<name>` columns" in note for note in same.notes)


def test_effective_n_floor(folder: Path, logs: Path) -> None:
    old, new = toy(folder, "ess_old"), toy(folder, "ess_new", ctr=2)
    result = blend_diff(
        old,
        new,
        "--logs",
        logs,
        "--min-effective-n",
        1000,
        "--format",
        "json",
        "--estimators",
        "snips",
    )
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)["files"][0]["impact"]["outcome"]
    assert outcome["estimates"] == [] and outcome["verdict"] is None
    assert "effective n is" in outcome["not_estimable"]
    assert "below the floor of 1,000 (--min-effective-n)" in outcome["not_estimable"]


def test_a_target_the_logs_never_reached_is_refused(folder: Path, tmp_path: Path) -> None:
    """ε-greedy around an action no logged request took: every weight is ε, so the effective n
    is the whole log, but the weights average ε instead of 1 and the estimate is refused."""
    rng = np.random.default_rng(0)
    actions = rng.choice([a for a in range(9) if a != action(2, 1)], 600)
    never = toy_logs(tmp_path / "never.parquet", n=600, action=pa.array(actions, pa.int64()),
                     drop=("weight_w_ctr", "weight_w_long_ctr"))  # fmt: skip
    eps = "{kind = epsilon, epsilon = 0.05}"
    old = toy(folder, "never_old", exploration=eps)
    new = toy(folder, "never_new", ctr=2, exploration=eps)
    outcome = outcome_of(old, new, never)
    assert outcome.not_estimable is not None
    assert outcome.not_estimable.startswith("the new spec's importance weights average 0.05")
    assert outcome.effective_new == pytest.approx(600, rel=0.2)  # what Kish alone would accept


def test_specs_without_a_policy_use_the_logged_weights_grid(folder: Path, logs: Path) -> None:
    """Fixed weights on both sides: the grid is read from the logged weight columns."""
    text = toy(folder, "fixed_src").read_text()
    fixed = text[: text.index("policy {")].replace(
        "source = policy, grid = [0, 1, 2]", "sign = positive"
    )
    fixed = fixed.replace("input user_state: features[2]\n", "")
    old = toy(folder, "fixed_old", text=fixed)
    new = toy(folder, "fixed_new", text=fixed.replace("w_ctr = 1 in", "w_ctr = 2 in"))
    refused = outcome_of(old, new, logs)
    assert refused.not_estimable is not None and "choose one with --reward" in (
        refused.not_estimable
    )
    outcome = outcome_of(old, new, logs, reward="engaged")
    assert outcome.not_estimable is None, outcome.not_estimable
    assert any("action grid read from the logged weights" in n for n in outcome.notes)
    truth = VALUE[action(2, 1)] - VALUE[action(1, 1)]
    assert all(e.low <= truth <= e.high for e in outcome.estimates)


# ---------------------------------------------------------------- CLI: exit codes, errors


def test_fail_on_worse(folder: Path, logs: Path) -> None:
    base = toy(folder, "gate_old")
    worse = toy(folder, "gate_worse", ctr=0, long=0)  # action 0: the lowest value
    better = toy(folder, "gate_better", ctr=0, long=2)  # action 2: the highest
    assert VALUE[0] < VALUE[action(1, 1)] < VALUE[action(0, 2)]
    snips = ("--logs", logs, "--estimators", "snips")
    assert blend_diff(base, worse, *snips, "--fail-on", "worse").exit_code == 1
    assert blend_diff(base, better, *snips, "--fail-on", "worse").exit_code == 0
    assert blend_diff(base, worse, *snips).exit_code == 0  # no gate, no failure
    # The primary estimator decides: the first of --estimators.
    ips_first = blend_diff(base, worse, "--logs", logs, "--estimators", "ips,snips",
                           "--fail-on", "worse", "--format", "json")  # fmt: skip
    assert ips_first.exit_code == 1
    assert json.loads(ips_first.stdout)["files"][0]["impact"]["outcome"]["primary"] == "ips"
    usage = blend_diff(base, worse, "--fail-on", "worse")
    assert usage.exit_code == 2 and "needs --logs" in usage.output


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("not parquet"), "not readable as Parquet logs"),
        (lambda p: toy_logs(p, drop=("propensity",)), "no column `propensity`"),
        (
            lambda p: toy_logs(p, n=50, propensity=pa.array([0.5] * 49 + [0.0])),
            "column `propensity` is 0 at row 49 (request `r49`)",
        ),
        (
            lambda p: toy_logs(p, n=50, click=pa.array([1.0] * 10 + [math.nan] * 40)),
            "column `click` is nan at row 10 (request `r10`)",
        ),
        (
            lambda p: toy_logs(p, n=50, action=pa.array(["a"] * 50)),
            "column `action` holds string",
        ),
    ],
)
def test_unreadable_logs_exit_2_naming_file_and_column(
    folder: Path, tmp_path: Path, make: object, message: str
) -> None:
    path = tmp_path / "bad.parquet"
    make(path)  # type: ignore[operator]
    old, new = toy(folder, "bad_old"), toy(folder, "bad_new", ctr=2)
    result = blend_diff(old, new, "--logs", path, "--estimators", "snips")
    assert result.exit_code == 2, result.output
    assert message in result.output and "bad.parquet" in result.output
    assert "Traceback" not in result.output
    missing = blend_diff(old, new, "--logs", tmp_path / "x")
    assert missing.exit_code == 2 and "no logs at" in missing.output


def test_unknown_reward_and_estimator_are_usage_errors(folder: Path, logs: Path) -> None:
    old, new = toy(folder, "use_old"), toy(folder, "use_new", ctr=2)
    result = blend_diff(old, new, "--logs", logs, "--reward", "revenue", "--estimators", "snips")
    assert result.exit_code == 2 and "--reward `revenue`" in result.output
    result = blend_diff(old, new, "--logs", logs, "--estimators", "snips,magic")
    assert result.exit_code == 2 and "'magic'" in result.output


def test_every_format_carries_the_outcome(folder: Path, logs: Path) -> None:
    old, new = toy(folder, "fmt_old"), toy(folder, "fmt_new", ctr=0, long=2)
    out = {
        f: blend_diff(old, new, "--logs", logs, "--format", f, "--estimators", "snips").stdout
        for f in FORMATS
    }
    assert "verdict (SNIPS): better at 95%" in out["text"]
    data = json.loads(out["json"])["files"][0]["impact"]
    assert set(data) == {"outcome"}  # no --candidates: the outcome alone
    assert data["outcome"]["verdict"] == "better" and data["outcome"]["reward"] == "engaged"
    assert (
        "| SNIPS |" in out["markdown"]
        and "**Verdict (SNIPS): better at 95%.**" in (out["markdown"])
    )
    (annotation,) = [x for x in out["github"].splitlines() if "blend diff outcome" in x]
    assert annotation.startswith("::notice ") and "better at 95%25" in annotation


def test_candidates_and_logs_together(folder: Path, logs: Path) -> None:
    """Both impacts in one diff: how the slates move on a dump, and the estimated outcome."""
    rng = np.random.default_rng(3)
    n = 40  # 4 requests of 10 candidates
    dump = folder / "toy-candidates.parquet"
    pq.write_table(
        pa.table(
            {
                "request_id": pa.array([f"q{i // 10}" for i in range(n)]),
                "candidate_id": pa.array([f"c{i % 10}" for i in range(n)]),
                "p_click": pa.array(rng.random(n).astype(np.float32)),
                "p_longclick": pa.array(rng.random(n).astype(np.float32)),
                "visual": pa.FixedSizeListArray.from_arrays(
                    pa.array(rng.normal(size=n * 8).astype(np.float32)), 8
                ),
                "user_state": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.repeat(rng.normal(size=(4, 2)), 10, 0).ravel().astype(np.float32)),
                    2,
                ),
            }
        ),
        dump,
    )
    old, new = toy(folder, "both_old"), toy(folder, "both_new", ctr=0, long=2)
    result = blend_diff(old, new, "--candidates", dump, "--logs", logs, "--format", "json",
                        "--estimators", "snips")  # fmt: skip
    assert result.exit_code == 0, result.output
    impact = json.loads(result.stdout)["files"][0]["impact"]
    assert "outcome" in impact and impact["outcome"]["verdict"] == "better"
    assert set(impact) - {"outcome"}, "the candidates' impact is there too"
    text = blend_diff(old, new, "--candidates", dump, "--logs", logs, "--estimators", "snips")
    assert text.exit_code == 0 and "verdict (SNIPS): better at 95%" in text.stdout


# ---------------------------------------------------------------- renderings (golden)


def synthetic_report(refused: bool) -> DiffReport:
    change = Change(
        "weight.default", "weights.w_ctr.default", Severity.behavioural,
        "weight `w_ctr` default 1 → 2 (+100%)", old=1, new=2, relative_change=1.0,
        old_at=Location(14, 1), new_at=Location(14, 1), anchor=Location(14, 1),
    )  # fmt: skip
    if refused:
        change = Change(
            "diversity.parameter", "diversity.lambda", Severity.behavioural,
            "mmr lambda 0.8 → 0.5 (-37.5%)", old=0.8, new=0.5, relative_change=-0.375,
            old_at=Location(23, 3), new_at=Location(23, 3), anchor=Location(23, 3),
        )  # fmt: skip
    outcome = Outcome(
        logs="logs.parquet", reward="engaged", requests=20000, estimators=["snips", "dr"],
        notes=["DR: the reward model `blend policy train --method model` learns, cross-fitted "
               "on 2 folds (each request's prediction comes from the model fitted on the other "
               "half of the logs)"],
    )  # fmt: skip
    if refused:
        outcome.not_estimable = (
            "`diversity.lambda` changed (mmr lambda 0.8 → 0.5): the logs hold one blending "
            "graph under different weights of the policy grid only, so they cannot say what "
            "this change does"
        )
        outcome.notes = []
    else:
        outcome.effective_old, outcome.effective_new = 812.4, 640.0
        outcome.estimates = [
            OutcomeEstimate("SNIPS", 0.8123, 0.7901, 0.8342, 0.7684, 0.7412, 0.7950,
                            -0.0439, -0.0731, -0.0152),
            OutcomeEstimate("DR", 0.8131, 0.7950, 0.8311, 0.7702, 0.7480, 0.7921,
                            -0.0429, -0.0690, -0.0170),
        ]  # fmt: skip
    diff = SpecDiff("old.blend", "new.blend", "ads", "ads", [change], outcome=outcome)
    return DiffReport([diff])


@pytest.mark.parametrize("case", ["estimate", "refused"])
@pytest.mark.parametrize("output", FORMATS)
def test_outcome_rendering_golden(case: str, output: str) -> None:
    rendered = render(synthetic_report(case == "refused"), output)
    assert_golden(GOLDEN / "diff_outcome" / f"{case}.{FORMATS[output]}", rendered)


# ---------------------------------------------------------------- the simulator's truth


def test_estimates_against_the_simulator_truth() -> None:
    """A smaller run of benchmarks/bench_diff_outcome.py (same properties, fixed seeds): every
    interval that excludes 0 has the true sign, the intervals cover the true differences, and
    the diversity change is refused. Through the real blending graph and policy files."""
    path = REPO / "benchmarks" / "bench_diff_outcome.py"
    spec = importlib.util.spec_from_file_location("bench_diff_outcome", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up while being built
    spec.loader.exec_module(bench)
    # Weight changes both ways, exploration changes, a retrained policy, fixed weights.
    pairs = [bench.PAIRS[i] for i in (0, 3, 12, 13, 15, 19)]
    result = bench.check(logs=3000, truth=200, candidates=30, pairs=pairs, policy_logs=1000,
                         estimators=("snips",), items=4000, verbose=False)  # fmt: skip
    assert result.refused.not_estimable is not None
    assert "`diversity.lambda` changed" in result.refused.not_estimable
    assert all(p.not_estimable is None for p in result.pairs), [
        p.not_estimable for p in result.pairs
    ]
    assert result.sign_errors("snips") == 0
    assert result.coverage("snips") >= len(pairs) - 1
    # The check has teeth: a bias of 0.5 in the estimates would leave the truth outside at
    # least two of these intervals.
    shifted = sum(
        not (p.estimates["snips"][1] <= p.truth_difference + 0.5 <= p.estimates["snips"][2])
        for p in result.pairs
    )
    assert shifted >= 2


# ---------------------------------------------------------------- --git: the old policy file


def test_git_reads_the_old_policy_file_at_the_revision(
    folder: Path, logs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--git REV --logs`: a retrained policy at the same path is compared with the file as it
    was at REV, not with the working tree's (the estimate equals the two-file diff of copies)."""
    import shutil
    import subprocess

    from blendspec.policy.train import train_policy

    base = load_spec(toy(folder, "git_base")).spec
    table = pq.read_table(logs)
    first = train_policy(base, table.slice(0, 1500), method="model", epochs=3, seed=1).policy
    second = train_policy(base, table.slice(1500), method="model", epochs=3, seed=2).policy
    states = np.stack(table.column("user_state").to_numpy(zero_copy_only=False))
    acts = [p.probs(states.astype(np.float32), greedy=True).argmax(1) for p in (first, second)]
    assert (acts[0] != acts[1]).mean() > 0.2  # the two files act differently: the test can fail
    root = tmp_path / "repo"
    root.mkdir()

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    first.save(root / "toy.pt")
    toy(root, "spec", file="toy.pt")
    git("add", "-A")
    git("commit", "-q", "-m", "first policy")
    second.save(root / "toy.pt")  # retrained, same path
    toy(root, "spec", file="toy.pt", exploration="{kind = epsilon, epsilon = 0.1}")
    monkeypatch.chdir(root)
    result = blend_diff("--git", "HEAD", "--logs", logs, "--estimators", "snips", "--format",
                        "json")  # fmt: skip
    assert result.exit_code == 0, result.output
    via_git = json.loads(result.stdout)["files"][0]["impact"]["outcome"]
    copies = tmp_path / "copies"
    copies.mkdir()
    first.save(copies / "a.pt")
    shutil.copy(root / "toy.pt", copies / "b.pt")
    old = toy(copies, "old", file="a.pt")
    new = toy(copies, "new", file="b.pt", exploration="{kind = epsilon, epsilon = 0.1}")
    direct = json.loads(
        blend_diff(old, new, "--logs", logs, "--estimators", "snips", "--format", "json").stdout
    )["files"][0]["impact"]["outcome"]
    assert via_git["estimates"] == direct["estimates"]
    assert via_git["effective_n"] == direct["effective_n"]
    # The policy file alone retrained (the spec unchanged): --logs still compares the spec.
    git("add", "-A")
    git("commit", "-q", "-m", "second policy, exploring")
    first.save(root / "toy.pt")
    result = blend_diff("--git", "HEAD", "--logs", logs, "--estimators", "snips", "--format",
                        "json")  # fmt: skip
    assert result.exit_code == 0, result.output
    (file,) = json.loads(result.stdout)["files"]
    (change,) = file["changes"]
    assert change["kind"] == "policy.file_content" and "differs from HEAD" in change["description"]
    eps = "{kind = epsilon, epsilon = 0.1}"
    old = toy(copies, "old2", file="b.pt", exploration=eps)
    new = toy(copies, "new2", file="a.pt", exploration=eps)
    direct = json.loads(
        blend_diff(old, new, "--logs", logs, "--estimators", "snips", "--format", "json").stdout
    )["files"][0]["impact"]["outcome"]
    assert file["impact"]["outcome"]["estimates"] == direct["estimates"]
    assert blend_diff("--git", "HEAD").stdout.startswith("no spec files")  # without --logs


# ---------------------------------------------------------------- progress on stderr


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_bar_on_a_terminal_only(
    folder: Path, logs: Path, monkeypatch: pytest.MonkeyPatch, quiet: bool
) -> None:
    """A bar per stage on a terminal (rich's TTY_COMPATIBLE switch stands for one); nothing
    with --quiet, and nothing off a terminal (the other tests: their stderr is empty)."""
    import re

    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    old, new = toy(folder, "bar_old"), toy(folder, "bar_new", ctr=2)
    args = [old, new, "--logs", logs, "--estimators", "snips", *(["--quiet"] if quiet else [])]
    result = blend_diff(*args)
    assert result.exit_code == 0, result.output
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stderr)
    if quiet:
        assert shown == ""
    else:
        assert re.search(r"targets \(old, new\).*\b3000/3", shown), shown
        assert "paired bootstrap" in shown
    monkeypatch.delenv("TTY_COMPATIBLE")
    assert blend_diff(old, new, "--logs", logs, "--estimators", "snips").stderr == ""
