"""`blend run --report PATH`: one self-contained HTML page (inline SVG, no scripts, no network) with
the pictures an operator looks at: what each slate position gets, what diversity costs in utility,
and how far apart sensitive items land."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from blendspec.io.dump import RequestBatch

SCATTER_LIMIT = 2000
GAP_LIMIT = 30


@dataclass
class ReportCollector:
    """Accumulates, batch by batch, the few aggregates the report draws."""

    slate_length: int
    sensitive_sets: tuple[str, ...]
    similarity_input: str | None
    utility_sum: np.ndarray = field(init=False)
    filled: np.ndarray = field(init=False)
    similarity_sum: np.ndarray = field(init=False)
    similarity_count: np.ndarray = field(init=False)
    sensitive_hits: dict[str, np.ndarray] = field(init=False)
    gaps: dict[str, np.ndarray] = field(init=False)
    scatter: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        t = self.slate_length
        self.utility_sum = np.zeros(t)
        self.filled = np.zeros(t)
        self.similarity_sum = np.zeros(t)
        self.similarity_count = np.zeros(t)
        self.sensitive_hits = {name: np.zeros(t) for name in self.sensitive_sets}
        self.gaps = {name: np.zeros(GAP_LIMIT + 1) for name in self.sensitive_sets}

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
                gaps = np.minimum(np.diff(positions), GAP_LIMIT)
                np.add.at(self.gaps[name], gaps, 1)
        retained = metrics.get("utility_retained")
        diversity = metrics.get("ilad")
        if retained is not None and diversity is not None:
            for r, d in zip(retained.tolist(), diversity.tolist(), strict=True):
                if len(self.scatter) < SCATTER_LIMIT and math.isfinite(r) and math.isfinite(d):
                    self.scatter.append((d, r))


def _line_chart(title: str, series: dict[str, np.ndarray], y_label: str) -> str:
    width, height, pad = 520, 240, 40
    values = [v for s in series.values() for v in s if math.isfinite(v)]
    if not values:
        return f"<figure><figcaption>{html.escape(title)}: no data</figcaption></figure>"
    low, high = min(values + [0.0]), max(values)
    high = high if high > low else low + 1
    length = max(len(s) for s in series.values())
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    parts = [_frame(width, height, pad, low, high, length, y_label)]
    for values_, color in zip(series.values(), colors, strict=False):
        points = " ".join(
            f"{pad + i * (width - 2 * pad) / max(length - 1, 1):.1f},"
            f"{height - pad - (v - low) / (high - low) * (height - 2 * pad):.1f}"
            for i, v in enumerate(values_)
            if math.isfinite(v)
        )
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
    legend = " ".join(
        f'<span style="color:{c}">■ {html.escape(n)}</span>'
        for n, c in zip(series, colors, strict=False)
    )
    return _figure(title, width, height, parts, legend)


def _scatter_chart(
    title: str, points: list[tuple[float, float]], x_label: str, y_label: str
) -> str:
    width, height, pad = 520, 240, 40
    if not points:
        return f"<figure><figcaption>{html.escape(title)}: no data</figcaption></figure>"
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    parts = [_frame(width, height, pad, y0, y1, 0, y_label)]
    parts += [
        f'<circle cx="{pad + (x - x0) / (x1 - x0) * (width - 2 * pad):.1f}" '
        f'cy="{height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad):.1f}" r="2" fill="#1f77b4" '
        'fill-opacity="0.5"/>'
        for x, y in points
    ]
    parts.append(
        f'<text x="{width / 2}" y="{height - 5}" text-anchor="middle" font-size="11">'
        f"{html.escape(x_label)} ({x0:.3g} … {x1:.3g})</text>"
    )
    return _figure(title, width, height, parts, "")


def _bar_chart(title: str, counts: np.ndarray, x_label: str) -> str:
    width, height, pad = 520, 240, 40
    total = counts.sum()
    if total == 0:
        return f"<figure><figcaption>{html.escape(title)}: no pairs of such items</figcaption></figure>"
    shares = counts / total
    bar = (width - 2 * pad) / len(shares)
    top = float(shares.max())
    parts = [_frame(width, height, pad, 0.0, top, 0, "share")]
    for i, share in enumerate(shares):
        h = share / top * (height - 2 * pad)
        parts.append(
            f'<rect x="{pad + i * bar:.1f}" y="{height - pad - h:.1f}" width="{bar * 0.8:.1f}" '
            f'height="{h:.1f}" fill="#d62728"/>'
        )
    parts.append(
        f'<text x="{width / 2}" y="{height - 5}" text-anchor="middle" font-size="11">'
        f"{html.escape(x_label)} (1 … {len(shares) - 1}+)</text>"
    )
    return _figure(title, width, height, parts, "")


def _frame(
    width: int, height: int, pad: int, low: float, high: float, length: int, y_label: str
) -> str:
    return (
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#888"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#888"/>'
        f'<text x="4" y="{pad}" font-size="10">{high:.3g}</text>'
        f'<text x="4" y="{height - pad}" font-size="10">{low:.3g}</text>'
        f'<text x="4" y="{pad - 12}" font-size="11">{html.escape(y_label)}</text>'
        + (
            f'<text x="{width / 2}" y="{height - 5}" text-anchor="middle" font-size="11">'
            f"slate position (1 … {length})</text>"
            if length
            else ""
        )
    )


def _figure(title: str, width: int, height: int, parts: list[str], legend: str) -> str:
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">{"".join(parts)}</svg>'
    return f"<figure>{svg}<figcaption>{html.escape(title)} {legend}</figcaption></figure>"


def render_report(spec_name: str, summary: dict[str, object], collector: ReportCollector) -> str:
    """The whole page; `summary` is `RunSummary.to_json()`."""
    filled = np.where(collector.filled > 0, collector.filled, np.nan)
    mean_utility = collector.utility_sum / filled
    charts = [_line_chart("Mean utility by slate position", {"utility": mean_utility}, "utility")]
    if collector.similarity_input is not None:
        count = np.where(collector.similarity_count > 0, collector.similarity_count, np.nan)
        charts.append(
            _line_chart(
                f"Cosine similarity to the previous item ({collector.similarity_input})",
                {"similarity": (collector.similarity_sum / count)[1:]},
                "cosine",
            )
        )
    if collector.sensitive_sets:
        charts.append(
            _line_chart(
                "Share of sensitive items by slate position",
                {name: hits / filled for name, hits in collector.sensitive_hits.items()},
                "share",
            )
        )
        charts += [
            _bar_chart(f"Gaps between consecutive `{name}` items", gaps[1:], "gap in slots")
            for name, gaps in collector.gaps.items()
        ]
    charts.append(
        _scatter_chart(
            "Utility retained against diversity (one dot per request)",
            collector.scatter,
            "ILAD",
            "utility retained",
        )
    )
    metrics = summary.get("metrics", {})
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{v:.4g}</td></tr>"
        for k, v in (metrics.items() if isinstance(metrics, dict) else [])
    )
    counts = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(summary[k]))}</td></tr>"
        for k in ("requests_in", "requests_blended", "requests_rejected", "empty_slates", "slots")
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>blend run — {html.escape(spec_name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1150px}}
figure{{display:inline-block;margin:1em;vertical-align:top}}figcaption{{font-size:13px}}
table{{border-collapse:collapse}}td{{border-bottom:1px solid #ddd;padding:2px 10px}}</style></head>
<body><h1>blend run — {html.escape(spec_name)}</h1>
<table>{counts}</table><h2>Slate metrics (mean over requests)</h2><table>{rows}</table>
<h2>Pictures</h2>{"".join(charts)}</body></html>
"""
