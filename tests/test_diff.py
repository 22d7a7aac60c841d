"""`blend diff`: semantic changes with severities, the four output formats (golden), no change for
formatting / comments / key order / YAML-vs-DSL, the exit-code contract, `--git`, and the impact
of a change on the slates of a simulated dump."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from blendspec.cli.diff import diff_command
from blendspec.review.changes import (
    Change,
    DiffReport,
    Impact,
    Location,
    MetricComparison,
    RequestChange,
    Severity,
    SpecDiff,
)
from blendspec.review.formulas import linear_form
from blendspec.review.impact import compute_impact
from blendspec.review.renames import detect_renames
from blendspec.review.render import render
from blendspec.review.sections import diff_specs
from blendspec.review.slates import bootstrap_interval, compare_slates
from blendspec.spec.loader import LoadedSpec, load_spec, load_text
from blendspec.spec.syntax import parse_expression
from tests.conftest import GOLDEN, REPO, SPECS, assert_golden

CASES_DIR = GOLDEN / "diff"
CASES = sorted(p.name for p in CASES_DIR.iterdir() if p.is_dir() and not p.name.startswith("_"))
COSMETIC = [case for case in CASES if case.startswith("cosmetic_")]
FORMATS = {"text": "txt", "json": "json", "markdown": "md", "github": "github"}

app = typer.Typer()
app.command("diff")(diff_command)
runner = CliRunner()


def blend_diff(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def case_paths(case: str) -> tuple[Path, Path]:
    folder = CASES_DIR / case
    (old,) = [p for p in folder.iterdir() if p.stem == "old"]
    (new,) = [p for p in folder.iterdir() if p.stem == "new"]
    return old, new


def load_case(case: str) -> tuple[LoadedSpec, LoadedSpec]:
    old, new = case_paths(case)
    return load_spec(old), load_spec(new)


# ---------------------------------------------------------------- golden outputs


@pytest.mark.parametrize("output", FORMATS)
@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, output: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each pair in every format, through the command, from inside the case's folder (so the
    file names in the output are the short ones)."""
    old, new = case_paths(case)
    monkeypatch.chdir(old.parent)
    result = blend_diff(old.name, new.name, "--format", output)
    assert result.exit_code == 0, result.output
    assert_golden(CASES_DIR / case / f"expected.{FORMATS[output]}", result.stdout)


def test_json_is_versioned_and_complete() -> None:
    report = json.loads(render(DiffReport([diff_specs(*load_case("policy"))]), "json"))
    assert report["version"] == 1
    change = report["files"][0]["changes"][0]
    assert list(change) == [
        "kind", "path", "severity", "old", "new", "relative_change", "description",
        "old_line", "new_line",
    ]  # fmt: skip
    assert report["summary"]["breaking"] == 4


def test_cases_cover_every_severity_and_kind() -> None:
    """The golden pairs exercise every kind of change the diff can report."""
    kinds: set[str] = set()
    severities: set[str] = set()
    for case in CASES:
        data = json.loads((CASES_DIR / case / "expected.json").read_text())
        for change in data["files"][0]["changes"]:
            kinds.add(change["kind"])
            severities.add(change["severity"])
    assert severities == {"breaking", "behavioural", "cosmetic"}
    expected = {
        "spec.renamed", "slate.length",
        "input.added", "input.removed", "input.renamed", "input.retyped", "input.resized",
        "objective.changed", "objective.renamed",
        "weight.added", "weight.removed", "weight.renamed", "weight.default", "weight.bound",
        "weight.sign", "weight.source", "weight.grid", "policy.axes",
        "utility.term_added", "utility.term_removed", "utility.constant",
        "diversity.algorithm", "diversity.parameter",
        "similarity.beta", "similarity.signal_added", "similarity.signal_removed",
        "spacing.added", "spacing.removed", "spacing.parameter",
        "semantic_id_penalty.added", "semantic_id_penalty.parameter",
        "filter.added", "filter.removed", "cap.removed", "cap.parameter", "truncate.changed",
        "outcome.added", "reward.changed", "reward.renamed",
        "policy.state", "policy.file", "policy.exploration", "policy.reward", "policy.fallback",
    }  # fmt: skip
    assert expected <= kinds, expected - kinds


