"""`blend run --report PATH`: one self-contained HTML page (Plotly charts with their JavaScript
inline, so it opens offline) with what an operator looks at: the run's summary table as the
terminal prints it, what each slate position gets, how alike consecutive items are, how often
and how close together sensitive items land (against each set's spacing window), and what
diversity costs in utility. Every chart has hover values and its numbers in a table under it; the
page ends with the glossary of the measures it shows (docs/metrics.md)."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from blendspec.engine.charts import COLOURS, Page, axis_style, fmt, html_table
from blendspec.engine.glossary import CHARTS, RUN, SLATE
from blendspec.io.dump import RequestBatch

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from blendspec.engine.blend import Runner

__all__ = ["GAP_LIMIT", "SCATTER_LIMIT", "ReportCollector", "render_report", "summary_rows"]

SCATTER_LIMIT = 2000
GAP_LIMIT = 30
"""Gaps longer than this (or than the widest spacing window) share the histogram's last bar."""


@dataclass
class ReportCollector:
    """Accumulates, batch by batch, the few aggregates the report draws.

    ``windows`` maps a sensitive set to its `spacing` window, which the gap histogram marks;
    :meth:`for_runner` fills it from the spec.
    """

    slate_length: int
    sensitive_sets: tuple[str, ...]
    similarity_input: str | None
    windows: Mapping[str, int] = field(default_factory=dict)
    utility_sum: np.ndarray = field(init=False)
    filled: np.ndarray = field(init=False)
    similarity_sum: np.ndarray = field(init=False)
    similarity_count: np.ndarray = field(init=False)
    sensitive_hits: dict[str, np.ndarray] = field(init=False)
    gaps: dict[str, np.ndarray] = field(init=False)
    scatter: list[tuple[float, float]] = field(default_factory=list)
    scatter_ids: list[str] = field(default_factory=list)

    @classmethod
    def for_runner(cls, runner: Runner) -> ReportCollector:
        columns = runner.metric_columns
        windows = {name: s.window for name, s in runner.spec.spacing.items()}
        return cls(runner.spec.slate.length, columns.flags, columns.embedding, windows)

    @property
    def gap_labels(self) -> list[str]:
        """One label per bar of the gap histograms: each gap up to the cap on its own, then
        one bar for every longer gap when the slate is long enough to have one."""
        cap = max([GAP_LIMIT, *self.windows.values()])
        longest = max(1, self.slate_length - 1)
        labels = [str(g) for g in range(1, min(longest, cap) + 1)]
        return labels + [f"≥{cap + 1}"] * (longest > cap)

    def __post_init__(self) -> None:
        t = self.slate_length
        self.utility_sum = np.zeros(t)
        self.filled = np.zeros(t)
        self.similarity_sum = np.zeros(t)
        self.similarity_count = np.zeros(t)
        self.sensitive_hits = {name: np.zeros(t) for name in self.sensitive_sets}
        bars = len(self.gap_labels)
        self.gaps = {name: np.zeros(bars) for name in self.sensitive_sets}

    def add(
        self, batch: RequestBatch, out: dict[str, torch.Tensor], metrics: dict[str, torch.Tensor]
    ) -> None:
        indices = out["indices"]
        valid = indices >= 0
        safe = indices.clamp(min=0)
        self.filled += valid.sum(dim=0).double().numpy()
        self.utility_sum += torch.where(valid, out["utility"], 0).sum(dim=0).double().numpy()
        if self.similarity_input is not None:
            vectors = batch.inputs[self.similarity_input]
            picked = torch.gather(vectors, 1, safe[..., None].expand(-1, -1, vectors.shape[-1]))
            unit = torch.nn.functional.normalize(picked, dim=-1)
            cosine = (unit[:, 1:] * unit[:, :-1]).sum(-1)
            both = valid[:, 1:] & valid[:, :-1]
            self.similarity_sum[1:] += torch.where(both, cosine, 0).sum(dim=0).double().numpy()
            self.similarity_count[1:] += both.sum(dim=0).double().numpy()
        for name in self.sensitive_sets:
            flags = torch.gather(batch.inputs[name], 1, safe) & valid
            self.sensitive_hits[name] += flags.sum(dim=0).double().numpy()
            for row in flags.numpy():
                positions = np.flatnonzero(row)
                bars = len(self.gaps[name])
                np.add.at(self.gaps[name], np.minimum(np.diff(positions), bars) - 1, 1)
        retained = metrics.get("utility_retained")
        diversity = metrics.get("ilad")
        if retained is not None and diversity is not None:
            rows = zip(batch.request_ids, retained.tolist(), diversity.tolist(), strict=True)
            for request, r, d in rows:
                if len(self.scatter) < SCATTER_LIMIT and math.isfinite(r) and math.isfinite(d):
                    self.scatter.append((d, r))
                    self.scatter_ids.append(request)


def summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The rows of `blend run`'s terminal summary table, formatted as it formats them."""
    rows = [
        ("requests in", f"{summary['requests_in']:,}"),
        ("blended", f"{summary['requests_blended']:,}"),
        ("rejected", f"{summary['requests_rejected']:,}"),
        ("empty slates", f"{summary['empty_slates']:,}"),
        ("slots filled", f"{summary['slots']:,}"),
    ]
    if summary.get("policy_fallbacks") is not None:
        rows.append(("policy fallbacks", f"{summary['policy_fallbacks']:,}"))
    rows.append(("requests/s", f"{float(summary['requests_per_second']):,.1f}"))
    metrics = summary.get("metrics") or {}
    rows += [(str(name), f"{float(value):.4g}") for name, value in metrics.items()]
    return rows


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values]


def _position_axis(fig: go.Figure, length: int, first: int = 1, **where: Any) -> None:
    """Integer ticks from the first position, about 25 of them at most."""
    fig.update_xaxes(
        title_text="slate position",
        tick0=first,
        dtick=max(1, math.ceil(length / 25)),
        range=[first - 0.5, length + 0.5],
        **where,
    )


def _utility_chart(page: Page, c: ReportCollector, filled: np.ndarray) -> None:
    import plotly.graph_objects as go

    t = c.slate_length
    positions = np.arange(1, t + 1)
    mean = c.utility_sum / np.where(filled > 0, filled, np.nan)
    fig = go.Figure(
        go.Scatter(
            x=positions,
            y=_nan_to_none(mean),
            customdata=filled,
            mode="lines+markers",
            name="mean utility",
            line={"color": COLOURS[0]},
            hovertemplate="position %{x}<br>mean utility %{y:.4g}<br>"
            "slates with this position %{customdata:,}<extra></extra>",
        )
    )
    axis_style(fig)
    _position_axis(fig, t)
    fig.update_yaxes(title_text="mean utility")
    fig.update_layout(height=340)
    numbers = html_table(
        ["slate position", "slates with this position", "mean utility"],
        [(str(p), f"{int(n):,}", fmt(m)) for p, n, m in zip(positions, filled, mean, strict=True)],
        numeric=[True, True, True],
        link_headers=False,
    )
    page.figure(fig, "Mean utility by slate position", numbers, "mean utility by slate position")


def _similarity_chart(page: Page, c: ReportCollector) -> None:
    import plotly.graph_objects as go

    t = c.slate_length
    count = c.similarity_count[1:]
    mean = c.similarity_sum[1:] / np.where(count > 0, count, np.nan)
    positions = np.arange(2, t + 1)
    fig = go.Figure(
        go.Scatter(
            x=positions,
            y=_nan_to_none(mean),
            customdata=count,
            mode="lines+markers",
            name="cosine",
            line={"color": COLOURS[2]},
            hovertemplate="position %{x} (with %{x}−1)<br>mean cosine %{y:.4g}<br>"
            "pairs %{customdata:,}<extra></extra>",
        )
    )
    axis_style(fig)
    _position_axis(fig, t, first=2)
    fig.update_yaxes(title_text=f"cosine ({c.similarity_input})")
    fig.update_layout(height=340)
    numbers = html_table(
        ["slate position", "pairs", "mean cosine to the previous item"],
        [(str(p), f"{int(n):,}", fmt(m)) for p, n, m in zip(positions, count, mean, strict=True)],
        numeric=[True, True, True],
        link_headers=False,
    )
    page.figure(
        fig,
        f"Cosine similarity to the previous item ({c.similarity_input})",
        numbers,
        "cosine similarity to the previous item",
    )


