"""The entry `blend diff` calls: one `DiffReport` from the pairs of specs it loaded (and the
whole-file changes of `--git`), each pair diffed section by section and, when asked, with its
impact on a dump.

The impact and the estimated outcome are passed in as functions so that this module, and the
plain diff path through it, never imports the blend (torch): `blendspec.cli.diff` supplies them
only with `--candidates` and `--logs`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from blendspec.review.changes import DiffReport, Impact, Outcome, SpecDiff
from blendspec.review.renames import detect_renames
from blendspec.review.sections import diff_specs
from blendspec.spec.loader import LoadedSpec


def build_report(
    pairs: Sequence[tuple[LoadedSpec, LoadedSpec] | SpecDiff],
    *,
    impact_for: Callable[[LoadedSpec, LoadedSpec, Mapping[str, str]], Impact] | None = None,
    outcome_for: Callable[[LoadedSpec, LoadedSpec, SpecDiff], Outcome] | None = None,
) -> DiffReport:
    """Diff each (old, new) pair, in order, with its impact when `impact_for` is given and its
    estimated outcome when `outcome_for` is (it sees the pair's changes: the logs cannot speak
    to every change). A `SpecDiff` in the list, an added or deleted file, is taken as it is."""
    files: list[SpecDiff] = []
    for item in pairs:
        if isinstance(item, SpecDiff):
            files.append(item)
            continue
        old, new = item
        diff = diff_specs(old, new)
        if impact_for is not None:
            diff.impact = impact_for(old, new, detect_renames(old.spec, new.spec).inputs)
        if outcome_for is not None:
            diff.outcome = outcome_for(old, new, diff)
        files.append(diff)
    return DiffReport(files)