# ---------------------------------------------------------------- meaning, not text


@pytest.mark.parametrize("case", COSMETIC)
def test_cosmetic_pairs_report_no_change(case: str) -> None:
    assert diff_specs(*load_case(case)).changes == []


@pytest.mark.parametrize("name", ["homefeed", "ads", "discovery"])
def test_example_specs_yaml_and_dsl_are_the_same(name: str) -> None:
    yaml_spec, dsl_spec = load_spec(SPECS / f"{name}.yaml"), load_spec(SPECS / f"{name}.blend")
    assert diff_specs(yaml_spec, dsl_spec).changes == []
    assert diff_specs(dsl_spec, yaml_spec).changes == []


def test_same_change_in_yaml_and_dsl_gives_the_same_changes() -> None:
    """weights_mixed_syntax is the weights case with the old side converted to YAML: the same
    changes (kind, path, severity, values, description), only the old line numbers differ."""
    dsl = diff_specs(*load_case("weights")).changes
    mixed = diff_specs(*load_case("weights_mixed_syntax")).changes
    assert mixed == dsl
    assert [c.new_at for c in mixed] == [c.new_at for c in dsl]
    assert len(dsl) == 11


def test_lines_point_into_the_files_as_written() -> None:
    changes = {c.path: c for c in diff_specs(*load_case("weights")).changes}
    default = changes["weights.w_click.default"]
    assert (default.old_at, default.new_at) == (Location(14, 18), Location(14, 18))
    assert changes["weights.w_save"].new_at is None
    assert changes["weights.w_raw"].old_at is None


def test_changes_are_keyed_by_name_not_position() -> None:
    """Swapping two spacing sets' settings is two changes per set, never a 'reorder'."""
    base = (SPECS / "homefeed.blend").read_text()
    swapped = base.replace("{window = 8, coefficient = 1}", "{window = 4, coefficient = 0.5}", 1)
    swapped = swapped.replace(
        "spacing beauty_filter {window = 4, coefficient = 0.5}",
        "spacing beauty_filter {window = 8, coefficient = 1}",
    )
    changes = diff_specs(load_text(base, "dsl"), load_text(swapped, "dsl")).changes
    assert sorted(c.path for c in changes) == [
        "spacing.beauty_filter.coefficient",
        "spacing.beauty_filter.window",
        "spacing.quality_risk.coefficient",
        "spacing.quality_risk.window",
    ]


def test_renames_are_one_change_each() -> None:
    old, new = load_case("renames")
    renames = detect_renames(old.spec, new.spec)
    assert renames.inputs == {"p_clik": "p_click", "quality_risk": "risky"}
    assert renames.objectives == {"clk": "click"}
    assert renames.weights == {"w_clk": "w_click"}
    assert renames.rewards == {"engage": "engaged"}
    kinds = sorted(c.kind for c in diff_specs(old, new).changes)
    assert kinds == [
        "input.renamed", "input.renamed", "objective.renamed", "reward.renamed", "weight.renamed",
    ]  # fmt: skip


def test_ambiguous_rename_is_a_removal_and_an_addition() -> None:
    """Two unused score inputs swapped for two others: which became which cannot be told."""
    base = (SPECS / "homefeed.blend").read_text()
    old = base.replace("input blocked: flag", "input blocked: flag\ninput a: score\ninput b: score")
    new = base.replace("input blocked: flag", "input blocked: flag\ninput c: score\ninput d: score")
    kinds = sorted(c.kind for c in diff_specs(load_text(old, "dsl"), load_text(new, "dsl")).changes)
    assert kinds == ["input.added"] * 2 + ["input.removed"] * 2


