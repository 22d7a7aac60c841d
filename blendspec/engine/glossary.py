"""The metric glossary: every measure that `blend run`, `blend policy`, `blend diff` and the two
HTML reports print, with its definition and formula.

One source for two renderings: the reports embed the terms they show (a report is written
wherever the user asks and read offline, so a link into a checkout or a website could not be
followed from it), and the tables of ``docs/metrics.md`` are :func:`markdown` verbatim (a test
keeps the two equal; ``python -m blendspec.engine.glossary`` rewrites them in place).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

__all__ = [
    "GLOSSARY",
    "SECTIONS",
    "Term",
    "html_glossary",
    "inline",
    "lookup",
    "markdown",
    "rewrite",
]


@dataclass(frozen=True)
class Term:
    """One measure as printed (``name``; ``<...>`` and ``w`` stand for the parts that vary)."""

    name: str
    section: str
    definition: str
    formula: str = ""
    pattern: str | None = None
    """A regular expression matching the concrete names printed (``adjacency[risky]@8`` for
    ``adjacency[<set>]@w``); None: the name is printed as it stands."""

    @property
    def anchor(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")
        return f"m-{slug}"

    def matches(self, printed: str) -> bool:
        if self.pattern is not None:
            return re.fullmatch(self.pattern, printed) is not None
        return printed == self.name


RUN = "blend run: the summary table, --metrics JSON and the run report"
SLATE = "Slate metrics (blend run, blend diff --candidates, the run report)"
CHARTS = "The run report's charts"
POLICY = "blend policy report, train and eval"
DIFF = "blend diff --candidates: slate comparison"

SECTIONS: tuple[tuple[str, str], ...] = (
    (
        RUN,
        "Counts over the whole run. `requests in` counts each request once, whatever happened to "
        "it.",
    ),
    (
        SLATE,
        "Each metric is computed per request; the summary prints its **mean over the requests "
        "where it is defined** (finite): a diversity of a one-item slate or a ratio over an "
        "empty slate is undefined (NaN per request) rather than 0, so short slates do not bias "
        "the mean. S is the request's slate, |S| its length, p < q slate positions (1-based). "
        "The inputs read: the embedding is the first `cosine(...)` input of the diversity "
        "similarity, else the first declared embedding; the category input is the first "
        "declared one; the semantic-ID input is the one `semantic_id_penalty` reads, else the "
        "first declared one; the sets are the spec's `spacing` sets. **w** is one window for "
        "all windowed metrics: the widest `spacing` window of the spec, and at least 5.",
    ),
    (
        CHARTS,
        "Aggregates over every blended request of the run (the scatter: the first 2,000 requests "
        "where both values are defined). Hover over a chart for its values; each chart's numbers "
        "are in the table under it.",
    ),
    (
        POLICY,
        "A policy is judged on-policy in the simulator (`--simulate N`: the exact expected "
        "outcomes of N held-out requests, no interval) or off-policy on held-out logs "
        "(`--held-out`: SNIPS, with 95% bootstrap intervals). T is the slate length.",
    ),
    (
        DIFF,
        "A is the old spec's slate of a request, B the new one's; docs/diff.md has the details. "
        "Every slate metric above is also compared: mean old, mean new, the mean difference "
        "(new − old) and its 95% paired-bootstrap interval.",
    ),
)

GLOSSARY: tuple[Term, ...] = (
    # ---- blend run: counts ----------------------------------------------------------------
    Term(
        "requests in",
        RUN,
        "Requests read from the dump (up to `--limit`), blended or rejected. A request whose "
        "rows are not contiguous is counted once.",
        "requests in = blended + rejected",
    ),
    Term("blended", RUN, "Requests that went through the compiled spec (an empty slate counts)."),
    Term(
        "rejected",
        RUN,
        "Requests written to the rejects file (`--on-bad-request skip`), one row per request "
        "with all its problems.",
    ),
    Term(
        "empty slates",
        RUN,
        "Blended requests whose slate holds no item (no candidate, or none left after the "
        "filters); each writes one row at position -1.",
    ),
    Term("slots filled", RUN, "Slate rows with an item, over all requests.", "Σ_requests |S|"),
    Term(
        "policy fallbacks",
        RUN,
        "Requests whose policy failed (a non-finite state or network output) and got the spec's "
        "fixed weights instead; printed only when a weight comes from a policy.",
    ),
    Term(
        "requests/s",
        RUN,
        "Throughput of the whole run: reading, blending, metrics and writing.",
        "requests in / wall-clock seconds of the run",
    ),
    # ---- slate metrics --------------------------------------------------------------------
    Term("slate_length", SLATE, "Items in the slate.", "|S|"),
    Term(
        "empty",
        SLATE,
        "1 when the request has no candidate at all, else 0; its mean is the share of such "
        "requests (a request whose candidates were all filtered out is not `empty`).",
        "[N = 0]",
    ),
    Term(
        "utility_retained",
        SLATE,
        "What diversity costs in utility: the slate's utility over the best utility any slate "
        "of the same length could have had. u is the spec's `utility` before normalisation. "
        "1 when both sums are 0; undefined for an empty slate or when only the best sum is 0.",
        "Σ_{i ∈ S} u_i / Σ_{i ∈ top-|S| candidates by u} u_i",
    ),
    Term(
        "cap_violations",
        SLATE,
        "Steps at which every remaining candidate broke a `cap`, so the step took the best one "
        "anyway (explain shows `cap ignored` there).",
        "count of such steps per slate",
    ),
    Term(
        "early_stops",
        SLATE,
        "1 when DPP's ε early stop ended the diverse selection and the rest of the slate was "
        "filled by relevance; its mean is the share of such requests.",
        "[DPP stopped early]",
    ),
    Term(
        "ilad",
        SLATE,
        "Intra-list average distance: the mean cosine distance between the slate's items, over "
        "all pairs. A zero vector is orthogonal to everything. Undefined when |S| < 2.",
        "mean_{p < q} (1 − cos(e_p, e_q))",
    ),
    Term(
        "ilmd",
        SLATE,
        "Intra-list minimum distance: the closest pair of the slate.",
        "min_{p < q} (1 − cos(e_p, e_q))",
    ),
    Term(
        "ilald@w",
        SLATE,
        "ILAD over the pairs that share a window of w consecutive positions: what a user "
        "scrolling through w items at a time sees. Undefined when no such pair exists.",
        "mean_{p < q, q − p < w} (1 − cos(e_p, e_q))",
        r"ilald@\d+",
    ),
    Term(
        "ilmld@w",
        SLATE,
        "ILMD over the pairs within a window of w positions.",
        "min_{p < q, q − p < w} (1 − cos(e_p, e_q))",
        r"ilmld@\d+",
    ),
    Term(
        "category_entropy",
        SLATE,
        "Shannon entropy of the categories in the slate, in nats (0: one category; ln k: k "
        "categories equally often). n_c is the number of slate items of category c.",
        "−Σ_c (n_c / |S|) · ln(n_c / |S|)",
    ),
    Term(
        "category_coverage",
        SLATE,
        "Share of the request's categories that reach the slate: distinct categories in the "
        "slate over distinct categories among the request's candidates.",
        "|{c(i) : i ∈ S}| / |{c(j) : j a candidate}|",
    ),
    Term(
        "sid_collisions@w",
        SLATE,
        "Pairs of slate items within a window of w positions whose semantic IDs share a prefix "
        "of at least `min_prefix` codes (the `semantic_id_penalty`'s, else 1): near-duplicates "
        "shown close together.",
        "|{(p, q) : p < q, q − p < w, lcp(sid_p, sid_q) ≥ min_prefix}|",
        r"sid_collisions@\d+",
    ),
    Term(
        "exposure[<set>]",
        SLATE,
        "Share of the slate's items that belong to the sensitive set `<set>` (a `spacing` set).",
        "|{i ∈ S : i ∈ R}| / |S|",
        r"exposure\[[^\]]+\]",
    ),
    Term(
        "adjacency[<set>]@w",
        SLATE,
        "Items of the set with another item of the set at most w positions away (in either "
        "direction): the clustering that soft spacing penalises. 0 when the set's items are all "
        "more than w apart.",
        "|{p : item_p ∈ R, ∃ q ≠ p, |p − q| ≤ w, item_q ∈ R}|",
        r"adjacency\[[^\]]+\]@\d+",
    ),
    # ---- run report charts ----------------------------------------------------------------
    Term(
        "mean utility by slate position",
        CHARTS,
        "The mean of the `utility` column at each position, over the slates long enough to "
        "have that position; the hover also gives that number of slates.",
        "Σ_requests u(item at p) / |{requests with an item at p}|",
    ),
    Term(
        "cosine similarity to the previous item",
        CHARTS,
        "How alike consecutive items are, by position (from position 2), on the metric embedding.",
        "mean over slates with items at p − 1 and p of cos(e_{p−1}, e_p)",
    ),
    Term(
        "share of sensitive items by slate position",
        CHARTS,
        "For each spacing set, on its own scale: the share of slates whose item at position p "
        "belongs to the set.",
        "|{requests : item at p ∈ R}| / |{requests with an item at p}|",
    ),
    Term(
        "gaps between consecutive set items",
        CHARTS,
        "Histogram of the distance between each set item and the next set item of the same "
        "slate, as a share of all such pairs (the last bar pools the longest gaps). The shaded "
        "band is the set's spacing window: a gap of at most `window` positions is penalised by "
        "`spacing`, so soft spacing moves mass out of it.",
        "share(g) = |{consecutive set items with p_{k+1} − p_k = g}| / |{consecutive pairs}|",
    ),
    Term(
        "utility retained against ILAD",
        CHARTS,
        "One dot per request: its `utility_retained` against its `ilad`; hover for the request "
        "id. The trade-off the diversity strength moves along.",
    ),
    # ---- policy ---------------------------------------------------------------------------
    Term(
        "defaults (fixed)",
        POLICY,
        "The spec's fixed weights for every request: the baseline every learned policy is "
        "compared with.",
    ),
    Term(
        "<reward>/<method>",
        POLICY,
        "The policy trained for the declared reward `<reward>` with the learner `<method>` "
        "(`pg`: importance-weighted policy gradient; `value`: a reward regression with one "
        "output per action, acting by argmax; `model`: a low-rank reward model over state × "
        "weight levels, folded into the same argmax network), judged by its greedy action.",
        pattern=r"[^/\s]+/(pg|value|model)",
    ),
    Term(
        "reward <name>",
        POLICY,
        "Mean per-request value of the declared reward's expression (`rewards` block of the "
        "spec) over its outcomes, under the policy.",
        "(1/n) Σ_requests reward(outcomes of the request's slate)",
        r"reward .+",
    ),
    Term(
        "<outcome> rate",
        POLICY,
        "Rate per shown slot of an outcome (click, long_click, save, hide, conversion): the "
        "mean count per request divided by the slate length. Rates of different outcomes "
        "differ by orders of magnitude; the report draws each on its own scale.",
        "(1/n) Σ_requests count_outcome / T",
        r"(click|long_click|save|hide|conversion) rate",
    ),
    Term(
        "95% interval",
        POLICY,
        "Percentile bootstrap interval over requests: the 2.5% and 97.5% quantiles of the "
        "estimate over 1,000 resamples of the logged requests (seeded). Off-policy only; the "
        "simulator's on-policy values are exact expectations.",
        "[q_{0.025}, q_{0.975}] of the estimate over bootstrap resamples",
    ),
    Term(
        "snips",
        POLICY,
        "Self-normalised inverse propensity scoring, the off-policy estimate the report uses: "
        "logged rewards reweighted by how much more (or less) likely the policy was to take the "
        "logged action than the logging policy.",
        "Σ_i w_i r_i / Σ_i w_i,  w_i = π(a_i | x_i) / μ(a_i | x_i)",
    ),
    Term(
        "ips",
        POLICY,
        "Inverse propensity scoring (`blend policy eval`, `train`): unbiased with correct "
        "propensities, high variance.",
        "(1/n) Σ_i w_i r_i",
    ),
    Term(
        "replay",
        POLICY,
        "Mean reward over the logged requests whose logged action equals the policy's most "
        "probable action (`blend policy eval`, `train`).",
        "mean {r_i : argmax_a π(a | x_i) = a_i}",
    ),
    Term(
        "dr",
        POLICY,
        "Doubly robust (`blend policy eval`, `train`): a reward model's prediction plus the "
        "reweighted residual; unbiased if either the propensities or the model are right.",
        "(1/n) Σ_i [Σ_a π(a | x_i) q(x_i, a) + w_i (r_i − q(x_i, a_i))]",
    ),
    Term(
        "effective n",
        POLICY,
        "How many logged requests really carry an estimate: the number of matches for replay, "
        "Kish's effective sample size for the weighted estimators. Read it before the interval.",
        "(Σ_i w_i)² / Σ_i w_i²",
    ),
    Term(
        "mean <weight>",
        POLICY,
        "Mean value of a weight that the policy's greedy action decodes to, over the requests "
        "of a segment or of a state-feature bucket: what the policy personalises.",
        "(1/|G|) Σ_{requests in G} weight(argmax_a π(a | x))",
        r"mean .+",
    ),
    Term(
        "segment",
        POLICY,
        "The simulator's user segment of a request (logs from `blend simulate` carry it); "
        "never a policy input, only used to read the policy's choices.",
    ),
    Term(
        "bucket",
        POLICY,
        "A quantile bucket [low, high] of one state feature (4 buckets). The report shows the 3 "
        "features whose buckets' mean chosen weights differ most, in units of each weight's "
        "grid range.",
    ),
    Term(
        "top action (share)",
        POLICY,
        "The action (index in the spec's weight grid) the policy chooses most often in a "
        "segment, and the share of the segment's requests that get it.",
    ),
    Term(
        "distinct actions chosen",
        POLICY,
        "How many different grid actions the policy chooses over the requests read; 1 means "
        "it learned a fixed setting, however personalised its network could be.",
    ),
    # ---- blend diff -----------------------------------------------------------------------
    Term(
        "slates changed",
        DIFF,
        "Share (and count) of compared requests whose slates differ as sequences.",
        "|{requests : A ≠ B}| / |{compared requests}|",
    ),
    Term(
        "slate lengths changed",
        DIFF,
        "Compared requests whose two slates have different lengths (a filter or a stop rule "
        "changed).",
        "|{requests : |A| ≠ |B|}|",
    ),
    Term(
        "mean position shift",
        DIFF,
        "Mean absolute move of the items both slates show (requests with no common item are "
        "left out).",
        "mean_{i ∈ A ∩ B} |pos_A(i) − pos_B(i)|",
    ),
    Term(
        "overlap@k",
        DIFF,
        "Share of the first k items the two slates have in common (k = 5, 10 and T).",
        "|A[:k] ∩ B[:k]| / max(|A[:k]|, |B[:k]|)",
        r"overlap@\d+",
    ),
    Term(
        "Kendall τ / Spearman ρ",
        DIFF,
        "Rank agreement over the union of both slates; an item missing from a slate ranks "
        "after its end (tied). τ is Kendall's τ-b, ρ the Pearson correlation of the ranks.",
        "τ_b = (C − D) / √((C + D + T_A)(C + D + T_B)); C, D: concordant and discordant pairs, "
        "T_A, T_B: pairs tied in A only, in B only",
    ),
    Term(
        "first diff",
        DIFF,
        "In the requests that changed most: the first slot where the two slates differ.",
        "min {p : A[p] ≠ B[p]}",
    ),
    Term(
        "Δ",
        DIFF,
        "A slate metric's mean difference, new − old, over the requests where both values are "
        "defined, with its 95% paired-bootstrap interval (1,000 resamples of the requests); "
        "`*` marks an interval that excludes 0.",
        "mean_requests (m_B − m_A)",
    ),
)


def lookup(printed: str) -> Term | None:
    """The glossary entry of a name as a report or a table prints it, if there is one."""
    for term in GLOSSARY:
        if term.pattern is None and term.matches(printed):
            return term
    return next((t for t in GLOSSARY if t.pattern is not None and t.matches(printed)), None)


BEGIN = "<!-- glossary: generated from blendspec/engine/glossary.py -->"
END = "<!-- glossary: end -->"


def markdown() -> str:
    """The glossary block of docs/metrics.md (between :data:`BEGIN` and :data:`END`)."""
    lines = [BEGIN]
    for section, intro in SECTIONS:
        lines += ["", f"## {section}", "", intro, "", "| measure | definition | formula |"]
        lines.append("|---|---|---|")
        for term in (t for t in GLOSSARY if t.section == section):
            formula = f"`{term.formula}`".replace("|", "\\|") if term.formula else ""
            cell = term.definition.replace("|", "\\|")
            lines.append(f"| `{term.name}` | {cell} | {formula} |")
    return "\n".join([*lines, "", END])


def rewrite(document: str) -> str:
    """``document`` (docs/metrics.md) with its glossary block replaced by :func:`markdown`."""
    start, end = document.index(BEGIN), document.index(END) + len(END)
    return document[:start] + markdown() + document[end:]


def inline(text: str) -> str:
    """Escaped text with `code` spans and **bold** kept."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def html_glossary(sections: tuple[str, ...]) -> str:
    """The entries of ``sections`` as an HTML section whose entries are link targets."""
    parts = [
        '<section id="glossary"><h2>Glossary</h2><p>The measures on this page; the full '
        "glossary of every command is <code>docs/metrics.md</code> in blendspec's "
        "documentation.</p>"
    ]
    for section, intro in SECTIONS:
        if section not in sections:
            continue
        parts.append(f"<h3>{inline(section)}</h3><p>{inline(intro)}</p><dl>")
        for term in (t for t in GLOSSARY if t.section == section):
            formula = (
                f'<dd class="formula"><code>{html.escape(term.formula)}</code></dd>'
                if term.formula
                else ""
            )
            parts.append(
                f'<dt id="{term.anchor}"><code>{html.escape(term.name)}</code></dt>'
                f"<dd>{inline(term.definition)}</dd>{formula}"
            )
        parts.append("</dl>")
    parts.append("</section>")
    return "".join(parts)


if __name__ == "__main__":
    import sys
    from pathlib import Path

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/metrics.md")
    target.write_text(rewrite(target.read_text(encoding="utf-8")), encoding="utf-8")
