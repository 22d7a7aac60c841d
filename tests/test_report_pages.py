"""The two HTML reports (`blend run --report`, `blend policy report --html`): their numbers match
the terminal tables, every measure they print has a glossary entry (embedded on the page and in
docs/metrics.md), and in a real headless Chromium they render with no console error, no uncaught
exception and no network request, with tick labels on both axes, a hover label under the mouse,
the spacing windows on the gap histograms and intervals on the policy bars.

The browser is the Chromium build that the npm package ``@sparticuz/chromium`` ships inside
itself (no browser download at install time: only the npm registry is needed), driven by
``puppeteer-core``; both are pinned in tests/browser/package-lock.json and installed with
``npm ci`` into the blendspec cache folder on first use (about 20 s and 70 MB; later runs reuse
it). Without node/npm, or when the registry cannot be reached, the browser tests skip with the
reason, except under CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import contextlib
import fcntl
import html
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from blendspec.cli import app
from blendspec.engine.blend import Runner, blend_source
from blendspec.engine.glossary import GLOSSARY, lookup, rewrite
from blendspec.engine.report import ReportCollector, render_report, summary_rows
from blendspec.io.cache import cache_dir
from blendspec.io.dump import DumpReader
from blendspec.policy.report import (
    AblationRow,
    BucketRow,
    PolicyReport,
    SegmentRow,
    print_report,
    render_html,
)
from blendspec.spec.loader import load_text
from tests.conftest import REPO
from tests.test_run import SPEC, make_rows, write_parquet

BROWSER = Path(__file__).resolve().parent / "browser"
NETWORK_ERRORS = ("ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "ECONNREFUSED", "ECONNRESET", "network")

SPACED = (
    SPEC.replace("slate 5", "slate 10")
    .replace("filter blocked", "spacing blocked {window = 3, coefficient = 0.5}")
    .replace("diversity none", "diversity mmr {similarity = cosine(visual)}")
)


# ------------------------------------------------------------------------------------------
# Pages
# ------------------------------------------------------------------------------------------


def run_page(tmp_path: Path, requests: int = 60) -> tuple[Path, dict]:
    """A run report from the real pipeline: the collector built from the spec as `blend run`
    builds it, fed by the request loop."""
    loaded = load_text(SPACED, "dsl", "small.blend")
    dump = write_parquet(make_rows(requests=requests, seed=3), tmp_path / "dump.parquet")
    runner = Runner(loaded)
    collector = ReportCollector.for_runner(runner)
    tally = blend_source(
        runner, DumpReader(dump, loaded.spec), batch_size=16, limit=None,
        on_bad_request="error", emit=lambda table: None, restart=lambda: None,
        observe=collector.add,
    )  # fmt: skip
    summary = tally.summary(0.5).to_json()
    page = tmp_path / "run.html"
    page.write_text(render_report(loaded.spec.name, summary, collector), encoding="utf-8")
    return page, summary


def off_policy_report() -> PolicyReport:
    """Rates of different magnitudes (click ~5%, hide ~0.2%) and bootstrap intervals."""
    weights = ("w_click", "w_div")

    def row(label: str, trained: str | None, engaged: float, click: float, hide: float):
        return AblationRow(
            label,
            trained,
            "fixed" if trained is None else "pg",
            {"engaged": engaged, "clicks": engaged * 0.6},
            {"click": click, "long_click": click / 3, "hide": hide},
            {
                "engaged": (engaged - 0.04, engaged + 0.05),
                "clicks": (engaged * 0.6 - 0.03, engaged * 0.6 + 0.02),
                "click_rate": (click - 0.004, click + 0.005),
                "long_click_rate": (click / 3 - 0.002, click / 3 + 0.002),
                "hide_rate": (hide - 0.0004, hide + 0.0006),
            },
        )

    return PolicyReport(
        spec_name="ads",
        evaluation="SNIPS on 2,000 held-out logged requests (95% bootstrap intervals)",
        weight_names=weights,
        ablation=(
            row("defaults (fixed)", None, 0.31, 0.044, 0.0021),
            row("engaged/pg", "engaged", 0.52, 0.054, 0.0015),
            row("clicks/pg", "clicks", 0.41, 0.061, 0.0032),
        ),
        personalised_for="the `engaged/pg` policy",
        segments=(
            SegmentRow("clicker", 1250, {"w_click": 2.0, "w_div": 0.1}, 6, 0.9),
            SegmentRow("reader", 750, {"w_click": 0.5, "w_div": 0.04}, 2, 0.95),
        ),
        buckets=(
            BucketRow("state[0]", "[-3, 0]", 1000, {"w_click": 2.0, "w_div": 0.0}),
            BucketRow("state[0]", "[0, 3]", 1000, {"w_click": 0.0, "w_div": 0.2}),
            BucketRow("state[2]", "[-1, 1]", 2000, {"w_click": 1.0, "w_div": 0.1}),
        ),
        distinct_actions=4,
    )


def table_rows(page: str) -> list[list[str]]:
    """Every row of every HTML table on the page, as the cells' plain text."""
    rows = []
    for tr in re.findall(r"<tr>(.*?)</tr>", page, flags=re.S):
        cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", tr, flags=re.S)
        rows.append([html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cells])
    return rows