def test_linear_form_ignores_order_and_spelling() -> None:
    def form(text: str) -> dict[str, float]:
        return linear_form(
            load_text(f"{SPEC_HEAD}objective o = {text}\n", "dsl").spec.objectives["o"]
        )

    assert (
        form("p_click + 2 * p_hide")
        == form("p_hide * 2 + p_click")
        == form("p_click + p_hide / 0.5")
    )
    assert form("log1p(p_click) - 0.5 * p_hide + 1") == {"log1p(p_click)": 1, "p_hide": -0.5, "": 1}
    assert linear_form(_expr("a - a + 3")) == {"": 3}


def _expr(text: str):  # type: ignore[no-untyped-def]
    from pydantic import TypeAdapter

    from blendspec.spec.model import Formula

    return TypeAdapter(Formula).validate_python(parse_expression(text))


# ---------------------------------------------------------------- exit codes


def write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


SPEC_HEAD = """spec s
slate 5
input p_click: score
input p_hide: score
weight w = 1 in [0, 5]
utility = w * p_click
"""


def test_exit_code_contract(tmp_path: Path) -> None:
    base = write(tmp_path, "base.blend", SPEC_HEAD)
    renamed = write(tmp_path, "renamed.blend", SPEC_HEAD.replace("spec s", "spec t"))
    weighted = write(tmp_path, "weighted.blend", SPEC_HEAD.replace("1 in", "2 in"))
    broken = write(tmp_path, "broken.blend", SPEC_HEAD.replace("slate 5", "slate 0"))
    bad_syntax = write(tmp_path, "bad.yaml", "name: [unclosed\n")

    def code(*args: object) -> int:
        return blend_diff(*args).exit_code

    # No change: 0 whatever the flags.
    assert code(base, base) == 0
    assert code(base, base, "--exit-code") == 0
    assert code(base, base, "--fail-on", "behavioural") == 0
    # Cosmetic only: --exit-code fails, --fail-on does not.
    assert code(base, renamed) == 0
    assert code(base, renamed, "--exit-code") == 1
    assert code(base, renamed, "--fail-on", "behavioural") == 0
    # Behavioural: --fail-on behavioural fails, --fail-on breaking does not.
    assert code(base, weighted, "--fail-on", "breaking") == 0
    assert code(base, weighted, "--fail-on", "behavioural") == 1
    assert code(base, weighted, "--exit-code") == 1
    # Breaking: both --fail-on levels fail (behavioural includes breaking).
    inputs_old, inputs_new = case_paths("inputs")
    assert code(inputs_old, inputs_new) == 0
    assert code(inputs_old, inputs_new, "--fail-on", "breaking") == 1
    assert code(inputs_old, inputs_new, "--fail-on", "behavioural") == 1
    # Errors: 2, with the diagnostics on stderr and no traceback.
    result = blend_diff(base, broken)
    assert result.exit_code == 2
    assert "error[E100]" in result.stderr and "Traceback" not in result.output
    assert result.stdout == ""
    assert code(base, bad_syntax) == 2
    assert code(base, tmp_path / "missing.blend") == 2
    assert code(base) == 2
    assert code(base, base, base) == 2
    assert code(base, base, "--fail-on", "cosmetic") == 2
    assert code(base, base, "--format", "html") == 2


