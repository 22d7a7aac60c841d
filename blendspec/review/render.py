"""Renderers of a `DiffReport`: terminal text, versioned JSON, a pull-request comment in Markdown,
and GitHub workflow annotations.

Every renderer is a pure function of the report, so the outputs are golden-tested byte for byte;
numbers are shown with 4 significant digits (3 for percentages) so that they do not flicker with
the last bits of a float.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from io import StringIO
from typing import Any

from blendspec.review.changes import (
    DIFF_FORMAT_VERSION,
    NO_CHANGE,
    SEVERITIES,
    WORSE,
    Change,
    DiffReport,
    Impact,
    Outcome,
    Severity,
    SpecDiff,
)

_STYLE = {
    Severity.breaking: "bold red",
    Severity.behavioural: "yellow",
    Severity.cosmetic: "dim",
}
_GITHUB_LEVEL = {
    Severity.breaking: "error",
    Severity.behavioural: "warning",
    Severity.cosmetic: "notice",
}
_MARK = {
    Severity.breaking: ":red_circle:",
    Severity.behavioural: ":yellow_circle:",
    Severity.cosmetic: ":white_circle:",
}


def render(report: DiffReport, output: str, *, color: bool = False) -> str:
    """The report in one of the formats `text`, `json`, `markdown`, `github`."""
    renderers: dict[str, Callable[[DiffReport], str]] = {
        "text": lambda r: render_text(r, color=color),
        "json": render_json,
        "markdown": render_markdown,
        "github": render_github,
    }
    return renderers[output](report)


# ---------------------------------------------------------------- numbers


def num(value: float | None, digits: int = 4) -> str:
    """A measurement: `digits` significant digits; n/a for an undefined value."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "0"
    return f"{value:.{digits}g}"


