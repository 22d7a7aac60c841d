"""`blend explain`: the breakdowns add up to the operator's own scores at every step, for every
algorithm and penalty; the explained slate is `blend run`'s; the renderings are stable."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from blendspec.cli import app
from blendspec.engine.blend import Runner
from blendspec.engine.run import run
from blendspec.explain.breakdown import (
    Breakdown,
    ExplainError,
    Explanation,
    explain,
    render_json,
    render_text,
    trace_request,
    why,
)
from blendspec.io.dump import DumpReader
from blendspec.ops._common import release_workspace
from blendspec.spec.loader import LoadedSpec, load_spec, load_text
from tests.conftest import GOLDEN, SPECS, assert_golden

runner = CliRunner()
HOMEFEED = SPECS / "homefeed.blend"
REQUEST = "r0-00000018"  # filters, both spacing sets, the semantic-ID penalty and the topic cap


@pytest.fixture(autouse=True)
def _fresh_workspace() -> Iterator[None]:
    """`blend run`'s blending leaves inference-mode work buffers cached in this thread: free
    them, so that later tests start from the state they would have alone."""
    yield
    release_workspace()


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from blendspec.io.sample import sample_dump

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BLENDSPEC_CACHE", str(tmp_path_factory.mktemp("cache")))
        return sample_dump(load_spec(HOMEFEED).spec)


# ---------------------------------------------------------------------------------------------
# random specs and dumps: every algorithm, every penalty, caps

_DIVERSITY = {
    "none": "diversity none",
    "ssd": "diversity ssd {\n  similarity = 0.7 * cosine(visual) + 0.3 * category(topic)\n"
    "  theta = 0.6\n  gamma = 1.5\n  window = 3\n}",
    "ssd_volume": "diversity ssd {\n  similarity = cosine(visual) + 0.5 * prefix(sid)\n"
    "  theta = 0.5\n  window = 2\n  variant = volume\n}",
    "dpp": "diversity dpp {\n  similarity = cosine(visual)\n  alpha = 0.7\n  epsilon = 0.001\n}",
    "dpp_window": "diversity dpp {\n  similarity = 0.6 * cosine(visual) + 0.4 * prefix(sid)\n"
    "  alpha = 1.5\n  window = 2\n  relevance = minmax\n}",
    "mmr": "diversity mmr {\n  similarity = 0.7 * cosine(visual) + 0.3 * category(topic)\n"
    "  lambda = 0.6\n  relevance = raw\n}",
    "msd": "diversity msd {\n  similarity = 0.7 * cosine(visual) + 0.3 * prefix(sid)\n"
    "  theta = 0.4\n}",
    "cover": "diversity cover {\n  similarity = cosine(visual) + 0.5 * category(topic)\n"
    "  theta = 0.3\n  gamma = 0.6\n  relevance = minmax\n}",
}
_CONSTRAINTS = """
spacing risky {window = 3, coefficient = 0.5}
spacing other {window = 2, coefficient = 1}
semantic_id_penalty {input = sid, window = 3, min_prefix = 1, coefficient = 0.4}
cap topic {max = 1, window = 3}
filter blocked
"""


def spec_text(algorithm: str, constraints: bool = True, slate: int = 6) -> str:
    return f"""