# ---------------------------------------------------------------- --git


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository whose HEAD added one spec and deleted another, with a working-tree edit."""
    root = tmp_path / "repo"
    (root / "specs").mkdir(parents=True)
    git(root, "init", "-q")
    feed = (SPECS / "homefeed.blend").read_text()
    write(root / "specs", "feed.blend", feed)
    write(root / "specs", "gone.yaml", (SPECS / "discovery.yaml").read_text())
    write(root / "specs", "same.yaml", (SPECS / "ads.yaml").read_text())
    write(root, ".pre-commit-hooks.yaml", "- id: x\n  name: x\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "one")
    (root / "specs" / "gone.yaml").unlink()
    write(root / "specs", "added.blend", feed.replace("spec homefeed", "spec added"))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "two")
    write(root / "specs", "feed.blend", feed.replace("theta = 0.7", "theta = 0.5"))
    write(root, ".pre-commit-hooks.yaml", "- id: y\n  name: y\n")  # not a spec: ignored
    write(root / "specs", "draft.blend", feed.replace("slate 50", "slate 40"))  # untracked
    return root


def test_git_compares_working_tree_with_a_revision(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo)
    result = blend_diff("--git", "HEAD~1", "--format", "json")
    assert result.exit_code == 0, result.output
    files = {(f["status"], f["new"] or f["old"]): f for f in json.loads(result.stdout)["files"]}
    assert sorted(files) == [
        ("added", "specs/added.blend"),
        ("added", "specs/draft.blend"),
        ("deleted", "HEAD~1:specs/gone.yaml"),
        ("modified", "specs/feed.blend"),
    ]
    (theta,) = files["modified", "specs/feed.blend"]["changes"]
    assert (theta["path"], theta["old"], theta["new"]) == ("diversity.theta", 0.7, 0.5)
    assert files["modified", "specs/feed.blend"]["old"] == "HEAD~1:specs/feed.blend"
    deleted = files["deleted", "HEAD~1:specs/gone.yaml"]["changes"][0]
    assert (deleted["kind"], deleted["severity"]) == ("spec.deleted", "breaking")
    added = files["added", "specs/added.blend"]["changes"][0]
    assert (added["kind"], added["severity"]) == ("spec.added", "behavioural")
    # A deleted spec is breaking; restricting to one path leaves only that file.
    assert blend_diff("--git", "HEAD~1", "--fail-on", "breaking").exit_code == 1
    one = blend_diff("--git", "HEAD~1", "specs/feed.blend", "--format", "json", "--fail-on",
                     "breaking")  # fmt: skip
    assert one.exit_code == 0
    assert [f["new"] for f in json.loads(one.stdout)["files"]] == ["specs/feed.blend"]
    github = blend_diff("--git", "HEAD", "specs", "--format", "github").stdout
    assert "::warning file=specs/feed.blend,line=34," in github
    github = blend_diff("--git", "HEAD~1", "--format", "github").stdout
    assert (
        "::error file=specs/gone.yaml,title=blend diff (breaking)::spec `discovery` deleted"
        in github
    )


def test_git_errors_exit_2(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo)
    result = blend_diff("--git", "no-such-rev")
    assert result.exit_code == 2 and "git" in result.stderr
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    monkeypatch.chdir(outside)
    assert blend_diff("--git", "HEAD").exit_code == 2


# ---------------------------------------------------------------- impact


IMPACT_SPEC = """spec small
slate 10
input p_click: score
input p_hide: score
input visual: embedding[256]
input sid: semantic_id[4]
input topic: category
input quality_risk: flag
objective click = p_click
objective hide = p_hide
weight w_click = 1 in [0, 5]
weight w_hide = -2 in [-10, 0] {sign = negative}
utility = w_click * click + w_hide * hide
diversity ssd {
  similarity = 0.8 * cosine(visual) + 0.2 * category(topic)
  theta = 0.7
  window = 5
}
spacing quality_risk {window = 3, coefficient = 1}
semantic_id_penalty {input = sid, window = 3, min_prefix = 2, coefficient = 0.3}
cap topic {max = 3, window = 10}
"""


@pytest.fixture(scope="module")
def dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from blendspec.sim.world import World, write_dump

    path = tmp_path_factory.mktemp("dump") / "dump.parquet"
    write_dump(World.default(seed=0), path, requests=40, candidates=(5, 60), seed=3)
    return path


def spec(text: str = IMPACT_SPEC, name: str = "small.blend") -> LoadedSpec:
    return load_text(text, "dsl", name)


def test_identical_specs_change_nothing(dump: Path) -> None:
    impact = compute_impact(spec(), spec(), dump, batch_size=16)
    assert impact.requests == 40 and impact.changed == 0 and impact.changed_fraction == 0
    assert impact.position_shift == 0 and impact.length_changed == 0
    assert all(v == 1 for v in impact.overlap.values()) and list(impact.overlap) == [5, 10]
    assert impact.kendall == pytest.approx(1) and impact.spearman == pytest.approx(1)
    assert impact.most_changed == []
    names = {m.name for m in impact.metrics}
    assert {"utility_retained", "ilad", "category_entropy", "exposure[quality_risk]"} <= names
    for metric in impact.metrics:
        assert metric.old == metric.new and metric.difference == 0, metric
        assert (metric.low, metric.high) == (0, 0) and not metric.significant


def test_theta_change_moves_slates(dump: Path) -> None:
    new = spec(IMPACT_SPEC.replace("theta = 0.7", "theta = 0.2"))
    impact = compute_impact(spec(), new, dump, batch_size=16, top=3)
    assert 0 < impact.changed <= impact.requests == 40
    assert impact.kendall < 1 and impact.position_shift > 0
    assert 0 < impact.overlap[10] <= 1
    assert len(impact.most_changed) == 3
    worst = impact.most_changed[0]
    assert worst.overlap == min(r.overlap for r in impact.most_changed)
    ilad = next(m for m in impact.metrics if m.name == "ilad")
    assert ilad.low <= ilad.difference <= ilad.high
    assert ilad.difference == pytest.approx(ilad.new - ilad.old)
    # Batching does not change the answer.
    again = compute_impact(spec(), new, dump, batch_size=7, top=3)
    assert again.changed == impact.changed and again.kendall == pytest.approx(impact.kendall)


def test_impact_reads_a_renamed_input_under_the_dump_name(dump: Path) -> None:
    renamed = IMPACT_SPEC.replace("p_click", "p_ctr")
    old, new = spec(), spec(renamed)
    renames = detect_renames(old.spec, new.spec).inputs
    assert renames == {"p_click": "p_ctr"}
    impact = compute_impact(old, new, dump, renames=renames, limit=12)
    assert impact.requests == 12 and impact.changed == 0


def test_slate_length_change_and_rejected_requests(dump: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(dump)
    hide = table.column("p_hide").to_numpy().copy()
    first = table.column("request_id").to_pylist()[0]
    hide[0] = np.nan  # the first request becomes bad for a spec that reads p_hide
    bad = tmp_path / "bad.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("p_hide"), "p_hide",
                                    pa.array(hide, pa.float32())), bad)  # fmt: skip
    # The new spec no longer reads p_hide, so only the old one rejects that request.
    no_hide = (
        IMPACT_SPEC.replace("slate 10", "slate 8")
        .replace("input p_hide: score\n", "")
        .replace("objective hide = p_hide\n", "")
        .replace("weight w_hide = -2 in [-10, 0] {sign = negative}\n", "")
        .replace(" + w_hide * hide", "")
    )
    impact = compute_impact(spec(), spec(no_hide), bad, batch_size=16)
    assert (impact.requests, impact.only_new, impact.only_old) == (39, 1, 0)
    assert first not in {r.request_id for r in impact.most_changed}
    assert impact.slate_length == 10 and list(impact.overlap) == [5, 10]
    assert impact.length_changed > 0


def test_cli_impact_json(dump: Path, tmp_path: Path) -> None:
    old = write(tmp_path, "old.blend", IMPACT_SPEC)
    new = write(tmp_path, "new.blend", IMPACT_SPEC.replace("coefficient = 1}", "coefficient = 3}"))
    result = blend_diff(old, new, "--candidates", dump, "--limit", 20, "--format", "json")
    assert result.exit_code == 0, result.output
    impact = json.loads(result.stdout)["files"][0]["impact"]
    assert impact["requests"] == 20
    assert impact["bootstrap"] == {"resamples": 1000, "seed": 0, "interval": 0.95}
    assert {m["name"] for m in impact["metrics"]} >= {"adjacency[quality_risk]@5"}
    markdown = blend_diff(old, new, "--candidates", dump, "--limit", 20, "--format", "markdown")
    assert "#### Impact on 20 requests" in markdown.stdout
    missing = blend_diff(old, new, "--candidates", tmp_path / "nope.parquet")
    assert missing.exit_code == 2


# ---------------------------------------------------------------- slate comparison, bootstrap


def reference(a: list[int], b: list[int]) -> tuple[float, float]:
    """Kendall τ-b and Spearman ρ on the union, items missing from a slate tied after its end."""
    union = list(dict.fromkeys(a + b))
    n = len(union)

    def ranks(slate: list[int]) -> list[float]:
        tied = (len(slate) + n - 1) / 2
        return [float(slate.index(i)) if i in slate else tied for i in union]

    ra, rb = ranks(a), ranks(b)
    concordant = tied_a = tied_b = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            sa, sb = np.sign(ra[i] - ra[j]), np.sign(rb[i] - rb[j])
            concordant += sa * sb
            tied_a += sa == 0
            tied_b += sb == 0
    pairs = n * (n - 1) / 2
    denominator = math.sqrt((pairs - tied_a) * (pairs - tied_b))
    tau = concordant / denominator if denominator else math.nan
    rho = float(np.corrcoef(ra, rb)[0, 1]) if n > 1 and np.std(ra) and np.std(rb) else math.nan
    return tau, rho


def test_compare_slates_matches_the_definitions() -> None:
    rng = np.random.default_rng(0)
    slates_a, slates_b = [], []
    for _ in range(60):
        pool = rng.permutation(12)
        a = pool[: rng.integers(0, 7)].tolist()
        b = (rng.permutation(pool[:9])[: rng.integers(0, 8)]).tolist()
        slates_a.append(a)
        slates_b.append(b)
    slates_a += [[1, 2, 3], [1, 2, 3], [4]]
    slates_b += [[1, 2, 3], [3, 2, 1], [4]]

    def pad(slates: list[list[int]], width: int) -> torch.Tensor:
        return torch.tensor([s + [-1] * (width - len(s)) for s in slates], dtype=torch.int64)

    out = compare_slates(pad(slates_a, 6), pad(slates_b, 7), (5, 7))
    for i, (a, b) in enumerate(zip(slates_a, slates_b, strict=True)):
        tau, rho = reference(a, b)
        assert out["kendall"][i].item() == pytest.approx(tau, nan_ok=True), (a, b)
        assert out["spearman"][i].item() == pytest.approx(rho, nan_ok=True), (a, b)
        assert bool(out["changed"][i]) == (a != b)
        common = [x for x in a if x in b]
        shift = np.mean([abs(a.index(x) - b.index(x)) for x in common]) if common else math.nan
        assert out["shift"][i].item() == pytest.approx(shift, nan_ok=True)
        top_a, top_b = a[:5], b[:5]
        size = max(len(top_a), len(top_b))
        overlap = len(set(top_a) & set(top_b)) / size if size else math.nan
        assert out["overlap@5"][i].item() == pytest.approx(overlap, nan_ok=True)
    assert out["kendall"][-2].item() == pytest.approx(-1)
    assert math.isnan(out["kendall"][-1].item())  # one item: no pairs
    assert out["first_difference"][-2].item() == 0 and out["first_difference"][-3].item() == -1


def test_kendall_agrees_with_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    a, b = [5, 1, 7, 3, 9], [1, 5, 3, 8, 2, 7]
    out = compare_slates(torch.tensor([a + [-1]]), torch.tensor([b]), (5,))
    union = list(dict.fromkeys(a + b))
    ranks_a = [a.index(i) if i in a else len(a) for i in union]
    ranks_b = [b.index(i) if i in b else len(b) for i in union]
    assert out["kendall"][0].item() == pytest.approx(stats.kendalltau(ranks_a, ranks_b)[0])
    assert out["spearman"][0].item() == pytest.approx(stats.spearmanr(ranks_a, ranks_b)[0])


def test_bootstrap_is_seeded_and_covers_the_mean() -> None:
    d = np.random.default_rng(1).normal(0.3, 1.0, 500)
    first = bootstrap_interval(d, seed=7)
    assert first == bootstrap_interval(d, seed=7) != bootstrap_interval(d, seed=8)
    assert 0 < first[0] < d.mean() < first[1]
    assert bootstrap_interval(np.zeros(10)) == (0, 0)
    assert all(math.isnan(x) for x in bootstrap_interval(np.zeros(0)))


# ---------------------------------------------------------------- impact rendering (golden)


def synthetic_report() -> DiffReport:
    """A fixed report with an impact, so the impact tables are golden-tested exactly."""
    change = Change(
        "diversity.parameter", "diversity.theta", Severity.behavioural,
        "ssd theta 0.7 → 0.5 (-28.6%)", old=0.7, new=0.5, relative_change=-2 / 7,
        old_at=Location(34, 11), new_at=Location(34, 11), anchor=Location(34, 11),
    )  # fmt: skip
    impact = Impact(
        candidates="dump.parquet", requests=1000, only_old=2, only_new=0, rejected=1,
        changed=417, length_changed=3, position_shift=2.3125,
        overlap={5: 0.9512, 10: 0.9134, 50: 0.9688}, kendall=0.8123, spearman=0.9011,
        metrics=[
            MetricComparison("utility_retained", 0.9763, 0.9621, -0.0142, -0.0150, -0.0134, 1000),
            MetricComparison("ilad", 0.8656, 0.8776, 0.0120, 0.0112, 0.0128, 1000),
            MetricComparison("exposure[beauty_filter]", 0.0645, 0.0632, -0.0013, -0.0029, 0.0001,
                             998),
        ],
        most_changed=[
            RequestChange("r-269", 50, 50, 0.8, 0.639, 0.71, 5.17, 4),
            RequestChange("r-93", 50, 48, 0.82, float("nan"), float("nan"), 5.15, 1),
        ],
        slate_length=50,
    )  # fmt: skip
    diff = SpecDiff("old.blend", "new.blend", "homefeed", "homefeed", [change], impact=impact)
    return DiffReport([diff])


@pytest.mark.parametrize("output", FORMATS)
def test_impact_rendering_golden(output: str) -> None:
    rendered = render(synthetic_report(), output)
    assert_golden(CASES_DIR / "_impact" / f"expected.{FORMATS[output]}", rendered)


# ---------------------------------------------------------------- review workflow files


def test_pre_commit_hooks_run_validate_and_fmt_on_specs_only() -> None:
    import re

    import yaml

    from blendspec.cli import app as blend_app

    hooks = {h["id"]: h for h in yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())}
    assert hooks["blend-validate"]["entry"] == "blend validate"
    assert hooks["blend-fmt"]["entry"] == "blend fmt"  # fixes the files, like ruff-format
    assert hooks["blend-fmt-check"]["entry"] == "blend fmt --check"
    commands = {c.name or c.callback.__name__ for c in blend_app.registered_commands}
    for hook in hooks.values():
        assert hook["language"] == "python" and {"id", "name", "entry"} <= set(hook)
        assert hook["entry"].split()[1] in commands
        pattern = re.compile(hook["files"])
        for path in ("specs/homefeed.blend", "deep/x.blend", "specs/ads.yaml", "a/specs/b.yml"):
            assert pattern.search(path), path
        for path in (".github/workflows/ci.yml", ".pre-commit-hooks.yaml", "compose.yaml"):
            assert not pattern.search(path), path


def test_documented_commands_use_real_options() -> None:
    """Every `blend diff` option in docs/diff.md (the CI snippet included) exists."""
    import re

    command = typer.main.get_command(app)
    known = {opt for param in command.params for opt in getattr(param, "opts", [])}
    text = (REPO / "docs" / "diff.md").read_text()
    used: set[str] = set()
    for block in re.findall(r"blend diff[^\n]*(?:\\\n[^\n]*)*", text):
        used.update(re.findall(r"(?<![\w-])--[a-z][a-z-]*", block))
    assert used and used <= known, used - known