def terminal_rows(text: str) -> list[list[str]]:
    """The body rows of the rich tables in ``text``."""
    rows = []
    for line in text.splitlines():
        if line.count("│") >= 2:
            rows.append([c.strip() for c in line.strip().strip("│").split("│")])
    return rows


# ------------------------------------------------------------------------------------------
# Numbers, glossary, self-containment (no browser)
# ------------------------------------------------------------------------------------------


def test_run_page_tables_are_the_terminal_table(tmp_path: Path) -> None:
    spec = tmp_path / "small.blend"
    spec.write_text(SPACED)
    dump = write_parquet(make_rows(requests=30, seed=4), tmp_path / "dump.parquet")
    page = tmp_path / "report.html"
    result = CliRunner().invoke(
        app,
        ["run", str(spec), "--candidates", str(dump), "-o", str(tmp_path / "s.parquet"),
         "--report", str(page)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = [r for r in terminal_rows(result.stdout) if len(r) == 2 and r[0] != "measure"]
    assert len(printed) >= 20 and ["requests in", "30"] in printed
    on_page = table_rows(page.read_text(encoding="utf-8"))
    missing = [r for r in printed if r not in on_page]
    assert not missing, f"terminal rows missing from the page: {missing}"
    # `blend run --report` builds its collector with the spec's spacing windows: the gap
    # histogram of `blocked` (window 3) has its window shaded and labelled.
    text = page.read_text(encoding="utf-8").replace("\\u2264", "≤")  # plotly's JSON escapes it
    assert "spacing window: gap ≤ 3 penalised" in html.unescape(text)


def test_policy_page_tables_hold_the_terminal_numbers() -> None:
    report = off_policy_report()
    console = Console(width=240, record=True, force_terminal=False, color_system=None)
    print_report(report, console)
    printed = terminal_rows(console.export_text())
    on_page = table_rows(render_html(report))
    assert len(printed) == 3 + 2 + 3
    for row in printed:
        # The page adds each estimate's interval after its value: "0.52 [0.48, 0.57]".
        match = [r for r in on_page if len(r) == len(row) and all(
            p == c or c.startswith(p + " [") for p, c in zip(row, r, strict=True)
        )]  # fmt: skip
        assert match, f"terminal row {row} is not on the page"
    assert on_page[2][:3] == ["engaged/pg", "engaged", "0.52 [0.48, 0.57]"]


def test_every_printed_measure_has_a_glossary_entry(tmp_path: Path) -> None:
    _, summary = run_page(tmp_path, requests=20)
    names = [name for name, _ in summary_rows(summary)]
    assert {"ilald@5", "sid_collisions@5", "adjacency[blocked]@5", "exposure[blocked]"} <= set(
        names
    )
    report = off_policy_report()
    console = Console(width=240, record=True, force_terminal=False, color_system=None)
    print_report(report, console)
    headers = [r for r in terminal_rows(console.export_text()) if r[0] in ("policy", "segment")]
    names += [h for row in headers for h in row if h not in ("policy", "trained for")]
    names += [r.policy for r in report.ablation]
    names += ["replay", "ips", "snips", "dr", "effective n", "95% interval"]  # policy eval
    names += ["slates changed", "slate lengths changed", "mean position shift", "overlap@10"]
    names += ["Kendall τ / Spearman ρ", "first diff", "Δ"]  # blend diff
    missing = [n for n in names if lookup(n) is None]
    assert not missing, f"no glossary entry for {missing}"
    assert lookup("adjacency[blocked]@5").name == "adjacency[<set>]@w"
    assert lookup("mean position shift").name == "mean position shift"


def test_docs_metrics_md_is_the_glossary() -> None:
    doc = (REPO / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert rewrite(doc) == doc, (
        "run `python -m blendspec.engine.glossary` to update docs/metrics.md"
    )
    for term in GLOSSARY:
        assert f"| `{term.name}` |" in doc


def test_pages_are_self_contained_and_their_links_resolve(tmp_path: Path) -> None:
    page, _ = run_page(tmp_path, requests=20)
    for text in (page.read_text(encoding="utf-8"), render_html(off_policy_report())):
        # (Booleans, not `in` on the page: pytest would print all 5 MB of it on a failure.)
        doctype = text.startswith("<!doctype html>")
        assert doctype
        scripts = re.findall(r"<script[^>]*>", text)
        library = scripts[0] == '<script type="text/javascript">' and "window.Plotly" in text
        assert library, "plotly.js is inline, in the first script of the page"
        ours = re.sub(r"<script[^>]*>.*?</script>", "", text, flags=re.S)
        external = re.findall(r"(?:src|href)=\"(?!#)[^\"]*\"|<link|url\(", ours)
        assert not external, f"external resources: {external}"
        assert all(tag == "<script>" for tag in scripts[1:]), "no script loads a file"
        drawn = text.count("Plotly.newPlot")
        assert drawn >= 3
        targets = set(re.findall(r'id="([^"]+)"', ours))
        links = set(re.findall(r'href="#([^"]+)"', ours))
        assert links and links <= targets, f"links to nowhere: {links - targets}"
        assert "glossary" in targets


def test_gap_histogram_counts_and_windows() -> None:
    import torch

    from blendspec.io.dump import RequestBatch

    collector = ReportCollector(40, ("risky",), None, {"risky": 3})
    assert collector.gap_labels[-1] == "≥31" and len(collector.gap_labels) == 31
    flags = torch.zeros(1, 40, dtype=torch.bool)
    flags[0, [0, 2, 7, 39]] = True
    batch = RequestBatch(["r"], None, None, torch.ones(1, 40, dtype=torch.bool), {"risky": flags})  # type: ignore[arg-type]
    out = {"indices": torch.arange(40)[None], "utility": torch.ones(1, 40)}
    collector.add(batch, out, {})
    counts = collector.gaps["risky"]
    assert counts[1] == 1 and counts[4] == 1 and counts[30] == 1 and counts.sum() == 3
    short = ReportCollector(10, ("risky",), None, {"risky": 3})
    assert short.gap_labels == [str(g) for g in range(1, 10)], "no pooled bar past the slate"


def test_a_report_of_nothing_still_renders() -> None:
    """One-slot slates and no request at all: every chart says what it lacks, nothing raises."""
    empty = ReportCollector(1, ("risky",), "visual", {"risky": 4})
    summary = {
        "requests_in": 0, "requests_blended": 0, "requests_rejected": 0, "empty_slates": 0,
        "slots": 0, "requests_per_second": 0.0, "metrics": {},
    }  # fmt: skip
    page = render_report("nothing", summary, empty)
    charts = page.count('class="plotly-graph-div"')
    assert charts == 2, "utility and exposure; no cosine chart for one-slot slates"
    lacking = "no slate holds two of them" in page and "no request has both values" in page
    assert lacking


# ------------------------------------------------------------------------------------------
# In a headless browser
# ------------------------------------------------------------------------------------------


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the headless browser is needed under CI: {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One installer and one browser at a time per cache folder (the Chromium unpacks to /tmp)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def browser() -> Callable[..., list[dict]]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("node and npm are needed to run the headless browser")
    folder = cache_dir() / "report-browser"
    with _locked(folder):
        lock = (BROWSER / "package-lock.json").read_text()
        installed = folder / "installed.lock"
        if not installed.exists() or installed.read_text() != lock:
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(BROWSER / name, folder / name)
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=folder, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            if done.returncode != 0:
                if any(code in done.stderr for code in NETWORK_ERRORS):
                    _unavailable(f"npm could not reach its registry: {done.stderr[-300:]}")
                pytest.fail(f"npm ci failed: {done.stderr[-2000:]}")
            installed.write_text(lock)
        shutil.copyfile(BROWSER / "check_page.mjs", folder / "check_page.mjs")

    def check(*pages: Path, screenshots: Path | None = None) -> list[dict]:
        args = [node, "check_page.mjs", *map(str, pages)]
        if screenshots is not None:
            args += ["--screenshots", str(screenshots)]
        with _locked(folder):
            done = subprocess.run(args, cwd=folder, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    return check


def _assert_clean(result: dict) -> None:
    assert result["console_errors"] == [], result["console_errors"]
    assert result["page_errors"] == [], result["page_errors"]
    assert result["requests"] == [], f"the page asked the network for {result['requests']}"
    for chart in result["charts"]:
        assert chart["xticks"] and chart["yticks"], f"{chart['id']} lacks tick labels"
        assert chart["xtick_marks"] and chart["ytick_marks"], f"{chart['id']} lacks tick marks"
        assert re.search(r"\d", chart["hover"]), f"{chart['id']}: no hover label with numbers"


def test_both_pages_render_in_a_headless_browser(
    tmp_path: Path, browser: Callable[..., list[dict]]
) -> None:
    run_html, _ = run_page(tmp_path)
    policy_html = tmp_path / "policy.html"
    policy_html.write_text(render_html(off_policy_report()), encoding="utf-8")
    # A page that breaks every rule, to show the checks can fail (the request is refused before
    # it leaves the browser; it names a loopback address all the same).
    bad_html = tmp_path / "bad.html"
    bad_html.write_text(
        "<!doctype html><html><head><title>bad</title>"
        '<script src="http://127.0.0.1:9/plotly.js"></script></head><body>'
        "<script>console.error('drawn wrong'); undefinedFunction();</script></body></html>"
    )
    screenshots = os.environ.get("BLENDSPEC_REPORT_SCREENSHOTS")
    run_result, policy_result, bad = browser(
        run_html, policy_html, bad_html, screenshots=Path(screenshots) if screenshots else None
    )
    assert bad["requests"] == ["http://127.0.0.1:9/plotly.js"]
    assert any("drawn wrong" in e for e in bad["console_errors"])
    assert any("undefinedFunction" in e for e in bad["page_errors"])

    _assert_clean(run_result)
    assert run_result["title"] == "blend run — small"
    charts = run_result["charts"]
    # utility, cosine, exposure (one panel per set), one gap histogram per set, the scatter
    assert len(charts) == 5
    gap = charts[3]
    assert gap["shapes"] == 1, "the spacing window is shaded"
    assert any("gap ≤ 3" in a for a in gap["annotations"])
    assert "request r" in charts[4]["hover"]

    _assert_clean(policy_result)
    rewards, rates, _segments, *buckets = policy_result["charts"]
    assert rewards["error_bars"] and rates["error_bars"], "intervals on the ablation bars"
    assert rates["subplots"] == 3 and len(buckets) == 2
    # Separate scales: the hide-rate panel's axis ends far below the click-rate panel's.
    click_end, _, hide_end = (r[1] for r in rates["xranges"])
    assert hide_end < click_end / 5
    assert "95% interval" in rewards["hover"]