spec random
slate {slate}
input p_click: score
input p_hide: score
input visual: embedding[2]
input sid: semantic_id[2]
input topic: category
input risky: flag
input other: flag
input blocked: flag
objective click = p_click
objective hide = p_hide
weight w_click = 1 in [0, 5]
weight w_hide = -2 in [-5, 0] {{sign = negative}}
utility = w_click * click + w_hide * hide + 0.25
{_DIVERSITY[algorithm]}
{_CONSTRAINTS if constraints else ""}
"""


SPECS_UNDER_TEST = {
    **{name: load_text(spec_text(name), "dsl", f"{name}.blend") for name in _DIVERSITY},
    "none_plain": load_text(spec_text("none", constraints=False), "dsl", "plain.blend"),
}


def write_dump(path: Path, seed: int, requests: int) -> Path:
    """Quantised values, so that exact ties and duplicates are common."""
    rng = np.random.default_rng(seed)
    lines = []
    for r in range(requests):
        for c in range(int(rng.integers(1, 12))):
            row = {
                "request_id": f"q{r}",
                "candidate_id": f"c{c}",
                "p_click": float(rng.integers(0, 8) / 8),
                "p_hide": float(rng.integers(0, 3) / 8),
                "visual": rng.integers(-2, 3, 2).astype(float).tolist(),
                "sid": rng.integers(0, 2, 2).tolist(),
                "topic": f"t{rng.integers(0, 3)}",
                "risky": bool(rng.random() < 0.5),
                "other": bool(rng.random() < 0.4),
                "blocked": bool(rng.random() < 0.1),
            }
            lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n")
    return path


def run_slates(loaded: LoadedSpec, path: Path) -> dict[str, tuple[list[str], list[float]]]:
    """Each request's slate (candidate ids, scores) from `blend run`'s own blending, batched."""
    blender = Runner(loaded)
    slates = {}
    for batch in DumpReader(path, loaded.spec).batches(64):
        out = blender.blend(batch)
        table = blender.slate_table(batch, out).to_pylist()
        for row in table:
            ids, scores = slates.setdefault(row["request_id"], ([], []))
            if row["position"] >= 0:
                ids.append(row["candidate_id"])
                scores.append(row["score"])
    return slates


def check_sum(b: Breakdown) -> None:
    """relevance + diversity − Σ penalties is the score the operator maximised."""
    total = b.relevance_term + b.diversity_term - sum(p.value for p in b.penalties)
    assert math.isclose(total, b.score, rel_tol=1e-5, abs_tol=1e-4), b
    utility = b.utility_constant + sum(p.product for p in b.utility_parts)
    assert math.isclose(utility, b.utility, rel_tol=1e-5, abs_tol=1e-5), b
    for p in b.utility_parts:
        assert p.product == pytest.approx(p.weight_value * p.objective_value)
    # The relevance term is the coefficient times the normalised utility the operator read.
    assert b.relevance_term == pytest.approx(
        b.relevance_coefficient * b.relevance, rel=1e-5, abs=1e-5
    )
    for p in b.penalties:  # the causes found post hoc add up to the operator's penalty
        assert sum(c.amount for c in p.causes) == pytest.approx(p.value, rel=1e-5, abs=1e-6), p


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), requests=st.integers(1, 3))
@pytest.mark.parametrize("name", sorted(SPECS_UNDER_TEST))
def test_breakdowns_add_up_and_match_the_run(
    name: str, seed: int, requests: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    loaded = SPECS_UNDER_TEST[name]
    path = write_dump(tmp_path_factory.mktemp("dump") / "dump.jsonl", seed, requests)
    expected = run_slates(loaded, path)
    for request_id, (ids, scores) in expected.items():
        tr = trace_request(loaded, path, request_id)
        e = explain(tr)
        assert [s.picked.candidate_id for s in e.steps] == ids, name
        assert [s.picked.score for s in e.steps] == pytest.approx(scores, rel=1e-6, abs=1e-6)
        for step in e.steps:
            check_sum(step.picked)
            assert not step.picked.caps_broken or step.cap_forced, step
            if step.runner_up is not None:
                check_sum(step.runner_up)
                assert step.margin == pytest.approx(step.picked.score - step.runner_up.score)
                assert step.margin >= 0
                if step.margin == 0:  # ties go to the lower index
                    assert step.picked.index < step.runner_up.index
            for cid in step.cap_excluded:  # every exclusion is a cap the recount also sees
                i = tr.candidate_ids.index(cid)
                assert _explainer(tr).caps_broken(step.position, i)
            if step.best_capped is not None:
                check_sum(step.best_capped)
                assert step.best_capped.caps_broken
        for cid in tr.candidate_ids:
            w = why(tr, cid)
            if not w.eligible:
                assert w.reason is not None and w.placed_at is None and not w.steps
                continue
            assert (w.placed_at is not None) == (cid in ids)
            for ws in w.steps:
                assert ws.margin == pytest.approx(sum(ws.gaps.values()), rel=1e-5, abs=1e-4)
                assert ws.margin >= 0 or ws.cap_excluded
                assert ws.rank >= 2 or ws.cap_excluded


def _explainer(tr):  # type: ignore[no-untyped-def]
    from blendspec.explain.breakdown import _Explainer

    return _Explainer(tr)


def test_dpp_reports_the_fill_by_relevance(tmp_path: Path) -> None:
    """A rank-2 kernel runs out after two picks: later steps say they filled by relevance."""
    loaded = SPECS_UNDER_TEST["dpp"]
    path = tmp_path / "d.jsonl"
    rows = [
        {"request_id": "q", "candidate_id": f"c{c}", "p_click": c / 10, "p_hide": 0.0,
         "visual": [1.0, float(c % 2)], "sid": [0, 0], "topic": "t", "risky": False,
         "other": False, "blocked": False}
        for c in range(8)
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    e = explain(trace_request(loaded, path, "q"))
    assert [s.relevance_fill for s in e.steps] == [False, False, True, True, True, True]
    for step in e.steps:
        check_sum(step.picked)
        if step.relevance_fill:
            assert step.picked.diversity_term == 0 and step.picked.relevance_coefficient == 1


# ---------------------------------------------------------------------------------------------
# the bundled sample with specs/homefeed.blend


def test_explained_slate_is_the_run_slate(sample: Path, tmp_path: Path) -> None:
    loaded = load_spec(HOMEFEED)
    out = tmp_path / "slates.parquet"
    run(loaded, sample, out, limit=24)
    slates = pq.read_table(out).to_pylist()
    for request_id in ("r0-00000000", REQUEST, "r0-00000021"):
        rows = [r for r in slates if r["request_id"] == request_id]
        e = explain(trace_request(loaded, sample, request_id))
        assert [s.picked.candidate_id for s in e.steps] == [r["candidate_id"] for r in rows]
        assert [s.picked.score for s in e.steps] == pytest.approx(
            [r["score"] for r in rows], rel=1e-6
        )
        for step in e.steps:
            check_sum(step.picked)
            if step.runner_up is not None:
                check_sum(step.runner_up)


def test_golden_text_and_json(sample: Path) -> None:
    base = ["explain", str(HOMEFEED), "--candidates", str(sample), "--request", REQUEST]
    text = runner.invoke(app, [*base, "--top", "10"])
    assert text.exit_code == 0, text.output
    assert_golden(GOLDEN / "explain" / "homefeed.txt", text.stdout)
    data = runner.invoke(app, [*base, "--top", "3", "--format", "json"])
    assert data.exit_code == 0, data.output
    assert json.loads(data.stdout)["request_id"] == REQUEST
    assert_golden(GOLDEN / "explain" / "homefeed.json", data.stdout)


def test_golden_why(sample: Path) -> None:
    base = ["explain", str(HOMEFEED), "--candidates", str(sample), "--request", REQUEST]
    text = runner.invoke(app, [*base, "--why", "11460"])
    assert text.exit_code == 0, text.output
    assert_golden(GOLDEN / "explain" / "homefeed_why.txt", text.stdout)
    data = runner.invoke(app, [*base, "--why", "4886", "--format", "json"])
    assert data.exit_code == 0, data.output
    assert_golden(GOLDEN / "explain" / "homefeed_why.json", data.stdout)


def test_why_a_filtered_candidate(sample: Path) -> None:
    tr = trace_request(load_spec(HOMEFEED), sample, REQUEST)
    blocked = next(c for c, f in zip(tr.candidate_ids, tr.filtered_by, strict=True) if f)
    w = why(tr, blocked)
    assert not w.eligible and "blocked" in (w.reason or "") and w.placed_at is None


def test_missing_request_and_candidate_are_clear_errors(sample: Path) -> None:
    base = ["explain", str(HOMEFEED), "--candidates", str(sample)]
    missing = runner.invoke(app, [*base, "--request", "r0-9999"])
    assert missing.exit_code == 1
    assert "r0-9999" in missing.output and str(sample) in missing.output
    assert "Traceback" not in missing.output
    unknown = runner.invoke(app, [*base, "--request", REQUEST, "--why", "no-such"])
    assert unknown.exit_code == 1
    assert "no-such" in unknown.output and REQUEST in unknown.output
    no_dump = runner.invoke(app, [*base[:2], "--candidates", "nowhere.parquet", "--request", "x"])
    assert no_dump.exit_code == 1 and "nowhere.parquet" in no_dump.output


def test_top_limits_the_positions(sample: Path) -> None:
    tr = trace_request(load_spec(HOMEFEED), sample, REQUEST)
    full, top = explain(tr), explain(tr, 4)
    assert isinstance(full, Explanation) and len(full.steps) == full.slate == 50
    assert top.steps == full.steps[:4]
    assert json.loads(render_json(top))["steps"][3]["position"] == 3
    assert render_text(top).count(" pick ") == 4
    with pytest.raises(ExplainError):
        why(tr, "nope")


def test_policy_weights_are_labelled_with_the_action(tmp_path: Path) -> None:
    """specs/ads.blend: three weights come from the policy's action, one is fixed."""
    rng = np.random.default_rng(3)
    rows = [
        {"request_id": f"a{r}", "candidate_id": f"c{c}", "p_click": float(rng.random()),
         "p_longclick": float(rng.random() / 4), "p_hide": float(rng.random() / 10),
         "bid": float(rng.random() * 3), "visual": rng.standard_normal(256).round(3).tolist(),
         "topic": f"t{rng.integers(0, 4)}", "user_state": [0.1 * r] * 32}
        for r in range(2)
        for c in range(15)
    ]  # fmt: skip
    path = tmp_path / "ads.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    loaded = load_spec(SPECS / "ads.blend")
    expected = run_slates(loaded, path)
    for request_id, (ids, _) in expected.items():
        e = explain(trace_request(loaded, path, request_id))
        assert [s.picked.candidate_id for s in e.steps] == ids
        sources = {w.name: w.source for w in e.weights}
        assert sources == {
            "w_ctr": "policy", "w_long_ctr": "policy", "w_value": "policy", "w_hide": "fixed"
        }  # fmt: skip
        assert e.action is not None and e.action >= 0 and e.propensity is not None
        for step in e.steps:
            check_sum(step.picked)
            parts = {p.weight: p.source for p in step.picked.utility_parts}
            assert parts["w_ctr"] == "policy" and parts["w_hide"] == "fixed"


def test_truncated_and_bad_requests(tmp_path: Path) -> None:
    loaded = load_text(spec_text("mmr", slate=2) + "\ntruncate 2\n", "dsl", "t.blend")
    path = tmp_path / "d.jsonl"
    rows = [
        {"request_id": "q", "candidate_id": f"c{c}", "p_click": c / 10, "p_hide": 0.0,
         "visual": [1.0, float(c)], "sid": [0, c], "topic": f"t{c}", "risky": False,
         "other": False, "blocked": False}
        for c in range(5)
    ]  # fmt: skip
    bad = {**rows[0], "request_id": "bad", "visual": [1.0, 2.0, 3.0]}
    path.write_text("\n".join(json.dumps(r) for r in [*rows, bad]) + "\n")
    tr = trace_request(loaded, path, "q")
    assert [s.picked.candidate_id for s in explain(tr).steps] == ["c4", "c3"]
    w = why(tr, "c0")
    assert not w.eligible and w.reason == "truncated: not in the top 2 by utility"
    with pytest.raises(ExplainError, match=r"bad request `bad`.*visual"):
        trace_request(loaded, path, "bad")