def signed(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "0"
    return f"{value:+.{digits}g}"


def percent(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value * 100:.3g}%"


def _summary(counts: dict[Severity, int]) -> str:
    total = sum(counts.values())
    if total == 0:
        return "no semantic changes"
    parts = ", ".join(f"{counts[s]} {s.value}" for s in SEVERITIES if counts[s])
    return f"{total} change{'s' * (total != 1)}: {parts}"


def _counts(diff: SpecDiff | DiffReport) -> dict[Severity, int]:
    return {s: diff.count(s) for s in SEVERITIES}


def _title(diff: SpecDiff) -> str:
    name = diff.new_name or diff.old_name or "?"
    if diff.status == "added":
        return f"{name}: {diff.new_file} (added)"
    if diff.status == "deleted":
        return f"{name}: {diff.old_file} (deleted)"
    return f"{name}: {diff.old_file} → {diff.new_file}"


def _lines(change: Change) -> str:
    old = f"L{change.old_at.line}" if change.old_at else "–"
    new = f"L{change.new_at.line}" if change.new_at else "–"
    return f"{old} → {new}"


# ---------------------------------------------------------------- text


def render_text(report: DiffReport, *, color: bool = False) -> str:
    """The terminal view: per file, changes grouped by severity, then the impact."""
    from rich.console import Console
    from rich.markup import escape

    buffer = StringIO()
    console = Console(
        file=buffer,
        force_terminal=color,
        no_color=not color,
        color_system="standard" if color else None,
        highlight=False,
        soft_wrap=True,
        width=200,
    )
    if not report.files:
        console.print("no spec files to compare")
    for index, diff in enumerate(report.files):
        if index:
            console.print()
        console.print(f"[bold]{escape(_title(diff))}[/bold]")
        console.print(escape(_summary(_counts(diff))))
        changes = diff.by_severity()
        width = max((len(c.path) for c in changes), default=0)
        for severity in SEVERITIES:
            group = [c for c in changes if c.severity is severity]
            if not group:
                continue
            console.print()
            console.print(f"[{_STYLE[severity]}]{severity.value}[/{_STYLE[severity]}]")
            for change in group:
                console.print(
                    f"  {escape(change.path.ljust(width))}  {escape(change.description)}"
                    f"  [dim]{_lines(change)}[/dim]"
                )
        if diff.impact is not None:
            console.print()
            for line in _impact_text(diff.impact):
                console.print(escape(line))
        if diff.outcome is not None:
            console.print()
            for line in _outcome_text(diff.outcome):
                console.print(escape(line))
    if len(report.files) > 1:
        console.print()
        console.print(f"[bold]total[/bold]: {escape(_summary(_counts(report)))}")
    return buffer.getvalue()


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        out.append("  " + "  ".join(cells).rstrip())
    return out


def _rejected_text(impact: Impact) -> str:
    parts = []
    if impact.only_new:
        parts.append(f"{impact.only_new:,} rejected by the old spec only")
    if impact.only_old:
        parts.append(f"{impact.only_old:,} rejected by the new spec only")
    if impact.rejected:
        parts.append(f"{impact.rejected:,} rejected by both")
    return "; ".join(parts)


def _overlap_label(impact: Impact) -> str:
    return " / ".join(f"@{k}" for k in impact.overlap)


def _impact_text(impact: Impact) -> list[str]:
    lines = [f"impact on {impact.requests:,} requests of {impact.candidates}"]
    rejected = _rejected_text(impact)
    if rejected:
        lines.append(f"  ({rejected})")
    overlap = " / ".join(num(v, 3) for v in impact.overlap.values())
    lines += _table(
        [
            ["slates changed", f"{percent(impact.changed_fraction)} ({impact.changed:,})"],
            ["slate lengths changed", f"{impact.length_changed:,}"],
            ["mean position shift", num(impact.position_shift, 3)],
            [f"overlap {_overlap_label(impact)}", overlap],
            ["Kendall τ / Spearman ρ", f"{num(impact.kendall, 3)} / {num(impact.spearman, 3)}"],
        ],
        set(),
    )
    if impact.metrics:
        lines += ["", "slate metrics (mean over requests; Δ = new - old, 95% bootstrap interval)"]
        rows = [["metric", "old", "new", "Δ", "95% interval", ""]]
        for m in impact.metrics:
            rows.append(
                [
                    m.name,
                    num(m.old),
                    num(m.new),
                    signed(m.difference),
                    f"[{signed(m.low)}, {signed(m.high)}]",
                    "*" if m.significant else "",
                ]
            )
        lines += _table(rows, {1, 2, 3})
        if any(m.significant for m in impact.metrics):
            lines.append("  * the interval excludes 0")
    if impact.most_changed:
        lines += ["", "requests that changed most"]
        rows = [["request", f"overlap@{impact.slate_length}", "τ", "shift", "first diff", "length"]]
        for r in impact.most_changed:
            rows.append(
                [
                    r.request_id,
                    num(r.overlap, 3),
                    num(r.kendall, 3),
                    num(r.position_shift, 3),
                    f"slot {r.first_difference + 1}",
                    f"{r.old_length} → {r.new_length}",
                ]
            )
        lines += _table(rows, {1, 2, 3})
    return lines


def _interval(low: float, high: float, sign: bool = False) -> str:
    show = signed if sign else num
    return f"[{show(low)}, {show(high)}]"


def _effective(outcome: Outcome) -> str:
    return (
        f"old {_whole(outcome.effective_old)}, new {_whole(outcome.effective_new)} "
        f"of {outcome.requests:,} (floor {_whole(outcome.min_effective)})"
    )


def _whole(value: float | None) -> str:
    return f"{value:,.0f}" if value is not None and math.isfinite(value) else "n/a"


def _verdict_line(outcome: Outcome) -> str:
    primary = outcome.primary
    assert primary is not None
    verdict = primary.verdict
    if verdict == NO_CHANGE:
        return f"verdict ({primary.estimator}): no detectable change at 95%"
    return f"verdict ({primary.estimator}): {verdict} at 95%"


def _outcome_title(outcome: Outcome) -> str:
    reward = f"reward `{outcome.reward}`" if outcome.reward else "reward"
    return f"estimated outcome ({reward} per request) from {outcome.requests:,} logged requests"


def _outcome_text(outcome: Outcome) -> list[str]:
    if outcome.not_estimable is not None:
        lines = [f"estimated outcome from {outcome.logs}: not estimable: {outcome.not_estimable}"]
        return lines + [f"  note: {note}" for note in outcome.notes]
    lines = [f"{_outcome_title(outcome)} of {outcome.logs}"]
    rows = [["estimator", "old", "95% interval", "new", "95% interval", "Δ = new - old",
             "95% interval", ""]]  # fmt: skip
    for e in outcome.estimates:
        rows.append(
            [
                e.estimator,
                num(e.old),
                _interval(e.old_low, e.old_high),
                num(e.new),
                _interval(e.new_low, e.new_high),
                signed(e.difference),
                _interval(e.low, e.high, sign=True),
                "*" if e.verdict != NO_CHANGE else "",
            ]
        )
    lines += _table(rows, {1, 3, 5})
    lines.append(f"  effective n: {_effective(outcome)}")
    lines.append(f"  {_verdict_line(outcome)}")
    lines += [f"  note: {note}" for note in outcome.notes]
    return lines


# ---------------------------------------------------------------- JSON


def render_json(report: DiffReport) -> str:
    """Stable, versioned JSON: key order fixed, numbers rounded to 6 significant digits."""
    counts = _counts(report)
    data: dict[str, Any] = {
        "version": DIFF_FORMAT_VERSION,
        "summary": {
            "files": len(report.files),
            "changes": sum(counts.values()),
            **{s.value: counts[s] for s in SEVERITIES},
        },
        "files": [
            {
                "status": diff.status,
                "old": diff.old_file,
                "new": diff.new_file,
                "spec": {"old": diff.old_name, "new": diff.new_name},
                "summary": {s.value: diff.count(s) for s in SEVERITIES},
                "changes": [c.to_json() for c in diff.changes],
                "impact": _impact_json(diff),
            }
            for diff in report.files
        ],
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _impact_json(diff: SpecDiff) -> dict[str, Any] | None:
    """`impact`: the slates' (--candidates) and `outcome` (--logs); null with neither."""
    if diff.impact is None and diff.outcome is None:
        return None
    data = diff.impact.to_json() if diff.impact is not None else {}
    if diff.outcome is not None:
        data["outcome"] = diff.outcome.to_json()
    return data


# ---------------------------------------------------------------- Markdown


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: DiffReport) -> str:
    """A pull-request comment: a summary line, the changes by severity, the impact tables."""
    out: list[str] = []
    counts = _counts(report)
    marks = " · ".join(f"{_MARK[s]} {counts[s]} {s.value}" for s in SEVERITIES)
    out.append("## `blend diff`")
    out.append("")
    if not report.files:
        out.append("No spec files changed.")
    elif sum(counts.values()) == 0:
        out.append("**No semantic changes.**")
    else:
        total = sum(counts.values())
        out.append(f"**{total} change{'s' * (total != 1)}** — {marks}")
    for diff in report.files:
        out += ["", f"### {_md(_title(diff))}", ""]
        if not diff.changes:
            out.append("No semantic changes.")
        else:
            if len(report.files) > 1:
                out += [_summary(_counts(diff)), ""]
            out += ["| severity | change | path | line |", "|---|---|---|---|"]
            for change in diff.by_severity():
                line = (
                    f"L{change.new_at.line}"
                    if change.new_at
                    else (f"old L{change.old_at.line}" if change.old_at else "")
                )
                out.append(
                    f"| {_MARK[change.severity]} {change.severity.value} "
                    f"| {_md(change.description)} | `{_md(change.path)}` | {line} |"
                )
        if diff.impact is not None:
            out += _impact_markdown(diff.impact)
        if diff.outcome is not None:
            out += _outcome_markdown(diff.outcome)
    return "\n".join(out) + "\n"


def _outcome_markdown(outcome: Outcome) -> list[str]:
    reward = f"`{_md(outcome.reward)}`" if outcome.reward else "the reward"
    out = ["", f"#### Estimated outcome: {reward} per request", ""]
    if outcome.not_estimable is not None:
        out.append(f"**Not estimable** from `{_md(outcome.logs)}`: {_md(outcome.not_estimable)}")
        if outcome.notes:
            out += ["", *[f"_{_md(note)}_" for note in outcome.notes]]
        return out
    out += [
        f"_{outcome.requests:,} logged requests of `{_md(outcome.logs)}`; effective n "
        f"{_md(_effective(outcome))}; paired bootstrap over requests, "
        f"{outcome.resamples:,} resamples_",
        "",
        "| estimator | old (95% CI) | new (95% CI) | Δ new − old (95% CI) | verdict |",
        "|---|---:|---:|---:|---|",
    ]
    for e in outcome.estimates:
        delta = f"{signed(e.difference)} {_interval(e.low, e.high, sign=True)}"
        if e.verdict != NO_CHANGE:
            delta = f"**{delta}**"
        out.append(
            f"| {e.estimator} | {num(e.old)} {_interval(e.old_low, e.old_high)} "
            f"| {num(e.new)} {_interval(e.new_low, e.new_high)} | {delta} | {e.verdict} |"
        )
    verdict = _verdict_line(outcome)
    out += ["", f"**{_md(verdict[:1].upper() + verdict[1:])}.**"]
    if outcome.notes:
        out += ["", *[f"_{_md(note)}_" for note in outcome.notes]]
    return out


def _impact_markdown(impact: Impact) -> list[str]:
    out = ["", f"#### Impact on {impact.requests:,} requests of `{_md(impact.candidates)}`", ""]
    rejected = _rejected_text(impact)
    if rejected:
        out += [f"_{rejected}_", ""]
    ks = list(impact.overlap)
    header = ["slates changed", "mean position shift", *[f"overlap@{k}" for k in ks]]
    header += ["Kendall τ", "Spearman ρ"]
    row = [
        f"{percent(impact.changed_fraction)} ({impact.changed:,})",
        num(impact.position_shift, 3),
        *[num(impact.overlap[k], 3) for k in ks],
        num(impact.kendall, 3),
        num(impact.spearman, 3),
    ]
    out += [
        "| " + " | ".join(header) + " |",
        "|" + "---:|" * len(header),
        "| " + " | ".join(row) + " |",
    ]
    if impact.metrics:
        out += [
            "",
            "| metric | old | new | Δ (95% CI) |",
            "|---|---:|---:|---:|",
        ]
        for m in impact.metrics:
            delta = f"{signed(m.difference)} [{signed(m.low)}, {signed(m.high)}]"
            if m.significant:
                delta = f"**{delta}**"
            out.append(f"| `{_md(m.name)}` | {num(m.old)} | {num(m.new)} | {delta} |")
        out += ["", "_Bold: the 95% bootstrap interval of the mean difference excludes 0._"]
    if impact.most_changed:
        out += [
            "",
            "<details><summary>Requests that changed most</summary>",
            "",
            f"| request | overlap@{impact.slate_length} | Kendall τ | position shift "
            "| first difference | length |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in impact.most_changed:
            out.append(
                f"| `{_md(r.request_id)}` | {num(r.overlap, 3)} | {num(r.kendall, 3)} "
                f"| {num(r.position_shift, 3)} | slot {r.first_difference + 1} "
                f"| {r.old_length} → {r.new_length} |"
            )
        out += ["", "</details>"]
    return out


# ---------------------------------------------------------------- GitHub annotations


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(report: DiffReport) -> str:
    """Workflow commands: one annotation per change on its line of the NEW file
    (`::error` breaking, `::warning` behavioural, `::notice` cosmetic), and a notice with the
    impact. A change that exists only in the old file is put on the section it was removed from,
    or on the file when the new file has no such section."""
    out: list[str] = []
    for diff in report.files:
        file = diff.annotated_file
        for change in diff.by_severity():
            props = [f"file={_escape_property(file)}"]
            where = change.new_at or change.anchor
            if where is not None:
                props += [f"line={where.line}", f"col={where.column}"]
            props.append(f"title={_escape_property(f'blend diff ({change.severity.value})')}")
            out.append(
                f"::{_GITHUB_LEVEL[change.severity]} {','.join(props)}::"
                f"{_escape_data(change.description)}"
            )
        if diff.impact is not None:
            impact = diff.impact
            overlap = ", ".join(f"overlap@{k} {num(v, 3)}" for k, v in impact.overlap.items())
            message = (
                f"{percent(impact.changed_fraction)} of {impact.requests:,} slates changed; "
                f"mean position shift {num(impact.position_shift, 3)}; {overlap}; "
                f"Kendall τ {num(impact.kendall, 3)}"
            )
            significant = [m for m in impact.metrics if m.significant]
            if significant:
                message += "; " + "; ".join(
                    f"{m.name} {num(m.old)} → {num(m.new)}" for m in significant
                )
            props = f"file={_escape_property(file)},title=blend diff impact"
            out.append(f"::notice {props}::{_escape_data(message)}")
        if diff.outcome is not None:
            out.append(_outcome_github(diff.outcome, file))
    return "".join(line + "\n" for line in out)


def _outcome_github(outcome: Outcome, file: str) -> str:
    """One annotation: a warning when the primary estimator says worse, else a notice."""
    props = f"file={_escape_property(file)},title=blend diff outcome"
    primary = outcome.primary
    if primary is None:
        message = f"estimated outcome not estimable: {outcome.not_estimable}"
        return f"::notice {props}::{_escape_data(message)}"
    message = (
        f"{_verdict_line(outcome)}: {outcome.reward} per request {num(primary.old)} → "
        f"{num(primary.new)}, Δ {signed(primary.difference)} "
        f"{_interval(primary.low, primary.high, sign=True)} "
        f"(effective n: old {_whole(outcome.effective_old)}, new "
        f"{_whole(outcome.effective_new)} of {outcome.requests:,} logged requests)"
    )
    level = "warning" if primary.verdict == WORSE else "notice"
    return f"::{level} {props}::{_escape_data(message)}"
