"""What the two HTML reports (`blend run --report`, `blend policy report --html`) share: Plotly
figures with readable axes, the page around them, and plain HTML tables of their numbers.

Plotly draws the charts because it gives, with no code of ours, what a chart needs to be read to a
number: tick labels on both axes, a hover label on every bar and point, error bars, shaded bands
and small multiples with their own scales. Its JavaScript (plotly.min.js, shipped inside the
``plotly`` wheel) is written once into the page, so a report is one file that opens offline; the
cost is about 4.8 MB per page (1.4 MB gzipped). docs/metrics.md says why not matplotlib.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from blendspec.engine.glossary import html_glossary, inline, lookup

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["COLOURS", "Page", "axis_style", "fmt", "glossary_link", "html_table"]

COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3")

_CONFIG = {"displaylogo": False, "responsive": True}

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
figure{margin:1.2em 0}figcaption{font-size:14px;margin:.3em 0}
table{border-collapse:collapse;margin:.5em 0;font-size:14px}
th,td{border-bottom:1px solid #ddd;padding:3px 10px;text-align:left}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
details{margin:.3em 0 1em}summary{cursor:pointer;font-size:13px;color:#555}
dt{margin-top:.6em}dd{margin-left:1.5em}dd.formula code{background:#f4f4f4;padding:1px 4px}
a.term{color:inherit;text-decoration:underline dotted}
"""


def fmt(x: float, spec: str = ".4g") -> str:
    """A number as the terminal tables print it; ``nan`` for an undefined value."""
    return "nan" if not math.isfinite(x) else format(x, spec)


def glossary_link(name: str) -> str:
    """``name`` escaped, linked to its glossary entry on the page when the glossary has one."""
    term = lookup(name)
    text = html.escape(name)
    return f'<a class="term" href="#{term.anchor}">{text}</a>' if term else text


def html_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    numeric: Sequence[bool] | None = None,
    caption: str | None = None,
    link: Sequence[bool] | None = None,
    link_headers: bool = True,
) -> str:
    """A table of already formatted cells. ``numeric`` right-aligns a column; ``link`` links its
    cells to the glossary, ``link_headers`` the headers (where the glossary knows them)."""
    numeric = numeric or [False] * len(headers)
    link = link or [False] * len(headers)

    def cell(tag: str, text: str, j: int, linked: bool) -> str:
        cls = ' class="num"' if numeric[j] else ""
        body = glossary_link(text) if linked else html.escape(text)
        return f"<{tag}{cls}>{body}</{tag}>"

    head = "".join(cell("th", h, j, link_headers) for j, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(cell("td", c, j, link[j]) for j, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def axis_style(fig: go.Figure) -> go.Figure:
    """Ticks and tick labels on every axis, lines along them, a light grid; a readable hover."""
    fig.update_xaxes(ticks="outside", showline=True, linecolor="#444", mirror=False, zeroline=False)
    fig.update_yaxes(
        ticks="outside", showline=True, linecolor="#444", zeroline=True, zerolinecolor="#bbb"
    )
    fig.update_layout(
        template="plotly_white",
        hoverlabel={"bgcolor": "white", "font_size": 13},
        margin={"l": 70, "r": 30, "t": 40, "b": 60},
        font={"size": 12},
    )
    return fig


class Page:
    """One self-contained HTML page: text, tables and figures in the order added."""

    def __init__(self, title: str, glossary: tuple[str, ...]) -> None:
        self.title = title
        self.glossary = glossary
        self._parts: list[str] = []
        self._figures = 0

    def add(self, fragment: str) -> None:
        self._parts.append(fragment)

    def figure(
        self, fig: go.Figure, caption: str, numbers: str | None = None, term: str | None = None
    ) -> None:
        """A chart with its caption (`code` spans kept; linked to the glossary entry ``term``)
        and, folded under it, the table of the numbers it draws."""
        import plotly.io as pio

        self._figures += 1
        div = pio.to_html(
            fig,
            full_html=False,
            include_plotlyjs=False,
            div_id=f"chart-{self._figures}",
            config=_CONFIG,
        )
        link = glossary_link(term) if term and lookup(term) else ""
        more = f" ({link})" if link else ""
        folded = f"<details><summary>numbers</summary>{numbers}</details>" if numbers else ""
        self._parts.append(
            f"<figure>{div}<figcaption>{inline(caption)}{more}</figcaption>{folded}</figure>"
        )

    def render(self) -> str:
        from plotly.offline import get_plotlyjs

        title = html.escape(self.title)
        return (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{title}</title><style>{_STYLE}</style>"
            # plotly.min.js, inline: the page needs no network.
            f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
            f"<body><h1>{title}</h1>"
            '<p><a href="#glossary">Glossary of the measures on this page</a></p>'
            + "\n".join(self._parts)
            + html_glossary(self.glossary)
            + "</body></html>\n"
        )