def _exposure_chart(page: Page, c: ReportCollector, filled: np.ndarray) -> None:
    """One panel per set, each on its own scale: one set may sit near 0.01 and another near 0.3."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(c.sensitive_sets)
    t = c.slate_length
    positions = np.arange(1, t + 1)
    fig = make_subplots(
        rows=len(names),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.12 / max(1, len(names) - 1) if len(names) > 1 else 0.0,
        subplot_titles=[f"set {n}" for n in names],
    )
    shares = {}
    for i, name in enumerate(names):
        share = c.sensitive_hits[name] / np.where(filled > 0, filled, np.nan)
        shares[name] = share
        fig.add_trace(
            go.Scatter(
                x=positions,
                y=_nan_to_none(share),
                customdata=np.stack([c.sensitive_hits[name], filled], axis=1),
                mode="lines+markers",
                name=name,
                line={"color": COLOURS[(i + 3) % len(COLOURS)]},
                hovertemplate=f"{html.escape(name)}<br>position %{{x}}<br>share %{{y:.3%}}"
                "<br>%{customdata[0]:,} of %{customdata[1]:,} slates<extra></extra>",
            ),
            row=i + 1,
            col=1,
        )
        fig.update_yaxes(title_text="share", tickformat=".1%", rangemode="tozero", row=i + 1)
    axis_style(fig)
    fig.update_xaxes(showticklabels=True)
    _position_axis(fig, t)
    for row in range(1, len(names)):
        fig.update_xaxes(title_text=None, row=row, col=1)
    fig.update_layout(height=120 + 220 * len(names), showlegend=False)
    numbers = html_table(
        ["slate position", "slates with this position", *(f"share in {n}" for n in names)],
        [
            (str(p), f"{int(filled[k]):,}", *(fmt(shares[n][k]) for n in names))
            for k, p in enumerate(positions)
        ],
        numeric=[True] * (2 + len(names)),
        link_headers=False,
    )
    page.figure(
        fig,
        "Share of sensitive items by slate position (one panel and scale per set)",
        numbers,
        "share of sensitive items by slate position",
    )


def _gap_chart(page: Page, c: ReportCollector, name: str) -> None:
    import plotly.graph_objects as go

    counts = c.gaps[name]
    total = counts.sum()
    labels = c.gap_labels
    bars = len(labels)
    gaps = np.arange(1, bars + 1)
    window = c.windows.get(name)
    if total == 0:
        page.add(
            f"<figure><figcaption>Gaps between consecutive <code>{html.escape(name)}</code> "
            "items: no slate holds two of them.</figcaption></figure>"
        )
        return
    share = counts / total
    fig = go.Figure(
        go.Bar(
            x=gaps,
            y=share,
            customdata=np.stack([counts, np.array(labels, dtype=object)], axis=1),
            marker_color=COLOURS[3],
            name=name,
            hovertemplate="gap %{customdata[1]}<br>%{y:.2%} of pairs<br>"
            "%{customdata[0]:,} pairs<extra></extra>",
        )
    )
    caption = f"Gaps between consecutive `{name}` items (share of pairs)"
    if window is not None:
        inside = float(counts[: min(window, bars)].sum() / total)
        fig.add_vrect(
            x0=0.5,
            x1=min(window, bars) + 0.5,
            fillcolor="#f2b134",
            opacity=0.2,
            line_width=0,
            layer="below",
            annotation_text=f"spacing window: gap ≤ {window} penalised ({inside:.1%} of pairs)",
            annotation_position="top left",
        )
        caption += f"; shaded: the spacing window of {window}, {inside:.1%} of pairs inside it"
    axis_style(fig)
    fig.update_xaxes(
        title_text="gap in slate positions",
        tickmode="array",
        tickvals=gaps[:: max(1, math.ceil(len(gaps) / 25))].tolist() + [int(gaps[-1])],
        ticktext=labels[:: max(1, math.ceil(len(gaps) / 25))] + [labels[-1]],
    )
    fig.update_yaxes(title_text="share of pairs", tickformat=".0%", rangemode="tozero")
    fig.update_layout(height=340, bargap=0.15)
    numbers = html_table(
        ["gap", "pairs", "share of pairs", "inside the spacing window"],
        [
            (label, f"{int(n):,}", fmt(s), "yes" if window is not None and g <= window else "no")
            for g, label, n, s in zip(gaps, labels, counts, share, strict=True)
        ],
        numeric=[True, True, True, False],
        link_headers=False,
    )
    page.figure(fig, caption, numbers, "gaps between consecutive set items")


def _scatter_chart(page: Page, c: ReportCollector) -> None:
    import plotly.graph_objects as go

    if not c.scatter:
        page.add(
            "<figure><figcaption>Utility retained against diversity: no request has both "
            "values (the spec has no embedding, or every slate is shorter than two).</figcaption>"
            "</figure>"
        )
        return
    xs, ys = zip(*c.scatter, strict=True)
    fig = go.Figure(
        go.Scatter(
            x=xs,
            y=ys,
            text=c.scatter_ids,
            mode="markers",
            marker={"color": COLOURS[0], "opacity": 0.5, "size": 6},
            hovertemplate="request %{text}<br>ILAD %{x:.4g}<br>utility retained %{y:.4g}"
            "<extra></extra>",
        )
    )
    axis_style(fig)
    fig.update_xaxes(title_text="ILAD (mean pairwise cosine distance)")
    fig.update_yaxes(title_text="utility retained", zeroline=False)
    fig.update_layout(height=400)
    described = (
        f"{len(xs):,} requests; ILAD from {min(xs):.4g} to {max(xs):.4g} (mean "
        f"{np.mean(xs):.4g}), utility retained from {min(ys):.4g} to {max(ys):.4g} (mean "
        f"{np.mean(ys):.4g})"
    )
    page.figure(
        fig,
        f"Utility retained against diversity, one dot per request ({described})",
        term="utility retained against ILAD",
    )


def render_report(spec_name: str, summary: Mapping[str, Any], collector: ReportCollector) -> str:
    """The whole page; `summary` is `RunSummary.to_json()`."""
    page = Page(f"blend run — {spec_name}", (RUN, SLATE, CHARTS))
    rows = summary_rows(summary)
    page.add(
        "<h2>Summary</h2><p>The table <code>blend run</code> prints; slate metrics are means "
        "over the requests where they are defined.</p>"
        + html_table(
            ["measure", "value"], rows, numeric=[False, True], link=[True, False], caption=None
        )
    )
    page.add("<h2>Charts</h2>")
    filled = collector.filled
    _utility_chart(page, collector, filled)
    if collector.similarity_input is not None and collector.slate_length > 1:
        _similarity_chart(page, collector)
    if collector.sensitive_sets:
        _exposure_chart(page, collector, filled)
        for name in collector.sensitive_sets:
            _gap_chart(page, collector, name)
    _scatter_chart(page, collector)
    return page.render()
